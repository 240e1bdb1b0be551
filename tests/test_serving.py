"""gold/alerts and silver -> MongoDB: the documents, kept newer-wins, against a real
MongoDB-protocol server (FerretDB, started by the project); replays and kills change nothing;
a server that does not answer gives an error that says what to do."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from delta.tables import DeltaTable
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from iot_lakehouse.pipeline.jobs import await_queries
from iot_lakehouse.pipeline.serving import (
    ALERTS_COLLECTION,
    LATEST_COLLECTION,
    alert_document,
    bulk,
    latest_updates,
    mongo_client,
    open_alert_updates,
    read_collection,
    start_serving_stream,
    stored_sensors,
)
from iot_lakehouse.runtime.mongo_server import LocalMongoServer
from iot_lakehouse.settings import PROJECT_ROOT, Settings
from tests.conftest import checkpoint_commits, free_port, job_env, kill_repeatedly_then_finish
from tests.test_alerts import run_alerts, scenario, write_silver

T0 = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)


def reading(sensor: str, metric: str, minute: int, value: float) -> dict[str, Any]:
    return {
        "sensor_id": sensor,
        "metric": metric,
        "value": value,
        "unit": "°C",
        "event_time": T0 + timedelta(minutes=minute),
        "location": "building-A/floor-1",
        "alert_type": None,
        "severity": None,
    }


def alert(
    sensor: str, alert_type: str, status: str, minute: int, severity: str = "warning"
) -> dict[str, Any]:
    at = T0 + timedelta(minutes=minute)
    return {
        "alert_id": f"{sensor}-{alert_type}-{status}-{minute}",
        "sensor_id": sensor,
        "metric": None if alert_type == "SENSOR_SILENT" else "temperature",
        "location": "building-A/floor-1",
        "alert_type": alert_type,
        "severity": severity,
        "status": status,
        "event_time": at,
        "value": 1.0,
        "threshold": 2.0,
        "baseline": None,
        "evidence": '{"window_seconds": 60}',
        "detector": "stateful",
        "rule_version": "test",
        "batch_id": 3,
        "detected_at": at + timedelta(seconds=5),
    }


def test_an_alert_document_is_keyed_by_its_id_and_says_whether_it_is_critical() -> None:
    doc = alert_document(alert("s1", "SUDDEN_CHANGE", "fired", 1, severity="critical"))
    assert doc["_id"] == "s1-SUDDEN_CHANGE-fired-1" and "alert_id" not in doc
    assert doc["is_critical"] is True and "batch_id" not in doc
    assert doc["evidence"] == {"window_seconds": 60}
    assert alert_document(alert("s1", "OUTLIER", "fired", 1))["is_critical"] is False


def test_latest_readings_keep_the_newer_value_per_metric() -> None:
    stored = {"s1": {"readings": {"temperature": {"event_time": T0 + timedelta(minutes=5)}}}}
    batch = [
        reading("s1", "temperature", 4, 20.0),  # older than stored: not written
        reading("s1", "humidity", 4, 50.0),
        reading("s2", "temperature", 6, 21.0),
    ]
    updates = {u._filter["_id"]: u._doc["$set"] for u in latest_updates(batch, stored)}
    assert set(updates["s1"]) == {"readings.humidity", "last_event_time", "location"}
    assert updates["s2"]["readings.temperature"]["value"] == 21.0
    moved = {**reading("s3", "temperature", 7, 1.0), "location": "building-B/floor-2"}
    older = reading("s3", "humidity", 5, 2.0)  # after the newer one in the batch
    fields = latest_updates([moved, older], {})[0]._doc["$set"]
    assert fields["location"] == "building-B/floor-2"
    assert fields["last_event_time"] == T0 + timedelta(minutes=7)
    again = {"s2": {"readings": {"temperature": {"event_time": T0 + timedelta(minutes=6)}}}}
    replayed = latest_updates([batch[2]], again)  # the same reading again: the same value
    assert replayed[0]._doc["$set"]["readings.temperature"]["value"] == 21.0


def test_open_alerts_open_on_fired_and_close_on_a_newer_clearing() -> None:
    batch = [
        alert("s1", "SENSOR_SILENT", "fired", 10, severity="critical"),
        alert("s2", "SENSOR_SILENT", "fired", 10),
        alert("s2", "SENSOR_SILENT", "cleared", 12),
        alert("s3", "OUTLIER", "fired", 3),
    ]
    updates = {u._filter["_id"]: u._doc for u in open_alert_updates(batch, {})}
    silent = updates["s1"]["$set"]["open_alerts.SENSOR_SILENT"]
    assert silent["open_until"] is None and silent["is_critical"] is True
    assert updates["s2"] == {"$unset": {"open_alerts.SENSOR_SILENT": ""}}
    outlier = updates["s3"]["$set"]["open_alerts.OUTLIER:temperature"]
    assert outlier["open_until"] == T0 + timedelta(minutes=3, seconds=5) + timedelta(minutes=15)
    # a clearing older than the stored fired alert leaves it open
    stored = {"s4": {"open_alerts": {"SENSOR_SILENT": {"event_time": T0 + timedelta(minutes=20)}}}}
    assert open_alert_updates([alert("s4", "SENSOR_SILENT", "cleared", 15)], stored) == []


# --- the job against a real server ---
@pytest.fixture
def served(settings: Settings, ferretdb_bin_dir: Path, tmp_path: Path) -> Iterator[Settings]:
    """The test's settings with a local MongoDB-protocol server of its own, running."""
    own = settings.with_(runtime_dir=tmp_path / "runtime", mongo_port=free_port())
    server = LocalMongoServer(own, bin_dir=ferretdb_bin_dir)
    server.start()
    try:
        yield own
    finally:
        server.stop()


