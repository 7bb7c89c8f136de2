"""What runs before every route: body size limit, who is signed in, and the market gate.

The market gate answers HTTP 451 (RFC 7725) on every page and endpoint for a blocked market:
a signed-in user's market comes from their account; an anonymous visitor's from the header the
operator's edge sets, or (demo only) from the market picker cookie.
"""

from __future__ import annotations

import asyncio

from fastapi import FastAPI, Request, Response
from fastapi.responses import RedirectResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.body_limit import RequestBodyLimitMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from reelm.accounts.errors import NotAuthenticated
from reelm.accounts.service import CurrentUser, authenticate
from reelm.api.problems import (
    HOME_CELL_HEADER,
    MOVING_HEADER,
    blocked_response,
    other_cell_answer,
    problem,
    wants_html,
)
from reelm.bootstrap import Platform
from reelm.numbers import natural_or_none
from reelm.regions.cell import NotInThisCell
from reelm.regions.policy import MarketBlocked, is_country
from reelm.web.csrf import Csrf, load_or_create_secret, request_binding

SESSION_COOKIE = "reelm_session"
MARKET_COOKIE = "reelm_market"
# Operators' health checks and the assets of the 451 page itself stay reachable.
# Cells talk to each other under /cell/: no market, no session (reelm.api.intercell).
UNGATED_PREFIXES = ("/healthz", "/static/", "/problems/", "/cell/")
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
# tus PATCH requests stream video bytes to disk: they have their own limit (the upload's
# declared length, itself capped by max_upload_bytes) and their own content type.
STREAMING_PREFIX = "/api/v1/uploads/"


def streams_body(method: str, path: str) -> bool:
    return method == "PATCH" and path.startswith(STREAMING_PREFIX)


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


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_HEADER = "X-CSRF-Token"


def cookie_write_without_token(request: Request, csrf: Csrf) -> bool:
    """An API write authenticated by the session cookie (the web pages' scripts) must carry
    the page's CSRF token in a header: a cross-site page can make the browser send the cookie
    but can neither read the token nor set the header without CORS, which reelm never grants.
    Bearer-token clients are not exposed (no browser attaches the token on its own). The token
    is bound to the session the request carries (web/csrf.py)."""
    if request.method in SAFE_METHODS or not request.url.path.startswith("/api/"):
        return False
    if request.headers.get("authorization", "").lower().startswith("bearer "):
        return False
    if not request.cookies.get(SESSION_COOKIE):
        return False
    return not csrf.valid(request_binding(request), request.headers.get(CSRF_HEADER))


def home_cell_answer(platform: Platform, request: Request, exc: NotInThisCell) -> Response:
    """A page asked for with another region's session is redirected to that region's cell
    (``peers.<region>.base_url``; 307 keeps the method). The API, a write, or a region whose
    cell this one does not know get 421 naming the region, for the client or the edge to send
    the request there."""
    peer = platform.settings.peers.get(exc.region)
    url = request.url
    if peer is not None and request.method in ("GET", "HEAD") and not url.path.startswith("/api/"):
        # The path always begins with '/': the redirect cannot leave the peer's host.
        target = peer.base_url + url.path + (f"?{url.query}" if url.query else "")
        return RedirectResponse(target, status_code=307, headers={HOME_CELL_HEADER: exc.region})
    return other_cell_answer(request, exc)


def install(app: FastAPI, platform: Platform) -> None:
    app.add_middleware(Gate, platform=platform, owner=app)


class Gate:
    """Plain ASGI (a `BaseHTTPMiddleware` cost every request a task group and a stream for the
    response body): checks the request and either answers it (413, 403, 451, 415, a suspended
    account's refusal) or passes it on with `request.state.user` and `request.state.market`
    set."""

    def __init__(self, app: ASGIApp, platform: Platform, owner: FastAPI) -> None:
        self.app, self.platform, self.owner = app, platform, owner
        self.limit = platform.settings.max_body_bytes
        self.csrf = Csrf(load_or_create_secret(platform.settings.csrf_key_file()))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        answer = await self.check(Request(scope, receive))
        if answer is not None:
            await answer(scope, receive, send)
            return
        await self.app(scope, receive, send)

    async def check(self, request: Request) -> Response | None:
        """The answer to give instead of the route's, if any."""
        platform, app = self.platform, self.owner
        length = request.headers.get("content-length")
        most = (
            platform.settings.max_upload_bytes
            if streams_body(request.method, request.url.path)
            else self.limit
        )
        declared = natural_or_none(length)
        if length is not None and declared is None:
            return problem("invalid-input", "Content-Length must be digits 0-9", status=400)
        if declared is not None and declared > most:
            return problem("body-too-large", f"request bodies are limited to {most} bytes")
        user: CurrentUser | None = None
        token = session_token(request)
        # Static assets need no session: spare them two database round trips.
        if token and not request.url.path.startswith("/static/"):
            try:
                user = await run_in_threadpool(authenticate, platform, token)
            except NotAuthenticated:
                user = None
            except NotInThisCell as exc:
                # Another region's session (SessionElsewhere): its cell serves this request,
                # not this one, which has read and decrypted nothing of it.
                return home_cell_answer(platform, request, exc)
        request.state.user = user
        if user is not None and cookie_write_without_token(request, self.csrf):
            return problem("csrf-failed", f"send the page's CSRF token in the {CSRF_HEADER} header")
        if user is not None and request.method in WRITES and not _always_allowed(request):
            from reelm.social.moderation import is_suspended

            if await run_in_threadpool(is_suspended, platform, user.user_id):
                response = problem(
                    "account-suspended",
                    "your account is suspended: you can log out or delete it, nothing else",
                )
                render = getattr(app.state, "html_error", None)
                if render is not None and wants_html(request):
                    return render(request, response)  # type: ignore[no-any-return]
                return response
        request.state.market = visitor_market(platform, request, user)
        if request.state.market and not _ungated(platform, request, user):
            try:
                platform.policy.check_open(request.state.market)
            except MarketBlocked as exc:
                request.state.blocked = exc
                raise_451 = getattr(app.state, "blocked_response", None)
                if raise_451 is not None:
                    return raise_451(request, exc)  # type: ignore[no-any-return]
                return blocked_response(exc)
        if not json_body_acceptable(request):
            return problem("unsupported-media-type", "send the request body as application/json")
        return None


