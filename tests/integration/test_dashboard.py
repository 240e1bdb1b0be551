"""The live dashboard: its data functions (pure, cheap) and the real thing — ``iot-lakehouse
dashboard`` as its own process, read by headless Chromium (Playwright, Debian's ``chromium``)
against a fresh lakehouse and a small real one whose numbers the test computes itself."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
from deltalake import DeltaTable
from playwright.sync_api import Browser, Page, sync_playwright

from iot_lakehouse.interfaces import dashboard as d
from iot_lakehouse.runtime.stream_metrics import append_rows
from iot_lakehouse.settings import PROJECT_ROOT, Settings
from tests.conftest import free_port
from tests.support.dashboard import pipeline_rows

ARTIFACTS = PROJECT_ROOT / ".runtime" / "artifacts"
START_MESSAGE = "No data yet — start the pipeline with ./start_all.sh"
PAGE_TIMEOUT_S = 45.0


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
