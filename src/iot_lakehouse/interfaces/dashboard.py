"""The live web dashboard: what it shows, read from the lakehouse without a JVM, and the command
that serves it (``iot-lakehouse dashboard``).

``dashboard_app.py`` is the Streamlit script and only lays out what the functions here return.
The ``load_*`` readers open Delta tables with ``deltalake`` and return None while a table does
not exist yet; everything else is a pure function of frames and rows, tested without a browser.
Timestamps come back from ``deltalake`` as UTC; the dashboard shows them in UTC.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from deltalake import DeltaTable
from deltalake.exceptions import TableNotFoundError

from iot_lakehouse.errors import ConfigError
from iot_lakehouse.logs import configure_logging, kv
from iot_lakehouse.ops.status import delta_row_count, read_open_alerts
from iot_lakehouse.runtime.stream_metrics import RECENT, latest_per_query, read_stream_metrics
from iot_lakehouse.settings import Settings

logger = logging.getLogger(__name__)

APP_SCRIPT = Path(__file__).with_name("dashboard_app.py")
HOST = "127.0.0.1"
START_HINT = "start the pipeline with `./start_all.sh`"

JOBS = ("bronze", "silver", "gold", "alerts")  # the streaming jobs, in pipeline order
METRICS_WINDOW = RECENT  # stream metrics read per refresh (the same window as `status`)
STALL_MIN_S = 60.0  # a query with no batch for this long (or STALL_TRIGGERS triggers) stalled
STALL_TRIGGERS = 3
LATENCY_KINDS = {"kafka_to_silver": "Kafka → silver", "kafka_to_gold": "Kafka → gold"}

SENSOR_COLUMNS = ["window_start", "sensor_id", "metric", "count", "avg", "p95", "unit", "is_final"]
MEASURES = ("avg", "p95")
CHART_SPANS: dict[str, timedelta | None] = {
    "last hour": timedelta(hours=1),
    "last 6 hours": timedelta(hours=6),
    "last 24 hours": timedelta(hours=24),
    "everything": None,
}
# The rollups of gold/sensor_metrics_5m the sensors section shows each sensor's newest row of.
SENSOR_ROLLUPS = {"hour": "sensor_metrics_1h", "UTC day": "sensor_metrics_1d"}
ROLLUP_SPAN = timedelta(days=2)  # enough rows for every sensor's newest hour and day
ALERT_COLUMNS = [
    "detected_at", "event_time", "sensor_id", "metric", "location", "alert_type", "severity",
    "status", "value", "threshold", "detector",
]  # fmt: skip
LATEST_ALERTS = 20
DLQ_COLUMNS = ["reasons", "rejected_at"]


# --- readers (deltalake, no JVM) ----------------------------------------------------------------
def open_table(path: str) -> DeltaTable | None:
    """The Delta table at ``path``; None while it does not exist yet."""
    try:
        return DeltaTable(path.removeprefix("file://"))
    except TableNotFoundError:
        return None


def _bound(dataset: ds.Dataset, column: str, at: datetime) -> pa.Scalar:
    """``at`` as a scalar of the column's type (Delta: UTC; older writers: naive UTC)."""
    column_type = dataset.schema.field(column).type
    return pa.scalar(at if column_type.tz else at.replace(tzinfo=None), type=column_type)


def newest_time(table: DeltaTable, column: str) -> datetime | None:
    """The largest value of a timestamp column: from the file statistics in the Delta log when
    every file has them (no data read), else from the column itself; None if no rows."""
    actions = pa.table(table.get_add_actions(flatten=True))
    name = f"max.{column}"
    if actions.num_rows and name in actions.column_names and actions[name].null_count == 0:
        top = pc.max(actions[name]).as_py()
    else:
        top = pc.max(table.to_pyarrow_dataset().to_table(columns=[column])[column]).as_py()
    if top is None:
        return None
    assert isinstance(top, datetime), top
    return top if top.tzinfo else top.replace(tzinfo=UTC)


