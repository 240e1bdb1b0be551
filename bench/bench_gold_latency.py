"""Benchmark: produce -> gold-visible latency of the whole pipeline, at a given event rate.

    uv run python bench/bench_gold_latency.py --rate 10000 --duration 240

Starts a private broker (free ports), the bronze, silver and gold jobs and the generator as
separate processes, exactly as ``start_all.sh`` does, with fresh tables in a temporary folder.
The generator paces events so that an event's time is the moment it is sent. An outside
reader (the ``deltalake`` package, no Spark) polls ``gold/sensor_metrics_5m`` every 0.5 s for
the newest ``last_event_time``; an event is visible in gold at the first poll that shows a
``last_event_time`` at or after it. Latency = that poll's time - the event time. Reported as
p50 / p95 / max over one event per second after a warm-up (JVM start, first batches).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import tempfile
import time
from bisect import bisect_left
from datetime import UTC, datetime
from pathlib import Path

from deltalake import DeltaTable
from deltalake.exceptions import TableNotFoundError

from iot_lakehouse.kafka_broker import LocalKafkaBroker
from iot_lakehouse.logs import configure_logging
from iot_lakehouse.settings import Settings
from iot_lakehouse.status import pipeline_counts
from iot_lakehouse.supervisor import spawn, stop_children


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def newest_gold_event(path: str) -> float | None:
    """Epoch seconds of the newest event time visible in gold, or None."""
    try:
        table = DeltaTable(path).to_pyarrow_table(columns=["last_event_time"])
    except (TableNotFoundError, OSError):
        return None
    if table.num_rows == 0:
        return None
    newest = max(v for v in table.column("last_event_time").to_pylist() if v is not None)
    return newest.replace(tzinfo=UTC).timestamp() if newest.tzinfo is None else newest.timestamp()


def percentile(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=float, default=10_000.0, help="events per second")
    parser.add_argument("--duration", type=float, default=240.0, help="seconds of producing")
    parser.add_argument("--warmup", type=float, default=90.0, help="seconds not measured")
    parser.add_argument("--sensors", type=int, default=1000)
    parser.add_argument("--trigger", default="1 second", help="TRIGGER_INTERVAL of the jobs")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-gold-latency-"))
    os.environ.update(
        {
            "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
            "KAFKA_CONTROLLER_PORT": str(free_port()),
            "IOT_RUNTIME_DIR": str(workdir / "runtime"),
            "IOT_JARS_DIR": str(Settings.from_env({}).jars_dir),
            "LAKEHOUSE_PATH": str(workdir / "lakehouse"),
            "DLQ_PATH": str(workdir / "dlq"),
            "TRIGGER_INTERVAL": args.trigger,
        }
    )
    settings = Settings.from_env()
    configure_logging("bench", "WARNING", "kv", settings.logs_dir)
    broker = LocalKafkaBroker(settings)
    broker.start()
    children = []
    polls: list[tuple[float, float]] = []  # (wall time, newest gold event time), both epoch s
    try:
        for job in ("bronze", "silver", "gold"):
            children.append(spawn(job, ["run", job], settings.logs_dir))
        started = time.time()
        generator = [
            "generate",
            *("--rate", str(args.rate), "--duration", str(args.duration)),
            *("--sensors", str(args.sensors), "--format", "mixed", "--seed", "7"),
        ]
        children.append(spawn("generator", generator, settings.logs_dir))
        gold = settings.gold_path("sensor_metrics_5m")
        deadline = started + args.duration + 60  # give the last events time to reach gold
        while time.time() < deadline:
            newest = newest_gold_event(gold)
            if newest is not None:
                polls.append((time.time(), newest))
            time.sleep(0.5)
        counts = pipeline_counts(settings)
    finally:
        stop_children(children)
        broker.stop()

    measured_from, measured_to = started + args.warmup, started + args.duration
    newest_seen = [newest for _, newest in polls]
    for i in range(1, len(newest_seen)):  # gold only grows: keep the running maximum
        newest_seen[i] = max(newest_seen[i], newest_seen[i - 1])
    latencies, unseen = [], 0
    event = measured_from
    while event < measured_to:
        first = bisect_left(newest_seen, event)
        if first < len(polls):
            latencies.append(polls[first][0] - event)
        else:
            unseen += 1
        event += 1.0
    latencies.sort()
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M")
    print(
        f"produce -> gold-visible latency, {when}, "
        f"rate {args.rate:,.0f} ev/s, trigger {args.trigger}"
    )
    print(f"events sent ~{args.rate * args.duration:,.0f}; final counts: {counts.line()}")
    if latencies:
        print(
            f"latency over {len(latencies)} event-seconds after {args.warmup:.0f} s warm-up: "
            f"p50 {percentile(latencies, 0.5):.1f} s  p95 {percentile(latencies, 0.95):.1f} s  "
            f"max {latencies[-1]:.1f} s"
        )
    print(f"event-seconds never visible in gold within 60 s after the end: {unseen}")
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
