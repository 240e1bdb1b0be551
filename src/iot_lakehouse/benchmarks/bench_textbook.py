"""The bench's textbook job: Kafka -> ``from_json`` -> a range filter -> Delta, in one hop.

    uv run python -m iot_lakehouse.benchmarks.bench_textbook --bootstrap-servers 127.0.0.1:9092 \\
        --topic sensors --table /tmp/textbook/silver --checkpoint /tmp/textbook/_checkpoint \\
        [--starting-offsets earliest] [--available-now]

What a streaming tutorial writes, and what ``iot-lakehouse bench`` sets beside this project's
bronze + silver: the generator's long-format reading parsed with a typed struct, the value
filtered to the metric's range of the silver rules, appended to a Delta table of its own with
its own checkpoint. Spark's defaults throughout (``SPARK_TUNING=false``: no source limits, 200
shuffle partitions, though it has no shuffle) and the default trigger (the next micro-batch as
soon as one ends); ``--available-now`` drains what is there and stops (for tests).

It gives none of the project's guarantees, on purpose: what does not parse, lacks a field or is
out of range is dropped without a trace (no bronze, no dead-letter queue), wide-format records
are not read at all, duplicates are appended again, an event time ten years ahead is kept, and
Spark's JSON parser reads what it reads by its defaults (single-quoted "JSON" included).
Each micro-batch is logged (``textbook batch``, with its input rows, start and duration), which
is how the bench measures its rate.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Mapping, Sequence
from types import FrameType

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming.query import StreamingQuery
from pyspark.sql.types import (
    DoubleType,
    IntegerType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

from iot_lakehouse.logs import configure_logging, kv
from iot_lakehouse.pipeline.rules import DOUBLE_MAX, load_rules
from iot_lakehouse.pipeline.rules import reduce_or as any_of
from iot_lakehouse.settings import Settings

logger = logging.getLogger(__name__)

COMPONENT = "textbook"
BATCH_MESSAGE = "textbook batch"
CORRUPT = "_corrupt_record"

# The generator's long-format reading (generator.LONG_FIELDS), typed; Spark puts the text of a
# record it cannot parse into the corrupt-record field.
LONG_READING = StructType(
    [
        StructField("timestamp", TimestampType()),
        StructField("device_id", StringType()),
        StructField("building", StringType()),
        StructField("floor", IntegerType()),
        StructField("type", StringType()),
        StructField("value", DoubleType()),
        StructField("unit", StringType()),
        StructField(CORRUPT, StringType()),
    ]
)
REQUIRED = ("sensor_id", "metric", "value", "event_time")


def metric_ranges(rules_path: str | None = None) -> dict[str, tuple[float, float]]:
    """Each metric's physical range from the silver rules; an open bound is the largest
    finite double (so NaN and infinities are out of every range)."""
    from pathlib import Path

    metrics = load_rules(Path(rules_path) if rules_path else None).metrics
    return {
        name: (
            -DOUBLE_MAX if spec.min_value is None else spec.min_value,
            DOUBLE_MAX if spec.max_value is None else spec.max_value,
        )
        for name, spec in metrics.items()
    }


def parse_readings(kafka: DataFrame) -> DataFrame:
    """Kafka records -> one row per long-format reading (null columns where it did not parse)."""
    parsed = F.from_json(
        F.col("value").cast("string"), LONG_READING, {"columnNameOfCorruptRecord": CORRUPT}
    )
    r = F.col("r")
    return kafka.select(parsed.alias("r")).select(
        r.getItem("device_id").alias("sensor_id"),
        r.getItem("type").alias("metric"),
        r.getItem("value").alias("value"),
        r.getItem("unit").alias("unit"),
        r.getItem("timestamp").alias("event_time"),
        F.concat(
            F.lit("building-"), r.getItem("building"), F.lit("/floor-"), r.getItem("floor")
        ).alias("location"),
        r.getItem(CORRUPT).alias(CORRUPT),
    )


def is_parsed() -> Column:
    """True where the record was a JSON object of the long format with every required field."""
    condition = F.col(CORRUPT).isNull()
    for name in REQUIRED:
        condition = condition & F.col(name).isNotNull()
    return condition


def is_in_range(metric: Column, value: Column, ranges: Mapping[str, tuple[float, float]]) -> Column:
    """True where ``value`` lies in the range of its ``metric``; false for an unknown metric."""
    return any_of([(metric == name) & value.between(lo, hi) for name, (lo, hi) in ranges.items()])


def keep_valid(readings: DataFrame, ranges: Mapping[str, tuple[float, float]]) -> DataFrame:
    """The parsed, in-range readings, without the corrupt-record column; the rest is dropped."""
    in_range = is_in_range(F.col("metric"), F.col("value"), ranges)
    return readings.where(is_parsed() & F.coalesce(in_range, F.lit(False))).drop(CORRUPT)


def start_textbook_query(
    spark: SparkSession,
    bootstrap_servers: str,
    topic: str,
    table: str,
    checkpoint: str,
    starting_offsets: str = "earliest",
    available_now: bool = False,
) -> StreamingQuery:
    """Kafka -> parsed, in-range readings -> Delta append: Spark's defaults, the default
    trigger (``available_now``: drain what is there, then stop)."""
    ranges = metric_ranges()
    kafka = (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", bootstrap_servers)
        .option("subscribe", topic)
        .option("startingOffsets", starting_offsets)
        .load()
    )
    writer = (
        parse_readings(kafka)
        .transform(lambda df: keep_valid(df, ranges))
        .writeStream.queryName(COMPONENT)
        .format("delta")
        .outputMode("append")
        .option("checkpointLocation", checkpoint)
    )
    if available_now:
        writer = writer.trigger(availableNow=True)
    return writer.start(table)


def log_new_batches(query: StreamingQuery, last_batch: int) -> int:
    """Log each finished micro-batch with input since ``last_batch`` once; the newest id."""
    for progress in query.recentProgress:
        batch_id = int(progress["batchId"])
        rows = int(progress.get("numInputRows") or 0)
        if batch_id <= last_batch or rows == 0:
            continue
        logger.info(
            "%s %s",
            BATCH_MESSAGE,
            kv(
                job=COMPONENT,
                batch_id=batch_id,
                input_rows=rows,
                batch_time=progress["timestamp"],
                batch_duration_ms=int(progress["durationMs"].get("triggerExecution", 0)),
            ),
        )
        last_batch = batch_id
    return last_batch


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m iot_lakehouse.benchmarks.bench_textbook",
        description="The bench's textbook Kafka -> Delta job (Spark defaults, no guarantees).",
    )
    parser.add_argument("--bootstrap-servers", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--table", required=True, help="path of its Delta table")
    parser.add_argument("--checkpoint", required=True, help="path of its checkpoint")
    parser.add_argument(
        "--starting-offsets",
        default="earliest",
        help="Kafka startingOffsets of a new checkpoint: earliest or latest (default %(default)s)",
    )
    parser.add_argument(
        "--available-now", action="store_true", help="drain what the topic holds, then stop"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the textbook job until it ends (``--available-now``) or SIGTERM / Ctrl-C."""
    args = build_parser().parse_args(argv)
    settings = Settings.from_env().with_(spark_tuning=False)
    configure_logging(COMPONENT, settings.log_level, settings.log_format)
    from iot_lakehouse.runtime.spark_session import build_spark

    spark = build_spark(settings, "iot-lakehouse-textbook")
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    query = start_textbook_query(
        spark,
        args.bootstrap_servers,
        args.topic,
        args.table,
        args.checkpoint,
        args.starting_offsets,
        args.available_now,
    )
    logger.info("textbook stream started %s", kv(topic=args.topic, table=args.table))
    last = -1
    try:
        while query.isActive and not stop.is_set():
            query.awaitTermination(1)
            last = log_new_batches(query, last)
        if query.isActive:
            query.stop()
        log_new_batches(query, last)
        error = query.exception()
    finally:
        spark.stop()
    if error is not None:
        logger.error("textbook job failed %s", kv(error=str(error)[:2000]))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
