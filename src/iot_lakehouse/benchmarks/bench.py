"""The benchmark's arithmetic and report: plans, lag flatness, visibility latency, the table.

Pure functions over numbers and rows; :mod:`iot_lakehouse.benchmarks.bench_runs` runs the
processes that produce them (``iot-lakehouse bench``).
"""

from __future__ import annotations

import json
import math
import platform
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

from iot_lakehouse.settings import START_ALL_RATE

# Targets of this machine (2 cores shared by broker, generator and every job).
G1_TARGET = 50_000.0  # events/s sustained by the whole pipeline
G1_FLOOR = 25_000.0
G2_P95_TARGET = 3.0  # seconds, produce -> silver
G3_P95_TARGET = 10.0  # seconds, produce -> gold-visible
G4_TARGET = 250_000.0  # bronze rows/s, silver rebuilt with --available-now
G5_TARGET = 15.0  # seconds, process start -> first bronze commit
# Freshness at start_all's defaults: seconds from the clock back to the newest event time a
# Delta reader sees, p95 over the measurement.
FRESHNESS_P95_TARGETS = {"silver": 5.0, "gold": 10.0}
RSS_TARGET = 8 * 1024**3  # bytes, all processes together
# Alert detection latency, live at start_all's defaults with the anomaly scenario: seconds from
# an anomalous reading's event time (or the moment a silence passed its limit) to the alert's
# detected_at, p95 over every injected anomaly detected.
ALERT_LATENCY_P95_TARGET = 10.0
# The bench scores an anomaly once silver has readings this long past its end (evaluate-alerts'
# default grace is 5 minutes; shorter here, so a run of minutes scores the early anomalies).
ALERT_GRACE_S = 120.0
# Against the textbook one-hop job (bench_textbook: Kafka -> from_json -> range filter -> Delta,
# Spark's defaults), run in the same bench on the same topics:
BACKLOG_RATIO_TARGET = 1.5  # ours / textbook, Kafka -> silver events/s draining one backlog
FRESHNESS_RATIO_TARGET = 0.5  # ours / textbook, p95 of (clock - newest silver event time), live
# Memory that must be free for the textbook job to run beside our pipeline (its driver JVM and
# Python, ~1.5 GiB, with room to spare); with less the two take turns on the live topic.
TEXTBOOK_MEMORY_NEED = 3 * 1024**3
LATENCY_RATE = 10_000.0  # events/s of the G2 / G3 measurement
SOAK_SENSORS = 10_000
# events/s of the soak (10,000 sensors): a fifth below the rate 10-minute soaks kept
# (docs/benchmarks.md).
SOAK_DEFAULT_RATE = 4000.0

KAFKA_LAG_BATCHES = 2  # Kafka lag may grow by this many trigger intervals' worth of input
VERSION_LAG_GROWTH = 3.0  # Delta versions a downstream query may fall further behind
MIN_BATCHES = 2  # a lag trend needs at least two batches of a query in the window
WINDOW_STRETCH = 3.0  # a G1 window grows to at most this many times its length for them
FRESH_COMMITS = 3  # commits of silver and gold in a window to judge how far they trail


