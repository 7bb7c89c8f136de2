"""Pages of the transparency logs: the public report per region, and a user's own events."""

from __future__ import annotations

import uuid

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from reelm.accounts.errors import NotFound
from reelm.bootstrap import Platform
from reelm.transparency.report import region_report
from reelm.transparency.views import events_about, pending_about
from reelm.web.pages import Pages


def install(app: FastAPI, platform: Platform, pages: Pages) -> None:
    @app.get("/transparency", response_class=HTMLResponse, include_in_schema=False)
    def index(request: Request) -> Response:
        reports = [region_report(c.log) for c in platform.cells.values()]
        return pages.render(request, "transparency_index.html", reports=reports)

    @app.get("/transparency/migrations", response_class=HTMLResponse, include_in_schema=False)
    def migrations(request: Request) -> Response:
        from reelm.migration.engine import overview

        rows = overview(platform)
        running = any(r["state"] == "running" for r in rows)
        return pages.render(request, "transparency_migrations.html", rows=rows, running=running)

    @app.get("/transparency/migrations/{migration_id}/report.json", include_in_schema=False)
    def migration_report(migration_id: uuid.UUID) -> Response:
        from reelm.migration.engine import stored_report

        return JSONResponse(
            stored_report(platform, migration_id),
            headers={
                "Content-Disposition": f'attachment; filename="migration-{migration_id}.json"'
            },
        )

    @app.get("/transparency/{region}", response_class=HTMLResponse, include_in_schema=False)
    def report(request: Request, region: str) -> Response:
        if region not in platform.cells:
            raise NotFound(f"no region {region[:20]!r}")
        found = region_report(platform.cell(region).log)
        return pages.render(
            request,
            "transparency_report.html",
            report=found,
            label=platform.settings.regions[region].label,
        )

    @app.get("/settings/transparency", response_class=HTMLResponse, include_in_schema=False)
    def mine(request: Request) -> Response:
        user = getattr(request.state, "user", None)
        if user is None:
            return RedirectResponse("/login?next=/settings/transparency", status_code=303)
        events = events_about(platform, user.user_id)
        return pages.render(
            request,
            "my_transparency.html",
            events=events,
            pending=pending_about(platform, user.user_id),
        )
