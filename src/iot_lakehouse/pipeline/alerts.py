"""silver -> gold/alerts (+ Kafka ``iot-alerts``) and gold/alert_counts_5m: the alerts job.

Three streaming queries, each with its own checkpoint under ``_checkpoints/alerts/``:

- ``stateful``: silver readings, watermarked on event time (``ALERTS_WATERMARK``), grouped by
  sensor into ``transformWithState`` (state in the RocksDB state store). The detectors of
  ``detectors.py`` run there; SENSOR_SILENT is an event-time timer, so it fires when the
  watermark passes, whatever that sensor does. The watermark only drives the timers: no
  reading is dropped for being behind it (a silver commit read over several batches puts its
  later files behind the watermark its first file moved), every reading reaches its sensor's
  detectors, which take each sensor's readings in event-time order.
  When silver stops altogether (every sensor silent, a gateway outage), the watermark would
  stop with it: after ``ALERTS_IDLE_GRACE`` of wall clock without a silver reading, the job
  appends clock ticks to ``_ops/alerts_clock``, read by the same query, that move the
  watermark on by the wall-clock time since the last reading (see ``WallClock``).
- ``static``: every silver reading with a static flag (HIGH_TEMP, LOW_TEMP, HIGH_HUMIDITY, set
  by silver's rules) becomes an alert, late readings included.
- ``counts``: gold/alerts -> gold/alert_counts_5m (fired alerts per 5-minute window, type and
  severity), by the same MERGE as the gold tables.

Alerts are appended to gold/alerts exactly once (``append_once``) and then sent as
JSON to Kafka, at least once: a replayed batch sends again, with the same ``alert_id``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pyspark.sql import Column, DataFrame, Row, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming.query import StreamingQuery
from pyspark.sql.streaming.stateful_processor import (
    ExpiredTimerInfo,
    StatefulProcessor,
    StatefulProcessorHandle,
    TimerValues,
)
from pyspark.sql.types import StringType, StructField, StructType

from iot_lakehouse.catalog import table
from iot_lakehouse.errors import JobError
from iot_lakehouse.logs import kv
from iot_lakehouse.pipeline.checkpoints import delta_source_options
from iot_lakehouse.pipeline.console import echo_batch
from iot_lakehouse.pipeline.detectors import (
    FIRED,
    AlertRules,
    Reading,
    SensorState,
    load_alert_rules,
    on_silence_timer,
    process_readings,
)
from iot_lakehouse.pipeline.exactly_once import append_once
from iot_lakehouse.pipeline.rules import RuleSet, load_rules
from iot_lakehouse.pipeline.streaming import require_columns, start_foreach_batch
from iot_lakehouse.pipeline.windows import (
    MICROS,
    BatchWatermarks,
    GoldTable,
    alert_measures,
    distinct_sensors,
    echo_changed_rows,
    upsert_window_rows,
    watermark_clock,
)
from iot_lakehouse.runtime.spark_session import materialise
from iot_lakehouse.schemas import (
    ALERTS_CLOCK,
    CHANGE_FEED,
    GOLD_ALERT_COUNTS,
    GOLD_ALERTS,
    query_app_id,
)
from iot_lakehouse.settings import Settings

logger = logging.getLogger(__name__)

# gold/alert_counts_5m is kept by the alerts job from gold/alerts, with the same machinery.
ALERT_COUNTS_TABLE = GoldTable(
    "alert_counts_5m",
    ("alert_type", "severity"),
    "5 minutes",
    None,
    alert_measures,
    distinct_sensors("affected_sensors"),
    GOLD_ALERT_COUNTS,
    counts=lambda: F.col("status") == "fired",
)

JOB_NAME = "alerts"
STATEFUL, STATIC, COUNTS = "stateful", "static", "counts"
QUERY_PARTS = (STATEFUL, STATIC, COUNTS)  # one checkpoint each, each guarded on its own
ALERTS_INPUT = ("sensor_id", "metric", "value", "event_time", "location", "alert_type", "severity")
DETECTED = (
    "alert_id string, sensor_id string, metric string, location string, alert_type string, "
    "severity string, status string, event_ms long, value double, threshold double, "
    "baseline double, evidence string"
)
STATE_SCHEMA = StructType([StructField("json", StringType(), nullable=True)])


def query_name(part: str) -> str:
    return f"{JOB_NAME}_{part}"


# --- the stateful detectors inside Spark --------------------------------------------------------
class AlertProcessor(StatefulProcessor):
    """``transformWithState`` processor: one SensorState per sensor, one silence timer."""

    def __init__(self, rules: AlertRules) -> None:
        self.rules = rules

    def init(self, handle: StatefulProcessorHandle) -> None:
        self.handle = handle
        self.state = handle.getValueState("sensor", STATE_SCHEMA)

    def _load(self) -> SensorState:
        row = self.state.get()
        return SensorState.from_json(row[0] if row else None)

    def handleInputRows(
        self, key: Any, rows: Iterator[Row], timerValues: TimerValues
    ) -> Iterator[Row]:
        if key[0] is None:  # clock ticks (silver has no reading without a sensor id)
            return iter([])
        sensor_id = str(key[0])
        st = self._load()
        old_timer = st.silence_timer_ms(self.rules)
        readings = [
            Reading(r["event_ms"], r["metric"], r["value"], r["alert_type"], r["location"])
            for r in rows
        ]
        alerts = process_readings(self.rules, sensor_id, st, readings)
        new_timer = st.silence_timer_ms(self.rules)
        watermark = timerValues.getCurrentWatermarkInMs()
        if new_timer is not None and new_timer <= watermark:
            # Silent already by the watermark of this batch: a timer would be in the past.
            alerts += on_silence_timer(self.rules, sensor_id, st, new_timer)
            new_timer = None
        if old_timer != new_timer:
            if old_timer is not None:
                self.handle.deleteTimer(old_timer)
            if new_timer is not None:
                self.handle.registerTimer(new_timer)
        self.state.update((st.to_json(),))
        return iter([Row(**a._asdict()) for a in alerts])

    def handleExpiredTimer(
        self, key: Any, timerValues: TimerValues, expiredTimerInfo: ExpiredTimerInfo
    ) -> Iterator[Row]:
        sensor_id = str(key[0])
        st = self._load()
        alerts = on_silence_timer(self.rules, sensor_id, st, expiredTimerInfo.getExpiryTimeInMs())
        self.state.update((st.to_json(),))
        return iter([Row(**a._asdict()) for a in alerts])

    def close(self) -> None:
        pass


def clock_ticks(ticks: DataFrame) -> DataFrame:
    """``_ops/alerts_clock`` rows -> rows shaped like ``detect_stateful``'s input, without a
    sensor: they move the watermark and reach no detector."""
    types = {"value": "double", "event_time": "timestamp"}
    return ticks.select(
        *[F.lit(None).cast(types.get(c, "string")).alias(c) for c in ALERTS_INPUT],
        F.lit(None).cast("long").alias("event_ms"),
        F.col("clock").alias("watermark_time"),
    )


def detect_stateful(
    readings: DataFrame, rules: AlertRules, watermark: str, ticks: DataFrame | None = None
) -> DataFrame:
    """Streaming silver readings (and ``clock_ticks``) -> stateful alerts (DETECTED schema),
    per sensor. The watermark follows event times capped at ingest time
    (``gold.watermark_clock``): one reading stamped minutes ahead must not make every other
    sensor's readings late. It drives the silence timers only: the watermarked column is not
    passed to ``transformWithState``, so Spark drops no reading behind it."""
    stamped = readings.select(
        *ALERTS_INPUT,
        F.unix_millis("event_time").alias("event_ms"),
        watermark_clock(readings).alias("watermark_time"),
    )
    if ticks is not None:
        stamped = stamped.unionByName(clock_ticks(ticks))
    return (
        stamped.withWatermark("watermark_time", watermark)
        .drop("watermark_time")
        .groupBy("sensor_id")
        .transformWithState(AlertProcessor(rules), DETECTED, "Append", "EventTime")
    )


# --- the wall-clock path of SENSOR_SILENT ---
def clock_tick_ms(newest_ms: int | None, idle_ms: int, grace_ms: int) -> int | None:
    """The event time a clock tick carries after ``idle_ms`` of wall clock without a silver
    reading: the newest event time seen, moved on by the idle time beyond ``grace_ms``. None
    while the grace lasts or before any event time is known."""
    if newest_ms is None or idle_ms <= grace_ms:
        return None
    return newest_ms + idle_ms - grace_ms


def _progress_ms(text: str | None) -> int | None:
    """Epoch ms of a progress report's time (``2026-01-05T08:00:00.000Z``); None if absent."""
    if not text:
        return None
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


