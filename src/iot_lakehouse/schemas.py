"""Table schemas as StructType constants: the contracts of ARCHITECTURE.md in code."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pyspark.sql import SparkSession
from pyspark.sql.types import (
    ArrayType,
    BinaryType,
    BooleanType,
    DateType,
    DoubleType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

from iot_lakehouse.logs import kv

logger = logging.getLogger(__name__)

# bronze/sensor_events: the record exactly as received, plus where and when it came from.
BRONZE_EVENTS = StructType(
    [
        StructField("raw_value", BinaryType(), nullable=True),  # bytes as received (any encoding)
        StructField("payload", StringType(), nullable=True),  # the same, decoded; null if not UTF-8
        StructField("key", StringType(), nullable=True),
        StructField("topic", StringType(), nullable=False),
        StructField("partition", IntegerType(), nullable=False),
        StructField("offset", LongType(), nullable=False),
        StructField("kafka_timestamp", TimestampType(), nullable=True),
        StructField("source_file", StringType(), nullable=True),  # file source only
        StructField("ingest_time", TimestampType(), nullable=False),
        StructField("ingest_date", DateType(), nullable=False),
    ]
)

BRONZE_PARTITION_COLUMNS = ("ingest_date",)

# Columns of the Kafka source (Spark's fixed schema for format("kafka")).
KAFKA_SOURCE_COLUMNS = ("key", "value", "topic", "partition", "offset", "timestamp")

# Columns with file statistics where a table has long raw columns: its keys, lineage and times.
DLQ_STATS_COLUMNS = (
    "sensor_id",
    "metric",
    "bronze_topic",
    "bronze_partition",
    "bronze_offset",
    "batch_id",
    "rejected_at",
)

# silver/readings: one row per sensor, metric and instant.
SILVER_READINGS = StructType(
    [
        StructField("sensor_id", StringType(), nullable=True),
        StructField("metric", StringType(), nullable=True),
        StructField("value", DoubleType(), nullable=True),
        StructField("unit", StringType(), nullable=True),
        StructField("event_time", TimestampType(), nullable=True),
        StructField("event_date", DateType(), nullable=True),
        StructField("location", StringType(), nullable=True),
        StructField("record_format", StringType(), nullable=True),  # wide | long
        StructField("quality_flags", ArrayType(StringType()), nullable=True),  # warn rule codes
        StructField("alert_type", StringType(), nullable=True),  # static flags: HIGH_TEMP, …
        StructField("severity", StringType(), nullable=True),
        StructField("bronze_topic", StringType(), nullable=True),
        StructField("bronze_partition", IntegerType(), nullable=True),
        StructField("bronze_offset", LongType(), nullable=True),
        StructField("bronze_ingest_time", TimestampType(), nullable=True),
        StructField("kafka_timestamp", TimestampType(), nullable=True),  # of the bronze record
        StructField("rule_version", StringType(), nullable=True),
        StructField("processed_at", TimestampType(), nullable=True),
    ]
)

# _ops/alerts_clock: wall-clock ticks the alerts job reads to move its watermark while no
# silver reading comes (alerts.WallClock).
ALERTS_CLOCK = StructType(
    [
        StructField("clock", TimestampType(), nullable=False),  # the event time it stands for
        StructField("written_at", TimestampType(), nullable=False),
    ]
)

# dlq/silver_rejects: one row per rejected reading (or per record that gave none).
DLQ_REJECTS = StructType(
    [
        StructField("raw_value", BinaryType(), nullable=True),
        StructField("payload", StringType(), nullable=True),
        StructField("reasons", ArrayType(StringType()), nullable=False),
        StructField("detail", StringType(), nullable=True),
        StructField("sensor_id", StringType(), nullable=True),
        StructField("metric", StringType(), nullable=True),
        StructField("value_raw", StringType(), nullable=True),
        StructField("timestamp_raw", StringType(), nullable=True),
        StructField("rule_version", StringType(), nullable=True),
        StructField("bronze_topic", StringType(), nullable=True),
        StructField("bronze_partition", IntegerType(), nullable=True),
        StructField("bronze_offset", LongType(), nullable=True),
        StructField("bronze_ingest_time", TimestampType(), nullable=True),
        StructField("kafka_timestamp", TimestampType(), nullable=True),  # of the bronze record
        StructField("batch_id", LongType(), nullable=True),
        StructField("rejected_at", TimestampType(), nullable=True),
        StructField("rejected_date", DateType(), nullable=True),
    ]
)

# _ops/silver_duplicates: readings not written to silver because their key was already there.
SILVER_DUPLICATES = StructType(
    [
        StructField("sensor_id", StringType(), nullable=True),
        StructField("metric", StringType(), nullable=True),
        StructField("event_time", TimestampType(), nullable=True),
        StructField("bronze_topic", StringType(), nullable=True),
        StructField("bronze_partition", IntegerType(), nullable=True),
        StructField("bronze_offset", LongType(), nullable=True),
        StructField("kept_topic", StringType(), nullable=True),
        StructField("kept_partition", IntegerType(), nullable=True),
        StructField("kept_offset", LongType(), nullable=True),
        StructField("batch_id", LongType(), nullable=True),
        StructField("detected_at", TimestampType(), nullable=True),
    ]
)


# dlq/redrive_history: one row per DLQ row and rule version it was judged under again.
REDRIVE_HISTORY = StructType(
    [
        StructField("bronze_topic", StringType(), nullable=True),
        StructField("bronze_partition", IntegerType(), nullable=True),
        StructField("bronze_offset", LongType(), nullable=True),
        StructField("metric", StringType(), nullable=True),
        StructField("rejected_under", StringType(), nullable=True),  # rule version in the DLQ
        StructField("judged_under", StringType(), nullable=False),  # rule version now
        StructField("outcome", StringType(), nullable=False),  # redriven | still_rejected
        StructField("reasons", ArrayType(StringType()), nullable=True),  # under judged_under
        StructField("judged_at", TimestampType(), nullable=False),
    ]
)


# What each column holds, as ``DESCRIBE`` shows it (the column's comment, set when a table is
# created). One text per column name: a name means the same in every table that has it.
COLUMN_COMMENTS = {
    # bronze: the record as received
    "raw_value": "the record's bytes exactly as received (any encoding)",
    "payload": "raw_value decoded as UTF-8; null if it is not valid UTF-8",
    "key": "the Kafka record key",
    "topic": "Kafka topic the record was read from",
    "partition": "Kafka partition the record was read from",
    "offset": "Kafka offset of the record in its partition",
    "kafka_timestamp": "Kafka timestamp of the bronze record",
    "source_file": "the landing file the record came from (file source only)",
    "ingest_time": "when bronze wrote the record",
    "ingest_date": "date of ingest_time (partition column)",
    # readings
    "sensor_id": "the sensor's id",
    "metric": "what was measured (temperature, humidity, …); null for sensor-level rows",
    "value": "the reading's value, in unit",
    "unit": "unit of the value (°C, %, hPa, …)",
    "event_time": "when the reading was taken (UTC), from the record",
    "event_date": "date of event_time (partition column)",
    "location": "where the sensor stands",
    "record_format": "shape of the bronze record: wide (one record, many metrics) or long",
    "quality_flags": "codes of the warn-level rules the reading broke (kept, flagged)",
    "alert_type": "kind of alert: HIGH_TEMP, SPIKE, SENSOR_SILENT, …",
    "severity": "warning or critical",
    "bronze_topic": "Kafka topic of the bronze record this row came from",
    "bronze_partition": "Kafka partition of the bronze record this row came from",
    "bronze_offset": "Kafka offset of the bronze record this row came from",
    "bronze_ingest_time": "when bronze wrote the record this row came from",
    "rule_version": "version of the silver rules that judged the reading",
    "processed_at": "when silver wrote the row",
    # _ops/alerts_clock
    "clock": "the event time a wall-clock tick stands for (moves the alerts watermark)",
    "written_at": "when the tick was written",
    # the DLQ and redrives
    "reasons": "reason codes of the rejection (docs/pipeline.md lists them)",
    "detail": "the rejection in words",
    "value_raw": "the value as it came, before any parsing",
    "timestamp_raw": "the timestamp as it came, before any parsing",
    "batch_id": "the micro-batch that wrote (or last changed) the row",
    "rejected_at": "when the reading was rejected",
    "rejected_date": "date of rejected_at (partition column)",
    "kept_topic": "Kafka topic of the copy silver kept",
    "kept_partition": "Kafka partition of the copy silver kept",
    "kept_offset": "Kafka offset of the copy silver kept",
    "detected_at": "when the job found it",
    "rejected_under": "rule version the DLQ row was rejected under",
    "judged_under": "rule version it was judged under again",
    "outcome": "redriven (now valid, written to silver) or still_rejected",
    "judged_at": "when it was judged again",
    # _ops/quality: Great Expectations results
    "job": "the job that ran the validation",
    "rule_code": "the silver rule the expectation checks",
    "criticality": "error (rejects) or warn (flags)",
    "expectation": "the Great Expectations expectation type",
    "column": "the column it checks",
    "condition": "the rule's condition",
    "element_count": "rows validated",
    "unexpected_count": "rows that failed the expectation",
    "success": "true if no row failed",
    "error": "why the validation could not run, if it could not",
    "suite_duration_ms": "how long the suite took",
    "validated_at": "when the batch was validated",
    # gold windows
    "window_start": "start of the window (inclusive, UTC)",
    "window_end": "end of the window (exclusive, UTC)",
    "count": "readings in the window",
    "avg": "mean of the values",
    "min": "smallest value",
    "max": "largest value",
    "stddev": "sample standard deviation of the values",
    "p50": "median (from value_sketch)",
    "p95": "95th percentile (from value_sketch)",
    "p99": "99th percentile (from value_sketch)",
    "first_event_time": "earliest event time in the window",
    "last_event_time": "latest event time in the window",
    "m2": "sum of squared deviations from the mean (merges windows exactly)",
    "value_sketch": "KLL quantile sketch of the values (merges windows)",
    "window_hour": "the hour window_start falls in (generated; the partition)",
    "window_date": "the UTC date window_start falls in (generated; the partition)",
    "is_final": "true once the watermark passed window_end: the row no longer changes",
    "updated_at": "when the row last changed",
    "active_sensors": "distinct sensors that reported (from sensor_sketch)",
    "sensor_sketch": "theta sketch of the sensor ids (merges windows)",
    "alert_count": "alerts fired in the window",
    "affected_sensors": "distinct sensors with an alert (from sensor_sketch)",
    # gold/alerts
    "alert_id": "deterministic id of the alert (same alert, same id)",
    "status": "fired or cleared",
    "threshold": "the limit the value crossed, if the rule has one",
    "baseline": "what the value was compared with (rolling mean, …), if anything",
    "evidence": "the readings behind the alert, JSON",
    "detector": "static (a silver rule) or stateful (a detector over time)",
    # _ops/gold_late_readings and _ops/gold_progress
    "watermark": "gold's watermark: readings with an earlier event time are late",
    "lateness_seconds": "watermark minus event_time",
    "max_event_time": "the newest event time gold has seen",
    "next_watermark": "the watermark the next batch applies",
    "readings": "readings in the batch",
    "late_readings": "readings of the batch that came too late for gold",
    "committed_at": "when the batch committed",
}


def with_comments(schema: StructType) -> StructType:
    """``schema`` with each column's ``COLUMN_COMMENTS`` text as its comment."""
    return StructType(
        [
            StructField(
                f.name,
                f.dataType,
                f.nullable,
                {**f.metadata, "comment": COLUMN_COMMENTS[f.name]}
                if f.name in COLUMN_COMMENTS
                else f.metadata,
            )
            for f in schema
        ]
    )


