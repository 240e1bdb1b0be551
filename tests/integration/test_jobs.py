"""Job wiring: waiting for an upstream table that another process creates; several jobs in
one driver."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import write_deltalake
from pyspark.sql import SparkSession
from pyspark.sql.types import StringType, StructField, StructType

from iot_lakehouse.errors import JobError
from iot_lakehouse.ops.reconcile import bronze_silver_ledger
from iot_lakehouse.pipeline.checkpoints import delta_table_exists
from iot_lakehouse.pipeline.jobs import wait_for_upstream
from iot_lakehouse.runtime.stream_metrics import job_of_query, read_stream_metrics
from iot_lakehouse.schemas import create_table_if_missing
from iot_lakehouse.settings import Settings
from tests.conftest import checkpoint_commits, job_env, produce
from tests.support.jobs import start_jobs


def start_waiting(
    spark: SparkSession, job: str, settings: Settings
) -> tuple[threading.Thread, list[bool]]:
    """``wait_for_upstream`` of ``job`` in a thread; its outcome lands in the list."""
    outcome: list[bool] = []
    waiter = threading.Thread(
        target=lambda: outcome.append(
            wait_for_upstream(spark, job, settings, False, threading.Event(), poll_s=0.2)
        )
    )
    waiter.start()
    return waiter, outcome


def test_waits_until_another_process_creates_the_upstream_table(
    spark: SparkSession, tmp_path: Path
) -> None:
    settings = Settings.from_env({}).with_(lakehouse_path=str(tmp_path / "lakehouse"))
    silver = settings.silver_readings_path
    assert not delta_table_exists(spark, silver)
    with pytest.raises(JobError, match="does not exist yet"):
        wait_for_upstream(spark, "gold", settings, available_now=True, stop=threading.Event())

    # Another process is creating the table: its log folder exists, its first commit not yet.
    # (Delta's own check caches "no table" at this point and never looks again.)
    (Path(silver) / "_delta_log").mkdir(parents=True)
    assert not delta_table_exists(spark, silver)
    waiter, outcome = start_waiting(spark, "gold", settings)
    waiter.join(2.0)
    assert waiter.is_alive()  # still waiting: there is no table
    # The first commit lands (written by another writer than this Spark session).
    write_deltalake(silver, pa.table({"sensor_id": ["s1"]}))
    waiter.join(30.0)
    assert outcome == [True]


def test_waits_for_the_upstream_tables_first_write_not_its_empty_creation(
    spark: SparkSession, tmp_path: Path
) -> None:
    """A job creates its tables empty when it starts; the jobs downstream wait for data."""
    settings = Settings.from_env({}).with_(lakehouse_path=str(tmp_path / "lakehouse"))
    bronze = settings.bronze_events_path
    create_table_if_missing(spark, bronze, StructType([StructField("key", StringType())]), [])
    assert delta_table_exists(spark, bronze)
    # --available-now on an empty table has nothing to do, and is not an error
    assert wait_for_upstream(spark, "silver", settings, True, threading.Event()) is True
    waiter, outcome = start_waiting(spark, "silver", settings)
    waiter.join(2.0)
    assert waiter.is_alive()  # still waiting: the table holds nothing yet
    write_deltalake(bronze, pa.table({"key": ["k1"]}), mode="append")
    waiter.join(30.0)
    assert outcome == [True]


def test_a_stop_request_ends_the_wait(spark: SparkSession, tmp_path: Path) -> None:
    settings = Settings.from_env({}).with_(lakehouse_path=str(tmp_path / "lakehouse"))
    stop = threading.Event()
    stop.set()
    assert wait_for_upstream(spark, "silver", settings, False, stop, poll_s=0.1) is False
    assert wait_for_upstream(spark, "bronze", settings, False, stop) is True  # Kafka: no wait


def test_four_jobs_in_one_driver_each_commit_record_their_metrics_and_stop_cleanly(
    spark: SparkSession, settings: Settings, tmp_path: Path
) -> None:
    produce(settings, 3000, seed=21, sensors=50)
    runtime = tmp_path / "runtime"
    env = job_env(settings, IOT_RUNTIME_DIR=str(runtime), ONE_DRIVER_MEMORY="1g")
    proc = start_jobs(env, "alerts", "gold", "silver", "bronze")
    jobs = ("bronze", "silver", "gold", "alerts")
    try:
        deadline = time.monotonic() + 300
        while not all(checkpoint_commits(settings, job) for job in jobs):
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() < deadline, [checkpoint_commits(settings, j) for j in jobs]
            time.sleep(1)
        # Ctrl-C: every job stops its queries gracefully, then the one JVM
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err[-3000:]

    # One log for the driver, each line naming its job; no log per job.
    logs = runtime / "logs"
    assert sorted(p.name for p in logs.glob("*.log")) == ["jobs.log"]
    log = (logs / "jobs.log").read_text()
    for job in jobs:
        assert f"batch committed job={job} " in log, job
    assert "scheduler=FAIR" in log  # ONE_DRIVER_SCHEDULER's default: a pool per job
    # Each job's recorder kept its own queries' progress (a listener hears them all).
    metrics = read_stream_metrics(settings.stream_metrics_path)
    assert {r["job"] for r in metrics} == set(jobs)
    assert all(job_of_query(r["query"]) == r["job"] for r in metrics), metrics
    assert bronze_silver_ledger(spark, settings).ok
