"""The Streamlit script of the live dashboard, served by ``iot-lakehouse dashboard``.

Layout only: what it shows comes from :mod:`iot_lakehouse.interfaces.dashboard`. The lakehouse
is found with ``Settings.from_env()`` (``LAKEHOUSE_PATH``, ``DLQ_PATH``), as by every other
command. The page body is one fragment that Streamlit reruns every
``DASHBOARD_REFRESH_SECONDS``.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from datetime import UTC, datetime

import streamlit as st
from streamlit.delta_generator import DeltaGenerator

from iot_lakehouse.interfaces import dashboard as d
from iot_lakehouse.settings import Settings

logger = logging.getLogger(
    "iot_lakehouse.interfaces.dashboard_app"
)  # Streamlit runs this as __main__

settings = Settings.from_env()
d.configure_app_logging(settings)
st.set_page_config(page_title="IoT lakehouse", page_icon="📡", layout="wide")


def no_data(what: str, path: str) -> None:
    st.info(f"No data yet — {d.START_HINT}. ({what} appears at {path})")


def choose_one(where: DeltaGenerator, label: str, options: list[str], default: str) -> str:
    """A select box whose choice falls back to ``default`` when it is no longer offered."""
    key = f"choice_{label}"
    if st.session_state.get(key) not in options:
        st.session_state[key] = default
    return str(where.selectbox(label, options, key=key))


def choose_many(
    where: DeltaGenerator, label: str, options: list[str], default: list[str]
) -> list[str]:
    """A multi-select that keeps the choices still offered (e.g. a sensor can leave the
    chart's range); ``default`` the first time."""
    key = f"choice_{label}"
    current = st.session_state.get(key)
    st.session_state[key] = default if current is None else [v for v in current if v in options]
    return [str(v) for v in where.multiselect(label, options, key=key)]


def health_section(now: datetime) -> None:
    rows = d.load_stream_metrics(settings, now)
    if not rows:
        minutes = int(d.METRICS_WINDOW.total_seconds() // 60)
        st.info(f"No data yet — {d.START_HINT}. (No batch finished in the last {minutes} min.)")
    else:
        health = d.pipeline_health(rows, now, settings.trigger_seconds_of)
        tiles = st.columns(2 + 2 * len(d.LATENCY_KINDS))
        tiles[0].metric("ingest rows/s (bronze)", d.fmt_number(health.ingest_rows_per_s, 1))
        tiles[1].metric("Kafka lag (offsets)", d.fmt_count(health.kafka_lag))
        for i, (kind, label) in enumerate(d.LATENCY_KINDS.items()):
            p50, p95 = health.latency.get(kind, (None, None))
            tiles[2 + 2 * i].metric(f"{label} p50", d.fmt_ms(p50))
            tiles[3 + 2 * i].metric(f"{label} p95", d.fmt_ms(p95))
        st.table(d.health_table(health), hide_index=True)
        stall = d.stall_after_s(max(settings.trigger_seconds_of(j) for j in d.JOBS), None)
        st.caption(
            f"{health.running} of {len(health.queries)} queries running. Idle or stalled: no "
            f"batch for over {stall:.0f} s (idle: nothing left to read; stalled: input waiting, "
            f"the job stuck or stopped); stopped: no batch in "
            f"the last {int(d.METRICS_WINDOW.total_seconds() // 60)} min. Lag: Kafka offsets "
            "behind the newest, or upstream table versions not reached yet. Latency: Kafka "
            "timestamp → commit."
        )
        throughput, latency = st.columns(2)
        with throughput:
            series = d.throughput_series(rows)
            if not series.empty:
                st.line_chart(series, y_label="input rows/s", height=220)
        with latency:
            series = d.latency_series(rows)
            if not series.empty:
                st.line_chart(series, y_label="latency (ms)", height=220)
    st.table(d.counts_table(d.table_counts(settings)), hide_index=True, width="content")


def sensors_section(now: datetime) -> None:
    path = settings.gold_path("sensor_metrics_5m")
    pick_metric, pick_sensors, pick_measures, pick_span = st.columns([1, 3, 1, 1])
    span = choose_one(pick_span, "range", list(d.CHART_SPANS), "last 6 hours")
    metrics = d.load_sensor_metrics(path, d.CHART_SPANS[span])
    if metrics is None or metrics.empty:
        no_data("gold/sensor_metrics_5m", path)
        return
    sensors, names = d.sensor_choices(metrics)
    metric = choose_one(pick_metric, "metric", names, d.default_metric(names) or names[0])
    chosen = choose_many(pick_sensors, "sensors", sensors, sensors[:3])
    measures = choose_many(pick_measures, "measures", list(d.MEASURES), list(d.MEASURES))
    series = d.sensor_series(metrics, metric, chosen, measures)
    units = metrics.loc[metrics["metric"] == metric, "unit"].dropna().unique()
    y_label = f"{metric} ({units[0]})" if len(units) == 1 else metric
    if series.empty:
        st.info("Pick at least one sensor and one measure.")
    else:
        st.line_chart(series, x_label="window start (UTC)", y_label=y_label, height=320)
    st.caption(f"Newest 5-minute window of every sensor: {metric}")
    st.table(d.windows_table(d.latest_windows(metrics, metric)), hide_index=True)
    for period, name in d.SENSOR_ROLLUPS.items():  # rolled up from the final 5-minute windows
        rolled = d.load_sensor_metrics(settings.gold_path(name), d.ROLLUP_SPAN)
        if rolled is not None and not rolled[rolled["metric"] == metric].empty:
            st.caption(f"Newest {period} of every sensor, its final 5-minute windows: {metric}")
            st.table(d.windows_table(d.latest_windows(rolled, metric)), hide_index=True)


def alerts_section(now: datetime, latest: DeltaGenerator) -> None:
    """Totals and counts per type here; the most recent alerts into ``latest`` (full width)."""
    alerts = d.load_alerts(settings.alerts_path)
    if alerts is None:
        no_data("gold/alerts", settings.alerts_path)
        return
    total, open_now = st.columns(2)
    total.metric("alerts (all)", d.fmt_count(len(alerts)))
    open_now.metric("open alerts", d.fmt_count(d.open_alert_count(settings, now)))
    if alerts.empty:
        st.success("No alerts so far.")
        return
    st.table(d.summary_table(d.alert_summary(alerts)), hide_index=True)
    latest.subheader(f"The {d.LATEST_ALERTS} most recent alerts")
    latest.table(d.alerts_table(d.latest_alerts(alerts)), hide_index=True)


def dlq_section(now: datetime) -> None:
    dlq = d.load_dlq(settings.dlq_rejects_path)
    if dlq is None:
        no_data("dlq/silver_rejects", settings.dlq_rejects_path)
        return
    st.metric("DLQ rows", d.fmt_count(len(dlq)))
    if dlq.empty:
        st.success("The dead-letter queue is empty.")
        return
    reasons = d.dlq_reason_counts(dlq)
    st.bar_chart(
        reasons.set_index("reason")["rows"], x_label="", y_label="rows", sort="-rows", height=260
    )
    st.table(d.reasons_table(reasons), hide_index=True)


def section(title: str, body: Callable[[datetime], None], now: datetime) -> None:
    """A titled section whose failure (e.g. a table being rewritten) is a message, not a crash
    of the page; the next refresh tries again."""
    st.subheader(title)
    try:
        body(now)
    except Exception as exc:
        logger.exception("dashboard section failed: %s", title)
        st.error(f"Could not read this part: {type(exc).__name__}: {exc}. Retrying shortly.")


st.title("IoT lakehouse")
st.caption(
    f"lakehouse `{settings.lakehouse_path}` · DLQ `{settings.dlq_path}` · "
    f"refreshed every {settings.dashboard_refresh_seconds} s"
)


@st.fragment(run_every=settings.dashboard_refresh_seconds)
def live() -> None:
    now = datetime.now(UTC)
    st.caption(f"updated {now:%Y-%m-%d %H:%M:%S} UTC")
    section("Pipeline health", health_section, now)
    section("Sensors", sensors_section, now)
    alerts, dlq = st.columns(2)
    latest = st.container()  # below both columns, filled by the alerts section
    with alerts:
        section("Alerts", functools.partial(alerts_section, latest=latest), now)
    with dlq:
        section("Dead-letter queue: rows per reason", dlq_section, now)


live()
