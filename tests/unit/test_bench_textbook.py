"""bench_textbook: the textbook one-hop job the bench sets beside ours. Its ranges come from the
silver rules; run for real (its own process, the session broker, ``--available-now``) it keeps
exactly the parseable in-range long-format readings and logs its batches the way the bench
reads them."""

from __future__ import annotations

from iot_lakehouse.benchmarks.bench_textbook import metric_ranges
from iot_lakehouse.pipeline.rules import DOUBLE_MAX


def test_ranges_are_the_silver_rules_and_an_open_bound_is_the_largest_double() -> None:
    ranges = metric_ranges()
    assert ranges["temperature"] == (-50.0, 50.0)
    assert ranges["energy_consumption"] == (0.0, DOUBLE_MAX)
    assert set(ranges) == {"temperature", "humidity", "pressure", "co2", "energy_consumption"}
