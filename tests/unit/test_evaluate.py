"""evaluate-alerts: recall, precision and latency against a ground truth, on crafted frames."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from iot_lakehouse.errors import ConfigError
from iot_lakehouse.ops.evaluate import evaluate, format_scores, load_ground_truth, scores_json

T = pd.Timestamp("2026-01-01T00:00:00Z")


def ts(minutes: float) -> pd.Timestamp:
    return T + pd.Timedelta(minutes=minutes)


def truth_file(tmp_path: Path) -> Path:
    rows = [
        ("0-spike", "spike", "s1", "temperature", 4, 5, "HIGH_TEMP"),
        ("0-silence", "silence", "s2", None, 6, 18, "SENSOR_SILENT"),
        ("0-outlier", "outlier", "s3", "temperature", 10.1, 10.15, "OUTLIER"),  # no reading in it
        ("1-spike", "spike", "s4", "temperature", 30, 31, "HIGH_TEMP"),  # after the data: pending
    ]
    path = tmp_path / "truth.jsonl"
    keys = ("anomaly_id", "kind", "sensor_id", "metric", "start", "end", "expected_alert")
    lines = [
        json.dumps(
            dict(zip(keys, (i, k, s, m, ts(a).isoformat(), ts(b).isoformat(), e), strict=True))
        )
        for i, k, s, m, a, b, e in rows
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_recall_precision_and_latency(tmp_path: Path) -> None:
    truth = load_ground_truth(truth_file(tmp_path))
    readings = pd.DataFrame(
        [(s, "temperature", ts(m / 2)) for s in ("s1", "s3", "s4") for m in range(50)]
        + [("s1", "temperature", ts(4.5)), ("s2", "temperature", ts(5.5))],
        columns=["sensor_id", "metric", "event_time"],
    )

    def later(minutes: float, seconds: float) -> pd.Timestamp:
        return ts(minutes) + pd.Timedelta(seconds=seconds)

    alerts = pd.DataFrame(
        [
            ("s1", "temperature", "HIGH_TEMP", "fired", ts(4.5), later(4.5, 12)),
            ("s1", "temperature", "HIGH_TEMP", "fired", ts(4.6), later(4.6, 30)),
            ("s3", "temperature", "HIGH_TEMP", "fired", ts(20), ts(20)),  # unexplained
            ("s2", None, "SENSOR_SILENT", "fired", ts(15.5), later(15.5, 20)),
            ("s2", None, "SENSOR_SILENT", "cleared", ts(18), ts(18)),  # not counted
        ],
        columns=["sensor_id", "metric", "alert_type", "status", "event_time", "detected_at"],
    )
    scores = {s.alert_type: s for s in evaluate(truth, alerts, readings, silence_s=600)}
    high = scores["HIGH_TEMP"]
    assert (high.anomalies, high.detected, high.pending, high.recall) == (1, 1, 1, 1.0)
    assert (high.alerts, high.explained) == (3, 2)
    assert high.precision == pytest.approx(2 / 3)
    assert high.latency_p50_s == 12.0  # the first detection
    assert high.latencies_s == (12.0,)  # one per detected anomaly, not per alert
    silent = scores["SENSOR_SILENT"]
    assert (silent.anomalies, silent.detected, silent.alerts) == (1, 1, 1)
    assert silent.latency_p95_s == 20.0
    outlier = scores["OUTLIER"]
    assert (outlier.anomalies, outlier.recall, outlier.precision) == (0, None, None)
    table = format_scores(list(scores.values()))
    assert "HIGH_TEMP" in table and "0.67" in table
    assert json.loads(scores_json(list(scores.values())))[0]["alert_type"] == "HIGH_TEMP"


def test_a_missed_anomaly_lowers_recall(tmp_path: Path) -> None:
    truth = load_ground_truth(truth_file(tmp_path))
    readings = pd.DataFrame(
        [("s1", "temperature", ts(m / 2)) for m in range(50)],
        columns=["sensor_id", "metric", "event_time"],
    )
    empty = pd.DataFrame(
        columns=["sensor_id", "metric", "alert_type", "status", "event_time", "detected_at"]
    )
    scores = {s.alert_type: s for s in evaluate(truth, empty, readings)}
    assert (scores["HIGH_TEMP"].anomalies, scores["HIGH_TEMP"].recall) == (1, 0.0)


def test_missing_ground_truth_says_how_to_make_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--ground-truth"):
        load_ground_truth(tmp_path / "nope.jsonl")
