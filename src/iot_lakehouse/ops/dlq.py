"""``iot-lakehouse dlq list|redrive``: look at the dead-letter queue and re-judge it.

A DLQ row stands for one rejected reading (or, metric null, for a record that gave none). Its
raw bytes and bronze coordinates are enough to judge it again, so a redrive needs neither
bronze nor Kafka. ``redrive`` re-judges every DLQ row against the current rules:

- a row all of whose readings now pass leaves the DLQ; its readings enter silver (or, when
  silver already holds that sensor, metric and instant from another record, the duplicate
  ledger), exactly once: a reading whose bronze lineage is already in silver or the ledger is
  not written again, so a redrive that stopped half-way, or one run twice, changes nothing;
- the other rows stay in the DLQ as they are;
- every judgement is recorded once per rule version in ``DLQ_PATH/redrive_history``
  (outcome, reasons under that version, time), so a row keeps its history.

``reconcile`` balances before and after: a redriven reading moves from the DLQ to silver or
the duplicate ledger.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from iot_lakehouse.catalog import table
from iot_lakehouse.errors import JobError
from iot_lakehouse.logs import kv
from iot_lakehouse.pipeline.checkpoints import delta_table_exists
from iot_lakehouse.pipeline.jobs import job_lock
from iot_lakehouse.pipeline.rules import RuleSet, load_rules, split_judged
from iot_lakehouse.pipeline.silver import (
    DEDUP_KEY,
    LINEAGE,
    classify_readings,
    create_silver_tables,
    held_keys,
    judge,
    to_duplicate_rows,
    to_silver_rows,
)
from iot_lakehouse.settings import Settings

logger = logging.getLogger(__name__)

REDRIVEN, STILL_REJECTED = "redriven", "still_rejected"
NO_READING = "NO_READING"  # history reason: the record no longer gives the row's reading
# Identity of a DLQ row: the bronze record and the reading's metric (null: the whole record).
DLQ_ROW_KEY = (*LINEAGE, "metric")


def history_path(settings: Settings) -> str:
    """Where the redrive history table lives: ``DLQ_PATH/redrive_history``."""
    return table("dlq/redrive_history").path(settings)


# --- list ---
def reason_counts(dlq: DataFrame) -> DataFrame:
    """Rows per reason code and rule version, with the oldest and newest rejection."""
    return (
        dlq.select(F.explode("reasons").alias("reason"), "rule_version", "rejected_at")
        .groupBy("reason", "rule_version")
        .agg(
            F.count("*").alias("rows"),
            F.min("rejected_at").alias("first_rejected"),
            F.max("rejected_at").alias("last_rejected"),
        )
        .orderBy(F.desc("rows"), "reason")
    )


def format_reason_counts(rows: list[dict[str, object]], total: int) -> str:
    """The ``reason_counts`` rows as a fixed-width table under a total line."""
    header = f"{'reason':<22}{'rule version':<22}{'rows':>9}  {'first rejected':<20}  last"
    lines = [f"dlq rows: {total}", header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r['reason']!s:<22}{r['rule_version']!s:<22}{r['rows']!s:>9}  "
            f"{str(r['first_rejected'])[:19]:<20}  {str(r['last_rejected'])[:19]}"
        )
    return "\n".join(lines)


def dlq_list(spark: SparkSession, settings: Settings, as_json: bool = False) -> str:
    """The DLQ summary: rows per reason and rule version (table or JSON)."""
    if not delta_table_exists(spark, settings.dlq_rejects_path):
        return f"no DLQ table at {settings.dlq_rejects_path} yet: the silver job has not run"
    dlq = spark.read.format("delta").load(settings.dlq_rejects_path)
    rows = [r.asDict() for r in reason_counts(dlq).collect()]
    total = dlq.count()
    if as_json:
        return json.dumps({"rows": total, "reasons": rows}, default=str, indent=2)
    return format_reason_counts(rows, total)


# --- redrive ---
def dlq_records(dlq: DataFrame) -> DataFrame:
    """The distinct bronze records behind the DLQ rows, in bronze's column names."""
    return dlq.select(
        "raw_value",
        "payload",
        F.col("bronze_topic").alias("topic"),
        F.col("bronze_partition").alias("partition"),
        F.col("bronze_offset").alias("offset"),
        F.col("bronze_ingest_time").alias("ingest_time"),
        F.col("kafka_timestamp")
        if "kafka_timestamp" in dlq.columns  # a DLQ written before the column existed
        else F.lit(None).cast("timestamp").alias("kafka_timestamp"),
    ).dropDuplicates(["topic", "partition", "offset"])