@dataclass(frozen=True)
class Plan:
    """How long each part runs: ``full`` is the issue's plan, ``quick`` a shorter check."""

    name: str
    sustain_s: float  # G1: seconds the lag must stay flat at a rate
    warmup_s: float  # G1: seconds at a new rate before the window starts
    # G1: at most this long paused for the backlog to go before the next rate. A bound on the
    # wait, not the judgement: with batches of 15-35 s end to end per layer a backlog the
    # pipeline keeps up with can take over 90 s to go; a growing one is told by freshness.
    drain_s: float
    latency_s: float  # G2 / G3: seconds of events measured
    replay_rows: int  # G4: bronze rows silver is rebuilt from
    ceiling_messages: int  # raw Kafka produce / consume
    start_rate: float  # G1: first rate tried
    max_steps: int  # G1: rates tried at most (ramp and one bisection)
    soak_s: float = 1800.0  # soak: seconds at the G1 rate with every job
    soak_sensors: int = SOAK_SENSORS
    freshness_s: float = 300.0  # freshness at start_all's rate: seconds sampled
    compare_rate: float = 2_000.0  # live, ours vs textbook: events/s of the shared topic
    compare_s: float = 300.0  # live, ours vs textbook: seconds sampled
    # alert latency: seconds of the paced anomaly scenario (its spike, jump and outlier end
    # by 10 min, the humidity surge by 15, the silence by 18; scored ALERT_GRACE_S later)
    alerts_s: float = 1260.0

    @classmethod
    def of(cls, quick: bool) -> Plan:
        if quick:
            return cls(
                *("quick", 60, 20, 240, 60, 500_000, 300_000, 1_000, 6),
                soak_s=300.0,
                freshness_s=60.0,
                compare_rate=500.0,
                compare_s=60.0,
                alerts_s=780.0,
            )
        return cls("full", 300, 60, 300, 180, 2_000_000, 1_000_000, 1_000, 8)


def next_rate(passed: Sequence[float], failed: Sequence[float], target: float) -> float | None:
    """The next G1 rate to try: double the best passing rate up to the target, then bisect
    between the best pass and the lowest fail (to within 15 %); halve below a first failure.
    None when the answer is known well enough."""
    best = max(passed, default=None)
    worst = min((f for f in failed if best is None or f > best), default=None)
    if best is None:
        lowest = min(failed)
        return lowest / 2 if lowest > 125 else None
    if worst is None:
        return None if best >= target else min(best * 2, target)
    if worst / best <= 1.15:
        return None
    return round(math.sqrt(best * worst), -1)


def slope_per_s(points: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) points; 0 with fewer than two distinct times."""
    if len(points) < 2:
        return 0.0
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    if var == 0:
        return 0.0
    return sum((t - mean_t) * (v - mean_v) for t, v in points) / var


@dataclass(frozen=True)
class LagVerdict:
    """Whether one query kept up over a window, and the figures that say so."""

    job: str
    query: str
    kind: str  # "kafka offsets" or "delta versions"
    batches: int
    first: float | None
    last: float | None
    growth: float  # fitted change of the lag over the window
    allowed: float
    flat: bool
    why: str


def short_of_batches(
    rows: Iterable[dict[str, Any]],
    start: datetime,
    end: datetime,
    jobs: Iterable[str],
    ignored: Iterable[tuple[str, str]] = (),
) -> list[str]:
    """The queries (``job/query``) with fewer than ``MIN_BATCHES`` batches in [start, end],
    and the jobs with none at all: a window must be longer before their lag can be judged (a
    gold batch can take 30 s, so a 1-minute window may hold just one)."""
    rows = list(rows)
    queries = sorted({(r["job"], r["query"]) for r in rows} - set(ignored))
    verdicts = lag_verdicts(rows, start, end, 0.0, 1.0, queries)  # only their batch counts
    short = [f"{v.job}/{v.query}" for v in verdicts if v.batches < MIN_BATCHES]
    seen = {job for job, _ in queries}
    return short + [job for job in jobs if job not in seen]


def lag_verdicts(
    rows: Iterable[dict[str, Any]],
    start: datetime,
    end: datetime,
    rate: float,
    trigger_s: float,
    queries: Iterable[tuple[str, str]],
) -> list[LagVerdict]:
    """Judge each expected (job, query) from its stream-metrics rows with a batch in
    [start, end]: flat when it ran at least ``MIN_BATCHES`` batches and its lag (Kafka offsets
    for bronze, Delta versions behind for the rest) grew by no more than allowed over the
    window."""
    window = (end - start).total_seconds()
    series: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        batch_time = row.get("batch_time")
        if batch_time is not None and start <= batch_time <= end:
            series.setdefault((row["job"], row["query"]), []).append(row)
    verdicts = []
    for job, query in queries:
        batch_rows = sorted(series.get((job, query), []), key=lambda r: r["batch_time"])
        kafka = job == "bronze"
        column = "kafka_lag_max" if kafka else "delta_versions_behind"
        points = [
            ((r["batch_time"] - start).total_seconds(), float(r[column]))
            for r in batch_rows
            if r.get(column) is not None
        ]
        allowed = rate * max(trigger_s, 1.0) * KAFKA_LAG_BATCHES if kafka else VERSION_LAG_GROWTH
        growth = slope_per_s(points) * window
        if len(batch_rows) < MIN_BATCHES:
            flat, why = False, f"{len(batch_rows)} batch(es) in {window:.0f} s: stalled"
        elif len(points) < 2:
            flat, why = False, f"no {column} recorded"
        else:
            flat = growth <= allowed
            why = f"lag grew {growth:,.0f} (allowed {allowed:,.0f})"
        verdicts.append(
            LagVerdict(
                job,
                query,
                "kafka offsets" if kafka else "delta versions",
                len(batch_rows),
                points[0][1] if points else None,
                points[-1][1] if points else None,
                growth,
                allowed,
                flat,
                why,
            )
        )
    return verdicts


@dataclass(frozen=True)
class FreshnessVerdict:
    """Whether a table's newest event time kept pace with the clock over a window."""

    table: str
    trail: list[tuple[float, float]]  # at each commit: (s into the window, s behind the clock)
    growth: float  # fitted change of the trail from the first commit to the last, seconds
    allowed: float  # the longest gap between two commits, seconds
    flat: bool
    why: str

    @property
    def commits(self) -> int:
        """Polls in the window that showed a newer event time than any poll before."""
        return len(self.trail)

    @property
    def first(self) -> float | None:
        """Seconds the newest event time trailed the clock at the first commit."""
        return self.trail[0][1] if self.trail else None

    @property
    def last(self) -> float | None:
        return self.trail[-1][1] if self.trail else None


