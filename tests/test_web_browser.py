"""The web pages in a real browser: Debian's Chromium driven by Playwright, against uvicorn on
loopback (the ``live_server`` fixture, market picker on as in the demo).

Set ``REELM_SCREENSHOTS=1`` to rewrite the README's screenshots in ``docs/screenshots/``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Response

from reelm.accounts import lifecycle
from reelm.accounts.errors import NotFound
from reelm.accounts.schemas import SignUp
from reelm.accounts.service import SignedUp, find_by_email, sign_up

from .conftest import PASSWORD, LiveServer, unique_handle

pytestmark = pytest.mark.browser

PHONE = {"width": 390, "height": 844}
SCREENSHOTS = Path(__file__).resolve().parents[1] / "docs" / "screenshots"
INDIA_REASON = "section 69A of the Information Technology Act"
CSRF_REFUSED = "this form has expired or did not come from reelm"


# ---- fixtures ------------------------------------------------------------------------------


def new_context(browser: Browser, **options: Any) -> BrowserContext:
    context = browser.new_context(locale="en-US", **options)
    context.set_default_timeout(10_000)
    return context


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    context = new_context(browser)
    yield context
    context.close()


@pytest.fixture
def page(context: BrowserContext) -> Page:
    return context.new_page()


@pytest.fixture
def phone(browser: Browser) -> Iterator[BrowserContext]:
    context = new_context(browser, viewport=PHONE, device_scale_factor=2, is_mobile=True)
    yield context
    context.close()


# ---- helpers -------------------------------------------------------------------------------


def years_ago(years: int, today: date | None = None) -> date:
    """A birth date that makes its holder exactly ``years`` old today."""
    today = today or date.today()
    return date(today.year - years, 1, 1)


def fullwidth(text: str) -> str:
    """ASCII letters, digits and punctuation as their full-width forms (U+FF01 to U+FF5E)."""
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


def submit(page: Page, form: str) -> Response:
    """Click the form's submit button and return the response the page ends on."""
    with page.expect_navigation() as navigation:
        page.click(f"{form} button[type=submit]")
    response = navigation.value
    assert response is not None
    return response


def sign_up_in_page(
    page: Page,
    live: LiveServer,
    handle: str,
    *,
    display_name: str = "Test User",
    email: str | None = None,
    password: str = PASSWORD,
    birth_date: str = "1990-01-01",
    market: str = "US",
) -> Response:
    page.goto(live.url + "/signup")
    page.fill("input[name=handle]", handle)
    page.fill("input[name=display_name]", display_name)
    page.fill("input[name=email]", email if email is not None else f"{handle}@example.com")
    page.fill("input[name=password]", password)
    page.fill("input[name=birth_date]", birth_date)
    page.select_option("select[name=market]", market)
    return submit(page, "form[action='/signup']")


def log_in_in_page(page: Page, live: LiveServer, identifier: str, password: str) -> Response:
    if not page.url.startswith(live.url + "/login"):
        page.goto(live.url + "/login")
    page.fill("input[name=identifier]", identifier)
    page.fill("input[name=password]", password)
    return submit(page, "form[action='/login']")


def create_user(live: LiveServer, handle: str | None = None, **fields: object) -> SignedUp:
    """A user made by the service directly (faster than the form when the form is not tested)."""
    handle = handle or unique_handle("web")
    data = SignUp.model_validate(
        {
            "handle": handle,
            "display_name": "Test User",
            "email": f"{handle}@example.com",
            "password": PASSWORD,
            "birth_date": date(1990, 1, 1),
            "market": "US",
            **fields,
        }
    )
    return sign_up(live.platform, data)


def signed_in(page: Page, live: LiveServer, **fields: object) -> SignedUp:
    user = create_user(live, **fields)
    response = log_in_in_page(page, live, user.handle, PASSWORD)
    assert response.status == 200
    assert page.url == f"{live.url}/@{user.handle}"
    return user


