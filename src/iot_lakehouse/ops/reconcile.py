"""``iot-lakehouse reconcile``: prove that nothing was lost between the layers.

- kafka -> bronze: every offset Kafka ever gave out is in bronze exactly once; offsets Kafka
  dropped before bronze read them (retention, ``/clean?force=true``) count as ``never_read``.
- bronze -> silver: every bronze record's candidate readings (as the silver parser sees them,
  under the rule version that judged the record) each ended in exactly one of silver, the DLQ
  or the duplicate ledger.
- silver -> gold: for each gold table, per window and key, the silver readings equal the gold
  ``count`` plus the readings the gold watermark set aside as late.
- alerts -> counts: per 5-minute window, alert type and severity, the fired alerts of
  gold/alerts equal gold/alert_counts_5m's ``alert_count``.

Run it when the jobs have caught up (e.g. after ``run silver --available-now``): a record the
silver job has not reached yet shows as missing.
"""

from __future__ import annotations

import functools
import json
import logging
from dataclasses import asdict, dataclass

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from iot_lakehouse.errors import ConfigError
from iot_lakehouse.pipeline.alerts import ALERT_COUNTS_TABLE
from iot_lakehouse.pipeline.bronze import SOCKET_TOPIC_PREFIX
from iot_lakehouse.pipeline.gold import GOLD_TABLES
from iot_lakehouse.pipeline.rules import RuleSet, default_rules_file, load_rules
from iot_lakehouse.pipeline.silver import explode_readings, parse_records
from iot_lakehouse.pipeline.windows import GoldTable, with_window
from iot_lakehouse.runtime.kafka_offsets import kafka_watermarks
from iot_lakehouse.settings import Settings

logger = logging.getLogger(__name__)

COORDS = ("topic", "partition", "offset")


@dataclass(frozen=True)
class Ledger:
    """One layer boundary: what came in, where it went, and what is unexplained."""

    name: str
    source: int
    parts: dict[str, int]
    missing: int
    extra: int
    # False for records no upstream keeps a ledger of (the socket source): counted, not checked
    checked: bool = True

    @property
    def unexplained(self) -> int:
        return self.missing + self.extra

    @property
    def ok(self) -> bool:
        return self.unexplained == 0

    @property
    def status(self) -> str:
        if not self.checked:
            return "NO LEDGER"
        return "OK" if self.ok else "UNEXPLAINED"


def kafka_bronze_ledger(
    spark: SparkSession, settings: Settings, ranges: dict[int, tuple[int, int]]
) -> Ledger:
    """Compare every offset Kafka ever gave out with bronze's (topic, partition, offset) rows.

    A partition's offsets run from 0 to its high watermark, one per record: the ones Kafka still
    holds (from the low watermark) must each be in bronze once; the ones it dropped (retention,
    DeleteRecords) must be in bronze too, else they were never read: bronze skipped them
    (``KAFKA_FAIL_ON_DATA_LOSS=false``) or has not reached them."""
    bronze = (
        spark.read.format("delta")
        .load(settings.bronze_events_path)
        .where(F.col("topic") == settings.kafka_topic)
    )
    below_high, below_low = F.lit(False), F.lit(False)
    for partition, (low, high) in ranges.items():
        this = F.col("partition") == partition
        below_high = below_high | (this & (F.col("offset") >= 0) & (F.col("offset") < high))
        below_low = below_low | (this & (F.col("offset") >= 0) & (F.col("offset") < low))
    counts = bronze.where(below_high).groupBy(*COORDS).count()
    row = counts.agg(
        F.count("*").alias("distinct"),
        F.sum("count").alias("rows"),
        F.count_if(below_low).alias("dropped_read"),
    ).first()
    distinct = int(row["distinct"] or 0) if row else 0
    rows = int(row["rows"] or 0) if row else 0
    dropped_read = int(row["dropped_read"] or 0) if row else 0
    dropped = sum(low for low, _high in ranges.values())
    never_read = dropped - dropped_read
    parts = {"bronze": rows}
    if never_read:
        parts["never_read"] = never_read
        logger.warning(
            "kafka -> bronze: %d records left Kafka before bronze read them (per partition, "
            "Kafka's low watermarks: %s)",
            never_read,
            {p: low for p, (low, _high) in sorted(ranges.items())},
        )
    kafka_offsets = sum(high for _low, high in ranges.values())
    return Ledger(
        "kafka -> bronze",
        kafka_offsets,
        parts,
        missing=kafka_offsets - distinct,
        extra=rows - distinct,
    )


