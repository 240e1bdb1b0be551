"""Ours against the textbook one-hop job alone, side by side in one run: the two rows of the
bench that compare with it, without the rest of its live part (G1, G2/G3 take half an hour).

    uv run python bench/bench_textbook.py [--rows 300000] [--rate 2000] [--seconds 180]
                                          [--start-all-seconds 0]

On one private broker (free ports), like ``iot-lakehouse bench``:
- **backlog**: ``--rows`` generated events in a topic; ours drains it with bronze then silver
  ``--available-now``, then the textbook job drains it from its earliest to its end offsets
  (Kafka -> silver events/s, batches' spans, start-up excluded);
- **live**: the four jobs and the generator as ``start_all`` starts them; once caught up,
  optionally the freshness at start_all's rate for ``--start-all-seconds``; then at ``--rate``
  the textbook job consumes the same topic beside ours (in turn if memory is short) and an
  outside reader polls each silver's newest event time every second for ``--seconds``.
Prints the bench's table and writes the JSON to ``bench/results/``.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

from iot_lakehouse.benchmarks import bench
from iot_lakehouse.benchmarks.bench_runs import (
    Pipeline,
    ResourceSampler,
    bench_env,
    cold_start,
    compare_freshness,
    drain,
    freshness,
    run_replays,
    utc_now,
)
from iot_lakehouse.runtime.kafka_broker import LocalKafkaBroker
from iot_lakehouse.settings import Settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=300_000, help="backlog events (0: skip)")
    parser.add_argument("--rate", type=float, default=2_000.0, help="live events/s (0: skip)")
    parser.add_argument("--seconds", type=float, default=180.0, help="live seconds sampled")
    parser.add_argument(
        "--start-all-seconds",
        type=float,
        default=0.0,
        help="also sample freshness at start_all's rate this long first (0: skip)",
    )
    parser.add_argument("--results", default="bench/results")
    args = parser.parse_args()
    plan = replace(
        bench.Plan.of(quick=True),
        replay_rows=args.rows,
        compare_rate=args.rate,
        compare_s=args.seconds,
    )
    report = bench.BenchReport(
        plan, utc_now().strftime("%Y-%m-%dT%H:%M:%S"), bench.machine_description()
    )
    workdir = Path(tempfile.mkdtemp(prefix="iot-bench-textbook-"))
    base_env = bench_env(workdir)
    broker = LocalKafkaBroker(Settings.from_env(base_env))
    sampler = ResourceSampler()
    sampler.start()
    pipes: list[Pipeline] = []
    try:
        broker.start()
        if args.rows:
            run_replays(report, plan, workdir, base_env, sampler, True, pipes)
        if args.rate:
            pipe = Pipeline("tuned", workdir / "live", base_env, sampler, "bench-textbook-live")
            pipes.append(pipe)
            LocalKafkaBroker(pipe.settings).create_topics()
            live: dict[str, object] = {"cold_start": cold_start(pipe, plan.start_rate)}
            live["caught_up_after_start"] = drain(pipe, 2 * plan.drain_s)
            if args.start_all_seconds:
                live["freshness"] = freshness(pipe, args.start_all_seconds)
            comparison = compare_freshness(pipe, plan, workdir / "live" / "textbook")
            report.details["live"] = {"ours": live, "textbook_comparison": comparison}
            for figure in bench.freshness_figures(comparison):
                report.add(figure)
    finally:
        for pipe in pipes:
            pipe.stop()
        broker.stop()
        sampler.stop()
        shutil.rmtree(workdir, ignore_errors=True)
        saved = report.save(Path(args.results))
    print(bench.format_table(report))
    print(f"saved {saved}")


if __name__ == "__main__":
    main()
