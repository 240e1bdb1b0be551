"""docker-compose.yml, Dockerfile and .dockerignore agree with the project (no Docker needed).

There is no Docker engine on the development machines, so nothing here starts a container: the
files are parsed and held against the project's own code. The services exist; every variable set
on a project service is one ``Settings.from_env`` reads and honours; the commands parse with the
CLI's own parser; Spark and Kafka addresses point at the service and listener that serve them; the
worker has room for every job; executors see the tables at the drivers' paths; the topics the
services use are created; every port is published on 127.0.0.1 unless opened on purpose; the
image runs uv.lock's pyspark on Java 17 with the venv on PATH.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import fields
from typing import Any

import pytest
import yaml
from packaging.specifiers import SpecifierSet

from iot_lakehouse.errors import ConfigError
from iot_lakehouse.interfaces.cli import build_parser
from iot_lakehouse.runtime import jvm_deps
from iot_lakehouse.settings import Settings
from tests.support.compose import GRAFANA_DASHBOARD, ROOT

COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

CLI = "iot-lakehouse"
KAFKA = "kafka"
KAFKA_INIT = "kafka-init"
MASTER = "spark-master"
WORKER = "spark-worker"
# Services that run jobs: the four pipeline jobs in one driver, as ./start_all.sh runs them.
JOB_SERVICES = {"jobs": ["bronze", "silver", "gold", "alerts"], "serve": ["serve"]}
MONITORING = ("metrics", "prometheus", "grafana")
REQUIRED_SERVICES = {
    KAFKA, KAFKA_INIT, MASTER, WORKER, *JOB_SERVICES, "generator", "dashboard", "mongo",
    *MONITORING,
}  # fmt: skip
# Optional parts: started only with `docker compose --profile <name> up`.
PROFILES = {
    "mongo": "mongo", "serve": "mongo", "metrics": "monitoring", "prometheus": "monitoring",
    "grafana": "monitoring",
}  # fmt: skip
PROMETHEUS_PORT = 9090  # prom/prometheus' default --web.listen-address
MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"
SPARK_MASTER_DEFAULT_PORT = 7077
SPARK_EXECUTOR_DEFAULT_MIB = 1024  # spark.executor.memory: the compose file does not change it
PROJECT_PROTOCOL = "PLAINTEXT"  # the project reads no Kafka security settings
LOOPBACK = "127.0.0.1"
# Set on `docker compose up`, it opens Kafka and the Spark UIs on purpose (the file's header).
PUBLISH_VARIABLE = "IOT_PUBLISH_ADDRESS"
OPENABLE = {KAFKA, MASTER, WORKER}  # the generator API stays on loopback: no authentication

Service = dict[str, Any]


# ---------------------------------------------------------------- reading the files


@pytest.fixture(scope="module")
def services() -> dict[str, Service]:
    """The ``services`` mapping of docker-compose.yml (YAML anchors and ``<<`` merged)."""
    compose = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(compose, dict), f"{COMPOSE_FILE.name} is not a YAML mapping"
    found = compose.get("services")
    assert isinstance(found, dict), f"{COMPOSE_FILE.name} has no services mapping"
    return found


@pytest.fixture(scope="module")
def dockerfile() -> list[str]:
    """The Dockerfile's instructions, one per item, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    return [line.strip() for line in text.splitlines() if line.strip() and line[0] != "#"]


def env_of(service: Service) -> dict[str, str]:
    """A service's environment as strings, from the mapping or the ``KEY=VALUE`` list form."""
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        return dict(item.partition("=")[::2] for item in map(str, raw))
    return {str(k): "" if v is None else str(v) for k, v in raw.items()}


def command_of(service: Service) -> list[str]:
    """A service's command as an argv list (a string command is split like a shell would)."""
    raw = service.get("command")
    if raw is None:
        return []
    return shlex.split(raw) if isinstance(raw, str) else [str(arg) for arg in raw]


def option(argv: list[str], name: str) -> str | None:
    """The value after ``name`` in ``argv``, or None if the option is absent."""
    if name not in argv:
        return None
    at = argv.index(name)
    assert at + 1 < len(argv), f"{name} has no value in {shlex.join(argv)}"
    return argv[at + 1]


def mounts(service: Service) -> list[tuple[str, str, bool]]:
    """(source, target, read_only) of each volume, short or long syntax."""
    found = []
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            found.append((volume["source"], volume["target"], bool(volume.get("read_only"))))
        else:
            source, target, *mode = str(volume).split(":")
            found.append((source, target, "ro" in ",".join(mode).split(",")))
    return found