WRITES = ("POST", "PUT", "PATCH", "DELETE")
# What a suspended account may still do: leave, and delete itself (and log in elsewhere).
SUSPENDED_MAY = ("/logout", "/login", "/api/v1/session", "/settings/delete")


def _always_allowed(request: Request) -> bool:
    path = request.url.path
    if path == "/api/v1/me":
        return request.method == "DELETE"
    return path.startswith(SUSPENDED_MAY)


def _ungated(platform: Platform, request: Request, user: CurrentUser | None) -> bool:
    if request.url.path.startswith(UNGATED_PREFIXES):
        return True
    # In the demo, a visitor who picked a blocked market must be able to pick again.
    return (
        platform.settings.market_picker
        and user is None
        and request.url.path == "/market"
        and not is_country(request.headers.get(platform.settings.country_header, "").upper())
    )


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def json_body_acceptable(request: Request) -> bool:
    """The API reads JSON only: a body of another declared type gets 415, not a confusing 422
    (a body without a Content-Type is read as JSON)."""
    if not request.url.path.startswith("/api/") or request.method not in BODY_METHODS:
        return True
    if streams_body(request.method, request.url.path):
        return True  # the route checks for application/offset+octet-stream
    content_type = request.headers.get("content-type")
    has_body = request.headers.get("content-length", "0") != "0" or (
        "transfer-encoding" in request.headers
    )
    return not has_body or content_type is None or _is_json(content_type)


def _declared_length(scope: Scope) -> int | None:
    return natural_or_none(Headers(scope=scope).get("content-length"))


def _too_large(exc: BaseException) -> bool:
    return isinstance(exc, StarletteHTTPException) and exc.status_code == 413


def _is_body_limit_error(exc: BaseException) -> bool:
    """A 413 raised while reading the body, possibly inside the ExceptionGroup of a
    BaseHTTPMiddleware's task group."""
    if isinstance(exc, BaseExceptionGroup):
        matched, rest = exc.split(_too_large)
        return matched is not None and rest is None
    return _too_large(exc)


class BodyLimit:
    """Caps body bytes as they arrive, so a chunked upload without Content-Length is capped
    too. Streaming upload routes (later) raise their own, larger limit.

    Starlette's RequestBodyLimitMiddleware does the counting: FastAPI knows its error and turns
    it into an HTTPException(413) even out of the ExceptionGroup a BaseHTTPMiddleware wraps it in
    (any other error while reading the body becomes a 400), and the problem handler answers.
    A declared Content-Length over the limit is refused by the Gate before anything is read."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit
        self.limited = RequestBodyLimitMiddleware(app, limit)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or (_declared_length(scope) or 0) > self.limit
            or streams_body(scope["method"], scope["path"])
        ):
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.limited(scope, receive, tracking_send)
        except Exception as exc:
            # A body read outside FastAPI's body parsing (a page's form) ends up here.
            if started or not _is_body_limit_error(exc):
                raise
            response = problem(
                "body-too-large", f"request bodies are limited to {self.limit} bytes"
            )
            await response(scope, receive, send)


class MovingRetry:
    """Replays a request that met a user's migration fence (503 ``moving``), so that a user's
    writes pause instead of failing while their data moves to another region.

    The body (already capped by BodyLimit; at most ``limit`` bytes are kept) is buffered, and a
    503 carrying the ``X-Reelm-Moving`` header is held back and the request run again after a
    short pause, for up to ``wait`` seconds; each run resolves the session again, so once the
    directory points to the new home the request goes there. Streamed uploads are not replayed:
    they get the 503 and Retry-After, and the tus client resumes."""

    def __init__(self, app: ASGIApp, limit: int, wait: float = 15.0) -> None:
        self.app = app
        self.limit = limit
        self.wait = wait

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or streams_body(scope["method"], scope["path"]):
            await self.app(scope, receive, send)
            return
        messages: list[Message] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > self.limit or not message.get("more_body", False):
                break
        replayable = size <= self.limit and messages[-1]["type"] == "http.request"
        deadline = asyncio.get_running_loop().time() + self.wait
        pause = 0.1
        while True:
            held = await self._attempt(scope, list(messages), receive, send)
            if not held:
                return
            now = asyncio.get_running_loop().time()
            if not replayable or now + pause > deadline:
                for message in held:
                    await send(message)
                return
            await asyncio.sleep(pause)
            pause = min(pause * 2, 1.0)

    async def _attempt(
        self, scope: Scope, queue: list[Message], receive: Receive, send: Send
    ) -> list[Message]:
        """Run the request once; returns the response held back when it met a fence."""
        held: list[Message] = []

        async def replay() -> Message:
            if queue:
                return queue.pop(0)
            return await receive()

        async def hold_moving(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 503:
                names = {k.lower() for k, _ in message.get("headers", [])}
                if MOVING_HEADER.lower().encode() in names:
                    held.append(message)
                    return
            if held:
                held.append(message)
                return
            await send(message)

        await self.app(scope, replay, hold_moving)
        return held