@dataclass
class WallClock:
    """Appends clock ticks to ``_ops/alerts_clock`` while the stateful query reads no silver
    reading for longer than ``ALERTS_IDLE_GRACE``, so its watermark (and the silence timers)
    follow the wall clock through an outage of every sensor. Ticks stop as soon as silver
    readings come again; a replay of old data, which keeps coming, never gets one."""

    spark: SparkSession
    settings: Settings
    query: StreamingQuery
    newest_ms: int | None = None  # newest watermark clock of a reading seen
    last_data: float = field(default_factory=time.monotonic)
    last_tick_ms: int = 0
    last_batch: int = -1

    def observe(self, reports: list[Any]) -> None:
        """Take the newest event time, and when silver last had readings, from the query's
        progress reports not seen yet."""
        for progress in reports:
            if int(progress.get("batchId", -1)) <= self.last_batch:
                continue
            self.last_batch = int(progress["batchId"])
            event = progress.get("eventTime") or {}
            readings = sum(
                int(s.get("numInputRows") or 0)
                for s in progress.get("sources", [])
                if "alerts_clock" not in str(s.get("description"))
            )
            newest = _progress_ms(event.get("max"))
            if readings and newest is not None:
                self.last_data = time.monotonic()
                self.newest_ms = max(self.newest_ms or newest, newest)
            elif self.newest_ms is None:  # restarted in an outage: the watermark tells
                mark = _progress_ms(event.get("watermark"))
                if mark:
                    self.newest_ms = mark + self.settings.alerts_watermark_seconds * 1000

    def tick(self) -> int | None:
        """Append one tick if one is due; return its event time (ms)."""
        idle_ms = int((time.monotonic() - self.last_data) * 1000)
        grace_ms = self.settings.alerts_idle_grace_seconds * 1000
        due = clock_tick_ms(self.newest_ms, idle_ms, grace_ms)
        if due is None or due <= self.last_tick_ms:
            return None
        self.spark.createDataFrame(
            [(datetime.fromtimestamp(due / 1000).astimezone(), datetime.now().astimezone())],
            ALERTS_CLOCK,
        ).write.format("delta").mode("append").save(self.settings.alerts_clock_path)
        self.last_tick_ms = due
        logger.info("alerts clock tick %s", kv(job=JOB_NAME, clock_ms=due, idle_ms=idle_ms))
        return due

    def run(self) -> None:
        every = max(1.0, self.settings.alerts_idle_grace_seconds / 4)
        while self.query.isActive:
            try:
                self.observe(self.query.recentProgress)
                self.tick()
            except Exception as exc:  # a tick is best effort: the next one follows
                if not self.query.isActive:
                    return
                logger.warning("alerts clock tick failed %s", kv(job=JOB_NAME, error=exc))
            time.sleep(every)

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, name="alerts-wall-clock", daemon=True)
        thread.start()
        return thread


