"""What runs before every route: body size limit, who is signed in, and the market gate.

The market gate answers HTTP 451 (RFC 7725) on every page and endpoint for a blocked market:
a signed-in user's market comes from their account; an anonymous visitor's from the header the
operator's edge sets, or (demo only) from the market picker cookie.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response
from starlette.concurrency import run_in_threadpool

from reelm.accounts.errors import NotAuthenticated
from reelm.accounts.service import CurrentUser, authenticate
from reelm.api.problems import problem
from reelm.bootstrap import Platform
from reelm.regions.policy import MarketBlocked, is_country

SESSION_COOKIE = "reelm_session"
MARKET_COOKIE = "reelm_market"
# Operators' health checks and the assets of the 451 page itself stay reachable.
UNGATED_PREFIXES = ("/healthz", "/static/", "/problems/")


def session_token(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip() or None
    return request.cookies.get(SESSION_COOKIE) or None


def visitor_market(platform: Platform, request: Request, user: CurrentUser | None) -> str | None:
    if user is not None:
        return user.market
    edge = request.headers.get(platform.settings.country_header, "").strip().upper()
    if is_country(edge):
        return edge
    if platform.settings.market_picker:
        picked = request.cookies.get(MARKET_COOKIE, "").strip().upper()
        if is_country(picked):
            return picked
    return None


def install(app: FastAPI, platform: Platform) -> None:
    limit = platform.settings.max_body_bytes

    @app.middleware("http")
    async def gate(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            return problem("body-too-large", f"request bodies are limited to {limit} bytes")
        user: CurrentUser | None = None
        token = session_token(request)
        if token:
            try:
                user = await run_in_threadpool(authenticate, platform, token)
            except NotAuthenticated:
                user = None
        request.state.user = user
        request.state.market = visitor_market(platform, request, user)
        if request.state.market and not request.url.path.startswith(UNGATED_PREFIXES):
            try:
                platform.policy.check_open(request.state.market)
            except MarketBlocked as exc:
                request.state.blocked = exc
                raise_451 = getattr(app.state, "blocked_response", None)
                if raise_451 is not None:
                    return raise_451(request, exc)  # type: ignore[no-any-return]
        return await call_next(request)


class _BodyTooLarge(Exception):
    pass


class BodyLimit:
    """Counts body bytes as they arrive, so a chunked upload without Content-Length is capped
    too. Streaming upload routes (later) raise their own, larger limit."""

    def __init__(self, app: Callable[..., Awaitable[None]], limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:  # type: ignore[type-arg]
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        seen = 0
        started = False

        async def counting_receive() -> dict:  # type: ignore[type-arg]
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise _BodyTooLarge
            return message  # type: ignore[no-any-return]

        async def tracking_send(message: dict) -> None:  # type: ignore[type-arg]
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _BodyTooLarge:
            if started:
                raise
            response = problem(
                "body-too-large", f"request bodies are limited to {self.limit} bytes"
            )
            await response(scope, receive, send)
