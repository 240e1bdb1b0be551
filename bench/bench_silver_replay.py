"""Benchmark: replay N bronze rows through silver with --available-now and print rows/s.

    uv run python bench/bench_silver_replay.py --rows 2000000

Builds a bronze table of generated events (5 % bad input) directly with Spark (no Kafka: this
measures silver alone), then times ``start_silver_stream(available_now=True)`` on it.
"""

from __future__ import annotations

import argparse
import base64
import logging
import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from pyspark.sql import functions as F

from iot_lakehouse.bronze import conform
from iot_lakehouse.generator import EventGenerator, GeneratorConfig
from iot_lakehouse.logs import configure_logging
from iot_lakehouse.settings import Settings
from iot_lakehouse.silver import start_silver_stream
from iot_lakehouse.spark_session import build_spark
from iot_lakehouse.status import delta_row_count


def write_bronze(settings: Settings, rows: int, workdir: Path) -> float:
    """Generate ``rows`` events into a bronze Delta table; return seconds spent."""
    started = time.monotonic()
    config = GeneratorConfig(
        sensors=1000,
        rate=10_000.0,
        count=rows,
        seed=1,
        format="mixed",
        malformed_fraction=0.0125,
        invalid_fraction=0.0125,
        duplicate_fraction=0.0125,
        late_fraction=0.0125,
        start_time=datetime(2026, 1, 5, 0, 0, tzinfo=UTC),
    )
    generator = EventGenerator(config)
    lines = workdir / "payloads.b64"
    with open(lines, "w") as out:
        for block in range((rows + 1023) // 1024):
            values = generator.generate_block(block).values
            take = min(1024, rows - block * 1024)
            out.write("\n".join(base64.b64encode(v).decode() for v in values[:take]) + "\n")
    spark = build_spark(settings, "bench-bronze")
    ingest = F.lit(datetime(2026, 1, 5, 23, 59, tzinfo=UTC)).cast("timestamp")
    raw = F.unbase64(F.col("value"))
    bronze = spark.read.text(str(lines)).select(
        raw.alias("value"),
        F.lit(None).cast("binary").alias("key"),
        F.lit("bench").alias("topic"),
        F.lit(0).alias("partition"),
        F.monotonically_increasing_id().alias("offset"),
        ingest.alias("timestamp"),
    )
    from iot_lakehouse.bronze import to_bronze_events

    events = (
        to_bronze_events(bronze)
        .withColumn("ingest_time", ingest)
        .withColumn("ingest_date", F.to_date(ingest))
    )
    (
        conform(events)
        .repartition(max(1, rows // 100_000))
        .write.format("delta")
        .partitionBy("ingest_date")
        .save(settings.bronze_events_path)
    )
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument(
        "--quality-every",
        type=int,
        default=0,
        help="validate with Great Expectations every N batches (0: off)",
    )
    parser.add_argument("--files-per-trigger", type=int, default=50)
    args = parser.parse_args()
    configure_logging("bench", "WARNING")
    workdir = Path(tempfile.mkdtemp(prefix="bench-silver-"))
    settings = Settings.from_env().with_(
        lakehouse_path=str(workdir / "lakehouse"),
        dlq_path=str(workdir / "dlq"),
        quality_every_n_batches=args.quality_every,
        silver_max_files_per_trigger=args.files_per_trigger,
    )
    try:
        build_s = write_bronze(settings, args.rows, workdir)
        spark = build_spark(settings, "bench-silver")
        started = time.monotonic()
        query = start_silver_stream(spark, settings, available_now=True)
        query.awaitTermination()
        elapsed = time.monotonic() - started
        silver = delta_row_count(settings.silver_readings_path) or 0
        dlq = delta_row_count(settings.dlq_rejects_path) or 0
        print(f"bronze rows           {args.rows:>12,} (built in {build_s:.1f} s)")
        print(f"silver readings       {silver:>12,}   dlq rows {dlq:,}")
        print(
            f"silver replay         {elapsed:>12.1f} s  -> {args.rows / elapsed:,.0f} bronze rows/s"
        )
        print(
            f"quality every         {args.quality_every or 'off':>12}   files/trigger "
            f"{args.files_per_trigger}"
        )
        logging.shutdown()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
