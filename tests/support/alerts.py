"""Helpers the alerts tests of tests/faults and tests/integration share."""

from __future__ import annotations

import json
import random
import uuid
from datetime import UTC, datetime, timedelta

from confluent_kafka import Consumer
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from iot_lakehouse.pipeline.alerts import start_alerts_stream
from iot_lakehouse.pipeline.jobs import await_queries
from iot_lakehouse.schemas import SILVER_READINGS
from iot_lakehouse.settings import Settings

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


def run_alerts(spark: SparkSession, settings: Settings) -> None:
    import threading

    await_queries("alerts", start_alerts_stream(spark, settings, True), threading.Event())


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
