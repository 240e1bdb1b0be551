"""Tables are created with their properties: no compaction inside batches, statistics where
they pay."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest
from delta.tables import DeltaTable as DeltaTableJvm
from deltalake import DeltaTable
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import LongType, StringType, StructField, StructType, TimestampType

from iot_lakehouse import schemas
from iot_lakehouse.ops.maintain import properties_to_set
from iot_lakehouse.pipeline.gold import WINDOW_TABLES, create_gold_tables
from iot_lakehouse.schemas import (
    CHANGE_FEED,
    COLUMN_COMMENTS,
    DLQ_REJECTS,
    DLQ_STATS_COLUMNS,
    SILVER_DUPLICATES,
    create_table_if_missing,
    discard_unfinished_creation,
)
from iot_lakehouse.settings import Settings


def test_a_new_table_gets_its_properties_and_maintain_finds_nothing_to_set(
    spark: SparkSession, tmp_path: Path
) -> None:
    dlq, ledger = str(tmp_path / "dlq"), str(tmp_path / "dups")
    create_table_if_missing(spark, dlq, DLQ_REJECTS, ["rejected_date"], DLQ_STATS_COLUMNS)
    create_table_if_missing(spark, ledger, SILVER_DUPLICATES, [])
    dlq_conf = DeltaTable(dlq).metadata().configuration
    assert dlq_conf["delta.dataSkippingStatsColumns"] == ",".join(DLQ_STATS_COLUMNS)
    assert dlq_conf["delta.autoOptimize.autoCompact"] == "false"
    assert "delta.dataSkippingStatsColumns" not in DeltaTable(ledger).metadata().configuration
    assert properties_to_set(dlq_conf) == {}
    assert properties_to_set(DeltaTable(ledger).metadata().configuration) == {}
    # every column carries its comment, as DESCRIBE shows it
    described = {
        row["col_name"]: row["comment"]
        for row in spark.sql(f"DESCRIBE TABLE delta.`{dlq}`").collect()
        if row["col_name"] and not row["col_name"].startswith("#")
    }
    assert {name: described[name] for name in DLQ_REJECTS.names} == {
        name: COLUMN_COMMENTS[name] for name in DLQ_REJECTS.names
    }
    # a second call on the existing table changes nothing
    version = DeltaTable(dlq).version()
    create_table_if_missing(spark, dlq, DLQ_REJECTS, ["rejected_date"], DLQ_STATS_COLUMNS)
    assert DeltaTable(dlq).version() == version


def test_a_creation_that_never_committed_does_not_block_the_next_one(
    spark: SparkSession, tmp_path: Path
) -> None:
    # What a full disk leaves when it stops the first commit: empty hidden temporary files
    # and an empty folder
    log = tmp_path / "dlq" / "_delta_log"
    (log / "_staged_commits").mkdir(parents=True)
    (log / ".00000000000000000000.json.5e1c.tmp").write_bytes(b"")
    (log / "..00000000000000000000.json.5e1c.tmp.crc").write_bytes(b"")
    create_table_if_missing(spark, str(tmp_path / "dlq"), DLQ_REJECTS, ["rejected_date"])
    assert DeltaTable(str(tmp_path / "dlq")).version() == 0
    assert [f.name for f in DeltaTable(str(tmp_path / "dlq")).schema().fields] == DLQ_REJECTS.names
    # a table with commits is never touched
    assert discard_unfinished_creation(str(tmp_path / "dlq")) is False
    assert DeltaTable(str(tmp_path / "dlq")).version() == 0


def test_gold_tables_keep_a_change_data_feed_also_when_an_older_version_made_them(
    spark: SparkSession, tmp_path: Path
) -> None:
    settings = Settings.from_env({}).with_(lakehouse_path=str(tmp_path / "lake"))
    create_gold_tables(spark, settings)
    for table in WINDOW_TABLES:
        configuration = DeltaTable(settings.gold_path(table.name)).metadata().configuration
        assert configuration.get("delta.enableChangeDataFeed") == "true", table.name

    # A table an older version made without the feed gets it at the next start.
    path = str(tmp_path / "older")
    schema = StructType([StructField("id", LongType()), StructField("v", StringType())])
    create_table_if_missing(spark, path, schema, [])
    assert "delta.enableChangeDataFeed" not in DeltaTable(path).metadata().configuration
    create_table_if_missing(spark, path, schema, [], properties=CHANGE_FEED)
    assert DeltaTable(path).metadata().configuration["delta.enableChangeDataFeed"] == "true"
    since = DeltaTable(path).version() + 1
    spark.createDataFrame([(1, "a"), (2, "b")], schema).write.format("delta").mode("append").save(
        path
    )
    DeltaTableJvm.forPath(spark, path).update(F.col("id") == 2, {"v": F.lit("c")})
    changes = (
        spark.read.format("delta")
        .option("readChangeFeed", "true")
        .option("startingVersion", since)
        .load(path)
        .select("id", "v", "_change_type")
        .collect()
    )
    assert sorted(tuple(r) for r in changes) == [
        (1, "a", "insert"),
        (2, "b", "insert"),
        (2, "b", "update_preimage"),
        (2, "c", "update_postimage"),
    ]


def test_window_tables_are_partitioned_by_the_period_their_windows_start_in(
    spark: SparkSession, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings.from_env({}).with_(lakehouse_path=str(tmp_path / "lake"))
    create_gold_tables(spark, settings)
    for table in WINDOW_TABLES:
        partitions = DeltaTable(settings.gold_path(table.name)).metadata().partition_columns
        assert partitions == (["window_hour"] if table.window_seconds < 3600 else ["window_date"])

    # Delta computes the partition from window_start, and a filter on window_start prunes it.
    schema = StructType(
        [StructField("window_start", TimestampType()), StructField("v", LongType())]
    )
    hourly = [schemas.WINDOW_HOUR]
    path = str(tmp_path / "hourly")
    create_table_if_missing(spark, path, schema, ["window_hour"], generated=hourly)
    start = datetime(2026, 1, 1, 10, 55, tzinfo=UTC)
    rows = spark.createDataFrame([(start + timedelta(minutes=5 * i), i) for i in range(3)], schema)
    rows.write.format("delta").mode("append").save(path)
    files = pa.table(DeltaTable(path).get_add_actions(flatten=True)).to_pylist()
    assert sorted(str(f["partition.window_hour"])[:13] for f in files) == [
        "2026-01-01 10",
        "2026-01-01 11",
    ]
    plan = (
        spark.read.format("delta")
        .load(path)
        .where(F.col("window_start") >= F.lit(start + timedelta(minutes=5)))
        ._jdf.queryExecution()
        .executedPlan()
        .toString()
    )
    assert "window_hour" in plan.split("PartitionFilters:")[1].split("]")[0], plan

    # A table an older version made unpartitioned keeps its layout and rows (Delta cannot
    # repartition in place), with a warning that says how to rebuild it.
    older = str(tmp_path / "older")
    create_table_if_missing(spark, older, schema, [])
    rows.write.format("delta").mode("append").save(older)
    with caplog.at_level(logging.WARNING, logger="iot_lakehouse.schemas"):
        create_table_if_missing(spark, older, schema, ["window_hour"], generated=hourly)
    assert DeltaTable(older).metadata().partition_columns == []
    assert DeltaTable(older).to_pyarrow_table().num_rows == 3
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and older in warnings[0] and "rerun" in warnings[0], warnings


def test_a_column_added_to_an_older_table_gets_its_comment(
    spark: SparkSession, tmp_path: Path
) -> None:
    path = str(tmp_path / "ledger")
    old = StructType([f for f in SILVER_DUPLICATES if f.name != "detected_at"])
    spark.createDataFrame([], old).write.format("delta").save(path)
    create_table_if_missing(spark, path, SILVER_DUPLICATES, [])
    field = next(f for f in DeltaTable(path).schema().fields if f.name == "detected_at")
    assert field.metadata["comment"] == COLUMN_COMMENTS["detected_at"]