def rejudge(dlq: DataFrame, ruleset: RuleSet) -> DataFrame:
    """Judge the DLQ's records again; keep the readings each DLQ row stands for, tagged with
    that row's key (``d_*``): its own metric, or every reading of a record-level row."""
    judged = judge(dlq_records(dlq), ruleset)
    keys = dlq.select(
        *[F.col(c).alias(f"d_{c}") for c in DLQ_ROW_KEY], F.col("rule_version").alias("d_rv")
    ).distinct()
    same_record = (
        (F.col("topic") == F.col("d_bronze_topic"))
        & (F.col("partition") == F.col("d_bronze_partition"))
        & (F.col("offset") == F.col("d_bronze_offset"))
    )
    its_reading = F.col("d_metric").isNull() | F.col("metric").eqNullSafe(F.col("d_metric"))
    # A left join: a DLQ row whose record no longer gives its reading is judged too.
    matched = judged.withColumn("_matched", F.lit(True))
    return keys.join(matched, same_record & its_reading, "left")


def row_outcomes(rejudged: DataFrame) -> DataFrame:
    """Per DLQ row: redriven when every reading it stands for passes now, else still rejected
    (``NO_READING`` when its record no longer gives the reading the row stands for)."""
    d_keys = [f"d_{c}" for c in DLQ_ROW_KEY]
    reasons = F.array_sort(F.array_distinct(F.flatten(F.collect_list("reasons"))))
    no_reading = F.max("_matched").isNull()
    return rejudged.groupBy(*d_keys, "d_rv").agg(
        F.when(no_reading, F.lit(STILL_REJECTED))
        .when(F.max(F.size("reasons")) == 0, F.lit(REDRIVEN))
        .otherwise(F.lit(STILL_REJECTED))
        .alias("outcome"),
        F.when(no_reading, F.array(F.lit(NO_READING))).otherwise(reasons).alias("reasons"),
    )


def _match(left: str, right: str) -> Column:
    """Null-safe equality of the DLQ row key columns ``<left>c`` and ``<right>c``."""
    return F.expr(" AND ".join(f"{left}{c} <=> {right}{c}" for c in DLQ_ROW_KEY))


@dataclass(frozen=True)
class RedriveReport:
    """What one redrive did (counts of DLQ rows and readings)."""

    judged: int  # DLQ rows judged
    redriven: int  # of which left the DLQ
    to_silver: int  # readings inserted into silver
    to_duplicates: int  # readings found to repeat a silver key from another record
    rule_version: str

    def describe(self) -> str:
        return (
            f"judged {self.judged} DLQ rows under rules {self.rule_version}: "
            f"{self.redriven} redriven ({self.to_silver} readings into silver, "
            f"{self.to_duplicates} to the duplicate ledger), "
            f"{self.judged - self.redriven} still rejected"
        )


def redrive(spark: SparkSession, settings: Settings) -> RedriveReport:
    """Re-judge the DLQ against the current rules; see the module docstring. Holds the silver
    job's lock: the job (or a rerun) writing silver at the same time would race its checks."""
    ruleset = load_rules(settings.silver_rules_file, settings.silver_max_future_seconds)
    if not delta_table_exists(spark, settings.dlq_rejects_path):
        raise JobError(
            f"no DLQ table at {settings.dlq_rejects_path} yet: run the silver job first "
            "(iot-lakehouse run silver)"
        )
    with job_lock(settings, "silver"):
        return _redrive_locked(spark, settings, ruleset)


