"""bench: the rate search, lag flatness, visibility latency, percentiles, ours against the
textbook job and the report; the raw Kafka ceilings against the real test broker. The whole
``bench`` command runs for half an hour and more, so it is run by hand (docs/measured.md), not
here; tests/integration/test_bench_textbook.py runs the textbook job itself."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from iot_lakehouse.benchmarks.bench_runs import kafka_ceilings
from iot_lakehouse.settings import Settings


def test_kafka_ceilings_on_the_real_broker(kafka_settings: Settings) -> None:
    produce, consume = kafka_ceilings(kafka_settings, 20_000)
    assert produce > 1_000 and consume > 1_000, (produce, consume)


@pytest.mark.integration  # starts a JVM, broker, browser or kernel
def test_the_bench_command_runs_a_part_prints_the_table_and_saves_json(tmp_path: Path) -> None:
    # The real command with its own broker (free ports, temporary folder): the cheapest part.
    import os

    results = tmp_path / "results"
    done = subprocess.run(
        [sys.executable, "-m", "iot_lakehouse", "bench", "--quick", "--only", "ceilings"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "IOT_RUNTIME_DIR": str(tmp_path / "runtime")},
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| Kafka produce, raw (acks=all) | msg/s" in done.stdout, done.stdout
    saved = list((tmp_path / "bench" / "results").glob("*.json"))
    assert len(saved) == 1 and str(saved[0].relative_to(tmp_path)) in done.stdout
    figures = {f["name"]: f for f in json.loads(saved[0].read_text())["figures"]}
    assert figures["Kafka consume, raw"]["ours"] > 1_000
    assert not results.exists()  # --results was not given: the default folder under cwd
