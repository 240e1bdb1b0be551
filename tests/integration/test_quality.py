"""Great Expectations suite built from the rule file: its counts equal the DLQ's, rule by rule."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from iot_lakehouse.pipeline.quality import QualityValidator, unexpected_by_rule
from iot_lakehouse.pipeline.rules import load_rules
from iot_lakehouse.pipeline.silver import SilverBatchWriter, create_silver_tables
from iot_lakehouse.settings import Settings
from iot_lakehouse.sources.generator import EventGenerator, GeneratorConfig
from tests.support.silver import REASON_CASES, bronze_df


def test_gx_unexpected_counts_equal_dlq_counts_per_rule(
    spark: SparkSession, tmp_path: Path
) -> None:
    ruleset = load_rules()
    config = GeneratorConfig(
        sensors=50,
        rate=1000.0,
        count=3000,
        seed=99,
        format="mixed",
        malformed_fraction=0.05,
        invalid_fraction=0.1,
        duplicate_fraction=0.05,
        late_fraction=0.05,
        start_time=datetime(2026, 1, 5, 7, 0, tzinfo=UTC),
    )
    generator = EventGenerator(config)
    payloads: list[bytes | None] = [generator.generate_event(i).value for i in range(3000)]
    payloads += [p for p, _ in REASON_CASES]  # makes sure every rule fires at least once
    payloads.append(
        b'{"device_id":"d-9","timestamp":"2026-01-05T08:00:00Z","type":"temperature",'
        b'"value":70,"unit":"\xc2\xb0F"}'
    )  # the warn rule (a converted unit)
    payloads.append(
        b'{"device_id":"d-9","timestamp":"2026-01-05T08:00:00Z","type":"co2",'
        b'"value":700,"unit":"ppb"}'
    )  # a unit it does not convert
    settings = Settings.from_env({}).with_(
        lakehouse_path=str(tmp_path / "lh"),
        dlq_path=str(tmp_path / "dlq"),
        quality_every_n_batches=1,
    )
    create_silver_tables(spark, settings)
    writer = SilverBatchWriter(spark, settings, ruleset)
    writer.write_batch(
        bronze_df(spark, payloads, ingest=datetime(2026, 1, 5, 8, 0, 30, tzinfo=UTC)), 0
    )
    writer.wait_for_validation()  # Great Expectations runs after the batch, in the background

    dlq = spark.read.format("delta").load(settings.dlq_rejects_path)
    dlq_counts = {
        r.code: r["count"]
        for r in dlq.select(F.explode("reasons").alias("code")).groupBy("code").count().collect()
    }
    silver = spark.read.format("delta").load(settings.silver_readings_path)
    flag_counts = {
        r.code: r["count"]
        for r in silver.select(F.explode("quality_flags").alias("code"))
        .groupBy("code")
        .count()
        .collect()
    }

    quality = spark.read.format("delta").load(settings.quality_results_path)
    assert quality.where(F.col("error").isNotNull()).count() == 0
    gx_counts = {
        r.rule_code: r.total
        for r in quality.groupBy("rule_code")
        .agg(F.sum("unexpected_count").alias("total"))
        .collect()
    }

    assert set(gx_counts) == {r.code for r in ruleset.rules}
    for code in ruleset.error_codes:
        assert dlq_counts.get(code, 0) > 0, f"{code} never fired: the comparison would be empty"
        assert gx_counts[code] == dlq_counts[code], code
    for code in ruleset.warn_codes:
        assert gx_counts[code] == flag_counts.get(code, 0) > 0, code


def test_validator_reports_one_result_per_check(spark: SparkSession) -> None:
    ruleset = load_rules()
    from iot_lakehouse.pipeline.silver import judge

    judged = judge(
        bronze_df(
            spark, [b'{"sensor_id":"s","timestamp":"2026-01-05T08:00:00Z","temperature":99}']
        ),
        ruleset,
    )
    results = QualityValidator(ruleset).validate(judged)
    assert len(results) == sum(len(r.checks) for r in ruleset.rules)
    assert unexpected_by_rule(results)["OUT_OF_RANGE"] == 1
    assert all(r.error is None for r in results)
