"""What the JVM settings do to the pipeline's memory and pace, side by side in one run.

    uv run python bench/bench_memory.py [--variants serial,g1] [--rounds 2] [--minutes 5]
                                        [--rate 1000] [--variant NAME:KEY=VALUE,…] [--keep]

Starts one private broker (free ports), then for each variant in turn (the variants
alternating, ``--rounds`` times) the whole tuned pipeline as ``start_all`` starts it (the
generator at ``--rate`` events/s, bronze, then silver, gold and alerts), runs it for
``--minutes`` after every job committed its first batch, and stops it. Per variant and round
it prints the peak RSS of each process with its descendants and of all together, the peak PSS
of all together (the bench's ``ResourceSampler``), the seconds to every job's first batch,
the batches each job ran in the window and their mean duration, how far silver's and gold's
newest event time trailed the clock (mean, p50 and p95 of a reading every second), the rows/s silver
processed, and the CPU seconds
each job used (and all jobs together, for ``one_driver``, whose four jobs share one process):
a variant that saves memory by working slower shows here.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from datetime import timedelta
from pathlib import Path
from statistics import mean
from typing import Any

from iot_lakehouse.benchmarks.bench_runs import (
    JOB_NAMES,
    Pipeline,
    ResourceSampler,
    bench_env,
    cold_start,
    processing_rate,
    sample_trails,
    trail_summary,
    utc_now,
)
from iot_lakehouse.runtime.kafka_broker import LocalKafkaBroker
from iot_lakehouse.settings import Settings

GIB = 1024**3
VARIANTS = {
    # Each collector named, not inherited: a SPARK_DRIVER_GC in the caller's environment
    # would otherwise relabel the default (Serial).
    "serial": {"SPARK_DRIVER_GC": "Serial"},
    "g1": {"SPARK_DRIVER_GC": "G1"},
    "parallel": {"SPARK_DRIVER_GC": "Parallel"},
    "heap768": {"SPARK_DRIVER_MEMORY": "768m"},
    # glibc's malloc keeps up to 8 arenas per core; the JVM's native memory (threads, RocksDB,
    # compiler) spreads over them
    "arena2": {"MALLOC_ARENA_MAX": "2"},
    # the four jobs in one driver (one JVM and one Python process, the default) or a process
    # (and JVM) each
    "one_driver": {"SPARK_DRIVER_GC": "Serial", "JOBS_IN_ONE_DRIVER": "true"},
    "one_driver_fifo": {
        "SPARK_DRIVER_GC": "Serial",
        "JOBS_IN_ONE_DRIVER": "true",
        "ONE_DRIVER_SCHEDULER": "FIFO",
    },
    "separate": {"SPARK_DRIVER_GC": "Serial", "JOBS_IN_ONE_DRIVER": "false"},
    # one shuffle (and Delta snapshot) partition: half the tasks, each generating its code
    "one_partition": {"SPARK_DRIVER_GC": "Serial", "SPARK_SHUFFLE_PARTITIONS": "1"},
}


def run_variant(
    name: str, env: dict[str, str], workdir: Path, rate: float, minutes: float
) -> dict[str, object]:
    """One pipeline of variant ``name`` for ``minutes`` after its cold start; its figures."""
    sampler = ResourceSampler()
    broker_pid = LocalKafkaBroker(Settings.from_env(env)).status().pid
    if broker_pid:
        sampler.watch("broker", broker_pid)
    sampler.start()
    pipe = Pipeline("tuned", workdir / name, env, sampler, f"bench-memory-{name}")
    LocalKafkaBroker(pipe.settings).create_topics()
    try:
        firsts = cold_start(pipe, rate)
        window_start = utc_now()
        cpu_before = sampler.cpu_seconds()
        trails = sample_trails(pipe, minutes * 60)
        cpu_after = sampler.cpu_seconds()
        if pipe.exited():
            raise RuntimeError(f"{name}: {pipe.exited()} exited; see {pipe.settings.logs_dir}")
    finally:
        pipe.stop()
        sampler.stop()
    rows = [
        r
        for r in pipe.metrics(window_start - timedelta(seconds=1))
        if r.get("batch_time") is not None and r["batch_time"] >= window_start
    ]
    silver_rate, _ = processing_rate(rows, "silver")
    cpu = {
        k.removeprefix("tuned-"): round(cpu_after.get(k, 0.0) - cpu_before.get(k, 0.0), 1)
        for k in cpu_after
    }
    return {
        "first_batch_s": {job: firsts.get(job) for job in JOB_NAMES},
        "peak_rss": {k: v / GIB for k, v in sorted(sampler.peak.items())},
        "peak_rss_total": sampler.peak_total / GIB,
        "peak_pss_total": sampler.peak_total_pss / GIB,
        "batches": {job: sum(1 for r in rows if r["job"] == job) for job in JOB_NAMES},
        "batch_s": {job: mean_batch_seconds(rows, job) for job in JOB_NAMES},
        "trail_s": {table: mean(t) if t else None for table, t in trails.items()},
        "trail_s_summary": {table: trail_summary(t) for table, t in trails.items()},
        "silver_rows_per_s": silver_rate,
        "cpu_s": cpu,
        # what the jobs used together, however many processes they ran in
        "cpu_s_jobs": round(sum(v for k, v in cpu.items() if k not in ("broker", "generator")), 1),
    }


def mean_batch_seconds(rows: list[dict[str, Any]], job: str) -> float | None:
    """Mean duration of ``job``'s batches (every query of it) in the window, seconds."""
    durations = [r["batch_duration_ms"] / 1000 for r in rows if r["job"] == job]
    return round(mean(durations), 1) if durations else None


