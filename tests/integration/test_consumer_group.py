"""Bronze's progress as a Kafka consumer group's committed offsets, read back from the broker."""

from __future__ import annotations

import subprocess
import sys
import uuid

import pytest
from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient

from iot_lakehouse.runtime.kafka_offsets import kafka_watermarks
from iot_lakehouse.settings import PROJECT_ROOT, Settings
from tests.conftest import job_env, produce


def committed(settings: Settings, group: str, partitions: int) -> dict[int, int]:
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers})
    request = ConsumerGroupTopicPartitions(
        group, [TopicPartition(settings.kafka_topic, p) for p in range(partitions)]
    )
    result = admin.list_consumer_group_offsets([request])[group].result(timeout=15)
    return {tp.partition: tp.offset for tp in result.topic_partitions}


@pytest.mark.integration  # starts a job process
def test_bronze_commits_its_progress_for_a_consumer_group_so_kafka_shows_its_lag(
    settings: Settings,
) -> None:
    group = f"bronze-{uuid.uuid4().hex[:8]}"
    produce(settings, 3_000, seed=21)
    run = subprocess.run(
        [sys.executable, "-m", "iot_lakehouse", "run", "bronze", "--available-now"],
        env=job_env(settings, KAFKA_CONSUMER_GROUP=group),
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    ranges = kafka_watermarks(settings)
    assert ranges is not None
    # Every partition committed at its end: lag 0, as kafka-consumer-groups --describe shows.
    assert committed(settings, group, len(ranges)) == {p: hi for p, (_, hi) in ranges.items()}
    produce(settings, 100, seed=22)
    after = kafka_watermarks(settings)
    assert after is not None
    offsets = committed(settings, group, len(after))
    assert sum(hi - offsets[p] for p, (_, hi) in after.items()) == 100  # the lag, in records
