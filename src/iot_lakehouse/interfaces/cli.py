"""The ``iot-lakehouse`` command (also ``python -m iot_lakehouse``)."""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import importlib.util
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from dataclasses import replace
from datetime import date
from pathlib import Path

from iot_lakehouse.errors import ConfigError, DependencyError, LakehouseError
from iot_lakehouse.logs import configure_logging
from iot_lakehouse.runtime import class_archive, jvm_deps
from iot_lakehouse.settings import START_ALL_RATE, START_ALL_SENSORS, Settings

logger = logging.getLogger(__name__)

PACKAGE = "iot-lakehouse"  # the distribution name in pyproject.toml

# The parts of `bench` (``run_bench``), in the order they run.
BENCH_PARTS = ("ceilings", "replay", "live", "alerts", "soak")
# Long-running commands: their log is their output.
SERVICES = frozenset({"run", "generate", "kafka", "all", "emitter", "dashboard", "metrics"})


def build_parser() -> argparse.ArgumentParser:
    """All subcommands and their options."""
    from iot_lakehouse.ops.maintain import add_maintain_arguments
    from iot_lakehouse.sources.emitter import add_emitter_parser
    from iot_lakehouse.sources.generator import add_generate_arguments

    parser = argparse.ArgumentParser(
        prog="iot-lakehouse",
        description="Real-time IoT lakehouse: Kafka -> Spark Structured Streaming -> Delta Lake.",
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {importlib.metadata.version(PACKAGE)}"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    deps = sub.add_parser(
        "deps",
        help="resolve the JVM libraries into the local cache and build the class archive (once)",
    )
    deps.add_argument("--force", action="store_true", help="resolve and build again even if cached")

    kafka = sub.add_parser("kafka", help="the local Kafka broker (KRaft, no Docker)")
    kafka.add_argument("action", choices=["start", "stop", "status"])

    mongo = sub.add_parser(
        "mongo",
        help="the local MongoDB-protocol server of the serving job (FerretDB on SQLite, built "
        "with Go on first use; no Docker)",
    )
    mongo.add_argument("action", choices=["start", "stop", "status"])

    generate = sub.add_parser("generate", help="produce sensor readings to Kafka")
    add_generate_arguments(generate)

    run = sub.add_parser(
        "run", help="run a streaming job (several: side by side in one driver, one JVM)"
    )
    run.add_argument("job", nargs="+", choices=["bronze", "silver", "gold", "alerts", "serve"])
    run.add_argument(
        "--available-now", action="store_true", help="process what is available now, then exit"
    )
    run.add_argument(
        "--source",
        choices=["kafka", "files", "socket"],
        default="kafka",
        help="where bronze reads from: the Kafka topic, JSON-lines files arriving in "
        "LANDING_PATH, or lines from a TCP server (socket: for debugging, no replay; "
        "default: kafka)",
    )
    run.add_argument(
        "--console",
        nargs="?",
        type=int,
        const=20,
        default=0,
        metavar="ROWS",
        help="also print each committed batch of silver, gold and alerts to the terminal, as "
        "Spark's console sink does (its first ROWS rows, default 20); what is written does "
        "not change",
    )
    run.add_argument(
        "--socket-host", help="--source socket: the server's host (SOCKET_HOST, 127.0.0.1)"
    )
    run.add_argument(
        "--socket-port", type=int, help="--source socket: the server's port (SOCKET_PORT, 9999)"
    )

    evaluate = sub.add_parser(
        "evaluate-alerts", help="precision, recall and latency of the alerts vs the ground truth"
    )
    evaluate.add_argument(
        "--ground-truth", required=True, help="the file `generate --ground-truth` wrote"
    )
    evaluate.add_argument(
        "--grace-seconds",
        type=float,
        default=None,
        help="alerts this long after an anomaly still belong to it (default 300)",
    )
    evaluate.add_argument("--json", action="store_true", help="print JSON instead of a table")

    add_emitter_parser(sub)

    dlq = sub.add_parser("dlq", help="the dead-letter queue: list reasons, or redrive")
    dlq.add_argument(
        "action",
        choices=["list", "redrive"],
        help="list: rows per reason and rule version; redrive: re-judge every DLQ row "
        "against the current rules, move the ones that pass into silver (exactly once)",
    )
    dlq.add_argument("--json", action="store_true", help="list: print JSON")

    maintain = sub.add_parser(
        "maintain", help="small-file report, OPTIMIZE and VACUUM of every lakehouse table"
    )
    add_maintain_arguments(maintain)

    rerun = sub.add_parser(
        "rerun",
        help="rebuild one layer from upstream (old checkpoint backed up, old rows in history)",
    )
    rerun.add_argument("layer", choices=["bronze", "silver", "gold", "alerts"])
    rerun.add_argument("--cascade", action="store_true", help="rebuild the layers below it as well")
    rerun.add_argument(
        "--from",
        dest="since",
        type=date.fromisoformat,
        default=None,
        metavar="DATE",
        help="silver only: rebuild from the bronze records ingested on or after DATE "
        "(YYYY-MM-DD); default: everything",
    )

    sub.add_parser(
        "status",
        help="print the current counts of Kafka and every table, and each query's latest "
        "throughput, lag and end-to-end latency",
    ).add_argument("--json", action="store_true", help="one JSON object instead of text")
    sub.add_parser(
        "health",
        help="exit 0 if the driver running several jobs here is alive with every job up, 1 if "
        "not, with each job's state (for container healthchecks)",
    )
    sub.add_parser(
        "metrics",
        help="serve the pipeline's figures in Prometheus' text format on "
        "http://METRICS_HOST:PORT/metrics (default 127.0.0.1; rows, lag, freshness, batches, "
        "latency, DLQ reasons, alert types)",
    ).add_argument("--port", type=int, default=None, help="default: METRICS_PORT (9108)")
    dashboard = sub.add_parser(
        "dashboard",
        help="the live web dashboard (Streamlit) on DASHBOARD_HOST:DASHBOARD_PORT (127.0.0.1:8501)",
    )
    dashboard.add_argument(
        "--port", type=int, default=None, help="TCP port (default: DASHBOARD_PORT, 8501)"
    )
    sub.add_parser(
        "reconcile", help="ledger per layer; exit 1 on any unexplained record"
    ).add_argument("--json", action="store_true", help="one JSON object instead of a table")

    bench = sub.add_parser(
        "bench",
        help="benchmarks side by side: Kafka ceilings, G1 throughput, G2/G3 latency, G4 replay, "
        "G5 cold start, memory, freshness, alert detection latency; ours vs a textbook one-hop "
        "Kafka -> Delta job",
    )
    bench.add_argument(
        "--quick", action="store_true", help="1-minute windows and 500,000 replay rows"
    )
    bench.add_argument(
        "--only",
        action="append",
        choices=list(BENCH_PARTS),
        help="run only this part (repeatable; default: all five)",
    )
    bench.add_argument(
        "--soak-rate",
        type=float,
        default=None,
        help="events/s of the soak (default 4,000: 10-minute soaks here kept 5,000, not 8,000)",
    )
    bench.add_argument(
        "--soak-minutes",
        type=float,
        default=None,
        help="minutes of the soak (default 30; --quick 5)",
    )
    bench.add_argument(
        "--replay-rows",
        type=int,
        default=None,
        help="events silver is rebuilt from in G4 (default 2,000,000; --quick 500,000)",
    )
    bench.add_argument(
        "--keep", action="store_true", help="keep the temporary lakehouses and logs (prints where)"
    )
    bench.add_argument(
        "--no-textbook",
        "--no-baseline",
        dest="no_baseline",
        action="store_true",
        help="skip the textbook one-hop job the backlog and live freshness are compared with",
    )
    bench.add_argument(
        "--results",
        default="bench/results",
        help="folder of the JSON results (default %(default)s)",
    )

    all_ = sub.add_parser("all", help="broker, generator and every job, with a live status line")
    all_.add_argument(
        "--duration",
        type=float,
        default=None,
        help="stop everything after this many seconds (default: until Ctrl-C)",
    )
    all_.add_argument(
        "--rate",
        type=float,
        default=START_ALL_RATE,
        help="generator events/s (default %(default)s)",
    )
    all_.add_argument(
        "--sensors",
        type=int,
        default=START_ALL_SENSORS,
        help="number of simulated sensors (default %(default)s)",
    )
    all_.add_argument(
        "--with-mongo",
        action="store_true",
        help="also run the serving job into MongoDB: the local server (iot-lakehouse mongo "
        "start) unless SERVING_MONGO_URI names one; with SERVING_MONGO_URI set it runs anyway",
    )
    return parser


