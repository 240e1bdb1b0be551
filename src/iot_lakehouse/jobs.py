"""Thin wiring that runs one streaming job until it ends, is told to stop, or fails."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import IO

from pyspark.errors import StreamingQueryException
from pyspark.sql import SparkSession
from pyspark.sql.streaming.query import StreamingQuery

from iot_lakehouse.alerts import start_alerts_stream
from iot_lakehouse.bronze import start_bronze_stream
from iot_lakehouse.checkpoints import (
    delta_table_exists,
    refuse_damaged_checkpoint,
    refuse_lost_checkpoint,
)
from iot_lakehouse.errors import JobError
from iot_lakehouse.gold import start_gold_stream
from iot_lakehouse.layers import layer_table_paths
from iot_lakehouse.logs import kv
from iot_lakehouse.settings import Settings
from iot_lakehouse.silver import start_silver_stream
from iot_lakehouse.spark_session import build_spark
from iot_lakehouse.stream_metrics import StreamMetricsRecorder

logger = logging.getLogger(__name__)

RESTART_DELAY_S = 5.0

JobStarter = Callable[[SparkSession, Settings, bool], StreamingQuery | list[StreamingQuery]]

JOBS: dict[str, JobStarter] = {
    "bronze": start_bronze_stream,
    "silver": start_silver_stream,
    "gold": start_gold_stream,
    "alerts": start_alerts_stream,
}

# The Delta tables each job's queries stream from, the one it waits for first (none: Kafka or
# files); their backlog goes to stream_metrics.
UPSTREAM: dict[str, Callable[[Settings], tuple[str, ...]]] = {
    "bronze": lambda s: (),
    "silver": lambda s: (s.bronze_events_path,),
    "gold": lambda s: (s.silver_readings_path,),
    "alerts": lambda s: (s.silver_readings_path, s.alerts_path),  # counts read gold/alerts
}


def lock_file(settings: Settings, name: str) -> Path:
    """Where the lock of checkpoint ``name`` lives: next to the checkpoint when the lakehouse
    is a local folder, else under the runtime folder (keyed by the lakehouse location)."""
    if "://" not in settings.lakehouse_path:
        return Path(settings.checkpoint_path(name) + ".lock")
    key = hashlib.sha256(settings.lakehouse_path.encode()).hexdigest()[:12]
    return settings.runtime_dir / "locks" / f"{key}-{name.replace('/', '_')}.lock"


@contextlib.contextmanager
def job_lock(settings: Settings, name: str) -> Iterator[None]:
    """Hold the lock of checkpoint ``name`` for the block; JobError if another process holds
    it. The OS releases it when the process dies, so a killed job leaves no stale lock."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; the scripts run one job per checkpoint
        yield
        return
    path = lock_file(settings, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle: IO[str] = open(path, "a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise JobError(
                f"{name} is running ({holder}, lock {path}); stop it first "
                "(Ctrl-C, or ./stop_all.sh) and try again"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        yield
    finally:
        handle.close()


def wait_for_upstream(
    spark: SparkSession,
    job: str,
    settings: Settings,
    available_now: bool,
    stop: threading.Event,
    poll_s: float = 2.0,
) -> bool:
    """Wait until the job's upstream Delta table exists; False if told to stop first.

    A streaming job started before its upstream has written anything waits for it; an
    ``--available-now`` run has nothing to do and says so.
    """
    upstream = UPSTREAM[job](settings)
    if not upstream:
        return True
    path = upstream[0]
    waited = 0.0
    while not delta_table_exists(spark, path):
        if available_now:
            raise JobError(
                f"job {job}: its input table {path} does not exist yet; run the "
                "upstream job first (see README, 'Commands')."
            )
        if waited % 30 == 0:
            logger.info("waiting for upstream table %s", kv(job=job, table=path))
        if stop.wait(poll_s):
            return False
        waited += poll_s
    return True


def log_progress(job: str, query: StreamingQuery, last_batch: int) -> int:
    """Log the newest finished micro-batch once; return its id."""
    progress = query.lastProgress
    if not progress or progress.get("batchId", -1) == last_batch:
        return last_batch
    batch_id = int(progress["batchId"])
    dropped = sum(
        int(op.get("numRowsDroppedByWatermark") or 0) for op in progress.get("stateOperators", [])
    )
    logger.info(
        "batch committed %s",
        kv(
            job=job,
            query=query.name,
            batch_id=batch_id,
            input_rows=progress.get("numInputRows", 0),
            input_rows_per_s=float(progress.get("inputRowsPerSecond") or 0.0),
            processed_rows_per_s=float(progress.get("processedRowsPerSecond") or 0.0),
            duration_ms=progress.get("durationMs", {}).get("triggerExecution", 0),
            **({"rows_behind_watermark": dropped} if dropped else {}),
        ),
    )
    return batch_id


def await_queries(job: str, queries: list[StreamingQuery], stop: threading.Event) -> None:
    """Wait for every query of a job to end; stop them all gracefully when ``stop`` is set or
    one of them fails; raise if one failed."""
    last = [-1] * len(queries)
    while all(q.isActive for q in queries) and not stop.is_set():
        queries[0].awaitTermination(1)
        last = [log_progress(job, q, b) for q, b in zip(queries, last, strict=True)]
    failed = [q for q in queries if not q.isActive and q.exception() is not None]
    if not failed:  # the others may still be draining (available-now) unless told to stop
        for q in queries:
            while q.isActive and not stop.is_set():
                q.awaitTermination(1)
    for i, q in enumerate(queries):
        if q.isActive:
            logger.info("stopping query gracefully %s", kv(job=job, query=q.name))
            q.stop()
        log_progress(job, q, last[i])
    for q in queries:
        error = q.exception()
        if error is not None:
            raise JobError(
                f"job {job} failed: {error}. Fix the cause and start it again; it "
                "resumes from its checkpoint."
            )


# What the OS (or an object store) says when a write cannot happen, and what it means.
STORAGE_PROBLEMS = {
    "read-only file system": "read-only",
    "no space left on device": "full",
    "disk quota exceeded": "full",
    "permission denied": "not permitted",
    "accessdenied": "not permitted",
    "access denied": "not permitted",
}


def storage_problem(error: str) -> str | None:
    """``read-only``, ``full`` or ``not permitted`` if ``error`` is a failed write; else None."""
    text = error.lower()
    return next((kind for marker, kind in STORAGE_PROBLEMS.items() if marker in text), None)


def storage_error(settings: Settings, job: str, problem: str) -> JobError:
    """The error of a job that cannot write its tables or checkpoint, with what to do."""
    return JobError(
        f"job {job}: storage is not writable ({problem}): the lakehouse at "
        f"{settings.lakehouse_path} or the DLQ at {settings.dlq_path}. Free space or fix the "
        "permissions, then start the job again: it resumes from its checkpoint, and what it "
        "had not committed is written then (nothing is lost)."
    )


def job_starter(job: str, source: str) -> JobStarter:
    """The start function of ``job``; ``source`` picks bronze's input (kafka or files)."""
    if job not in JOBS:
        raise JobError(f"unknown job {job!r}; choose one of {sorted(JOBS)}")
    if source == "kafka":
        return JOBS[job]
    if job != "bronze":
        raise JobError(f"--source {source} applies to the bronze job only, not to {job}")
    return lambda spark, settings, available_now: start_bronze_stream(
        spark, settings, available_now, source
    )


def run_job(
    job: str, settings: Settings, available_now: bool = False, source: str = "kafka"
) -> None:
    """Run streaming job ``job`` (a key of JOBS) in this process until done or signalled."""
    starter = job_starter(job, source)
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        logger.info("signal received %s", kv(job=job, signal=signal.Signals(signum).name))
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    lock = job if source == "kafka" else f"{job}_{source}"
    with job_lock(settings, lock):
        _run_locked(job, starter, settings, available_now, stop)
    logger.info("job finished %s", kv(job=job, available_now=available_now))


def _run_locked(
    job: str,
    starter: JobStarter,
    settings: Settings,
    available_now: bool,
    stop: threading.Event,
) -> None:
    spark = build_spark(settings, f"iot-lakehouse-{job}")
    metrics = StreamMetricsRecorder(
        spark, job, settings.stream_metrics_path, UPSTREAM[job](settings)
    )
    try:
        metrics.start()
        if not wait_for_upstream(spark, job, settings, available_now, stop):
            return
        refuse_damaged_checkpoint(settings, job)
        if job != "bronze":  # bronze resumes after the offsets in its table instead
            refuse_lost_checkpoint(spark, settings, job, layer_table_paths(job, settings))
        for attempt in range(1, settings.job_restarts + 2):
            try:
                started = starter(spark, settings, available_now)
                await_queries(job, started if isinstance(started, list) else [started], stop)
                break
            except (JobError, StreamingQueryException) as exc:
                refuse_damaged_checkpoint(settings, job)  # a torn write while it ran
                # A query can fail for a passing reason (e.g. a Python worker that did not
                # connect back in time on a busy machine): every query resumes from its
                # checkpoint, so starting again loses and repeats nothing.
                if attempt > settings.job_restarts or stop.is_set():
                    storage = storage_problem(str(exc))
                    if storage is not None:
                        raise storage_error(settings, job, storage) from exc
                    if isinstance(exc, StreamingQueryException):
                        raise JobError(
                            f"job {job} failed: {str(exc).splitlines()[0]}. Fix the cause and "
                            "start it again; it resumes from its checkpoint."
                        ) from exc
                    raise
                logger.error(
                    "job failed, starting it again from its checkpoint %s",
                    kv(
                        job=job,
                        attempt=attempt,
                        of=settings.job_restarts,
                        error=str(exc).splitlines()[0],
                    ),
                )
                for query in spark.streams.active:
                    query.stop()
                if stop.wait(RESTART_DELAY_S):
                    return
    finally:
        metrics.close()
        spark.stop()
