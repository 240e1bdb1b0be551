"""The live dashboard: its data functions (pure, cheap) and the real thing — ``iot-lakehouse
dashboard`` as its own process, read by headless Chromium (Playwright, Debian's ``chromium``)
against a fresh lakehouse and a small real one whose numbers the test computes itself."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake
from playwright.sync_api import Browser, Page, sync_playwright

from iot_lakehouse.errors import ConfigError
from iot_lakehouse.interfaces import dashboard as d
from iot_lakehouse.runtime.stream_metrics import Latency, append_rows, progress_row
from iot_lakehouse.settings import PROJECT_ROOT, Settings, interval_seconds
from tests.conftest import free_port

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
ARTIFACTS = PROJECT_ROOT / ".runtime" / "artifacts"
START_MESSAGE = "No data yet — start the pipeline with ./start_all.sh"
PAGE_TIMEOUT_S = 45.0


def utc(minute: int, second: int = 0) -> pd.Timestamp:
    return pd.Timestamp(datetime(2026, 3, 1, 11, minute, second, tzinfo=UTC))


# --- stream_metrics rows, from progress events shaped like Spark 4.2's -------------------------
def progress(
    name: str,
    batch_id: int,
    at: datetime,
    rows_per_s: float,
    sources: list[dict[str, Any]],
    duration_ms: int = 2000,
    watermark: datetime | None = None,
    state_rows: int | None = None,
) -> dict[str, Any]:
    """A ``StreamingQueryProgress.json`` of one finished batch."""
    iso = at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    rows = int(rows_per_s * 5)
    return {
        "id": f"{name}-query-id",
        "runId": f"{name}-run-id",
        "name": name,
        "timestamp": iso,
        "batchId": batch_id,
        "numInputRows": rows,
        "inputRowsPerSecond": rows_per_s,
        "processedRowsPerSecond": rows_per_s * 2.5,
        "durationMs": {"addBatch": duration_ms - 100, "triggerExecution": duration_ms},
        "eventTime": (
            {"watermark": watermark.isoformat().replace("+00:00", "Z")} if watermark else {}
        ),
        "stateOperators": (
            [{"numRowsTotal": state_rows, "numRowsDroppedByWatermark": 0}] if state_rows else []
        ),
        "sources": [{**source, "numInputRows": rows} for source in sources],
        "sink": {"description": "ForeachBatchSink"},
    }


def kafka_source(lag_max: int) -> dict[str, Any]:
    return {
        "description": "KafkaV2[Subscribe[iot-sensors]]",
        "metrics": {
            "maxOffsetsBehindLatest": str(lag_max),
            "avgOffsetsBehindLatest": str(lag_max / 2),
            "minOffsetsBehindLatest": "0",
        },
    }


UPSTREAM = {"upstream-table-id": 100}  # newest version of the upstream table, by table id


def delta_source(behind: int) -> dict[str, Any]:
    """A Delta source whose batch ended ``behind`` versions before UPSTREAM's newest, in the
    form Spark 4.2 reports it (the offset as a JSON string, no backlog metrics)."""
    end = {"sourceVersion": 1, "reservoirId": "upstream-table-id", "reservoirVersion": 100 - behind}
    return {
        "description": "DeltaSource[file:/lakehouse/silver/readings]",
        "endOffset": json.dumps({**end, "index": -1, "isStartingVersion": False}),
        "latestOffset": "null",
        "metrics": {},
    }


def recorded(row: dict[str, Any], at: datetime) -> dict[str, Any]:
    """The row as the recorder writes it when the batch finished at ``at``."""
    return {**row, "recorded_at": at}


def pipeline_rows(now: datetime) -> list[dict[str, Any]]:
    """A minute of a healthy bronze, silver and gold (a batch every 5 s) and an alerts query
    whose last batch finished 4 minutes ago; oldest first. The newest batches: Kafka lag 611,
    latency Kafka -> silver p50 1,850 ms / p95 4,210 ms, Kafka -> gold 9,800 / 15,200 ms."""
    rows = []
    for i in range(12):
        at = now - timedelta(seconds=5 * (11 - i))
        step = 11 - i  # the newest batch has the round numbers
        bronze = progress("bronze", 40 + i, at, 200.0 + i, [kafka_source(611 + step)])
        silver = progress("silver", 30 + i, at, 398.2, [delta_source(2)], duration_ms=3100)
        gold = progress(
            "gold", 20 + i, at, 30.2, [delta_source(0)], 7000, at - timedelta(minutes=10)
        )
        rows += [
            recorded(progress_row("bronze", bronze), at),
            recorded(
                progress_row(
                    "silver",
                    silver,
                    Latency("kafka_to_silver", 1850.0 + step, 4210.0 + step, 2000),
                    UPSTREAM,
                ),
                at,
            ),
            recorded(
                progress_row(
                    "gold",
                    gold,
                    Latency("kafka_to_gold", 9800.0 + step, 15200.0 + step, 4000),
                    UPSTREAM,
                ),
                at,
            ),
        ]
    stalled_at = now - timedelta(minutes=4)
    alerts = progress(
        "alerts_stateful", 9, stalled_at, 8.0, [delta_source(4)], 2000, stalled_at, 12
    )
    rows.insert(0, recorded(progress_row("alerts", alerts, None, UPSTREAM), stalled_at))
    return sorted(rows, key=lambda r: r["recorded_at"])


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


# --- in a browser -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Headless Chromium from Debian's ``chromium`` package (./run_tests.sh installs it)."""
    executable = shutil.which("chromium")
    if executable is None:
        pytest.fail("chromium is missing: install the Debian package chromium (run_tests.sh does)")
    args = ["--disable-dev-shm-usage"] + (["--no-sandbox"] if os.geteuid() == 0 else [])
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, args=args)
        try:
            yield chromium
        finally:
            chromium.close()