def show(name: str, result: dict[str, object]) -> str:
    rss = result["peak_rss"]
    assert isinstance(rss, dict)
    per = " ".join(f"{k.removeprefix('tuned-')} {v:.2f}" for k, v in rss.items())
    rate = result["silver_rows_per_s"]
    trails, summary = result["trail_s"], result["trail_s_summary"]
    assert isinstance(trails, dict) and isinstance(summary, dict)
    return (
        f"{name:<9} total RSS {result['peak_rss_total']:.2f} GiB, PSS "
        f"{result['peak_pss_total']:.2f} | {per} | first batches {result['first_batch_s']} | "
        f"batches {result['batches']} | mean batch s {result['batch_s']} | mean trail s "
        f"{ {k: round(v, 1) if v is not None else None for k, v in trails.items()} } | "
        f"trail p50/p95 s { {k: (v['p50'], v['p95']) for k, v in summary.items()} } | "
        f"silver {rate or 0:,.0f} rows/s | CPU s {result['cpu_s']} "
        f"(jobs {result['cpu_s_jobs']})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variants", default="serial,g1")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME:KEY=VALUE,…",
        help="a variant of your own, e.g. 'old:PYTHONPATH=/tmp/old/src' (another checkout's "
        "code) or 'p1:SPARK_SHUFFLE_PARTITIONS=1'; add its NAME to --variants",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the working folder (each variant's lakehouse and job logs) and print it",
    )
    args = parser.parse_args()
    for spec in args.variant:
        name, _, pairs = spec.partition(":")
        VARIANTS[name] = dict(pair.split("=", 1) for pair in pairs.split(",") if "=" in pair)
    chosen = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in chosen if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    workdir = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    env = bench_env(workdir)
    broker = LocalKafkaBroker(Settings.from_env(env))
    results: list[tuple[str, dict[str, object]]] = []
    try:
        broker.start()
        for round_ in range(args.rounds):
            for name in chosen:
                label = f"{name}-{round_ + 1}"
                result = run_variant(
                    label, {**env, **VARIANTS[name]}, workdir, args.rate, args.minutes
                )
                results.append((label, result))
                print(show(label, result), flush=True)
    finally:
        broker.stop()
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print("\nsummary (peak RSS of all processes together, GiB)")
    for label, result in results:
        print(show(label, result))


if __name__ == "__main__":
    main()
