"""The status picture: open alerts, rates and the live screen (pure functions)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from iot_lakehouse.ops.status import (
    status_json,
    status_report,
)
from iot_lakehouse.runtime.stream_metrics import Latency, append_rows, progress_row
from iot_lakehouse.settings import Settings


def test_status_command_prints_counts_then_each_querys_latest_batch(
    kafka_settings: Settings, tmp_path: Path
) -> None:
    settings = kafka_settings.with_(
        lakehouse_path=str(tmp_path / "lakehouse"), dlq_path=str(tmp_path / "dlq")
    )
    before = status_report(settings)
    assert "none recorded yet" in before and "bronze=-" in before

    now = datetime.now(UTC)
    silver = {
        "id": "q-silver",
        "runId": "r",
        "name": "silver",
        "timestamp": now.isoformat(),
        "numInputRows": 900,
        "inputRowsPerSecond": 180.0,
        "processedRowsPerSecond": 450.0,
        "durationMs": {"triggerExecution": 2000},
        "sources": [{"endOffset": '{"reservoirId": "bronze-id", "reservoirVersion": 17}'}],
    }
    rows = [
        progress_row(
            "silver",
            {**silver, "batchId": b},
            Latency("kafka_to_silver", p50, p95, 900),
            {"bronze-id": 20},  # bronze is at version 20: silver is 3 behind
        )
        for b, p50, p95 in ((1, 5000.0, 9000.0), (2, 1234.0, 2345.0))
    ]
    stale = progress_row("gold", {**silver, "name": "gold", "batchId": 9})
    stale["recorded_at"] = now - timedelta(hours=1)  # older than the status window: left out
    append_rows(None, settings.stream_metrics_path, [*rows, stale])

    as_json = json.loads(status_json(settings))
    assert as_json["counts"]["kafka_messages"] is not None
    assert as_json["counts"]["bronze_rows"] is None  # no bronze table yet
    [query] = as_json["queries"]  # the stale gold row is left out
    assert (query["job"], query["batch_id"], query["input_rows"]) == ("silver", 2, 900)
    assert datetime.fromisoformat(query["recorded_at"]) <= datetime.now(UTC)

    report = status_report(settings).splitlines()
    assert report[0].startswith("kafka=")
    silver_line = next(line for line in report if line.startswith("silver "))
    assert silver_line.split()[:1] + silver_line.split()[3:] == [
        "silver",
        "180.0",
        "450.0",
        "2000",
        "3",
        "-",
        "1234",
        "2345",
        "-",
    ]
    assert silver_line.split()[1] == "2"  # the newest batch
    assert not any(line.startswith("gold ") for line in report)


def test_status_command_runs_as_a_command(kafka_settings: Settings, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from iot_lakehouse.settings import PROJECT_ROOT

    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_settings.kafka_bootstrap_servers,
        "LAKEHOUSE_PATH": str(tmp_path / "lakehouse"),
        "IOT_RUNTIME_DIR": str(tmp_path / "runtime"),
    }
    run = subprocess.run(
        [sys.executable, "-m", "iot_lakehouse", "status"],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.splitlines()[0].startswith("kafka=")
    assert "stream metrics: none recorded yet" in run.stdout
