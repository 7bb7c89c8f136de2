"""RFC 9457 problem details: every API error is ``application/problem+json`` with a stable type."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from reelm.accounts.errors import AccountError, RateLimited
from reelm.regions.cell import ResidencyViolation
from reelm.regions.policy import MarketBlocked, UnknownMarket

PROBLEM_JSON = "application/problem+json"

# slug -> (status, title). The slug is the stable part of the type URI.
PROBLEM_TYPES: dict[str, tuple[int, str]] = {
    "invalid-input": (422, "Invalid input"),
    "handle-taken": (409, "Handle already taken"),
    "email-taken": (409, "Email already registered"),
    "age-restricted": (403, "Not allowed at this age"),
    "setting-locked": (403, "Setting locked for this account"),
    "bad-credentials": (401, "Wrong handle, email or password"),
    "not-authenticated": (401, "Sign-in required"),
    "not-found": (404, "Not found"),
    "rate-limited": (429, "Too many attempts"),
    "unavailable-for-legal-reasons": (451, "Unavailable for legal reasons"),
    "unknown-market": (422, "Unknown market"),
    "body-too-large": (413, "Request body too large"),
    "unsupported-media-type": (415, "Unsupported media type"),
    "method-not-allowed": (405, "Method not allowed"),
    "residency-guard": (421, "Request reached the wrong region"),
    "http-error": (400, "HTTP error"),
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


def _validation_detail(exc: RequestValidationError) -> tuple[str, list[dict[str, Any]]]:
    errors = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path")]
        # Never echo the rejected input back: it may be a password or megabytes of garbage.
        errors.append({"field": ".".join(loc) or None, "message": str(err.get("msg"))[:200]})
    first = errors[0] if errors else {"field": None, "message": "invalid request"}
    where = f"{first['field']}: " if first["field"] else ""
    return f"{where}{first['message']}", errors[:20]


def wants_html(request: Request) -> bool:
    """Pages get readable HTML errors; the API (and any non-browser client) gets problem+json."""
    return not request.url.path.startswith("/api/") and "text/html" in request.headers.get(
        "accept", ""
    )


def install(app: FastAPI) -> None:
    def respond(request: Request, response: JSONResponse) -> Response:
        render = getattr(app.state, "html_error", None)
        if render is not None and wants_html(request):
            return render(request, response)  # type: ignore[no-any-return]
        return response

    @app.exception_handler(AccountError)
    async def account_error(request: Request, exc: AccountError) -> Response:
        headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, RateLimited) else None
        extra = {"field": exc.field} if exc.field else {}
        return respond(
            request, problem(exc.slug, exc.detail, status=exc.status, headers=headers, **extra)
        )

    @app.exception_handler(MarketBlocked)
    async def market_blocked(request: Request, exc: MarketBlocked) -> Response:
        return respond(request, blocked_response(exc))

    @app.exception_handler(UnknownMarket)
    async def unknown_market(request: Request, exc: UnknownMarket) -> Response:
        return problem("unknown-market", str(exc), field="market")

    @app.exception_handler(ResidencyViolation)
    async def residency(request: Request, exc: ResidencyViolation) -> Response:
        return problem("residency-guard", "this region does not hold that account's data")

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        detail, errors = _validation_detail(exc)
        return problem("invalid-input", detail, errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        slug = {
            404: "not-found",
            405: "method-not-allowed",
            413: "body-too-large",
            415: "unsupported-media-type",
        }.get(exc.status_code, "http-error")
        return respond(request, problem(slug, str(exc.detail), status=exc.status_code))
