"""bronze -> silver: parse both input formats into one narrow table of readings, judge each
reading against the rule file, route rejects to the DLQ and count duplicates.

Pure transforms (``parse_records``, ``explode_readings``, ``with_static_alerts``, …) are
``DataFrame -> DataFrame``; ``SilverBatchWriter`` owns the writes of one micro-batch and
``start_silver_stream`` the stream.
"""

from __future__ import annotations

import functools
import logging
import operator
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.streaming.query import StreamingQuery

from iot_lakehouse.catalog import table
from iot_lakehouse.logs import kv
from iot_lakehouse.pipeline.console import echo_batch
from iot_lakehouse.pipeline.exactly_once import append_once
from iot_lakehouse.pipeline.quality import (
    BackgroundValidations,
    QualityValidator,
    validate_and_record,
    warm_up,
)
from iot_lakehouse.pipeline.rules import (
    RuleSet,
    load_rules,
    reason_detail,
    reduce_or,
    split_judged,
    with_rule_results,
)
from iot_lakehouse.pipeline.streaming import (
    StageClock,
    require_columns,
    start_foreach_batch,
)
from iot_lakehouse.runtime.spark_session import materialise, run_side_by_side
from iot_lakehouse.runtime.stream_metrics import kafka_time_quantiles, record_batch_latency
from iot_lakehouse.schemas import (
    DLQ_STATS_COLUMNS,
    query_app_id,
)
from iot_lakehouse.settings import Settings

logger = logging.getLogger(__name__)

JOB_NAME = "silver"
FIELDS_SCHEMA = "map<string,string>"
WIDE_REQUIRED = ("sensor_id", "timestamp")
LONG_REQUIRED = ("device_id", "timestamp", "type", "value")
LONG_MARKERS = ("type", "value")  # with both ids or neither: long if it has these
DEDUP_KEY = ("sensor_id", "metric", "event_time")
LINEAGE = ("bronze_topic", "bronze_partition", "bronze_offset")
EPOCH_MILLIS_FROM = 1e11  # numbers at or above this are epoch milliseconds, below: seconds
EPOCH_LIMIT = 1e14  # beyond any plausible epoch (ms): unparsable
QUOTED_NON_FINITE = ('"NaN"', '"Infinity"', '"-Infinity"')


def has(fields: Column, key: str | Column) -> Column:
    """True where the JSON object has ``key`` (even with a null value)."""
    return F.map_contains_key(fields, F.lit(key) if isinstance(key, str) else key)


def json_kind(raw: Column, payload: Column, fields: Column) -> Column:
    """What the payload is: empty, not_utf8, object, not_object (other JSON) or malformed."""
    trimmed = F.trim(payload)
    return (
        F.when(raw.isNull() | (F.length(raw) == 0), F.lit("empty"))
        .when(payload.isNull(), F.lit("not_utf8"))
        .when(trimmed == "", F.lit("empty"))
        .when(fields.isNotNull(), F.lit("object"))
        .when(trimmed.startswith("{"), F.lit("malformed"))
        .when(
            F.get_json_object(payload, "$").isNotNull() | (trimmed == "null"), F.lit("not_object")
        )
        .otherwise(F.lit("malformed"))
    )


def parse_event_time(raw: Column) -> Column:
    """ISO-8601 (any offset; naive = UTC) or epoch seconds / milliseconds -> timestamp."""
    # Text with a ':' is no number: skipping the cast spares the JVM an exception per ISO time.
    number = F.when(~raw.contains(":"), raw.try_cast("double"))
    finite = number.isNotNull() & (F.abs(number) < F.lit(EPOCH_LIMIT))
    seconds = F.when(F.abs(number) >= F.lit(EPOCH_MILLIS_FROM), number / 1000).otherwise(number)
    return F.when(finite, F.timestamp_seconds(seconds)).when(
        number.isNull(), raw.try_cast("timestamp")
    )


