"""``iot-lakehouse metrics``: the pipeline's figures in Prometheus' text format on ``/metrics``.

Computed at each scrape from what ``status --json`` reads (no JVM): Kafka's end offsets, the
tables' Delta log statistics, the newest ``_ops/stream_metrics`` row of each query, the DLQ's
reasons and gold/alerts' types. The exposition is ``prometheus_client``'s (the official Python
client), so any Prometheus server or Grafana agent scrapes it as is.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from prometheus_client import start_http_server
from prometheus_client.core import CollectorRegistry, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from iot_lakehouse.logs import kv
from iot_lakehouse.settings import Settings

logger = logging.getLogger(__name__)

PREFIX = "iot_lakehouse"
# Tables whose newest event time says how fresh a layer is (column of that time).
FRESHNESS = {"silver": "event_time", "gold": "last_event_time"}
LATENCY_QUANTILES = {"0.5": "latency_p50_ms", "0.95": "latency_p95_ms"}


def _gauge(name: str, doc: str, labels: list[str] | None = None) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{PREFIX}_{name}", doc, labels=labels)


def column_counts(path: str, column: str) -> Counter[str] | None:
    """How often each value of a string (or array of strings) column occurs in a Delta table;
    None if there is no table yet."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        table = DeltaTable(path.removeprefix("file://"))
    except TableNotFoundError:
        return None
    values = table.to_pyarrow_dataset().to_table(columns=[column]).column(0).to_pylist()
    counts: Counter[str] = Counter()
    for value in values:
        for item in value if isinstance(value, list) else [value]:
            counts[str(item)] += 1
    return counts


def freshness_seconds(settings: Settings, now: datetime) -> dict[str, float]:
    """Seconds between ``now`` and the newest event time silver and gold show a Delta reader."""
    from iot_lakehouse.interfaces.dashboard import newest_time, open_table

    paths = {
        "silver": settings.silver_readings_path,
        "gold": settings.gold_path("sensor_metrics_5m"),
    }
    out = {}
    for layer, column in FRESHNESS.items():
        table = open_table(paths[layer])
        newest = newest_time(table, column) if table is not None else None
        if newest is not None:
            out[layer] = (now - newest).total_seconds()
    return out


class PipelineCollector(Collector):
    """Every figure of one scrape (a ``prometheus_client`` custom collector)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def collect(self) -> Iterator[Metric]:
        from iot_lakehouse.ops.status import pipeline_counts
        from iot_lakehouse.runtime.stream_metrics import (
            RECENT,
            latest_per_query,
            read_stream_metrics,
        )

        now = datetime.now(UTC)
        counts = pipeline_counts(self.settings)
        rows = _gauge("rows", "Rows per layer (Kafka: messages in the topic).", ["layer"])
        for layer, value in (
            ("kafka", counts.kafka_messages),
            ("bronze", counts.bronze_rows),
            ("silver", counts.silver_rows),
            ("dlq", counts.dlq_rows),
            ("duplicates", counts.duplicates),
            ("gold_5m", counts.gold_rows),
            ("gold_late", counts.gold_late),
            ("alerts", counts.alerts),
        ):
            if value is not None:
                rows.add_metric([layer], value)
        yield rows
        if counts.bronze_lag is not None:
            lag = _gauge("kafka_lag_records", "Kafka records not yet in bronze.")
            lag.add_metric([], counts.bronze_lag)
            yield lag
        if counts.open_alerts is not None:
            opened = _gauge("open_alerts", "Alerts fired in the last 15 minutes + silent sensors.")
            opened.add_metric([], counts.open_alerts)
            yield opened
        fresh = _gauge(
            "freshness_seconds", "Now minus the newest event time a reader sees.", ["layer"]
        )
        for layer, seconds in freshness_seconds(self.settings, now).items():
            fresh.add_metric([layer], seconds)
        yield fresh
        yield from self._per_query(
            latest_per_query(read_stream_metrics(self.settings.stream_metrics_path, now - RECENT))
        )
        yield from self._per_type()

    def _per_query(self, latest: list[dict[str, Any]]) -> Iterator[Metric]:
        """The newest batch of each query: rates, duration, lag, end-to-end latency."""
        labels = ["job", "query"]
        input_rate = _gauge("input_rows_per_second", "Input rows/s of the newest batch.", labels)
        done_rate = _gauge(
            "processed_rows_per_second", "Rows/s the newest batch processed.", labels
        )
        duration = _gauge("batch_duration_seconds", "Duration of the newest batch.", labels)
        kafka_lag = _gauge("query_kafka_lag_records", "Offsets behind the topic's end.", labels)
        versions = _gauge("query_delta_versions_behind", "Upstream Delta versions behind.", labels)
        latency = _gauge(
            "latency_seconds",
            "Kafka timestamp to commit of the newest batch's readings.",
            ["kind", "quantile"],
        )
        for row in latest:
            key = [row["job"], row["query"]]
            for family, column, scale in (
                (input_rate, "input_rows_per_s", 1.0),
                (done_rate, "processed_rows_per_s", 1.0),
                (duration, "batch_duration_ms", 1000.0),
                (kafka_lag, "kafka_lag_max", 1.0),
                (versions, "delta_versions_behind", 1.0),
            ):
                if row.get(column) is not None:
                    family.add_metric(key, row[column] / scale)
            kind = row.get("latency_kind")
            for quantile, column in LATENCY_QUANTILES.items():
                if kind and row.get(column) is not None:
                    latency.add_metric([kind, quantile], row[column] / 1000.0)
        yield from (input_rate, done_rate, duration, kafka_lag, versions, latency)

    def _per_type(self) -> Iterator[Metric]:
        """DLQ rows per reason code and alerts per type (read from the tables at each scrape)."""
        reasons = column_counts(self.settings.dlq_rejects_path, "reasons")
        dlq = _gauge("dlq_readings", "DLQ rows carrying each reason code.", ["reason"])
        for reason, n in sorted((reasons or {}).items()):
            dlq.add_metric([reason], n)
        yield dlq
        types = column_counts(self.settings.alerts_path, "alert_type")
        alerts = _gauge("alerts", "Rows of gold/alerts per alert type.", ["alert_type"])
        for alert_type, n in sorted((types or {}).items()):
            alerts.add_metric([alert_type], n)
        yield alerts


def registry_for(settings: Settings) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PipelineCollector(settings))
    return registry


def serve_metrics(settings: Settings, port: int, stop: threading.Event) -> None:
    """Serve ``/metrics`` on METRICS_HOST (127.0.0.1) and ``port`` until ``stop`` is set."""
    host = settings.metrics_host
    server, thread = start_http_server(port, addr=host, registry=registry_for(settings))
    logger.info("metrics endpoint up %s", kv(url=f"http://{host}:{port}/metrics"))
    try:
        stop.wait()
    finally:
        server.shutdown()
        thread.join(5)
