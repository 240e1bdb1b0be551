"""What a job does when its checkpoint is gone or damaged (see docs/guarantees.md).

- **bronze**, checkpoint lost: it resumes after the newest Kafka offset per partition that its
  table already holds (the table is the truth; nothing is read twice, nothing skipped); from
  the landing folder, it skips the files (path and modification time) its table holds.
- **silver, gold, alerts**, checkpoint lost while their tables hold rows: they refuse to start.
  Starting over would read their whole input again and write every row a second time;
  ``iot-lakehouse rerun <layer> --cascade`` is the safe way to rebuild them.
- **any job**, checkpoint damaged (a file Spark reads first on a restart does not parse):
  checked before the job starts and after a failure; no retry; the error names the file and
  says to move the checkpoint aside, which then leads to one of the cases above.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from iot_lakehouse.errors import JobError, JobRefused
from iot_lakehouse.logs import kv
from iot_lakehouse.settings import Settings

logger = logging.getLogger(__name__)

EARLIEST = -2  # Spark's startingOffsets JSON: the earliest offset of a partition


def hadoop_fs(spark: SparkSession, path: str) -> tuple[Any, Any]:
    """(Hadoop FileSystem, Hadoop Path) of ``path``: local folders and URIs (s3a://…) alike."""
    jvm: Any = spark.sparkContext._jvm
    hpath = jvm.org.apache.hadoop.fs.Path(path)
    return hpath.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()), hpath


def has_progress(spark: SparkSession, checkpoint: str) -> bool:
    """True if the checkpoint folder of one query holds offsets Spark would resume from."""
    fs, root = hadoop_fs(spark, checkpoint)
    offsets = root.suffix("/offsets")
    return bool(fs.exists(offsets)) and any(
        s.getPath().getName().isdigit() for s in fs.listStatus(offsets)
    )


# Delta's file limit per trigger high enough for any table: one batch reads it whole.
WHOLE_SNAPSHOT = str(2**31 - 1)


def delta_source_options(
    spark: SparkSession, settings: Settings, checkpoint: str, **limits: int | str
) -> dict[str, str]:
    """Reader options of a Delta source of gold, the alerts or the serving job.

    A query starting afresh (no offsets in ``checkpoint``, the name under ``_checkpoints/``)
    reads the table's whole current snapshot in its first batch (SNAPSHOT_IN_FIRST_BATCH):
    Delta orders a snapshot's files by modification time, which ``maintain``'s OPTIMIZE (or a
    copy of the lakehouse) resets, so a snapshot read over several batches could pass old
    readings after newer ones, behind a watermark those moved. Once the query has progress,
    the per-trigger ``limits`` apply (new commits come in version order).
    """
    fresh = not has_progress(spark, settings.checkpoint_path(checkpoint))
    if settings.snapshot_in_first_batch and fresh:
        return {"maxFilesPerTrigger": WHOLE_SNAPSHOT}
    return settings.source_limits(**limits)


def query_checkpoints(settings: Settings, job: str) -> list[str]:
    """The checkpoint folder of each query of ``job``: one for most jobs, one per query for
    the alerts job (``_checkpoints/alerts/<query>``)."""
    if job == "alerts":
        from iot_lakehouse.pipeline.alerts import QUERY_PARTS

        return [settings.checkpoint_path(f"{job}/{part}") for part in QUERY_PARTS]
    if job == "serve":
        from iot_lakehouse.pipeline.serving import QUERY_PARTS as SERVING_PARTS

        return [settings.checkpoint_path(f"{job}/{part}") for part in SERVING_PARTS]
    return [settings.checkpoint_path(job)]


def delta_table_exists(spark: SparkSession, path: str) -> bool:
    """True once a Delta table has been committed at ``path``, by this or any other process.

    Reads the file system rather than asking Delta: Delta caches a table's log per process, and
    a cached "no table here" does not notice another process creating it.
    """
    return any(n.endswith(".json") or ".checkpoint." in n for n in delta_log_files(spark, path))


def delta_log_files(spark: SparkSession, path: str) -> list[str]:
    """Names of the files in the Delta log of the table at ``path`` (none if it has no log)."""
    fs, log = hadoop_fs(spark, f"{path.rstrip('/')}/_delta_log")
    if not fs.exists(log):
        return []
    return [status.getPath().getName() for status in fs.listStatus(log)]


def delta_table_has_data(spark: SparkSession, path: str) -> bool:
    """True once a Delta table at ``path`` has taken a write after its creation (a job creates
    its tables empty when it starts), read from the file system like ``delta_table_exists``."""
    names = delta_log_files(spark, path)
    if not names:
        return False
    if any(
        ".checkpoint." in n or (n.endswith(".json") and n[:20].isdigit() and int(n[:20]) > 0)
        for n in names
    ):
        return True
    first = read_text(
        spark, f"{path.rstrip('/')}/_delta_log/{0:020d}.json"
    )  # a write, not a CREATE
    return first is not None and '"add":' in first


