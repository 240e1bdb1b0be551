from __future__ import annotations

from pathlib import Path

from iot_lakehouse.runtime.kafka_broker import min_heap, server_properties
from tests.conftest import broker_settings


def test_server_properties_single_node_kraft_on_loopback(tmp_path: Path) -> None:
    settings = broker_settings(tmp_path)
    props = server_properties(settings, tmp_path / "data")
    assert "process.roles=broker,controller" in props
    assert f"listeners=PLAINTEXT://127.0.0.1:{settings.kafka_port}," in props
    assert f"controller.quorum.voters=1@127.0.0.1:{settings.kafka_controller_port}" in props
    assert f"log.dirs={tmp_path / 'data'}" in props


def test_min_heap() -> None:
    assert min_heap("512m") == "128m"
    assert min_heap("2g") == "1g"
