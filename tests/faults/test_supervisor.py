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

from iot_lakehouse.runtime.stream_metrics import read_stream_metrics
from iot_lakehouse.settings import PROJECT_ROOT
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
