"""Thin wiring that runs streaming jobs (one, or several in one driver) until they end, are
told to stop, or fail."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import IO

from pyspark import InheritableThread
from pyspark.errors import StreamingQueryException
from pyspark.sql import SparkSession
from pyspark.sql.streaming.query import StreamingQuery

from iot_lakehouse.errors import DriverBroken, JobError, JobRefused
from iot_lakehouse.logs import kv
from iot_lakehouse.pipeline.alerts import start_alerts_stream
from iot_lakehouse.pipeline.bronze import start_bronze_stream
from iot_lakehouse.pipeline.checkpoints import (
    delta_table_exists,
    delta_table_has_data,
    refuse_damaged_checkpoint,
    refuse_lost_checkpoint,
)
from iot_lakehouse.pipeline.gold import start_gold_stream
from iot_lakehouse.pipeline.layers import LAYERS, layer_table_paths
from iot_lakehouse.pipeline.quality import wait_for_validations
from iot_lakehouse.pipeline.serving import start_serving_stream
from iot_lakehouse.pipeline.silver import start_silver_stream
from iot_lakehouse.runtime.consumer_group import ConsumerGroupPublisher
from iot_lakehouse.runtime.restarts import (
    JOB_STATES_FILE,
    JobStates,
    RestartPolicy,
    keep_running,
    up_state,
)
from iot_lakehouse.runtime.spark_session import build_spark
from iot_lakehouse.runtime.stream_metrics import StreamMetricsRecorder, job_of_query
from iot_lakehouse.settings import Settings

logger = logging.getLogger(__name__)

# The errors a job starts its queries again after; never a refusal (JobRefused, a JobError
# too): starting again would find the same.
RETRIED_ERRORS: tuple[type[BaseException], ...] = (JobError, StreamingQueryException)


def job_restart_policy(settings: Settings) -> RestartPolicy:
    """``JOB_RESTARTS`` failures in a row, backoff from 5 s, a budget that refills after
    ``JOB_HEALTHY_SECONDS`` of running."""
    return RestartPolicy(settings.job_restarts, settings.job_healthy_seconds)


JobStarter = Callable[[SparkSession, Settings, bool], StreamingQuery | list[StreamingQuery]]

JOBS: dict[str, JobStarter] = {
    "bronze": start_bronze_stream,
    "silver": start_silver_stream,
    "gold": start_gold_stream,
    "alerts": start_alerts_stream,
    "serve": start_serving_stream,
}

# The Delta tables each job's queries stream from, the one it waits for first (none: Kafka or
# files); their backlog goes to stream_metrics.
UPSTREAM: dict[str, Callable[[Settings], tuple[str, ...]]] = {
    "bronze": lambda s: (),
    "silver": lambda s: (s.bronze_events_path,),
    "gold": lambda s: (s.silver_readings_path,),
    "alerts": lambda s: (s.silver_readings_path, s.alerts_path),  # counts read gold/alerts
    "serve": lambda s: (s.silver_readings_path, s.alerts_path),
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
    """Wait until the job's upstream Delta table has data; False if told to stop first.

    A streaming job started before its upstream has written anything waits for it (not only
    for the table: its job creates it empty when it starts, and starting the jobs downstream
    then would take the cores from its first batch); an ``--available-now`` run without the
    table has nothing to do and says so.
    """
    upstream = UPSTREAM[job](settings)
    if not upstream:
        return True
    path = upstream[0]
    if available_now:
        if not delta_table_exists(spark, path):
            raise JobError(
                f"job {job}: its input table {path} does not exist yet; run the "
                "upstream job first (see docs/operations.md, 'Commands in detail')."
            )
        return True
    waited = 0.0
    while not delta_table_has_data(spark, path):
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


def lock_name(job: str, source: str) -> str:
    """The checkpoint lock a run of ``job`` holds (bronze from files has its own)."""
    return job if source == "kafka" or job != "bronze" else f"{job}_{source}"


def pipeline_order(jobs: Sequence[str]) -> list[str]:
    """``jobs`` without repeats, upstream first (bronze, silver, gold, alerts); JobError for
    a name that is not a job."""
    unknown = sorted(set(jobs) - set(JOBS))
    if unknown:
        raise JobError(f"unknown job {unknown[0]!r}; choose from {list(JOBS)}")
    return [job for job in JOBS if job in jobs]


def run_job(
    job: str, settings: Settings, available_now: bool = False, source: str = "kafka"
) -> None:
    """Run streaming job ``job`` (a key of JOBS) in this process until done or signalled."""
    run_jobs([job], settings, available_now, source)


def run_jobs(
    jobs: Sequence[str], settings: Settings, available_now: bool = False, source: str = "kafka"
) -> None:
    """Run jobs in this process, in one Spark session (one JVM), until done or signalled.

    Each job keeps what it has when it runs alone: its checkpoint and its lock, its metrics
    and its restarts. Streaming, they run side by side (a job waits for its upstream table as
    usual) and one that fails for good is started again alone (``run_side_by_side``); with
    ``available_now`` they run one after the other, upstream first, so each drains what the
    one before wrote.
    """
    ordered = pipeline_order(jobs)
    if source != "kafka" and "bronze" not in ordered:
        raise JobError(f"--source {source} applies to the bronze job only, not to {jobs[0]}")
    starters = {job: job_starter(job, source if job == "bronze" else "kafka") for job in ordered}
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        logger.info(
            "signal received %s", kv(jobs=",".join(ordered), signal=signal.Signals(signum).name)
        )
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with contextlib.ExitStack() as locks:
        for job in ordered:
            locks.enter_context(job_lock(settings, lock_name(job, source)))
        side_by_side = len(ordered) > 1 and not available_now
        if len(ordered) > 1:
            settings = settings.with_(spark_driver_memory=settings.one_driver_memory)
        spark = build_spark(
            settings,
            f"iot-lakehouse-{'+'.join(ordered)}",
            scheduler_mode=settings.one_driver_scheduler if side_by_side else "FIFO",
        )
        # again: the SparkContext put in its own SIGINT handler, which cancels every Spark job
        signal.signal(signal.SIGINT, on_signal)
        try:
            if not side_by_side:
                for job in ordered:
                    if not stop.is_set():
                        run_in_session(spark, job, starters[job], settings, available_now, stop)
            else:
                run_side_by_side(spark, starters, settings, stop)
        finally:
            wait_for_validations()
            spark.stop()
    logger.info("job finished %s", kv(job=",".join(ordered), available_now=available_now))


def driver_alive(spark: SparkSession) -> bool:
    """True while the session's JVM answers and its SparkContext is not stopped."""
    try:
        return not spark.sparkContext._jsc.sc().isStopped()
    except Exception:  # the JVM is gone (Py4J cannot reach it)
        return False


