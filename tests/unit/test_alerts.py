"""The alerts job on crafted silver tables: every type fires, clean data stays quiet, silence
needs no further input, counts follow gold/alerts, Kafka gets the alerts, restarts are exact."""

from __future__ import annotations

from iot_lakehouse.pipeline.alerts import clock_tick_ms


def test_the_wall_clock_moves_event_time_on_only_after_the_grace() -> None:
    assert clock_tick_ms(None, 90_000, 60_000) is None  # nothing seen yet
    assert clock_tick_ms(1_000_000, 60_000, 60_000) is None  # within the grace
    assert clock_tick_ms(1_000_000, 90_000, 60_000) == 1_030_000
