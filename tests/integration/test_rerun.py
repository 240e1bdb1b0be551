"""``iot-lakehouse rerun``: rebuild a layer after a rule change, on real Delta tables."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from pyspark.sql import DataFrame, Row, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import BinaryType
from pyspark.testing import assertDataFrameEqual

from iot_lakehouse.errors import JobError
from iot_lakehouse.ops.reconcile import bronze_silver_ledger, silver_gold_ledger
from iot_lakehouse.ops.rerun import rerun
from iot_lakehouse.pipeline.alerts import ALERT_COUNTS_TABLE
from iot_lakehouse.pipeline.gold import GOLD_TABLES
from iot_lakehouse.pipeline.jobs import JOBS, await_queries, lock_file
from iot_lakehouse.settings import PROJECT_ROOT, Settings
from iot_lakehouse.sources.generator import GeneratorConfig
from tests.conftest import stricter_rules, write_generated_bronze

DAY1, DAY2 = date(2026, 1, 5), date(2026, 1, 6)
# Columns that say when or in which micro-batch a row was written, not what it holds.
WRITE_TIME_COLUMNS = {
    "processed_at",
    "batch_id",
    "rejected_at",
    "rejected_date",
    "detected_at",
    "updated_at",
    "committed_at",
}


SILVER_TABLES = ("silver", "dlq", "duplicates")


def run_pipeline(
    spark: SparkSession, settings: Settings, jobs: tuple[str, ...] = ("silver", "gold", "alerts")
) -> None:
    """The jobs to the end of their input, as `run <job> --available-now`."""
    for job in jobs:
        started = JOBS[job](spark, settings, True)
        await_queries(job, started if isinstance(started, list) else [started], threading.Event())


def tables(settings: Settings) -> dict[str, str]:
    """Every table the silver, gold and alerts jobs write."""
    return {
        "silver": settings.silver_readings_path,
        "dlq": settings.dlq_rejects_path,
        "duplicates": settings.silver_duplicates_path,
        "late": settings.gold_late_readings_path,
        "alerts": settings.alerts_path,
        ALERT_COUNTS_TABLE.name: settings.gold_path(ALERT_COUNTS_TABLE.name),
        **{t.name: settings.gold_path(t.name) for t in GOLD_TABLES},
    }


def content(spark: SparkSession, path: str) -> DataFrame:
    """A table without write-time columns and sketches (their bytes depend on input order)."""
    df = spark.read.format("delta").load(path)
    keep = [
        f.name
        for f in df.schema
        if f.name not in WRITE_TIME_COLUMNS and not isinstance(f.dataType, BinaryType)
    ]
    return df.select(*keep)


def silver_of_day1(spark: SparkSession, settings: Settings) -> list[Row]:
    """Silver rows of the records ingested on DAY1, without their rule version."""
    day1 = F.to_date("bronze_ingest_time") == F.lit(DAY1)
    silver = content(spark, settings.silver_readings_path)
    return silver.where(day1).drop("rule_version").collect()


def test_rerun_silver_cascade_after_a_rule_change_equals_a_fresh_pipeline(
    spark: SparkSession, settings: Settings, tmp_path: Path
) -> None:
    for day, topic in ((DAY1, "generated"), (DAY2, "generated-2")):
        config = GeneratorConfig(
            sensors=30,
            count=1500,
            rate=5.0,
            seed=day.day,
            malformed_fraction=0.02,
            invalid_fraction=0.03,
            duplicate_fraction=0.02,
            start_time=datetime(day.year, day.month, day.day, 8, 0, tzinfo=UTC),
        )
        write_generated_bronze(spark, settings, config, parts=2, topic=topic)
    run_pipeline(spark, settings, ("silver",))
    silver_tables = {k: v for k, v in tables(settings).items() if k in SILVER_TABLES}
    before = {name: content(spark, path).collect() for name, path in silver_tables.items()}
    before_day1 = silver_of_day1(spark, settings)
    new_rules = settings.with_(silver_rules_file=stricter_rules(tmp_path))

    # Refusals, before anything changes.
    with pytest.raises(JobError, match="--from applies to silver"):
        rerun(spark, new_rules, "gold", since=DAY2)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from iot_lakehouse.pipeline.jobs import job_lock\n"
            "from iot_lakehouse.settings import Settings\n"
            f"with job_lock(Settings.from_env({{}}).with_(lakehouse_path={settings.lakehouse_path!r}), 'silver'):\n"  # noqa: E501
            "    print('locked', flush=True); time.sleep(60)\n",
        ],
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(JobError, match=r"silver is running \(pid \d+"):
            rerun(spark, new_rules, "silver")
    finally:
        holder.kill()
        holder.wait()
    assert lock_file(settings, "silver").exists()
    for name, path in silver_tables.items():
        assertDataFrameEqual(content(spark, path).collect(), before[name])

    # --from: the records ingested on DAY2 are judged by the new rules, DAY1's stay as they were.
    report = rerun(spark, new_rules, "silver", since=DAY2)
    assert report.layers == ["silver"]
    silver = spark.read.format("delta").load(settings.silver_readings_path)
    versions = {
        (r.day, r.rule_version)
        for r in silver.select(F.to_date("bronze_ingest_time").alias("day"), "rule_version")
        .distinct()
        .collect()
    }
    assert {day for day, _ in versions} == {DAY1, DAY2}
    assert all(v.startswith("stricter-") == (day == DAY2) for day, v in versions), versions
    assertDataFrameEqual(silver_of_day1(spark, settings), before_day1)
    assert bronze_silver_ledger(spark, settings).ok

    # With gold and alerts reading silver, silver alone is not rebuilt.
    run_pipeline(spark, settings, ("gold", "alerts"))
    with pytest.raises(JobError, match=r"gold reads silver as a stream.*--cascade"):
        rerun(spark, new_rules, "silver")

    # Everything with the new rules equals a fresh pipeline with the new rules.
    report = rerun(spark, new_rules, "silver", cascade=True)
    assert len(report.backups) == 3 and all("/_backup/" in dst for _, dst in report.backups)
    assert all(Path(dst).is_dir() for _, dst in report.backups)
    assert f"RESTORE TABLE delta.`{settings.silver_readings_path}` TO VERSION AS OF" in (
        report.describe()
    )
    fresh = new_rules.with_(
        lakehouse_path=str(tmp_path / "fresh" / "lakehouse"),
        dlq_path=str(tmp_path / "fresh" / "dlq"),
    )
    shutil.copytree(settings.bronze_events_path, fresh.bronze_events_path)
    run_pipeline(spark, fresh)
    for name, path in tables(settings).items():
        got = content(spark, path)
        assertDataFrameEqual(got, content(spark, tables(fresh)[name]))
    assert silver_gold_ledger(spark, settings).ok
    rebuilt_silver = content(spark, settings.silver_readings_path).count()
    assert rebuilt_silver < len(before["silver"]), "the stricter rule rejected nothing"
    assert spark.read.format("delta").load(settings.dlq_rejects_path).where(
        F.array_contains("reasons", "OUT_OF_RANGE")
    ).count() > sum(1 for r in before["dlq"] if "OUT_OF_RANGE" in r.reasons)


def test_rerun_silver_from_refuses_while_silver_has_not_read_older_bronze_records(
    spark: SparkSession, settings: Settings, tmp_path: Path
) -> None:
    def day_config(day: date, seed: int, hour: int) -> GeneratorConfig:
        start = datetime(day.year, day.month, day.day, hour, 0, tzinfo=UTC)
        return GeneratorConfig(sensors=5, count=200, rate=5.0, seed=seed, start_time=start)

    write_generated_bronze(spark, settings, day_config(DAY1, 1, 8), parts=1, topic="early")
    run_pipeline(spark, settings, ("silver",))
    # Ingested on DAY1 too, after silver stopped: silver has not read these 200 records yet.
    write_generated_bronze(spark, settings, day_config(DAY1, 2, 12), parts=1, topic="backlog")
    write_generated_bronze(spark, settings, day_config(DAY2, 3, 8), parts=1, topic="late")
    new_rules = settings.with_(silver_rules_file=stricter_rules(tmp_path))

    unread = r"silver has not read 200 bronze records ingested before 2026-01-06"
    with pytest.raises(JobError, match=unread) as err:
        rerun(spark, new_rules, "silver", since=DAY2)
    assert "iot-lakehouse run silver --available-now" in str(err.value)
    with pytest.raises(JobError, match="--from 2999-01-01 is after today"):
        rerun(spark, new_rules, "silver", since=date(2999, 1, 1))
    assert not Path(settings.checkpoint_path("_backup")).exists()  # nothing changed

    run_pipeline(spark, settings, ("silver",))  # what the refusal says to do
    rerun(spark, new_rules, "silver", since=DAY2)
    ledger = bronze_silver_ledger(spark, settings)
    assert ledger.ok and ledger.source == 600, ledger
