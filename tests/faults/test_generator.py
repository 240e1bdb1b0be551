"""Tests of the sensor data generator: pure generation and options, then runs against the
real broker (the command, and the manifest's reruns)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from iot_lakehouse.settings import Settings
from iot_lakehouse.sources.generator import (
    read_manifest,
    rerun_config,
    run_generator,
)
from tests.support.generator import consume, generate_cli, new_topic


def test_a_killed_run_leaves_a_manifest_whose_rerun_repeats_what_it_sent(
    kafka_settings: Settings, tmp_path: Path
) -> None:
    first = new_topic(kafka_settings, "killed")
    second = new_topic(kafka_settings, "killed-rerun")
    path = tmp_path / "killed.json"
    proc = generate_cli(
        first, "--rate", "400", "--seed", "5", "--sensors", "25", "--duplicate-fraction", "0.1",
        "--manifest", str(path),
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        # written at the start, then at every progress line (5 s)
        while not (path.exists() and read_manifest(path)["counts"]["sent"] > 0):
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            assert time.monotonic() < deadline, "no periodic manifest update in 30 s"
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        if proc.stdout:
            proc.stdout.close()
    manifest = read_manifest(path)
    sent = manifest["counts"]["sent"]
    assert manifest["state"] == "running" and manifest["reason"] is None
    assert sum(manifest["counts"]["by_kind"].values()) == sent
    # (not late readings: a run killed within seconds has none, they need a minute behind them)
    assert manifest["counts"]["by_kind"]["duplicate"] > 0

    config = rerun_config(manifest, topic=second.kafka_topic, paced=False)
    assert config.count == sent
    report = run_generator(config, second)
    assert (report.sent, report.delivered) == (sent, sent)
    killed, again = consume(first, first.kafka_topic), consume(second, second.kafka_topic)
    assert sum(len(records) for records in again.values()) == sent
    # Kafka holds what the killed run had delivered by its last manifest update and maybe more
    # (sent after it), or less than it had sent (the SIGKILL lost what was still in flight).
    assert sum(len(records) for records in killed.values()) >= manifest["counts"]["delivered"]
    for partition, records in again.items():
        common = min(len(records), len(killed[partition]))
        assert common > 0 and killed[partition][:common] == records[:common], partition
