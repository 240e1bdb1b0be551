"""Kafka (or the landing folder) -> bronze: keep every record exactly as received.

Transforms are pure ``DataFrame -> DataFrame`` functions; ``start_bronze_stream`` owns the
source and the sink. Nothing is parsed or filtered here: a record that is not JSON or not even
UTF-8 is stored like any other (raw bytes in ``raw_value``, ``payload`` null).

With ``--source files`` a record is one line of a file in the landing folder (JSON lines, the
same formats as the topic). Its coordinates are ``topic = "file:<file name>@<modification time
in epoch ms>"``, partition 0 and ``offset`` = the line number, so every line has a unique
(topic, partition, offset) like a Kafka record, even when a file lands again under the same
name (a new delivery: silver counts its readings as duplicates); ``source_file`` holds the
full path and ``kafka_timestamp`` the file's modification time. Empty lines are layout, not
records, and are skipped. A file query that lost its checkpoint skips the files (path and
modification time) its table already holds, as a Kafka query resumes after its offsets.

With ``--source socket`` (a debugging source, as ``nc -lk 9999`` feeds it) a record is one
line read from a TCP server: ``topic = "socket:<host>:<port>"``, partition 0 and ``offset`` =
the batch's start in epoch milliseconds times a million plus the line's place in the batch,
unique across batches and restarts. Spark's socket source keeps nothing to replay: lines sent
while no query reads are lost, and no upstream ledger can tell (``reconcile`` says so).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming.query import StreamingQuery

from iot_lakehouse.catalog import table
from iot_lakehouse.errors import JobError
from iot_lakehouse.logs import kv
from iot_lakehouse.pipeline.checkpoints import (
    bind_topic_identity,
    bronze_files_already_read,
    bronze_resume_offsets,
    hadoop_fs,
)
from iot_lakehouse.pipeline.exactly_once import append_once
from iot_lakehouse.pipeline.streaming import require_columns, start_foreach_batch
from iot_lakehouse.schemas import (
    BRONZE_EVENTS,
    KAFKA_SOURCE_COLUMNS,
    query_app_id,
)
from iot_lakehouse.settings import Settings

logger = logging.getLogger(__name__)

JOB_NAME = "bronze"
SOURCES = ("kafka", "files", "socket")
FILE_TOPIC_PREFIX = "file:"
SOCKET_TOPIC_PREFIX = "socket:"
LINES_PER_MS = 1_000_000  # socket offsets: a batch's lines below the next millisecond's
# Spark's fixed schema of format("binaryFile"); a streaming source must be given it.
BINARY_FILE_SCHEMA = "path string, modificationTime timestamp, length long, content binary"
LATIN_1 = "ISO-8859-1"  # one character per byte: splits bytes without decoding them


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


def file_topic(path: Column, modified: Column) -> Column:
    """``file:<file name>@<modification time, epoch ms>``: the topic of a landed file's lines."""
    name = F.regexp_extract(path, "([^/]*)$", 1)
    return F.concat(F.lit(FILE_TOPIC_PREFIX), name, F.lit("@"), F.unix_millis(modified))


def landed_file_id(path: Column, modified: Column) -> Column:
    """``<full path>@<modification time, epoch ms>``: one delivery of one landed file."""
    return F.concat(path, F.lit("@"), F.unix_millis(modified))


def without_files(files_df: DataFrame, file_ids: list[str]) -> DataFrame:
    """binaryFile source rows minus the deliveries in ``file_ids`` (``landed_file_id``)."""
    if not file_ids:
        return files_df
    return files_df.where(~landed_file_id(F.col("path"), F.col("modificationTime")).isin(file_ids))


def file_lines_to_bronze_events(files_df: DataFrame) -> DataFrame:
    """Map binaryFile source rows (path, modificationTime, content) to one bronze row per line.

    The content is split as bytes: ISO-8859-1 maps every byte to one character and back, so a
    line that is not UTF-8 keeps its exact bytes in ``raw_value`` and gets a null ``payload``,
    as from Kafka.
    """
    require_columns(files_df, ("path", "modificationTime", "content"), "the file source")
    ingest_time = F.current_timestamp()
    lines = files_df.select(
        "path",
        "modificationTime",
        F.posexplode(F.split(F.decode("content", LATIN_1), "\n")).alias("line_no", "line"),
    )
    raw_line = F.encode(F.regexp_replace(F.col("line"), "\r\\z", ""), LATIN_1)
    return lines.where(F.length(raw_line) > 0).select(
        raw_line.alias("raw_value"),
        decoded_utf8(raw_line).alias("payload"),
        F.lit(None).cast("string").alias("key"),
        file_topic(F.col("path"), F.col("modificationTime")).alias("topic"),
        F.lit(0).alias("partition"),
        F.col("line_no").cast("long").alias("offset"),
        F.col("modificationTime").alias("kafka_timestamp"),
        F.col("path").alias("source_file"),
        ingest_time.alias("ingest_time"),
        F.to_date(ingest_time).alias("ingest_date"),
    )


