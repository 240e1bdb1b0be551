"""The alerts job on crafted silver tables: every type fires, clean data stays quiet, silence
needs no further input, counts follow gold/alerts, Kafka gets the alerts, restarts are exact."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pyspark.sql import SparkSession

from iot_lakehouse.pipeline.alerts import start_alerts_stream, static_alerts
from iot_lakehouse.pipeline.detectors import FIRED, alert_id, default_alert_rules_file
from iot_lakehouse.pipeline.rules import load_rules
from iot_lakehouse.runtime.kafka_broker import LocalKafkaBroker
from iot_lakehouse.schemas import SILVER_READINGS
from iot_lakehouse.settings import Settings
from tests.support.alerts import (
    START,
    STEP,
    assert_counts_are_a_recount_of_the_alerts,
    run_alerts,
    scenario,
    silver_row,
    topic_alerts,
    write_silver,
)


def test_static_alerts_of_readings_a_microsecond_apart_have_two_ids(
    spark: SparkSession,
) -> None:
    first = START + timedelta(milliseconds=7)
    second = first + timedelta(microseconds=400)  # same millisecond
    rows = [silver_row("s-1", first, 35.0), silver_row("s-1", second, 36.0)]
    alerts = static_alerts(spark.createDataFrame(rows, SILVER_READINGS), load_rules())
    ids = {r.event_time: r.alert_id for r in alerts.collect()}
    assert len(set(ids.values())) == 2
    # the Spark id is the one the Python detectors compute for the same reading
    micros = int(first.timestamp()) * 1_000_000 + first.microsecond
    assert ids[first.replace(tzinfo=None)] == alert_id(
        "s-1", "temperature", "HIGH_TEMP", FIRED, micros
    )


def alerts_of(spark: SparkSession, settings: Settings) -> list[dict]:
    return [r.asDict() for r in spark.read.format("delta").load(settings.alerts_path).collect()]


def test_each_alert_type_fires_on_its_pattern_and_clean_sensors_stay_quiet(
    spark: SparkSession, settings: Settings
) -> None:
    settings = settings.with_(alerts_max_files_per_trigger=1, snapshot_in_first_batch=False)
    write_silver(spark, settings, scenario(), parts=8)
    run_alerts(spark, settings)
    alerts = alerts_of(spark, settings)
    by_sensor: dict[str, set[str]] = {}
    for a in alerts:
        by_sensor.setdefault(a["sensor_id"], set()).add(a["alert_type"])
    assert "s-clean" not in by_sensor, by_sensor
    assert {"HIGH_TEMP", "DYNAMIC_THRESHOLD", "OUTLIER", "CONSECUTIVE_ALERTS"} <= by_sensor[
        "s-spike"
    ]
    assert "SUDDEN_CHANGE" in by_sensor["s-jump"]
    assert "RISING_TREND" in by_sensor["s-drift"]
    assert "HIGH_HUMIDITY" in by_sensor["s-humid"]
    # silence: fired from the watermark the other sensors move, with no further input from it
    silent = [a for a in alerts if a["sensor_id"] == "s-silent"]
    assert [(a["alert_type"], a["status"]) for a in silent] == [("SENSOR_SILENT", "fired")]
    last_seen = max(r["event_time"] for r in scenario() if r["sensor_id"] == "s-silent")
    assert silent[0]["event_time"].replace(tzinfo=UTC) == last_seen + timedelta(minutes=10)
    # every alert is where its pattern is
    for a in alerts:
        assert a["alert_id"] and a["detected_at"] and a["batch_id"] is not None
        if a["alert_type"] == "SUDDEN_CHANGE":
            assert a["sensor_id"] in {"s-jump", "s-spike", "s-drift"}  # drift: the drop back
    ids = [a["alert_id"] for a in alerts]
    assert len(ids) == len(set(ids))
    # static alerts: exactly the flagged silver readings
    static = {a["alert_id"] for a in alerts if a["detector"] == "static"}
    flagged = [r for r in scenario() if r["alert_type"]]
    assert len(static) == len(flagged)
    assert_counts_are_a_recount_of_the_alerts(spark, settings)
    counts = spark.read.format("delta").load(settings.gold_path("alert_counts_5m"))
    assert counts.where("alert_type = 'SENSOR_SILENT'").count() == 1


def test_a_plain_kafka_consumer_receives_the_alerts(
    spark: SparkSession, settings: Settings
) -> None:
    topic = f"alerts-{uuid.uuid4().hex[:8]}"
    settings = settings.with_(kafka_alerts_topic=topic)
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
    assert LocalKafkaBroker(settings).status().reachable
    rows = [silver_row("s1", START + i * STEP, 20.0) for i in range(30)]
    rows += [silver_row("s1", START + 30 * STEP, 35.0), silver_row("s2", START, 85.0, "humidity")]
    write_silver(spark, settings, rows, parts=2)
    run_alerts(spark, settings)
    delta_ids = {a["alert_id"] for a in alerts_of(spark, settings)}
    received = topic_alerts(settings, delta_ids)
    assert {a["alert_id"] for a in received} == delta_ids
    assert {"HIGH_TEMP", "HIGH_HUMIDITY", "OUTLIER"} <= {a["alert_type"] for a in received}


def stateful_alerts(spark: SparkSession, settings: Settings) -> list[tuple]:
    key = ("alert_id", "alert_type", "status", "event_time", "value", "threshold", "evidence")
    df = spark.read.format("delta").load(settings.alerts_path).where("detector = 'stateful'")
    return sorted(tuple(r) for r in df.select(*key).collect())


def test_a_silver_commit_split_over_batches_gives_the_alerts_of_one_batch(
    spark: SparkSession, settings: Settings, tmp_path: Path
) -> None:
    """The backlog case: each commit read one file per batch, its later files behind the
    watermark the first moved. Every reading still reaches the detectors."""
    rows = scenario(16)
    whole = settings.with_(lakehouse_path=str(tmp_path / "whole"))
    write_silver(spark, whole, rows, parts=2)
    run_alerts(spark, whole)
    split = settings.with_(alerts_max_files_per_trigger=1, snapshot_in_first_batch=False)
    write_silver(spark, split, rows, parts=2, files=3)
    run_alerts(spark, split)
    assert len(list(Path(split.silver_readings_path).glob("*.parquet"))) > 2
    expected = stateful_alerts(spark, whole)
    assert {a[1] for a in expected} >= {"SUDDEN_CHANGE", "OUTLIER", "SENSOR_SILENT"}
    assert stateful_alerts(spark, split) == expected


def test_a_gateway_outage_makes_every_sensor_silent_on_the_wall_clock(
    spark: SparkSession, settings: Settings, tmp_path: Path
) -> None:
    """Every sensor stops: no reading moves the event-time watermark any more, the wall clock
    does once ``ALERTS_IDLE_GRACE`` has passed."""
    rules = tmp_path / "alert_rules.yml"
    text = default_alert_rules_file().read_text()
    rules.write_text(text.replace("after_seconds: 600", "after_seconds: 5"))
    settings = settings.with_(
        alert_rules_file=rules,
        alerts_watermark="2 seconds",
        alerts_idle_grace="1 second",
        trigger_interval="1 second",
        alerts_trigger_interval="",
    )
    now = datetime.now(UTC).replace(microsecond=0)
    sensors = {"g-1", "g-2", "g-3"}
    # the last readings (now - 11 s) leave the watermark at now - 13 s, before their silence
    rows = [
        silver_row(s, now - timedelta(seconds=20 - i), 20.0) for i in range(10) for s in sensors
    ]
    write_silver(spark, settings, rows, parts=1)
    queries = start_alerts_stream(spark, settings)
    silent: list[dict] = []
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and len(silent) < len(sensors):
            time.sleep(2)
            silent = [a for a in alerts_of(spark, settings) if a["alert_type"] == "SENSOR_SILENT"]
    finally:
        for query in queries:
            query.stop()
    assert {a["sensor_id"] for a in silent} == sensors, f"SENSOR_SILENT after 90 s: {silent}"
    due = (now - timedelta(seconds=11) + timedelta(seconds=5)).replace(tzinfo=None)
    assert {(a["status"], a["event_time"]) for a in silent} == {(FIRED, due)}
