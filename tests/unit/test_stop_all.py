"""``./stop_all.sh``: stops the processes this checkout recorded, and no other process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from iot_lakehouse.interfaces.supervisor import spawn, stop_children
from iot_lakehouse.runtime.processes import process_started
from iot_lakehouse.settings import PROJECT_ROOT
from tests.conftest import free_port

# Command lines the old `pkill -f` patterns matched: another checkout's emitter and job.
LOOKALIKES = (["iot-lakehouse", "emitter", "run"], ["-m", "iot_lakehouse", "run", "bronze"])


def wait_for(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def alive(proc: subprocess.Popen[str] | subprocess.Popen[bytes]) -> bool:
    return proc.poll() is None


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """This checkout's scripts with a runtime folder of the test's own."""
    return {
        **os.environ,
        "IOT_RUNTIME_DIR": str(tmp_path / "runtime"),
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
    }


@pytest.fixture
def others() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes this checkout did not start (other checkouts, test runs, anything)."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if alive(proc):
            proc.kill()
        proc.wait()


def other_process(others: list[subprocess.Popen[bytes]], *argv: str) -> subprocess.Popen[bytes]:
    script = "import time; time.sleep(300)"
    proc = subprocess.Popen([sys.executable, "-c", script, *argv], start_new_session=True)
    others.append(proc)
    wait_for(lambda: process_started(proc.pid) is not None)
    return proc


def emitter_dirs(tmp_path: Path) -> tuple[Path, Path]:
    init, landing = tmp_path / "init", tmp_path / "landing"
    init.mkdir()
    (init / "sensor_data_1.json").write_text("{}\n")
    return init, landing


def stop_all(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(PROJECT_ROOT / "stop_all.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_stop_all_stops_what_the_scripts_recorded_and_nothing_else(
    tmp_path: Path, env: dict[str, str], others: list[subprocess.Popen[bytes]]
) -> None:
    lookalikes = [other_process(others, *argv) for argv in LOOKALIKES]
    unrelated = other_process(others, "unrelated")
    init, landing = emitter_dirs(tmp_path)
    # Started the way the start_*.sh scripts start a service: iot_cli of scripts/lib.sh.
    emitter = subprocess.Popen(
        [
            "bash",
            "-c",
            f'source "{PROJECT_ROOT}/scripts/lib.sh"; iot_cli "$@"',
            "iot_cli",
            *("emitter", "run", "--init-dir", str(init), "--landing-dir", str(landing)),
            *("--min-delay-s", "300", "--max-delay-s", "300"),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        stdout = emitter.stdout
        assert stdout is not None
        wait_for(lambda: "event=emitter_start" in stdout.readline())
        # Records stop_all.sh must not act on: a pid reused by another process (its start
        # time differs), and a live process that does not run the recorded command.
        pids = Path(env["IOT_RUNTIME_DIR"]) / "pids"
        pids.mkdir(parents=True, exist_ok=True)
        (pids / f"{lookalikes[0].pid}.pid").write_text(
            f"pid={lookalikes[0].pid}\nstarted=1\nmatch=iot-lakehouse emitter\nrole=main\n"
        )
        (pids / f"{unrelated.pid}.pid").write_text(
            f"pid={unrelated.pid}\nstarted={process_started(unrelated.pid)}\n"
            "match=iot-lakehouse generate\nrole=main\n"
        )

        done = stop_all(env)

        hit = [p.args for p in [*lookalikes, unrelated] if not alive(p)]
        assert hit == [], f"stop_all.sh stopped processes it did not start\n{done.stdout}"
        assert emitter.wait(timeout=30) == 0
        out = stdout.read()
        assert "stopped: moved 0 file(s) in 0 batch(es); 1 left in" in out
        assert f"sent SIGTERM to pid {emitter.pid} (iot-lakehouse emitter)" in done.stdout
        assert f"left pid {unrelated.pid} alone" in done.stderr
        assert sorted(p.name for p in pids.iterdir()) == [f"{unrelated.pid}.pid"]
        assert done.returncode == 0, done.stdout + done.stderr
    finally:
        if alive(emitter):
            os.killpg(emitter.pid, signal.SIGKILL)
            emitter.wait()


def test_stop_all_stops_a_child_of_all_left_behind(
    tmp_path: Path, env: dict[str, str], others: list[subprocess.Popen[bytes]]
) -> None:
    # `all` records the children it spawns; if it dies without stopping them, stop_all.sh does.
    lookalike = other_process(others, *LOOKALIKES[1])
    runtime = Path(env["IOT_RUNTIME_DIR"])
    init, landing = emitter_dirs(tmp_path)
    args = ["emitter", "run", "--init-dir", str(init), "--landing-dir", str(landing)]
    child = spawn(
        "emitter",
        [*args, "--min-delay-s", "300", "--max-delay-s", "300"],
        runtime / "logs",
        env,
        pids_dir=runtime / "pids",
    )
    try:
        assert child.record is not None
        assert child.record.read_text().splitlines() == [
            f"pid={child.proc.pid}",
            f"started={process_started(child.proc.pid)}",
            "match=iot_lakehouse emitter",
            "role=child",
        ]
        wait_for(lambda: "event=emitter_start" in child.log.read_text())

        done = stop_all(env)

        assert child.proc.wait(timeout=30) == 0, done.stdout + done.stderr
        assert "stopped: moved 0 file(s)" in child.log.read_text()
        assert alive(lookalike)
        assert not child.record.exists()
    finally:
        stop_children([child], timeout=10)


def test_stop_all_leaves_a_process_a_stale_broker_pid_file_names(
    env: dict[str, str], others: list[subprocess.Popen[bytes]]
) -> None:
    # The broker exited long ago and its pid now belongs to someone else's process.
    someone_else = other_process(others, "kafka.Kafka", "/elsewhere/server.properties")
    kafka = Path(env["IOT_RUNTIME_DIR"]) / "kafka"
    kafka.mkdir(parents=True)
    (kafka / "broker.pid").write_text(str(someone_else.pid))

    done = stop_all(env)

    assert alive(someone_else), done.stdout + done.stderr
    assert f"left pid {someone_else.pid} alone: it is not this checkout's broker" in done.stderr
    assert not (kafka / "broker.pid").exists()
    assert done.returncode == 0
