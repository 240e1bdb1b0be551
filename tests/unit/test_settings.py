from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from iot_lakehouse.errors import ConfigError
from iot_lakehouse.settings import (
    PROJECT_ROOT,
    Settings,
    duration_seconds,
    interval_seconds,
    parse_bootstrap,
)


def test_defaults_are_local() -> None:
    s = Settings.from_env({})
    assert s.kafka_bootstrap_servers == "127.0.0.1:9092"
    assert (s.kafka_port, s.kafka_controller_port_effective) == (9092, 9093)
    assert s.bronze_events_path == f"{PROJECT_ROOT}/lakehouse/bronze/sensor_events"
    assert s.checkpoint_path("bronze") == f"{PROJECT_ROOT}/lakehouse/_checkpoints/bronze"
    assert s.dlq_rejects_path == f"{PROJECT_ROOT}/dlq/silver_rejects"
    assert s.spark_master == "local[*]"


def test_relative_data_paths_are_made_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Delta reads a relative table location as a table name and fails: every local path is
    # absolute, taken from the folder the command runs in.
    monkeypatch.chdir(str(tmp_path))
    s = Settings.from_env({"LAKEHOUSE_PATH": "lake", "DLQ_PATH": "q", "LANDING_PATH": "in"})
    assert s.silver_readings_path == f"{tmp_path}/lake/silver/readings"
    assert s.dlq_rejects_path == f"{tmp_path}/q/silver_rejects"
    assert s.landing_path == f"{tmp_path}/in"


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
        ({"GOLD_WATERMARK": "10"}, "10 minutes"),
        ({"GOLD_WATERMARK": "ten minutes"}, "not a duration"),
        ({"GOLD_WATERMARK": "10 fortnights"}, "not a duration"),
        ({"GOLD_PERCENTILE_K": "4"}, "at least 8"),
        ({"GOLD_PERCENTILE_K": "70000"}, "8 to 65535"),
        ({"SPARK_DRIVER_GC": "ZGC"}, "use one of G1, Serial, Parallel"),
        ({"ONE_DRIVER_SCHEDULER": "round-robin"}, "use FAIR or FIFO"),
        ({"GOLD_TRIGGER_INTERVAL": "20"}, "GOLD_TRIGGER_INTERVAL='20' has no unit"),
        ({"ALERTS_TRIGGER_INTERVAL": "-1 second"}, "ALERTS_TRIGGER_INTERVAL='-1 second' is neg"),
        ({"SOCKET_PORT": "70000"}, "SOCKET_PORT=70000: use a TCP port"),
        ({"SOCKET_PORT": "0"}, "at least 1"),
        ({"GENERATOR_API_PORT": "70000"}, "GENERATOR_API_PORT=70000: use a TCP port from 0 to"),
        ({"OPS_COMPACT_INTERVAL": "hourly"}, "OPS_COMPACT_INTERVAL='hourly' is not a duration"),
        ({"JOB_HEALTHY_SECONDS": "0"}, "JOB_HEALTHY_SECONDS=0 must be at least 1"),
    ],
)
def test_bad_values_say_what_is_wrong(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)


def test_parse_bootstrap_takes_first_server() -> None:
    assert parse_bootstrap("a:1,b:2") == ("a", 1)


def test_durations_and_gold_paths() -> None:
    assert [duration_seconds(t) for t in ("10 minutes", "1 minute", "90 seconds", "2 hours")] == [
        600,
        60,
        90,
        7200,
    ]
    s = Settings.from_env({"GOLD_WATERMARK": "15 minutes", "LAKEHOUSE_PATH": "/lake"})
    assert s.gold_watermark_seconds == 900
    assert s.gold_path("sensor_metrics_5m") == "/lake/gold/sensor_metrics_5m"
    assert s.gold_late_readings_path == "/lake/_ops/gold_late_readings"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("5 seconds", 5.0),
        ("1 second", 1.0),
        ("500 milliseconds", 0.5),
        ("1 minute", 60.0),
        ("1.5 seconds", 1.5),
        (".25 second", 0.25),
        ("interval 1 minute 30 seconds", 90.0),
        ("  2 HOURS ", 7200.0),
        ("250000 microseconds", 0.25),
        ("1 day", 86400.0),
        ("0 seconds", 0.0),  # Spark: run the next batch as soon as one ends
    ],
)
def test_trigger_interval_takes_what_spark_takes(text: str, seconds: float) -> None:
    assert interval_seconds(text) == seconds
    assert Settings.from_env({"TRIGGER_INTERVAL": text}).trigger_interval_seconds == seconds


