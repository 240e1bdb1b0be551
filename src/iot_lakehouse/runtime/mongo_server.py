"""A real local MongoDB-protocol server on 127.0.0.1, started without Docker: FerretDB with its
SQLite backend, the store the serving job writes to.

FerretDB is built once from its Go module source (``go`` is the only tool it needs) into
``.runtime/mongo/bin/``; the server's SQLite files, state and log live under ``.runtime/mongo/``.
Starting twice reuses the running server; stopping sends SIGTERM and waits.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pymongo import MongoClient
from pymongo.errors import PyMongoError

from iot_lakehouse.errors import DependencyError, MongoError
from iot_lakehouse.logs import kv, rotate_if_large
from iot_lakehouse.runtime.processes import (
    PIDS_DIR,
    alive,
    read_pid,
    reap,
    record_pid,
    wait_until_ready,
)
from iot_lakehouse.settings import Settings

logger = logging.getLogger(__name__)

FERRETDB_VERSION = "v1.24.2"
FERRETDB_MODULE = "github.com/FerretDB/FerretDB"
GO_FALLBACK = Path("/usr/local/go/bin/go")  # where the official Go tarball installs it
BUILD_TIMEOUT_S = 1800.0  # a first build downloads ~100 modules, then compiles SQLite's C port
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0
PING_TIMEOUT_MS = 2000
# FerretDB logs every connection at INFO, and at WARN the whole reply to the `endSessions`
# each closing pymongo client sends (a command it lacks); start-up failures are ERROR.
SERVER_LOG_LEVEL = "error"
PID_ROLE = "service"  # stop_all.sh stops these after the jobs (roles main, child) that use them


def ferretdb_binary(bin_dir: Path) -> Path:
    """Where the FerretDB binary of ``FERRETDB_VERSION`` lives in ``bin_dir``."""
    return bin_dir / f"ferretdb-{FERRETDB_VERSION}"


def find_go() -> str:
    """The ``go`` command: on PATH, else the official tarball's ``/usr/local/go/bin/go``."""
    go = shutil.which("go")
    if go is not None:
        return go
    if os.access(GO_FALLBACK, os.X_OK):
        return str(GO_FALLBACK)
    raise DependencyError(
        "Go is not installed: the local MongoDB-protocol server (FerretDB "
        f"{FERRETDB_VERSION}) is built from source and needs Go 1.24 or newer. Install it from "
        "https://go.dev/dl/ (e.g. into /usr/local/go, which is looked at even off PATH) and "
        "run again."
    )


def _run_go(go: str, args: list[str], cwd: Path, what: str) -> str:
    """Run ``go <args>`` in ``cwd``; its stdout, or a DependencyError with its output's tail."""
    try:
        done = subprocess.run(
            [go, *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise DependencyError(
            f"{what} took more than {BUILD_TIMEOUT_S:.0f} s (`go {' '.join(args)}`). Check "
            "network access to the Go module proxy (GOPROXY) and run again."
        ) from None
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-30:])
        raise DependencyError(
            f"{what} failed (`go {' '.join(args)}`, exit {done.returncode}):\n{tail}\n"
            "Check network access to the Go module proxy (GOPROXY) and that `go version` is "
            "1.24 or newer, then run again."
        )
    return done.stdout


def install_ferretdb(settings: Settings, bin_dir: Path | None = None) -> Path:
    """The FerretDB binary in ``bin_dir`` (default ``<mongo_dir>/bin``), built from the Go
    module source first if it is not there yet (about a minute with an empty Go cache)."""
    bin_dir = (bin_dir or settings.mongo_dir / "bin").absolute()
    binary = ferretdb_binary(bin_dir)
    if binary.is_file() and os.access(binary, os.X_OK):
        return binary
    go = find_go()
    bin_dir.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    logger.info("building ferretdb %s", kv(version=FERRETDB_VERSION, go=go, binary=binary))
    # built next to its final place, then renamed: a reader never sees half a binary
    with tempfile.TemporaryDirectory(prefix=".build-", dir=bin_dir) as tmp:
        work = Path(tmp)
        module = f"{FERRETDB_MODULE}@{FERRETDB_VERSION}"
        info = json.loads(
            _run_go(go, ["mod", "download", "-json", module], work, f"Downloading {module}")
        )
        source = work / "src"
        shutil.copytree(info["Dir"], source, copy_function=shutil.copyfile)
        for folder, _, _ in os.walk(source):  # the module cache's folders are read-only
            os.chmod(folder, 0o755)
        # the module zip lacks this generated file; without it the binary panics at start
        (source / "build" / "version" / "version.txt").write_text(f"{FERRETDB_VERSION}\n")
        built = work / "ferretdb"
        _run_go(
            go,
            ["build", "-trimpath", "-buildvcs=false", "-o", str(built), "./cmd/ferretdb"],
            source,
            f"Building FerretDB {FERRETDB_VERSION}",
        )
        os.replace(built, binary)
    logger.info("built ferretdb %s", kv(binary=binary, seconds=round(time.monotonic() - began, 1)))
    return binary


