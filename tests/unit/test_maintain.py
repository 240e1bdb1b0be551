"""Table maintenance: the small-file report, OPTIMIZE, VACUUM and the auto-optimize properties."""

from __future__ import annotations

from pathlib import Path

import pytest

from iot_lakehouse.errors import ConfigError
from iot_lakehouse.ops.maintain import (
    MIB,
    SHORT_RETENTION_FLAG,
    DataFile,
    LakehouseTable,
    MaintainOptions,
    MaintenanceRules,
    TableOutcome,
    VacuumResult,
    build_report,
    check_retention,
    format_outcomes,
    lakehouse_tables,
    missing_report,
    options_from_args,
    properties_to_set,
    recommended_table_properties,
    run_maintain,
    select_tables,
    vacuum_result,
)
from iot_lakehouse.settings import Settings
from tests.support.maintain import parse

TABLE = LakehouseTable("bronze/sensor_events", "/lake/bronze/sensor_events")


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
    with pytest.raises(ConfigError, match="whole number of hours"):  # Delta would keep 1 h
        check_retention(0.5, allow_short=True)
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