def long_format(fields: Column) -> Column:
    """True where a JSON object is a long-format record. The id field decides (``device_id``
    long, ``sensor_id`` wide), so extra fields never change the format; with both or neither
    id, the long format's other required fields decide, so the error names what is missing."""
    device, sensor = has(fields, "device_id"), has(fields, "sensor_id")
    long_rest = reduce_or([has(fields, k) for k in LONG_MARKERS])
    return (device & ~sensor) | ((device == sensor) & long_rest)


def parse_records(bronze: DataFrame) -> DataFrame:
    """Bronze rows -> one row per record with its JSON fields, format and common columns."""
    require_columns(
        bronze, ("raw_value", "payload", "topic", "partition", "offset", "ingest_time"), "bronze"
    )
    if "kafka_timestamp" not in bronze.columns:  # hand-made or older bronze frames
        bronze = bronze.withColumn("kafka_timestamp", F.lit(None).cast("timestamp"))
    fields = F.from_json(F.col("payload"), FIELDS_SCHEMA)
    df = bronze.withColumn("_fields", fields).withColumn(
        "json_kind", json_kind(F.col("raw_value"), F.col("payload"), F.col("_fields"))
    )
    f = F.col("_fields")
    is_long = long_format(f)
    record_format = (
        F.when(F.col("json_kind") != "object", F.lit(None))
        .when(is_long, F.lit("long"))
        .otherwise(F.lit("wide"))
    )
    building, floor = f.getItem("building"), f.getItem("floor")
    long_location = F.when(
        building.isNotNull(),
        F.concat(
            F.lit("building-"),
            building,
            F.when(floor.isNotNull(), F.concat(F.lit("/floor-"), floor)).otherwise(F.lit("")),
        ),
    )
    return (
        df.withColumn("record_format", record_format)
        .withColumn(
            "sensor_id",
            F.when(F.col("record_format") == "long", f.getItem("device_id")).otherwise(
                f.getItem("sensor_id")
            ),
        )
        .withColumn("timestamp_raw", f.getItem("timestamp"))
        .withColumn("event_time", parse_event_time(F.col("timestamp_raw")))
        .withColumn(
            "seconds_ahead",
            (F.unix_micros("event_time") - F.unix_micros("ingest_time")) / 1_000_000,
        )
        .withColumn(
            "location",
            F.when(F.col("record_format") == "long", long_location).otherwise(
                f.getItem("location")
            ),
        )
    )


def missing_field(metrics: tuple[str, ...]) -> Column:
    """Name of the first required field absent from the record, or null."""
    f = F.col("_fields")

    def absent(key: str) -> Column:  # a null id or timestamp is as good as none
        return f.getItem(key).isNull() if key != "value" else ~has(f, key)

    wide = [F.when(absent(k), F.lit(k)) for k in WIDE_REQUIRED]
    wide.append(F.when(~reduce_or([has(f, m) for m in metrics]), F.lit("/".join(metrics[:3]))))
    long = [F.when(absent(k), F.lit(k)) for k in LONG_REQUIRED]
    return F.when(F.col("record_format") == "long", F.coalesce(*long)).when(
        F.col("record_format") == "wide", F.coalesce(*wide)
    )


