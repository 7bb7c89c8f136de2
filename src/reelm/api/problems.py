"""RFC 9457 problem details: every API error is ``application/problem+json`` with a stable type."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.body_limit import MAX_BODY_SIZE_SCOPE_KEY
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from reelm.accounts.errors import AccountError, RateLimited
from reelm.media.errors import PROBLEM_TYPES as MEDIA_PROBLEMS
from reelm.media.errors import MediaRejected
from reelm.regions.cell import CatalogWriteRefused, NotInThisCell, ResidencyRefused
from reelm.regions.fence import UserMoving
from reelm.regions.policy import MarketBlocked, UnknownMarket
from reelm.storage.db import transient

log = logging.getLogger("reelm.api")

PROBLEM_JSON = "application/problem+json"

# slug -> (status, title). The slug is the stable part of the type URI.
MOVING_HEADER = "X-Reelm-Moving"
# On a request that only another region's cell can serve: that region, for the edge (or a
# client) to send the request there.
HOME_CELL_HEADER = "X-Reelm-Home-Cell"
# Set with that answer for a browser: the edge routes a visitor without a session by it.
CELL_COOKIE = "reelm_cell"

PROBLEM_TYPES: dict[str, tuple[int, str]] = {
    "invalid-input": (422, "Invalid input"),
    "not-staff": (403, "Staff only"),
    "justification-required": (422, "A justification is required"),
    "handle-taken": (409, "Handle already taken"),
    "email-taken": (409, "Email already registered"),
    "phone-taken": (409, "Phone number already registered"),
    "age-restricted": (403, "Not allowed at this age"),
    "setting-locked": (403, "Setting locked for this account"),
    "bad-credentials": (401, "Wrong handle, email or password"),
    "not-authenticated": (401, "Sign-in required"),
    "not-found": (404, "Not found"),
    "forbidden": (403, "Not allowed"),
    "account-suspended": (403, "Account suspended"),
    "rate-limited": (429, "Too many attempts"),
    "unavailable-for-legal-reasons": (451, "Unavailable for legal reasons"),
    "unknown-market": (422, "Unknown market"),
    "body-too-large": (413, "Request body too large"),
    "unsupported-media-type": (415, "Unsupported media type"),
    "method-not-allowed": (405, "Method not allowed"),
    "residency-guard": (421, "Request reached the wrong region"),
    "other-cell": (421, "Served by another region's cell"),
    "moving": (503, "Your data is moving to another region"),
    "migration-refused": (409, "Migration refused"),
    "upload-offset-mismatch": (409, "Upload offset does not match"),
    "upload-too-large": (413, "Upload too large"),
    "too-many-uploads": (429, "Too many uploads in progress"),
    "tus-version": (412, "Unsupported tus version"),
    "video-not-retryable": (409, "The video cannot be retried now"),
    "link-expired": (403, "Link expired"),
    "csrf-failed": (403, "Cross-site request refused"),
    **MEDIA_PROBLEMS,
    "cell-bad-delivery": (400, "Inter-cell delivery not understood"),
    "cell-unauthenticated": (401, "Inter-cell request not authenticated"),
    "cell-forbidden": (403, "Inter-cell request not allowed"),
    "cell-conflict": (409, "Delivery id reused with another body"),
    "http-error": (400, "HTTP error"),
    "busy": (503, "Busy: try again in a moment"),
    "server-error": (500, "Internal server error"),
}


class Problem(BaseModel):
    """RFC 9457 problem details, as every API error is answered."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(examples=["/problems/invalid-input"])
    title: str
    status: int
    detail: str
    field: str | None = Field(default=None, description="The input field at fault, if any.")


