"""silver -> gold: window aggregates kept fresh by MERGE, final once the watermark passes.

Every micro-batch of silver readings is first split at the gold watermark (the latest event
time seen in earlier batches minus ``GOLD_WATERMARK``): readings older than it are late. They
are kept in ``_ops/gold_late_readings`` and never folded into a window, so a window whose end
the watermark has passed is final. The other readings are aggregated per gold table into
mergeable partials (count, mean, sum of squared deviations, min, max, a KLL quantile sketch,
a theta sketch of sensor ids), combined with the stored row of the same window and key, and
upserted with one MERGE per table. A row remembers the batch that last changed it and the MERGE
only updates rows changed by an earlier batch, so replaying a batch changes nothing. When
5-minute windows become final, the hourly and daily rollups that hold them (``ROLLUPS``) are
computed again from the final 5-minute rows and upserted whole.

The gold tables are declared here (``GOLD_TABLES``, ``ROLLUPS``); the window engine they share
with the alerts job's alert counts (measures, partials, MERGEs) is ``windows``. Pure
transforms (``with_lateness``, ``split_late``) are ``DataFrame -> DataFrame``;
``GoldBatchWriter`` owns the writes of one micro-batch and ``start_gold_stream`` the stream.
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass, field

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming.query import StreamingQuery
from pyspark.sql.types import TimestampType

from iot_lakehouse import catalog
from iot_lakehouse.logs import kv
from iot_lakehouse.pipeline.checkpoints import delta_source_options
from iot_lakehouse.pipeline.exactly_once import append_once
from iot_lakehouse.pipeline.streaming import (
    StageClock,
    require_columns,
    start_foreach_batch,
)
from iot_lakehouse.pipeline.windows import (
    MICROS,
    BatchWatermarks,
    GoldTable,
    Rollup,
    batch_scalars,
    distinct_sensors,
    echo_changed_rows,
    iso,
    location_measures,
    rolled_up,
    upsert_rollup,
    upsert_window_rows,
    value_measures,
    value_results,
    watermark_clock,
)
from iot_lakehouse.runtime.spark_session import materialise, run_side_by_side
from iot_lakehouse.runtime.stream_metrics import kafka_time_quantiles, record_batch_latency
from iot_lakehouse.schemas import (
    GOLD_LATE_READINGS,
    GOLD_LOCATION_METRICS,
    GOLD_PROGRESS,
    GOLD_SENSOR_METRICS,
    query_app_id,
)
from iot_lakehouse.settings import Settings

logger = logging.getLogger(__name__)

JOB_NAME = "gold"
GOLD_INPUT = (
    "sensor_id",
    "metric",
    "value",
    "unit",
    "event_time",
    "location",
    "alert_type",
    "severity",
    "bronze_topic",
    "bronze_partition",
    "bronze_offset",
)


GOLD_TABLES: tuple[GoldTable, ...] = (
    GoldTable(
        "sensor_metrics_5m",
        ("sensor_id", "metric"),
        "5 minutes",
        None,
        value_measures,
        value_results,
        GOLD_SENSOR_METRICS,
    ),
    GoldTable(
        "sensor_metrics_10m_sliding",
        ("sensor_id", "metric"),
        "10 minutes",
        "5 minutes",
        value_measures,
        value_results,
        GOLD_SENSOR_METRICS,
    ),
    GoldTable(
        "location_metrics_5m",
        ("location", "metric"),
        "5 minutes",
        None,
        location_measures,
        distinct_sensors("active_sensors"),
        GOLD_LOCATION_METRICS,
    ),
)


ROLLUPS: tuple[Rollup, ...] = tuple(
    rolled_up(source, f"{source.name.removesuffix('_5m')}_{suffix}", window)
    for source in (GOLD_TABLES[0], GOLD_TABLES[2])  # per sensor, per location
    for suffix, window in (("1h", "1 hour"), ("1d", "1 day"))
)


# Every table the gold job keeps windows in.
WINDOW_TABLES: tuple[GoldTable, ...] = (*GOLD_TABLES, *(r.table for r in ROLLUPS))


def is_late(watermark: Column) -> Column:
    """A reading is late when its event time is before the watermark (a timestamp column;
    null before the first batch: nothing is late then). One without an event time (silver
    never has one) counts as late, so it is kept rather than dropped or folded into a null
    window."""
    before = F.coalesce(F.col("event_time") < watermark, F.lit(False))
    return F.col("event_time").isNull() | before


def with_lateness(readings: DataFrame, scalars: DataFrame) -> DataFrame:
    """``readings`` with the batch's ``_batch_id`` and ``_watermark`` (``scalars``'
    ``_batch_id`` and ``_watermark_us``) and whether each is ``_late`` (see ``is_late``)."""
    watermark = F.timestamp_micros(F.col("_watermark_us"))
    return (
        readings.crossJoin(scalars)
        .withColumn("_watermark", watermark)
        .withColumn("_late", is_late(watermark))
        .drop("_watermark_us")
    )


def split_late(readings: DataFrame) -> tuple[DataFrame, DataFrame]:
    """(on time, late) readings of ``with_lateness`` rows."""
    return readings.where(~F.col("_late")), readings.where(F.col("_late"))


def to_late_rows(late: DataFrame) -> DataFrame:
    """Late readings (``with_lateness`` rows) -> the _ops/gold_late_readings contract."""
    lateness = (F.unix_micros("_watermark") - F.unix_micros("event_time")) / MICROS
    return late.select(
        *[c for c in GOLD_INPUT if c in {f.name for f in GOLD_LATE_READINGS}],
        F.col("_watermark").alias("watermark"),
        lateness.cast("double").alias("lateness_seconds"),
        F.col("_batch_id").alias("batch_id"),
        F.current_timestamp().alias("detected_at"),
    )


@dataclass
class GoldBatchWriter:
    """Writes one micro-batch of silver readings to every gold table, exactly once."""

    spark: SparkSession
    settings: Settings
    app_id: str = "iot-lakehouse-gold"
    _seen_us: int | None = field(default=None, init=False)
    _last_batch: int | None = field(default=None, init=False)

    def __call__(self, silver_batch: DataFrame, batch_id: int) -> None:
        """foreachBatch entry point: bind the writes to this query's checkpoint, then write."""
        if ":" not in self.app_id:
            self.app_id = query_app_id(self.spark, self.app_id, JOB_NAME)
        self.write_batch(silver_batch, batch_id)

    def write_batch(self, silver_batch: DataFrame, batch_id: int) -> dict[str, int]:
        """Aggregate one batch into every gold table; return the counts of readings and late."""
        require_columns(silver_batch, GOLD_INPUT, "silver")
        clock = StageClock()
        kafka_time = (
            F.col("kafka_timestamp")
            if "kafka_timestamp" in silver_batch.columns
            else F.lit(None).cast("timestamp").alias("kafka_timestamp")
        )
        seen = self._seen_before(batch_id)
        delay = self.settings.gold_watermark_seconds * MICROS
        watermark = None if seen is None else seen - delay
        scalars = batch_scalars(self.spark, _batch_id=batch_id, _watermark_us=watermark)
        judged, stats = materialise(
            with_lateness(
                silver_batch.select(
                    *GOLD_INPUT, kafka_time, watermark_clock(silver_batch).alias("_clock")
                ),
                scalars,
            ),
            F.count("*").alias("readings"),
            F.count_if("_late").alias("late"),
            F.min(F.unix_micros("event_time")).alias("lo"),
            F.max(F.unix_micros("event_time")).alias("hi"),
            F.max(F.unix_micros("_clock")).alias("clock_hi"),
            *kafka_time_quantiles(),
        )
        readings = judged.drop("kafka_timestamp", "_clock")
        clock.lap("split")
        total, late_count, hi = int(stats["readings"]), int(stats["late"]), stats["hi"]
        clock_hi = stats["clock_hi"]
        if total == 0:
            self._last_batch = batch_id
            return {"readings": 0, "late": 0}
        marks = BatchWatermarks(
            watermark_us=watermark,
            max_event_us=(
                clock_hi if seen is None else seen if clock_hi is None else max(seen, clock_hi)
            ),
            delay_us=delay,
        )
        on_time, late = split_late(readings)
        if late_count:
            self._append(to_late_rows(late), self.settings.gold_late_readings_path, batch_id)
            clock.lap("late")
        if late_count < total:  # then event times exist, and so do lo and hi
            # One MERGE per table, side by side: much of a small MERGE's time is spent in the
            # driver (Delta log, planning), which threads overlap.
            run_side_by_side(
                *[
                    functools.partial(
                        upsert_window_rows,
                        self.spark,
                        self.settings,
                        table,
                        on_time,
                        batch_id,
                        marks,
                        stats["lo"],
                        hi,
                    )
                    for table in GOLD_TABLES
                ]
            )
            clock.lap("merges")
            if marks.passed_window_end() and marks.next_watermark_us is not None:
                # 5-minute windows became final: the hours and days that hold them again
                run_side_by_side(
                    *[
                        functools.partial(
                            upsert_rollup,
                            self.spark,
                            self.settings,
                            rollup,
                            batch_id,
                            marks.next_watermark_us,
                            marks.watermark_us,
                        )
                        for rollup in ROLLUPS
                    ]
                )
                clock.lap("rollups")
        # Every column as epoch microseconds (values as data, not literals: the same code every
        # batch, see batch_scalars), the timestamps converted back.
        progress = self.spark.createDataFrame(
            [
                (
                    batch_id,
                    marks.watermark_us,
                    marks.max_event_us,
                    marks.next_watermark_us,
                    total,
                    late_count,
                    time.time_ns() // 1000,
                )
            ],
            ", ".join(f"{f.name} long" for f in GOLD_PROGRESS),
        ).select(
            *[
                F.timestamp_micros(f.name).alias(f.name)
                if isinstance(f.dataType, TimestampType)
                else F.col(f.name)
                for f in GOLD_PROGRESS
            ]
        )
        self._append(progress, self.settings.gold_progress_path, batch_id)
        clock.lap("progress")
        record_batch_latency("kafka_to_gold", JOB_NAME, batch_id, stats)
        echo_changed_rows(self.spark, self.settings, GOLD_TABLES[0], batch_id)
        self._seen_us, self._last_batch = marks.max_event_us, batch_id
        counts = {"readings": total, "late": late_count}
        logger.info(
            "gold batch %s",
            kv(
                job=JOB_NAME,
                batch_id=batch_id,
                **counts,
                watermark=iso(marks.next_watermark_us),
                **clock.seconds(),
            ),
        )
        return counts

    def _seen_before(self, batch_id: int) -> int | None:
        """Latest event time (us) of the batches before ``batch_id``, as recorded by them."""
        if self._last_batch is not None and self._last_batch == batch_id - 1:
            return self._seen_us
        row = (
            self.spark.read.format("delta")
            .load(self.settings.gold_progress_path)
            .where(F.col("batch_id") < batch_id)
            .agg(F.max(F.unix_micros("max_event_time")).alias("seen"))
            .first()
        )
        return None if row is None or row["seen"] is None else int(row["seen"])

    def _append(self, df: DataFrame, path: str, batch_id: int) -> None:
        append_once(df, path, self.app_id, batch_id)