def alert_text(page: Page) -> str:
    alert = page.locator("[role=alert]")
    assert alert.count() == 1, page.content()[:2000]
    assert alert.is_visible()
    return alert.inner_text()


def assert_html_page(response: Response, status: int) -> None:
    """A readable page, never problem+json."""
    assert response.status == status
    assert response.headers["content-type"].startswith("text/html")
    assert not response.text().lstrip().startswith("{")


def session_cookie(context: BrowserContext) -> dict[str, object] | None:
    found = [c for c in context.cookies() if c["name"] == "reelm_session"]
    assert len(found) <= 1
    return dict(found[0]) if found else None


def header_text(page: Page) -> str:
    return page.locator("header.top").inner_text()


def exists(live: LiveServer, handle: str) -> bool:
    try:
        lifecycle.public_profile(live.platform, handle)
    except NotFound:
        return False
    return True


# ---- sign up -------------------------------------------------------------------------------


def test_sign_up_lands_on_the_profile_with_a_secure_session(
    page: Page, context: BrowserContext, live_server: LiveServer
) -> None:
    handle = unique_handle("new")
    response = sign_up_in_page(page, live_server, handle, display_name="Maya Skates", market="NZ")

    assert_html_page(response, 200)
    assert page.url == f"{live_server.url}/@{handle}?welcome=1"
    assert "Welcome to reelm" in page.locator(".notice").inner_text()
    assert page.locator(".notice strong").inner_text() == "nz"  # New Zealand's home region
    assert page.locator("h1").inner_text() == "Maya Skates"

    # The session cookie: HttpOnly, Secure, SameSite=Lax, and invisible to scripts.
    cookie = session_cookie(context)
    assert cookie is not None
    assert cookie["httpOnly"] is True
    assert cookie["secure"] is True
    assert cookie["sameSite"] == "Lax"
    assert cookie["path"] == "/"
    assert "reelm_session" not in page.evaluate("document.cookie")

    # http://localhost is a secure context in Chromium, so the Secure cookie is stored and sent
    # back: the header of the next page knows who we are.
    assert page.evaluate("window.isSecureContext") is True
    page.goto(live_server.url + "/")
    assert f"@{handle}" in header_text(page)
    assert page.locator("header.top a", has_text="Settings").is_visible()


# ---- settings ------------------------------------------------------------------------------


def test_settings_edit_the_profile_and_its_links(page: Page, live_server: LiveServer) -> None:
    user = signed_in(page, live_server)
    page.goto(live_server.url + "/settings")
    page.fill("input[name=display_name]", "Maya Skates")
    page.fill("textarea[name=bio]", "Skating at dawn. Wellington.")
    page.fill("input[name=instagram]", "instagram.com/maya.skates")
    page.fill("input[name=youtube]", "https://www.youtube.com/@mayaskates")
    page.fill("input[name=website]", "maya.example.org/about")
    response = submit(page, "form[action='/settings/profile']")
    assert_html_page(response, 200)
    assert page.url == f"{live_server.url}/settings?saved=profile"
    assert page.locator("[role=status]").inner_text() == "Saved."

    # What others see.
    page.goto(f"{live_server.url}/@{user.handle}")
    assert page.locator("h1").inner_text() == "Maya Skates"
    assert page.locator(".bio").inner_text() == "Skating at dawn. Wellington."
    links = {a.inner_text(): a.get_attribute("href") for a in page.locator(".links a").all()}
    assert links == {
        "Instagram": "https://instagram.com/maya.skates",
        "YouTube": "https://www.youtube.com/@mayaskates",
        "Website": "https://maya.example.org/about",
    }