def problem_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the problems a route can answer."""
    # Inline: a "model" entry would be documented as application/json.
    schema = Problem.model_json_schema()
    return {
        code: {
            "content": {PROBLEM_JSON: {"schema": schema}},
            "description": " or ".join(
                title for _slug, (status, title) in PROBLEM_TYPES.items() if status == code
            ),
        }
        for code in codes
    }


def type_uri(slug: str) -> str:
    return f"/problems/{slug}"


def problem(
    slug: str,
    detail: str,
    *,
    status: int | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    default_status, title = PROBLEM_TYPES[slug]
    code = status or default_status
    body = {"type": type_uri(slug), "title": title, "status": code, "detail": detail, **extra}
    return JSONResponse(body, status_code=code, media_type=PROBLEM_JSON, headers=headers)


def blocked_response(exc: MarketBlocked) -> JSONResponse:
    return problem(
        "unavailable-for-legal-reasons",
        exc.reason,
        market=exc.market,
        authority=exc.authority,
        headers={"Link": f'<{type_uri("unavailable-for-legal-reasons")}>; rel="blocked-by"'},
    )


def other_cell_response(exc: NotInThisCell) -> JSONResponse:
    """Nothing of that region is held here, so nothing was read or written: the request must
    be sent to that region's cell (the header tells the edge, or the client, which)."""
    return problem(
        "other-cell",
        f"this is served by the cell of region {exc.region!r}: send it again through the edge "
        f"with the cookie {CELL_COOKIE}={exc.region} (set by this answer), and it goes there",
        region=exc.region,
        headers={HOME_CELL_HEADER: exc.region},
    )


def other_cell_answer(request: Request, exc: NotInThisCell) -> Response:
    """421 other-cell, as the client wants it, with the cookie the edge routes a visitor
    without a session by: a browser (or an API client keeping cookies) that sends the request
    again reaches that region's cell. A form is not forwarded (its CSRF token is this cell's):
    the page says so (docs/operations.md, "The edge")."""
    response = respond(request, other_cell_response(exc))
    settings = request.app.state.platform.settings
    response.set_cookie(
        CELL_COOKIE,
        exc.region,
        max_age=3600,
        path="/",
        secure=settings.cookie_secure,
        httponly=True,
        samesite="lax",
    )
    return response


def _validation_detail(exc: RequestValidationError) -> tuple[str, list[dict[str, Any]]]:
    errors = []
    for err in exc.errors():
        if err.get("type") == "json_invalid":
            # loc holds the character offset, not a field.
            reason = str((err.get("ctx") or {}).get("error", "JSON decode error"))[:100]
            errors.append({"field": None, "message": f"the body is not valid JSON: {reason}"})
            continue
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path")]
        # Never echo the rejected input back: it may be a password or megabytes of garbage.
        message = str(err.get("msg")).removeprefix("Value error, ")[:200]
        errors.append({"field": ".".join(loc) or None, "message": message})
    first = errors[0] if errors else {"field": None, "message": "invalid request"}
    where = f"{first['field']}: " if first["field"] else ""
    return f"{where}{first['message']}", errors[:20]


def allowed_methods(request: Request) -> str:
    """The methods some route answers at this request's path."""
    routes = request.app.router.routes
    allowed = [
        method
        for method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
        if any(
            route.matches({**request.scope, "method": method})[0] == Match.FULL for route in routes
        )
    ]
    return ", ".join(allowed)


def wants_html(request: Request) -> bool:
    """Pages get readable HTML errors; the API (and any non-browser client) gets problem+json."""
    return not request.url.path.startswith("/api/") and "text/html" in request.headers.get(
        "accept", ""
    )


def respond(request: Request, response: JSONResponse) -> Response:
    """``response`` as the client wants it: the problem, or a readable page for a browser."""
    render = getattr(request.app.state, "html_error", None)
    if render is not None and wants_html(request):
        return render(request, response)  # type: ignore[no-any-return]
    return response


