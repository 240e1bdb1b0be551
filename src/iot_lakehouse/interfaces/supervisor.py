"""``iot-lakehouse all``: broker, generator and jobs as child processes, with a live status line;
a child that dies is started again after a backoff (``restarts``)."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from iot_lakehouse.logs import kv, rotate_if_large
from iot_lakehouse.ops.status import PipelineCounts, has_committed, pipeline_counts, render_screen
from iot_lakehouse.runtime.kafka_broker import LocalKafkaBroker
from iot_lakehouse.runtime.processes import PIDS_DIR, record_pid
from iot_lakehouse.runtime.restarts import JOB_STATES_FILE, RestartPolicy, read_job_states
from iot_lakehouse.settings import Settings

logger = logging.getLogger(__name__)

GRACEFUL_STOP_S = 60.0
BRONZE_HEAD_START_S = 60.0  # the other jobs start at bronze's first commit or after this
STATUS_ORDER = (
    "bronze",
    "silver",
    "gold",
    "alerts",
    "serve",
    "generator",
)  # pipeline order on screen
OPS_FOLDER = "_ops/"  # `maintain --table _ops/`: the tables that gain a small file per batch


@dataclass
class Child:
    """A process this supervisor started, with the file its output goes to, its pid record,
    the arguments it was started with and how often it was started again."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    exited_reported: bool = field(default=False)
    record: Path | None = None
    args: tuple[str, ...] = ()
    started_at: float = field(default_factory=time.monotonic)
    restarts: int = 0
    failures: int = 0  # exits in a row, each before it had run JOB_HEALTHY_SECONDS
    restart_at: float | None = None  # when it starts again (monotonic), once it died

    @property
    def state(self) -> str:
        """``up`` (with its restarts, if any), ``restarting`` or ``exited``."""
        if self.proc.poll() is None:
            return f"up,restarts={self.restarts}" if self.restarts else "up"
        return "restarting" if self.restart_at is not None else "exited"


def spawn(
    name: str,
    args: list[str],
    logs_dir: Path,
    env: Mapping[str, str] | None = None,
    pids_dir: Path | None = None,
) -> Child:
    """Start ``python -m iot_lakehouse <args>`` in its own process group, output to a log
    (environment: ``env``, default this process's); with ``pids_dir``, record its pid there
    for stop_all.sh until ``stop_children`` has stopped it."""
    logs_dir.mkdir(parents=True, exist_ok=True)
    log = logs_dir / f"{name}.out"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "iot_lakehouse", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=None if env is None else dict(env),
        )
    record = (
        record_pid(pids_dir, proc.pid, f"iot_lakehouse {args[0]}", "child") if pids_dir else None
    )
    logger.info("started %s", kv(component=name, pid=proc.pid, log=log))
    return Child(name, proc, log, record=record, args=tuple(args))


def stop_children(children: list[Child], timeout: float = GRACEFUL_STOP_S) -> None:
    """SIGTERM every child (jobs stop their queries gracefully), then SIGKILL stragglers.

    Only the Python process gets SIGTERM: it stops its queries and then its own JVM. Signalling
    the whole group would kill the JVM under it mid-commit.
    """
    for child in children:
        if child.proc.poll() is None:
            child.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for child in children:
        try:
            child.proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            logger.warning("did not stop in time, killing %s", kv(component=child.name))
            os.killpg(child.proc.pid, signal.SIGKILL)
            child.proc.wait()
        if child.record is not None:
            child.record.unlink(missing_ok=True)
        logger.info("stopped %s", kv(component=child.name, exit_code=child.proc.returncode))


ONE_DRIVER = "jobs"  # the child that runs every job in one driver (JOBS_IN_ONE_DRIVER)
PIPELINE_JOBS = ("bronze", "silver", "gold", "alerts")


def component_health(children: list[Child], runtime_dir: Path | None = None) -> dict[str, str]:
    """``up`` or ``exited`` per component, in pipeline order (whatever order they started in);
    each job of a one-driver child shows the state that child wrote for it under
    ``runtime_dir`` (``JOB_STATES_FILE``) while it runs, else the child's own state."""
    rank = {name: i for i, name in enumerate(STATUS_ORDER)}
    health: dict[str, str] = {}
    for child in children:
        state = child.state
        if child.name != ONE_DRIVER:
            health[child.name] = state
            continue
        jobs = (
            read_job_states(runtime_dir / JOB_STATES_FILE, child.proc.pid)
            if child.proc.poll() is None and runtime_dir is not None
            else {}
        )
        for name in child.args[1:] or PIPELINE_JOBS:  # its args: run <job> <job> …
            health[name] = jobs.get(name, state)
    return dict(sorted(health.items(), key=lambda item: rank.get(item[0], len(rank))))