def dispatch(args: argparse.Namespace, settings: Settings) -> int:
    """Run the chosen subcommand; return the process exit status."""
    if args.command == "deps":
        resolved = {}
        for name in ("spark", "kafka"):
            jars = jvm_deps.resolve(
                name, settings.jars_dir, settings.maven_settings_file, force=args.force
            )
            resolved[name] = jars.jars
            print(f"{name}: {len(jars.jars)} jars in {jars.directory}")
        try:
            archive = class_archive.build(settings, resolved["spark"], force=args.force)
            print(f"spark class archive: {archive}")
        except DependencyError as exc:  # jobs still start, only slower: say so, do not fail
            print(f"warning: {exc}", file=sys.stderr)
        return 0
    if args.command == "kafka":
        from iot_lakehouse.runtime.kafka_broker import LocalKafkaBroker

        broker = LocalKafkaBroker(settings)
        if args.action == "start":
            print(broker.start().describe())
        elif args.action == "stop":
            print("stopped" if broker.stop() else "not running")
        else:
            status = broker.status()
            print(status.describe())
            return 0 if status.reachable else 3
        return 0
    if args.command == "mongo":
        from iot_lakehouse.runtime.mongo_server import LocalMongoServer

        server = LocalMongoServer(settings)
        if args.action == "start":
            print(server.start().describe())
        elif args.action == "stop":
            print("stopped" if server.stop() else "not running")
        else:
            mongo_status = server.status()
            print(mongo_status.describe())
            return 0 if mongo_status.running else 3
        return 0
    if args.command == "generate":
        from iot_lakehouse.sources.generator import (
            GeneratorController,
            config_from_args,
            run_generator,
        )

        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda _signum, _frame: stop.set())
        config = config_from_args(args)
        api_port = settings.generator_api_port if args.api_port is None else args.api_port
        serving: contextlib.AbstractContextManager[GeneratorController]
        if api_port:
            require_extra(
                "api",
                "fastapi",
                "the generator's control API",
                "or run the generator without it: --api-port 0 (GENERATOR_API_PORT=0)",
            )
            from iot_lakehouse.sources.generator_api import control_api

            serving = control_api(config, settings, api_port)
        else:
            serving = contextlib.nullcontext(GeneratorController(config))
        with serving as controller:
            report = run_generator(config, settings, stop=stop, controller=controller)
        print(
            f"sent={report.sent} delivered={report.delivered} failed={report.failed} "
            f"rate={report.rate:.0f}/s"
        )
        return 1 if report.failed else 0
    if args.command == "run":
        from iot_lakehouse.pipeline.jobs import run_jobs

        if args.console < 0:
            raise ConfigError(f"--console {args.console}: give a number of rows, 0 or more")
        settings = settings.with_(console_rows=args.console)
        if args.socket_host or args.socket_port is not None:
            settings = settings.with_(
                socket_host=args.socket_host or settings.socket_host,
                socket_port=settings.socket_port if args.socket_port is None else args.socket_port,
            )
            settings.validate()
        run_jobs(args.job, settings, available_now=args.available_now, source=args.source)
        return 0
    if args.command == "evaluate-alerts":
        from iot_lakehouse.ops.evaluate import evaluate_lakehouse, format_scores, scores_json

        scores = evaluate_lakehouse(settings, Path(args.ground_truth), args.grace_seconds)
        print(scores_json(scores) if args.json else format_scores(scores))
        return 0
    if args.command == "maintain":
        from iot_lakehouse.ops.maintain import run_maintain

        return run_maintain(settings, args)
    if args.command == "dlq":
        from iot_lakehouse.ops.dlq import dlq_list, redrive
        from iot_lakehouse.runtime.spark_session import build_spark

        spark = build_spark(settings, f"iot-lakehouse-dlq-{args.action}")
        try:
            if args.action == "list":
                print(dlq_list(spark, settings, args.json))
            else:
                print(redrive(spark, settings).describe())
        finally:
            spark.stop()
        return 0
    if args.command == "rerun":
        from iot_lakehouse.ops.rerun import rerun
        from iot_lakehouse.runtime.spark_session import build_spark

        spark = build_spark(settings, f"iot-lakehouse-rerun-{args.layer}")
        try:
            rebuilt = rerun(spark, settings, args.layer, args.cascade, args.since)
        finally:
            spark.stop()
        print(rebuilt.describe())
        return 0
    if args.command == "emitter":
        from iot_lakehouse.sources.emitter import run_emitter_command

        return run_emitter_command(args)
    if args.command == "status":
        from iot_lakehouse.ops.status import status_json, status_report

        print(status_json(settings) if args.json else status_report(settings))
        return 0
    if args.command == "dashboard":
        require_extra("dashboard", "streamlit", "the dashboard")
        from iot_lakehouse.interfaces.dashboard import run_dashboard

        return run_dashboard(settings, args.port)
    if args.command == "health":
        from iot_lakehouse.runtime.processes import alive
        from iot_lakehouse.runtime.restarts import JOB_STATES_FILE, jobs_health

        healthy, line = jobs_health(settings.runtime_dir / JOB_STATES_FILE, alive)
        print(line)
        return 0 if healthy else 1
    if args.command == "metrics":
        from iot_lakehouse.interfaces.prometheus import serve_metrics

        port = settings.metrics_port if args.port is None else args.port
        settings.with_(metrics_port=port).validate()
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda _signum, _frame: stop.set())
        signal.signal(signal.SIGINT, lambda _signum, _frame: stop.set())
        try:
            serve_metrics(settings, port, stop)
        except OSError as exc:
            raise ConfigError(
                f"cannot serve /metrics on {settings.metrics_host}:{port}: "
                f"{exc.strerror or exc}. Stop what "
                "listens there or give another --port (METRICS_PORT)."
            ) from exc
        return 0
    if args.command == "reconcile":
        from iot_lakehouse.ops.reconcile import format_ledgers, ledgers_json, reconcile
        from iot_lakehouse.runtime.spark_session import build_spark

        spark = build_spark(settings, "iot-lakehouse-reconcile")
        try:
            ledgers = reconcile(spark, settings)
        finally:
            spark.stop()
        print(ledgers_json(ledgers) if args.json else format_ledgers(ledgers))
        return 0 if all(ledger.ok for ledger in ledgers) else 1
    if args.command == "bench":
        from iot_lakehouse.benchmarks.bench import Plan, format_table
        from iot_lakehouse.benchmarks.bench_runs import run_bench

        parts = set(args.only or BENCH_PARTS)
        plan = Plan.of(args.quick)
        if args.replay_rows:
            plan = replace(plan, replay_rows=args.replay_rows)
        if args.soak_minutes:
            plan = replace(plan, soak_s=args.soak_minutes * 60)
        bench_report, saved = run_bench(
            plan, Path(args.results), parts, not args.no_baseline, args.keep, args.soak_rate
        )
        print(format_table(bench_report))
        print(f"\nsaved {saved}")
        return 0
    if args.command == "all":
        from iot_lakehouse.interfaces.supervisor import run_all

        return run_all(settings, args.duration, args.rate, args.sensors, args.with_mongo)
    raise AssertionError(args.command)


