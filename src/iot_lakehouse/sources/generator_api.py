"""The generator's control API (FastAPI): health, status, manifest, pause, resume, rate, clean.

``create_app(controller, settings)`` builds the app around a :class:`GeneratorController`; the
handlers only talk to the controller, to Kafka and to the bronze checkpoint, so the same app
runs in the ``generate`` process and in tests. :func:`control_api` serves it with uvicorn in a
background thread of ``iot-lakehouse generate`` on GENERATOR_API_HOST:GENERATOR_API_PORT
(127.0.0.1:18000); the generator keeps the main thread, and with it SIGTERM and Ctrl-C.

Only its own callers: every request must name the API's own address in ``Host`` (a loopback
name or GENERATOR_API_HOST, and the port it serves), so a web page whose name is rebound to
127.0.0.1 (DNS rebinding) is refused; a browser's ``Origin``, when sent, must be the API's own
(its ``/docs``); and a state-changing call (POST, PUT…) must carry a JSON body
(``Content-Type: application/json``) or the header ``X-IoT-Lakehouse: 1``, which no page of
another site can send without a CORS preflight that this API never grants. So
``curl -X POST -H 'X-IoT-Lakehouse: 1' localhost:18000/pause``.

Every error is one JSON shape: ``{"error": "...", "detail": {...}, "hint": "..."}``.
OpenAPI: ``/openapi.json``; interactive docs: ``/docs``.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Literal
from urllib.parse import urlsplit

import uvicorn
from confluent_kafka import KafkaException
from fastapi import FastAPI, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.base import RequestResponseEndpoint

from iot_lakehouse.errors import ConfigError
from iot_lakehouse.logs import kv
from iot_lakehouse.runtime.kafka_cleanup import (
    delete_records,
    plan_clean,
    read_bronze_progress,
)
from iot_lakehouse.settings import Settings
from iot_lakehouse.sources.generator import (
    MAX_RATE,
    GeneratorConfig,
    GeneratorController,
    GeneratorState,
)

logger = logging.getLogger(__name__)

IDLE_TIMEOUT_S = 5.0
"""How long clean waits for the paused generator's last messages to be acknowledged."""
PAUSE_SETTLE_S = 2.0
"""How long pause waits for the loop to stop, so the ``sent`` it returns is final."""
STARTUP_TIMEOUT_S = 10.0

# What each request field accepts: the hint of a 422.
FIELD_RULES = {
    "events_per_second": f"a number above 0 and at most {MAX_RATE:,.0f}",
    "force": "true or false",
    "body": 'a JSON object, e.g. {"events_per_second": 500}',
}


# --- response and request models -----------------------------------------------------------
class ErrorBody(BaseModel):
    """The body of every error response."""

    error: str = Field(description="what went wrong, in one line")
    detail: dict[str, Any] = Field(description="the facts behind it (fields, state, offsets…)")
    hint: str = Field(description="what to do about it")


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    state: GeneratorState


class ManifestLink(BaseModel):
    path: str = Field(description="the run's manifest file on the generator's machine")
    url: str = Field(description="where this API serves it: GET /manifest")


class Manifest(BaseModel):
    """The run's manifest, the file as written (``RunManifest.to_json`` in generator.py)."""

    model_config = ConfigDict(extra="allow")

    manifest_version: int
    run_id: str
    state: str = Field(description="running, finished or failed")
    config: dict[str, Any] = Field(description="the configuration, start time resolved")
    counts: dict[str, Any] = Field(description="sent, delivered, by_format, by_kind…")


class Status(BaseModel):
    state: GeneratorState
    uptime_s: float = Field(description="seconds since the generator started")
    sent: int = Field(description="messages queued to Kafka (since the start or the last clean)")
    delivered: int = Field(description="messages the broker acknowledged")
    delivery_errors: int = Field(description="messages the broker did not take")
    queued: int = Field(description="messages still waiting for delivery")
    rate: float = Field(description="target events/s (set with PUT /rate)")
    measured_rate: float = Field(description="events/s actually sent over the last 5 s")
    batches: int = Field(description="chunks produced (the unit of pacing)")
    topic: str
    config: dict[str, Any] = Field(description="the generator's start configuration")
    manifest: ManifestLink | None = Field(description="the run's manifest; null: not written yet")


