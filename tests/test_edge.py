"""The edge: a real HAProxy, configured by `reelm edge config`, in front of two real cells
(`reelm serve --region us` and `--region sg` as separate processes). Each signed-in request is
served by the cell its token names; anonymous ones by either; the country header comes from
the edge's trusted source only; a cell given another region's session sends it home without
reading anything."""

from __future__ import annotations

import contextlib
import hashlib
import secrets
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event

from reelm.accounts import service
from reelm.accounts.errors import NotAuthenticated, SessionElsewhere
from reelm.accounts.models import LoginSession
from reelm.api.gate import SESSION_COOKIE
from reelm.app import create_app
from reelm.bootstrap import Platform, build
from reelm.config import load_settings
from reelm.edge import EdgeConfigError, parse_cell, render
from tests.cells import Cells, running_cells
from tests.conftest import PASSWORD, free_port, signed_in

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"  # Debian's, in /usr/sbin
EDGE_SOURCE = "127.0.0.2"
CDN_HEADER = "X-CDN-Country"  # what the CDN in front of the edge would set


def cookie(token: str) -> dict[str, str]:
    """The session cookie as a browser sends it (per-request cookies are deprecated in httpx)."""
    return {"Cookie": f"{SESSION_COOKIE}={token}"}


@dataclass
class Edge:
    url: str
    cells: Cells
    config: Path


