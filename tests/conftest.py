"""Shared fixtures: one real Kafka broker and one Spark session for the whole test session."""

from __future__ import annotations

import contextlib
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from iot_lakehouse.logs import replace_root_handlers
from iot_lakehouse.runtime.kafka_broker import LocalKafkaBroker
from iot_lakehouse.runtime.spark_session import build_spark
from iot_lakehouse.settings import PROJECT_ROOT, Settings
from iot_lakehouse.sources.generator import GeneratorConfig, run_generator

# Fixtures shared by the unit, integration and faults tests of one module.
pytest_plugins = ["tests.support.maintain", "tests.support.serving"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def broker_settings(runtime_dir: Path) -> Settings:
    """Settings for a private broker on free ports, with its data under ``runtime_dir``."""
    return Settings.from_env({}).with_(
        kafka_bootstrap_servers=f"127.0.0.1:{free_port()}",
        kafka_controller_port=free_port(),
        runtime_dir=runtime_dir,
        kafka_heap="384m",
    )


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Put the root logger's handlers and level back after a test that configures logging."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    replace_root_handlers(handlers, level)


@pytest.fixture(scope="session")
def kafka_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A real local broker for the session, started through the project's own code."""
    settings = broker_settings(tmp_path_factory.mktemp("runtime"))
    broker = LocalKafkaBroker(settings)
    broker.start()
    try:
        yield settings
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def ferretdb_bin_dir() -> Path:
    """The local MongoDB-protocol server's binary, in the project's cache
    (``.runtime/mongo/bin``), built there once if missing (Go, about 1.5 minutes)."""
    from iot_lakehouse.runtime.mongo_server import install_ferretdb

    return install_ferretdb(Settings.from_env({})).parent


@pytest.fixture(scope="session")
def spark() -> Iterator[SparkSession]:
    """One local Spark session (Delta + Kafka connector) shared by every test."""
    settings = Settings.from_env({}).with_(spark_master="local[2]", spark_driver_memory="2g")
    session = build_spark(settings, "iot-lakehouse-tests")
    yield session
    session.stop()


@pytest.fixture
def settings(kafka_settings: Settings, tmp_path: Path) -> Settings:
    """Per-test settings: the session broker, a topic of its own, tables under ``tmp_path``."""
    topic = f"sensors-{uuid.uuid4().hex[:8]}"
    test_settings = kafka_settings.with_(
        kafka_topic=topic,
        kafka_alerts_topic=f"{topic}-alerts",
        lakehouse_path=str(tmp_path / "lakehouse"),
        dlq_path=str(tmp_path / "dlq"),
    )
    LocalKafkaBroker(test_settings).create_topics()
    return test_settings


def produce(
    settings: Settings,
    count: int,
    seed: int,
    bad_fraction: float = 0.05,
    sensors: int = 200,
    rate: float = 1_000_000.0,
) -> GeneratorConfig:
    """Send ``count`` generated events to the settings' topic (``bad_fraction`` split evenly
    over malformed, invalid, duplicate and late), unpaced, asserting every one was
    acknowledged."""
    config = GeneratorConfig(
        sensors=sensors,
        rate=rate,
        count=count,
        seed=seed,
        format="mixed",
        malformed_fraction=bad_fraction / 4,
        invalid_fraction=bad_fraction / 4,
        duplicate_fraction=bad_fraction / 4,
        late_fraction=bad_fraction / 4,
        start_time=datetime(2026, 1, 5, 8, 0, tzinfo=UTC),
        topic=settings.kafka_topic,
        paced=False,  # as fast as the broker takes them; event times still follow ``rate``
    )
    report = run_generator(config, settings)
    assert (report.sent, report.delivered, report.failed) == (count, count, 0)
    return config


def write_generated_bronze(
    spark: SparkSession,
    settings: Settings,
    config: GeneratorConfig,
    parts: int,
    topic: str = "generated",
) -> None:
    """Write the ``config`` event stream into bronze directly (no Kafka, no pacing), as
    ``parts`` appends, so a streaming reader of bronze sees ``parts`` micro-batches; ingested
    one minute after the last event, as records of ``topic``."""
    from pyspark.sql import functions as F

    from iot_lakehouse.pipeline.bronze import conform, to_bronze_events
    from iot_lakehouse.sources.generator import EventGenerator

    assert config.count is not None
    generator = EventGenerator(config)
    events = [generator.generate_event(i) for i in range(config.count)]
    ingest = generator.nominal_time(config.count) + timedelta(minutes=1)
    size = -(-len(events) // parts)
    for part in range(parts):
        offsets = range(part * size, min(len(events), (part + 1) * size))
        rows = [(events[i].key, events[i].value, topic, 0, i, ingest) for i in offsets]
        kafka_like = spark.createDataFrame(
            rows,
            "key binary, value binary, topic string, partition int, offset long, "
            "timestamp timestamp",
        )
        bronze = (
            to_bronze_events(kafka_like)
            .withColumn("ingest_time", F.lit(ingest))
            .withColumn("ingest_date", F.to_date(F.lit(ingest)))
        )
        conform(bronze).coalesce(1).write.format("delta").mode("append").partitionBy(
            "ingest_date"
        ).save(settings.bronze_events_path)


def job_env(settings: Settings, **overrides: str) -> dict[str, str]:
    """Environment for a job run as a separate process against these settings."""
    env = dict(os.environ)
    env.update(
        {
            "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
            "KAFKA_TOPIC": settings.kafka_topic,
            "LAKEHOUSE_PATH": settings.lakehouse_path,
            "DLQ_PATH": settings.dlq_path,
            "IOT_RUNTIME_DIR": str(settings.runtime_dir),
            "SPARK_MASTER": "local[1]",
            "SPARK_DRIVER_MEMORY": "1g",
            "TRIGGER_INTERVAL": "1 second",
            "GOLD_TRIGGER_INTERVAL": "",  # every job on the 1-s trigger above
            "ALERTS_TRIGGER_INTERVAL": "",
            # Great Expectations costs a job seconds of CPU to import and is not what these
            # runs test (tests/integration/test_quality.py and test_silver.py do)
            "QUALITY_EVERY_N_BATCHES": "0",
        }
    )
    env.update(overrides)
    return env


def kill_repeatedly_then_finish(
    job: str,
    settings: Settings,
    progress: Callable[[], int],
    kills: int = 5,
    after_kill: Callable[[int], None] | None = None,
    timeout: float = 300.0,
    seed: int = 0,
    finish_env: dict[str, str] | None = None,
    replayed: Callable[[], bool] | None = None,
    **env_overrides: str,
) -> list[float]:
    """Run ``iot-lakehouse run <job>`` as its own process and SIGKILL it and its JVM ``kills``
    times, each time at a random moment (0-2 s) after ``progress()`` (e.g. commits of its
    table) grew past what it was when that run started; call ``after_kill(i)`` after each kill;
    then run the job with ``--available-now`` to the end (with ``finish_env`` on top, e.g.
    larger batches where boundaries do not matter). Returns the random delays used.

    With ``replayed`` (true while a batch has written to Delta but not committed its
    checkpoint, see ``written_but_not_committed``), the kills aim at that moment until one has
    landed there, and the helper fails unless one did: the restart really replayed a batch."""
    env = job_env(settings, **env_overrides)
    cmd = [sys.executable, "-m", "iot_lakehouse", "run", job]
    chance = random.Random(seed)
    delays: list[float] = []
    landed: list[int] = []  # kills after which a batch was written but not committed
    for kill in range(kills):
        before = progress()
        proc = subprocess.Popen(
            cmd,
            env=env,
            cwd=PROJECT_ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + timeout
            while progress() <= before:
                if proc.poll() is not None:
                    err = proc.stderr.read().decode()[-3000:] if proc.stderr else ""
                    raise AssertionError(f"{job} exited before kill {kill + 1}: {err}")
                assert time.monotonic() < deadline, (
                    f"{job} made no progress in {timeout:.0f} s before kill {kill + 1}; "
                    "give it more input"
                )
                time.sleep(0.2)
            delays.append(chance.uniform(0.0, 2.0))
            if replayed is not None and not landed:  # aim: kill as soon as one is under way
                aim_until = time.monotonic() + 30.0
                while not replayed() and time.monotonic() < aim_until and proc.poll() is None:
                    time.sleep(0.01)
            else:
                time.sleep(delays[-1])
        finally:
            with contextlib.suppress(ProcessLookupError):  # it may have exited on its own
                os.killpg(proc.pid, signal.SIGKILL)  # the Python driver and its JVM, mid-stream
            proc.wait()
            if proc.stderr:
                proc.stderr.close()
        if replayed is not None and replayed():
            landed.append(kill)
        if after_kill is not None:
            after_kill(kill)
    assert replayed is None or landed, (
        f"none of the {kills} kills of {job} landed between a Delta commit and its checkpoint "
        "commit: no batch was replayed"
    )
    rerun = subprocess.run(
        [*cmd, "--available-now"],
        env={**env, **(finish_env or {})},
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    return delays


def written_but_not_committed(checkpoint: str, tables: list[str]) -> bool:
    """True if the newest batch of the query at ``checkpoint`` has no commit file yet but one of
    ``tables`` has a Delta commit made after that batch was planned (its offsets file): a
    restart replays that batch over what it already wrote."""
    root = Path(checkpoint)
    planned = [f for f in (root / "offsets").glob("*") if f.name.isdigit()]
    if not planned:
        return False
    newest = max(planned, key=lambda f: int(f.name))
    if (root / "commits" / newest.name).exists():
        return False
    try:
        since = newest.stat().st_mtime_ns
    except FileNotFoundError:
        return False
    for table in tables:
        for entry in (Path(table) / "_delta_log").glob("*.json"):
            with contextlib.suppress(FileNotFoundError):
                if entry.stat().st_mtime_ns > since:
                    return True
    return False


def checkpoint_commits(settings: Settings, job: str) -> int:
    """Micro-batches the job's queries have committed (commit files in its checkpoints)."""
    root = Path(settings.checkpoint_path(job))
    return sum(1 for f in root.glob("**/commits/*") if f.name.isdigit())


def commits(table_path: str) -> int:
    """Commit files in a Delta table's log (0 if there is no table yet)."""
    log = Path(table_path) / "_delta_log"
    return len(list(log.glob("*.json"))) if log.exists() else 0


def stricter_rules(folder: Path) -> Path:
    """The packaged silver rules with a temperature ceiling of 22 °C, under another version
    (``stricter-…``): ordinary generated readings then cross it."""
    from iot_lakehouse.pipeline.rules import default_rules_file

    text = default_rules_file().read_text()
    old = '{unit: "°C", min_value: -50, max_value: 50,'
    assert old in text, "the default rules changed: update this helper"
    text = text.replace(old, old.replace("max_value: 50", "max_value: 22"))
    path = folder / "stricter_rules.yml"
    path.write_text(text.replace('version: "', 'version: "stricter-', 1))
    return path


@pytest.fixture(scope="session")
def small_lakehouse(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """The small real lakehouse of ``tests/support/lakehouse_builder.py``, built once for the
    readers that only read it (the notebook and the dashboard tests); its folder is the parent
    of ``lakehouse_path``."""
    from tests.support.lakehouse_builder import build_lakehouse

    return build_lakehouse(spark, tmp_path_factory.mktemp("small-lakehouse"))


# Fixtures that start a JVM, a broker or a browser: tests/unit uses none of them.
REAL_SERVICE_FIXTURES = frozenset(
    {"spark", "kafka_settings", "settings", "small_lakehouse", "browser", "cluster"}
)
TESTS = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the tests of tests/integration and tests/faults ``integration`` (they need a real
    service); refuse a test in tests/unit that uses a fixture starting one."""
    for item in items:
        folder = item.path.relative_to(TESTS).parts[0]
        if folder in ("integration", "faults"):
            item.add_marker(pytest.mark.integration)
            continue
        services = sorted(REAL_SERVICE_FIXTURES & set(getattr(item, "fixturenames", ())))
        if services:
            raise pytest.UsageError(
                f"{item.nodeid} uses {', '.join(services)}, which start a real service: "
                "move it to tests/integration (or tests/faults if it injects a failure)"
            )


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 MiB tmpfs of its own (root only), unmounted afterwards."""
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path) -> Path:
    """Write one file until ``disk`` has no space left, not even a page; return it."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as out:
        for chunk in (1 << 20, 1 << 12, 1):
            try:
                while True:
                    out.write(b"\0" * chunk)
            except OSError:
                pass
    return filler