# Each of these makes Spark's processing-time trigger raise at query start (a traceback), so
# they are refused when the settings are read.
@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("5", "has no unit"),
        ("0.5", "has no unit"),
        ("-5 seconds", "is negative"),
        ("-5", "has no unit"),
        ("nan", "is not an interval"),
        ("nan seconds", "is not an interval"),
        ("inf seconds", "is not an interval"),
        ("1e3 seconds", "is not an interval"),
        ("5seconds", "is not an interval"),
        ("5 secs", "is not an interval"),
        ("1.5 minutes", "fraction"),
        ("1 month", "months or years"),
        ("interval", "is empty"),
        ("10000000000000 seconds", "too long"),
    ],
)
def test_trigger_interval_spark_refuses_is_a_config_error(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        Settings.from_env({"TRIGGER_INTERVAL": text})
    assert str(info.value).startswith(f"TRIGGER_INTERVAL={text!r} ")
    assert "'5 seconds'" in str(info.value) and "\n" not in str(info.value)


def test_gold_and_alerts_have_trigger_intervals_of_their_own() -> None:
    default = Settings.from_env({"TRIGGER_INTERVAL": "2 seconds"})
    assert [default.trigger_interval_of(j) for j in ("bronze", "silver", "gold", "alerts")] == [
        "2 seconds",
        "2 seconds",
        "20 seconds",
        "10 seconds",
    ]
    # Set empty, they follow TRIGGER_INTERVAL.
    own = Settings.from_env({"GOLD_TRIGGER_INTERVAL": "15 seconds", "ALERTS_TRIGGER_INTERVAL": ""})
    assert own.trigger_interval_of("gold") == "15 seconds"
    assert own.trigger_interval_of("alerts") == own.trigger_interval_of("silver") == "5 seconds"


@pytest.mark.parametrize("text", ["5", "-5 seconds", "nan"])
def test_bad_trigger_interval_stops_the_cli_with_exit_2(tmp_path: Path, text: str) -> None:
    env = {**os.environ, "TRIGGER_INTERVAL": text, "IOT_RUNTIME_DIR": str(tmp_path / "rt")}
    done = subprocess.run(
        [sys.executable, "-m", "iot_lakehouse", "kafka", "status"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.splitlines()[-1].startswith(f"error: TRIGGER_INTERVAL={text!r} ")
    assert "Traceback" not in done.stderr


def test_a_port_given_on_the_command_line_is_checked_too() -> None:
    with pytest.raises(ConfigError, match="SOCKET_PORT=0: use a TCP port from 1 to 65535"):
        Settings.from_env({}).with_(socket_port=0).validate()
    Settings.from_env({"GENERATOR_API_PORT": "0"}).validate()  # 0: no control API


def test_gold_file_retention_is_a_duration() -> None:
    assert Settings.from_env({}).gold_file_retention_hours == 6
    assert Settings.from_env({"GOLD_FILE_RETENTION": "120 minutes"}).gold_file_retention_hours == 2
    # Delta's VACUUM rounds its retention to whole hours: a fraction or less than one is refused
    for fraction in ("90 minutes", "30 minutes", "0 hours"):
        with pytest.raises(ConfigError, match="whole number of hours"):
            Settings.from_env({"GOLD_FILE_RETENTION": fraction}).validate()
    with pytest.raises(ConfigError, match="GOLD_FILE_RETENTION"):
        Settings.from_env({"GOLD_FILE_RETENTION": "soon"}).validate()
