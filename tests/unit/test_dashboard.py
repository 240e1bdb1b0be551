"""The live dashboard: its data functions (pure, cheap) and the real thing — ``iot-lakehouse
dashboard`` as its own process, read by headless Chromium (Playwright, Debian's ``chromium``)
against a fresh lakehouse and a small real one whose numbers the test computes itself."""

from __future__ import annotations

import socket
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from iot_lakehouse.errors import ConfigError
from iot_lakehouse.interfaces import dashboard as d
from iot_lakehouse.settings import Settings, interval_seconds
from tests.support.dashboard import pipeline_rows

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def utc(minute: int, second: int = 0) -> pd.Timestamp:
    return pd.Timestamp(datetime(2026, 3, 1, 11, minute, second, tzinfo=UTC))


# --- pure functions ----------------------------------------------------------------------------
def sensor_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "window_start": [utc(0), utc(5), utc(0), utc(5), utc(0), utc(10), utc(5)],
            "sensor_id": ["s2", "s2", "s1", "s1", "s1", "s1", None],
            "metric": ["temperature"] * 5 + ["humidity", "temperature"],
            "count": [10, 12, 9, 11, 1, 3, 4],
            "avg": [20.0, 21.5, 18.0, 18.5, 18.0, 55.0, None],
            "p95": [22.0, 23.0, 19.0, 19.5, 19.0, 60.0, None],
            "unit": ["°C"] * 5 + ["%", None],
            "is_final": [True, False, True, False, True, False, False],
        }
    ).iloc[[0, 1, 2, 3, 5, 6]]  # row 4 would repeat s1's 11:00 temperature window


def test_chart_series_have_one_column_per_sensor_and_measure_indexed_in_utc() -> None:
    series = d.sensor_series(sensor_frame(), "temperature", ["s2", "s1"], ["avg", "p95"])
    assert list(series.columns) == ["s2 avg", "s2 p95", "s1 avg", "s1 p95"]
    assert list(series.index) == [
        pd.Timestamp("2026-03-01 11:00"),
        pd.Timestamp("2026-03-01 11:05"),
    ]
    assert series.index.tz is None  # naive UTC: the chart shows UTC in any browser
    assert series.loc[pd.Timestamp("2026-03-01 11:05"), "s2 avg"] == 21.5
    assert list(d.sensor_series(sensor_frame(), "temperature", ["s1"], ["p95"]).columns) == [
        "s1 p95"
    ]
    assert d.sensor_series(sensor_frame(), "temperature", [], ["avg"]).empty
    assert d.sensor_series(sensor_frame(), "co2", ["s1"], ["avg"]).empty


def test_sensor_choices_and_each_sensors_newest_window() -> None:
    frame = sensor_frame()
    assert d.sensor_choices(frame) == (["s1", "s2"], ["humidity", "temperature"])
    assert d.default_metric(["co2", "humidity"]) == "co2"
    assert d.default_metric(["humidity", "temperature"]) == "temperature"
    assert d.default_metric([]) is None
    latest = d.latest_windows(frame, "temperature")
    assert list(latest["sensor_id"]) == ["s1", "s2"]
    assert list(latest["avg"]) == [18.5, 21.5]
    shown = d.windows_table(latest)
    assert shown.iloc[0].to_dict() == {
        "sensor": "s1",
        "window start (UTC)": "2026-03-01 11:05:00",
        "readings": "11",
        "avg": "18.50",
        "p95": "19.50",
        "unit": "°C",
        "final": "no",
    }


