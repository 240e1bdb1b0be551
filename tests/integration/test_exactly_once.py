"""Idempotent appends: each batch of a writer lands once, across restarts and older tables."""

from __future__ import annotations

from pathlib import Path

import pytest
from pyspark.sql import SparkSession
from pyspark.sql.types import LongType, StructField, StructType

from iot_lakehouse.pipeline import exactly_once
from iot_lakehouse.pipeline.exactly_once import append_once
from iot_lakehouse.schemas import create_table_if_missing

APP = "iot-lakehouse-test:0b6f3f7e-query"


def rows(spark: SparkSession, path: str) -> list[int]:
    return sorted(r["id"] for r in spark.read.format("delta").load(path).collect())


def test_a_batch_is_appended_once_in_a_run_and_after_a_restart(
    spark: SparkSession, tmp_path: Path
) -> None:
    path = str(tmp_path / "table")
    assert append_once(spark.range(0, 3), path, APP, 0) is True
    assert append_once(spark.range(0, 3), path, APP, 0) is False  # replayed in this run
    assert append_once(spark.range(3, 5), path, APP, 1) is True
    exactly_once._last_written.clear()  # a new process: it reads the table's commits
    assert append_once(spark.range(3, 5), path, APP, 1) is False
    assert append_once(spark.range(0, 3), path, APP, 0) is False
    assert append_once(spark.range(5, 6), path, "iot-lakehouse-test:other-query", 1) is True
    assert rows(spark, path) == [0, 1, 2, 3, 4, 5]


def test_a_batch_an_older_version_recorded_as_a_delta_transaction_is_not_written_again(
    spark: SparkSession, tmp_path: Path
) -> None:
    path = str(tmp_path / "table")
    (
        spark.range(0, 2)
        .write.format("delta")
        .option("txnAppId", f"{APP}:{path}")
        .option("txnVersion", 4)
        .save(path)
    )
    exactly_once._last_written.clear()
    assert append_once(spark.range(0, 2), path, APP, 4) is False
    assert append_once(spark.range(2, 3), path, APP, 5) is True
    assert rows(spark, path) == [0, 1, 2]


def test_a_failed_append_makes_the_next_one_read_the_commits_again(
    spark: SparkSession, tmp_path: Path
) -> None:
    path = str(tmp_path / "table")
    assert append_once(spark.range(0, 1), path, APP, 0) is True
    with pytest.raises(Exception, match=r"(?i)schema|merge"):
        append_once(spark.range(1, 2).selectExpr("'text' AS id"), path, APP, 1)
    assert (APP, path) not in exactly_once._last_written
    assert append_once(spark.range(1, 2), path, APP, 1) is True
    assert rows(spark, path) == [0, 1]


def test_an_append_in_a_running_query_costs_one_spark_job(
    spark: SparkSession, tmp_path: Path
) -> None:
    """Delta's txnAppId would rebuild the table's state (three more jobs) for every write."""
    path = str(tmp_path / "table")
    for batch in range(3):
        append_once(spark.range(batch, batch + 1), path, APP, batch)
    context = spark.sparkContext
    context.setJobGroup("exactly-once-append", "one append")
    try:
        append_once(spark.range(3, 4), path, APP, 3)
    finally:
        context.setJobGroup("", "")
    assert len(context.statusTracker().getJobIdsForGroup("exactly-once-append")) == 1


def test_a_first_append_to_a_new_table_does_not_rebuild_its_state(
    spark: SparkSession, tmp_path: Path
) -> None:
    """No older version wrote it: Delta's recorded transactions are not read (three jobs)."""
    path = str(tmp_path / "table")
    create_table_if_missing(spark, path, StructType([StructField("id", LongType())]), [])
    exactly_once._last_written.clear()
    context = spark.sparkContext
    context.setJobGroup("exactly-once-first", "first append")
    try:
        assert append_once(spark.range(0, 1), path, APP, 0) is True
    finally:
        context.setJobGroup("", "")
    assert len(context.statusTracker().getJobIdsForGroup("exactly-once-first")) <= 2
