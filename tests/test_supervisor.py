"""``./start_all.sh --duration N``: the README's main command, end to end, on a private broker."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from pathlib import Path
from typing import IO, Any

import pytest
from deltalake import DeltaTable

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
from iot_lakehouse.runtime.stream_metrics import read_stream_metrics
from iot_lakehouse.settings import PROJECT_ROOT, Settings
from tests.conftest import free_port

EVERY_JOB = {"bronze", "silver", "gold", "alerts"}


def jobs_with_metrics(path: str) -> set[str]:
    """Jobs with a row in the stream_metrics table; none while it is being compacted."""
    try:
        return {r["job"] for r in read_stream_metrics(path)}
    except OSError:  # a file removed under the reader: the next look sees the new version
        return set()


def port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def collect(stream: IO[str] | None, into: list[str]) -> None:
    """Append every line of ``stream`` to ``into`` until it closes."""
    assert stream is not None
    into.extend(iter(stream.readline, ""))


def recorded_pid(runtime: Path, match: str) -> int:
    """The pid `all` recorded for stop_all.sh of its child whose command holds ``match``."""
    for record in (runtime / "pids").glob("*.pid"):
        fields = dict(line.split("=", 1) for line in record.read_text().splitlines() if "=" in line)
        if fields.get("match") == match:
            return int(fields["pid"])
    raise AssertionError(f"no pid record of {match!r} under {runtime}")


@pytest.mark.integration  # starts a JVM, broker, browser or kernel
def test_start_all_runs_restarts_a_dead_child_and_stops_everything_at_ctrl_c(
    tmp_path: Path,
) -> None:
    port, controller, api = free_port(), free_port(), free_port()
    env = dict(os.environ)
    env.update(
        {
            "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}",
            "KAFKA_CONTROLLER_PORT": str(controller),
            "IOT_RUNTIME_DIR": str(tmp_path / "runtime"),
            "LAKEHOUSE_PATH": str(tmp_path / "lakehouse"),
            "DLQ_PATH": str(tmp_path / "dlq"),
            "TRIGGER_INTERVAL": "5 seconds",  # four jobs, five queries: fewer empty batches
            "SPARK_DRIVER_MEMORY": "1g",
            "KAFKA_HEAP": "384m",
            "GENERATOR_API_PORT": str(api),
            "OPS_COMPACT_INTERVAL": "30 seconds",  # compacts the _ops tables while it runs
        }
    )
    # Like a user: run it, watch the status lines, press Ctrl-C (SIGINT to its process group)
    # once gold has rows; --duration only caps a run that never gets there.
    proc = subprocess.Popen(
        [str(PROJECT_ROOT / "start_all.sh"), "--duration", "600", "--rate", "100"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []
    errors: list[str] = []
    readers = [
        threading.Thread(target=collect, args=(proc.stdout, lines)),
        threading.Thread(target=collect, args=(proc.stderr, errors)),
    ]
    for reader in readers:
        reader.start()
    generator_status: dict[str, Any] = {}
    killed_generator = False
    metrics_path = str(tmp_path / "lakehouse/_ops/stream_metrics")
    deadline = time.monotonic() + 660
    while proc.poll() is None and time.monotonic() < deadline:
        seen = "".join(lines)
        if not killed_generator and re.search(r"gold_5m=[1-9]", seen) and seen.count("kafka=") >= 5:
            # A child dies: `all` starts it again after its backoff.
            os.killpg(recorded_pid(tmp_path / "runtime", "iot_lakehouse generate"), signal.SIGKILL)
            killed_generator = True
        elif killed_generator and "generator=up,restarts=1" in seen:
            # The generator it started again answers on its control API, and sends.
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"http://127.0.0.1:{api}/status", timeout=10) as r:
                    generator_status = json.load(r)
            maintain_out = tmp_path / "runtime" / "logs" / "maintain.out"
            maintained = maintain_out.read_text() if maintain_out.exists() else ""
            # and the compaction beside the jobs has done a table, and every job has
            # recorded a finished batch (gold's first ends well after its first rows)
            if (
                generator_status.get("sent")
                and "maintained table=_ops/" in maintained
                and jobs_with_metrics(metrics_path) >= EVERY_JOB
            ):
                os.killpg(proc.pid, signal.SIGINT)
                break
        time.sleep(1)
    try:
        proc.wait(timeout=240)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        for reader in readers:
            reader.join(timeout=10)
    stdout, out = "".join(lines), "".join(lines) + "".join(errors)
    assert proc.returncode == 0, out[-4000:]

    status_lines = re.findall(
        r"kafka=(\d+) bronze=(\d+|-) bronze_lag=\S+ silver=(\d+|-) dlq=\S+ duplicates=\S+ "
        r"gold_5m=(\d+|-) gold_late=\S+ alerts=(?:\d+|-) open_alerts=(?:\d+|-) "
        r"(?:\w+_per_s=[\d.-]+ )*bronze=up silver=up gold=up alerts=up generator=up",
        stdout,
    )
    assert len(status_lines) >= 5, stdout[-2000:]
    bronze_seen = [int(b) for _, b, _, _ in status_lines if b != "-"]
    silver_seen = [int(s) for _, _, s, _ in status_lines if s != "-"]
    gold_seen = [int(g) for _, _, _, g in status_lines if g != "-"]
    assert bronze_seen and bronze_seen[-1] > 0, f"bronze never grew:\n{stdout[-3000:]}"
    assert bronze_seen == sorted(bronze_seen), "bronze row count went down"
    assert silver_seen and silver_seen[-1] > 0, f"silver never grew:\n{stdout[-3000:]}"
    assert gold_seen and gold_seen[-1] > 0, f"gold never grew:\n{stdout[-3000:]}"
    assert re.search(r"bronze_per_s=[1-9]", stdout), "no bronze rate shown"
    assert generator_status["state"] == "running" and generator_status["sent"] > 0
    assert generator_status["config"]["sensors"] == 100, generator_status

    # Every process also logged to .runtime/logs/<component>.log, one file per component.
    logs = tmp_path / "runtime" / "logs"
    # (the four jobs run in one driver, JOBS_IN_ONE_DRIVER's default: one log, jobs.log)
    for component in ("all", "jobs", "generate"):
        assert "level=INFO" in (logs / f"{component}.log").read_text(), component
    # and every job recorded its queries' progress in _ops/stream_metrics
    metrics = read_stream_metrics(metrics_path)
    assert {r["job"] for r in metrics} == EVERY_JOB, metrics[-5:]
    # with the backlog of each job: Kafka offsets for bronze, bronze versions for silver
    assert any(r["kafka_lag_max"] is not None for r in metrics if r["job"] == "bronze")
    silver = [r["delta_versions_behind"] for r in metrics if r["job"] == "silver"]
    assert any(behind is not None for behind in silver), silver

    # Graceful stop of every child, then the broker it started.
    assert re.search(r"stopped component=jobs exit_code=0", out), out[-3000:]
    jobs_log = (logs / "jobs.log").read_text()
    for job in ("bronze", "silver", "gold", "alerts"):  # each of its jobs stopped its queries
        assert f"stopping query gracefully job={job} " in jobs_log, job
    assert re.search(r"stopped component=generator exit_code=0", out), out[-3000:]
    assert re.search(r"generator exited exit_code=-9 .*restart_in_s=5\.0", out), out[-3000:]
    assert re.search(r"restarted component=generator pid=\d+ restarts=1", out), out[-3000:]
    # `maintain --table _ops/` ran beside the jobs, which went on (every status line says up)
    assert "started component=maintain" in out, out[-3000:]
    maintained = (logs / "maintain.out").read_text()
    assert re.search(r"maintained table=_ops/\w+ files_before=", maintained), maintained[-3000:]
    assert "kafka broker stopped" in out
    assert not port_open(port)
    leftovers = subprocess.run(["pgrep", "-af", str(tmp_path)], capture_output=True, text=True)
    assert leftovers.stdout.strip() == "", leftovers.stdout

    table = DeltaTable(str(tmp_path / "lakehouse" / "bronze" / "sensor_events"))
    assert table.to_pyarrow_table().num_rows >= bronze_seen[-1]


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