class StateChange(BaseModel):
    state: GeneratorState
    previous: GeneratorState
    changed: bool = Field(description="false when it already was in that state")
    sent: int


class RateRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"events_per_second": 500}]}
    )

    events_per_second: float = Field(
        gt=0, le=MAX_RATE, allow_inf_nan=False, description="the new target rate"
    )


class RateChange(BaseModel):
    rate: float
    previous: float


class PartitionCleaned(BaseModel):
    partition: int
    from_offset: int = Field(description="first offset deleted (the old low watermark)")
    to_offset: int = Field(description="first offset kept: the new low watermark")
    records: int = Field(description="records deleted: to_offset - from_offset")
    not_ingested_by_bronze: int = Field(description="of those, records bronze never ingested")


class BronzeInfo(BaseModel):
    checkpoint: str
    batch_id: int | None = Field(description="newest committed micro-batch; null: none")
    offsets: dict[int, int] = Field(description="next offset bronze reads, per partition")
    note: str | None = Field(description="why bronze's progress is unknown, if it is")


class CleanResult(BaseModel):
    topic: str
    forced: bool
    records: int = Field(description="records deleted in all partitions")
    partitions: list[PartitionCleaned]
    ground_truth_deleted: str | None = Field(description="the ground-truth file deleted, if any")
    bronze: BronzeInfo
    counters_reset: bool = True


# --- errors --------------------------------------------------------------------------------
class ApiError(Exception):
    """An error response: HTTP status and the ErrorBody fields."""

    def __init__(
        self,
        status: int,
        error: str,
        hint: str,
        detail: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(error)
        self.status, self.error, self.hint = status, error, hint
        self.detail, self.headers = detail or {}, headers


def _error_response(exc: ApiError) -> JSONResponse:
    body = ErrorBody(error=exc.error, detail=jsonable_encoder(exc.detail), hint=exc.hint)
    return JSONResponse(body.model_dump(), status_code=exc.status, headers=exc.headers)


def _message(error: dict[str, Any]) -> str:
    reason = (error.get("ctx") or {}).get("error")
    return f"{error['msg']}: {reason}" if error.get("type") == "json_invalid" else str(error["msg"])


def _field_name(loc: tuple[Any, ...]) -> str:
    rest = [str(part) for part in loc[1:] if not isinstance(part, int)]
    return ".".join(rest) if rest else str(loc[0])


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    403: {
        "model": ErrorBody,
        "description": "not addressed to this API's own address (Host, Origin), or a POST "
        "without the header X-IoT-Lakehouse and without a JSON body",
    },
    415: {"model": ErrorBody, "description": "a body that is not application/json"},
    422: {"model": ErrorBody, "description": "a field has a value out of its range or type"},
}


def _responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    descriptions = {
        409: "not possible in the generator's current state (see hint)",
        503: "Kafka did not answer",
    }
    out: dict[int | str, dict[str, Any]] = {
        code: {"model": ErrorBody, "description": descriptions[code]} for code in codes
    }
    return {**out, **ERROR_RESPONSES}


# --- who may call ---------------------------------------------------------------------------
CALLER_HEADER = "X-IoT-Lakehouse"
"""The header (any value) of a state-changing call without a JSON body. A page of another
site cannot send a custom header (nor a JSON Content-Type) without a CORS preflight, and this
API answers no preflight."""
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# /docs' "Try it out" sends the header of a body-less call (its default).
CALLER_PARAMETER: dict[str, Any] = {
    "parameters": [
        {
            "name": CALLER_HEADER,
            "in": "header",
            "required": True,
            "schema": {"type": "string", "default": "1"},
            "description": "any value: proves the call is not a cross-site request "
            "(or send Content-Type: application/json)",
        }
    ]
}