def table_has_rows(spark: SparkSession, path: str) -> bool:
    """True if a Delta table exists at ``path`` and holds at least one row."""
    if not delta_table_exists(spark, path):
        return False
    return spark.read.format("delta").load(path).limit(1).count() > 0


def refuse_lost_checkpoint(
    spark: SparkSession, settings: Settings, job: str, tables: list[str]
) -> None:
    """JobError if one of derived ``job``'s queries has no checkpoint progress but one of its
    ``tables`` (the layer's tables, ``layers.layer_table_paths``) holds rows.

    Each query is checked on its own: a job of several queries whose one checkpoint is lost
    would run that query from the start again (the others resuming) and write its rows twice.
    """
    lost = [c for c in query_checkpoints(settings, job) if not has_progress(spark, c)]
    if not lost:
        return
    written = [p for p in tables if table_has_rows(spark, p)]
    if written:
        raise JobError(
            f"job {job} has no checkpoint at {', '.join(lost)}, but {written[0]} "
            "already holds rows it wrote: starting over would read all its input again and "
            f"write every row twice. Put the checkpoint back, or rebuild the layer with "
            f"`iot-lakehouse rerun {job} --cascade` (see docs/guarantees.md)."
        )


def bronze_resume_offsets(spark: SparkSession, settings: Settings, checkpoint: str) -> str | None:
    """startingOffsets JSON for a bronze job that has lost its checkpoint but whose table
    holds records of the topic: the offset after the newest one per partition (earliest for
    partitions the table has none of). None when the checkpoint has progress or the table
    holds nothing of the topic: Spark's own start (checkpoint, else earliest) is right."""
    from iot_lakehouse.runtime.kafka_offsets import kafka_watermarks

    if has_progress(spark, checkpoint) or not table_has_rows(spark, settings.bronze_events_path):
        return None
    newest = {
        int(row["partition"]): int(row["newest"])
        for row in spark.read.format("delta")
        .load(settings.bronze_events_path)
        .where(F.col("topic") == settings.kafka_topic)
        .groupBy("partition")
        .agg(F.max("offset").alias("newest"))
        .collect()
    }
    if not newest:
        return None
    watermarks = kafka_watermarks(settings)
    if watermarks is None:
        raise JobError(
            f"bronze has no checkpoint at {checkpoint} and resumes after the offsets its table "
            f"holds, but the broker at {settings.kafka_bootstrap_servers} does not list topic "
            f"{settings.kafka_topic}; start the broker (./start_kafka.sh) and try again"
        )
    offsets = {str(p): newest[p] + 1 if p in newest else EARLIEST for p in sorted(watermarks)}
    logger.warning(
        "bronze checkpoint missing: resuming after the newest offsets in the table %s",
        kv(checkpoint=checkpoint, topic=settings.kafka_topic, offsets=json.dumps(offsets)),
    )
    return json.dumps({settings.kafka_topic: offsets})


def bronze_files_already_read(
    spark: SparkSession, settings: Settings, checkpoint: str
) -> list[str]:
    """The landing-file deliveries (``bronze.landed_file_id``: path and modification time)
    bronze's table holds, for a file query that has lost its checkpoint: a new checkpoint
    would read every file in the landing folder again. Empty when the checkpoint has progress
    (Spark knows what it read) or the table holds no file records."""
    from iot_lakehouse.pipeline.bronze import landed_file_id

    if has_progress(spark, checkpoint) or not table_has_rows(spark, settings.bronze_events_path):
        return []
    read = [
        str(row["id"])
        for row in spark.read.format("delta")
        .load(settings.bronze_events_path)
        .where(F.col("source_file").isNotNull())
        .select(landed_file_id(F.col("source_file"), F.col("kafka_timestamp")).alias("id"))
        .distinct()
        .collect()
    ]
    if read:
        logger.warning(
            "bronze file checkpoint missing: skipping the files its table already holds %s",
            kv(checkpoint=checkpoint, files=len(read)),
        )
    return read


def topic_identity_file(settings: Settings) -> str:
    """Where bronze records the identity of the Kafka topic its table holds records of: a
    file beside the table's data (Delta ignores folders starting with ``_``), so it outlives
    a lost checkpoint as the table's offsets do."""
    return f"{settings.bronze_events_path.rstrip('/')}/_kafka_topics/{settings.kafka_topic}.json"


def read_text(spark: SparkSession, path: str) -> str | None:
    """The text of the file at ``path`` (local or a URI), None if there is none."""
    fs, hpath = hadoop_fs(spark, path)
    if not fs.exists(hpath):
        return None
    jvm: Any = spark.sparkContext._jvm
    stream = fs.open(hpath)
    try:
        return str(jvm.org.apache.commons.io.IOUtils.toString(stream, "UTF-8"))
    finally:
        stream.close()