@pytest.mark.parametrize(
    "website",
    ["javascript:alert(1)", "javascript://example.com/%0Aalert(1)"],
)
def test_a_bad_link_is_a_readable_error_and_changes_nothing(
    page: Page, live_server: LiveServer, website: str
) -> None:
    user = signed_in(page, live_server)
    page.goto(live_server.url + "/settings")
    page.fill("input[name=display_name]", "Changed Name")
    page.fill("textarea[name=bio]", "changed bio")
    page.fill("input[name=website]", website)
    response = submit(page, "form[action='/settings/profile']")

    assert_html_page(response, 422)
    message = alert_text(page)
    assert message.startswith("website: ")
    assert "website: website" not in message
    # The form keeps what was typed, so it can be corrected.
    assert page.input_value("input[name=display_name]") == "Changed Name"
    assert page.input_value("input[name=website]") == website
    # ...and nothing was saved.
    profile = lifecycle.public_profile(live_server.platform, user.handle)
    assert (profile.display_name, profile.bio, profile.links) == ("Test User", "", {})
    page.goto(f"{live_server.url}/@{user.handle}")
    assert page.locator("h1").inner_text() == "Test User"
    assert page.locator(".links a").count() == 0
    assert "javascript" not in page.content()


def test_privacy_toggle(page: Page, live_server: LiveServer) -> None:
    user = signed_in(page, live_server)
    page.goto(live_server.url + "/settings")
    box = page.locator("input[type=checkbox][name=private_account]")
    assert box.is_enabled()
    assert not box.is_checked()
    assert page.locator(".badge").count() == 0

    box.check()
    page.select_option("select[name=direct_messages]", "no_one")
    submit(page, "form[action='/settings/privacy']")
    assert page.url == f"{live_server.url}/settings?saved=privacy"
    assert page.locator("input[type=checkbox][name=private_account]").is_checked()
    assert page.input_value("select[name=direct_messages]") == "no_one"
    page.goto(f"{live_server.url}/@{user.handle}")
    assert page.locator(".badge").inner_text() == "Private account"

    page.goto(live_server.url + "/settings")
    page.locator("input[type=checkbox][name=private_account]").uncheck()
    submit(page, "form[action='/settings/privacy']")
    assert not page.locator("input[type=checkbox][name=private_account]").is_checked()
    page.goto(f"{live_server.url}/@{user.handle}")
    assert page.locator(".badge").count() == 0


def test_privacy_is_locked_for_a_14_year_old(
    page: Page, context: BrowserContext, live_server: LiveServer
) -> None:
    handle = unique_handle("teen")
    response = sign_up_in_page(page, live_server, handle, birth_date=str(years_ago(14)))
    assert_html_page(response, 200)
    assert page.locator(".badge").inner_text() == "Private account"

    page.goto(live_server.url + "/settings")
    assert "under 16 stay private" in page.locator(".notice").first.inner_text()
    box = page.locator("input[type=checkbox][name=private_account]")
    assert box.is_checked()
    assert box.is_disabled()
    assert page.locator("select[name=direct_messages]").is_disabled()
    # Saving the other settings works, and keeps the account private.
    page.select_option("select[name=comments]", "followers")
    submit(page, "form[action='/settings/privacy']")
    assert page.url == f"{live_server.url}/settings?saved=privacy"
    assert page.input_value("select[name=comments]") == "followers"
    assert page.locator("input[type=checkbox][name=private_account]").is_checked()

    # A hand-made request that turns privacy off is refused, readably.
    token = page.input_value("form[action='/settings/privacy'] input[name=csrf_token]")
    forced = context.request.post(
        live_server.url + "/settings/privacy",
        form={"csrf_token": token, "direct_messages": "everyone", "comments": "everyone"},
        headers={"Accept": "text/html"},
        max_redirects=0,
    )
    assert forced.status == 403
    assert forced.headers["content-type"].startswith("text/html")
    assert "under 16 stay private" in forced.text()
    assert lifecycle.public_profile(live_server.platform, handle).is_private is True


# ---- log in and out ------------------------------------------------------------------------