def test_dlq_rows_per_reason_count_each_row_once_per_reason() -> None:
    dlq = pd.DataFrame(
        {
            "reasons": [
                ["OUT_OF_RANGE"],
                ["OUT_OF_RANGE", "NULL_VALUE"],
                ["MALFORMED_JSON", "MALFORMED_JSON"],  # repeated in one row: counts once
                [],
                None,
            ],
            "rejected_at": [utc(1), utc(3), utc(2), utc(4), utc(5)],
        }
    )
    counts = d.dlq_reason_counts(dlq)
    assert list(zip(counts["reason"], counts["rows"], strict=True)) == [
        ("OUT_OF_RANGE", 2),
        ("MALFORMED_JSON", 1),
        ("NULL_VALUE", 1),
    ]
    assert counts.loc[0, "share"] == pytest.approx(2 / 5)
    assert counts.loc[0, "last_rejected"] == utc(3)
    shown = d.reasons_table(counts)
    assert shown.iloc[0].to_dict() == {
        "reason": "OUT_OF_RANGE",
        "rows": "2",
        "share": "40.0%",
        "last rejected (UTC)": "2026-03-01 11:03:00",
    }
    assert d.dlq_reason_counts(dlq.iloc[0:0]).empty
    assert d.dlq_reason_counts(dlq.iloc[3:]).empty  # rows without a reason code


def test_alerts_newest_first_and_per_type_and_severity() -> None:
    alerts = pd.DataFrame(
        {
            "detected_at": [utc(1), utc(9), utc(5), utc(9)],
            "event_time": [utc(0), utc(8), utc(4), utc(7)],
            "sensor_id": ["s1", "s2", "s1", "s3"],
            "metric": ["temperature", None, "temperature", "humidity"],
            "location": ["b/1"] * 4,
            "alert_type": ["HIGH_TEMP", "SENSOR_SILENT", "HIGH_TEMP", "HIGH_HUMIDITY"],
            "severity": ["warning", "critical", "warning", "warning"],
            "status": ["fired", "cleared", "fired", "fired"],
            "value": [31.5, None, 33.25, 85.0],
            "threshold": [30.0, None, 30.0, 80.0],
            "detector": ["static", "stateful", "static", "static"],
        }
    )
    latest = d.latest_alerts(alerts, limit=3)
    assert list(latest["sensor_id"]) == ["s2", "s3", "s1"]  # same detection: newer event first
    assert list(latest["value"].fillna(-1)) == [-1, 85.0, 33.25]
    summary = d.alert_summary(alerts)
    assert summary[["alert_type", "fired", "cleared", "sensors"]].values.tolist() == [
        ["HIGH_TEMP", 2, 0, 1],
        ["HIGH_HUMIDITY", 1, 0, 1],
        ["SENSOR_SILENT", 0, 1, 1],
    ]
    assert d.summary_table(summary).iloc[0]["last event (UTC)"] == "2026-03-01 11:04:00"
    shown = d.alerts_table(latest)
    assert shown.iloc[0]["value"] == "—" and shown.iloc[2]["value"] == "33.25"
    assert d.alert_summary(alerts.iloc[0:0]).empty


