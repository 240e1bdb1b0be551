"""Job wiring: waiting for an upstream table that another process creates."""

from __future__ import annotations

import threading
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import write_deltalake
from pyspark.sql import SparkSession

from iot_lakehouse.checkpoints import delta_table_exists
from iot_lakehouse.errors import JobError
from iot_lakehouse.jobs import wait_for_upstream
from iot_lakehouse.settings import Settings


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
    outcome: list[bool] = []
    waiter = threading.Thread(
        target=lambda: outcome.append(
            wait_for_upstream(spark, "gold", settings, False, threading.Event(), poll_s=0.2)
        )
    )
    waiter.start()
    waiter.join(2.0)
    assert waiter.is_alive()  # still waiting: there is no table
    # The first commit lands (written by another writer than this Spark session).
    write_deltalake(silver, pa.table({"sensor_id": ["s1"]}))
    waiter.join(30.0)
    assert outcome == [True]


def test_a_stop_request_ends_the_wait(spark: SparkSession, tmp_path: Path) -> None:
    settings = Settings.from_env({}).with_(lakehouse_path=str(tmp_path / "lakehouse"))
    stop = threading.Event()
    stop.set()
    assert wait_for_upstream(spark, "silver", settings, False, stop, poll_s=0.1) is False
    assert wait_for_upstream(spark, "bronze", settings, False, stop) is True  # Kafka: no wait
