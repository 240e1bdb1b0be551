"""Throughput of the sensor data generator.

    uv run python bench/bench_generator.py [--events 500000] [--produce-events 300000]

Measures, single-threaded:
  (a)  generation + JSON serialisation only (no Kafka), for a clean and a "dirty" stream;
  (a2) the same plus ``Producer.produce()`` into librdkafka's local queue (no broker: nothing
       is sent, this isolates the client-side cost);
  (b)  end to end against the broker in KAFKA_BOOTSTRAP_SERVERS (acks=all, idempotent, lz4):
       run_generator at an unlimited rate, counted until every message is acknowledged.
       Skipped, with the reason, when no broker answers. It writes to its own topic
       (default ``iot-lakehouse-bench``) so the pipeline's topic is not polluted.
"""

from __future__ import annotations

import argparse
import socket
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from iot_lakehouse.errors import ConfigError
from iot_lakehouse.logs import configure_logging
from iot_lakehouse.settings import Settings, parse_bootstrap
from iot_lakehouse.sources.generator import (
    BLOCK_SIZE,
    EventGenerator,
    GeneratorConfig,
    producer_config,
    run_generator,
)

START = datetime(2026, 1, 1, tzinfo=UTC)
CLEAN = GeneratorConfig(start_time=START)
DIRTY = replace(
    CLEAN,
    malformed_fraction=0.05,
    invalid_fraction=0.05,
    duplicate_fraction=0.05,
    late_fraction=0.05,
)


def bench_generation(config: GeneratorConfig, events: int) -> tuple[float, float]:
    """Events/s and MB/s of building blocks (numbers, timestamps, JSON bytes) from scratch."""
    gen = EventGenerator(config)
    blocks = max(1, events // BLOCK_SIZE)
    gen.generate_block(0)  # warm-up: numpy and the per-sensor tables
    nbytes = 0
    t0 = time.perf_counter()
    for b in range(1, blocks + 1):
        nbytes += sum(map(len, gen.generate_block(b).values))
    elapsed = time.perf_counter() - t0
    return blocks * BLOCK_SIZE / elapsed, nbytes / elapsed / 1e6


def bench_local_produce(config: GeneratorConfig, events: int) -> float:
    """Events/s of generation + produce() into the client queue, with no broker behind it."""
    settings = Settings(kafka_bootstrap_servers="127.0.0.1:9")  # discard port: nothing listens
    conf: dict[str, Any] = producer_config(settings)
    del conf["logger"]
    conf["log_level"] = 0  # the refused connections are expected here
    producer = Producer(conf)
    gen = EventGenerator(config)
    blocks = max(1, events // BLOCK_SIZE)
    delivered = [0]

    def on_delivery(err: object, msg: object) -> None:
        delivered[0] += 1

    t0 = time.perf_counter()
    for b in range(blocks):
        block = gen.generate_block(b)
        for key, value in zip(block.keys, block.values, strict=True):
            producer.produce("bench", value, key, on_delivery=on_delivery)
        producer.poll(0)
    elapsed = time.perf_counter() - t0
    producer.purge()
    producer.flush(0)
    return blocks * BLOCK_SIZE / elapsed


def broker_unreachable_reason(settings: Settings) -> str | None:
    """None when a Kafka broker answers at KAFKA_BOOTSTRAP_SERVERS, else why not."""
    try:
        host, port = parse_bootstrap(settings.kafka_bootstrap_servers)
    except ConfigError as exc:
        return str(exc)
    try:
        with socket.create_connection((host, port), timeout=2):
            pass
    except OSError as exc:
        return f"nothing listens on {host}:{port} ({exc.strerror or exc})"
    try:
        AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers}).list_topics(timeout=5)
    except KafkaException as exc:
        return f"{host}:{port} accepts connections but is not answering as Kafka: {exc}"
    return None


def ensure_topic(settings: Settings, topic: str) -> None:
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers})
    if topic in admin.list_topics(timeout=10).topics:
        return
    futures = admin.create_topics(
        [NewTopic(topic, num_partitions=settings.kafka_topic_partitions, replication_factor=1)]
    )
    try:
        futures[topic].result(timeout=30)
    except KafkaException as exc:
        if "TOPIC_ALREADY_EXISTS" not in str(exc):
            raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=500_000, help="events for (a) and (a2)")
    parser.add_argument("--produce-events", type=int, default=300_000, help="events for (b)")
    parser.add_argument("--sensors", type=int, default=100)
    parser.add_argument("--topic", default="iot-lakehouse-bench", help="topic for (b)")
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    configure_logging("bench", "WARNING", settings.log_format)

    print(f"(a) generation + serialisation, single thread, {args.events:,} events")
    for label, base in (("clean", CLEAN), ("dirty, 5% each bad kind", DIRTY)):
        for fmt in ("wide", "long", "mixed"):
            config = replace(base, sensors=args.sensors, format=fmt)
            rate, mbps = bench_generation(config, args.events)
            print(f"    {label:<24} {fmt:<6} {rate:>12,.0f} events/s  {mbps:6.1f} MB/s")
    config_10k = replace(DIRTY, sensors=10_000)
    rate, mbps = bench_generation(config_10k, args.events)
    print(
        f"    {'dirty, 10,000 sensors':<24} {'mixed':<6} {rate:>12,.0f} events/s  {mbps:6.1f} MB/s"
    )

    print("(a2) generation + produce() into the local client queue (no broker, nothing sent)")
    rate = bench_local_produce(replace(DIRTY, sensors=args.sensors), args.events)
    print(f"    {'dirty':<24} {'mixed':<6} {rate:>12,.0f} events/s")

    reason = broker_unreachable_reason(settings)
    if reason is not None:
        print(
            f"(b) end-to-end produce SKIPPED: no broker at "
            f"KAFKA_BOOTSTRAP_SERVERS={settings.kafka_bootstrap_servers}: {reason}"
        )
        return 0
    ensure_topic(settings, args.topic)
    print(
        f"(b) end to end to {settings.kafka_bootstrap_servers} topic={args.topic}, "
        f"{args.produce_events:,} events, unlimited rate, acks=all"
    )
    report = run_generator(
        replace(
            DIRTY,
            sensors=args.sensors,
            rate=1e9,
            count=args.produce_events,
            topic=args.topic,
            start_time=None,
            progress_interval_s=2.0,
        ),
        settings,
    )
    print(
        f"    sent={report.sent:,} delivered={report.delivered:,} failed={report.failed:,} "
        f"elapsed={report.elapsed_s:.2f}s -> {report.rate:,.0f} events/s acknowledged"
    )
    if report.errors:
        print(f"    errors: {report.errors}")
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
