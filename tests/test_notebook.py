"""notebooks/explore_gold.ipynb, executed headless with nbclient: against a small real
lakehouse (Delta tables made by the project's own transforms) and against a fresh one."""

from __future__ import annotations

import math
import os
import re
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import nbformat
import pandas as pd
from deltalake import DeltaTable
from nbclient import NotebookClient
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from iot_lakehouse.alerts import static_alerts, to_alert_rows
from iot_lakehouse.generator import GeneratorConfig
from iot_lakehouse.gold import (
    ALERT_COUNTS_TABLE,
    GOLD_TABLES,
    MICROS,
    GoldTable,
    batch_partials,
    inserted_values,
    side,
)
from iot_lakehouse.rules import load_rules, split_judged
from iot_lakehouse.settings import PROJECT_ROOT, Settings
from iot_lakehouse.silver import judge, to_dlq_rows, to_silver_rows
from tests.conftest import write_generated_bronze

NOTEBOOK = PROJECT_ROOT / "notebooks" / "explore_gold.ipynb"
START = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
CELL_TIMEOUT_S = 240  # the Spark cells start a JVM on a machine shared with other Spark tests


def test_the_committed_notebook_has_no_outputs_and_the_python3_kernel() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)


def write_delta(df: DataFrame, path: str, *partition_by: str) -> None:
    df.coalesce(1).write.format("delta").mode("append").partitionBy(*partition_by).save(path)


def build_lakehouse(spark: SparkSession, root: Path) -> Settings:
    """A small real lakehouse under ``root``, made by the project's own transforms: bronze of
    generated events (some malformed or invalid), silver and the DLQ as judged by the silver
    rules, gold/sensor_metrics_5m, the static alerts of silver in gold/alerts and
    gold/alert_counts_5m. Every table is new, so a plain append of the rows the gold MERGE
    would insert gives the same table at a fraction of the cost on a busy machine. Static
    alert thresholds are lowered so ordinary readings raise some alerts."""
    rules = (PROJECT_ROOT / "src/iot_lakehouse/rules/silver_rules.yml").read_text()
    rules = rules.replace("metric: temperature, above: 30", "metric: temperature, above: 24")
    rules = rules.replace("metric: humidity,    above: 80", "metric: humidity,    above: 60")
    rules_file = root / "silver_rules.yml"
    rules_file.write_text(rules)
    settings = Settings.from_env({}).with_(
        lakehouse_path=str(root / "lakehouse"),
        dlq_path=str(root / "dlq"),
        silver_rules_file=rules_file,
    )
    config = GeneratorConfig(
        sensors=6,  # at most ~150 readings per sensor and metric: every KLL sketch is exact
        rate=1.0,  # 900 events over 15 minutes of event time: three 5-minute windows
        count=900,
        seed=21,
        format="mixed",
        malformed_fraction=0.03,
        invalid_fraction=0.05,
        start_time=START,
    )
    write_generated_bronze(spark, settings, config, parts=1)
    ruleset = load_rules(settings.silver_rules_file, settings.silver_max_future_seconds)
    bronze = spark.read.format("delta").load(settings.bronze_events_path)
    valid, rejected = split_judged(judge(bronze, ruleset).localCheckpoint(eager=True))
    write_delta(to_silver_rows(valid, ruleset), settings.silver_readings_path, "event_date")
    write_delta(to_dlq_rows(rejected, ruleset, 0), settings.dlq_rejects_path, "rejected_date")

    silver = spark.read.format("delta").load(settings.silver_readings_path)
    latest_us = silver.agg(F.max(F.unix_micros("event_time"))).first()[0]
    final_until_us = latest_us - settings.gold_watermark_seconds * MICROS
    k = settings.gold_percentile_k

    def write_window_rows(table: GoldTable, rows: DataFrame) -> None:
        values = inserted_values(table, k, 0, final_until_us, side("s"))
        partials = batch_partials(rows, table, k).alias("s")
        write_delta(
            partials.select(*[values[f.name].alias(f.name) for f in table.schema]),
            settings.gold_path(table.name),
        )

    write_window_rows(next(t for t in GOLD_TABLES if t.name == "sensor_metrics_5m"), silver)
    alerts = to_alert_rows(static_alerts(silver, ruleset), "static", ruleset.version, 0)
    write_delta(alerts, settings.alerts_path)
    write_window_rows(ALERT_COUNTS_TABLE, spark.read.format("delta").load(settings.alerts_path))
    return settings


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


def test_notebook_on_a_fresh_lakehouse_says_what_is_missing(tmp_path: Path) -> None:
    lakehouse, dlq = tmp_path / "lakehouse", tmp_path / "dlq"
    nb = run_notebook(str(lakehouse), str(dlq), tmp_path / "explore_gold.fresh.ipynb")

    for tag, path in [
        ("latest-windows", lakehouse / "gold/sensor_metrics_5m"),
        ("alerts", lakehouse / "gold/alert_counts_5m"),
        ("alerts", lakehouse / "gold/alerts"),
        ("dlq-reasons", dlq / "silver_rejects"),
    ]:
        assert f"no table at {path} yet" in cell_text(nb, tag)
    assert "no temperature windows to plot yet" in cell_text(nb, "plot")
    assert "not starting Spark" in cell_text(nb, "spark-start")
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]  # no traceback


def test_notebook_shows_the_gold_tables_of_a_real_lakehouse(
    spark: SparkSession, tmp_path: Path
) -> None:
    started = time.monotonic()
    settings = build_lakehouse(spark, tmp_path)
    print(f"test lakehouse built in {time.monotonic() - started:.0f} s")

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
