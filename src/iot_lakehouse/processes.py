"""Processes the project started: their pid files, whether they still run, reaping them."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


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