def mount_holding(service: Service, path: str) -> tuple[str, str, bool] | None:
    """The service's volume whose target contains ``path`` (the deepest one), if any."""
    holding = [
        m for m in mounts(service) if path == m[1] or path.startswith(m[1].rstrip("/") + "/")
    ]
    return max(holding, key=lambda m: len(m[1]), default=None)


def interpolate(value: str, env: Mapping[str, str]) -> str:
    """``value`` with Compose's ``${VAR}``, ``${VAR:-default}`` and ``${VAR-default}`` filled in
    from ``env``, as ``docker compose`` does with the shell's variables."""

    def fill(match: re.Match[str]) -> str:
        name, operator, default = match[1], match[2], match[3] or ""
        if operator == ":-":
            return env.get(name) or default
        return env.get(name, default)

    return re.sub(r"\$\{(\w+)(?:(:?-)([^}]*))?\}", fill, value)


def port_bindings(service: Service, env: Mapping[str, str]) -> list[tuple[str, int, int]]:
    """(host address, host port, container port) of each published port, with the variables
    of ``env``; the address is "" for every interface (Docker's default)."""
    found = []
    for port in service.get("ports") or []:
        if isinstance(port, dict):
            target = int(port["target"])
            address = interpolate(str(port.get("host_ip") or ""), env)
            found.append((address, int(port.get("published") or target), target))
            continue
        spec = interpolate(str(port), env).split("/")[0]
        if spec.startswith("["):  # [IPv6]:host:container
            address, _, ports = spec[1:].partition("]:")
            parts = ports.split(":")
        else:  # [address:]host:container, or container alone
            parts = spec.split(":")
            address = parts.pop(0) if len(parts) == 3 else ""
        found.append((address, int(parts[0] or 0), int(parts[-1])))
    return found


def published(service: Service) -> dict[int, int]:
    """Published ports of a service: container port -> host port."""
    return {target: host for _, host, target in port_bindings(service, {})}


def depends_on(service: Service) -> dict[str, str]:
    """The services this one waits for, with the condition (``service_started`` by default)."""
    raw = service.get("depends_on") or {}
    if isinstance(raw, list):
        return dict.fromkeys(map(str, raw), "service_started")
    return {name: (spec or {}).get("condition", "service_started") for name, spec in raw.items()}


def healthcheck_text(service: Service) -> str:
    """A service's healthcheck command as one string."""
    test = (service.get("healthcheck") or {}).get("test", "")
    return test if isinstance(test, str) else " ".join(map(str, test))


def mebibytes(size: str) -> int:
    """``4g`` / ``512m`` / ``1024`` (MiB) as MiB, as Spark reads worker and executor memory."""
    match = re.fullmatch(r"(\d+)([kmgt]?)b?", size.strip().lower())
    assert match, f"{size!r} is not a Spark memory size such as 4g or 512m"
    factor = {"k": 1 / 1024, "m": 1, "": 1, "g": 1024, "t": 1024 * 1024}[match[2]]
    return int(int(match[1]) * factor)


def java_properties(opts: str) -> dict[str, str]:
    """``-Dkey=value`` pairs of a JVM options string (e.g. SPARK_MASTER_OPTS)."""
    return {m[1]: m[2] for m in re.finditer(r"-D([^=\s]+)=(\S*)", opts)}


def kafka_listeners(value: str) -> dict[str, tuple[str, int]]:
    """``NAME://host:port,…`` (listeners / advertised.listeners) as {NAME: (host, port)}."""
    found = {}
    for item in filter(None, (part.strip() for part in value.split(","))):
        match = re.fullmatch(r"([A-Za-z0-9_]+)://([^:,]*):(\d+)", item)
        assert match, f"listener {item!r} is not NAME://host:port"
        found[match[1]] = (match[2], int(match[3]))
    return found


# ---------------------------------------------------------------- the project's view


