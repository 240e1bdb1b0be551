"""notebooks/explore_gold.ipynb, executed headless with nbclient: against a small real
lakehouse (Delta tables made by the project's own transforms) and against a fresh one."""

from __future__ import annotations

import math
import os
import re
import sys
import time
from collections import Counter
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from deltalake import DeltaTable
from nbclient import NotebookClient

from iot_lakehouse.settings import PROJECT_ROOT, Settings

NOTEBOOK = PROJECT_ROOT / "notebooks" / "explore_gold.ipynb"
CELL_TIMEOUT_S = 240  # the Spark cells start a JVM on a machine shared with other Spark tests


def run_notebook(lakehouse: str, dlq: str, artifact: Path) -> nbformat.NotebookNode:
    """Execute the notebook in a python3 kernel of this venv against the given paths, with a
    small Spark; save the executed copy to ``artifact``. Any failing cell fails the test."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    env = {
        **os.environ,
        "LAKEHOUSE_PATH": lakehouse,
        "DLQ_PATH": dlq,
        "SPARK_MASTER": "local[1]",
        "SPARK_DRIVER_MEMORY": "512m",
        "SPARK_SHUFFLE_PARTITIONS": "1",
    }
    # A short-lived JVM: the C1 compiler alone halves its CPU time (JIT dominates start-up).
    env["JAVA_TOOL_OPTIONS"] = f"{env.get('JAVA_TOOL_OPTIONS', '')} -XX:TieredStopAtLevel=1".strip()
    for name in ("PYSPARK_GATEWAY_PORT", "PYSPARK_GATEWAY_SECRET"):
        env.pop(name, None)  # the kernel must start its own JVM, not join this one's
    client = NotebookClient(
        nb,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    started = time.monotonic()
    try:
        client.execute(env=env)
    finally:
        nbformat.write(nb, artifact)
        print(f"executed notebook ({time.monotonic() - started:.0f} s): {artifact}")
    return nb


def cell_text(nb: nbformat.NotebookNode, tag: str) -> str:
    """Everything the tagged cell printed or displayed as text."""
    cells = [c for c in nb.cells if tag in c.metadata.get("tags", [])]
    assert len(cells) == 1, tag
    parts = []
    for out in cells[0].outputs:
        if out.output_type == "stream":
            parts.append(out.text)
        elif out.output_type in {"display_data", "execute_result"}:
            parts.append(out.data.get("text/plain", ""))
    return "\n".join(parts)


def read(path: str) -> pd.DataFrame:
    return DeltaTable(path).to_pandas()


def assert_row(text: str, *cells: object) -> None:
    """Some line of ``text`` shows ``cells`` next to each other (a row of a displayed table)."""
    pattern = r"\s+".join(re.escape(str(c)) for c in cells)
    assert re.search(rf"(^|\s){pattern}(\s|$)", text, re.MULTILINE), (cells, text)


def exact_quantile(values: list[float], rank: float) -> float:
    """The smallest value with at least ``rank`` of the values at or below it: what a KLL
    sketch that holds every value returns."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(rank * len(ordered)) - 1)]


@pytest.mark.integration  # starts a JVM, broker, browser or kernel
def test_notebook_on_a_fresh_lakehouse_says_what_is_missing(tmp_path: Path) -> None:
    lakehouse, dlq = tmp_path / "lakehouse", tmp_path / "dlq"
    nb = run_notebook(str(lakehouse), str(dlq), tmp_path / "explore_gold.fresh.ipynb")

    for tag, path in [
        ("latest-windows", lakehouse / "gold/sensor_metrics_5m"),
        ("alerts", lakehouse / "gold/alert_counts_5m"),
        ("alerts", lakehouse / "gold/alerts"),
        ("dlq-reasons", dlq / "silver_rejects"),
        ("rollups", lakehouse / "gold/sensor_metrics_1h"),
        ("rollups", lakehouse / "gold/sensor_metrics_1d"),
    ]:
        assert f"no table at {path} yet" in cell_text(nb, tag)
    assert "no temperature windows to plot yet" in cell_text(nb, "plot")
    assert "not starting Spark" in cell_text(nb, "spark-start")
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]  # no traceback


