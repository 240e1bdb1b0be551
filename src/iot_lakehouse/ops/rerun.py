"""``iot-lakehouse rerun <layer> [--cascade] [--from DATE]``: rebuild one layer from upstream.

Steps, each checked before anything changes:

1. refuse while the layer's job (or, with ``--cascade``, a job below it) is running;
2. refuse when a layer below reads this one as a stream and ``--cascade`` was not given: it
   would count the rebuilt rows a second time;
3. bronze only: refuse when Kafka no longer holds every offset bronze has (rebuilding would
   lose what Kafka dropped); ``--from DATE`` only: refuse a DATE after today, and refuse while
   silver has not yet read bronze records ingested before DATE (the rebuilt query starts
   past them and reads only records ingested on or after DATE: they would never reach silver);
4. move the old checkpoints to ``_checkpoints/_backup/<job>-<UTC time>``;
5. delete the layer's rows with Delta (the old rows stay in the table history: ``RESTORE``
   brings them back), all of them or, with ``--from``, those of bronze records ingested on or
   after DATE (silver only);
6. run each job ``--available-now`` in pipeline order, from new checkpoints.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from iot_lakehouse.errors import JobError
from iot_lakehouse.logs import kv
from iot_lakehouse.pipeline.checkpoints import delta_table_exists, hadoop_fs
from iot_lakehouse.pipeline.jobs import JOBS, UPSTREAM, await_queries, job_lock
from iot_lakehouse.pipeline.layers import LAYERS, kafka_rows
from iot_lakehouse.pipeline.quality import wait_for_validations
from iot_lakehouse.runtime.kafka_offsets import kafka_watermarks
from iot_lakehouse.settings import Settings

logger = logging.getLogger(__name__)

BACKUP_DIR = "_backup"


def layers_to_rebuild(layer: str, cascade: bool) -> list[str]:
    """``layer`` and, with ``cascade``, every layer below it, in pipeline order."""
    if layer not in LAYERS:
        raise JobError(f"unknown layer {layer!r}; choose one of {list(LAYERS)}")
    chosen = {layer}
    if cascade:
        frontier = [layer]
        while frontier:
            below = LAYERS[frontier.pop()].downstream
            chosen.update(below)
            frontier.extend(below)
    return [name for name in LAYERS if name in chosen]


@dataclass(frozen=True)
class RerunReport:
    """What a rerun changed, and how to undo it."""

    layers: list[str]
    backups: list[tuple[str, str]]  # (checkpoint, where it was moved)
    deleted: dict[str, int]  # table path -> rows deleted
    restore_versions: dict[str, int]  # table path -> version to RESTORE to undo the rebuild

    def describe(self) -> str:
        lines = [f"rebuilt: {', '.join(self.layers)}"]
        lines += [f"{path}: {rows} old rows replaced" for path, rows in self.deleted.items()]
        return "\n".join([*lines, "to undo, stop the jobs and:", self.undo()])

    def undo(self) -> str:
        """The statements that put the old tables and checkpoints back."""
        lines = [
            f"  RESTORE TABLE delta.`{path}` TO VERSION AS OF {version}"
            for path, version in self.restore_versions.items()
        ]
        lines += [
            f"  move {dst} back to {src} (replacing the new one)" for src, dst in self.backups
        ]
        return "\n".join(lines)


@contextlib.contextmanager
def _locked(settings: Settings, names: list[str]) -> Iterator[None]:
    with contextlib.ExitStack() as stack:
        for name in names:
            stack.enter_context(job_lock(settings, name))
        yield


def checkpoint_exists(spark: SparkSession, settings: Settings, name: str) -> bool:
    """True if the checkpoint folder ``_checkpoints/<name>`` exists."""
    fs, path = hadoop_fs(spark, settings.checkpoint_path(name))
    return bool(fs.exists(path))


def check_downstream(spark: SparkSession, settings: Settings, layers: list[str]) -> None:
    """Refuse when a layer reading a rebuilt one keeps its checkpoint (no ``--cascade``)."""
    for name in layers:
        for below in LAYERS[name].downstream:
            if below in layers:
                continue
            if any(checkpoint_exists(spark, settings, c) for c in LAYERS[below].checkpoints):
                raise JobError(
                    f"{below} reads {name} as a stream: rebuilding {name} alone would make it "
                    f"count the rebuilt rows again. Use --cascade to rebuild {below} too."
                )


def check_kafka_retention(spark: SparkSession, settings: Settings) -> None:
    """Refuse a bronze rebuild when Kafka has dropped offsets that bronze holds."""
    marks = kafka_watermarks(settings, timeout=10.0)
    if marks is None:
        raise JobError(
            f"cannot rebuild bronze: Kafka at {settings.kafka_bootstrap_servers} or topic "
            f"{settings.kafka_topic} is not reachable (./start_kafka.sh starts the local broker)"
        )
    if not delta_table_exists(spark, settings.bronze_events_path):
        return
    spans = (
        spark.read.format("delta")
        .load(settings.bronze_events_path)
        .where(kafka_rows(settings))
        .groupBy("partition")
        .agg(F.min("offset").alias("first"), F.max("offset").alias("last"))
        .collect()
    )
    for row in spans:
        partition, first, last = int(row["partition"]), int(row["first"]), int(row["last"])
        if partition not in marks or marks[partition][1] <= last:
            raise JobError(
                f"cannot rebuild bronze from Kafka: topic {settings.kafka_topic} does not hold "
                f"partition {partition} up to offset {last} (was it deleted and created "
                "again?); bronze's records would be replaced by other ones"
            )
        if marks[partition][0] > first:
            raise JobError(
                f"cannot rebuild bronze from Kafka: partition {partition} starts at offset "
                f"{marks[partition][0]} now, but bronze holds offsets from {first}; the "
                "records in between exist only in bronze and would be lost"
            )


def unread_before(spark: SparkSession, settings: Settings, since: date) -> int:
    """Bronze records ingested before ``since`` that have no row yet in silver, the DLQ or the
    duplicate ledger: silver has not read them (every record it reads leaves at least one)."""
    coords = ["topic", "partition", "offset"]

    def outcomes(path: str) -> DataFrame:
        rows = spark.read.format("delta").load(path)
        return rows.select(*[F.col(f"bronze_{c}").alias(c) for c in coords])

    paths = [
        settings.silver_readings_path,
        settings.dlq_rejects_path,
        settings.silver_duplicates_path,
    ]
    bronze = (
        spark.read.format("delta")
        .load(settings.bronze_events_path)
        .where(F.col("ingest_date") < F.lit(since))
        .select(*coords)
    )
    for path in paths:
        if delta_table_exists(spark, path):
            bronze = bronze.join(outcomes(path), coords, "left_anti")
    return bronze.count()


def check_silver_backlog(spark: SparkSession, settings: Settings, since: date) -> None:
    """Refuse ``--from`` when records ingested before DATE would never reach silver."""
    today = datetime.now(UTC).date()
    if since > today:
        raise JobError(
            f"--from {since} is after today ({today} UTC): records bronze ingests until then "
            "would be skipped by the rebuilt silver query; give a DATE up to today"
        )
    unread = unread_before(spark, settings, since)
    if unread:
        raise JobError(
            f"silver has not read {unread} bronze records ingested before {since}; a rebuild "
            f"--from {since} would skip them for good. Run `iot-lakehouse run silver "
            "--available-now` first, then the rerun again"
        )


def backup_checkpoints(
    spark: SparkSession, settings: Settings, layers: list[str], stamp: str
) -> list[tuple[str, str]]:
    """Move each existing checkpoint of ``layers`` to ``_checkpoints/_backup/<name>-<stamp>``."""
    moved = []
    for layer in layers:
        for name in LAYERS[layer].checkpoints:
            source = settings.checkpoint_path(name)
            target = settings.checkpoint_path(f"{BACKUP_DIR}/{name}-{stamp}")
            fs, src = hadoop_fs(spark, source)
            if not fs.exists(src):
                continue
            _, dst = hadoop_fs(spark, target)
            fs.mkdirs(dst.getParent())
            if not fs.rename(src, dst):
                raise JobError(
                    f"could not move checkpoint {source} to {target} (permissions? does the "
                    "target exist?); no table was changed: fix it and run the rerun again"
                )
            moved.append((source, target))
    return moved


def _last_commit(delta: Any, field: str) -> Any:
    """``field`` of the newest commit in a DeltaTable's history."""
    row = delta.history(1).select(field).first()
    assert row is not None, "a Delta table has at least one commit"
    return row[0]


