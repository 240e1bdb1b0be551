"""The local MongoDB-protocol server (FerretDB): a real server per test on a free port, its files
under ``tmp_path``; the binary is built once into the project's cache and shared."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from iot_lakehouse.errors import DependencyError, MongoError
from iot_lakehouse.runtime import mongo_server
from iot_lakehouse.runtime.mongo_server import (
    FERRETDB_VERSION,
    LocalMongoServer,
    ferretdb_binary,
    install_ferretdb,
)
from iot_lakehouse.settings import Settings
from tests.conftest import free_port

pytestmark = pytest.mark.integration


@pytest.fixture
def mongo_settings(tmp_path: Path) -> Settings:
    return Settings.from_env({}).with_(runtime_dir=tmp_path / "runtime", mongo_port=free_port())


@pytest.fixture
def server(mongo_settings: Settings, ferretdb_bin_dir: Path) -> Iterator[LocalMongoServer]:
    """A stopped server of the test's own; stopped again after the test, whatever happened."""
    local = LocalMongoServer(mongo_settings, bin_dir=ferretdb_bin_dir)
    try:
        yield local
    finally:
        local.stop()


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


def test_start_serves_upserts_and_finds(server: LocalMongoServer) -> None:
    status = server.start()
    assert status.running and status.pid is not None
    assert status.uri == f"mongodb://127.0.0.1:{server.settings.mongo_port}/"
    assert status.ferretdb_version == FERRETDB_VERSION
    assert status.version and status.version.split(".")[0].isdigit()
    with server.client() as client:
        readings = client["iot_serving"]["latest"]
        readings.replace_one({"_id": "s-1"}, {"_id": "s-1", "temp": 21.5}, upsert=True)
        readings.replace_one({"_id": "s-1"}, {"_id": "s-1", "temp": 22.0}, upsert=True)
        readings.replace_one({"_id": "s-2"}, {"_id": "s-2", "temp": None}, upsert=True)
        found = list(readings.find({}, sort=[("_id", 1)]))
    assert found == [{"_id": "s-1", "temp": 22.0}, {"_id": "s-2", "temp": None}]
    assert list(status.data_dir.glob("*.sqlite")), "no SQLite file under the data folder"
    assert "state=running" in status.describe()


def test_start_twice_reuses_the_running_server(server: LocalMongoServer) -> None:
    first = server.start()
    second = server.start()
    assert second.running and second.pid == first.pid
    assert LocalMongoServer(server.settings).status().pid == first.pid  # seen from a new object


def test_start_records_the_pid_for_stop_all(server: LocalMongoServer) -> None:
    pid = server.start().pid
    record = server.settings.runtime_dir / "pids" / f"{pid}.pid"
    fields = dict(line.split("=", 1) for line in record.read_text().splitlines())
    assert fields["pid"] == str(pid) and fields["role"] == "service"
    # stop_all.sh acts on a record while the process's command line contains its match
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    assert fields["match"] in cmdline and str(server.state_dir) in fields["match"]
    server.stop()
    assert not record.exists()


def test_stop_stops_it_and_closes_the_port(server: LocalMongoServer) -> None:
    pid = server.start().pid
    assert pid is not None
    assert server.stop() is True
    status = server.status()
    assert not status.running and not status.process_alive and not status.reachable
    assert not port_open(server.settings.mongo_port)
    assert not Path(f"/proc/{pid}").exists()
    assert "state=stopped" in status.describe()
    assert server.stop() is False  # nothing left to stop


def test_data_survives_stop_and_start(server: LocalMongoServer) -> None:
    first = server.start().pid
    with server.client() as client:
        client["iot_serving"]["latest"].insert_one({"_id": "s-9", "temp": 19.0})
    server.stop()
    second = server.start().pid
    assert second != first
    with server.client() as client:
        assert client["iot_serving"]["latest"].find_one({"_id": "s-9"}) == {
            "_id": "s-9",
            "temp": 19.0,
        }


def test_refuses_a_port_another_process_listens_on(server: LocalMongoServer) -> None:
    port = server.settings.mongo_port
    with socket.socket() as other:
        other.bind(("127.0.0.1", port))
        other.listen()
        with pytest.raises(MongoError) as refused:
            server.start()
    message = str(refused.value)
    assert f"Port {port}" in message and "MONGO_PORT" in message
    assert not server.pid_file.exists()


def test_a_stale_pid_file_is_not_taken_for_the_server(server: LocalMongoServer) -> None:
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        server.home.mkdir(parents=True)
        server.pid_file.write_text(str(other.pid))  # alive, but not a FerretDB of this folder
        status = server.status()
        assert not status.process_alive and not status.running
        assert server.stop() is False
        assert other.poll() is None, "stop() signalled a process that is not the server"
        assert not server.pid_file.exists()
        assert server.start().running
    finally:
        other.kill()
        other.wait()


def test_install_reuses_the_binary_without_go(
    ferretdb_bin_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    binary = ferretdb_binary(ferretdb_bin_dir)
    before = binary.stat().st_mtime_ns
    monkeypatch.setenv("PATH", str(tmp_path))  # no go on PATH ...
    monkeypatch.setattr(mongo_server, "GO_FALLBACK", tmp_path / "go")  # ... nor off it
    assert install_ferretdb(Settings.from_env({}), ferretdb_bin_dir) == binary
    assert binary.stat().st_mtime_ns == before


def test_install_without_go_says_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(mongo_server, "GO_FALLBACK", tmp_path / "go")
    with pytest.raises(DependencyError, match=r"Go is not installed.*go\.dev"):
        install_ferretdb(Settings.from_env({}), tmp_path / "bin")


def test_a_failed_build_shows_go_output_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # an empty module cache and no proxy: the source download fails at once
    monkeypatch.setenv("GOMODCACHE", str(tmp_path / "modcache"))
    monkeypatch.setenv("GOPROXY", "off")
    monkeypatch.setenv("GOFLAGS", "-mod=mod")
    bin_dir = tmp_path / "bin"
    with pytest.raises(DependencyError) as failed:
        install_ferretdb(Settings.from_env({}), bin_dir)
    message = str(failed.value)
    assert "GOPROXY=off" in message  # go's own words
    assert "GOPROXY" in message.split("\n")[-1]  # and what to do
    assert list(bin_dir.iterdir()) == []  # no binary, no build folder