def write_text(spark: SparkSession, path: str, text: str) -> None:
    """Write ``text`` to the file at ``path`` (local or a URI), replacing it."""
    fs, hpath = hadoop_fs(spark, path)
    out = fs.create(hpath, True)
    try:
        out.write(bytearray(text.encode()))
    finally:
        out.close()


def same_topic(recorded: dict[str, str], current: dict[str, str]) -> bool:
    """True if two identities (``kafka_topic_identity``) name one topic on one cluster."""
    keys = ("topic_id", "cluster_id")
    return all(recorded.get(k) == current.get(k) for k in keys)


def bind_topic_identity(spark: SparkSession, settings: Settings, checkpoint: str) -> None:
    """Check that the sensor topic is the one bronze has read, else JobError; record its
    identity (topic id, cluster id) when bronze holds nothing of it yet.

    Kafka offsets mean something only within one topic: a topic deleted and created again
    (or a broker whose data folder was wiped) starts at offset 0, and bronze, resuming from
    its checkpoint or its table's offsets, would skip the new records or take them for
    records it already holds.
    """
    from iot_lakehouse.runtime.kafka_offsets import kafka_topic_identity

    current = kafka_topic_identity(settings)
    if current is None:
        raise JobError(
            f"bronze cannot check topic {settings.kafka_topic}: the broker at "
            f"{settings.kafka_bootstrap_servers} does not answer or does not list it; start "
            "the broker (./start_kafka.sh) and try again"
        )
    path = topic_identity_file(settings)
    text = read_text(spark, path)
    recorded = json.loads(text) if text else None
    if recorded is not None and same_topic(recorded, current):
        return
    holds_topic = has_progress(spark, checkpoint) or (
        table_has_rows(spark, settings.bronze_events_path)
        and spark.read.format("delta")
        .load(settings.bronze_events_path)
        .where(F.col("topic") == settings.kafka_topic)
        .limit(1)
        .count()
        > 0
    )
    if recorded is not None and holds_topic:
        raise JobRefused(
            f"bronze refuses topic {settings.kafka_topic}: it is not the topic bronze has read "
            f"(topic id {current['topic_id']} on cluster {current['cluster_id']}, bronze read "
            f"{recorded.get('topic_id')} on {recorded.get('cluster_id')}): it was deleted and "
            "created again, or the broker's data was wiped, so its offsets start over. Keep "
            "what bronze holds and ingest the new topic as a new lineage: set KAFKA_TOPIC to a "
            "new topic name, or LAKEHOUSE_PATH to a new lakehouse (see docs/guarantees.md)."
        )
    write_text(spark, path, json.dumps(current))
    logger.info("kafka topic bound %s", kv(path=path, **current))


def _readable_log_file(text: str) -> bool:
    """An offsets or commits file of Spark's checkpoint: ``v<N>``, then JSON lines (``-`` for
    a source without an offset)."""
    lines = text.splitlines()
    if not lines or not re.fullmatch(r"v\d+", lines[0].strip()):
        return False
    for line in lines[1:]:
        if line.strip() in ("", "-"):
            continue
        try:
            json.loads(line)
        except ValueError:
            return False
    return len(lines) > 1


def unreadable_checkpoint_files(checkpoint: str) -> list[str]:
    """The files Spark reads first on a restart (``metadata`` and the newest ``offsets`` and
    ``commits`` entry of each query folder) that it could not parse: a torn write, garbage.
    Local checkpoints only (an empty list for object storage)."""
    root = Path(checkpoint)
    if "://" in checkpoint or not root.is_dir():
        return []
    bad: list[str] = []
    for folder in [root, *(d for d in root.iterdir() if d.is_dir())]:
        metadata = folder / "metadata"
        if metadata.is_file():
            try:
                json.loads(metadata.read_text(errors="replace"))
            except ValueError:
                bad.append(str(metadata))
        for log in ("offsets", "commits"):
            entries = [f for f in (folder / log).glob("*") if f.name.isdigit() and f.is_file()]
            if not entries:
                continue
            newest = max(entries, key=lambda f: int(f.name))
            if not _readable_log_file(newest.read_text(errors="replace")):
                bad.append(str(newest))
    return bad


def refuse_damaged_checkpoint(settings: Settings, job: str) -> None:
    """JobError naming the damaged files if the job's checkpoint cannot be read."""
    bad = unreadable_checkpoint_files(settings.checkpoint_path(job))
    if bad:
        raise damaged_checkpoint_error(settings, job, bad)


def damaged_checkpoint_error(settings: Settings, job: str, files: list[str]) -> JobError:
    """The error of a job whose checkpoint cannot be read, with what to do."""
    after = (
        "bronze then resumes after the newest offsets in its table"
        if job == "bronze"
        else f"then rebuild with `iot-lakehouse rerun {job} --cascade`"
    )
    return JobError(
        f"job {job}: its checkpoint at {settings.checkpoint_path(job)} looks damaged (cannot "
        f"parse {', '.join(files)}). Move it aside (keep it for diagnosis) and start the job "
        f"again; {after} (see docs/guarantees.md)."
    )
