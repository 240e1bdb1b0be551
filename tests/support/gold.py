"""Helpers the gold tests of tests/faults, tests/integration and tests/unit share."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pyspark.sql import SparkSession

from iot_lakehouse.pipeline.silver import start_silver_stream
from iot_lakehouse.settings import Settings
from iot_lakehouse.sources.generator import GeneratorConfig
from tests.conftest import write_generated_bronze

START = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
READINGS = (
    "sensor_id string, metric string, value double, unit string, event_time timestamp, "
    "location string, alert_type string, severity string, bronze_topic string, "
    "bronze_partition int, bronze_offset long"
)


def at(minute: int, second: int = 0) -> datetime:
    return START + timedelta(minutes=minute, seconds=second)


def reading(
    sensor: str,
    when: datetime,
    value: float,
    offset: int,
    location: str | None = "building-A/floor-1",
    alert: str | None = None,
) -> tuple[object, ...]:
    severity = "warning" if alert else None
    return (sensor, "temperature", value, "°C", when, location, alert, severity, "t", 0, offset)


def us(when: datetime) -> int:
    return int(when.timestamp() * 1_000_000)


def gold_settings(settings: Settings) -> Settings:
    return settings.with_(
        quality_every_n_batches=0,
        silver_max_files_per_trigger=1,
        gold_max_files_per_trigger=2,  # silver writes 2 files per batch: ~4 gold batches
        snapshot_in_first_batch=False,  # so from the start: late readings, state across batches
    )


def build_silver(
    spark: SparkSession, settings: Settings, config: GeneratorConfig, parts: int = 4
) -> None:
    write_generated_bronze(spark, settings, config, parts=parts)
    query = start_silver_stream(spark, settings, available_now=True)
    query.awaitTermination(600)
    assert query.exception() is None
