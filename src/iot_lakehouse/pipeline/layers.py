"""The layers of the pipeline as data: each layer's job checkpoints, the tables it writes
(and which of their rows a rebuild deletes) and the layers that read it.

``rerun`` rebuilds from this table; a job that lost its checkpoint checks these tables for
rows it wrote before (``checkpoints.refuse_lost_checkpoint``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

from pyspark.sql import Column
from pyspark.sql import functions as F

from iot_lakehouse.pipeline.alerts import ALERT_COUNTS_TABLE
from iot_lakehouse.pipeline.gold import GOLD_TABLES, ROLLUPS
from iot_lakehouse.settings import Settings

# Which rows of a table a rebuild deletes: None = all of them.
RowFilter = Callable[[Settings, date | None], Column | None]


def _all_rows(_settings: Settings, _since: date | None) -> Column | None:
    return None


def kafka_rows(settings: Settings, _since: date | None = None) -> Column:
    """Bronze rows that came from the Kafka topic (file-source rows are not rebuilt)."""
    return F.col("topic") == settings.kafka_topic


def _ingested_since(_settings: Settings, since: date | None) -> Column | None:
    """Rows of bronze records ingested on or after ``since`` (all rows without it)."""
    return None if since is None else F.to_date("bronze_ingest_time") >= F.lit(since)


def _gold_table(name: str) -> Callable[[Settings], str]:
    return lambda settings: settings.gold_path(name)


@dataclass(frozen=True)
class LayerTable:
    """A table a layer's job writes, and which of its rows a rebuild deletes."""

    path: Callable[[Settings], str]
    rows: RowFilter = _all_rows
    by_bronze_coordinates: bool = False  # no ingest time: match bronze rows by coordinates


@dataclass(frozen=True)
class Layer:
    """One rebuildable layer: its job's checkpoints, its tables and the layers reading it."""

    checkpoints: tuple[str, ...]
    tables: tuple[LayerTable, ...]
    downstream: tuple[str, ...]
    supports_from: bool = False


LAYERS: dict[str, Layer] = {
    "bronze": Layer(
        ("bronze",),
        (LayerTable(lambda s: s.bronze_events_path, kafka_rows),),
        ("silver",),
    ),
    "silver": Layer(
        ("silver",),
        (
            LayerTable(lambda s: s.silver_readings_path, _ingested_since),
            LayerTable(lambda s: s.dlq_rejects_path, _ingested_since),
            LayerTable(lambda s: s.silver_duplicates_path, by_bronze_coordinates=True),
        ),
        ("gold", "alerts"),
        supports_from=True,
    ),
    "gold": Layer(
        ("gold",),
        (
            *(LayerTable(_gold_table(t.name)) for t in GOLD_TABLES),
            *(LayerTable(_gold_table(r.table.name)) for r in ROLLUPS),
            LayerTable(lambda s: s.gold_late_readings_path),
            LayerTable(lambda s: s.gold_progress_path),
        ),
        (),
    ),
    "alerts": Layer(
        ("alerts",),
        (
            LayerTable(lambda s: s.alerts_path),
            LayerTable(lambda s: s.gold_path(ALERT_COUNTS_TABLE.name)),
        ),
        (),
    ),
}


def layer_table_paths(layer: str, settings: Settings) -> list[str]:
    """The paths of every table ``layer``'s job writes."""
    return [table.path(settings) for table in LAYERS[layer].tables]