def trail(
    polls: Sequence[tuple[float, float | None]], since: float, start: float, end: float
) -> list[tuple[float, float]]:
    """(seconds after ``start``, seconds the newest event time trails the clock) at each commit
    seen in [start, end]: a poll of (wall time, newest event time) showing a newer event time
    than any poll before it. Event times before ``since`` (the rate change) belong to the step
    before and are not counted."""
    points: list[tuple[float, float]] = []
    newest_so_far: float | None = None
    for wall, newest in polls:
        if newest is None:
            continue
        newer = newest_so_far is not None and newest > newest_so_far
        if newer and newest >= since and start <= wall <= end:
            points.append((wall - start, wall - newest))
        newest_so_far = newest if newest_so_far is None else max(newest_so_far, newest)
    return points


def freshness_verdict(
    table: str,
    polls: Sequence[tuple[float, float | None]],
    since: float,
    start: float,
    end: float,
) -> FreshnessVerdict:
    """Judge a table by how far its newest event time trails the clock at each commit in the
    window (``trail``). A table that keeps the rate trails by about the same at each commit;
    one that falls behind trails further each time, even when its batches grow so that its
    Delta version lag stays flat. The trail is flat when its fitted growth from the first commit
    to the last is at most the longest gap between two commits (batch times vary by about that
    much). It needs ``FRESH_COMMITS`` commits: between two commits the trail can rise by at
    most the gap, so two always pass."""
    points = trail(polls, since, start, end)
    gaps = [b[0] - a[0] for a, b in pairwise(points)]
    allowed = max(gaps, default=0.0)
    growth = slope_per_s(points) * (points[-1][0] - points[0][0]) if points else 0.0
    if len(points) < FRESH_COMMITS:
        flat = False
        why = f"{len(points)} newer event time(s) seen in {end - start:.0f} s: too slow to judge"
    else:
        flat = growth <= allowed
        why = (
            f"trailed the clock by {points[0][1]:.0f} s, then {points[-1][1]:.0f} s"
            f" (grew {growth:.0f} s over {len(points)} commits, allowed {allowed:.0f})"
        )
    rounded = [(round(t, 1), round(v, 1)) for t, v in points]
    return FreshnessVerdict(table, rounded, round(growth, 1), round(allowed, 1), flat, why)


