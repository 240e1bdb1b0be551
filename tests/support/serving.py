"""Helpers the serving tests of tests/faults, tests/integration and tests/unit share."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import SparkSession

from iot_lakehouse.pipeline.jobs import await_queries
from iot_lakehouse.pipeline.serving import (
    ALERTS_COLLECTION,
    LATEST_COLLECTION,
    read_collection,
    start_serving_stream,
)
from iot_lakehouse.runtime.mongo_server import LocalMongoServer
from iot_lakehouse.settings import Settings
from tests.conftest import free_port
from tests.support.alerts import run_alerts, scenario, write_silver

T0 = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)


def reading(sensor: str, metric: str, minute: int, value: float) -> dict[str, Any]:
    return {
        "sensor_id": sensor,
        "metric": metric,
        "value": value,
        "unit": "°C",
        "event_time": T0 + timedelta(minutes=minute),
        "location": "building-A/floor-1",
        "alert_type": None,
        "severity": None,
    }


# --- the job against a real server ---
@pytest.fixture
def served(settings: Settings, ferretdb_bin_dir: Path, tmp_path: Path) -> Iterator[Settings]:
    """The test's settings with a local MongoDB-protocol server of its own, running."""
    own = settings.with_(runtime_dir=tmp_path / "runtime", mongo_port=free_port())
    server = LocalMongoServer(own, bin_dir=ferretdb_bin_dir)
    server.start()
    try:
        yield own
    finally:
        server.stop()


def run_serve(spark: SparkSession, settings: Settings) -> None:
    await_queries("serve", start_serving_stream(spark, settings, True), threading.Event())


def pipeline_input(spark: SparkSession, settings: Settings, parts: int) -> None:
    """Silver of six sensors over 20 minutes (one silent after 5, one jumping: a critical
    SUDDEN_CHANGE, one above 30 °C: HIGH_TEMP) in ``parts`` commits, and its alerts."""
    write_silver(spark, settings, scenario(20), parts=parts)
    run_alerts(spark, settings)


def collections(settings: Settings) -> dict[str, list[dict[str, Any]]]:
    return {
        name: sorted(read_collection(settings, name), key=lambda d: d["_id"])
        for name in (ALERTS_COLLECTION, LATEST_COLLECTION)
    }
