"""gold/alerts and silver -> MongoDB: the documents, kept newer-wins, against a real
MongoDB-protocol server (FerretDB, started by the project); replays and kills change nothing;
a server that does not answer gives an error that says what to do."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from iot_lakehouse.pipeline.serving import (
    alert_document,
    latest_updates,
    open_alert_updates,
)
from tests.support.serving import T0, reading


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
