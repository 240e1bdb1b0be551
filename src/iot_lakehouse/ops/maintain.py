"""``iot-lakehouse maintain``: small-file report, OPTIMIZE, VACUUM and table properties.

For every Delta table of the lakehouse (bronze, silver, gold, alerts, the DLQ and ``_ops``):

- **report**: data files, total and average size, files below the small-file threshold and
  partitions, from the table's own log (the ``deltalake`` package's add actions, no JVM);
- **properties**: sets the properties tables are created with (``recommended_table_properties``:
  no optimized write or auto compaction inside streaming batches) where they differ;
- **OPTIMIZE** (bin-packing) where a partition has enough small files to be worth it;
- **VACUUM** with a retention of 168 hours unless told otherwise: a shorter one needs
  ``--i-know-retention-is-short``, because it can break stopped streaming readers and time travel.
  (Delta 4.x ignores a VACUUM retention other than 0 by default; ``vacuum_conf`` makes it honour
  the one given, and the report shows the retention Delta logged it used.)

A table that does not exist yet is reported as missing. ``--report-only`` changes nothing and
starts no JVM. The report rows and the decisions are pure functions of a list of file sizes and
the rules below (``MaintenanceRules``); the Spark calls are in a few small functions at the end.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

from iot_lakehouse.errors import ConfigError
from iot_lakehouse.logs import kv
from iot_lakehouse.settings import Settings

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

logger = logging.getLogger(__name__)

MIB = 1024 * 1024
SHORT_RETENTION_FLAG = "--i-know-retention-is-short"

# Session settings vacuum_table sets around VACUUM (and restores): see vacuum_conf.
DELTA_RETENTION_CHECK = "spark.databricks.delta.retentionDurationCheck.enabled"
DELTA_VACUUM_LOGGING = "spark.databricks.delta.vacuum.logging.enabled"
DELTA_RETENTION_WINDOW_IGNORE = "spark.databricks.delta.vacuum.retentionWindowIgnore.enabled"
LISTING_PARALLELISM = "spark.sql.sources.parallelPartitionDiscovery.parallelism"


def recommended_table_properties() -> dict[str, str]:
    """The properties every lakehouse table is created with (``schemas.TABLE_PROPERTIES``);
    ``maintain`` sets them on tables made by older versions, which turned Delta's optimized
    write and auto compaction on: both ran inside every streaming micro-batch (a shuffle
    before each write, a synchronous OPTIMIZE inside a commit). Compaction is ``maintain``'s
    OPTIMIZE, run when a table has small files."""
    from iot_lakehouse.schemas import TABLE_PROPERTIES

    return dict(TABLE_PROPERTIES)


# --- rules as data ---
@dataclass(frozen=True)
class MaintenanceRules:
    """What counts as a small file, when OPTIMIZE is worth a job, and how long VACUUM keeps
    files that the table no longer references."""

    small_file_bytes: int = 8 * MIB
    # OPTIMIZE a table only if some partition has at least this many small files (Delta's
    # bin-packing leaves a partition with a single file alone anyway).
    min_small_files_per_partition: int = 2
    retention_hours: float = 168.0  # VACUUM default: 7 days, Delta's own default
    min_retention_hours: float = 168.0  # shorter only with SHORT_RETENTION_FLAG


RULES = MaintenanceRules()


# --- the tables ---
@dataclass(frozen=True)
class LakehouseTable:
    """One Delta table of the lakehouse: its name (``layer/table``) and location."""

    name: str
    path: str


def lakehouse_tables(settings: Settings) -> tuple[LakehouseTable, ...]:
    """Every Delta table of the catalog, in its (pipeline) order."""
    from iot_lakehouse.catalog import TABLES

    return tuple(LakehouseTable(t.name, t.path(settings)) for t in TABLES)


def select_tables(
    tables: Sequence[LakehouseTable], names: Sequence[str]
) -> tuple[LakehouseTable, ...]:
    """The tables named (``silver/readings`` or just ``readings``; a folder such as ``_ops/``:
    every table in it), in pipeline order; all of them if ``names`` is empty."""
    if not names:
        return tuple(tables)
    chosen: set[str] = set()
    for name in names:
        if name.endswith("/"):
            matches = [t.name for t in tables if t.name.startswith(name)]
            if matches:
                chosen.update(matches)
                continue
        else:
            matches = [t.name for t in tables if name in (t.name, t.name.rsplit("/", 1)[-1])]
        if len(matches) != 1:
            raise ConfigError(
                f"--table {name!r} is not a lakehouse table; use one of: "
                + ", ".join(t.name for t in tables)
            )
        chosen.add(matches[0])
    return tuple(t for t in tables if t.name in chosen)


# --- the report (pure) ---
@dataclass(frozen=True)
class DataFile:
    """One data file of a table's current version: its size and its partition values."""

    size_bytes: int
    partition: tuple[str | None, ...] = ()


