"""Bad input gets an RFC 9457 problem, never a 500, never the password back, and writes
nothing: row counts in the catalog and every region, and the key stores, stay as they were."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from reelm.accounts.models import Account, DirectoryEntry, PublicProfile
from reelm.bootstrap import Platform
from tests.conftest import PASSWORD, unique_handle

API = "/api/v1"
PROBLEM_JSON = "application/problem+json"
SECRET = "Sup3r-Secret-Passw0rd!"  # every bad sign-up carries it; no answer may contain it


def counts(platform: Platform) -> dict[str, int]:
    found: dict[str, int] = {}
    with platform.catalog.transaction() as s:
        found["directory"] = s.scalar(select(func.count()).select_from(DirectoryEntry)) or 0
        found["profiles"] = s.scalar(select(func.count()).select_from(PublicProfile)) or 0
    for region, cell in platform.cells.items():
        with cell.db.transaction() as s:
            found[region] = s.scalar(select(func.count()).select_from(Account)) or 0
        found[f"{region}.keys"] = len(list((cell.keys.directory / "users").glob("*.key")))
    return found


@pytest.fixture
def unchanged(platform: Platform) -> Iterator[None]:
    """The test must leave every count as it found it."""
    before = counts(platform)
    yield
    assert counts(platform) == before


def good_body(**fields: Any) -> dict[str, Any]:
    handle = unique_handle("bad")
    return {
        "handle": handle,
        "display_name": "Bad Input",
        "email": f"{handle}@example.com",
        "password": SECRET,
        "birth_date": "1990-01-01",
        "market": "US",
        **fields,
    }


def check_problem(
    response: Any, status: int | tuple[int, ...], slug: str | None = None
) -> dict[str, Any]:
    statuses = status if isinstance(status, tuple) else (status,)
    assert response.status_code in statuses, response.text
    assert response.headers["content-type"] == PROBLEM_JSON, response.text
    body: dict[str, Any] = response.json()
    assert body["status"] == response.status_code
    assert body["type"].startswith("/problems/") and body["title"] and body["detail"]
    if slug is not None:
        assert body["type"] == f"/problems/{slug}", body
    assert SECRET not in response.text
    return body


def post_json(client: TestClient, path: str, body: Any, **headers: str) -> Any:
    """Send exactly this JSON (ensure_ascii keeps lone surrogates and NULs as escapes)."""
    return client.post(
        path,
        content=json.dumps(body).encode(),
        headers={"content-type": "application/json", **headers},
    )


# ---- the body itself -----------------------------------------------------------------------


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize(
    ("raw", "content_type"),
    [
        (b'{"handle": "maya", ', "application/json"),
        (b"{'handle': 'maya'}", "application/json"),
        (b"\xff\xfe\x00garbage", "application/json"),
        (b"", "application/json"),
        (b"null", "application/json"),
        (b"[]", "application/json"),
        (b'"just a string"', "application/json"),
        (b"12345", "application/json"),
        (b"[" * 20_000 + b"]" * 20_000, "application/json"),
        (b'{"handle": NaN}', "application/json"),
    ],
)
def test_malformed_json(client: TestClient, raw: bytes, content_type: str) -> None:
    r = client.post(f"{API}/accounts", content=raw, headers={"content-type": content_type})
    check_problem(r, (400, 422), "invalid-input")


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/xml",
    ],
)
def test_wrong_content_type_415(client: TestClient, content_type: str) -> None:
    raw = json.dumps(good_body()).encode()
    r = client.post(f"{API}/accounts", content=raw, headers={"content-type": content_type})
    check_problem(r, 415, "unsupported-media-type")


def test_json_with_charset_or_problem_suffix_is_fine(client: TestClient) -> None:
    for content_type in ("application/json; charset=utf-8", "application/merge-patch+json"):
        raw = json.dumps(good_body()).encode()
        r = client.post(f"{API}/accounts", content=raw, headers={"content-type": content_type})
        assert r.status_code == 201, r.text


@pytest.mark.usefixtures("unchanged")
def test_huge_body_413(client: TestClient) -> None:
    huge = good_body(bio="x" * 1_000_000)
    r = post_json(client, f"{API}/accounts", huge)
    check_problem(r, 413, "body-too-large")


@pytest.mark.usefixtures("unchanged")
def test_chunked_body_without_length_413(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"handle": "chunky", "bio": "'
        for _ in range(64):
            yield b"x" * 16_384
        yield b'"}'

    r = client.post(
        f"{API}/accounts", content=chunks(), headers={"content-type": "application/json"}
    )
    assert "content-length" not in r.request.headers
    check_problem(r, 413, "body-too-large")


@pytest.mark.usefixtures("unchanged")
def test_lying_content_length(client: TestClient) -> None:
    r = client.post(
        f"{API}/accounts",
        content=b"{}",
        headers={"content-type": "application/json", "content-length": "99999999999"},
    )
    check_problem(r, 413, "body-too-large")


# ---- fields --------------------------------------------------------------------------------

LONG = "x" * 10_000

BAD_SIGN_UPS: dict[str, dict[str, Any]] = {
    # missing and extra fields, wrong types
    "missing handle": {"handle": None},
    "missing password": {"password": None},
    "missing birth date": {"birth_date": None},
    "extra field": {"is_admin": True},
    "extra home region": {"home_region": "us"},
    "handle is a number": {"handle": 12345},
    "handle is a list": {"handle": ["maya"]},
    "market is an object": {"market": {"code": "US"}},
    # huge values
    "10k handle": {"handle": LONG},
    "10k display name": {"display_name": LONG},
    "10k email": {"email": LONG + "@example.com"},
    "10k password": {"password": LONG},
    "10k phone": {"phone": "1" * 10_000},
    "10k market": {"market": LONG},
    "huge integer date": {"birth_date": 10**100},
    # odd Unicode
    "NUL in handle": {"handle": "ma\u0000ya"},
    "NUL in display name": {"display_name": "Ma\u0000ya"},
    "NUL in email": {"email": "ma\u0000ya@example.com"},
    "NUL in password": {"password": "pass\u0000word123"},
    "NUL in phone": {"phone": "+1 650 253 \u00000000"},
    "NUL in market": {"market": "U\u0000"},
    "lone surrogate in display name": {"display_name": "Maya \ud800"},
    "lone surrogate in password": {"password": "pass\udfffword123"},
    "RTL override handle": {"handle": "maya\u202egpj"},
    "zero-width joiner handle": {"handle": "ma\u200dya"},
    "emoji handle": {"handle": "maya😀"},
    "Cyrillic handle": {"handle": "m\u0430ya"},
    "invisible display name": {"display_name": "\u200b\u202e\u200d "},
    "empty display name": {"display_name": "   "},
    # SQL injection where it cannot be valid anyway
    "SQL in handle": {"handle": "robert'); DROP TABLE profiles;--"},
    "SQL in email": {"email": "x@example.com'; DROP TABLE accounts;--"},
    "SQL in market": {"market": "' OR 1=1 --"},
    # dates
    "not a date": {"birth_date": "yesterday"},
    "30 February": {"birth_date": "2001-02-30"},
    "month 13": {"birth_date": "2001-13-01"},
    "year 0001": {"birth_date": "0001-01-01"},
    "year 9999": {"birth_date": "9999-12-31"},
    "next_year": {"birth_date": (date.today() + timedelta(days=400)).isoformat()},
    "year 0": {"birth_date": "0000-01-01"},
    # phone, email, market
    "invalid phone": {"phone": "12345"},
    "letters phone": {"phone": "call me maybe"},
    "too short a phone": {"phone": "+1 650"},
    "no at sign": {"email": "maya.example.com"},
    "two at signs": {"email": "maya@@example.com"},
    "no domain": {"email": "maya@"},
    "spaces in email": {"email": "ma ya@example.com"},
    "unknown market": {"market": "ZZ"},
    "three-letter market": {"market": "USA"},
    "short password": {"password": "short"},
    "reserved handle": {"handle": "Admin"},
    "full-width reserved handle": {"handle": "ＡＤＭＩＮ"},
}


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize("change", BAD_SIGN_UPS.values(), ids=list(BAD_SIGN_UPS))
def test_bad_sign_up_field(client: TestClient, change: dict[str, Any]) -> None:
    body = good_body()
    for key, value in change.items():
        if value is None:
            body.pop(key)
        else:
            body[key] = value
    r = post_json(client, f"{API}/accounts", body)
    problem = check_problem(r, 422, None)
    assert problem["type"] in ("/problems/invalid-input", "/problems/unknown-market")
    # The problem names the field at fault.
    named = {problem.get("field")} | {e.get("field") for e in problem.get("errors", [])}
    field = next(iter(change))
    assert any(n and n.split(".")[0] == field for n in named), problem


@pytest.mark.usefixtures("unchanged")
def test_extra_field_is_named(client: TestClient) -> None:
    r = post_json(client, f"{API}/accounts", good_body(is_admin=True))
    problem = check_problem(r, 422, "invalid-input")
    assert problem["errors"][0]["field"] == "is_admin"


@pytest.mark.usefixtures("unchanged")
def test_password_is_never_echoed(client: TestClient) -> None:
    """Errors about the password itself, or about other fields of a body holding it."""
    cases = [
        good_body(password=SECRET + "x" * 300),
        good_body(password=SECRET, extra=SECRET),
        good_body(password=SECRET, handle=SECRET),
        good_body(password=SECRET, email=SECRET),
        good_body(password=SECRET, display_name=SECRET * 20),
        good_body(password=SECRET, market=SECRET),
        good_body(password=SECRET, birth_date=SECRET),
        good_body(password=SECRET, phone=SECRET),
        good_body(password=[SECRET]),
        good_body(password={"value": SECRET}),
    ]
    for body in cases:
        check_problem(post_json(client, f"{API}/accounts", body), 422)
    for body in [
        {"identifier": "someone", "password": SECRET, "remember": True},
        {"identifier": SECRET * 20, "password": SECRET},
        {"identifier": "someone", "password": SECRET * 20},
        {"identifier": "someone", "password": [SECRET]},
    ]:
        check_problem(post_json(client, f"{API}/session", body), 422, "invalid-input")
    r = post_json(client, f"{API}/session", {"identifier": "someone", "password": SECRET})
    check_problem(r, 401, "bad-credentials")


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize(
    "body",
    [
        {},
        {"identifier": "maya"},
        {"password": PASSWORD},
        {"identifier": "", "password": PASSWORD},
        {"identifier": "maya", "password": ""},
        {"identifier": "x" * 10_000, "password": PASSWORD},
        {"identifier": "maya", "password": "\ud800" * 10},
        {"identifier": "ma\u0000ya", "password": PASSWORD},
        {"identifier": "maya", "password": PASSWORD, "token": "x"},
    ],
)
def test_bad_login_bodies(client: TestClient, body: dict[str, Any]) -> None:
    check_problem(post_json(client, f"{API}/session", body), 422, "invalid-input")


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize(
    "identifier",
    ["' OR '1'='1", "admin'--", "maya@example.com' OR 1=1 --", "@", "@@", "\u202e", "😀"],
)
def test_injection_in_login_is_just_a_wrong_login(client: TestClient, identifier: str) -> None:
    r = post_json(client, f"{API}/session", {"identifier": identifier, "password": PASSWORD})
    check_problem(r, 401, "bad-credentials")


def test_sql_and_unicode_that_are_valid_are_stored_verbatim(
    client: TestClient, platform: Platform
) -> None:
    """Text that looks like an attack but is valid is data: stored and returned as sent."""
    handle = unique_handle("odd")
    email = f"x'or'1'='1.{handle}@example.com"
    r = post_json(
        client, f"{API}/accounts", good_body(handle=handle, email=email, password=PASSWORD)
    )
    assert r.status_code == 201, r.text
    r = post_json(client, f"{API}/session", {"identifier": email.upper(), "password": PASSWORD})
    assert r.status_code == 201, r.text
    auth = {"Authorization": f"Bearer {r.json()['token']}"}
    family = "\U0001f469\u200d\U0001f469\u200d\U0001f467"
    patch = {
        "display_name": f"Robert'); DROP TABLE profiles;-- {family}",
        "bio": "'; DELETE FROM accounts; -- שלום مرحبا 😀 \u202eevil\u202c",
    }
    r = client.patch(f"{API}/me", headers=auth, json=patch)
    assert r.status_code == 200, r.text
    profile = r.json()["profile"]
    assert profile["display_name"] == patch["display_name"]  # the joiners survive
    assert profile["bio"] == "'; DELETE FROM accounts; -- שלום مرحبا 😀 evil"  # overrides do not
    assert client.get(f"{API}/users/{handle}").json()["bio"] == profile["bio"]
    assert counts(platform)["profiles"] >= 1  # the tables are still there


# ---- PATCH /me -----------------------------------------------------------------------------


@pytest.fixture
def me(client: TestClient) -> dict[str, str]:
    body = good_body(password=PASSWORD)
    assert post_json(client, f"{API}/accounts", body).status_code == 201
    r = post_json(client, f"{API}/session", {"identifier": body["handle"], "password": PASSWORD})
    return {"Authorization": f"Bearer {r.json()['token']}"}


BAD_LINKS = [
    {"website": "javascript:alert(1)"},
    {"website": "JavaScript://example.com/%0Aalert(1)"},
    {"website": "data:text/html,<script>alert(1)</script>"},
    {"website": "data:text/html;base64,PHNjcmlwdD4="},
    {"website": "vbscript:msgbox(1)"},
    {"website": "file:///etc/passwd"},
    {"website": "ftp://example.com/file"},
    {"website": "https://user:pass@example.com/"},
    {"website": "https://user@example.com/"},
    {"website": "https://@example.com/"},
    {"website": "https://example.com:8080/"},
    {"website": "https://localhost/"},
    {"website": "https://127.0.0.1/"},
    {"website": "https://[::1]/"},
    {"website": "https://exa mple.com/"},
    {"website": "https://exa<script>mple.com/"},
    {"website": "https://example.com/\u0000"},
    {"website": "https://exa\u0000mple.com/"},
    {"website": "https://example.com/\u202egpj.exe"},
    {"website": "https://example.com/a\nb"},
    {"website": "https://" + "a" * 64 + ".com/"},
    {"website": "https://-example.com/"},
    {"website": "https://example.123/"},
    {"website": "https://"},
    {"instagram": "https://evil.com/instagram.com/maya"},
    {"instagram": "https://instagram.com.evil.com/maya"},
    {"instagram": "https://evilinstagram.com/maya"},
    {"instagram": "https://instagram.com/"},
    {"instagram": "https://instagram.com/maya/posts/123"},
    {"instagram": "https://instagram.com@evil.com/maya"},
    {"instagram": "javascript:alert(1)//instagram.com/maya"},
    {"youtube": "https://youtube.com.evil.com/@maya"},
    {"youtube": "https://youtu.be/abcdefghijk"},
    {"youtube": "https://www.youtube.com/watch?v=abcdefghijk"},
    {"youtube": "https://youtube.com/channel/short"},
    {"youtube": "https://youtube.com:444/@maya"},
    {"tiktok": "https://tiktok.com/@maya"},
    {"website": "x" * 10_000},
]


@pytest.mark.parametrize("links", BAD_LINKS, ids=[repr(link)[:60] for link in BAD_LINKS])
def test_bad_links(
    client: TestClient, me: dict[str, str], unchanged: None, links: dict[str, str]
) -> None:
    before = client.get(f"{API}/me", headers=me).json()
    r = client.patch(
        f"{API}/me",
        content=json.dumps({"display_name": "Changed", "links": links}).encode(),
        headers={**me, "content-type": "application/json"},
    )
    problem = check_problem(r, 422, "invalid-input")
    assert problem["errors"][0]["field"].startswith("links")
    assert client.get(f"{API}/me", headers=me).json() == before


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ({"website": "Example.COM"}, {"website": "https://example.com"}),
        ({"website": "http://example.com/a/b/"}, {"website": "https://example.com/a/b"}),
        ({"website": "https://bücher.example/"}, {"website": "https://xn--bcher-kva.example"}),
        ({"website": "https://example.com/<x>"}, {"website": "https://example.com/%3Cx%3E"}),
        ({"website": "  https://example.com/?q=1#frag  "}, {"website": "https://example.com?q=1"}),
        (
            {"instagram": "instagram.com/Maya.Skates"},
            {"instagram": "https://instagram.com/Maya.Skates"},
        ),
        (
            {"instagram": "https://www.instagram.com/maya/?hl=en"},
            {"instagram": "https://www.instagram.com/maya"},
        ),
        (
            {"youtube": "m.youtube.com/@maya_skates"},
            {"youtube": "https://m.youtube.com/@maya_skates"},
        ),
        ({"website": "", "instagram": ""}, {}),
    ],
)
def test_links_normalised(
    client: TestClient, me: dict[str, str], given: dict[str, str], stored: dict[str, str]
) -> None:
    r = client.patch(f"{API}/me", headers=me, json={"links": given})
    assert r.status_code == 200, r.text
    assert r.json()["profile"]["links"] == stored


BAD_PATCHES: list[Any] = [
    {"display_name": LONG},
    {"display_name": ""},
    {"display_name": "\u0000"},
    {"display_name": "Maya\u0000"},
    {"display_name": "\ud83d"},
    {"bio": LONG},
    {"bio": "b" * 161},
    {"bio": "nul \u0000 inside"},
    {"bio": 42},
    {"handle": "newhandle"},
    {"email": "new@example.com"},
    {"birth_date": "2000-01-01"},
    {"market": "CA"},
    {"privacy": {"private_account": "yes please"}},
    {"privacy": {"direct_messages": "friends"}},
    {"privacy": {"direct_messages": "everyone\u0000"}},
    {"privacy": {"unknown": True}},
    {"privacy": "private"},
    {"links": "https://example.com"},
    {"links": {"website": 42}},
    [],
    "me",
]


@pytest.mark.parametrize("patch", BAD_PATCHES, ids=[repr(p)[:40] for p in BAD_PATCHES])
def test_bad_patch_changes_nothing(
    client: TestClient, me: dict[str, str], unchanged: None, patch: Any
) -> None:
    before = client.get(f"{API}/me", headers=me).json()
    r = client.patch(
        f"{API}/me",
        content=json.dumps(patch).encode(),
        headers={**me, "content-type": "application/json"},
    )
    check_problem(r, 422, "invalid-input")
    assert client.get(f"{API}/me", headers=me).json() == before


def test_patch_needs_json_and_a_session(
    client: TestClient, me: dict[str, str], unchanged: None
) -> None:
    r = client.patch(
        f"{API}/me", content=b"display_name=x", headers={**me, "content-type": "text/plain"}
    )
    check_problem(r, 415, "unsupported-media-type")
    r = client.patch(f"{API}/me", json={"display_name": "x"})
    check_problem(r, 401, "not-authenticated")
    r = client.patch(
        f"{API}/me", content=b"{not json", headers={**me, "content-type": "application/json"}
    )
    problem = check_problem(r, 422, "invalid-input")
    assert "JSON" in problem["detail"]


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize("path", [f"{API}/users/{'x' * 101}", f"{API}/users/%F0%9F%98%80%00"])
def test_odd_paths(client: TestClient, path: str) -> None:
    check_problem(client.get(path), (404, 422))


def test_chunked_form_to_a_page_is_capped_too(client: TestClient) -> None:
    """Bodies read by pages (forms) pass the same limit: a 413, not a 500."""

    def chunks() -> Iterator[bytes]:
        yield b"identifier=maya&password="
        for _ in range(10):
            yield b"x" * 16_384

    r = client.post(
        "/login", content=chunks(), headers={"content-type": "application/x-www-form-urlencoded"}
    )
    assert r.status_code == 413, r.text