class RecordingEnv(Mapping[str, str]):
    """An environment that remembers every name it is asked for."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self._values = dict(values)
        self.asked: set[str] = set()

    def __getitem__(self, key: str) -> str:
        self.asked.add(key)
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


def names_read_by_settings(env: Mapping[str, str]) -> set[str]:
    """Every variable ``Settings.from_env`` looks up, empty and with ``env`` set (some reads
    may depend on other values)."""
    asked: set[str] = set()
    for values in ({}, env):
        recorder = RecordingEnv(values)
        Settings.from_env(recorder)
        asked |= recorder.asked
    return asked


def settings_of(name: str, service: Service) -> Settings:
    """The Settings a project service gets from its compose environment."""
    try:
        return Settings.from_env(env_of(service))
    except ConfigError as exc:
        pytest.fail(f"{name}: its environment is rejected by Settings.from_env: {exc}")


def parse_cli(name: str, argv: list[str]) -> argparse.Namespace:
    """``argv`` (without the program name) parsed by the real CLI parser."""
    try:
        return build_parser().parse_args(argv)
    except SystemExit as exc:
        pytest.fail(f"{name}: `{CLI} {shlex.join(argv)}` is not a valid command (exit {exc.code})")


def project_services(services: dict[str, Service]) -> dict[str, Service]:
    """Services that run the project's CLI."""
    return {n: s for n, s in services.items() if command_of(s)[:1] == [CLI]}


def cli_args(services: dict[str, Service]) -> dict[str, argparse.Namespace]:
    """Each project service's command, parsed by the CLI."""
    return {n: parse_cli(n, command_of(s)[1:]) for n, s in project_services(services).items()}


def kafka_users(services: dict[str, Service]) -> dict[str, Service]:
    """Project services that talk to Kafka: the streaming jobs and the generator."""
    return {
        n: services[n]
        for n, args in cli_args(services).items()
        if args.command in {"run", "generate"}
    }


def job_services(services: dict[str, Service]) -> dict[str, Service]:
    """Project services that run a streaming job (`iot-lakehouse run <job>`)."""
    return {n: services[n] for n, args in cli_args(services).items() if args.command == "run"}


def master_address(services: dict[str, Service]) -> str:
    """``spark://<service>:<port>``: what the master listens on, by the service's DNS name."""
    argv = command_of(services[MASTER])
    assert argv[:2] == ["spark-class", MASTER_CLASS], (
        f"{MASTER} must run `spark-class {MASTER_CLASS}` from the project image, not {argv[:2]}"
    )
    host = option(argv, "--host")
    assert host in (None, MASTER), (
        f"{MASTER} binds to {host!r}; other containers reach it as {MASTER!r}, use --host {MASTER}"
    )
    return f"spark://{MASTER}:{option(argv, '--port') or SPARK_MASTER_DEFAULT_PORT}"


def kafka_env(services: dict[str, Service]) -> dict[str, str]:
    """The broker's environment (its server properties, as the image reads them)."""
    return env_of(services[KAFKA])


def internal_listener(services: dict[str, Service]) -> tuple[str, str, int]:
    """(name, host, port) of the listener the broker advertises under its service name."""
    advertised = kafka_listeners(kafka_env(services).get("KAFKA_ADVERTISED_LISTENERS", ""))
    internal = [(n, h, p) for n, (h, p) in advertised.items() if h == KAFKA]
    assert len(internal) == 1, (
        f"{KAFKA} must advertise exactly one listener as {KAFKA}:<port> for other containers, "
        f"got {advertised}"
    )
    return internal[0]


def created_topics(services: dict[str, Service]) -> dict[str, tuple[int, str]]:
    """Topics the init service creates: {topic: (partitions, bootstrap server)}."""
    parser = argparse.ArgumentParser(add_help=False)
    for name in ("--bootstrap-server", "--topic"):
        parser.add_argument(name)
    parser.add_argument("--partitions", type=int)
    parser.add_argument("--create", action="store_true")
    script = " ".join(command_of(services[KAFKA_INIT]))
    created = {}
    for line in script.splitlines():
        if "kafka-topics.sh" in line:
            args, _ = parser.parse_known_args(shlex.split(line))
            if args.create:
                created[args.topic] = (args.partitions, args.bootstrap_server)
    return created


# ---------------------------------------------------------------- services and settings


def test_every_service_exists(services: dict[str, Service]) -> None:
    missing = REQUIRED_SERVICES - services.keys()
    assert not missing, f"{COMPOSE_FILE.name} lacks the services {sorted(missing)}"


def test_project_services_set_only_settings_the_project_reads(
    services: dict[str, Service],
) -> None:
    for name, service in project_services(services).items():
        env = env_of(service)
        unknown = set(env) - names_read_by_settings(env)
        assert not unknown, (
            f"{name} sets {sorted(unknown)}, which Settings.from_env never reads "
            "(misspelt, or not a project setting: see docs/configuration.md)"
        )


