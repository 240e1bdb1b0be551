"""Kafka -> bronze, on the real local broker and real Delta tables."""

from __future__ import annotations

from pyspark.sql import SparkSession

from iot_lakehouse.ops.reconcile import kafka_bronze_ledger
from iot_lakehouse.ops.status import delta_row_count
from iot_lakehouse.runtime.kafka_offsets import kafka_watermarks
from iot_lakehouse.runtime.stream_metrics import read_stream_metrics
from iot_lakehouse.settings import Settings
from tests.conftest import kill_repeatedly_then_finish, produce


def test_bronze_job_killed_five_times_and_restarted_loses_and_duplicates_nothing(
    settings: Settings, spark: SparkSession
) -> None:
    total = 20_000
    produce(settings, total, seed=11, bad_fraction=0.2)

    def partly_written(kill: int) -> None:
        partial = delta_row_count(settings.bronze_events_path)
        assert partial is not None and 0 < partial, partial
        assert kill > 0 or partial < total, "the first kill came after the whole stream"

    kill_repeatedly_then_finish(
        "bronze",
        settings,
        lambda: delta_row_count(settings.bronze_events_path) or 0,
        kills=5,
        after_kill=partly_written,
        timeout=180,
        seed=11,
        MAX_OFFSETS_PER_TRIGGER="1000",
    )
    bronze = spark.read.format("delta").load(settings.bronze_events_path)
    assert bronze.count() == total
    assert bronze.select("topic", "partition", "offset").distinct().count() == total
    ranges = kafka_watermarks(settings)
    assert ranges is not None
    ledger = kafka_bronze_ledger(spark, settings, ranges)  # what `reconcile` checks first
    assert ledger.ok and ledger.source == total, ledger
    # The job's listener recorded the Kafka lag of its batches (Spark's source metric): far
    # behind at first (1,000 offsets a batch of 20,000), then less and less, down to 0 in the
    # --available-now run's last batch (whose progress event arrives after the query ended).
    # A batch replayed after a kill runs from the offsets the killed run had logged: Spark does
    # not ask Kafka for the latest offsets then, so that batch has no lag figure.
    metrics = [r for r in read_stream_metrics(settings.stream_metrics_path) if r["job"] == "bronze"]
    lags = [r["kafka_lag_max"] for r in metrics if r["input_rows"]]
    known = [lag for lag in lags if lag is not None]
    assert len(known) >= len(lags) - 5, metrics  # at most one replayed batch per kill
    assert max(known) > 1000 and known[-1] == 0, lags
