"""Kafka -> bronze, on the real local broker and real Delta tables."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient
from deltalake import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from iot_lakehouse.errors import BrokerError, JobError, JobRefused
from iot_lakehouse.ops.reconcile import (
    bronze_silver_ledger,
    socket_bronze_ledger,
)
from iot_lakehouse.ops.status import delta_row_count
from iot_lakehouse.pipeline.bronze import conform, start_bronze_stream, to_bronze_events
from iot_lakehouse.pipeline.jobs import job_starter, run_in_session
from iot_lakehouse.pipeline.silver import start_silver_stream
from iot_lakehouse.runtime.kafka_broker import LocalKafkaBroker
from iot_lakehouse.schemas import BRONZE_EVENTS
from iot_lakehouse.settings import Settings
from iot_lakehouse.sources.generator import EventGenerator, GeneratorConfig
from tests.conftest import produce

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


def is_utf8(value: bytes) -> bool:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def landing_lines(count: int, seed: int) -> list[bytes]:
    """Generated records (bad input included) that can be lines of a JSON-lines file."""
    config = GeneratorConfig(
        sensors=50,
        seed=seed,
        malformed_fraction=0.1,
        invalid_fraction=0.1,
        duplicate_fraction=0.05,
        start_time=START,
    )
    generator = EventGenerator(config)
    values = (generator.generate_event(i).value for i in range(count))
    return [v for v in values if v and b"\n" not in v and b"\r" not in v]


def test_file_source_ingests_each_landed_line_once_with_its_bytes(
    spark: SparkSession, settings: Settings, tmp_path: Path
) -> None:
    landing = tmp_path / "landing"
    landing.mkdir()
    files_settings = settings.with_(landing_path=str(landing))
    first, second = landing_lines(600, seed=3), landing_lines(400, seed=4)
    assert any(not is_utf8(v) for v in first), "the corpus should hold non-UTF-8 lines"
    # Windows line ends and blank lines are layout; the bytes of each line are the record.
    (landing / "sensor_data_01.json").write_bytes(
        b"\r\n".join(first[:300]) + b"\r\n\n" + b"\n".join(first[300:]) + b"\n"
    )
    (landing / ".sensor_data_02.json.tmp").write_bytes(b"half a file, still being written")
    (landing / "notes.txt").write_bytes(b"not matching the pattern\n")

    def ingest() -> DataFrame:
        query = start_bronze_stream(spark, files_settings, available_now=True, source="files")
        query.awaitTermination(300)
        assert query.exception() is None
        return spark.read.format("delta").load(settings.bronze_events_path)

    bronze = ingest()
    assert sorted(bytes(r.raw_value) for r in bronze.select("raw_value").collect()) == sorted(first)
    modified = int((landing / "sensor_data_01.json").stat().st_mtime * 1000)
    assert {r.topic for r in bronze.select("topic").distinct().collect()} == {
        f"file:sensor_data_01.json@{modified}"
    }
    assert bronze.select("topic", "partition", "offset").distinct().count() == len(first)
    assert bronze.where(F.col("source_file").endswith("/sensor_data_01.json")).count() == len(first)
    assert bronze.where(F.col("kafka_timestamp").isNull()).count() == 0

    # A file renamed into place later is picked up; the first one is not read again.
    (landing / ".sensor_data_02.json.tmp").write_bytes(b"\n".join(second))
    (landing / ".sensor_data_02.json.tmp").rename(landing / "sensor_data_02.json")
    bronze = ingest()
    assert sorted(bytes(r.raw_value) for r in bronze.select("raw_value").collect()) == sorted(
        first + second
    )
    assert ingest().count() == len(first) + len(second)

    # Silver treats file records like Kafka records, and the ledger accounts for every one.
    query = start_silver_stream(spark, settings, available_now=True)
    query.awaitTermination(300)
    assert query.exception() is None
    ledger = bronze_silver_ledger(spark, settings)
    assert ledger.ok and ledger.source == len(first) + len(second), ledger
    assert ledger.parts["silver"] > 0 and ledger.parts["dlq"] > 0


def run_files_then_silver(spark: SparkSession, settings: Settings, runs: int = 1) -> None:
    """Bronze from the landing folder (``runs`` times), then silver, each --available-now."""
    for _ in range(runs):
        query = start_bronze_stream(spark, settings, available_now=True, source="files")
        query.awaitTermination(300)
        assert query.exception() is None
    query = start_silver_stream(spark, settings, available_now=True)
    query.awaitTermination(300)
    assert query.exception() is None


def silver_keys_held_twice(spark: SparkSession, settings: Settings) -> int:
    silver = spark.read.format("delta").load(settings.silver_readings_path)
    return silver.groupBy("sensor_id", "metric", "event_time").count().where("count > 1").count()


def test_file_source_without_its_checkpoint_skips_the_files_its_table_holds(
    spark: SparkSession, settings: Settings, tmp_path: Path
) -> None:
    landing = tmp_path / "landing"
    landing.mkdir()
    settings = settings.with_(landing_path=str(landing))
    first, second, third = (landing_lines(120, seed=s) for s in (11, 12, 13))
    (landing / "sensor_data_01.json").write_bytes(b"\n".join(first))
    (landing / "sensor_data_02.json").write_bytes(b"\n".join(second))
    run_files_then_silver(spark, settings)
    shutil.rmtree(settings.checkpoint_path("bronze_files"))  # lost
    (landing / "sensor_data_03.json").write_bytes(b"\n".join(third))
    run_files_then_silver(spark, settings)

    bronze = spark.read.format("delta").load(settings.bronze_events_path)
    assert bronze.count() == len(first) + len(second) + len(third)  # each line once
    assert silver_keys_held_twice(spark, settings) == 0
    ledger = bronze_silver_ledger(spark, settings)
    assert ledger.ok and ledger.source == bronze.count(), ledger


def test_a_file_landing_again_under_its_name_is_a_new_delivery_and_silver_holds_it_once(
    spark: SparkSession, settings: Settings, tmp_path: Path
) -> None:
    landing = tmp_path / "landing"
    landing.mkdir()
    settings = settings.with_(landing_path=str(landing))
    lines = landing_lines(120, seed=21)
    again = landing / "sensor_data_01.json"
    again.write_bytes(b"\n".join(lines))
    old = time.time() - 10 * 86_400  # older than Spark's maxFileAge (7 days) of the newest file
    os.utime(again, (old, old))
    run_files_then_silver(spark, settings)
    # `emitter reset` then `run`: the same file lands again, fresh, beside a new one; Spark
    # forgets the old one once the new one is read (maxFileAge) and then reads it again.
    again.unlink()
    again.write_bytes(b"\n".join(lines))
    (landing / "sensor_data_02.json").write_bytes(b"\n".join(landing_lines(50, seed=22)))
    run_files_then_silver(spark, settings, runs=2)

    bronze = spark.read.format("delta").load(settings.bronze_events_path)
    assert bronze.where(F.col("source_file").endswith(f"/{again.name}")).count() == 2 * len(lines)
    assert bronze.select("topic", "partition", "offset").distinct().count() == bronze.count()
    assert silver_keys_held_twice(spark, settings) == 0
    ledger = bronze_silver_ledger(spark, settings)
    assert ledger.ok and ledger.parts["duplicates"] > 0, ledger


def recreate_topic(settings: Settings) -> None:
    """Delete the sensor topic and create it again: a new topic id, offsets from 0."""
    broker = LocalKafkaBroker(settings)
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers})
    for future in admin.delete_topics([settings.kafka_topic]).values():
        future.result(30)
    deadline = time.monotonic() + 60
    while True:
        try:
            if settings.kafka_topic not in (broker.list_topics() or ()):
                broker.create_topics()
                return
        except BrokerError:  # still being deleted
            pass
        assert time.monotonic() < deadline, "the topic was not created again in 60 s"
        time.sleep(1)


def test_bronze_refuses_a_topic_deleted_and_created_again(
    spark: SparkSession, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    produce(settings, 40, seed=31, bad_fraction=0.0)

    def ingest() -> None:
        query = start_bronze_stream(spark, settings, available_now=True)
        query.awaitTermination(300)
        assert query.exception() is None

    ingest()
    before = spark.read.format("delta").load(settings.bronze_events_path).count()
    assert before == 40
    recreate_topic(settings)
    produce(settings, 100, seed=32, bad_fraction=0.0)  # offsets 0.. again, past bronze's
    with pytest.raises(JobError, match=r"refuses topic .*deleted and created again.*KAFKA_TOPIC"):
        ingest()
    # without its checkpoint it would resume after the table's offsets: refused all the same
    shutil.rmtree(settings.checkpoint_path("bronze"))
    with pytest.raises(JobError, match=r"refuses topic"):
        ingest()
    # the job stops at once: a restart would find the same topic
    caplog.set_level(logging.ERROR, logger="iot_lakehouse.pipeline.jobs")
    with pytest.raises(JobRefused, match=r"refuses topic"):
        run_in_session(
            spark, "bronze", job_starter("bronze", "kafka"), settings, True, threading.Event()
        )
    assert not [r for r in caplog.records if "starting it again" in r.getMessage()]
    assert spark.read.format("delta").load(settings.bronze_events_path).count() == before


def serve_lines(port: int, lines: list[bytes]) -> tuple[int, threading.Event]:
    """A TCP server (port 0: a free one) that sends ``lines`` to the first client and holds the
    connection open until the returned event is set (as ``nc -lk`` would)."""
    server = socket.create_server(("127.0.0.1", port))
    done = threading.Event()

    def serve() -> None:
        with server:
            server.settimeout(120)
            conn, _ = server.accept()
            with conn:
                conn.sendall(b"\n".join(lines) + b"\n")
                done.wait(180)

    threading.Thread(target=serve, name="test-socket-server", daemon=True).start()
    return server.getsockname()[1], done


def socket_lines_into_bronze(
    spark: SparkSession, settings: Settings, port: int, lines: list[bytes], expected: int
) -> None:
    """Run bronze from a socket server sending ``lines`` until bronze holds ``expected`` rows."""
    port, done = serve_lines(port, lines)
    query = start_bronze_stream(spark, settings.with_(socket_port=port), source="socket")
    try:
        deadline = time.monotonic() + 180
        while (delta_row_count(settings.bronze_events_path) or 0) < expected:
            assert query.exception() is None and time.monotonic() < deadline, query.exception()
            time.sleep(0.5)
    finally:
        query.stop()
        done.set()


def test_socket_source_lands_each_line_once_with_unique_coordinates(
    spark: SparkSession, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    settings = settings.with_(trigger_interval="1 second")
    lines = [v for v in landing_lines(400, seed=5) if is_utf8(v)]
    first, second = lines[:250], lines[250:]
    with caplog.at_level(logging.WARNING, logger="iot_lakehouse.pipeline.bronze"):
        socket_lines_into_bronze(spark, settings, 0, [*first, b""], len(first))
    assert "a debugging source with no replay" in caplog.text
    bronze = spark.read.format("delta").load(settings.bronze_events_path)
    port = int(bronze.select("topic").first()["topic"].rsplit(":", 1)[1])
    # A restart (new server, same address): its lines get offsets of their own.
    socket_lines_into_bronze(spark, settings, port, second, len(lines))
    bronze = spark.read.format("delta").load(settings.bronze_events_path)
    assert sorted(bytes(r.raw_value) for r in bronze.select("raw_value").collect()) == sorted(lines)
    assert {r.topic for r in bronze.select("topic").distinct().collect()} == {
        f"socket:127.0.0.1:{port}"
    }
    assert bronze.select("topic", "partition", "offset").distinct().count() == len(lines)
    assert bronze.where(F.col("kafka_timestamp").isNull() | F.col("payload").isNull()).count() == 0

    # Silver judges socket records like any other; reconcile counts them without a ledger.
    query = start_silver_stream(spark, settings, available_now=True)
    query.awaitTermination(300)
    assert query.exception() is None
    assert bronze_silver_ledger(spark, settings).ok
    ledger = socket_bronze_ledger(spark, settings)
    assert ledger is not None and ledger.source == len(lines) and ledger.status == "NO LEDGER"


def test_socket_source_cannot_run_available_now(spark: SparkSession, settings: Settings) -> None:
    with pytest.raises(JobError, match="--source socket cannot run --available-now"):
        start_bronze_stream(spark, settings, available_now=True, source="socket")


def test_file_source_needs_an_existing_landing_folder(spark: SparkSession, tmp_path: Path) -> None:
    settings = Settings.from_env({}).with_(
        landing_path=str(tmp_path / "nowhere"), lakehouse_path=str(tmp_path / "lakehouse")
    )
    with pytest.raises(JobError, match=r"landing folder .*nowhere does not exist"):
        start_bronze_stream(spark, settings, available_now=True, source="files")