def test_project_services_settings_are_honoured(services: dict[str, Service]) -> None:
    defaults = Settings.from_env({})
    for name, service in project_services(services).items():
        for key, value in env_of(service).items():
            settings = settings_of(name, {"environment": {key: value}})
            seen = {str(getattr(settings, f.name)).lower() for f in fields(settings)}
            # Taken as given, or at least changing something (e.g. SPARK_UI_ENABLED=yes -> True).
            assert value.lower() in seen or settings != defaults, (
                f"{name}: {key}={value!r} leaves the settings unchanged ({sorted(seen)})"
            )


def test_commands_are_valid_cli_invocations(services: dict[str, Service]) -> None:
    args = cli_args(services)
    for name, jobs in JOB_SERVICES.items():
        expected = f"`{CLI} run {' '.join(jobs)}`"
        assert command_of(services[name])[:1] == [CLI], f"{name} must run {expected}"
        assert args[name].command == "run", f"{name} runs `{args[name].command}`, not {expected}"
        assert args[name].job == jobs, f"service {name} runs the {args[name].job} job(s)"
        assert not args[name].available_now, f"{name} must stream, not drain and exit"
    assert set(job_services(services)) == set(JOB_SERVICES), "one service per driver"
    assert args["generator"].command == "generate", "the generator service must run `generate`"


# ---------------------------------------------------------------- Spark


def test_every_spark_process_runs_the_project_image(services: dict[str, Service]) -> None:
    spark_services = [MASTER, WORKER, *project_services(services)]
    images = {(services[n].get("image"), str(services[n].get("build"))) for n in spark_services}
    assert len(images) == 1, (
        f"{spark_services} must share one image (one pyspark for driver, master and executors), "
        f"got {images}"
    )
    build = services[MASTER].get("build")
    context = build.get("context", ".") if isinstance(build, dict) else build
    assert context is not None and (ROOT / context / "Dockerfile").resolve() == DOCKERFILE, (
        f"{MASTER} must be built from {DOCKERFILE.name} (build: {build!r})"
    )


def test_jobs_and_worker_use_the_master_service(services: dict[str, Service]) -> None:
    expected = master_address(services)
    for name, service in job_services(services).items():
        actual = settings_of(name, service).spark_master
        assert actual == expected, f"{name}: SPARK_MASTER={actual!r}, the master is {expected!r}"
    worker = command_of(services[WORKER])
    assert worker[:2] == ["spark-class", WORKER_CLASS], (
        f"{WORKER} must run `spark-class {WORKER_CLASS}`, not {worker[:2]}"
    )
    assert expected in worker, f"{WORKER} must register with {expected}: {shlex.join(worker)}"


def test_worker_has_room_for_every_job(services: dict[str, Service]) -> None:
    jobs = len(job_services(services))
    opts = env_of(services[MASTER]).get("SPARK_MASTER_OPTS", "")
    per_app = java_properties(opts).get("spark.deploy.defaultCores")
    assert per_app, (
        f"{MASTER} needs -Dspark.deploy.defaultCores in SPARK_MASTER_OPTS: without it the first "
        "job takes every core and the others never start"
    )
    worker = command_of(services[WORKER])
    cores, memory = option(worker, "--cores"), option(worker, "--memory")
    assert cores and memory, f"{WORKER} must state --cores and --memory: {shlex.join(worker)}"
    assert int(cores) >= jobs * int(per_app), (
        f"{WORKER} offers {cores} cores; {jobs} jobs need {int(per_app)} each"
    )
    assert mebibytes(memory) >= jobs * SPARK_EXECUTOR_DEFAULT_MIB, (
        f"{WORKER} offers {memory}; {jobs} executors need {SPARK_EXECUTOR_DEFAULT_MIB} MiB each"
    )


def test_executors_see_the_tables_where_the_drivers_do(services: dict[str, Service]) -> None:
    jobs = job_services(services)
    locations = {(s.lakehouse_path, s.dlq_path) for s in (settings_of(n, jobs[n]) for n in jobs)}
    assert len(locations) == 1, f"all jobs must share LAKEHOUSE_PATH and DLQ_PATH: {locations}"
    lakehouse, dlq = next(iter(locations))
    for name, service in jobs.items():
        for path in (lakehouse, dlq):
            assert path.startswith("/"), (
                f"{name}: {path!r} must be absolute (same in every container)"
            )
            mount = mount_holding(service, path)
            assert mount and not mount[2], f"{name}: {path} is not on a writable volume"
            assert mount_holding(services[WORKER], path) == mount, (
                f"{WORKER} must mount {mount[0]} at {mount[1]} like {name}: executors write {path}"
            )


