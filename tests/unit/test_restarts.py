"""Restart policy: exponential backoff, a budget that refills after a healthy run."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from iot_lakehouse.errors import JobError, JobRefused
from iot_lakehouse.runtime.restarts import JobStates, RestartPolicy, jobs_health, keep_running


def test_the_wait_doubles_with_each_failure_in_a_row_up_to_its_cap() -> None:
    policy = RestartPolicy(restarts=None, healthy_s=600, first_delay_s=5, max_delay_s=60)
    assert [policy.delay(n) for n in range(1, 7)] == [5, 10, 20, 40, 60, 60]


def test_a_healthy_run_before_a_failure_starts_the_count_afresh() -> None:
    policy = RestartPolicy(restarts=3, healthy_s=600)
    assert policy.failures_after(0, ran_s=1) == 1
    assert policy.failures_after(3, ran_s=599) == 4
    assert policy.gives_up(4) and not policy.gives_up(3)
    assert policy.failures_after(3, ran_s=600) == 1  # it ran long enough: the budget refilled
    assert not RestartPolicy(restarts=None, healthy_s=1).gives_up(10_000)


class Clock:
    """A clock a run advances by the seconds it is told it lasted."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_keep_running_restarts_until_the_budget_is_spent_then_raises_the_last_error() -> None:
    clock, calls, waits = Clock(), [], []

    def fails() -> None:
        calls.append(clock.now)
        clock.now += 1  # each run fails after a second
        raise JobError(f"failure {len(calls)}")

    policy = RestartPolicy(restarts=2, healthy_s=600, first_delay_s=0.01, max_delay_s=0.04)
    with pytest.raises(JobError, match="failure 3"):
        keep_running(
            fails,
            policy,
            threading.Event(),
            (JobError,),
            lambda exc, n, delay: waits.append((str(exc), n, delay)),
            clock=clock,
        )
    assert waits == [("failure 1", 1, 0.01), ("failure 2", 2, 0.02)]


def test_keep_running_keeps_a_job_that_fails_after_healthy_runs_going() -> None:
    clock, runs = Clock(), []

    def long_runs_then_done() -> None:
        runs.append(clock.now)
        clock.now += 700  # healthy, then fails
        if len(runs) < 6:
            raise JobError("passing failure")

    policy = RestartPolicy(restarts=1, healthy_s=600, first_delay_s=0.01)
    keep_running(
        long_runs_then_done, policy, threading.Event(), (JobError,), lambda *_: None, clock=clock
    )
    assert len(runs) == 6  # five failures, each after a healthy run: never more than 1 in a row


def test_keep_running_never_retries_a_refusal_nor_after_stop() -> None:
    calls: list[int] = []

    def refused() -> None:
        calls.append(1)
        raise JobRefused("the topic is not the one bronze read")

    policy = RestartPolicy(restarts=5, healthy_s=600, first_delay_s=0.01)
    with pytest.raises(JobRefused):
        keep_running(
            refused, policy, threading.Event(), (JobError,), lambda *_: None, (JobRefused,)
        )
    assert calls == [1]
    stop = threading.Event()

    def fails_and_stops() -> None:
        calls.append(2)
        stop.set()
        raise JobError("stopped while failing")

    with pytest.raises(JobError):
        keep_running(fails_and_stops, policy, stop, (JobError,), lambda *_: None)
    assert calls == [1, 2]


def test_jobs_health_is_good_only_while_the_writer_runs_with_every_job_up(tmp_path: Path) -> None:
    path = tmp_path / "job_states.json"
    healthy, line = jobs_health(path, lambda pid: True)
    assert not healthy and "no job states" in line
    states = JobStates(path, {})
    healthy, line = jobs_health(path, lambda pid: True)
    assert not healthy, "no file written yet: nothing to judge"
    states.set("bronze", "up")
    states.set("silver", "up,restarts=2")
    healthy, line = jobs_health(path, lambda pid: True)
    assert healthy, line
    assert "bronze=up" in line and "silver=up,restarts=2" in line
    healthy, line = jobs_health(path, lambda pid: False)
    assert not healthy and "not running" in line
    states.set("gold", "restarting")
    healthy, line = jobs_health(path, lambda pid: True)
    assert not healthy and "not up: gold" in line
    path.write_text("not json")
    healthy, line = jobs_health(path, lambda pid: True)
    assert not healthy and "cannot read" in line