def clear_tables(
    spark: SparkSession, settings: Settings, layers: list[str], since: date | None
) -> tuple[dict[str, int], dict[str, int]]:
    """Delete the rows each layer's job will write again; (rows deleted, version before)."""
    from delta.tables import DeltaTable

    deleted: dict[str, int] = {}
    versions: dict[str, int] = {}
    for layer in layers:
        for table in LAYERS[layer].tables:
            path = table.path(settings)
            if not delta_table_exists(spark, path):
                continue
            delta = DeltaTable.forPath(spark, path)
            versions[path] = int(_last_commit(delta, "version"))
            condition = table.rows(settings, since)
            if table.by_bronze_coordinates and since is not None:
                coords = (
                    spark.read.format("delta")
                    .load(settings.bronze_events_path)
                    .where(F.col("ingest_date") >= F.lit(since))
                    .select("topic", "partition", "offset")
                )
                delta.alias("t").merge(
                    coords.alias("b"),
                    "t.bronze_topic = b.topic AND t.bronze_partition = b.partition "
                    "AND t.bronze_offset = b.offset",
                ).whenMatchedDelete().execute()
                metrics = _last_commit(delta, "operationMetrics") or {}
                deleted[path] = int(metrics.get("numTargetRowsDeleted", 0))
                continue
            rows = spark.read.format("delta").load(path)
            deleted[path] = (rows if condition is None else rows.where(condition)).count()
            if condition is None:
                delta.delete()
            else:
                delta.delete(condition)
    return deleted, versions


