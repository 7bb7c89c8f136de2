"""The JSON API v1 over HTTP (Starlette's TestClient against the real app and PostgreSQL)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from reelm.accounts import lifecycle
from reelm.accounts.models import Account, DirectoryEntry, LoginSession, PublicProfile
from reelm.api import accounts as accounts_api
from reelm.app import create_app
from reelm.bootstrap import Platform
from tests.conftest import PASSWORD, unique_handle

API = "/api/v1"
PROBLEM_JSON = "application/problem+json"
REGIONS = {"US": "us", "CA": "ca", "AU": "au", "NZ": "nz", "FR": "sg"}


# ---- helpers -------------------------------------------------------------------------------


def born(years: int, days: int = 0) -> date:
    """The birth date of someone exactly `years` old today, moved `days` later (younger)."""
    today = date.today()
    try:
        birthday = today.replace(year=today.year - years)
    except ValueError:  # 29 February
        birthday = today.replace(year=today.year - years, day=28)
    return birthday + timedelta(days=days)


def signup_body(market: str = "US", **fields: Any) -> dict[str, Any]:
    handle = fields.pop("handle", None) or unique_handle("api")
    return {
        "handle": handle,
        "display_name": "API User",
        "email": f"{handle}@example.com",
        "password": PASSWORD,
        "birth_date": "1990-01-01",
        "market": market,
        **fields,
    }


def assert_problem(response: Any, status: int, slug: str) -> dict[str, Any]:
    """An RFC 9457 problem with a stable type; returns its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    body: dict[str, Any] = response.json()
    assert body["type"] == f"/problems/{slug}"
    assert body["status"] == status
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["detail"], str) and body["detail"]
    return body


class ApiUser:
    """A signed-up account and its bearer token, seen from the API."""

    def __init__(self, client: TestClient, body: dict[str, Any], created: dict[str, Any]) -> None:
        self.client = client
        self.body = body
        self.handle: str = created["handle"]
        self.id = uuid.UUID(created["id"])
        self.home_region: str = created["home_region"]
        self.token = ""

    def log_in(self, identifier: str | None = None) -> str:
        r = self.client.post(
            f"{API}/session",
            json={"identifier": identifier or self.handle, "password": PASSWORD},
        )
        assert r.status_code == 201, r.text
        self.token = r.json()["token"]
        return self.token

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture
def signed_up(client: TestClient) -> Callable[..., ApiUser]:
    def make(market: str = "US", *, log_in: bool = True, **fields: Any) -> ApiUser:
        body = signup_body(market, **fields)
        r = client.post(f"{API}/accounts", json=body)
        assert r.status_code == 201, r.text
        account = ApiUser(client, body, r.json())
        if log_in:
            account.log_in()
        return account

    return make


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


# ---- sign-up -------------------------------------------------------------------------------


@pytest.mark.parametrize(("market", "region"), sorted(REGIONS.items()))
def test_create_account(client: TestClient, platform: Platform, market: str, region: str) -> None:
    body = signup_body(market.lower() if market == "NZ" else market)
    r = client.post(f"{API}/accounts", json=body)
    assert r.status_code == 201, r.text
    created = r.json()
    assert set(created) == {"id", "handle", "home_region"}
    assert created["handle"] == body["handle"] and created["home_region"] == region
    with platform.cell(region).db.transaction() as s:
        assert s.get(Account, uuid.UUID(created["id"])) is not None
    assert PASSWORD not in r.text


def test_handle_and_email_are_normalised(
    client: TestClient, signed_up: Callable[..., ApiUser]
) -> None:
    handle = unique_handle("norm")
    account = signed_up(handle=f"  @{handle.upper()} ", email=f"{handle.upper()}@EXAMPLE.com")
    assert account.handle == handle
    me = client.get(f"{API}/me", headers=account.auth).json()
    assert me["email"] == f"{handle}@example.com"
    account.log_in(f"{handle.upper()}@Example.COM")


