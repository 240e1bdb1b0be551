"""One frozen settings object, read from environment variables with local defaults.

Every variable is documented in docs/configuration.md. Paths may be local folders or any
Hadoop/Delta URI (``s3a://…``) so the same jobs run unchanged on a cluster.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path
from typing import Any

from iot_lakehouse.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# What `all` (./start_all.sh) has the generator send unless told otherwise.
START_ALL_RATE = 200.0  # events/s
START_ALL_SENSORS = 100


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(
            f"{name}={raw!r} is not a whole number; unset it or give e.g. {default}"
        ) from None
    if value < minimum:
        raise ConfigError(f"{name}={value} must be at least {minimum}")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in {"1", "true", "yes", "on"}:
        return True
    if raw.lower() in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{name}={raw!r} is not a boolean; use true or false")


def parse_bootstrap(servers: str) -> tuple[str, int]:
    """Return (host, port) of the first broker in a ``host:port[,host:port…]`` list."""
    first = servers.split(",")[0].strip()
    host, sep, port = first.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(
            f"KAFKA_BOOTSTRAP_SERVERS={servers!r} is not host:port[,host:port…]; "
            "for the local broker use e.g. 127.0.0.1:9092"
        )
    return host, int(port)


def data_path(raw: str) -> str:
    """A data location as the jobs use it: a URI (``s3a://…``) as given, a local folder made
    absolute (relative to the current folder)."""
    if "://" in raw or raw.startswith("file:"):
        return raw
    return str(Path(raw).expanduser().absolute())


# Garbage collectors a tuned driver JVM can run with (-XX:+Use<name>GC).
DRIVER_GCS = ("G1", "Serial", "Parallel")

DURATION_UNITS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}


def duration_seconds(text: str, name: str = "duration") -> int:
    """Whole seconds of a duration such as ``10 minutes``, ``90 seconds`` or ``1 hour``."""
    parts = text.split()
    unit = parts[1].lower().removesuffix("s") if len(parts) == 2 else ""
    if len(parts) != 2 or not parts[0].isdigit() or unit not in DURATION_UNITS:
        raise ConfigError(
            f"{name}={text!r} is not a duration; use e.g. '10 minutes', '90 seconds' or '1 hour'"
        )
    return int(parts[0]) * DURATION_UNITS[unit]


# Units of a processing-time trigger interval, in microseconds: the words Spark's interval
# parser (SparkIntervalUtils.stringToInterval) knows, singular or plural. It also parses months
# and years, which the trigger then refuses.
INTERVAL_MICROS = {
    "microsecond": 1,
    "millisecond": 1_000,
    "second": 1_000_000,
    "minute": 60_000_000,
    "hour": 3_600_000_000,
    "day": 86_400_000_000,
    "week": 604_800_000_000,
}
CALENDAR_UNITS = frozenset({"month", "year"})
MAX_INTERVAL_MICROS = 2**63 - 1  # Spark holds the interval in a Long of microseconds
# One "<number> <unit>" pair: a sign, digits with a fraction of up to 9 digits (nanoseconds),
# whitespace, a unit word with an optional plural "s", then whitespace or the end.
_INTERVAL_PAIR = re.compile(
    r"(?P<sign>[+-]?)\s*(?P<whole>[0-9]*)(?:\.(?P<frac>[0-9]{0,9}))?"
    r"\s+(?P<unit>[a-z]+?)s?(?:\s+|$)"
)
_BARE_NUMBER = re.compile(r"[+-]?\s*(?:[0-9]+\.?[0-9]*|\.[0-9]+)")


def _interval_pair_micros(pair: re.Match[str]) -> int | str:
    """Microseconds of one matched pair, or why Spark's trigger would refuse it."""
    whole, frac, unit = pair["whole"], pair["frac"], pair["unit"]
    if not (whole or frac):
        return "is not an interval"
    if unit in CALENDAR_UNITS:
        return "has months or years, which a processing-time trigger cannot wait for"
    if unit not in INTERVAL_MICROS:
        return "is not an interval"
    if frac is not None and unit != "second":
        return "has a fraction on a unit other than seconds"
    micros = int(whole or 0) * INTERVAL_MICROS[unit] + int((frac or "").ljust(9, "0")) // 1000
    return -micros if pair["sign"] == "-" else micros


def interval_seconds(text: str, name: str = "TRIGGER_INTERVAL") -> float:
    """Seconds of a processing-time trigger interval, read the way Spark reads it: one or more
    ``<number> <unit>`` pairs (``5 seconds``, ``500 milliseconds``, ``1 minute 30 seconds``,
    an optional ``interval`` prefix), 0 or more in total. A bare number, months, a fraction on
    anything but seconds or a negative total are refused: Spark would fail at query start."""

    def refused(reason: str) -> ConfigError:
        return ConfigError(f"{name}={text!r} {reason}; use e.g. '5 seconds' or '500 milliseconds'")

    rest = text.strip().lower()
    if rest == "interval" or rest.startswith(("interval ", "interval\t")):
        rest = rest[len("interval") :].strip()
    if not rest:
        raise refused("is empty")
    micros = pos = 0
    while pos < len(rest):
        pair = _INTERVAL_PAIR.match(rest, pos)
        if pair is None:
            bare = _BARE_NUMBER.fullmatch(rest, pos)
            raise refused("has no unit" if bare else "is not an interval")
        part = _interval_pair_micros(pair)
        if isinstance(part, str):
            raise refused(part)
        micros += part
        if abs(micros) > MAX_INTERVAL_MICROS:
            raise refused("is too long")
        pos = pair.end()
    if micros < 0:
        raise refused("is negative")
    return micros / 1_000_000


@dataclass(frozen=True)
class Settings:
    """Everything a job, the broker or the generator needs to know about its environment."""

    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    kafka_controller_port: int = 0
    kafka_topic: str = "iot-sensors"
    kafka_alerts_topic: str = "iot-alerts"
    kafka_topic_partitions: int = 3
    kafka_heap: str = "512m"
    # Absolute: Delta takes a relative location for a table name (an error), and a job must not
    # write elsewhere when started from another folder.
    lakehouse_path: str = str(PROJECT_ROOT / "lakehouse")
    dlq_path: str = str(PROJECT_ROOT / "dlq")
    landing_path: str = str(PROJECT_ROOT / "landing")
    landing_pattern: str = "*.json"
    # `run bronze --source socket`: the TCP server whose lines bronze reads (a debugging source).
    socket_host: str = "127.0.0.1"
    socket_port: int = 9999
    # `run silver|gold|alerts --console [N]`: print the first N rows of each committed batch
    console_rows: int = 0
    landing_max_files_per_trigger: int = 50
    runtime_dir: Path = field(default_factory=lambda: PROJECT_ROOT / ".runtime")
    jars_dir: Path = field(default_factory=lambda: PROJECT_ROOT / ".runtime" / "jars")
    maven_settings_file: Path | None = None
    spark_master: str = "local[*]"
    spark_driver_memory: str = "1g"
    # `all` (and the bench) run the four jobs in one driver: one JVM and one Python process
    # for all of them (`run bronze silver gold alerts`), with this heap; each job keeps its
    # checkpoint, lock, metrics and restarts. Less memory and a faster start than a process
    # per job (False) at the same pace (bench/bench_memory.py; docs/benchmarks.md).
    jobs_in_one_driver: bool = True
    one_driver_memory: str = "2g"
    # How the jobs of one driver share its task slots: FAIR gives each job a scheduler pool of
    # its own (a light bronze batch does not queue behind a long silver stage); FIFO is Spark's
    # default, every job's stages in the order submitted. FAIR gave shorter batches at the
    # same CPU (bench/bench_memory.py; docs/benchmarks.md).
    one_driver_scheduler: str = "FAIR"
    # The driver JVM's garbage collector when tuned. Serial: one thread, no concurrent marking,
    # a heap that grows only as the old generation needs: less memory than G1 at the same pace
    # (bench/bench_memory.py; docs/benchmarks.md).
    spark_driver_gc: str = "Serial"
    spark_shuffle_partitions: int = 2
    spark_ui_enabled: bool = False
    spark_tuning: bool = True  # False: Spark's defaults (as the bench's textbook job runs)
    # A query whose newest batch had fewer input rows than this runs its next one with
    # interpreted expressions instead of generated code (0: always generated code).
    interpreted_below_rows: int = 20_000
    trigger_interval: str = "5 seconds"
    # Gold's and alerts' own trigger intervals (empty: TRIGGER_INTERVAL). Each batch pays
    # seconds of fixed cost: fewer gold and alert batches leave the shared cores to bronze and
    # silver, and every layer gets fresher (bench/bench_memory.py; docs/benchmarks.md).
    gold_trigger_interval: str = "20 seconds"
    alerts_trigger_interval: str = "10 seconds"
    max_offsets_per_trigger: int = 200_000
    fail_on_data_loss: bool = True
    # bronze's progress committed as this Kafka consumer group's offsets (empty: not at all)
    kafka_consumer_group: str = "iot-lakehouse-bronze"
    silver_rules_file: Path | None = None
    silver_max_future_seconds: int | None = None
    silver_max_files_per_trigger: int = 50
    silver_max_bytes_per_trigger: str = "32m"
    quality_every_n_batches: int = 10
    job_restarts: int = 3  # a failed query is started again this many times before the job exits
    # a job (or a child of `all`) that ran this long before it failed starts its restarts afresh
    job_healthy_seconds: int = 600
    # how often `all` compacts the _ops tables (a small file per batch or flush) while the jobs
    # run: `maintain --table _ops/`; empty or 0: never
    ops_compact_interval: str = "1 hour"
    # how long gold's window tables keep the files their MERGEs replaced (`all` VACUUMs them);
    # whole hours, as Delta's VACUUM takes them
    gold_file_retention: str = "6 hours"
    gold_watermark: str = "10 minutes"
    gold_percentile_k: int = 200
    gold_max_files_per_trigger: int = 100
    alerts_watermark: str = "10 seconds"
    # wall clock without a silver reading before the alerts' watermark follows the wall clock
    # (SENSOR_SILENT through an outage of every sensor)
    alerts_idle_grace: str = "60 seconds"
    alert_rules_file: Path | None = None
    alerts_max_files_per_trigger: int = 100
    # A gold or alerts query starting without a checkpoint (a rebuild) reads silver's current
    # rows in its first batch, so its result does not depend on the order of silver's files
    # (OPTIMIZE rewrites old rows into new files); false: in batches of *_MAX_FILES_PER_TRIGGER.
    snapshot_in_first_batch: bool = True
    log_level: str = "INFO"
    log_format: str = "kv"
    # Every log file is rotated at LOG_MAX_MB, with LOG_BACKUPS older files kept.
    log_max_bytes: int = 20 * 1024 * 1024
    log_backups: int = 3
    generator_api_host: str = "127.0.0.1"
    generator_api_port: int = 18000  # 0: no control API
    dashboard_host: str = "127.0.0.1"  # 0.0.0.0 in a container, published on loopback
    dashboard_port: int = 8501
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9108  # `iot-lakehouse metrics`: Prometheus' /metrics
    dashboard_refresh_seconds: int = 5
    # The serving job (`run serve`) writes to this MongoDB; empty: the local MongoDB-protocol
    # server `iot-lakehouse mongo start` runs on MONGO_PORT.
    serving_mongo_uri: str = ""
    serving_mongo_database: str = "iot_serving"
    mongo_port: int = 27017
    serving_max_files_per_trigger: int = 100
    # Set by `rerun silver --from DATE` only: silver reads bronze ingested on or after it.
    silver_rebuild_from: date | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build the settings from ``env`` (default: ``os.environ``), validating every value."""
        e: Mapping[str, str] = os.environ if env is None else env
        d = cls()
        runtime = Path(e.get("IOT_RUNTIME_DIR") or d.runtime_dir)
        settings = cls(
            kafka_bootstrap_servers=e.get("KAFKA_BOOTSTRAP_SERVERS") or d.kafka_bootstrap_servers,
            kafka_controller_port=_int(e, "KAFKA_CONTROLLER_PORT", d.kafka_controller_port),
            kafka_topic=e.get("KAFKA_TOPIC") or d.kafka_topic,
            kafka_alerts_topic=e.get("KAFKA_ALERTS_TOPIC") or d.kafka_alerts_topic,
            kafka_topic_partitions=_int(e, "KAFKA_TOPIC_PARTITIONS", d.kafka_topic_partitions, 1),
            kafka_heap=e.get("KAFKA_HEAP") or d.kafka_heap,
            lakehouse_path=data_path(e.get("LAKEHOUSE_PATH") or d.lakehouse_path),
            dlq_path=data_path(e.get("DLQ_PATH") or d.dlq_path),
            landing_path=data_path(e.get("LANDING_PATH") or d.landing_path),
            landing_pattern=e.get("LANDING_PATTERN") or d.landing_pattern,
            socket_host=e.get("SOCKET_HOST") or d.socket_host,
            socket_port=_int(e, "SOCKET_PORT", d.socket_port, 1),
            landing_max_files_per_trigger=_int(
                e, "LANDING_MAX_FILES_PER_TRIGGER", d.landing_max_files_per_trigger, 1
            ),
            runtime_dir=runtime,
            jars_dir=Path(e.get("IOT_JARS_DIR") or d.jars_dir),
            maven_settings_file=Path(e["IOT_MAVEN_SETTINGS"])
            if e.get("IOT_MAVEN_SETTINGS")
            else None,
            spark_master=e.get("SPARK_MASTER") or d.spark_master,
            spark_driver_memory=e.get("SPARK_DRIVER_MEMORY") or d.spark_driver_memory,
            jobs_in_one_driver=_bool(e, "JOBS_IN_ONE_DRIVER", d.jobs_in_one_driver),
            one_driver_memory=e.get("ONE_DRIVER_MEMORY") or d.one_driver_memory,
            one_driver_scheduler=(e.get("ONE_DRIVER_SCHEDULER") or d.one_driver_scheduler).upper(),
            spark_driver_gc=e.get("SPARK_DRIVER_GC") or d.spark_driver_gc,
            spark_shuffle_partitions=_int(
                e, "SPARK_SHUFFLE_PARTITIONS", d.spark_shuffle_partitions, 1
            ),
            spark_ui_enabled=_bool(e, "SPARK_UI_ENABLED", d.spark_ui_enabled),
            spark_tuning=_bool(e, "SPARK_TUNING", d.spark_tuning),
            interpreted_below_rows=_int(e, "INTERPRETED_BELOW_ROWS", d.interpreted_below_rows, 0),
            trigger_interval=e.get("TRIGGER_INTERVAL") or d.trigger_interval,
            gold_trigger_interval=e.get("GOLD_TRIGGER_INTERVAL", d.gold_trigger_interval),
            alerts_trigger_interval=e.get("ALERTS_TRIGGER_INTERVAL", d.alerts_trigger_interval),
            max_offsets_per_trigger=_int(
                e, "MAX_OFFSETS_PER_TRIGGER", d.max_offsets_per_trigger, 1
            ),
            fail_on_data_loss=_bool(e, "KAFKA_FAIL_ON_DATA_LOSS", d.fail_on_data_loss),
            silver_rules_file=Path(e["SILVER_RULES_FILE"]) if e.get("SILVER_RULES_FILE") else None,
            silver_max_future_seconds=(
                _int(e, "SILVER_MAX_FUTURE_SECONDS", 0)
                if e.get("SILVER_MAX_FUTURE_SECONDS")
                else None
            ),
            silver_max_files_per_trigger=_int(
                e, "SILVER_MAX_FILES_PER_TRIGGER", d.silver_max_files_per_trigger, 1
            ),
            silver_max_bytes_per_trigger=(
                e.get("SILVER_MAX_BYTES_PER_TRIGGER") or d.silver_max_bytes_per_trigger
            ),
            job_restarts=_int(e, "JOB_RESTARTS", d.job_restarts, 0),
            job_healthy_seconds=_int(e, "JOB_HEALTHY_SECONDS", d.job_healthy_seconds, 1),
            ops_compact_interval=e.get("OPS_COMPACT_INTERVAL", d.ops_compact_interval),
            gold_file_retention=e.get("GOLD_FILE_RETENTION") or d.gold_file_retention,
            kafka_consumer_group=e.get("KAFKA_CONSUMER_GROUP", d.kafka_consumer_group).strip(),
            quality_every_n_batches=_int(
                e, "QUALITY_EVERY_N_BATCHES", d.quality_every_n_batches, 0
            ),
            gold_watermark=e.get("GOLD_WATERMARK") or d.gold_watermark,
            gold_percentile_k=_int(e, "GOLD_PERCENTILE_K", d.gold_percentile_k, 8),
            gold_max_files_per_trigger=_int(
                e, "GOLD_MAX_FILES_PER_TRIGGER", d.gold_max_files_per_trigger, 1
            ),
            alerts_watermark=e.get("ALERTS_WATERMARK") or d.alerts_watermark,
            alerts_idle_grace=e.get("ALERTS_IDLE_GRACE") or d.alerts_idle_grace,
            alert_rules_file=Path(e["ALERT_RULES_FILE"]) if e.get("ALERT_RULES_FILE") else None,
            alerts_max_files_per_trigger=_int(
                e, "ALERTS_MAX_FILES_PER_TRIGGER", d.alerts_max_files_per_trigger, 1
            ),
            snapshot_in_first_batch=_bool(e, "SNAPSHOT_IN_FIRST_BATCH", d.snapshot_in_first_batch),
            log_level=(e.get("LOG_LEVEL") or d.log_level).upper(),
            log_format=(e.get("LOG_FORMAT") or d.log_format).lower(),
            log_max_bytes=_int(e, "LOG_MAX_MB", d.log_max_bytes // 2**20, 1) * 2**20,
            log_backups=_int(e, "LOG_BACKUPS", d.log_backups, 1),
            generator_api_host=e.get("GENERATOR_API_HOST") or d.generator_api_host,
            generator_api_port=_int(e, "GENERATOR_API_PORT", d.generator_api_port, 0),
            dashboard_host=e.get("DASHBOARD_HOST") or d.dashboard_host,
            dashboard_port=_int(e, "DASHBOARD_PORT", d.dashboard_port, 1),
            metrics_host=e.get("METRICS_HOST") or d.metrics_host,
            metrics_port=_int(e, "METRICS_PORT", d.metrics_port, 1),
            dashboard_refresh_seconds=_int(
                e, "DASHBOARD_REFRESH_SECONDS", d.dashboard_refresh_seconds, 1
            ),
            serving_mongo_uri=(e.get("SERVING_MONGO_URI") or d.serving_mongo_uri).strip(),
            serving_mongo_database=e.get("SERVING_MONGO_DATABASE") or d.serving_mongo_database,
            mongo_port=_int(e, "MONGO_PORT", d.mongo_port, 1),
            serving_max_files_per_trigger=_int(
                e, "SERVING_MAX_FILES_PER_TRIGGER", d.serving_max_files_per_trigger, 1
            ),
        )
        settings.validate()
        return settings

    def validate(self) -> None:
        """Raise ConfigError naming the first setting that cannot work."""
        parse_bootstrap(self.kafka_bootstrap_servers)
        if self.log_format not in {"kv", "json"}:
            raise ConfigError(f"LOG_FORMAT={self.log_format!r}: use kv or json")
        if self.log_level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ConfigError(f"LOG_LEVEL={self.log_level!r}: use DEBUG, INFO, WARNING or ERROR")
        interval_seconds(self.trigger_interval)
        for job in ("gold", "alerts"):
            interval_seconds(self.trigger_interval_of(job), f"{job.upper()}_TRIGGER_INTERVAL")
        if self.one_driver_scheduler not in ("FAIR", "FIFO"):
            raise ConfigError(
                f"ONE_DRIVER_SCHEDULER={self.one_driver_scheduler!r}: use FAIR or FIFO"
            )
        if self.spark_driver_gc not in DRIVER_GCS:
            raise ConfigError(
                f"SPARK_DRIVER_GC={self.spark_driver_gc!r}: use one of {', '.join(DRIVER_GCS)}"
            )
        duration_seconds(self.gold_watermark, "GOLD_WATERMARK")
        duration_seconds(self.alerts_watermark, "ALERTS_WATERMARK")
        duration_seconds(self.alerts_idle_grace, "ALERTS_IDLE_GRACE")
        _ = self.ops_compact_seconds
        retention = self.gold_file_retention_hours
        if retention < 1 or retention != round(retention):
            raise ConfigError(
                f"GOLD_FILE_RETENTION={self.gold_file_retention!r} is {retention:g} h: Delta's "
                "VACUUM keeps whole hours (it rounds a fraction), so use a whole number of "
                "hours, at least 1, e.g. '6 hours'"
            )
        for name, port, lowest in (
            ("GENERATOR_API_PORT", self.generator_api_port, 0),  # 0: no control API
            ("SOCKET_PORT", self.socket_port, 1),
            ("DASHBOARD_PORT", self.dashboard_port, 1),
            ("METRICS_PORT", self.metrics_port, 1),
            ("MONGO_PORT", self.mongo_port, 1),
        ):
            if not lowest <= port <= 65535:
                raise ConfigError(f"{name}={port}: use a TCP port from {lowest} to 65535")
        if self.gold_percentile_k > 65535:
            raise ConfigError(f"GOLD_PERCENTILE_K={self.gold_percentile_k}: use 8 to 65535")

    def with_(self, **changes: Any) -> Settings:
        """A copy with some fields changed (tests, CLI overrides)."""
        return replace(self, **changes)

    # Derived locations. Table paths are strings: they may be URIs, not only local folders.
    def table_path(self, relative: str) -> str:
        """Location of a table below LAKEHOUSE_PATH, e.g. ``bronze/sensor_events``."""
        return f"{self.lakehouse_path.rstrip('/')}/{relative}"

    def _catalog_path(self, name: str) -> str:
        """Where the catalog's table ``name`` lives (``catalog.TABLES``)."""
        from iot_lakehouse.catalog import table

        return table(name).path(self)

    def checkpoint_path(self, job: str) -> str:
        """Checkpoint folder of one streaming job: ``LAKEHOUSE_PATH/_checkpoints/<job>``."""
        return self.table_path(f"_checkpoints/{job}")

    @property
    def bronze_events_path(self) -> str:
        return self._catalog_path("bronze/sensor_events")

    @property
    def silver_readings_path(self) -> str:
        return self._catalog_path("silver/readings")

    @property
    def silver_duplicates_path(self) -> str:
        return self._catalog_path("_ops/silver_duplicates")

    @property
    def quality_results_path(self) -> str:
        return self._catalog_path("_ops/quality")

    def gold_path(self, table: str) -> str:
        """Location of a gold table, e.g. ``gold_path("sensor_metrics_5m")``."""
        return self.table_path(f"gold/{table}")

    @property
    def stream_metrics_path(self) -> str:
        return self._catalog_path("_ops/stream_metrics")

    @property
    def gold_late_readings_path(self) -> str:
        return self._catalog_path("_ops/gold_late_readings")

    @property
    def gold_progress_path(self) -> str:
        return self._catalog_path("_ops/gold_progress")

    def source_limits(self, **limits: int | str) -> dict[str, str]:
        """Per-trigger source limits (``maxOffsetsPerTrigger=…``) as reader options; none with
        ``SPARK_TUNING=false``, where a source reads everything it has (Spark's default)."""
        return {name: str(value) for name, value in limits.items()} if self.spark_tuning else {}

    @property
    def trigger_interval_seconds(self) -> float:
        return interval_seconds(self.trigger_interval)

    def trigger_interval_of(self, job: str) -> str:
        """The processing-time trigger interval of ``job`` (bronze, silver, gold, alerts)."""
        own = {"gold": self.gold_trigger_interval, "alerts": self.alerts_trigger_interval}
        return own.get(job) or self.trigger_interval

    def trigger_seconds_of(self, job: str) -> float:
        """``trigger_interval_of(job)`` in seconds."""
        return interval_seconds(self.trigger_interval_of(job))

    @property
    def ops_compact_seconds(self) -> int:
        """Seconds between two compactions of the _ops tables by `all` (0: never)."""
        text = self.ops_compact_interval.strip()
        if text in ("", "0"):
            return 0
        return duration_seconds(text, "OPS_COMPACT_INTERVAL")

    @property
    def gold_file_retention_hours(self) -> float:
        return duration_seconds(self.gold_file_retention, "GOLD_FILE_RETENTION") / 3600

    @property
    def gold_watermark_seconds(self) -> int:
        return duration_seconds(self.gold_watermark, "GOLD_WATERMARK")

    @property
    def alerts_watermark_seconds(self) -> int:
        return duration_seconds(self.alerts_watermark, "ALERTS_WATERMARK")

    @property
    def alerts_idle_grace_seconds(self) -> int:
        return duration_seconds(self.alerts_idle_grace, "ALERTS_IDLE_GRACE")

    @property
    def alerts_path(self) -> str:
        return self._catalog_path("gold/alerts")

    @property
    def alerts_clock_path(self) -> str:
        return self._catalog_path("_ops/alerts_clock")

    @property
    def dlq_rejects_path(self) -> str:
        return self._catalog_path("dlq/silver_rejects")

    @property
    def kafka_host(self) -> str:
        return parse_bootstrap(self.kafka_bootstrap_servers)[0]

    @property
    def kafka_port(self) -> int:
        return parse_bootstrap(self.kafka_bootstrap_servers)[1]

    @property
    def kafka_controller_port_effective(self) -> int:
        """KRaft controller port: KAFKA_CONTROLLER_PORT, or the broker port + 1."""
        return self.kafka_controller_port or self.kafka_port + 1

    @property
    def kafka_dir(self) -> Path:
        return self.runtime_dir / "kafka"

    @property
    def mongo_dir(self) -> Path:
        """The local MongoDB-protocol server's binary, data and log (``iot-lakehouse mongo``)."""
        return self.runtime_dir / "mongo"

    @property
    def serving_uri(self) -> str:
        """Where the serving job writes: SERVING_MONGO_URI, else the local server's URI."""
        return self.serving_mongo_uri or f"mongodb://127.0.0.1:{self.mongo_port}/"

    @property
    def logs_dir(self) -> Path:
        return self.runtime_dir / "logs"