# --- pure transforms ---
def alert_id_column(status: str) -> Column:
    """``detectors.alert_id`` in Spark: sha256 of sensor|metric|type|status|event µs, 32 hex."""
    text = F.concat_ws(
        "|",
        F.col("sensor_id"),
        F.coalesce(F.col("metric"), F.lit("")),
        F.col("alert_type"),
        F.lit(status),
        F.unix_micros("event_time").cast("string"),
    )
    return F.substring(F.sha2(text, 256), 1, 32)


def static_alerts(readings: DataFrame, ruleset: RuleSet) -> DataFrame:
    """Silver readings with a static flag -> alert rows (DETECTED columns, event_time)."""
    threshold: Column = F.lit(None).cast("double")
    rule: Column = F.lit(None).cast("string")
    for a in ruleset.static_alerts:
        limit, op = (a.above, ">") if a.above is not None else (a.below, "<")
        hit = F.col("alert_type") == a.alert_type
        threshold = F.when(hit, F.lit(limit)).otherwise(threshold)
        rule = F.when(hit, F.lit(f"{a.metric} {op} {limit:g}")).otherwise(rule)
    return readings.where(F.col("alert_type").isNotNull()).select(
        alert_id_column(FIRED).alias("alert_id"),
        "sensor_id",
        "metric",
        "location",
        "alert_type",
        "severity",
        F.lit(FIRED).alias("status"),
        "event_time",
        "value",
        threshold.cast("double").alias("threshold"),
        F.lit(None).cast("double").alias("baseline"),
        F.to_json(F.struct(rule.alias("rule"))).alias("evidence"),
    )


