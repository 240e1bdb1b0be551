"""``iot-lakehouse dlq list|redrive`` on real Delta tables."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from iot_lakehouse.errors import JobError
from iot_lakehouse.ops.dlq import REDRIVEN, STILL_REJECTED, dlq_list, history_path, redrive
from iot_lakehouse.ops.reconcile import bronze_silver_ledger
from iot_lakehouse.pipeline.rules import load_rules
from iot_lakehouse.pipeline.silver import start_silver_stream
from iot_lakehouse.settings import Settings
from iot_lakehouse.sources.generator import GeneratorConfig
from tests.conftest import stricter_rules, write_generated_bronze


def run_silver(spark: SparkSession, settings: Settings) -> None:
    query = start_silver_stream(spark, settings, available_now=True)
    query.awaitTermination(600)
    assert query.exception() is None


def rows(spark: SparkSession, path: str, *columns: str) -> list[tuple[object, ...]]:
    df: DataFrame = spark.read.format("delta").load(path)
    return sorted(tuple(r) for r in df.select(*columns).collect())


def version(spark: SparkSession, path: str) -> int:
    from delta.tables import DeltaTable

    return int(DeltaTable.forPath(spark, path).history(1).first()["version"])  # type: ignore[index]


SILVER_CONTENT = (
    "sensor_id",
    "metric",
    "value",
    "event_time",
    "location",
    "alert_type",
    "bronze_topic",
    "bronze_partition",
    "bronze_offset",
)
DLQ_ROW = ("bronze_topic", "bronze_partition", "bronze_offset", "metric")
LEDGER_ROW = ("sensor_id", "metric", "event_time", "bronze_offset", "kept_offset")


def test_redrive_after_a_rule_fix_moves_exactly_the_now_valid_rows_once(
    spark: SparkSession, settings: Settings, tmp_path: Path
) -> None:
    config = GeneratorConfig(
        sensors=40,
        count=3000,
        rate=10.0,
        seed=5,
        malformed_fraction=0.03,
        invalid_fraction=0.05,
        duplicate_fraction=0.03,
        start_time=datetime(2026, 1, 5, 8, 0, tzinfo=UTC),
    )
    write_generated_bronze(spark, settings, config, parts=2)
    fresh = settings.with_(
        lakehouse_path=str(tmp_path / "fresh" / "lakehouse"),
        dlq_path=str(tmp_path / "fresh" / "dlq"),
    )
    shutil.copytree(settings.bronze_events_path, fresh.bronze_events_path)

    # A too strict rule sends good readings to the DLQ; the rule is then fixed (the default).
    run_silver(spark, settings.with_(silver_rules_file=stricter_rules(tmp_path)))
    listed = json.loads(dlq_list(spark, settings, as_json=True))
    by_reason = {r["reason"]: r["rows"] for r in listed["reasons"]}
    assert by_reason["OUT_OF_RANGE"] > 100 and "MALFORMED_JSON" in by_reason, by_reason
    assert "OUT_OF_RANGE" in dlq_list(spark, settings)
    dlq_before = rows(spark, settings.dlq_rejects_path, *DLQ_ROW)
    ledger_before = rows(spark, settings.silver_duplicates_path, *LEDGER_ROW)
    dlq_version_before = version(spark, settings.dlq_rejects_path)
    ledger_version_before = version(spark, settings.silver_duplicates_path)

    report = redrive(spark, settings)
    assert report.rule_version == load_rules().version
    assert report.judged == len(dlq_before)
    assert 100 < report.redriven < report.judged
    assert report.to_silver > 0
    assert report.to_duplicates > 0, "no redriven reading repeated another: weak test data"

    # Silver, the DLQ and the ledger are what a pipeline with the fixed rule gives.
    run_silver(spark, fresh)
    assert rows(spark, settings.silver_readings_path, *SILVER_CONTENT) == rows(
        spark, fresh.silver_readings_path, *SILVER_CONTENT
    )
    assert rows(spark, settings.dlq_rejects_path, *DLQ_ROW) == rows(
        spark, fresh.dlq_rejects_path, *DLQ_ROW
    )
    assert rows(spark, settings.silver_duplicates_path, *LEDGER_ROW) == rows(
        spark, fresh.silver_duplicates_path, *LEDGER_ROW
    )
    assert bronze_silver_ledger(spark, settings).ok

    # The rows that stay keep their history: one judgement per DLQ row under this rule version.
    history = spark.read.format("delta").load(history_path(settings))
    outcomes = dict(history.groupBy("outcome").count().collect())
    assert outcomes == {REDRIVEN: report.redriven, STILL_REJECTED: report.judged - report.redriven}
    still = history.where(F.col("outcome") == STILL_REJECTED)
    assert still.where(F.col("rejected_under").startswith("stricter-")).count() == still.count()

    # Twice-run changes nothing: not a row, not even a table version.
    paths = [
        settings.silver_readings_path,
        settings.dlq_rejects_path,
        settings.silver_duplicates_path,
        history_path(settings),
    ]
    versions = [version(spark, p) for p in paths]
    again = redrive(spark, settings)
    assert (again.redriven, again.to_silver, again.to_duplicates) == (0, 0, 0)
    assert [version(spark, p) for p in paths] == versions

    # A redrive that stopped after writing silver, before the ledger and leaving the DLQ, is
    # finished by the next one: the ledger rows are written, silver is not written again.
    silver_rows = rows(spark, settings.silver_readings_path, *SILVER_CONTENT)
    ledger_after = rows(spark, settings.silver_duplicates_path, *LEDGER_ROW)
    for path, before in (
        (settings.dlq_rejects_path, dlq_version_before),
        (settings.silver_duplicates_path, ledger_version_before),
    ):
        spark.sql(f"RESTORE TABLE delta.`{path}` TO VERSION AS OF {before}")
    assert rows(spark, settings.dlq_rejects_path, *DLQ_ROW) == dlq_before
    assert rows(spark, settings.silver_duplicates_path, *LEDGER_ROW) == ledger_before
    finish = redrive(spark, settings)
    assert finish.redriven == report.redriven
    assert (finish.to_silver, finish.to_duplicates) == (0, report.to_duplicates)
    assert rows(spark, settings.silver_readings_path, *SILVER_CONTENT) == silver_rows
    assert rows(spark, settings.silver_duplicates_path, *LEDGER_ROW) == ledger_after
    assert rows(spark, settings.dlq_rejects_path, *DLQ_ROW) == rows(
        spark, fresh.dlq_rejects_path, *DLQ_ROW
    )
    assert bronze_silver_ledger(spark, settings).ok


def test_dlq_list_without_a_table_says_so(spark: SparkSession, tmp_path: Path) -> None:
    settings = Settings.from_env({}).with_(dlq_path=str(tmp_path / "dlq"))
    assert "no DLQ table" in dlq_list(spark, settings)
    with pytest.raises(JobError, match=r"no DLQ table at .* run the silver job first"):
        redrive(spark, settings)