@dataclass(frozen=True)
class TableReport:
    """The file layout of one table's current version, as its Delta log describes it."""

    table: str
    path: str
    exists: bool
    version: int | None = None
    files: int = 0
    total_bytes: int = 0
    small_files: int = 0  # below small_file_bytes
    small_file_bytes: int = RULES.small_file_bytes
    partitions: int = 0  # distinct partition values with files (1 for an unpartitioned table)
    partition_columns: tuple[str, ...] = ()
    compactable_partitions: int = 0  # partitions with >= min_small_files_per_partition
    missing_properties: tuple[str, ...] = ()  # recommended properties not set (yet)

    @property
    def avg_file_bytes(self) -> int:
        return self.total_bytes // self.files if self.files else 0

    @property
    def needs_optimize(self) -> bool:
        return self.compactable_partitions > 0

    @property
    def status(self) -> str:
        if not self.exists:
            return "missing"
        return "compaction advised" if self.needs_optimize else "ok"

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "avg_file_bytes": self.avg_file_bytes,
            "needs_optimize": self.needs_optimize,
            "status": self.status,
        }


def missing_report(table: LakehouseTable, rules: MaintenanceRules = RULES) -> TableReport:
    """The report of a table that does not exist (yet)."""
    return TableReport(
        table.name, table.path, exists=False, small_file_bytes=rules.small_file_bytes
    )


