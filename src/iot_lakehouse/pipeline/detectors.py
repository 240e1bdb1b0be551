"""Stateful alert detectors, pure Python: one sensor's state + its readings -> alerts.

The alerts job (``alerts.py``) keeps one :class:`SensorState` per sensor in Spark's state
store (``transformWithState``, RocksDB) and calls :func:`process_readings` for each batch of a
sensor's readings and :func:`on_silence_timer` when the sensor's event-time timer fires. Nothing
here touches Spark, so every detector is tested on crafted sequences directly.

Readings of one sensor are taken in event-time order. A reading not newer than the last one of
its metric (out of order) is not used by the sequence detectors (baseline, sudden change,
trend, consecutive); static alerts, which silver flags, are emitted for every reading by the
stateless part of the job.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from importlib.resources import files
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from iot_lakehouse.errors import ConfigError

STATEFUL_TYPES = (
    "DYNAMIC_THRESHOLD",
    "OUTLIER",
    "SUDDEN_CHANGE",
    "RISING_TREND",
    "CONSECUTIVE_ALERTS",
    "SENSOR_SILENT",
)
FIRED, CLEARED = "fired", "cleared"
# An alert counts as open this long after it fired; a silent sensor stays open until it speaks.
OPEN_ALERT_WINDOW = timedelta(minutes=15)
SILENT = "SENSOR_SILENT"
BUCKET_MS = 60_000  # RISING_TREND compares 1-minute means
SEVERITIES = ("info", "warning", "critical")


# --- configuration ---
@dataclass(frozen=True)
class AlertRules:
    """The detector configuration of one rule file (see rules/alert_rules.yml)."""

    version: str = "dev"
    realert_ms: int = 300_000
    baseline_window_ms: int = 600_000
    min_samples: int = 20
    min_std: dict[str, float] = field(default_factory=dict)
    severity: dict[str, str] = field(default_factory=dict)
    dynamic_std_devs: float = 2.0
    dynamic_metrics: frozenset[str] = frozenset()
    outlier_z: float = 3.0
    outlier_metrics: frozenset[str] = frozenset()
    sudden_within_ms: int = 60_000
    sudden_min_change: dict[str, float] = field(default_factory=dict)
    trend_ms: int = 900_000
    trend_min_rise: dict[str, float] = field(default_factory=dict)
    consecutive_count: int = 3
    silence_ms: int = 600_000

    def severity_of(self, alert_type: str) -> str:
        return self.severity.get(alert_type, "warning")


def default_alert_rules_file() -> Path:
    return Path(str(files("iot_lakehouse") / "rules" / "alert_rules.yml"))


def _positive(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ConfigError(f"{where}: {value!r} must be a positive number")
    return float(value)


def _per_metric(value: Any, where: str) -> dict[str, float]:
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must map metric names to numbers, e.g. {{temperature: 5}}")
    return {str(k): _positive(v, f"{where}.{k}") for k, v in value.items()}


def load_alert_rules(path: Path | None = None) -> AlertRules:
    """Read and validate an alert rule file; ConfigError names the first problem."""
    source = path or default_alert_rules_file()
    try:
        doc = yaml.safe_load(Path(source).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"alert rule file {source} not found (ALERT_RULES_FILE)") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"alert rule file {source} is not valid YAML: {exc}") from None
    if not isinstance(doc, dict) or "detectors" not in doc or "version" not in doc:
        raise ConfigError(f"alert rule file {source} needs `version` and `detectors`")
    detectors = doc["detectors"]
    missing = [t for t in STATEFUL_TYPES if t not in (detectors or {})]
    if missing:
        raise ConfigError(f"alert rule file {source}: detectors {missing} are not configured")
    unknown = sorted(set(detectors) - set(STATEFUL_TYPES))
    if unknown:
        raise ConfigError(
            f"alert rule file {source}: unknown detectors {unknown}; "
            f"known: {', '.join(STATEFUL_TYPES)}"
        )
    severity = {}
    for name, spec in detectors.items():
        level = (spec or {}).get("severity", "warning")
        if level not in SEVERITIES:
            raise ConfigError(f"{name}.severity={level!r}: use one of {', '.join(SEVERITIES)}")
        severity[name] = level
    baseline = doc.get("baseline") or {}
    d = detectors
    try:
        return AlertRules(
            version=str(doc["version"]),
            realert_ms=int(_positive(doc.get("realert_seconds", 300), "realert_seconds") * 1000),
            baseline_window_ms=int(
                _positive(baseline.get("window_seconds", 600), "baseline.window_seconds") * 1000
            ),
            min_samples=int(_positive(baseline.get("min_samples", 20), "baseline.min_samples")),
            min_std=_per_metric(baseline.get("min_std", {}), "baseline.min_std"),
            severity=severity,
            dynamic_std_devs=_positive(
                d["DYNAMIC_THRESHOLD"]["std_devs"], "DYNAMIC_THRESHOLD.std_devs"
            ),
            dynamic_metrics=frozenset(d["DYNAMIC_THRESHOLD"].get("metrics") or ()),
            outlier_z=_positive(d["OUTLIER"]["z_score"], "OUTLIER.z_score"),
            outlier_metrics=frozenset(d["OUTLIER"].get("metrics") or ()),
            sudden_within_ms=int(
                _positive(d["SUDDEN_CHANGE"]["within_seconds"], "SUDDEN_CHANGE.within_seconds")
                * 1000
            ),
            sudden_min_change=_per_metric(
                d["SUDDEN_CHANGE"]["min_change"], "SUDDEN_CHANGE.min_change"
            ),
            trend_ms=int(_positive(d["RISING_TREND"]["minutes"], "RISING_TREND.minutes") * 60_000),
            trend_min_rise=_per_metric(d["RISING_TREND"]["min_rise"], "RISING_TREND.min_rise"),
            consecutive_count=int(
                _positive(d["CONSECUTIVE_ALERTS"]["count"], "CONSECUTIVE_ALERTS.count")
            ),
            silence_ms=int(
                _positive(d["SENSOR_SILENT"]["after_seconds"], "SENSOR_SILENT.after_seconds") * 1000
            ),
        )
    except (KeyError, TypeError) as exc:
        raise ConfigError(f"alert rule file {source}: missing or malformed entry {exc}") from None


# --- state ---
@dataclass
class MetricState:
    """Sequence state of one sensor and metric."""

    n: int = 0
    mean: float = 0.0
    var: float = 0.0
    last_ms: int | None = None
    recent: list[tuple[int, float]] = field(default_factory=list)  # for SUDDEN_CHANGE
    bucket_ms: int | None = None  # current 1-minute bucket (RISING_TREND)
    bucket_sum: float = 0.0
    bucket_count: int = 0
    prev_mean: float | None = None  # mean of the last closed bucket
    run_start_ms: int | None = None  # first bucket of the current rising run
    run_start_mean: float | None = None
    trend_fired: bool = False
    active: dict[str, bool] = field(default_factory=dict)
    last_fired: dict[str, int] = field(default_factory=dict)


@dataclass
class SensorState:
    """Everything the detectors remember about one sensor."""

    last_seen_ms: int | None = None
    location: str | None = None
    silent: bool = False
    alert_run: int = 0  # consecutive readings with an alert condition
    run_fired: bool = False
    metrics: dict[str, MetricState] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @staticmethod
    def from_json(text: str | None) -> SensorState:
        if not text:
            return SensorState()
        raw = json.loads(text)
        metrics = {
            name: MetricState(**{**m, "recent": [tuple(p) for p in m["recent"]]})
            for name, m in raw.pop("metrics").items()
        }
        return SensorState(**raw, metrics=metrics)

    def silence_timer_ms(self, rules: AlertRules) -> int | None:
        """When the sensor counts as silent, unless it sends before (None: already silent)."""
        if self.last_seen_ms is None or self.silent:
            return None
        return self.last_seen_ms + rules.silence_ms


class Reading(NamedTuple):
    event_ms: int
    metric: str
    value: float
    static_alert: str | None = None  # silver's static flag (HIGH_TEMP, …)
    location: str | None = None


class Alert(NamedTuple):
    """One alert row (the gold/alerts contract without the job's bookkeeping columns)."""

    alert_id: str
    sensor_id: str
    metric: str | None
    location: str | None
    alert_type: str
    severity: str
    status: str
    event_ms: int
    value: float | None
    threshold: float | None
    baseline: float | None
    evidence: str


def alert_id(
    sensor_id: str, metric: str | None, alert_type: str, status: str, event_us: int
) -> str:
    """Deterministic id: the same alert found twice (replay, restart) has the same id; two
    readings apart by a microsecond (silver's key) have two. ``alerts.alert_id_column``
    computes the same in Spark."""
    text = f"{sensor_id}|{metric or ''}|{alert_type}|{status}|{event_us}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _alert(
    rules: AlertRules,
    sensor_id: str,
    location: str | None,
    alert_type: str,
    event_ms: int,
    metric: str | None = None,
    value: float | None = None,
    threshold: float | None = None,
    baseline: float | None = None,
    status: str = FIRED,
    **evidence: Any,
) -> Alert:
    return Alert(
        alert_id(sensor_id, metric, alert_type, status, event_ms * 1000),
        sensor_id,
        metric,
        location,
        alert_type,
        "info" if status == CLEARED else rules.severity_of(alert_type),
        status,
        event_ms,
        value,
        threshold,
        baseline,
        json.dumps(evidence, separators=(",", ":"), sort_keys=True),
    )