def load_sensor_metrics(path: str, span: timedelta | None) -> pd.DataFrame | None:
    """Rows of gold/sensor_metrics_5m (SENSOR_COLUMNS) whose window starts within ``span`` of
    the newest window (all rows if ``span`` is None); None if there is no table yet."""
    table = open_table(path)
    if table is None:
        return None
    dataset = table.to_pyarrow_dataset()
    wanted = None
    if span is not None:
        top = newest_time(table, "window_start")
        if top is not None:
            wanted = ds.field("window_start") >= _bound(dataset, "window_start", top - span)
    frame: pd.DataFrame = dataset.to_table(columns=SENSOR_COLUMNS, filter=wanted).to_pandas()
    return frame


def load_alerts(path: str) -> pd.DataFrame | None:
    """gold/alerts (ALERT_COLUMNS); None if there is no table yet."""
    table = open_table(path)
    if table is None:
        return None
    frame: pd.DataFrame = table.to_pyarrow_dataset().to_table(columns=ALERT_COLUMNS).to_pandas()
    return frame


def load_dlq(path: str) -> pd.DataFrame | None:
    """The reason codes and rejection times of dlq/silver_rejects; None if no table yet."""
    table = open_table(path)
    if table is None:
        return None
    frame: pd.DataFrame = table.to_pyarrow_dataset().to_table(columns=DLQ_COLUMNS).to_pandas()
    return frame


def load_stream_metrics(settings: Settings, now: datetime) -> list[dict[str, Any]] | None:
    """The stream_metrics rows of the last METRICS_WINDOW; None if there is no table yet."""
    if open_table(settings.stream_metrics_path) is None:
        return None
    return read_stream_metrics(settings.stream_metrics_path, now - METRICS_WINDOW)


def table_paths(settings: Settings) -> dict[str, str]:
    """The tables whose row counts the dashboard shows (the catalog's ``on_dashboard``), in
    pipeline order."""
    from iot_lakehouse.catalog import TABLES

    return {t.name: t.path(settings) for t in TABLES if t.on_dashboard}


def table_counts(settings: Settings) -> dict[str, int | None]:
    """Rows per table from the Delta log statistics (None: no table yet)."""
    return {name: delta_row_count(path) for name, path in table_paths(settings).items()}


def open_alert_count(settings: Settings, now: datetime) -> int | None:
    """Alerts open at ``now`` (see ``status.open_alerts``); None if there is no table yet."""
    return read_open_alerts(settings.alerts_path, now)


# --- sensors: gold/sensor_metrics_5m ------------------------------------------------------------
def sensor_choices(metrics: pd.DataFrame) -> tuple[list[str], list[str]]:
    """The sensors and the metrics present, each sorted."""
    sensors = sorted(str(s) for s in metrics["sensor_id"].dropna().unique())
    names = sorted(str(m) for m in metrics["metric"].dropna().unique())
    return sensors, names


def default_metric(names: Sequence[str]) -> str | None:
    """Temperature when there is some, else the first metric."""
    if "temperature" in names:
        return "temperature"
    return names[0] if names else None


def _naive_utc(values: pd.Series | pd.Index) -> Any:
    """UTC instants as naive UTC, so charts show UTC whatever the browser's time zone."""
    stamps = pd.to_datetime(values, utc=True)
    return stamps.tz_localize(None) if isinstance(stamps, pd.Index) else stamps.dt.tz_localize(None)


def sensor_series(
    metrics: pd.DataFrame, metric: str, sensors: Sequence[str], measures: Sequence[str]
) -> pd.DataFrame:
    """The line chart of one metric: indexed by window start (naive UTC), one column per sensor
    and measure (``"sensor-1 avg"``), sensors in the order given."""
    rows = metrics[(metrics["metric"] == metric) & metrics["sensor_id"].isin(list(sensors))]
    if rows.empty or not measures:
        return pd.DataFrame()
    wide = rows.pivot_table(
        index="window_start", columns="sensor_id", values=list(measures), aggfunc="last"
    )
    columns = [(m, s) for s in sensors for m in measures if (m, s) in wide.columns]
    series = wide[columns]
    series.columns = [f"{s} {m}" for m, s in columns]
    series.index = _naive_utc(series.index)
    series.index.name = "window start (UTC)"
    return series.sort_index()


