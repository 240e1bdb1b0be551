"""silver -> gold: equal to a batch recomputation; watermark, late data, replay, SIGKILL."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from delta.tables import DeltaTable as SparkDeltaTable
from deltalake import DeltaTable
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from iot_lakehouse.ops.reconcile import silver_gold_ledger
from iot_lakehouse.pipeline.gold import (
    GOLD_TABLES,
    ROLLUPS,
    GoldBatchWriter,
    create_gold_tables,
    split_late,
    start_gold_stream,
    with_lateness,
)
from iot_lakehouse.pipeline.windows import (
    QUANTILES,
    GoldTable,
    batch_scalars,
    percentile_rank_error,
    with_window,
)
from iot_lakehouse.settings import PROJECT_ROOT, Settings
from iot_lakehouse.sources.generator import GeneratorConfig
from tests.support.gold import READINGS, START, at, build_silver, gold_settings, reading, us

TABLES = {t.name: t for t in GOLD_TABLES}
STATE_COLUMNS = ("value_sketch", "sensor_sketch", "m2")


def rows_of(spark: SparkSession, path: str) -> list[dict[str, object]]:
    df = spark.read.format("delta").load(path)
    return sorted(
        (r.asDict() for r in df.drop(*[c for c in STATE_COLUMNS if c in df.columns]).collect()),
        key=repr,
    )


def gold_row(spark: SparkSession, settings: Settings, table: str, where: Column) -> dict:
    rows = spark.read.format("delta").load(settings.gold_path(table)).where(where).collect()
    assert len(rows) == 1, rows
    return rows[0].asDict()


def test_split_late_keeps_every_reading(spark: SparkSession) -> None:
    rows = [reading("s1", w, 1.0, i) for i, w in enumerate([at(-1), at(0), at(1)])]
    rows.append(("s1", "temperature", 1.0, "°C", None, None, None, None, "t", 0, 9))
    df = spark.createDataFrame(rows, READINGS)
    judged = with_lateness(df, batch_scalars(spark, _batch_id=4, _watermark_us=us(at(0))))
    on_time, late = split_late(judged)
    assert sorted(r.bronze_offset for r in on_time.collect()) == [1, 2]
    assert sorted(r.bronze_offset for r in late.collect()) == [0, 9]  # before it, or no time
    assert {(r._batch_id, r._watermark) for r in late.collect()} == {
        (4, at(0).replace(tzinfo=None))
    }
    # no watermark yet: only a missing time is late
    on_time, late = split_late(
        with_lateness(df, batch_scalars(spark, _batch_id=0, _watermark_us=None))
    )
    assert (on_time.count(), late.count()) == (3, 1)


def test_sliding_windows_give_each_reading_two_rows(spark: SparkSession) -> None:
    df = spark.createDataFrame([reading("s1", at(12), 1.0, 0)], READINGS)
    windows = with_window(df, TABLES["sensor_metrics_10m_sliding"]).collect()
    assert sorted((r.window_start, r.window_end) for r in windows) == [
        (at(5).replace(tzinfo=None), at(15).replace(tzinfo=None)),
        (at(10).replace(tzinfo=None), at(20).replace(tzinfo=None)),
    ]


def test_out_of_order_updates_its_window_late_data_is_kept_aside_and_replay_changes_nothing(
    spark: SparkSession, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="iot_lakehouse.pipeline.gold")
    create_gold_tables(spark, settings)
    writer = GoldBatchWriter(spark, settings)
    batches = [
        [
            reading("s1", at(0, 10), 20.0, 0),
            reading("s1", at(1), 22.0, 1),
            reading("s1", at(3), 31.0, 2, alert="HIGH_TEMP"),
            reading("s1", at(21), 25.0, 3),  # watermark after this batch: 08:11
            reading("s2", at(2), 18.0, 4, location=None),
        ],
        [
            reading("s1", at(12), 24.0, 10),  # out of order, within the watermark
            reading("s1", at(4), 100.0, 11),  # before the watermark: late
            reading("s2", at(12, 40), 19.0, 12, location=None),
        ],
        [
            reading("s1", at(13), 26.0, 20),
            reading("s2", at(13, 30), 21.0, 21, location=None),
        ],
    ]
    counts = [
        writer.write_batch(spark.createDataFrame(rows, READINGS), batch_id)
        for batch_id, rows in enumerate(batches)
    ]
    assert counts == [
        {"readings": 5, "late": 0},
        {"readings": 3, "late": 1},
        {"readings": 2, "late": 0},
    ]
    # Each batch's log line names the wall seconds of the steps it ran: the late append only
    # with late readings, the rollups only when windows became final (the first batch).
    steps = [
        sorted(k for k, v in r.args[0].context.items() if k.endswith("_s") and v >= 0)
        for r in caplog.records
        if r.getMessage().startswith("gold batch")
    ]
    assert steps == [
        ["merges_s", "progress_s", "rollups_s", "split_s"],
        ["late_s", "merges_s", "progress_s", "split_s"],
        ["merges_s", "progress_s", "split_s"],
    ], steps
    s1 = F.col("sensor_id") == "s1"
    final = gold_row(spark, settings, "sensor_metrics_5m", s1 & (F.col("window_start") == at(0)))
    assert (final["count"], final["max"], final["is_final"], final["batch_id"]) == (
        3,
        31.0,
        True,
        0,
    )
    fresh = gold_row(spark, settings, "sensor_metrics_5m", s1 & (F.col("window_start") == at(10)))
    assert (fresh["count"], fresh["avg"], fresh["min"], fresh["max"]) == (2, 25.0, 24.0, 26.0)
    assert fresh["stddev"] == pytest.approx(2**0.5)
    assert (fresh["p50"], fresh["p99"], fresh["is_final"], fresh["batch_id"]) == (
        24.0,
        26.0,
        False,
        2,
    )
    sliding = gold_row(
        spark, settings, "sensor_metrics_10m_sliding", s1 & (F.col("window_start") == at(5))
    )
    assert sliding["count"] == 2  # 08:12 and 08:13 fall in [08:05, 08:15) and [08:10, 08:20)
    no_location = gold_row(
        spark,
        settings,
        "location_metrics_5m",
        F.col("location").isNull() & (F.col("window_start") == at(10)),
    )
    assert (no_location["count"], no_location["avg"], no_location["active_sensors"]) == (2, 20.0, 1)
    late = spark.read.format("delta").load(settings.gold_late_readings_path).collect()
    assert [(r.bronze_offset, r.lateness_seconds, r.batch_id) for r in late] == [(11, 420.0, 1)]

    paths = [settings.gold_path(t.name) for t in GOLD_TABLES]
    paths += [settings.gold_late_readings_path, settings.gold_progress_path]
    before = [rows_of(spark, p) for p in paths]
    restarted = GoldBatchWriter(spark, settings)  # a new process: watermark from the log
    for batch_id in (1, 2):
        restarted.write_batch(spark.createDataFrame(batches[batch_id], READINGS), batch_id)
    assert [rows_of(spark, p) for p in paths] == before


def with_low_alert_thresholds(settings: Settings, tmp_path: Path) -> Settings:
    """The packaged rules with static alerts that ordinary generated readings cross."""
    rules = (PROJECT_ROOT / "src/iot_lakehouse/rules/silver_rules.yml").read_text()
    rules = rules.replace("metric: temperature, above: 30", "metric: temperature, above: 24")
    rules = rules.replace("metric: humidity,    above: 80", "metric: humidity,    above: 60")
    path = tmp_path / "rules.yml"
    path.write_text(rules)
    return settings.with_(silver_rules_file=path)


def on_time_silver(spark: SparkSession, settings: Settings) -> DataFrame:
    """Silver minus the readings the gold job set aside as late."""
    silver = spark.read.format("delta").load(settings.silver_readings_path)
    late = spark.read.format("delta").load(settings.gold_late_readings_path)
    coords = ["bronze_topic", "bronze_partition", "bronze_offset", "metric"]
    return silver.join(late.select(*coords), coords, "left_anti")


def recomputed(readings: DataFrame, table: GoldTable, *measures: Column) -> DataFrame:
    return (
        with_window(readings, table)
        .groupBy("window_start", "window_end", *table.keys)
        .agg(*measures)
    )


def assert_measures_equal(gold: DataFrame, reference: DataFrame, table: GoldTable) -> None:
    """Every reference row has a gold row and every measure matches (floats to 1e-9)."""
    keys = ["window_start", "window_end", *table.keys]
    measures = [c for c in reference.columns if c not in keys]
    joined = reference.alias("r").join(gold.alias("g"), keys, "full")
    mismatches = F.lit(False)
    for name in measures:
        r, g = F.col(f"r.{name}"), F.col(f"g.{name}")
        if dict(reference.dtypes)[name] == "double":
            differs = F.abs(r - g) > F.greatest(F.abs(r), F.lit(1.0)) * 1e-9
            mismatches = mismatches | F.coalesce(differs, ~(r.isNull() & g.isNull()))
        else:
            mismatches = mismatches | ~r.eqNullSafe(g)
    assert reference.count() > 0
    bad = joined.where(mismatches).limit(5).collect()
    assert not bad, f"{table.name}: {bad}"


def rank_errors(readings: DataFrame, gold: DataFrame, table: GoldTable) -> DataFrame:
    """Per gold row and quantile: how far the true rank of the reported value is from the
    rank asked for (0 when it is the exact quantile), and the row's count."""
    keys = ["window_start", "window_end", *table.keys]
    values = with_window(readings, table).select(*keys, "value")
    rows = []
    for name, rank in QUANTILES.items():
        per_row = (
            values.join(gold.select(*keys, "count", F.col(name).alias("q")), keys)
            .groupBy(*keys, "count")
            .agg(
                F.avg((F.col("value") < F.col("q")).cast("double")).alias("below"),
                F.avg((F.col("value") <= F.col("q")).cast("double")).alias("at_or_below"),
            )
            .select(
                "count",
                F.greatest(
                    F.col("below") - rank, F.lit(rank) - F.col("at_or_below"), F.lit(0.0)
                ).alias("error"),
            )
        )
        rows.append(per_row)
    result = rows[0]
    for other in rows[1:]:
        result = result.unionByName(other)
    return result


