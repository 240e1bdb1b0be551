"""bronze -> silver: parsing, one test per reason code, alerts, dedup, exactly-once, reconcile."""

from __future__ import annotations

from pyspark.sql import SparkSession

from iot_lakehouse.ops.reconcile import bronze_silver_ledger, reconcile
from iot_lakehouse.pipeline.bronze import start_bronze_stream
from iot_lakehouse.runtime.stream_metrics import read_stream_metrics
from iot_lakehouse.settings import Settings
from tests.conftest import (
    commits,
    kill_repeatedly_then_finish,
    produce,
    written_but_not_committed,
)


def test_silver_job_killed_five_times_leaves_no_duplicate_and_no_gap(
    spark: SparkSession, settings: Settings
) -> None:
    produce(settings, 12000, seed=5, sensors=300, rate=1000.0)
    # 1,500 records a bronze batch: two dozen bronze files, one per silver batch while killed
    in_batches = settings.with_(max_offsets_per_trigger=1500)
    start_bronze_stream(spark, in_batches, available_now=True).awaitTermination(300)
    kill_repeatedly_then_finish(
        "silver",
        settings,
        lambda: commits(settings.silver_readings_path),
        kills=5,
        timeout=240,
        seed=5,
        finish_env={"SILVER_MAX_FILES_PER_TRIGGER": "50"},  # silver is exact whatever the batches
        # at least one kill between a batch's Delta writes and its checkpoint commit: replayed
        replayed=lambda: written_but_not_committed(
            settings.checkpoint_path("silver"),
            [
                settings.silver_readings_path,
                settings.dlq_rejects_path,
                settings.silver_duplicates_path,
            ],
        ),
        SILVER_MAX_FILES_PER_TRIGGER="1",
    )
    ledger = bronze_silver_ledger(spark, settings)
    assert ledger.ok and ledger.source == 12000, ledger
    assert all(ledger.ok for ledger in reconcile(spark, settings))
    silver = spark.read.format("delta").load(settings.silver_readings_path)
    assert (
        silver.groupBy("sensor_id", "metric", "event_time").count().where("count > 1").count() == 0
    )
    # Its listener recorded every batch of the restarted run (the killed run's last few rows
    # may be lost with it), with the Kafka -> silver latency of the readings it committed.
    metrics = [r for r in read_stream_metrics(settings.stream_metrics_path) if r["job"] == "silver"]
    last_run = [r for r in metrics if r["run_id"] == metrics[-1]["run_id"]]
    assert sorted(r["batch_id"] for r in last_run) == list(
        range(last_run[0]["batch_id"], last_run[0]["batch_id"] + len(last_run))
    )
    measured = [r for r in metrics if r["latency_rows"]]
    assert measured, metrics
    assert all(r["latency_kind"] == "kafka_to_silver" for r in measured)
    assert all(0 < r["latency_p50_ms"] <= r["latency_p95_ms"] for r in measured), measured
    assert sum(r["input_rows"] for r in last_run) > 0
