"""The ``iot-lakehouse`` command itself: version, license, health, the core without extras."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


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


@pytest.mark.integration
def test_the_core_installs_alone_and_a_command_names_the_extra_it_needs(tmp_path: Path) -> None:
    """pyproject's dependencies without any extra, at uv.lock's versions, in a fresh venv."""
    uv = shutil.which("uv")
    assert uv, "uv is on PATH (./run_tests.sh installs it)"
    core = tmp_path / "core.txt"
    exported = subprocess.run(
        [uv, "export", "--frozen", "--no-dev", "--no-hashes", "--no-emit-project", "-o", str(core)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert exported.returncode == 0, exported.stderr
    assert "streamlit" not in core.read_text() and "fastapi" not in core.read_text()
    venv = tmp_path / "venv"
    for command in (
        [uv, "venv", "--quiet", "--python", sys.executable, str(venv)],
        [uv, "pip", "install", "--quiet", "--python", str(venv), "--no-deps", "-r", str(core)],
        [uv, "pip", "install", "--quiet", "--python", str(venv), "--no-deps", str(ROOT)],
    ):
        done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
        assert done.returncode == 0, f"{command}: {done.stderr}"
    python = str(venv / "bin" / "python")
    env = {**os.environ, "IOT_RUNTIME_DIR": str(tmp_path / "runtime")}
    env.pop("VIRTUAL_ENV", None)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [python, *args], capture_output=True, text=True, timeout=300, check=False, env=env
        )

    core_modules = (
        "pipeline.jobs pipeline.silver pipeline.gold pipeline.alerts pipeline.serving ops.status "
        "ops.reconcile interfaces.prometheus sources.generator catalog"
    )
    imported = run(
        "-c",
        "import importlib, importlib.util; "
        f"[importlib.import_module('iot_lakehouse.' + m) for m in {core_modules.split()!r}]; "
        "print(importlib.util.find_spec('streamlit'), importlib.util.find_spec('fastapi'))",
    )
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.split() == ["None", "None"], "the venv must hold the core only"
    assert run("-m", "iot_lakehouse", "--version").returncode == 0
    dashboard = run("-m", "iot_lakehouse", "dashboard")
    assert dashboard.returncode == 2
    assert "pip install 'iot-lakehouse[dashboard]'" in dashboard.stderr
    generate = run("-m", "iot_lakehouse", "generate", "--count", "1")
    assert generate.returncode == 2
    assert "iot-lakehouse[api]" in generate.stderr and "--api-port 0" in generate.stderr