def _outcomes(df: DataFrame, prefix: str, name: str) -> DataFrame:
    return df.groupBy(
        F.col(f"{prefix}topic").alias("topic"),
        F.col(f"{prefix}partition").alias("partition"),
        F.col(f"{prefix}offset").alias("offset"),
    ).agg(F.count("*").alias(name))


def known_rulesets(settings: Settings) -> dict[str, RuleSet]:
    """Every silver rule file reconcile can find, by version: the rule file in use, the other
    ``*.yml`` files of its folder and the packaged ones (the one in use wins its version)."""
    current = settings.silver_rules_file or default_rules_file()
    found: dict[str, RuleSet] = {}
    folders = dict.fromkeys([current.parent, default_rules_file().parent])
    for path in [p for folder in folders for p in sorted(folder.glob("*.y*ml"))]:
        if path.resolve() == current.resolve():
            continue
        try:
            ruleset = load_rules(path, settings.silver_max_future_seconds)
        except ConfigError:
            continue  # not a silver rule file (e.g. alert_rules.yml)
        found.setdefault(ruleset.version, ruleset)
    ruleset = load_rules(current, settings.silver_max_future_seconds)
    return {**found, ruleset.version: ruleset}


def record_rule_versions(spark: SparkSession, settings: Settings) -> DataFrame:
    """(topic, partition, offset, rule_version) of every bronze record silver has judged: the
    version on its silver and DLQ rows (one batch judged all of a record's readings)."""
    tables = [settings.silver_readings_path, settings.dlq_rejects_path]
    rows = [
        spark.read.format("delta")
        .load(path)
        .select(*[F.col(f"bronze_{c}").alias(c) for c in COORDS], "rule_version")
        for path in tables
    ]
    both = rows[0].unionByName(rows[1])
    return both.groupBy(*COORDS).agg(F.max("rule_version").alias("rule_version"))


def expected_readings(spark: SparkSession, settings: Settings) -> DataFrame:
    """Per bronze record, its candidate readings as silver's parser saw them under the rules it
    was judged with: the rule version on its silver/DLQ rows, the rules in use for a record not
    judged yet (or only found duplicate). The readings a record gives depend on the metric list,
    so records are exploded once per distinct metric list."""
    rulesets = known_rulesets(settings)
    current = load_rules(settings.silver_rules_file, settings.silver_max_future_seconds)
    bronze = spark.read.format("delta").load(settings.bronze_events_path)
    judged = bronze.join(record_rule_versions(spark, settings), list(COORDS), "left")
    seen = [r["rule_version"] for r in judged.select("rule_version").distinct().collect()]
    unknown = sorted(v for v in seen if v is not None and v not in rulesets)
    if unknown:
        logger.warning(
            "reconcile: no rule file of version %s found next to %s: its records are judged "
            "under the rules in use (%s); put that rule file in that folder to judge them under "
            "their own",
            ", ".join(unknown),
            settings.silver_rules_file or default_rules_file(),
            current.version,
        )
    by_metrics: dict[tuple[str, ...], tuple[RuleSet, list[str | None]]] = {}
    for version in seen:
        ruleset = rulesets.get(version, current) if version is not None else current
        key = tuple(ruleset.metrics)
        by_metrics.setdefault(key, (ruleset, []))[1].append(version)
    parts = []
    for ruleset, versions in by_metrics.values():
        named = [v for v in versions if v is not None]
        these = F.col("rule_version").isin(named) if named else F.lit(False)
        if None in versions:
            these = these | F.col("rule_version").isNull()
        records = judged.where(these).drop("rule_version")
        parts.append(
            explode_readings(parse_records(records), ruleset)
            .groupBy(*COORDS)
            .agg(F.count("*").alias("expected"))
        )
    if not parts:
        return spark.createDataFrame([], "topic string, partition int, offset long, expected long")
    return functools.reduce(DataFrame.unionByName, parts)


