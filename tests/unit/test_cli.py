"""The ``iot-lakehouse`` command itself: version, license, health, the core without extras."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "iot_lakehouse", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=None if env is None else {**os.environ, **env},
    )


def test_version_is_the_one_of_pyproject() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    done = run_cli("--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"iot-lakehouse {project['version']}"


def test_the_license_file_is_the_license_pyproject_names() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == {"text": "Apache-2.0"}
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text


def test_health_exits_0_only_while_the_driver_runs_with_its_jobs_up(tmp_path: Path) -> None:
    env = {"IOT_RUNTIME_DIR": str(tmp_path)}
    done = run_cli("health", env=env)
    assert done.returncode == 1 and "no job states" in done.stdout
    states = tmp_path / "job_states.json"
    states.write_text(json.dumps({"pid": os.getpid(), "jobs": {"bronze": "up", "gold": "up"}}))
    done = run_cli("health", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "bronze=up gold=up" in done.stdout
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    states.write_text(json.dumps({"pid": gone.pid, "jobs": {"bronze": "up"}}))
    done = run_cli("health", env=env)
    assert done.returncode == 1 and "not running" in done.stdout
