"""Kafka -> bronze, on the real local broker and real Delta tables."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from deltalake import DeltaTable
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from iot_lakehouse.bronze import conform, start_bronze_stream, to_bronze_events
from iot_lakehouse.errors import JobError
from iot_lakehouse.generator import EventGenerator, GeneratorConfig
from iot_lakehouse.schemas import BRONZE_EVENTS
from iot_lakehouse.settings import Settings
from iot_lakehouse.status import delta_row_count
from tests.conftest import commits, kill_mid_stream_then_finish, produce

START = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
KAFKA_ROWS_SCHEMA = (
    "key binary, value binary, topic string, partition int, offset long, timestamp timestamp"
)


def kafka_rows(spark: SparkSession) -> list[tuple[object, ...]]:
    ts = datetime(2026, 1, 1, tzinfo=UTC)
    return [
        (b"sensor-00001", b'{"sensor_id":"sensor-00001","temperature":21.5}', "t", 0, 0, ts),
        (b"sensor-00002", b'{"truncated":', "t", 0, 1, ts),  # malformed JSON: kept as is
        (None, b"\xff\xfe\x00not utf-8", "t", 1, 0, ts),  # not UTF-8, no key
        (b"sensor-00003", None, "t", 1, 1, ts),  # tombstone / null value
        (b"\xc3\x28", b"", "t", 2, 0, ts),  # invalid UTF-8 key, empty value
    ]


def test_to_bronze_events_keeps_every_record_and_its_bytes(spark: SparkSession) -> None:
    source = spark.createDataFrame(kafka_rows(spark), KAFKA_ROWS_SCHEMA)
    bronze = source.transform(to_bronze_events).transform(conform)
    assert bronze.schema.simpleString() == BRONZE_EVENTS.simpleString()
    got = bronze.select("raw_value", "payload", "key", "topic", "partition", "offset")
    expected = spark.createDataFrame(
        [
            (
                bytearray(b'{"sensor_id":"sensor-00001","temperature":21.5}'),
                '{"sensor_id":"sensor-00001","temperature":21.5}',
                "sensor-00001",
                "t",
                0,
                0,
            ),
            (bytearray(b'{"truncated":'), '{"truncated":', "sensor-00002", "t", 0, 1),
            (bytearray(b"\xff\xfe\x00not utf-8"), None, None, "t", 1, 0),
            (None, None, "sensor-00003", "t", 1, 1),
            (bytearray(b""), "", None, "t", 2, 0),
        ],
        got.schema,
    )
    assertDataFrameEqual(got, expected)
    row = bronze.select("ingest_time", "ingest_date", "kafka_timestamp").first()
    assert row is not None and row.ingest_time is not None
    assert row.ingest_date == row.ingest_time.date()


def test_missing_kafka_columns_are_reported(spark: SparkSession) -> None:
    df = spark.createDataFrame([(b"x",)], "value binary")
    with pytest.raises(JobError, match=r"lacks columns \['key'"):
        to_bronze_events(df)


def expected_values(config: GeneratorConfig, count: int) -> list[bytes]:
    generator = EventGenerator(config)
    return sorted(generator.generate_event(i).value for i in range(count))


def test_10k_events_with_bad_input_land_in_bronze_exactly_once(
    spark: SparkSession, settings: Settings
) -> None:
    config = produce(settings, 10_000, seed=7, bad_fraction=0.2)
    query = start_bronze_stream(spark, settings, available_now=True)
    query.awaitTermination(300)
    assert query.exception() is None

    bronze = spark.read.format("delta").load(settings.bronze_events_path)
    assert bronze.count() == 10_000
    assert bronze.select("topic", "partition", "offset").distinct().count() == 10_000
    assert bronze.select("partition").distinct().count() == settings.kafka_topic_partitions
    # Byte for byte what the generator sent, bad input included (non-UTF-8 -> payload null).
    stored = sorted(bytes(r.raw_value) for r in bronze.select("raw_value").collect())
    assert stored == expected_values(config, 10_000)
    not_utf8 = bronze.where(F.col("payload").isNull()).count()
    assert not_utf8 > 0
    assert bronze.where(F.col("key").isNull()).count() == 0

    # Running it again finds nothing new: no duplicates.
    again = start_bronze_stream(spark, settings, available_now=True)
    again.awaitTermination(300)
    assert spark.read.format("delta").load(settings.bronze_events_path).count() == 10_000

    # Another Delta reader (delta-rs) reads the same table, without a JVM.
    table = DeltaTable(settings.bronze_events_path)
    arrow = table.to_pyarrow_table()
    assert arrow.num_rows == 10_000
    assert arrow.schema.names == [f.name for f in BRONZE_EVENTS]
    assert table.metadata().partition_columns == ["ingest_date"]
    assert delta_row_count(settings.bronze_events_path) == 10_000


def test_bronze_job_killed_with_sigkill_and_restarted_loses_and_duplicates_nothing(
    settings: Settings, spark: SparkSession
) -> None:
    total = 20_000
    produce(settings, total, seed=11, bad_fraction=0.2)

    def partly_written() -> None:
        partial = delta_row_count(settings.bronze_events_path)
        assert partial is not None and 0 < partial < total, partial

    kill_mid_stream_then_finish(
        "bronze",
        settings,
        lambda: commits(settings.bronze_events_path) >= 3,
        after_kill=partly_written,
        timeout=180,
        MAX_OFFSETS_PER_TRIGGER="1500",
    )
    bronze = spark.read.format("delta").load(settings.bronze_events_path)
    assert bronze.count() == total
    assert bronze.select("topic", "partition", "offset").distinct().count() == total
