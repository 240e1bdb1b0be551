"""Every Delta table of the lakehouse, declared once: its name, where it lives, its columns, its
partitioning, the layer it belongs to and the job that writes it.

The settings' table paths, the jobs' table creation, ``maintain``, ``all``'s scheduled VACUUM
and the dashboard read it; ``tests/unit/test_catalog.py`` holds gold's window-table definitions and
the schemas to it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from iot_lakehouse import schemas
from iot_lakehouse.errors import ConfigError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession
    from pyspark.sql.types import StructType

    from iot_lakehouse.settings import Settings

DLQ_FOLDER = "dlq/"  # tables under DLQ_PATH; every other one is under LAKEHOUSE_PATH


@dataclass(frozen=True)
class Table:
    """One Delta table: ``name`` is ``<folder>/<table>`` (``silver/readings``)."""

    name: str
    layer: str  # bronze | silver | gold | alerts | ops
    written_by: str  # the job (or command) that writes it
    schema: StructType | None  # None: written by deltalake with its own schema (stream metrics)
    partition_by: tuple[str, ...] = ()
    generated: tuple[schemas.GeneratedColumn, ...] = ()  # columns Delta computes (partitions)
    merged: bool = False  # kept by MERGE: each batch replaces files, which `all` VACUUMs
    on_dashboard: bool = False  # its row count is on the dashboard

    def path(self, settings: Settings) -> str:
        if self.name.startswith(DLQ_FOLDER):
            return f"{settings.dlq_path.rstrip('/')}/{self.name.removeprefix(DLQ_FOLDER)}"
        return f"{settings.lakehouse_path.rstrip('/')}/{self.name}"

    def create_if_missing(
        self,
        spark: SparkSession,
        settings: Settings,
        stats_columns: tuple[str, ...] = (),
        properties: dict[str, str] | None = None,
    ) -> None:
        """Create the table with its schema and partitioning unless it exists
        (``schemas.create_table_if_missing``)."""
        assert self.schema is not None, f"{self.name} is not created by Spark"
        schemas.create_table_if_missing(
            spark,
            self.path(settings),
            self.schema,
            self.partition_by,
            stats_columns,
            properties,
            self.generated,
        )


def _window(
    name: str,
    schema: StructType,
    period: schemas.GeneratedColumn,
    layer: str = "gold",
    dashboard: bool = False,
) -> Table:
    """A window table kept by MERGE, partitioned by the ``period`` its windows start in."""
    return Table(
        f"gold/{name}",
        layer,
        layer,
        schema,
        (period.name,),
        (period,),
        merged=True,
        on_dashboard=dashboard,
    )


HOUR, DATE = schemas.WINDOW_HOUR, schemas.WINDOW_DATE


# In pipeline order: the order of `maintain`'s report and of the dashboard's row counts.
TABLES: tuple[Table, ...] = (
    Table(
        "bronze/sensor_events",
        "bronze",
        "bronze",
        schemas.BRONZE_EVENTS,
        schemas.BRONZE_PARTITION_COLUMNS,
        on_dashboard=True,
    ),
    Table(
        "silver/readings",
        "silver",
        "silver",
        schemas.SILVER_READINGS,
        ("event_date",),
        on_dashboard=True,
    ),
    # Windows shorter than an hour: a partition per hour (a few files each); the hourly and
    # daily rollups: a partition per day.
    _window("sensor_metrics_5m", schemas.GOLD_SENSOR_METRICS, HOUR, dashboard=True),
    _window("sensor_metrics_10m_sliding", schemas.GOLD_SENSOR_METRICS, HOUR),
    _window("location_metrics_5m", schemas.GOLD_LOCATION_METRICS, HOUR),
    _window("sensor_metrics_1h", schemas.GOLD_SENSOR_METRICS, DATE),
    _window("sensor_metrics_1d", schemas.GOLD_SENSOR_METRICS, DATE),
    _window("location_metrics_1h", schemas.GOLD_LOCATION_METRICS, DATE),
    _window("location_metrics_1d", schemas.GOLD_LOCATION_METRICS, DATE),
    _window("alert_counts_5m", schemas.GOLD_ALERT_COUNTS, HOUR, layer="alerts"),
    Table("gold/alerts", "alerts", "alerts", schemas.GOLD_ALERTS, on_dashboard=True),
    Table(
        "dlq/silver_rejects",
        "silver",
        "silver",
        schemas.DLQ_REJECTS,
        ("rejected_date",),
        on_dashboard=True,
    ),
    Table("dlq/redrive_history", "silver", "dlq redrive", schemas.REDRIVE_HISTORY),
    Table("_ops/silver_duplicates", "ops", "silver", schemas.SILVER_DUPLICATES, on_dashboard=True),
    Table("_ops/quality", "ops", "silver", schemas.QUALITY_RESULTS),
    Table("_ops/gold_late_readings", "ops", "gold", schemas.GOLD_LATE_READINGS, on_dashboard=True),
    Table("_ops/gold_progress", "ops", "gold", schemas.GOLD_PROGRESS),
    Table("_ops/alerts_clock", "ops", "alerts", schemas.ALERTS_CLOCK),
    Table("_ops/stream_metrics", "ops", "every job", None),
)

BY_NAME = {table.name: table for table in TABLES}


def table(name: str) -> Table:
    """The table called ``name`` (``silver/readings``)."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise ConfigError(
            f"{name!r} is not a lakehouse table; use one of: {', '.join(BY_NAME)}"
        ) from None