def bronze_silver_ledger(spark: SparkSession, settings: Settings) -> Ledger:
    """Per bronze record: expected candidate readings (under the rules that judged it) vs rows
    in silver + DLQ + duplicates."""
    expected = expected_readings(spark, settings)
    silver = _outcomes(
        spark.read.format("delta").load(settings.silver_readings_path), "bronze_", "silver"
    )
    dlq = _outcomes(spark.read.format("delta").load(settings.dlq_rejects_path), "bronze_", "dlq")
    dups = _outcomes(
        spark.read.format("delta").load(settings.silver_duplicates_path), "bronze_", "duplicates"
    )
    joined = (
        expected.join(silver, list(COORDS), "full")
        .join(dlq, list(COORDS), "full")
        .join(dups, list(COORDS), "full")
        .fillna(0)
    )
    actual = F.col("silver") + F.col("dlq") + F.col("duplicates")
    totals = joined.agg(
        F.sum(F.when(F.col("expected") > 0, 1).otherwise(0)).alias("records"),
        F.sum("expected").alias("readings"),
        F.sum("silver").alias("silver"),
        F.sum("dlq").alias("dlq"),
        F.sum("duplicates").alias("duplicates"),
        F.sum(F.greatest(F.col("expected") - actual, F.lit(0))).alias("missing"),
        F.sum(F.greatest(actual - F.col("expected"), F.lit(0))).alias("extra"),
    ).first()
    assert totals is not None
    value = {k: int(totals[k] or 0) for k in totals.asDict()}
    return Ledger(
        "bronze -> silver",
        value["records"],
        {
            "readings": value["readings"],
            "silver": value["silver"],
            "dlq": value["dlq"],
            "duplicates": value["duplicates"],
        },
        missing=value["missing"],
        extra=value["extra"],
    )


def window_counts(rows: DataFrame, table: GoldTable, name: str) -> DataFrame:
    """Rows per window and key of ``table`` (a sliding window counts a row in each of its
    windows; a table with a ``counts`` filter counts only those rows), as column ``name``."""
    counted = rows.where(table.counts()) if table.counts is not None else rows
    keys = ["window_start", *table.keys]
    return with_window(counted, table).groupBy(*keys).agg(F.count("*").alias(name))


def window_ledger_totals(parts: dict[str, DataFrame], keys: list[str]) -> dict[str, int]:
    """Sum each part (frames of ``keys`` + one count column named after the part) per key, then
    over all keys: the totals and ``missing``/``extra`` = what ``source`` has beyond the other
    parts together, and the reverse. Grouping (not joining) treats null keys as equal."""
    names = list(parts)
    stacked = functools.reduce(
        DataFrame.unionByName,
        [
            df.select(*keys, *[(F.col(n) if n == name else F.lit(0)).alias(n) for n in names])
            for name, df in parts.items()
        ],
    )
    per_key = stacked.groupBy(*keys).agg(*[F.sum(n).alias(n) for n in names])
    accounted = functools.reduce(lambda a, b: a + b, [F.col(n) for n in names[1:]])
    source = F.col(names[0])
    totals = per_key.agg(
        *[F.sum(n).alias(n) for n in names],
        F.sum(F.greatest(source - accounted, F.lit(0))).alias("missing"),
        F.sum(F.greatest(accounted - source, F.lit(0))).alias("extra"),
    ).first()
    assert totals is not None
    return {k: int(totals[k] or 0) for k in totals.asDict()}


def silver_gold_ledger(spark: SparkSession, settings: Settings) -> Ledger:
    """For every gold table, per window and key: the silver readings in it vs the gold
    ``count`` plus the readings the gold watermark set aside as late (never folded into any
    table's window)."""
    silver = spark.read.format("delta").load(settings.silver_readings_path)
    late = spark.read.format("delta").load(settings.gold_late_readings_path)
    parts = {"late": late.count()}
    missing = extra = 0
    for table in GOLD_TABLES:
        keys = ["window_start", *table.keys]
        gold = spark.read.format("delta").load(settings.gold_path(table.name))
        totals = window_ledger_totals(
            {
                "silver": window_counts(silver, table, "silver"),
                "gold": gold.select(*keys, F.col("count").alias("gold")),
                "late": window_counts(late, table, "late"),
            },
            keys,
        )
        parts[table.name] = totals["gold"]
        missing, extra = missing + totals["missing"], extra + totals["extra"]
    return Ledger("silver -> gold", silver.count(), parts, missing=missing, extra=extra)