def stop_queries_of(spark: SparkSession, job: str) -> None:
    """Stop the queries of ``job`` still running on ``spark`` (other jobs may share it)."""
    for query in spark.streams.active:
        if job_of_query(query.name) == job:
            with contextlib.suppress(Exception):  # it may end by itself meanwhile
                query.stop()


def run_side_by_side(
    spark: SparkSession, starters: dict[str, JobStarter], settings: Settings, stop: threading.Event
) -> None:
    """Run each job in a thread of its own on one session, the way ``all`` runs its children:
    a job that fails for good (its queries' restart budget spent, or any other error) is
    stopped alone and started again after a backoff while the others go on; a refused job
    stays stopped, the others go on, and its error is raised once they end. Only a broken
    driver (its SparkContext stopped, its JVM gone) stops them all and raises at once. Each
    job's state goes to ``JOB_STATES_FILE`` for ``all``'s status line."""
    errors: list[BaseException] = []
    states = JobStates(settings.runtime_dir / JOB_STATES_FILE, {})
    policy = RestartPolicy(None, settings.job_healthy_seconds)  # as `all`: for good, backoff

    def run(job: str) -> None:
        # The job's Spark jobs, its queries' included (their threads inherit it), go to a pool
        # of its own: under the FAIR scheduler the pools share the task slots in turn.
        spark.sparkContext.setLocalProperty("spark.scheduler.pool", job)
        restarts = 0

        def run_once() -> None:
            states.set(job, up_state(restarts))
            run_in_session(spark, job, starters[job], settings, False, stop)

        def again(exc: BaseException, failures: int, delay: float) -> None:
            nonlocal restarts
            stop_queries_of(spark, job)
            if not driver_alive(spark):
                raise DriverBroken(f"the Spark driver stopped while job {job} ran") from exc
            restarts += 1
            states.set(job, "restarting")
            storage = storage_problem(str(exc))
            told = exc if storage is None else storage_error(settings, job, storage)
            logger.error(
                "job failed for good, the jobs beside it go on; starting it again %s",
                kv(job=job, restarts=restarts, retry_in_s=delay, error=first_line(told)),
            )

        try:
            keep_running(run_once, policy, stop, (Exception,), again, never_retry=(JobRefused,))
        except JobRefused as exc:
            states.set(job, "refused")
            logger.error(
                "job refused to run, the jobs beside it go on %s",
                kv(job=job, error=first_line(exc)),
            )
            errors.append(exc)
        except BaseException as exc:  # handed to the main thread, raised there
            logger.error(
                "job failed, stopping the jobs beside it %s", kv(job=job, error=first_line(exc))
            )
            errors.append(exc)
            stop.set()
        else:
            if not stop.is_set():
                states.set(job, "exited")

    # InheritableThread: each Python thread gets a JVM thread of its own (pinned thread mode)
    threads = [InheritableThread(target=run, args=(job,), name=f"job-{job}") for job in starters]
    for thread in threads:
        thread.start()
    for thread in threads:
        while thread.is_alive():  # a bounded join keeps the main thread free for signals
            thread.join(1.0)
    if errors:
        raise errors[0]


