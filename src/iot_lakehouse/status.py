"""Counts for the live status line, read without a JVM (confluent-kafka and ``deltalake``)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaException, TopicPartition
from deltalake import DeltaTable
from deltalake.exceptions import TableNotFoundError

from iot_lakehouse.logs import kv
from iot_lakehouse.settings import Settings

logger = logging.getLogger(__name__)


def kafka_watermarks(
    settings: Settings, topic: str | None = None, timeout: float = 5.0
) -> dict[int, tuple[int, int]] | None:
    """(low, high) offsets of each partition of ``topic`` (default: the sensor topic); None if
    the broker does not answer or the topic does not exist."""
    topic = topic or settings.kafka_topic
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "group.id": "iot-lakehouse-status",
            "enable.auto.commit": False,
            "socket.connection.setup.timeout.ms": 2000,
            "log_level": 0,
        }
    )
    try:
        meta = consumer.list_topics(topic, timeout=timeout)
        if topic not in meta.topics or meta.topics[topic].error is not None:
            return None
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)
            for p in meta.topics[topic].partitions
        }
    except KafkaException:
        return None
    finally:
        consumer.close()


def kafka_end_offsets(
    settings: Settings, topic: str | None = None, timeout: float = 5.0
) -> dict[int, int] | None:
    """High watermark of each partition of ``topic``; None if it cannot be read."""
    marks = kafka_watermarks(settings, topic, timeout)
    return None if marks is None else {p: high for p, (_low, high) in marks.items()}


def delta_row_count(path: str) -> int | None:
    """Rows in a Delta table from its log statistics; None if there is no table yet."""
    try:
        table = DeltaTable(path)
    except TableNotFoundError:
        return None
    actions = table.get_add_actions(flatten=True)
    column = actions.column("num_records") if actions.num_rows else None
    return int(sum(v for v in column.to_pylist() if v)) if column is not None else 0


@dataclass(frozen=True)
class PipelineCounts:
    """One snapshot of the pipeline: what Kafka holds and what each table has."""

    kafka_messages: int | None
    bronze_rows: int | None
    silver_rows: int | None = None
    dlq_rows: int | None = None
    duplicates: int | None = None
    gold_rows: int | None = None  # rows of gold/sensor_metrics_5m
    gold_late: int | None = None  # readings the gold watermark left out (kept in _ops)

    @property
    def bronze_lag(self) -> int | None:
        if self.kafka_messages is None or self.bronze_rows is None:
            return None
        return self.kafka_messages - self.bronze_rows

    def line(self) -> str:
        def show(value: int | None) -> str:
            return "-" if value is None else f"{value}"

        return kv(
            kafka=show(self.kafka_messages),
            bronze=show(self.bronze_rows),
            bronze_lag=show(self.bronze_lag),
            silver=show(self.silver_rows),
            dlq=show(self.dlq_rows),
            duplicates=show(self.duplicates),
            gold_5m=show(self.gold_rows),
            gold_late=show(self.gold_late),
        )


def pipeline_counts(settings: Settings) -> PipelineCounts:
    """Read the current counts (cheap: offsets and Delta log statistics only)."""
    offsets = kafka_end_offsets(settings)
    return PipelineCounts(
        kafka_messages=sum(offsets.values()) if offsets is not None else None,
        bronze_rows=delta_row_count(settings.bronze_events_path),
        silver_rows=delta_row_count(settings.silver_readings_path),
        dlq_rows=delta_row_count(settings.dlq_rejects_path),
        duplicates=delta_row_count(settings.silver_duplicates_path),
        gold_rows=delta_row_count(settings.gold_path("sensor_metrics_5m")),
        gold_late=delta_row_count(settings.gold_late_readings_path),
    )
