"""Window tables kept fresh by MERGE: mergeable measures (count, mean, sum of squared
deviations, extremes, KLL and theta sketches), a table's definition (``GoldTable``), the batch
watermark, and the upserts of a batch's partials and of rollups. Gold's window tables and the
alerts job's alert counts both use it.

Pure transforms (``with_window``, ``batch_partials``, ``rollup_rows``) are ``DataFrame ->
DataFrame`` and ``merged_values`` gives a MERGE's columns.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.types import BinaryType, StructType

from iot_lakehouse import catalog
from iot_lakehouse.pipeline.console import echo_batch
from iot_lakehouse.schemas import CHANGE_FEED
from iot_lakehouse.settings import Settings, duration_seconds

logger = logging.getLogger(__name__)
QUANTILES = {"p50": 0.5, "p95": 0.95, "p99": 0.99}
THETA_LG_NOM_ENTRIES = 12  # theta sketches count distinct sensors exactly up to 2**12 = 4096
WINDOW_STEP_S = 300  # every gold window starts and ends on a 5-minute boundary
MERGE_RANGE_GRID_S = 3600  # a MERGE scans the windows of its batch's hours (upsert_window_rows)
MICROS = 1_000_000

Side = Callable[[str], Column]
"""A column of one side of a combine: the stored row (``old``) or the batch (``new``)."""


@dataclass(frozen=True)
class Measure:
    """A stored gold column: its aggregate over a batch's readings and how two partial values
    of it (the stored row's and the batch's) combine into the value over both."""

    name: str
    aggregate: Callable[[], Column]
    combine: Callable[[Side, Side], Column]
    rollup: Callable[[], Column]  # its value over a group of stored rows (``rollup_rows``)


def additive(name: str, aggregate: Callable[[], Column]) -> Measure:
    return Measure(name, aggregate, lambda old, new: old(name) + new(name), lambda: F.sum(name))


def smallest(name: str, aggregate: Callable[[], Column]) -> Measure:
    return Measure(
        name, aggregate, lambda old, new: F.least(old(name), new(name)), lambda: F.min(name)
    )


def largest(name: str, aggregate: Callable[[], Column]) -> Measure:
    return Measure(
        name, aggregate, lambda old, new: F.greatest(old(name), new(name)), lambda: F.max(name)
    )


def latest(name: str, aggregate: Callable[[], Column]) -> Measure:
    return Measure(
        name,
        aggregate,
        lambda old, new: F.coalesce(new(name), old(name)),
        lambda: F.max_by(name, "window_start"),
    )


ROLLUP_MEAN = "_rollup_avg"  # the mean over a whole group of rows, beside each row of it


def rolled_up_mean() -> Column:
    """Mean over a group of rows from their counts and means."""
    return F.sum(F.col("count") * F.col("avg")) / F.sum("count")


def rolled_up_m2() -> Column:
    """Sum of squared deviations over a group of rows: each row's own plus its count times its
    mean's squared distance from the group's mean (``ROLLUP_MEAN``), which stays exact where
    sums of squares would cancel."""
    spread = F.col("avg") - F.col(ROLLUP_MEAN)
    return F.sum(F.col("m2") + F.col("count") * spread * spread)


def combined_mean(old: Side, new: Side) -> Column:
    """Mean over both sides from their counts and means."""
    total = old("count") + new("count")
    return old("avg") + (new("avg") - old("avg")) * new("count") / total


def combined_m2(old: Side, new: Side) -> Column:
    """Sum of squared deviations over both sides (Chan et al.'s parallel variance update)."""
    delta = new("avg") - old("avg")
    total = old("count") + new("count")
    return old("m2") + new("m2") + delta * delta * old("count") * new("count") / total


def sensor_sketch() -> Measure:
    """Theta sketch of the sensor ids: distinct sensors, exact up to 4096."""
    return Measure(
        "sensor_sketch",
        lambda: F.theta_sketch_agg("sensor_id", THETA_LG_NOM_ENTRIES),
        lambda old, new: F.theta_union(
            old("sensor_sketch"), new("sensor_sketch"), THETA_LG_NOM_ENTRIES
        ),
        lambda: F.theta_union_agg("sensor_sketch", THETA_LG_NOM_ENTRIES),
    )


def value_measures(percentile_k: int) -> tuple[Measure, ...]:
    """count, mean, m2, min, max, unit, event-time range and a KLL sketch of the values."""
    return (
        additive("count", lambda: F.count("value")),
        Measure("avg", lambda: F.avg("value"), combined_mean, rolled_up_mean),
        Measure("m2", lambda: F.var_pop("value") * F.count("value"), combined_m2, rolled_up_m2),
        smallest("min", lambda: F.min("value")),
        largest("max", lambda: F.max("value")),
        latest("unit", lambda: F.max("unit")),
        smallest("first_event_time", lambda: F.min("event_time")),
        largest("last_event_time", lambda: F.max("event_time")),
        Measure(
            "value_sketch",
            lambda: F.kll_sketch_agg_double("value", percentile_k),
            lambda old, new: F.kll_sketch_merge_double(old("value_sketch"), new("value_sketch")),
            lambda: F.kll_merge_agg_double("value_sketch"),
        ),
    )


def location_measures(_percentile_k: int) -> tuple[Measure, ...]:
    """count, mean, min, max, unit and the sensors seen."""
    return (
        additive("count", lambda: F.count("value")),
        Measure("avg", lambda: F.avg("value"), combined_mean, rolled_up_mean),
        smallest("min", lambda: F.min("value")),
        largest("max", lambda: F.max("value")),
        latest("unit", lambda: F.max("unit")),
        sensor_sketch(),
    )


def alert_measures(_percentile_k: int) -> tuple[Measure, ...]:
    """Number of alerts, the sensors that raised them and their event-time range."""
    return (
        additive("alert_count", lambda: F.count("*")),
        smallest("first_event_time", lambda: F.min("event_time")),
        largest("last_event_time", lambda: F.max("event_time")),
        sensor_sketch(),
    )


def value_results(col: Side) -> dict[str, Column]:
    """Sample standard deviation and percentiles from the stored state ``col``."""
    count = col("count")
    stddev = F.when(count > 1, F.sqrt(F.greatest(col("m2"), F.lit(0.0)) / (count - 1)))
    results = {"stddev": stddev}
    for name, rank in QUANTILES.items():
        results[name] = F.kll_sketch_get_quantile_double(col("value_sketch"), F.lit(rank))
    return results


def distinct_sensors(name: str) -> Callable[[Side], dict[str, Column]]:
    """The number of distinct sensors in the stored theta sketch, as column ``name``."""
    return lambda col: {name: F.theta_sketch_estimate(col("sensor_sketch"))}


@dataclass(frozen=True)
class GoldTable:
    """One gold table: its window, keys, stored measures and the columns derived from them."""

    name: str
    keys: tuple[str, ...]
    window: str
    slide: str | None
    measures: Callable[[int], tuple[Measure, ...]]
    results: Callable[[Side], dict[str, Column]]
    schema: StructType
    counts: Callable[[], Column] | None = None  # which readings it counts (None: all)

    @property
    def window_seconds(self) -> int:
        return duration_seconds(self.window)

    @property
    def stats_columns(self) -> tuple[str, ...]:
        """The columns worth file statistics: the window and keys a MERGE matches on, the
        batch that last changed a row, and the newest event time (how fresh the table is, read
        from the log alone); not the measures (sketches and doubles)."""
        newest = ("last_event_time",) if "last_event_time" in self.schema.fieldNames() else ()
        return ("window_start", "window_end", *self.keys, "batch_id", *newest)

    def create_if_missing(self, spark: SparkSession, settings: Settings) -> None:
        """Create the catalog's ``gold/<name>`` (the same schema: tests/unit/test_catalog.py) with
        file statistics on the columns that matter and its change data feed."""
        table = catalog.table(f"gold/{self.name}")
        table.create_if_missing(spark, settings, self.stats_columns, CHANGE_FEED)

    @property
    def slide_seconds(self) -> int:
        """How far apart its windows start (a tumbling window: its length)."""
        return duration_seconds(self.slide or self.window)


@dataclass(frozen=True)
class Rollup:
    """A gold table of longer windows (an hour, a UTC day) built from the final rows of a
    5-minute table: every stored measure merges, so its counts, means, deviations, extremes and
    distinct sensors are exact and its percentiles keep the sketches' bound, without reading
    silver again. A row holds the final 5-minute windows so far and is final with its last."""

    table: GoldTable
    source: GoldTable


def rolled_up(source: GoldTable, name: str, window: str) -> Rollup:
    return Rollup(dataclasses.replace(source, name=name, window=window, slide=None), source)


def percentile_rank_error(k: int) -> float:
    """Rank error bound of a KLL sketch with parameter ``k``: with 99 % confidence every
    quantile it returns has a true rank within this much of the one asked for (DataSketches'
    empirical bound, about 1.33 % for the default k = 200). A sketch of at most k values
    is exact."""
    return float(2.296 / k**0.9723)


def iso(micros: int | None) -> str:
    """Epoch microseconds as an ISO-8601 UTC string (``-`` for None), for logs."""
    if micros is None:
        return "-"
    return datetime.fromtimestamp(micros / MICROS, UTC).isoformat(timespec="seconds")


def batch_scalars(spark: SparkSession, **values: int | None) -> DataFrame:
    """One row with a ``bigint`` column per value (``None``: null), to cross-join into a
    batch's rows instead of writing the values as literals.

    Spark writes a literal into the Java code it generates and compiles for a query, and finds
    compiled code again by its text. A value that changes every batch (the watermark, the batch
    id, the time) written as a literal makes every batch compile its stages anew (~140 classes
    a small gold batch); read from a joined row, it leaves the code the same from batch to
    batch. ``VALUES`` is a local relation: its row is data, not code; broadcasting it for the
    join costs one small Spark job.
    """
    names = ", ".join(f"`{name}`" for name in values)
    # Integers only, formatted here: no SQL text comes from outside. (Parameter markers are
    # not bound inside VALUES.)
    casts = ", ".join(f"CAST({'NULL' if v is None else int(v)} AS BIGINT)" for v in values.values())
    row = spark.sql(f"SELECT * FROM VALUES ({casts}) AS scalars({names})")
    return F.broadcast(row)


def window_start_range(table: GoldTable, lo_us: int, hi_us: int) -> tuple[int, int]:
    """The first and the last start (epoch us) of the table's windows that hold an event time
    between ``lo_us`` and ``hi_us`` (window starts lie on the table's slide)."""
    slide = table.slide_seconds * MICROS
    first = ((lo_us - table.window_seconds * MICROS) // slide + 1) * slide
    return first, hi_us // slide * slide


def micros_literal(micros: int | None) -> Column:
    """A timestamp literal from epoch microseconds (null for None)."""
    if micros is None:
        return F.lit(None).cast("timestamp")
    return F.timestamp_micros(F.lit(micros))


def watermark_clock(readings: DataFrame) -> Column:
    """The time a reading moves the watermark by: its event time, but never later than its
    bronze ingest time. A reading stamped in the future (within silver's allowed clock skew)
    then cannot push the watermark ahead of the data still arriving, which would make valid
    readings late."""
    if "bronze_ingest_time" not in readings.columns:  # hand-made frames
        return F.col("event_time")
    ingest = F.coalesce(F.col("bronze_ingest_time"), F.col("event_time"))
    return F.least(F.col("event_time"), ingest)


def with_window(readings: DataFrame, table: GoldTable) -> DataFrame:
    """window_start and window_end of the table's window(s) each reading falls in (a sliding
    window gives a reading one row per window)."""
    window = (
        F.window("event_time", table.window, table.slide)
        if table.slide
        else F.window("event_time", table.window)
    )
    return (
        readings.select("*", window.alias("_window"))
        .withColumn("window_start", F.col("_window.start"))
        .withColumn("window_end", F.col("_window.end"))
        .drop("_window")
    )


def batch_partials(readings: DataFrame, table: GoldTable, percentile_k: int) -> DataFrame:
    """One partial row per window and key of the table, over this batch's readings."""
    counted = readings.where(table.counts()) if table.counts is not None else readings
    return (
        with_window(counted, table)
        .groupBy("window_start", "window_end", *table.keys)
        .agg(*[m.aggregate().alias(m.name) for m in table.measures(percentile_k)])
    )


def rollup_rows(final_rows: DataFrame, rollup: Rollup, percentile_k: int) -> DataFrame:
    """The rollup's windows over ``final_rows`` (final rows of its source table), each with
    every stored measure merged over the 5-minute rows it holds (``Measure.rollup``)."""
    table = rollup.table
    measures = table.measures(percentile_k)
    names = [m.name for m in measures]
    longer = F.window("window_start", table.window)
    rows = final_rows.select(
        longer.start.alias("window_start"), longer.end.alias("window_end"), *table.keys, *names
    )
    group = ("window_start", *table.keys)
    if "avg" in names:  # what rolled_up_m2 measures deviations from
        whole = Window.partitionBy(*group)
        mean = F.sum(F.col("count") * F.col("avg")).over(whole) / F.sum("count").over(whole)
        rows = rows.withColumn(ROLLUP_MEAN, mean)
    return rows.groupBy(*group, "window_end").agg(*[m.rollup().alias(m.name) for m in measures])


def key_match(table: GoldTable, left: str, right: str) -> Column:
    """Null-safe equality of the window and keys of two aliased sides."""
    match = F.col(f"{left}.window_start") == F.col(f"{right}.window_start")
    for key in table.keys:
        match = match & F.col(f"{left}.{key}").eqNullSafe(F.col(f"{right}.{key}"))
    return match


def row_values(
    table: GoldTable, stored: dict[str, Column], new: Side, window_end: Column
) -> dict[str, Column]:
    """Every non-key column of a gold row from its stored measures: the derived results,
    ``is_final`` (the watermark has passed the window end), the batch id and update time,
    these three from the batch's scalars on the partial's side (``merge_source``)."""
    final_until = F.timestamp_micros(new("_final_until_us"))
    values = {
        **stored,
        **table.results(stored.__getitem__),
        "is_final": F.coalesce(window_end <= final_until, F.lit(False)),
        "batch_id": new("_batch_id"),
        "updated_at": F.timestamp_micros(new("_updated_us")),
    }
    types = {f.name: f.dataType for f in table.schema}
    return {name: value.cast(types[name]) for name, value in values.items()}


def merge_source(
    spark: SparkSession, partials: DataFrame, batch_id: int, final_until_us: int | None
) -> DataFrame:
    """A batch's partials with what ``row_values`` reads of the batch: its id, the end of the
    windows final after it (``None``: none) and the time (``batch_scalars``)."""
    scalars = batch_scalars(
        spark,
        _batch_id=batch_id,
        _final_until_us=final_until_us,
        _updated_us=time.time_ns() // 1000,
    )
    return partials.crossJoin(scalars)


def inserted_values(table: GoldTable, percentile_k: int, new: Side) -> dict[str, Column]:
    """A new gold row from a batch partial (``new``, a ``merge_source`` row)."""
    keys = {c: new(c) for c in ("window_start", "window_end", *table.keys)}
    stored = {m.name: new(m.name) for m in table.measures(percentile_k)}
    return {**keys, **row_values(table, stored, new, new("window_end"))}


def merged_values(table: GoldTable, percentile_k: int, old: Side, new: Side) -> dict[str, Column]:
    """The stored row (``old``) updated with a batch partial of the same window and key."""
    stored = {m.name: m.combine(old, new) for m in table.measures(percentile_k)}
    return row_values(table, stored, new, old("window_end"))


def side(alias: str) -> Side:
    """Columns of one aliased side of a join or MERGE."""
    return lambda name: F.col(f"{alias}.{name}")


@dataclass(frozen=True)
class BatchWatermarks:
    """Event-time bookkeeping of one batch (epoch microseconds)."""

    watermark_us: int | None  # readings before it are late
    max_event_us: int | None  # latest event time seen, this batch included
    delay_us: int

    @property
    def next_watermark_us(self) -> int | None:
        return None if self.max_event_us is None else self.max_event_us - self.delay_us

    def passed_window_end(self) -> bool:
        """True if some window end lies in (watermark, next watermark]: windows became final."""
        after = self.next_watermark_us
        if after is None:
            return False
        if self.watermark_us is None:
            return True
        step = WINDOW_STEP_S * MICROS
        return after // step > self.watermark_us // step


def upsert_window_rows(
    spark: SparkSession,
    settings: Settings,
    table: GoldTable,
    rows: DataFrame,
    batch_id: int,
    marks: BatchWatermarks,
    lo_us: int,
    hi_us: int,
) -> None:
    """Fold ``rows`` (at least one; event times between ``lo_us`` and ``hi_us``) into ``table``
    with one MERGE, then mark the windows the watermark has passed final."""
    from delta.tables import DeltaTable

    k = settings.gold_percentile_k
    partials = batch_partials(rows, table, k).localCheckpoint(eager=True)
    # Rows with an event time give every table without a filter of its own a partial; only
    # a filtered one can be left with none (a Spark job to know: asked only there).
    if table.counts is not None and partials.isEmpty():
        return
    source = merge_source(spark, partials, batch_id, marks.next_watermark_us)
    update: dict[str, str | Column] = {**merged_values(table, k, side("t"), side("s"))}
    insert: dict[str, str | Column] = {**inserted_values(table, k, side("s"))}
    # Only windows that can hold this batch's rows: data skipping on window_start. Widened to
    # whole hours, the bounds change once an hour, and with them the MERGE's generated code.
    first, last = window_start_range(table, lo_us, hi_us)
    grid = MERGE_RANGE_GRID_S * MICROS
    in_range = F.col("t.window_start").between(
        micros_literal(first // grid * grid), micros_literal(-(-last // grid) * grid)
    )
    path = settings.gold_path(table.name)
    (
        DeltaTable.forPath(spark, path)
        .alias("t")
        .merge(source.alias("s"), key_match(table, "t", "s") & in_range)
        # A row already changed by this batch (an earlier attempt of it) stays as it is.
        .whenMatchedUpdate(condition=F.col("t.batch_id") < F.col("s._batch_id"), set=update)
        .whenNotMatchedInsert(values=insert)
        .execute()
    )
    if marks.passed_window_end():
        # Mark rows final whose window end the watermark has now passed. A row not yet final
        # ends after the last watermark (no batch inserts a window that ended before it), so
        # the files of older hours are skipped by their statistics, not read.
        becomes_final = ~F.col("is_final") & (
            F.col("window_end") <= micros_literal(marks.next_watermark_us)
        )
        if marks.watermark_us is not None:
            since = (marks.watermark_us // grid - 1) * grid
            becomes_final &= F.col("window_end") > micros_literal(since)
        DeltaTable.forPath(spark, path).update(
            condition=becomes_final, set={"is_final": F.lit(True)}
        )


def upsert_rollup(
    spark: SparkSession,
    settings: Settings,
    rollup: Rollup,
    batch_id: int,
    final_until_us: int,
    since_us: int | None,
) -> None:
    """Compute again, from its source's final rows, every window of ``rollup`` that holds a
    5-minute window final since ``since_us`` (all of them if None), and upsert them whole: a
    replay computes the same rows from the same final rows."""
    from delta.tables import DeltaTable

    table = rollup.table
    final = spark.read.format("delta").load(settings.gold_path(rollup.source.name))
    final = final.where(F.col("is_final"))
    in_range = F.lit(True)
    if since_us is not None:  # the windows final since then start after since - 5 minutes
        period = table.window_seconds * MICROS
        first = (since_us - rollup.source.window_seconds * MICROS) // period * period
        final = final.where(F.col("window_start") >= micros_literal(first))
        in_range = F.col("t.window_start") >= micros_literal(first)
    rows = rollup_rows(final, rollup, settings.gold_percentile_k).localCheckpoint(eager=True)
    if rows.isEmpty():
        return
    source = merge_source(spark, rows, batch_id, final_until_us)
    values: dict[str, str | Column] = {
        **inserted_values(table, settings.gold_percentile_k, side("s"))
    }
    (
        DeltaTable.forPath(spark, settings.gold_path(table.name))
        .alias("t")
        .merge(source.alias("s"), key_match(table, "t", "s") & in_range)
        .whenMatchedUpdate(set=values)
        .whenNotMatchedInsert(values=values)
        .execute()
    )


def echo_changed_rows(
    spark: SparkSession, settings: Settings, table: GoldTable, batch_id: int
) -> None:
    """``--console``: the rows of ``table`` batch ``batch_id`` changed, without the sketches."""
    if settings.console_rows <= 0:
        return
    changed = spark.read.format("delta").load(settings.gold_path(table.name))
    shown = [f.name for f in changed.schema.fields if not isinstance(f.dataType, BinaryType)]
    rows = changed.where(F.col("batch_id") == batch_id).select(*shown)
    echo_batch(
        rows.orderBy("window_start", *table.keys),
        f"gold/{table.name}",
        batch_id,
        settings.console_rows,
    )