def test_jobs_read_the_jar_cache_the_deps_service_fills(services: dict[str, Service]) -> None:
    args = cli_args(services)
    deps = [n for n, a in args.items() if a.command == "deps"]
    assert len(deps) == 1, f"one service must run `{CLI} deps` (the jar cache), found {deps}"
    deps_dir = str(settings_of(deps[0], services[deps[0]]).jars_dir)
    deps_mount = mount_holding(services[deps[0]], deps_dir)
    assert deps_mount and not deps_mount[2], (
        f"{deps[0]}: IOT_JARS_DIR={deps_dir} is not on a writable volume"
    )
    for name, service in job_services(services).items():
        jars_dir = str(settings_of(name, service).jars_dir)
        assert jars_dir == deps_dir, f"{name}: IOT_JARS_DIR={jars_dir}, {deps[0]} fills {deps_dir}"
        mount = mount_holding(service, jars_dir)
        assert mount and mount[:2] == deps_mount[:2], (
            f"{name} must mount {deps_mount[0]} at {deps_mount[1]} (the jar cache)"
        )
        assert depends_on(service).get(deps[0]) == "service_completed_successfully", (
            f"{name} must wait for {deps[0]} to complete successfully"
        )


# ---------------------------------------------------------------- Kafka


def test_kafka_is_a_single_kraft_node_of_the_projects_broker_version(
    services: dict[str, Service],
) -> None:
    image = str(services[KAFKA].get("image"))
    match = re.fullmatch(r"apache/kafka:(4\.\d+\.\d+)", image)
    assert match, f"{KAFKA} must pin the official image to a 4.x.y tag, got {image!r}"
    assert match[1] == jvm_deps.KAFKA_BROKER_VERSION, (
        f"{image} differs from the local broker, Kafka {jvm_deps.KAFKA_BROKER_VERSION}"
    )
    env = kafka_env(services)
    roles = set(env.get("KAFKA_PROCESS_ROLES", "").split(","))
    assert roles == {"broker", "controller"}, (
        f"KAFKA_PROCESS_ROLES must be broker,controller: {roles}"
    )
    assert "KAFKA_ZOOKEEPER_CONNECT" not in env, "Kafka 4 has no ZooKeeper mode"
    controller = env.get("KAFKA_CONTROLLER_LISTENER_NAMES", "")
    port = kafka_listeners(env.get("KAFKA_LISTENERS", "")).get(controller, ("", -1))[1]
    voters = f"{env.get('KAFKA_NODE_ID')}@{KAFKA}:{port}"
    assert env.get("KAFKA_CONTROLLER_QUORUM_VOTERS") == voters, (
        f"KAFKA_CONTROLLER_QUORUM_VOTERS must be {voters} (node id, {controller} listener port)"
    )


def test_clients_use_the_listener_the_broker_advertises_inside(
    services: dict[str, Service],
) -> None:
    env = kafka_env(services)
    name, host, port = internal_listener(services)
    bound = kafka_listeners(env.get("KAFKA_LISTENERS", ""))
    assert bound.get(name, ("", -1))[1] == port, (
        f"{KAFKA} advertises {name} on {port} but binds {bound}"
    )
    protocols = dict(
        p.split(":") for p in env.get("KAFKA_LISTENER_SECURITY_PROTOCOL_MAP", "").split(",")
    )
    assert protocols.get(name) == PROJECT_PROTOCOL, (
        f"listener {name} must be {PROJECT_PROTOCOL}: the project reads no Kafka security settings"
    )
    for service_name, service in kafka_users(services).items():
        servers = settings_of(service_name, service).kafka_bootstrap_servers
        assert servers == f"{host}:{port}", (
            f"{service_name}: KAFKA_BOOTSTRAP_SERVERS={servers!r}, advertised: {host}:{port}"
        )
    assert f"{host}:{port}" in healthcheck_text(services[KAFKA]), (
        f"{KAFKA}'s healthcheck must ask {host}:{port}, the address the clients use"
    )


def test_host_listener_is_published_on_the_same_port(services: dict[str, Service]) -> None:
    env = kafka_env(services)
    advertised = kafka_listeners(env.get("KAFKA_ADVERTISED_LISTENERS", ""))
    bound = kafka_listeners(env.get("KAFKA_LISTENERS", ""))
    host_side = [(n, p) for n, (h, p) in advertised.items() if h in {"localhost", "127.0.0.1"}]
    assert len(host_side) == 1, f"{KAFKA} must advertise one localhost listener, got {advertised}"
    name, port = host_side[0]
    assert bound.get(name, ("", -1))[1] == port, f"{name} advertised on {port} but bound {bound}"
    assert published(services[KAFKA]).get(port) == port, (
        f"{KAFKA} must publish {port}:{port} for clients on the host (localhost:{port})"
    )