def own_hostnames(configured: str, local_address: str | None) -> frozenset[str]:
    """The names the API answers to: the loopback names, GENERATOR_API_HOST (unless it is a
    wildcard such as 0.0.0.0) and the address the connection arrived at."""
    names = {configured.strip("[]").lower(), (local_address or "").lower()}
    return LOOPBACK_NAMES | (names - WILDCARD_HOSTS)


def _host_and_port(authority: str, default_port: int = 80) -> tuple[str, int] | None:
    """``host[:port]`` (IPv6 in brackets) as (lower-case host, port); None if it is not
    exactly that."""
    try:
        parts = urlsplit(f"//{authority}")
        port = parts.port or default_port
    except ValueError:
        return None
    if not parts.hostname or parts.netloc != authority or parts.username is not None:
        return None
    return parts.hostname.lower(), port


def _media_type(content_type: str) -> str:
    return content_type.split(";")[0].strip().lower()


def _is_json(content_type: str) -> bool:
    media = _media_type(content_type)
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def refusal(
    method: str, path: str, headers: Mapping[str, str], names: frozenset[str], port: int
) -> ApiError | None:
    """Why the API refuses a request with these (lower-case) ``headers``, arriving on ``port``
    and addressed to one of ``names``; None: it does not. See the module docstring."""
    own = f"http://127.0.0.1:{port}"
    how_to_call = (
        f"send the header '{CALLER_HEADER}: 1' (curl -X {method} -H '{CALLER_HEADER}: 1' "
        f"{own}{path}) or a JSON body with Content-Type: application/json"
    )
    host = headers.get("host")
    if host is None or _host_and_port(host) not in {(name, port) for name in names}:
        return ApiError(
            403,
            f"refused: the Host header {host!r} is not this API's address",
            f"call it as {own} (or localhost:{port}); it answers only to its own address, so "
            "a web page of another site cannot reach it by rebinding its name to this machine",
            {"host": host, "allowed": sorted(f"{name}:{port}" for name in names)},
        )
    origin = headers.get("origin")
    if origin is not None:
        parts = urlsplit(origin)
        authority = _host_and_port(parts.netloc) if parts.scheme == "http" else None
        if parts.path or authority not in {(name, port) for name in names}:
            return ApiError(
                403,
                f"refused: a request from the web page origin {origin!r}, not this API's own",
                f"only the API's own pages ({own}/docs) may call it from a browser; call it "
                "from a script or curl (they send no Origin)",
                {"origin": origin},
            )
    if method in SAFE_METHODS:
        return None
    content_type = headers.get("content-type")
    if content_type is not None and not _is_json(content_type):
        return ApiError(
            415,
            f"refused: Content-Type {content_type!r}; a {method} takes application/json or no body",
            how_to_call,
            {"content_type": content_type, "method": method},
        )
    if content_type is None and CALLER_HEADER.lower() not in headers:
        return ApiError(
            403,
            f"refused: a {method} without a JSON body needs the header {CALLER_HEADER}",
            how_to_call + "; a web page of another site can send neither",
            {"method": method, "header": CALLER_HEADER},
        )
    return None


