"""Server-rendered pages: sign up, log in, profile, settings, the market picker, 451.

The video pages (the feed at "/", upload, a video, hashtags) are in reelm.web.video_pages."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from reelm.accounts import lifecycle, service
from reelm.accounts.errors import AccountError
from reelm.accounts.schemas import Links, PrivacyUpdate, ProfileUpdate, SignUp
from reelm.api.deps import client_address, login_visitor, remember_device
from reelm.api.gate import MARKET_COOKIE, SESSION_COOKIE
from reelm.api.problems import MOVING_HEADER, blocked_response, wants_html
from reelm.bootstrap import Platform
from reelm.media import catalog
from reelm.regions.policy import (
    MarketBlocked,
    UnknownMarket,
    country_codes,
    country_name,
    is_country,
)
from reelm.web.csrf import (
    CSRF_COOKIE,
    CSRF_FIELD,
    Csrf,
    load_or_create_secret,
    request_binding,
    session_binding,
    visitor_binding,
)
from reelm.web.csrf import MAX_AGE as CSRF_MAX_AGE

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")


class FormError(Exception):
    def __init__(self, message: str, status: int = 422, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.field = field


def _markets(platform: Platform) -> list[tuple[str, str]]:
    return sorted(((c, country_name(c)) for c in country_codes()), key=lambda item: item[1])


# Plainer words than pydantic's for what people most often get wrong in the forms.
_FRIENDLY = {
    "market": "country: choose your country from the list",
    "birth_date": "birth date: enter your birth date (year, month and day)",
}


def _pydantic_message(exc: ValidationError) -> tuple[str, str | None]:
    err = exc.errors()[0]
    field = ".".join(str(p) for p in err["loc"]) or None
    msg = str(err["msg"]).removeprefix("Value error, ")
    if field in _FRIENDLY:
        return _FRIENDLY[field], field
    if not field:
        return msg, None
    label = field.replace("_", " ")
    # Some validators already name their field ("website: not a web address").
    return (msg if msg.startswith(f"{label}:") else f"{label}: {msg}"), field


def _safe_next(target: str | None) -> str | None:
    """A path on this site to go back to after logging in, or None (no open redirects)."""
    if not target or len(target) > 200 or not target.startswith("/") or target.startswith("//"):
        return None
    if "\\" in target or any(ord(c) < 0x21 or ord(c) == 0x7F for c in target):
        return None
    return target


class Pages:
    def __init__(self, app: FastAPI, platform: Platform) -> None:
        self.platform = platform
        self.csrf = Csrf(load_or_create_secret(platform.settings.csrf_key_file()))
        self.market_list = _markets(platform)

    # ---- rendering -------------------------------------------------------------------
    def render(self, request: Request, name: str, status: int = 200, **ctx: Any) -> HTMLResponse:
        cookie = request.cookies.get(CSRF_COOKIE) or Csrf.new_cookie_value()
        market = getattr(request.state, "market", None)
        user = getattr(request.state, "user", None)
        binding = session_binding(user.token_hash) if user is not None else visitor_binding(cookie)
        context = {
            "base_url": self.platform.settings.base_url(),
            "user": user,
            "unread": self._unread(user) if user is not None and "unread" not in ctx else 0,
            "market": market,
            "market_name": country_name(market) if market else None,
            "market_picker": self.platform.settings.market_picker,
            "csrf_field": CSRF_FIELD,
            "csrf_token": self.csrf.token_for(binding),
            **ctx,
        }
        response = templates.TemplateResponse(request, name, context, status_code=status)
        if request.cookies.get(CSRF_COOKIE) != cookie:
            self._cookie(response, CSRF_COOKIE, cookie, max_age=CSRF_MAX_AGE)
        return response

    def start_session(
        self, request: Request, response: Response, token: str, user: service.CurrentUser
    ) -> None:
        """The cookies of a log-in: the session; a new CSRF cookie (nothing planted or seen
        before the log-in carries over); the device cookie (see accounts.throttle)."""
        days = self.platform.settings.session_days
        self._cookie(response, SESSION_COOKIE, token, days * 86400)
        self._cookie(response, CSRF_COOKIE, Csrf.new_cookie_value(), CSRF_MAX_AGE)
        remember_device(request, response, user.user_id)

    def _unread(self, user: Any) -> int:
        """The inbox badge: best effort (a page never fails for it)."""
        from reelm.social import notify

        try:
            return notify.unread(self.platform, user)
        except Exception:  # a moving user, a region briefly away: no badge this time
            return 0

    def _cookie(self, response: Response, name: str, value: str, max_age: int) -> None:
        response.set_cookie(
            name,
            value,
            max_age=max_age,
            httponly=True,
            samesite="lax",
            secure=self.platform.settings.cookie_secure,
            path="/",
        )

    async def form(self, request: Request) -> dict[str, str]:
        """The posted form, after the CSRF check."""
        data = await request.form()
        fields = {k: v for k, v in data.items() if isinstance(v, str)}
        if not self.csrf.valid(request_binding(request), fields.get(CSRF_FIELD)):
            raise FormError(
                "this form has expired or did not come from reelm; reload the page and try again",
                status=403,
            )
        return fields

    def blocked(self, request: Request, exc: MarketBlocked) -> Response:
        if not wants_html(request):
            return blocked_response(exc)
        response = self.render(
            request, "blocked.html", status=451, exc=exc, country=country_name(exc.market)
        )
        response.headers["Link"] = '</problems/unavailable-for-legal-reasons>; rel="blocked-by"'
        return response

    def html_error(self, request: Request, problem: JSONResponse) -> Response:
        import json

        body = json.loads(bytes(problem.body))
        response = self.render(
            request,
            "error.html",
            status=problem.status_code,
            title=body.get("title"),
            detail=body.get("detail"),
        )
        if "retry-after" in problem.headers:
            response.headers["Retry-After"] = problem.headers["retry-after"]
        if MOVING_HEADER.lower() in problem.headers:
            # A write that met a migration fence: gate.MovingRetry replays the request.
            response.headers[MOVING_HEADER] = problem.headers[MOVING_HEADER.lower()]
        return response


def install(app: FastAPI, platform: Platform) -> None:
    pages = Pages(app, platform)
    app.state.pages = pages
    app.state.blocked_response = pages.blocked
    app.state.html_error = pages.html_error
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    # "/" is the feed (reelm.web.video_pages); what reelm is about moved here.
    @app.get("/about", response_class=HTMLResponse, include_in_schema=False)
    def about(request: Request) -> Response:
        return pages.render(request, "home.html")

    @app.get("/signup", response_class=HTMLResponse, include_in_schema=False)
    def signup_form(request: Request) -> Response:
        return pages.render(request, "signup.html", markets=pages.market_list, values={})

    @app.post("/signup", include_in_schema=False)
    async def signup(request: Request) -> Response:
        values: dict[str, str] = {}
        try:
            values = await pages.form(request)
            platform.rate_limits.hit("signup", client_address(request))
            data = SignUp(
                handle=values.get("handle", ""),
                display_name=values.get("display_name", ""),
                email=values.get("email", ""),
                password=values.get("password", ""),
                birth_date=values.get("birth_date", ""),
                market=values.get("market", ""),
                phone=values.get("phone") or None,
            )
            await run_in_threadpool(service.sign_up_from, platform, data, client_address(request))
            token, new_user = await run_in_threadpool(
                service.log_in,
                platform,
                data.handle,
                data.password,
                user_agent=request.headers.get("user-agent", ""),
            )
        except MarketBlocked as exc:
            return pages.blocked(request, exc)
        except (FormError, AccountError, ValidationError, UnknownMarket) as exc:
            message, status = _message(exc)
            values.pop("password", None)
            return pages.render(
                request,
                "signup.html",
                status=status,
                error=message,
                markets=pages.market_list,
                values=values,
            )
        response = RedirectResponse(f"/@{data.handle}?welcome=1", status_code=303)
        pages.start_session(request, response, token, new_user)
        return response

    @app.get("/login", response_class=HTMLResponse, include_in_schema=False)
    def login_form(request: Request) -> Response:
        values = {"next": _safe_next(request.query_params.get("next")) or ""}
        return pages.render(request, "login.html", values=values)

    @app.post("/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        values: dict[str, str] = {}
        try:
            values = await pages.form(request)
            identifier = values.get("identifier", "")[:254]
            visitor = login_visitor(request)
            platform.rate_limits.hit("login", visitor.address)
            token, user = await run_in_threadpool(
                service.log_in,
                platform,
                identifier,
                values.get("password", "")[:256],
                user_agent=request.headers.get("user-agent", ""),
                visitor=visitor,
            )
        except (FormError, AccountError) as exc:
            message, status = _message(exc)
            return pages.render(
                request,
                "login.html",
                status=status,
                error=message,
                values={
                    "identifier": values.get("identifier", "")[:254],
                    "next": _safe_next(values.get("next")) or "",
                },
            )
        target = _safe_next(values.get("next")) or f"/@{user.handle}"
        response = RedirectResponse(target, status_code=303)
        pages.start_session(request, response, token, user)
        return response

    @app.post("/logout", include_in_schema=False)
    async def logout(request: Request) -> Response:
        user = getattr(request.state, "user", None)
        # Without a live session there is nothing to end (and the page's token, bound to the
        # session that ended, could not pass): the cookies are cleared all the same.
        if user is not None:
            try:
                await pages.form(request)
            except FormError as exc:
                return pages.render(
                    request,
                    "error.html",
                    status=exc.status,
                    title="Not logged out",
                    detail=exc.message,
                )
            await run_in_threadpool(service.log_out, platform, user)
        response = RedirectResponse("/", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        pages._cookie(response, CSRF_COOKIE, Csrf.new_cookie_value(), CSRF_MAX_AGE)
        return response

    @app.get("/@{handle}", response_class=HTMLResponse, include_in_schema=False)
    def profile(request: Request, handle: str) -> Response:
        user = getattr(request.state, "user", None)
        # A public page: from the catalog's local replica (the viewer's own writes seen).
        reads = catalog.reads_for(platform, user)
        found = lifecycle.public_profile(platform, handle[:100], reads=reads)
        cursor = request.query_params.get("cursor") or None
        from reelm.social import access, graph

        who = catalog.viewer_of(user, getattr(request.state, "market", None))
        relation = access.relation(platform, who.user_id, found.user_id, reads=reads)
        facts = access.profile_facts(platform, found.user_id, reads=reads)
        access.decide_profile(who, "view", facts, relation).enforce()
        follow = access.decide_profile(who, "follow", facts, relation)
        grid = catalog.profile_videos(
            platform, user, found, cursor=cursor, market=getattr(request.state, "market", None)
        )
        return pages.render(
            request,
            "profile.html",
            counts=graph.counts(platform, found.user_id, reads=reads),
            reported=request.query_params.get("reported") == "1",
            relation=relation,
            # Why the follow button is not there (an under-16 asked by a stranger), if so.
            follow_refused=follow.reason if follow.status == 403 else None,
            profile=found,
            own=user is not None and user.user_id == found.user_id,
            welcome=request.query_params.get("welcome") == "1",
            videos=grid.items,
            next_cursor=grid.next_cursor,
            first_page=cursor is None,
        )

    @app.get("/settings", response_class=HTMLResponse, include_in_schema=False)
    def settings_page(request: Request) -> Response:
        user = getattr(request.state, "user", None)
        if user is None:
            return RedirectResponse("/login?next=/settings", status_code=303)
        me = lifecycle.get_me(platform, user)
        return pages.render(
            request,
            "settings.html",
            me=me,
            profile_form=_profile_form(me),
            saved=request.query_params.get("saved"),
        )

    @app.post("/settings/{section}", include_in_schema=False)
    async def settings_save(request: Request, section: str) -> Response:
        user = getattr(request.state, "user", None)
        if user is None:
            return RedirectResponse("/login?next=/settings", status_code=303)
        values: dict[str, str] = {}
        try:
            values = await pages.form(request)
            if section == "profile":
                change = ProfileUpdate(
                    display_name=values.get("display_name", ""),
                    bio=values.get("bio", ""),
                    links=Links(
                        instagram=values.get("instagram", ""),
                        youtube=values.get("youtube", ""),
                        website=values.get("website", ""),
                    ),
                )
                await run_in_threadpool(lifecycle.update_profile, platform, user, change)
            elif section == "privacy":
                privacy = PrivacyUpdate(
                    private_account=values.get("private_account") == "on",
                    direct_messages=values.get("direct_messages", "followers"),
                    comments=values.get("comments", "everyone"),
                    show_following_list=values.get("show_following_list") == "on",
                    suggest_to_others=values.get("suggest_to_others") == "on",
                )
                await run_in_threadpool(lifecycle.update_privacy, platform, user, privacy)
            elif section == "delete":
                if values.get("confirm", "").strip().lstrip("@").casefold() != user.handle:
                    raise FormError("type your handle to confirm", field="confirm")
                due = await run_in_threadpool(lifecycle.request_deletion, platform, user)
                response = pages.render(request, "deleted.html", due=due, user=None)
                response.delete_cookie(SESSION_COOKIE, path="/")
                return response
            else:
                raise FormError("no such settings section", status=404)
        except (FormError, AccountError, ValidationError, ValueError) as exc:
            message, status = _message(exc)
            me = await run_in_threadpool(lifecycle.get_me, platform, user)
            form = _profile_form(me)
            if section == "profile" and values:  # keep what was typed, to correct it
                form.update({k: values.get(k, "") for k in form})
            return pages.render(
                request,
                "settings.html",
                status=status,
                me=me,
                profile_form=form,
                error=message,
                section=section,
            )
        return RedirectResponse(f"/settings?saved={section}", status_code=303)

    @app.get("/market", response_class=HTMLResponse, include_in_schema=False)
    def market_form(request: Request) -> Response:
        if not platform.settings.market_picker:
            return pages.render(
                request,
                "error.html",
                status=404,
                title="Not available",
                detail="the market comes from your network in this deployment",
            )
        return pages.render(request, "market.html", markets=pages.market_list)

    @app.post("/market", include_in_schema=False)
    async def market_pick(request: Request) -> Response:
        if not platform.settings.market_picker:
            return pages.render(
                request,
                "error.html",
                status=404,
                title="Not available",
                detail="the market comes from your network in this deployment",
            )
        try:
            values = await pages.form(request)
        except FormError as exc:
            return pages.render(
                request, "error.html", status=exc.status, title="Not saved", detail=exc.message
            )
        code = values.get("market", "").upper()
        if not is_country(code):
            return pages.render(
                request,
                "market.html",
                status=422,
                markets=pages.market_list,
                error="pick a country from the list",
            )
        response = RedirectResponse("/", status_code=303)
        pages._cookie(response, MARKET_COOKIE, code, 365 * 86400)
        return response


def _profile_form(me: lifecycle.Me) -> dict[str, str]:
    links = me.profile.links
    return {
        "display_name": me.profile.display_name,
        "bio": me.profile.bio,
        "instagram": links.get("instagram", ""),
        "youtube": links.get("youtube", ""),
        "website": links.get("website", ""),
    }


def _message(exc: Exception) -> tuple[str, int]:
    if isinstance(exc, FormError):
        return exc.message, exc.status
    if isinstance(exc, AccountError):
        return exc.detail, exc.status
    if isinstance(exc, ValidationError):
        return _pydantic_message(exc)[0], 422
    return str(exc), 422