def sensor_measures() -> list[Column]:
    """A per-sensor gold table's measures, recomputed from readings."""
    value = F.col("value")
    return [
        F.count(value).alias("count"),
        F.avg(value).alias("avg"),
        F.min(value).alias("min"),
        F.max(value).alias("max"),
        F.stddev(value).alias("stddev"),
        F.min("event_time").alias("first_event_time"),
        F.max("event_time").alias("last_event_time"),
    ]


def location_measures() -> list[Column]:
    """A per-location gold table's measures, recomputed from readings."""
    value = F.col("value")
    return [
        F.count(value).alias("count"),
        F.avg(value).alias("avg"),
        F.min(value).alias("min"),
        F.max(value).alias("max"),
        F.count_distinct("sensor_id").alias("active_sensors"),
    ]


def assert_within_rank_bound(errors: DataFrame, bound: float, table: str) -> None:
    """At least 99 % of the sketched quantiles within ``bound`` of their rank, all within
    twice it."""
    within = errors.where(F.col("error") <= bound).count() / errors.count()
    worst = errors.agg(F.max("error")).first()[0]
    assert within >= 0.99 and worst <= 2 * bound, (table, within, worst, bound)


def test_gold_equals_a_batch_recomputation_from_silver(
    spark: SparkSession, settings: Settings, tmp_path: Path
) -> None:
    # 4 minutes: in 10 minutes of event time, readings up to 15 minutes late pass it and
    # the first windows become final (so the hourly and daily rollups hold rows)
    settings = with_low_alert_thresholds(gold_settings(settings), tmp_path).with_(
        gold_watermark="4 minutes"
    )
    config = GeneratorConfig(
        sensors=10,
        rate=20.0,  # 12,000 events over 10 minutes of event time
        count=12_000,
        seed=11,
        format="mixed",
        malformed_fraction=0.01,
        invalid_fraction=0.01,
        duplicate_fraction=0.01,
        late_fraction=0.03,
        late_max_seconds=900.0,
        start_time=START,
    )
    build_silver(spark, settings, config)
    query = start_gold_stream(spark, settings, available_now=True)
    query.awaitTermination(900)
    assert query.exception() is None

    ledger = silver_gold_ledger(spark, settings)
    assert ledger.ok, ledger
    assert ledger.parts["late"] > 0  # the watermark set some readings aside
    assert {t.name for t in GOLD_TABLES} <= set(ledger.parts), ledger  # every table checked
    readings = on_time_silver(spark, settings)
    gold = {
        t.name: spark.read.format("delta").load(settings.gold_path(t.name)) for t in GOLD_TABLES
    }
    for name in ("sensor_metrics_5m", "sensor_metrics_10m_sliding"):
        table = TABLES[name]
        reference = recomputed(readings, table, *sensor_measures())
        assert_measures_equal(gold[name], reference, table)

        errors = rank_errors(readings, gold[name], table)
        k = settings.gold_percentile_k
        bound = percentile_rank_error(k)
        exact = errors.where(F.col("count") <= k)
        sketched = errors.where(F.col("count") > k)
        assert exact.count() > 0 and sketched.count() > 0  # both regimes are exercised
        assert exact.where(F.col("error") > 0).count() == 0  # at most k values: exact
        assert_within_rank_bound(sketched, bound, name)

    reference = recomputed(readings, TABLES["location_metrics_5m"], *location_measures())
    assert_measures_equal(gold["location_metrics_5m"], reference, TABLES["location_metrics_5m"])
    # (gold/alert_counts_5m is the alerts job's: tests/integration/test_alerts.py)

    watermark = (
        spark.read.format("delta")
        .load(settings.gold_progress_path)
        .agg(F.max("next_watermark"))
        .first()[0]
    )
    for name, df in gold.items():
        wrong = df.where(F.col("is_final") != (F.col("window_end") <= F.lit(watermark)))
        assert wrong.count() == 0, name
        assert DeltaTable(settings.gold_path(name)).to_pyarrow_table().num_rows == df.count()

    # The hourly and daily rollups hold the readings of the final 5-minute windows.
    five_minutes = with_window(readings, TABLES["sensor_metrics_5m"])
    final_readings = five_minutes.where(F.col("window_end") <= F.lit(watermark)).drop(
        "window_start", "window_end"
    )
    for rollup in ROLLUPS:
        table = rollup.table
        rolled = spark.read.format("delta").load(settings.gold_path(table.name))
        wrong = rolled.where(F.col("is_final") != (F.col("window_end") <= F.lit(watermark)))
        assert wrong.count() == 0, table.name
        if "stddev" in rolled.columns:  # per sensor
            reference = recomputed(final_readings, table, *sensor_measures())
            errors = rank_errors(final_readings, rolled, table)
            bound = percentile_rank_error(settings.gold_percentile_k)
            assert_within_rank_bound(errors, bound, table.name)
        else:  # per location
            reference = recomputed(final_readings, table, *location_measures())
        assert_measures_equal(rolled, reference, table)