def supervise(
    children: list[Child], policy: RestartPolicy, now: float, respawn: Callable[[Child], Child]
) -> bool:
    """Start again (``respawn``) every child that died, after the policy's backoff; a child
    that ended with exit status 0 finished its work and stays ended. Replaces restarted
    children in ``children``; True if a child was found dead this time."""
    died = False
    for i, child in enumerate(children):
        code = child.proc.poll()
        if code is None:
            continue
        if child.restart_at is None:
            if child.exited_reported:
                continue
            child.exited_reported = True
            if child.record is not None:
                child.record.unlink(missing_ok=True)
            if code == 0:
                logger.info("%s finished %s", child.name, kv(exit_code=0, log=child.log))
                continue
            died = True
            child.failures = policy.failures_after(child.failures, now - child.started_at)
            delay = policy.delay(child.failures)
            child.restart_at = now + delay
            logger.error(
                "%s exited %s",
                child.name,
                kv(exit_code=code, log=child.log, restart_in_s=delay, restarts=child.restarts),
            )
        elif now >= child.restart_at:
            fresh = respawn(child)
            fresh.restarts, fresh.failures = child.restarts + 1, child.failures
            children[i] = fresh
            logger.warning(
                "restarted %s",
                kv(component=child.name, pid=fresh.proc.pid, restarts=fresh.restarts),
            )
    return died


def maintenance_commands(settings: Settings) -> tuple[tuple[str, ...], ...]:
    """What ``all`` runs every OPS_COMPACT_INTERVAL, one after the other, while the jobs write:
    OPTIMIZE and VACUUM of the append-only ``_ops`` tables, then a VACUUM alone of the gold
    tables kept by MERGE (each batch replaces some of their files) with GOLD_FILE_RETENTION."""
    from iot_lakehouse.ops.maintain import SHORT_RETENTION_FLAG, merged_window_tables

    gold = [arg for name in merged_window_tables(settings) for arg in ("--table", name)]
    hours = f"{settings.gold_file_retention_hours:g}"
    return (
        ("maintain", "--table", OPS_FOLDER),
        ("maintain", "--vacuum-only", "--retention-hours", hours, SHORT_RETENTION_FLAG, *gold),
    )


@dataclass
class Compaction:
    """The ``commands`` (``maintenance_commands``) as children, one after the other, every
    ``every_s`` seconds while ``all`` runs: the jobs go on writing meanwhile."""

    every_s: float
    next_at: float
    commands: tuple[tuple[str, ...], ...]
    child: Child | None = None
    pending: list[tuple[str, ...]] = field(default_factory=list)

    def due(self, now: float) -> bool:
        running = self.child is not None and self.child.proc.poll() is None
        return self.every_s > 0 and not running and (bool(self.pending) or now >= self.next_at)

    def start(self, now: float, run: Callable[[list[str]], Child]) -> None:
        if self.child is not None:
            logger.info(
                "maintenance ended %s",
                kv(exit_code=self.child.proc.returncode, log=self.child.log),
            )
            if self.child.record is not None:
                self.child.record.unlink(missing_ok=True)
        if not self.pending:  # a new round
            self.pending = list(self.commands)
            self.next_at = now + self.every_s
        self.child = run(list(self.pending.pop(0)))


def start_downstream_jobs(
    settings: Settings,
    run_job: Callable[[str], Child],
    bronze: Child,
    stop: threading.Event,
    head_start: float = BRONZE_HEAD_START_S,
    jobs: tuple[str, ...] = PIPELINE_JOBS,
) -> None:
    """Start silver, gold and alerts once bronze has committed its first micro-batch (or after
    ``head_start`` seconds, or when bronze exits). Four JVMs starting at once share the cores:
    bronze alone commits its first batch about three times sooner, and the others wait for
    its table anyway."""
    deadline = time.monotonic() + head_start
    while (
        time.monotonic() < deadline
        and bronze.proc.poll() is None
        and not has_committed(settings, "bronze")
        and not stop.wait(0.2)
    ):
        pass
    if stop.is_set():  # Ctrl-C while bronze was starting: start nothing more
        return
    for job in jobs:
        if job != "bronze":
            run_job(job)