def test_health_running_stalled_stopped_lag_latency_and_ingest_rate() -> None:
    rows = pipeline_rows(NOW)
    health = d.pipeline_health(rows, NOW + timedelta(seconds=10), trigger_s=5.0)
    states = {q.query: q.state for q in health.queries}
    assert states == {
        "bronze": "running",
        "silver": "running",
        "gold": "running",
        "alerts_stateful": "stalled",  # 4 min without a batch
    }
    bronze = next(q for q in health.queries if q.job == "bronze")
    assert (bronze.batch_id, bronze.lag, bronze.lag_unit) == (51, 611, "offsets")
    assert bronze.age_s == 10.0
    silver = next(q for q in health.queries if q.job == "silver")
    assert (silver.lag, silver.lag_unit, silver.latency_p50_ms) == (2, "versions", 1850.0)
    assert health.ingest_rows_per_s == 211.0
    assert health.kafka_lag == 611
    assert health.latency == {
        "kafka_to_silver": (1850.0, 4210.0),
        "kafka_to_gold": (9800.0, 15200.0),
    }
    assert health.running == 3

    # A minute later no query has run a batch: those that left input behind have stalled, gold
    # (nothing left to read) is idle; no ingest rate; lag and latency stay the last known.
    later = d.pipeline_health(rows, NOW + timedelta(seconds=70), trigger_s=5.0)
    assert {q.query: q.state for q in later.queries} == {
        "bronze": "stalled",
        "silver": "stalled",
        "gold": "idle",
        "alerts_stateful": "stalled",
    }
    assert later.ingest_rows_per_s is None and later.kafka_lag == 611

    # Jobs without any row in the window are listed as stopped.
    only_bronze = [r for r in rows if r["job"] == "bronze"]
    listed = d.pipeline_health(only_bronze, NOW, 5.0).queries
    assert [(q.job, q.state) for q in listed] == [
        ("bronze", "running"),
        ("silver", "stopped"),
        ("gold", "stopped"),
        ("alerts", "stopped"),
    ]
    shown = d.health_table(d.pipeline_health(only_bronze, NOW, 5.0))
    assert shown.iloc[0][["state", "batch", "lag", "latency p50"]].tolist() == [
        "running",
        "51",
        "611 offsets",
        "—",
    ]
    assert shown.iloc[3]["last batch"] == "—"


def test_stall_threshold_follows_the_trigger_and_long_batches() -> None:
    assert interval_seconds("5 seconds") == 5.0
    assert interval_seconds("500 milliseconds") == 0.5
    assert interval_seconds("1 minute") == 60.0
    with pytest.raises(ConfigError, match="TRIGGER_INTERVAL"):
        interval_seconds("soon")
    assert d.stall_after_s(5.0, 2000) == 60.0
    assert d.stall_after_s(30.0, None) == 90.0
    assert d.stall_after_s(5.0, 45_000) == 90.0  # a 45 s replay batch is not a stall
    row = next(r for r in reversed(pipeline_rows(NOW)) if r["job"] == "silver")  # 2 files behind
    assert d.query_health(row, NOW + timedelta(seconds=80), 30.0).state == "running"
    assert d.query_health(row, NOW + timedelta(seconds=100), 30.0).state == "stalled"
    caught_up = {**row, "delta_versions_behind": 0}
    assert d.query_health(caught_up, NOW + timedelta(seconds=100), 30.0).state == "idle"


def test_each_job_is_judged_by_its_own_trigger_interval() -> None:
    behind = [{**r, "delta_versions_behind": 2} for r in pipeline_rows(NOW)]
    rows = [r for r in behind if r["job"] in ("silver", "gold")]
    later = NOW + timedelta(seconds=80)
    common = {q.job: q.state for q in d.pipeline_health(rows, later, 5.0).queries}
    settings = Settings.from_env({"GOLD_TRIGGER_INTERVAL": "30 seconds"})
    own = {
        q.job: q.state for q in d.pipeline_health(rows, later, settings.trigger_seconds_of).queries
    }
    # 80 s without a batch: a stall at a 5-s trigger (60 s), not at gold's 30 s (90 s)
    assert common["gold"] == own["silver"] == common["silver"] == "stalled"
    assert own["gold"] == "running"


def test_series_of_throughput_and_latency_per_query_over_time() -> None:
    rows = pipeline_rows(NOW)
    throughput = d.throughput_series(rows)
    assert list(throughput.columns) == ["alerts_stateful", "bronze", "gold", "silver"]
    assert len(throughput) == 13 and throughput.index.tz is None
    assert throughput["bronze"].iloc[-1] == 211.0
    latency = d.latency_series(rows)
    assert list(latency.columns) == [
        "Kafka → gold p50",
        "Kafka → gold p95",
        "Kafka → silver p50",
        "Kafka → silver p95",
    ]
    assert latency["Kafka → silver p95"].iloc[-1] == 4210.0
    assert d.throughput_series([]).empty and d.latency_series([]).empty


