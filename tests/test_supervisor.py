"""``./start_all.sh --duration N``: the README's main command, end to end, on a private broker."""

from __future__ import annotations

import os
import re
import socket
import subprocess
from pathlib import Path

from deltalake import DeltaTable

from iot_lakehouse.settings import PROJECT_ROOT
from tests.conftest import free_port


def port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_start_all_runs_for_duration_then_stops_everything_it_started(tmp_path: Path) -> None:
    port, controller = free_port(), free_port()
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
        }
    )
    run = subprocess.run(
        [str(PROJECT_ROOT / "start_all.sh"), "--duration", "330", "--rate", "300"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=660,
    )
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-4000:]

    status_lines = re.findall(
        r"kafka=(\d+) bronze=(\d+|-) bronze_lag=\S+ silver=(\d+|-) dlq=\S+ duplicates=\S+ "
        r"gold_5m=(\d+|-) gold_late=\S+ alerts=(?:\d+|-) open_alerts=(?:\d+|-) "
        r"(?:\w+_per_s=[\d.-]+ )*bronze=up silver=up gold=up alerts=up generator=up",
        run.stdout,
    )
    assert len(status_lines) >= 5, run.stdout[-2000:]
    bronze_seen = [int(b) for _, b, _, _ in status_lines if b != "-"]
    silver_seen = [int(s) for _, _, s, _ in status_lines if s != "-"]
    gold_seen = [int(g) for _, _, _, g in status_lines if g != "-"]
    assert bronze_seen and bronze_seen[-1] > 0, f"bronze never grew:\n{run.stdout[-3000:]}"
    assert bronze_seen == sorted(bronze_seen), "bronze row count went down"
    assert silver_seen and silver_seen[-1] > 0, f"silver never grew:\n{run.stdout[-3000:]}"
    assert gold_seen and gold_seen[-1] > 0, f"gold never grew:\n{run.stdout[-3000:]}"
    assert re.search(r"bronze_per_s=[1-9]", run.stdout), "no bronze rate shown"

    # Graceful stop of every child, then the broker it started.
    assert re.search(r"stopped component=bronze exit_code=0", out), out[-3000:]
    assert re.search(r"stopped component=silver exit_code=0", out), out[-3000:]
    assert re.search(r"stopped component=gold exit_code=0", out), out[-3000:]
    assert re.search(r"stopped component=alerts exit_code=0", out), out[-3000:]
    assert re.search(r"stopped component=generator exit_code=0", out), out[-3000:]
    assert "kafka broker stopped" in out
    assert not port_open(port)
    leftovers = subprocess.run(["pgrep", "-af", str(tmp_path)], capture_output=True, text=True)
    assert leftovers.stdout.strip() == "", leftovers.stdout

    table = DeltaTable(str(tmp_path / "lakehouse" / "bronze" / "sensor_events"))
    assert table.to_pyarrow_table().num_rows >= bronze_seen[-1]