def _redrive_locked(spark: SparkSession, settings: Settings, ruleset: RuleSet) -> RedriveReport:
    from delta.tables import DeltaTable

    create_silver_tables(spark, settings)
    table("dlq/redrive_history").create_if_missing(spark, settings)
    dlq = spark.read.format("delta").load(settings.dlq_rejects_path).localCheckpoint(eager=True)
    rejudged = rejudge(dlq, ruleset).localCheckpoint(eager=True)
    outcomes = row_outcomes(rejudged).localCheckpoint(eager=True)
    d_keys = [f"d_{c}" for c in DLQ_ROW_KEY]
    passing = outcomes.where(F.col("outcome") == REDRIVEN).select(*d_keys)
    valid, _ = split_judged(rejudged.join(passing, d_keys, "left_semi"))
    readings = to_silver_rows(valid.drop("d_rv", "_matched"), ruleset)
    inserts, dups = classify_redriven(spark, settings, readings)
    to_silver = _append_if_any(inserts, settings.silver_readings_path)
    to_duplicates = _append_if_any(dups, settings.silver_duplicates_path)
    _record_history(spark, settings, outcomes, ruleset.version)
    # Only now leave the DLQ: a redrive stopped before this point is finished by the next one.
    redriven = passing.count()
    if redriven:
        (
            DeltaTable.forPath(spark, settings.dlq_rejects_path)
            .alias("t")
            .merge(passing.alias("p"), _match("t.", "p.d_"))
            .whenMatchedDelete()
            .execute()
        )
    report = RedriveReport(
        judged=outcomes.count(),
        redriven=redriven,
        to_silver=to_silver,
        to_duplicates=to_duplicates,
        rule_version=ruleset.version,
    )
    logger.info("dlq redrive %s", kv(**report.__dict__))
    return report


def classify_redriven(
    spark: SparkSession, settings: Settings, readings: DataFrame
) -> tuple[DataFrame, DataFrame]:
    """(readings to insert into silver, duplicate-ledger rows) for redriven ``readings``.

    A reading whose lineage silver or the ledger already holds was written by an earlier,
    interrupted redrive: it is written nowhere again. Of the rest, one whose key silver holds
    (from another record) is a duplicate of that row; among those with a new key the lowest
    lineage is inserted and the others are its duplicates (``silver.classify_readings``, as
    in the silver job).
    """
    silver = spark.read.format("delta").load(settings.silver_readings_path)
    ledger = spark.read.format("delta").load(settings.silver_duplicates_path)
    lineage = [*DEDUP_KEY, *LINEAGE]
    pending = readings.join(silver.select(*lineage), lineage, "left_anti").join(
        ledger.select(*lineage), lineage, "left_anti"
    )
    classified = classify_readings(pending, held_keys(silver)).localCheckpoint(eager=True)
    to_insert = classified.where(~F.col("is_duplicate")).select(*readings.columns)
    dups = to_duplicate_rows(classified.where(F.col("is_duplicate")), batch_id=-1)
    return to_insert, dups.localCheckpoint(eager=True)


def _record_history(
    spark: SparkSession, settings: Settings, outcomes: DataFrame, version: str
) -> int:
    """One history row per DLQ row and rule version (a repeated judgement adds nothing)."""
    rows = outcomes.select(
        *[F.col(f"d_{c}").alias(c) for c in DLQ_ROW_KEY],
        F.col("d_rv").alias("rejected_under"),
        F.lit(version).alias("judged_under"),
        "outcome",
        "reasons",
        F.current_timestamp().alias("judged_at"),
    )
    history = spark.read.format("delta").load(history_path(settings))
    seen = _match("n.", "h.") & (F.col("n.judged_under") == F.col("h.judged_under"))
    new = rows.alias("n").join(history.alias("h"), seen, "left_anti").localCheckpoint(eager=True)
    return _append_if_any(new, history_path(settings))


def _append_if_any(df: DataFrame, path: str) -> int:
    """Append ``df`` unless it is empty (no empty commits: a no-op redrive changes nothing)."""
    rows = df.count()
    if rows:
        df.write.format("delta").mode("append").save(path)
    return rows
