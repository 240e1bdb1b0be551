"""A class-data-sharing archive of the Spark driver's classes, built once by ``deps``.

A Spark driver loads ~25,000 classes at start-up (Spark, Delta, the Kafka connector), and on two
cores parsing and verifying them is a good part of its start. The JVM can instead map them from
an archive written by an earlier run (JDK's dynamic CDS: ``-XX:ArchiveClassesAtExit``, then
``-XX:SharedArchiveFile``). ``build`` runs a short warm-up (Delta writes, a MERGE, a stateful
stream, the Kafka source) in a JVM that writes the archive when it exits; ``java_options`` then
hands it to every driver whose Java, pyspark jars and extra jars are still the ones it was built
from. Without an archive, or with a stale one, a driver starts as before, only slower.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from iot_lakehouse.errors import DependencyError
from iot_lakehouse.logs import kv
from iot_lakehouse.runtime import jvm_deps
from iot_lakehouse.settings import Settings

logger = logging.getLogger(__name__)

ARCHIVE_DIR = "class-archive"
BUILD_TIMEOUT_S = 600


def java_binary() -> Path | None:
    """The ``java`` that spark-submit starts: ``$JAVA_HOME/bin/java``, else the one on PATH."""
    home = os.environ.get("JAVA_HOME")
    found = shutil.which("java", path=str(Path(home) / "bin")) if home else shutil.which("java")
    return Path(found).resolve() if found else None


def fingerprint(java: Path, jar_files: Iterable[Path]) -> str:
    """What an archive is valid for: the JVM (its binary and libjvm) and every jar on the
    driver's class path, by path, size and modification time (the JVM checks the same)."""
    files = [java, *sorted(java.parent.parent.glob("lib/server/libjvm.so")), *sorted(jar_files)]
    digest = hashlib.sha256()
    for path in files:
        stat = path.stat()
        digest.update(f"{path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def archive_path(settings: Settings, extra_jars: Iterable[Path]) -> Path | None:
    """Where the archive for this JVM and these jars lives (None when no java is found)."""
    java = java_binary()
    if java is None:
        return None
    jars = [*jvm_deps.pyspark_jars_dir().glob("*.jar"), *extra_jars]
    return settings.jars_dir / ARCHIVE_DIR / f"spark-{fingerprint(java, jars)}.jsa"


def java_options(settings: Settings, extra_jars: Iterable[Path]) -> list[str]:
    """The driver JVM options that map the archive, when one was built for this set-up."""
    path = archive_path(settings, extra_jars)
    return [f"-XX:SharedArchiveFile={path}"] if path is not None and path.is_file() else []


def build(settings: Settings, extra_jars: Sequence[Path], force: bool = False) -> Path:
    """Build the archive for the current Java and the resolved Spark jars unless it exists;
    its path.

    Runs the warm-up in a fresh Python process (its own driver JVM, which writes the archive
    as it exits) and moves the result in place only when complete, so a driver never maps a
    half-written file. Archives of earlier set-ups are removed."""
    java = java_binary()
    path = archive_path(settings, extra_jars)
    if java is None or path is None:
        raise DependencyError(
            "no java found (JAVA_HOME or PATH) to build the class archive; install Java 17"
        )
    if path.is_file() and not force:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="iot-class-archive-") as scratch:
        env = {**os.environ, "LAKEHOUSE_PATH": scratch, "DLQ_PATH": f"{scratch}/dlq"}
        command = [sys.executable, "-m", "iot_lakehouse.runtime.class_archive", str(partial)]
        try:
            done = subprocess.run(
                command, env=env, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S
            )
        except subprocess.TimeoutExpired as exc:
            partial.unlink(missing_ok=True)
            raise DependencyError(
                f"building the class archive took over {BUILD_TIMEOUT_S} s and was stopped; "
                "jobs start without it (slower). Run `iot-lakehouse deps` again."
            ) from exc
    if done.returncode != 0 or not partial.is_file():
        partial.unlink(missing_ok=True)
        tail = "\n  ".join((done.stderr or done.stdout).strip().splitlines()[-8:])
        raise DependencyError(
            f"building the class archive failed (exit {done.returncode}); jobs start without "
            f"it (slower). Last lines:\n  {tail}\nRun `iot-lakehouse deps --force` to try again."
        )
    check_loads(java, partial)
    try:
        os.replace(partial, path)
    except OSError as exc:  # Windows: the old file is mapped by a running driver
        partial.unlink(missing_ok=True)
        raise DependencyError(
            f"cannot replace the class archive {path} ({exc}); stop the running jobs and run "
            "`iot-lakehouse deps --force` again. Jobs start without the new one meanwhile."
        ) from exc
    for old in path.parent.glob("spark-*.jsa"):
        if old != path:
            with contextlib.suppress(OSError):  # still mapped by a driver (Windows): next time
                old.unlink()
    logger.info(
        "class archive built %s",
        kv(path=path, mib=path.stat().st_size >> 20, seconds=round(time.monotonic() - started)),
    )
    return path