# Every table is written by a streaming job, a commit per micro-batch: Delta's optimized write
# (a shuffle before the write) and auto compaction (a synchronous OPTIMIZE inside the commit)
# would run inside those batches. Compaction is ``iot-lakehouse maintain``'s, off the hot path.
TABLE_PROPERTIES = {
    "delta.autoOptimize.optimizeWrite": "false",
    "delta.autoOptimize.autoCompact": "false",
}


# The gold tables also keep their change data feed: a downstream job can stream the rows each
# MERGE inserted or updated (``readChangeFeed``) instead of re-reading the table.
CHANGE_FEED = {"delta.enableChangeDataFeed": "true"}


def table_properties(stats_columns: Sequence[str] = ()) -> dict[str, str]:
    """The properties a table is created with: ``TABLE_PROPERTIES``, and the columns Delta
    collects file statistics on (data skipping) where not every column is worth it (long raw
    text, sketches)."""
    if not stats_columns:
        return dict(TABLE_PROPERTIES)
    return {**TABLE_PROPERTIES, "delta.dataSkippingStatsColumns": ",".join(stats_columns)}


@dataclass(frozen=True)
class GeneratedColumn:
    """A column Delta computes from others on every write (``GENERATED ALWAYS AS``). As a
    partition column it also lets Delta derive partition filters from a query's filter on the
    column it comes from."""

    name: str
    type: str  # SQL type
    expression: str  # SQL over the table's columns


