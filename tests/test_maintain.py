"""Table maintenance: the small-file report, OPTIMIZE, VACUUM and the auto-optimize properties."""

from __future__ import annotations

import argparse
import json
from datetime import date
from pathlib import Path

import pytest
from deltalake import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.testing import assertDataFrameEqual

from iot_lakehouse.errors import ConfigError
from iot_lakehouse.ops.maintain import (
    DELTA_RETENTION_CHECK,
    MIB,
    SHORT_RETENTION_FLAG,
    DataFile,
    LakehouseTable,
    MaintainOptions,
    MaintenanceRules,
    TableOutcome,
    VacuumResult,
    add_maintain_arguments,
    build_report,
    check_retention,
    format_outcomes,
    lakehouse_tables,
    maintain,
    missing_report,
    options_from_args,
    properties_to_set,
    recommended_table_properties,
    run_maintain,
    select_tables,
    vacuum_result,
)
from iot_lakehouse.settings import Settings

TABLE = LakehouseTable("bronze/sensor_events", "/lake/bronze/sensor_events")
APPENDS = 20
DATES = (date(2026, 1, 5), date(2026, 1, 6))
SCHEMA = "sensor_id string, value double, event_date date"


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_maintain_arguments(parser)
    return parser.parse_args(list(argv))


# --- pure: report rows and decisions ---
def test_report_row_from_file_sizes() -> None:
    rules = MaintenanceRules(small_file_bytes=8 * MIB, min_small_files_per_partition=2)
    files = [
        DataFile(1 * MIB, ("2026-01-05",)),
        DataFile(2 * MIB, ("2026-01-05",)),
        DataFile(100 * MIB, ("2026-01-05",)),
        DataFile(3 * MIB, ("2026-01-06",)),  # one small file alone: nothing to compact
        DataFile(8 * MIB, ("2026-01-07",)),  # exactly the threshold is not small
        DataFile(0, (None,)),  # null partition value, empty file
    ]
    report = build_report(TABLE, files, version=7, partition_columns=["ingest_date"], rules=rules)
    assert (report.exists, report.version, report.files) == (True, 7, 6)
    assert report.total_bytes == 114 * MIB
    assert report.avg_file_bytes == 114 * MIB // 6
    assert report.small_files == 4
    assert report.partitions == 4
    assert report.compactable_partitions == 1
    assert report.needs_optimize and report.status == "compaction advised"
    assert report.missing_properties == tuple(sorted(recommended_table_properties()))


def test_report_row_of_unpartitioned_empty_and_missing_tables() -> None:
    properties = recommended_table_properties()
    compact = build_report(TABLE, [DataFile(100), DataFile(200)], 3, properties=properties)
    assert (compact.partitions, compact.small_files, compact.compactable_partitions) == (1, 2, 1)
    single = build_report(TABLE, [DataFile(100)], 1, properties=properties)
    assert not single.needs_optimize and single.status == "ok"
    assert single.missing_properties == ()
    empty = build_report(TABLE, [], 0)
    assert (empty.files, empty.avg_file_bytes, empty.partitions, empty.status) == (0, 0, 0, "ok")
    missing = missing_report(TABLE)
    assert not missing.exists and missing.status == "missing" and missing.version is None


def test_properties_to_set_only_lists_what_differs() -> None:
    wanted = recommended_table_properties()
    assert wanted == {  # no optimized write or auto compaction inside streaming batches
        "delta.autoOptimize.optimizeWrite": "false",
        "delta.autoOptimize.autoCompact": "false",
    }
    assert properties_to_set({}) == wanted
    assert properties_to_set({k: "FALSE" for k in wanted}) == {}
    assert properties_to_set({"delta.autoOptimize.autoCompact": "false"}) == {
        "delta.autoOptimize.optimizeWrite": "false"
    }


