"""``iot-lakehouse bench``: run the benchmark's processes side by side and collect the figures.

One private broker (free ports) and fresh lakehouses in a temporary folder; the jobs run as
separate processes exactly as ``start_all.sh`` starts them. Beside them, on the same topics, the
textbook one-hop job (:mod:`iot_lakehouse.benchmarks.bench_textbook`: Kafka -> ``from_json`` ->
range filter -> Delta, Spark's defaults): it drains the replay topic's backlog after ours, and
consumes the live topic while ours does (or in turn with ours when memory is short), an outside
reader polling each silver's newest event time. The arithmetic and the table live in
:mod:`iot_lakehouse.benchmarks.bench`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import psutil
from confluent_kafka import Consumer, Producer, TopicPartition
from deltalake import DeltaTable
from deltalake.exceptions import TableNotFoundError

from iot_lakehouse.benchmarks import bench, bench_textbook
from iot_lakehouse.benchmarks.bench import BenchReport, Figure, Plan
from iot_lakehouse.interfaces.supervisor import (
    ONE_DRIVER,
    PIPELINE_JOBS,
    Child,
    spawn,
    start_downstream_jobs,
    stop_children,
)
from iot_lakehouse.logs import kv
from iot_lakehouse.ops.evaluate import evaluate_lakehouse, score_dict
from iot_lakehouse.ops.status import has_committed
from iot_lakehouse.runtime.kafka_broker import LocalKafkaBroker
from iot_lakehouse.runtime.kafka_offsets import kafka_end_offsets
from iot_lakehouse.runtime.stream_metrics import read_stream_metrics
from iot_lakehouse.settings import START_ALL_RATE, START_ALL_SENSORS, Settings
from iot_lakehouse.sources.generator import EventGenerator, GeneratorConfig, producer_config

logger = logging.getLogger(__name__)

JOB_NAMES = ("bronze", "silver", "gold", "alerts")
BAD_INPUT = (  # the same little bad input start_all sends
    *("--malformed-fraction", "0.005", "--invalid-fraction", "0.01"),
    *("--duplicate-fraction", "0.005", "--late-fraction", "0.01"),
)
# Queries whose input grows only when something happens (alerts_counts reads gold/alerts, which
# grows when an alert fires): a window without a batch there is idle, not stalled.
EVENT_DRIVEN = {("alerts", "alerts_counts")}
METRICS_FLUSH_S = 12.0  # the jobs append their stream metrics every 10 s
POLL_S = 0.5
FRESHNESS_POLL_S = 2.0  # G1: how often silver's and gold's newest event time is read
WARM_COMMITS = 2  # G1: commits of silver and of gold at a new rate before its window starts
WINDOW_CHECK_S = 5.0  # G1: how often the stream metrics say whether a window is long enough
SETTLE_S = 30.0  # seconds at a new rate before a freshness is sampled
TEXTBOOK_START_S = 300.0  # at most this long for the textbook job's first commit
# Event times further ahead of the clock are no sign of freshness (the silver rules' limit:
# the textbook job keeps readings stamped years ahead).
PLAUSIBLE_AHEAD_S = 300.0
# The control API's state-changing calls need this header (and a JSON body).
API_HEADERS = {"Content-Type": "application/json", "X-IoT-Lakehouse": "1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def utc_now() -> datetime:
    return datetime.now(UTC)


# --- resources -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ProcessFacts:
    """What the sampler needs to know of a process to tell whether its memory is its own."""

    ppid: int | None
    name: str | None
    exe: str | None
    vms: int | None


def is_spawn_in_progress(child: ProcessFacts, parent: ProcessFacts | None) -> bool:
    """True for a JVM's child that is the JVM itself on its way to exec a command: Hadoop's
    local file system (no native library) spawns ``chmod`` and ``readlink``, ~30 per bronze
    batch, and until the spawn execs the child shares the JVM's address space (same binary,
    same virtual size). Its name is then the name of the JVM thread that spawned it
    (``Executor task l``, ``stream executio``, ``Thread-4``, ...), not ``java``. Counted, it
    would add a second copy of the JVM. A JVM started by a JVM (its own binary, its own size)
    and Python workers forked from their daemon are not spawns."""
    if parent is None or parent.name != "java" or child.exe is None or child.vms is None:
        return False
    return child.exe == parent.exe and child.vms == parent.vms


class ResourceSampler:
    """Samples, once a second, the RSS of each named process with all its descendants (a job
    and its JVM): peak per name and peak of all together; CPU seconds on demand.

    The total is also taken as PSS (each shared page counted once, split between the processes
    sharing it: the class archive the JVMs map, the Python workers forked from one daemon),
    the memory the processes really take together. A JVM's child on its way to exec a command
    shares the JVM's memory and is not counted a second time (``is_spawn_in_progress``)."""

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self.processes: dict[str, psutil.Process] = {}
        self.peak: dict[str, int] = {}
        self.peak_total = 0
        self.peak_total_pss = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def watch(self, name: str, pid: int) -> None:
        with self._lock:
            try:
                self.processes[name] = psutil.Process(pid)
            except psutil.NoSuchProcess:
                pass

    def forget(self, name: str) -> None:
        with self._lock:
            self.processes.pop(name, None)

    def reset_total(self) -> None:
        with self._lock:
            self.peak_total = 0
            self.peak_total_pss = 0

    @staticmethod
    def _tree(process: psutil.Process) -> list[psutil.Process]:
        try:
            return [process, *process.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    @staticmethod
    def _own_memory(tree: list[psutil.Process]) -> list[psutil.Process]:
        """The processes of ``tree`` with memory of their own (see ``is_spawn_in_progress``)."""
        seen: dict[int, ProcessFacts] = {}
        for p in tree:
            with contextlib.suppress(psutil.Error):
                info = p.as_dict(["ppid", "name", "exe", "memory_info"], ad_value=None)
                vms = info["memory_info"].vms if info["memory_info"] is not None else None
                seen[p.pid] = ProcessFacts(info["ppid"], info["name"], info["exe"], vms)

        def parent(facts: ProcessFacts) -> ProcessFacts | None:
            return None if facts.ppid is None else seen.get(facts.ppid)

        return [
            p
            for p in tree
            if p.pid in seen and not is_spawn_in_progress(seen[p.pid], parent(seen[p.pid]))
        ]

    def memory(self, process: psutil.Process) -> tuple[int, int]:
        """(RSS, PSS) in bytes of ``process`` and its descendants."""
        rss = pss = 0
        for p in self._own_memory(self._tree(process)):
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                full = p.memory_full_info()
                rss += full.rss
                pss += getattr(full, "pss", full.rss)
        return rss, pss

    def cpu_seconds(self) -> dict[str, float]:
        """User + system CPU seconds so far of each watched process tree."""
        with self._lock:
            processes = dict(self.processes)
        out = {}
        for name, process in processes.items():
            seconds = 0.0
            for p in self._tree(process):
                try:
                    times = p.cpu_times()
                    seconds += times.user + times.system
                except psutil.NoSuchProcess:
                    pass
            out[name] = seconds
        return out

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            with self._lock:
                processes = dict(self.processes)
            total = total_pss = 0
            for name, process in processes.items():
                rss, pss = self.memory(process)
                total += rss
                total_pss += pss
                self.peak[name] = max(self.peak.get(name, 0), rss)
            with self._lock:
                self.peak_total = max(self.peak_total, total)
                self.peak_total_pss = max(self.peak_total_pss, total_pss)


# --- ceilings ------------------------------------------------------------------------------


def kafka_ceilings(settings: Settings, messages: int) -> tuple[float, float]:
    """Raw confluent-kafka produce (acks=all, as the generator) and consume rates, messages/s,
    with ready-made payloads (the generator's, cycled): no generation, no processing."""
    topic = "bench-ceiling"
    LocalKafkaBroker(replace(settings, kafka_topic=topic)).create_topics()
    payloads = EventGenerator(GeneratorConfig(format="mixed")).generate_block(0).values
    conf = producer_config(settings)
    del conf["logger"]
    producer = Producer(conf)
    failed = [0]

    def on_delivery(err: object, _msg: object) -> None:
        if err is not None:
            failed[0] += 1

    started = time.perf_counter()
    for i in range(messages):
        while True:
            try:
                producer.produce(topic, payloads[i % len(payloads)], on_delivery=on_delivery)
                break
            except BufferError:  # the local queue is full: let deliveries drain it
                producer.poll(0.05)
        if i % 10_000 == 0:
            producer.poll(0)
    producer.flush(120)
    produce_rate = messages / (time.perf_counter() - started)
    if failed[0]:
        raise RuntimeError(f"{failed[0]} of {messages} ceiling messages were not acknowledged")

    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "group.id": f"bench-ceiling-{time.time_ns()}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "log_level": 0,
        }
    )
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
    received = 0
    started = time.perf_counter()
    deadline = time.monotonic() + 120
    while received < messages and time.monotonic() < deadline:
        received += sum(1 for m in consumer.consume(10_000, timeout=1.0) if m.error() is None)
    consume_rate = received / (time.perf_counter() - started)
    consumer.close()
    return produce_rate, consume_rate