def to_alert_rows(alerts: DataFrame, detector: str, rule_version: str, batch_id: int) -> DataFrame:
    """Detected alerts -> the gold/alerts contract (``schemas.GOLD_ALERTS``)."""
    if "event_time" not in alerts.columns:
        alerts = alerts.withColumn("event_time", F.timestamp_millis("event_ms"))
    extra = {
        "detector": F.lit(detector),
        "rule_version": F.lit(rule_version),
        "batch_id": F.lit(batch_id).cast("long"),
        "detected_at": F.current_timestamp(),
    }
    return alerts.select(
        *[
            (extra[f.name] if f.name in extra else F.col(f.name)).cast(f.dataType).alias(f.name)
            for f in GOLD_ALERTS
        ]
    )


def kafka_records(alert_rows: DataFrame) -> DataFrame:
    """Alert rows -> Kafka records: key alert_id, value the row as JSON."""
    return alert_rows.select(
        F.col("alert_id").alias("key"),
        F.to_json(F.struct(*[F.col(f.name) for f in GOLD_ALERTS])).alias("value"),
    )


# --- writers ---
@dataclass
class AlertsBatchWriter:
    """foreachBatch of the stateful and static queries: Delta exactly once, then Kafka."""

    spark: SparkSession
    settings: Settings
    detector: str
    rule_version: str
    ruleset: RuleSet | None = None  # the static query's silver rules
    app_id: str = ""

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        if not self.app_id:
            self.app_id = query_app_id(
                self.spark, f"iot-lakehouse-alerts-{self.detector}", query_name(self.detector)
            )
        if self.ruleset is not None:
            require_columns(batch, ALERTS_INPUT, "silver")
            batch = static_alerts(batch, self.ruleset)
        rows = to_alert_rows(batch, self.detector, self.rule_version, batch_id)
        rows, observed = materialise(rows, F.count("*").alias("n"))
        count = int(observed["n"])
        if count:
            append_once(rows, self.settings.alerts_path, self.app_id, batch_id)
            publish(rows, self.settings)
            echo_batch(rows, f"gold/alerts, {self.detector}", batch_id, self.settings.console_rows)
        logger.info(
            "alerts batch %s",
            kv(job=JOB_NAME, detector=self.detector, batch_id=batch_id, alerts=count),
        )


def publish(alert_rows: DataFrame, settings: Settings) -> None:
    """Send alert rows to the alerts topic (at least once: a retried batch sends again)."""
    try:
        (
            kafka_records(alert_rows)
            .write.format("kafka")
            .option("kafka.bootstrap.servers", settings.kafka_bootstrap_servers)
            .option("kafka.acks", "all")
            .option("kafka.max.block.ms", "20000")
            .option("topic", settings.kafka_alerts_topic)
            .save()
        )
    except Exception as exc:
        cause = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else repr(exc)
        raise JobError(
            f"could not send alerts to Kafka topic {settings.kafka_alerts_topic!r} at "
            f"{settings.kafka_bootstrap_servers}: {cause}. Is the broker up and the topic there? "
            "./start_kafka.sh starts the local broker and creates it (KAFKA_ALERTS_TOPIC)."
        ) from exc