def test_short_retention_is_refused_without_the_flag() -> None:
    check_retention(168)
    check_retention(500)
    with pytest.raises(ConfigError) as refused:
        check_retention(24)
    message = str(refused.value)
    for part in ("168", "streaming", "checkpoint", "time travel", SHORT_RETENTION_FLAG):
        assert part in message
    check_retention(0, allow_short=True)
    with pytest.raises(ConfigError, match="negative"):
        check_retention(-1, allow_short=True)


def test_vacuum_result_comes_from_the_logged_commits() -> None:
    end = {
        "operation": "VACUUM END",
        "operationParameters": {"status": "COMPLETED"},
        "operationMetrics": {"numDeletedFiles": "40", "numVacuumedDirectories": "3"},
    }
    start = {
        "operation": "VACUUM START",
        "operationParameters": {"defaultRetentionMillis": 604800000, "specifiedRetentionMillis": 0},
        "operationMetrics": {"numFilesToDelete": "40", "sizeOfDataToDelete": "26520"},
    }
    assert vacuum_result(0, [end, start]) == VacuumResult(0, 0.0, 40, 26520)
    # no retention given to Delta (or ignored by it): the table's own was used
    start["operationParameters"] = {"defaultRetentionMillis": 604800000}
    assert vacuum_result(24, [end, start]).effective_retention_hours == 168
    assert vacuum_result(168, []) == VacuumResult(168, None, None, None)


def test_every_lakehouse_table_is_listed_and_selectable(tmp_path: Path) -> None:
    settings = Settings.from_env({}).with_(
        lakehouse_path=str(tmp_path / "lake"), dlq_path=str(tmp_path / "dlq")
    )
    tables = lakehouse_tables(settings)
    names = [t.name for t in tables]
    assert names == [
        "bronze/sensor_events",
        "silver/readings",
        "gold/sensor_metrics_5m",
        "gold/sensor_metrics_10m_sliding",
        "gold/location_metrics_5m",
        "gold/sensor_metrics_1h",
        "gold/sensor_metrics_1d",
        "gold/location_metrics_1h",
        "gold/location_metrics_1d",
        "gold/alert_counts_5m",
        "gold/alerts",
        "dlq/silver_rejects",
        "dlq/redrive_history",
        "_ops/silver_duplicates",
        "_ops/quality",
        "_ops/gold_late_readings",
        "_ops/gold_progress",
        "_ops/alerts_clock",
        "_ops/stream_metrics",
    ]
    assert dict((t.name, t.path) for t in tables)["dlq/silver_rejects"] == str(
        tmp_path / "dlq" / "silver_rejects"
    )
    chosen = select_tables(tables, ["readings", "bronze/sensor_events"])
    assert [t.name for t in chosen] == ["bronze/sensor_events", "silver/readings"]
    with pytest.raises(ConfigError, match="not a lakehouse table"):
        select_tables(tables, ["nope"])
    ops = select_tables(tables, ["_ops/"])  # a folder: every table in it (`all` compacts these)
    assert [t.name for t in ops] == [n for n in names if n.startswith("_ops/")]
    with pytest.raises(ConfigError, match="not a lakehouse table"):
        select_tables(tables, ["nope/"])


def test_options_are_checked_before_anything_starts(tmp_path: Path) -> None:
    settings = Settings.from_env({}).with_(lakehouse_path=str(tmp_path / "lake"))
    with pytest.raises(ConfigError, match=SHORT_RETENTION_FLAG):
        run_maintain(settings, parse("--retention-hours", "1"))
    with pytest.raises(ConfigError, match="exactly one --table"):
        run_maintain(settings, parse("--where", "event_date > '2026-01-01'"))
    options = options_from_args(
        parse("--retention-hours", "0", SHORT_RETENTION_FLAG, "--small-file-mb", "0.5")
    )
    assert (options.retention_hours, options.allow_short_retention) == (0.0, True)
    assert options.rules.small_file_bytes == MIB // 2
    assert not (tmp_path / "lake").exists()