def test_ports_are_published_on_loopback_unless_opened_on_purpose(
    services: dict[str, Service],
) -> None:
    """Kafka has no authentication, the Spark UIs can kill applications and the generator API
    steers the generator: by default no other machine reaches any of them."""
    for name, service in services.items():
        for address, host_port, target in port_bindings(service, {}):
            assert address == LOOPBACK, (
                f"{name} publishes {host_port}:{target} on {address or 'every interface'}; "
                f'publish it on {LOOPBACK}: "{LOOPBACK}:{host_port}:{target}", or '
                f'"${{{PUBLISH_VARIABLE}:-{LOOPBACK}}}:{host_port}:{target}" to let users open '
                "it on purpose"
            )
    opened = {PUBLISH_VARIABLE: "0.0.0.0"}
    for name, service in services.items():
        addresses = {address for address, _, _ in port_bindings(service, opened)}
        if name in OPENABLE:
            assert addresses == {"0.0.0.0"}, (
                f"{PUBLISH_VARIABLE}=0.0.0.0 must open {name} (the file's header says so), got "
                f"{addresses}"
            )
        else:
            assert addresses <= {LOOPBACK}, f"{name} must stay on {LOOPBACK}, got {addresses}"


def test_the_topics_the_services_use_are_created(services: dict[str, Service]) -> None:
    assert kafka_env(services).get("KAFKA_AUTO_CREATE_TOPICS_ENABLE") == "false", (
        f"{KAFKA} must not auto-create topics (the {KAFKA_INIT} service creates them)"
    )
    init = services[KAFKA_INIT]
    assert init.get("image") == services[KAFKA].get("image"), (
        f"{KAFKA_INIT} must use {KAFKA}'s image"
    )
    assert depends_on(init).get(KAFKA) == "service_healthy", f"{KAFKA_INIT} must wait for {KAFKA}"
    created = created_topics(services)
    _, host, port = internal_listener(services)
    args = cli_args(services)
    for name, service in kafka_users(services).items():
        settings = settings_of(name, service)
        sensors = getattr(args[name], "topic", None) or settings.kafka_topic
        for topic in (sensors, settings.kafka_alerts_topic):
            assert topic in created, f"{name} uses topic {topic!r}; {KAFKA_INIT} creates {created}"
            assert created[topic][1] == f"{host}:{port}", (
                f"{topic} is created via {created[topic][1]}"
            )
        assert created[sensors][0] == settings.kafka_topic_partitions, (
            f"{sensors} gets {created[sensors][0]} partitions, the local broker "
            f"{settings.kafka_topic_partitions} (KAFKA_TOPIC_PARTITIONS)"
        )
        assert depends_on(service).get(KAFKA_INIT) == "service_completed_successfully", (
            f"{name} must wait for {KAFKA_INIT} to complete successfully"
        )


def test_published_and_probed_ports_are_the_ones_listened_on(
    services: dict[str, Service],
) -> None:
    master, worker = command_of(services[MASTER]), command_of(services[WORKER])
    listening = {
        MASTER: {
            int(option(master, "--port") or SPARK_MASTER_DEFAULT_PORT),
            int(option(master, "--webui-port") or 8080),
        },
        WORKER: {int(option(worker, "--webui-port") or 8081)},
    }
    for name, ports in listening.items():
        extra = set(published(services[name])) - ports
        assert not extra, f"{name} publishes {sorted(extra)} but listens on {sorted(ports)}"
        probed = {int(p) for p in re.findall(r"localhost:(\d+)", healthcheck_text(services[name]))}
        assert probed and probed <= ports, (
            f"{name}'s healthcheck probes {probed}, not {sorted(ports)}"
        )


# ---------------------------------------------------------------- image


