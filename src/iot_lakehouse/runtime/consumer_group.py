"""Bronze's progress as a Kafka consumer group's committed offsets.

Spark's Kafka source keeps its offsets in the query's checkpoint, not in Kafka, so Kafka's
tools (``kafka-consumer-groups --describe``) and monitors that read consumer lag see nothing.
After each bronze batch the offsets it ended at (its progress event's ``endOffset``: the next
offset to read, per partition) are committed for the group ``KAFKA_CONSUMER_GROUP``; the group
has no members, so committing does not take part in reading. The checkpoint stays the truth
Spark resumes from: the group only reports.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

from iot_lakehouse.logs import kv
from iot_lakehouse.settings import Settings

logger = logging.getLogger(__name__)

Offsets = dict[tuple[str, int], int]  # (topic, partition) -> next offset to read
COMMIT_ATTEMPTS = 10
COMMIT_RETRY_S = 1.0


def kafka_end_offsets(progress: Mapping[str, Any]) -> Offsets:
    """The offsets a query's batch ended at in each Kafka partition it reads (Spark renders a
    Kafka source's ``endOffset`` as ``{"<topic>": {"<partition>": <offset>}}``, often as a JSON
    string); none for other sources."""
    offsets: Offsets = {}
    for source in progress.get("sources") or []:
        end = source.get("endOffset")
        if isinstance(end, str):
            try:
                end = json.loads(end)
            except ValueError:
                continue
        if not isinstance(end, dict) or "reservoirId" in end:
            continue
        for topic, partitions in end.items():
            if not isinstance(partitions, dict):
                continue
            for partition, offset in partitions.items():
                if str(partition).isdigit() and isinstance(offset, int) and offset >= 0:
                    offsets[(str(topic), int(partition))] = offset
    return offsets


class ConsumerGroupPublisher:
    """Keeps the newest end offsets of bronze's batches and commits them for the group."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._pending: Offsets = {}
        self._published: Offsets = {}

    def note(self, progress: Mapping[str, Any]) -> None:
        """Remember where a batch ended (listener thread: no I/O here)."""
        offsets = kafka_end_offsets(progress)
        if offsets:
            with self._lock:
                self._pending.update(offsets)

    def publish(self) -> int:
        """Commit the offsets noted since the last call; return how many partitions. A failure
        is logged and tried again next time: reporting must never stop the job."""
        group = self.settings.kafka_consumer_group
        with self._lock:
            changed = {k: v for k, v in self._pending.items() if self._published.get(k) != v}
        if not group or not changed:
            return 0
        from confluent_kafka import ConsumerGroupTopicPartitions, KafkaError, TopicPartition
        from confluent_kafka.admin import AdminClient

        busy = {  # the group's coordinator moves or is still loading (a broker just started)
            KafkaError.NOT_COORDINATOR,
            KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
            KafkaError.COORDINATOR_NOT_AVAILABLE,
        }

        admin = AdminClient({"bootstrap.servers": self.settings.kafka_bootstrap_servers})
        partitions = [TopicPartition(t, p, o) for (t, p), o in sorted(changed.items())]
        try:
            for attempt in range(1, COMMIT_ATTEMPTS + 1):
                futures = admin.alter_consumer_group_offsets(
                    [ConsumerGroupTopicPartitions(group, partitions)]
                )
                result = next(iter(futures.values())).result(timeout=15)
                errors = [tp.error for tp in result.topic_partitions if tp.error]
                if not errors:
                    break
                if attempt == COMMIT_ATTEMPTS or not all(e.code() in busy for e in errors):
                    raise RuntimeError(f"the broker refused: {errors[0]}")
                time.sleep(COMMIT_RETRY_S)
        except Exception as exc:
            logger.warning(
                "consumer group offsets not committed, trying again later %s",
                kv(group=group, partitions=len(partitions), error=str(exc)[:300]),
            )
            return 0
        with self._lock:
            self._published.update(changed)
        return len(changed)
