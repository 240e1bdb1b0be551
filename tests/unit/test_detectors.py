"""The stateful detectors on crafted sequences: each fires on its pattern, none on clean data."""

from __future__ import annotations

import dataclasses
import json
import random
from collections import Counter
from pathlib import Path

import pytest

from iot_lakehouse.errors import ConfigError
from iot_lakehouse.pipeline.detectors import (
    CLEARED,
    FIRED,
    STATEFUL_TYPES,
    Alert,
    AlertRules,
    Reading,
    SensorState,
    alert_id,
    load_alert_rules,
    on_silence_timer,
    process_readings,
)

RULES = load_alert_rules()
T0 = 1_767_600_000_000  # ms
STEP_MS = 2_000


def clean(minutes: float, seed: int = 1, base: float = 20.0, start_ms: int = T0) -> list[Reading]:
    """Temperature readings every 2 s: a steady base plus Gaussian noise (sd 0.3)."""
    rng = random.Random(seed)
    n = int(minutes * 60_000 / STEP_MS)
    return [
        Reading(start_ms + i * STEP_MS, "temperature", base + rng.gauss(0, 0.3)) for i in range(n)
    ]


def run(readings: list[Reading], rules: AlertRules = RULES) -> tuple[list[Alert], SensorState]:
    state = SensorState()
    return process_readings(rules, "s1", state, readings), state


def types(alerts: list[Alert]) -> Counter[str]:
    return Counter(a.alert_type for a in alerts)


def after(readings: list[Reading], *values: float, metric: str = "temperature") -> list[Reading]:
    last = readings[-1].event_ms
    return [Reading(last + (i + 1) * STEP_MS, metric, v) for i, v in enumerate(values)]


def test_clean_readings_raise_no_alert() -> None:
    readings = clean(40) + [
        Reading(r.event_ms + 1, "humidity", 50 + (r.value - 20) * 5) for r in clean(40, seed=2)
    ]
    alerts, state = run(readings)
    assert alerts == []
    assert state.metrics["temperature"].n == 1200
    assert abs(state.metrics["temperature"].mean - 20) < 0.2


def test_dynamic_threshold_fires_above_mean_plus_two_std_only() -> None:
    base = clean(5)
    alerts, _ = run(base + after(base, 22.6))  # +2.6: above 20 + 2 * 1.0, |z| < 3
    assert types(alerts) == {"DYNAMIC_THRESHOLD": 1}
    a = alerts[0]
    assert (a.metric, a.value, a.status, a.severity) == ("temperature", 22.6, FIRED, "warning")
    assert a.threshold is not None and a.baseline is not None
    assert a.threshold == pytest.approx(a.baseline + 2.0, abs=1e-9)  # min_std 1.0 applies
    below, _ = run(base + after(base, 17.4))  # the same distance below: not a high value
    assert types(below) == {}


def test_outlier_fires_on_large_z_in_either_direction() -> None:
    base = clean(5)
    low, _ = run(base + after(base, 14.0))
    assert types(low) == {"OUTLIER": 1, "SUDDEN_CHANGE": 1}
    assert '"z_score":-' in low[0].evidence or '"z_score":-' in low[1].evidence
    high, _ = run(base + after(base, 24.0))
    assert types(high) == {"OUTLIER": 1, "DYNAMIC_THRESHOLD": 1}


def test_too_few_samples_do_not_judge_the_baseline() -> None:
    base = clean(0.5)  # 15 readings < min_samples 20
    alerts, _ = run(base + after(base, 24.0))
    assert types(alerts) == {}


def test_sudden_change_within_a_minute() -> None:
    base = clean(5)
    jump = [Reading(base[-1].event_ms + 30_000, "temperature", base[-1].value + 5.5)]
    alerts, _ = run(base + jump)
    assert types(alerts)["SUDDEN_CHANGE"] == 1
    slow = [Reading(base[-1].event_ms + 61_000 + STEP_MS * 30, "temperature", 25.5)]
    # the same change, but over more than a minute (no reading in between): no sudden change
    alerts, _ = run(base + slow, RULES)
    assert "SUDDEN_CHANGE" not in types(alerts)


def test_rising_trend_after_fifteen_minutes_of_rising_minute_means() -> None:
    base = clean(10)
    start = base[-1].event_ms + STEP_MS
    rng = random.Random(7)
    minutes = [i * STEP_MS / 60_000 for i in range(int(20 * 60_000 / STEP_MS))]
    drift = [
        Reading(start + int(m * 60_000), "temperature", 20 + 0.25 * m + rng.gauss(0, 0.3))
        for m in minutes
    ]
    alerts, _ = run(base + drift)
    trend = [a for a in alerts if a.alert_type == "RISING_TREND"]
    assert len(trend) == 1  # once per rising run
    evidence = json.loads(trend[0].evidence)
    assert evidence["minutes"] >= 15 and evidence["rise"] >= 2
    # the run may start in the last clean minutes, whose means happen to rise as well
    minutes_in = (trend[0].event_ms - start) / 60_000
    assert 12 <= minutes_in <= 17.5, minutes_in
    # a slower rise (0.1 °C/min: 1.5 °C in 15 min) stays under min_rise
    slow = [Reading(r.event_ms, r.metric, 20 + (r.value - 20) * 0.4) for r in drift]
    assert "RISING_TREND" not in types(run(base + slow)[0])


