"""Kafka -> bronze: keep every record exactly as received, with its coordinates.

Transforms are pure ``DataFrame -> DataFrame`` functions; ``start_bronze_stream`` owns the
source and the sink. Nothing is parsed or filtered here: a record that is not JSON or not even
UTF-8 is stored like any other (raw bytes in ``raw_value``, ``payload`` null).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming.query import StreamingQuery
from pyspark.sql.streaming.readwriter import DataStreamWriter

from iot_lakehouse.errors import JobError
from iot_lakehouse.logs import kv
from iot_lakehouse.schemas import BRONZE_EVENTS, BRONZE_PARTITION_COLUMNS, KAFKA_SOURCE_COLUMNS
from iot_lakehouse.settings import Settings

logger = logging.getLogger(__name__)

JOB_NAME = "bronze"


def require_columns(df: DataFrame, columns: tuple[str, ...], what: str) -> None:
    """Raise JobError naming the missing columns if ``df`` lacks any of ``columns``."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise JobError(f"{what} lacks columns {missing}; it has {df.columns}")


def with_trigger(
    writer: DataStreamWriter, settings: Settings, available_now: bool
) -> DataStreamWriter:
    """``availableNow`` (drain what is there, then stop) or the configured processing time."""
    if available_now:
        return writer.trigger(availableNow=True)
    return writer.trigger(processingTime=settings.trigger_interval)


def start_foreach_batch(
    df: DataFrame,
    query_name: str,
    checkpoint: str,
    sink: Callable[[DataFrame, int], None],
    settings: Settings,
    available_now: bool,
) -> StreamingQuery:
    """Start ``df`` as a named query with its own checkpoint, each micro-batch to ``sink``."""
    writer = (
        df.writeStream.queryName(query_name)
        .option("checkpointLocation", settings.checkpoint_path(checkpoint))
        .foreachBatch(sink)
    )
    return with_trigger(writer, settings, available_now).start()


def decoded_utf8(binary: Column) -> Column:
    """The bytes decoded as UTF-8, or null when they are not valid UTF-8."""
    return F.try_validate_utf8(binary.cast("string"))


def to_bronze_events(kafka_df: DataFrame) -> DataFrame:
    """Map Kafka source rows to the bronze contract (see ``schemas.BRONZE_EVENTS``)."""
    require_columns(kafka_df, KAFKA_SOURCE_COLUMNS, "the Kafka source")
    ingest_time = F.current_timestamp()
    return kafka_df.select(
        F.col("value").alias("raw_value"),
        decoded_utf8(F.col("value")).alias("payload"),
        decoded_utf8(F.col("key")).alias("key"),
        F.col("topic"),
        F.col("partition").cast("int").alias("partition"),
        F.col("offset").cast("long").alias("offset"),
        F.col("timestamp").alias("kafka_timestamp"),
        F.lit(None).cast("string").alias("source_file"),
        ingest_time.alias("ingest_time"),
        F.to_date(ingest_time).alias("ingest_date"),
    )


def conform(df: DataFrame) -> DataFrame:
    """Order and type the columns exactly as the bronze table declares them."""
    return df.select(*[F.col(f.name).cast(f.dataType).alias(f.name) for f in BRONZE_EVENTS])


def read_kafka(spark: SparkSession, settings: Settings) -> DataFrame:
    """The sensor topic as a stream, from the earliest offsets on the first start."""
    return (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", settings.kafka_bootstrap_servers)
        .option("subscribe", settings.kafka_topic)
        .option("startingOffsets", "earliest")
        .option("maxOffsetsPerTrigger", settings.max_offsets_per_trigger)
        .option("failOnDataLoss", str(settings.fail_on_data_loss).lower())
        .load()
    )


def start_bronze_stream(
    spark: SparkSession, settings: Settings, available_now: bool = False
) -> StreamingQuery:
    """Start the Kafka -> bronze query; its checkpoint makes the Delta sink exactly-once."""
    events = read_kafka(spark, settings).transform(to_bronze_events).transform(conform)
    writer = (
        events.writeStream.format("delta")
        .outputMode("append")
        .queryName(JOB_NAME)
        .option("checkpointLocation", settings.checkpoint_path(JOB_NAME))
        .partitionBy(*BRONZE_PARTITION_COLUMNS)
    )
    writer = with_trigger(writer, settings, available_now)
    query = writer.start(settings.bronze_events_path)
    logger.info(
        "bronze stream started %s",
        kv(
            job=JOB_NAME,
            topic=settings.kafka_topic,
            table=settings.bronze_events_path,
            checkpoint=settings.checkpoint_path(JOB_NAME),
            available_now=available_now,
        ),
    )
    return query
