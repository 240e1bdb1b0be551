"""Starting a layer's query: each batch runs with the expression mode its size calls for."""

from __future__ import annotations

import pytest
from pyspark.sql import DataFrame, SparkSession

from iot_lakehouse.pipeline.streaming import sized
from iot_lakehouse.settings import Settings


def test_a_sink_runs_interpreted_while_the_drivers_batches_are_small(
    spark: SparkSession, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from iot_lakehouse.runtime import stream_metrics
    from iot_lakehouse.runtime.spark_session import EXPRESSION_MODE, GENERATED, INTERPRETED

    latest: dict[str, int] = {}
    monkeypatch.setattr(stream_metrics, "LATEST_INPUT_ROWS", latest)
    monkeypatch.setattr("iot_lakehouse.pipeline.streaming.LATEST_INPUT_ROWS", latest)
    seen: list[str] = []

    def sink(batch: DataFrame, _batch_id: int) -> None:
        seen.append(batch.sparkSession.conf.get(EXPRESSION_MODE, GENERATED))
        assert batch.count() == 3  # and the batch runs in that mode

    run = sized(sink, spark, settings.with_(interpreted_below_rows=1_000), "silver")
    batch = spark.newSession().range(3).toDF("id")  # a query's own session, as a stream's
    try:
        run(batch, 0)  # no batch seen yet: generated code
        latest.update(bronze=200, silver=900)
        run(batch, 1)
        assert spark.conf.get(EXPRESSION_MODE) == INTERPRETED  # the driver's: all small
        latest.update(gold=5_000)  # another job's backlog batch: only the driver's changes
        run(batch, 2)
        assert spark.conf.get(EXPRESSION_MODE) == GENERATED
        latest.update(silver=5_000)  # its own backlog batch
        run(batch, 3)
    finally:
        spark.conf.set(EXPRESSION_MODE, GENERATED)
    assert seen == [GENERATED, INTERPRETED, INTERPRETED, GENERATED]