def test_consecutive_alerts_fire_once_per_run() -> None:
    base = clean(5)
    last = base[-1].event_ms
    flagged = [
        Reading(last + (i + 1) * STEP_MS, "temperature", 20.1, static_alert="HIGH_TEMP")
        for i in range(5)
    ]
    alerts, state = run(base + flagged)
    assert types(alerts) == {"CONSECUTIVE_ALERTS": 1}
    assert alerts[0].event_ms == flagged[2].event_ms
    assert state.alert_run == 5
    broken = flagged[:2] + after(flagged, 20.0) + [
        Reading(flagged[-1].event_ms + 10 * STEP_MS, "temperature", 20.1, "HIGH_TEMP")
    ]  # fmt: skip
    assert types(run(base + broken)[0]) == {}


def test_a_lasting_condition_realerts_only_after_realert_seconds() -> None:
    rules = dataclasses.replace(RULES, realert_ms=60_000)
    base = clean(5)
    high = after(base, *[24.0] * 200)  # above the threshold until the baseline catches up
    alerts, _ = run(base + high, rules)
    dynamic = [a for a in alerts if a.alert_type == "DYNAMIC_THRESHOLD"]
    assert len(dynamic) == 2  # at the start and 60 s later, not on every reading
    assert dynamic[1].event_ms - dynamic[0].event_ms == rules.realert_ms


def test_sensor_silent_fires_on_the_timer_and_clears_when_the_sensor_returns() -> None:
    _alerts, state = run(clean(2))
    timer = state.silence_timer_ms(RULES)
    assert timer == state.last_seen_ms + RULES.silence_ms  # type: ignore[operator]
    assert on_silence_timer(RULES, "s1", state, timer - 1) == []  # stale timer: nothing
    silent = on_silence_timer(RULES, "s1", state, timer)
    assert [(a.alert_type, a.status, a.event_ms, a.metric) for a in silent] == [
        ("SENSOR_SILENT", FIRED, timer, None)
    ]
    assert state.silence_timer_ms(RULES) is None
    assert on_silence_timer(RULES, "s1", state, timer) == []  # reported once
    back = [Reading(timer + 60_000, "temperature", 20.0)]
    cleared = process_readings(RULES, "s1", state, back)
    assert [(a.alert_type, a.status, a.severity) for a in cleared] == [
        ("SENSOR_SILENT", CLEARED, "info")
    ]
    assert not state.silent


def test_a_gap_seen_before_the_timer_fired_reports_silent_and_cleared() -> None:
    base = clean(2)
    back = Reading(base[-1].event_ms + RULES.silence_ms + 5_000, "temperature", 20.0)
    alerts, _ = run([*base, back])
    assert [(a.alert_type, a.status) for a in alerts] == [
        ("SENSOR_SILENT", FIRED),
        ("SENSOR_SILENT", CLEARED),
    ]
    assert alerts[0].event_ms == base[-1].event_ms + RULES.silence_ms


def test_batches_split_anywhere_give_the_same_alerts_and_state() -> None:
    readings = clean(10)
    readings += after(readings, 26.0, 26.5, 27.0, 15.0, *[20.0] * 30)
    whole, whole_state = run(readings)
    assert len(whole) >= 4
    for cut in (1, 150, len(readings) - 20):
        state = SensorState()
        parts = process_readings(RULES, "s1", state, readings[:cut])
        state = SensorState.from_json(state.to_json())  # through the state store
        parts += process_readings(RULES, "s1", state, readings[cut:])
        assert parts == whole
        assert state == whole_state


def test_out_of_order_readings_skip_the_sequence_detectors() -> None:
    base = clean(5)
    old = Reading(base[10].event_ms + 1, "temperature", 40.0)  # wild, but older than the last
    _alerts, state = run(base)
    assert process_readings(RULES, "s1", state, [old]) == []
    assert state.metrics["temperature"].n == len(base)


def test_alert_id_is_deterministic_and_distinguishes_alerts() -> None:
    a = alert_id("s1", "temperature", "OUTLIER", FIRED, T0)
    assert a == alert_id("s1", "temperature", "OUTLIER", FIRED, T0)
    assert len(a) == 32
    assert len({a, alert_id("s1", None, "OUTLIER", FIRED, T0),
                alert_id("s1", "temperature", "OUTLIER", CLEARED, T0),
                alert_id("s2", "temperature", "OUTLIER", FIRED, T0)}) == 4  # fmt: skip


def test_the_rule_file_configures_every_detector() -> None:
    assert set(RULES.severity) == set(STATEFUL_TYPES)
    assert RULES.silence_ms == 600_000 and RULES.consecutive_count == 3
    assert RULES.sudden_min_change == {"temperature": 5.0}


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.replace("  OUTLIER:", "  OUTLIERS:"), "not configured"),
        (lambda t: t.replace("severity: critical", "severity: loud", 1), "severity"),
        (lambda t: t.replace("z_score: 3", "z_score: -3"), "OUTLIER.z_score"),
        (lambda t: t.replace("min_change: {temperature: 5}", "min_change: 5"), "min_change"),
        (lambda t: t + "\n  : [", "not valid YAML"),
    ],
)
def test_bad_rule_files_say_what_is_wrong(tmp_path: Path, edit: object, message: str) -> None:
    from iot_lakehouse.pipeline.detectors import default_alert_rules_file

    path = tmp_path / "rules.yml"
    path.write_text(edit(default_alert_rules_file().read_text()))  # type: ignore[operator]
    with pytest.raises(ConfigError, match=message):
        load_alert_rules(path)
    with pytest.raises(ConfigError, match="not found"):
        load_alert_rules(tmp_path / "missing.yml")