def explode_readings(records: DataFrame, ruleset: RuleSet) -> DataFrame:
    """One row per candidate reading: a wide record gives one per metric field it has, a long
    record one; a record with none (or that is not a JSON object) gives one row, metric null."""
    metrics = tuple(ruleset.metrics)
    f = F.col("_fields")
    wide_candidates = F.array_compact(
        F.array(
            *[
                F.when(
                    has(f, m),
                    F.struct(
                        F.lit(m).alias("metric"),
                        f.getItem(m).alias("value_raw"),
                        F.lit(True).alias("value_present"),
                        F.lit(None).cast("string").alias("unit_raw"),
                    ),
                )
                for m in metrics
            ]
        )
    )
    long_candidate = F.array(
        F.struct(
            F.lower(f.getItem("type")).alias("metric"),
            f.getItem("value").alias("value_raw"),
            has(f, "value").alias("value_present"),
            f.getItem("unit").alias("unit_raw"),
        )
    )
    candidates = F.when(F.col("record_format") == "wide", wide_candidates).when(
        F.col("record_format") == "long", long_candidate
    )
    units = F.create_map(
        *[x for m in ruleset.metrics.values() for x in (F.lit(m.name), F.lit(m.unit))]
    )
    return (
        records.withColumn("missing_field", missing_field(metrics))
        .withColumn("_reading", F.explode_outer(candidates))
        .withColumn("metric", F.col("_reading.metric"))
        .withColumn("value_raw", F.col("_reading.value_raw"))
        .withColumn("value_present", F.coalesce(F.col("_reading.value_present"), F.lit(False)))
        .withColumn("unit_raw", F.col("_reading.unit_raw"))
        .withColumn("value", in_metric_unit(number_value(F.col("value_raw")), ruleset))
        .withColumn("unit", F.coalesce(units[F.col("metric")], F.col("unit_raw")))
        .drop("_reading")
    )


def in_metric_unit(value: Column, ruleset: RuleSet) -> Column:
    """``value`` in its metric's unit: converted where ``unit_raw`` is one the rules convert
    from, as is otherwise (the metric's unit, none, or an unknown unit that is rejected)."""
    metric, unit = F.col("metric"), F.col("unit_raw")
    out = value
    for m in ruleset.metrics.values():
        for c in m.conversions:
            converted = (value + F.lit(c.add)) * F.lit(c.multiply)
            out = F.when((metric == m.name) & (unit == c.unit), converted).otherwise(out)
    return out


def number_value(raw: Column) -> Column:
    """The reading as a double (numbers or numeric strings); null if it is not a number.

    Spark's JSON reader hands non-finite numbers (bare NaN, Infinity, 1e309) over as quoted
    text; unquote them so they are judged as non-finite, not as the wrong type.
    """
    unquoted = F.when(raw.isin(*QUOTED_NON_FINITE), F.regexp_replace(raw, '"', "")).otherwise(raw)
    return unquoted.try_cast("double")


def with_static_alerts(df: DataFrame, ruleset: RuleSet) -> DataFrame:
    """alert_type and severity of the first static threshold a reading crosses (else null)."""
    alert_type: Column = F.lit(None).cast("string")
    severity: Column = F.lit(None).cast("string")
    for alert in reversed(ruleset.static_alerts):
        hit = F.col("metric") == alert.metric
        if alert.above is not None:
            hit = hit & (F.col("value") > alert.above)
        if alert.below is not None:
            hit = hit & (F.col("value") < alert.below)
        alert_type = F.when(hit, F.lit(alert.alert_type)).otherwise(alert_type)
        severity = F.when(hit, F.lit(alert.severity)).otherwise(severity)
    return df.withColumn("alert_type", alert_type).withColumn("severity", severity)


def judge(bronze: DataFrame, ruleset: RuleSet) -> DataFrame:
    """Bronze rows -> judged candidate readings (``reasons``, ``quality_flags`` added)."""
    candidates = explode_readings(parse_records(bronze), ruleset).drop("_fields")
    return with_rule_results(candidates, ruleset)


def to_silver_rows(valid: DataFrame, ruleset: RuleSet) -> DataFrame:
    """Valid judged readings -> the silver/readings contract."""
    return with_static_alerts(valid, ruleset).select(
        F.col("sensor_id"),
        F.col("metric"),
        F.col("value"),
        F.col("unit"),
        F.col("event_time"),
        F.to_date("event_time").alias("event_date"),
        F.col("location"),
        F.col("record_format"),
        F.col("quality_flags"),
        F.col("alert_type"),
        F.col("severity"),
        F.col("topic").alias("bronze_topic"),
        F.col("partition").alias("bronze_partition"),
        F.col("offset").alias("bronze_offset"),
        F.col("ingest_time").alias("bronze_ingest_time"),
        F.col("kafka_timestamp"),
        F.lit(ruleset.version).alias("rule_version"),
        F.current_timestamp().alias("processed_at"),
    )