# ---- sessions ------------------------------------------------------------------------------


def test_session_by_handle_and_email_and_logout(
    client: TestClient, signed_up: Callable[..., ApiUser]
) -> None:
    account = signed_up("CA", log_in=False)
    r = client.post(f"{API}/session", json={"identifier": account.handle, "password": PASSWORD})
    assert r.status_code == 201
    session = r.json()
    assert session["token_type"] == "bearer"
    assert session["user"] == {
        "id": str(account.id),
        "handle": account.handle,
        "home_region": "ca",
    }
    by_handle = session["token"]
    by_email = account.log_in(account.body["email"])
    assert by_email != by_handle
    for token in (by_handle, by_email):
        r = client.get(f"{API}/me", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200 and r.json()["profile"]["handle"] == account.handle

    r = client.delete(f"{API}/session", headers={"Authorization": f"Bearer {by_handle}"})
    assert r.status_code == 204 and r.content == b""
    r = client.get(f"{API}/me", headers={"Authorization": f"Bearer {by_handle}"})
    body = assert_problem(r, 401, "not-authenticated")
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert "Bearer" in body["detail"]
    assert_problem(
        client.delete(f"{API}/session", headers={"Authorization": f"Bearer {by_handle}"}),
        401,
        "not-authenticated",
    )
    # The other session lives on.
    assert (
        client.get(f"{API}/me", headers={"Authorization": f"Bearer {by_email}"}).status_code == 200
    )


def test_wrong_password_and_unknown_user_look_the_same(
    client: TestClient, signed_up: Callable[..., ApiUser]
) -> None:
    account = signed_up(log_in=False)
    secret = "Not-The-Password-42"
    wrong = client.post(f"{API}/session", json={"identifier": account.handle, "password": secret})
    unknown = client.post(
        f"{API}/session", json={"identifier": unique_handle("ghost"), "password": secret}
    )
    a = assert_problem(wrong, 401, "bad-credentials")
    b = assert_problem(unknown, 401, "bad-credentials")
    assert a == b
    assert secret not in wrong.text and secret not in unknown.text


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer garbage",
        "Bearer ",
        "Bearer " + "x" * 5000,
        f"Bearer {uuid.uuid4().hex}.{'a' * 43}",
        "Basic dXNlcjpwYXNz",
        "bearer",
    ],
)
def test_garbage_token_is_401(client: TestClient, authorization: str) -> None:
    r = client.get(f"{API}/me", headers={"Authorization": authorization})
    assert_problem(r, 401, "not-authenticated")


def test_expired_token_is_401(
    client: TestClient, platform: Platform, signed_up: Callable[..., ApiUser]
) -> None:
    account = signed_up("AU")
    assert client.get(f"{API}/me", headers=account.auth).status_code == 200
    with platform.cell("au").db.transaction() as s:
        s.execute(
            update(LoginSession)
            .where(LoginSession.user_id == account.id)
            .values(expires_at=datetime.now(UTC) - timedelta(minutes=1))
        )
    assert_problem(client.get(f"{API}/me", headers=account.auth), 401, "not-authenticated")


# ---- me ------------------------------------------------------------------------------------