def test_log_out_then_log_in_by_handle_and_by_email(
    page: Page, context: BrowserContext, live_server: LiveServer
) -> None:
    handle = unique_handle("back")
    sign_up_in_page(page, live_server, handle, email=f"Mixed.{handle}@Example.COM")
    assert session_cookie(context) is not None

    submit(page, "header form[action='/logout']")
    assert page.url == live_server.url + "/"
    assert session_cookie(context) is None
    assert f"@{handle}" not in header_text(page)
    assert page.locator("header.top a", has_text="Log in").is_visible()

    response = log_in_in_page(page, live_server, handle.upper(), PASSWORD)
    assert_html_page(response, 200)
    assert page.url == f"{live_server.url}/@{handle}"
    assert f"@{handle}" in header_text(page)
    assert session_cookie(context) is not None

    submit(page, "header form[action='/logout']")
    assert session_cookie(context) is None
    response = log_in_in_page(page, live_server, f"mixed.{handle}@example.com", PASSWORD)
    assert_html_page(response, 200)
    assert page.url == f"{live_server.url}/@{handle}"
    assert f"@{handle}" in header_text(page)


def test_a_wrong_password_is_a_readable_error(
    page: Page, context: BrowserContext, live_server: LiveServer
) -> None:
    user = create_user(live_server)
    for identifier in (user.handle, f"{user.handle}@example.com", "nobody_at_all"):
        response = log_in_in_page(page, live_server, identifier, "not the password")
        assert_html_page(response, 401)
        assert alert_text(page) == "wrong handle, email or password"
        assert page.input_value("input[name=identifier]") == identifier
        assert page.input_value("input[name=password]") == ""
        assert session_cookie(context) is None


def test_log_in_returns_to_the_page_asked_for(page: Page, live_server: LiveServer) -> None:
    user = create_user(live_server)
    page.goto(live_server.url + "/settings")
    assert page.url == live_server.url + "/login?next=/settings"
    log_in_in_page(page, live_server, user.handle, PASSWORD)
    assert page.url == live_server.url + "/settings"

    # Only paths on this site: anything else lands on the profile.
    page.context.clear_cookies()
    for target in ("//evil.example/", "https://evil.example/", "/\\evil.example"):
        page.goto(f"{live_server.url}/login?next={quote(target)}")
        log_in_in_page(page, live_server, user.handle, PASSWORD)
        assert page.url == f"{live_server.url}/@{user.handle}", target
        page.context.clear_cookies()


# ---- readable sign-up errors ---------------------------------------------------------------


def _taken(live: LiveServer, variant: str) -> tuple[str, str]:
    base = unique_handle("maya")
    create_user(live, handle=base)
    typed = base.upper() if variant == "upper" else fullwidth(base.upper())
    return typed, f"@{base} is taken"


@pytest.mark.parametrize(
    ("case", "status"),
    [
        ("taken-upper", 409),
        ("taken-fullwidth", 409),
        ("under-13", 403),
        ("bad-email", 422),
        ("cyrillic", 422),
        ("no-birth-date", 422),
        ("no-country", 422),
    ],
)
def test_sign_up_errors_are_readable_and_keep_what_was_typed(
    page: Page, context: BrowserContext, live_server: LiveServer, case: str, status: int
) -> None:
    handle = unique_handle("err")
    email = f"{handle}@example.com"
    birth, market = "1990-01-01", "CA"
    if case.startswith("taken"):
        handle, expected = _taken(live_server, case.removeprefix("taken-"))
    elif case == "under-13":
        birth, expected = str(years_ago(12)), "you must be at least 13 years old"
    elif case == "bad-email":
        email, expected = "maya@@example", "email: "
    elif case == "no-birth-date":
        birth, expected = "", "birth date: enter your birth date"
    elif case == "no-country":
        market, expected = "", "country: choose your country from the list"
    else:
        handle = "m\u0430y\u0430_" + handle[-6:]  # Cyrillic a
        expected = "a handle may use only letters a-z, digits, '.' and '_'"

    response = sign_up_in_page(
        page, live_server, handle, display_name="Maya", email=email, birth_date=birth, market=market
    )

    assert_html_page(response, status)
    assert page.url == live_server.url + "/signup"
    assert expected in alert_text(page)
    assert page.input_value("input[name=handle]") == handle
    assert page.input_value("input[name=display_name]") == "Maya"
    assert page.input_value("input[name=email]") == email
    assert page.input_value("input[name=birth_date]") == birth
    assert page.input_value("select[name=market]") == market
    assert page.input_value("input[name=password]") == ""
    assert PASSWORD not in page.content()
    assert session_cookie(context) is None
    assert find_by_email(live_server.platform, email.lower()) is None