def rerun(
    spark: SparkSession,
    settings: Settings,
    layer: str,
    cascade: bool = False,
    since: date | None = None,
) -> RerunReport:
    """Rebuild ``layer`` (and with ``cascade`` the layers below) from upstream; see the module
    docstring for the steps and what each refusal protects."""
    layers = layers_to_rebuild(layer, cascade)
    if since is not None and not LAYERS[layer].supports_from:
        raise JobError(
            f"--from applies to silver (bronze records ingested on or after DATE); {layer} "
            "rebuilds whole windows and detector state, so it is always rebuilt in full"
        )
    checkpoints = [c for name in layers for c in LAYERS[name].checkpoints]
    # bronze's file source writes the same table: it must not run during a bronze rebuild
    locks = checkpoints + (["bronze_files"] if "bronze" in layers else [])
    with _locked(settings, locks):
        upstream = UPSTREAM[layers[0]](settings)
        if upstream and not delta_table_exists(spark, upstream[0]):
            raise JobError(
                f"cannot rebuild {layers[0]}: its input table {upstream[0]} does not "
                "exist; run the upstream job first"
            )
        check_downstream(spark, settings, layers)
        if "bronze" in layers:
            check_kafka_retention(spark, settings)
        if since is not None:
            check_silver_backlog(spark, settings, since)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        backups = backup_checkpoints(spark, settings, layers, stamp)
        deleted, versions = clear_tables(spark, settings, layers, since)
        report = RerunReport(layers, backups, deleted, versions)
        # Said before the rebuild runs, so it is in the log even if the rebuild fails.
        logger.info("rerun: old rows deleted; to undo, stop the jobs and:\n%s", report.undo())
        for index, name in enumerate(layers):
            job_settings = settings.with_(silver_rebuild_from=since if index == 0 else None)
            started = JOBS[name](spark, job_settings, True)
            queries = started if isinstance(started, list) else [started]
            await_queries(name, queries, threading.Event())  # to the end of its input
            wait_for_validations()  # its quality results, written after each batch
            logger.info("rerun: layer rebuilt %s", kv(layer=name))
    return report