def run_serve(spark: SparkSession, settings: Settings) -> None:
    await_queries("serve", start_serving_stream(spark, settings, True), threading.Event())


def pipeline_input(spark: SparkSession, settings: Settings, parts: int) -> None:
    """Silver of six sensors over 20 minutes (one silent after 5, one jumping: a critical
    SUDDEN_CHANGE, one above 30 °C: HIGH_TEMP) in ``parts`` commits, and its alerts."""
    write_silver(spark, settings, scenario(20), parts=parts)
    run_alerts(spark, settings)


def collections(settings: Settings) -> dict[str, list[dict[str, Any]]]:
    return {
        name: sorted(read_collection(settings, name), key=lambda d: d["_id"])
        for name in (ALERTS_COLLECTION, LATEST_COLLECTION)
    }


def test_the_documents_are_gold_alerts_and_the_newest_silver_readings(
    spark: SparkSession, served: Settings
) -> None:
    pipeline_input(spark, served, parts=4)
    run_serve(spark, served)
    served_now = collections(served)

    gold = {
        r["alert_id"]: r.asDict()
        for r in spark.read.format("delta").load(served.alerts_path).collect()
    }
    docs = {d["_id"]: d for d in served_now[ALERTS_COLLECTION]}
    assert set(docs) == set(gold) and gold
    for alert_id, row in gold.items():
        doc = docs[alert_id]
        assert doc["is_critical"] == (row["severity"] == "critical")
        for name in ("sensor_id", "alert_type", "status", "severity", "value", "detector"):
            assert doc[name] == row[name], (alert_id, name)
        assert doc["event_time"] == row["event_time"].astimezone(UTC)
    assert {d["is_critical"] for d in docs.values()} == {True, False}

    newest = (
        spark.read.format("delta")
        .load(served.silver_readings_path)
        .groupBy("sensor_id", "metric")
        .agg(F.max_by(F.struct("value", "event_time"), "event_time").alias("r"))
        .collect()
    )
    latest = {d["_id"]: d for d in served_now[LATEST_COLLECTION]}
    assert set(latest) == {r["sensor_id"] for r in newest}
    for r in newest:
        stored = latest[r["sensor_id"]]["readings"][r["metric"]]
        assert stored["value"] == r["r"]["value"]
        assert stored["event_time"] == r["r"]["event_time"].astimezone(UTC)
    silent = latest["s-silent"]["open_alerts"]["SENSOR_SILENT"]
    assert silent["open_until"] is None and silent["is_critical"] is True
    assert "SENSOR_SILENT" not in latest["s-clean"].get("open_alerts", {})

    # Read again from the start (a lost checkpoint): the same documents.
    shutil.rmtree(served.checkpoint_path("serve"))
    run_serve(spark, served)
    assert collections(served) == served_now

    # A rebuild (`rerun alerts`) deletes the rows, then appends them again: the same documents.
    rows = spark.read.format("delta").load(served.alerts_path).localCheckpoint()
    DeltaTable.forPath(spark, served.alerts_path).delete()
    rows.write.format("delta").mode("append").save(served.alerts_path)
    run_serve(spark, served)
    assert collections(served) == served_now


