"""stream_metrics: progress events -> rows, latency arithmetic, the table round trip, the
status picture. The listener inside real jobs is exercised by the job tests (test_bronze,
test_silver, test_gold assert on the rows their job processes wrote)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
from deltalake import DeltaTable
from pyspark.sql import SparkSession

from iot_lakehouse.runtime.stream_metrics import (
    STREAM_METRICS,
    Latency,
    StreamMetricsRecorder,
    append_rows_with_spark,
    progress_row,
    read_stream_metrics,
)
from tests.support.stream_metrics import KAFKA_PROGRESS, STATEFUL_PROGRESS


def test_the_spark_writer_for_object_storage_keeps_every_columns_type(
    spark: SparkSession, tmp_path: Path
) -> None:
    """A lakehouse on s3a:// is written through Spark; forced here on a local folder. A bronze
    row (no latency, no state) first: its all-null columns must not fix a wrong type."""
    path = str(tmp_path / "stream_metrics")
    bronze = progress_row("bronze", KAFKA_PROGRESS)
    append_rows_with_spark(spark, path, pa.Table.from_pylist([bronze], schema=STREAM_METRICS))
    silver = progress_row("silver", STATEFUL_PROGRESS, Latency("kafka_to_silver", 5.0, 9.0, 7))
    append_rows_with_spark(spark, path, pa.Table.from_pylist([silver], schema=STREAM_METRICS))
    rows = read_stream_metrics(path)
    assert [(r["job"], r["latency_kind"], r["latency_rows"]) for r in rows] == [
        ("bronze", None, None),
        ("silver", "kafka_to_silver", 7),
    ]
    stored = DeltaTable(path).to_pyarrow_dataset().schema
    assert [(f.name, stored.field(f.name).type) for f in STREAM_METRICS] == [
        (f.name, f.type) for f in STREAM_METRICS
    ]


def test_a_recorder_that_cannot_write_keeps_its_rows_for_the_next_flush(
    spark: SparkSession, tmp_path: Path
) -> None:
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the table should be")
    recorder = StreamMetricsRecorder(spark, "bronze", str(blocker / "stream_metrics"))
    recorder.on_progress(KAFKA_PROGRESS)
    assert recorder.flush() == 0  # could not write: kept, not lost
    recorder.path = str(tmp_path / "stream_metrics")  # the storage is fixed
    recorder.record_latency("bronze", 8, Latency("kafka_to_silver", 1.0, 2.0, 3))
    recorder.on_progress({**KAFKA_PROGRESS, "batchId": 8})
    assert recorder.flush() == 2
    rows = read_stream_metrics(recorder.path)
    assert [(r["batch_id"], r["latency_p95_ms"]) for r in rows] == [(7, None), (8, 2.0)]


def test_closing_waits_for_the_last_progress_of_a_query_that_just_ended(
    spark: SparkSession, tmp_path: Path
) -> None:
    # Spark delivers listener events asynchronously: an --available-now query's last progress
    # can arrive after awaitTermination() returned. close() must wait for it.
    import threading

    recorder = StreamMetricsRecorder(spark, "bronze", str(tmp_path / "stream_metrics"))
    recorder.query_started("q-1")

    def late_events() -> None:
        recorder.on_progress(KAFKA_PROGRESS)
        recorder.query_terminated("q-1")

    threading.Timer(0.5, late_events).start()
    recorder.close(wait_s=10)
    assert [r["batch_id"] for r in read_stream_metrics(recorder.path)] == [7]


def test_closing_gives_up_waiting_for_a_query_that_never_says_it_ended(
    spark: SparkSession, tmp_path: Path
) -> None:
    import time

    recorder = StreamMetricsRecorder(spark, "bronze", str(tmp_path / "stream_metrics"))
    recorder.query_started("q-1")
    recorder.on_progress(KAFKA_PROGRESS)
    started = time.monotonic()
    recorder.close(wait_s=0.5)
    assert 0.4 < time.monotonic() - started < 10
    assert [r["batch_id"] for r in read_stream_metrics(recorder.path)] == [7]