def test_me_read_and_patch(client: TestClient, signed_up: Callable[..., ApiUser]) -> None:
    account = signed_up("FR", phone="+33 6 12 34 56 78")
    me = client.get(f"{API}/me", headers=account.auth).json()
    assert me["email"] == account.body["email"]
    assert me["phone"] == "+33612345678"
    assert me["birth_date"] == "1990-01-01" and me["market"] == "FR"
    assert me["privacy_locked"] is False and me["deletion_due"] is None
    assert me["privacy"] == {
        "private_account": False,
        "direct_messages": "followers",
        "comments": "everyone",
        "show_following_list": True,
        "suggest_to_others": True,
    }
    assert me["profile"]["home_region"] == "sg" and me["profile"]["links"] == {}
    raw = client.get(f"{API}/me", headers=account.auth).text
    assert PASSWORD not in raw and "argon2" not in raw and "password" not in raw

    r = client.patch(
        f"{API}/me",
        headers=account.auth,
        json={
            "display_name": " Chloé \u202e ",
            "bio": "Paris, croissants 🥐",
            "links": {
                "instagram": "https://www.instagram.com/chloe.paris/",
                "youtube": "youtube.com/channel/UC" + "a" * 22,
                "website": "chloe.example.fr",
            },
            "privacy": {"comments": "followers", "suggest_to_others": False},
        },
    )
    assert r.status_code == 200, r.text
    me = r.json()
    profile = me["profile"]
    assert profile["display_name"] == "Chloé" and profile["bio"] == "Paris, croissants 🥐"
    assert profile["links"] == {
        "instagram": "https://www.instagram.com/chloe.paris",
        "youtube": "https://youtube.com/channel/UC" + "a" * 22,
        "website": "https://chloe.example.fr",
    }
    assert me["privacy"]["comments"] == "followers"
    assert me["privacy"]["suggest_to_others"] is False
    assert me["privacy"]["direct_messages"] == "followers"  # untouched

    # An empty PATCH changes nothing; a partial one only what it names.
    assert client.patch(f"{API}/me", headers=account.auth, json={}).json() == me
    r = client.patch(f"{API}/me", headers=account.auth, json={"bio": ""})
    assert r.json()["profile"]["bio"] == "" and r.json()["profile"]["links"] == profile["links"]

    public = client.get(f"{API}/users/{account.handle}").json()
    assert public["display_name"] == "Chloé" and public["links"] == profile["links"]


def test_privacy_mirrors_is_private_to_public_profile(
    client: TestClient, signed_up: Callable[..., ApiUser]
) -> None:
    account = signed_up()
    r = client.patch(f"{API}/me", headers=account.auth, json={"privacy": {"private_account": True}})
    assert r.status_code == 200 and r.json()["profile"]["is_private"] is True
    assert client.get(f"{API}/users/{account.handle}").json()["is_private"] is True


# ---- age rules -----------------------------------------------------------------------------


def test_under_13_refused_nothing_written(client: TestClient, platform: Platform) -> None:
    before = counts(platform)
    for birth in (born(13, 1), born(12, -100), born(5)):
        r = client.post(f"{API}/accounts", json=signup_body(birth_date=birth.isoformat()))
        body = assert_problem(r, 403, "age-restricted")
        assert body["field"] == "birth_date"
    assert counts(platform) == before


def test_13_to_15_private_no_dms_locked(
    client: TestClient, signed_up: Callable[..., ApiUser]
) -> None:
    for birth in (born(13), born(15, -200)):
        account = signed_up(birth_date=birth.isoformat())
        me = client.get(f"{API}/me", headers=account.auth).json()
        assert me["privacy_locked"] is True
        assert me["privacy"]["private_account"] is True
        assert me["privacy"]["direct_messages"] == "no_one"
        assert client.get(f"{API}/users/{account.handle}").json()["is_private"] is True
        for privacy in (
            {"private_account": False},
            {"direct_messages": "followers"},
            {"direct_messages": "everyone", "private_account": True},
        ):
            r = client.patch(
                f"{API}/me",
                headers=account.auth,
                json={"display_name": "Changed", "privacy": privacy},
            )
            assert assert_problem(r, 403, "setting-locked")["field"] in privacy
        after = client.get(f"{API}/me", headers=account.auth).json()
        assert after == me  # nothing of the refused PATCH was written
        r = client.patch(
            f"{API}/me",
            headers=account.auth,
            json={"privacy": {"private_account": True, "comments": "no_one"}},
        )
        assert r.status_code == 200 and r.json()["privacy"]["comments"] == "no_one"