def socket_topic(settings: Settings) -> str:
    """``socket:<host>:<port>``: the topic of the lines read from the socket source."""
    return f"{SOCKET_TOPIC_PREFIX}{settings.socket_host}:{settings.socket_port}"


def socket_lines_to_bronze_events(lines: DataFrame, topic: str, batch_start_ms: int) -> DataFrame:
    """Map socket source rows (``value``, ``timestamp``: one line and when it arrived) of one
    batch to bronze rows; the lines of one batch come in one partition, in order. Spark's
    socket source decodes lines as UTF-8 (bytes that are not become U+FFFD), so unlike Kafka
    and files, ``raw_value`` holds the decoded line's bytes."""
    require_columns(lines, ("value", "timestamp"), "the socket source")
    ingest_time = F.current_timestamp()
    raw_line = F.encode(F.col("value"), "UTF-8")
    offset = F.lit(batch_start_ms * LINES_PER_MS) + F.monotonically_increasing_id()
    return lines.select(
        raw_line.alias("raw_value"),
        decoded_utf8(raw_line).alias("payload"),
        F.lit(None).cast("string").alias("key"),
        F.lit(topic).alias("topic"),
        F.lit(0).alias("partition"),
        offset.alias("offset"),
        F.col("timestamp").alias("kafka_timestamp"),
        F.lit(None).cast("string").alias("source_file"),
        ingest_time.alias("ingest_time"),
        F.to_date(ingest_time).alias("ingest_date"),
    ).where(F.length("raw_value") > 0)


def read_socket(spark: SparkSession, settings: Settings) -> DataFrame:
    """Lines from the TCP server at SOCKET_HOST:SOCKET_PORT as a stream (one partition)."""
    return (
        spark.readStream.format("socket")
        .option("host", settings.socket_host)
        .option("port", settings.socket_port)
        .option("includeTimestamp", True)
        .option("numPartitions", 1)
        .load()
    )


def conform(df: DataFrame) -> DataFrame:
    """Order and type the columns exactly as the bronze table declares them."""
    return df.select(*[F.col(f.name).cast(f.dataType).alias(f.name) for f in BRONZE_EVENTS])


def read_kafka(
    spark: SparkSession, settings: Settings, starting_offsets: str = "earliest"
) -> DataFrame:
    """The sensor topic as a stream; ``starting_offsets`` applies only to a query without
    checkpoint progress (Spark resumes from the checkpoint otherwise)."""
    return (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", settings.kafka_bootstrap_servers)
        .option("subscribe", settings.kafka_topic)
        .option("startingOffsets", starting_offsets)
        .options(**settings.source_limits(maxOffsetsPerTrigger=settings.max_offsets_per_trigger))
        .option("failOnDataLoss", str(settings.fail_on_data_loss).lower())
        .load()
    )


def read_landing_files(spark: SparkSession, settings: Settings) -> DataFrame:
    """New files in the landing folder as a stream (each file once, by path; hidden files and
    names starting with ``_`` or ``.`` are ignored until renamed)."""
    landing = settings.landing_path
    if "://" not in landing and not Path(landing).is_dir():
        raise JobError(
            f"the landing folder {landing} does not exist; create it or set LANDING_PATH "
            "(`iot-lakehouse emitter reset` prepares one)"
        )
    return (
        spark.readStream.format("binaryFile")
        .schema(BINARY_FILE_SCHEMA)
        .option("pathGlobFilter", settings.landing_pattern)
        .options(
            **settings.source_limits(maxFilesPerTrigger=settings.landing_max_files_per_trigger)
        )
        .load(landing)
    )