def test_notebook_shows_the_gold_tables_of_a_real_lakehouse(
    small_lakehouse: Settings, tmp_path: Path
) -> None:
    settings = small_lakehouse

    # What the notebook must show, recomputed here from the same tables (read with deltalake).
    gold = read(settings.gold_path("sensor_metrics_5m"))
    silver = read(settings.silver_readings_path)
    readings = int(gold["count"].sum())
    assert readings == len(silver) > 0  # one batch: no reading is late
    newest = gold[(gold["window_start"] == gold["window_start"].max())]
    latest = newest[newest["metric"] == "temperature"].set_index("sensor_id")
    assert not latest.empty
    temperature = silver[silver["metric"] == "temperature"]
    per_sensor = {
        sensor_id: (list(rows["value"]), rows["event_time"].dt.floor("5min").nunique())
        for sensor_id, rows in temperature.groupby("sensor_id")
    }
    counts = read(settings.gold_path("alert_counts_5m"))
    alert_totals = counts.groupby(["alert_type", "severity"])["alert_count"].sum()
    assert not alert_totals.empty  # the lowered thresholds raised some alerts
    reasons = Counter(r for row in read(settings.dlq_rejects_path)["reasons"] for r in row)
    assert reasons

    nb = run_notebook(
        settings.lakehouse_path, settings.dlq_path, tmp_path / "explore_gold.executed.ipynb"
    )

    assert sys.executable in cell_text(nb, "setup")  # the kernel ran in this venv
    assert f"{readings} readings" in cell_text(nb, "latest-windows")
    final_readings = int(gold.loc[gold["is_final"], "count"].sum())
    assert 0 < final_readings < readings  # some windows are final, the newest is not
    for name in ("sensor_metrics_1h", "sensor_metrics_1d"):
        shown = f"{name}: {final_readings} readings of final 5-minute windows"
        assert shown in cell_text(nb, "rollups"), cell_text(nb, "rollups")
    percentiles = cell_text(nb, "percentiles")
    for sensor_id, row in latest.iterrows():
        # one row per sensor; temperature, the last metric, ends it: p50 p95 p99
        quantiles = r"\s+".join(f"{row[q]:.2f}" for q in ("p50", "p95", "p99"))
        assert re.search(rf"^{sensor_id}\s.*\s{quantiles}[ \t]*$", percentiles, re.M), sensor_id
    alerts = cell_text(nb, "alerts")
    for (alert_type, severity), total in alert_totals.items():
        assert_row(alerts, alert_type, severity, total)
    dlq = cell_text(nb, "dlq-reasons")
    for reason, count in reasons.items():
        assert_row(dlq, reason, count)
    plot = next(c for c in nb.cells if "plot" in c.metadata.get("tags", []))
    assert any("image/png" in o.get("data", {}) for o in plot.outputs)

    # The Spark section: percentiles over the whole range from the merged sketches (exact
    # here: every sketch holds all its values), alert totals, then the session stopped.
    assert "Spark 4.2" in cell_text(nb, "spark-start")
    whole_range = cell_text(nb, "spark-percentiles")
    assert f"Spark: {readings} readings" in whole_range
    for sensor_id, (values, windows) in per_sensor.items():
        quantiles = [f"{exact_quantile(values, q):.2f}" for q in (0.5, 0.95, 0.99)]
        assert_row(whole_range, sensor_id, "temperature", windows, len(values), *quantiles)
    spark_alerts = cell_text(nb, "spark-alerts")
    for alert_type, total in alert_totals.groupby(level="alert_type").sum().items():
        assert_row(spark_alerts, alert_type, total)
    assert "Spark session stopped" in cell_text(nb, "spark-stop")
