"""Cluster mode: the silver job on a real Spark standalone cluster (master + worker on
127.0.0.1, started from the pyspark wheel) writes the same tables as in local mode."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.testing import assertDataFrameEqual

from iot_lakehouse.pipeline.silver import start_silver_stream
from iot_lakehouse.runtime.spark_cluster import (
    ClusterConfig,
    ClusterError,
    alive_workers,
    local_spark_cluster,
    master_state,
    start_cluster,
)
from iot_lakehouse.settings import PROJECT_ROOT, Settings
from iot_lakehouse.sources.generator import GeneratorConfig
from tests.conftest import free_port, job_env, write_generated_bronze

APP_NAME = "iot-lakehouse-silver"  # jobs.run_job names the application after the job


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterConfig]:
    """A master and one worker (1 core, 1 GB) for this module, stopped afterwards."""
    config = ClusterConfig(
        home=tmp_path_factory.mktemp("spark-cluster"),
        master_port=free_port(),
        webui_port=free_port(),
        worker_webui_port=free_port(),
        worker_cores=1,
        worker_memory="1g",
        executor_memory="768m",
    )
    with local_spark_cluster(config) as running:
        yield running


def lakehouse(tmp_path: Path, name: str) -> Settings:
    return Settings.from_env({}).with_(
        lakehouse_path=str(tmp_path / name / "lakehouse"),
        dlq_path=str(tmp_path / name / "dlq"),
        runtime_dir=tmp_path / name / "runtime",
    )


def read(spark: SparkSession, path: str, *drop: str) -> DataFrame:
    return spark.read.format("delta").load(path).drop(*drop)


def completed_apps(config: ClusterConfig, timeout: float = 30.0) -> list[dict[str, Any]]:
    """The master's completed applications, once there is at least one."""
    deadline = time.monotonic() + timeout
    while True:
        state = master_state(config) or {}
        apps: list[dict[str, Any]] = state.get("completedapps", [])
        if apps or time.monotonic() > deadline:
            return apps
        time.sleep(0.5)


def test_silver_job_on_cluster_equals_local_mode(
    spark: SparkSession, cluster: ClusterConfig, tmp_path: Path
) -> None:
    on_cluster, local = lakehouse(tmp_path, "cluster"), lakehouse(tmp_path, "local")
    config = GeneratorConfig(
        sensors=50,
        rate=20.0,
        count=2000,
        seed=31,
        format="mixed",
        malformed_fraction=0.02,
        invalid_fraction=0.02,
        duplicate_fraction=0.02,
        late_fraction=0.02,
        start_time=datetime(2026, 1, 5, 8, 0, tzinfo=UTC),
    )
    # One micro-batch: a second one costs ~15 s and adds nothing cluster-specific.
    write_generated_bronze(spark, on_cluster, config, parts=1)
    shutil.copytree(on_cluster.bronze_events_path, local.bronze_events_path)

    env = job_env(
        on_cluster,
        SPARK_MASTER=cluster.master_url,
        SPARK_CONF_DIR=str(cluster.conf_dir),  # executor memory, driver address
    )
    job_log = tmp_path / "silver-on-cluster.log"
    with open(job_log, "wb") as log:
        job = subprocess.Popen(
            [sys.executable, "-m", "iot_lakehouse", "run", "silver", "--available-now"],
            env=env,
            cwd=PROJECT_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        # Meanwhile, the same job in local mode (the session's local[2] Spark) on a copy of
        # the same bronze.
        query = start_silver_stream(spark, local, available_now=True)
        query.awaitTermination(600)
        assert query.exception() is None
        job.wait(timeout=600)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)  # the job's Python driver and its JVM
            job.wait()
    assert job.returncode == 0, job_log.read_text(errors="replace")[-3000:]

    # It really ran on the cluster: the master lists it as finished, and the worker kept
    # the executor's logs in its work dir.
    apps = completed_apps(cluster)
    assert [a["name"] for a in apps] == [APP_NAME], apps
    assert apps[0]["state"] == "FINISHED", apps[0]
    executor_logs = list(cluster.work_dir.glob(f"{apps[0]['id']}/*/stderr"))
    assert executor_logs, list(cluster.work_dir.rglob("*"))
    assert "Running task" in executor_logs[0].read_text(errors="replace")

    silver = read(spark, on_cluster.silver_readings_path, "processed_at")
    assert silver.count() > 3000
    assertDataFrameEqual(silver, read(spark, local.silver_readings_path, "processed_at"))
    dlq_drop = ("rejected_at", "rejected_date")
    dlq = read(spark, on_cluster.dlq_rejects_path, *dlq_drop)
    assert dlq.count() > 0
    assertDataFrameEqual(dlq, read(spark, local.dlq_rejects_path, *dlq_drop))
    duplicates = read(spark, on_cluster.silver_duplicates_path, "detected_at")
    assert duplicates.count() > 0
    assertDataFrameEqual(duplicates, read(spark, local.silver_duplicates_path, "detected_at"))


def test_start_fails_clearly_when_the_master_port_is_taken(
    cluster: ClusterConfig, tmp_path: Path
) -> None:
    clash = ClusterConfig(
        home=tmp_path / "clash",
        master_port=cluster.master_port,  # held by the running master
        webui_port=free_port(),
        worker_webui_port=free_port(),
    )
    with pytest.raises(ClusterError, match=r"master\.log"):
        start_cluster(clash, timeout=60)
    assert not list((tmp_path / "clash").glob("*.pid"))  # nothing left running
    assert alive_workers(master_state(cluster)) == 1  # the module's cluster is untouched
