"""The ASGI application: the JSON API and the web pages over one Platform."""

from __future__ import annotations

import gc
from typing import TYPE_CHECKING

from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from starlette.datastructures import MutableHeaders
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from reelm.accounts.throttle import DeviceCookies
from reelm.api import accounts as accounts_api
from reelm.api import gate, problems, proxies
from reelm.api import intercell as intercell_api
from reelm.api import migrations as migrations_api
from reelm.api import moderation as moderation_api
from reelm.api import openapi as openapi_doc
from reelm.api import search as search_api
from reelm.api import social as social_api
from reelm.api import staff as staff_api
from reelm.api import transparency as transparency_api
from reelm.api import uploads as uploads_api
from reelm.api import videos as videos_api
from reelm.bootstrap import Platform
from reelm.config import Settings
from reelm.web.csrf import load_or_create_secret

if TYPE_CHECKING:
    import uvicorn

# Pages use no inline script or style and load nothing from elsewhere.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}


# A year: browsers that once reached us over HTTPS never try plain HTTP again. Subdomains are
# left out: they may be the operator's other services, not ours to decide for.
STRICT_TRANSPORT_SECURITY = "max-age=31536000"
# What an anonymous visitor sees still depends on them (their market, its 451s and restricted
# videos; the form's CSRF cookie): their browser may keep it, a shared cache must not.
ANONYMOUS_CACHE_CONTROL = "private, no-cache"
# Files that are the same for everyone (StaticFiles sends ETag and Last-Modified for them).
SHARED_PREFIXES = ("/static/",)


class SecurityHeaders:
    """Headers every response gets unless its route set them (plain ASGI: the response's body,
    a video stream included, passes through untouched)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
                if scope.get("state", {}).get("user") is not None:
                    # What a signed-in user sees (captions of private videos, signed media URLs,
                    # their account) stays out of shared caches and off the disk, unless a
                    # route said otherwise (the media routes do).
                    headers.setdefault("Cache-Control", "private, no-store")
                elif not scope["path"].startswith(SHARED_PREFIXES):
                    headers.setdefault("Cache-Control", ANONYMOUS_CACHE_CONTROL)
                if scope.get("scheme") == "https":
                    # Over plain HTTP the header would be ignored (RFC 6797 8.1); the scheme is
                    # the proxy's X-Forwarded-Proto only when forwarded_allow_ips trusts it.
                    headers.setdefault("Strict-Transport-Security", STRICT_TRANSPORT_SECURITY)
                # The interactive API docs page loads its script from a CDN; everything else
                # is ours.
                if not scope["path"].startswith("/api/v1/docs"):
                    headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
            await send(message)

        await self.app(scope, receive, with_headers)


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
    if platform.settings.cell is not None or platform.settings.peers:
        # A cell's identity key exists from its first start (0600), before anything is sent.
        from reelm.intercell.transport import identity_key

        identity_key(platform)
    app.state.devices = DeviceCookies(load_or_create_secret(platform.settings.csrf_key_file()))
    problems.install(app)
    gate.install(app, platform)
    app.add_middleware(gate.BodyLimit, limit=platform.settings.max_body_bytes)
    # A request that met a migration fence runs again once the user has moved.
    app.add_middleware(gate.MovingRetry, limit=platform.settings.max_body_bytes)
    # A Host we do not serve gets 400 before anything reads it (links are built from
    # public_base_url anyway; this keeps forged hosts out of caches and logs).
    app.add_middleware(
        TrustedHostMiddleware, allowed_hosts=platform.settings.allowed_hosts(), www_redirect=False
    )
    # An unexpected error is answered here, keeping the connection open.
    app.add_middleware(problems.ServerErrors)
    # Every answer gets the security headers, a 500 from ServerErrors and a 400 from the Host
    # check included.
    app.add_middleware(SecurityHeaders)
    # Outermost: the forwarded headers (the client's address, the scheme, the country) are
    # believed from the configured proxies only, and every answer names the cell that gave it.
    app.add_middleware(proxies.CellFront, settings=platform.settings)
    app.include_router(accounts_api.router)
    app.include_router(transparency_api.router)
    app.include_router(staff_api.router)
    app.include_router(migrations_api.router)
    app.include_router(uploads_api.router)
    app.include_router(videos_api.router)
    app.include_router(search_api.router)
    app.include_router(social_api.router)
    app.include_router(moderation_api.router)
    app.include_router(videos_api.media)
    app.include_router(intercell_api.router)
    openapi_doc.install(app)

    @app.get("/healthz", tags=["operations"])
    def healthz() -> dict[str, object]:
        """Liveness and the regions this process serves."""
        from sqlalchemy import text

        status = {}
        replica = (
            [("catalog_replica", platform.catalog_replica)]
            if platform.catalog_replica is not platform.catalog
            else []
        )
        for name, db in [("catalog", platform.catalog), *replica] + [
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

    from reelm.web import pages, social_pages, transparency_pages, video_pages

    pages.install(app, platform)
    transparency_pages.install(app, platform, app.state.pages)
    video_pages.install(app, platform, app.state.pages)
    social_pages.install(app, platform, app.state.pages)
    return app


def server_config(app: ASGIApp, settings: Settings, host: str, port: int) -> uvicorn.Config:
    """How `reelm serve` (and the tests' live server) runs uvicorn. X-Forwarded-For and
    X-Forwarded-Proto are believed only from `forwarded_allow_ips`, by the app itself
    (`api.proxies.CellFront`, which also drops the country header from other peers): uvicorn's
    own default trusts them from loopback, where any local process, or a proxy passing them
    through unchecked, could name a fresh client address for every request (a fresh rate
    limit) or claim HTTPS."""
    import uvicorn

    del settings  # the app applies forwarded_allow_ips itself
    return uvicorn.Config(app, host=host, port=port, log_level="warning", proxy_headers=False)


def settle_before_serving() -> None:
    """Call once the app is built, just before the server starts: what exists now (modules,
    the app, the platform) lives as long as the process, so it leaves the garbage collector's
    generations (`gc.freeze`). Otherwise each full collection walks those ~150,000 objects and
    pauses every request for 100-170 ms (measured: docs/performance.md, For You under load)."""
    gc.collect()
    gc.freeze()