def test_16_17_private_by_default_can_change(
    client: TestClient, signed_up: Callable[..., ApiUser]
) -> None:
    for birth in (born(16), born(17, -300)):
        account = signed_up("NZ", birth_date=birth.isoformat())
        me = client.get(f"{API}/me", headers=account.auth).json()
        assert me["privacy"]["private_account"] is True and me["privacy_locked"] is False
        assert me["privacy"]["direct_messages"] == "followers"
        r = client.patch(
            f"{API}/me",
            headers=account.auth,
            json={"privacy": {"private_account": False, "direct_messages": "everyone"}},
        )
        assert r.status_code == 200, r.text
        assert r.json()["privacy"]["private_account"] is False
        assert client.get(f"{API}/users/{account.handle}").json()["is_private"] is False


def test_adults_public_by_default(client: TestClient, signed_up: Callable[..., ApiUser]) -> None:
    for birth in (born(18), born(40, -123)):
        account = signed_up("AU", birth_date=birth.isoformat())
        me = client.get(f"{API}/me", headers=account.auth).json()
        assert me["privacy"]["private_account"] is False and me["privacy_locked"] is False
        assert client.get(f"{API}/users/{account.handle}").json()["is_private"] is False


# ---- duplicates ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("maya{n}", "maya{n}"),
        ("maya{n}", "Maya{n}"),
        ("maya{n}", "ＭＡＹＡ{n}"),
        ("alice{n}", "a1ice{n}"),
        ("maya{n}", "rnaya{n}"),
        ("modern{n}", "modem{n}"),
        ("bob{n}", "b0b{n}"),
    ],
)
def test_duplicate_handle_409(
    client: TestClient, platform: Platform, first: str, second: str
) -> None:
    n = uuid.uuid4().hex[:6].replace("0", "x").replace("1", "y")
    r = client.post(f"{API}/accounts", json=signup_body(handle=first.format(n=n)))
    assert r.status_code == 201, r.text
    before = counts(platform)
    r = client.post(
        f"{API}/accounts",
        json=signup_body("CA", handle=second.format(n=n), email=f"other{n}@example.com"),
    )
    assert assert_problem(r, 409, "handle-taken")["field"] == "handle"
    assert counts(platform) == before


def test_duplicate_email_409(client: TestClient, platform: Platform) -> None:
    email = f"{unique_handle('dup')}@example.com"
    assert client.post(f"{API}/accounts", json=signup_body(email=email)).status_code == 201
    before = counts(platform)
    for market, variant in (("US", email.upper()), ("AU", email.title()), ("BR", email)):
        r = client.post(f"{API}/accounts", json=signup_body(market, email=variant))
        body = assert_problem(r, 409, "email-taken")
        assert body["field"] == "email" and PASSWORD not in r.text
    assert counts(platform) == before


def test_duplicate_phone_409(client: TestClient, platform: Platform) -> None:
    phone = "+1 650-253-0000"
    assert client.post(f"{API}/accounts", json=signup_body(phone=phone)).status_code == 201
    before = counts(platform)
    r = client.post(f"{API}/accounts", json=signup_body(phone="(650) 253-0000"))
    assert assert_problem(r, 409, "phone-taken")["field"] == "phone"
    assert counts(platform) == before


def test_handle_race_over_http(client: TestClient, platform: Platform) -> None:
    handle = unique_handle("httprace")
    markets = ["US", "CA", "AU", "NZ", "FR", "DE", "US", "CA"]
    barrier = threading.Barrier(8)

    def attempt(i: int) -> Any:
        body = signup_body(markets[i], handle=handle, email=f"{handle}.{i}@example.com")
        barrier.wait()
        return client.post(f"{API}/accounts", json=body)

    before = counts(platform)
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(attempt, range(8)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201] + [409] * 7, [r.text for r in responses]
    for r in responses:
        if r.status_code == 409:
            assert_problem(r, 409, "handle-taken")
    winner = next(r.json() for r in responses if r.status_code == 201)
    region = winner["home_region"]
    changes = {k: v - before[k] for k, v in counts(platform).items() if v != before[k]}
    assert changes == {"directory": 1, "profiles": 1, region: 1, f"{region}.keys": 1}