def to_dlq_rows(rejected: DataFrame, ruleset: RuleSet, batch_id: int) -> DataFrame:
    """Rejected judged readings -> the dlq/silver_rejects contract."""
    now = F.current_timestamp()
    return rejected.select(
        F.col("raw_value"),
        F.col("payload"),
        F.col("reasons"),
        reason_detail(ruleset).alias("detail"),
        F.col("sensor_id"),
        F.col("metric"),
        F.col("value_raw"),
        F.col("timestamp_raw"),
        F.lit(ruleset.version).alias("rule_version"),
        F.col("topic").alias("bronze_topic"),
        F.col("partition").alias("bronze_partition"),
        F.col("offset").alias("bronze_offset"),
        F.col("ingest_time").alias("bronze_ingest_time"),
        F.col("kafka_timestamp"),
        F.lit(batch_id).cast("long").alias("batch_id"),
        now.alias("rejected_at"),
        F.to_date(now).alias("rejected_date"),
    )


KEPT = tuple(c.replace("bronze_", "kept_") for c in LINEAGE)


def held_keys(silver: DataFrame) -> DataFrame:
    """Silver rows -> their keys with the lineage of the row (``DEDUP_KEY`` + ``KEPT``), the
    ``held`` side of ``classify_readings``."""
    return silver.select(
        *DEDUP_KEY, *[F.col(b).alias(k) for b, k in zip(LINEAGE, KEPT, strict=True)]
    )


def classify_readings(rows: DataFrame, held: DataFrame) -> DataFrame:
    """Mark each reading of a batch with the lineage of the reading silver keeps for its key
    (``kept_topic``/``kept_partition``/``kept_offset``) and ``is_duplicate``.

    ``held`` holds the keys silver already has, with their lineage (``DEDUP_KEY`` + ``KEPT``).
    The kept reading of a key is silver's, else the batch's lowest lineage. A reading whose own
    lineage is the kept one is not a duplicate: a new key, or the very row an earlier attempt of
    this batch wrote (so a replayed batch is classified as it was the first time). One shuffle
    (a window over the key) does the in-batch dedup and the lookup together.
    """
    marked = rows.withColumn("_held", F.lit(False))
    silver_side = held.select(
        *DEDUP_KEY,
        *[F.col(k).alias(b) for k, b in zip(KEPT, LINEAGE, strict=True)],
        F.lit(True).alias("_held"),
    )
    order = Window.partitionBy(*DEDUP_KEY).orderBy(F.col("_held").desc(), *LINEAGE)
    both = marked.unionByName(silver_side, allowMissingColumns=True)
    kept = both.withColumns(
        {k: F.first(b).over(order) for k, b in zip(KEPT, LINEAGE, strict=True)}
    ).where(~F.col("_held"))
    own = functools.reduce(
        operator.and_, [F.col(b).eqNullSafe(F.col(k)) for k, b in zip(KEPT, LINEAGE, strict=True)]
    )
    return kept.withColumn("is_duplicate", ~own).drop("_held")


def to_duplicate_rows(dups: DataFrame, batch_id: int) -> DataFrame:
    """Duplicates -> the _ops/silver_duplicates ledger (key, own and kept lineage)."""
    return dups.select(
        *DEDUP_KEY,
        *LINEAGE,
        F.col("kept_topic"),
        F.col("kept_partition"),
        F.col("kept_offset"),
        F.lit(batch_id).cast("long").alias("batch_id"),
        F.current_timestamp().alias("detected_at"),
    )