@contextmanager
def dashboard(root: Path, log: Path, **env: str) -> Iterator[str]:
    """``python -m iot_lakehouse dashboard`` on a free port with the lakehouse under ``root``;
    yields its URL once Streamlit answers. Stopped with SIGTERM, as a service manager would:
    the command must take its Streamlit server down with it."""
    port = free_port()
    environment = {
        **os.environ,
        "LAKEHOUSE_PATH": str(root / "lakehouse"),
        "DLQ_PATH": str(root / "dlq"),
        "IOT_RUNTIME_DIR": str(root / "runtime"),
        **env,
    }
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "iot_lakehouse", "dashboard", "--port", str(port)],
            env=environment,
            cwd=PROJECT_ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "dashboard not up in 60 s\n" + log.read_text()
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                time.sleep(0.3)
        yield url
        proc.terminate()
        assert proc.wait(timeout=20) == 0, log.read_text()[-3000:]
        with pytest.raises(ProcessLookupError):  # the Streamlit server went with it
            os.killpg(proc.pid, 0)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


Check = Callable[[str], bool]


def shows(*cells: object) -> Check:
    """Whether the page text shows ``cells`` next to each other (a table row, a metric)."""
    words = [word for cell in cells for word in str(cell).split()]  # the page has &nbsp;s
    pattern = re.compile(r"(^|\s)" + r"\s+".join(re.escape(w) for w in words) + r"(\s|$)")
    return lambda text: pattern.search(text) is not None


def page_showing(page: Page, checks: dict[str, Check], shot: Path) -> str:
    """The page's text once every check holds on one snapshot of it (the app renders section
    by section, and again at every refresh); a full-page screenshot at ``shot`` either way.
    Fails naming the checks that never held."""
    deadline = time.monotonic() + PAGE_TIMEOUT_S
    while True:
        text = page.inner_text("body")
        failing = [name for name, check in checks.items() if not check(text)]
        if not failing or time.monotonic() > deadline:
            break
        page.wait_for_timeout(500)
    page.wait_for_timeout(1000)  # let the charts draw for the screenshot
    screenshot(page, shot)
    assert not failing, f"not on the page: {failing}\n--- page text:\n{text}"
    return text


def screenshot(page: Page, path: Path) -> None:
    """The whole page: Streamlit scrolls inside its main element, so grow the viewport to it."""
    height = page.evaluate(
        "() => Math.max(document.body.scrollHeight, "
        "...[...document.querySelectorAll('[data-testid=stMain]')].map(e => e.scrollHeight))"
    )
    page.set_viewport_size({"width": 1400, "height": max(900, int(height))})
    page.wait_for_timeout(300)
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")


def no_error_on(page: Page, text: str) -> None:
    assert "Traceback" not in text and "Could not read" not in text, text
    assert page.locator("[data-testid='stException']").count() == 0


def test_a_fresh_lakehouse_page_says_how_to_start_the_pipeline(
    browser: Browser, tmp_path: Path
) -> None:
    checks: dict[str, Check] = {
        "four start messages (health, sensors, alerts, DLQ)": lambda t: t.count(START_MESSAGE) == 4,
        "where the DLQ will appear": shows("(dlq/silver_rejects appears at"),
        "the row counts": shows("gold/alerts", "no table yet"),
    }
    with dashboard(tmp_path, tmp_path / "dashboard.log") as url:
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        try:
            page.goto(url, wait_until="domcontentloaded")
            no_error_on(page, page_showing(page, checks, tmp_path / "fresh.png"))
        finally:
            page.close()


