"""Reading Kafka's offsets and a topic's identity without a JVM (confluent-kafka): for status,
checkpoints, the generator API's clean and the benchmarks."""

from __future__ import annotations

from confluent_kafka import Consumer, KafkaException, TopicCollection, TopicPartition
from confluent_kafka.admin import AdminClient

from iot_lakehouse.settings import Settings


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


def kafka_topic_identity(
    settings: Settings, topic: str | None = None, timeout: float = 15.0
) -> dict[str, str] | None:
    """``{"topic", "topic_id", "cluster_id"}`` of ``topic`` (default: the sensor topic): a
    topic deleted and created again, or on a broker whose data was wiped, has another id.
    None if the broker does not answer or the topic does not exist."""
    topic = topic or settings.kafka_topic
    admin = AdminClient(
        {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "socket.connection.setup.timeout.ms": 2000,
            "log_level": 0,
        }
    )
    try:
        described = admin.describe_topics(TopicCollection([topic]), request_timeout=timeout)
        topic_id = described[topic].result().topic_id
        cluster = admin.describe_cluster(request_timeout=timeout).result()
    except KafkaException:
        return None
    return {"topic": topic, "topic_id": str(topic_id), "cluster_id": str(cluster.cluster_id)}


def kafka_end_offsets(
    settings: Settings, topic: str | None = None, timeout: float = 5.0
) -> dict[int, int] | None:
    """High watermark of each partition of ``topic``; None if it cannot be read."""
    marks = kafka_watermarks(settings, topic, timeout)
    return None if marks is None else {p: high for p, (_low, high) in marks.items()}