@dataclass(frozen=True)
class MongoStatus:
    """What is known about the local server: its process and whether clients get answers."""

    pid: int | None
    process_alive: bool
    reachable: bool
    uri: str
    version: str | None  # the MongoDB version the server reports in buildInfo
    ferretdb_version: str | None
    data_dir: Path

    @property
    def running(self) -> bool:
        """Our process runs and answers at ``uri``."""
        return self.process_alive and self.reachable

    def describe(self) -> str:
        if self.running:
            state = "running"
        elif self.process_alive:
            state = "starting/unresponsive"
        elif self.reachable:
            state = "stopped(port-taken-by-another-server)"
        else:
            state = "stopped"
        return kv(
            state=state,
            pid=self.pid or "-",
            uri=self.uri,
            version=self.version or "-",
            ferretdb=self.ferretdb_version or "-",
            data=self.data_dir,
        )


class LocalMongoServer:
    """Start, stop and inspect the project's local FerretDB server (one per runtime folder)."""

    def __init__(self, settings: Settings, bin_dir: Path | None = None) -> None:
        self.settings = settings
        self.bin_dir = bin_dir
        self.home = settings.mongo_dir.absolute()
        self.data_dir = self.home / "data"  # the SQLite files, one per database
        self.state_dir = self.home / "state"  # FerretDB's own state.json
        self.pid_file = self.home / "server.pid"
        self.log_file = self.home / "server.log"
        self.pids_dir = settings.runtime_dir.absolute() / PIDS_DIR
        self.host = "127.0.0.1"
        self.port = settings.mongo_port

    @property
    def uri(self) -> str:
        return f"mongodb://{self.host}:{self.port}/"

    @property
    def pid_match(self) -> str:
        """Text of the server's command line that no other runtime folder's server has."""
        return f"--state-dir={self.state_dir}"

    # -- inspection ---------------------------------------------------------------------------
    def _pid(self) -> int | None:
        return read_pid(self.pid_file)

    @staticmethod
    def _alive(pid: int) -> bool:
        return alive(pid)

    def _ours(self, pid: int | None) -> bool:
        """True if ``pid`` is alive and runs this folder's server."""
        if pid is None or pid <= 0 or not self._alive(pid):
            return False
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                args = cmdline.read().decode(errors="replace").split("\0")
        except OSError:
            return True  # no /proc: trust the pid file
        return self.pid_match in args

    def _port_open(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=1.0):
                return True
        except OSError:
            return False

    def client(self, timeout_ms: int = PING_TIMEOUT_MS) -> MongoClient[dict[str, Any]]:
        """A client of this server that gives up after ``timeout_ms`` (close it after use)."""
        return MongoClient(
            self.uri,
            directConnection=True,
            serverSelectionTimeoutMS=timeout_ms,
            connectTimeoutMS=timeout_ms,
        )

    def build_info(self, timeout_ms: int = PING_TIMEOUT_MS) -> dict[str, Any] | None:
        """The server's ``buildInfo`` if something answers ``ping`` at the URI, else None."""
        if not self._port_open():
            return None
        try:
            with self.client(timeout_ms) as client:
                client.admin.command("ping")
                return dict(client.admin.command("buildInfo"))
        except PyMongoError:
            return None

    def status(self) -> MongoStatus:
        """Look at the pid file and ask the server for its build info."""
        pid = self._pid()
        info = self.build_info()
        return MongoStatus(
            pid=pid,
            process_alive=self._ours(pid),
            reachable=info is not None,
            uri=self.uri,
            version=None if info is None else str(info.get("version", "")) or None,
            ferretdb_version=None if info is None else info.get("ferretdbVersion"),
            data_dir=self.data_dir,
        )

    # -- lifecycle ----------------------------------------------------------------------------
    def command(self, binary: Path) -> list[str]:
        """The server's command line: SQLite under ``data_dir``, no debug HTTP listener (its
        default port would collide between servers), no telemetry."""
        return [
            str(binary),
            "--handler=sqlite",
            f"--sqlite-url={self.data_dir.as_uri()}/",
            f"--listen-addr={self.host}:{self.port}",
            self.pid_match,
            "--debug-addr=-",
            "--telemetry=disable",
            f"--log-level={SERVER_LOG_LEVEL}",
            "--log-format=text",
        ]

    def start(self, timeout: float = START_TIMEOUT_S) -> MongoStatus:
        """Start the server (or reuse this folder's running one) and wait until it answers."""
        current = self.status()
        if current.running:
            logger.info("mongo server already running, reusing it %s", current.describe())
            return current
        if current.process_alive:
            raise MongoError(
                f"A FerretDB process (pid {current.pid}) exists but does not answer at "
                f"{self.uri}. See {self.log_file}; stop it with `iot-lakehouse mongo stop` and "
                "start again."
            )
        if self._port_open():
            raise MongoError(
                f"Port {self.port} on {self.host} is taken by another process, not this "
                f"project's MongoDB server (of {self.home}). Stop that process or set MONGO_PORT "
                "to a free port (to use a MongoDB you run yourself, set SERVING_MONGO_URI)."
            )
        binary = install_ferretdb(self.settings, self.bin_dir)
        for folder in (self.data_dir, self.state_dir):
            folder.mkdir(parents=True, exist_ok=True)
        rotate_if_large(self.log_file, self.settings.log_max_bytes, self.settings.log_backups)
        logger.info(
            "starting mongo server %s", kv(uri=self.uri, data=self.data_dir, log=self.log_file)
        )
        command = self.command(binary)
        with open(self.log_file, "ab") as log:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            log.write(f"--- {stamp} starting: {' '.join(command)}\n".encode())
            log.flush()
            proc = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.pid_file.write_text(str(proc.pid))
        self._record_pid(proc.pid)
        outcome = wait_until_ready(
            proc, lambda: self.build_info(timeout_ms=1000) is not None, timeout, every=0.2
        )
        if outcome == "exited":
            self.pid_file.unlink(missing_ok=True)
            self._drop_pid(proc.pid)
            raise MongoError(
                f"The MongoDB server (FerretDB) exited at start-up (code {proc.returncode}). "
                f"Last lines of {self.log_file}:\n{self._log_tail()}\nIf port {self.port} is "
                "taken, set MONGO_PORT to a free one."
            )
        if outcome == "timed out":
            self.stop()
            raise MongoError(
                f"The MongoDB server (FerretDB) did not answer at {self.uri} within "
                f"{timeout:.0f} s. Last lines of {self.log_file}:\n{self._log_tail()}"
            )
        status = self.status()
        logger.info("mongo server ready %s", status.describe())
        return status

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> bool:
        """Stop the server (SIGTERM, then SIGKILL after ``timeout``). True if it ran."""
        pid = self._pid()
        if not self._ours(pid):
            self.pid_file.unlink(missing_ok=True)
            if pid is not None:
                self._drop_pid(pid)
            return False
        assert pid is not None
        os.kill(pid, signal.SIGTERM)
        # from here on the pid alone: an exiting process's command line reads empty
        deadline = time.monotonic() + timeout
        while self._alive(pid) and time.monotonic() < deadline:
            reap(pid)
            time.sleep(0.1)
        if self._alive(pid):
            logger.warning("mongo server did not stop in time, killing it %s", kv(pid=pid))
            os.kill(pid, signal.SIGKILL)
            while self._alive(pid):
                reap(pid)
                time.sleep(0.1)
        reap(pid)
        self.pid_file.unlink(missing_ok=True)
        self._drop_pid(pid)
        logger.info("mongo server stopped %s", kv(pid=pid))
        return True

    # -- pid records for stop_all.sh ----------------------------------------------------------
    def _record_pid(self, pid: int) -> None:
        if record_pid(self.pids_dir, pid, self.pid_match, PID_ROLE) is None:
            logger.warning("could not record the mongo server's pid %s", kv(pid=pid))

    def _drop_pid(self, pid: int) -> None:
        """Remove the record of ``pid`` if it is this server's (a reused pid's is not)."""
        record = self.pids_dir / f"{pid}.pid"
        try:
            ours = f"match={self.pid_match}\n" in record.read_text()
        except OSError:
            return
        if ours:
            record.unlink(missing_ok=True)

    def _log_tail(self, lines: int = 25) -> str:
        try:
            tail = self.log_file.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return "(no log)"
        return "\n".join(tail) if tail else "(empty log)"