def shows_window(window: pd.Series) -> Check:
    """The row of a sensor's window: sensor, start, readings, avg and p95 as displayed."""
    return shows(
        window["sensor_id"],
        window["window_start"].strftime("%Y-%m-%d %H:%M:%S"),
        window["count"],
        f"{window['avg']:.2f}",
        f"{window['p95']:.2f}",
    )


def test_the_dashboard_shows_the_numbers_of_a_real_lakehouse(
    browser: Browser, small_lakehouse: Settings, tmp_path: Path
) -> None:
    settings = small_lakehouse
    root = Path(settings.lakehouse_path).parent
    append_rows(None, settings.stream_metrics_path, pipeline_rows(datetime.now(UTC)))

    # What the page must show, computed here from the tables (read with deltalake) and from
    # the stream_metrics rows written above (see pipeline_rows).
    checks: dict[str, Check] = {
        "ingest rate": shows("ingest rows/s (bronze)", "211.0"),
        "Kafka lag": shows("Kafka lag (offsets)", "611"),
        "latency to silver p50": shows("Kafka → silver p50", "1,850 ms"),
        "latency to silver p95": shows("Kafka → silver p95", "4,210 ms"),
        "latency to gold p50": shows("Kafka → gold p50", "9,800 ms"),
        "latency to gold p95": shows("Kafka → gold p95", "15,200 ms"),
        "bronze running": shows("bronze", "bronze", "running"),
        "silver running": shows("silver", "silver", "running"),
        "gold running": shows("gold", "gold", "running"),
        "alerts stalled": shows("alerts", "alerts_stateful", "stalled"),  # 4 min without a batch
        # the stall limit follows TRIGGER_INTERVAL of the dashboard's environment (below)
        "stall limit": shows(f"over {d.stall_after_s(30.0, None):.0f} s"),
    }
    silver_rows = len(DeltaTable(settings.silver_readings_path).to_pandas(columns=["metric"]))
    checks["silver rows"] = shows("silver/readings", f"{silver_rows:,}")

    gold = DeltaTable(settings.gold_path("sensor_metrics_5m")).to_pandas()
    temperature = gold[gold["metric"] == "temperature"].sort_values("window_start")
    newest = temperature.groupby("sensor_id").tail(1)
    assert len(newest) == 6
    for _, window in newest.iterrows():  # every sensor's newest temperature window
        checks[f"newest window of {window['sensor_id']}"] = shows_window(window)

    for period, name in d.SENSOR_ROLLUPS.items():  # and its newest hour and day
        rolled = DeltaTable(settings.gold_path(name)).to_pandas()
        rolled = rolled[rolled["metric"] == "temperature"]
        assert len(rolled) == 6, name  # 15 minutes of readings: one hour, one day
        checks[f"newest {period} caption"] = shows(
            f"Newest {period} of every sensor, its final 5-minute windows: temperature"
        )
        for _, window in rolled.iterrows():
            checks[f"newest {period} of {window['sensor_id']}"] = shows_window(window)

    alerts = DeltaTable(settings.alerts_path).to_pandas()
    assert len(alerts) > 0  # the builder's lowered thresholds raise some
    checks["alerts in all"] = shows("alerts (all)", f"{len(alerts):,}")
    checks["gold/alerts rows"] = shows("gold/alerts", f"{len(alerts):,}")
    for (alert_type, severity), count in alerts.groupby(["alert_type", "severity"]).size().items():
        checks[f"{alert_type} alerts"] = shows(alert_type, severity, count)
    checks["latest alerts"] = shows(f"The {d.LATEST_ALERTS} most recent alerts")

    dlq = DeltaTable(settings.dlq_rejects_path).to_pandas()
    reasons = Counter(reason for row in dlq["reasons"] for reason in set(row))
    assert reasons
    checks["DLQ rows"] = shows("DLQ rows", f"{len(dlq):,}")
    for reason, count in reasons.items():
        checks[f"DLQ reason {reason}"] = shows(reason, count)

    browse_started = time.monotonic()
    shot = tmp_path / "dashboard.png"
    with dashboard(root, tmp_path / "dashboard.log", TRIGGER_INTERVAL="30 seconds") as url:
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        try:
            page.goto(url, wait_until="domcontentloaded")
            no_error_on(page, page_showing(page, checks, shot))
        finally:
            page.close()
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            if shot.exists():
                shutil.copyfile(shot, ARTIFACTS / "dashboard.png")
    print(f"dashboard served and read in {time.monotonic() - browse_started:.1f} s")