def run_all(
    settings: Settings,
    duration: float | None,
    rate: float,
    sensors: int,
    with_mongo: bool = False,
    status_interval: float = 5.0,
) -> int:
    """Run broker + generator + jobs until Ctrl-C, SIGTERM or ``duration`` seconds; 0 if clean.

    The serving job runs too when SERVING_MONGO_URI is set or ``with_mongo`` is given; with
    ``with_mongo`` and no SERVING_MONGO_URI, the local MongoDB server is started first (and
    stopped at the end if this run started it)."""
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    broker = LocalKafkaBroker(settings)
    started_broker = not broker.status().reachable
    broker.start()
    serve = with_mongo or bool(settings.serving_mongo_uri)
    jobs: tuple[str, ...] = (*PIPELINE_JOBS, "serve") if serve else PIPELINE_JOBS
    mongo = None
    if with_mongo and not settings.serving_mongo_uri:
        from iot_lakehouse.runtime.mongo_server import LocalMongoServer

        server = LocalMongoServer(settings)
        started_before = server.status().running  # someone else's start: theirs to stop
        try:
            server.start()
            mongo = None if started_before else server
        except Exception:
            if started_broker:
                broker.stop()
            raise
    children: list[Child] = []
    compaction: Compaction | None = None
    pids_dir = settings.runtime_dir / PIDS_DIR  # stop_all.sh stops recorded children only
    failed = False
    try:

        def run_job(job: str) -> Child:
            child = spawn(job, ["run", job], settings.logs_dir, pids_dir=pids_dir)
            children.append(child)
            return child

        if settings.jobs_in_one_driver:  # one JVM: its jobs wait for their upstream tables
            children.append(spawn(ONE_DRIVER, ["run", *jobs], settings.logs_dir, pids_dir=pids_dir))
        else:
            run_job("bronze")
        children.append(
            spawn(
                "generator",
                [
                    "generate",
                    "--rate",
                    str(rate),
                    "--sensors",
                    str(sensors),
                    "--format",
                    "mixed",
                    "--seed",
                    str(int(time.time())),
                    # a little bad input, so the DLQ and the duplicate ledger have something
                    *("--malformed-fraction", "0.005", "--invalid-fraction", "0.01"),
                    *("--duplicate-fraction", "0.005", "--late-fraction", "0.01"),
                ],
                settings.logs_dir,
                pids_dir=pids_dir,
            )
        )
        if not settings.jobs_in_one_driver:
            start_downstream_jobs(settings, run_job, children[0], stop, jobs=jobs)
        if settings.generator_api_port:
            api = f"http://{settings.generator_api_host}:{settings.generator_api_port}/docs"
            logger.info(
                "generator control API and dashboard %s",
                kv(generator_api=api, dashboard="./start_dashboard.sh"),
            )
        policy = RestartPolicy(None, settings.job_healthy_seconds)  # retries for good, backoff

        def respawn(child: Child) -> Child:
            return spawn(child.name, list(child.args), settings.logs_dir, pids_dir=pids_dir)

        compaction = Compaction(
            settings.ops_compact_seconds,
            time.monotonic() + settings.ops_compact_seconds,
            maintenance_commands(settings),
        )

        def run_maintain(args: list[str]) -> Child:
            return spawn("maintain", args, settings.logs_dir, pids_dir=pids_dir)

        deadline = time.monotonic() + duration if duration else None
        tty = sys.stdout.isatty()
        started = last_at = time.monotonic()
        last = PipelineCounts(None, None)
        drawn = 0
        while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
            stop.wait(status_interval)
            for child in children:  # the children's captured output stays bounded
                rotate_if_large(child.log, settings.log_max_bytes, settings.log_backups)
            if not stop.is_set():
                supervise(children, policy, time.monotonic(), respawn)
                if compaction.due(time.monotonic()):
                    compaction.start(time.monotonic(), run_maintain)
            try:
                counts = pipeline_counts(settings)
            except Exception as exc:  # a table being rewritten, a broker restarting, …
                logger.warning("status not read this time %s", kv(error=str(exc)[:200]))
                continue
            now = time.monotonic()
            rates = counts.rates(last, now - last_at)
            last, last_at = counts, now
            health = component_health(children, settings.runtime_dir)
            if tty:  # redraw the screen in place
                screen = render_screen(
                    counts, rates, health, time.strftime("%H:%M:%S"), now - started
                )
                up = f"\033[{drawn}F" if drawn else ""
                print(up + "\n".join(f"{row}\033[K" for row in screen), flush=True)
                drawn = len(screen)
            else:  # one searchable line per interval (logs, CI)
                per_s = " ".join(
                    f"{name.split('_')[0]}_per_s={value:.1f}"
                    for name, value in rates.items()
                    if value is not None
                )
                states = " ".join(f"{name}={state}" for name, state in health.items())
                parts = (time.strftime("%H:%M:%S"), counts.line(), per_s, states)
                print(" ".join(part for part in parts if part), flush=True)
        # Ctrl-C or the end of --duration: a failure is a child found dead then, not one that
        # died earlier and was started again.
        failed = any(child.proc.poll() not in (None, 0) for child in children)
    finally:
        stop_children(children + ([compaction.child] if compaction and compaction.child else []))
        if started_broker:
            broker.stop()
        if mongo is not None:
            mongo.stop()
    return 1 if failed else 0
