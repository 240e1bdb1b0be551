"""The alerts job on crafted silver tables: every type fires, clean data stays quiet, silence
needs no further input, counts follow gold/alerts, Kafka gets the alerts, restarts are exact."""

from __future__ import annotations

from pathlib import Path

from pyspark.sql import SparkSession

from iot_lakehouse.runtime.kafka_broker import LocalKafkaBroker
from iot_lakehouse.settings import Settings
from tests.conftest import checkpoint_commits, kill_repeatedly_then_finish
from tests.support.alerts import (
    assert_counts_are_a_recount_of_the_alerts,
    run_alerts,
    scenario,
    topic_alerts,
    write_silver,
)


def test_five_sigkills_mid_stream_neither_lose_nor_repeat_alerts(
    spark: SparkSession, settings: Settings, tmp_path: Path
) -> None:
    rows = scenario(20)  # the silence fires at minute 15
    reference = settings.with_(
        lakehouse_path=str(tmp_path / "reference"),
        kafka_alerts_topic=f"{settings.kafka_alerts_topic}-reference",
    )
    LocalKafkaBroker(reference).create_topics()
    write_silver(spark, reference, rows, parts=6)  # one batch per commit, in order
    run_alerts(spark, reference)
    # the backlog case: each commit in three files, read one per batch (18 batches, for five
    # kills), its later files behind the watermark the first one moved
    settings = settings.with_(alerts_max_files_per_trigger=1, snapshot_in_first_batch=False)
    write_silver(spark, settings, rows, parts=6, files=3)
    kill_repeatedly_then_finish(
        "alerts",
        settings,
        lambda: checkpoint_commits(settings, "alerts"),
        kills=5,
        seed=20,
        ALERTS_MAX_FILES_PER_TRIGGER="1",
        SNAPSHOT_IN_FIRST_BATCH="false",
        KAFKA_ALERTS_TOPIC=settings.kafka_alerts_topic,
    )
    key = ("alert_id", "alert_type", "status", "event_time", "value", "threshold", "evidence")

    def table(s: Settings) -> list[tuple]:
        df = spark.read.format("delta").load(s.alerts_path)
        return sorted(tuple(r) for r in df.select(*key).collect())

    assert table(settings) == table(reference)
    # Kafka: at least once, every alert there and nothing else
    ids = {a[0] for a in table(settings)}
    assert {a["alert_id"] for a in topic_alerts(settings, ids)} == ids
    assert_counts_are_a_recount_of_the_alerts(spark, settings)
