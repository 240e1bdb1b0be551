"""A real single-node Apache Kafka 4.x broker (KRaft) on 127.0.0.1, started without Docker.

The broker runs as ``java kafka.Kafka`` from the jars in the local cache, with its config,
data and log under ``.runtime/kafka/``. Starting twice reuses the running broker; stopping
sends SIGTERM (a controlled shutdown) and waits.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from iot_lakehouse.errors import BrokerError, DependencyError
from iot_lakehouse.logs import kv
from iot_lakehouse.runtime import jvm_deps
from iot_lakehouse.runtime.processes import alive, read_pid, reap, wait_until_ready
from iot_lakehouse.settings import Settings

logger = logging.getLogger(__name__)

START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 30.0


def log4j2_config(log_file: Path, max_bytes: int, backups: int) -> str:
    """The broker's log4j2 configuration: its log to ``log_file``, rotated at ``max_bytes``
    with ``backups`` older files (``broker.log.1`` the newest of them)."""
    name, pattern = json.dumps(str(log_file)), json.dumps(f"{log_file}.%i")
    return f"""\
Configuration:
  name: local-broker
  Appenders:
    RollingFile:
      name: FILE
      fileName: {name}
      filePattern: {pattern}
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
      Policies:
        SizeBasedTriggeringPolicy:
          size: "{max_bytes}"
      DefaultRolloverStrategy:
        max: {backups}
        fileIndex: min
  Loggers:
    Root:
      level: INFO
      AppenderRef:
        - ref: FILE
    Logger:
      - name: kafka
        level: WARN
      - name: org.apache.kafka
        level: WARN
      - name: kafka.server.KafkaServer
        level: INFO
      - name: kafka.server.BrokerServer
        level: INFO
"""


@dataclass(frozen=True)
class BrokerStatus:
    """What is known about the local broker: its process and whether clients get answers."""

    pid: int | None
    process_alive: bool
    reachable: bool
    bootstrap_servers: str
    topics: tuple[str, ...]

    @property
    def running(self) -> bool:
        return self.reachable

    def describe(self) -> str:
        state = (
            "running"
            if self.reachable
            else ("starting/unresponsive" if self.process_alive else "stopped")
        )
        return kv(
            state=state,
            pid=self.pid or "-",
            bootstrap=self.bootstrap_servers,
            topics=",".join(self.topics) or "-",
        )


def server_properties(settings: Settings, data_dir: Path) -> str:
    """The broker's ``server.properties`` for a one-node KRaft cluster on 127.0.0.1."""
    port = settings.kafka_port
    controller = settings.kafka_controller_port_effective
    return "\n".join(
        [
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@127.0.0.1:{controller}",
            f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            f"log.dirs={data_dir}",
            f"num.partitions={settings.kafka_topic_partitions}",
            "auto.create.topics.enable=false",
            "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=3",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "transaction.state.log.num.partitions=3",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "group.initial.rebalance.delay.ms=0",
            "log.retention.hours=168",
            "log.segment.bytes=268435456",
            "num.network.threads=2",
            "num.io.threads=4",
            "",
        ]
    )


