"""``_ops/stream_metrics``: one row per finished micro-batch of every streaming query.

Each job starts a :class:`StreamMetricsRecorder`; one :class:`StreamMetricsListener` per
process (a Spark ``StreamingQueryListener``) hands it its queries' progress events. They become
rows (:func:`progress_row`, a pure function of the progress JSON) that the recorder appends to
the Delta table every few seconds with ``deltalake`` (no Spark job; Spark's own writer for a
lakehouse on object storage). The batch writers of silver and gold add end-to-end latency
(Kafka timestamp -> their commit) through :func:`record_latency`.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
from pyspark.sql import Column, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming.listener import StreamingQueryListener

from iot_lakehouse.logs import kv
from iot_lakehouse.runtime.consumer_group import ConsumerGroupPublisher

logger = logging.getLogger(__name__)

MAX_PENDING_ROWS = 10_000  # rows kept while the table cannot be written
LAST_EVENTS_WAIT_S = 10.0  # how long a closing recorder waits for late listener events
RECENT = timedelta(minutes=15)  # what `status` and the dashboard show: queries seen since
FLUSH_EVERY_S = 10.0  # one small file per job and flush: `iot-lakehouse maintain` compacts

_ACTIVE: dict[str, StreamMetricsRecorder] = {}  # job -> this process's recorder, while it runs
_ACTIVE_LOCK = threading.Lock()
# query name -> input rows of its newest finished batch in this process (every query, recorded
# or not): how large the driver's batches are now (``spark_session.expression_mode``)
LATEST_INPUT_ROWS: dict[str, int] = {}
# The one listener of the process: PySpark turns every progress event into Python objects
# once per registered listener, over many Py4J calls, so the jobs of one driver share it.
_LISTENER: list[StreamMetricsListener] = []  # at most one, while a recorder is active

_TS = pa.timestamp("us", tz="UTC")

# _ops/stream_metrics: the contract (docs/operations.md, "Watch it").
STREAM_METRICS = pa.schema(
    [
        pa.field("job", pa.string()),  # bronze | silver | gold | alerts
        pa.field("query", pa.string()),  # query name (alerts runs three)
        pa.field("query_id", pa.string()),  # stable across restarts (lives in the checkpoint)
        pa.field("run_id", pa.string()),  # new on every start
        pa.field("batch_id", pa.int64()),
        pa.field("batch_time", _TS),  # when the trigger fired
        pa.field("input_rows", pa.int64()),
        pa.field("input_rows_per_s", pa.float64()),
        pa.field("processed_rows_per_s", pa.float64()),
        pa.field("batch_duration_ms", pa.int64()),
        pa.field("kafka_lag_max", pa.int64()),  # Kafka source: offsets behind latest (worst)
        pa.field("kafka_lag_avg", pa.float64()),
        # Delta sources: commits of the upstream table this batch did not reach yet
        pa.field("delta_versions_behind", pa.int64()),
        pa.field("watermark", _TS),  # event-time watermark, if the query has one
        pa.field("rows_dropped_by_watermark", pa.int64()),
        pa.field("state_rows", pa.int64()),  # rows in the state store(s)
        pa.field("latency_kind", pa.string()),  # kafka_to_silver | kafka_to_gold | null
        pa.field("latency_p50_ms", pa.float64()),  # Kafka timestamp -> this batch's commit
        pa.field("latency_p95_ms", pa.float64()),
        pa.field("latency_rows", pa.int64()),  # readings the latency was measured over
        pa.field("recorded_at", _TS),
    ]
)


@dataclass(frozen=True)
class Latency:
    """End-to-end latency of one batch: Kafka timestamp -> commit of the batch's writes."""

    kind: str
    p50_ms: float | None
    p95_ms: float | None
    rows: int


