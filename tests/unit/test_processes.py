"""Pid files, liveness and reaping of the processes the project starts."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from iot_lakehouse.runtime.processes import alive, read_pid, reap, wait_until_ready


def test_a_running_process_is_alive_and_an_ended_one_is_not(tmp_path: Path) -> None:
    assert alive(os.getpid())
    ended = subprocess.Popen(["true"])
    while alive(ended.pid):  # a zombie until reaped: already not alive
        reap(ended.pid)
    assert not alive(ended.pid) and not alive(None)
    (tmp_path / "x.pid").write_text(f"{ended.pid}\n")
    assert read_pid(tmp_path / "x.pid") == ended.pid
    assert read_pid(tmp_path / "missing.pid") is None


def test_waiting_for_a_server_tells_ready_exited_and_timed_out_apart() -> None:
    asked = []

    def ready_on_third_ask() -> bool:
        asked.append(1)
        return len(asked) >= 3

    server = subprocess.Popen(["sleep", "30"])
    try:
        assert wait_until_ready(server, ready_on_third_ask, timeout=10, every=0.01) == "ready"
        assert len(asked) == 3
        began = time.monotonic()
        assert wait_until_ready(server, lambda: False, timeout=0.3, every=0.05) == "timed out"
        assert 0.3 <= time.monotonic() - began < 5
    finally:
        server.kill()
        server.wait()
    crashed = subprocess.Popen(["sh", "-c", "exit 3"])
    crashed.wait()
    assert wait_until_ready(crashed, lambda: True, timeout=10, every=0.01) == "exited"
