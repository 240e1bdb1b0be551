"""Helpers the generator tests of tests/faults, tests/integration and tests/unit share."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from iot_lakehouse.runtime.kafka_broker import LocalKafkaBroker
from iot_lakehouse.runtime.kafka_offsets import kafka_watermarks
from iot_lakehouse.settings import PROJECT_ROOT, Settings
from iot_lakehouse.sources.generator import (
    LONG_FIELDS,
    METRICS,
    NO_FORMAT,
)

TS_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
UNITS = {name: unit for name, unit, _ in METRICS}
# Plausible physical ranges: valid readings fall inside, "out of range" invalid ones outside.
RANGES = {
    "temperature": (-40.0, 85.0),
    "humidity": (0.0, 100.0),
    "pressure": (900.0, 1100.0),
    "co2": (300.0, 10_000.0),
    "energy_consumption": (0.0, 100.0),
}


def parse_ts(text: str) -> datetime:
    assert TS_RE.match(text), text
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def problems(record: dict[str, Any], nominal: datetime) -> list[str]:
    """What makes a parsed record unusable as a reading (empty list: a good reading)."""
    found: list[str] = []
    if "sensor_id" in record or "location" in record:
        required = ["sensor_id", "timestamp", "temperature", "humidity", "pressure", "location"]
        metrics = {m: record.get(m) for m in ("temperature", "humidity", "pressure")}
    else:
        required = list(LONG_FIELDS)
        metrics = {str(record.get("type")): record.get("value")}
        if record.get("type") in UNITS and record.get("unit") != UNITS[record["type"]]:
            found.append("unit")
    found += [f"missing:{name}" for name in required if name not in record]
    for name, value in metrics.items():
        if name not in RANGES:
            found.append(f"type:{name}")
        elif value is None:
            found.append(f"null:{name}")
        elif isinstance(value, bool) or not isinstance(value, int | float):
            found.append(f"wrong_type:{name}")
        elif math.isnan(value):
            found.append(f"nan:{name}")
        elif not RANGES[name][0] <= value <= RANGES[name][1]:
            found.append(f"range:{name}")
    ts = record.get("timestamp")
    if isinstance(ts, str):
        try:
            when = parse_ts(ts)
        except (AssertionError, ValueError):
            found.append("bad_timestamp")
        else:
            if when > nominal + timedelta(days=1):
                found.append("future_timestamp")
    return found


# --- reruns against the real broker -------------------------------------------------------------
def payload_shape(value: bytes) -> str:
    """A payload's shape as a consumer sees it: "wide", "long" or NO_FORMAT (not an object).
    Every wide record has a location, every long one a building (even when invalid)."""
    try:
        record = json.loads(value.decode("utf-8"))
    except ValueError:
        return NO_FORMAT
    if not isinstance(record, dict):
        return NO_FORMAT
    return "wide" if "location" in record else "long" if "building" in record else "?"


def consume(settings: Settings, topic: str, timeout: float = 60.0) -> dict[int, list[Any]]:
    """Every record of ``topic``, as (key, value) per partition in offset order."""
    marks = kafka_watermarks(settings, topic)
    assert marks is not None, f"no topic {topic}"
    out: dict[int, list[Any]] = {p: [] for p in marks}
    left = sum(high - low for low, high in marks.values())
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "group.id": f"test-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
        }
    )
    try:
        consumer.assign([TopicPartition(topic, p, low) for p, (low, _) in marks.items()])
        deadline = time.monotonic() + timeout
        while left > 0:
            assert time.monotonic() < deadline, f"{left} records of {topic} not consumed"
            for msg in consumer.consume(1000, timeout=1.0):
                assert msg.error() is None, msg.error()
                out[msg.partition()].append((msg.key(), msg.value()))
                left -= 1
    finally:
        consumer.close()
    return out


def new_topic(kafka_settings: Settings, prefix: str) -> Settings:
    settings = kafka_settings.with_(kafka_topic=f"{prefix}-{uuid.uuid4().hex[:8]}")
    LocalKafkaBroker(settings).create_topics()
    return settings


def generate_cli(settings: Settings, *argv: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "KAFKA_TOPIC": settings.kafka_topic,
        "IOT_RUNTIME_DIR": str(settings.runtime_dir),
        "GENERATOR_API_PORT": "0",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "iot_lakehouse", "generate", *argv],
        env=env,
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
