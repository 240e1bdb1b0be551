"""Job wiring: waiting for an upstream table that another process creates; several jobs in
one driver."""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Callable
from pathlib import Path

from pyspark.errors import AnalysisException
from pyspark.sql import SparkSession

from iot_lakehouse.ops.reconcile import bronze_silver_ledger
from iot_lakehouse.runtime.restarts import JOB_STATES_FILE, read_job_states
from iot_lakehouse.settings import Settings
from tests.conftest import commits, fill, job_env, produce
from tests.support.jobs import start_jobs


def silver_caught_up(spark: SparkSession, settings: Settings) -> bool:
    """Every bronze record is in silver, the DLQ or the duplicate ledger (False while one of
    those tables does not exist yet)."""
    try:
        return bronze_silver_ledger(spark, settings).ok
    except AnalysisException:
        return False


def job_states(runtime: Path, pid: int) -> dict[str, str]:
    return read_job_states(runtime / JOB_STATES_FILE, pid)


def test_in_one_driver_a_job_that_fails_for_good_is_restarted_alone_while_the_others_go_on(
    spark: SparkSession, settings: Settings, tmp_path: Path, small_disk: Path
) -> None:
    # Silver's DLQ lives on a disk that is full: silver cannot create its tables and fails
    # at every start, while bronze (the lakehouse on another disk) has all it needs.
    settings = settings.with_(dlq_path=str(small_disk / "dlq"))
    filler = fill(small_disk)
    produce(settings, 500, seed=5, sensors=10)
    runtime = tmp_path / "runtime"
    env = job_env(settings, IOT_RUNTIME_DIR=str(runtime), ONE_DRIVER_MEMORY="1g")
    proc = start_jobs(env, "bronze", "silver")
    seen: list[dict[str, str]] = []

    def wait_until(what: str, done: Callable[[], bool]) -> None:
        deadline = time.monotonic() + 240
        while not done():
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() < deadline, f"not {what} in 240 s; states {seen[-3:]}"
            time.sleep(0.5)
        seen.append(job_states(runtime, proc.pid))

    try:
        wait_until(
            "silver restarting",
            lambda: job_states(runtime, proc.pid).get("silver") == "restarting",
        )
        # bronze goes on: it reads what is sent after silver failed
        before = commits(settings.bronze_events_path)
        produce(settings, 500, seed=6, sensors=10)
        wait_until("bronze going on", lambda: commits(settings.bronze_events_path) > before)
        assert job_states(runtime, proc.pid)["bronze"] == "up", seen
        assert commits(settings.silver_readings_path) <= 1, "silver wrote with its DLQ full"

        filler.unlink()  # the fix: silver's next start finds room, and catches up
        wait_until("silver caught up", lambda: silver_caught_up(spark, settings))
        assert re.fullmatch(r"up,restarts=\d+", job_states(runtime, proc.pid)["silver"]), seen
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err[-3000:]
    log = (runtime / "logs" / "jobs.log").read_text()
    assert re.search(
        r"job failed for good, the jobs beside it go on; starting it again job=silver "
        r'restarts=1 retry_in_s=5.0 error="job silver: storage is not writable \(full\)',
        log,
    ), log[-3000:]
    assert "stopping the jobs beside it" not in log
    assert "stopping query gracefully job=bronze" in log  # bronze ran to the Ctrl-C