def create_gold_tables(spark: SparkSession, settings: Settings) -> None:
    """Create every gold table, the late-readings table and the progress log if missing."""
    for table in WINDOW_TABLES:
        table.create_if_missing(spark, settings)
    catalog.table("_ops/gold_late_readings").create_if_missing(spark, settings)
    catalog.table("_ops/gold_progress").create_if_missing(spark, settings)


def start_gold_stream(
    spark: SparkSession, settings: Settings, available_now: bool = False
) -> StreamingQuery:
    """Start the silver -> gold query (Delta source, foreachBatch MERGE, own checkpoint)."""
    create_gold_tables(spark, settings)
    source = (
        spark.readStream.format("delta")
        .options(
            **delta_source_options(
                spark, settings, JOB_NAME, maxFilesPerTrigger=settings.gold_max_files_per_trigger
            )
        )
        .load(settings.silver_readings_path)
    )
    query = start_foreach_batch(
        source, JOB_NAME, JOB_NAME, GoldBatchWriter(spark, settings), settings, available_now
    )
    logger.info(
        "gold stream started %s",
        kv(
            job=JOB_NAME,
            source=settings.silver_readings_path,
            tables=",".join(t.name for t in WINDOW_TABLES),
            watermark=settings.gold_watermark,
            percentile_k=settings.gold_percentile_k,
            available_now=available_now,
        ),
    )
    return query