def _wait_port(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"haproxy exited: {log.read_text()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise AssertionError(f"haproxy did not listen: {log.read_text()}")


@contextlib.contextmanager
def haproxy(config_text: str, port: int, where: Path) -> Iterator[None]:
    config = where / "haproxy.cfg"
    config.write_text(config_text)
    log = where / "haproxy.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [HAPROXY, "-f", str(config), "-db"], stdout=out, stderr=subprocess.STDOUT
        )
    try:
        _wait_port(port, process, log)
        yield
    finally:
        process.terminate()  # this process only, by its PID
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def edge(admin_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    root = tmp_path_factory.mktemp("edge")
    # The cells believe forwarded headers (and the country) from the edge's address only.
    with running_cells(
        admin_url, root, ["us", "sg"], {"forwarded_allow_ips": [EDGE_SOURCE]}
    ) as cells:
        port = free_port()
        made = subprocess.run(
            [
                sys.executable,
                "-m",
                "reelm.cli",
                "edge",
                "config",
                *("--cell", f"us={cells.urls['us']}"),
                *("--cell", f"sg={cells.urls['sg']}"),
                *("--bind", f"127.0.0.1:{port}"),
                *("--country-from", CDN_HEADER),
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        assert f"source {EDGE_SOURCE}" in made.stdout
        with haproxy(made.stdout, port, root):
            url = f"http://127.0.0.1:{port}"
            _wait_cells_up(url)
            yield Edge(url, cells, root / "haproxy.cfg")


def _wait_cells_up(url: str) -> None:
    """Until anonymous requests have reached both cells (the edge's health checks passed)."""
    seen: set[str] = set()
    deadline = time.monotonic() + 30
    with httpx.Client(base_url=url, timeout=10) as client:
        while seen != {"us", "sg"}:
            if time.monotonic() > deadline:
                raise AssertionError(f"only {seen} reached through the edge")
            answer = client.get("/healthz")
            if answer.status_code == 200:
                seen.add(answer.headers["x-reelm-cell"])
            time.sleep(0.1)


def sign_up(cells: Cells, region: str, market: str) -> tuple[str, str]:
    """An account made at its home cell, and a session token from there (sign-up and log-in
    name a handle, not a token: the edge cannot tell their cell; see docs/operations.md)."""
    handle = f"edge{region}{secrets.token_hex(3)}"
    with cells.client(region) as client:
        made = client.post(
            "/api/v1/accounts",
            json={
                "handle": handle,
                "display_name": handle,
                "email": f"{handle}@example.com",
                "password": PASSWORD,
                "birth_date": str(date(1990, 5, 17)),
                "market": market,
            },
        )
        assert made.status_code == 201, made.text
        session = client.post("/api/v1/session", json={"identifier": handle, "password": PASSWORD})
        assert session.status_code == 201, session.text
    token: str = session.json()["token"]
    return handle, token


@pytest.fixture(scope="module")
def handles(edge: Edge) -> dict[str, tuple[str, str]]:
    """Per region: an account's handle and a session token of it."""
    return {"us": sign_up(edge.cells, "us", "US"), "sg": sign_up(edge.cells, "sg", "SG")}


@pytest.fixture(scope="module")
def tokens(handles: dict[str, tuple[str, str]]) -> dict[str, str]:
    return {region: token for region, (_, token) in handles.items()}


def test_each_session_is_served_by_its_home_cell(edge: Edge, tokens: dict[str, str]) -> None:
    assert tokens["us"].startswith("us.") and tokens["sg"].startswith("sg.")
    with httpx.Client(base_url=edge.url, timeout=10) as client:
        for _ in range(6):  # round robin would send half of these to the wrong cell
            for region, token in tokens.items():
                by_bearer = client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
                assert by_bearer.status_code == 200, by_bearer.text
                assert by_bearer.headers["x-reelm-cell"] == region
                assert by_bearer.json()["market"] == region.upper()
                page = client.get("/settings", headers=cookie(token))
                assert page.status_code == 200, page.text
                assert page.headers["x-reelm-cell"] == region
        # Anonymous visitors are served by either cell, from the catalog.
        served = {client.get("/about").headers["x-reelm-cell"] for _ in range(6)}
        assert served == {"us", "sg"}


def test_a_log_in_sent_on_by_a_cell_reaches_the_home_cell(
    edge: Edge, handles: dict[str, tuple[str, str]]
) -> None:
    handle, _ = handles["sg"]
    login = {"identifier": handle, "password": PASSWORD}
    with httpx.Client(base_url=edge.url, timeout=10) as client:
        # Unrouted, a log-in reaches either cell; the us cell names the home cell (twice in a
        # row through round robin reaches both).
        answers = [client.post("/api/v1/session", json=login) for _ in range(2)]
        assert {a.headers["x-reelm-cell"] for a in answers} == {"us", "sg"}
        for answer in answers:
            if answer.headers["x-reelm-cell"] == "us":
                assert answer.status_code == 421, answer.text
                assert answer.headers["x-reelm-home-cell"] == "sg"
            else:
                assert answer.status_code == 201, answer.text
        # With the cookie a cell gives a browser it sends on, the edge routes to that cell.
        for _ in range(2):
            pinned = client.post("/api/v1/session", json=login, headers={"Cookie": "reelm_cell=sg"})
            assert pinned.status_code == 201, pinned.text
            assert pinned.headers["x-reelm-cell"] == "sg"


def test_a_forged_country_is_dropped_and_the_trusted_one_gated(edge: Edge) -> None:
    with httpx.Client(base_url=edge.url, timeout=10) as client:
        # India is blocked (451). A visitor claiming it themselves is not believed: the edge
        # drops the header (and would drop one claiming an open market alike).
        for _ in range(4):
            forged = client.get("/about", headers={"CF-IPCountry": "IN"})
            assert forged.status_code == 200, forged.text
        # The edge's trusted source (the CDN's header) is, behind it, on every cell.
        for _ in range(4):
            blocked = client.get("/about", headers={CDN_HEADER: "IN", "CF-IPCountry": "FR"})
            assert blocked.status_code == 451, blocked.text
            api = client.get("/api/v1/users/nobody", headers={CDN_HEADER: "IN"})
            assert api.status_code == 451
            assert api.headers["content-type"] == "application/problem+json"
    # Straight to a cell, not from the edge's address: the country header is not believed.
    with edge.cells.client("us") as direct:
        assert direct.get("/about", headers={"CF-IPCountry": "IN"}).status_code == 200


def test_forwarded_headers_are_the_edges_own(edge: Edge) -> None:
    claim = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9"}
    with httpx.Client(base_url=edge.url, timeout=10) as client:
        # The edge says the visitor came over plain HTTP: no HSTS, whatever the client said.
        answer = client.get("/about", headers=claim)
        assert answer.status_code == 200
        assert "strict-transport-security" not in answer.headers
    with edge.cells.client("us") as direct:
        answer = direct.get("/about", headers=claim)
        assert "strict-transport-security" not in answer.headers
    config = edge.config.read_text()
    assert "http-request set-header X-Forwarded-For %[src]" in config
    assert "http-request del-header CF-IPCountry" in config


def test_a_cell_sends_another_regions_session_home(edge: Edge, tokens: dict[str, str]) -> None:
    """Real processes: the us cell holds nothing of sg's, and says where to go."""
    sg_token = tokens["sg"]
    with edge.cells.client("us") as us:
        page = us.get("/settings?tab=privacy", headers=cookie(sg_token))
        assert page.status_code == 307, page.text
        assert page.headers["location"] == f"{edge.cells.urls['sg']}/settings?tab=privacy"
        assert page.headers["x-reelm-home-cell"] == "sg"
        api = us.get("/api/v1/me", headers={"Authorization": f"Bearer {sg_token}"})
        assert api.status_code == 421, api.text
        assert api.headers["content-type"] == "application/problem+json"
        assert api.json()["region"] == "sg"
        # A write is never redirected (a browser would repeat it elsewhere unasked).
        write = us.post("/logout", headers=cookie(sg_token))
        assert write.status_code == 421


@pytest.fixture(scope="module")
def us_in_process(edge: Edge) -> Iterator[Platform]:
    """The us cell's own configuration, opened in this process (as `reelm serve --region us`
    would), to watch every statement it runs."""
    settings = load_settings(edge.cells.layout.cells["us"].config_file)
    platform = build(settings, upgrade=False, create=False)
    yield platform
    platform.close()


def test_another_regions_token_is_neither_looked_up_nor_decrypted(
    us_in_process: Platform, tokens: dict[str, str], edge: Edge
) -> None:
    platform = us_in_process
    assert not platform.is_local("sg")
    statements: list[str] = []
    engines = [platform.catalog.engine, *(c.db.engine for c in platform.cells.values())]

    def count(*args: Any) -> None:
        statements.append(str(args[2]))

    for engine in engines:
        event.listen(engine, "before_cursor_execute", count)
    try:
        with pytest.raises(SessionElsewhere) as raised:
            service.authenticate(platform, tokens["sg"])
        assert raised.value.region == "sg"
        with TestClient(create_app(platform), base_url="http://127.0.0.1") as client:
            statements.clear()
            page = client.get("/about", headers=cookie(tokens["sg"]), follow_redirects=False)
            api = client.get("/api/v1/me", headers={"Authorization": f"Bearer {tokens['sg']}"})
            # A region this cell has no peer for: 421 even for a page.
            unknown = client.get("/about", headers=cookie(f"au.{'A' * 43}"))
            seen = list(statements)
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", count)
    assert page.status_code == 307
    assert page.headers["location"] == f"{edge.cells.urls['sg']}/about"
    assert api.status_code == 421 and api.json()["region"] == "sg"
    assert unknown.status_code == 421
    assert seen == [], seen  # not one query, in the catalog or the region


# ---- tokens, in one process -------------------------------------------------------------------


def test_tokens_name_their_region_and_nothing_personal(platform: Platform) -> None:
    token, user = signed_in(platform, "tok", market="US")
    region, _, secret = token.partition(".")
    assert region == "us" == user.home_region
    assert user.user_id.hex not in token
    assert len(secret) >= 43
    assert service.authenticate(platform, token).user_id == user.user_id
    forged = f"us.{'A' * len(secret)}"
    with pytest.raises(NotAuthenticated):
        service.authenticate(platform, forged)
    for garbage in ("zz.abc", f"US.{secret}", "us.", f"{'a' * 16}x.{secret}"):
        with pytest.raises(NotAuthenticated):
            service.authenticate(platform, garbage)


def test_a_session_of_the_old_form_still_works(platform: Platform) -> None:
    """Sessions made before tokens named their region (user id first) survive the upgrade."""
    _, user = signed_in(platform, "old", market="CA")
    old = f"{user.user_id.hex}.{secrets.token_urlsafe(32)}"
    cell = platform.cell(user.home_region)
    with cell.db.transaction() as s:
        s.add(
            LoginSession(
                token_hash=hashlib.sha256(old.encode()).digest(),
                user_id=user.user_id,
                user_agent_ct=None,
                expires_at=datetime.now(UTC) + timedelta(days=1),
            )
        )
    again = service.authenticate(platform, old)
    assert again.user_id == user.user_id and again.home_region == "ca"
    with pytest.raises(NotAuthenticated):
        service.authenticate(platform, f"{uuid.uuid4().hex}.{secrets.token_urlsafe(32)}")


def test_one_machine_believes_the_country_unless_told_of_proxies(
    client: TestClient, platform_factory: Callable[..., Platform]
) -> None:
    """The single-machine mode without proxies (the demo) believes the header from anyone (a
    documented gap: there is no edge to set it); told of its proxies, from those only."""
    plain = client.get("/about", headers={"CF-IPCountry": "IN"})
    assert plain.status_code == 451
    assert plain.headers["x-reelm-cell"] == "all"
    behind = platform_factory(forwarded_allow_ips=[EDGE_SOURCE])
    with TestClient(create_app(behind), base_url="https://testserver") as other:
        assert other.get("/about", headers={"CF-IPCountry": "IN"}).status_code == 200


def test_the_documented_example_is_what_the_command_prints() -> None:
    example = Path(__file__).resolve().parent.parent / "docs" / "edge-haproxy.cfg"
    cells = [parse_cell("us=http://127.0.0.1:8001"), parse_cell("sg=http://127.0.0.1:8002")]
    printed = render(cells, cookie="reelm_session", cell_cookie="reelm_cell")
    assert example.read_text() == printed, "regenerate docs/edge-haproxy.cfg (reelm edge config)"


def test_edge_config_refuses_bad_arguments() -> None:
    us = parse_cell("us=http://127.0.0.1:8001")
    assert us.loopback and us.address == "127.0.0.1:8001"
    for spec in [
        "us",
        "US=http://127.0.0.1:1",
        "us=https://127.0.0.1:1",
        "us=http://127.0.0.1:1/path",
        "us=http://u:p@127.0.0.1:1",
        "us=http://127.0.0.1:99999",
        "us=http://bad host:1",
    ]:
        with pytest.raises(EdgeConfigError):
            parse_cell(spec)
    with pytest.raises(EdgeConfigError, match="once"):
        render([us, us], cookie="reelm_session", cell_cookie="reelm_cell")
    with pytest.raises(EdgeConfigError):
        render(
            [us],
            cookie="reelm_session",
            cell_cookie="reelm_cell",
            country_from="X-Bad\nuse_backend x",
        )
    with pytest.raises(EdgeConfigError):
        render([us], cookie="reelm_session", cell_cookie="reelm_cell", bind="127.0.0.1")
    remote = render(
        [parse_cell("us=http://10.0.0.5:8000")], cookie="reelm_session", cell_cookie="reelm_cell"
    )
    assert " source 127." not in remote  # not on loopback: the system picks the edge's address
    assert "set-header CF-IPCountry" not in remote  # no trusted source: no country at all
