"""Processes the project started: their pid files and the records stop_all.sh stops them by,
whether they still run, reaping them."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

PIDS_DIR = "pids"  # under the runtime folder: the pid records stop_all.sh acts on


def read_pid(pid_file: Path) -> int | None:
    """The pid a pid file holds; None if there is no file or it holds no number."""
    try:
        return int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None


def reap(pid: int) -> None:
    """Collect a child's exit status so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def alive(pid: int | None) -> bool:
    """True if process ``pid`` exists and is not a zombie."""
    if pid is None or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return True  # no /proc: it exists


def process_started(pid: int) -> str | None:
    """Start time of process ``pid`` as stop_all.sh reads it (``iot_proc_started`` in
    scripts/lib.sh): clock ticks since boot from /proc, else ``ps`` lstart. None if it is gone
    or a zombie."""
    if Path("/proc/self").is_dir():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
        except (OSError, IndexError):
            return None
        return None if fields[0] == "Z" else fields[19]
    done = subprocess.run(
        ["ps", "-o", "stat=,lstart=", "-p", str(pid)], capture_output=True, text=True, check=False
    )
    state, _, started = done.stdout.strip().partition(" ")
    return None if not state or "Z" in state else " ".join(started.split())


def record_pid(pids_dir: Path, pid: int, match: str, role: str) -> Path | None:
    """Write ``pids_dir/<pid>.pid``, the record stop_all.sh stops process ``pid`` by (and only
    while it still started at the same time and runs a command containing ``match``)."""
    started = process_started(pid)
    if started is None:
        return None
    pids_dir.mkdir(parents=True, exist_ok=True)
    record, tmp = pids_dir / f"{pid}.pid", pids_dir / f".{pid}.tmp"
    tmp.write_text(f"pid={pid}\nstarted={started}\nmatch={match}\nrole={role}\n")
    os.replace(tmp, record)
    return record


def wait_until_ready(
    proc: subprocess.Popen[bytes], ready: Callable[[], bool], timeout: float, every: float
) -> Literal["ready", "exited", "timed out"]:
    """Poll a server just started until ``ready()`` holds (every ``every`` seconds), it
    exits, or ``timeout`` seconds pass; which of them happened first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return "exited"
        if ready():
            return "ready"
        time.sleep(every)
    return "timed out"
