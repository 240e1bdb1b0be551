"""A local Spark standalone cluster (one master, one worker) on 127.0.0.1, without Docker.

Both daemons run from the pyspark wheel (``SPARK_HOME`` = the installed ``pyspark`` package)::

    bin/spark-class org.apache.spark.deploy.master.Master --host 127.0.0.1 --port 7077 \\
        --webui-port 8080
    bin/spark-class org.apache.spark.deploy.worker.Worker spark://127.0.0.1:7077 \\
        --host 127.0.0.1 --cores 1 --memory 1g --webui-port 8081 --work-dir <home>/work

Logs, pid files, the worker's work dir (one ``app-*`` folder per application, with the
executors' stdout/stderr) and scratch space live under one runtime folder. A job uses the
cluster with ``SPARK_MASTER=spark://127.0.0.1:7077`` and ``SPARK_CONF_DIR=<home>/conf`` (client
defaults that fit the worker: executor memory, driver address on loopback).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from iot_lakehouse.errors import ClusterError, DependencyError
from iot_lakehouse.logs import kv
from iot_lakehouse.runtime.processes import alive, reap

logger = logging.getLogger(__name__)

START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 30.0
MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"


@dataclass(frozen=True)
class ClusterConfig:
    """Where the local cluster lives and what it offers: ports, worker cores and memory."""

    home: Path
    host: str = "127.0.0.1"
    master_port: int = 7077
    webui_port: int = 8080
    worker_webui_port: int = 8081
    worker_cores: int = 1
    worker_memory: str = "1g"
    executor_memory: str = "1g"  # at most worker_memory, or no executor is ever granted
    daemon_memory: str = "256m"  # heap of the master and worker daemons themselves
    app_data_ttl_s: int = 86_400  # finished applications' work dirs are removed after this

    @property
    def master_url(self) -> str:
        return f"spark://{self.host}:{self.master_port}"

    @property
    def webui_url(self) -> str:
        return f"http://{self.host}:{self.webui_port}"

    @property
    def work_dir(self) -> Path:
        """The worker's work dir: ``app-*/<executor id>/{stdout,stderr}`` per application."""
        return self.home / "work"

    @property
    def local_dir(self) -> Path:
        return self.home / "local"

    @property
    def conf_dir(self) -> Path:
        """``SPARK_CONF_DIR`` for jobs: a ``spark-defaults.conf`` that fits this cluster."""
        return self.home / "conf"

    def log_file(self, daemon: str) -> Path:
        return self.home / f"{daemon}.log"

    def pid_file(self, daemon: str) -> Path:
        return self.home / f"{daemon}.pid"


def spark_home() -> Path:
    """The installed pyspark package: it ships ``bin/spark-class`` and every Spark jar."""
    import pyspark

    return Path(pyspark.__file__).resolve().parent


def spark_class() -> Path:
    """``bin/spark-class`` of the wheel, made executable if the installer dropped the bit."""
    script = spark_home() / "bin" / "spark-class"
    if not script.exists():
        raise DependencyError(f"{script} is missing: reinstall pyspark (`uv sync --frozen`).")
    if not os.access(script, os.X_OK):
        for name in ("spark-class", "load-spark-env.sh", "find-spark-home"):
            path = script.parent / name
            path.chmod(path.stat().st_mode | 0o111)
    return script


def daemon_env(config: ClusterConfig) -> dict[str, str]:
    """Environment of the master and worker (inherited by the executors the worker starts)."""
    worker_opts = [
        "-Dspark.worker.cleanup.enabled=true",
        "-Dspark.worker.cleanup.interval=1800",
        f"-Dspark.worker.cleanup.appDataTtl={config.app_data_ttl_s}",
        "-Dspark.executor.logs.rolling.strategy=size",
        "-Dspark.executor.logs.rolling.maxSize=10485760",
        "-Dspark.executor.logs.rolling.maxRetainedFiles=3",
    ]
    return {
        **os.environ,
        "SPARK_HOME": str(spark_home()),
        "SPARK_CONF_DIR": str(config.conf_dir.resolve()),
        "SPARK_LOCAL_IP": config.host,  # RPC and web UIs on this address only
        "SPARK_LOCAL_DIRS": str(config.local_dir.resolve()),
        "SPARK_DAEMON_MEMORY": config.daemon_memory,
        # A taken port is an error, not a silent move to the next one.
        "SPARK_DAEMON_JAVA_OPTS": "-Dspark.port.maxRetries=0",
        "SPARK_WORKER_OPTS": " ".join(worker_opts),
        "PYSPARK_PYTHON": sys.executable,  # Python workers of the executors: this venv
    }


def client_defaults(config: ClusterConfig) -> str:
    """``spark-defaults.conf`` for a driver on this machine using the cluster."""
    return "\n".join(
        [
            f"spark.executor.memory {config.executor_memory}",
            # The executors call the driver back: keep that on the cluster's address.
            f"spark.driver.host {config.host}",
            f"spark.driver.bindAddress {config.host}",
            "",
        ]
    )


def master_command(config: ClusterConfig) -> list[str]:
    return [
        str(spark_class()),
        MASTER_CLASS,
        "--host",
        config.host,
        "--port",
        str(config.master_port),
        "--webui-port",
        str(config.webui_port),
    ]


def worker_command(config: ClusterConfig) -> list[str]:
    return [
        str(spark_class()),
        WORKER_CLASS,
        config.master_url,
        "--host",
        config.host,
        "--cores",
        str(config.worker_cores),
        "--memory",
        config.worker_memory,
        "--webui-port",
        str(config.worker_webui_port),
        "--work-dir",
        str(config.work_dir.resolve()),
    ]


