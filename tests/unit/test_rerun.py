"""``iot-lakehouse rerun``: rebuild a layer after a rule change, on real Delta tables."""

from __future__ import annotations

import pytest

from iot_lakehouse.errors import JobError
from iot_lakehouse.ops.rerun import layers_to_rebuild


def test_layers_to_rebuild_in_pipeline_order() -> None:
    assert layers_to_rebuild("silver", cascade=False) == ["silver"]
    assert layers_to_rebuild("silver", cascade=True) == ["silver", "gold", "alerts"]
    assert layers_to_rebuild("bronze", cascade=True) == ["bronze", "silver", "gold", "alerts"]
    assert layers_to_rebuild("gold", cascade=True) == ["gold"]
    with pytest.raises(JobError, match="unknown layer 'platinum'"):
        layers_to_rebuild("platinum", cascade=False)
