"""silver -> gold: equal to a batch recomputation; watermark, late data, replay, SIGKILL."""

from __future__ import annotations

import shutil
from pathlib import Path

from pyspark.sql import SparkSession
from pyspark.testing import assertDataFrameEqual

from iot_lakehouse.pipeline.gold import (
    GOLD_TABLES,
    WINDOW_TABLES,
    start_gold_stream,
)
from iot_lakehouse.runtime.stream_metrics import read_stream_metrics
from iot_lakehouse.settings import Settings
from iot_lakehouse.sources.generator import GeneratorConfig
from tests.conftest import (
    commits,
    kill_repeatedly_then_finish,
    written_but_not_committed,
)
from tests.support.gold import START, build_silver, gold_settings

STATE_COLUMNS = ("value_sketch", "sensor_sketch", "m2")


# The gold five-kill test's input (also bench/bench_gold_batch.py's). At most ~150 readings per
# sensor, metric and (10-minute) window: the percentile sketches hold every value, so they are
# exact and do not depend on batch boundaries.
KILL_TEST_INPUT = GeneratorConfig(
    sensors=40,
    rate=10.0,
    count=6000,
    seed=12,
    format="mixed",
    invalid_fraction=0.01,
    duplicate_fraction=0.01,
    late_fraction=0.03,
    start_time=START,
)


def test_gold_job_killed_five_times_gives_the_same_tables(
    spark: SparkSession, settings: Settings, tmp_path: Path
) -> None:
    # one silver file a gold batch: a dozen batches or more, for five kills
    # 4 minutes: in 10 minutes of event time, readings up to 15 minutes late pass it and
    # the first windows become final (so the hourly and daily rollups hold rows)
    settings = gold_settings(settings).with_(
        gold_max_files_per_trigger=1, gold_watermark="4 minutes"
    )
    build_silver(spark, settings, KILL_TEST_INPUT, parts=8)
    reference = settings.with_(lakehouse_path=str(tmp_path / "reference"))
    shutil.copytree(settings.silver_readings_path, reference.silver_readings_path)

    kill_repeatedly_then_finish(
        "gold",
        settings,
        lambda: commits(settings.gold_progress_path),
        kills=5,
        seed=12,
        # at least one kill between a batch's Delta writes and its checkpoint commit: replayed
        replayed=lambda: written_but_not_committed(
            settings.checkpoint_path("gold"),
            [
                *(settings.gold_path(t.name) for t in GOLD_TABLES),
                settings.gold_late_readings_path,
                settings.gold_progress_path,
            ],
        ),
        GOLD_MAX_FILES_PER_TRIGGER="1",
        GOLD_WATERMARK=settings.gold_watermark,
        SNAPSHOT_IN_FIRST_BATCH="false",
    )

    # The job process recorded its batches with their Kafka -> gold latency.
    metrics = [r for r in read_stream_metrics(settings.stream_metrics_path) if r["job"] == "gold"]
    measured = [r for r in metrics if r["latency_rows"]]
    assert measured and all(r["latency_kind"] == "kafka_to_gold" for r in measured), metrics
    assert all(0 < r["latency_p50_ms"] <= r["latency_p95_ms"] for r in measured), measured

    query = start_gold_stream(spark, reference, available_now=True)
    query.awaitTermination(600)
    assert query.exception() is None
    paths = {
        t.name: (settings.gold_path(t.name), reference.gold_path(t.name)) for t in WINDOW_TABLES
    }
    paths["late"] = (settings.gold_late_readings_path, reference.gold_late_readings_path)
    paths["progress"] = (settings.gold_progress_path, reference.gold_progress_path)
    volatile = ("updated_at", "detected_at", "committed_at", *STATE_COLUMNS)
    for name, (killed_path, reference_path) in paths.items():
        killed = spark.read.format("delta").load(killed_path).drop(*volatile)
        uninterrupted = spark.read.format("delta").load(reference_path).drop(*volatile)
        assert uninterrupted.count() > 0, name
        assertDataFrameEqual(killed, uninterrupted, checkRowOrder=False, rtol=1e-9)