def latest_windows(metrics: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Each sensor's newest window of ``metric``: sensor, window start, readings, avg, p95,
    unit and whether the window is final; sorted by sensor."""
    rows = metrics[metrics["metric"] == metric].sort_values("window_start")
    newest = rows.groupby("sensor_id", as_index=False).tail(1).sort_values("sensor_id")
    return newest[["sensor_id", "window_start", "count", "avg", "p95", "unit", "is_final"]]


# --- alerts: gold/alerts ------------------------------------------------------------------------
def latest_alerts(alerts: pd.DataFrame, limit: int = LATEST_ALERTS) -> pd.DataFrame:
    """The ``limit`` most recently detected alerts, newest first."""
    ordered = alerts.sort_values(["detected_at", "event_time"], ascending=False)
    return ordered.head(limit).reset_index(drop=True)


def alert_summary(alerts: pd.DataFrame) -> pd.DataFrame:
    """Alerts per type and severity: fired, cleared, sensors and the newest event time; the
    most frequent first."""
    if alerts.empty:
        return pd.DataFrame(
            columns=["alert_type", "severity", "fired", "cleared", "sensors", "last_event"]
        )
    summary = (
        alerts.assign(
            fired=alerts["status"] == "fired",
            cleared=alerts["status"] == "cleared",
        )
        .groupby(["alert_type", "severity"], dropna=False)
        .agg(
            fired=("fired", "sum"),
            cleared=("cleared", "sum"),
            sensors=("sensor_id", "nunique"),
            last_event=("event_time", "max"),
        )
        .reset_index()
        .sort_values(["fired", "alert_type"], ascending=[False, True])
    )
    return summary.reset_index(drop=True)


# --- DLQ: dlq/silver_rejects --------------------------------------------------------------------
def dlq_reason_counts(dlq: pd.DataFrame) -> pd.DataFrame:
    """DLQ rows per reason code (a row with several reasons counts once for each, a reason
    repeated in one row once), with the share of all DLQ rows and the newest rejection time;
    the most frequent first."""
    columns = ["reason", "rows", "share", "last_rejected"]
    if dlq.empty:
        return pd.DataFrame(columns=columns)
    exploded = (
        dlq.assign(row=range(len(dlq)))
        .explode("reasons")
        .dropna(subset=["reasons"])
        .drop_duplicates(subset=["row", "reasons"])
    )
    if exploded.empty:
        return pd.DataFrame(columns=columns)
    counts = (
        exploded.groupby("reasons")
        .agg(rows=("row", "size"), last_rejected=("rejected_at", "max"))
        .reset_index()
        .rename(columns={"reasons": "reason"})
    )
    counts["share"] = counts["rows"] / len(dlq)
    counts = counts.sort_values(["rows", "reason"], ascending=[False, True])
    return counts[columns].reset_index(drop=True)


# --- pipeline health: _ops/stream_metrics -------------------------------------------------------
def stall_after_s(trigger_s: float, batch_duration_ms: int | None) -> float:
    """How long a query may go without a finished batch before it counts as stalled: the
    longest of STALL_MIN_S, STALL_TRIGGERS trigger intervals and twice its last batch."""
    last_batch_s = (batch_duration_ms or 0) / 1000
    return max(STALL_MIN_S, STALL_TRIGGERS * trigger_s, 2 * last_batch_s)


@dataclass(frozen=True)
class QueryHealth:
    """One streaming query as the dashboard shows it, from its newest stream_metrics row."""

    job: str
    query: str
    # running | idle (no batch for a while, nothing was left to read) | stalled (no batch for a
    # while with input waiting) | stopped (no batch within METRICS_WINDOW)
    state: str
    age_s: float | None = None  # since its newest batch finished
    batch_id: int | None = None
    input_rows_per_s: float | None = None
    processed_rows_per_s: float | None = None
    batch_duration_ms: int | None = None
    lag: int | None = None  # Kafka offsets behind latest, or upstream Delta versions
    lag_unit: str = ""  # offsets | versions
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None


@dataclass(frozen=True)
class PipelineHealth:
    """The pipeline at a glance: ingest rate, Kafka lag, end-to-end latency, every query."""

    queries: list[QueryHealth]
    ingest_rows_per_s: float | None  # bronze input rows/s (running bronze queries)
    kafka_lag: int | None  # offsets bronze is behind the newest Kafka offsets (worst partition)
    latency: dict[str, tuple[float | None, float | None]]  # kind -> (p50, p95) ms, newest batch

    @property
    def running(self) -> int:
        return sum(1 for q in self.queries if q.state == "running")


def query_health(row: Mapping[str, Any], now: datetime, trigger_s: float) -> QueryHealth:
    """The health of one query from its newest stream_metrics row."""
    age = (now - row["recorded_at"]).total_seconds()
    if row["kafka_lag_max"] is not None:
        lag, unit = row["kafka_lag_max"], "offsets"
    elif row["delta_versions_behind"] is not None:
        lag, unit = row["delta_versions_behind"], "versions"
    else:
        lag, unit = None, ""
    # Spark runs no batch while there is no new input: a quiet query whose last batch left
    # nothing behind is idle; one that left input waiting is stalled (stuck or stopped).
    if age <= stall_after_s(trigger_s, row["batch_duration_ms"]):
        state = "running"
    else:
        state = "stalled" if lag else "idle"
    return QueryHealth(
        job=row["job"],
        query=row["query"] or row["job"],
        state=state,
        age_s=max(age, 0.0),
        batch_id=row["batch_id"],
        input_rows_per_s=row["input_rows_per_s"],
        processed_rows_per_s=row["processed_rows_per_s"],
        batch_duration_ms=row["batch_duration_ms"],
        lag=lag,
        lag_unit=unit,
        latency_p50_ms=row["latency_p50_ms"],
        latency_p95_ms=row["latency_p95_ms"],
    )


def pipeline_health(
    rows: list[dict[str, Any]],
    now: datetime,
    trigger_s: float | Callable[[str], float],
    jobs: Iterable[str] = JOBS,
) -> PipelineHealth:
    """Health of every query with rows (oldest first, as ``read_stream_metrics`` returns them),
    plus a ``stopped`` entry for each job in ``jobs`` that has none. ``trigger_s``: the trigger
    interval of every job, or of each (``Settings.trigger_seconds_of``)."""
    of_job = trigger_s if callable(trigger_s) else lambda _job: trigger_s
    queries = [query_health(r, now, of_job(r["job"])) for r in latest_per_query(rows)]
    seen = {q.job for q in queries}
    queries += [QueryHealth(job=job, query=job, state="stopped") for job in jobs if job not in seen]
    bronze = [q for q in queries if q.job == "bronze" and q.state == "running"]
    rates = [q.input_rows_per_s for q in bronze if q.input_rows_per_s is not None]
    kafka_lag = None
    latency: dict[str, tuple[float | None, float | None]] = {}
    for r in rows:  # oldest first: the last one seen is the newest
        if r["job"] == "bronze" and r["kafka_lag_max"] is not None:
            kafka_lag = r["kafka_lag_max"]
        if r["latency_kind"] and r["latency_p50_ms"] is not None:
            latency[r["latency_kind"]] = (r["latency_p50_ms"], r["latency_p95_ms"])
    return PipelineHealth(
        queries=queries,
        ingest_rows_per_s=sum(rates) if rates else None,
        kafka_lag=kafka_lag,
        latency=latency,
    )


def throughput_series(rows: list[dict[str, Any]], column: str = "input_rows_per_s") -> pd.DataFrame:
    """Rows/s per query over time (batch trigger time, naive UTC), for a line chart."""
    points = [
        (r["batch_time"], r["query"] or r["job"], r[column])
        for r in rows
        if r["batch_time"] is not None and r[column] is not None
    ]
    return _wide(points, "batch time (UTC)")


def latency_series(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """End-to-end latency p50 and p95 (ms) per kind over time, for a line chart."""
    points = []
    for r in rows:
        if r["batch_time"] is None or not r["latency_kind"]:
            continue
        label = LATENCY_KINDS.get(r["latency_kind"], r["latency_kind"])
        for name in ("p50", "p95"):
            if r[f"latency_{name}_ms"] is not None:
                points.append((r["batch_time"], f"{label} {name}", r[f"latency_{name}_ms"]))
    return _wide(points, "batch time (UTC)")


def _wide(points: list[tuple[datetime, str, float]], index_name: str) -> pd.DataFrame:
    if not points:
        return pd.DataFrame()
    long = pd.DataFrame(points, columns=["time", "series", "value"])
    wide = long.pivot_table(index="time", columns="series", values="value", aggfunc="last")
    wide.index = _naive_utc(wide.index)
    wide.index.name = index_name
    wide.columns.name = None
    return wide.sort_index()


# --- formatting (what the page shows) -----------------------------------------------------------
MISSING = "—"


def fmt_count(value: float | None) -> str:
    return MISSING if value is None or pd.isna(value) else f"{int(value):,}"


def fmt_number(value: float | None, decimals: int = 2) -> str:
    return MISSING if value is None or pd.isna(value) else f"{value:,.{decimals}f}"


def fmt_ms(value: float | None) -> str:
    """Milliseconds; from 100 s on in seconds (a backlog's latency must fit its tile)."""
    if value is None or pd.isna(value):
        return MISSING
    return f"{value / 1000:,.0f} s" if value >= 100_000 else f"{value:,.0f} ms"


def fmt_age(seconds: float | None) -> str:
    if seconds is None:
        return MISSING
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def fmt_time(value: Any) -> str:
    """An instant as ``YYYY-MM-DD HH:MM:SS`` in UTC (naive: taken as UTC); blank if missing."""
    if value is None or pd.isna(value):
        return ""
    stamp = pd.Timestamp(value)
    if stamp.tzinfo is not None:
        stamp = stamp.tz_convert(UTC)
    return str(stamp.strftime("%Y-%m-%d %H:%M:%S"))


def health_table(health: PipelineHealth) -> pd.DataFrame:
    """One display row per query: state, newest batch, rows/s, batch time, lag, latency."""
    return pd.DataFrame(
        [
            {
                "job": q.job,
                "query": q.query,
                "state": q.state,
                "last batch": fmt_age(q.age_s),
                "batch": fmt_count(q.batch_id),
                "input rows/s": fmt_number(q.input_rows_per_s, 1),
                "processed rows/s": fmt_number(q.processed_rows_per_s, 1),
                "batch duration": fmt_ms(q.batch_duration_ms),
                "lag": f"{fmt_count(q.lag)} {q.lag_unit}".strip(),
                "latency p50": fmt_ms(q.latency_p50_ms),
                "latency p95": fmt_ms(q.latency_p95_ms),
            }
            for q in health.queries
        ]
    )


def counts_table(counts: Mapping[str, int | None]) -> pd.DataFrame:
    """One display row per table: its rows, or that it does not exist yet."""
    return pd.DataFrame(
        [
            {"table": name, "rows": "no table yet" if rows is None else fmt_count(rows)}
            for name, rows in counts.items()
        ]
    )


def windows_table(latest: pd.DataFrame) -> pd.DataFrame:
    """``latest_windows`` for display: two decimals, thousands separators, UTC times."""
    return pd.DataFrame(
        {
            "sensor": latest["sensor_id"],
            "window start (UTC)": latest["window_start"].map(fmt_time),
            "readings": latest["count"].map(fmt_count),
            "avg": latest["avg"].map(fmt_number),
            "p95": latest["p95"].map(fmt_number),
            "unit": latest["unit"].fillna(""),
            "final": latest["is_final"].map(lambda v: "yes" if v else "no"),
        }
    ).reset_index(drop=True)


def alerts_table(alerts: pd.DataFrame) -> pd.DataFrame:
    """``latest_alerts`` for display."""
    return pd.DataFrame(
        {
            "detected (UTC)": alerts["detected_at"].map(fmt_time),
            "event time (UTC)": alerts["event_time"].map(fmt_time),
            "sensor": alerts["sensor_id"].fillna(""),
            "metric": alerts["metric"].fillna(""),
            "type": alerts["alert_type"],
            "severity": alerts["severity"],
            "status": alerts["status"],
            "value": alerts["value"].map(fmt_number),
            "threshold": alerts["threshold"].map(fmt_number),
        }
    ).reset_index(drop=True)


def summary_table(summary: pd.DataFrame) -> pd.DataFrame:
    """``alert_summary`` for display."""
    return pd.DataFrame(
        {
            "type": summary["alert_type"],
            "severity": summary["severity"],
            "fired": summary["fired"].map(fmt_count),
            "cleared": summary["cleared"].map(fmt_count),
            "sensors": summary["sensors"].map(fmt_count),
            "last event (UTC)": summary["last_event"].map(fmt_time),
        }
    ).reset_index(drop=True)


def reasons_table(reasons: pd.DataFrame) -> pd.DataFrame:
    """``dlq_reason_counts`` for display."""
    return pd.DataFrame(
        {
            "reason": reasons["reason"],
            "rows": reasons["rows"].map(fmt_count),
            "share": reasons["share"].map(lambda v: f"{v:.1%}"),
            "last rejected (UTC)": reasons["last_rejected"].map(fmt_time),
        }
    ).reset_index(drop=True)


# --- the command --------------------------------------------------------------------------------
@functools.cache
def configure_app_logging(settings: Settings) -> None:
    """Logging of the Streamlit process, once however often the script reruns."""
    configure_logging(
        "dashboard",
        settings.log_level,
        settings.log_format,
        settings.logs_dir,
        sys.stderr,
        settings.log_max_bytes,
        settings.log_backups,
    )


def ensure_port_free(port: int, host: str = HOST) -> None:
    """Raise ConfigError naming DASHBOARD_PORT when something already listens on ``port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        if os.name == "posix":  # as a server would: a closed connection's TIME_WAIT is no user
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise ConfigError(
                f"port {port} on {host} is already in use ({exc.strerror}): stop what listens "
                f"there (another dashboard?) or choose a free port with DASHBOARD_PORT=<port> "
                f"or --port <port>"
            ) from None


def streamlit_command(port: int, host: str = HOST) -> list[str]:
    """``streamlit run`` of the app on host:port: headless, no usage statistics, no file
    watcher. The app reads its settings from the environment, like this process."""
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(APP_SCRIPT),
        f"--server.address={host}",
        f"--server.port={port}",
        "--server.headless=true",
        "--server.fileWatcherType=none",
        "--server.runOnSave=false",
        "--browser.gatherUsageStats=false",
        "--client.toolbarMode=minimal",
    ]


def run_dashboard(settings: Settings, port: int | None = None) -> int:
    """Serve the dashboard on DASHBOARD_HOST (127.0.0.1) and ``port`` (default DASHBOARD_PORT)
    until Ctrl-C or SIGTERM; return the exit status (0 when stopped)."""
    port = settings.dashboard_port if port is None else port
    if not 1 <= port <= 65535:
        raise ConfigError(f"--port {port}: use a TCP port from 1 to 65535")
    host = settings.dashboard_host
    ensure_port_free(port, host)
    logger.info(
        "dashboard starting %s",
        kv(
            url=f"http://{host}:{port}",
            lakehouse=settings.lakehouse_path,
            dlq=settings.dlq_path,
            refresh_s=settings.dashboard_refresh_seconds,
        ),
    )
    proc = subprocess.Popen(streamlit_command(port, host))

    def stop(_signum: int, _frame: FrameType | None) -> None:
        proc.terminate()

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        while True:
            try:
                code = proc.wait()
                break
            except KeyboardInterrupt:  # in a terminal Streamlit got the Ctrl-C as well
                proc.terminate()
    finally:
        signal.signal(signal.SIGTERM, previous)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if code > 0:
        logger.error("dashboard failed %s", kv(exit_code=code))
        return code
    logger.info("dashboard stopped %s", kv(exit_code=code))
    return 0
