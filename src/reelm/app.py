"""The ASGI application: the JSON API and the web pages over one Platform."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import HTMLResponse

from reelm.api import accounts as accounts_api
from reelm.api import gate, problems
from reelm.bootstrap import Platform


def create_app(platform: Platform) -> FastAPI:
    app = FastAPI(
        title="reelm API",
        version="1",
        description="Short videos, with each user's private data kept in their home region.",
        openapi_url="/api/v1/openapi.json",
        docs_url="/api/v1/docs",
        redoc_url=None,
    )
    app.state.platform = platform
    problems.install(app)
    gate.install(app, platform)
    app.add_middleware(gate.BodyLimit, limit=platform.settings.max_body_bytes)
    app.include_router(accounts_api.router)

    @app.get("/healthz", tags=["operations"])
    def healthz() -> dict[str, object]:
        """Liveness and the regions this process serves."""
        from sqlalchemy import text

        status = {}
        for name, db in [("catalog", platform.catalog)] + [
            (r, c.db) for r, c in platform.cells.items()
        ]:
            with db.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            status[name] = "ok"
        return {"status": "ok", "databases": status}

    @app.get("/problems/{slug}", response_class=HTMLResponse, include_in_schema=False)
    def problem_type(slug: str) -> HTMLResponse:
        status_code, title = problems.PROBLEM_TYPES.get(slug, (404, "Unknown problem type"))
        return HTMLResponse(
            f"<!doctype html><title>{title}</title><h1>{title}</h1>"
            f"<p>HTTP {status_code}. See the <code>detail</code> member of the response.</p>",
            status_code=200 if slug in problems.PROBLEM_TYPES else 404,
        )

    from reelm.web import pages

    pages.install(app, platform)
    return app