# --- one pipeline: a lakehouse, a topic and its processes ----------------------------------


@dataclass
class Pipeline:
    """The jobs and generator of one lakehouse on the shared broker."""

    label: str  # names its folders and processes ("tuned": this project's settings)
    workdir: Path
    base_env: dict[str, str]
    sampler: ResourceSampler
    topic: str
    children: list[Child] = field(default_factory=list)
    paused_at: float | None = None  # when the generator was paused (None: sending)

    def __post_init__(self) -> None:
        lakehouse = self.workdir / f"lakehouse-{self.label}"
        self.env = {
            **self.base_env,
            "LAKEHOUSE_PATH": str(lakehouse),
            "DLQ_PATH": str(self.workdir / f"dlq-{self.label}"),
            "KAFKA_TOPIC": self.topic,
            "GENERATOR_API_PORT": str(free_port()),
            "SPARK_TUNING": "true",
            # Own logs, as JSON, with the per-batch lines (silver's carry its stage timings).
            "IOT_RUNTIME_DIR": str(self.workdir / f"runtime-{self.label}"),
            "LOG_FORMAT": "json",
            "LOG_LEVEL": "INFO",
        }
        self.settings = Settings.from_env(self.env)

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.settings.generator_api_port}"

    def spawn(self, name: str, args: list[str]) -> Child:
        child = spawn(f"{self.label}-{name}", args, self.settings.logs_dir, self.env)
        self.children.append(child)
        self.sampler.watch(child.name, child.proc.pid)
        return child

    def run(self, name: str, args: list[str], timeout: float) -> float:
        """Run one command to its end; its wall seconds. RuntimeError if it fails."""
        child = self.spawn(name, args)
        started = time.monotonic()
        try:
            code = child.proc.wait(timeout)
        finally:
            stop_children([child])
            self.sampler.forget(child.name)
            self.children.remove(child)
        if code != 0:
            raise RuntimeError(f"{self.label} {' '.join(args)} exited {code}; see {child.log}")
        return time.monotonic() - started

    def start_generator(self, rate: float, sensors: int = 1000, more: Iterable[str] = ()) -> None:
        self.spawn(
            "generator",
            [
                "generate",
                *("--rate", str(rate), "--sensors", str(sensors), "--format", "mixed"),
                *("--seed", "7", *BAD_INPUT, *more),
            ],
        )
        self._wait_for(lambda: self._http("GET", "/health") is not None, 60, "generator API")

    def start_jobs(self) -> float:
        """Start the jobs as ``start_all`` does (bronze first, or all in one driver); the
        moment bronze started."""
        started = time.monotonic()
        if self.settings.jobs_in_one_driver:
            self.spawn(ONE_DRIVER, ["run", *PIPELINE_JOBS])
            return started
        bronze = self.spawn("bronze", ["run", "bronze"])
        start_downstream_jobs(
            self.settings, lambda job: self.spawn(job, ["run", job]), bronze, threading.Event()
        )
        return started

    def exited(self) -> list[str]:
        return [c.name for c in self.children if c.proc.poll() is not None]

    def stop(self, keep: Iterable[str] = ()) -> None:
        """Stop every process of the pipeline but those named ``<label>-<name>`` for a name in
        ``keep`` (e.g. the generator)."""
        kept = {f"{self.label}-{name}" for name in keep}
        going = [c for c in self.children if c.name not in kept]
        stop_children(going)
        for child in going:
            self.sampler.forget(child.name)
        self.children = [c for c in self.children if c.name in kept]

    # generator control
    def _http(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        if body is None and method != "GET":
            body = {}
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.api + path, data=data, method=method, headers=API_HEADERS
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return json.loads(response.read() or b"null")
        except OSError:
            return None

    def set_rate(self, rate: float) -> None:
        self._http("PUT", "/rate", {"events_per_second": rate})
        self._http("POST", "/resume")
        self.paused_at = None

    def pause(self) -> float:
        """Pause the generator; the moment it stopped sending (earlier, if already paused)."""
        self._http("POST", "/pause")
        if self.paused_at is None:
            self.paused_at = time.time()
        return self.paused_at

    def measured_rate(self) -> float | None:
        status = self._http("GET", "/status")
        return None if status is None else float(status.get("measured_rate", 0.0))

    @staticmethod
    def _wait_for(ready: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} not ready after {timeout:.0f} s")
            time.sleep(0.2)

    # what the tables and checkpoints say
    def metrics(self, since: datetime) -> list[dict[str, Any]]:
        return read_stream_metrics(self.settings.stream_metrics_path, since)

    def versions(self) -> tuple[int, ...]:
        out = []
        for path in (
            self.settings.bronze_events_path,
            self.settings.silver_readings_path,
            self.settings.gold_path("sensor_metrics_5m"),
            self.settings.alerts_path,
        ):
            try:
                out.append(DeltaTable(path).version())
            except TableNotFoundError:
                out.append(-1)
        return tuple(out)

    def kafka_lag(self) -> int | None:
        from iot_lakehouse.runtime.kafka_cleanup import read_bronze_progress

        ends = kafka_end_offsets(self.settings)
        if ends is None:
            return None
        progress = read_bronze_progress(self.settings.checkpoint_path("bronze"), self.topic)
        done = progress.offsets or {}
        return sum(max(0, end - done.get(p, 0)) for p, end in ends.items())


# --- the textbook job -----------------------------------------------------------------------


@dataclass
class TextbookJob:
    """The textbook one-hop job (``bench_textbook``) on a pipeline's broker and topic, in its
    own folder: its Delta table, checkpoint and log. Its memory is sampled on its own, so that
    run beside our pipeline it does not count in ours."""

    folder: Path
    pipe: Pipeline
    child: Child | None = None
    sampler: ResourceSampler = field(default_factory=ResourceSampler)

    @property
    def table(self) -> str:
        return str(self.folder / "silver")

    @property
    def checkpoint(self) -> str:
        return str(self.folder / "_checkpoint")

    @property
    def log(self) -> Path:
        return self.folder / "textbook.out"

    def start(self, starting_offsets: str) -> None:
        """Start it as its own process (Spark's defaults, JSON logs with each batch)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        env = {**self.pipe.env, "SPARK_TUNING": "false", "LOG_FORMAT": "json", "LOG_LEVEL": "INFO"}
        args = [
            *("--bootstrap-servers", self.pipe.settings.kafka_bootstrap_servers),
            *("--topic", self.pipe.topic, "--table", self.table),
            *("--checkpoint", self.checkpoint, "--starting-offsets", starting_offsets),
        ]
        with open(self.log, "ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", bench_textbook.__name__, *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env=env,
            )
        self.child = Child(f"{self.pipe.label}-textbook", proc, self.log)
        self.sampler.watch("textbook", proc.pid)
        self.sampler.start()  # a job is started once
        logger.info("started %s", kv(component=self.child.name, pid=proc.pid, log=self.log))

    def exited(self) -> bool:
        return self.child is not None and self.child.proc.poll() is not None

    def stop(self) -> None:
        if self.child is not None:
            stop_children([self.child])
            self.sampler.forget("textbook")
            self.sampler.stop()

    @property
    def peak_rss(self) -> int | None:
        return self.sampler.peak.get("textbook")

    def consumed(self) -> dict[int, int]:
        """The offsets of its newest committed batch, per partition."""
        from iot_lakehouse.runtime.kafka_cleanup import read_bronze_progress

        return read_bronze_progress(self.checkpoint, self.pipe.topic).offsets or {}

    def batches(self) -> list[dict[str, Any]]:
        """Its micro-batches with input, from its log (stream-metrics row shape)."""
        lines = self.log.read_text(errors="replace").splitlines() if self.log.exists() else []
        return bench.progress_rows(lines, bench_textbook.BATCH_MESSAGE, "textbook")

    def wait_for_first_commit(self, reader: NewestReader, timeout: float) -> None:
        """Until its table shows an event time; RuntimeError if it exits or takes too long."""
        deadline = time.monotonic() + timeout
        while reader.read() is None:
            if self.exited():
                raise RuntimeError(f"the textbook job exited; see {self.log}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the textbook job committed nothing in {timeout:.0f} s")
            time.sleep(1.0)


def replay_textbook(pipe: Pipeline, folder: Path, timeout: float = 3600) -> dict[str, Any]:
    """The textbook job on the pipeline's topic from its earliest offsets (default trigger)
    until its checkpoint reached the end offsets the topic had when it started: wall seconds
    (JVM start included) and rows/s of its batches (start-up excluded, as ours)."""
    job = TextbookJob(folder, pipe)
    ends = kafka_end_offsets(pipe.settings)
    started = time.monotonic()
    try:
        if ends is None:
            raise RuntimeError("the replay topic's end offsets could not be read")
        job.start("earliest")
        while not bench.caught_up(job.consumed(), ends):
            if job.exited():
                raise RuntimeError(f"the textbook job exited; see {job.log}")
            if time.monotonic() - started > timeout:
                raise RuntimeError(f"the textbook job did not drain the topic in {timeout:.0f} s")
            time.sleep(POLL_S)
        wall = time.monotonic() - started
        # A batch is logged a moment after its commit (the job polls its progress every
        # second): wait for the line of the last one before stopping it.
        logged_by = time.monotonic() + 30.0
        while sum(b["input_rows"] for b in job.batches()) < sum(ends.values()):
            if time.monotonic() > logged_by or job.exited():
                break
            time.sleep(POLL_S)
    except RuntimeError as exc:
        logger.warning("textbook replay failed %s", kv(error=str(exc)))
        return {"error": str(exc)}
    finally:
        job.stop()  # it logs its last batches as it stops
    rate, rows = processing_rate(job.batches(), "textbook")
    return {
        "wall_s": wall,
        "rows_per_s": rate,
        "rows": rows,
        "span_s": rows / rate if rate else None,
        "peak_rss": job.peak_rss,
    }


# --- live measurements ---------------------------------------------------------------------


def cold_start(pipe: Pipeline, rate: float, timeout: float = 300.0) -> dict[str, float | None]:
    """G5: generator first (so there is input), then the four jobs; seconds from their start
    to each job's first committed micro-batch."""
    pipe.start_generator(rate)
    started = pipe.start_jobs()
    seen: dict[str, float | None] = dict.fromkeys(JOB_NAMES)
    while time.monotonic() - started < timeout and None in seen.values():
        for job in JOB_NAMES:
            if seen[job] is None and has_committed(pipe.settings, job):
                seen[job] = time.monotonic() - started
        if pipe.exited():
            raise RuntimeError(f"{pipe.label}: {pipe.exited()} exited during start-up")
        time.sleep(0.2)
    logger.info("cold start %s", kv(pipeline=pipe.label, **{k: v for k, v in seen.items()}))
    return seen


@dataclass
class Step:
    """One G1 rate tried: did every query keep up, and where the CPU went."""

    rate: float
    sent_rate: float | None
    passed: bool
    verdicts: list[bench.LagVerdict]
    freshness: list[bench.FreshnessVerdict]
    cpu_cores: dict[str, float]
    why: str
    drain_s: float | None  # seconds the backlog took to go once paused; None: not within


def sustain(pipe: Pipeline, rate: float, plan: Plan) -> Step:
    """Run the generator at ``rate``; after the warm-up (until silver and gold show this
    rate's events), judge every query over ``plan.sustain_s`` seconds (longer, up to
    ``WINDOW_STRETCH`` times, until every query has run ``MIN_BATCHES`` batches and silver and
    gold made ``FRESH_COMMITS`` commits in the window) and measure each process's CPU use. Two
    judgements must hold: each query's lag (Kafka offsets, Delta versions) stays flat, and
    how far silver's and gold's newest event time trails the clock grows over the window by no
    more than one gap between their commits (``bench.freshness_verdict``: a layer whose batches
    grow as it falls behind keeps a flat version lag, not a flat trail). The lag verdict is
    read after the backlog drained: a batch's metrics row exists only once it has ended."""
    since = time.time()
    pipe.set_rate(rate)
    tables = fresh_tables(pipe.settings)
    polls: dict[str, list[tuple[float, float | None]]] = {name: [] for name in tables}

    def poll() -> None:
        for name, reader in tables.items():
            polls[name].append((time.time(), reader.read()))
        if pipe.exited():
            raise RuntimeError(f"{pipe.label}: {pipe.exited()} exited at {rate:,.0f} events/s")
        time.sleep(FRESHNESS_POLL_S)

    # Warm-up: at least plan.warmup_s, and until silver and gold each made WARM_COMMITS
    # commits of this rate's events (a pipeline resumed from idle first runs short batches,
    # and its lag grows while they lengthen to the new rate: settling, not falling behind);
    # at most as long as a backlog may take to drain.
    warm, give_up = time.monotonic() + plan.warmup_s, time.monotonic() + plan.drain_s

    def settled() -> bool:
        now = time.time()
        return all(len(bench.trail(polls[n], since, since, now)) >= WARM_COMMITS for n in tables)

    while time.monotonic() < warm or (time.monotonic() < give_up and not settled()):
        poll()
    cpu_before = pipe.sampler.cpu_seconds()
    start, sent = utc_now(), []
    checked = 0.0

    def window_done() -> bool:
        nonlocal checked
        elapsed = (utc_now() - start).total_seconds()
        if elapsed < plan.sustain_s or time.monotonic() - checked < WINDOW_CHECK_S:
            return False
        if elapsed >= plan.sustain_s * bench.WINDOW_STRETCH:
            return True
        checked = time.monotonic()
        now = time.time()
        few = [
            name
            for name in tables
            if len(bench.trail(polls[name], since, start.timestamp(), now)) < bench.FRESH_COMMITS
        ]
        rows = pipe.metrics(start - timedelta(minutes=2))
        return not few and not bench.short_of_batches(
            rows, start, utc_now(), JOB_NAMES, EVENT_DRIVEN
        )

    while not window_done():
        poll()
        measured = pipe.measured_rate()
        if measured is not None:
            sent.append(measured)
    end = utc_now()
    cpu_after = pipe.sampler.cpu_seconds()
    window = (end - start).total_seconds()
    cpu = {
        name.removeprefix(f"{pipe.label}-"): round(
            (cpu_after[name] - cpu_before.get(name, 0.0)) / window, 2
        )
        for name in cpu_after
    }
    freshness = [
        bench.freshness_verdict(name, polls[name], since, start.timestamp(), end.timestamp())
        for name in tables
    ]
    drain_s = drain(pipe, plan.drain_s)
    time.sleep(METRICS_FLUSH_S)
    rows = pipe.metrics(start - timedelta(minutes=2))
    queries = sorted({(r["job"], r["query"]) for r in rows} - EVENT_DRIVEN)
    verdicts = bench.lag_verdicts(
        rows, start, end, rate, pipe.settings.trigger_interval_seconds, queries
    )
    missing = [job for job in JOB_NAMES if job not in {q[0] for q in queries}]
    sent_rate = sum(sent) / len(sent) if sent else None
    reasons = [f"{v.job}/{v.query}: {v.why}" for v in verdicts if not v.flat]
    reasons += [f"{job}: no batch recorded" for job in missing]
    reasons += [f"{f.table}'s newest event time {f.why}" for f in freshness if not f.flat]
    if sent_rate is None or sent_rate < 0.9 * rate:
        reasons.append(f"the generator sent only {sent_rate or 0:,.0f} events/s")
    if drain_s is None:
        reasons.append(f"the backlog did not drain within {plan.drain_s:.0f} s after the window")
    why = "; ".join(reasons) or "flat"
    step = Step(rate, sent_rate, not reasons, verdicts, freshness, cpu, why, drain_s)
    logger.info(
        "G1 step %s",
        kv(pipeline=pipe.label, rate=rate, passed=step.passed, why=why, drain_s=drain_s, cpu=cpu),
    )
    return step


def fresh_tables(settings: Settings) -> dict[str, NewestEventTime]:
    """The tables whose newest event time says how far a layer trails the clock."""
    return {
        "silver": NewestEventTime(settings.silver_readings_path, "event_time"),
        "gold": NewestEventTime(settings.gold_path("sensor_metrics_5m"), "last_event_time"),
    }


def sample_trails(pipe: Pipeline, seconds: float, every_s: float = 1.0) -> dict[str, list[float]]:
    """For ``seconds``, every ``every_s``: how far silver's and gold's newest event time (a
    Delta reader's view: the tables' file statistics) trails the clock."""
    return sample_readers(dict(fresh_tables(pipe.settings)), seconds, every_s)


def sample_readers(
    readers: dict[str, NewestReader], seconds: float, every_s: float = 1.0
) -> dict[str, list[float]]:
    """For ``seconds``, every ``every_s``: how far each reader's newest event time trails the
    clock (nothing while a table shows none)."""
    trails: dict[str, list[float]] = {name: [] for name in readers}
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for name, reader in readers.items():
            newest = reader.read()
            if newest is not None:
                trails[name].append(time.time() - newest)
        time.sleep(every_s)
    return trails


def compare_freshness(pipe: Pipeline, plan: Plan, folder: Path) -> dict[str, Any]:
    """Live, ours against the textbook job on the pipeline's topic at ``plan.compare_rate``:
    from ``SETTLE_S`` after the textbook job's first commit, how far each silver's newest
    plausible event time trails the clock, read every second for ``plan.compare_s`` (p50,
    p95, max). Side by side when the memory free allows (``bench.side_by_side_fits``); else in
    turn: ours, then the textbook job with our jobs stopped (they are started again after, and
    the caller drains their backlog)."""
    together = bench.side_by_side_fits(psutil.virtual_memory().available)
    rate, seconds = plan.compare_rate, plan.compare_s
    result: dict[str, Any] = {
        "rate": rate,
        "seconds": seconds,
        "mode": "side by side on one topic" if together else "in turn on one topic (memory short)",
    }
    job = TextbookJob(folder, pipe)
    readers: dict[str, NewestReader] = {
        "ours": NewestPlausibleEventTime(pipe.settings.silver_readings_path, "event_time"),
        "textbook": NewestPlausibleEventTime(job.table, "event_time"),
    }
    ours_stopped = False
    try:
        pipe.set_rate(rate)  # also resumes a paused generator: the textbook job needs input
        if together:
            job.start("latest")
            job.wait_for_first_commit(readers["textbook"], TEXTBOOK_START_S)
            time.sleep(SETTLE_S)
            trails = sample_readers(readers, seconds)
        else:
            time.sleep(SETTLE_S)
            trails = sample_readers({"ours": readers["ours"]}, seconds)
            pipe.stop(keep=["generator"])
            ours_stopped = True
            job.start("latest")
            job.wait_for_first_commit(readers["textbook"], TEXTBOOK_START_S)
            time.sleep(SETTLE_S)
            trails.update(sample_readers({"textbook": readers["textbook"]}, seconds))
        result.update({name: trail_summary(trail) for name, trail in trails.items()})
        if pipe.exited():
            result["error"] = f"{pipe.exited()} exited during the comparison"
    except RuntimeError as exc:
        result["error"] = str(exc)
    finally:
        job.stop()
        result["textbook_peak_rss"] = job.peak_rss
    if ours_stopped:
        pipe.start_jobs()
    logger.info("live freshness, ours vs textbook %s", kv(**{k: str(v) for k, v in result.items()}))
    return result


def freshness(pipe: Pipeline, seconds: float, rate: float = START_ALL_RATE) -> dict[str, Any]:
    """Freshness at ``rate`` (default start_all's): after a 30 s settling, how far silver's and
    gold's newest visible event time trails the clock, sampled every second for ``seconds``:
    p50, p95 and max per table."""
    pipe.set_rate(rate)
    time.sleep(30.0)
    trails = sample_trails(pipe, seconds)
    return {"rate": rate, "seconds": seconds, **{n: trail_summary(v) for n, v in trails.items()}}


def trail_summary(trail: list[float]) -> dict[str, Any]:
    """p50, p95, max and number of the seconds a table trailed the clock (``sample_trails``)."""
    ordered = sorted(trail)
    return {
        "p50": bench.percentile(ordered, 0.50),
        "p95": bench.percentile(ordered, 0.95),
        "max": ordered[-1] if ordered else None,
        "samples": len(ordered),
    }


def drain(pipe: Pipeline, timeout: float, slack_s: float = 10.0) -> float | None:
    """Pause the generator until everything sent has gone through: bronze has every record,
    and silver's and gold's newest event times have reached the pause (within ``slack_s``).
    The seconds that took, or None if it took longer than ``timeout``."""
    paused_at = pipe.pause()  # already paused: what was sent before must have gone through
    tables = fresh_tables(pipe.settings).values()
    started, deadline = time.time(), time.monotonic() + timeout
    while time.monotonic() < deadline:
        newest = [table.read() for table in tables]
        if pipe.kafka_lag() == 0 and all(
            t is not None and t >= paused_at - slack_s for t in newest
        ):
            return round(time.time() - started, 1)
        time.sleep(2)
    return None


def find_sustained_rate(pipe: Pipeline, plan: Plan, details: list[dict[str, Any]]) -> float | None:
    """G1: ramp the rate (``bench.next_rate``), draining between steps; the highest rate every
    query kept up with, or None if none did."""
    passed: list[float] = []
    failed: list[float] = []
    rate: float | None = plan.start_rate
    for _ in range(plan.max_steps):
        if rate is None:
            break
        step = sustain(pipe, rate, plan)
        details.append(
            {
                "rate": step.rate,
                "sent_rate": step.sent_rate,
                "passed": step.passed,
                "why": step.why,
                "cpu_cores": step.cpu_cores,
                "drain_s": step.drain_s,
                "lags": [asdict(v) for v in step.verdicts],
                "freshness": [asdict(f) for f in step.freshness],
            }
        )
        (passed if step.passed else failed).append(rate)
        rate = bench.next_rate(passed, failed, bench.G1_TARGET)
        if step.drain_s is None:  # the next rate would start behind
            details.append({"stopped": f"the backlog did not drain in {plan.drain_s:.0f} s"})
            break
    return max(passed, default=None)


class NewestReader(Protocol):
    """An outside reader of a Delta table's newest event time (epoch seconds; None: none)."""

    def read(self) -> float | None: ...


def refreshed(table: DeltaTable | None, path: str) -> DeltaTable | None:
    """The Delta table at ``path`` at its newest version: opened the first time, brought up to
    date incrementally after; None while there is no table yet."""
    try:
        if table is None:
            return DeltaTable(path)
        table.update_incremental()
        return table
    except TableNotFoundError:
        return None


class NewestEventTime:
    """The newest value of a timestamp column of a Delta table, from the file statistics only
    (no data read), refreshed incrementally."""

    def __init__(self, path: str, column: str) -> None:
        self.path, self.column = path, column
        self.table: DeltaTable | None = None

    def read(self) -> float | None:
        self.table = refreshed(self.table, self.path)
        if self.table is None:
            return None
        actions = self.table.get_add_actions(flatten=True)
        name = f"max.{self.column}"
        if actions.num_rows == 0 or name not in actions.column_names:
            return None
        values = [v for v in actions.column(name).to_pylist() if v is not None]
        if not values:
            return None
        newest: datetime = max(values)
        return (newest if newest.tzinfo else newest.replace(tzinfo=UTC)).timestamp()


class NewestPlausibleEventTime:
    """The newest value of a timestamp column of a Delta table that is not further ahead of the
    clock than ``ahead_s``, from the data: each file added since the last read is read once
    (the column only). The file statistics would not do for a table holding readings stamped
    years ahead (the textbook job keeps them): their maximum hides every other event time of
    the file."""

    def __init__(self, path: str, column: str, ahead_s: float = PLAUSIBLE_AHEAD_S) -> None:
        self.path, self.column, self.ahead_s = path, column, ahead_s
        self.table: DeltaTable | None = None
        self.seen: set[str] = set()
        self.newest: float | None = None

    def read(self) -> float | None:
        self.table = refreshed(self.table, self.path)
        if self.table is None:
            return None
        limit = time.time() + self.ahead_s
        for uri in self.table.file_uris():
            if uri in self.seen:
                continue
            self.seen.add(uri)
            found = bench.newest_not_after(self._seconds(uri), limit)
            if found is not None and (self.newest is None or found > self.newest):
                self.newest = found
        return self.newest

    def _seconds(self, uri: str) -> list[float]:
        """The column's values in one data file, as epoch seconds (nulls left out)."""
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        column = pq.read_table(uri.removeprefix("file://"), columns=[self.column]).column(0)
        per_second = {"s": 1, "ms": 1e3, "us": 1e6, "ns": 1e9}[column.type.unit]
        ints = pc.cast(column, pa.int64()).to_pylist()
        return [v / per_second for v in ints if v is not None]


def latency(pipe: Pipeline, plan: Plan, rate: float) -> dict[str, Any]:
    """G2 / G3: events at ``rate``; an outside reader polls silver's newest ``event_time`` and
    gold's newest ``last_event_time`` every 0.5 s. An event time's latency is the first poll
    that shows it minus the event time (the generator stamps events as it sends them)."""
    tables = fresh_tables(pipe.settings)
    pipe.set_rate(rate)
    warm = 15.0
    started = time.time()
    polls: dict[str, list[tuple[float, float]]] = {name: [] for name in tables}
    grace = 30.0
    while time.time() < started + warm + plan.latency_s + grace:
        for name, reader in tables.items():
            newest = reader.read()
            if newest is not None:
                polls[name].append((time.time(), newest))
        if pipe.paused_at is None and time.time() > started + warm + plan.latency_s:
            pipe.pause()
        time.sleep(POLL_S)
    events = [started + warm + i / 10 for i in range(int(plan.latency_s * 10))]
    out: dict[str, Any] = {"rate": rate}
    for name in ("silver", "gold"):
        values, unseen = bench.visibility_latencies(polls[name], events)
        out[name] = {
            "p50": bench.percentile(values, 0.50),
            "p95": bench.percentile(values, 0.95),
            "p99": bench.percentile(values, 0.99),
            "events": len(events),
            "unseen": unseen,
        }
    return out


# --- replay --------------------------------------------------------------------------------


def processing_rate(rows: list[dict[str, Any]], job: str) -> tuple[float | None, int]:
    """Rows/s of one job's batches from its stream metrics: input rows over the span from the
    first batch's start to the last batch's end (start-up excluded)."""
    batches = [r for r in rows if r["job"] == job and r.get("batch_time") is not None]
    if not batches:
        return None, 0
    total = sum(int(r["input_rows"] or 0) for r in batches)
    first = min(r["batch_time"] for r in batches)
    last = max(
        r["batch_time"] + timedelta(milliseconds=r["batch_duration_ms"] or 0) for r in batches
    )
    span = (last - first).total_seconds()
    return (total / span if span > 0 else None), total


def fill_replay_topic(pipe: Pipeline, rows: int) -> float:
    """Send ``rows`` generated events (a backfill, unpaced) to the pipeline's topic; events/s."""
    start = (utc_now() - timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    seconds = pipe.run(
        "generator",
        [
            "generate",
            *("--count", str(rows), "--rate", "10000", "--unpaced", "--start-time", start),
            *("--sensors", "1000", "--format", "mixed", "--seed", "11", "--api-port", "0"),
            *BAD_INPUT,
        ],
        timeout=1800,
    )
    return rows / seconds


def replay(pipe: Pipeline, job: str, timeout: float = 3600) -> dict[str, Any]:
    """Run one job ``--available-now`` on what its upstream holds; wall seconds (JVM start
    included) and rows/s of its batches."""
    since = utc_now()
    try:
        wall = pipe.run(job, ["run", job, "--available-now"], timeout)
    except Exception as exc:  # a job may fail (e.g. out of memory): that is a result
        logger.warning("replay failed %s", kv(pipeline=pipe.label, job=job, error=str(exc)))
        return {"error": str(exc)}
    rate, rows = processing_rate(pipe.metrics(since - timedelta(seconds=1)), job)
    peak = pipe.sampler.peak.get(f"{pipe.label}-{job}")
    log = pipe.settings.logs_dir / f"{job}.log"
    stages = bench.stage_seconds(log.read_text().splitlines()) if log.exists() else {}
    return {
        "wall_s": wall,
        "rows_per_s": rate,
        "rows": rows,
        "span_s": rows / rate if rate else None,  # its batches' span, start-up excluded
        "peak_rss": peak,
        "stages_s": stages,
    }


# --- the whole run -------------------------------------------------------------------------


def interrupt(_signum: int, _frame: object) -> None:
    """SIGTERM: stop the benchmark as Ctrl-C does (every process it started is stopped)."""
    raise KeyboardInterrupt


def bench_env(workdir: Path) -> dict[str, str]:
    """This process's environment for a bench under ``workdir``: a private broker on free
    ports, its own runtime folder, the project's jars."""
    return {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
        "KAFKA_CONTROLLER_PORT": str(free_port()),
        "IOT_RUNTIME_DIR": str(workdir / "runtime"),
        "IOT_JARS_DIR": str(Settings.from_env().jars_dir.resolve()),
        "LOG_LEVEL": "WARNING",
    }


def run_bench(
    plan: Plan,
    results_dir: Path,
    parts: set[str],
    textbook: bool,
    keep: bool = False,
    soak_rate: float | None = None,
) -> tuple[BenchReport, Path]:
    """Run the chosen parts (``ceilings``, ``replay``, ``live``, ``alerts``, ``soak``) and
    return the report and the JSON file it was saved to. With ``textbook``, the replay and
    live parts also run the textbook job beside ours. The soak runs at ``soak_rate``, else at
    ``bench.SOAK_DEFAULT_RATE``."""
    report = BenchReport(plan, utc_now().strftime("%Y-%m-%dT%H:%M:%S"), bench.machine_description())
    workdir = Path(tempfile.mkdtemp(prefix="iot-bench-"))
    base_env = bench_env(workdir)
    settings = Settings.from_env(base_env)
    sampler = ResourceSampler()
    sampler.start()
    broker = LocalKafkaBroker(settings)
    pipes: list[Pipeline] = []
    signal.signal(signal.SIGTERM, interrupt)
    try:
        broker.start()
        if broker.status().pid:
            sampler.watch("broker", broker.status().pid or 0)
        if "ceilings" in parts:
            produce, consume = kafka_ceilings(settings, plan.ceiling_messages)
            report.add(Figure("Kafka produce, raw (acks=all)", "msg/s", produce))
            report.add(Figure("Kafka consume, raw", "msg/s", consume))
        if "replay" in parts:
            run_replays(report, plan, workdir, base_env, sampler, textbook, pipes)
        if "live" in parts:
            run_live(report, plan, workdir, base_env, sampler, textbook, pipes)
        if "alerts" in parts:
            run_alerts(report, plan, workdir, base_env, sampler, pipes)
        if "soak" in parts:
            rate = soak_rate or bench.SOAK_DEFAULT_RATE
            run_soak(report, plan, workdir, base_env, sampler, pipes, rate)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip clean-up
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for pipe in pipes:
            pipe.stop()
        broker.stop()
        sampler.stop()
        if keep:
            logger.warning("bench folder kept %s", kv(folder=workdir))
        else:
            shutil.rmtree(workdir, ignore_errors=True)
        report.details["peak_rss_bytes"] = dict(sampler.peak)
        saved = report.save(results_dir)  # also what an interrupted run measured so far
    return report, saved


def run_replays(
    report: BenchReport,
    plan: Plan,
    workdir: Path,
    base_env: dict[str, str],
    sampler: ResourceSampler,
    textbook: bool,
    pipes: list[Pipeline],
) -> None:
    """G4, the Spark ceiling and the backlog: one topic of ``plan.replay_rows`` events; ours
    drains it with bronze then silver ``--available-now``, then the textbook job drains it
    from its earliest to its end offsets."""
    pipe = Pipeline("tuned", workdir / "replay", base_env, sampler, "bench-replay")
    pipes.append(pipe)
    LocalKafkaBroker(pipe.settings).create_topics()
    report.details["replay_fill_events_per_s"] = fill_replay_topic(pipe, plan.replay_rows)
    ours = {job: replay(pipe, job) for job in ("bronze", "silver")}
    other = replay_textbook(pipe, workdir / "replay" / "textbook") if textbook else None
    report.details["replay"] = {"ours": ours, "textbook": other}
    rows = f"{plan.replay_rows:,} events"
    report.add(
        Figure(
            "Spark Kafka -> Delta (bronze, no JSON parsing), --available-now",
            "rows/s",
            ours["bronze"].get("rows_per_s"),
            detail=replay_detail({"bronze": ours["bronze"]}, rows),
        )
    )
    g4 = ours["silver"].get("rows_per_s")
    report.add(
        Figure(
            "G4 silver rebuilt from bronze, --available-now",
            "rows/s",
            g4,
            target=f">= {bench.G4_TARGET:,.0f}",
            met=None if g4 is None else g4 >= bench.G4_TARGET,
            detail=replay_detail({"silver": ours["silver"]}, rows),
        )
    )
    spans = [ours[job].get("span_s") for job in ("bronze", "silver")]
    report.add(
        bench.backlog_figure(
            bench.backlog_rate(plan.replay_rows, spans),
            None if other is None else other.get("rows_per_s"),
            other is not None,
            replay_detail(
                {"ours bronze": ours["bronze"], "ours silver": ours["silver"]}
                | ({} if other is None else {"textbook": other}),
                f"{rows} from the earliest to the end offsets; batches' spans, start-up excluded",
            ),
        )
    )


def replay_detail(results: dict[str, dict[str, Any]], rows: str) -> str:
    parts = [rows]
    for label, result in results.items():
        if "error" in result:
            parts.append(f"{label} failed: {result['error'][:120]}")
        else:
            parts.append(f"{label} wall {result['wall_s']:.0f} s incl. JVM start")
            if result.get("stages_s"):
                parts.append(f"{label} time per step: {bench.shares(result['stages_s'])}")
    return "; ".join(parts)


def run_live(
    report: BenchReport,
    plan: Plan,
    workdir: Path,
    base_env: dict[str, str],
    sampler: ResourceSampler,
    textbook: bool,
    pipes: list[Pipeline],
) -> None:
    """G5, freshness at start_all's rate, ours vs the textbook job's freshness on one live
    topic, G1, G2 / G3 and memory, with every job and the generator running."""
    pipe = Pipeline("tuned", workdir / "live", base_env, sampler, "bench-live-tuned")
    pipes.append(pipe)
    LocalKafkaBroker(pipe.settings).create_topics()
    sampler.reset_total()
    comparison: dict[str, Any] | None = None
    result: dict[str, Any] = {}
    try:
        result["cold_start"] = cold_start(pipe, plan.start_rate)
        # Start-up leaves a backlog (the first batches are slow): measure from caught up.
        result["caught_up_after_start"] = drain(pipe, 2 * plan.drain_s)
        result["freshness"] = freshness(pipe, plan.freshness_s)
        if textbook:
            comparison = compare_freshness(pipe, plan, workdir / "live" / "textbook")
            comparison["drained_after"] = drain(pipe, 2 * plan.drain_s)
        steps: list[dict[str, Any]] = []
        result["g1"] = find_sustained_rate(pipe, plan, steps)
        result["steps"] = steps
        drained = drain(pipe, plan.drain_s)
        result["latency"] = latency(pipe, plan, bench.LATENCY_RATE)
        result["latency"]["drained_before"] = drained
    except RuntimeError as exc:
        result["error"] = str(exc)
    result["peak_rss_total"] = sampler.peak_total
    result["peak_pss_total"] = sampler.peak_total_pss
    result["peak_rss"] = {
        name: sampler.peak.get(key)
        for name in ("broker", "generator", *JOB_NAMES, ONE_DRIVER)
        if (key := name if name == "broker" else f"{pipe.label}-{name}") in sampler.peak
    }
    pipe.stop()
    report.details["live"] = {"ours": result, "textbook_comparison": comparison}
    add_live_figures(report, result)
    if comparison is not None:
        for figure in bench.freshness_figures(comparison):
            report.add(figure)


def run_alerts(
    report: BenchReport,
    plan: Plan,
    workdir: Path,
    base_env: dict[str, str],
    sampler: ResourceSampler,
    pipes: list[Pipeline],
) -> None:
    """Alert detection latency, live at start_all's defaults (``alert_latency``)."""
    pipe = Pipeline("tuned", workdir / "alerts", base_env, sampler, "bench-alerts")
    pipes.append(pipe)
    LocalKafkaBroker(pipe.settings).create_topics()
    try:
        result = alert_latency(pipe, plan, workdir / "alerts" / "ground-truth.jsonl")
    except RuntimeError as exc:
        result = {"error": str(exc), "scores": []}
    pipe.stop()
    report.details["alerts"] = result
    for figure in bench.alert_latency_figures(result["scores"], plan.alerts_s):
        if result.get("error"):
            figure.detail = result["error"]
        report.add(figure)


def alert_latency(pipe: Pipeline, plan: Plan, truth: Path) -> dict[str, Any]:
    """The generator at start_all's rate and sensors with the anomaly scenario (``generate
    --anomalies --ground-truth``), paced, so event time is the clock; the four jobs; after
    ``plan.alerts_s`` the backlog drained, then ``evaluate-alerts``' scores of the anomalies
    silver has seen ``ALERT_GRACE_S`` past: each detection's latency is its alert's
    ``detected_at`` minus the anomalous reading's event time."""
    truth.parent.mkdir(parents=True, exist_ok=True)
    pipe.start_generator(
        START_ALL_RATE, START_ALL_SENSORS, ("--anomalies", "--ground-truth", str(truth))
    )
    started = time.monotonic()
    pipe.start_jobs()
    while time.monotonic() - started < plan.alerts_s:
        if pipe.exited():
            raise RuntimeError(
                f"{pipe.label}: {pipe.exited()} exited; see {pipe.settings.logs_dir}"
            )
        time.sleep(2)
    drained = drain(pipe, 2 * plan.drain_s)
    scores = evaluate_lakehouse(pipe.settings, truth, bench.ALERT_GRACE_S)
    return {
        "seconds": plan.alerts_s,
        "drained_after": drained,
        "scores": [score_dict(s) for s in scores],
    }


def add_live_figures(report: BenchReport, ours: dict[str, Any]) -> None:
    """The live part's rows of our pipeline: G5, G1, freshness at start_all's rate, G2 / G3,
    memory."""
    cold = ours.get("cold_start", {})
    first = cold.get("bronze")
    report.add(
        Figure(
            "G5 cold start -> first bronze commit",
            "s",
            first,
            target=f"<= {bench.G5_TARGET:.0f}",
            met=None if first is None else first <= bench.G5_TARGET,
            detail="jars cached; process start of the four jobs to bronze's first committed batch",
            higher_is_better=False,
        )
    )
    every = [cold.get(job) for job in JOB_NAMES]
    report.add(
        Figure(
            "G5 cold start -> all jobs running",
            "s",
            None if None in every else max(v for v in every if v is not None),
            detail="each job has committed its first micro-batch",
            higher_is_better=False,
        )
    )
    g1 = ours.get("g1")
    steps = ours.get("steps", [])
    last_fail = next((s for s in reversed(steps) if not s.get("passed", True)), None)
    report.add(
        Figure(
            "G1 sustained throughput, whole pipeline",
            "ev/s",
            g1,
            target=f">= {bench.G1_TARGET:,.0f} (floor {bench.G1_FLOOR:,.0f})",
            met=g1 is not None and g1 >= bench.G1_TARGET,
            detail=ours.get("error")
            or (
                f"lowest rate not kept: {last_fail['rate']:,.0f} ev/s: {last_fail['why']}; "
                f"cpu cores {last_fail['cpu_cores']}"
                if last_fail
                else "every rate tried was kept"
            ),
        )
    )
    fresh = ours.get("freshness") or {}
    for table, target in bench.FRESHNESS_P95_TARGETS.items():
        figures = fresh.get(table) or {}
        for q in ("p50", "p95"):
            value = figures.get(q)
            report.add(
                Figure(
                    f"Freshness of {table} {q} at start_all's {START_ALL_RATE:,.0f} ev/s",
                    "s",
                    value,
                    target=f"p95 <= {target:.0f}" if q == "p95" else "",
                    met=(value is not None and value <= target) if q == "p95" else None,
                    detail=(
                        f"clock - newest event time a Delta reader sees, every second for "
                        f"{fresh.get('seconds', 0):.0f} s"
                        if q == "p95"
                        else ""
                    ),
                    higher_is_better=False,
                )
            )
    lat = ours.get("latency", {})
    for key, name, target in (
        ("silver", "G2 produce -> silver", bench.G2_P95_TARGET),
        ("gold", "G3 produce -> gold-visible", bench.G3_P95_TARGET),
    ):
        figures = lat.get(key, {})
        p95 = figures.get("p95")
        unseen = figures.get("unseen", 0)
        # not met when event times stayed invisible, even if none was seen to give a p95
        met = (False if unseen else None) if p95 is None else p95 <= target and unseen == 0
        for q in ("p50", "p95", "p99"):
            report.add(
                Figure(
                    f"{name} {q} at {bench.LATENCY_RATE:,.0f} ev/s",
                    "s",
                    figures.get(q),
                    target=f"p95 <= {target:.0f}" if q == "p95" else "",
                    met=met if q == "p95" else None,
                    detail=(
                        f"{unseen} of {figures.get('events')} event times not visible 30 s "
                        "after the end" + (" (percentiles of the rest)" if p95 is not None else "")
                        if unseen and q == "p95"
                        else ""
                    ),
                    higher_is_better=False,
                )
            )
    gib = 1024**3

    def memory(what: str, bytes_: int | None, **more: Any) -> None:
        report.add(
            Figure(what, "GiB", bytes_ / gib if bytes_ else None, **more, higher_is_better=False)
        )

    total = ours.get("peak_rss_total")
    memory(
        "Peak RSS, all live processes together",
        total,
        target=f"<= {bench.RSS_TARGET / gib:.0f}",
        met=None if not total else total <= bench.RSS_TARGET,
        detail=(
            "broker, generator, the 4 jobs in one driver (one Python + one JVM); "
            "not the textbook job"
            if ONE_DRIVER in ours.get("peak_rss", {})
            else "broker, generator, 4 jobs (Python + JVM each); not the textbook job"
        ),
    )
    memory("Peak PSS, all live processes together (shared pages once)", ours.get("peak_pss_total"))
    for name, rss in ours.get("peak_rss", {}).items():
        memory(f"Peak RSS {name}", rss)


def reconcile_pipeline(pipe: Pipeline) -> tuple[bool, str]:
    """``iot-lakehouse reconcile`` on the pipeline's lakehouse: (all ledgers ok, its table)."""
    result = subprocess.run(
        [sys.executable, "-m", "iot_lakehouse", "reconcile"],
        env=pipe.env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    return result.returncode == 0, (result.stdout or result.stderr[-2000:]).strip()


def run_soak(
    report: BenchReport,
    plan: Plan,
    workdir: Path,
    base_env: dict[str, str],
    sampler: ResourceSampler,
    pipes: list[Pipeline],
    rate: float,
) -> None:
    """Soak: ``plan.soak_sensors`` sensors at ``rate`` for ``plan.soak_s`` seconds with every
    job (tuned); every query's lag must stay flat, and once the backlog drained ``reconcile``
    must balance every ledger."""
    pipe = Pipeline("tuned", workdir / "soak", base_env, sampler, "bench-soak")
    pipes.append(pipe)
    LocalKafkaBroker(pipe.settings).create_topics()
    sampler.reset_total()
    result: dict[str, Any] = {"rate": rate, "sensors": plan.soak_sensors, "seconds": plan.soak_s}
    try:
        pipe.start_generator(rate, sensors=plan.soak_sensors)
        pipe.start_jobs()
        if drain(pipe, 2 * plan.drain_s) is None:  # the start-up backlog, as for G1
            logger.warning("soak: start-up backlog not drained %s", kv(rate=rate))
        step = sustain(pipe, rate, replace(plan, sustain_s=plan.soak_s))
        result.update(asdict(step))
        ok, ledgers = reconcile_pipeline(pipe)
        result.update(reconciled=ok, ledgers=ledgers)
    except RuntimeError as exc:
        result["error"] = str(exc)
    result["peak_rss_total"] = sampler.peak_total
    result["peak_pss_total"] = sampler.peak_total_pss
    pipe.stop()
    report.details["soak"] = result
    passed = bool(result.get("passed")) and bool(result.get("reconciled"))
    verdict = "passes" if result.get("reconciled") else "FAILS"
    report.add(
        Figure(
            f"Soak: {plan.soak_sensors:,} sensors for {plan.soak_s / 60:.0f} min, every job",
            "ev/s",
            result.get("sent_rate"),
            target=f"{rate:,.0f} ev/s kept, lag flat, reconcile passes",
            met=passed,
            detail=result.get("error") or f"lag: {result.get('why')}; reconcile: {verdict}",
        )
    )
