"""bench: the rate search, lag flatness, visibility latency, percentiles and the report; the
raw Kafka ceilings against the real test broker. The whole ``bench`` command runs for half an
hour and more, so it is run by hand (docs/measured.md), not here."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil
import pytest

from iot_lakehouse.bench import (
    BenchReport,
    Figure,
    Plan,
    format_table,
    freshness_verdict,
    lag_verdicts,
    next_rate,
    percentile,
    shares,
    short_of_batches,
    slope_per_s,
    stage_seconds,
    visibility_latencies,
)
from iot_lakehouse.bench_runs import (
    ProcessFacts,
    ResourceSampler,
    add_live_figures,
    is_spawn_in_progress,
    kafka_ceilings,
    processing_rate,
)
from iot_lakehouse.settings import Settings
from iot_lakehouse.spark_session import tuning

T0 = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def test_the_rate_search_doubles_then_bisects_then_stops() -> None:
    assert next_rate([1_000], [], 50_000) == 2_000
    assert next_rate([1_000, 2_000, 4_000], [], 50_000) == 8_000
    assert next_rate([32_000], [], 50_000) == 50_000  # never beyond the target
    assert next_rate([50_000], [], 50_000) is None  # target reached: done
    assert next_rate([1_000, 2_000], [4_000], 50_000) == 2_830  # geometric middle
    assert next_rate([1_000, 2_000, 2_830], [4_000, 3_370], 50_000) == 3_090
    assert next_rate([1_000, 2_000, 2_830], [4_000, 3_200], 50_000) is None  # within 15 %
    assert next_rate([], [1_000], 50_000) == 500  # the first rate failed: go lower
    assert next_rate([], [1_000, 500, 250, 125], 50_000) is None


def test_slope_is_the_least_squares_fit() -> None:
    assert slope_per_s([(0, 0), (10, 20), (20, 40)]) == pytest.approx(2.0)
    assert slope_per_s([(0, 5), (10, 5)]) == 0
    assert slope_per_s([(0, 5)]) == 0


def metrics_rows(job: str, query: str, lags: list[float], every_s: float = 5) -> list[dict]:
    column = "kafka_lag_max" if job == "bronze" else "delta_versions_behind"
    return [
        {"job": job, "query": query, "batch_time": T0 + timedelta(seconds=i * every_s), column: v}
        for i, v in enumerate(lags)
    ]


def test_a_flat_lag_passes_and_a_growing_or_stalled_one_fails() -> None:
    rows = [
        *metrics_rows("bronze", "bronze", [900, 1100, 1000, 950, 1050, 1000, 980]),
        *metrics_rows("silver", "silver", [1, 2, 4, 6, 8, 10, 12]),  # falls behind
        *metrics_rows("gold", "gold", [0]),  # one batch in the window: stalled
        *metrics_rows("alerts", "alerts_static", [0, 1, 0, 1, 0, 1, 0]),
    ]
    queries = [("bronze", "bronze"), ("silver", "silver"), ("gold", "gold"), ("alerts", "x")]
    queries.insert(3, ("alerts", "alerts_static"))
    end = T0 + timedelta(seconds=30)
    verdicts = {(v.job, v.query): v for v in lag_verdicts(rows, T0, end, 1_000, 5.0, queries)}
    assert verdicts[("bronze", "bronze")].flat  # noise within two batches of input
    assert verdicts[("bronze", "bronze")].allowed == 10_000
    assert not verdicts[("silver", "silver")].flat
    assert verdicts[("silver", "silver")].growth == pytest.approx(11.36, abs=0.01)  # fit * 30 s
    assert not verdicts[("gold", "gold")].flat
    assert "stalled" in verdicts[("gold", "gold")].why
    assert verdicts[("alerts", "alerts_static")].flat
    assert not verdicts[("alerts", "x")].flat  # expected but never seen
    # Batches outside the window do not count.
    after = end + timedelta(seconds=1)
    late = lag_verdicts(rows, after, after + timedelta(minutes=1), 1_000, 5.0, queries[:1])
    assert late[0].batches == 0 and not late[0].flat


def test_a_window_is_short_while_a_query_has_fewer_than_two_batches_or_a_job_none() -> None:
    rows = [
        *metrics_rows("bronze", "bronze", [0, 0, 0, 0]),
        *metrics_rows("gold", "gold", [0, 0], every_s=40),  # batches at 0 s and 40 s
        *metrics_rows("alerts", "alerts_counts", [0]),  # event-driven: ignored
    ]
    ignored = [("alerts", "alerts_counts")]
    jobs = ["bronze", "gold", "alerts"]
    at = T0 + timedelta(seconds=30)
    assert short_of_batches(rows, T0, at, jobs, ignored) == ["gold/gold", "alerts"]
    at = T0 + timedelta(seconds=45)  # gold's second batch is in
    assert short_of_batches(rows, T0, at, jobs, ignored) == ["alerts"]
    assert short_of_batches(rows, T0, at, ["bronze", "gold"], ignored) == []
    # Batches before the window do not count.
    later = T0 + timedelta(seconds=10)
    assert short_of_batches(rows, later, at, ["bronze", "gold"], ignored) == ["gold/gold"]


def table_polls(
    pace: float, every_s: float, delay_s: float, until: float, poll_s: float = 2.0
) -> list[tuple[float, float | None]]:
    """Polls of a table committing every ``every_s`` seconds from 0: each commit holds the
    events up to ``delay_s`` before it, at ``pace`` seconds of event time per second (1 keeps
    up, below 1 falls behind). Event times are seconds after 1000, the rate change."""
    polls: list[tuple[float, float | None]] = []
    for i in range(int(until / poll_s) + 1):
        wall = i * poll_s
        commit = (wall // every_s) * every_s
        newest = 1000 + max(0.0, commit - delay_s) * pace if commit > 0 else None
        polls.append((1000 + wall, newest))
    return polls


def test_a_table_keeping_pace_with_the_clock_is_flat_whatever_the_phase_of_its_batches() -> None:
    polls = table_polls(pace=1.0, every_s=25, delay_s=10, until=300)
    for offset in (0, 7, 13, 20):  # windows starting anywhere in a batch's cycle
        start = 1000 + 40 + offset
        verdict = freshness_verdict("silver", polls, 1000, start, start + 120)
        assert verdict.flat, verdict.why
        assert verdict.commits in (4, 5)
        assert verdict.allowed == pytest.approx(26, abs=1)  # a commit seen at the next poll
        assert abs(verdict.growth) < 5


def test_a_table_falling_behind_fails_even_with_batches_at_a_steady_pace() -> None:
    # Every 25 s a batch lands, but each carries only 60 % of the time that went by: the
    # version lag is flat (one commit per batch), the trail grows 0.4 s per second.
    polls = table_polls(pace=0.6, every_s=25, delay_s=10, until=300)
    verdict = freshness_verdict("gold", polls, 1000, 1040, 1160)
    assert not verdict.flat
    assert verdict.commits == 5 and len(verdict.trail) == 5
    assert verdict.growth == pytest.approx(0.4 * 100, abs=3)  # from the first commit to the last
    assert verdict.last is not None and verdict.first is not None
    assert verdict.last - verdict.first == pytest.approx(0.4 * 100, abs=3)  # 4 gaps of 25 s
    assert "grew" in verdict.why
    # Over two gaps it has not yet trailed further than one gap: too short a window to tell.
    assert freshness_verdict("gold", polls, 1000, 1040, 1110).flat


def test_a_table_without_three_newer_event_times_of_this_step_cannot_pass() -> None:
    idle = [(1000.0 + t, 990.0) for t in range(0, 120, 2)]  # the last step's newest, no more
    verdict = freshness_verdict("gold", idle, 1000, 1020, 1120)
    assert not verdict.flat and verdict.commits == 0 and "too slow to judge" in verdict.why
    # Newer event times that are still the step before's (before the rate change) do not
    # count either, nor do polls that show nothing at all.
    creeping = [(1000.0 + t, 900.0 + t / 10) for t in range(0, 120, 2)] + [(1130.0, None)]
    assert freshness_verdict("gold", creeping, 1000, 1020, 1140).commits == 0
    # One commit is not a trend, nor are two (the trail cannot rise by more than their gap).
    once = [*idle, (1122.0, 1100.0)]
    assert freshness_verdict("gold", once, 1000, 1020, 1130).commits == 1
    assert not freshness_verdict("gold", once, 1000, 1020, 1130).flat
    twice = [*once, (1180.0, 1101.0)]  # 79 s behind after 21: falling far behind
    assert freshness_verdict("gold", twice, 1000, 1020, 1190).commits == 2
    assert not freshness_verdict("gold", twice, 1000, 1020, 1190).flat


def test_an_event_is_visible_at_the_first_poll_that_shows_it() -> None:
    polls = [(100.0, 98.0), (100.5, 99.0), (101.0, 98.5), (101.5, 100.2)]
    latencies, unseen = visibility_latencies(polls, [98.0, 99.0, 99.5, 100.2, 100.3])
    # 98 -> poll at 100.0; 99 -> 100.5; 99.5 -> 101.5 (the dip at 101.0 is ignored); 100.2
    # -> 101.5; 100.3 never seen.
    assert latencies == pytest.approx([1.3, 1.5, 2.0, 2.0])
    assert unseen == 1


def test_percentile_is_the_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.50) == 50
    assert percentile(values, 0.95) == 95
    assert percentile(values, 0.99) == 99
    assert percentile([], 0.5) is None


def test_processing_rate_excludes_start_up_and_counts_every_batch() -> None:
    rows = [
        {"job": "silver", "batch_time": T0, "input_rows": 1000, "batch_duration_ms": 2000},
        {
            "job": "silver",
            "batch_time": T0 + timedelta(seconds=2),
            "input_rows": 3000,
            "batch_duration_ms": 2000,
        },
        {"job": "bronze", "batch_time": T0, "input_rows": 99, "batch_duration_ms": 1},
    ]
    assert processing_rate(rows, "silver") == (1000.0, 4000)
    assert processing_rate(rows, "gold") == (None, 0)


def test_the_report_prints_ratios_and_targets_and_saves_json(tmp_path: Path) -> None:
    report = BenchReport(Plan.of(quick=True), "2026-11-22T12:00:00", {"cores": 2})
    report.add(Figure("G1", "ev/s", 6_000, 1_500, ">= 50,000", False, "cpu bound"))
    report.add(Figure("G5", "s", 10.0, 20.0, "<= 15", True, higher_is_better=False))
    table = format_table(report)
    assert "| G1 " in table and "6,000" in table and "4.00x" in table and "NO" in table
    assert "2.00x" in table and "yes" in table  # lower is better: baseline / tuned
    saved = report.save(tmp_path)
    assert saved.name == "20261122T120000.json"
    body = json.loads(saved.read_text())
    assert body["plan"]["name"] == "quick"
    assert [f["ratio"] for f in body["figures"]] == [4.0, 2.0]


def test_freshness_at_start_all_rate_is_judged_by_its_p95() -> None:
    report = BenchReport(Plan.of(quick=True), "now", {})
    fresh = {
        "seconds": 60.0,
        "silver": {"p50": 3.0, "p95": 4.5, "max": 6.0, "samples": 60},
        "gold": {"p50": 9.0, "p95": 12.0, "max": 14.0, "samples": 60},
    }
    add_live_figures(report, {"tuned": {"freshness": fresh}})
    p95 = {f.name.split()[2]: f for f in report.figures if " p95 at start_all" in f.name}
    assert (p95["silver"].tuned, p95["silver"].met) == (4.5, True)  # target 5 s
    assert (p95["gold"].tuned, p95["gold"].met) == (12.0, False)  # target 10 s
    # not measured: shown as not met, not as a pass
    empty = BenchReport(Plan.of(quick=True), "now", {})
    add_live_figures(empty, {"tuned": {}})
    assert all(f.met is False for f in empty.figures if " p95 at start_all" in f.name)


def test_the_quick_plan_is_shorter_than_the_full_one() -> None:
    quick, full = Plan.of(quick=True), Plan.of(quick=False)
    assert full.sustain_s == 300 and quick.sustain_s == 60  # the issue: 5 min, --quick 1 min
    assert full.replay_rows >= 2_000_000
    assert quick.replay_rows < full.replay_rows


def test_the_baseline_has_spark_defaults_and_no_source_limits() -> None:
    tuned = Settings()
    naive = Settings.from_env({"SPARK_TUNING": "false"})
    assert tuning(tuned)["spark.sql.shuffle.partitions"] == "2"
    assert tuning(naive) == {}  # Spark's own: 200 shuffle partitions, …
    assert tuned.source_limits(maxOffsetsPerTrigger=200_000) == {"maxOffsetsPerTrigger": "200000"}
    assert naive.source_limits(maxOffsetsPerTrigger=200_000) == {}


def test_kafka_ceilings_on_the_real_broker(kafka_settings: Settings) -> None:
    produce, consume = kafka_ceilings(kafka_settings, 20_000)
    assert produce > 1_000 and consume > 1_000, (produce, consume)


def test_stage_seconds_sum_the_timings_of_a_jobs_batch_lines() -> None:
    lines = [
        '{"message": "silver batch", "context": {"batch_id": 0, "judge_s": 2.0, "lookup_s": 1}}',
        "not json at all",
        '{"message": "silver stream started", "context": {"judge_s": 99}}',
        '{"message": "silver batch", "context": {"batch_id": 1, "judge_s": 4.0, "lookup_s": 1}}',
    ]
    assert stage_seconds(lines) == {"judge": 6.0, "lookup": 2.0}
    assert shares({"judge": 6.0, "lookup": 2.0}) == "judge 75 %, lookup 25 %"
    assert shares({}) == ""


def test_stage_seconds_read_a_real_json_log_line(tmp_path: Path) -> None:
    import logging

    from iot_lakehouse.logs import configure_logging, kv

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        configure_logging("silver", "INFO", "json", tmp_path)
        logging.getLogger("iot_lakehouse.silver").info(
            "silver batch %s", kv(job="silver", batch_id=3, judge_s=1.5, delta_appends_s=0.5)
        )
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
            handler.close()
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)
    lines = (tmp_path / "silver.log").read_text().splitlines()
    assert stage_seconds(lines) == {"judge": 1.5, "delta_appends": 0.5}


def test_the_bench_command_runs_a_part_prints_the_table_and_saves_json(tmp_path: Path) -> None:
    # The real command with its own broker (free ports, temporary folder): the cheapest part.
    import os
    import subprocess
    import sys

    results = tmp_path / "results"
    done = subprocess.run(
        [sys.executable, "-m", "iot_lakehouse", "bench", "--quick", "--only", "ceilings"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "IOT_RUNTIME_DIR": str(tmp_path / "runtime")},
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| Kafka produce, raw (acks=all) | msg/s" in done.stdout, done.stdout
    saved = list((tmp_path / "bench" / "results").glob("*.json"))
    assert len(saved) == 1 and str(saved[0].relative_to(tmp_path)) in done.stdout
    figures = {f["name"]: f for f in json.loads(saved[0].read_text())["figures"]}
    assert figures["Kafka consume, raw"]["tuned"] > 1_000
    assert not results.exists()  # --results was not given: the default folder under cwd


def test_memory_of_forked_children_counts_shared_pages_once_in_pss() -> None:
    """A parent that touched 300 MiB forks two children sharing those pages: the RSS of the
    three adds them up three times, their PSS once."""
    code = (
        "import os, time\n"
        "block = bytearray(300 << 20)\n"
        "for _ in range(2):\n"
        "    if os.fork() == 0:\n"
        "        time.sleep(30); os._exit(0)\n"
        "print('ready', flush=True); time.sleep(30)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        time.sleep(0.5)
        rss, pss = ResourceSampler().memory(psutil.Process(proc.pid))
    finally:
        for child in psutil.Process(proc.pid).children():
            child.kill()
        proc.kill()
        proc.wait()
    mib = 1 << 20
    assert rss > 850 * mib, rss / mib  # three processes, each with the 300 MiB in its RSS
    assert 300 * mib < pss < 450 * mib, pss / mib  # the shared pages once


JAVA = "/usr/lib/jvm/java-17/bin/java"
JVM = ProcessFacts(ppid=1, name="java", exe=JAVA, vms=4_000_000_000)


@pytest.mark.parametrize(
    ("child", "parent", "spawning"),
    [
        # The JVM's spawn before it execs chmod: the JVM's binary and size, a thread's name.
        (ProcessFacts(10, "Executor task l", JAVA, JVM.vms), JVM, True),
        (ProcessFacts(10, "stream executio", JAVA, JVM.vms), JVM, True),
        (ProcessFacts(10, "java", JAVA, JVM.vms), JVM, True),
        # After the exec: its own process.
        (ProcessFacts(10, "chmod", "/usr/bin/chmod", 5_000_000), JVM, False),
        # A JVM started by a JVM (a cluster worker's executor): its own address space.
        (ProcessFacts(10, "java", JAVA, 3_000_000_000), JVM, False),
        # A Python worker forked from its daemon shares pages but is a process of its own.
        (
            ProcessFacts(11, "python", "/venv/bin/python", 900_000_000),
            ProcessFacts(10, "python", "/venv/bin/python", 900_000_000),
            False,
        ),
        # Unknown facts (a process gone, access denied): counted rather than hidden.
        (ProcessFacts(10, "Thread-4", None, None), JVM, False),
        (ProcessFacts(10, "Thread-4", JAVA, JVM.vms), None, False),
    ],
)
def test_a_jvm_spawn_on_its_way_to_exec_is_told_from_processes_of_their_own(
    child: ProcessFacts, parent: ProcessFacts | None, spawning: bool
) -> None:
    assert is_spawn_in_progress(child, parent) is spawning
