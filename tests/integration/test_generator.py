"""Tests of the sensor data generator: pure generation and options, then runs against the
real broker (the command, and the manifest's reruns)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from iot_lakehouse.runtime.kafka_broker import LocalKafkaBroker
from iot_lakehouse.settings import PROJECT_ROOT, Settings
from iot_lakehouse.sources.generator import (
    KINDS,
    NO_FORMAT,
    GeneratorConfig,
    config_to_json,
    read_manifest,
    run_generator,
)
from tests.support.generator import (
    consume,
    generate_cli,
    new_topic,
    parse_ts,
    payload_shape,
    problems,
)


def test_generate_command_produces_exactly_count_to_the_real_broker(
    kafka_settings: Settings, tmp_path: Path
) -> None:
    """``iot-lakehouse generate`` end to end: exit 0, every message acknowledged and in Kafka."""

    from iot_lakehouse.runtime.kafka_offsets import kafka_end_offsets

    settings = kafka_settings.with_(kafka_topic=f"gen-{uuid.uuid4().hex[:8]}")
    LocalKafkaBroker(settings).create_topics()
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "KAFKA_TOPIC": settings.kafka_topic,
        # a runtime folder of its own: its log is this run's alone (a generator another test
        # SIGKILLed may have left a cut line in the shared one)
        "IOT_RUNTIME_DIR": str(tmp_path / "runtime"),
        "GENERATOR_API_PORT": "0",  # no control API (test_generator_api.py has it)
        "LOG_FORMAT": "json",
    }
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "iot_lakehouse",
            "generate",
            "--count",
            "2500",
            "--rate",
            "5000",
            "--format",
            "long",
            "--malformed-fraction",
            "0.1",
            "--seed",
            "3",
        ],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "sent=2500 delivered=2500 failed=0" in run.stdout
    # LOG_FORMAT=json: the log is JSON lines on stdout and in .runtime/logs/generate.log.
    logged = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    start = next(e for e in logged if e["message"] == "generator_start")
    assert start["component"] == "generate" and start["level"] == "INFO"
    assert start["context"]["topic"] == settings.kafka_topic and start["context"]["rate"] == 5000
    log_file = tmp_path / "runtime" / "logs" / "generate.log"
    assert [json.loads(line) for line in log_file.read_text().splitlines()] == logged
    offsets = kafka_end_offsets(settings)
    assert offsets is not None and sum(offsets.values()) == 2500
    assert len([p for p, end in offsets.items() if end > 0]) == settings.kafka_topic_partitions


def classify(records: dict[int, list[Any]], start: datetime) -> tuple[Counter[str], Counter[str]]:
    """(formats, kinds) of consumed records, judged from their bytes alone. A partition holds
    its records in the order they were sent, so a valid reading is newer than every one before
    it; a late one lies at least 60 s behind its nominal time, and so far behind the newest
    valid reading of its partition (the stream sends several a second to each); a duplicate
    repeats an earlier record (key and value)."""
    formats: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    for partition in records.values():
        seen: set[tuple[bytes, bytes]] = set()
        newest = start
        for key, value in partition:
            shape = payload_shape(value)
            formats[shape] += 1
            if shape == NO_FORMAT:
                kinds["malformed"] += 1
                continue
            record = json.loads(value)
            if problems(record, start):
                kinds["invalid"] += 1
            elif (key, value) in seen:
                kinds["duplicate"] += 1
            elif parse_ts(record["timestamp"]) < newest - timedelta(seconds=30):
                kinds["late"] += 1
            else:
                kinds["valid"] += 1
                newest = max(newest, parse_ts(record["timestamp"]))
            seen.add((key, value))
    del formats[NO_FORMAT]
    return formats, kinds


def test_rerun_from_the_manifest_sends_the_same_bytes_and_the_counts_are_what_was_sent(
    kafka_settings: Settings, tmp_path: Path
) -> None:
    first = new_topic(kafka_settings, "manifest-a")
    second = new_topic(kafka_settings, "manifest-b")
    config = GeneratorConfig(
        sensors=40,
        rate=50.0,  # 100 s of event time: late readings after the first minute (see classify)
        count=5000,
        seed=23,
        format="mixed",
        malformed_fraction=0.04,
        invalid_fraction=0.04,
        duplicate_fraction=0.04,
        late_fraction=0.04,
        anomalies=True,
        ground_truth=str(tmp_path / "truth-a.jsonl"),
        topic=first.kafka_topic,
        paced=False,
        manifest=str(tmp_path / "a.json"),
    )  # start_time None: now; the manifest must keep the time it resolved to
    report = run_generator(config, first)
    assert (report.sent, report.delivered, report.failed) == (5000, 5000, 0)
    manifest = read_manifest(tmp_path / "a.json")

    # the rerun, as a user runs it: only the topic, the outputs and the speed differ
    rerun = generate_cli(
        first,
        *("--from-manifest", str(tmp_path / "a.json"), "--manifest", str(tmp_path / "b.json")),
        *("--topic", second.kafka_topic, "--ground-truth", str(tmp_path / "truth-b.jsonl")),
    )
    out, _ = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, out.decode()[-3000:]
    assert b"sent=5000 delivered=5000 failed=0" in out

    a, b = consume(first, first.kafka_topic), consume(second, second.kafka_topic)
    assert sum(len(records) for records in a.values()) == 5000
    assert a == b  # per partition: the same keys and values in the same order
    assert (tmp_path / "truth-a.jsonl").read_bytes() == (tmp_path / "truth-b.jsonl").read_bytes()

    # the manifest: configuration, seed, event times, counts as consumed, ground truth
    start = parse_ts(manifest["event_time"]["start"])
    assert abs(start - datetime.now(UTC)) < timedelta(minutes=2)
    assert manifest["config"]["start_time"] == manifest["event_time"]["start"]
    assert manifest["event_time"]["end"] == report_end(start, 5000, 50.0)
    assert (manifest["state"], manifest["reason"], manifest["seed"]) == (
        "finished",
        "count_reached",
        23,
    )
    assert manifest["config"] == {
        **config_to_json(config),
        "start_time": manifest["config"]["start_time"],
    }
    formats, kinds = classify(a, start)
    counts = manifest["counts"]
    assert counts["by_format"] == dict(formats) and set(formats) == {"wide", "long"}
    assert counts["by_kind"] == {k: kinds[k] for k in KINDS} and all(kinds[k] for k in KINDS)
    assert (counts["sent"], counts["delivered"], counts["delivery_failures"]) == (5000, 5000, 0)
    assert manifest["ground_truth"] == str(tmp_path / "truth-a.jsonl")
    assert manifest["reproducible_events"] == 5000 and manifest["clock_changes"] == []

    again = read_manifest(tmp_path / "b.json")
    assert again["run_id"] != manifest["run_id"]
    assert again["counts"] == counts and again["event_time"] == manifest["event_time"]
    assert again["config"] == {
        **manifest["config"],
        "topic": second.kafka_topic,
        "ground_truth": str(tmp_path / "truth-b.jsonl"),
        "manifest": str(tmp_path / "b.json"),
    }


def report_end(start: datetime, count: int, rate: float) -> str:
    """The nominal event time of event ``count - 1``, as the manifest writes it."""
    end = start + timedelta(seconds=(count - 1) / rate)
    return end.isoformat(timespec="milliseconds").replace("+00:00", "Z")
