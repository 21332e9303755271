"""Dashboard routes: three pages (read scope) and their static assets (public: library code, no data).

Auth is the API's: with auth disabled on loopback the pages are open; otherwise a page accepts the
`Authorization: Bearer` header or, because a browser cannot send a header when following a link, a
`?token=` query parameter. The page script moves that token into sessionStorage (gone when the tab
closes), strips it from the address bar, and sends it as a bearer header on its `/v1` fetches; links
between dashboard pages carry it again. Pages answer with `Referrer-Policy: no-referrer` and
`Cache-Control: no-store` so the token leaks neither to other sites nor to caches. Give the dashboard a
read-only token: a query string can end up in proxy logs and browser history.
"""

from __future__ import annotations

import functools
import string
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import HTMLResponse
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from api.dashboard import views
from api.deps import RowId, Service
from api.problems import ApiProblem
from api.security import Principal

router = APIRouter(prefix="/dashboard", include_in_schema=False)

PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    # Scripts only from this origin (the embedded data is JSON, never executed); Plotly sets inline styles.
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'self'; form-action 'none'"
    ),
}

LAYOUT = string.Template(
    """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>$title · lora-advisor</title>
<base href="$base">
<link rel="icon" href="data:,">
<link rel="stylesheet" href="static/dashboard.css">
<script src="static/plotly.min.js" defer></script>
<script src="static/dashboard.js" defer></script>
</head>
<body>
<header><b>lora-advisor</b>
<nav><a data-nav href="./">Studies</a> <a data-nav href="trends">Trends</a></nav></header>
<main>$body</main>
<script type="application/json" id="dashboard-data">$data</script>
</body>
</html>
"""
)


async def dashboard_reader(request: Request) -> Principal:
    """The API's read scope, from the bearer header or else the `token` query parameter."""
    service: Service = request.app.state.service
    header = request.headers.get("authorization")
    token = request.query_params.get("token")
    if not header and token:
        header = f"Bearer {token}"
    principal = service.auth.cached(header)
    if principal is None:
        principal = await run_in_threadpool(service.auth.authenticate, header)
    if not principal.allows("read"):
        raise ApiProblem(403, "forbidden", "the dashboard needs a token with the 'read' scope")
    service.limiter.check(principal.key)
    return principal


DashboardReader = Annotated[Principal, Depends(dashboard_reader)]


def render(request: Request, view: views.View) -> HTMLResponse:
    base = request.scope.get("root_path", "").rstrip("/") + "/dashboard/"
    page = LAYOUT.substitute(
        title=views.esc(view.title), base=views.esc(base), body=view.body, data=views.embed_json(view.data)
    )
    return HTMLResponse(page, headers=PAGE_HEADERS)


async def _page(request: Request, build: Callable[[Session], views.View]) -> HTMLResponse:
    service: Service = request.app.state.service

    def read() -> views.View:
        with service.db.transaction(write=False) as session:
            return build(session)

    return render(request, await run_in_threadpool(read))


@router.get("", response_class=HTMLResponse)
@router.get("/", response_class=HTMLResponse)
async def studies_page(_: DashboardReader, request: Request) -> HTMLResponse:
    return await _page(request, views.study_list)


@router.get("/studies/{study_id}", response_class=HTMLResponse)
async def study_page(study_id: RowId, _: DashboardReader, request: Request) -> HTMLResponse:
    return await _page(request, functools.partial(views.study_page, study_id=study_id))


@router.get("/trends", response_class=HTMLResponse)
async def trends_page(_: DashboardReader, request: Request) -> HTMLResponse:
    return await _page(request, views.trends_page)


# static assets --------------------------------------------------------------------------------------

MEDIA_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}


@functools.cache
def plotly_js_path() -> Path:
    """plotly.js as the `plotly` wheel bundles it, so the dashboard works with no network."""
    import plotly

    return Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


@functools.cache
def asset(name: str) -> bytes:
    if name == "plotly.min.js":
        return plotly_js_path().read_bytes()
    return (resources.files("api.dashboard") / "static" / name).read_bytes()


@router.get("/static/{name}")
def static(name: str) -> Response:
    if name not in ("plotly.min.js", "dashboard.js", "dashboard.css"):
        raise ApiProblem(404, "not found", f"no dashboard asset named {name!r}")
    headers = {"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"}
    return Response(asset(name), media_type=MEDIA_TYPES[Path(name).suffix], headers=headers)