@dataclass
class SilverBatchWriter:
    """Writes one micro-batch to silver, the DLQ and the duplicate ledger, exactly once.

    Every write is an ``append_once`` marked with the batch id, skipped if an earlier attempt
    of the same batch already committed it. A reading is inserted
    only if its key is not in silver yet; a key already there with this very bronze lineage
    (an earlier attempt of the same batch) is not counted as a duplicate, so the classification
    and therefore every table are the same whether a batch runs once or is replayed.
    """

    spark: SparkSession
    settings: Settings
    ruleset: RuleSet
    app_id: str = "iot-lakehouse-silver"
    validator: QualityValidator | None = None
    validations: BackgroundValidations | None = None

    def __post_init__(self) -> None:
        if self.validator is None and self.settings.quality_every_n_batches > 0:
            self.validator = QualityValidator(self.ruleset)
            # Importing Great Expectations takes seconds: do it while the stream starts.
            threading.Thread(target=warm_up, name="gx-import", daemon=True).start()
        if self.validator is not None and self.validations is None:
            self.validations = BackgroundValidations(JOB_NAME)

    def __call__(self, bronze_batch: DataFrame, batch_id: int) -> None:
        """foreachBatch entry point: bind the writes to this query's checkpoint, then write."""
        if ":" not in self.app_id:
            self.app_id = query_app_id(self.spark, self.app_id, JOB_NAME)
        self.write_batch(bronze_batch, batch_id)

    def write_batch(self, bronze_batch: DataFrame, batch_id: int) -> dict[str, int]:
        """Judge and write one batch; return the counts of valid, rejected and duplicates."""
        clock = StageClock()
        is_valid = F.size("reasons") == 0
        # Materialise the judged batch once: every later step reads it instead of re-parsing,
        # and the truncated plan keeps planning cheap. The raw bytes only go to the DLQ: kept
        # on rejected readings only, which keeps it smaller (each reading of a record carried
        # them). In the same pass: the valid readings' time range and dates (to prune the
        # silver lookup) and the number of rejects.
        judged, bounds = materialise(
            judge(bronze_batch, self.ruleset).withColumn(
                "raw_value", F.when(~is_valid, F.col("raw_value"))
            ),
            F.min(F.when(is_valid, F.col("event_time"))).alias("lo"),
            F.max(F.when(is_valid, F.col("event_time"))).alias("hi"),
            F.collect_set(F.when(is_valid, F.to_date("event_time"))).alias("dates"),
            F.count(F.when(~is_valid, F.lit(1))).alias("rejected"),
        )
        clock.lap("judge")
        valid, rejected = split_judged(judged)
        rows = to_silver_rows(valid, self.ruleset)
        inserted = F.when(~F.col("is_duplicate"), F.col("kafka_timestamp"))
        classified, stats = materialise(
            classify_readings(rows, self._held_keys(bounds, rows)),
            F.count(F.when(~F.col("is_duplicate"), F.lit(1))).alias("n"),
            F.count(F.when(F.col("is_duplicate"), F.lit(1))).alias("duplicates"),
            *kafka_time_quantiles(inserted),
        )
        counts = {
            "valid": int(stats["n"]),
            "rejected": int(bounds["rejected"]),
            "duplicates": int(stats["duplicates"]),
        }
        clock.lap("classify")
        to_insert = classified.where(~F.col("is_duplicate")).select(*rows.columns)
        duplicates = to_duplicate_rows(classified.where(F.col("is_duplicate")), batch_id)
        s = self.settings
        # Up to three tables, independent commits (each skipped if this batch already made
        # it), run side by side so one append's commit overhead overlaps another's work. An
        # empty part makes no commit: a replay of the batch finds it empty again.
        appends = []
        if counts["rejected"]:
            dlq_rows = to_dlq_rows(rejected, self.ruleset, batch_id)
            appends.append(lambda: self._append(dlq_rows, s.dlq_rejects_path, batch_id))
        if counts["duplicates"]:
            appends.append(lambda: self._append(duplicates, s.silver_duplicates_path, batch_id))
        if counts["valid"]:
            appends.append(lambda: self._append(to_insert, s.silver_readings_path, batch_id))
        run_side_by_side(*appends)
        clock.lap("delta_appends")
        if counts["valid"]:
            echo_batch(to_insert, "silver/readings", batch_id, s.console_rows)
        record_batch_latency("kafka_to_silver", JOB_NAME, batch_id, stats)
        self._validate_later(judged, batch_id)
        logger.info(
            "silver batch %s", kv(job=JOB_NAME, batch_id=batch_id, **counts, **clock.seconds())
        )
        return counts

    def _validate_later(self, judged: DataFrame, batch_id: int) -> None:
        """Every QUALITY_EVERY_N_BATCHES-th batch: Great Expectations on its judged rows, in
        the background (``BackgroundValidations``), so the batch does not wait for it."""
        every = self.settings.quality_every_n_batches
        if self.validator is None or self.validations is None or every <= 0:
            return
        if batch_id % every != every - 1:
            return
        validator, app_id = self.validator, self.app_id
        self.validations.submit(
            lambda: validate_and_record(
                self.spark,
                validator,
                judged,
                JOB_NAME,
                batch_id,
                self.settings.quality_results_path,
                app_id,
            ),
            batch_id,
        )

    def wait_for_validation(self) -> None:
        """Wait until the validation under way (if any) has written its results."""
        if self.validations is not None:
            self.validations.wait()

    def _held_keys(self, bounds: Mapping[str, Any], rows: DataFrame) -> DataFrame:
        """The keys silver holds in the batch's event dates and time range, with the lineage of
        their rows (``held_keys``)."""
        if bounds["lo"] is None:  # no valid reading: nothing to look up
            return held_keys(rows).limit(0)
        # Partition pruning on event_date and data skipping on event_time keep this lookup to
        # the files that can hold the batch's keys.
        stored = (
            self.spark.read.format("delta")
            .load(self.settings.silver_readings_path)
            .where(
                F.col("event_date").isin(list(bounds["dates"]))
                & F.col("event_time").between(bounds["lo"], bounds["hi"])
            )
        )
        # Late readings stretch that range to minutes of silver; only the batch's own keys
        # matter. A semi-join against them (broadcast: a batch has thousands) keeps the shuffle
        # of classify_readings to the batch's size instead of those minutes.
        keys = F.broadcast(rows.select(*DEDUP_KEY).distinct())
        return held_keys(stored.join(keys, list(DEDUP_KEY), "left_semi"))

    def _append(self, df: DataFrame, path: str, batch_id: int) -> None:
        append_once(df, path, self.app_id, batch_id)


