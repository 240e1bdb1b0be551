from __future__ import annotations

from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from iot_lakehouse.runtime.kafka_broker import LocalKafkaBroker
from tests.conftest import broker_settings


@pytest.mark.integration  # starts a JVM, broker, browser or kernel
def test_start_twice_reuses_then_stop(tmp_path: Path) -> None:
    settings = broker_settings(tmp_path).with_(kafka_topic_partitions=3)
    broker = LocalKafkaBroker(settings)
    try:
        first = broker.start()
        assert first.reachable and first.pid is not None
        assert {"iot-sensors", "iot-alerts"} <= set(first.topics)
        assert (tmp_path / "kafka" / "data" / "meta.properties").exists()
        second = broker.start()
        assert second.pid == first.pid  # reused, not a second broker
        meta = AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers}).list_topics(
            timeout=10
        )
        assert len(meta.topics["iot-sensors"].partitions) == 3
        # log4j2 took the rolling-file configuration: the broker's log is in broker.log, and
        # broker.out holds only what the JVM printed outside it.
        home = tmp_path / "kafka"
        assert "Starting broker" in (home / "broker.log").read_text()
        assert "Starting broker" not in (home / "broker.out").read_text()
        assert "SizeBasedTriggeringPolicy" in (home / "log4j2.yaml").read_text()
    finally:
        assert broker.stop() is True
    after = broker.status()
    assert not after.reachable and not after.process_alive
    assert broker.stop() is False  # stopping a stopped broker is harmless


@pytest.mark.integration  # starts a JVM, broker, browser or kernel
def test_a_cluster_id_starting_with_a_dash_formats(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # URL-safe base64 ids start with "-" 1 time in 64; kafka-storage once read that as an option.
    monkeypatch.setattr(
        "iot_lakehouse.runtime.kafka_broker.new_cluster_id", lambda: "-Ab3ZQx9Rfa1Y2b3c4d5eA"
    )
    broker = LocalKafkaBroker(broker_settings(tmp_path))
    try:
        assert broker.start().reachable
        meta = (tmp_path / "kafka" / "data" / "meta.properties").read_text()
        assert "cluster.id=-Ab3ZQx9Rfa1Y2b3c4d5eA" in meta
    finally:
        broker.stop()