# A gold window table is partitioned by the period its windows start in, so a MERGE rewrites
# the files of the periods its batch touches, not every window since the table began.
WINDOW_HOUR = GeneratedColumn("window_hour", "TIMESTAMP", "date_trunc('HOUR', window_start)")
WINDOW_DATE = GeneratedColumn("window_date", "DATE", "CAST(window_start AS DATE)")


def create_table_if_missing(
    spark: SparkSession,
    path: str,
    schema: StructType,
    partition_by: Sequence[str],
    stats_columns: Sequence[str] = (),
    properties: Mapping[str, str] | None = None,
    generated: Sequence[GeneratedColumn] = (),
) -> None:
    """Create an empty Delta table at ``path`` with ``schema`` (its columns commented from
    ``COLUMN_COMMENTS``), the ``generated`` columns, ``table_properties`` and ``properties``
    unless one exists; give an existing table (made by an older version) the columns of
    ``schema`` and the ``properties`` it lacks, and warn if its partitioning differs (Delta
    cannot change it in place)."""
    from delta.tables import DeltaTable
    from pyspark.errors import AnalysisException

    discard_unfinished_creation(path)
    # An existing table keeps its layout here (a CREATE IF NOT EXISTS of another layout fails).
    existed = DeltaTable.isDeltaTable(spark, path)
    if not existed:
        builder = DeltaTable.create(spark).location(path).addColumns(with_comments(schema))
        for column in generated:
            builder = builder.addColumn(
                column.name,
                column.type,
                generatedAlwaysAs=column.expression,
                comment=COLUMN_COMMENTS[column.name],
            )
        if partition_by:
            builder = builder.partitionedBy(*partition_by)
        for key, value in {**table_properties(stats_columns), **(properties or {})}.items():
            builder = builder.property(key, value)
        try:
            builder.execute()
        except AnalysisException:
            if not DeltaTable.isDeltaTable(spark, path):
                raise
            # another process created it meanwhile: go on with the table it made
    table = sql_table(path)
    if properties:
        rows = spark.sql(f"SHOW TBLPROPERTIES {table}").collect()
        current = {str(r["key"]): str(r["value"]) for r in rows}
        unset = {k: v for k, v in properties.items() if current.get(k, "").lower() != v.lower()}
        if unset:
            pairs = ", ".join(f"'{k}' = '{v}'" for k, v in unset.items())
            spark.sql(f"ALTER TABLE {table} SET TBLPROPERTIES ({pairs})")
    have = {f.name for f in spark.read.format("delta").load(path).schema}
    missing = [f for f in schema if f.name not in have]
    if missing:
        columns = ", ".join(
            f"`{f.name}` {f.dataType.simpleString()} COMMENT '{sql_text(COLUMN_COMMENTS[f.name])}'"
            if f.name in COLUMN_COMMENTS
            else f"`{f.name}` {f.dataType.simpleString()}"
            for f in missing
        )
        spark.sql(f"ALTER TABLE {table} ADD COLUMNS ({columns})")
    if existed and partition_by and list(partition_by) != partition_columns(spark, path):
        logger.warning(
            "the table is not partitioned as this version makes it (an older version made it): "
            "it works, but slower. To rebuild it: stop the jobs, move the table's folder "
            "aside, then run `iot-lakehouse rerun <the layer that writes it>` %s",
            kv(table=path, partitioned_by=",".join(partition_by)),
        )