def latency_of(
    kind: str, commit_us: int, early_us: int | None, mid_us: int | None, rows: int
) -> Latency:
    """Latency of a batch committed at ``commit_us`` whose readings' Kafka timestamps have 5th
    and 50th percentiles ``early_us`` and ``mid_us``: the commit time is the same for every
    reading, so latency p95 = commit - 5th percentile of the timestamps, p50 = commit - median."""
    if rows == 0 or early_us is None or mid_us is None:
        return Latency(kind, None, None, rows)
    return Latency(kind, (commit_us - mid_us) / 1000, (commit_us - early_us) / 1000, rows)


def kafka_time_quantiles(column: str | Column = "kafka_timestamp") -> list[Column]:
    """Aggregate columns ``kafka_q`` ([5th, 50th] percentile, epoch us) and ``kafka_n`` of a
    timestamp column (nulls are left out: ``F.when(cond, col)`` aggregates some rows only)."""
    timestamp = F.col(column) if isinstance(column, str) else column
    us = F.unix_micros(timestamp)
    return [
        F.percentile_approx(us, [0.05, 0.5], 10_000).alias("kafka_q"),
        F.count(timestamp).alias("kafka_n"),
    ]


def job_of_query(name: str | None) -> str:
    """The job a streaming query belongs to, by its name: ``bronze`` (``bronze_files``),
    ``silver``, ``gold``, ``alerts_<part>``. Jobs sharing one driver tell their queries apart
    by it."""
    return (name or "").split("_")[0]


def record_batch_latency(kind: str, query: str, batch_id: int, stats: Any) -> None:
    """Hand the latency of a just-committed batch to the recorder of the query's job (if any),
    from a row holding ``kafka_time_quantiles``. Call it right after the batch's last commit."""
    recorder = _ACTIVE.get(job_of_query(query))
    if recorder is None or stats is None:
        return
    commit_us = time.time_ns() // 1000
    quantiles = stats["kafka_q"] or [None, None]
    latency = latency_of(kind, commit_us, quantiles[0], quantiles[1], int(stats["kafka_n"] or 0))
    recorder.record_latency(query, batch_id, latency)


def _time(text: str | None) -> datetime | None:
    """An ISO-8601 instant of a progress event (``2026-11-22T10:00:00.123Z``) as UTC."""
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def _metric(sources: list[dict[str, Any]], name: str) -> list[float]:
    values = []
    for source in sources:
        raw = (source.get("metrics") or {}).get(name)
        if raw not in (None, ""):
            values.append(float(raw))
    return values


def _delta_offset(source: Mapping[str, Any]) -> tuple[str, int] | None:
    """(table id, version) a Delta source's batch ended at; None for other sources. Spark
    renders the offset as a JSON string (``{"reservoirId": …, "reservoirVersion": 5, …}``)."""
    end = source.get("endOffset")
    if isinstance(end, str):
        try:
            end = json.loads(end)
        except ValueError:
            return None
    if not isinstance(end, dict) or "reservoirVersion" not in end:
        return None
    if end.get("isStartingVersion"):  # still reading the table as it was at the start:
        return None  # its version says nothing about how much of it is left
    return str(end.get("reservoirId")), int(end["reservoirVersion"])


def versions_behind(sources: list[dict[str, Any]], latest: Mapping[str, int]) -> int | None:
    """Commits of the upstream tables not reached yet: the newest version of each Delta
    source's table (``latest``: table id -> version) minus the version its batch ended at;
    None while a query still reads its initial snapshot. (Spark reports no backlog of its own
    for Delta sources.)"""
    behind = []
    for source in sources:
        offset = _delta_offset(source)
        if offset is not None and offset[0] in latest:
            behind.append(max(0, latest[offset[0]] - offset[1]))
    return sum(behind) if behind else None


