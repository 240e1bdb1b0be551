"""The one Spark session factory: Delta, the Kafka connector jars, sane local defaults."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pyspark import InheritableThread
from pyspark.sql import Column, DataFrame, Observation, SparkSession

from iot_lakehouse.logs import kv
from iot_lakehouse.runtime import class_archive, jvm_deps
from iot_lakehouse.settings import Settings

logger = logging.getLogger(__name__)

# The scheduler pools of several jobs in one driver (ONE_DRIVER_SCHEDULER=FAIR).
FAIR_SCHEDULER_POOLS = Path(__file__).parents[1] / "jvm" / "spark" / "fairscheduler.xml"


def tuning(settings: Settings) -> dict[str, str]:
    """The Spark settings this project tunes for a small machine; none with SPARK_TUNING=false
    (Spark's defaults: 200 shuffle partitions, 50 Delta snapshot partitions, …)."""
    if not settings.spark_tuning:
        return {}
    partitions = settings.spark_shuffle_partitions
    return {
        "spark.sql.shuffle.partitions": str(partitions),
        "spark.default.parallelism": str(max(2, partitions)),
        "spark.sql.adaptive.enabled": "true",
        # Delta replays its log with this many partitions (default 50): tiny on a laptop.
        "spark.databricks.delta.snapshotPartitions": str(max(1, partitions)),
        # Compiled code kept for reuse (default 100). A local driver compiles each stage twice
        # (a test compile, then the task's, under another class loader): a gold batch's classes
        # do not fit in 100, and every batch compiled them all again (docs/benchmarks.md).
        "spark.sql.codegen.cache.maxEntries": "1000",
        # Delta copies a MERGE's source before merging unless it only scans Delta tables. The
        # jobs' MERGE sources are local checkpoints already (gold, alert counts), the commands'
        # Delta scans pinned to a version: a second copy is a Spark job per MERGE for nothing.
        "spark.databricks.delta.merge.materializeSource": "none",
    }


# Spark's switch between generated code and interpreted expressions for projections,
# predicates and orderings outside whole-stage code generation (an internal SQL setting).
EXPRESSION_MODE = "spark.sql.codegen.factoryMode"
INTERPRETED, GENERATED = "NO_CODEGEN", "FALLBACK"


def expression_mode(latest_rows: Mapping[str, int], below: int) -> str:
    """INTERPRETED while every query's newest batch held fewer than ``below`` input rows (and
    one has been seen), else GENERATED (Spark's default). Generated code costs each task and
    each plan the same whatever its rows (Spark builds the code's text again to find the
    compiled class in its cache); interpreted expressions cost per row: small batches gain,
    a backlog's large ones would lose (docs/benchmarks.md)."""
    if below <= 0 or not latest_rows or max(latest_rows.values()) >= below:
        return GENERATED
    return INTERPRETED


def use_expression_mode(sessions: Sequence[SparkSession], mode: str) -> None:
    """Set ``mode`` on ``sessions`` (a query's own session and the driver's), where it differs."""
    for session in sessions:
        if session.conf.get(EXPRESSION_MODE, GENERATED) != mode:
            session.conf.set(EXPRESSION_MODE, mode)


def driver_java_options(
    settings: Settings, jars: Sequence[Path], archive_classes_to: Path | None = None
) -> str:
    """The driver JVM's options: UTC always; tuned, G1 and the class archive built by ``deps``
    (``archive_classes_to``: write one as this JVM exits instead, see ``class_archive``)."""
    options = ["-Duser.timezone=UTC"]
    if settings.spark_tuning:
        options.append(f"-XX:+Use{settings.spark_driver_gc}GC")
    if archive_classes_to is not None:
        options.append(f"-XX:ArchiveClassesAtExit={archive_classes_to}")
    elif settings.spark_tuning:
        options += class_archive.java_options(settings, jars)
    return " ".join(options)


def build_spark(
    settings: Settings,
    app_name: str,
    archive_classes_to: Path | None = None,
    scheduler_mode: str = "FIFO",
) -> SparkSession:
    """Create (or return) the process's SparkSession, configured for Delta and Kafka.

    Jars come from the local cache (resolved once from Maven Central), so start-up needs no
    network. Call once per entry point. ``scheduler_mode`` FAIR shares the task slots between
    scheduler pools (several jobs in one driver), FIFO is Spark's default.
    """
    jars = jvm_deps.resolve("spark", settings.jars_dir, settings.maven_settings_file)
    # The Python workers must be this interpreter (the project venv), also on a cluster worker
    # that has the same layout.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    if settings.spark_master.startswith("local"):
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # stay on loopback
    java_options = driver_java_options(settings, jars.jars, archive_classes_to)
    builder = (
        SparkSession.builder.appName(app_name)
        .master(settings.spark_master)
        .config("spark.jars", ",".join(str(p.resolve()) for p in jars.jars))
        .config("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension")
        .config(
            "spark.sql.catalog.spark_catalog", "org.apache.spark.sql.delta.catalog.DeltaCatalog"
        )
        .config("spark.driver.memory", settings.spark_driver_memory)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.ui.enabled", str(settings.spark_ui_enabled).lower())
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.databricks.delta.schema.autoMerge.enabled", "false")
        # Not a tuning: the alerts job's transformWithState needs RocksDB.
        .config(
            "spark.sql.streaming.stateStore.providerClass",
            "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider",
        )
        # A JSON object with a repeated key must not fail a job (Spark's default policy would
        # throw). Silver's parser then keeps the key's first value (docs/guarantees.md).
        .config("spark.sql.mapKeyDedupPolicy", "LAST_WIN")
        .config("spark.driver.extraJavaOptions", java_options)
        .config("spark.scheduler.mode", scheduler_mode)
    )
    if scheduler_mode == "FAIR":  # a pool per job, declared (an undeclared one is warned of)
        builder = builder.config("spark.scheduler.allocation.file", str(FAIR_SCHEDULER_POOLS))
    for key, value in tuning(settings).items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    logger.info(
        "spark session ready %s",
        kv(
            app=app_name,
            master=settings.spark_master,
            version=spark.version,
            jars=len(jars.jars),
            class_archive="-XX:SharedArchiveFile" in java_options,
            scheduler=scheduler_mode,
        ),
    )
    return spark


def run_side_by_side(*steps: Callable[[], None]) -> None:
    """Run ``steps`` in threads that inherit the caller's Spark job group and properties (a
    stopped query cancels their jobs too); raise the first step's error after all ended."""
    errors: list[BaseException] = []

    def guarded(step: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                step()
            except BaseException as exc:  # handed to the caller below
                errors.append(exc)

        return run

    threads = [InheritableThread(target=guarded(step), name="spark-side-by-side") for step in steps]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


def materialise(df: DataFrame, *metrics: Column) -> tuple[DataFrame, dict[str, Any]]:
    """``df`` computed once into an eager local checkpoint, and the aggregate ``metrics``
    (aliased) computed in the same pass (``observe``): one Spark job where a checkpoint and
    an ``agg(...).first()`` after it take two."""
    if not metrics:
        return df.localCheckpoint(eager=True), {}
    observation = Observation()
    checkpoint = df.observe(observation, *metrics).localCheckpoint(eager=True)
    return checkpoint, dict(observation.get)
