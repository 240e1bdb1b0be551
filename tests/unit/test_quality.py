"""Great Expectations suite built from the rule file: its counts equal the DLQ's, rule by rule."""

from __future__ import annotations

from iot_lakehouse.pipeline.quality import GX_EXPECTATIONS
from iot_lakehouse.pipeline.rules import EXPECTATIONS


def test_every_check_has_a_gx_expectation() -> None:
    assert set(GX_EXPECTATIONS) == set(EXPECTATIONS)