def visibility_latencies(
    polls: Sequence[tuple[float, float]], events: Iterable[float]
) -> tuple[list[float], int]:
    """Latency of each event time: the first poll (wall time, newest visible event time) that
    shows it, minus the event time. Returns (sorted latencies, events never seen)."""
    newest: list[float] = []
    for _, seen in polls:  # a table only grows: keep the running maximum
        newest.append(max(seen, newest[-1]) if newest else seen)
    latencies, unseen = [], 0
    for event in events:
        first = bisect_left(newest, event)
        if first < len(polls):
            latencies.append(max(0.0, polls[first][0] - event))
        else:
            unseen += 1
    return sorted(latencies), unseen


def stage_seconds(log_lines: Iterable[str], prefix: str = "silver batch") -> dict[str, float]:
    """Seconds per step summed over a job's batches, from its JSON log lines whose message
    starts with ``prefix`` (context keys ending in ``_s``, e.g. silver's ``judge_s``)."""
    totals: dict[str, float] = {}
    for line in log_lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict) or not str(record.get("message", "")).startswith(prefix):
            continue
        for key, value in (record.get("context") or {}).items():
            if key.endswith("_s") and isinstance(value, int | float):
                totals[key.removesuffix("_s")] = totals.get(key.removesuffix("_s"), 0.0) + value
    return totals


def shares(seconds: dict[str, float]) -> str:
    """``judge 41 %, lookup_silver 30 %, …`` (largest first) of a step -> seconds map."""
    total = sum(seconds.values())
    if total <= 0:
        return ""
    ranked = sorted(seconds.items(), key=lambda kv: -kv[1])
    return ", ".join(f"{name} {100 * s / total:.0f} %" for name, s in ranked)


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """The q-quantile (nearest rank) of sorted values; None if there are none."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[rank - 1]


def ratio(
    ours: float | None, textbook: float | None, higher_is_better: bool = True
) -> float | None:
    """How many times better ours is than the textbook job's (None if either is missing or
    zero)."""
    if not ours or not textbook:
        return None
    return ours / textbook if higher_is_better else textbook / ours


@dataclass
class Figure:
    """One line of the report: this project's figure and, where the bench measured it beside
    ours, the textbook job's."""

    name: str
    unit: str
    ours: float | None
    textbook: float | None = None
    target: str = ""
    met: bool | None = None
    detail: str = ""
    higher_is_better: bool = True

    @property
    def ratio(self) -> float | None:
        return ratio(self.ours, self.textbook, self.higher_is_better)


# --- ours against the textbook job ---------------------------------------------------------


def backlog_rate(events: int | None, spans_s: Sequence[float | None]) -> float | None:
    """Events/s through stages run one after the other on the same ``events`` (bronze, then
    silver): the events over the sum of the stages' processing spans. None if a span is
    missing or the sum is not positive."""
    if not events or not spans_s or any(s is None for s in spans_s):
        return None
    total = sum(s for s in spans_s if s is not None)
    return events / total if total > 0 else None


def progress_rows(log_lines: Iterable[str], message: str, job: str) -> list[dict[str, Any]]:
    """The micro-batches a job logged as JSON lines with ``message`` (context ``batch_time``
    ISO, ``input_rows``, ``batch_duration_ms``), as rows of the stream-metrics shape
    (``job``, ``batch_time`` a datetime, ``input_rows``, ``batch_duration_ms``)."""
    rows = []
    for line in log_lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict) or record.get("message") != message:
            continue
        context = record.get("context") or {}
        try:
            batch_time = datetime.fromisoformat(str(context["batch_time"]))
            rows.append(
                {
                    "job": job,
                    "batch_time": batch_time,
                    "input_rows": int(context["input_rows"]),
                    "batch_duration_ms": int(context["batch_duration_ms"]),
                }
            )
        except (KeyError, TypeError, ValueError):
            continue
    return rows