class LocalKafkaBroker:
    """Start, stop and inspect the project's local broker (one per runtime folder)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.home = settings.kafka_dir
        self.data_dir = self.home / "data"
        self.config_file = self.home / "server.properties"
        self.pid_file = self.home / "broker.pid"
        self.log_file = self.home / "broker.log"  # log4j2's, rotated by size
        self.out_file = self.home / "broker.out"  # what the JVM itself prints (start-up errors)

    # -- inspection ---------------------------------------------------------------------------
    def _pid(self) -> int | None:
        return read_pid(self.pid_file)

    @staticmethod
    def _alive(pid: int | None) -> bool:
        return alive(pid)

    def _admin(self) -> AdminClient:
        return AdminClient(
            {
                "bootstrap.servers": self.settings.kafka_bootstrap_servers,
                "socket.connection.setup.timeout.ms": 2000,
                "log_level": 0,
            }
        )

    def _port_open(self) -> bool:
        try:
            with socket.create_connection(
                (self.settings.kafka_host, self.settings.kafka_port), timeout=1.0
            ):
                return True
        except OSError:
            return False

    def list_topics(self, timeout: float = 3.0) -> tuple[str, ...] | None:
        """Topic names if a broker answers at KAFKA_BOOTSTRAP_SERVERS, else None."""
        if not self._port_open():
            return None
        try:
            meta = self._admin().list_topics(timeout=timeout)
        except KafkaException:
            return None
        return tuple(sorted(t for t in meta.topics if not t.startswith("__")))

    def status(self) -> BrokerStatus:
        """Look at the pid file and ask the broker for its topics."""
        pid = self._pid()
        topics = self.list_topics()
        return BrokerStatus(
            pid=pid,
            process_alive=self._alive(pid),
            reachable=topics is not None,
            bootstrap_servers=self.settings.kafka_bootstrap_servers,
            topics=topics or (),
        )

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self, timeout: float = START_TIMEOUT_S) -> BrokerStatus:
        """Start the broker (or reuse a running one), wait for clients, create the topics."""
        current = self.status()
        if current.reachable:
            logger.info("kafka broker already running, reusing it %s", current.describe())
            self.create_topics()
            return self.status()
        if current.process_alive:
            raise BrokerError(
                f"A broker process (pid {current.pid}) exists but does not answer at "
                f"{self.settings.kafka_bootstrap_servers}. See {self.log_file}; stop it with "
                "`iot-lakehouse kafka stop` and start again."
            )
        java = shutil.which("java")
        if java is None:
            raise DependencyError(
                "Java is not installed: the Kafka broker needs Java 17 "
                "(Debian/Ubuntu: apt-get install -y openjdk-17-jre-headless)."
            )
        jars = jvm_deps.resolve("kafka", self.settings.jars_dir, self.settings.maven_settings_file)
        self.home.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(server_properties(self.settings, self.data_dir.resolve()))
        log4j = self.home / "log4j2.yaml"
        log4j.write_text(
            log4j2_config(
                self.log_file.resolve(), self.settings.log_max_bytes, self.settings.log_backups
            )
        )
        classpath = f"{jars.directory.resolve()}/*"
        base_cmd = [java, f"-Dlog4j2.configurationFile={log4j.resolve()}", "-cp", classpath]
        if not (self.data_dir / "meta.properties").exists():
            self._format_storage(base_cmd)
        heap = self.settings.kafka_heap
        cmd = [
            java,
            f"-Xms{min_heap(heap)}",
            f"-Xmx{heap}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            *base_cmd[1:],
            "kafka.Kafka",
            str(self.config_file.resolve()),
        ]
        logger.info(
            "starting kafka broker %s",
            kv(bootstrap=self.settings.kafka_bootstrap_servers, home=self.home, log=self.log_file),
        )
        with open(self.out_file, "ab") as log:
            proc = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.pid_file.write_text(str(proc.pid))
        outcome = wait_until_ready(
            proc, lambda: self.list_topics(timeout=2.0) is not None, timeout, every=0.5
        )
        if outcome == "exited":
            raise BrokerError(
                f"The Kafka broker exited at start-up (code {proc.returncode}). Last lines of "
                f"{self.log_file}:\n{self._log_tail()}\nIf the port is taken, set "
                "KAFKA_BOOTSTRAP_SERVERS to a free one."
            )
        if outcome == "timed out":
            self.stop()
            raise BrokerError(
                f"The Kafka broker did not accept clients within {timeout:.0f} s. "
                f"Last lines of {self.log_file}:\n{self._log_tail()}"
            )
        self.create_topics()
        status = self.status()
        logger.info("kafka broker ready %s", status.describe())
        return status

    def _format_storage(self, base_cmd: list[str]) -> None:
        cluster_id = new_cluster_id()
        cmd = [
            *base_cmd,
            "kafka.tools.StorageTool",
            "format",
            # the = form: an id may start with "-" (1 in 64), which would read as an option
            f"--cluster-id={cluster_id}",
            f"--config={self.config_file.resolve()}",
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise BrokerError(
                "Formatting the broker storage failed:\n"
                f"{(proc.stdout + proc.stderr).strip()[-1500:]}\n"
                f"Remove {self.data_dir} and try again."
            )
        logger.info("formatted kafka storage %s", kv(dir=self.data_dir, cluster_id=cluster_id))

    def create_topics(self) -> None:
        """Create the sensor and alert topics if they do not exist yet."""
        wanted = {
            self.settings.kafka_topic: self.settings.kafka_topic_partitions,
            self.settings.kafka_alerts_topic: 1,
        }
        existing = set(self.list_topics() or ())
        new = [
            NewTopic(name, num_partitions=n, replication_factor=1)
            for name, n in wanted.items()
            if name not in existing
        ]
        if not new:
            return
        admin = self._admin()  # keep a reference: the futures die with their client
        for name, future in admin.create_topics(new, operation_timeout=30).items():
            try:
                future.result()
            except KafkaException as exc:
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise BrokerError(f"Could not create topic {name}: {exc}") from exc
            logger.info("topic ready %s", kv(topic=name, partitions=wanted[name]))

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> bool:
        """Stop the broker cleanly (SIGTERM, then SIGKILL after ``timeout``). True if it ran."""
        pid = self._pid()
        if not self._alive(pid):
            self.pid_file.unlink(missing_ok=True)
            return False
        assert pid is not None
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self._alive(pid) and time.monotonic() < deadline:
            reap(pid)
            time.sleep(0.2)
        if self._alive(pid):
            logger.warning("kafka broker did not stop in time, killing it %s", kv(pid=pid))
            os.kill(pid, signal.SIGKILL)
            time.sleep(0.5)
        reap(pid)
        self.pid_file.unlink(missing_ok=True)
        logger.info("kafka broker stopped %s", kv(pid=pid))
        return True

    def kill(self) -> None:
        """SIGKILL the broker (fault tests): no controlled shutdown."""
        pid = self._pid()
        if self._alive(pid):
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            while self._alive(pid):
                reap(pid)
                time.sleep(0.1)

    def _log_tail(self, lines: int = 25) -> str:
        """The last lines of the broker's log and of what its JVM printed."""
        tail = []
        for path in (self.log_file, self.out_file):
            try:
                tail += path.read_text(errors="replace").splitlines()[-lines:]
            except OSError:
                continue
        return "\n".join(tail[-lines:]) if tail else "(no log)"


def new_cluster_id() -> str:
    """A random KRaft cluster id: 16 random bytes, URL-safe base64 without padding."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()


def min_heap(heap: str) -> str:
    """Initial heap: a quarter of the maximum (``512m`` -> ``128m``)."""
    digits = "".join(c for c in heap if c.isdigit())
    unit = heap[len(digits) :] or "m"
    return f"{max(1, int(digits) // 4)}{unit}" if digits else heap
