"""Tests of the sensor data generator: pure generation and options, then runs against the
real broker (the command, and the manifest's reruns)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
from confluent_kafka import Consumer, KafkaError, TopicPartition

from iot_lakehouse.errors import ConfigError
from iot_lakehouse.runtime.kafka_broker import LocalKafkaBroker
from iot_lakehouse.runtime.kafka_offsets import kafka_watermarks
from iot_lakehouse.settings import PROJECT_ROOT, Settings
from iot_lakehouse.sources.generator import (
    BLOCK_SIZE,
    KINDS,
    LONG_FIELDS,
    METRICS,
    NO_FORMAT,
    WIDE_FIELDS,
    EventGenerator,
    GeneratedEvent,
    GeneratorConfig,
    RunManifest,
    _chunk_size,
    _DeliveryTracker,
    _LibrdkafkaLog,
    add_generate_arguments,
    config_from_args,
    config_from_json,
    config_to_json,
    read_manifest,
    rerun_config,
    run_generator,
    write_manifest,
)

START = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
TS_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
SENSOR_RE = re.compile(r"^sensor-\d{5}$")
LOCATION_RE = re.compile(r"^building-[A-E]/floor-\d$")
UNITS = {name: unit for name, unit, _ in METRICS}
# Plausible physical ranges: valid readings fall inside, "out of range" invalid ones outside.
RANGES = {
    "temperature": (-40.0, 85.0),
    "humidity": (0.0, 100.0),
    "pressure": (900.0, 1100.0),
    "co2": (300.0, 10_000.0),
    "energy_consumption": (0.0, 100.0),
}
BAD_MIX = {
    "malformed_fraction": 0.05,
    "invalid_fraction": 0.05,
    "duplicate_fraction": 0.05,
    "late_fraction": 0.05,
}


def make(**overrides: Any) -> EventGenerator:
    options: dict[str, Any] = {"start_time": START, "seed": 7}
    options.update(overrides)
    return EventGenerator(GeneratorConfig(**options))


def events(gen: EventGenerator, n: int) -> list[GeneratedEvent]:
    return [gen.generate_event(i) for i in range(n)]


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


# --- determinism ---------------------------------------------------------------------------
def test_same_seed_and_start_give_identical_stream() -> None:
    a, b = make(**BAD_MIX), make(**BAD_MIX)
    first = events(a, 5000)
    assert first == events(b, 5000)
    assert len({e.value for e in first}) > 4000  # not a constant stream


def test_stream_does_not_depend_on_chunking_or_access_order() -> None:
    sequential = make(**BAD_MIX)
    stream = events(sequential, 3 * BLOCK_SIZE)
    fresh = make(**BAD_MIX)
    # Random access, backwards, and straight to a late block first.
    for i in [2 * BLOCK_SIZE + 5, 17, 3 * BLOCK_SIZE - 1, BLOCK_SIZE, 0, 1500]:
        assert fresh.generate_event(i) == stream[i]
    block = make(**BAD_MIX).generate_block(2)
    assert len(block) == BLOCK_SIZE
    for j in range(BLOCK_SIZE):
        event = stream[2 * BLOCK_SIZE + j]
        assert (block.keys[j], block.values[j], block.kinds[j]) == tuple(event)


def test_different_seed_gives_different_stream() -> None:
    a = [e.value for e in events(make(seed=1), 1000)]
    b = [e.value for e in events(make(seed=2), 1000)]
    assert sum(x != y for x, y in zip(a, b, strict=True)) > 950


def test_start_time_none_means_now_and_naive_means_utc() -> None:
    before = datetime.now(UTC) - timedelta(seconds=1)
    gen = EventGenerator(GeneratorConfig())
    assert before <= gen.start_time <= datetime.now(UTC)
    naive = GeneratorConfig(start_time=datetime(2026, 1, 1))
    assert naive.start_time == datetime(2026, 1, 1, tzinfo=UTC)


def test_negative_index_is_rejected() -> None:
    with pytest.raises(ValueError):
        make().generate_event(-1)


# --- formats ------------------------------------------------------------------------------
def test_wide_format_has_exactly_the_documented_fields() -> None:
    gen = make(format="wide")
    for i, event in enumerate(events(gen, 2000)):
        assert event.kind == "valid"
        record = json.loads(event.value)
        assert tuple(record) == WIDE_FIELDS
        assert event.key == record["sensor_id"].encode()
        assert SENSOR_RE.match(record["sensor_id"])
        assert LOCATION_RE.match(record["location"])
        assert parse_ts(record["timestamp"]) == gen.nominal_time(i).replace(
            microsecond=gen.nominal_time(i).microsecond // 1000 * 1000
        )
        for name in ("temperature", "humidity", "pressure", "lat", "lon", "battery"):
            assert isinstance(record[name], float), (name, record)
        assert problems(record, gen.nominal_time(i)) == []
        assert 0 < record["battery"] <= 100
        assert 52 < record["lat"] < 53 and 13 < record["lon"] < 14


def test_long_format_matches_the_real_sample_shape() -> None:
    gen = make(format="long")
    seen_types = set()
    for i, event in enumerate(events(gen, 2000)):
        record = json.loads(event.value.decode("utf-8"))
        assert tuple(record) == LONG_FIELDS
        assert event.key == record["device_id"].encode()
        assert record["building"] in "ABCDE" and len(record["building"]) == 1
        assert isinstance(record["floor"], int) and 0 <= record["floor"] <= 9
        assert record["unit"] == UNITS[record["type"]]
        assert problems(record, gen.nominal_time(i)) == []
        seen_types.add(record["type"])
        if record["type"] == "temperature":
            assert b'"unit": "\xc2\xb0C"' in event.value  # real UTF-8, not \u00b0
    assert seen_types == set(UNITS)


def test_mixed_format_has_both_shapes_about_half_each() -> None:
    records = [json.loads(e.value) for e in events(make(format="mixed"), 4000)]
    wide = sum("sensor_id" in r for r in records)
    assert all(tuple(r) in (WIDE_FIELDS, LONG_FIELDS) for r in records)
    assert 0.45 < wide / len(records) < 0.55


def test_a_sensor_keeps_its_location_and_values_are_realistic() -> None:
    gen = make(format="mixed", sensors=20)
    where: dict[str, set[tuple[str, int]]] = {}
    for event in events(gen, 4000):
        record = json.loads(event.value)
        if "location" in record:
            b, f = re.findall(r"building-(\w)/floor-(\d)", record["location"])[0]
            place = (b, int(f))
        else:
            place = (record["building"], record["floor"])
        where.setdefault(event.key.decode(), set()).add(place)
    assert len(where) == 20
    assert all(len(places) == 1 for places in where.values())


def test_daily_cycle_moves_temperature() -> None:
    # One event a minute for 20 blocks: about two weeks of virtual time for 3 sensors.
    gen = make(format="wide", sensors=3, rate=1 / 60)
    temps: dict[bytes, list[float]] = {}
    for event in events(gen, 20 * BLOCK_SIZE):
        temps.setdefault(event.key, []).append(json.loads(event.value)["temperature"])
    for series in temps.values():
        assert 15 - 5 < min(series) and max(series) < 28 + 5
        assert max(series) - min(series) > 3.0  # amplitude 2-4 °C each side of the baseline


def test_ten_thousand_sensors() -> None:
    gen = make(sensors=10_000)
    keys = [e.key.decode() for e in events(gen, 20 * BLOCK_SIZE)]
    assert all(SENSOR_RE.match(k) for k in keys)
    assert len(set(keys)) > 8000
    assert max(keys) <= "sensor-09999"
    assert gen.sensor_ids[-1] == "sensor-09999"


# --- bad input kinds ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def mixed_bad() -> tuple[EventGenerator, list[GeneratedEvent]]:
    gen = make(**BAD_MIX, late_max_seconds=900)
    return gen, events(gen, 20 * BLOCK_SIZE)


def test_fractions_are_honoured(mixed_bad: tuple[EventGenerator, list[GeneratedEvent]]) -> None:
    _, stream = mixed_bad
    n = len(stream)
    for kind in ("malformed", "invalid", "duplicate", "late"):
        share = sum(e.kind == kind for e in stream) / n
        assert 0.04 <= share <= 0.06, (kind, share)
    assert 0.78 <= sum(e.kind == "valid" for e in stream) / n <= 0.82


def test_no_bad_kinds_by_default() -> None:
    assert {e.kind for e in events(make(), 5000)} == {"valid"}


def test_malformed_payloads_are_not_json_objects(
    mixed_bad: tuple[EventGenerator, list[GeneratedEvent]],
) -> None:
    _, stream = mixed_bad
    outcomes = {"non_utf8": 0, "not_json": 0, "not_object": 0, "empty": 0}
    malformed = [e for e in stream if e.kind == "malformed"]
    for event in malformed:
        assert SENSOR_RE.match(event.key.decode())
        if event.value == b"":
            outcomes["empty"] += 1
        try:
            text = event.value.decode("utf-8")
        except UnicodeDecodeError:
            outcomes["non_utf8"] += 1
            # Even decoded leniently (as Spark's CAST does) it must stay unparsable.
            with pytest.raises(ValueError):
                json.loads(event.value.decode("utf-8", errors="replace"))
            continue
        try:
            parsed = json.loads(text)
        except ValueError:
            outcomes["not_json"] += 1
            continue
        assert not isinstance(parsed, dict), event.value
        outcomes["not_object"] += 1
    assert all(count > 0 for count in outcomes.values()), outcomes
    assert 0.15 <= outcomes["non_utf8"] / len(malformed) <= 0.35, outcomes


def test_invalid_payloads_are_objects_with_bad_content(
    mixed_bad: tuple[EventGenerator, list[GeneratedEvent]],
) -> None:
    gen, stream = mixed_bad
    categories: set[str] = set()
    for i, event in enumerate(stream):
        if event.kind != "invalid":
            continue
        record = json.loads(event.value.decode("utf-8"))
        assert isinstance(record, dict)
        found = problems(record, gen.nominal_time(i))
        assert found, record
        categories.update(p.split(":")[0] for p in found)
    assert {
        "missing",
        "null",
        "wrong_type",
        "nan",
        "range",
        "bad_timestamp",
        "future_timestamp",
    } <= categories
    assert any(b"NaN" in e.value for e in stream if e.kind == "invalid")  # bare NaN token


def test_valid_late_and_duplicate_payloads_parse_and_are_good(
    mixed_bad: tuple[EventGenerator, list[GeneratedEvent]],
) -> None:
    gen, stream = mixed_bad
    for i, event in enumerate(stream):
        if event.kind in ("valid", "late", "duplicate"):
            record = json.loads(event.value.decode("utf-8"))
            assert isinstance(record, dict)
            assert problems(record, gen.nominal_time(i)) == [], record


def test_duplicates_repeat_an_earlier_event_of_the_block(
    mixed_bad: tuple[EventGenerator, list[GeneratedEvent]],
) -> None:
    _, stream = mixed_bad
    duplicates = 0
    for i, event in enumerate(stream):
        if event.kind != "duplicate":
            continue
        duplicates += 1
        block_start = i - i % BLOCK_SIZE
        earlier = stream[block_start:i]
        assert any(
            (e.key, e.value) == (event.key, event.value) and e.kind in ("valid", "late")
            for e in earlier
        )
    assert duplicates > 0
    # The first event of a block has nothing earlier to repeat.
    assert all(stream[b].kind != "duplicate" for b in range(0, len(stream), BLOCK_SIZE))


def test_late_events_are_shifted_back_between_60s_and_the_maximum(
    mixed_bad: tuple[EventGenerator, list[GeneratedEvent]],
) -> None:
    gen, stream = mixed_bad
    lags = []
    for i, event in enumerate(stream):
        record = json.loads(event.value) if event.kind in ("valid", "late") else None
        if record is None:
            continue
        lag = (gen.nominal_time(i) - parse_ts(record["timestamp"])).total_seconds()
        if event.kind == "late":
            assert 60.0 <= lag <= 900.0 + 0.001, lag
            lags.append(lag)
        else:
            assert 0.0 <= lag < 0.001, lag
    assert min(lags) < 200 and max(lags) > 760  # spread over the whole interval


def test_timestamps_follow_the_virtual_clock() -> None:
    gen = make(rate=250.0)
    assert gen.nominal_time(0) == START
    assert gen.nominal_time(1000) == START + timedelta(seconds=4)
    record = json.loads(gen.generate_event(1001).value)
    assert record["timestamp"] == "2026-11-21T10:00:04.004Z"


# --- configuration -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"malformed_fraction": 0.5, "invalid_fraction": 0.3, "late_fraction": 0.3}, "sum"),
        ({"rate": 0.0}, "rate"),
        ({"rate": -5.0}, "rate"),
        ({"rate": math.nan}, "rate"),
        ({"duplicate_fraction": -0.1}, "duplicate_fraction"),
        ({"late_fraction": 1.5}, "late_fraction"),
        ({"sensors": 0}, "sensors"),
        ({"format": "csv"}, "format"),
        ({"late_max_seconds": 30.0}, "late_max_seconds"),
        ({"count": -1}, "count"),
        ({"duration": 0.0}, "duration"),
        ({"topic": ""}, "topic"),
    ],
)
def test_config_validation(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        GeneratorConfig(**options)


def test_fractions_may_sum_to_exactly_one() -> None:
    config = GeneratorConfig(
        malformed_fraction=0.25, invalid_fraction=0.25, duplicate_fraction=0.25, late_fraction=0.25
    )
    kinds = {e.kind for e in events(EventGenerator(config), 2000)}
    assert {"malformed", "invalid", "duplicate", "late"} <= kinds


def test_command_line_options_build_the_config() -> None:
    parser = argparse.ArgumentParser()
    add_generate_arguments(parser)
    args = parser.parse_args(
        [
            "--sensors",
            "10000",
            "--rate",
            "5000",
            "--count",
            "20",
            "--format",
            "long",
            "--malformed-fraction",
            "0.1",
            "--late-fraction",
            "0.2",
            "--late-max-seconds",
            "120",
            "--start-time",
            "2026-01-01T00:00:00Z",
            "--topic",
            "t1",
        ]
    )
    config = config_from_args(args)
    assert config == GeneratorConfig(
        sensors=10_000,
        rate=5000.0,
        count=20,
        format="long",
        malformed_fraction=0.1,
        late_fraction=0.2,
        late_max_seconds=120.0,
        start_time=datetime(2026, 1, 1, tzinfo=UTC),
        topic="t1",
    )
    defaults = config_from_args(parser.parse_args([]))
    assert defaults == GeneratorConfig()


def test_command_line_rejects_bad_values() -> None:
    parser = argparse.ArgumentParser()
    add_generate_arguments(parser)
    with pytest.raises(SystemExit):
        parser.parse_args(["--start-time", "next tuesday"])
    with pytest.raises(SystemExit):
        parser.parse_args(["--format", "xml"])
    args = parser.parse_args(["--invalid-fraction", "0.7", "--duplicate-fraction", "0.7"])
    with pytest.raises(ConfigError, match="sum"):
        config_from_args(args)


@pytest.mark.parametrize(
    ("rate", "chunk"), [(1.0, 1), (100.0, 2), (1000.0, 16), (50_000.0, 512), (1e9, 1024)]
)
def test_chunk_size_is_a_power_of_two_near_rate_over_50(rate: float, chunk: int) -> None:
    assert _chunk_size(rate) == chunk
    assert BLOCK_SIZE % chunk == 0


# --- producer-side helpers (no broker) -------------------------------------------------------
class _FakeMessage:
    def topic(self) -> str:
        return "iot-sensors"


def test_delivery_tracker_counts_and_logs_each_distinct_error_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tracker = _DeliveryTracker()
    timed_out = KafkaError(KafkaError._MSG_TIMED_OUT)
    too_large = KafkaError(KafkaError.MSG_SIZE_TOO_LARGE)
    with caplog.at_level(logging.WARNING, logger="iot_lakehouse.sources.generator"):
        for err in [None, None, timed_out, timed_out, None, too_large, timed_out]:
            tracker.on_delivery(err, cast(Any, _FakeMessage()))
    assert (tracker.delivered, tracker.failed) == (3, 4)
    assert tracker.errors == [str(timed_out), str(too_large)]
    assert tracker.error_counts[str(timed_out)] == 3
    warnings = [r.getMessage() for r in caplog.records if "delivery_error" in r.getMessage()]
    assert len(warnings) == 2


def test_librdkafka_log_repeats_only_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    log = _LibrdkafkaLog()
    with caplog.at_level(logging.DEBUG, logger="iot_lakehouse.sources.generator.librdkafka"):
        for ms in (0, 3, 12):
            log.log(logging.ERROR, "%s [%s] %s", "FAIL", "p-1", f"refused (after {ms}ms)")
        log.log(logging.ERROR, "%s [%s] %s", "FAIL", "p-1", "other failure")
    levels = [r.levelno for r in caplog.records]
    assert levels == [logging.ERROR, logging.DEBUG, logging.DEBUG, logging.ERROR]


def test_run_generator_with_count_zero_returns_an_empty_report(tmp_path: Path) -> None:
    # Nothing to send: no broker is contacted for delivery, flush returns at once.
    settings = Settings(kafka_bootstrap_servers="127.0.0.1:9", runtime_dir=tmp_path)
    report = run_generator(GeneratorConfig(count=0), settings)
    assert (report.sent, report.delivered, report.failed, report.errors) == (0, 0, 0, [])
    assert report.kinds == dict.fromkeys(KINDS, 0)
    # Its manifest goes under the runtime folder, and says it sent nothing.
    assert report.manifest is not None
    path = Path(report.manifest)
    assert path.parent == tmp_path / "generator" / "manifests"
    manifest = read_manifest(path)
    assert path.name == f"{manifest['run_id']}.json"
    assert (manifest["state"], manifest["reason"]) == ("finished", "count_reached")
    assert manifest["counts"]["sent"] == 0 and manifest["event_time"]["end"] is None


def test_generate_command_produces_exactly_count_to_the_real_broker(
    kafka_settings: Settings,
) -> None:
    """``iot-lakehouse generate`` end to end: exit 0, every message acknowledged and in Kafka."""
    import os
    import subprocess
    import sys
    import uuid

    from iot_lakehouse.runtime.kafka_broker import LocalKafkaBroker
    from iot_lakehouse.runtime.kafka_offsets import kafka_end_offsets
    from iot_lakehouse.settings import PROJECT_ROOT

    settings = kafka_settings.with_(kafka_topic=f"gen-{uuid.uuid4().hex[:8]}")
    LocalKafkaBroker(settings).create_topics()
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "KAFKA_TOPIC": settings.kafka_topic,
        "IOT_RUNTIME_DIR": str(settings.runtime_dir),
        "GENERATOR_API_PORT": "0",  # no control API (tests/test_generator_api.py has it)
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
    log_file = settings.runtime_dir / "logs" / "generate.log"
    assert [json.loads(line) for line in log_file.read_text().splitlines()][-len(logged) :] == (
        logged
    )
    offsets = kafka_end_offsets(settings)
    assert offsets is not None and sum(offsets.values()) == 2500
    assert len([p for p, end in offsets.items() if end > 0]) == settings.kafka_topic_partitions


def test_anomaly_scenario_injects_labelled_anomalies(tmp_path: Path) -> None:
    from iot_lakehouse.sources.generator import ANOMALY_PLAN, EPISODE_S, GroundTruthWriter

    start = datetime(2026, 1, 1, tzinfo=UTC)
    config = GeneratorConfig(
        sensors=20, rate=20, seed=5, format="wide", start_time=start, anomalies=True
    )
    gen = EventGenerator(config)
    clean = EventGenerator(dataclasses.replace(config, anomalies=False))
    anomalies = {a.kind: a for a in gen.episode_anomalies(0)}
    assert set(anomalies) == {p.kind for p in ANOMALY_PLAN}
    assert len({a.sensor for a in anomalies.values()}) == len(ANOMALY_PLAN)
    assert gen.episode_anomalies(1) != gen.episode_anomalies(0)  # other sensors next episode

    events = [json.loads(gen.generate_event(i).value) for i in range(20 * 1200)]  # 20 minutes
    plain = [json.loads(clean.generate_event(i).value) for i in range(20 * 1200)]

    def inside(a: object, e: dict) -> bool:
        t = datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00"))
        ns = int(t.timestamp() * 1e9)
        return e["sensor_id"] == a.sensor_id and a.start_ns <= ns < a.end_ns  # type: ignore[attr-defined]

    silence = anomalies["silence"]
    assert not [e for e in events if inside(silence, e)]
    assert [e for e in plain if inside(silence, e)]  # it would have sent
    spike = [e["temperature"] for e in events if inside(anomalies["spike"], e)]
    assert spike and all(31 <= v <= 34 for v in spike)
    surge = [e["humidity"] for e in events if inside(anomalies["humidity_surge"], e)]
    assert surge and all(85 <= v <= 95 for v in surge)
    jump = [
        (e, p) for e, p in zip(events, plain, strict=True) if inside(anomalies["sudden_jump"], e)
    ]
    assert jump and all(abs(e["temperature"] - p["temperature"] - 8) < 0.02 for e, p in jump)
    # healthy readings stay inside the static thresholds
    touched = {a.sensor_id for a in anomalies.values()}
    healthy = [e for e in events if e["sensor_id"] not in touched]
    assert all(10 < e["temperature"] < 30 and e["humidity"] < 80 for e in healthy)

    truth = tmp_path / "truth.jsonl"
    writer = GroundTruthWriter(gen, str(truth))
    writer.reached(0)
    writer.reached(20 * EPISODE_S)  # first event of episode 1
    writer.reached(20 * EPISODE_S + 5)
    lines = [json.loads(line) for line in truth.read_text().splitlines()]
    assert len(lines) == 2 * len(ANOMALY_PLAN)
    assert lines[0]["expected_alert"] == "HIGH_TEMP" and lines[0]["start"].endswith("Z")


def test_anomalies_need_enough_sensors() -> None:
    with pytest.raises(ConfigError, match="at least 6 sensors"):
        GeneratorConfig(sensors=3, anomalies=True)
    with pytest.raises(ConfigError, match="needs --anomalies"):
        GeneratorConfig(ground_truth="x.jsonl")


# --- the run manifest -----------------------------------------------------------------------
def parse_generate(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_generate_arguments(parser)
    return parser.parse_args(argv)


def sample_manifest(tmp_path: Path, **config: Any) -> Path:
    """A manifest as a run that sent 1234 events writes it."""
    options: dict[str, Any] = {"seed": 9, "sensors": 30, "start_time": START, "duration": 60.0}
    options.update(config)
    record = RunManifest("r1", GeneratorConfig(**options), "t0", "b:9092", START, sent=1234)
    path = tmp_path / "run.json"
    write_manifest(path, record.to_json())
    return path


def test_manifest_config_round_trips_through_json() -> None:
    config = GeneratorConfig(
        sensors=12,
        rate=333.5,
        count=77,
        seed=4,
        format="long",
        malformed_fraction=0.1,
        invalid_fraction=0.2,
        duplicate_fraction=0.05,
        late_fraction=0.15,
        late_max_seconds=123.25,
        start_time=datetime(2026, 3, 4, 5, 6, 7, 89_000, tzinfo=UTC),
        topic="t",
        progress_interval_s=2.5,
        anomalies=True,
        ground_truth="truth.jsonl",
        paced=False,
        manifest="m.json",
    )
    data = json.loads(json.dumps(config_to_json(config)))
    assert data["start_time"] == "2026-03-04T05:06:07.089Z"
    assert config_from_json(data) == config
    with pytest.raises(ConfigError, match="colour"):
        config_from_json({**data, "colour": "red"})
    with pytest.raises(ConfigError, match="sensors"):
        config_from_json({**data, "sensors": 0})


def test_from_manifest_takes_the_configuration_and_the_count_sent(tmp_path: Path) -> None:
    path = sample_manifest(tmp_path)
    config = config_from_args(parse_generate(["--from-manifest", str(path)]))
    # the manifest's own configuration, but exactly the events that run sent
    original = GeneratorConfig(seed=9, sensors=30, start_time=START, duration=60.0)
    assert config == dataclasses.replace(original, count=1234, duration=None)
    outputs = config_from_args(
        parse_generate(
            ["--from-manifest", str(path), "--topic", "t2", "--unpaced", "--manifest", "m2.json"]
        )
    )
    assert outputs == dataclasses.replace(config, topic="t2", paced=False, manifest="m2.json")


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--seed", "42"], "--seed"),  # even the default value: it is not the manifest's
        (["--count", "0"], "--count"),
        (["--malformed-fraction", "0"], "--malformed-fraction"),
        (["--anomalies", "--rate", "5"], "--rate, --anomalies"),
        (["--start-time", "2026-01-01T00:00:00Z"], "--start-time"),
    ],
)
def test_from_manifest_refuses_options_that_change_the_events(
    tmp_path: Path, argv: list[str], named: str
) -> None:
    path = sample_manifest(tmp_path)
    with pytest.raises(ConfigError, match=re.escape(named) + " cannot go with --from-manifest"):
        config_from_args(parse_generate(["--from-manifest", str(path), *argv]))


def test_from_manifest_refuses_what_is_not_a_manifest(tmp_path: Path) -> None:
    missing, text, other = tmp_path / "missing.json", tmp_path / "t.json", tmp_path / "o.json"
    text.write_text("not json")
    other.write_text(json.dumps({"manifest_version": 99, "config": {}}))
    for path, message in [(missing, "cannot read"), (text, "not JSON"), (other, "99")]:
        with pytest.raises(ConfigError, match=message):
            config_from_args(parse_generate(["--from-manifest", str(path)]))
    with pytest.raises(ConfigError, match="seed"):
        rerun_config(read_manifest(sample_manifest(tmp_path)), seed=3)


def test_count_zero_is_a_count_without_a_manifest_too() -> None:
    assert config_from_args(parse_generate(["--count", "0"])).count == 0


def test_block_formats_name_each_payloads_shape(
    mixed_bad: tuple[EventGenerator, list[GeneratedEvent]],
) -> None:
    gen, _ = mixed_bad
    seen: Counter[str] = Counter()
    for b in range(20):
        block = gen.generate_block(b)
        for value, kind, fmt in zip(block.values, block.kinds, block.formats, strict=True):
            shape = payload_shape(value)
            assert fmt == (NO_FORMAT if kind == "malformed" else shape), (kind, fmt, value)
            seen[fmt] += 1
    assert set(seen) == {"wide", "long", NO_FORMAT}


def test_write_manifest_replaces_the_file_atomically(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "m.json"
    big = {"manifest_version": 1, "config": {}, "pad": "x" * 200_000}
    write_manifest(path, big)
    stop, torn = threading.Event(), []

    def read_all_the_time() -> None:
        while not stop.is_set():
            text = path.read_text(encoding="utf-8")
            try:
                json.loads(text)
            except ValueError:
                torn.append(len(text))

    reader = threading.Thread(target=read_all_the_time)
    reader.start()
    try:
        for n in range(150):
            write_manifest(path, {**big, "n": n})
    finally:
        stop.set()
        reader.join()
    assert torn == [], f"a reader saw a half-written manifest {len(torn)} times"
    assert json.loads(path.read_text())["n"] == 149
    assert [p.name for p in path.parent.iterdir()] == ["m.json"]  # no temp file left


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


def classify(records: dict[int, list[Any]], start: datetime) -> tuple[Counter[str], Counter[str]]:
    """(formats, kinds) of consumed records, judged from their bytes alone. Late readings are
    at least 60 s behind their nominal time, so in a stream shorter than 60 s of event time
    they lie before its start; a duplicate repeats an earlier record (key and value)."""
    formats: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    for partition in records.values():
        seen: set[tuple[bytes, bytes]] = set()
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
            elif parse_ts(record["timestamp"]) < start:
                kinds["late"] += 1
            else:
                kinds["valid"] += 1
            seen.add((key, value))
    del formats[NO_FORMAT]
    return formats, kinds


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


def test_rerun_from_the_manifest_sends_the_same_bytes_and_the_counts_are_what_was_sent(
    kafka_settings: Settings, tmp_path: Path
) -> None:
    first = new_topic(kafka_settings, "manifest-a")
    second = new_topic(kafka_settings, "manifest-b")
    config = GeneratorConfig(
        sensors=40,
        rate=2000.0,  # 2.5 s of event time: late readings fall before the start (see classify)
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
    assert manifest["event_time"]["end"] == report_end(start, 5000, 2000.0)
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


def test_a_killed_run_leaves_a_manifest_whose_rerun_repeats_what_it_sent(
    kafka_settings: Settings, tmp_path: Path
) -> None:
    first = new_topic(kafka_settings, "killed")
    second = new_topic(kafka_settings, "killed-rerun")
    path = tmp_path / "killed.json"
    proc = generate_cli(
        first, "--rate", "400", "--seed", "5", "--sensors", "25", "--late-fraction", "0.1",
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
    assert manifest["counts"]["by_kind"]["late"] > 0

    config = rerun_config(manifest, topic=second.kafka_topic, paced=False)
    assert config.count == sent
    report = run_generator(config, second)
    assert (report.sent, report.delivered) == (sent, sent)
    killed, again = consume(first, first.kafka_topic), consume(second, second.kafka_topic)
    assert sum(len(records) for records in again.values()) == sent
    for partition, records in again.items():
        # the killed run sent these first (and maybe more after its last manifest update)
        assert killed[partition][: len(records)] == records, partition
