"""Every table is declared once, in the catalog, and everything that names tables agrees."""

from __future__ import annotations

from pathlib import Path

import pytest

from iot_lakehouse import catalog
from iot_lakehouse.errors import ConfigError
from iot_lakehouse.interfaces.dashboard import table_paths
from iot_lakehouse.ops.dlq import history_path
from iot_lakehouse.ops.maintain import lakehouse_tables, merged_window_tables
from iot_lakehouse.pipeline.layers import LAYERS
from iot_lakehouse.settings import Settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings.from_env({}).with_(
        lakehouse_path=str(tmp_path / "lake"), dlq_path=str(tmp_path / "dlq")
    )


def test_names_are_unique_and_each_lives_under_its_root(settings: Settings) -> None:
    names = [t.name for t in catalog.TABLES]
    assert len(names) == len(set(names)) == len(catalog.BY_NAME)
    for table in catalog.TABLES:
        folder, _, rest = table.name.partition("/")
        root = settings.dlq_path if folder == "dlq" else f"{settings.lakehouse_path}/{folder}"
        assert table.path(settings) == f"{root}/{rest}", table.name
    with pytest.raises(ConfigError, match="not a lakehouse table"):
        catalog.table("silver/nope")


def test_settings_paths_are_the_catalogs(settings: Settings) -> None:
    expected = {
        "bronze/sensor_events": settings.bronze_events_path,
        "silver/readings": settings.silver_readings_path,
        "dlq/silver_rejects": settings.dlq_rejects_path,
        "dlq/redrive_history": history_path(settings),
        "_ops/silver_duplicates": settings.silver_duplicates_path,
        "_ops/quality": settings.quality_results_path,
        "_ops/gold_late_readings": settings.gold_late_readings_path,
        "_ops/gold_progress": settings.gold_progress_path,
        "_ops/alerts_clock": settings.alerts_clock_path,
        "_ops/stream_metrics": settings.stream_metrics_path,
        "gold/alerts": settings.alerts_path,
        "gold/sensor_metrics_5m": settings.gold_path("sensor_metrics_5m"),
    }
    assert {n: catalog.table(n).path(settings) for n in expected} == expected
    assert settings.dlq_rejects_path == str(Path(settings.dlq_path) / "silver_rejects")


def test_maintain_rerun_all_and_the_dashboard_read_the_catalog(settings: Settings) -> None:
    paths = {t.path(settings) for t in catalog.TABLES}
    assert [t.name for t in lakehouse_tables(settings)] == [t.name for t in catalog.TABLES]
    assert set(merged_window_tables(settings)) == {t.name for t in catalog.TABLES if t.merged}
    assert set(table_paths(settings).values()) <= paths
    assert len(table_paths(settings)) == sum(t.on_dashboard for t in catalog.TABLES)
    rebuilt = {table.path(settings) for layer in LAYERS.values() for table in layer.tables}
    assert rebuilt <= paths, f"rerun names tables the catalog lacks: {sorted(rebuilt - paths)}"