def partition_columns(spark: SparkSession, path: str) -> list[str]:
    """The partition columns of the Delta table at ``path``."""
    detail = spark.sql(f"DESCRIBE DETAIL {sql_table(path)}").first()
    assert detail is not None, "DESCRIBE DETAIL gives one row"
    return [str(c) for c in detail["partitionColumns"]]


def sql_table(path: str) -> str:
    """The Delta table at ``path`` as a SQL identifier (``delta.`<path>```)."""
    return f"delta.`{path.replace('`', '``')}`"


def sql_text(text: str) -> str:
    """``text`` for inside a single-quoted SQL string literal."""
    return text.replace("\\", "\\\\").replace("'", "\\'")


def discard_unfinished_creation(path: str) -> bool:
    """Remove the log of a creation of the local table at ``path`` that never committed (a
    ``_delta_log`` holding nothing but hidden temporary files and empty folders, e.g. left
    by a full disk):
    Delta would otherwise take it for a table and refuse every later creation. True if one
    was removed."""
    if "://" in path and not path.startswith("file://"):
        return False
    log = Path(path.removeprefix("file://")) / "_delta_log"
    if not log.is_dir() or any(not f.name.startswith(".") for f in log.rglob("*") if f.is_file()):
        return False
    shutil.rmtree(log)
    logger.warning("removed the log of a table creation that never committed %s", kv(table=path))
    return True