# --- detectors ---
def _fire_edge(
    ms: MetricState, alert_type: str, condition: bool, event_ms: int, realert_ms: int
) -> bool:
    """True when ``condition`` starts, or still holds ``realert_ms`` after the last alert."""
    was_active = ms.active.get(alert_type, False)
    ms.active[alert_type] = condition
    if not condition:
        return False
    last = ms.last_fired.get(alert_type)
    if was_active and last is not None and event_ms - last < realert_ms:
        return False
    ms.last_fired[alert_type] = event_ms
    return True


def _baseline_std(rules: AlertRules, ms: MetricState, metric: str) -> float:
    """The rolling standard deviation, never below the metric's ``min_std``."""
    return max(math.sqrt(ms.var), rules.min_std.get(metric, 0.0))


def _check_baseline(
    rules: AlertRules, sensor_id: str, st: SensorState, ms: MetricState, r: Reading
) -> tuple[list[Alert], bool]:
    out: list[Alert] = []
    hit = False
    if ms.n >= rules.min_samples:
        std = _baseline_std(rules, ms, r.metric)
        if r.metric in rules.dynamic_metrics:
            limit = ms.mean + rules.dynamic_std_devs * std
            cond = r.value > limit
            hit |= cond
            if _fire_edge(ms, "DYNAMIC_THRESHOLD", cond, r.event_ms, rules.realert_ms):
                out.append(
                    _alert(
                        rules,
                        sensor_id,
                        st.location,
                        "DYNAMIC_THRESHOLD",
                        r.event_ms,
                        r.metric,
                        r.value,
                        limit,
                        ms.mean,
                        std=round(std, 6),
                        std_devs=rules.dynamic_std_devs,
                        samples=ms.n,
                    )
                )
        if r.metric in rules.outlier_metrics and std > 0:
            z = (r.value - ms.mean) / std
            cond = abs(z) > rules.outlier_z
            hit |= cond
            if _fire_edge(ms, "OUTLIER", cond, r.event_ms, rules.realert_ms):
                out.append(
                    _alert(
                        rules,
                        sensor_id,
                        st.location,
                        "OUTLIER",
                        r.event_ms,
                        r.metric,
                        r.value,
                        rules.outlier_z,
                        ms.mean,
                        z_score=round(z, 4),
                        std=round(std, 6),
                        samples=ms.n,
                    )
                )
    return out, hit


