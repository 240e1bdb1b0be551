"""Helpers the maintain tests of tests/integration and tests/unit share."""

from __future__ import annotations

import argparse
from datetime import date

import pytest
from pyspark.sql import SparkSession

from iot_lakehouse.ops.maintain import add_maintain_arguments
from iot_lakehouse.settings import Settings

APPENDS = 20
DATES = (date(2026, 1, 5), date(2026, 1, 6))
SCHEMA = "sensor_id string, value double, event_date date"


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_maintain_arguments(parser)
    return parser.parse_args(list(argv))


@pytest.fixture(scope="module")
def lake(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings whose bronze table has many small files: 20 appends x 2 partitions."""
    root = tmp_path_factory.mktemp("maintain")
    settings = Settings.from_env({}).with_(
        lakehouse_path=str(root / "lakehouse"), dlq_path=str(root / "dlq")
    )
    for i in range(APPENDS):
        rows = [(f"s{i}", float(i) + 0.5, DATES[0]), (f"s{i}", None, DATES[1])]
        spark.createDataFrame(rows, SCHEMA).coalesce(1).write.format("delta").mode(
            "append"
        ).partitionBy("event_date").save(settings.bronze_events_path)
    return settings
