"""The status picture: open alerts, rates and the live screen (pure functions)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
from deltalake import write_deltalake

from iot_lakehouse.ops.status import (
    PipelineCounts,
    open_alerts,
    read_open_alerts,
    render_screen,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def alert(
    sensor: str, kind: str, status: str, minutes_ago: float, naive: bool = False
) -> dict[str, object]:
    at = NOW - timedelta(minutes=minutes_ago)
    if naive:  # Delta timestamps come back without a zone, in UTC
        at = at.replace(tzinfo=None)
    return {
        "sensor_id": sensor,
        "alert_type": kind,
        "status": status,
        "event_time": at,
        "detected_at": at,
    }


def test_open_alerts_are_recent_fired_ones_plus_silent_sensors_not_yet_back() -> None:
    rows = [
        alert("s1", "HIGH_TEMP", "fired", 3),
        alert("s1", "OUTLIER", "fired", 14, naive=True),
        alert("s2", "HIGH_TEMP", "fired", 16),  # older than 15 min: no longer open
        alert("s3", "SENSOR_SILENT", "fired", 40),  # still silent: open however old
        alert("s4", "SENSOR_SILENT", "fired", 30),
        alert("s4", "SENSOR_SILENT", "cleared", 5),  # back: closed
        alert("s5", "SENSOR_SILENT", "cleared", 50),
        alert("s5", "SENSOR_SILENT", "fired", 2),  # silent again
    ]
    assert open_alerts(rows, NOW) == 4
    assert open_alerts([], NOW) == 0


def test_rates_per_layer_from_two_snapshots() -> None:
    earlier = PipelineCounts(kafka_messages=100, bronze_rows=None, silver_rows=10)
    later = PipelineCounts(kafka_messages=600, bronze_rows=400, silver_rows=10, alerts=None)
    rates = later.rates(earlier, 5.0)
    assert rates["kafka_messages"] == 100.0
    assert rates["bronze_rows"] is None  # appeared since: no rate yet
    assert rates["silver_rows"] == 0.0
    assert rates["alerts"] is None
    assert later.rates(earlier, 0.0)["kafka_messages"] is None


def test_screen_shows_rows_rates_lag_open_alerts_and_job_health() -> None:
    counts = PipelineCounts(
        kafka_messages=1200, bronze_rows=1150, silver_rows=3000, dlq_rows=7, alerts=9, open_alerts=2
    )
    earlier = PipelineCounts(kafka_messages=200, bronze_rows=150, silver_rows=3000, dlq_rows=0)
    rates = counts.rates(earlier, 10.0)
    screen = render_screen(counts, rates, {"bronze": "up", "gold": "exited"}, "12:00:00", 125)
    text = "\n".join(screen)
    assert screen[0].startswith("12:00:00  up 2m05s")
    assert any(line.split() == ["bronze", "1150", "100.0"] for line in screen), text
    assert any(line.split() == ["dlq", "7", "0.7"] for line in screen), text
    assert any(line.split() == ["gold_5m", "-", "-"] for line in screen), text
    assert "kafka lag (not yet in bronze): 50" in text
    assert "open alerts: 2" in text
    assert screen[-1] == "jobs: bronze=up  gold=exited"


def test_open_alerts_read_from_a_delta_table(tmp_path: Path) -> None:
    path = str(tmp_path / "alerts")
    assert read_open_alerts(path, NOW) is None  # no table yet
    rows = [
        alert("s1", "HIGH_TEMP", "fired", 3),
        alert("s2", "HIGH_TEMP", "fired", 20),
        alert("s3", "SENSOR_SILENT", "fired", 60),
    ]
    utc = pa.timestamp("us", tz="UTC")  # Delta's TIMESTAMP type
    schema = pa.schema(
        [
            ("sensor_id", pa.string()),
            ("alert_type", pa.string()),
            ("status", pa.string()),
            ("event_time", utc),
            ("detected_at", utc),
        ]
    )
    write_deltalake(path, pa.Table.from_pylist(rows, schema=schema))
    assert read_open_alerts(path, NOW) == 2