# ---- markets -------------------------------------------------------------------------------


def assert_blocked_page(page: Page, response: Response | None) -> None:
    assert response is not None
    assert_html_page(response, 451)
    assert 'rel="blocked-by"' in response.headers["link"]
    assert page.locator(".blocked .code").inner_text() == "451"
    assert page.locator("h1").inner_text() == "reelm is not available in India"
    assert INDIA_REASON in page.locator(".blocked").inner_text()


def test_picking_india_answers_451_on_every_page(
    page: Page, context: BrowserContext, live_server: LiveServer
) -> None:
    someone = create_user(live_server)
    page.goto(live_server.url + "/market")
    page.select_option("select[name=market]", "IN")
    assert_blocked_page(page, submit(page, "form[action='/market']"))
    assert "Market: India (IN)" in page.locator("footer").inner_text()
    # The page's own stylesheet is not blocked: the 451 page is styled.
    assert (
        page.evaluate("getComputedStyle(document.querySelector('.blocked .code')).fontWeight")
        == "800"
    )

    for path in ("/", "/signup", "/login", "/settings", f"/@{someone.handle}", "/no-such-page"):
        assert_blocked_page(page, page.goto(live_server.url + path))

    # No account can be made from there, even by posting the form directly.
    handle = unique_handle("blocked")
    posted = context.request.post(
        live_server.url + "/signup",
        form={
            "handle": handle,
            "display_name": "X",
            "email": f"{handle}@example.com",
            "password": PASSWORD,
            "birth_date": "1990-01-01",
            "market": "US",
        },
        headers={"Accept": "text/html"},
    )
    assert posted.status == 451
    assert not exists(live_server, handle)
    assert find_by_email(live_server.platform, f"{handle}@example.com") is None


def test_a_visitor_who_picked_india_can_pick_again(page: Page, live_server: LiveServer) -> None:
    page.goto(live_server.url + "/market")
    page.select_option("select[name=market]", "IN")
    assert submit(page, "form[action='/market']").status == 451
    response = page.goto(live_server.url + "/market")
    assert response is not None
    assert response.status == 200
    page.select_option("select[name=market]", "NZ")
    assert submit(page, "form[action='/market']").status == 200


def test_the_edge_country_header_answers_451(browser: Browser, live_server: LiveServer) -> None:
    context = new_context(browser)
    try:
        context.set_extra_http_headers({"CF-IPCountry": "IN"})
        page = context.new_page()
        for path in ("/", "/signup", "/login", "/market"):
            assert_blocked_page(page, page.goto(live_server.url + path))
        context.set_extra_http_headers({"CF-IPCountry": "NZ"})
        response = page.goto(live_server.url + "/")
        assert response is not None
        assert response.status == 200
        assert "Market: New Zealand (NZ)" in page.locator("footer").inner_text()
    finally:
        context.close()


def test_choosing_india_on_the_sign_up_form_answers_451(
    page: Page, live_server: LiveServer
) -> None:
    handle = unique_handle("india")
    response = sign_up_in_page(page, live_server, handle, market="IN")
    assert_blocked_page(page, response)
    assert not exists(live_server, handle)


# ---- CSRF ----------------------------------------------------------------------------------


