"""bronze -> silver: parsing, one test per reason code, alerts, dedup, exactly-once, reconcile."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from iot_lakehouse.ops.reconcile import reconcile
from iot_lakehouse.pipeline.bronze import start_bronze_stream
from iot_lakehouse.pipeline.rules import RuleSet, load_rules
from iot_lakehouse.pipeline.silver import (
    SilverBatchWriter,
    classify_readings,
    create_silver_tables,
    judge,
    start_silver_stream,
)
from iot_lakehouse.settings import Settings
from tests.conftest import produce
from tests.support.silver import LONG_OK, REASON_CASES, WIDE_OK, bronze_df


@pytest.fixture(scope="module")
def ruleset() -> RuleSet:
    return load_rules()


def judged_rows(spark: SparkSession, ruleset: RuleSet, payload: bytes | None) -> list[dict]:
    df = judge(bronze_df(spark, [payload]), ruleset)
    return [
        r.asDict()
        for r in df.select(
            "metric", "value", "reasons", "quality_flags", "event_time", "sensor_id", "location"
        ).collect()
    ]


def test_valid_wide_record_gives_three_readings(spark: SparkSession, ruleset: RuleSet) -> None:
    rows = judged_rows(spark, ruleset, WIDE_OK)
    assert sorted((r["metric"], r["value"]) for r in rows) == [
        ("humidity", 40.0),
        ("pressure", 1000.5),
        ("temperature", 21.5),
    ]
    assert all(r["reasons"] == [] and r["sensor_id"] == "sensor-00001" for r in rows)
    assert {r["location"] for r in rows} == {"building-A/floor-1"}


def test_valid_long_record_gives_one_reading_with_location(
    spark: SparkSession, ruleset: RuleSet
) -> None:
    rows = judged_rows(spark, ruleset, LONG_OK)
    assert len(rows) == 1
    assert rows[0]["metric"] == "temperature" and rows[0]["value"] == 27.5
    assert rows[0]["reasons"] == [] and rows[0]["location"] == "building-B/floor-3"


@pytest.mark.parametrize("extra", ['"building":"A"', '"floor":2', '"type":"x"', '"value":1'])
def test_wide_record_with_an_extra_long_field_stays_wide(
    spark: SparkSession, ruleset: RuleSet, extra: str
) -> None:
    payload = WIDE_OK[:-1] + b"," + extra.encode() + b"}"
    rows = judged_rows(spark, ruleset, payload)
    assert sorted((r["metric"], r["value"], r["reasons"]) for r in rows) == [
        ("humidity", 40.0, []),
        ("pressure", 1000.5, []),
        ("temperature", 21.5, []),
    ]


def test_long_record_with_an_extra_location_field_stays_long(
    spark: SparkSession, ruleset: RuleSet
) -> None:
    payload = LONG_OK[:-1] + b',"location":"x","humidity":3}'
    rows = judged_rows(spark, ruleset, payload)
    assert [(r["metric"], r["value"], r["reasons"]) for r in rows] == [("temperature", 27.5, [])]


@pytest.fixture(scope="module")
def judged_cases(spark: SparkSession, ruleset: RuleSet) -> dict[int, list[list[str]]]:
    """Every reason case judged in one Spark job: offset -> reasons of each of its readings."""
    df = judge(bronze_df(spark, [p for p, _ in REASON_CASES]), ruleset)
    result: dict[int, list[list[str]]] = {}
    for row in df.select("offset", "reasons").collect():
        result.setdefault(row.offset, []).append(list(row.reasons))
    return result


@pytest.mark.parametrize(
    "case",
    range(len(REASON_CASES)),
    ids=[f"{code}-{i}" for i, (_, code) in enumerate(REASON_CASES)],
)
def test_each_reason_code(judged_cases: dict[int, list[list[str]]], case: int) -> None:
    payload, code = REASON_CASES[case]
    readings = judged_cases.get(case)
    assert readings, "every record must give at least one row"
    assert all(code in reasons for reasons in readings), (payload, readings)


def test_one_bad_value_rejects_only_that_reading(spark: SparkSession, ruleset: RuleSet) -> None:
    rows = judged_rows(
        spark,
        ruleset,
        b'{"sensor_id":"s-1","timestamp":"2026-01-05T08:00:00Z",'
        b'"temperature":999,"humidity":45,"pressure":1000}',
    )
    by_metric = {r["metric"]: r["reasons"] for r in rows}
    assert by_metric == {"temperature": ["OUT_OF_RANGE"], "humidity": [], "pressure": []}


UNIT_CASES = [  # unit, value -> stored value in the metric's unit
    ("temperature", "°F", 45, 7.2222),
    ("temperature", "F", 70, 21.1111),
    ("temperature", "K", 300, 26.85),
    ("pressure", "kPa", 101.3, 1013.0),
    ("pressure", "Pa", 101300, 1013.0),
    ("energy_consumption", "Wh", 1500, 1.5),
]


@pytest.mark.parametrize(("metric", "unit", "raw", "stored"), UNIT_CASES)
def test_a_known_unit_is_converted_and_flagged(
    spark: SparkSession, ruleset: RuleSet, metric: str, unit: str, raw: float, stored: float
) -> None:
    payload = (
        '{"device_id":"d-1","timestamp":"2026-01-05T08:00:00Z",'
        f'"type":"{metric}","value":{raw},"unit":"{unit}"}}'
    ).encode()
    df = judge(bronze_df(spark, [payload]), ruleset)
    row = df.select("value", "unit", "reasons", "quality_flags").collect()[0]
    assert (round(row.value, 4), row.unit) == (stored, ruleset.metrics[metric].unit)
    assert (row.reasons, row.quality_flags) == ([], ["UNIT_CONVERTED"])


def test_an_unknown_unit_is_rejected_and_the_range_applies_after_conversion(
    spark: SparkSession, ruleset: RuleSet
) -> None:
    def judged(metric: str, value: float, unit: str) -> tuple[list[str], list[str]]:
        payload = (
            '{"device_id":"d-1","timestamp":"2026-01-05T08:00:00Z",'
            f'"type":"{metric}","value":{value},"unit":"{unit}"}}'
        ).encode()
        row = judged_rows(spark, ruleset, payload)[0]
        return row["reasons"], row["quality_flags"]

    assert judged("co2", 700, "ppb") == (["UNIT_MISMATCH"], [])
    assert judged("temperature", 20, "°R")[0] == ["UNIT_MISMATCH"]
    assert judged("temperature", 20, "°C") == ([], [])
    assert judged("temperature", 45, "°C") == ([], [])  # 45 °C is in range
    assert judged("temperature", 140, "°F") == (["OUT_OF_RANGE"], ["UNIT_CONVERTED"])  # 60 °C


TIMESTAMP_CASES = [
    ('"2026-01-05T08:00:00Z"', datetime(2026, 1, 5, 8, 0)),
    ('"2026-01-05T10:00:00+02:00"', datetime(2026, 1, 5, 8, 0)),
    ('"2026-01-05T03:00:00-05:00"', datetime(2026, 1, 5, 8, 0)),
    ('"2026-01-05T08:00:00.250"', datetime(2026, 1, 5, 8, 0, 0, 250000)),  # naive = UTC
    ('"2026-01-05 08:00:00"', datetime(2026, 1, 5, 8, 0)),
    ("1767600000", datetime(2026, 1, 5, 8, 0)),  # epoch seconds
    ("1767600000.5", datetime(2026, 1, 5, 8, 0, 0, 500000)),
    ("1767600000123", datetime(2026, 1, 5, 8, 0, 0, 123000)),  # epoch milliseconds
    ('"1767600000"', datetime(2026, 1, 5, 8, 0)),  # numeric string
]


def test_timestamp_formats(spark: SparkSession, ruleset: RuleSet) -> None:
    payloads = [
        f'{{"sensor_id":"s-1","timestamp":{ts},"temperature":20}}'.encode()
        for ts, _ in TIMESTAMP_CASES
    ]
    rows = (
        judge(bronze_df(spark, payloads), ruleset)
        .select("offset", "event_time", "reasons")
        .collect()
    )
    got = {r.offset: (r.event_time, list(r.reasons)) for r in rows}
    expected = {i: (ts, []) for i, (_, ts) in enumerate(TIMESTAMP_CASES)}
    assert got == expected  # the session time zone is UTC: naive datetimes are UTC


def test_static_alert_flags(
    spark: SparkSession, ruleset: RuleSet, tmp_path: Path, kafka_settings: Settings
) -> None:
    settings = kafka_settings.with_(
        lakehouse_path=str(tmp_path / "lh"), dlq_path=str(tmp_path / "dlq")
    )
    create_silver_tables(spark, settings)
    payloads = [
        b'{"sensor_id":"s-1","timestamp":"2026-01-05T08:00:00Z","temperature":35,"humidity":85}',
        b'{"sensor_id":"s-2","timestamp":"2026-01-05T08:00:00Z","temperature":5,"humidity":50}',
        b'{"sensor_id":"s-3","timestamp":"2026-01-05T08:00:00Z","temperature":20}',
    ]
    SilverBatchWriter(spark, settings, ruleset).write_batch(bronze_df(spark, payloads), 0)
    silver = spark.read.format("delta").load(settings.silver_readings_path)
    got = {(r.sensor_id, r.metric): (r.alert_type, r.severity) for r in silver.collect()}
    assert got == {
        ("s-1", "temperature"): ("HIGH_TEMP", "warning"),
        ("s-1", "humidity"): ("HIGH_HUMIDITY", "warning"),
        ("s-2", "temperature"): ("LOW_TEMP", "warning"),
        ("s-2", "humidity"): (None, None),
        ("s-3", "temperature"): (None, None),
    }


def table_rows(spark: SparkSession, path: str, drop: tuple[str, ...]) -> list[tuple]:
    return sorted(tuple(r) for r in spark.read.format("delta").load(path).drop(*drop).collect())


def test_batch_written_twice_changes_nothing_and_duplicates_are_counted(
    spark: SparkSession, ruleset: RuleSet, tmp_path: Path, kafka_settings: Settings
) -> None:
    settings = kafka_settings.with_(
        lakehouse_path=str(tmp_path / "lh"), dlq_path=str(tmp_path / "dlq")
    )
    create_silver_tables(spark, settings)
    writer = SilverBatchWriter(spark, settings, ruleset)
    batch0 = bronze_df(spark, [WIDE_OK, WIDE_OK, b"garbage", LONG_OK], first_offset=0)
    counts = writer.write_batch(batch0, 0)
    assert counts == {"valid": 4, "rejected": 1, "duplicates": 3}

    def snapshot() -> tuple[list[tuple], list[tuple], list[tuple]]:
        return (
            table_rows(spark, settings.silver_readings_path, ("processed_at",)),
            table_rows(spark, settings.dlq_rejects_path, ("rejected_at", "rejected_date")),
            table_rows(spark, settings.silver_duplicates_path, ("detected_at",)),
        )

    before = snapshot()
    writer.write_batch(batch0, 0)  # replay of the same micro-batch
    assert snapshot() == before

    # A later batch resending the same readings: duplicates of silver, not new rows. Its
    # empty parts (no new reading, no reject) make no commit.
    versions = {
        p: table_version(spark, p)
        for p in (settings.silver_readings_path, settings.dlq_rejects_path)
    }
    counts = writer.write_batch(bronze_df(spark, [LONG_OK, WIDE_OK], first_offset=10), 1)
    assert counts == {"valid": 0, "rejected": 0, "duplicates": 4}
    assert {p: table_version(spark, p) for p in versions} == versions
    silver = spark.read.format("delta").load(settings.silver_readings_path)
    assert silver.count() == 4
    assert (
        silver.groupBy("sensor_id", "metric", "event_time").count().where("count > 1").count() == 0
    )
    dups = spark.read.format("delta").load(settings.silver_duplicates_path)
    assert dups.count() == 7
    assert dups.where("bronze_offset = 10").first()["kept_offset"] == 3

    # Sent twice more in one batch: both copies are duplicates of the row silver keeps
    # (offset 0), not the second of the first copy.
    counts = writer.write_batch(bronze_df(spark, [WIDE_OK, WIDE_OK], first_offset=20), 2)
    assert counts == {"valid": 0, "rejected": 0, "duplicates": 6}
    kept = spark.read.format("delta").load(settings.silver_duplicates_path).where("batch_id = 2")
    assert sorted(r["kept_offset"] for r in kept.collect()) == [0] * 6


def table_version(spark: SparkSession, path: str) -> int:
    from delta.tables import DeltaTable

    return int(DeltaTable.forPath(spark, path).history(1).first()["version"])


def test_classify_keeps_silver_row_else_lowest_lineage(spark: SparkSession) -> None:
    t = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
    key_columns = "sensor_id string, metric string, event_time timestamp, "
    rows = spark.createDataFrame(
        [
            ("a", "temperature", t, "t", 1, 7),  # new key, alone: kept
            ("b", "temperature", t, "t", 0, 9),  # in-batch copies: offset 5 kept
            ("b", "temperature", t, "t", 0, 5),
            ("b", "humidity", t, "t", 0, 6),  # another metric, another key
            ("c", "temperature", t, "t", 0, 3),  # silver holds offset 1: duplicate
            ("d", "temperature", t, "t", 0, 4),  # silver holds this very row (a replay)
            ("e", "temperature", None, "t", 0, 8),  # null keys are one key too
            ("e", "temperature", None, "t", 0, 2),
        ],
        key_columns + "bronze_topic string, bronze_partition int, bronze_offset long",
    )
    held = spark.createDataFrame(
        [("c", "temperature", t, "t", 2, 1), ("d", "temperature", t, "t", 0, 4)],
        key_columns + "kept_topic string, kept_partition int, kept_offset long",
    )
    got = {
        (r.sensor_id, r.metric, r.bronze_offset): (r.kept_partition, r.kept_offset, r.is_duplicate)
        for r in classify_readings(rows, held).collect()
    }
    assert got == {
        ("a", "temperature", 7): (1, 7, False),
        ("b", "temperature", 9): (0, 5, True),
        ("b", "temperature", 5): (0, 5, False),
        ("b", "humidity", 6): (0, 6, False),
        ("c", "temperature", 3): (2, 1, True),
        ("d", "temperature", 4): (0, 4, False),
        ("e", "temperature", 8): (0, 2, True),
        ("e", "temperature", 2): (0, 2, False),
    }


def test_generated_stream_with_bad_input_reconciles_exactly(
    spark: SparkSession, settings: Settings
) -> None:
    produce(settings, 8000, seed=21, sensors=300, rate=1000.0)  # 5 % bad input in all
    start_bronze_stream(spark, settings, available_now=True).awaitTermination(300)
    query = start_silver_stream(spark, settings, available_now=True)
    query.awaitTermination(600)
    assert query.exception() is None
    ledgers = reconcile(spark, settings)
    assert [ledger.name for ledger in ledgers] == ["kafka -> bronze", "bronze -> silver"]
    assert all(ledger.ok for ledger in ledgers), ledgers
    silver_ledger = ledgers[1]
    assert silver_ledger.source == 8000
    assert silver_ledger.parts["dlq"] > 0 and silver_ledger.parts["duplicates"] > 0
    dlq = spark.read.format("delta").load(settings.dlq_rejects_path)
    reasons = {
        r.reason for r in dlq.select(F.explode("reasons").alias("reason")).distinct().collect()
    }
    assert {"MALFORMED_JSON", "NOT_UTF8", "OUT_OF_RANGE"} <= reasons
    assert dlq.where(F.col("detail").isNull() | (F.col("detail") == "")).count() == 0
    silver = spark.read.format("delta").load(settings.silver_readings_path)
    assert (
        silver.groupBy("sensor_id", "metric", "event_time").count().where("count > 1").count() == 0
    )
    for column in ("sensor_id", "metric", "value", "event_time", "event_date"):
        assert silver.where(F.col(column).isNull()).count() == 0, column


def test_tables_of_an_older_version_get_the_new_columns(
    spark: SparkSession, tmp_path: Path
) -> None:
    from pyspark.sql.types import StructType

    from iot_lakehouse.schemas import DLQ_REJECTS, SILVER_READINGS, create_table_if_missing

    settings = Settings.from_env({}).with_(
        lakehouse_path=str(tmp_path / "lakehouse"), dlq_path=str(tmp_path / "dlq")
    )
    older = StructType([f for f in SILVER_READINGS if f.name != "kafka_timestamp"])
    create_table_if_missing(spark, settings.silver_readings_path, older, ["event_date"])
    spark.createDataFrame(
        [("s-1", "temperature", 21.5)], "sensor_id string, metric string, value double"
    ).withColumn("event_date", F.current_date()).write.format("delta").mode("append").save(
        settings.silver_readings_path
    )

    create_silver_tables(spark, settings)
    silver = spark.read.format("delta").load(settings.silver_readings_path)
    assert [f.name for f in silver.schema] == [
        f.name for f in SILVER_READINGS if f.name != "kafka_timestamp"
    ] + ["kafka_timestamp"]
    assert silver.where(F.col("kafka_timestamp").isNull()).count() == 1  # old rows: unknown
    dlq = spark.read.format("delta").load(settings.dlq_rejects_path)
    assert {f.name for f in dlq.schema} == {f.name for f in DLQ_REJECTS}
