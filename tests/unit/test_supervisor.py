"""``./start_all.sh --duration N``: the README's main command, end to end, on a private broker."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from iot_lakehouse.interfaces.cli import build_parser
from iot_lakehouse.interfaces.supervisor import (
    Child,
    Compaction,
    component_health,
    maintenance_commands,
    supervise,
)
from iot_lakehouse.ops.maintain import lakehouse_tables, options_from_args, select_tables
from iot_lakehouse.runtime.restarts import (
    JOB_STATES_FILE,
    JobStates,
    RestartPolicy,
    read_job_states,
)
from iot_lakehouse.settings import Settings


def test_status_shows_components_in_pipeline_order_whatever_order_they_started(
    tmp_path: Path,
) -> None:
    running = subprocess.Popen(["sleep", "30"])
    finished = subprocess.Popen(["true"])
    finished.wait()
    try:
        children = [
            Child("bronze", running, tmp_path / "b.out"),
            Child("generator", running, tmp_path / "g.out"),
            Child("alerts", finished, tmp_path / "a.out"),
            Child("silver", running, tmp_path / "s.out"),
            Child("gold", running, tmp_path / "o.out"),
        ]
        health = component_health(children)
    finally:
        running.kill()
        running.wait()
    assert list(health.items()) == [
        ("bronze", "up"),
        ("silver", "up"),
        ("gold", "up"),
        ("alerts", "exited"),
        ("generator", "up"),
    ]


def test_status_shows_each_job_of_a_one_driver_child_with_its_state(tmp_path: Path) -> None:
    finished = subprocess.Popen(["true"])
    finished.wait()
    running = subprocess.Popen(["sleep", "30"])
    try:
        children = [
            Child("generator", running, tmp_path / "g.out"),
            Child("jobs", finished, tmp_path / "j.out"),
        ]
        health = component_health(children)
    finally:
        running.kill()
        running.wait()
    assert list(health.items()) == [
        ("bronze", "exited"),
        ("silver", "exited"),
        ("gold", "exited"),
        ("alerts", "exited"),
        ("generator", "up"),
    ]


def test_a_one_driver_child_shows_the_jobs_it_was_started_with(tmp_path: Path) -> None:
    running = subprocess.Popen(["sleep", "30"])
    try:
        jobs = ("run", "bronze", "silver", "gold", "alerts", "serve")  # `all --with-mongo`
        health = component_health([Child("jobs", running, tmp_path / "j.out", args=jobs)])
    finally:
        running.kill()
        running.wait()
    assert list(health) == ["bronze", "silver", "gold", "alerts", "serve"]


def test_each_job_of_a_running_one_driver_child_shows_the_state_it_wrote(
    tmp_path: Path,
) -> None:
    running = subprocess.Popen(["sleep", "30"])
    try:
        JobStates(tmp_path / "states" / JOB_STATES_FILE, {}).set("bronze", "up")  # another pid
        assert (
            component_health([Child("jobs", running, tmp_path / "j.out")], tmp_path)["silver"]
            == "up"
        )
        (tmp_path / JOB_STATES_FILE).write_text(
            json.dumps({"pid": running.pid, "jobs": {"silver": "restarting", "gold": "refused"}})
        )
        health = component_health([Child("jobs", running, tmp_path / "j.out")], tmp_path)
        other = read_job_states(tmp_path / "states" / JOB_STATES_FILE, running.pid)
    finally:
        running.kill()
        running.wait()
    assert health == {"bronze": "up", "silver": "restarting", "gold": "refused", "alerts": "up"}
    assert other == {}  # the states another process wrote are not this child's
    assert read_job_states(tmp_path / "states" / JOB_STATES_FILE, os.getpid()) == {"bronze": "up"}


def test_a_child_that_died_is_started_again_after_its_backoff_and_one_that_finished_is_not(
    tmp_path: Path,
) -> None:
    died = subprocess.Popen(["false"])
    finished = subprocess.Popen(["true"])
    died.wait()
    finished.wait()
    started: list[subprocess.Popen[bytes]] = []

    def respawn(child: Child) -> Child:
        proc = subprocess.Popen(["sleep", "30"])
        started.append(proc)
        return Child(child.name, proc, child.log, args=child.args)

    children = [
        Child("jobs", died, tmp_path / "j.out", args=("run", "bronze", "silver"), started_at=0.0),
        Child("generator", finished, tmp_path / "g.out", args=("generate",), started_at=0.0),
    ]
    policy = RestartPolicy(restarts=None, healthy_s=600, first_delay_s=5)
    try:
        assert supervise(children, policy, 1.0, respawn) is True
        assert component_health(children)["bronze"] == "restarting"
        assert component_health(children)["generator"] == "exited"
        assert supervise(children, policy, 5.9, respawn) is False  # the backoff is 5 s
        assert not started
        supervise(children, policy, 6.0, respawn)
        assert len(started) == 1 and children[0].proc is started[0]
        assert children[0].restarts == 1 and children[0].args == ("run", "bronze", "silver")
        assert component_health(children)["silver"] == "up,restarts=1"
        supervise(children, policy, 100.0, respawn)
        assert len(started) == 1  # the finished generator stays ended
    finally:
        for proc in started:
            proc.kill()
            proc.wait()


def test_maintenance_compacts_ops_then_vacuums_only_the_merged_gold_tables() -> None:
    settings = Settings.from_env({"GOLD_FILE_RETENTION": "6 hours"})
    ops, gold = (build_parser().parse_args(list(c)) for c in maintenance_commands(settings))
    assert ops.tables == ["_ops/"] and not ops.vacuum_only
    options = options_from_args(gold)  # the retention passes the maintain's own checks
    assert options.vacuum_only and options.retention_hours == 6
    chosen = {t.name for t in select_tables(lakehouse_tables(settings), options.tables)}
    assert "gold/sensor_metrics_10m_sliding" in chosen and "gold/alert_counts_5m" in chosen
    assert "gold/alerts" not in chosen, "the serving job streams gold/alerts: 7 days for it"
    assert all(name.startswith("gold/") for name in chosen)


def test_maintenance_runs_its_commands_in_turn_once_per_interval(tmp_path: Path) -> None:
    ran: list[list[str]] = []
    procs: list[subprocess.Popen[bytes]] = []

    def run(args: list[str]) -> Child:
        ran.append(args)
        procs.append(subprocess.Popen(["true"]))
        procs[-1].wait()
        return Child("maintain", procs[-1], tmp_path / "m.out", args=tuple(args))

    compaction = Compaction(100.0, 100.0, (("maintain", "a"), ("maintain", "b")))
    assert not compaction.due(99.0)
    assert compaction.due(100.0)
    compaction.start(100.0, run)
    assert compaction.due(101.0), "the next command follows as soon as the first ended"
    compaction.start(101.0, run)
    assert ran == [["maintain", "a"], ["maintain", "b"]]
    assert not compaction.due(150.0), "then nothing until the next interval"
    assert compaction.due(200.0)
    compaction.start(200.0, run)
    assert ran[-1] == ["maintain", "a"]