def changing_commits(path: str) -> list[list[dict]]:
    """The actions of each MERGE and UPDATE commit of the Delta table at ``path``, oldest
    first."""
    commits = []
    for log in sorted(Path(path, "_delta_log").glob("*.json")):
        actions = [json.loads(line) for line in log.read_text().splitlines()]
        operation = next(a["commitInfo"]["operation"] for a in actions if "commitInfo" in a)
        if operation in ("MERGE", "UPDATE"):
            commits.append(actions)
    return commits


def test_a_batch_rewrites_the_files_of_its_own_hours_only(
    spark: SparkSession, settings: Settings
) -> None:
    settings = gold_settings(settings).with_(gold_max_files_per_trigger=1)
    config = GeneratorConfig(
        sensors=5,
        rate=0.5,
        count=6000,
        seed=5,
        late_fraction=0.05,  # a few minutes late: they update windows of the batch before
        late_max_seconds=300.0,
        start_time=START,
    )  # 3 h 20 min of event time in 4 silver batches: under an hour a gold batch
    build_silver(spark, settings, config)
    query = start_gold_stream(spark, settings, available_now=True)
    query.awaitTermination(600)
    assert query.exception() is None

    path = settings.gold_path("sensor_metrics_5m")
    table = spark.read.format("delta").load(path)
    hours = {
        str(r[0]) for r in table.select(F.date_format("window_hour", "HH:mm")).distinct().collect()
    }
    assert {"08:00", "09:00", "10:00", "11:00"} <= hours, hours
    commits = changing_commits(path)  # the MERGEs, and the UPDATEs that mark windows final
    rewritten = [
        {a["remove"]["partitionValues"]["window_hour"] for a in actions if "remove" in a}
        for actions in commits
    ]
    assert len(commits) >= 6 and sum(map(len, rewritten)) >= 4, rewritten
    assert all(len(hours) <= 2 for hours in rewritten), rewritten  # its hour, the one before
    first_hours = ("2026-01-05T07", "2026-01-05T08")
    assert not any(h.startswith(first_hours) for hours in rewritten[-2:] for h in hours), rewritten
    ledger = silver_gold_ledger(spark, settings)
    assert ledger.ok, ledger