def create_silver_tables(spark: SparkSession, settings: Settings) -> None:
    """Create silver, the DLQ and the duplicate ledger if they do not exist yet."""
    table("silver/readings").create_if_missing(spark, settings)
    table("dlq/silver_rejects").create_if_missing(spark, settings, DLQ_STATS_COLUMNS)
    table("_ops/silver_duplicates").create_if_missing(spark, settings)


def start_silver_stream(
    spark: SparkSession, settings: Settings, available_now: bool = False
) -> StreamingQuery:
    """Start the bronze -> silver query (Delta source, foreachBatch writer, own checkpoint)."""
    ruleset = load_rules(settings.silver_rules_file, settings.silver_max_future_seconds)
    create_silver_tables(spark, settings)
    source = (
        spark.readStream.format("delta")
        # Bounds a replay's micro-batches so a 1 GB driver never holds too much at once.
        .options(
            **settings.source_limits(
                maxFilesPerTrigger=settings.silver_max_files_per_trigger,
                maxBytesPerTrigger=settings.silver_max_bytes_per_trigger,
            )
        )
        .load(settings.bronze_events_path)
    )
    if settings.silver_rebuild_from is not None:  # `rerun silver --from DATE`
        source = source.where(F.col("ingest_date") >= F.lit(settings.silver_rebuild_from))
    query = start_foreach_batch(
        source,
        JOB_NAME,
        JOB_NAME,
        SilverBatchWriter(spark, settings, ruleset),
        settings,
        available_now,
    )
    logger.info(
        "silver stream started %s",
        kv(
            job=JOB_NAME,
            source=settings.bronze_events_path,
            table=settings.silver_readings_path,
            dlq=settings.dlq_rejects_path,
            rule_version=ruleset.version,
            available_now=available_now,
        ),
    )
    return query
