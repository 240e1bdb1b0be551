"""The generator's control API, over real HTTP against a real ``generate`` process and broker.

One generator process serves the whole module (``generator`` fixture); each test puts it in the
state it needs (pause and resume are idempotent) and leaves it running at ``RATE``. The last
process test stops it with SIGTERM. A few pure parts (checkpoint reading, clean planning, the
controller, the virtual clock) are tested in-process first.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from iot_lakehouse.runtime.kafka_broker import LocalKafkaBroker
from iot_lakehouse.runtime.kafka_offsets import kafka_watermarks
from iot_lakehouse.settings import PROJECT_ROOT, Settings
from iot_lakehouse.sources.generator import ANOMALY_PLAN
from tests.conftest import free_port, job_env
from tests.support.kafka_cleanup import write_bronze_checkpoint

RATE = 50.0  # events/s while no test changes it
ERROR_KEYS = {"error", "detail", "hint"}
# No proxy for 127.0.0.1, whatever the environment says.
HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# --- the real process ------------------------------------------------------------------------
@dataclass
class Generator:
    """A running ``iot-lakehouse generate`` with its control API."""

    proc: subprocess.Popen[bytes]
    port: int
    settings: Settings
    truth: Path
    log: Path

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], Any]:
        """(status, headers, parsed JSON body) of one request; errors are answers too.
        ``headers`` replace the default ``Content-Type: application/json`` (``{}``: none)."""
        data = raw if raw is not None else None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"} if headers is None else headers,
        )
        try:
            with HTTP.open(request, timeout=30) as response:
                return response.status, dict(response.headers), json.loads(response.read())
        except urllib.error.HTTPError as err:
            return err.code, dict(err.headers), json.loads(err.read())

    def ok(self, method: str, path: str, body: Any = None) -> Any:
        status, _, answer = self.call(method, path, body)
        assert status == 200, (method, path, status, answer)
        return answer

    def status(self) -> dict[str, Any]:
        answer: dict[str, Any] = self.ok("GET", "/status")
        return answer

    def marks(self) -> dict[int, tuple[int, int]]:
        marks = kafka_watermarks(self.settings)
        assert marks is not None
        return marks

    def wait_for(self, what: Callable[[], bool], timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while not what():
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            assert time.monotonic() < deadline, f"timed out; log:\n{self.log.read_text()[-3000:]}"
            time.sleep(0.1)


def start_generator(settings: Settings, port: int, truth: Path, log: Path) -> Generator:
    cmd = [
        *(sys.executable, "-m", "iot_lakehouse", "generate"),
        *("--rate", str(RATE), "--sensors", "20", "--format", "wide", "--seed", "11"),
        *("--anomalies", "--ground-truth", str(truth), "--api-port", str(port)),
    ]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, env=job_env(settings), cwd=PROJECT_ROOT, stdout=out, stderr=subprocess.STDOUT
        )
    return Generator(proc, port, settings, truth, log)


def api_is_up(gen: Generator) -> bool:
    try:
        return gen.call("GET", "/health")[0] == 200
    except (urllib.error.URLError, ConnectionError):
        return False


@pytest.fixture(scope="module")
def generator(
    kafka_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Generator]:
    tmp = tmp_path_factory.mktemp("generator_api")
    topic = f"api-{uuid.uuid4().hex[:8]}"
    settings = kafka_settings.with_(
        kafka_topic=topic,
        kafka_alerts_topic=f"{topic}-alerts",
        lakehouse_path=str(tmp / "lakehouse"),
        dlq_path=str(tmp / "dlq"),
    )
    LocalKafkaBroker(settings).create_topics()
    gen = start_generator(settings, free_port(), tmp / "truth.jsonl", tmp / "generate.log")
    try:
        gen.wait_for(lambda: api_is_up(gen), timeout=60)
        yield gen
    finally:
        if gen.proc.poll() is None:
            gen.proc.kill()
        gen.proc.wait(timeout=30)


def test_health_and_openapi_list_every_endpoint(generator: Generator) -> None:
    assert generator.ok("GET", "/health") == {"status": "ok", "state": "running"}
    spec = generator.ok("GET", "/openapi.json")
    expected = {
        "/health": "get",
        "/status": "get",
        "/manifest": "get",
        "/pause": "post",
        "/resume": "post",
        "/rate": "put",
        "/clean": "post",
    }
    assert {path: next(iter(ops)) for path, ops in spec["paths"].items()} == expected
    for path, method in expected.items():
        operation = spec["paths"][path][method]
        assert operation["summary"], path
        assert "$ref" in json.dumps(operation["responses"]["200"]), path  # a response model
    assert "ErrorBody" in spec["components"]["schemas"]
    assert "409" in spec["paths"]["/clean"]["post"]["responses"]


def test_status_reports_counters_config_and_sent_grows(generator: Generator) -> None:
    first = generator.status()
    assert set(first) == {
        *("state", "uptime_s", "sent", "delivered", "delivery_errors", "queued", "rate"),
        *("measured_rate", "batches", "topic", "config", "manifest"),
    }
    assert (first["state"], first["rate"], first["topic"]) == (
        "running",
        RATE,
        generator.settings.kafka_topic,
    )
    assert first["config"]["sensors"] == 20 and first["config"]["rate"] == RATE
    assert first["config"]["ground_truth"] == str(generator.truth)
    time.sleep(1.0)
    second = generator.status()
    assert second["sent"] > first["sent"] and second["batches"] > first["batches"]
    assert second["uptime_s"] > first["uptime_s"]
    assert second["delivered"] > 0 and second["delivery_errors"] == 0


def test_status_links_the_manifest_and_the_link_serves_it(generator: Generator) -> None:
    link = generator.status()["manifest"]
    assert link["url"] == "/manifest"
    path = Path(link["path"])
    assert path.parent == generator.settings.runtime_dir / "generator" / "manifests"
    before = json.loads(path.read_text())
    served = generator.ok("GET", link["url"])
    after = json.loads(path.read_text())
    assert served in (before, after)  # the file itself (it is rewritten every 5 s)
    assert path.name == f"{served['run_id']}.json" and served["state"] == "running"
    config = served["config"]
    assert (config["seed"], config["sensors"], config["format"]) == (11, 20, "wide")
    assert config["anomalies"] and served["ground_truth"] == str(generator.truth)
    assert config["start_time"] == served["event_time"]["start"]  # resolved: rerunnable
    # rewritten while it runs: the counts catch up with what /status says was sent
    generator.wait_for(lambda: generator.ok("GET", "/manifest")["counts"]["sent"] > 0, timeout=15)
    counts = generator.ok("GET", "/manifest")["counts"]
    assert 0 < counts["sent"] <= generator.status()["sent"]
    assert sum(counts["by_kind"].values()) == counts["sent"] == counts["by_format"]["wide"]


def test_pause_stops_sending_and_resume_sends_again(generator: Generator) -> None:
    generator.ok("POST", "/resume")
    paused = generator.ok("POST", "/pause")
    assert (paused["state"], paused["previous"], paused["changed"]) == ("paused", "running", True)
    at_pause = generator.status()
    time.sleep(2.0)
    later = generator.status()
    assert later["state"] == "paused"
    assert later["sent"] == at_pause["sent"] == paused["sent"]
    assert later["delivered"] == later["sent"] and later["queued"] == 0
    marks = generator.marks()
    assert sum(high - low for low, high in marks.values()) == later["sent"]  # Kafka agrees
    again = generator.ok("POST", "/pause")
    assert (again["state"], again["changed"]) == ("paused", False)

    resumed = generator.ok("POST", "/resume")
    assert (resumed["state"], resumed["previous"], resumed["changed"]) == (
        "running",
        "paused",
        True,
    )
    generator.wait_for(lambda: generator.status()["sent"] > later["sent"] + 10, timeout=5)


def test_rate_change_shows_in_status_and_in_the_measured_rate(generator: Generator) -> None:
    generator.ok("POST", "/resume")
    answer = generator.ok("PUT", "/rate", {"events_per_second": 250})
    assert answer == {"rate": 250.0, "previous": RATE}
    time.sleep(0.5)
    before, t0 = generator.status(), time.monotonic()
    time.sleep(2.0)
    after, t1 = generator.status(), time.monotonic()
    assert after["rate"] == 250.0
    sent_per_s = (after["sent"] - before["sent"]) / (t1 - t0)
    assert 150 <= sent_per_s <= 300, sent_per_s
    # the last 5 s: half at 50/s, half at 250/s
    assert 2 * RATE < after["measured_rate"] <= 300, after["measured_rate"]
    assert generator.ok("PUT", "/rate", {"events_per_second": RATE})["rate"] == RATE


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b'{"events_per_second": 0}', "events_per_second"),
        (b'{"events_per_second": -5}', "events_per_second"),
        (b'{"events_per_second": "fast"}', "events_per_second"),
        (b'{"events_per_second": null}', "events_per_second"),
        (b'{"events_per_second": 5000000}', "events_per_second"),
        (b"{}", "events_per_second"),
        (b'{"rate": 500}', "events_per_second"),
        (b"not json", "body"),
        (b"", "body"),
    ],
)
def test_bad_rate_is_rejected_naming_the_field_and_range(
    generator: Generator, raw: bytes, field: str
) -> None:
    status, _, answer = generator.call("PUT", "/rate", raw=raw)
    assert status == 422, answer
    assert set(answer) == ERROR_KEYS
    assert field in [f["field"] for f in answer["detail"]["fields"]], answer
    assert field in answer["error"]
    assert "events_per_second" in answer["hint"]
    if field == "events_per_second":
        assert "above 0 and at most 1,000,000" in answer["hint"], answer
    assert generator.status()["rate"] == RATE  # unchanged


def test_wrong_method_and_unknown_path_are_json_errors(generator: Generator) -> None:
    for method, path, allowed in [
        ("POST", "/status", "GET"),
        ("GET", "/pause", "POST"),
        ("GET", "/rate", "PUT"),
        ("DELETE", "/clean", "POST"),
    ]:
        status, headers, answer = generator.call(method, path)
        assert status == 405, (method, path, answer)
        assert set(answer) == ERROR_KEYS
        assert allowed in answer["detail"]["allowed"] and method not in answer["detail"]["allowed"]
        assert allowed in answer["error"] and f"{allowed} {path}" in answer["hint"]
        assert allowed in headers["allow"]
    status, _, answer = generator.call("GET", "/nope")
    assert status == 404 and set(answer) == ERROR_KEYS
    assert "/nope" in answer["error"] and "/docs" in answer["hint"]
    assert "POST /clean" in answer["detail"]["endpoints"]


def test_clean_while_running_is_refused(generator: Generator) -> None:
    generator.ok("POST", "/resume")
    status, _, answer = generator.call("POST", "/clean")
    assert status == 409 and set(answer) == ERROR_KEYS
    assert "paused" in answer["error"] and "POST /pause" in answer["hint"]
    assert answer["detail"] == {"state": "running"}
    assert all(low == 0 for low, _ in generator.marks().values())


def test_clean_without_a_bronze_checkpoint_is_refused(generator: Generator) -> None:
    shutil.rmtree(generator.settings.checkpoint_path("bronze"), ignore_errors=True)
    generator.ok("POST", "/pause")
    status, _, answer = generator.call("POST", "/clean")
    assert status == 409 and set(answer) == ERROR_KEYS, answer
    marks = generator.marks()
    assert answer["detail"]["not_ingested"] == sum(high for _, high in marks.values()) > 0
    assert "has not run" in answer["detail"]["bronze"]["note"]
    assert "force=true" in answer["hint"] and "wait for bronze" in answer["hint"]
    assert all(low == 0 for low, _ in marks.values())  # nothing deleted
    generator.ok("POST", "/resume")


def test_clean_deletes_up_to_the_high_watermarks_once_bronze_has_them(
    generator: Generator,
) -> None:
    generator.ok("POST", "/pause")
    marks = generator.marks()
    highs = {p: high for p, (_, high) in marks.items()}
    assert all(high > 0 for high in highs.values())
    # bronze has committed batch 0 (nothing), batch 1 with everything is still in flight
    shutil.rmtree(generator.settings.checkpoint_path("bronze"), ignore_errors=True)
    write_bronze_checkpoint(generator.settings, dict.fromkeys(highs, 0), batch=0)
    write_bronze_checkpoint(generator.settings, highs, committed=False, batch=1)
    status, _, answer = generator.call("POST", "/clean")
    assert status == 409, answer
    assert answer["detail"]["bronze"]["batch_id"] == 0

    write_bronze_checkpoint(generator.settings, highs, batch=1)  # batch 1 committed
    answer = generator.ok("POST", "/clean")
    assert answer["forced"] is False and answer["bronze"]["batch_id"] == 1
    assert {p["partition"]: (p["from_offset"], p["to_offset"]) for p in answer["partitions"]} == {
        p: (low, high) for p, (low, high) in marks.items()
    }
    assert answer["records"] == sum(high - low for low, high in marks.values())
    assert all(p["not_ingested_by_bronze"] == 0 for p in answer["partitions"])
    assert answer["ground_truth_deleted"] == str(generator.truth)
    assert not generator.truth.exists()
    assert {p: low for p, (low, _) in generator.marks().items()} == highs  # Kafka moved
    after = generator.status()
    assert (after["state"], after["sent"], after["delivered"], after["batches"]) == (
        "paused",
        0,
        0,
        0,
    )

    generator.ok("POST", "/resume")
    generator.wait_for(lambda: generator.status()["sent"] > 0)
    generator.wait_for(generator.truth.exists)  # the current episode is written again
    assert len(generator.truth.read_text().splitlines()) == len(ANOMALY_PLAN)


def test_force_clean_deletes_what_bronze_has_not_ingested(generator: Generator) -> None:
    generator.ok("POST", "/resume")
    generator.wait_for(lambda: generator.status()["sent"] > 20)
    generator.ok("POST", "/pause")
    marks = generator.marks()
    behind = {p: low for p, (low, _) in marks.items()}  # bronze read up to the old low marks
    shutil.rmtree(generator.settings.checkpoint_path("bronze"), ignore_errors=True)
    write_bronze_checkpoint(generator.settings, behind, batch=4)
    status, _, answer = generator.call("POST", "/clean")
    assert status == 409, answer
    partitions = {p["partition"]: p for p in answer["detail"]["partitions"]}
    for p, (low, high) in marks.items():
        assert partitions[p]["bronze_offset"] == low
        assert partitions[p]["not_ingested"] == high - low

    answer = generator.ok("POST", "/clean?force=true")
    assert answer["forced"] is True
    assert answer["records"] == sum(p["not_ingested_by_bronze"] for p in answer["partitions"]) > 0
    assert {p: low for p, (low, _) in generator.marks().items()} == {
        p: high for p, (_, high) in marks.items()
    }
    status, _, answer = generator.call("POST", "/clean?force=maybe")
    assert status == 422 and answer["detail"]["fields"][0]["field"] == "force"
    generator.ok("POST", "/resume")


def assert_refused(
    answer: tuple[int, dict[str, str], Any], status: int, error: str, hint: str
) -> dict[str, Any]:
    """A refusal: ``status``, the error shape, ``error`` and ``hint`` in their fields."""
    code, _, body = answer
    assert code == status, body
    assert set(body) == ERROR_KEYS, body
    assert error in body["error"] and hint in body["hint"], body
    return dict(body["detail"])


def test_cross_origin_requests_are_refused_and_change_nothing(generator: Generator) -> None:
    own = f"http://127.0.0.1:{generator.port}"
    origins = (
        "http://evil.example",
        f"http://evil.example:{generator.port}",
        "http://localhost:3000",  # another local web app
        f"https://127.0.0.1:{generator.port}",
        "null",  # a sandboxed frame or a file:// page
    )

    def headers(origin: str) -> dict[str, str]:
        return {"Origin": origin, "X-IoT-Lakehouse": "1", "Content-Type": "application/json"}

    generator.ok("POST", "/resume")
    for origin in origins:
        for method, path, body in [
            ("POST", "/pause", None),
            ("PUT", "/rate", {"events_per_second": 7}),
        ]:
            answer = generator.call(method, path, body, headers=headers(origin))
            assert assert_refused(answer, 403, "origin", own)["origin"] == origin
    status = generator.status()
    assert (status["state"], status["rate"]) == ("running", RATE)

    generator.ok("POST", "/pause")  # clean would delete now: everything bronze has not read
    shutil.rmtree(generator.settings.checkpoint_path("bronze"), ignore_errors=True)
    marks = generator.marks()
    assert any(high > low for low, high in marks.values())
    for origin in origins:
        answer = generator.call("POST", "/clean?force=true", headers=headers(origin))
        assert_refused(answer, 403, "origin", own)
        answer = generator.call("POST", "/resume", headers=headers(origin))
        assert_refused(answer, 403, "origin", own)
    assert generator.marks() == marks  # nothing deleted
    assert generator.status()["state"] == "paused"
    generator.ok("POST", "/resume")


def test_a_foreign_host_header_is_refused(generator: Generator) -> None:
    """DNS rebinding: a page of evil.example whose name now resolves to 127.0.0.1."""
    generator.ok("POST", "/resume")
    own = f"127.0.0.1:{generator.port}"
    for host in (
        "evil.example",
        f"evil.example:{generator.port}",
        f"localhost.evil.example:{generator.port}",
        f"127.0.0.1:{generator.port + 1}",  # not the port it serves
    ):
        answer = generator.call("GET", "/status", headers={"Host": host})
        assert assert_refused(answer, 403, "Host", own)["host"] == host
        headers = {"Host": host, "X-IoT-Lakehouse": "1"}
        assert_refused(generator.call("POST", "/pause", headers=headers), 403, "Host", own)
    assert generator.status()["state"] == "running"


def test_a_bare_post_is_refused(generator: Generator) -> None:
    """What a plain HTML form or a no-cors ``fetch`` can send without a CORS preflight: no
    custom header, no JSON."""
    generator.ok("POST", "/resume")
    hint = "X-IoT-Lakehouse: 1"
    assert_refused(generator.call("POST", "/pause", headers={}), 403, "X-IoT-Lakehouse", hint)
    assert_refused(generator.call("POST", "/clean", headers={}), 403, "X-IoT-Lakehouse", hint)
    for content_type in (
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ):
        headers = {"Content-Type": content_type}
        answer = generator.call("POST", "/pause", raw=b"a=1", headers=headers)
        assert assert_refused(answer, 415, content_type, hint)["content_type"] == content_type
        raw = b'{"events_per_second": 7}'
        answer = generator.call("PUT", "/rate", raw=raw, headers=headers)
        assert_refused(answer, 415, content_type, "application/json")
    status = generator.status()
    assert (status["state"], status["rate"]) == ("running", RATE)


def test_the_legitimate_calls_still_work(generator: Generator) -> None:
    port = generator.port
    assert generator.call("POST", "/pause", headers={"X-IoT-Lakehouse": "1"})[0] == 200  # curl
    assert generator.status()["state"] == "paused"
    assert generator.call("POST", "/resume")[0] == 200  # Content-Type: application/json
    assert generator.status()["state"] == "running"
    for host in (f"localhost:{port}", f"127.0.0.1:{port}"):
        headers = {
            "Host": host,
            "Origin": f"http://{host}",  # the API's own /docs page
            "X-IoT-Lakehouse": "1",
            "Content-Type": "application/json",
        }
        for method, path, body in [
            ("POST", "/pause", None),
            ("POST", "/resume", None),
            ("PUT", "/rate", {"events_per_second": RATE}),
            ("GET", "/status", None),
        ]:
            code, _, answer = generator.call(method, path, body, headers=headers)
            assert code == 200, (host, method, path, answer)
    assert generator.status()["state"] == "running"


def test_sigterm_stops_generator_and_api_with_exit_0(generator: Generator) -> None:
    """Last: stops the module's generator (while paused, the harder case)."""
    generator.ok("POST", "/pause")
    generator.proc.send_signal(signal.SIGTERM)
    assert generator.proc.wait(timeout=30) == 0, generator.log.read_text()[-3000:]
    with (
        pytest.raises(ConnectionRefusedError),
        socket.create_connection(("127.0.0.1", generator.port), timeout=2),
    ):
        pass
    log = generator.log.read_text()
    assert "generator api stopped" in log and "reason=stop_requested" in log
    # its manifest is final, and says where a rerun stops being byte for byte the same
    manifest_file = generator.settings.runtime_dir / "generator" / "manifests"
    run_id = re.search(r"run_id=(\S+)", log)
    assert run_id is not None, log[-3000:]
    manifest = json.loads((manifest_file / f"{run_id.group(1)}.json").read_text())
    assert (manifest["state"], manifest["reason"]) == ("finished", "stop_requested")
    assert manifest["counts"]["delivered"] == manifest["counts"]["sent"] > 0
    assert manifest["clock_changes"], "the run paused and changed its rate: the clock moved"
    assert 0 < manifest["reproducible_events"] < manifest["counts"]["sent"]


def test_port_in_use_is_a_clear_error(kafka_settings: Settings, tmp_path: Path) -> None:
    settings = kafka_settings.with_(kafka_topic=f"api-{uuid.uuid4().hex[:8]}")
    LocalKafkaBroker(settings).create_topics()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = subprocess.run(
            [sys.executable, "-m", "iot_lakehouse", "generate", "--count", "100"],
            env=job_env(settings, GENERATOR_API_PORT=str(port)),
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert run.returncode == 2, run.stdout[-2000:]
    assert f"127.0.0.1:{port}" in run.stderr and "in use" in run.stderr
    assert "GENERATOR_API_PORT" in run.stderr and "--api-port" in run.stderr
    marks = kafka_watermarks(settings)
    assert marks is not None and all(high == 0 for _, high in marks.values())  # sent nothing