def properties_to_set(
    current: Mapping[str, str], wanted: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The recommended properties (``wanted``) whose value in ``current`` differs."""
    wanted = recommended_table_properties() if wanted is None else wanted
    return {
        key: value
        for key, value in wanted.items()
        if str(current.get(key, "")).lower() != value.lower()
    }


def build_report(
    table: LakehouseTable,
    files: Sequence[DataFile],
    version: int,
    partition_columns: Sequence[str] = (),
    properties: Mapping[str, str] | None = None,
    rules: MaintenanceRules = RULES,
) -> TableReport:
    """The report row of an existing table from its data files (sizes and partition values)."""
    small_per_partition: dict[tuple[str | None, ...], int] = {}
    for f in files:
        small = f.size_bytes < rules.small_file_bytes
        small_per_partition[f.partition] = small_per_partition.get(f.partition, 0) + small
    return TableReport(
        table=table.name,
        path=table.path,
        exists=True,
        version=version,
        files=len(files),
        total_bytes=sum(f.size_bytes for f in files),
        small_files=sum(small_per_partition.values()),
        small_file_bytes=rules.small_file_bytes,
        partitions=len(small_per_partition),
        partition_columns=tuple(partition_columns),
        compactable_partitions=sum(
            1 for n in small_per_partition.values() if n >= rules.min_small_files_per_partition
        ),
        missing_properties=tuple(sorted(properties_to_set(properties or {}))),
    )


# --- what was done ---
@dataclass(frozen=True)
class OptimizeResult:
    """Metrics of one OPTIMIZE (compaction), as Delta returned them."""

    files_removed: int
    files_added: int
    bytes_removed: int
    bytes_added: int
    partitions_optimized: int


@dataclass(frozen=True)
class VacuumResult:
    """One VACUUM: the retention asked for, the one Delta logged it used, and what it logged
    it deleted (None where Delta logged nothing)."""

    retention_hours: float
    effective_retention_hours: float | None
    files_deleted: int | None
    bytes_deleted: int | None


# --- decisions and results (pure) ---
def check_retention(
    hours: float, allow_short: bool = False, rules: MaintenanceRules = RULES
) -> None:
    """Raise ConfigError for a VACUUM retention that is negative, not whole hours (Delta's
    VACUUM rounds it), or shorter than the safe minimum without the explicit flag, saying what
    a short one can break."""
    if hours < 0:
        raise ConfigError(f"--retention-hours {hours:g} is negative; use e.g. 168 (7 days)")
    if hours != round(hours):
        raise ConfigError(
            f"--retention-hours {hours:g} is not a whole number of hours: Delta's VACUUM rounds "
            "it to one and would keep files for that long instead; give whole hours, e.g. 6"
        )
    if hours < rules.min_retention_hours and not allow_short:
        raise ConfigError(
            f"--retention-hours {hours:g} is below the safe minimum of "
            f"{rules.min_retention_hours:g} hours (7 days), so VACUUM was not run. VACUUM "
            "deletes the data files the current table version no longer references once they "
            "are older than the retention. With a short one: a streaming job that is stopped or "
            "behind (its checkpoint points at an older table version, e.g. silver reading "
            "bronze) fails on restart with missing files; a job writing or reading right now "
            "can lose files it has not committed or read yet; and time travel (versionAsOf, "
            "timestampAsOf, RESTORE) to versions older than the retention stops working. If "
            f"every job is stopped and you accept that, add {SHORT_RETENTION_FLAG}."
        )


def vacuum_result(hours: float, commits: Iterable[Mapping[str, Any]]) -> VacuumResult:
    """What one VACUUM did, from the ``VACUUM START`` / ``VACUUM END`` commits Delta logged for
    it (history entries: ``operation``, ``operationParameters``, ``operationMetrics``)."""
    files: int | None = None
    size: int | None = None
    effective: float | None = None
    for commit in commits:
        metrics = commit.get("operationMetrics") or {}
        parameters = commit.get("operationParameters") or {}
        if commit.get("operation") == "VACUUM END" and "numDeletedFiles" in metrics:
            files = int(metrics["numDeletedFiles"])
        elif commit.get("operation") == "VACUUM START":
            if "sizeOfDataToDelete" in metrics:
                size = int(metrics["sizeOfDataToDelete"])
            # Delta used the retention given if it logged one, else the table's own.
            millis = parameters.get("specifiedRetentionMillis")
            millis = parameters.get("defaultRetentionMillis") if millis is None else millis
            effective = None if millis is None else int(millis) / 3_600_000
    return VacuumResult(hours, effective, files, size)


@dataclass(frozen=True)
class TableOutcome:
    """The report of a table before (and after) maintenance and what was done to it."""

    before: TableReport
    after: TableReport | None = None
    properties_set: Mapping[str, str] = field(default_factory=dict)
    optimize: OptimizeResult | None = None
    vacuum: VacuumResult | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "table": self.before.table,
            "before": self.before.to_dict(),
            "after": self.after.to_dict() if self.after else None,
            "properties_set": dict(self.properties_set),
            "optimize": asdict(self.optimize) if self.optimize else None,
            "vacuum": asdict(self.vacuum) if self.vacuum else None,
            "error": self.error,
        }


def human_bytes(n: int) -> str:
    """``512 B``, ``3.2 KiB``, ``40.0 MiB``…"""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _show(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def format_outcomes(outcomes: Sequence[TableOutcome], options: MaintainOptions) -> str:
    """Plain-text tables: the report per table, then (unless report-only) what was done."""
    rules = options.rules
    header = (
        f"{'table':<34}{'files':>7}{'size':>12}{'avg':>12}{'small':>7}{'parts':>7}"
        f"  {'properties':<12}status"
    )
    lines = [
        f"small file < {human_bytes(rules.small_file_bytes)}; "
        + (
            "report only, nothing changed"
            if options.report_only
            else f"vacuum retention {options.retention_hours:g} h"
        ),
        header,
        "-" * len(header),
    ]
    for o in outcomes:
        r = o.before
        if not r.exists:
            lines.append(
                f"{r.table:<34}{'-':>7}{'-':>12}{'-':>12}{'-':>7}{'-':>7}  {'-':<12}missing"
            )
            continue
        props = f"unset {len(r.missing_properties)}" if r.missing_properties else "ok"
        lines.append(
            f"{r.table:<34}{r.files:>7}{human_bytes(r.total_bytes):>12}"
            f"{human_bytes(r.avg_file_bytes):>12}{r.small_files:>7}{r.partitions:>7}"
            f"  {props:<12}{r.status}"
        )
    if options.report_only:
        return "\n".join(lines)
    header = (
        f"{'table':<34}{'files':>15}{'compacted':>12}{'vacuumed':>10}{'kept h':>8}"
        f"  {'properties':<12}result"
    )
    lines += ["", header, "-" * len(header)]
    for o in outcomes:
        if not o.before.exists:
            continue
        after = str(o.after.files) if o.after else "?"
        compacted = f"{o.optimize.files_removed}->{o.optimize.files_added}" if o.optimize else "-"
        vacuumed = _show(o.vacuum.files_deleted if o.vacuum else None)
        kept = _show(o.vacuum.effective_retention_hours if o.vacuum else None)
        props = f"set {len(o.properties_set)}" if o.properties_set else "-"
        result = f"error: {o.error}" if o.error else "ok"
        lines.append(
            f"{o.before.table:<34}{f'{o.before.files} -> {after}':>15}{compacted:>12}"
            f"{vacuumed:>10}{kept:>8}  {props:<12}{result}"
        )
    return "\n".join(lines)


def outcomes_json(outcomes: Sequence[TableOutcome], options: MaintainOptions) -> str:
    """The same as JSON: the options used and one object per table."""
    return json.dumps(
        {
            "report_only": options.report_only,
            "small_file_bytes": options.rules.small_file_bytes,
            "retention_hours": None if options.report_only else options.retention_hours,
            "recommended_properties": recommended_table_properties(),
            "tables": [o.to_dict() for o in outcomes],
        },
        indent=2,
    )


# --- options ---
@dataclass(frozen=True)
class MaintainOptions:
    """What ``maintain`` was asked to do."""

    tables: tuple[str, ...] = ()
    report_only: bool = False
    vacuum_only: bool = False  # no OPTIMIZE, no property change: safe beside MERGE writers
    retention_hours: float = RULES.retention_hours
    allow_short_retention: bool = False
    where: str | None = None  # OPTIMIZE partition filter (one table only)
    as_json: bool = False
    rules: MaintenanceRules = RULES


def add_maintain_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``iot-lakehouse maintain`` to ``parser``."""
    add = parser.add_argument
    add(
        "--report-only",
        action="store_true",
        help="only print the small-file report: no OPTIMIZE, VACUUM or property change",
    )
    add(
        "--vacuum-only",
        action="store_true",
        help="only VACUUM: no OPTIMIZE and no property change, so a job that MERGEs into the "
        "table meanwhile never loses its commit to maintenance (what `all` runs on gold)",
    )
    add(
        "--table",
        action="append",
        dest="tables",
        default=[],
        metavar="NAME",
        help="restrict to this table, e.g. silver/readings, or the tables of a folder, e.g. "
        "_ops/ (repeatable; default: all)",
    )
    add(
        "--retention-hours",
        type=float,
        default=RULES.retention_hours,
        metavar="H",
        help=f"VACUUM keeps unreferenced files younger than this (default "
        f"{RULES.retention_hours:g} = 7 days; less needs {SHORT_RETENTION_FLAG})",
    )
    add(
        SHORT_RETENTION_FLAG,
        action="store_true",
        dest="allow_short_retention",
        help="allow a retention below 7 days: stopped streaming jobs may fail to restart and "
        "time travel to older versions breaks",
    )
    add(
        "--small-file-mb",
        type=float,
        default=RULES.small_file_bytes / MIB,
        metavar="MB",
        help=f"a file below this many MiB is small (default {RULES.small_file_bytes / MIB:g})",
    )
    add(
        "--where",
        default=None,
        metavar="PREDICATE",
        help="OPTIMIZE only the partitions matching this predicate, e.g. "
        "\"ingest_date >= '2026-01-01'\" (needs exactly one --table)",
    )
    add("--json", action="store_true", help="print JSON instead of tables")


def options_from_args(args: argparse.Namespace) -> MaintainOptions:
    """Validated options from the parsed command line."""
    if args.small_file_mb <= 0:
        raise ConfigError(f"--small-file-mb {args.small_file_mb:g} must be positive")
    options = MaintainOptions(
        tables=tuple(args.tables or ()),
        report_only=args.report_only,
        vacuum_only=args.vacuum_only,
        retention_hours=args.retention_hours,
        allow_short_retention=args.allow_short_retention,
        where=args.where,
        as_json=args.json,
        rules=replace(RULES, small_file_bytes=int(args.small_file_mb * MIB)),
    )
    if options.where is not None and len(options.tables) != 1:
        raise ConfigError("--where is a partition filter of one table: give exactly one --table")
    if not options.report_only:
        check_retention(options.retention_hours, options.allow_short_retention, options.rules)
    return options


# --- wiring: deltalake for the report, Spark for the changes ---
def read_report(table: LakehouseTable, rules: MaintenanceRules = RULES) -> TableReport:
    """The report of ``table`` from its Delta log (``deltalake``, no JVM); missing if there is
    no table at its path."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        dt = DeltaTable(table.path)
    except TableNotFoundError:
        return missing_report(table, rules)
    metadata = dt.metadata()
    columns = tuple(metadata.partition_columns)
    actions = dt.get_add_actions(flatten=True)
    files: list[DataFile] = []
    if actions.num_rows:
        sizes = actions.column("size_bytes").to_pylist()
        values = [actions.column(f"partition.{c}").to_pylist() for c in columns]
        for i, size in enumerate(sizes):
            partition = tuple(None if v[i] is None else str(v[i]) for v in values)
            files.append(DataFile(int(size), partition))
    return build_report(
        table, files, int(dt.version()), columns, dict(metadata.configuration), rules
    )


def _quoted(path: str) -> str:
    return "delta.`" + path.replace("`", "``") + "`"


def set_recommended_properties(
    spark: SparkSession, table: LakehouseTable, missing: Sequence[str]
) -> dict[str, str]:
    """Set the recommended properties named in ``missing`` (one commit; none if nothing is
    missing) and return what was set."""
    wanted = {k: v for k, v in recommended_table_properties().items() if k in missing}
    if wanted:
        assignments = ", ".join(f"'{k}' = '{v}'" for k, v in wanted.items())
        spark.sql(f"ALTER TABLE {_quoted(table.path)} SET TBLPROPERTIES ({assignments})")
    return wanted


def optimize_table(
    spark: SparkSession, table: LakehouseTable, where: str | None = None
) -> OptimizeResult:
    """Compact ``table`` (bin-packing, optionally only the partitions matching ``where``)."""
    from delta.tables import DeltaTable

    builder = DeltaTable.forPath(spark, table.path).optimize()
    if where:
        builder = builder.where(where)
    row = builder.executeCompaction().first()
    m = row["metrics"] if row is not None else None
    if m is None:
        return OptimizeResult(0, 0, 0, 0, 0)
    return OptimizeResult(
        files_removed=int(m["numFilesRemoved"]),
        files_added=int(m["numFilesAdded"]),
        bytes_removed=int(m["filesRemoved"]["totalSize"]),
        bytes_added=int(m["filesAdded"]["totalSize"]),
        partitions_optimized=int(m["partitionsOptimized"]),
    )


@contextmanager
def _session_conf(spark: SparkSession, values: Mapping[str, str]) -> Iterator[None]:
    """Set Spark session settings for the duration of the block, then restore them."""
    previous = {key: spark.conf.get(key, None) for key in values}
    for key, value in values.items():
        spark.conf.set(key, value)
    try:
        yield
    finally:
        for key, old in previous.items():
            if old is None:
                spark.conf.unset(key)
            else:
                spark.conf.set(key, old)


def vacuum_conf(
    spark: SparkSession, hours: float, rules: MaintenanceRules = RULES
) -> dict[str, str]:
    """The Delta session settings ``vacuum_table`` runs VACUUM with (restored afterwards)."""
    listing = spark.conf.get(LISTING_PARALLELISM, None) or "10000"
    conf = {
        DELTA_VACUUM_LOGGING: "true",  # VACUUM START/END commits with what was deleted
        # Delta 4.x ignores a RETAIN other than 0 by default and uses the table's
        # delta.deletedFileRetentionDuration: honour the retention asked for instead.
        DELTA_RETENTION_WINDOW_IGNORE: "false",
        # VACUUM lists the table in this many tasks (Spark's default 10,000): one per core.
        LISTING_PARALLELISM: str(max(1, min(int(listing), spark.sparkContext.defaultParallelism))),
    }
    if hours < rules.min_retention_hours:
        conf[DELTA_RETENTION_CHECK] = "false"  # allowed explicitly (SHORT_RETENTION_FLAG)
    return conf


def vacuum_table(
    spark: SparkSession,
    table: LakehouseTable,
    hours: float,
    allow_short: bool = False,
    rules: MaintenanceRules = RULES,
) -> VacuumResult:
    """VACUUM ``table`` keeping unreferenced files younger than ``hours``; what was deleted
    and the retention used come from the VACUUM START/END commits Delta logs."""
    from delta.tables import DeltaTable
    from deltalake import DeltaTable as LogReader

    check_retention(hours, allow_short, rules)
    version_before = LogReader(table.path).version()
    with _session_conf(spark, vacuum_conf(spark, hours, rules)):
        DeltaTable.forPath(spark, table.path).vacuum(hours)
    commits = [
        c for c in LogReader(table.path).history(20) if int(c.get("version", -1)) > version_before
    ]
    return vacuum_result(hours, commits)


def maintain_table(
    spark: SparkSession | None, table: LakehouseTable, options: MaintainOptions
) -> TableOutcome:
    """Report one table and, unless report-only, set its properties, compact it if the rules
    say so (or ``--where`` asks), vacuum it and report it again."""
    from pyspark.errors import PySparkException

    started = time.monotonic()
    before = read_report(table, options.rules)
    if not before.exists or options.report_only:
        return TableOutcome(before)
    assert spark is not None, "maintenance needs a SparkSession"
    properties: dict[str, str] = {}
    optimized: OptimizeResult | None = None
    vacuumed: VacuumResult | None = None
    try:
        if not options.vacuum_only:
            properties = set_recommended_properties(spark, table, before.missing_properties)
        if not options.vacuum_only and (before.needs_optimize or options.where):
            optimized = optimize_table(spark, table, options.where)
        vacuumed = vacuum_table(
            spark, table, options.retention_hours, options.allow_short_retention, options.rules
        )
    except PySparkException as exc:  # e.g. a concurrent writer won the commit: report, go on
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        logger.error("maintenance failed %s", kv(table=table.name, error=message))
        return TableOutcome(
            before, read_report(table, options.rules), properties, optimized, vacuumed, message
        )
    after = read_report(table, options.rules)
    logger.info(
        "maintained %s",
        kv(
            table=table.name,
            files_before=before.files,
            files_after=after.files,
            compacted=optimized.files_removed if optimized else 0,
            vacuumed=vacuumed.files_deleted if vacuumed else 0,
            properties_set=len(properties),
            seconds=time.monotonic() - started,
        ),
    )
    return TableOutcome(before, after, properties, optimized, vacuumed)


def maintain(
    spark: SparkSession | None, tables: Sequence[LakehouseTable], options: MaintainOptions
) -> list[TableOutcome]:
    """Maintain each table in turn (``spark`` may be None when report-only)."""
    return [maintain_table(spark, table, options) for table in tables]


def merged_window_tables(settings: Settings) -> tuple[str, ...]:
    """Names of the tables jobs keep by MERGE (gold's window tables and the alert counts):
    each batch replaces files of them, which only VACUUM removes."""
    from iot_lakehouse.catalog import TABLES

    return tuple(t.name for t in TABLES if t.merged)


def run_maintain(settings: Settings, args: argparse.Namespace) -> int:
    """``iot-lakehouse maintain``: print the report (and what was done); exit status 1 if a
    table could not be maintained. A report-only run starts no JVM."""
    options = options_from_args(args)
    tables = select_tables(lakehouse_tables(settings), options.tables)
    if options.report_only:
        outcomes = maintain(None, tables, options)
    else:
        from iot_lakehouse.runtime.spark_session import build_spark

        spark = build_spark(settings, "iot-lakehouse-maintain")
        try:
            outcomes = maintain(spark, tables, options)
        finally:
            spark.stop()
    print(
        outcomes_json(outcomes, options) if options.as_json else format_outcomes(outcomes, options)
    )
    return 1 if any(o.error for o in outcomes) else 0
