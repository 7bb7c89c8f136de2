"""Issue #12, log-in and page hardening: what an attacker tried, and what they get now.

- log-in timing: every refused attempt costs one argon2 run, whether the account exists or not
  (counted through the hasher, not timed: deterministic);
- log-in limits: one count per account whatever the spelling; the owner's known device gets in
  while a stranger is slowed down; X-Forwarded-For only from configured proxies;
- CSRF tokens bound to the session, replaced at log-in;
- links from the configured public address, never from the Host header; unknown hosts refused;
  Cache-Control on anonymous pages; HSTS over HTTPS.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from argon2 import PasswordHasher
from fastapi.testclient import TestClient

from reelm.accounts.errors import BadCredentials
from reelm.accounts.service import SignedUp, log_in
from reelm.app import create_app
from reelm.bootstrap import Platform
from reelm.media.uploads import UploadMeta
from reelm.media.videos import ingest

from . import tus
from .conftest import PASSWORD, serving, signed_in, unique_handle
from .test_api import signup_body
from .test_transcode import FAST_H264, ffmpeg, pattern, tone

API = "/api/v1"
HTTPS = "https://testserver"
TOKEN_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')
FREE = 5  # login_free_attempts by default


def form_token(html: str) -> str:
    found = TOKEN_FIELD.search(html)
    assert found is not None, "the page has no CSRF field"
    return found.group(1)


WRONG = "wrong password"


def attempt(client: TestClient, identifier: str, password: str = WRONG) -> Any:
    return client.post(f"{API}/session", json={"identifier": identifier, "password": password})


# ---- item 4: timing ------------------------------------------------------------------------


@pytest.fixture
def argon2_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every argon2 run (a hash or a verification) by any PasswordHasher, in order."""
    calls: list[str] = []
    real_hash, real_verify = PasswordHasher.hash, PasswordHasher.verify

    def counted_hash(self: PasswordHasher, *args: Any, **kwargs: Any) -> str:
        calls.append("hash")
        return real_hash(self, *args, **kwargs)

    def counted_verify(self: PasswordHasher, *args: Any, **kwargs: Any) -> bool:
        calls.append("verify")
        return real_verify(self, *args, **kwargs)

    monkeypatch.setattr(PasswordHasher, "hash", counted_hash)
    monkeypatch.setattr(PasswordHasher, "verify", counted_verify)
    return calls


def test_every_refused_log_in_costs_one_argon2_run(
    platform: Platform, argon2_calls: list[str], new_user: Callable[..., SignedUp]
) -> None:
    handle = new_user(platform_=platform).handle
    nobody = unique_handle("nobody")
    for identifier in (handle, f"{handle}@example.com", nobody, f"{nobody}@example.com"):
        argon2_calls.clear()
        with pytest.raises(BadCredentials):
            log_in(platform, identifier, "wrong password")
        assert argon2_calls == ["verify"], identifier
    argon2_calls.clear()
    log_in(platform, handle, PASSWORD)
    assert argon2_calls == ["verify"]


def test_email_already_registered_is_counted_like_a_log_in(
    platform_factory: Callable[..., Platform],
) -> None:
    platform = platform_factory(login_rate="2/minute")
    with TestClient(create_app(platform), base_url=HTTPS) as client:
        first = signup_body()
        assert client.post(f"{API}/accounts", json=first).status_code == 201
        for _ in range(2):
            r = client.post(f"{API}/accounts", json=signup_body(email=first["email"]))
            assert r.status_code == 409 and r.json()["type"].endswith("/email-taken"), r.text
        r = client.post(f"{API}/accounts", json=signup_body(email=first["email"].upper()))
        assert r.status_code == 429, r.text
        assert "already" not in r.text
        # A new address is not an answer about anyone: it still signs up.
        assert client.post(f"{API}/accounts", json=signup_body()).status_code == 201


# ---- item 5: log-in limits -----------------------------------------------------------------


def test_handle_and_email_spellings_share_one_count(
    platform_factory: Callable[..., Platform], new_user: Callable[..., SignedUp]
) -> None:
    platform = platform_factory()  # generous per-address rate: only the account's count bites
    handle = new_user(platform_=platform).handle
    spellings = [handle, handle.upper(), f"@{handle}", f"{handle}@example.com"]
    spellings.append(f"{handle.upper()}@EXAMPLE.COM")
    with TestClient(create_app(platform), base_url=HTTPS) as client:
        for i in range(FREE + 1):  # the free attempts, then the first one after them
            assert attempt(client, spellings[i % len(spellings)]).status_code == 401
        r = attempt(client, spellings[(FREE + 1) % len(spellings)])
        assert r.status_code == 429, r.text
        assert 1 <= int(r.headers["retry-after"]) <= 2


