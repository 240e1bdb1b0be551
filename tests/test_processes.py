"""Pid files, liveness and reaping of the processes the project starts."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from iot_lakehouse.runtime.processes import alive, read_pid, reap


def test_a_running_process_is_alive_and_an_ended_one_is_not(tmp_path: Path) -> None:
    assert alive(os.getpid())
    ended = subprocess.Popen(["true"])
    while alive(ended.pid):  # a zombie until reaped: already not alive
        reap(ended.pid)
    assert not alive(ended.pid) and not alive(None)
    (tmp_path / "x.pid").write_text(f"{ended.pid}\n")
    assert read_pid(tmp_path / "x.pid") == ended.pid
    assert read_pid(tmp_path / "missing.pid") is None
