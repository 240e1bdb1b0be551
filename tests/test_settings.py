from __future__ import annotations

import pytest

from iot_lakehouse.errors import ConfigError
from iot_lakehouse.settings import Settings, parse_bootstrap


def test_defaults_are_local() -> None:
    s = Settings.from_env({})
    assert s.kafka_bootstrap_servers == "127.0.0.1:9092"
    assert (s.kafka_port, s.kafka_controller_port_effective) == (9092, 9093)
    assert s.bronze_events_path == "lakehouse/bronze/sensor_events"
    assert s.checkpoint_path("bronze") == "lakehouse/_checkpoints/bronze"
    assert s.spark_master == "local[*]"


def test_environment_overrides_and_uris() -> None:
    s = Settings.from_env(
        {
            "KAFKA_BOOTSTRAP_SERVERS": "kafka-1:29092,kafka-2:29092",
            "LAKEHOUSE_PATH": "s3a://bucket/lake/",
            "SPARK_SHUFFLE_PARTITIONS": "4",
            "KAFKA_FAIL_ON_DATA_LOSS": "false",
            "MAX_OFFSETS_PER_TRIGGER": "5000",
        }
    )
    assert (s.kafka_host, s.kafka_port) == ("kafka-1", 29092)
    assert s.bronze_events_path == "s3a://bucket/lake/bronze/sensor_events"
    assert s.spark_shuffle_partitions == 4
    assert s.fail_on_data_loss is False
    assert s.max_offsets_per_trigger == 5000


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"KAFKA_BOOTSTRAP_SERVERS": "localhost"}, "host:port"),
        ({"KAFKA_TOPIC_PARTITIONS": "three"}, "whole number"),
        ({"KAFKA_TOPIC_PARTITIONS": "0"}, "at least 1"),
        ({"KAFKA_FAIL_ON_DATA_LOSS": "maybe"}, "boolean"),
        ({"LOG_FORMAT": "xml"}, "kv or json"),
        ({"TRIGGER_INTERVAL": "soon"}, "5 seconds"),
    ],
)
def test_bad_values_say_what_is_wrong(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)


def test_parse_bootstrap_takes_first_server() -> None:
    assert parse_bootstrap("a:1,b:2") == ("a", 1)
