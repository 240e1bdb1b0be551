"""Sensor data generator: reproducible IoT readings as JSON, produced to Kafka.

Generation is pure and vectorised. Event ``i`` depends only on the configuration (seed, start
time, rate, fractions, …) and on ``i``: events are made in blocks of :data:`BLOCK_SIZE` with
numpy, one random stream per block (``np.random.default_rng((seed, block_index))``), so the
stream is the same however it is chunked for sending. Payloads are serialised with string
formatting on top of the vectorised numbers, not with ``json.dumps`` per event.

Event ``i`` has the nominal event time ``start_time + i / rate`` (a virtual clock). Besides valid
readings the stream can carry, by configurable fractions, malformed payloads, invalid readings,
exact duplicates and late readings, so that every downstream path (DLQ, dedup, watermark) is
exercised.

Each run writes a manifest (:class:`RunManifest`, JSON): the run id, the full configuration with
the start time it resolved, the event times, the counts sent per format and per kind and the
delivery failures. ``generate --from-manifest FILE`` sends the same events again, byte for byte.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import secrets
import threading
import time
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import numpy.typing as npt
from confluent_kafka import KafkaError, Message, Producer

from iot_lakehouse.errors import ConfigError
from iot_lakehouse.logs import kv
from iot_lakehouse.settings import Settings

logger = logging.getLogger(__name__)

BLOCK_SIZE = 1024
"""Events generated at once; also the unit of reproducibility (one random stream per block)."""

FORMATS = ("wide", "long", "mixed")
PAYLOAD_FORMATS = ("wide", "long")
NO_FORMAT = ""
"""The payload format of a malformed event: it is not a reading of either shape."""
KINDS = ("valid", "malformed", "invalid", "duplicate", "late")
LATE_MIN_SECONDS = 60.0
NO_DELIVERY_S = 10.0

WIDE_FIELDS = (
    "sensor_id",
    "timestamp",
    "temperature",
    "humidity",
    "pressure",
    "location",
    "lat",
    "lon",
    "battery",
)
LONG_FIELDS = ("timestamp", "device_id", "building", "floor", "type", "value", "unit")

# Long-format metrics: (type, unit, decimals). The index is the metric code used below.
METRICS: tuple[tuple[str, str, int], ...] = (
    ("temperature", "°C", 2),
    ("humidity", "%", 2),
    ("co2", "ppm", 0),
    ("energy_consumption", "kWh", 3),
    ("pressure", "hPa", 2),
)
BUILDINGS = "ABCDE"
FLOORS = 10

# Kind codes inside a block, in the order the fractions are stacked on [0, 1).
_MALFORMED, _INVALID, _DUPLICATE, _LATE, _VALID = range(5)
_KIND_NAMES = ("malformed", "invalid", "duplicate", "late", "valid")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NS_PER_S = 1_000_000_000
_NS_PER_MS = 1_000_000
_DAY_NS = 86_400 * _NS_PER_S
_FUTURE_SHIFT_NS = 3650 * _DAY_NS

# Out-of-range values per long-format metric (same order as METRICS).
_OUT_OF_RANGE: tuple[float, ...] = (999.0, -5.0, -50.0, -1.0, 5000.0)
_BAD_TIMESTAMPS = ("not-a-timestamp", "2026-13-45T25:61:00Z", "", "yesterday at noon")
_NON_OBJECT_JSON = ("[1, 2]", '"x"', "42", "null", "true")

EPISODE_S = 1800
"""The anomaly scenario repeats every 30 minutes of event time, on other sensors each time."""


class PlannedAnomaly(NamedTuple):
    kind: str
    metric: str | None
    offset_s: float  # from the start of the episode
    duration_s: float
    expected_alert: str  # the alert type that should report it


# The default scenario of one episode (the sensors are drawn per episode).
ANOMALY_PLAN: tuple[PlannedAnomaly, ...] = (
    PlannedAnomaly("spike", "temperature", 240, 60, "HIGH_TEMP"),  # set to 31..34 °C
    PlannedAnomaly("rising_drift", "temperature", 300, 1200, "RISING_TREND"),  # +0.4 °C/min
    PlannedAnomaly("silence", None, 360, 720, "SENSOR_SILENT"),  # sends nothing for 12 min
    PlannedAnomaly("sudden_jump", "temperature", 420, 180, "SUDDEN_CHANGE"),  # +8 °C
    PlannedAnomaly("outlier", "temperature", 600, 4, "OUTLIER"),  # 12 °C below
    PlannedAnomaly("humidity_surge", "humidity", 780, 120, "HIGH_HUMIDITY"),  # 85..95 %
)


class Anomaly(NamedTuple):
    """One injected anomaly: a line of the ground truth."""

    anomaly_id: str
    kind: str
    sensor: int
    sensor_id: str
    metric: str | None
    start_ns: int
    end_ns: int
    expected_alert: str

    def record(self) -> dict[str, Any]:
        def iso(ns: int) -> str:
            return _iso_ms(np.array([ns], dtype=np.int64))[0]

        return {
            "anomaly_id": self.anomaly_id,
            "kind": self.kind,
            "sensor_id": self.sensor_id,
            "metric": self.metric,
            "start": iso(self.start_ns),
            "end": iso(self.end_ns),
            "expected_alert": self.expected_alert,
        }


@dataclass(frozen=True)
class GeneratorConfig:
    """What to generate and how fast; validated on construction (ConfigError)."""

    sensors: int = 100
    rate: float = 1000.0
    count: int | None = None
    duration: float | None = None
    seed: int = 42
    format: str = "mixed"
    malformed_fraction: float = 0.0
    invalid_fraction: float = 0.0
    duplicate_fraction: float = 0.0
    late_fraction: float = 0.0
    late_max_seconds: float = 900.0
    start_time: datetime | None = None
    topic: str | None = None
    progress_interval_s: float = 5.0
    anomalies: bool = False
    ground_truth: str | None = None
    paced: bool = True  # False: send as fast as possible (event times still follow rate)
    manifest: str | None = None  # None: .runtime/generator/manifests/<run id>.json

    def __post_init__(self) -> None:
        if self.sensors < 1:
            raise ConfigError(f"sensors={self.sensors} must be at least 1")
        if not (math.isfinite(self.rate) and self.rate > 0):
            raise ConfigError(f"rate={self.rate} must be a positive number of events per second")
        if self.count is not None and self.count < 0:
            raise ConfigError(f"count={self.count} must be 0 or more; omit it to run until stopped")
        if self.duration is not None and not (math.isfinite(self.duration) and self.duration > 0):
            raise ConfigError(f"duration={self.duration} must be a positive number of seconds")
        if self.seed < 0:
            raise ConfigError(f"seed={self.seed} must be 0 or more")
        if self.format not in FORMATS:
            raise ConfigError(f"format={self.format!r}: use one of {', '.join(FORMATS)}")
        fractions = {
            "malformed_fraction": self.malformed_fraction,
            "invalid_fraction": self.invalid_fraction,
            "duplicate_fraction": self.duplicate_fraction,
            "late_fraction": self.late_fraction,
        }
        for name, value in fractions.items():
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"{name}={value} must be between 0 and 1")
        total = sum(fractions.values())
        if total > 1.0 + 1e-9:
            raise ConfigError(
                f"malformed, invalid, duplicate and late fractions sum to {total:g}; "
                "their sum must be at most 1"
            )
        if not (math.isfinite(self.late_max_seconds) and self.late_max_seconds >= LATE_MIN_SECONDS):
            raise ConfigError(
                f"late_max_seconds={self.late_max_seconds} must be at least {LATE_MIN_SECONDS:g} "
                "(late events are shifted back between 60 s and this)"
            )
        if not self.progress_interval_s > 0:
            raise ConfigError(f"progress_interval_s={self.progress_interval_s} must be positive")
        if self.anomalies and self.sensors < len(ANOMALY_PLAN):
            raise ConfigError(
                f"--anomalies needs at least {len(ANOMALY_PLAN)} sensors (one per anomaly of an "
                f"episode); got sensors={self.sensors}"
            )
        if self.ground_truth is not None and not self.anomalies:
            raise ConfigError("--ground-truth needs --anomalies (there is nothing to record)")
        if self.topic is not None and not self.topic:
            raise ConfigError("topic must not be empty (omit it to use KAFKA_TOPIC)")
        if self.manifest is not None and not self.manifest:
            raise ConfigError("manifest must not be empty (omit it for the default place)")
        if self.start_time is not None:
            # Naive datetimes are taken as UTC; aware ones are converted to UTC.
            start = self.start_time
            start = start.replace(tzinfo=UTC) if start.tzinfo is None else start.astimezone(UTC)
            object.__setattr__(self, "start_time", start)


class GeneratedEvent(NamedTuple):
    """One Kafka message: key (sensor id, UTF-8), value (payload bytes) and its kind."""

    key: bytes
    value: bytes
    kind: str


@dataclass(frozen=True)
class Block:
    """BLOCK_SIZE consecutive events, starting at event ``block_index * BLOCK_SIZE``."""

    block_index: int
    keys: list[bytes]
    values: list[bytes]
    kinds: list[str]
    formats: list[str]  # "wide" or "long"; NO_FORMAT for a malformed payload

    def __len__(self) -> int:
        return len(self.values)


@dataclass(frozen=True)
class GeneratorReport:
    """Outcome of one run: what was sent and what the broker acknowledged."""

    sent: int
    delivered: int
    failed: int
    elapsed_s: float
    rate: float
    kinds: dict[str, int]
    errors: list[str]
    formats: dict[str, int] = field(default_factory=dict)
    manifest: str | None = None


def _uniform(seed: int, stream: int, low: float, high: float, n: int) -> npt.NDArray[np.float64]:
    # One random stream per sensor attribute, so a sensor's attributes do not depend on how many
    # sensors there are (sensor 42 is the same sensor with --sensors 100 or 10000).
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1, stream)))
    return rng.uniform(low, high, n)


def _integers(seed: int, stream: int, high: int, n: int) -> npt.NDArray[np.int64]:
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1, stream)))
    return rng.integers(0, high, n)


def _iso_ms(ns: npt.NDArray[np.int64]) -> list[str]:
    """ISO-8601 UTC strings with milliseconds and ``Z`` for epoch nanoseconds."""
    ms = (ns // _NS_PER_MS).astype("datetime64[ms]")
    strings: list[str] = np.datetime_as_string(ms, unit="ms", timezone="UTC").tolist()
    return strings


class EventGenerator:
    """Pure, deterministic source of sensor events (no I/O).

    ``generate_event(i)`` and ``generate_block(b)`` depend only on the configuration and their
    argument; ``start_time`` None in the configuration means "now" when the generator is built.
    """

    def __init__(self, config: GeneratorConfig) -> None:
        self.config = config
        start = config.start_time if config.start_time is not None else datetime.now(UTC)
        self.start_ns = (start - _EPOCH) // timedelta(milliseconds=1) * _NS_PER_MS
        self.start_time = _EPOCH + timedelta(microseconds=self.start_ns // 1000)
        # The virtual clock, as segments (first event index, its time in ns, ns per event): one
        # segment unless the rate changes or the generator pauses while running (``retime``).
        self._clock: list[tuple[int, int, np.float64]] = [
            (0, self.start_ns, np.float64(_NS_PER_S / config.rate))
        ]
        self._thresholds = np.cumsum(
            [
                config.malformed_fraction,
                config.invalid_fraction,
                config.duplicate_fraction,
                config.late_fraction,
            ]
        )
        self._cache: dict[int, Block] = {}
        self._episodes: dict[int, list[Anomaly]] = {}
        self._build_sensors()

    def _build_sensors(self) -> None:
        n, seed = self.config.sensors, self.config.seed
        width = max(5, len(str(n - 1)))
        self.sensor_ids: list[str] = [f"sensor-{s:0{width}d}" for s in range(n)]
        self._keys = [sid.encode() for sid in self.sensor_ids]
        building = _integers(seed, 0, len(BUILDINGS), n)
        floor = _integers(seed, 1, FLOORS, n)
        self.buildings: list[str] = [BUILDINGS[b] for b in building.tolist()]
        self.floors: list[int] = floor.tolist()
        self.locations = [
            f"building-{b}/floor-{f}" for b, f in zip(self.buildings, self.floors, strict=True)
        ]
        lat = 52.5200 + building * 0.0020 + _uniform(seed, 2, -0.0005, 0.0005, n)
        lon = 13.4050 + building * 0.0030 + _uniform(seed, 3, -0.0005, 0.0005, n)
        self._lat: list[str] = [f"{x:.6f}" for x in lat.tolist()]
        self._lon: list[str] = [f"{x:.6f}" for x in lon.tolist()]
        self._battery0 = _uniform(seed, 4, 40.0, 100.0, n)
        self._battery_drain_per_day = _uniform(seed, 5, 0.1, 1.0, n)
        self._phase = _uniform(seed, 6, 0.0, 2 * math.pi, n)
        self._temp_base = _uniform(seed, 7, 16.0, 24.0, n)  # + cycle + noise: 11..29 °C
        self._temp_amp = _uniform(seed, 8, 2.0, 4.0, n)
        self._hum_base = _uniform(seed, 9, 30.0, 62.0, n)  # + cycle + noise: below 80 %
        self._hum_amp = _uniform(seed, 10, 3.0, 8.0, n)
        self._pres_base = _uniform(seed, 11, 990.0, 1030.0, n)
        self._co2_base = _uniform(seed, 12, 400.0, 1200.0, n)
        self._co2_amp = _uniform(seed, 13, 50.0, 300.0, n)
        self._energy_base = _uniform(seed, 14, 0.1, 5.0, n)
        # Per-sensor fixed parts of the payloads, so the per-event work is one f-string.
        self._wide_tail = [
            f'"location": "{loc}", "lat": {la}, "lon": {lo}, "battery": '
            for loc, la, lo in zip(self.locations, self._lat, self._lon, strict=True)
        ]
        self._long_mid = [
            f'"device_id": "{sid}", "building": "{b}", "floor": {f}, "type": "'
            for sid, b, f in zip(self.sensor_ids, self.buildings, self.floors, strict=True)
        ]

    # --- virtual clock -------------------------------------------------------------------
    def nominal_ns(self, index: int) -> int:
        """Nominal event time of event ``index`` in epoch nanoseconds (start + index / rate)."""
        first, first_ns, period = next(seg for seg in reversed(self._clock) if seg[0] <= index)
        return first_ns + int(np.rint(np.float64(index - first) * period))

    def _nominal_array(self, index: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        firsts = np.array([seg[0] for seg in self._clock], dtype=np.int64)
        k = np.searchsorted(firsts, index, side="right") - 1
        first_ns = np.array([seg[1] for seg in self._clock], dtype=np.int64)[k]
        period = np.array([seg[2] for seg in self._clock], dtype=np.float64)[k]
        steps = (index - firsts[k]).astype(np.float64)
        nominal: npt.NDArray[np.int64] = first_ns + np.rint(steps * period).astype(np.int64)
        return nominal

    def retime(self, index: int, rate: float, skip_s: float = 0.0) -> None:
        """From event ``index`` on, space events ``1 / rate`` s apart, continuing the virtual
        clock after ``skip_s`` seconds (a pause). Events before ``index`` keep their times."""
        if not (math.isfinite(rate) and rate > 0):
            raise ConfigError(f"rate={rate} must be a positive number of events per second")
        at_ns = self.nominal_ns(index) + round(skip_s * _NS_PER_S)
        kept = [seg for seg in self._clock if seg[0] < index]
        self._clock = [*kept, (index, at_ns, np.float64(_NS_PER_S / rate))]
        first_block = index // BLOCK_SIZE
        self._cache = {b: block for b, block in self._cache.items() if b < first_block}

    def nominal_time(self, index: int) -> datetime:
        """Nominal event time of event ``index`` (UTC, microsecond precision)."""
        return _EPOCH + timedelta(microseconds=self.nominal_ns(index) // 1000)

    # --- anomalies -----------------------------------------------------------------------
    def episode_anomalies(self, episode: int) -> list[Anomaly]:
        """The anomalies of episode ``episode`` (event time start + episode * EPISODE_S …)."""
        cached = self._episodes.get(episode)
        if cached is not None:
            return cached
        rng = np.random.default_rng((self.config.seed, 7, episode))
        sensors = rng.choice(self.config.sensors, len(ANOMALY_PLAN), replace=False).tolist()
        base = self.start_ns + episode * EPISODE_S * _NS_PER_S
        anomalies = [
            Anomaly(
                f"{episode}-{p.kind}",
                p.kind,
                s,
                self.sensor_ids[s],
                p.metric,
                base + int(p.offset_s * _NS_PER_S),
                base + int((p.offset_s + p.duration_s) * _NS_PER_S),
                p.expected_alert,
            )
            for p, s in zip(ANOMALY_PLAN, sensors, strict=True)
        ]
        self._episodes[episode] = anomalies
        return anomalies

    def anomalies_between(self, lo_ns: int, hi_ns: int) -> list[Anomaly]:
        """Anomalies of the episodes that overlap event times [lo_ns, hi_ns]."""
        if not self.config.anomalies:
            return []
        step = EPISODE_S * _NS_PER_S
        first = max(0, (lo_ns - self.start_ns) // step)
        last = max(0, (hi_ns - self.start_ns) // step)
        return [a for e in range(first, last + 1) for a in self.episode_anomalies(e)]

    def _silence(self, sensor: npt.NDArray[np.int64], event_ns: npt.NDArray[np.int64]) -> None:
        """A silenced sensor's events go to another sensor: it sends nothing meanwhile."""
        n = self.config.sensors
        for a in self.anomalies_between(int(event_ns.min()), int(event_ns.max())):
            if a.kind == "silence":
                hit = (sensor == a.sensor) & (event_ns >= a.start_ns) & (event_ns < a.end_ns)
                sensor[hit] = (a.sensor + n // 2) % n

    def _inject(
        self,
        sensor: npt.NDArray[np.int64],
        event_ns: npt.NDArray[np.int64],
        temperature: npt.NDArray[np.float64],
        humidity: npt.NDArray[np.float64],
        u: npt.NDArray[np.float64],
    ) -> None:
        """Change the values of the readings an anomaly covers (in place)."""
        for a in self.anomalies_between(int(event_ns.min()), int(event_ns.max())):
            hit = (sensor == a.sensor) & (event_ns >= a.start_ns) & (event_ns < a.end_ns)
            if not hit.any():
                continue
            minutes = (event_ns[hit] - a.start_ns) / (60 * _NS_PER_S)
            if a.kind == "spike":
                temperature[hit] = 31.0 + 3.0 * u[hit]
            elif a.kind == "rising_drift":
                temperature[hit] += 0.4 * minutes
            elif a.kind == "sudden_jump":
                temperature[hit] += 8.0
            elif a.kind == "outlier":
                temperature[hit] -= 12.0
            elif a.kind == "humidity_surge":
                humidity[hit] = 85.0 + 10.0 * u[hit]

    # --- generation ----------------------------------------------------------------------
    def generate_event(self, index: int) -> GeneratedEvent:
        """Event number ``index`` of the stream (0-based), taken from its (cached) block."""
        if index < 0:
            raise ValueError(f"event index must be >= 0, got {index}")
        block = self.generate_block(index // BLOCK_SIZE)
        j = index % BLOCK_SIZE
        return GeneratedEvent(block.keys[j], block.values[j], block.kinds[j])

    def generate_block(self, block_index: int) -> Block:
        """Events ``block_index * BLOCK_SIZE`` … ``+ BLOCK_SIZE - 1``, built at once."""
        cached = self._cache.get(block_index)
        if cached is not None:
            return cached
        block = self._build_block(block_index)
        if len(self._cache) >= 4:
            del self._cache[next(iter(self._cache))]
        self._cache[block_index] = block
        return block

    def _build_block(self, block_index: int) -> Block:
        if block_index < 0:
            raise ValueError(f"block index must be >= 0, got {block_index}")
        cfg, n = self.config, BLOCK_SIZE
        rng = np.random.default_rng((cfg.seed, block_index))
        # Every draw has a fixed size and order, so the block depends on nothing else.
        sensor = rng.integers(0, cfg.sensors, n)
        kind_u = rng.random(n)
        format_u = rng.random(n)
        metric = rng.integers(0, len(METRICS), n)
        noise = rng.standard_normal((5, n))
        late_u = rng.random(n)  # where between the least and the most lateness an event falls
        variant = rng.integers(0, 1 << 30, n)
        aux = rng.random(n)

        code = np.searchsorted(self._thresholds, kind_u, side="right")
        index = np.arange(block_index * n, (block_index + 1) * n, dtype=np.int64)
        nominal = self._nominal_array(index)
        # A late reading was held up on its way, not taken before the stream began: it lies
        # LATE_MIN_SECONDS to late_max_seconds behind its nominal time but never before the
        # start, so it invents no history (a sensor whose first reading lay minutes before the
        # next would look silent). One that cannot be late by the least lateness is valid.
        since_start_s = (nominal - self.start_ns) / _NS_PER_S
        code[(code == _LATE) & (since_start_s < LATE_MIN_SECONDS)] = _VALID
        most_s = np.minimum(cfg.late_max_seconds, since_start_s)
        late_shift_s = LATE_MIN_SECONDS + late_u * (most_s - LATE_MIN_SECONDS)
        # A duplicate repeats the nearest earlier reading (valid or late) of the same block;
        # with none before it, the event is an ordinary valid one.
        pos = np.arange(n)
        last_reading = np.maximum.accumulate(np.where(code >= _LATE, pos, -1))
        dup_source = np.where(code == _DUPLICATE, last_reading, -1)
        code[(code == _DUPLICATE) & (dup_source < 0)] = _VALID

        shift = np.where(code == _LATE, np.rint(late_shift_s * _NS_PER_S).astype(np.int64), 0)
        event_ns = nominal - shift
        if cfg.anomalies:
            self._silence(sensor, event_ns)

        # Realistic values: per-sensor baseline + daily cycle (UTC time of day) + noise.
        angle = (event_ns % _DAY_NS) * (2 * math.pi / _DAY_NS) + self._phase[sensor]
        cycle = np.sin(angle)
        temperature = self._temp_base[sensor] + self._temp_amp[sensor] * cycle + 0.3 * noise[0]
        humidity = np.clip(
            self._hum_base[sensor] - self._hum_amp[sensor] * cycle + 1.5 * noise[1], 5.0, 99.0
        )
        co2 = np.clip(
            self._co2_base[sensor] + self._co2_amp[sensor] * np.maximum(cycle, 0) + 25 * noise[2],
            380.0,
            5000.0,
        )
        energy = np.maximum(self._energy_base[sensor] * (1 + 0.4 * cycle) + 0.05 * noise[3], 0.0)
        pressure = self._pres_base[sensor] + 1.0 * np.sin(2 * angle) + 0.3 * noise[4]
        if cfg.anomalies:
            self._inject(sensor, event_ns, temperature, humidity, aux)
        days = (event_ns - self.start_ns) / _DAY_NS
        battery = np.clip(
            self._battery0[sensor] - self._battery_drain_per_day[sensor] * days, 1.0, 100.0
        )
        by_metric = np.stack([temperature, humidity, co2, energy, pressure])
        metric_value = by_metric[metric, pos]

        if cfg.format == "wide":
            wide = np.ones(n, dtype=bool)
        elif cfg.format == "long":
            wide = np.zeros(n, dtype=bool)
        else:
            wide = format_u < 0.5

        # Python lists: element access on them is much faster than on numpy arrays.
        ts = _iso_ms(event_ns)
        sensor_l: list[int] = sensor.tolist()
        wide_l: list[bool] = wide.tolist()
        temperature_l: list[float] = temperature.tolist()
        humidity_l: list[float] = humidity.tolist()
        pressure_l: list[float] = pressure.tolist()
        battery_l: list[float] = battery.tolist()
        metric_l: list[int] = metric.tolist()
        metric_value_l: list[float] = metric_value.tolist()
        values = self._serialise(
            sensor_l,
            wide_l,
            ts,
            temperature_l,
            humidity_l,
            pressure_l,
            battery_l,
            metric_l,
            metric_value_l,
        )
        keys = [self._keys[s] for s in sensor_l]

        variant_l: list[int] = variant.tolist()
        for j in np.flatnonzero(code == _MALFORMED).tolist():
            values[j] = self._malformed(values[j], variant_l[j], float(aux[j]), rng)
        for j in np.flatnonzero(code == _INVALID).tolist():
            values[j] = self._invalid(
                sensor_l[j],
                wide_l[j],
                metric_l[j],
                int(nominal[j]),
                ts[j],
                temperature_l[j],
                humidity_l[j],
                pressure_l[j],
                battery_l[j],
                metric_value_l[j],
                variant_l[j],
            )
        formats = ["wide" if w else "long" for w in wide_l]
        for j in np.flatnonzero(code == _MALFORMED).tolist():
            formats[j] = NO_FORMAT
        for j in np.flatnonzero(code == _DUPLICATE).tolist():
            src = int(dup_source[j])
            keys[j], values[j], formats[j] = keys[src], values[src], formats[src]

        kinds = [_KIND_NAMES[c] for c in code.tolist()]
        return Block(block_index, keys, values, kinds, formats)

    def _serialise(
        self,
        sensor: list[int],
        wide: list[bool],
        ts: list[str],
        temperature: list[float],
        humidity: list[float],
        pressure: list[float],
        battery: list[float],
        metric: list[int],
        metric_value: list[float],
    ) -> list[bytes]:
        ids, wide_tail, long_mid = self.sensor_ids, self._wide_tail, self._long_mid
        long_tail = [f'{name}", "value": ' for name, _, _ in METRICS]
        units = [f', "unit": "{unit}"}}' for _, unit, _ in METRICS]
        digits = [d for _, _, d in METRICS]
        out: list[bytes] = []
        append = out.append
        for j, s in enumerate(sensor):
            if wide[j]:
                append(
                    f'{{"sensor_id": "{ids[s]}", "timestamp": "{ts[j]}", '
                    f'"temperature": {temperature[j]:.2f}, "humidity": {humidity[j]:.2f}, '
                    f'"pressure": {pressure[j]:.2f}, {wide_tail[s]}{battery[j]:.1f}}}'.encode()
                )
            else:
                m = metric[j]
                append(
                    f'{{"timestamp": "{ts[j]}", {long_mid[s]}{long_tail[m]}'
                    f"{metric_value[j]:.{digits[m]}f}{units[m]}".encode()
                )
        return out

    def _malformed(self, clean: bytes, variant: int, aux: float, rng: np.random.Generator) -> bytes:
        """Bytes that are not a JSON object: truncated, garbage, non-object JSON or non-UTF-8."""
        family, sub = variant % 4, variant // 4
        if family == 0:  # truncated JSON: a proper prefix of an object is never valid JSON
            return clean[: 1 + int(aux * (len(clean) - 2))]
        text = clean.decode()
        if family == 1:  # garbage text
            record: dict[str, Any] = json.loads(text)
            sid = record.get("sensor_id") or record.get("device_id")
            options = (
                f"{sid},{record['timestamp']},21.5,40.2",
                f"temperature=21.5 humidity=40.2 sensor={sid}",
                f"<reading sensor='{sid}'/>",
                "ERROR: sensor offline",
                repr(record),
                "",
            )
            return options[sub % len(options)].encode()
        if family == 2:  # valid JSON, but not an object
            options = (*_NON_OBJECT_JSON, f"[{text}]")
            return options[sub % len(options)].encode()
        # Not UTF-8 at all (about a quarter of the malformed events).
        kind = sub % 3
        if kind == 0:
            return b"\xff\xfe" + text.encode("utf-16-le")
        if kind == 1:
            return b"\x80" + clean
        return b"\xff\xc3\x28" + rng.bytes(16)

    def _invalid(
        self,
        sensor: int,
        wide: bool,
        metric: int,
        nominal_ns: int,
        ts: str,
        temperature: float,
        humidity: float,
        pressure: float,
        battery: float,
        value: float,
        variant: int,
    ) -> bytes:
        """A JSON object with bad content: range, type, null, missing field, NaN, timestamp."""
        record: dict[str, Any]
        if wide:
            record = {
                "sensor_id": self.sensor_ids[sensor],
                "timestamp": ts,
                "temperature": round(temperature, 2),
                "humidity": round(humidity, 2),
                "pressure": round(pressure, 2),
                "location": self.locations[sensor],
                "lat": float(self._lat[sensor]),
                "lon": float(self._lon[sensor]),
                "battery": round(battery, 1),
            }
            field = ("temperature", "humidity", "pressure")[(variant // 7) % 3]
        else:
            name, unit, digits = METRICS[metric]
            record = {
                "timestamp": ts,
                "device_id": self.sensor_ids[sensor],
                "building": self.buildings[sensor],
                "floor": self.floors[sensor],
                "type": name,
                "value": round(value, digits),
                "unit": unit,
            }
            field = "value"
        problem, sub = variant % 7, variant // 7
        if problem == 0:  # out of range
            if wide:
                record[field] = {"temperature": 999.0, "humidity": -5.0, "pressure": 5000.0}[field]
            else:
                record["value"] = _OUT_OF_RANGE[metric]
        elif problem == 1:  # wrong type
            record[field] = "hot"
        elif problem == 2:  # null value
            record[field] = None
        elif problem == 3:  # missing required field
            required = (
                ("sensor_id", "timestamp", "temperature")
                if wide
                else (
                    "device_id",
                    "timestamp",
                    "value",
                    "type",
                )
            )
            del record[required[sub % len(required)]]
        elif problem == 4:  # NaN, written as a bare NaN token
            record[field] = math.nan
        elif problem == 5:  # far in the future
            future = _EPOCH + timedelta(milliseconds=(nominal_ns + _FUTURE_SHIFT_NS) // _NS_PER_MS)
            record["timestamp"] = future.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        else:  # unparsable timestamp
            record["timestamp"] = _BAD_TIMESTAMPS[sub % len(_BAD_TIMESTAMPS)]
        return json.dumps(record, ensure_ascii=False).encode()


# --- producing ---------------------------------------------------------------------------
class _DeliveryTracker:
    """Counts delivery reports and remembers (and logs once) each distinct error."""

    max_errors_kept = 10

    def __init__(self) -> None:
        self.delivered = 0
        self.failed = 0
        self.errors: list[str] = []
        self.error_counts: Counter[str] = Counter()
        self.client_errors: Counter[str] = Counter()

    def on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            self.delivered += 1
            return
        self.failed += 1
        text = str(err)
        if text not in self.error_counts:
            logger.warning(kv(event="delivery_error", error=text, topic=msg.topic()))
            if len(self.errors) < self.max_errors_kept:
                self.errors.append(text)
        self.error_counts[text] += 1

    def on_client_error(self, err: KafkaError) -> None:
        text = str(err)
        if text not in self.client_errors:
            logger.warning(kv(event="kafka_client_error", error=text))
        self.client_errors[text] += 1


class _LibrdkafkaLog:
    """librdkafka's ``logger``: forwards each distinct message once, repeats only at DEBUG.

    Without this an unreachable broker logs the same connect failure twice a second.
    """

    _volatile = re.compile(r"\d+(\.\d+)?\s*ms")

    def __init__(self) -> None:
        self._logger = logging.getLogger(f"{__name__}.librdkafka")
        self._seen: set[str] = set()

    def log(self, level: int, msg: str, *args: Any) -> None:
        text = msg % args if args else msg
        key = self._volatile.sub("", text)
        if key in self._seen:
            self._logger.debug(text)
            return
        self._seen.add(key)
        self._logger.log(level, text)


def producer_config(settings: Settings, error_cb: Any = None) -> dict[str, Any]:
    """The librdkafka configuration the generator uses (durable, batched, compressed)."""
    conf: dict[str, Any] = {
        "bootstrap.servers": settings.kafka_bootstrap_servers,
        "client.id": "iot-lakehouse-generator",
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": 25,
        "batch.size": 1_000_000,
        "compression.type": "lz4",
        "queue.buffering.max.messages": 1_000_000,
        "queue.buffering.max.kbytes": 1_048_576,
        "log.connection.close": False,
        "logger": _LibrdkafkaLog(),
    }
    if error_cb is not None:
        conf["error_cb"] = error_cb
    return conf


def _chunk_size(rate: float) -> int:
    """Events sent per pacing step: about rate/50, a power of two in 1..BLOCK_SIZE.

    A power of two divides BLOCK_SIZE, so a chunk never straddles two blocks.
    """
    target = max(1, min(BLOCK_SIZE, int(rate / 50)))
    return 1 << (target.bit_length() - 1)


def _produce_chunk(
    producer: Producer,
    topic: str,
    keys: list[bytes],
    values: list[bytes],
    on_delivery: Any,
    stop: threading.Event | None,
) -> tuple[int, bool]:
    """Queue one chunk, waiting for room on BufferError.

    Returns how many messages were queued and whether a KeyboardInterrupt came meanwhile.
    (``produce()`` in a loop measured faster than ``produce_batch()``, which needs a dict per
    message.)
    """
    produce, queued = producer.produce, 0
    try:
        for key, value in zip(keys, values, strict=True):
            while True:
                try:
                    produce(topic, value, key, on_delivery=on_delivery)
                    break
                except BufferError:
                    # Local queue full: serve delivery reports to make room, then retry.
                    producer.poll(0.1)
                    if stop is not None and stop.is_set():
                        return queued, False
            queued += 1
    except KeyboardInterrupt:
        return queued, True
    return queued, False


class GroundTruthWriter:
    """Writes each episode's anomalies (JSON lines) once generation reaches that episode."""

    def __init__(self, generator: EventGenerator, path: str | None) -> None:
        self.generator, self.path, self.written = generator, path, -1
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text("", encoding="utf-8")

    def _episode(self, event_index: int) -> int:
        step = EPISODE_S * _NS_PER_S
        return (self.generator.nominal_ns(event_index) - self.generator.start_ns) // step

    def skip_to(self, event_index: int) -> None:
        """The virtual clock jumped (a pause): episodes it jumped over are never written."""
        self.written = max(self.written, self._episode(event_index) - 1)

    def restart(self, event_index: int) -> str | None:
        """Delete the file (its events were deleted); it is written again from the episode of
        ``event_index`` on. Returns the path if a file was deleted."""
        if self.path is None:
            return None
        existed = Path(self.path).exists()
        Path(self.path).unlink(missing_ok=True)
        self.written = self._episode(event_index) - 1
        return self.path if existed else None

    def reached(self, event_index: int) -> None:
        if self.path is None:
            return
        episode = self._episode(event_index)
        if episode <= self.written:
            return
        with open(self.path, "a", encoding="utf-8") as out:
            for e in range(self.written + 1, episode + 1):
                for anomaly in self.generator.episode_anomalies(e):
                    out.write(json.dumps(anomaly.record()) + "\n")
        self.written = episode


GeneratorState = Literal["running", "paused", "stopped"]
MAX_RATE = 1_000_000.0
"""Highest rate the controller accepts at run time (events/s)."""
RATE_WINDOW_S = 5.0
"""The measured rate is the events sent over this many seconds."""


@dataclass(frozen=True)
class GeneratorStatus:
    """A snapshot of a running generator; counters since the start or the last reset."""

    state: GeneratorState
    uptime_s: float
    sent: int
    delivered: int
    delivery_errors: int
    queued: int
    rate: float
    measured_rate: float
    batches: int


class GeneratorController:
    """Thread-safe handle on a running generator: pause, resume, target rate and counters.

    ``run_generator`` consults it between chunks and reports its counters to it; the control
    API calls it from other threads. ``operation`` serialises pause, resume and clean, so the
    generator cannot resume while a clean is deleting.
    """

    def __init__(self, config: GeneratorConfig) -> None:
        self.config = config
        self.operation = threading.Lock()
        self._changed = threading.Condition()
        self._started = self._window_start = time.monotonic()
        self._state: GeneratorState = "running"
        self._rate = config.rate
        self._idle = False  # paused, seen by the loop, nothing waiting for delivery
        self._totals = (0, 0, 0, 0)  # sent, delivered, failed, batches
        self._base = (0, 0, 0, 0)  # the totals at the last reset
        self._queued = 0
        self._window: deque[tuple[float, int]] = deque()
        self._truth: GroundTruthWriter | None = None
        self._manifest: Path | None = None

    # --- control (any thread) --------------------------------------------------------------
    @property
    def state(self) -> GeneratorState:
        with self._changed:
            return self._state

    @property
    def rate(self) -> float:
        with self._changed:
            return self._rate

    @property
    def paused(self) -> bool:
        with self._changed:
            return self._state == "paused"

    def pause(self) -> GeneratorState:
        """Stop producing before the next chunk; returns the previous state."""
        return self._switch("running", "paused")

    def resume(self) -> GeneratorState:
        """Produce again; returns the previous state."""
        return self._switch("paused", "running")

    def _switch(self, source: GeneratorState, target: GeneratorState) -> GeneratorState:
        with self._changed:
            previous = self._state
            if previous == source:
                self._state, self._idle = target, False
                self._changed.notify_all()
            return previous

    def set_rate(self, rate: float) -> float:
        """Change the target rate from the next chunk on; returns the previous one."""
        if not (math.isfinite(rate) and 0 < rate <= MAX_RATE):
            raise ConfigError(f"rate={rate} must be above 0 and at most {MAX_RATE:,.0f} events/s")
        with self._changed:
            previous, self._rate = self._rate, rate
            self._changed.notify_all()
            return previous

    def wait_idle(self, timeout: float) -> bool:
        """Wait until the loop has paused and everything it sent was delivered (or failed)."""
        with self._changed:
            self._changed.wait_for(lambda: self._state != "paused" or self._idle, timeout)
            return self._state == "paused" and self._idle

    def status(self) -> GeneratorStatus:
        """The current state and counters."""
        now = time.monotonic()
        with self._changed:
            sent, delivered, failed, batches = (
                total - base for total, base in zip(self._totals, self._base, strict=True)
            )
            while self._window and self._window[0][0] < now - RATE_WINDOW_S:
                self._window.popleft()
            span = min(RATE_WINDOW_S, now - self._window_start)
            measured = sum(n for _, n in self._window) / span if span > 0 else 0.0
            return GeneratorStatus(
                state=self._state,
                uptime_s=now - self._started,
                sent=sent,
                delivered=delivered,
                delivery_errors=failed,
                queued=self._queued,
                rate=self._rate,
                measured_rate=measured,
                batches=batches,
            )

    def reset_counters(self) -> None:
        """Count from zero again (after a clean)."""
        with self._changed:
            self._base = self._totals
            self._window.clear()
            self._window_start = time.monotonic()

    def restart_ground_truth(self) -> str | None:
        """Delete the ground-truth file (to be written again from the current episode on);
        the path deleted, or None. Only while paused: the loop writes it between chunks."""
        with self._changed:
            if self._truth is None:
                return None
            return self._truth.restart(self._totals[0])

    @property
    def manifest(self) -> Path | None:
        """The run's manifest file, once the run has written it."""
        with self._changed:
            return self._manifest

    # --- the generator loop --------------------------------------------------------------
    def attach(self, truth: GroundTruthWriter, manifest: Path | None = None) -> None:
        with self._changed:
            self._truth, self._manifest = truth, manifest

    def update(self, sent: int, delivered: int, failed: int, queued: int, chunk: int = 0) -> None:
        """Totals from the loop; ``chunk``: events just queued (a batch, if more than 0)."""
        with self._changed:
            batches = self._totals[3] + (1 if chunk else 0)
            self._totals = (sent, delivered, failed, batches)
            self._queued = queued
            if chunk:
                self._window.append((time.monotonic(), chunk))

    def idle(self, queued: int) -> None:
        """The loop is paused with ``queued`` messages still waiting for delivery."""
        with self._changed:
            self._queued = queued
            if self._state == "paused":
                self._idle = queued == 0
                self._changed.notify_all()

    def wait_resumed(self, timeout: float) -> None:
        with self._changed:
            self._changed.wait_for(lambda: self._state != "paused", timeout)

    def finish(self) -> None:
        with self._changed:
            self._state, self._idle = "stopped", False
            self._changed.notify_all()


# --- the run manifest --------------------------------------------------------------------
MANIFEST_VERSION = 1
REPLAYED_OPTIONS = (
    "sensors",
    "rate",
    "count",
    "duration",
    "seed",
    "format",
    "malformed_fraction",
    "invalid_fraction",
    "duplicate_fraction",
    "late_fraction",
    "late_max_seconds",
    "start_time",
    "anomalies",
)
"""What a rerun takes from the manifest: the options that decide the events' bytes."""


def new_run_id(now: datetime) -> str:
    """A run id that sorts by start time: ``20260105T080000Z-3fa2c1``."""
    return f"{now.astimezone(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def default_manifest_path(runtime_dir: Path, run_id: str) -> Path:
    """Where a run's manifest goes without ``--manifest``."""
    return runtime_dir / "generator" / "manifests" / f"{run_id}.json"


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def config_to_json(config: GeneratorConfig) -> dict[str, Any]:
    """Every field of ``config`` as JSON values (the start time as ISO-8601 with ``Z``)."""
    data = asdict(config)
    if config.start_time is not None:
        data["start_time"] = _iso(config.start_time)
    return data


def config_from_json(data: Mapping[str, Any]) -> GeneratorConfig:
    """The GeneratorConfig :func:`config_to_json` wrote (ConfigError on unknown fields)."""
    known = {f.name for f in fields(GeneratorConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(
            f"the manifest's config has fields this version does not know: {', '.join(unknown)}"
        )
    options = dict(data)
    if isinstance(options.get("start_time"), str):
        options["start_time"] = _parse_start_time(options["start_time"])
    try:
        return GeneratorConfig(**options)
    except TypeError as exc:  # a field of the wrong type, e.g. "sensors": "ten"
        raise ConfigError(f"the manifest's config is not usable: {exc}") from None


@dataclass
class RunManifest:
    """What one ``generate`` run is configured to do and has done: its manifest, as data."""

    run_id: str
    config: GeneratorConfig  # with the start time resolved, so a rerun makes the same events
    topic: str
    bootstrap: str
    started_at: datetime  # wall clock
    state: str = "running"  # running, finished or failed
    reason: str | None = None  # why it ended (count_reached, stop_requested, …)
    updated_at: datetime | None = None
    sent: int = 0
    delivered: int = 0
    failed: int = 0
    last_event_time: datetime | None = None  # nominal event time of the last event sent
    kinds: dict[str, int] = field(default_factory=dict)
    formats: dict[str, int] = field(default_factory=dict)
    delivery_errors: list[str] = field(default_factory=list)
    clock_changes: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The manifest document: the file `generate` writes and GET /manifest serves."""
        changed_at = [c["event"] for c in self.clock_changes]
        return {
            "manifest_version": MANIFEST_VERSION,
            "run_id": self.run_id,
            "state": self.state,
            "reason": self.reason,
            "started_at": _iso(self.started_at),
            "updated_at": _iso(self.updated_at or self.started_at),
            "config": config_to_json(self.config),
            "seed": self.config.seed,
            "topic": self.topic,
            "bootstrap": self.bootstrap,
            "event_time": {
                "start": _iso(self.config.start_time) if self.config.start_time else None,
                "end": _iso(self.last_event_time) if self.last_event_time else None,
            },
            "counts": {
                "sent": self.sent,
                "delivered": self.delivered,
                "delivery_failures": self.failed,
                "by_format": {f: self.formats.get(f, 0) for f in PAYLOAD_FORMATS},
                "by_kind": {k: self.kinds.get(k, 0) for k in KINDS},
            },
            "delivery_errors": self.delivery_errors,
            "ground_truth": self.config.ground_truth,
            "clock_changes": self.clock_changes,
            "reproducible_events": min([self.sent, *changed_at]),
        }


def write_manifest(path: Path, document: Mapping[str, Any]) -> None:
    """Write ``document`` to ``path`` atomically: a reader sees the old file or the new one.

    No fsync: the rename survives the process being killed, and the loop calls this while
    pacing, where an fsync can take a disk's whole latency."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(temp, "w", encoding="utf-8") as out:
        json.dump(document, out, indent=2, ensure_ascii=False)
        out.write("\n")
    os.replace(temp, path)


def read_manifest(path: Path) -> dict[str, Any]:
    """A manifest written by ``generate`` (ConfigError if it is missing or not one)."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read the manifest {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ConfigError(f"{path} is not JSON: {exc}") from None
    if not isinstance(document, dict) or not isinstance(document.get("config"), dict):
        raise ConfigError(f"{path} is not a generator manifest (it has no config)")
    version = document.get("manifest_version")
    if version != MANIFEST_VERSION:
        raise ConfigError(
            f"{path} has manifest_version {version!r}; this version reads {MANIFEST_VERSION}"
        )
    return document


def rerun_config(document: Mapping[str, Any], /, **outputs: Any) -> GeneratorConfig:
    """The configuration that sends the events of the manifest ``document`` again: its
    configuration with the resolved start time and ``count`` = the events it sent (so a run
    stopped by time or by hand ends at the same event). ``outputs`` (topic, ground_truth,
    manifest, paced) change where and how fast they go, never their bytes; the new run gets a
    manifest of its own."""
    config = config_from_json(document["config"])
    sent = document.get("counts", {}).get("sent")
    if not isinstance(sent, int) or sent < 0:
        raise ConfigError("the manifest has no counts.sent: it cannot say how many to send")
    bad = sorted(set(outputs) - {"topic", "ground_truth", "manifest", "paced"})
    if bad:
        raise ConfigError(f"a rerun keeps the manifest's {', '.join(bad)}")
    fixed: dict[str, Any] = {"count": sent, "duration": None, "manifest": None}
    return replace(config, **(fixed | outputs))


def _manifest_path(config: GeneratorConfig, settings: Settings, run_id: str) -> Path:
    if config.manifest is not None:
        return Path(config.manifest)
    return default_manifest_path(settings.runtime_dir, run_id)


def _wait_while_paused(
    control: GeneratorController,
    producer: Producer,
    tracker: _DeliveryTracker,
    sent: int,
    stop: threading.Event | None,
) -> float:
    """Serve delivery reports until resumed or stopped; returns the seconds paused."""
    paused_at = time.monotonic()
    logger.info(
        "generator paused %s",
        kv(sent=sent, delivered=tracker.delivered, delivery_errors=tracker.failed),
    )
    while control.paused and not (stop is not None and stop.is_set()):
        remaining = producer.flush(0.2) if len(producer) else 0
        control.update(sent, tracker.delivered, tracker.failed, remaining)
        control.idle(remaining)
        if not remaining:
            control.wait_resumed(0.2)
    return time.monotonic() - paused_at


def run_generator(
    config: GeneratorConfig,
    settings: Settings,
    stop: threading.Event | None = None,
    controller: GeneratorController | None = None,
) -> GeneratorReport:
    """Produce the configured stream to Kafka, paced to ``config.rate``, and report delivery.

    Stops after ``count`` messages, after ``duration`` seconds, when ``stop`` is set or on
    KeyboardInterrupt; then flushes (30 s) and counts what is still undelivered as failed.
    ``controller`` can pause and resume it and change the rate while it runs. A paced stream's
    event times skip a pause (the sensors were silent); a new rate spaces the events after it.
    """
    control = controller if controller is not None else GeneratorController(config)
    topic = config.topic or settings.kafka_topic
    generator = EventGenerator(config)
    truth = GroundTruthWriter(generator, config.ground_truth)
    started_at = datetime.now(UTC)
    record = RunManifest(
        run_id=new_run_id(started_at),
        config=replace(config, start_time=generator.start_time),
        topic=topic,
        bootstrap=settings.kafka_bootstrap_servers,
        started_at=started_at,
    )
    manifest_path = _manifest_path(config, settings, record.run_id)
    try:
        write_manifest(manifest_path, record.to_json())
    except OSError as exc:
        raise ConfigError(
            f"cannot write the generator manifest {manifest_path}: {exc.strerror or exc}; "
            "choose another file with --manifest"
        ) from None
    control.attach(truth, manifest_path)
    tracker = _DeliveryTracker()
    producer = Producer(producer_config(settings, tracker.on_client_error))
    rate = config.rate
    chunk = _chunk_size(rate)
    logger.info(
        kv(
            event="generator_start",
            topic=topic,
            bootstrap=settings.kafka_bootstrap_servers,
            sensors=config.sensors,
            rate=config.rate,
            count=config.count,
            duration=config.duration,
            format=config.format,
            seed=config.seed,
            start_time=generator.start_time.isoformat(),
            chunk=chunk,
            run_id=record.run_id,
            manifest=str(manifest_path),
        )
    )
    kinds: Counter[str] = Counter()
    formats: Counter[str] = Counter()

    def save_manifest(
        state: str = "running",
        reason: str | None = None,
        failed: int = 0,
        errors: list[str] | None = None,
    ) -> None:
        record.state, record.reason, record.updated_at = state, reason, datetime.now(UTC)
        record.sent, record.delivered = sent, tracker.delivered
        record.failed = tracker.failed + failed
        record.last_event_time = generator.nominal_time(sent - 1) if sent else None
        record.kinds = dict(kinds)
        record.formats = dict(formats)
        record.delivery_errors = list(tracker.errors) if errors is None else errors
        try:
            write_manifest(manifest_path, record.to_json())
        except OSError as exc:  # the stream matters more than its record
            logger.warning(kv(event="manifest_not_written", path=manifest_path, error=exc))

    sent, reason = 0, "stopped"
    t0 = time.monotonic()
    next_progress = t0 + config.progress_interval_s
    last_progress_t, last_progress_sent = t0, 0
    warned_no_delivery = False
    # Pacing: event ``anchor_sent`` is due at ``anchor_t`` (wall clock) and ``anchor_virtual``
    # (s of event time after the start); the anchor moves when the rate changes or on resume.
    anchor_t, anchor_sent, anchor_virtual = t0, 0, 0.0
    try:
        while True:
            now = time.monotonic()
            if now >= next_progress:
                logger.info(
                    kv(
                        event="generator_progress",
                        sent=sent,
                        rate=(sent - last_progress_sent) / max(now - last_progress_t, 1e-9),
                        delivered=tracker.delivered,
                        delivery_errors=tracker.failed,
                        queued=len(producer),
                    )
                )
                next_progress = now + config.progress_interval_s
                last_progress_t, last_progress_sent = now, sent
                save_manifest()
            if not warned_no_delivery and tracker.delivered == 0 and now - t0 >= NO_DELIVERY_S:
                warned_no_delivery = True
                logger.warning(
                    kv(
                        event="no_delivery_yet",
                        after_s=now - t0,
                        sent=sent,
                        delivery_errors=tracker.failed,
                        bootstrap=settings.kafka_bootstrap_servers,
                        hint="is the broker running and KAFKA_BOOTSTRAP_SERVERS right?",
                    )
                )
            if stop is not None and stop.is_set():
                reason = "stop_requested"
                break
            if control.paused:
                paused_s = _wait_while_paused(control, producer, tracker, sent, stop)
                skip_s = paused_s if config.paced else 0.0
                anchor_virtual += (sent - anchor_sent) / rate + skip_s
                anchor_t, anchor_sent = time.monotonic(), sent
                if skip_s:
                    generator.retime(sent, rate, skip_s)
                    truth.skip_to(sent)
                    record.clock_changes.append({"event": sent, "rate": rate, "skip_s": skip_s})
                    save_manifest()
                if not control.paused:
                    logger.info("generator resumed %s", kv(paused_s=paused_s, sent=sent))
                continue
            if control.rate != rate:
                new_rate = control.rate
                anchor_virtual += (sent - anchor_sent) / rate
                anchor_t, anchor_sent = now, sent
                generator.retime(sent, new_rate)
                record.clock_changes.append({"event": sent, "rate": new_rate, "skip_s": 0.0})
                save_manifest()
                logger.info(
                    "generator rate changed %s", kv(rate=new_rate, previous=rate, sent=sent)
                )
                rate, chunk = new_rate, _chunk_size(new_rate)
            if config.count is not None and sent >= config.count:
                reason = "count_reached"
                break
            scheduled = anchor_virtual + (sent - anchor_sent) / rate  # virtual time of the next
            if config.duration is not None and (
                scheduled >= config.duration or (config.paced and now - t0 >= config.duration)
            ):
                reason = "duration_reached"
                break
            wait = anchor_t + (sent - anchor_sent) / rate - now
            if wait > 0 and config.paced:
                # Ahead of schedule: serve callbacks, then sleep (in short steps, so progress
                # logs, the stop event and the controller are handled even at very low rates).
                producer.poll(0)
                control.update(sent, tracker.delivered, tracker.failed, len(producer))
                nap = min(wait, 0.5)
                if stop is not None:
                    stop.wait(nap)
                else:
                    time.sleep(nap)
                continue
            n = chunk if config.count is None else min(chunk, config.count - sent)
            n = min(n, BLOCK_SIZE - sent % BLOCK_SIZE)  # after a rate change: up to the block end
            truth.reached(sent + n - 1)
            block = generator.generate_block(sent // BLOCK_SIZE)
            offset = sent % BLOCK_SIZE
            queued, interrupted = _produce_chunk(
                producer,
                topic,
                block.keys[offset : offset + n],
                block.values[offset : offset + n],
                tracker.on_delivery,
                stop,
            )
            kinds.update(block.kinds[offset : offset + queued])
            formats.update(block.formats[offset : offset + queued])
            sent += queued
            if interrupted:
                raise KeyboardInterrupt
            producer.poll(0)
            control.update(sent, tracker.delivered, tracker.failed, len(producer), queued)
    except KeyboardInterrupt:
        reason = "interrupted"
    except Exception as exc:
        save_manifest("failed", f"{type(exc).__name__}: {exc}", len(producer))
        raise
    control.finish()
    send_elapsed = time.monotonic() - t0
    logger.info(kv(event="generator_flush", reason=reason, sent=sent, queued=len(producer)))
    try:
        remaining = producer.flush(30)
    except KeyboardInterrupt:
        remaining = len(producer)
    if remaining:
        logger.error(
            kv(
                event="undelivered_after_flush",
                undelivered=remaining,
                delivered=tracker.delivered,
                bootstrap=settings.kafka_bootstrap_servers,
            )
        )
    control.update(sent, tracker.delivered, tracker.failed + remaining, remaining)
    elapsed = time.monotonic() - t0
    for text, n_errors in tracker.error_counts.items():
        logger.warning(kv(event="delivery_error_summary", error=text, count=n_errors))
    errors = list(tracker.errors)
    if remaining and len(errors) < _DeliveryTracker.max_errors_kept:
        errors.append(f"{remaining} messages still undelivered after flush(30)")
    report = GeneratorReport(
        sent=sent,
        delivered=tracker.delivered,
        failed=tracker.failed + remaining,
        elapsed_s=elapsed,
        rate=sent / elapsed if elapsed > 0 else 0.0,
        kinds={kind: kinds[kind] for kind in KINDS},
        errors=errors,
        formats={f: formats[f] for f in PAYLOAD_FORMATS},
        manifest=str(manifest_path),
    )
    save_manifest("finished", reason, remaining, errors)
    logger.info(
        kv(
            event="generator_done",
            reason=reason,
            sent=report.sent,
            delivered=report.delivered,
            failed=report.failed,
            elapsed_s=report.elapsed_s,
            send_rate=sent / send_elapsed if send_elapsed > 0 else 0.0,
            rate=report.rate,
            **{f"kind_{k}": v for k, v in report.kinds.items()},
        )
    )
    return report


# --- command line ------------------------------------------------------------------------
def _parse_start_time(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(
            f"start time {text!r} is not ISO-8601; use e.g. 2026-01-01T00:00:00Z"
        ) from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _start_time_arg(text: str) -> datetime:
    try:
        return _parse_start_time(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _port_arg(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port: use 1 to 65535, or 0")
    return port


def add_generate_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the generator's options (``iot-lakehouse generate …``) to ``parser``."""
    # The options of REPLAYED_OPTIONS default to None (GeneratorConfig's default then), so
    # config_from_args can tell which were given next to --from-manifest.
    d = GeneratorConfig()
    add = parser.add_argument
    add("--sensors", type=int, default=None, help=f"number of sensors (default {d.sensors})")
    add("--rate", type=float, default=None, help=f"target events/s (default {d.rate:g})")
    add("--count", type=int, default=None, help="messages to send, duplicates included")
    add("--duration", type=float, default=None, help="seconds to run (default: until stopped)")
    add("--seed", type=int, default=None, help=f"random seed (default {d.seed})")
    add("--format", choices=FORMATS, default=None, help=f"payload format (default {d.format})")
    for kind in ("malformed", "invalid", "duplicate", "late"):
        add(
            f"--{kind}-fraction",
            type=float,
            default=None,
            help=f"fraction of {kind} events, 0..1 (default 0)",
        )
    add(
        "--late-max-seconds",
        type=float,
        default=None,
        help=f"late events are {LATE_MIN_SECONDS:g} s to this many seconds behind, never "
        f"before the start (default {d.late_max_seconds:g})",
    )
    add(
        "--start-time",
        type=_start_time_arg,
        default=None,
        help="ISO-8601 time of event 0, e.g. 2026-01-01T00:00:00Z (default: now)",
    )
    add("--topic", default=None, help="Kafka topic (default: KAFKA_TOPIC)")
    add(
        "--unpaced",
        action="store_true",
        help="send as fast as the broker takes it (a backfill); event times still advance by "
        "1/--rate per event from --start-time",
    )
    add(
        "--anomalies",
        action="store_true",
        help="inject the labelled anomaly scenario (docs/pipeline.md, 'Alerts'): spikes, jumps, "
        f"drifts, humidity surges, outliers and silences, repeated every {EPISODE_S // 60} minutes",
    )
    add(
        "--ground-truth",
        default=None,
        metavar="FILE",
        help="write the injected anomalies to FILE (JSON lines), for evaluate-alerts",
    )
    add(
        "--manifest",
        default=None,
        metavar="FILE",
        help="write the run's manifest (configuration, seed, event times, counts) to FILE "
        "(default: .runtime/generator/manifests/<run id>.json)",
    )
    add(
        "--from-manifest",
        default=None,
        metavar="FILE",
        help="send the events of the run FILE describes again, byte for byte: its "
        "configuration, start time and count; only --topic, --ground-truth, --manifest, "
        "--unpaced and --api-port may be added",
    )
    add(
        "--api-port",
        type=_port_arg,
        default=None,
        metavar="PORT",
        help="port of the control API (status, pause, resume, rate, clean) on "
        "GENERATOR_API_HOST; 0: no API (default: GENERATOR_API_PORT, 18000)",
    )


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


def config_from_args(args: argparse.Namespace) -> GeneratorConfig:
    """The GeneratorConfig the parsed options describe (ConfigError when they cannot work)."""
    # given: not None (and for a flag, True); 0 and 0.0 are given values
    values = {name: getattr(args, name, None) for name in REPLAYED_OPTIONS}
    given = {name: v for name, v in values.items() if v is not None and v is not False}
    if isinstance(given.get("start_time"), str):
        given["start_time"] = _parse_start_time(given["start_time"])
    source = getattr(args, "from_manifest", None)
    if source is None:
        return GeneratorConfig(
            **given,
            topic=args.topic,
            ground_truth=args.ground_truth,
            paced=not args.unpaced,
            manifest=getattr(args, "manifest", None),
        )
    if given:
        options = ", ".join(_option(name) for name in given)
        raise ConfigError(
            f"{options} cannot go with --from-manifest: the manifest fixes what is generated "
            "(only --topic, --ground-truth, --manifest, --unpaced and --api-port may be added)"
        )
    manifest = read_manifest(Path(source))
    outputs: dict[str, Any] = {"manifest": args.manifest}
    if args.topic is not None:
        outputs["topic"] = args.topic
    if args.ground_truth is not None:
        outputs["ground_truth"] = args.ground_truth
    if args.unpaced:
        outputs["paced"] = False
    config = rerun_config(manifest, **outputs)
    logger.info(
        kv(
            event="generator_rerun",
            manifest=source,
            run_id=manifest.get("run_id"),
            count=config.count,
        )
    )
    changes = manifest.get("clock_changes") or []
    if changes:
        logger.warning(
            kv(
                event="rerun_differs_after_clock_change",
                manifest=source,
                reproducible_events=manifest.get("reproducible_events"),
                hint="the run changed its rate or paused; later events get other event times",
            )
        )
    return config
