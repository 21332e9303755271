"""/docs (Swagger UI) and /redoc (ReDoc) that work without the internet.

FastAPI's own pages load their scripts and styles from a CDN, so on a machine without internet access (the
only kind many teams' GPU hosts are) they render blank. The `fastapi-offline` package ships the same assets;
they are served here from the installed package under /docs-assets, and the pages point at them. No Google
fonts either: ReDoc falls back to the system's.
"""

from __future__ import annotations

import importlib.resources

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS_PATH = "/docs-assets"


def install_offline_docs(app: FastAPI) -> None:
    """Mount the packaged assets and serve /docs and /redoc from them (create the app with docs_url=None
    and redoc_url=None, so FastAPI's CDN pages are not registered)."""
    assets = importlib.resources.files("fastapi_offline") / "static"
    app.mount(ASSETS_PATH, StaticFiles(directory=str(assets)), name="docs-assets")
    openapi_url = app.openapi_url or "/openapi.json"
    favicon = f"{ASSETS_PATH}/favicon.png"

    @app.get("/docs", include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{app.title}: API",
            swagger_js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_PATH}/swagger-ui.css",
            swagger_favicon_url=favicon,
        )

    @app.get("/redoc", include_in_schema=False)
    def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=openapi_url,
            title=f"{app.title}: API",
            redoc_js_url=f"{ASSETS_PATH}/redoc.standalone.js",
            redoc_favicon_url=favicon,
            with_google_fonts=False,
        )
