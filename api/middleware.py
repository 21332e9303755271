"""Pure ASGI middleware (no BaseHTTPMiddleware: it costs a task per request): request-size limits and
Prometheus request metrics."""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import parse_qsl

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.problems import PROBLEM_TYPE

# Metric labels come from fixed sets, so that no request can add a series: a made-up method (any token is a
# valid HTTP method) once grew /metrics by two series per request. Routes are templates (or "unmatched").
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def method_label(method: str) -> str:
    return method if method in KNOWN_METHODS else "other"


class _TooLarge(Exception):
    pass


class ServiceMiddleware:
    def __init__(
        self, app: ASGIApp, *, registry: CollectorRegistry, max_body: int, max_upload: int, upload_path: str
    ) -> None:
        self.app, self.max_body, self.max_upload, self.upload_path = app, max_body, max_upload, upload_path
        self.requests = Counter(
            "advisor_http_requests", "HTTP requests", ["method", "route", "status"], registry=registry
        )
        self.latency = Histogram(
            "advisor_http_request_seconds",
            "HTTP request latency",
            ["route"],
            registry=registry,
            buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 2.0),
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        nul = _nul_parameter(scope)
        if nul is not None:
            detail = f"{nul} holds a NUL character (\\x00), which no parameter can mean"
            await _problem(send, 422, "invalid request", detail, scope["path"], field=nul)
            return
        limit = self.max_upload if scope["path"] == self.upload_path else self.max_body
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._too_large(send, limit, scope["path"])
            return
        started, status, seen = time.perf_counter(), 500, 0
        response_started = exceeded = False

        async def counted_receive() -> Message:
            nonlocal seen, exceeded
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:  # chunked bodies declare no length: count what arrives
                exceeded = True
                raise _TooLarge
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal status, response_started
            if exceeded and not response_started:
                # The app answered a body cut short: FastAPI turns any error while reading a body into a
                # 400 ("error parsing the body"). Its answer is dropped; the 413 below is the true one.
                return
            if message["type"] == "http.response.start":
                status, response_started = message["status"], True
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except Exception:
            if not exceeded or response_started:
                raise  # a real error: ServerErrorMiddleware, outside this one, logs it and answers 500
        finally:
            if exceeded and not response_started:
                status = 413
            route = getattr(scope.get("route"), "path", "unmatched")
            self.requests.labels(method_label(scope["method"]), route, str(status)).inc()
            self.latency.labels(route).observe(time.perf_counter() - started)
        if exceeded and not response_started:
            await self._too_large(send, limit, scope["path"])

    @staticmethod
    async def _too_large(send: Send, limit: int, path: str) -> None:
        detail = f"the request body exceeds the limit of {limit} bytes"
        await _problem(send, 413, "request too large", detail, path, close=True)


def _nul_parameter(scope: Scope) -> str | None:
    """The query parameter or header whose name or value holds a NUL character, if any. PostgreSQL cannot
    compare or store such text, and no route means one; checked here once for every route, present and
    future. (Bodies are checked by their models, which can name the field.)"""
    query: bytes = scope.get("query_string", b"")
    if b"%00" in query or b"\x00" in query:  # parsed only then: this runs on every request, the hot GET too
        for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
            if "\x00" in name or "\x00" in value:
                return name.replace("\x00", "\\x00")
    for name, value in scope.get("headers") or []:
        if b"\x00" in value:
            return f"header {name.decode('latin-1')}"
    return None


async def _problem(
    send: Send,
    status: int,
    title: str,
    detail: str,
    path: str,
    *,
    field: str | None = None,
    close: bool = False,
) -> None:
    """A problem+json response sent from the middleware, before any route runs."""
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
        "instance": path,
    }
    if field is not None:
        body["errors"] = [{"field": field, "message": detail, "value": None}]
    payload = json.dumps(body).encode()
    headers = [(b"content-type", PROBLEM_TYPE.encode()), (b"content-length", str(len(payload)).encode())]
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": headers + ([(b"connection", b"close")] if close else []),
        }
    )
    await send({"type": "http.response.body", "body": payload})
