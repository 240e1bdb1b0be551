"""silver -> gold: equal to a batch recomputation; watermark, late data, replay, SIGKILL."""

from __future__ import annotations

from iot_lakehouse.pipeline.gold import GOLD_TABLES
from iot_lakehouse.pipeline.windows import (
    BatchWatermarks,
    window_start_range,
)
from tests.support.gold import at, us

MINUTE_US = 60 * 1_000_000
TABLES = {t.name: t for t in GOLD_TABLES}


def test_watermark_moves_with_the_latest_event_time() -> None:
    delay = 10 * MINUTE_US
    first = BatchWatermarks(watermark_us=None, max_event_us=us(at(21)), delay_us=delay)
    assert first.next_watermark_us == us(at(11))
    assert first.passed_window_end()  # windows up to 08:10 are final after the first batch
    same_step = BatchWatermarks(us(at(11)), us(at(24)), delay)  # watermark 08:11 -> 08:14
    assert not same_step.passed_window_end()
    next_step = BatchWatermarks(us(at(14)), us(at(25)), delay)  # 08:14 -> 08:15: 08:15 passed
    assert next_step.passed_window_end()
    assert BatchWatermarks(None, None, delay).next_watermark_us is None


def test_window_start_range_holds_exactly_the_windows_of_the_event_times() -> None:
    tumbling, sliding = TABLES["sensor_metrics_5m"], TABLES["sensor_metrics_10m_sliding"]
    lo, hi = us(at(12, 30)), us(at(21, 5))
    assert window_start_range(tumbling, lo, hi) == (us(at(10)), us(at(20)))
    assert window_start_range(sliding, lo, hi) == (us(at(5)), us(at(20)))
    # on a boundary: the window that starts there, not the one that ends there
    assert window_start_range(tumbling, us(at(10)), us(at(15))) == (us(at(10)), us(at(15)))
    assert window_start_range(sliding, us(at(10)), us(at(10))) == (us(at(5)), us(at(10)))
