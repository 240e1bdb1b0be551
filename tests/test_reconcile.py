"""``iot-lakehouse reconcile``: each ledger catches what it promises to, on real Kafka and Delta."""

from __future__ import annotations

from pyspark.sql import SparkSession

from iot_lakehouse.bronze import start_bronze_stream
from iot_lakehouse.generator_api import delete_records
from iot_lakehouse.reconcile import kafka_bronze_ledger
from iot_lakehouse.settings import Settings
from iot_lakehouse.status import kafka_watermarks
from tests.conftest import produce


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