def pinned_versions() -> dict[str, str]:
    """Exact ``name==version`` pins of pyproject.toml's dependencies."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = (
        re.fullmatch(r"([A-Za-z0-9_.-]+)==([^,;\s]+)", d.strip()) for d in project["dependencies"]
    )
    return {m[1].lower(): m[2] for m in pins if m}


def locked_version(package: str) -> str | None:
    """The version uv.lock pins for ``package``."""
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    return next((p["version"] for p in lock["package"] if p["name"] == package), None)


def test_image_has_the_locked_pyspark_and_delta(dockerfile: list[str]) -> None:
    for package in ("pyspark", "delta-spark"):
        pin = pinned_versions().get(package)
        assert pin, f"pyproject.toml must pin {package}==x.y.z"
        assert locked_version(package) == pin, (
            f"uv.lock has {package} {locked_version(package)}, pyproject {pin}"
        )
    syncs = [line for line in dockerfile if re.search(r"\buv\s+sync\b", line)]
    assert syncs, f"{DOCKERFILE.name} must install the project with `uv sync --frozen`"
    for line in syncs:
        assert re.search(r"--(frozen|locked)\b", line), f"`{line}` may re-resolve: add --frozen"
        assert not re.search(r"--upgrade|\s-U\b|--refresh-package", line), f"`{line}` upgrades"
    assert any(re.match(r"COPY\b.*\buv\.lock\b", line) for line in dockerfile), (
        f"{DOCKERFILE.name} must COPY uv.lock"
    )
    stray = [
        line
        for line in dockerfile
        if re.search(r"pip\s+install\b.*\b(pyspark|delta-spark)\b", line)
    ]
    assert not stray, f"Spark must come from uv.lock only, not {stray}"


def test_image_has_java_17_python_and_the_venv_on_path(dockerfile: list[str]) -> None:
    base = next((line.split()[1] for line in dockerfile if line.startswith("FROM ")), "")
    match = re.fullmatch(r"python:(\d+\.\d+)[-.\w]*", base)
    assert match, f"{DOCKERFILE.name} must start FROM an official python:X.Y image, not {base!r}"
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert SpecifierSet(requires).contains(f"{match[1]}.0"), f"{base} is outside {requires}"
    installs = [line for line in dockerfile if "apt-get install" in line]
    assert any(re.search(r"\bopenjdk-17-(jre|jdk)(-headless)?\b", line) for line in installs), (
        f"{DOCKERFILE.name} must apt-get install openjdk-17-jre-headless (Spark 4 runs on Java 17)"
    )
    env_text = " ".join(line for line in dockerfile if line.startswith("ENV "))
    venv = re.search(r"UV_PROJECT_ENVIRONMENT=(\S+)", env_text)
    assert venv, f"{DOCKERFILE.name} must fix the venv path (UV_PROJECT_ENVIRONMENT)"
    assert re.search(rf"PATH={re.escape(venv[1])}/bin:", env_text), (
        f"{venv[1]}/bin must be first on PATH: the services run `{CLI}` and `spark-class` from it"
    )


# ---------------------------------------------------------------- .dockerignore


def ignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    """(exclude?, regex) per .dockerignore line, with Docker's glob rules (``*`` stops at /)."""
    rules = []
    for raw in DOCKERIGNORE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        glob = line.lstrip("!").strip("/")
        parts = re.split(r"(\*\*/?|\*|\?)", glob)
        wild = {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}
        rules.append((not negate, re.compile("".join(wild.get(p, re.escape(p)) for p in parts))))
    return rules


def ignored(path: str) -> bool:
    """Whether Docker leaves ``path`` out of the build context (last matching rule wins)."""
    parts = path.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    verdict = False
    for exclude, pattern in ignore_rules():
        if any(pattern.fullmatch(prefix) for prefix in prefixes):
            verdict = exclude
    return verdict


@pytest.mark.parametrize(
    "path",
    [
        ".venv/bin/python",
        ".runtime/jars/spark/delta-spark_4.2_2.13-4.4.0.jar",
        "lakehouse/bronze/sensor_events/part-0.parquet",
        "dlq/silver_rejects/_delta_log/00000000000000000000.json",
        ".mypy_cache/3.11/cache.db",
        "src/iot_lakehouse/__pycache__/cli.cpython-311.pyc",
    ],
)
def test_dockerignore_leaves_out_local_state(path: str) -> None:
    assert ignored(path), f"{DOCKERIGNORE.name} must leave {path} out of the build context"


def test_dockerignore_keeps_what_the_dockerfile_copies(dockerfile: list[str]) -> None:
    sources = [
        source
        for line in dockerfile
        if line.startswith("COPY ") and "--from" not in line
        for source in line.split()[1:-1]
        if not source.startswith("--")
    ]
    needed = [*sources, "src/iot_lakehouse/settings.py", "src/iot_lakehouse/jvm/spark/pom.xml"]
    assert "uv.lock" in sources, f"{DOCKERFILE.name} must COPY uv.lock"
    kept_out = [path for path in needed if ignored(path)]
    assert not kept_out, f"{DOCKERIGNORE.name} leaves out {kept_out}, which the image needs"