# ---- public profiles, deletion, purge ------------------------------------------------------


def test_public_profile(client: TestClient, signed_up: Callable[..., ApiUser]) -> None:
    account = signed_up("CA", display_name="Tofu Chef")
    for spelling in (account.handle, account.handle.upper(), f"@{account.handle}"):
        r = client.get(f"{API}/users/{spelling}")
        assert r.status_code == 200, r.text
        public = r.json()
        assert public["handle"] == account.handle and public["display_name"] == "Tofu Chef"
        assert public["home_region"] == "ca"
    # Nothing protected in a public profile, and not the account id: it is the subject of the
    # user's transparency-log entries, and must not be linkable to the handle by anyone.
    assert str(account.id) not in r.text
    assert set(public) == {
        "handle",
        "display_name",
        "bio",
        "links",
        "is_private",
        "home_region",
        "created_at",
    }
    assert account.body["email"] not in r.text


@pytest.mark.parametrize(
    "handle",
    ["no_such_user_here", "x", "admin", "%E2%80%AE", "' OR '1'='1", "a" * 100, "%00"],
)
def test_unknown_user_404(client: TestClient, handle: str) -> None:
    assert_problem(client.get(f"{API}/users/{handle}"), 404, "not-found")


def test_deletion_flow(client: TestClient, signed_up: Callable[..., ApiUser]) -> None:
    account = signed_up("US")
    first = account.token
    second = account.log_in(account.body["email"])
    r = client.delete(f"{API}/me", headers=account.auth)
    assert r.status_code == 202, r.text
    due = datetime.fromisoformat(r.json()["deletion_due"])
    assert timedelta(days=29) < due - datetime.now(UTC) <= timedelta(days=30)
    # Every session ended; the profile is hidden.
    for token in (first, second):
        r = client.get(f"{API}/me", headers={"Authorization": f"Bearer {token}"})
        assert_problem(r, 401, "not-authenticated")
    assert_problem(client.get(f"{API}/users/{account.handle}"), 404, "not-found")
    # Logging in within the grace period cancels the deletion.
    account.log_in()
    me = client.get(f"{API}/me", headers=account.auth).json()
    assert me["deletion_due"] is None
    assert client.get(f"{API}/users/{account.handle}").status_code == 200


def test_purge_after_grace_period(platform_factory: Callable[..., Platform]) -> None:
    platform = platform_factory()
    with TestClient(create_app(platform), base_url="https://testserver") as client:
        body = signup_body("NZ")
        created = client.post(f"{API}/accounts", json=body).json()
        user_id = uuid.UUID(created["id"])
        token = client.post(
            f"{API}/session", json={"identifier": body["handle"], "password": PASSWORD}
        ).json()["token"]
        assert (
            client.delete(f"{API}/me", headers={"Authorization": f"Bearer {token}"}).status_code
            == 202
        )
        cell = platform.cell("nz")

        assert lifecycle.purge_due(platform) == []
        later = datetime.now(UTC) + timedelta(days=31)
        assert lifecycle.purge_due(platform, at=later) == [user_id]
        assert lifecycle.purge_due(platform, at=later) == []
        assert not cell.keys.has_data_key(user_id)
        with cell.db.transaction() as s:
            assert s.get(Account, user_id) is None
        with platform.catalog.transaction() as s:
            assert s.get(PublicProfile, user_id) is None

        for identifier in (body["handle"], body["email"]):
            r = client.post(f"{API}/session", json={"identifier": identifier, "password": PASSWORD})
            assert_problem(r, 401, "bad-credentials")
        assert_problem(client.get(f"{API}/users/{body['handle']}"), 404, "not-found")


