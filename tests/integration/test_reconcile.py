"""``iot-lakehouse reconcile``: each ledger catches what it promises to, on real Kafka and Delta."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from pathlib import Path

from delta.tables import DeltaTable
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from iot_lakehouse.ops.reconcile import (
    bronze_silver_ledger,
    kafka_bronze_ledger,
    reconcile,
    silver_gold_ledger,
)
from iot_lakehouse.pipeline.bronze import conform, start_bronze_stream, to_bronze_events
from iot_lakehouse.pipeline.jobs import JOBS, await_queries
from iot_lakehouse.pipeline.rules import default_rules_file
from iot_lakehouse.pipeline.silver import start_silver_stream
from iot_lakehouse.runtime.kafka_cleanup import delete_records
from iot_lakehouse.runtime.kafka_offsets import kafka_watermarks
from iot_lakehouse.settings import Settings
from iot_lakehouse.sources.generator import GeneratorConfig
from tests.conftest import produce, write_generated_bronze

INGEST = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)
START = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)


def test_records_kafka_deleted_before_bronze_read_them_are_reported_as_never_read(
    spark: SparkSession, settings: Settings
) -> None:
    produce(settings, 300, seed=1, bad_fraction=0.0)
    start_bronze_stream(spark, settings, available_now=True).awaitTermination(300)
    produce(settings, 200, seed=2, bad_fraction=0.0)
    marks = kafka_watermarks(settings)
    assert marks is not None
    # e.g. retention, or POST /clean?force=true: 200 records go before bronze reads them
    delete_records(settings, settings.kafka_topic, {p: high for p, (_, high) in marks.items()})
    produce(settings, 100, seed=3, bad_fraction=0.0)
    # The hint's way past the missing offsets: bronze skips them without a word.
    lenient = settings.with_(fail_on_data_loss=False)
    start_bronze_stream(spark, lenient, available_now=True).awaitTermination(300)

    ranges = kafka_watermarks(settings)
    assert ranges is not None
    ledger = kafka_bronze_ledger(spark, settings, ranges)
    assert not ledger.ok, ledger
    assert (ledger.source, ledger.missing, ledger.extra) == (600, 200, 0), ledger
    assert ledger.parts == {"bronze": 400, "never_read": 200}, ledger


def write_bronze(
    spark: SparkSession, settings: Settings, records: list[object], topic: str
) -> None:
    """Append ``records`` (as JSON) to bronze as offsets 0.. of ``topic``."""
    rows = [(b"k", json.dumps(r).encode(), topic, 0, i, INGEST) for i, r in enumerate(records)]
    kafka_like = spark.createDataFrame(
        rows,
        "key binary, value binary, topic string, partition int, offset long, timestamp timestamp",
    )
    bronze = (
        to_bronze_events(kafka_like)
        .withColumn("ingest_time", F.lit(INGEST))
        .withColumn("ingest_date", F.to_date(F.lit(INGEST)))
    )
    conform(bronze).coalesce(1).write.format("delta").mode("append").partitionBy(
        "ingest_date"
    ).save(settings.bronze_events_path)


def rules_with_voc(folder: Path) -> Path:
    """The packaged silver rules plus a metric ``voc``, as version ``2027.1.1``."""
    text = default_rules_file().read_text()
    anchor = "  humidity:"
    assert anchor in text and 'version: "2026.12.1"' in text, "update this helper"
    text = text.replace(anchor, '  voc: {unit: "ppb", min_value: 0, max_value: 5000}\n' + anchor)
    path = folder / "rules_with_voc.yml"
    path.write_text(text.replace('version: "2026.12.1"', 'version: "2027.1.1"'))
    return path


def run_silver(spark: SparkSession, settings: Settings) -> None:
    query = start_silver_stream(spark, settings, available_now=True)
    query.awaitTermination(600)
    assert query.exception() is None


def test_each_record_is_reconciled_under_the_rules_it_was_processed_with(
    spark: SparkSession, settings: Settings, tmp_path: Path
) -> None:
    def wide(sensor: str, minute: int) -> dict[str, object]:
        at = f"2026-12-06T08:{minute:02d}:00Z"
        readings = {"temperature": 21.5, "humidity": 40, "voc": 300}
        return {"sensor_id": sensor, "timestamp": at, **readings}

    # Processed under 2026.12.1, which has no voc metric: two readings a record.
    write_bronze(spark, settings, [wide("s-1", 1), wide("s-2", 2), "not an object"], "old")
    run_silver(spark, settings)
    # The voc metric arrives (2027.1.1): the records silver reads from now on give three.
    new_rules = settings.with_(silver_rules_file=rules_with_voc(tmp_path))
    write_bronze(spark, settings, [wide("s-1", 3), wide("s-3", 4)], "new")
    run_silver(spark, new_rules)

    ledger = bronze_silver_ledger(spark, new_rules)
    assert ledger.ok, ledger
    assert ledger.parts == {"readings": 11, "silver": 10, "dlq": 1, "duplicates": 0}, ledger

    # A reading lost from silver is still found under the old version.
    DeltaTable.forPath(spark, settings.silver_readings_path).delete(
        "bronze_topic = 'old' AND bronze_offset = 0 AND metric = 'temperature'"
    )
    ledger = bronze_silver_ledger(spark, new_rules)
    assert (ledger.missing, ledger.extra) == (1, 0), ledger


def test_gold_ledgers_cover_the_sliding_location_and_alert_count_tables(
    spark: SparkSession, settings: Settings, tmp_path: Path
) -> None:
    rules = (
        default_rules_file().read_text().replace("temperature, above: 30", "temperature, above: 22")
    )
    (tmp_path / "rules.yml").write_text(rules)
    settings = settings.with_(silver_rules_file=tmp_path / "rules.yml", quality_every_n_batches=0)
    config = GeneratorConfig(
        sensors=8, count=1200, rate=2.0, seed=4, late_fraction=0.05, start_time=START
    )
    write_generated_bronze(spark, settings, config, parts=2)
    for job in ("silver", "gold", "alerts"):
        started = JOBS[job](spark, settings, True)
        await_queries(job, started if isinstance(started, list) else [started], threading.Event())
    ledgers = {ledger.name: ledger for ledger in reconcile(spark, settings)}
    assert all(ledger.ok for ledger in ledgers.values()), ledgers
    gold = ledgers["silver -> gold"]
    assert gold.parts.get("sensor_metrics_10m_sliding", 0) > 0, gold

    # One window row lost from each table the 5-minute ledger alone did not look at.
    lost = 0
    for name in ("sensor_metrics_10m_sliding", "location_metrics_5m"):
        table = DeltaTable.forPath(spark, settings.gold_path(name))
        row = (
            table.toDF()
            .orderBy("window_start", "location" if "location" in name else "sensor_id")
            .first()
        )
        assert row is not None
        lost += row["count"]
        keys = ("sensor_id", "metric") if "sensor" in name else ("location", "metric")
        table.delete(
            (F.col("window_start") == F.lit(row["window_start"]))
            & F.col(keys[0]).eqNullSafe(F.lit(row[keys[0]]))
            & (F.col("metric") == F.lit(row["metric"]))
        )
    gold = silver_gold_ledger(spark, settings)
    assert (gold.missing, gold.extra) == (lost, 0), gold
    assert "alerts -> counts" in ledgers and ledgers["alerts -> counts"].source > 0, ledgers
    counts = DeltaTable.forPath(spark, settings.gold_path("alert_counts_5m"))
    row = counts.toDF().orderBy("window_start").first()
    assert row is not None
    counts.update(F.col("window_start") == F.lit(row["window_start"]), {"alert_count": F.lit(0)})
    alerts = next(x for x in reconcile(spark, settings) if x.name == "alerts -> counts")
    assert alerts.missing > 0 and not alerts.ok, alerts