def test_a_rebuild_after_maintain_files_no_compacted_reading_as_late(
    spark: SparkSession, settings: Settings
) -> None:
    """OPTIMIZE gives the old readings of a day new files, newer than the next day's; Delta
    orders a snapshot's files by modification time, so a gold query starting afresh that read
    the snapshot a file a batch would pass the next day first and file the old day as late."""
    settings = gold_settings(settings).with_(
        gold_max_files_per_trigger=1,
        snapshot_in_first_batch=True,  # the default
    )
    midnight = datetime(2026, 1, 5, tzinfo=UTC)
    config = GeneratorConfig(
        sensors=5,
        rate=5.0,
        count=6_000,
        seed=6,
        format="long",
        start_time=midnight - timedelta(minutes=10),
    )  # 23:50 to 00:10: two event dates, three silver files each
    build_silver(spark, settings, config, parts=6)
    compacted = (
        SparkDeltaTable.forPath(spark, settings.silver_readings_path)
        .optimize()
        .where("event_date = '2026-01-04'")
        .executeCompaction()
        .first()["metrics"]
    )
    assert compacted["numFilesRemoved"] >= 2 and compacted["numFilesAdded"] == 1, compacted

    query = start_gold_stream(spark, settings, available_now=True)
    query.awaitTermination(600)
    assert query.exception() is None

    silver = spark.read.format("delta").load(settings.silver_readings_path)
    late = spark.read.format("delta").load(settings.gold_late_readings_path)
    assert late.count() == 0, late.groupBy(F.to_date("event_time")).count().collect()
    five = spark.read.format("delta").load(settings.gold_path("sensor_metrics_5m"))
    assert five.agg(F.sum("count")).first()[0] == silver.count() > 0
    assert silver_gold_ledger(spark, settings).ok