# ---- 451 -----------------------------------------------------------------------------------


@pytest.mark.parametrize("market", ["IN", "in", "CN"])
def test_sign_up_in_blocked_market_451(client: TestClient, platform: Platform, market: str) -> None:
    before = counts(platform)
    r = client.post(f"{API}/accounts", json=signup_body(market))
    body = assert_problem(r, 451, "unavailable-for-legal-reasons")
    assert body["market"] == market.upper() and body["authority"]
    assert 'rel="blocked-by"' in r.headers["link"]
    assert counts(platform) == before


@pytest.mark.parametrize("country", ["IN", "in", "CN"])
@pytest.mark.parametrize(
    ("method", "path", "json"),
    [
        ("GET", f"{API}/openapi.json", None),
        ("GET", f"{API}/me", None),
        ("GET", f"{API}/users/someone", None),
        ("POST", f"{API}/accounts", {"handle": "x"}),
        ("POST", f"{API}/session", {"identifier": "x", "password": "y"}),
        ("DELETE", f"{API}/session", None),
        ("GET", f"{API}/no-such-route", None),
    ],
)
def test_blocked_visitor_gets_451_everywhere(
    client: TestClient, country: str, method: str, path: str, json: Any
) -> None:
    r = client.request(method, path, json=json, headers={"CF-IPCountry": country})
    body = assert_problem(r, 451, "unavailable-for-legal-reasons")
    assert body["market"] == country.upper()
    link = r.headers["link"]
    assert 'rel="blocked-by"' in link and "/problems/unavailable-for-legal-reasons" in link


def test_health_stays_reachable_and_open_markets_pass(client: TestClient) -> None:
    r = client.get("/healthz", headers={"CF-IPCountry": "IN"})
    assert r.status_code == 200
    assert r.json() == {
        "status": "ok",
        "databases": {"catalog": "ok", "us": "ok", "ca": "ok", "au": "ok", "nz": "ok", "sg": "ok"},
    }
    for country in ("US", "FR", "XX", ""):
        r = client.get(f"{API}/users/nobody_at_all", headers={"CF-IPCountry": country})
        assert_problem(r, 404, "not-found")


# ---- rate limits ---------------------------------------------------------------------------


def test_rate_limits(platform_factory: Callable[..., Platform]) -> None:
    platform = platform_factory(signup_rate="3/minute", login_rate="3/minute")
    with TestClient(create_app(platform), base_url="https://testserver") as client:
        bodies = [signup_body() for _ in range(4)]
        for body in bodies[:3]:
            assert client.post(f"{API}/accounts", json=body).status_code == 201
        before = counts(platform)
        r = client.post(f"{API}/accounts", json=bodies[3])
        assert_problem(r, 429, "rate-limited")
        assert 1 <= int(r.headers["retry-after"]) <= 60
        assert counts(platform) == before

        login = {"identifier": bodies[0]["handle"], "password": "wrong password"}
        for _ in range(3):
            assert_problem(client.post(f"{API}/session", json=login), 401, "bad-credentials")
        login["password"] = PASSWORD
        r = client.post(f"{API}/session", json=login)
        assert_problem(r, 429, "rate-limited")
        assert 1 <= int(r.headers["retry-after"]) <= 60
        assert "wrong password" not in r.text and PASSWORD not in r.text


# ---- concurrency ---------------------------------------------------------------------------