@pytest.mark.parametrize("token", ["missing", "forged", "from-another-browser"])
def test_sign_up_without_a_valid_csrf_token_is_refused(
    browser: Browser, page: Page, context: BrowserContext, live_server: LiveServer, token: str
) -> None:
    page.goto(live_server.url + "/signup")
    field = page.locator("form[action='/signup'] input[name=csrf_token]")
    if token == "missing":
        field.evaluate("input => input.remove()")
    elif token == "forged":
        field.evaluate("input => { input.value = input.value.slice(0, -4) + 'AAAA' }")
    else:
        other = new_context(browser)
        try:
            other_page = other.new_page()
            other_page.goto(live_server.url + "/signup")
            stolen = other_page.input_value("form[action='/signup'] input[name=csrf_token]")
        finally:
            other.close()
        field.evaluate("(input, value) => { input.value = value }", stolen)

    handle = unique_handle("csrf")
    page.fill("input[name=handle]", handle)
    page.fill("input[name=display_name]", "Mallory")
    page.fill("input[name=email]", f"{handle}@example.com")
    page.fill("input[name=password]", PASSWORD)
    page.fill("input[name=birth_date]", "1990-01-01")
    page.select_option("select[name=market]", "US")
    response = submit(page, "form[action='/signup']")

    assert_html_page(response, 403)
    assert CSRF_REFUSED in alert_text(page)
    assert session_cookie(context) is None
    assert not exists(live_server, handle)
    assert find_by_email(live_server.platform, f"{handle}@example.com") is None


def test_log_in_and_log_out_without_a_csrf_token_are_refused(
    page: Page, context: BrowserContext, live_server: LiveServer
) -> None:
    user = create_user(live_server)
    page.goto(live_server.url + "/login")  # the browser now holds a CSRF cookie
    refused = context.request.post(
        live_server.url + "/login",
        form={"identifier": user.handle, "password": PASSWORD},
        headers={"Accept": "text/html"},
        max_redirects=0,
    )
    assert refused.status == 403
    assert refused.headers["content-type"].startswith("text/html")
    assert CSRF_REFUSED in refused.text()
    assert session_cookie(context) is None

    log_in_in_page(page, live_server, user.handle, PASSWORD)
    refused = context.request.post(
        live_server.url + "/logout", form={}, headers={"Accept": "text/html"}, max_redirects=0
    )
    assert refused.status == 403
    assert CSRF_REFUSED in refused.text()
    page.goto(live_server.url + "/")
    assert f"@{user.handle}" in header_text(page)


# ---- deletion ------------------------------------------------------------------------------


def test_delete_the_account_then_log_in_to_cancel(
    browser: Browser, page: Page, context: BrowserContext, live_server: LiveServer
) -> None:
    user = signed_in(page, live_server)
    page.goto(live_server.url + "/settings")

    # A wrong confirmation deletes nothing.
    page.fill("input[name=confirm]", "someone_else")
    response = submit(page, "form[action='/settings/delete']")
    assert_html_page(response, 422)
    assert alert_text(page) == "type your handle to confirm"
    assert exists(live_server, user.handle)

    page.fill("input[name=confirm]", f"@{user.handle.upper()}")
    response = submit(page, "form[action='/settings/delete']")
    assert_html_page(response, 200)
    assert page.locator("h1").inner_text() == "Your account will be deleted"
    assert "Log in before then to cancel" in page.content()
    assert session_cookie(context) is None
    assert page.locator("header.top a", has_text="Log in").is_visible()

    visitor = new_context(browser)
    try:
        other = visitor.new_page()
        response = other.goto(f"{live_server.url}/@{user.handle}")
        assert response is not None
        assert_html_page(response, 404)
        assert f"no user @{user.handle}" in alert_text(other)

        with page.expect_navigation():
            page.click("main a:has-text('Log in to cancel')")
        response = log_in_in_page(page, live_server, user.handle, PASSWORD)
        assert_html_page(response, 200)
        assert page.locator("h1").inner_text() == "Test User"

        response = other.goto(f"{live_server.url}/@{user.handle}")
        assert response is not None
        assert_html_page(response, 200)
        assert other.locator("h1").inner_text() == "Test User"
    finally:
        visitor.close()