def test_text_output_names_every_table() -> None:
    report = build_report(TABLE, [DataFile(10)] * 3, 2)
    text = format_outcomes(
        [
            TableOutcome(report),
            TableOutcome(missing_report(LakehouseTable("silver/readings", "x"))),
        ],
        MaintainOptions(report_only=True),
    )
    assert "bronze/sensor_events" in text and "compaction advised" in text
    assert "silver/readings" in text and "missing" in text


# --- real Delta tables ---
def data_files_on_disk(path: str) -> set[str]:
    return {
        str(p)
        for p in Path(path).rglob("*.parquet")
        if "_delta_log" not in p.relative_to(path).parts
    }


@pytest.fixture(scope="module")
def lake(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings whose bronze table has many small files: 20 appends x 2 partitions."""
    root = tmp_path_factory.mktemp("maintain")
    settings = Settings.from_env({}).with_(
        lakehouse_path=str(root / "lakehouse"), dlq_path=str(root / "dlq")
    )
    for i in range(APPENDS):
        rows = [(f"s{i}", float(i) + 0.5, DATES[0]), (f"s{i}", None, DATES[1])]
        spark.createDataFrame(rows, SCHEMA).coalesce(1).write.format("delta").mode(
            "append"
        ).partitionBy("event_date").save(settings.bronze_events_path)
    return settings


def expected_rows(spark: SparkSession) -> DataFrame:
    rows = [(f"s{i}", float(i) + 0.5, DATES[0]) for i in range(APPENDS)]
    rows += [(f"s{i}", None, DATES[1]) for i in range(APPENDS)]
    return spark.createDataFrame(rows, SCHEMA)


def by_key(row: tuple[object, ...]) -> tuple[str, str]:
    return str(row[0]), str(row[2])


def deltalake_rows(path: str) -> list[tuple[object, ...]]:
    table = DeltaTable(path).to_pyarrow_table(columns=["sensor_id", "value", "event_date"])
    rows = [(r["sensor_id"], r["value"], r["event_date"]) for r in table.to_pylist()]
    return sorted(rows, key=by_key)


def test_report_only_changes_nothing(lake: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    path = lake.bronze_events_path
    log_before = sorted(p.name for p in (Path(path) / "_delta_log").iterdir())
    version = DeltaTable(path).version()

    assert run_maintain(lake, parse("--report-only", "--json")) == 0

    out = json.loads(capsys.readouterr().out)
    rows = {t["table"]: t for t in out["tables"]}
    assert len(rows) == len(lakehouse_tables(lake))
    bronze = rows.pop("bronze/sensor_events")
    assert all(t["before"]["status"] == "missing" for t in rows.values())
    table = DeltaTable(path)
    actions = table.get_add_actions(flatten=True)
    sizes = actions.column("size_bytes").to_pylist()
    report = bronze["before"]
    assert report["files"] == len(table.file_uris()) == len(sizes) == 2 * APPENDS
    assert report["total_bytes"] == sum(sizes)
    assert report["small_files"] == len(sizes)
    assert (report["partitions"], report["partition_columns"]) == (2, ["event_date"])
    assert report["needs_optimize"] and report["version"] == version
    assert bronze["after"] is None and bronze["optimize"] is None and bronze["vacuum"] is None
    # nothing changed: same version, same log, no properties
    assert DeltaTable(path).version() == version
    assert sorted(p.name for p in (Path(path) / "_delta_log").iterdir()) == log_before
    assert properties_to_set(DeltaTable(path).metadata().configuration)


def test_optimize_then_vacuum_default_and_short_retention(
    spark: SparkSession, lake: Settings
) -> None:
    path = lake.bronze_events_path
    bronze = select_tables(lakehouse_tables(lake), ["bronze/sensor_events"])
    original_files = data_files_on_disk(path)
    assert len(original_files) == 2 * APPENDS
    check_before = spark.conf.get(DELTA_RETENTION_CHECK, None)

    # default: properties, OPTIMIZE (~1 file per partition), VACUUM 168 h deletes nothing
    [done] = maintain(spark, bronze, MaintainOptions())
    assert done.error is None and done.after is not None and done.optimize is not None
    assert done.properties_set == recommended_table_properties()
    assert DeltaTable(path).metadata().configuration.items() >= (
        recommended_table_properties().items()
    )
    assert (done.before.files, done.after.files, done.after.partitions) == (2 * APPENDS, 2, 2)
    assert (done.optimize.files_removed, done.optimize.files_added) == (2 * APPENDS, 2)
    assert not done.after.needs_optimize and done.after.missing_properties == ()
    assert done.vacuum == VacuumResult(168, 168, 0, 0)
    assert original_files <= data_files_on_disk(path)  # the compacted-away files are still there
    assertDataFrameEqual(spark.read.format("delta").load(path), expected_rows(spark))

    # a second run has nothing to compact and sets nothing; Delta keeps the retention given
    [again] = maintain(spark, bronze, MaintainOptions(retention_hours=200))
    assert (again.optimize, again.properties_set, again.error) == (None, {}, None)
    assert again.vacuum == VacuumResult(200, 200, 0, 0)

    # retention 0 with the explicit flag: the replaced files are gone, the table reads the same
    [short] = maintain(
        spark, bronze, MaintainOptions(retention_hours=0, allow_short_retention=True)
    )
    assert short.error is None and short.vacuum is not None
    assert (short.vacuum.effective_retention_hours, short.vacuum.files_deleted) == (0, 2 * APPENDS)
    current = {str(Path(p)) for p in DeltaTable(path).file_uris()}
    assert data_files_on_disk(path) == current and len(current) == 2
    assertDataFrameEqual(spark.read.format("delta").load(path), expected_rows(spark))
    expected = [(r.sensor_id, r.value, r.event_date) for r in expected_rows(spark).collect()]
    assert deltalake_rows(path) == sorted(expected, key=by_key)
    assert spark.conf.get(DELTA_RETENTION_CHECK, None) == check_before  # restored


def test_vacuum_only_removes_what_merges_replaced_and_nothing_else(
    spark: SparkSession, tmp_path: Path
) -> None:
    from delta.tables import DeltaTable as DeltaTableJvm

    path = str(tmp_path / "gold")
    rows = [(f"s{i}", float(i), DATES[0]) for i in range(20)]
    for i in range(4):  # 4 small files, then MERGEs that each replace one of them
        spark.createDataFrame(rows[i * 5 : i * 5 + 5], SCHEMA).coalesce(1).write.format(
            "delta"
        ).mode("append").save(path)
    for i in range(3):
        update = spark.createDataFrame([(f"s{i * 5}", 100.0 + i, DATES[0])], SCHEMA)
        DeltaTableJvm.forPath(spark, path).alias("t").merge(
            update.alias("u"), "t.sensor_id = u.sensor_id"
        ).whenMatchedUpdateAll().execute()
    table = LakehouseTable("gold/test", path)
    on_disk = data_files_on_disk(path)
    [done] = maintain(
        spark,
        [table],
        MaintainOptions(vacuum_only=True, retention_hours=0, allow_short_retention=True),
    )
    assert done.error is None and done.optimize is None and done.properties_set == {}
    assert done.before.needs_optimize, "OPTIMIZE would have had work: vacuum-only skipped it"
    assert done.vacuum is not None and done.vacuum.files_deleted == 3
    current = {str(Path(p)) for p in DeltaTable(path).file_uris()}
    assert data_files_on_disk(path) == current and len(on_disk) == len(current) + 3
    assert not any(c.get("operation") == "OPTIMIZE" for c in DeltaTable(path).history(10))
    values = sorted(r.value for r in spark.read.format("delta").load(path).collect())
    assert values[-3:] == [100.0, 101.0, 102.0] and len(values) == 20