def _update_baseline(rules: AlertRules, ms: MetricState, r: Reading) -> None:
    """Exponentially weighted mean and variance (time constant baseline.window_seconds); a
    plain running mean for the first readings; deviations clipped at the outlier limit, so one
    wild value does not blow up the baseline."""
    if ms.n == 0:
        ms.n, ms.mean, ms.var = 1, r.value, 0.0
        return
    dt = max(0, r.event_ms - (ms.last_ms or r.event_ms))
    alpha = max(1.0 - math.exp(-dt / rules.baseline_window_ms), 1.0 / (ms.n + 1))
    std = _baseline_std(rules, ms, r.metric)
    limit = rules.outlier_z * std if std > 0 else math.inf
    delta = max(-limit, min(limit, r.value - ms.mean))
    ms.mean += alpha * delta
    ms.var = (1.0 - alpha) * (ms.var + alpha * delta * delta)
    ms.n += 1


def _check_sudden(
    rules: AlertRules, sensor_id: str, st: SensorState, ms: MetricState, r: Reading
) -> tuple[list[Alert], bool]:
    min_change = rules.sudden_min_change.get(r.metric)
    if min_change is None:
        return [], False
    horizon = r.event_ms - rules.sudden_within_ms
    ms.recent = [(t, v) for t, v in ms.recent if t >= horizon]
    ref = max(ms.recent, key=lambda p: abs(r.value - p[1]), default=None)
    ms.recent.append((r.event_ms, r.value))
    cond = ref is not None and abs(r.value - ref[1]) > min_change
    out = []
    if _fire_edge(ms, "SUDDEN_CHANGE", cond, r.event_ms, rules.realert_ms) and ref is not None:
        out.append(
            _alert(
                rules,
                sensor_id,
                st.location,
                "SUDDEN_CHANGE",
                r.event_ms,
                r.metric,
                r.value,
                min_change,
                ref[1],
                change=round(r.value - ref[1], 6),
                seconds=(r.event_ms - ref[0]) / 1000,
            )
        )
    return out, cond