def require_extra(extra: str, module: str, what: str, otherwise: str = "") -> None:
    """Raise ConfigError saying how to install ``extra`` when ``module`` (which it brings)
    is not installed."""
    if importlib.util.find_spec(module) is None:
        raise ConfigError(
            f"{what} needs the '{extra}' extra, which is not installed: "
            f"pip install 'iot-lakehouse[{extra}]' (./start_all.sh installs every extra)"
            + (f"; {otherwise}" if otherwise else "")
        )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parse, configure logging, run, and turn project errors into exit status 2."""
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env()
        component = args.command
        if args.command == "run":  # a log per job; jobs sharing one driver share jobs.log
            component = args.job[0] if len(set(args.job)) == 1 else "jobs"
        # Services log to stdout; commands whose stdout is their result (status, reconcile,
        # dlq list --json, …) log to stderr, so that result can be piped.
        stream = sys.stdout if args.command in SERVICES else sys.stderr
        configure_logging(
            component,
            settings.log_level,
            settings.log_format,
            settings.logs_dir,
            stream,
            settings.log_max_bytes,
            settings.log_backups,
        )
        return dispatch(args, settings)
    except LakehouseError as exc:
        logger.error("%s", exc)
        print(f"error: {exc}", file=sys.stderr)
        return 2