def newest_not_after(values: Iterable[float | None], limit: float) -> float | None:
    """The largest value not after ``limit`` (None if there is none): the newest plausible
    event time, where a reading stamped years ahead must not count as fresh."""
    return max((v for v in values if v is not None and v <= limit), default=None)


def caught_up(consumed: dict[int, int], ends: dict[int, int] | None) -> bool:
    """Whether a Kafka consumer's committed offsets reached every partition's end offset."""
    return ends is not None and all(consumed.get(p, 0) >= end for p, end in ends.items())


def side_by_side_fits(available_bytes: int, need_bytes: int = TEXTBOOK_MEMORY_NEED) -> bool:
    """Whether the textbook job can run beside our pipeline (else they take turns)."""
    return available_bytes >= need_bytes


def at_least(value: float | None, target: float) -> bool | None:
    """Met when ``value`` reaches ``target``; None (not judged) when there is no value."""
    return None if value is None else value >= target


def freshness_ratio(ours_p95: float | None, textbook_p95: float | None) -> float | None:
    """ours p95 / textbook p95 of how far silver trails the clock (lower is better); None if
    either is missing. A textbook p95 of 0 or less (nothing to beat) gives infinity unless ours
    is as good."""
    if ours_p95 is None or textbook_p95 is None:
        return None
    if textbook_p95 <= 0:
        return 0.0 if ours_p95 <= textbook_p95 else math.inf
    return ours_p95 / textbook_p95


def backlog_figure(
    ours: float | None, textbook: float | None, ran_textbook: bool, detail: str
) -> Figure:
    """The backlog row: Kafka -> silver events/s, ours against the textbook job. Not met when
    ours failed; not judged when the textbook job was not run; else met at
    ``BACKLOG_RATIO_TARGET``."""
    figure = Figure(
        "Backlog Kafka -> silver, ours (bronze + silver) vs textbook (one hop)",
        "ev/s",
        ours,
        textbook,
        f">= {BACKLOG_RATIO_TARGET:.1f}x textbook",
        detail=detail,
    )
    if ours is None:
        figure.met = False
    elif ran_textbook:
        figure.met = at_least(figure.ratio, BACKLOG_RATIO_TARGET) or False
    return figure


def freshness_figures(comparison: dict[str, Any]) -> list[Figure]:
    """The live rows, ours against the textbook job on one topic: p50 and p95 of how far each
    silver's newest event time trails the clock (``comparison``: ``ours`` / ``textbook`` trail
    summaries, ``rate``, ``seconds``, ``mode``). The p95 row is met when ours / textbook
    <= ``FRESHNESS_RATIO_TARGET``; not met when either was not measured."""
    ours, textbook = comparison.get("ours") or {}, comparison.get("textbook") or {}
    rate, mode = comparison.get("rate", 0.0), comparison.get("mode", "")
    figures = []
    for q in ("p50", "p95"):
        name = f"Live freshness of silver {q} at {rate:,.0f} ev/s, ours vs textbook"
        figure = Figure(name, "s", ours.get(q), textbook.get(q), higher_is_better=False)
        if q == "p95":
            share = freshness_ratio(ours.get(q), textbook.get(q))
            figure.target = f"ours <= {FRESHNESS_RATIO_TARGET:.1f}x textbook"
            figure.met = share is not None and share <= FRESHNESS_RATIO_TARGET
            figure.detail = comparison.get("error") or (
                f"{mode}; clock - newest event time of each silver, every second for "
                f"{comparison.get('seconds', 0):.0f} s"
                + ("" if share is None else f"; ours / textbook {share:.2f}")
            )
        figures.append(figure)
    return figures