# --- the app -------------------------------------------------------------------------------
def create_app(controller: GeneratorController, settings: Settings) -> FastAPI:
    """The control API of one generator (its controller) writing to Kafka per ``settings``."""
    config = controller.config
    topic = config.topic or settings.kafka_topic
    app = FastAPI(
        title="iot-lakehouse generator control API",
        version="1.0",
        description="Watch and steer the running sensor data generator. Every error is "
        '`{"error": "...", "detail": {...}, "hint": "..."}`. Requests must be addressed to '
        "this API's own address (Host, and Origin when a browser sends one); POST and PUT "
        f"need `Content-Type: application/json` or the header `{CALLER_HEADER}: 1`.",
    )

    @app.middleware("http")
    async def only_own_callers(request: Request, call_next: RequestResponseEndpoint) -> Response:
        local_address, port = request.scope.get("server") or (None, 0)
        names = own_hostnames(settings.generator_api_host, local_address)
        refused = refusal(request.method, request.url.path, request.headers, names, port)
        if refused is None:
            return await call_next(request)
        logger.warning(
            "generator api refused %s",
            kv(
                method=request.method,
                path=request.url.path,
                status=refused.status,
                host=request.headers.get("host"),
                origin=request.headers.get("origin"),
            ),
        )
        return _error_response(refused)

    def endpoints() -> list[str]:
        return [
            f"{method} {route.path}"
            for route in app.routes
            if isinstance(route, APIRoute)
            for method in sorted(route.methods or ())
        ]

    def allowed_methods(path: str) -> list[str]:
        methods: set[str] = set()
        for route in app.routes:
            regex = getattr(route, "path_regex", None)
            if regex is not None and regex.match(path):
                methods |= set(getattr(route, "methods", None) or ())
        return sorted(methods)

    @app.exception_handler(ApiError)
    async def on_api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return _error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        method, path = request.method, request.url.path
        if exc.status_code == 405:
            allowed = allowed_methods(path)
            error = ApiError(
                405,
                f"{method} is not allowed on {path}; allowed: {', '.join(allowed)}",
                f"use {' or '.join(f'{m} {path}' for m in allowed if m != 'HEAD')} (see /docs)",
                {"method": method, "path": path, "allowed": allowed},
                {"Allow": ", ".join(allowed)},
            )
        elif exc.status_code == 404:
            error = ApiError(
                404,
                f"no endpoint {path}",
                "see /docs or /openapi.json for the endpoints",
                {"method": method, "path": path, "endpoints": endpoints()},
            )
        else:
            error = ApiError(exc.status_code, str(exc.detail), "see /docs", {"path": path})
        return _error_response(error)

    @app.exception_handler(RequestValidationError)
    async def on_invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        fields = [
            {
                "field": _field_name(tuple(e["loc"])),
                "in": e["loc"][0],
                "message": _message(e),
                "input": e.get("input"),
            }
            for e in exc.errors()
        ]
        names = list(dict.fromkeys(f["field"] for f in fields))
        rules = [f"{name}: {FIELD_RULES[name]}" for name in names if name in FIELD_RULES]
        unknown = [name for name in names if name not in FIELD_RULES]
        if unknown:
            rules.append(f"not a field here: {', '.join(unknown)}")
        error = ApiError(
            422,
            f"invalid {', '.join(names)}: {fields[0]['message']}",
            "; ".join(rules) + " (see /docs)",
            {"fields": fields},
        )
        return _error_response(error)

    @app.exception_handler(Exception)
    async def on_crash(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("generator api error %s", kv(path=request.url.path))
        error = ApiError(
            500,
            f"internal error: {exc}",
            "see the generator's log; the generator itself keeps running",
            {"type": type(exc).__name__, "path": request.url.path},
        )
        return _error_response(error)

    @app.get("/health", summary="Liveness: the API answers", response_model=Health)
    def health() -> Health:
        return Health(state=controller.state)

    @app.get(
        "/status",
        summary="State, counters, target and measured rate, configuration",
        response_model=Status,
    )
    def status() -> Status:
        snapshot = controller.status()
        path = controller.manifest
        return Status(
            **dataclasses.asdict(snapshot)
            | {
                "uptime_s": round(snapshot.uptime_s, 3),
                "measured_rate": round(snapshot.measured_rate, 1),
            },
            topic=topic,
            config=jsonable_encoder(dataclasses.asdict(config)),
            manifest=None if path is None else ManifestLink(path=str(path), url="/manifest"),
        )

    @app.get(
        "/manifest",
        summary="The run's manifest: configuration, seed, event times, counts (the file)",
        response_model=Manifest,
        responses={404: {"model": ErrorBody, "description": "no manifest written yet"}},
    )
    def manifest() -> Response:
        path = controller.manifest
        try:
            if path is None:
                raise FileNotFoundError
            body = path.read_bytes()
        except OSError as exc:
            raise ApiError(
                404,
                "the generator has no manifest file (yet)" if path is None else f"{exc}",
                "it is written when the run starts: try again in a second; /status names it",
                {"path": None if path is None else str(path)},
            ) from None
        return Response(body, media_type="application/json")

    def stopped_error(action: str) -> ApiError:
        return ApiError(
            409,
            f"cannot {action}: the generator has stopped",
            "start it again: iot-lakehouse generate …",
            {"state": "stopped"},
        )

    @app.post(
        "/pause",
        summary="Stop producing (within a second); counters and Kafka data stay",
        response_model=StateChange,
        responses=_responses(409),
        openapi_extra=CALLER_PARAMETER,
    )
    def pause() -> StateChange:
        with controller.operation:
            previous = controller.pause()
            if previous == "stopped":
                raise stopped_error("pause")
            controller.wait_idle(PAUSE_SETTLE_S)
        sent = controller.status().sent
        changed = previous == "running"
        return StateChange(state="paused", previous=previous, changed=changed, sent=sent)

    @app.post(
        "/resume",
        summary="Produce again after a pause",
        response_model=StateChange,
        responses=_responses(409),
        openapi_extra=CALLER_PARAMETER,
    )
    def resume() -> StateChange:
        with controller.operation:
            previous = controller.resume()
        if previous == "stopped":
            raise stopped_error("resume")
        sent = controller.status().sent
        changed = previous == "paused"
        return StateChange(state="running", previous=previous, changed=changed, sent=sent)

    @app.put(
        "/rate",
        summary=f"Change the target rate (events/s, above 0, at most {MAX_RATE:,.0f})",
        response_model=RateChange,
        responses=_responses(),
    )
    def set_rate(body: RateRequest) -> RateChange:
        previous = controller.set_rate(body.events_per_second)
        return RateChange(rate=body.events_per_second, previous=previous)

    @app.post(
        "/clean",
        summary="Delete what the generator wrote to Kafka (only while paused)",
        description="Kafka DeleteRecords on every partition of the topic, up to its high "
        "watermark, and the ground-truth file; then the counters start from zero. Refused "
        "(409) while the bronze job has not ingested all of it, unless `force=true`.",
        response_model=CleanResult,
        responses=_responses(409, 503),
        openapi_extra=CALLER_PARAMETER,
    )
    def clean(
        force: bool = Query(
            False, description="delete even what bronze has not ingested yet (it is lost)"
        ),
    ) -> CleanResult:
        with controller.operation:
            return _clean(controller, settings, topic, force)

    return app


def _clean(
    controller: GeneratorController, settings: Settings, topic: str, force: bool
) -> CleanResult:
    state = controller.state
    if state != "paused":
        raise ApiError(
            409,
            f"clean needs the generator paused; it is {state}",
            "POST /pause first, then POST /clean (and POST /resume to go on)",
            {"state": state},
        )
    if not controller.wait_idle(IDLE_TIMEOUT_S):
        queued = controller.status().queued
        raise ApiError(
            409,
            f"the generator is paused but {queued} messages still wait for delivery",
            "try again in a few seconds; if it stays, check the broker (iot-lakehouse kafka "
            "status)",
            {"state": controller.state, "queued": queued},
        )
    from iot_lakehouse.runtime.kafka_offsets import kafka_watermarks

    marks = kafka_watermarks(settings, topic)
    if marks is None:
        raise ApiError(
            503,
            f"Kafka did not answer (or has no topic {topic})",
            f"check the broker at {settings.kafka_bootstrap_servers} (iot-lakehouse kafka "
            "status), then try again",
            {"bootstrap": settings.kafka_bootstrap_servers, "topic": topic},
        )
    progress = read_bronze_progress(settings.checkpoint_path("bronze"), topic)
    plans = plan_clean(marks, progress)
    bronze = BronzeInfo(
        checkpoint=progress.checkpoint,
        batch_id=progress.batch_id,
        offsets=progress.offsets,
        note=progress.note,
    )
    not_ingested = sum(p.not_ingested for p in plans)
    if not_ingested and not force:
        raise ApiError(
            409,
            f"bronze has not ingested {not_ingested} of the records clean would delete",
            "wait for bronze to catch up (iot-lakehouse run bronze) and POST /clean again, or "
            "POST /clean?force=true to delete them anyway: bronze will never see them, and a "
            "bronze job with a checkpoint then stops on the missing offsets. To go past them, "
            "start bronze once with KAFKA_FAIL_ON_DATA_LOSS=false, then without it (left "
            "false, bronze skips any later loss too); `iot-lakehouse reconcile` counts the "
            "deleted records as never_read",
            {
                "topic": topic,
                "not_ingested": not_ingested,
                "bronze": bronze.model_dump(),
                "partitions": [
                    {
                        "partition": p.partition,
                        "low_watermark": p.low,
                        "high_watermark": p.high,
                        "bronze_offset": p.bronze_offset,
                        "not_ingested": p.not_ingested,
                    }
                    for p in plans
                ],
            },
        )
    try:
        lows = delete_records(settings, topic, {p.partition: p.high for p in plans if p.records})
    except KafkaException as exc:
        raise ApiError(
            503,
            f"Kafka refused to delete records: {exc}",
            "check the broker (iot-lakehouse kafka status) and the topic's cleanup.policy "
            "(DeleteRecords needs 'delete'), then try again",
            {"topic": topic},
        ) from exc
    truth = controller.restart_ground_truth()
    controller.reset_counters()
    deleted = [
        PartitionCleaned(
            partition=p.partition,
            from_offset=p.low,
            to_offset=lows.get(p.partition, p.high),
            records=lows.get(p.partition, p.high) - p.low if p.records else 0,
            not_ingested_by_bronze=p.not_ingested,
        )
        for p in plans
    ]
    records = sum(p.records for p in deleted)
    logger.info(
        "generator cleaned %s",
        kv(topic=topic, records=records, not_ingested=not_ingested, forced=force, truth=truth),
    )
    return CleanResult(
        topic=topic,
        forced=force,
        records=records,
        partitions=deleted,
        ground_truth_deleted=truth,
        bronze=bronze,
    )


# --- serving -------------------------------------------------------------------------------
def bind_api_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port``; ConfigError naming the port when it is taken."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise ConfigError(f"GENERATOR_API_HOST={host!r} is not a usable address: {exc}") from None
    sock = socket.socket(family, kind, proto)
    try:
        if os.name == "posix":  # on Windows it would let two processes share the port
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(64)
    except OSError as exc:
        sock.close()
        why = "is in use (another generator?)" if exc.errno == errno.EADDRINUSE else str(exc)
        raise ConfigError(
            f"the generator control API cannot listen on {host}:{port}: the port {why}; "
            "choose another port with --api-port or GENERATOR_API_PORT, or 0 for no API"
        ) from None
    return sock


class ApiServer:
    """The control API served by uvicorn in a daemon thread, on an already bound socket."""

    def __init__(self, app: FastAPI, sock: socket.socket) -> None:
        self.sock = sock
        config = uvicorn.Config(
            app, log_config=None, access_log=False, lifespan="off", timeout_graceful_shutdown=2
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [sock]}, name="generator-api", daemon=True
        )

    def start(self) -> None:
        """Serve; return once it answers (ConfigError if it does not start)."""
        self.thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise ConfigError("the generator control API did not start; see the log above")
            time.sleep(0.02)

    def stop(self) -> None:
        """Stop serving and close the port."""
        self.server.should_exit = True
        if self.thread.is_alive():
            self.thread.join(timeout=5)
        self.sock.close()


@contextmanager
def control_api(
    config: GeneratorConfig, settings: Settings, port: int | None = None
) -> Iterator[GeneratorController]:
    """A controller for ``config``, served on GENERATOR_API_HOST:``port`` (default
    GENERATOR_API_PORT; 0: not served) while the block runs."""
    controller = GeneratorController(config)
    port = settings.generator_api_port if port is None else port
    if port == 0:
        yield controller
        return
    host = settings.generator_api_host
    server = ApiServer(create_app(controller, settings), bind_api_socket(host, port))
    # uvicorn's own start/stop lines repeat what the line below says
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
    server.start()
    url = f"http://{host}:{port}"
    logger.info("generator api listening %s", kv(url=url, docs=f"{url}/docs"))
    try:
        yield controller
    finally:
        server.stop()
        logger.info("generator api stopped %s", kv(url=url))
