"""The alerts job on crafted silver tables: every type fires, clean data stays quiet, silence
needs no further input, counts follow gold/alerts, Kafka gets the alerts, restarts are exact."""

from __future__ import annotations

import json
import random
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from confluent_kafka import Consumer
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from iot_lakehouse.pipeline.alerts import clock_tick_ms, start_alerts_stream, static_alerts
from iot_lakehouse.pipeline.detectors import FIRED, alert_id, default_alert_rules_file
from iot_lakehouse.pipeline.jobs import await_queries
from iot_lakehouse.pipeline.rules import load_rules
from iot_lakehouse.runtime.kafka_broker import LocalKafkaBroker
from iot_lakehouse.schemas import SILVER_READINGS
from iot_lakehouse.settings import Settings
from tests.conftest import checkpoint_commits, kill_repeatedly_then_finish

START = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
STEP = timedelta(seconds=2)


def silver_row(sensor: str, when: datetime, value: float, metric: str = "temperature") -> dict:
    flag = None
    if metric == "temperature" and value > 30:
        flag = "HIGH_TEMP"
    elif metric == "temperature" and value < 10:
        flag = "LOW_TEMP"
    elif metric == "humidity" and value > 80:
        flag = "HIGH_HUMIDITY"
    return {
        "sensor_id": sensor,
        "metric": metric,
        "value": float(value),
        "unit": "°C" if metric == "temperature" else "%",
        "event_time": when,
        "event_date": when.date(),
        "location": "building-A/floor-1",
        "alert_type": flag,
        "severity": "warning" if flag else None,
        "rule_version": "test",
    }


def scenario(minutes: int = 40) -> list[dict]:
    """Six sensors over ``minutes``: one clean, one for each pattern; s-silent stops at 5 min."""
    rng = random.Random(3)
    rows = []
    for i in range(int(minutes * 60 / STEP.total_seconds())):
        t = START + i * STEP
        m = i * STEP.total_seconds() / 60  # minutes in
        for sensor in ("s-clean", "s-spike", "s-jump", "s-drift", "s-humid", "s-silent"):
            value = 20 + rng.gauss(0, 0.3)
            if sensor == "s-spike" and 10 <= m < 11:
                value = 32.0 + rng.random()
            if sensor == "s-jump" and 12 <= m < 15:
                value += 8
            if sensor == "s-drift" and 10 <= m < 30:
                value += 0.4 * (m - 10)
            if sensor == "s-silent" and m >= 5:
                continue
            rows.append(silver_row(sensor, t, value))
            if sensor == "s-humid":
                rows.append(
                    silver_row(
                        sensor, t, 90.0 if 20 <= m < 22 else 50 + rng.gauss(0, 1.5), "humidity"
                    )
                )
    return rows  # fmt: skip


def write_silver(
    spark: SparkSession, settings: Settings, rows: list[dict], parts: int, files: int = 1
) -> None:
    """``rows`` as ``parts`` commits in event-time order, so the stream sees several batches;
    ``files`` > 1: each commit in that many files, a sensor's readings in one of them (as
    silver writes a backlog), so ``alerts_max_files_per_trigger=1`` splits every commit."""
    n = len(rows)
    ordered = sorted(rows, key=lambda r: r["event_time"])
    for k in range(parts):
        chunk = spark.createDataFrame(
            ordered[k * n // parts : (k + 1) * n // parts], SILVER_READINGS
        )
        chunk = chunk.repartition(files, "sensor_id") if files > 1 else chunk.coalesce(1)
        chunk.write.format("delta").mode("append").save(settings.silver_readings_path)


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


def test_the_wall_clock_moves_event_time_on_only_after_the_grace() -> None:
    assert clock_tick_ms(None, 90_000, 60_000) is None  # nothing seen yet
    assert clock_tick_ms(1_000_000, 60_000, 60_000) is None  # within the grace
    assert clock_tick_ms(1_000_000, 90_000, 60_000) == 1_030_000


def run_alerts(spark: SparkSession, settings: Settings) -> None:
    import threading

    await_queries("alerts", start_alerts_stream(spark, settings, True), threading.Event())


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


def assert_counts_are_a_recount_of_the_alerts(spark: SparkSession, settings: Settings) -> None:
    """alert_counts_5m equals a recount of gold/alerts' fired alerts."""
    counts = spark.read.format("delta").load(settings.gold_path("alert_counts_5m"))
    window = F.window("event_time", "5 minutes").start.alias("window_start")
    recount = (
        spark.read.format("delta")
        .load(settings.alerts_path)
        .where("status = 'fired'")
        .groupBy(window, "alert_type", "severity")
        .agg(F.count("*").alias("alert_count"), F.count_distinct("sensor_id"))
    )
    columns = ("window_start", "alert_type", "severity", "alert_count", "affected_sensors")
    got = sorted(tuple(r) for r in counts.select(*columns).collect())
    assert got == sorted(tuple(r) for r in recount.collect())


def topic_alerts(settings: Settings, expected: set[str]) -> list[dict]:
    """Every alert on the settings' alerts topic (until ``expected`` ids are seen, 60 s)."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "group.id": f"test-{uuid.uuid4()}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([settings.kafka_alerts_topic])
    received: list[dict] = []
    try:
        for _ in range(60):
            msg = consumer.poll(1.0)
            while msg is not None:
                if msg.error() is None:
                    value = json.loads(msg.value())
                    assert msg.key().decode() == value["alert_id"]
                    received.append(value)
                msg = consumer.poll(0.2)
            if expected <= {a["alert_id"] for a in received}:
                break
    finally:
        consumer.close()
    return received


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
