"""gold/alerts and silver -> MongoDB: the documents, kept newer-wins, against a real
MongoDB-protocol server (FerretDB, started by the project); replays and kills change nothing;
a server that does not answer gives an error that says what to do."""

from __future__ import annotations

import shutil
import subprocess
import sys
from datetime import UTC, timedelta
from pathlib import Path

from delta.tables import DeltaTable
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from iot_lakehouse.pipeline.serving import (
    ALERTS_COLLECTION,
    LATEST_COLLECTION,
    bulk,
    latest_updates,
    mongo_client,
    read_collection,
    stored_sensors,
)
from iot_lakehouse.runtime.mongo_server import LocalMongoServer
from iot_lakehouse.settings import PROJECT_ROOT, Settings
from tests.conftest import job_env
from tests.support.serving import T0, collections, pipeline_input, reading, run_serve


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
