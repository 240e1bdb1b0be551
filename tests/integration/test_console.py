"""--console: each committed batch printed as Spark's console sink does, the tables unchanged."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from iot_lakehouse.pipeline.gold import GoldBatchWriter, create_gold_tables
from iot_lakehouse.pipeline.rules import load_rules
from iot_lakehouse.pipeline.silver import SilverBatchWriter, create_silver_tables
from iot_lakehouse.settings import Settings
from tests.support.gold import READINGS, at, reading
from tests.support.silver import LONG_OK, WIDE_OK, bronze_df


def lakehouse(settings: Settings, root: Path, console_rows: int) -> Settings:
    return settings.with_(
        lakehouse_path=str(root / "lakehouse"),
        dlq_path=str(root / "dlq"),
        console_rows=console_rows,
        quality_every_n_batches=0,
    )


def silver_rows(spark: SparkSession, settings: Settings) -> list[tuple[object, ...]]:
    table = spark.read.format("delta").load(settings.silver_readings_path)
    return sorted(tuple(r) for r in table.drop("processed_at").collect())


def test_console_prints_each_silver_batch_and_writes_the_same(
    spark: SparkSession,
    kafka_settings: Settings,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ruleset = load_rules()
    quiet = lakehouse(kafka_settings, tmp_path / "quiet", 0)
    loud = lakehouse(kafka_settings, tmp_path / "loud", 2)
    for settings in (quiet, loud):
        create_silver_tables(spark, settings)
        writer = SilverBatchWriter(spark, settings, ruleset)
        writer.write_batch(bronze_df(spark, [WIDE_OK, b"garbage", LONG_OK]), 0)
        writer.write_batch(bronze_df(spark, [WIDE_OK], first_offset=10), 1)  # duplicates only
    out = capsys.readouterr().out
    # Once, from the console run; batch 1 committed no reading, so it prints nothing.
    assert out.count("Batch: 0 (silver/readings)") == 1
    assert "Batch: 1" not in out
    assert re.search(r"\|\s*sensor_id\s*\|", out) and "only showing top 2 rows" in out
    assert silver_rows(spark, loud) == silver_rows(spark, quiet)


def test_console_prints_the_gold_rows_a_batch_changed_without_sketches(
    spark: SparkSession,
    kafka_settings: Settings,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = lakehouse(kafka_settings, tmp_path, 20)
    create_gold_tables(spark, settings)
    writer = GoldBatchWriter(spark, settings)
    writer.write_batch(spark.createDataFrame([reading("s1", at(1), 20.0, 0)], READINGS), 0)
    writer.write_batch(spark.createDataFrame([reading("s2", at(2), 30.0, 1)], READINGS), 1)
    out = capsys.readouterr().out
    first, second = out.split("Batch: 1 (gold/sensor_metrics_5m)")
    assert "Batch: 0 (gold/sensor_metrics_5m)" in first
    assert re.search(r"\|\s*window_start\s*\|", first)
    assert "s1" in first and "s2" not in first
    assert "s2" in second and "s1" not in second  # the row batch 1 changed, not the others
    assert "value_sketch" not in out
