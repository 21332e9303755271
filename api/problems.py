"""application/problem+json (RFC 9457) for every error, with an `errors` list naming the fields."""

from __future__ import annotations

import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from advisor.errors import SpecError
from advisor.storage.errors import Conflict, DatabaseUnavailable, NotFound, SchemaOutOfDate
from api.schemas import inline_json_schema

PROBLEM_TYPE = "application/problem+json"
log = logging.getLogger("advisor.api")


class FieldProblem(BaseModel):
    field: str  # dotted, e.g. "budget.proxy_seconds", or "body" for the body as a whole
    message: str
    value: Any = None  # the rejected value, cut to ECHO_CHARS


class Problem(BaseModel):
    """Every error answer's body (RFC 9457), sent as application/problem+json."""

    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None
    errors: list[FieldProblem] = []


# What each error status means on this API, for the OpenAPI document: clients (and the schemathesis fuzz
# test, which fails on any status or media type a route does not document) read these.
PROBLEM_MEANINGS = {
    400: "the JSON body does not parse",
    401: "no token, or one that is unknown, revoked or sent under a scheme other than Bearer",
    403: "the token lacks the scope, or does not own what it would change",
    404: "no such study, run or token",
    409: "the Idempotency-Key was used with another body, or the study has already finished",
    413: "the body exceeds the server's size limit",
    422: "a field or parameter does not validate; `errors` names it",
    429: "a rate limit or quota is reached; retry after Retry-After seconds",
    503: "the database is unreachable or its schema out of date; retry after Retry-After seconds",
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for these error statuses, each a Problem as application/problem+json."""
    schema = inline_json_schema(Problem.model_json_schema())
    return {
        status: {"description": PROBLEM_MEANINGS[status], "content": {PROBLEM_TYPE: {"schema": schema}}}
        for status in statuses
    }


# Every /v1 route authenticates (401, 403), is rate limited (429) and reads the database (503).
AUTHENTICATED_PROBLEMS = problem_responses(401, 403, 429, 503)
# A route with a JSON body: it may not parse (400) or be too large (413).
BODY_PROBLEMS = problem_responses(400, 413)


class ApiProblem(Exception):
    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        *,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail = status, title, detail
        self.errors = errors or []
        self.headers = headers or {}


def problem_response(
    status: int,
    title: str,
    detail: str,
    *,
    instance: str | None = None,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    if instance:
        body["instance"] = instance
    if errors:
        body["errors"] = errors
    return JSONResponse(body, status_code=status, media_type=PROBLEM_TYPE, headers=headers)


ECHO_CHARS = 200  # a rejected value is echoed back at most this long: enough to recognise, never a flood


def _json_safe_value(value: Any) -> Any:
    """The rejected value as JSON can carry it: NaN and Infinity (which Python's parser accepts) and objects
    as text, long text cut short."""
    if isinstance(value, bool | int | type(None)) or (isinstance(value, float) and math.isfinite(value)):
        return value
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= ECHO_CHARS else text[:ECHO_CHARS] + "…"


def _validation_errors(exc: RequestValidationError) -> tuple[int, str, list[dict[str, Any]]]:
    errors = []
    malformed = False
    for error in exc.errors():
        location = [
            str(part) for part in error.get("loc", ()) if part not in ("body", "query", "path", "header")
        ]
        bad_json = error.get("type") == "json_invalid"
        malformed = malformed or bad_json
        errors.append(
            {
                "field": "body" if bad_json else ".".join(location) or "body",
                "message": error.get("msg", "invalid"),
                "value": _json_safe_value(error.get("input")),
            }
        )
    if malformed:
        return 400, "malformed JSON: the request body does not parse", errors
    return 422, "the request does not validate", errors


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiProblem)
    async def _api_problem(request: Request, exc: ApiProblem) -> JSONResponse:
        return problem_response(
            exc.status,
            exc.title,
            exc.detail,
            instance=request.url.path,
            errors=exc.errors,
            headers=exc.headers,
        )

    @app.exception_handler(SpecError)
    async def _spec_error(request: Request, exc: SpecError) -> JSONResponse:
        problems = [{**p, "value": _json_safe_value(p["value"])} for p in exc.problems()]
        return problem_response(
            422, "invalid study spec", exc.describe(), instance=request.url.path, errors=problems
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        status, detail, errors = _validation_errors(exc)
        return problem_response(status, "invalid request", detail, instance=request.url.path, errors=errors)

    @app.exception_handler(NotFound)
    async def _not_found(request: Request, exc: NotFound) -> JSONResponse:
        return problem_response(404, "not found", str(exc), instance=request.url.path)

    @app.exception_handler(Conflict)
    async def _conflict(request: Request, exc: Conflict) -> JSONResponse:
        return problem_response(409, "conflict", str(exc), instance=request.url.path)

    # The driver's message names the database host and port, and the schema's its URL: logged here, never
    # sent to a client.
    @app.exception_handler(DatabaseUnavailable)
    async def _unavailable(request: Request, exc: DatabaseUnavailable) -> JSONResponse:
        log.warning("database unavailable on %s: %s", request.url.path, exc)
        detail = "the database is unreachable; retry shortly"
        return problem_response(
            503, "database unavailable", detail, instance=request.url.path, headers={"Retry-After": "5"}
        )

    @app.exception_handler(SchemaOutOfDate)
    async def _schema(request: Request, exc: SchemaOutOfDate) -> JSONResponse:
        log.error("database schema out of date on %s: %s", request.url.path, exc)
        detail = "the database schema is not this version's; an operator must run `advisor db upgrade`"
        return problem_response(503, "database schema out of date", detail, instance=request.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return problem_response(
            exc.status_code,
            "error",
            str(exc.detail),
            instance=request.url.path,
            headers=dict(exc.headers or {}),
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s", request.url.path)
        return problem_response(
            500,
            "internal error",
            "an unexpected error occurred; see the server log",
            instance=request.url.path,
        )
