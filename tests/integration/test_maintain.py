"""Table maintenance: the small-file report, OPTIMIZE, VACUUM and the auto-optimize properties."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from deltalake import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.testing import assertDataFrameEqual

from iot_lakehouse.ops.maintain import (
    DELTA_RETENTION_CHECK,
    LakehouseTable,
    MaintainOptions,
    VacuumResult,
    lakehouse_tables,
    maintain,
    properties_to_set,
    recommended_table_properties,
    run_maintain,
    select_tables,
)
from iot_lakehouse.settings import Settings
from tests.support.maintain import APPENDS, DATES, SCHEMA, parse


# --- real Delta tables ---
def data_files_on_disk(path: str) -> set[str]:
    return {
        str(p)
        for p in Path(path).rglob("*.parquet")
        if "_delta_log" not in p.relative_to(path).parts
    }


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
