"""The generator's control API, over real HTTP against a real ``generate`` process and broker.

One generator process serves the whole module (``generator`` fixture); each test puts it in the
state it needs (pause and resume are idempotent) and leaves it running at ``RATE``. The last
process test stops it with SIGTERM. A few pure parts (checkpoint reading, clean planning, the
controller, the virtual clock) are tested in-process first.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from iot_lakehouse.sources.generator import (
    MAX_RATE,
    EventGenerator,
    GeneratorConfig,
    GeneratorController,
)
from iot_lakehouse.sources.generator_api import own_hostnames, refusal


@pytest.mark.parametrize(
    ("method", "headers", "status"),
    [
        ("GET", {"host": "127.0.0.1:18000"}, None),
        ("GET", {"host": "[::1]:18000", "origin": "http://[::1]:18000"}, None),
        ("GET", {"host": "LocalHost:18000"}, None),
        ("GET", {"host": "api.lan:18000"}, None),  # GENERATOR_API_HOST
        ("GET", {"host": "10.0.0.5:18000"}, None),  # the address the connection arrived at
        ("POST", {"host": "localhost:18000", "x-iot-lakehouse": "1"}, None),
        ("POST", {"host": "localhost:18000", "content-type": "application/json"}, None),
        ("PUT", {"host": "localhost:18000", "content-type": "application/merge-patch+json"}, None),
        ("GET", {}, 403),  # HTTP/1.0 without Host
        ("GET", {"host": "0.0.0.0:18000"}, 403),  # a wildcard is no address of its own
        ("GET", {"host": "127.0.0.1:18000@evil.example"}, 403),
        ("GET", {"host": "127.0.0.1:18000/x"}, 403),
        ("GET", {"host": "127.0.0.1"}, 403),  # port 80
        ("GET", {"host": "localhost:18000", "origin": "http://localhost:18000/x"}, 403),
        ("POST", {"host": "localhost:18000"}, 403),
        ("DELETE", {"host": "localhost:18000"}, 403),
        ("POST", {"host": "localhost:18000", "content-type": "text/plain"}, 415),
        (
            "POST",
            {"host": "localhost:18000", "x-iot-lakehouse": "1", "content-type": "text/plain"},
            415,
        ),
    ],
)
def test_refusal_accepts_only_the_apis_own_address_and_non_simple_writes(
    method: str, headers: dict[str, str], status: int | None
) -> None:
    names = own_hostnames("api.lan", "10.0.0.5")
    refused = refusal(method, "/pause", headers, names, 18000)
    assert (refused and refused.status) == status, refused
    assert own_hostnames("0.0.0.0", None) == {"localhost", "127.0.0.1", "::1"}
    assert own_hostnames("::", "::1") == {"localhost", "127.0.0.1", "::1"}


def test_controller_pause_resume_rate_and_counters() -> None:
    control = GeneratorController(GeneratorConfig(rate=100.0))
    assert (control.state, control.rate) == ("running", 100.0)
    assert control.pause() == "running" and control.pause() == "paused"
    assert not control.wait_idle(0.05)  # no loop has acknowledged the pause
    control.idle(0)
    assert control.wait_idle(0.05)
    assert control.resume() == "paused" and control.state == "running"
    assert control.set_rate(500.0) == 100.0 and control.rate == 500.0
    for bad in (0.0, -1.0, float("nan"), float("inf"), MAX_RATE * 2):
        with pytest.raises(Exception, match="rate"):
            control.set_rate(bad)
    control.update(sent=40, delivered=30, failed=1, queued=9, chunk=40)
    status = control.status()
    assert (status.sent, status.delivered, status.delivery_errors, status.batches) == (
        40,
        30,
        1,
        1,
    )
    assert status.measured_rate > 0
    control.reset_counters()
    control.update(sent=50, delivered=45, failed=1, queued=4, chunk=10)
    status = control.status()
    assert (status.sent, status.delivered, status.delivery_errors, status.batches) == (10, 15, 0, 1)
    control.finish()
    assert control.state == "stopped" and control.resume() == "stopped"


def test_retime_keeps_earlier_events_and_continues_the_event_clock() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    plain = EventGenerator(GeneratorConfig(rate=10.0, start_time=start))
    timed = EventGenerator(GeneratorConfig(rate=10.0, start_time=start))
    before = [timed.generate_event(i) for i in range(1500)]
    timed.retime(1000, 100.0)  # from event 1000 on: 100 events/s
    assert [timed.generate_event(i) for i in range(1000)] == before[:1000]
    assert timed.nominal_time(1000) == start + timedelta(seconds=100)
    assert timed.nominal_time(1100) == start + timedelta(seconds=101)
    assert timed.generate_event(1200) != plain.generate_event(1200)  # new timestamps
    timed.retime(1100, 100.0, skip_s=60.0)  # a one-minute pause before event 1100
    assert timed.nominal_time(1100) == start + timedelta(seconds=161)
    assert timed.nominal_time(1099) == start + timedelta(seconds=100.99)