def test_parallel_patches_and_logins(client: TestClient, signed_up: Callable[..., ApiUser]) -> None:
    accounts = [signed_up(m) for m in ("US", "CA", "AU", "NZ", "FR")]

    def work(i: int) -> tuple[int, str]:
        account = accounts[i % len(accounts)]
        if i % 2:
            r = client.post(
                f"{API}/session", json={"identifier": account.handle, "password": PASSWORD}
            )
        else:
            r = client.patch(
                f"{API}/me",
                headers=account.auth,
                json={
                    "display_name": f"Name {i}",
                    "bio": f"bio {i}",
                    "privacy": {"private_account": bool(i % 4)},
                },
            )
        return r.status_code, r.text

    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(work, range(40)))
    assert all(status in (200, 201) for status, _ in results), results
    for account in accounts:
        me = client.get(f"{API}/me", headers=account.auth).json()
        n = int(me["profile"]["display_name"].removeprefix("Name "))
        assert me["profile"]["bio"] in {f"bio {i}" for i in range(0, 40, 2)}
        assert n % len(accounts) == accounts.index(account) % len(accounts)


# ---- HTTP details and the OpenAPI document -------------------------------------------------


def test_method_not_allowed_says_what_is(client: TestClient) -> None:
    r = client.put(f"{API}/me")
    assert_problem(r, 405, "method-not-allowed")
    assert set(r.headers["allow"].replace(" ", "").split(",")) == {"GET", "PATCH", "DELETE"}
    r = client.get(f"{API}/accounts")
    assert_problem(r, 405, "method-not-allowed")
    assert r.headers["allow"] == "POST"


def test_unknown_route_404_problem(client: TestClient) -> None:
    assert_problem(client.get(f"{API}/nothing/here"), 404, "not-found")


def test_unexpected_error_is_a_problem_too(
    platform: Platform, signed_up: Callable[..., ApiUser], monkeypatch: pytest.MonkeyPatch
) -> None:
    account = signed_up()

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("internal detail: password=hunter2 at 10.0.0.7")

    monkeypatch.setattr(lifecycle, "get_me", broken)
    with TestClient(
        create_app(platform), base_url="https://testserver", raise_server_exceptions=False
    ) as c:
        r = c.get(f"{API}/me", headers=account.auth)
    assert_problem(r, 500, "server-error")
    assert "hunter2" not in r.text and "10.0.0.7" not in r.text


def test_problem_type_pages_exist(client: TestClient) -> None:
    for slug in ("invalid-input", "handle-taken", "unavailable-for-legal-reasons"):
        r = client.get(f"/problems/{slug}")
        assert r.status_code == 200 and "<h1>" in r.text
    assert client.get("/problems/no-such-thing").status_code == 404


def test_openapi_documents_every_route_and_problems(client: TestClient) -> None:
    r = client.get(f"{API}/openapi.json")
    assert r.status_code == 200
    doc = r.json()
    paths = doc["paths"]
    routes = [
        route
        for route in [*accounts_api.router.routes, *client.app.routes]  # type: ignore[attr-defined]
        if isinstance(route, APIRoute) and route.include_in_schema
    ]
    assert {route.path for route in routes} >= {
        f"{API}/accounts",
        f"{API}/session",
        f"{API}/me",
        f"{API}/users/{{handle}}",
        "/healthz",
    }
    for route in routes:
        assert route.path in paths, f"{route.path} is not documented"
        for method in route.methods:
            operation = paths[route.path][method.lower()]
            if not route.path.startswith(API):
                continue
            responses = operation["responses"]
            assert "451" in responses, f"{method} {route.path}: no 451"
            for code, response in responses.items():
                if int(code) < 400:
                    continue
                content = response["content"]
                assert list(content) == [PROBLEM_JSON], f"{method} {route.path} {code}"
                schema = content[PROBLEM_JSON]["schema"]
                assert {"type", "title", "status", "detail"} <= set(schema["required"])
    me = paths[f"{API}/me"]
    assert {"401", "403", "422"} <= set(me["patch"]["responses"])
    assert "401" in me["get"]["responses"]
    assert {"409", "403", "413", "415", "422", "429"} <= set(
        paths[f"{API}/accounts"]["post"]["responses"]
    )
    assert {"401", "429"} <= set(paths[f"{API}/session"]["post"]["responses"])
    assert "404" in paths[f"{API}/users/{{handle}}"]["get"]["responses"]