def query_app_id(spark: SparkSession, base: str, query_name: str) -> str:
    """``base:<query id>`` of the running query ``query_name``: the txnAppId of its writes.

    The query id lives in the checkpoint, so a new checkpoint (batch ids from 0 again) gets a
    new txnAppId instead of having its writes skipped as "already done"."""
    query = next(q for q in spark.streams.active if q.name == query_name)
    return f"{base}:{query.id}"


# _ops/quality: one row per Great Expectations check per validated micro-batch.
QUALITY_RESULTS = StructType(
    [
        StructField("job", StringType(), nullable=True),
        StructField("batch_id", LongType(), nullable=True),
        StructField("rule_version", StringType(), nullable=True),
        StructField("rule_code", StringType(), nullable=True),
        StructField("criticality", StringType(), nullable=True),
        StructField("expectation", StringType(), nullable=True),
        StructField("column", StringType(), nullable=True),
        StructField("condition", StringType(), nullable=True),
        StructField("element_count", LongType(), nullable=True),
        StructField("unexpected_count", LongType(), nullable=True),
        StructField("success", BooleanType(), nullable=True),
        StructField("error", StringType(), nullable=True),
        StructField("suite_duration_ms", LongType(), nullable=True),
        StructField("validated_at", TimestampType(), nullable=True),
    ]
)


def _window_row(keys: list[StructField], measures: list[StructField]) -> StructType:
    """A gold row: window, keys, measures, then when and by which batch it last changed."""
    return StructType(
        [
            StructField("window_start", TimestampType(), nullable=False),
            StructField("window_end", TimestampType(), nullable=False),
            *keys,
            *measures,
            StructField("is_final", BooleanType(), nullable=False),  # watermark passed the end
            StructField("batch_id", LongType(), nullable=False),  # gold micro-batch, last change
            StructField("updated_at", TimestampType(), nullable=False),
        ]
    )


_SENSOR_KEYS = [
    StructField("sensor_id", StringType(), nullable=True),
    StructField("metric", StringType(), nullable=True),
]
_VALUE_MEASURES = [
    StructField("count", LongType(), nullable=False),
    StructField("avg", DoubleType(), nullable=True),
    StructField("min", DoubleType(), nullable=True),
    StructField("max", DoubleType(), nullable=True),
    StructField("stddev", DoubleType(), nullable=True),  # sample standard deviation
    StructField("p50", DoubleType(), nullable=True),  # from value_sketch (docs/pipeline.md)
    StructField("p95", DoubleType(), nullable=True),
    StructField("p99", DoubleType(), nullable=True),
    StructField("unit", StringType(), nullable=True),
    StructField("first_event_time", TimestampType(), nullable=True),
    StructField("last_event_time", TimestampType(), nullable=True),
    # Mergeable state: sum of squared deviations and a KLL quantile sketch of the values.
    StructField("m2", DoubleType(), nullable=True),
    StructField("value_sketch", BinaryType(), nullable=True),
]