def test_the_owner_gets_in_from_a_known_device_while_a_stranger_is_slowed(
    platform_factory: Callable[..., Platform], new_user: Callable[..., SignedUp]
) -> None:
    platform = platform_factory(login_rate="5/minute")
    handle = new_user(platform_=platform).handle
    app = create_app(platform)

    def device(address: str) -> TestClient:
        return TestClient(app, base_url=HTTPS, client=(address, 40000))

    with (
        device("198.51.100.7") as owner,
        device("203.0.113.1") as stranger,
        device("203.0.113.2") as accomplice,
        device("192.0.2.50") as new_phone,
    ):
        r = attempt(owner, handle, PASSWORD)
        assert r.status_code == 201
        assert (
            owner.delete(
                f"{API}/session", headers={"Authorization": f"Bearer {r.json()['token']}"}
            ).status_code
            == 204
        )  # logged out: only the device cookie remains
        # The owner's first log-in was the account's first attempt from an unknown device;
        # the stranger uses the other free ones.
        for _ in range(FREE - 1):
            assert attempt(stranger, f"{handle}@example.com").status_code == 401
        assert attempt(accomplice, handle).status_code == 401  # let through, then the wait
        refused = attempt(accomplice, handle)
        assert refused.status_code == 429

        # The owner's own device is not slowed down by any of it, nor are its typos.
        assert attempt(owner, handle).status_code == 401
        assert attempt(owner, handle, PASSWORD).status_code == 201

        # A device the account does not know waits a short back-off, not a lockout.
        r = attempt(new_phone, handle, PASSWORD)
        assert r.status_code == 429
        wait = int(r.headers["retry-after"])
        assert wait <= 2  # the first wait
        time.sleep(wait + 0.2)
        assert attempt(new_phone, handle, PASSWORD).status_code == 201


def test_a_forged_device_cookie_is_not_a_known_device(
    platform_factory: Callable[..., Platform], new_user: Callable[..., SignedUp]
) -> None:
    platform = platform_factory()
    handle, other = new_user(platform_=platform).handle, new_user(platform_=platform).handle
    with TestClient(create_app(platform), base_url=HTTPS) as client:
        assert attempt(client, other, PASSWORD).status_code == 201  # a cookie for `other` only
        signed = client.cookies["reelm_device"]
        client.cookies.set("reelm_device", signed[:-3] + "AAA")
        for _ in range(FREE + 1):
            assert attempt(client, handle).status_code == 401
        assert attempt(client, handle).status_code == 429
        client.cookies.set("reelm_device", signed)  # genuine, but for another account
        assert attempt(client, handle).status_code == 429


def test_forwarded_for_is_believed_only_from_configured_proxies(
    platform_factory: Callable[..., Platform],
) -> None:
    def codes(platform: Platform) -> list[int]:
        with serving(platform) as url, httpx.Client(base_url=url, timeout=30) as http:
            return [
                http.post(
                    f"{API}/session",
                    json={"identifier": unique_handle("nobody"), "password": "x"},
                    headers={"X-Forwarded-For": f"203.0.113.{i}"},
                ).status_code
                for i in range(4)
            ]

    # Straight from loopback, with no proxy configured: the header is the client's word.
    assert codes(platform_factory(login_rate="3/minute")) == [401, 401, 401, 429]
    trusted = platform_factory(login_rate="3/minute", forwarded_allow_ips=["127.0.0.1"])
    assert codes(trusted) == [401, 401, 401, 401]


# ---- item 8: CSRF --------------------------------------------------------------------------


def test_a_planted_csrf_cookie_and_its_token_fail_on_a_session(platform: Platform) -> None:
    session, _ = signed_in(platform, "victim")
    app = create_app(platform)
    with TestClient(app, base_url=HTTPS) as attacker, TestClient(app, base_url=HTTPS) as victim:
        stolen = form_token(attacker.get("/login").text)
        planted = attacker.cookies["reelm_csrf"]
        victim.cookies.set("reelm_session", session)
        victim.cookies.set("reelm_csrf", planted)
        privacy = {"direct_messages": "everyone", "comments": "everyone"}
        r = victim.post(
            "/settings/privacy", data={"csrf_token": stolen, **privacy}, follow_redirects=False
        )
        assert r.status_code == 403
        r = victim.patch(f"{API}/me", json={"bio": "planted"}, headers={"X-CSRF-Token": stolen})
        assert r.status_code == 403 and r.json()["type"].endswith("/csrf-failed")
        # The victim's own page's token is the one that works.
        own = form_token(victim.get("/settings").text)
        r = victim.post(
            "/settings/privacy", data={"csrf_token": own, **privacy}, follow_redirects=False
        )
        assert r.status_code == 303
        r = victim.patch(f"{API}/me", json={"bio": "mine"}, headers={"X-CSRF-Token": own})
        assert r.status_code == 200