@dataclass
class AlertCountsWriter:
    """foreachBatch of the counts query: fold new gold/alerts rows into alert_counts_5m."""

    spark: SparkSession
    settings: Settings
    _seen_us: int | None = field(default=None, init=False)
    _started: bool = field(default=False, init=False)

    def __call__(self, alerts: DataFrame, batch_id: int) -> None:
        fired, stats = materialise(
            alerts.where(F.col("status") == FIRED),
            F.count("*").alias("n"),
            F.min(F.unix_micros("event_time")).alias("lo"),
            F.max(F.unix_micros("event_time")).alias("hi"),
        )
        if not self._started:  # after a restart: what the table has seen so far
            self._seen_us, self._started = self._stored_max_us(), True
        if not stats["n"]:
            return
        delay = self.settings.gold_watermark_seconds * MICROS
        seen, hi = self._seen_us, int(stats["hi"])
        marks = BatchWatermarks(
            watermark_us=None if seen is None else seen - delay,
            max_event_us=hi if seen is None else max(seen, hi),
            delay_us=delay,
        )
        upsert_window_rows(
            self.spark,
            self.settings,
            ALERT_COUNTS_TABLE,
            fired,
            batch_id,
            marks,
            int(stats["lo"]),
            hi,
        )
        self._seen_us = marks.max_event_us
        echo_changed_rows(self.spark, self.settings, ALERT_COUNTS_TABLE, batch_id)

    def _stored_max_us(self) -> int | None:
        row = (
            self.spark.read.format("delta")
            .load(self.settings.gold_path(ALERT_COUNTS_TABLE.name))
            .agg(F.max(F.unix_micros("last_event_time")).alias("seen"))
            .first()
        )
        return None if row is None or row["seen"] is None else int(row["seen"])


# --- wiring ---
def create_alert_tables(spark: SparkSession, settings: Settings) -> None:
    table("gold/alerts").create_if_missing(spark, settings, properties=CHANGE_FEED)
    ALERT_COUNTS_TABLE.create_if_missing(spark, settings)
    table("_ops/alerts_clock").create_if_missing(spark, settings)


def _silver_stream(spark: SparkSession, settings: Settings, part: str) -> DataFrame:
    """Silver as the source of the detector query ``part`` (its whole snapshot first when
    the query starts afresh: ``checkpoints.delta_source_options``)."""
    limit = settings.alerts_max_files_per_trigger
    return (
        spark.readStream.format("delta")
        .options(
            **delta_source_options(spark, settings, f"{JOB_NAME}/{part}", maxFilesPerTrigger=limit)
        )
        .load(settings.silver_readings_path)
    )


def _start(
    df: DataFrame, part: str, sink: Any, settings: Settings, available_now: bool
) -> StreamingQuery:
    """One of the job's queries: named alerts_<part>, checkpoint _checkpoints/alerts/<part>."""
    return start_foreach_batch(
        df, query_name(part), f"{JOB_NAME}/{part}", sink, settings, available_now
    )


def start_alerts_stream(
    spark: SparkSession, settings: Settings, available_now: bool = False
) -> list[StreamingQuery]:
    """Start the three alert queries. ``available_now``: run the detectors to the end of
    silver first, then the counts to the end of gold/alerts."""
    rules = load_alert_rules(settings.alert_rules_file)
    ruleset = load_rules(settings.silver_rules_file, settings.silver_max_future_seconds)
    create_alert_tables(spark, settings)
    ticks = spark.readStream.format("delta").load(settings.alerts_clock_path)
    detectors = [
        _start(
            detect_stateful(
                _silver_stream(spark, settings, STATEFUL), rules, settings.alerts_watermark, ticks
            ),
            STATEFUL,
            AlertsBatchWriter(spark, settings, STATEFUL, rules.version),
            settings,
            available_now,
        ),
        _start(
            _silver_stream(spark, settings, STATIC),
            STATIC,
            AlertsBatchWriter(spark, settings, STATIC, ruleset.version, ruleset),
            settings,
            available_now,
        ),
    ]
    if available_now:
        for query in detectors:
            query.awaitTermination()
    else:
        WallClock(spark, settings, detectors[0]).start()
    counts_source = (
        spark.readStream.format("delta")
        .options(**delta_source_options(spark, settings, f"{JOB_NAME}/{COUNTS}"))
        .load(settings.alerts_path)
    )
    counts = _start(
        counts_source, COUNTS, AlertCountsWriter(spark, settings), settings, available_now
    )
    logger.info(
        "alerts streams started %s",
        kv(
            job=JOB_NAME,
            source=settings.silver_readings_path,
            alerts=settings.alerts_path,
            topic=settings.kafka_alerts_topic,
            watermark=settings.alerts_watermark,
            rules=rules.version,
            available_now=available_now,
        ),
    )
    return [*([] if available_now else detectors), counts]
