"""Shared fixtures: one real Kafka broker and one Spark session for the whole test session."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from iot_lakehouse.kafka_broker import LocalKafkaBroker
from iot_lakehouse.settings import Settings
from iot_lakehouse.spark_session import build_spark


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