# ---------------------------------------------------------------- health, profiles, monitoring


def test_optional_parts_sit_behind_their_profiles(services: dict[str, Service]) -> None:
    for name, service in services.items():
        profiles = service.get("profiles") or []
        expected = [PROFILES[name]] if name in PROFILES else []
        assert profiles == expected, f"{name} has profiles {profiles}, expected {expected}"


def probed_url(service: Service) -> tuple[int, str]:
    """(port, path) of the localhost URL a healthcheck opens."""
    match = re.search(r"http://localhost:(\d+)(/[^'\"\s]*)", healthcheck_text(service))
    assert match, f"healthcheck {healthcheck_text(service)!r} opens no http://localhost URL"
    return int(match[1]), match[2]


def test_long_running_project_services_have_healthchecks_on_what_they_serve(
    services: dict[str, Service],
) -> None:
    jobs = (services["jobs"].get("healthcheck") or {}).get("test") or []
    assert jobs[:1] == ["CMD"], f"jobs' healthcheck must be an exec form: {jobs}"
    assert parse_cli("jobs", [str(arg) for arg in jobs[2:]]).command == "health", (
        f"jobs' healthcheck must run `{CLI} health` (the driver and each job up): {jobs}"
    )
    assert jobs[1] == CLI
    served = {  # service: (the port its settings listen on, the address it binds, path)
        "generator": ("generator_api_port", "generator_api_host", "/health"),
        "dashboard": ("dashboard_port", "dashboard_host", "/_stcore/health"),
        "metrics": ("metrics_port", "metrics_host", "/metrics"),
    }
    for name, (port_field, host_field, path) in served.items():
        settings = settings_of(name, services[name])
        port = getattr(settings, port_field)
        assert probed_url(services[name]) == (port, path), (
            f"{name}'s healthcheck must open http://localhost:{port}{path}"
        )
        assert getattr(settings, host_field) == "0.0.0.0", (
            f"{name} must listen on 0.0.0.0 in its container to be reached from outside it"
        )
        if name != "metrics":  # Prometheus reaches metrics inside the network
            assert port in published(services[name]), f"{name} must publish its port {port}"


def test_prometheus_scrapes_the_metrics_service(services: dict[str, Service]) -> None:
    prometheus = services["prometheus"]
    flags = dict(arg.partition("=")[::2] for arg in command_of(prometheus))
    config_file = flags.get("--config.file", "")
    (source,) = [m[0] for m in mounts(prometheus) if m[1] == config_file]
    config = yaml.safe_load((ROOT / source).read_text())
    targets = [
        target
        for job in config["scrape_configs"]
        for static in job["static_configs"]
        for target in static["targets"]
    ]
    port = settings_of("metrics", services["metrics"]).metrics_port
    assert targets == [f"metrics:{port}"], f"Prometheus scrapes {targets}, not metrics:{port}"
    assert probed_url(prometheus)[0] == PROMETHEUS_PORT
    assert published(prometheus).get(PROMETHEUS_PORT), "Prometheus' UI must be published"


def test_grafana_shows_the_projects_dashboard_from_prometheus(
    services: dict[str, Service],
) -> None:
    grafana = services["grafana"]
    folders = {target: ROOT / source for source, target, _ in mounts(grafana) if source[0] == "."}
    provisioning = folders["/etc/grafana/provisioning"]
    (datasource,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())[
        "datasources"
    ]
    assert datasource["url"] == f"http://prometheus:{PROMETHEUS_PORT}"
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "iot-lakehouse.yml").read_text())[
        "providers"
    ]
    dashboards = folders.get(provider["options"]["path"])
    assert dashboards is not None, "the dashboards folder must be mounted at the provider's path"
    assert (dashboards / GRAFANA_DASHBOARD.name).resolve() == GRAFANA_DASHBOARD
    home = env_of(grafana)["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{provider['options']['path']}/{GRAFANA_DASHBOARD.name}"
    dashboard = json.loads(GRAFANA_DASHBOARD.read_text())
    assert dashboard["panels"], "the dashboard has no panels"
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == datasource["uid"], panel["title"]
        assert panel["targets"] and all(t["expr"] for t in panel["targets"]), panel["title"]