# gold/sensor_metrics_5m and gold/sensor_metrics_10m_sliding: per window, sensor and metric.
GOLD_SENSOR_METRICS = _window_row(_SENSOR_KEYS, _VALUE_MEASURES)

# gold/location_metrics_5m: per window, location and metric.
GOLD_LOCATION_METRICS = _window_row(
    [
        StructField("location", StringType(), nullable=True),
        StructField("metric", StringType(), nullable=True),
    ],
    [
        StructField("count", LongType(), nullable=False),
        StructField("avg", DoubleType(), nullable=True),
        StructField("min", DoubleType(), nullable=True),
        StructField("max", DoubleType(), nullable=True),
        StructField("active_sensors", LongType(), nullable=True),
        StructField("unit", StringType(), nullable=True),
        StructField("sensor_sketch", BinaryType(), nullable=True),  # theta sketch of sensor ids
    ],
)

# gold/alert_counts_5m: per window, alert type and severity.
GOLD_ALERT_COUNTS = _window_row(
    [
        StructField("alert_type", StringType(), nullable=True),
        StructField("severity", StringType(), nullable=True),
    ],
    [
        StructField("alert_count", LongType(), nullable=False),
        StructField("affected_sensors", LongType(), nullable=True),
        StructField("first_event_time", TimestampType(), nullable=True),
        StructField("last_event_time", TimestampType(), nullable=True),
        StructField("sensor_sketch", BinaryType(), nullable=True),
    ],
)

# gold/alerts: one row per alert (static flags of silver and the stateful detectors).
GOLD_ALERTS = StructType(
    [
        StructField("alert_id", StringType(), nullable=False),  # deterministic: dedupe on it
        StructField("sensor_id", StringType(), nullable=True),
        StructField("metric", StringType(), nullable=True),  # null for sensor-level alerts
        StructField("location", StringType(), nullable=True),
        StructField("alert_type", StringType(), nullable=False),
        StructField("severity", StringType(), nullable=False),
        StructField("status", StringType(), nullable=False),  # fired | cleared
        StructField("event_time", TimestampType(), nullable=False),  # of the reading (or silence)
        StructField("value", DoubleType(), nullable=True),
        StructField("threshold", DoubleType(), nullable=True),
        StructField("baseline", DoubleType(), nullable=True),
        StructField("evidence", StringType(), nullable=True),  # JSON, per alert type
        StructField("detector", StringType(), nullable=False),  # static | stateful
        StructField("rule_version", StringType(), nullable=True),
        StructField("batch_id", LongType(), nullable=False),
        StructField("detected_at", TimestampType(), nullable=False),
    ]
)

# _ops/gold_late_readings: silver readings that came after the gold watermark, kept here.
GOLD_LATE_READINGS = StructType(
    [
        StructField("sensor_id", StringType(), nullable=True),
        StructField("metric", StringType(), nullable=True),
        StructField("value", DoubleType(), nullable=True),
        StructField("unit", StringType(), nullable=True),
        StructField("event_time", TimestampType(), nullable=True),
        StructField("location", StringType(), nullable=True),
        StructField("alert_type", StringType(), nullable=True),
        StructField("severity", StringType(), nullable=True),
        StructField("bronze_topic", StringType(), nullable=True),
        StructField("bronze_partition", IntegerType(), nullable=True),
        StructField("bronze_offset", LongType(), nullable=True),
        StructField("watermark", TimestampType(), nullable=True),
        StructField("lateness_seconds", DoubleType(), nullable=True),  # watermark - event_time
        StructField("batch_id", LongType(), nullable=True),
        StructField("detected_at", TimestampType(), nullable=True),
    ]
)

# _ops/gold_progress: one row per gold micro-batch; the watermark is rebuilt from it on restart.
GOLD_PROGRESS = StructType(
    [
        StructField("batch_id", LongType(), nullable=False),
        StructField("watermark", TimestampType(), nullable=True),  # readings before it: late
        StructField("max_event_time", TimestampType(), nullable=True),  # seen so far, all batches
        StructField("next_watermark", TimestampType(), nullable=True),
        StructField("readings", LongType(), nullable=True),
        StructField("late_readings", LongType(), nullable=True),
        StructField("committed_at", TimestampType(), nullable=True),
    ]
)