def first_line(exc: BaseException) -> str:
    """The first line of an error's message (its type if it has none), at most 300 chars."""
    text = str(exc)
    return (text.splitlines()[0] if text else repr(exc))[:300]


def run_in_session(
    spark: SparkSession,
    job: str,
    starter: JobStarter,
    settings: Settings,
    available_now: bool,
    stop: threading.Event,
) -> None:
    """Run one job on ``spark`` (other jobs may share it) until done, told to stop or failed
    for good: start its queries again from their checkpoint after a passing failure."""
    metrics = StreamMetricsRecorder(
        spark,
        job,
        settings.stream_metrics_path,
        UPSTREAM[job](settings),
        ConsumerGroupPublisher(settings) if job == "bronze" else None,
    )
    try:
        metrics.start()
        if not wait_for_upstream(spark, job, settings, available_now, stop):
            return
        refuse_damaged_checkpoint(settings, job)
        # bronze resumes after the offsets in its table instead; serve's upserts keep the
        # newer value, so reading its input again changes nothing
        if job in LAYERS and job != "bronze":
            refuse_lost_checkpoint(spark, settings, job, layer_table_paths(job, settings))

        def run_once() -> None:
            started = starter(spark, settings, available_now)
            await_queries(job, started if isinstance(started, list) else [started], stop)

        def restarting(exc: BaseException, failures: int, delay: float) -> None:
            refuse_damaged_checkpoint(settings, job)  # a torn write while it ran
            # A query can fail for a passing reason (e.g. a Python worker that did not
            # connect back in time on a busy machine): every query resumes from its
            # checkpoint, so starting again loses and repeats nothing.
            logger.error(
                "job failed, starting it again from its checkpoint %s",
                kv(
                    job=job,
                    attempt=failures,
                    of=settings.job_restarts,
                    retry_in_s=delay,
                    error=first_line(exc),
                ),
            )
            for query in spark.streams.active:  # this job's only: others share the session
                if job_of_query(query.name) == job:
                    query.stop()

        try:
            keep_running(
                run_once,
                job_restart_policy(settings),
                stop,
                RETRIED_ERRORS,
                restarting,
                never_retry=(JobRefused,),
            )
        except JobRefused:
            raise
        except RETRIED_ERRORS as exc:
            refuse_damaged_checkpoint(settings, job)
            storage = storage_problem(str(exc))
            if storage is not None:
                raise storage_error(settings, job, storage) from exc
            if isinstance(exc, StreamingQueryException):
                raise JobError(
                    f"job {job} failed: {str(exc).splitlines()[0]}. Fix the cause and "
                    "start it again; it resumes from its checkpoint."
                ) from exc
            raise
    finally:
        metrics.close()
