"""Table schemas as StructType constants: the contracts of ARCHITECTURE.md in code."""

from __future__ import annotations

from pyspark.sql.types import (
    BinaryType,
    DateType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

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