def _check_trend(
    rules: AlertRules, sensor_id: str, st: SensorState, ms: MetricState, r: Reading
) -> tuple[list[Alert], bool]:
    min_rise = rules.trend_min_rise.get(r.metric)
    if min_rise is None:
        return [], False
    bucket = r.event_ms - r.event_ms % BUCKET_MS
    out: list[Alert] = []
    if ms.bucket_ms is not None and bucket != ms.bucket_ms:
        closed = ms.bucket_sum / ms.bucket_count
        if ms.prev_mean is not None and closed > ms.prev_mean and ms.run_start_ms is not None:
            rise = closed - (ms.run_start_mean or closed)
            span = ms.bucket_ms - ms.run_start_ms
            if span >= rules.trend_ms and rise >= min_rise and not ms.trend_fired:
                ms.trend_fired = True
                out.append(
                    _alert(
                        rules,
                        sensor_id,
                        st.location,
                        "RISING_TREND",
                        r.event_ms,
                        r.metric,
                        r.value,
                        min_rise,
                        ms.run_start_mean,
                        rise=round(rise, 6),
                        minutes=span / 60_000,
                        since_ms=ms.run_start_ms,
                    )
                )
        else:  # not rising: a new run starts at the closed bucket
            ms.run_start_ms, ms.run_start_mean, ms.trend_fired = ms.bucket_ms, closed, False
        ms.prev_mean = closed
        ms.bucket_sum, ms.bucket_count = 0.0, 0
    ms.bucket_ms = bucket
    ms.bucket_sum += r.value
    ms.bucket_count += 1
    return out, bool(out)


def process_readings(
    rules: AlertRules, sensor_id: str, st: SensorState, readings: list[Reading]
) -> list[Alert]:
    """Run every detector over one batch of a sensor's readings (any order); update ``st``."""
    out: list[Alert] = []
    for r in sorted(readings, key=lambda r: (r.event_ms, r.metric)):
        if r.location is not None:
            st.location = r.location
        if st.last_seen_ms is not None and r.event_ms > st.last_seen_ms:
            out.extend(_check_return(rules, sensor_id, st, r))
        ms = st.metrics.setdefault(r.metric, MetricState())
        if ms.last_ms is not None and r.event_ms <= ms.last_ms:
            continue  # out of order: too late for the sequence detectors
        found, hit = _check_baseline(rules, sensor_id, st, ms, r)
        for check in (_check_sudden, _check_trend):
            more, more_hit = check(rules, sensor_id, st, ms, r)
            found += more
            hit |= more_hit
        _update_baseline(rules, ms, r)
        ms.last_ms = r.event_ms
        out.extend(found)
        st.last_seen_ms = max(st.last_seen_ms or r.event_ms, r.event_ms)
        out.extend(_check_consecutive(rules, sensor_id, st, r, hit or r.static_alert is not None))
    return out


def _check_consecutive(
    rules: AlertRules, sensor_id: str, st: SensorState, r: Reading, alerting: bool
) -> list[Alert]:
    if not alerting:
        st.alert_run, st.run_fired = 0, False
        return []
    st.alert_run += 1
    if st.alert_run < rules.consecutive_count or st.run_fired:
        return []
    st.run_fired = True
    return [
        _alert(
            rules,
            sensor_id,
            st.location,
            "CONSECUTIVE_ALERTS",
            r.event_ms,
            r.metric,
            r.value,
            float(rules.consecutive_count),
            None,
            readings_in_a_row=st.alert_run,
        )
    ]


def _check_return(rules: AlertRules, sensor_id: str, st: SensorState, r: Reading) -> list[Alert]:
    """A reading after a gap: SENSOR_SILENT cleared (and fired first, if the gap passed the
    limit before the watermark fired the timer)."""
    assert st.last_seen_ms is not None
    out = []
    silent_at = st.last_seen_ms + rules.silence_ms
    if not st.silent and r.event_ms >= silent_at:
        out.append(_silent_alert(rules, sensor_id, st, silent_at))
        st.silent = True
    if st.silent:
        out.append(
            _alert(
                rules,
                sensor_id,
                st.location,
                "SENSOR_SILENT",
                r.event_ms,
                status=CLEARED,
                threshold=rules.silence_ms / 1000,
                silent_seconds=(r.event_ms - st.last_seen_ms) / 1000,
                last_seen_ms=st.last_seen_ms,
            )
        )
        st.silent = False
    return out


def _silent_alert(rules: AlertRules, sensor_id: str, st: SensorState, silent_at: int) -> Alert:
    return _alert(
        rules,
        sensor_id,
        st.location,
        "SENSOR_SILENT",
        silent_at,
        threshold=rules.silence_ms / 1000,
        last_seen_ms=st.last_seen_ms,
    )


def on_silence_timer(
    rules: AlertRules, sensor_id: str, st: SensorState, expiry_ms: int
) -> list[Alert]:
    """The event-time timer of a sensor fired: it is silent if nothing came since."""
    if st.silent or st.silence_timer_ms(rules) != expiry_ms:
        return []  # a stale timer: the sensor sent again (or was already reported)
    st.silent = True
    return [_silent_alert(rules, sensor_id, st, expiry_ms)]
