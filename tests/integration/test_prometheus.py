"""iot-lakehouse metrics: Prometheus text of a real lakehouse and broker, parsed by the client."""

from __future__ import annotations

import json
import re
import threading
import urllib.request
from collections import Counter
from datetime import UTC, datetime

from deltalake import DeltaTable
from prometheus_client.parser import text_string_to_metric_families

from iot_lakehouse.interfaces.prometheus import serve_metrics
from iot_lakehouse.ops.status import delta_row_count
from iot_lakehouse.settings import Settings
from tests.conftest import free_port, produce
from tests.support.compose import GRAFANA_DASHBOARD


def scrape(settings: Settings) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """One scrape of a live endpoint: metric name -> {sorted labels: value} (a family with no
    sample this time maps to {})."""
    port, stop = free_port(), threading.Event()
    server = threading.Thread(target=serve_metrics, args=(settings, port, stop), daemon=True)
    server.start()
    try:
        text = ""
        for _ in range(50):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as r:
                    text = r.read().decode()
                break
            except OSError:
                stop.wait(0.2)
    finally:
        stop.set()
        server.join(10)
    assert text, "the endpoint never answered"
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        out.setdefault(family.name, {})
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def test_metrics_endpoint_serves_the_lakehouse_in_prometheus_text(
    small_lakehouse: Settings, settings: Settings
) -> None:
    produce(settings, 300, seed=3)
    lakehouse = small_lakehouse.with_(
        kafka_bootstrap_servers=settings.kafka_bootstrap_servers, kafka_topic=settings.kafka_topic
    )
    metrics = scrape(lakehouse)
    rows = {dict(labels)["layer"]: value for labels, value in metrics["iot_lakehouse_rows"].items()}
    assert rows["kafka"] == 300
    assert rows["silver"] == delta_row_count(lakehouse.silver_readings_path) > 0
    assert rows["dlq"] == delta_row_count(lakehouse.dlq_rejects_path) > 0
    assert rows["alerts"] == delta_row_count(lakehouse.alerts_path) > 0

    # Reason codes and alert types, against the tables read here.
    reasons: Counter[str] = Counter()
    for codes in DeltaTable(lakehouse.dlq_rejects_path).to_pyarrow_table(columns=["reasons"])[0]:
        reasons.update(str(c) for c in codes.as_py())
    dlq = metrics["iot_lakehouse_dlq_readings"]
    assert {dict(k)["reason"]: v for k, v in dlq.items()} == dict(reasons) != {}
    types = Counter(
        DeltaTable(lakehouse.alerts_path).to_pyarrow_table(columns=["alert_type"])[0].to_pylist()
    )
    alerts = metrics["iot_lakehouse_alerts"]
    assert {dict(k)["alert_type"]: v for k, v in alerts.items()} == dict(types)

    # Freshness: now minus the newest event time of silver (the builder's events are old).
    newest = max(
        DeltaTable(lakehouse.silver_readings_path)
        .to_pyarrow_table(columns=["event_time"])[0]
        .to_pylist()
    )
    expected = (datetime.now(UTC) - newest.replace(tzinfo=UTC)).total_seconds()
    fresh = {dict(k)["layer"]: v for k, v in metrics["iot_lakehouse_freshness_seconds"].items()}
    assert abs(fresh["silver"] - expected) < 60

    # Every metric the Grafana dashboard (docker-compose's monitoring profile) plots is served
    # (the per-query ones without samples here: the built lakehouse's batches are not recent).
    exprs = [
        t["expr"] for p in json.loads(GRAFANA_DASHBOARD.read_text())["panels"] for t in p["targets"]
    ]
    plotted = {name for expr in exprs for name in re.findall(r"iot_lakehouse_\w+", expr)}
    assert plotted and plotted <= metrics.keys(), f"not served: {sorted(plotted - metrics.keys())}"
