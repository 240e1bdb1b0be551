"""Idempotent Delta appends: a micro-batch writes each table at most once, whatever restarts.

A streaming job may run a micro-batch again after a crash (its checkpoint had not yet recorded
the batch as done). Every append of a batch therefore carries a mark in its commit's
``userMetadata``: the writer (``base:<query id>``, see ``schemas.query_app_id``) and the batch
id. Before its first append to a table in a run, a writer reads the table's newest commits for
its latest mark; afterwards it knows its own last write, so an append costs one Spark job.

Delta's own idempotent writes (``txnAppId``/``txnVersion``) would do the same, but Delta 4.4
rebuilds the table's whole state (checkpoint plus every newer commit: three Spark jobs with a
shuffle) for every such write to read the recorded transactions (docs/benchmarks.md). Marks
written by older versions of the project as Delta transactions are still honoured.
"""

from __future__ import annotations

import json
import logging
import threading

from pyspark.sql import DataFrame, SparkSession

from iot_lakehouse.logs import kv

logger = logging.getLogger(__name__)

# How many of a table's newest commits a writer searches for its own last mark. Only the job
# that owns a table writes it (one at a time, by its lock) besides `maintain`, so a job's last
# write is among the newest few commits; a table that took this many commits from others since
# a job's last write would make the job write its next batch again if it was a replay.
MARK_SEARCH_COMMITS = 1000
MARK_KEY = "iot_lakehouse_writer"
# The operations of appends older versions made with Delta transactions (DataFrame writes,
# the Delta streaming sink).
UNMARKED_WRITES = frozenset({"WRITE", "STREAMING UPDATE"})

_last_written: dict[tuple[str, str], int] = {}
_lock = threading.Lock()


def write_mark(app_id: str, batch_id: int) -> str:
    """The ``userMetadata`` of an append: who wrote it, and for which batch."""
    return json.dumps({MARK_KEY: app_id, "batch_id": batch_id}, sort_keys=True)


def marked_batch(user_metadata: str | None, app_id: str) -> int | None:
    """The batch id ``user_metadata`` says ``app_id`` wrote; None for any other commit."""
    if not user_metadata or MARK_KEY not in user_metadata:
        return None
    try:
        mark = json.loads(user_metadata)
    except ValueError:
        return None
    if not isinstance(mark, dict) or mark.get(MARK_KEY) != app_id:
        return None
    batch = mark.get("batch_id")
    return batch if isinstance(batch, int) else None


def transaction_app_ids(app_id: str, path: str) -> tuple[str, str]:
    """The Delta transaction ids older versions wrote for ``app_id``: ``append_once``'s
    ``<app id>:<path>``, and the Delta streaming sink's bare query id (bronze)."""
    return f"{app_id}:{path}", app_id.rsplit(":", 1)[-1]


def recorded_transaction(spark: SparkSession, path: str, app_ids: tuple[str, ...]) -> int:
    """The highest Delta transaction version recorded for any of ``app_ids`` (-1: none)."""
    from delta.tables import DeltaTable

    jvm = spark.sparkContext._jvm
    assert jvm is not None
    DeltaTable.forPath(spark, path)  # brings the log up to date
    log = jvm.org.apache.spark.sql.delta.DeltaLog.forTable(spark._jsparkSession, path)
    transactions = log.unsafeVolatileSnapshot().transactions()
    versions = [transactions.get(app).get() for app in app_ids if transactions.get(app).isDefined()]
    return max((int(v) for v in versions), default=-1)


def last_written_batch(spark: SparkSession, path: str, app_id: str) -> int:
    """The newest batch ``app_id`` appended to the Delta table at ``path`` (-1: none)."""
    from delta.tables import DeltaTable

    if not DeltaTable.isDeltaTable(spark, path):
        return -1
    history = DeltaTable.forPath(spark, path).history(MARK_SEARCH_COMMITS)
    commits = history.select("operation", "userMetadata").collect()  # newest first
    for row in commits:
        batch = marked_batch(row["userMetadata"], app_id)
        if batch is not None:
            return batch
    # Reading Delta's transactions rebuilds the table's state: only where an older version
    # of the project may have written (an append without a mark).
    if any(row["operation"] in UNMARKED_WRITES and not row["userMetadata"] for row in commits):
        return recorded_transaction(spark, path, transaction_app_ids(app_id, path))
    return -1


def append_once(df: DataFrame, path: str, app_id: str, batch_id: int) -> bool:
    """Append ``df`` to the Delta table at ``path`` unless batch ``batch_id`` of ``app_id``
    (or a later one) already did; return whether it appended.

    What a writer appended in this process is remembered until a write fails: a failed
    append may still have committed, so the next one reads the table's commits again."""
    key = (app_id, path)
    with _lock:
        last = _last_written.pop(key, None)
    if last is None:
        last = last_written_batch(df.sparkSession, path, app_id)
    if batch_id <= last:
        with _lock:
            _last_written[key] = last
        logger.info(
            "append skipped, already written %s",
            kv(table=path, app_id=app_id, batch_id=batch_id, last_written=last),
        )
        return False
    (
        df.write.format("delta")
        .mode("append")
        .option("userMetadata", write_mark(app_id, batch_id))
        .save(path)
    )
    with _lock:
        _last_written[key] = batch_id
    return True