def alerts_counts_ledger(spark: SparkSession, settings: Settings) -> Ledger:
    """Per 5-minute window, alert type and severity: the fired alerts in gold/alerts vs the
    ``alert_count`` of gold/alert_counts_5m."""
    table = ALERT_COUNTS_TABLE
    keys = ["window_start", *table.keys]
    alerts = spark.read.format("delta").load(settings.alerts_path)
    counts = spark.read.format("delta").load(settings.gold_path(table.name))
    totals = window_ledger_totals(
        {
            "fired": window_counts(alerts, table, "fired"),
            table.name: counts.select(*keys, F.col("alert_count").alias(table.name)),
        },
        keys,
    )
    return Ledger(
        "alerts -> counts",
        totals["fired"],
        {table.name: totals[table.name]},
        missing=totals["missing"],
        extra=totals["extra"],
    )


def socket_bronze_ledger(spark: SparkSession, settings: Settings) -> Ledger | None:
    """Bronze records read from a socket (``run bronze --source socket``), if any: Spark's
    socket source keeps no record of what it was sent, so they are counted, not checked."""
    rows = (
        spark.read.format("delta")
        .load(settings.bronze_events_path)
        .where(F.col("topic").startswith(SOCKET_TOPIC_PREFIX))
        .groupBy("topic")
        .count()
        .collect()
    )
    if not rows:
        return None
    records = sum(int(r["count"]) for r in rows)
    return Ledger(
        "socket -> bronze",
        records,
        {"bronze": records},
        missing=0,
        extra=0,
        checked=False,
    )


def reconcile(spark: SparkSession, settings: Settings) -> list[Ledger]:
    """Every ledger that can be computed now (Kafka's needs a reachable broker)."""
    ledgers = []
    ranges = kafka_watermarks(settings, timeout=10.0)
    if ranges is None:
        logger.warning(
            "kafka -> bronze ledger skipped: broker %s or topic %s not reachable",
            settings.kafka_bootstrap_servers,
            settings.kafka_topic,
        )
    else:
        ledgers.append(kafka_bronze_ledger(spark, settings, ranges))
    socket = socket_bronze_ledger(spark, settings)
    if socket is not None:
        ledgers.append(socket)
    ledgers.append(bronze_silver_ledger(spark, settings))
    if DeltaTable.isDeltaTable(spark, settings.gold_path(GOLD_TABLES[0].name)):
        ledgers.append(silver_gold_ledger(spark, settings))
    else:
        logger.warning("silver -> gold ledger skipped: the gold job has not created its tables")
    if DeltaTable.isDeltaTable(spark, settings.gold_path(ALERT_COUNTS_TABLE.name)):
        ledgers.append(alerts_counts_ledger(spark, settings))
    return ledgers


def ledgers_json(ledgers: list[Ledger]) -> str:
    """``reconcile --json``: every ledger with its parts, missing, extra and verdict."""
    return json.dumps(
        {
            "ok": all(ledger.ok for ledger in ledgers),
            "ledgers": [
                {
                    **asdict(ledger),
                    "unexplained": ledger.unexplained,
                    "ok": ledger.ok,
                    "status": ledger.status,
                }
                for ledger in ledgers
            ],
        }
    )


def format_ledgers(ledgers: list[Ledger]) -> str:
    """A fixed-width table, one line per ledger."""
    header = (
        f"{'ledger':<18}{'source':>10}  {'where it went':<58}{'missing':>9}{'extra':>7}  status"
    )
    lines = [header, "-" * len(header)]
    for ledger in ledgers:
        parts = " ".join(f"{k}={v}" for k, v in ledger.parts.items())
        lines.append(
            f"{ledger.name:<18}{ledger.source:>10}  {parts:<58}{ledger.missing:>9}"
            f"{ledger.extra:>7}  {ledger.status}"
        )
    return "\n".join(lines)
