"""A small real lakehouse for the tests that read it from outside Spark (the notebook, the
dashboard): Delta tables made by the project's own transforms, without running the jobs."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from iot_lakehouse.pipeline.alerts import ALERT_COUNTS_TABLE, static_alerts, to_alert_rows
from iot_lakehouse.pipeline.gold import GOLD_TABLES, ROLLUPS
from iot_lakehouse.pipeline.rules import load_rules, split_judged
from iot_lakehouse.pipeline.silver import judge, to_dlq_rows, to_silver_rows
from iot_lakehouse.pipeline.windows import (
    MICROS,
    GoldTable,
    batch_partials,
    inserted_values,
    merge_source,
    rollup_rows,
    side,
)
from iot_lakehouse.settings import PROJECT_ROOT, Settings
from iot_lakehouse.sources.generator import GeneratorConfig
from tests.conftest import write_generated_bronze

START = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)  # event time of the first generated event


def write_delta(df: DataFrame, path: str, *partition_by: str) -> None:
    df.coalesce(1).write.format("delta").mode("append").partitionBy(*partition_by).save(path)


def build_lakehouse(spark: SparkSession, root: Path) -> Settings:
    """A small real lakehouse under ``root``, made by the project's own transforms: bronze of
    generated events (some malformed or invalid), silver and the DLQ as judged by the silver
    rules, gold/sensor_metrics_5m with its hourly and daily rollups, the static alerts of
    silver in gold/alerts and gold/alert_counts_5m. Every table is new, so a plain append of
    the rows the gold MERGE would insert gives the same table at a fraction of the cost on a
    busy machine. Static alert thresholds are lowered so ordinary readings raise some alerts."""
    rules = (PROJECT_ROOT / "src/iot_lakehouse/rules/silver_rules.yml").read_text()
    rules = rules.replace("metric: temperature, above: 30", "metric: temperature, above: 24")
    rules = rules.replace("metric: humidity,    above: 80", "metric: humidity,    above: 60")
    rules_file = root / "silver_rules.yml"
    rules_file.write_text(rules)
    settings = Settings.from_env({}).with_(
        lakehouse_path=str(root / "lakehouse"),
        dlq_path=str(root / "dlq"),
        silver_rules_file=rules_file,
        gold_watermark="5 minutes",  # the two older of the three windows are final
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

    def write_partials(table: GoldTable, partials: DataFrame) -> None:
        values = inserted_values(table, k, side("s"))
        source = merge_source(spark, partials, 0, final_until_us).alias("s")
        write_delta(
            source.select(*[values[f.name].alias(f.name) for f in table.schema]),
            settings.gold_path(table.name),
        )

    def write_window_rows(table: GoldTable, rows: DataFrame) -> None:
        write_partials(table, batch_partials(rows, table, k))

    write_window_rows(next(t for t in GOLD_TABLES if t.name == "sensor_metrics_5m"), silver)
    five_minutes = spark.read.format("delta").load(settings.gold_path("sensor_metrics_5m"))
    for rollup in ROLLUPS:  # the hourly and daily rows per sensor
        if rollup.source.name == "sensor_metrics_5m":
            final = five_minutes.where(F.col("is_final"))
            write_partials(rollup.table, rollup_rows(final, rollup, k))
    alerts = to_alert_rows(static_alerts(silver, ruleset), "static", ruleset.version, 0)
    write_delta(alerts, settings.alerts_path)
    write_window_rows(ALERT_COUNTS_TABLE, spark.read.format("delta").load(settings.alerts_path))
    return settings