def check_loads(java: Path, archive: Path) -> None:
    """A JVM must start with the new archive: one that is cut short (a full disk while it was
    written) would crash every driver instead of only slowing it."""
    check = [str(java), f"-XX:SharedArchiveFile={archive}", "-version"]
    done = subprocess.run(check, capture_output=True, text=True, timeout=60, cwd=archive.parent)
    if done.returncode != 0:
        archive.unlink(missing_ok=True)
        for crash_log in archive.parent.glob("hs_err_pid*.log"):
            crash_log.unlink(missing_ok=True)
        raise DependencyError(
            f"the class archive just built does not load (java exit {done.returncode}); jobs "
            "start without it (slower). Check the free space under IOT_JARS_DIR and run "
            "`iot-lakehouse deps --force`."
        )


def warm_up(archive_to: Path) -> None:
    """Load what the jobs load: a driver configured as theirs, Delta reads, writes and MERGE,
    a stateful stream with RocksDB, foreachBatch and the Kafka source (not started)."""
    from delta.tables import DeltaTable
    from pyspark.sql import DataFrame
    from pyspark.sql import functions as F

    from iot_lakehouse.runtime.spark_session import build_spark

    # Local, whatever SPARK_MASTER says: the archive is of the driver, not of a cluster's jobs.
    settings = Settings.from_env().with_(spark_master="local[2]")
    spark = build_spark(settings, "iot-lakehouse-class-archive", archive_classes_to=archive_to)
    root = Path(settings.lakehouse_path)
    table, agg = str(root / "readings"), str(root / "windows")
    readings = spark.range(2_000).select(
        (F.col("id") % 4).cast("string").alias("sensor_id"),
        F.timestamp_seconds(F.lit(1_700_000_000) + F.col("id")).alias("event_time"),
        F.from_json(
            F.format_string('{"value": %d.5, "unit": "C"}', F.col("id")),
            "value DOUBLE, unit STRING",
        ).alias("reading"),
    )
    readings.write.format("delta").partitionBy("sensor_id").mode("overwrite").save(table)
    (
        DeltaTable.forPath(spark, table)
        .alias("t")
        .merge(readings.limit(10).alias("s"), "t.event_time = s.event_time")
        .whenMatchedUpdateAll()
        .whenNotMatchedInsertAll()
        .execute()
    )

    def append(batch: DataFrame, _batch_id: int) -> None:
        batch.write.format("delta").mode("append").save(str(root / "foreach"))

    windows = (
        spark.readStream.format("delta")
        .load(table)
        .withWatermark("event_time", "10 minutes")
        .groupBy(F.window("event_time", "5 minutes"), "sensor_id")
        .agg(F.percentile_approx("reading.value", 0.95).alias("p95"), F.count("*").alias("n"))
    )
    for query in (
        windows.writeStream.format("delta")
        .outputMode("append")
        .option("checkpointLocation", str(root / "_checkpoints" / "windows"))
        .trigger(availableNow=True)
        .start(agg),
        spark.readStream.format("delta")
        .load(table)
        .writeStream.foreachBatch(append)
        .option("checkpointLocation", str(root / "_checkpoints" / "foreach"))
        .trigger(availableNow=True)
        .start(),
    ):
        query.awaitTermination()
    # Resolving the Kafka source (not starting it) loads the connector's classes.
    kafka = (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", "127.0.0.1:1")
        .option("subscribe", "warm-up")
        .load()
    )
    logger.debug("kafka source resolved %s", kv(columns=",".join(kafka.columns)))
    spark.read.format("delta").load(agg).count()
    spark.stop()


if __name__ == "__main__":
    warm_up(Path(sys.argv[1]))
