"""Tests of the sensor data generator: pure generation and options, then runs against the
real broker (the command, and the manifest's reruns)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import re
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
from confluent_kafka import KafkaError

from iot_lakehouse.errors import ConfigError
from iot_lakehouse.settings import Settings
from iot_lakehouse.sources.generator import (
    BLOCK_SIZE,
    KINDS,
    LONG_FIELDS,
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
from tests.support.generator import UNITS, parse_ts, payload_shape, problems

START = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
SENSOR_RE = re.compile(r"^sensor-\d{5}$")
LOCATION_RE = re.compile(r"^building-[A-E]/floor-\d$")
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
    # 17 minutes of event time: past the most lateness (15 minutes) from the start
    gen = make(**BAD_MIX, late_max_seconds=900, rate=20.0)
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
        nominal = gen.nominal_time(i)
        lag = (nominal - parse_ts(record["timestamp"])).total_seconds()
        if event.kind == "late":
            since_start = (nominal - START).total_seconds()
            assert 60.0 <= lag <= min(900.0, since_start) + 0.001, (lag, since_start)
            lags.append(lag)
        else:
            assert 0.0 <= lag < 0.001, lag
    assert min(lags) < 200 and max(lags) > 760  # spread over the whole interval


def test_no_event_time_lies_before_the_start_so_no_sensor_looks_silent_at_first(
    mixed_bad: tuple[EventGenerator, list[GeneratedEvent]],
) -> None:
    # A late reading stamped minutes before the stream began would give its sensor a gap
    # before its next reading: the silence detector would flag a sensor that never was silent.
    gen, stream = mixed_bad
    times = [
        (i, parse_ts(json.loads(e.value)["timestamp"]))
        for i, e in enumerate(stream)
        if e.kind in ("valid", "late")
    ]
    assert min(t for _, t in times) >= START
    late = [i for i, e in enumerate(stream) if e.kind == "late"]
    # the least lateness is 60 s: no event of the first minute can be late, later ones are
    assert (gen.nominal_time(late[0]) - START).total_seconds() >= 60.0
    assert (gen.nominal_time(late[0]) - START).total_seconds() < 65.0


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
        malformed_fraction=0.25,
        invalid_fraction=0.25,
        duplicate_fraction=0.25,
        late_fraction=0.25,
        rate=20.0,  # 100 s: late readings need a minute of stream behind them
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
