"""``iot-lakehouse evaluate-alerts``: precision, recall and latency of the alerts against the
generator's ground truth (``generate --anomalies --ground-truth FILE``).

Reads gold/alerts and silver/readings with the ``deltalake`` package (no Spark needed).

- An anomaly is *observable* when silver has a reading of its sensor (and metric) inside it; a
  silence when the sensor was seen before it and silver runs past the silence limit. Anomalies
  whose window (+ grace) is not yet covered by silver are *pending* and not scored.
- It is *detected* when an alert of its expected type, for its sensor, has an event time in
  [start, end + grace]. Recall = detected / observable.
- An alert is *explained* when it falls in the window (+ grace) of any injected anomaly of the
  same sensor (and metric, when both have one). Precision per alert type = explained / alerts.
- Latency of a detection = detected_at of the first matching alert - its event time (the
  reading's event time, or the moment the silence limit passed). Meaningful for a real-time
  run, where event time is the time the generator produced the reading.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from iot_lakehouse.errors import ConfigError
from iot_lakehouse.settings import Settings

GRACE_S = 300.0


@dataclass(frozen=True)
class TypeScore:
    alert_type: str
    injected_kind: str | None
    anomalies: int  # observable and complete
    detected: int
    pending: int
    alerts: int
    explained: int
    latencies_s: tuple[float, ...] = ()  # of each detection, in the ground truth's order

    @property
    def latency_p50_s(self) -> float | None:
        return _quantile(self.latencies_s, 0.5)

    @property
    def latency_p95_s(self) -> float | None:
        return _quantile(self.latencies_s, 0.95)

    @property
    def recall(self) -> float | None:
        return self.detected / self.anomalies if self.anomalies else None

    @property
    def precision(self) -> float | None:
        return self.explained / self.alerts if self.alerts else None


def _quantile(values: tuple[float, ...], q: float) -> float | None:
    return float(pd.Series(values).quantile(q)) if values else None


def load_ground_truth(path: Path) -> pd.DataFrame:
    if not path.exists():
        raise ConfigError(
            f"ground truth {path} not found; write it with "
            "`iot-lakehouse generate --anomalies --ground-truth FILE`"
        )
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    truth = pd.DataFrame(
        rows,
        columns=["anomaly_id", "kind", "sensor_id", "metric", "start", "end", "expected_alert"],
    )
    for column in ("start", "end"):
        truth[column] = pd.to_datetime(truth[column], utc=True)
    return truth


def _read_delta(path: str, columns: list[str]) -> pd.DataFrame:
    from deltalake import DeltaTable

    try:
        frame: pd.DataFrame = DeltaTable(path).to_pandas(columns=columns)
    except Exception as exc:  # deltalake raises its own TableNotFoundError
        raise ConfigError(f"cannot read the Delta table {path}: {exc}") from None
    for column in ("event_time", "detected_at"):
        if column in frame:
            frame[column] = pd.to_datetime(frame[column], utc=True)
    return frame


def evaluate(
    truth: pd.DataFrame,
    alerts: pd.DataFrame,
    readings: pd.DataFrame,
    silence_s: float = 600.0,
    grace_s: float = GRACE_S,
) -> list[TypeScore]:
    """Score every alert type (pure: the three frames in, one score per type out)."""
    grace = pd.Timedelta(seconds=grace_s)
    horizon = readings["event_time"].max() if len(readings) else None
    fired = alerts[alerts["status"] == "fired"]
    kind_of = dict(zip(truth["expected_alert"], truth["kind"], strict=False))
    results: dict[str, dict[str, Any]] = {}
    latencies: dict[str, list[float]] = {}

    def score(alert_type: str) -> dict[str, Any]:
        return results.setdefault(
            alert_type, {"anomalies": 0, "detected": 0, "pending": 0, "alerts": 0, "explained": 0}
        )

    for a in truth.itertuples(index=False):
        s = score(a.expected_alert)
        end = a.end + grace
        if horizon is None or horizon < end:
            s["pending"] += 1
            continue
        own = readings[readings["sensor_id"] == a.sensor_id]
        if a.kind == "silence":
            before = own[own["event_time"] < a.start]["event_time"]
            observable = len(before) > 0 and horizon >= before.max() + pd.Timedelta(
                seconds=silence_s
            )
        else:
            inside = own[
                (own["metric"] == a.metric)
                & (own["event_time"] >= a.start)
                & (own["event_time"] < a.end)
            ]
            observable = len(inside) > 0
        if not observable:
            continue
        s["anomalies"] += 1
        match = fired[
            (fired["alert_type"] == a.expected_alert)
            & (fired["sensor_id"] == a.sensor_id)
            & (fired["event_time"] >= a.start)
            & (fired["event_time"] <= end)
        ]
        if len(match):
            s["detected"] += 1
            first = match.sort_values("detected_at").iloc[0]
            latency = (first["detected_at"] - first["event_time"]).total_seconds()
            latencies.setdefault(a.expected_alert, []).append(latency)

    for alert in fired.itertuples(index=False):
        s = score(alert.alert_type)
        s["alerts"] += 1
        near = truth[
            (truth["sensor_id"] == alert.sensor_id)
            & (truth["start"] <= alert.event_time)
            & (truth["end"] + grace >= alert.event_time)
        ]
        if alert.metric is not None and isinstance(alert.metric, str):
            near = near[near["metric"].isna() | (near["metric"] == alert.metric)]
        if len(near):
            s["explained"] += 1

    return [
        TypeScore(
            alert_type,
            kind_of.get(alert_type),
            latencies_s=tuple(latencies.get(alert_type, [])),
            **s,
        )
        for alert_type, s in sorted(results.items())
    ]


def evaluate_lakehouse(
    settings: Settings, ground_truth: Path, grace_s: float | None = None
) -> list[TypeScore]:
    """Read the ground truth, gold/alerts and silver/readings; score every alert type."""
    from iot_lakehouse.pipeline.detectors import load_alert_rules

    rules = load_alert_rules(settings.alert_rules_file)
    truth = load_ground_truth(ground_truth)
    alerts = _read_delta(
        settings.alerts_path,
        ["sensor_id", "metric", "alert_type", "status", "event_time", "detected_at"],
    )
    readings = _read_delta(settings.silver_readings_path, ["sensor_id", "metric", "event_time"])
    grace = GRACE_S if grace_s is None else grace_s
    return evaluate(truth, alerts, readings, rules.silence_ms / 1000, grace)


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def format_scores(scores: list[TypeScore]) -> str:
    """A plain-text table, one row per alert type."""
    header = (
        f"{'alert_type':<20} {'injected':<15} {'anomalies':>9} {'detected':>8} {'recall':>6} "
        f"{'alerts':>6} {'explained':>9} {'precision':>9} {'p50_s':>7} {'p95_s':>7} "
        f"{'pending':>7}"
    )
    lines = [header, "-" * len(header)]
    for s in scores:
        lines.append(
            f"{s.alert_type:<20} {s.injected_kind or '-':<15} {s.anomalies:>9} {s.detected:>8} "
            f"{_fmt(s.recall):>6} {s.alerts:>6} {s.explained:>9} {_fmt(s.precision):>9} "
            f"{_fmt(s.latency_p50_s, 1):>7} {_fmt(s.latency_p95_s, 1):>7} {s.pending:>7}"
        )
    return "\n".join(lines)


def scores_json(scores: list[TypeScore]) -> str:
    return json.dumps([score_dict(s) for s in scores], indent=2)


def score_dict(score: TypeScore) -> dict[str, Any]:
    """A score with its derived figures (latency quantiles, recall, precision), for JSON."""
    return {
        **asdict(score),
        "latency_p50_s": score.latency_p50_s,
        "latency_p95_s": score.latency_p95_s,
        "recall": score.recall,
        "precision": score.precision,
    }