class ServerErrors:
    """An unexpected error is logged and answered with the server-error problem (no
    internals), and the client's connection stays open.

    Starlette's ServerErrorMiddleware answers too, but then raises the error again for the
    server to log, and uvicorn closes the connection when an application raises: each 500
    broke the client's keep-alive connection, and a request already sent on it failed (issue
    #12). A deadlock or serialization failure that outlived the services' retries is a 503
    `busy` with Retry-After instead. An error after the response has started cannot be
    answered: it goes on to the server, which cuts the connection (the response is
    incomplete, and the client must see that)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def sending(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception as exc:
            if started:
                raise
            # The route's template, not the path: no ids or handles in the log line.
            route = getattr(scope.get("route"), "path", "(no route)")
            request = Request(scope, receive)
            if transient(exc):
                log.warning("%s %s: database busy after retries", scope["method"], route)
                answer = problem(
                    "busy",
                    "the service is busy; try again in a moment",
                    headers={"Retry-After": "1"},
                )
            else:
                log.exception("%s %s: unexpected error", scope["method"], route)
                answer = problem("server-error", "something went wrong on our side")
            await respond(request, answer)(scope, receive, send)


def install(app: FastAPI) -> None:
    @app.exception_handler(AccountError)
    async def account_error(request: Request, exc: AccountError) -> Response:
        headers: dict[str, str] = {}
        if isinstance(exc, RateLimited):
            headers["Retry-After"] = str(exc.retry_after)
        if exc.status == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="reelm"'  # RFC 9110 15.5.2
        extra = {"field": exc.field} if exc.field else {}
        return respond(
            request, problem(exc.slug, exc.detail, status=exc.status, headers=headers, **extra)
        )

    @app.exception_handler(MediaRejected)
    async def media_rejected(request: Request, exc: MediaRejected) -> Response:
        return respond(request, problem(exc.slug, exc.detail, status=exc.status, field=exc.field))

    @app.exception_handler(MarketBlocked)
    async def market_blocked(request: Request, exc: MarketBlocked) -> Response:
        return respond(request, blocked_response(exc))

    @app.exception_handler(UnknownMarket)
    async def unknown_market(request: Request, exc: UnknownMarket) -> Response:
        return problem("unknown-market", str(exc), field="market")

    @app.exception_handler(ResidencyRefused)
    async def residency(request: Request, exc: ResidencyRefused) -> Response:
        if isinstance(exc, CatalogWriteRefused):
            return problem("residency-guard", "the catalog refused this region that write")
        return problem("residency-guard", "this region does not hold that account's data")

    @app.exception_handler(NotInThisCell)
    async def other_cell(request: Request, exc: NotInThisCell) -> Response:
        return other_cell_answer(request, exc)

    @app.exception_handler(UserMoving)
    async def moving(request: Request, exc: UserMoving) -> Response:
        # Retried by gate.MovingRetry for a request it can replay; a streamed upload gets it
        # and resumes after Retry-After (tus clients do).
        return respond(
            request,
            problem(
                "moving",
                "your data is moving to another region; try again in a moment",
                headers={"Retry-After": "2", MOVING_HEADER: "1"},
            ),
        )

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        detail, errors = _validation_detail(exc)
        return problem("invalid-input", detail, errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        slug = {
            400: "invalid-input",  # a body FastAPI could not parse (e.g. JSON nested too deep)
            404: "not-found",
            405: "method-not-allowed",
            413: "body-too-large",
            415: "unsupported-media-type",
        }.get(exc.status_code, "http-error")
        headers = dict(exc.headers or {})
        detail = str(exc.detail)
        limit = request.scope.get(MAX_BODY_SIZE_SCOPE_KEY)
        if exc.status_code == 413 and limit is not None:
            detail = f"request bodies are limited to {limit} bytes"
        if exc.status_code == 405:
            # RFC 9110: a 405 lists the methods the resource has, not just the first route's.
            headers["Allow"] = allowed_methods(request)
        return respond(request, problem(slug, detail, status=exc.status_code, headers=headers))