def bronze_source(
    spark: SparkSession,
    settings: Settings,
    source: str,
    starting_offsets: str = "earliest",
    skip_files: list[str] | None = None,
) -> DataFrame:
    """The chosen source mapped to the bronze contract; ``skip_files`` (``landed_file_id``)
    are file deliveries not to read again."""
    if source == "kafka":
        return (
            read_kafka(spark, settings, starting_offsets)
            .transform(to_bronze_events)
            .transform(conform)
        )
    if source == "files":
        return (
            without_files(read_landing_files(spark, settings), skip_files or [])
            .transform(file_lines_to_bronze_events)
            .transform(conform)
        )
    raise JobError(f"unknown bronze source {source!r}; choose one of {list(SOURCES)}")


def start_socket_stream(
    spark: SparkSession, settings: Settings, available_now: bool, checkpoint: str
) -> StreamingQuery:
    """Lines from the socket source into bronze, a batch at a time (see the module's notes)."""
    if available_now:
        raise JobError(
            "--source socket cannot run --available-now: a socket has no end to drain to. "
            "Run it streaming and stop it with Ctrl+C."
        )
    topic = socket_topic(settings)
    logger.warning(
        "socket source: a debugging source with no replay %s",
        kv(
            job=JOB_NAME,
            topic=topic,
            note="lines sent while the job is not reading are lost and reconcile cannot tell; "
            "use Kafka or the landing folder for data you keep",
        ),
    )
    app: dict[str, str] = {}

    def write(lines: DataFrame, batch_id: int) -> None:
        if not app:
            app["id"] = query_app_id(spark, "iot-lakehouse-bronze-socket", checkpoint)
        start_ms = time.time_ns() // 1_000_000
        events = conform(socket_lines_to_bronze_events(lines, topic, start_ms))
        append_once(events, settings.bronze_events_path, app["id"], batch_id)

    table("bronze/sensor_events").create_if_missing(spark, settings)
    # Spark's socket source cannot resume: its offsets start again at every start and a
    # checkpoint of an earlier run makes the query fail ("offsets committed out of order").
    # Each run starts a new one; the time-based offsets keep the rows of every run apart.
    fs, folder = hadoop_fs(spark, settings.checkpoint_path(checkpoint))
    if fs.exists(folder):
        fs.delete(folder, True)
    query = start_foreach_batch(
        read_socket(spark, settings), checkpoint, checkpoint, write, settings, False
    )
    logger.info(
        "bronze stream started %s",
        kv(job=JOB_NAME, source=topic, table=settings.bronze_events_path, checkpoint=checkpoint),
    )
    return query


def start_bronze_stream(
    spark: SparkSession, settings: Settings, available_now: bool = False, source: str = "kafka"
) -> StreamingQuery:
    """Start the source -> bronze query: each micro-batch appended once (``append_once``).

    Each source has its own checkpoint (``bronze`` for Kafka, ``bronze_files`` for files):
    their offsets mean different things and must never be mixed. A query whose checkpoint was
    lost resumes after what its table holds: a Kafka query after the newest offsets, a file
    query without the files already read. A Kafka query refuses a topic that is not the one
    its table and checkpoint hold records of (deleted and created again, wiped broker)."""
    checkpoint = JOB_NAME if source == "kafka" else f"{JOB_NAME}_{source}"
    path = settings.checkpoint_path(checkpoint)
    if source == "socket":
        return start_socket_stream(spark, settings, available_now, checkpoint)
    # Before the topic's identity is recorded beside the table's files.
    table("bronze/sensor_events").create_if_missing(spark, settings)
    if source == "kafka":
        bind_topic_identity(spark, settings, path)
        resume = bronze_resume_offsets(spark, settings, path)
        events = bronze_source(spark, settings, source, resume or "earliest")
    else:
        skip = bronze_files_already_read(spark, settings, path)
        events = bronze_source(spark, settings, source, skip_files=skip)
    app: dict[str, str] = {}

    def write(batch: DataFrame, batch_id: int) -> None:
        if not app:
            app["id"] = query_app_id(spark, f"iot-lakehouse-{checkpoint}", checkpoint)
        append_once(conform(batch), settings.bronze_events_path, app["id"], batch_id)

    query = start_foreach_batch(events, checkpoint, checkpoint, write, settings, available_now)
    logger.info(
        "bronze stream started %s",
        kv(
            job=JOB_NAME,
            source=settings.kafka_topic if source == "kafka" else settings.landing_path,
            table=settings.bronze_events_path,
            checkpoint=settings.checkpoint_path(checkpoint),
            available_now=available_now,
        ),
    )
    return query