def progress_row(
    job: str,
    progress: Mapping[str, Any],
    latency: Latency | None = None,
    upstream_versions: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """One stream_metrics row from a query's progress (``StreamingQueryProgress.json``);
    ``upstream_versions``: newest version of each upstream Delta table, by table id."""
    sources: list[dict[str, Any]] = list(progress.get("sources") or [])
    states: list[dict[str, Any]] = list(progress.get("stateOperators") or [])
    lag_max = _metric(sources, "maxOffsetsBehindLatest")
    lag_avg = _metric(sources, "avgOffsetsBehindLatest")
    return {
        "job": job,
        "query": progress.get("name"),
        "query_id": progress.get("id"),
        "run_id": progress.get("runId"),
        "batch_id": int(progress.get("batchId", -1)),
        "batch_time": _time(progress.get("timestamp")),
        "input_rows": int(progress.get("numInputRows") or 0),
        "input_rows_per_s": float(progress.get("inputRowsPerSecond") or 0.0),
        "processed_rows_per_s": float(progress.get("processedRowsPerSecond") or 0.0),
        "batch_duration_ms": int((progress.get("durationMs") or {}).get("triggerExecution") or 0),
        "kafka_lag_max": int(max(lag_max)) if lag_max else None,
        "kafka_lag_avg": sum(lag_avg) / len(lag_avg) if lag_avg else None,
        "delta_versions_behind": versions_behind(sources, upstream_versions or {}),
        "watermark": _time((progress.get("eventTime") or {}).get("watermark")),
        "rows_dropped_by_watermark": sum(
            int(s.get("numRowsDroppedByWatermark") or 0) for s in states
        ),
        "state_rows": sum(int(s.get("numRowsTotal") or 0) for s in states) if states else None,
        "latency_kind": latency.kind if latency else None,
        "latency_p50_ms": latency.p50_ms if latency else None,
        "latency_p95_ms": latency.p95_ms if latency else None,
        "latency_rows": latency.rows if latency else None,
        "recorded_at": datetime.now(UTC),
    }


class StreamMetricsRecorder:
    """Collects progress rows of one job's queries (``job_of_query``: other jobs may share
    the session) and appends them to the table."""

    def __init__(
        self,
        spark: SparkSession,
        job: str,
        path: str,
        upstream: tuple[str, ...] = (),
        group: ConsumerGroupPublisher | None = None,
    ) -> None:
        self.spark, self.job, self.path = spark, job, path
        self.group = group  # bronze: its Kafka offsets committed for a consumer group
        self.upstream = tuple(p for p in upstream if is_local(p))  # read with deltalake
        self._tables: dict[str, Any] = {}  # path -> DeltaTable, kept up to date incrementally
        self._rows: list[dict[str, Any]] = []
        self._latency: dict[tuple[str, int], Latency] = {}
        self._lock = threading.Lock()
        self._flushing = threading.Lock()  # one append at a time (flusher thread, close)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._running: set[str] = set()  # ids of started queries whose end was not heard yet
        self._ended = threading.Condition(self._lock)

    # Spark delivers listener events asynchronously: a query's last progress event (and its
    # termination event right after) can arrive after awaitTermination() has returned.
    def query_started(self, query_id: str) -> None:
        with self._lock:
            self._running.add(query_id)

    def query_terminated(self, query_id: str) -> bool:
        """Note the end of a query; False if it was not one of this job's."""
        with self._ended:
            if query_id not in self._running:
                return False
            self._running.discard(query_id)
            self._ended.notify_all()
            return True

    # Called by batch writers (foreachBatch, same process) before the progress event arrives.
    def record_latency(self, query: str, batch_id: int, latency: Latency) -> None:
        with self._lock:
            self._latency[(query, batch_id)] = latency

    def on_progress(self, progress: Mapping[str, Any]) -> None:
        key = (str(progress.get("name")), int(progress.get("batchId", -1)))
        versions = self.upstream_versions()
        with self._lock:
            latency = self._latency.pop(key, None)
            self._rows.append(progress_row(self.job, progress, latency, versions))
        if self.group is not None:
            self.group.note(progress)

    def upstream_versions(self) -> dict[str, int]:
        """Newest version of each upstream table that exists, by table id (its reservoirId)."""
        from deltalake import DeltaTable

        versions: dict[str, int] = {}
        for path in self.upstream:
            try:
                table = self._tables.get(path)
                if table is None:
                    table = self._tables[path] = DeltaTable(path.removeprefix("file://"))
                else:
                    table.update_incremental()
                versions[str(table.metadata().id)] = int(table.version())
            except Exception as exc:  # not created yet, or being written: next time
                logger.debug("upstream version not read %s", kv(table=path, error=str(exc)[:200]))
        return versions

    def start(self) -> None:
        """Register with the process's listener and flush every FLUSH_EVERY_S seconds in the
        background."""
        with _ACTIVE_LOCK:
            _ACTIVE[self.job] = self
            if not _LISTENER:
                _LISTENER.append(StreamMetricsListener())
                self.spark.streams.addListener(_LISTENER[0])
        self._thread = threading.Thread(target=self._loop, name="stream-metrics", daemon=True)
        self._thread.start()

    def close(self, wait_s: float = LAST_EVENTS_WAIT_S) -> None:
        """Wait (at most ``wait_s``) for the last events of the queries that ended, unregister,
        stop the flusher and write what is left."""
        with self._ended:
            self._ended.wait_for(lambda: not self._running, timeout=wait_s)
        with _ACTIVE_LOCK:
            _ACTIVE.pop(self.job, None)
            listener = _LISTENER.pop() if _LISTENER and not _ACTIVE else None
        if listener is not None:
            try:
                self.spark.streams.removeListener(listener)
            except Exception as exc:  # the session may already be gone
                logger.debug("listener not removed %s", kv(error=str(exc)[:200]))
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.flush()
        if self.group is not None:
            self.group.publish()

    def _loop(self) -> None:
        while not self._stop.wait(FLUSH_EVERY_S):
            self.flush()
            if self.group is not None:
                self.group.publish()

    def flush(self) -> int:
        """Append the collected rows; return how many. A failed write keeps them for the next
        flush (at most MAX_PENDING_ROWS, the oldest go first) and logs a warning: metrics must
        never stop a job."""
        with self._flushing:
            with self._lock:
                rows, self._rows = self._rows, []
            if not rows:
                return 0
            try:
                append_rows(self.spark, self.path, rows)
            except Exception as exc:
                with self._lock:
                    kept = (rows + self._rows)[-MAX_PENDING_ROWS:]
                    dropped = len(rows) + len(self._rows) - len(kept)
                    self._rows = kept
                logger.warning(
                    "stream metrics not written, retrying at the next flush %s",
                    kv(
                        job=self.job,
                        rows=len(rows),
                        dropped_oldest=dropped,
                        table=self.path,
                        error=str(exc)[:300],
                    ),
                )
                return 0
            return len(rows)


class StreamMetricsListener(StreamingQueryListener):
    """Hands every event of a query to the recorder of its job (``job_of_query``), if that
    job records in this process: one listener for all the jobs of a driver."""

    def onQueryStarted(self, event: Any) -> None:
        LATEST_INPUT_ROWS.pop(event.name or "", None)  # restarted: its backlog may be large
        recorder = _ACTIVE.get(job_of_query(event.name))
        if recorder is None:
            return
        recorder.query_started(str(event.id))
        logger.info("query started %s", kv(job=recorder.job, query=event.name, query_id=event.id))

    def onQueryProgress(self, event: Any) -> None:
        LATEST_INPUT_ROWS[event.progress.name or ""] = int(event.progress.numInputRows or 0)
        recorder = _ACTIVE.get(job_of_query(event.progress.name))
        if recorder is None:
            return
        try:
            recorder.on_progress(json.loads(event.progress.json))
        except Exception as exc:  # a metric must never disturb the query
            logger.warning("progress not recorded %s", kv(job=recorder.job, error=str(exc)[:300]))

    def onQueryIdle(self, event: Any) -> None:
        pass

    def onQueryTerminated(self, event: Any) -> None:
        for recorder in list(_ACTIVE.values()):
            if recorder.query_terminated(str(event.id)):
                logger.info(
                    "query terminated %s",
                    kv(job=recorder.job, query_id=event.id, error=(event.exception or "")[:200]),
                )
                return


def is_local(path: str) -> bool:
    return "://" not in path or path.startswith("file://")


def append_rows(spark: SparkSession | None, path: str, rows: list[dict[str, Any]]) -> None:
    """Append rows to the stream_metrics table at ``path`` (created on first write)."""
    table = pa.Table.from_pylist(rows, schema=STREAM_METRICS)
    if is_local(path) or spark is None:
        from deltalake import write_deltalake

        # merge: a table written by an older version (other columns) gains the new ones
        write_deltalake(path.removeprefix("file://"), table, mode="append", schema_mode="merge")
        return
    append_rows_with_spark(spark, path, table)


def append_rows_with_spark(spark: SparkSession, path: str, table: pa.Table) -> None:
    """The same append through Spark's Delta writer (object storage: s3a://, abfss://, …),
    with the table's schema spelled out so an all-null column keeps its type."""
    from pyspark.sql.pandas.types import from_arrow_schema

    frame = spark.createDataFrame(table.to_pandas(), schema=from_arrow_schema(STREAM_METRICS))
    frame.write.format("delta").mode("append").option("mergeSchema", "true").save(path)


def read_stream_metrics(path: str, since: datetime | None = None) -> list[dict[str, Any]]:
    """Rows of the stream_metrics table recorded at or after ``since`` (all if None), oldest
    first, read with ``deltalake`` (no JVM); [] if the table does not exist yet."""
    import pyarrow.dataset as ds
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        dataset = DeltaTable(path.removeprefix("file://")).to_pyarrow_dataset()
    except TableNotFoundError:
        return []
    wanted = None if since is None else ds.field("recorded_at") >= pa.scalar(since, type=_TS)
    rows = dataset.to_table(filter=wanted).to_pylist()
    blank = dict.fromkeys(STREAM_METRICS.names)  # columns a row of an older version lacks
    return sorted(({**blank, **r} for r in rows), key=lambda r: (r["recorded_at"], r["batch_id"]))


def latest_per_query(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The newest row of each (job, query), in pipeline order."""
    order = {"bronze": 0, "silver": 1, "gold": 2, "alerts": 3}
    newest: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        newest[(row["job"], row["query"])] = row
    return sorted(newest.values(), key=lambda r: (order.get(r["job"], 9), r["query"] or ""))


def _num(value: float | int | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def format_stream_picture(latest: list[dict[str, Any]], now: datetime) -> list[str]:
    """One line per query: its last batch, throughput, lag, watermark and latency."""
    if not latest:
        return ["stream metrics: none recorded yet (start the jobs: ./start_all.sh)"]
    head = (
        f"{'query':<22}{'batch':>7}{'age_s':>7}{'in/s':>9}{'done/s':>9}{'ms':>7}"
        f"{'lag':>9}{'state':>8}{'p50_ms':>9}{'p95_ms':>9}  watermark"
    )
    lines = [head]
    for r in latest:
        lag = r["kafka_lag_max"] if r["kafka_lag_max"] is not None else r["delta_versions_behind"]
        age = (now - r["recorded_at"]).total_seconds()
        watermark = r["watermark"].strftime("%Y-%m-%dT%H:%M:%SZ") if r["watermark"] else "-"
        lines.append(
            f"{r['query'] or r['job']:<22}{r['batch_id']:>7}{age:>7.0f}"
            f"{_num(r['input_rows_per_s'], 1):>9}{_num(r['processed_rows_per_s'], 1):>9}"
            f"{_num(r['batch_duration_ms']):>7}{_num(lag):>9}{_num(r['state_rows']):>8}"
            f"{_num(r['latency_p50_ms']):>9}{_num(r['latency_p95_ms']):>9}  {watermark}"
        )
    lines.append(
        "lag: Kafka offsets behind latest (bronze) or upstream commits not reached yet (Delta "
        "sources); "
        "p50/p95: Kafka timestamp -> commit of the reading's batch"
    )
    return lines