def test_log_in_replaces_the_csrf_token(
    platform: Platform, new_user: Callable[..., SignedUp]
) -> None:
    handle = new_user(platform_=platform).handle
    with TestClient(create_app(platform), base_url=HTTPS) as browser:
        before = form_token(browser.get("/login").text)
        cookie_before = browser.cookies["reelm_csrf"]
        r = browser.post(
            "/login",
            data={"csrf_token": before, "identifier": handle, "password": PASSWORD},
            follow_redirects=False,
        )
        assert r.status_code == 303
        assert browser.cookies["reelm_csrf"] != cookie_before
        r = browser.post(
            "/settings/privacy",
            data={"csrf_token": before, "direct_messages": "everyone", "comments": "everyone"},
            follow_redirects=False,
        )
        assert r.status_code == 403


# ---- item 9: hosts, links, caching ---------------------------------------------------------


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("h3-clip") / "clip.mp4"
    ffmpeg(*pattern("360x640", 1), *tone(1), *FAST_H264, "-c:a", "aac", str(path))
    return path


@pytest.fixture
def public_site(
    platform_factory: Callable[..., Platform], clip: Path
) -> Iterator[tuple[TestClient, uuid.UUID]]:
    platform = platform_factory(
        public_base_url="https://reelm.example", trusted_hosts=["testserver", "127.0.0.1"]
    )
    _, author = signed_in(platform, "og", market="US")
    video = ingest(platform, author, clip, UploadMeta(caption="links #h3"))
    tus.run_jobs(platform, "us")
    with TestClient(create_app(platform), base_url=HTTPS) as client:
        yield client, video


def test_an_unknown_host_is_refused(client: TestClient) -> None:
    r = client.get("/about", headers={"Host": "evil.example"})
    assert r.status_code == 400 and "evil.example" not in r.text
    assert client.get("/about").status_code == 200


def test_links_come_from_the_public_base_url_not_the_host(
    public_site: tuple[TestClient, uuid.UUID],
) -> None:
    client, video = public_site
    refused = client.get(f"/v/{video}", headers={"Host": "evil.example"})
    assert refused.status_code == 400 and "evil.example" not in refused.text
    page = client.get(f"/v/{video}", headers={"Host": "127.0.0.1"})
    assert page.status_code == 200

    def meta(prop: str) -> str:
        found = re.search(rf'<meta property="{prop}" content="([^"]+)"', page.text)
        assert found is not None, prop
        return found.group(1)

    assert meta("og:url") == f"https://reelm.example/v/{video}"
    assert meta("og:image").startswith(f"https://reelm.example/media/v/{video}/")
    assert meta("og:video").startswith(f"https://reelm.example/media/v/{video}/")
    assert f'<link rel="canonical" href="https://reelm.example/v/{video}">' in page.text
    assert "127.0.0.1" not in page.text and "testserver" not in page.text
    about = client.get("/transparency", headers={"Host": "127.0.0.1"})
    assert "reelm audit verify https://reelm.example" in about.text


def test_anonymous_pages_are_private_and_https_is_strict(
    platform_factory: Callable[..., Platform],
) -> None:
    platform = platform_factory()
    token, _ = signed_in(platform, "cache")
    app = create_app(platform)
    with TestClient(app, base_url=HTTPS) as https:
        anonymous = https.get("/about")
        assert anonymous.headers["cache-control"] == "private, no-cache"
        assert anonymous.headers["strict-transport-security"] == "max-age=31536000"
        https.cookies.set("reelm_session", token)
        assert https.get("/about").headers["cache-control"] == "private, no-store"
        static = https.get("/static/reelm.js")
        assert static.status_code == 200 and "cache-control" not in static.headers
    with TestClient(app, base_url="http://testserver") as http:
        assert "strict-transport-security" not in http.get("/about").headers
    # Behind a trusted proxy that says the visitor came over HTTPS.
    behind = platform_factory(forwarded_allow_ips=["127.0.0.1"])
    with serving(behind) as url, httpx.Client(base_url=url, timeout=30) as client:
        plain = client.get("/about")
        proxied = client.get("/about", headers={"X-Forwarded-Proto": "https"})
    assert "strict-transport-security" not in plain.headers
    assert proxied.headers["strict-transport-security"] == "max-age=31536000"
