"""The ``iot-lakehouse`` command itself: version, license, health, the core without extras."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


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
