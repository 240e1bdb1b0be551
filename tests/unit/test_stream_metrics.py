"""stream_metrics: progress events -> rows, latency arithmetic, the table round trip, the
status picture. The listener inside real jobs is exercised by the job tests (test_bronze,
test_silver, test_gold assert on the rows their job processes wrote)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable

from iot_lakehouse.runtime.stream_metrics import (
    STREAM_METRICS,
    Latency,
    append_rows,
    format_stream_picture,
    latency_of,
    latest_per_query,
    progress_row,
    read_stream_metrics,
)
from tests.support.stream_metrics import KAFKA_PROGRESS, STATEFUL_PROGRESS


def test_a_kafka_progress_gives_throughput_lag_and_duration() -> None:
    row = progress_row("bronze", KAFKA_PROGRESS)
    assert row["job"] == "bronze" and row["query"] == "bronze" and row["batch_id"] == 7
    assert row["batch_time"] == datetime(2026, 11, 22, 10, 0, 5, 120_000, tzinfo=UTC)
    assert (row["input_rows"], row["input_rows_per_s"]) == (1500, 300.0)
    assert row["processed_rows_per_s"] == 750.5 and row["batch_duration_ms"] == 1999
    assert (row["kafka_lag_max"], row["kafka_lag_avg"]) == (300, 120.5)
    assert row["delta_versions_behind"] is None and row["watermark"] is None
    assert row["state_rows"] is None and row["rows_dropped_by_watermark"] == 0
    assert row["latency_kind"] is None


def test_a_stateful_progress_gives_watermark_state_and_outstanding_files() -> None:
    latency = Latency("kafka_to_gold", 800.0, 2500.0, 40)
    row = progress_row("alerts", STATEFUL_PROGRESS, latency, {"silver-id": 11, "alerts-id": 3})
    assert row["watermark"] == datetime(2026, 11, 22, 9, 59, 50, tzinfo=UTC)
    assert row["state_rows"] == 17 and row["rows_dropped_by_watermark"] == 3
    assert row["delta_versions_behind"] == 4  # silver 11 - 7, gold/alerts caught up
    unknown_upstream = progress_row("alerts", STATEFUL_PROGRESS, latency, {"other-id": 50})
    assert unknown_upstream["delta_versions_behind"] is None
    snapshot = {  # the first batches of a query read the table as of its start: unknown
        **STATEFUL_PROGRESS,
        "sources": [
            {
                "endOffset": '{"reservoirId": "silver-id", "reservoirVersion": 7, '
                '"index": 3, "isStartingVersion": true}'
            }
        ],
    }
    assert (
        progress_row("alerts", snapshot, None, {"silver-id": 11})["delta_versions_behind"] is None
    )
    assert row["kafka_lag_max"] is None
    assert (row["latency_kind"], row["latency_p50_ms"], row["latency_p95_ms"]) == (
        "kafka_to_gold",
        800.0,
        2500.0,
    )
    assert set(row) == set(STREAM_METRICS.names)


def test_latency_is_the_commit_time_minus_the_kafka_time_quantiles() -> None:
    commit = 10_000_000
    # 95 % of readings arrived at or after 7.5 s, half at or after 9 s -> p95 2.5 s, p50 1 s.
    latency = latency_of("kafka_to_silver", commit, 7_500_000, 9_000_000, 100)
    assert (latency.p50_ms, latency.p95_ms, latency.rows) == (1000.0, 2500.0, 100)
    assert latency_of("kafka_to_silver", commit, None, None, 0).p50_ms is None


def test_rows_round_trip_through_delta_and_the_newest_per_query_is_shown(tmp_path: Path) -> None:
    path = str(tmp_path / "_ops" / "stream_metrics")
    assert read_stream_metrics(path) == []
    first = progress_row("bronze", KAFKA_PROGRESS)
    later = progress_row("bronze", {**KAFKA_PROGRESS, "batchId": 8})
    later["recorded_at"] = first["recorded_at"] + timedelta(seconds=5)
    stateful = progress_row(
        "alerts",
        STATEFUL_PROGRESS,
        Latency("kafka_to_gold", 1.0, 2.0, 3),
        {"silver-id": 11, "alerts-id": 3},
    )
    append_rows(None, path, [first])
    append_rows(None, path, [stateful, later])
    assert DeltaTable(path).version() == 1  # two appends, readable by any Delta reader

    rows = read_stream_metrics(path)
    assert [r["batch_id"] for r in rows] == [7, 3, 8]
    newest = latest_per_query(rows)
    assert [(r["job"], r["batch_id"]) for r in newest] == [("bronze", 8), ("alerts", 3)]
    since = read_stream_metrics(path, later["recorded_at"])
    assert [r["batch_id"] for r in since] == [8]

    now = later["recorded_at"] + timedelta(seconds=10)
    picture = format_stream_picture(newest, now)
    bronze_line = next(line for line in picture if line.startswith("bronze "))
    assert bronze_line.split()[:7] == ["bronze", "8", "10", "300.0", "750.5", "1999", "300"]
    alerts_line = next(line for line in picture if line.startswith("alerts_stateful"))
    assert alerts_line.split()[6:10] == ["4", "17", "1", "2"]
    assert "2026-11-22T09:59:50Z" in alerts_line


def test_no_metrics_yet_says_how_to_get_some() -> None:
    assert "./start_all.sh" in format_stream_picture([], datetime.now(UTC))[0]


def test_a_malformed_progress_is_an_error_not_a_silent_row() -> None:
    with pytest.raises(ValueError):
        progress_row("silver", {**KAFKA_PROGRESS, "batchId": "x"})


def test_a_table_of_an_older_version_gains_the_new_columns(tmp_path: Path) -> None:
    from deltalake import write_deltalake

    path = str(tmp_path / "stream_metrics")
    old_row = progress_row("bronze", KAFKA_PROGRESS)
    older = STREAM_METRICS.remove(STREAM_METRICS.get_field_index("delta_versions_behind"))
    write_deltalake(path, pa.Table.from_pylist([old_row], schema=older))
    new_row = progress_row("silver", STATEFUL_PROGRESS, None, {"silver-id": 9})
    append_rows(None, path, [new_row])
    rows = read_stream_metrics(path)
    assert [(r["job"], r["delta_versions_behind"]) for r in rows] == [
        ("bronze", None),
        ("silver", 2),
    ]
