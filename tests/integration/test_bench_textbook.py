"""bench_textbook: the textbook one-hop job the bench sets beside ours. Its ranges come from the
silver rules; run for real (its own process, the session broker, ``--available-now``) it keeps
exactly the parseable in-range long-format readings and logs its batches the way the bench
reads them."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from confluent_kafka import Producer
from deltalake import DeltaTable

from iot_lakehouse.benchmarks.bench import progress_rows
from iot_lakehouse.benchmarks.bench_runs import processing_rate
from iot_lakehouse.benchmarks.bench_textbook import BATCH_MESSAGE
from iot_lakehouse.settings import PROJECT_ROOT, Settings
from iot_lakehouse.sources.generator import EventGenerator, GeneratorConfig
from tests.conftest import job_env

START = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
TS = "2026-01-05T08:00:00.000Z"


def long_reading(**changes: object) -> bytes:
    """A long-format reading as the generator writes it, with ``changes`` (``...``: no such
    field)."""
    record: dict[str, object] = {
        "timestamp": TS,
        "device_id": "sensor-bad",
        "building": "A",
        "floor": 1,
        "type": "temperature",
        "value": 21.5,
        "unit": "°C",
    }
    record.update(changes)
    return json.dumps({k: v for k, v in record.items() if v is not ...}).encode()


# Records the textbook job must drop: each does not parse, lacks a field or is out of range.
DROPPED: list[bytes | None] = [
    long_reading(value=999.0),  # out of range
    long_reading(type="humidity", value=-5.0),
    long_reading(type="radiation", value=1.0),  # a metric the rules do not know
    long_reading(value="hot"),  # wrong type
    long_reading(value=None),
    long_reading(value=...),  # missing fields
    long_reading(device_id=...),
    long_reading(timestamp=...),
    long_reading(timestamp="2026-13-45T25:61:00Z"),  # unparsable time
    long_reading(type="energy_consumption").replace(b"21.5", b"NaN"),  # open max: still out
    long_reading(type="energy_consumption").replace(b"21.5", b"Infinity"),
    long_reading(type="humidity", value=50.0)[:-1],  # truncated after every field
    b"\x80" + long_reading(),  # not UTF-8
    b"[" + long_reading() + b"]",  # JSON, not an object
    b"",
    None,  # a tombstone
    json.dumps({"sensor_id": "sensor-w", "timestamp": TS, "temperature": 21.0}).encode(),  # wide
]
# Edge cases it must keep: the range is inclusive, a metric without a maximum has none, and
# Spark's JSON parser takes single quotes by its defaults (as the generator's garbage variant
# ``repr(record)`` has them).
KEPT_EDGES = [
    long_reading(device_id="edge-hot", value=50.0),
    long_reading(device_id="edge-energy", type="energy_consumption", value=1e6, unit="kWh"),
    long_reading(device_id="edge-quotes").replace(b'"', b"'"),
]


def spark_json(payload: bytes) -> Any:
    """The payload as Spark's JSON parser reads it with its default options: UTF-8 text that
    is JSON, or JSON with single quotes (``allowSingleQuotes``); None if neither."""
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        return None
    for parse in (json.loads, ast.literal_eval):
        try:
            return parse(text)
        except (ValueError, SyntaxError):
            continue
    return None


def expected_row(payload: bytes) -> tuple[str, str, float, datetime]:
    record = spark_json(payload)
    at = datetime.fromisoformat(record["timestamp"]).astimezone(UTC)
    return record["device_id"], record["type"], float(record["value"]), at


def test_the_textbook_job_keeps_exactly_the_parseable_in_range_readings(
    settings: Settings, tmp_path: Path
) -> None:
    config = GeneratorConfig(
        sensors=50, count=300, seed=3, format="long", malformed_fraction=0.1, start_time=START
    )
    generator = EventGenerator(config)
    events = [generator.generate_event(i) for i in range(300)]
    assert {e.kind for e in events} == {"valid", "malformed"}
    # the valid readings and the malformed ones Spark's parser reads all the same
    valid = [e.value for e in events if isinstance(spark_json(e.value), dict)]
    assert len(valid) > len([e for e in events if e.kind == "valid"])  # a repr(record) too
    payloads = [e.value for e in events] + DROPPED + KEPT_EDGES
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers, "acks": "all"})
    for payload in payloads:
        producer.produce(settings.kafka_topic, payload)
    assert producer.flush(30) == 0

    table, log = tmp_path / "textbook", tmp_path / "textbook.out"
    with open(log, "wb") as out:
        done = subprocess.run(
            [
                *(
                    sys.executable,
                    "-m",
                    "iot_lakehouse.benchmarks.bench_textbook",
                    "--available-now",
                ),
                *("--bootstrap-servers", settings.kafka_bootstrap_servers),
                *("--topic", settings.kafka_topic, "--table", str(table)),
                *("--checkpoint", str(tmp_path / "checkpoint"), "--starting-offsets", "earliest"),
            ],
            env=job_env(settings, LOG_FORMAT="json", LOG_LEVEL="INFO"),
            cwd=PROJECT_ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=240,
        )
    lines = log.read_text(errors="replace").splitlines()
    assert done.returncode == 0, "\n".join(lines[-40:])

    got = DeltaTable(str(table)).to_pyarrow_table().to_pylist()
    rows = sorted(
        (r["sensor_id"], r["metric"], r["value"], r["event_time"].replace(tzinfo=UTC)) for r in got
    )
    expected = sorted(expected_row(p) for p in valid + KEPT_EDGES)
    extra, missing = set(rows) - set(expected), set(expected) - set(rows)
    assert rows == expected, f"kept but not expected: {extra}; expected, not kept: {missing}"
    assert len(valid) < 300  # the other malformed records are gone
    locations = {r["location"] for r in got}
    assert "building-A/floor-1" in locations and None not in locations

    # The bench reads its rate from these lines: every Kafka record counted once.
    batches = progress_rows(lines, BATCH_MESSAGE, "textbook")
    assert batches, "no batch line logged"
    rate, records = processing_rate(batches, "textbook")
    assert records == len(payloads) and rate is not None and rate > 0