def start_daemon(config: ClusterConfig, daemon: str, cmd: list[str]) -> subprocess.Popen[bytes]:
    """Start one daemon in its own process group, output to ``<home>/<daemon>.log``."""
    with open(config.log_file(daemon), "ab") as log:
        proc = subprocess.Popen(
            cmd,
            env=daemon_env(config),
            cwd=config.home,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    config.pid_file(daemon).write_text(str(proc.pid))
    logger.info(
        "spark daemon started %s", kv(daemon=daemon, pid=proc.pid, log=config.log_file(daemon))
    )
    return proc


def master_state(config: ClusterConfig, timeout: float = 2.0) -> dict[str, Any] | None:
    """The master's JSON status (workers, apps), or None if its web UI does not answer."""
    try:
        with urllib.request.urlopen(f"{config.webui_url}/json/", timeout=timeout) as response:
            state: dict[str, Any] = json.loads(response.read())
    except (OSError, ValueError):
        return None
    return state


def alive_workers(state: dict[str, Any] | None) -> int:
    """Workers the master sees as ALIVE in a ``master_state`` answer."""
    if not state:
        return 0
    return sum(1 for w in state.get("workers", []) if w.get("state") == "ALIVE")


def log_tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def wait_until_ready(
    config: ClusterConfig,
    procs: dict[str, subprocess.Popen[bytes]],
    workers: int,
    timeout: float = START_TIMEOUT_S,
) -> dict[str, Any]:
    """Wait until the master's web UI answers and lists ``workers`` ALIVE workers; raise
    ClusterError, naming the log to read, if a daemon exits or the deadline passes."""
    deadline = time.monotonic() + timeout
    state: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        for daemon, proc in procs.items():
            if proc.poll() is not None:
                log = config.log_file(daemon)
                raise ClusterError(
                    f"The Spark {daemon} exited at start-up (code {proc.returncode}). Last "
                    f"lines of {log}:\n{log_tail(log)}\nIf a port is taken, choose free ones."
                )
        state = master_state(config)
        if state is not None and alive_workers(state) >= workers:
            return state
        time.sleep(0.5)
    daemon = "worker" if state is not None else "master"
    what = "no ALIVE worker registered" if state is not None else "its web UI did not answer"
    log = config.log_file(daemon)
    raise ClusterError(
        f"The Spark master at {config.master_url} was not ready within {timeout:.0f} s: "
        f"{what} ({config.webui_url}/json/). Last lines of {log}:\n{log_tail(log)}"
    )


def _alive(pid: int) -> bool:
    reap(pid)  # if it is our child and has exited
    return alive(pid)


def _is_spark_daemon(pid: int) -> bool:
    """True if ``pid`` runs a Spark master or worker (a pid file may be stale)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return MASTER_CLASS.encode() in cmdline or WORKER_CLASS.encode() in cmdline


def stop_daemon(config: ClusterConfig, daemon: str, timeout: float = STOP_TIMEOUT_S) -> bool:
    """SIGTERM the daemon's process group (a worker's group holds its executors), SIGKILL
    after ``timeout``, and wait. True if it was running."""
    pid_file = config.pid_file(daemon)
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return False
    running = _alive(pid) and _is_spark_daemon(pid)
    if running:
        os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _alive(pid):
            logger.warning("spark %s did not stop in time, killing it %s", daemon, kv(pid=pid))
        try:  # also whatever else is left in its group (executors of a killed worker)
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        while _alive(pid):
            time.sleep(0.1)
        logger.info("spark daemon stopped %s", kv(daemon=daemon, pid=pid))
    pid_file.unlink(missing_ok=True)
    return running


def stop_cluster(config: ClusterConfig, timeout: float = STOP_TIMEOUT_S) -> None:
    """Stop the worker (and its executors), then the master; nothing happens if neither runs."""
    for daemon in ("worker", "master"):
        stop_daemon(config, daemon, timeout)


def start_cluster(config: ClusterConfig, timeout: float = START_TIMEOUT_S) -> dict[str, Any]:
    """Start the master and one worker and wait until the worker is ALIVE; return the
    master's JSON status. On failure nothing is left running."""
    for path in (config.home, config.work_dir, config.local_dir, config.conf_dir):
        path.mkdir(parents=True, exist_ok=True)
    (config.conf_dir / "spark-defaults.conf").write_text(client_defaults(config))
    stop_cluster(config)  # a leftover of an earlier run in this home would hold the ports
    procs: dict[str, subprocess.Popen[bytes]] = {}
    deadline = time.monotonic() + timeout
    try:
        # One after the other: a worker must not find some other master on a taken port.
        procs["master"] = start_daemon(config, "master", master_command(config))
        wait_until_ready(config, procs, 0, timeout)
        procs["worker"] = start_daemon(config, "worker", worker_command(config))
        state = wait_until_ready(config, procs, 1, max(1.0, deadline - time.monotonic()))
    except BaseException:
        stop_cluster(config)
        raise
    logger.info(
        "spark cluster ready %s",
        kv(master=config.master_url, ui=config.webui_url, cores=state.get("cores", "?")),
    )
    return state


@contextmanager
def local_spark_cluster(
    config: ClusterConfig, timeout: float = START_TIMEOUT_S
) -> Iterator[ClusterConfig]:
    """Run a master and one worker for the ``with`` block; both are stopped on the way out."""
    start_cluster(config, timeout)
    try:
        yield config
    finally:
        stop_cluster(config)