def test_formats() -> None:
    assert d.fmt_count(1234567) == "1,234,567" and d.fmt_count(None) == "—"
    assert d.fmt_number(17.066) == "17.07" and d.fmt_number(float("nan")) == "—"
    assert d.fmt_ms(15211.4) == "15,211 ms"
    assert d.fmt_ms(1_005_333.0) == "1,005 s"
    assert [d.fmt_age(s) for s in (None, 9.6, 300, 9000)] == [
        "—",
        "10 s ago",
        "5 min ago",
        "2.5 h ago",
    ]
    assert d.fmt_time(pd.Timestamp("2026-03-01 12:00", tz="Europe/Paris")) == "2026-03-01 11:00:00"
    assert d.fmt_time(None) == ""
    assert d.counts_table({"silver/readings": 1704, "gold/alerts": None}).values.tolist() == [
        ["silver/readings", "1,704"],
        ["gold/alerts", "no table yet"],
    ]


# --- readers (deltalake, no JVM) ----------------------------------------------------------------
def test_readers_on_a_fresh_lakehouse_return_nothing_instead_of_failing(tmp_path: Path) -> None:
    settings = Settings.from_env({}).with_(
        lakehouse_path=str(tmp_path / "lakehouse"), dlq_path=str(tmp_path / "dlq")
    )
    assert d.load_sensor_metrics(settings.gold_path("sensor_metrics_5m"), None) is None
    assert d.load_alerts(settings.alerts_path) is None
    assert d.load_dlq(settings.dlq_rejects_path) is None
    assert d.load_stream_metrics(settings, NOW) is None
    assert d.open_alert_count(settings, NOW) is None
    assert set(d.table_counts(settings).values()) == {None}


def test_the_chart_range_is_counted_back_from_the_newest_window(tmp_path: Path) -> None:
    path = str(tmp_path / "sensor_metrics_5m")
    frame = sensor_frame().assign(window_start=[utc(0), utc(5), utc(0), utc(5), utc(10), utc(5)])
    older = frame.assign(window_start=frame["window_start"] - pd.Timedelta(hours=3))
    write_deltalake(path, older)
    write_deltalake(path, frame, mode="append")
    assert d.newest_time(DeltaTable(path), "window_start") == utc(10).to_pydatetime()
    assert len(d.load_sensor_metrics(path, None)) == 12
    recent = d.load_sensor_metrics(path, timedelta(hours=1))
    assert recent is not None and len(recent) == 6
    assert recent["window_start"].min() == utc(0)
    assert list(recent.columns) == d.SENSOR_COLUMNS

    # A table whose log keeps no column statistics: the newest window is read from the data.
    bare = str(tmp_path / "no_stats")
    write_deltalake(bare, frame, configuration={"delta.dataSkippingNumIndexedCols": "0"})
    stats = pa.table(DeltaTable(bare).get_add_actions(flatten=True)).column_names
    assert "max.window_start" not in stats
    assert d.newest_time(DeltaTable(bare), "window_start") == utc(10).to_pydatetime()


# --- the command --------------------------------------------------------------------------------
def test_a_busy_port_is_a_clear_error_naming_dashboard_port() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=rf"port {port} .*in use.*DASHBOARD_PORT"):
            d.run_dashboard(Settings.from_env({}), port)
    with pytest.raises(ConfigError, match="65535"):
        d.run_dashboard(Settings.from_env({}), 70000)


def test_streamlit_runs_headless_on_localhost_without_usage_stats_or_file_watcher() -> None:
    command = d.streamlit_command(8600)
    assert command[:5] == [sys.executable, "-m", "streamlit", "run", str(d.APP_SCRIPT)]
    assert d.APP_SCRIPT.exists()
    for flag in (
        "--server.address=127.0.0.1",
        "--server.port=8600",
        "--server.headless=true",
        "--browser.gatherUsageStats=false",
        "--server.fileWatcherType=none",
    ):
        assert flag in command