# ---- phones --------------------------------------------------------------------------------


def assert_fits(page: Page, what: str) -> None:
    """No sideways scrolling. On a phone, content wider than the screen also makes Chromium
    zoom out (innerWidth grows), so the width must still be the phone's."""
    inner, scroll = page.evaluate("[window.innerWidth, document.documentElement.scrollWidth]")
    assert (inner, scroll <= inner) == (PHONE["width"], True), f"{what}: {inner=} {scroll=}"


def test_pages_fit_a_phone_screen(
    browser: Browser, phone: BrowserContext, live_server: LiveServer
) -> None:
    page = phone.new_page()
    for path in ("/", "/signup", "/login", "/market", "/no-such-page"):
        page.goto(live_server.url + path)
        assert_fits(page, path)

    # The longest values the forms accept, without a single space to wrap at.
    handle = unique_handle("w" * 12)
    response = sign_up_in_page(
        page,
        live_server,
        handle,
        display_name="W" * 50,
        email="m" * 60 + f"{handle}@" + "long-domain-name-" * 3 + "example.com",
    )
    assert response.status == 200
    assert_fits(page, "profile after sign-up")
    page.goto(live_server.url + "/settings")
    page.fill("textarea[name=bio]", "x" * 160)
    page.fill("input[name=website]", "https://example.org/" + "a" * 150)
    submit(page, "form[action='/settings/profile']")
    for path in ("/settings", f"/@{handle}", "/"):
        page.goto(live_server.url + path)
        assert_fits(page, path)

    sign_up_in_page(page, live_server, "x", email="not-an-email")
    assert_fits(page, "sign-up error")

    blocked = new_context(
        browser, viewport=PHONE, is_mobile=True, extra_http_headers={"CF-IPCountry": "IN"}
    )
    try:
        blocked_page = blocked.new_page()
        blocked_page.goto(live_server.url + "/")
        assert_fits(blocked_page, "451")
    finally:
        blocked.close()


def test_screenshots_for_the_readme(phone: BrowserContext, live_server: LiveServer) -> None:
    """Always taken and checked; written to docs/screenshots only with REELM_SCREENSHOTS=1."""
    write = os.environ.get("REELM_SCREENSHOTS") == "1"
    page = phone.new_page()
    shots: dict[str, bytes] = {}

    page.goto(live_server.url + "/signup")
    page.fill("input[name=handle]", "maya.skates")
    page.fill("input[name=display_name]", "Maya")
    page.fill("input[name=email]", "maya@example.com")
    page.select_option("select[name=market]", "NZ")
    page.evaluate("document.activeElement.blur()")
    shots["signup"] = page.screenshot()

    # The README's handle; each test session has its own databases, unless a test took it.
    handle = "maya.skates" if not exists(live_server, "maya.skates") else unique_handle("maya")
    sign_up_in_page(page, live_server, handle, display_name="Maya Skates", market="NZ")
    page.goto(live_server.url + "/settings")
    page.fill("textarea[name=bio]", "Skating at dawn in Wellington. New clip every Friday.")
    page.fill("input[name=instagram]", "instagram.com/maya.skates")
    page.fill("input[name=youtube]", "youtube.com/@mayaskates")
    page.fill("input[name=website]", "maya.example.org")
    submit(page, "form[action='/settings/profile']")
    shots["settings"] = page.screenshot()
    page.goto(f"{live_server.url}/@{handle}?welcome=1")
    shots["profile"] = page.screenshot()

    phone.clear_cookies()
    page.goto(live_server.url + "/market")
    page.select_option("select[name=market]", "IN")
    submit(page, "form[action='/market']")
    shots["blocked-451"] = page.screenshot()

    for name, png in shots.items():
        assert png.startswith(b"\x89PNG\r\n\x1a\n"), name
        assert len(png) < 300_000, f"{name}.png is {len(png)} bytes"
        if write:
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            (SCREENSHOTS / f"{name}.png").write_bytes(png)
