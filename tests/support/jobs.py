"""Helpers the jobs tests of tests/faults and tests/integration share."""

from __future__ import annotations

import subprocess
import sys

from iot_lakehouse.settings import PROJECT_ROOT


def start_jobs(env: dict[str, str], *jobs: str) -> subprocess.Popen[str]:
    """``iot-lakehouse run <jobs>`` in one driver, in a session of its own, stderr piped."""
    return subprocess.Popen(
        [sys.executable, "-m", "iot_lakehouse", "run", *jobs],
        env=env,
        cwd=PROJECT_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
