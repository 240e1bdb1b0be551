"""The Spark session factory's choices: expression mode by the driver's batch sizes."""

from __future__ import annotations

from iot_lakehouse.runtime.spark_session import GENERATED, INTERPRETED, expression_mode


def test_small_batches_everywhere_run_interpreted() -> None:
    assert expression_mode({"silver": 3_000, "gold": 9_999}, below=10_000) == INTERPRETED


def test_one_large_batch_or_none_seen_keeps_generated_code() -> None:
    assert expression_mode({"silver": 3_000, "bronze": 10_000}, below=10_000) == GENERATED
    assert expression_mode({}, below=10_000) == GENERATED  # a start: maybe a backlog
    assert expression_mode({"silver": 10}, below=0) == GENERATED  # switched off