def test_a_batch_of_many_sensors_is_written_whole_twice(served: Settings) -> None:
    """Updates of 150 stored sensors at once (the local server stops answering a bulk write
    of 100 or more updates: they go in smaller bulks)."""
    client = mongo_client(served)
    latest = client[served.serving_mongo_database][LATEST_COLLECTION]
    try:
        for minute in (1, 2):
            batch = [reading(f"s{i:03d}", "temperature", minute, float(i)) for i in range(150)]
            stored = stored_sensors(latest, [r["sensor_id"] for r in batch], "readings")
            assert bulk(latest, latest_updates(batch, stored)) == 150
        newest = {d["readings"]["temperature"]["event_time"] for d in latest.find()}
        assert newest == {T0 + timedelta(minutes=2)}
    finally:
        client.close()


def test_serve_killed_mid_stream_leaves_the_documents_of_an_uninterrupted_run(
    spark: SparkSession, served: Settings, tmp_path: Path
) -> None:
    pipeline_input(spark, served, parts=10)
    reference = served.with_(
        lakehouse_path=str(tmp_path / "reference"), serving_mongo_database="reference"
    )
    for path in ("silver_readings_path", "alerts_path"):
        shutil.copytree(getattr(served, path), getattr(reference, path))
    env = {
        "SERVING_MONGO_URI": served.serving_uri,
        "SERVING_MAX_FILES_PER_TRIGGER": "1",  # a batch per silver commit, for three kills
        "SNAPSHOT_IN_FIRST_BATCH": "false",
    }
    kill_repeatedly_then_finish(
        "serve", served, lambda: checkpoint_commits(served, "serve"), kills=3, seed=30, **env
    )
    assert checkpoint_commits(served, "serve") >= 10
    run_serve(spark, reference)
    killed, uninterrupted = collections(served), collections(reference)
    assert uninterrupted[ALERTS_COLLECTION] and uninterrupted[LATEST_COLLECTION]
    assert killed == uninterrupted


def test_a_server_that_does_not_answer_stops_the_job_with_what_to_do(
    spark: SparkSession, served: Settings, ferretdb_bin_dir: Path
) -> None:
    pipeline_input(spark, served, parts=2)
    server = LocalMongoServer(served, bin_dir=ferretdb_bin_dir)
    server.stop()
    cmd = [sys.executable, "-m", "iot_lakehouse", "run", "serve", "--available-now"]
    env = job_env(served, SERVING_MONGO_URI=served.serving_uri, JOB_RESTARTS="0")
    stopped = subprocess.run(cmd, env=env, cwd=PROJECT_ROOT, capture_output=True, text=True)
    assert stopped.returncode == 2, stopped.stderr[-2000:]
    assert "did not answer" in stopped.stderr and "iot-lakehouse mongo start" in stopped.stderr

    server.start()  # after the fix: everything arrives
    resumed = subprocess.run(cmd, env=env, cwd=PROJECT_ROOT, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    gold = spark.read.format("delta").load(served.alerts_path).count()
    assert len(read_collection(served, ALERTS_COLLECTION)) == gold > 0