def alert_latency_figures(scores: Sequence[dict[str, Any]], seconds: float) -> list[Figure]:
    """The alert rows: detection latency p50 and p95 over every detected anomaly of every type
    (``evaluate-alerts`` scores as dicts, with ``latencies_s``), and recall, each type in the
    detail. The p95 is not met when nothing was detected."""
    latencies = sorted(x for s in scores for x in s.get("latencies_s", ()))
    anomalies = sum(s["anomalies"] for s in scores)
    detected = sum(s["detected"] for s in scores)
    per_type = "; ".join(
        f"{s['alert_type']} {s['detected']}/{s['anomalies']}"
        + (f" {', '.join(f'{x:.1f}' for x in s['latencies_s'])} s" if s["latencies_s"] else "")
        for s in scores
        if s["anomalies"]
    )
    p95 = percentile(latencies, 0.95)
    return [
        Figure(
            f"Alert detection latency p50, live at start_all's {START_ALL_RATE:,.0f} ev/s",
            "s",
            percentile(latencies, 0.50),
            higher_is_better=False,
        ),
        Figure(
            f"Alert detection latency p95, live at start_all's {START_ALL_RATE:,.0f} ev/s",
            "s",
            p95,
            target=f"<= {ALERT_LATENCY_P95_TARGET:.0f}",
            met=p95 is not None and p95 <= ALERT_LATENCY_P95_TARGET,
            detail=f"the anomaly scenario paced for {seconds / 60:.0f} min; detected/observable "
            f"and each detection's seconds: {per_type or 'no anomaly observable'}",
            higher_is_better=False,
        ),
        Figure(
            "Alert recall, live (injected anomalies detected)",
            "",
            detected / anomalies if anomalies else None,
            detail=f"{detected} of {anomalies}",
        ),
    ]


@dataclass
class BenchReport:
    """Everything one ``bench`` run measured, printed as a table and saved as JSON."""

    plan: Plan
    started_at: str
    machine: dict[str, Any]
    figures: list[Figure] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def add(self, figure: Figure) -> Figure:
        self.figures.append(figure)
        return figure

    def to_json(self) -> str:
        figures = [{**asdict(f), "ratio": f.ratio} for f in self.figures]
        body = {
            "plan": asdict(self.plan),
            "started_at": self.started_at,
            "machine": self.machine,
            "figures": figures,
            "details": self.details,
        }
        return json.dumps(body, indent=2, default=str)

    def save(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        stamp = self.started_at.replace(":", "").replace("-", "")[:15]
        path = folder / f"{stamp}.json"
        path.write_text(self.to_json() + "\n")
        return path


def machine_description() -> dict[str, Any]:
    """Cores, memory, OS and Python of this machine (for the report's header)."""
    import os

    import psutil

    return {
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 1024**3, 1),
        "os": platform.platform(terse=True),
        "python": platform.python_version(),
    }


def show(value: float | None, unit: str) -> str:
    """A figure as the table prints it: thousands separators, seconds with one decimal."""
    if value is None:
        return "-"
    if unit == "GiB":
        return f"{value:.2f}"
    if unit == "s":
        return f"{value:.1f}"
    if unit == "x":
        return f"{value:.2f}x"
    return f"{value:,.0f}"


def format_table(report: BenchReport) -> str:
    """The report as a fixed-width table (also valid Markdown)."""
    head = ("measure", "unit", "ours", "textbook", "ratio", "target", "met", "detail")
    rows = [
        (
            f.name,
            f.unit,
            show(f.ours, f.unit),
            show(f.textbook, f.unit),
            show(f.ratio, "x"),
            f.target,
            {True: "yes", False: "NO", None: "-"}[f.met],
            f.detail,
        )
        for f in report.figures
    ]
    widths = [max(len(r[i]) for r in (head, *rows)) for i in range(len(head) - 1)]

    def line(cells: Sequence[str]) -> str:
        padded = [c.ljust(w) for c, w in zip(cells, widths, strict=False)]
        return "| " + " | ".join([*padded, cells[-1]]) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|---|"
    m = report.machine
    title = (
        f"iot-lakehouse bench ({report.plan.name}), {report.started_at}, "
        f"{m.get('cores')} cores, {m.get('memory_gib')} GiB, {m.get('os')}"
    )
    return "\n".join([title, "", line(head), rule, *(line(r) for r in rows)])
