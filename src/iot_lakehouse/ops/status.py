"""Counts for the live status line, read without a JVM (confluent-kafka and ``deltalake``)."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
from deltalake import DeltaTable
from deltalake.exceptions import TableNotFoundError

from iot_lakehouse.logs import kv
from iot_lakehouse.pipeline.detectors import OPEN_ALERT_WINDOW, SILENT
from iot_lakehouse.runtime.kafka_offsets import kafka_end_offsets
from iot_lakehouse.settings import Settings

logger = logging.getLogger(__name__)

# Layers whose growth the status screen shows as rows/s, in pipeline order.
RATE_LAYERS = ("kafka_messages", "bronze_rows", "silver_rows", "dlq_rows", "gold_rows", "alerts")


def has_committed(settings: Settings, job: str) -> bool:
    """True once the job has committed a micro-batch (``commits/0`` in its checkpoint; for the
    alerts job, in any of its queries' checkpoints). Local lakehouses only: False otherwise."""
    if "://" in settings.lakehouse_path:
        return False
    root = Path(settings.checkpoint_path(job))
    if job == "alerts":
        return any(root.glob("*/commits/0"))
    return (root / "commits" / "0").exists()


def delta_row_count(path: str) -> int | None:
    """Rows in a Delta table from its log statistics; None if there is no table yet."""
    try:
        table = DeltaTable(path)
    except TableNotFoundError:
        return None
    actions = table.get_add_actions(flatten=True)
    column = actions.column("num_records") if actions.num_rows else None
    return int(sum(v for v in column.to_pylist() if v)) if column is not None else 0


def open_alerts(rows: list[dict[str, object]], now: datetime) -> int:
    """Alerts still open at ``now``: fired in the last OPEN_ALERT_WINDOW (by detection time),
    plus silent sensors whose newest SENSOR_SILENT row is ``fired`` (open until it clears)."""
    since = now - OPEN_ALERT_WINDOW
    recent = sum(
        1
        for r in rows
        if r["alert_type"] != SILENT
        and r["status"] == "fired"
        and _aware(r["detected_at"]) >= since
    )
    newest: dict[object, tuple[datetime, object]] = {}
    for r in rows:
        if r["alert_type"] == SILENT:
            at = _aware(r["event_time"])
            if r["sensor_id"] not in newest or at >= newest[r["sensor_id"]][0]:
                newest[r["sensor_id"]] = (at, r["status"])
    return recent + sum(1 for _at, status in newest.values() if status == "fired")


def _aware(value: object) -> datetime:
    assert isinstance(value, datetime), value
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def read_open_alerts(path: str, now: datetime | None = None) -> int | None:
    """``open_alerts`` of the gold/alerts table at ``path``; None if there is no table yet."""
    now = now or datetime.now(UTC)
    try:
        dataset = DeltaTable(path).to_pyarrow_dataset()
    except TableNotFoundError:
        return None
    since = now - OPEN_ALERT_WINDOW
    column_type = dataset.schema.field("detected_at").type  # Delta: UTC; older writers: naive
    bound = pa.scalar(since if column_type.tz else since.replace(tzinfo=None), type=column_type)
    wanted = (ds.field("alert_type") == SILENT) | (ds.field("detected_at") >= bound)
    columns = ["sensor_id", "alert_type", "status", "event_time", "detected_at"]
    return open_alerts(dataset.to_table(columns=columns, filter=wanted).to_pylist(), now)


@dataclass(frozen=True)
class PipelineCounts:
    """One snapshot of the pipeline: what Kafka holds and what each table has."""

    kafka_messages: int | None
    bronze_rows: int | None
    silver_rows: int | None = None
    dlq_rows: int | None = None
    duplicates: int | None = None
    gold_rows: int | None = None  # rows of gold/sensor_metrics_5m
    gold_late: int | None = None  # readings the gold watermark left out (kept in _ops)
    alerts: int | None = None  # rows of gold/alerts
    open_alerts: int | None = None  # see ``open_alerts``

    @property
    def bronze_lag(self) -> int | None:
        if self.kafka_messages is None or self.bronze_rows is None:
            return None
        return self.kafka_messages - self.bronze_rows

    def rates(self, earlier: PipelineCounts, seconds: float) -> dict[str, float | None]:
        """Rows per second each layer grew by since ``earlier``, ``seconds`` ago."""
        out: dict[str, float | None] = {}
        for name in RATE_LAYERS:
            now, before = getattr(self, name), getattr(earlier, name)
            ok = now is not None and before is not None and seconds > 0
            out[name] = (now - before) / seconds if ok else None
        return out

    def line(self) -> str:
        return kv(
            kafka=_show(self.kafka_messages),
            bronze=_show(self.bronze_rows),
            bronze_lag=_show(self.bronze_lag),
            silver=_show(self.silver_rows),
            dlq=_show(self.dlq_rows),
            duplicates=_show(self.duplicates),
            gold_5m=_show(self.gold_rows),
            gold_late=_show(self.gold_late),
            alerts=_show(self.alerts),
            open_alerts=_show(self.open_alerts),
        )


def _show(value: int | float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}" if isinstance(value, float) else f"{value}"


SCREEN_ROWS = (  # (label, PipelineCounts field, rate key or None)
    ("kafka", "kafka_messages", "kafka_messages"),
    ("bronze", "bronze_rows", "bronze_rows"),
    ("silver", "silver_rows", "silver_rows"),
    ("dlq", "dlq_rows", "dlq_rows"),
    ("duplicates", "duplicates", None),
    ("gold_5m", "gold_rows", "gold_rows"),
    ("gold_late", "gold_late", None),
    ("alerts", "alerts", "alerts"),
)


def render_screen(
    counts: PipelineCounts,
    rates: dict[str, float | None],
    health: dict[str, str],
    clock: str,
    uptime_s: float,
) -> list[str]:
    """The live status screen of ``start_all``: rows and rows/s per layer, lag, alerts, jobs."""
    minutes, seconds = divmod(int(uptime_s), 60)
    lines = [f"{clock}  up {minutes}m{seconds:02d}s   (Ctrl-C stops everything gracefully)"]
    lines.append(f"{'layer':<12}{'rows':>12}{'rows/s':>10}")
    for label, name, rate in SCREEN_ROWS:
        value = getattr(counts, name)
        per_s = rates.get(rate) if rate else None
        lines.append(f"{label:<12}{_show(value):>12}{_show(per_s):>10}")
    lines.append(
        f"kafka lag (not yet in bronze): {_show(counts.bronze_lag)}   "
        f"open alerts: {_show(counts.open_alerts)}"
    )
    lines.append("jobs: " + "  ".join(f"{name}={state}" for name, state in health.items()))
    return lines


def pipeline_counts(settings: Settings) -> PipelineCounts:
    """Read the current counts: Kafka offsets and Delta log statistics, plus the recent and the
    SENSOR_SILENT rows of gold/alerts for the open alerts."""
    offsets = kafka_end_offsets(settings)
    return PipelineCounts(
        kafka_messages=sum(offsets.values()) if offsets is not None else None,
        bronze_rows=delta_row_count(settings.bronze_events_path),
        silver_rows=delta_row_count(settings.silver_readings_path),
        dlq_rows=delta_row_count(settings.dlq_rejects_path),
        duplicates=delta_row_count(settings.silver_duplicates_path),
        gold_rows=delta_row_count(settings.gold_path("sensor_metrics_5m")),
        gold_late=delta_row_count(settings.gold_late_readings_path),
        alerts=delta_row_count(settings.alerts_path),
        open_alerts=read_open_alerts(settings.alerts_path),
    )


def status_report(settings: Settings, now: datetime | None = None) -> str:
    """What ``iot-lakehouse status`` prints: the counts line, then each query's latest batch
    (throughput, lag, watermark, end-to-end latency) from ``_ops/stream_metrics``."""
    from iot_lakehouse.runtime.stream_metrics import (
        RECENT,
        format_stream_picture,
        latest_per_query,
        read_stream_metrics,
    )

    now = now or datetime.now(UTC)
    rows = read_stream_metrics(settings.stream_metrics_path, now - RECENT)
    picture = format_stream_picture(latest_per_query(rows), now)
    return "\n".join([pipeline_counts(settings).line(), *picture])


def _plain(value: object) -> object:
    """A metrics value as JSON has it: instants as ISO-8601 text, the rest as they are."""
    return value.isoformat() if isinstance(value, datetime) else value


def status_json(settings: Settings, now: datetime | None = None) -> str:
    """What ``iot-lakehouse status --json`` prints: the counts (and bronze's lag) and each
    query's newest ``_ops/stream_metrics`` row, as one JSON object."""
    from iot_lakehouse.runtime.stream_metrics import RECENT, latest_per_query, read_stream_metrics

    now = now or datetime.now(UTC)
    counts = pipeline_counts(settings)
    rows = read_stream_metrics(settings.stream_metrics_path, now - RECENT)
    return json.dumps(
        {
            "at": now.isoformat(),
            "counts": {**asdict(counts), "bronze_lag": counts.bronze_lag},
            "queries": [{k: _plain(v) for k, v in row.items()} for row in latest_per_query(rows)],
        },
        default=str,
    )
