"""Where silver's time per row goes: each step of its judge, side by side, on one bronze table.

    uv run python bench/bench_silver_steps.py [--events 200000] [--rounds 3] [--steps …]

Writes ``--events`` generated events (the generator's mixed formats, with a few of each bad
kind) into a bronze table once, then, in one Spark session (``local[2]``, a 1 GiB driver, as a
job runs), evaluates each step on all of it ``--rounds`` times, the steps alternating, and
prints each step's median seconds, its rows per second of bronze input, and the readings it
yields. A step is evaluated to the end with Spark's ``noop`` sink (nothing written) or, for
``checkpoint``, as silver does it (``localCheckpoint(eager=True)``); ``write_batch`` is the
whole of silver's batch on fresh tables (its log line gives the time of each of its steps).
Later steps include the earlier ones, so the difference between two lines is what the later
step adds. ``append`` and ``append_nostats`` time silver's append alone (the judged batch
materialised first), with and without Delta's per-file column statistics.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from iot_lakehouse.logs import configure_logging
from iot_lakehouse.pipeline.rules import load_rules, split_judged
from iot_lakehouse.pipeline.silver import (
    FIELDS_SCHEMA,
    SilverBatchWriter,
    create_silver_tables,
    explode_readings,
    judge,
    parse_records,
    to_silver_rows,
)
from iot_lakehouse.runtime.spark_session import build_spark
from iot_lakehouse.settings import PROJECT_ROOT, Settings
from iot_lakehouse.sources.generator import GeneratorConfig

sys.path.insert(0, str(PROJECT_ROOT))  # the tests' bronze builder
from tests.conftest import write_generated_bronze


def noop(df: DataFrame) -> int:
    """Evaluate ``df`` completely and write nothing (no row count: -1)."""
    df.write.format("noop").mode("overwrite").save()
    return -1


def steps(spark: SparkSession, settings: Settings, root: Path) -> dict[str, Callable[[], int]]:
    """Each step as a function that evaluates it on the whole bronze table."""
    ruleset = load_rules(settings.silver_rules_file, settings.silver_max_future_seconds)

    def bronze() -> DataFrame:
        return spark.read.format("delta").load(settings.bronze_events_path)

    rounds = itertools.count()

    def write_batch() -> int:
        fresh = settings.with_(lakehouse_path=str(root / f"silver-{next(rounds)}"))
        create_silver_tables(spark, fresh)
        writer = SilverBatchWriter(spark, fresh, ruleset, app_id="bench:silver")
        counts = writer.write_batch(bronze(), 0)
        return counts["valid"] + counts["rejected"] + counts["duplicates"]

    def append(stats: bool) -> int:
        judged = judge(bronze(), ruleset).localCheckpoint(eager=True)
        valid, _ = split_judged(judged)
        spark.conf.set("spark.databricks.delta.stats.collect", str(stats).lower())
        try:
            t0 = time.perf_counter()
            to_silver_rows(valid, ruleset).write.format("delta").mode("append").partitionBy(
                "event_date"
            ).save(str(root / f"append-{next(rounds)}"))
            print(f"  append alone (stats={stats}): {time.perf_counter() - t0:.2f} s")
        finally:
            spark.conf.unset("spark.databricks.delta.stats.collect")
        return -1

    return {
        "append": lambda: append(True),
        "append_nostats": lambda: append(False),
        "scan": lambda: noop(bronze()),
        "from_json": lambda: noop(bronze().select(F.from_json("payload", FIELDS_SCHEMA))),
        "parse_records": lambda: noop(parse_records(bronze())),
        "explode": lambda: noop(explode_readings(parse_records(bronze()), ruleset)),
        "judge": lambda: noop(judge(bronze(), ruleset)),
        "checkpoint": lambda: judge(bronze(), ruleset).localCheckpoint(eager=True).count(),
        "write_batch": write_batch,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", default="scan,from_json,parse_records,explode,judge,checkpoint")
    args = parser.parse_args()
    configure_logging("bench-silver", "WARNING")
    logging.getLogger("iot_lakehouse.pipeline.silver").setLevel("INFO")  # write_batch's step times
    root = Path(tempfile.mkdtemp(prefix="bench-silver-"))
    try:
        settings = Settings.from_env({}).with_(
            spark_master="local[2]",
            lakehouse_path=str(root / "lakehouse"),
            dlq_path=str(root / "dlq"),
            runtime_dir=root / "runtime",
            quality_every_n_batches=0,
        )
        spark = build_spark(settings, "bench-silver-steps")
        spark.sparkContext.setLogLevel("WARN")
        config = GeneratorConfig(
            sensors=1000,
            count=args.events,
            malformed_fraction=0.01,
            invalid_fraction=0.02,
            duplicate_fraction=0.01,
            paced=False,
        )
        started = time.perf_counter()
        write_generated_bronze(spark, settings, config, parts=1)
        print(f"bronze: {args.events:,} events in {time.perf_counter() - started:.1f} s")
        table = steps(spark, settings, root)
        chosen = [s.strip() for s in args.steps.split(",") if s.strip()]
        unknown = [s for s in chosen if s not in table]
        if unknown:
            raise SystemExit(f"unknown steps {unknown}; choose from {', '.join(table)}")
        noop(spark.read.format("delta").load(settings.bronze_events_path))  # warm the scan
        seconds: dict[str, list[float]] = {s: [] for s in chosen}
        rows: dict[str, int] = {}
        for _ in range(args.rounds):
            for step in chosen:
                t0 = time.perf_counter()
                rows[step] = table[step]()
                seconds[step].append(time.perf_counter() - t0)
        print(f"{'step':<14} {'median s':>9} {'min s':>7} {'events/s':>10} {'rows':>9}")
        for step in chosen:
            median = statistics.median(seconds[step])
            shown = f"{rows[step]:,}" if rows[step] >= 0 else "-"
            print(
                f"{step:<14} {median:>9.2f} {min(seconds[step]):>7.2f} "
                f"{args.events / median:>10,.0f} {shown:>9}"
            )
        spark.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
