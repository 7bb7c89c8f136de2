"""The inter-cell protocol between cells as separate OS processes (tests/cells.py): cells `us`
and `sg`, each with its own configuration, credentials and worker. What one cell's user does
to the other's reaches them through a signed delivery, sent by the actor's cell's worker."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import httpx2 as httpx
import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy.engine import make_url

from reelm.intercell import signing, transport
from reelm.regions.deployment import read_config
from tests.cells import Cells, running_cells, start_cell, stop_cell
from tests.test_cells import log_in, sign_up


@pytest.fixture(scope="module")
def cells(admin_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cells]:
    with running_cells(admin_url, tmp_path_factory.mktemp("icells"), ["us", "sg"]) as running:
        yield running


def _user(cells: Cells, region: str, handle: str, market: str) -> tuple[str, str]:
    """A new account at its home cell: its id and a bearer token."""
    made = sign_up(cells, region, handle, market)
    return str(made["id"]), log_in(cells, region, handle)


def _unread(cells: Cells, region: str, token: str) -> int:
    with cells.client(region) as client:
        answer = client.get(
            "/api/v1/me/notifications/unread", headers={"Authorization": f"Bearer {token}"}
        )
    assert answer.status_code == 200, answer.text
    count: int = answer.json()["unread"]
    return count


def _wait_unread(cells: Cells, region: str, token: str, at_least: int) -> float:
    started = time.monotonic()
    while time.monotonic() - started < 60:
        if _unread(cells, region, token) >= at_least:
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"no notification reached the {region} user")


def test_a_follow_request_to_a_private_account_in_another_cell(cells: Cells) -> None:
    _, sam = _user(cells, "us", "icsam", "US")
    _, mei = _user(cells, "sg", "icmei", "SG")
    auth_mei = {"Authorization": f"Bearer {mei}"}
    auth_sam = {"Authorization": f"Bearer {sam}"}
    with cells.client("sg") as sg:
        private = sg.patch(
            "/api/v1/me", json={"privacy": {"private_account": True}}, headers=auth_mei
        )
        assert private.status_code == 200, private.text
    with cells.client("us") as us:
        asked = us.post("/api/v1/users/icmei/follow", headers=auth_sam)
        assert asked.status_code == 200, asked.text
        assert asked.json()["state"] == "requested"
    # The us cell's worker delivers the request's notification to the sg cell.
    _wait_unread(cells, "sg", mei, 1)
    with cells.client("sg") as sg:
        notes = sg.get("/api/v1/me/notifications", headers=auth_mei).json()
        assert [n["kind"] for n in notes] == ["follow_request"]
        assert notes[0]["actor"]["handle"] == "icsam"
        approved = sg.post(
            "/api/v1/me/follow-requests/icsam", json={"approve": True}, headers=auth_mei
        )
        assert approved.status_code == 204, approved.text
    # And the sg cell's worker tells the us user their request was accepted.
    _wait_unread(cells, "us", sam, 1)
    with cells.client("us") as us:
        notes = us.get("/api/v1/me/notifications", headers=auth_sam).json()
        assert [n["kind"] for n in notes] == ["follow_accepted"]


def test_forged_and_wrong_cell_deliveries_are_refused(cells: Cells) -> None:
    us_id, _ = _user(cells, "us", "icforge", "US")
    sg_id, mei = _user(cells, "sg", "icvictim", "SG")
    before = _unread(cells, "sg", mei)

    def put(key: Ed25519PrivateKey, acting_for: str) -> httpx.Response:
        ident = uuid.uuid4()
        raw = transport.envelope(
            ident,
            "us",
            "sg",
            "notification",
            uuid.UUID(acting_for),
            {"recipient": sg_id, "event": {"kind": "follow", "actor": acting_for}, "once": None},
        )
        url = f"{cells.urls['sg']}/cell/v1/deliveries/{ident}"
        headers = signing.sign(key, "us", "PUT", url, raw)
        return httpx.put(url, content=raw, headers=headers, timeout=10)

    # Not signed by the us cell's key.
    assert put(Ed25519PrivateKey.generate(), us_id).status_code == 401
    assert _unread(cells, "sg", mei) == before
    # Signed by the us cell's own key, but for a user who is not homed in us.
    from reelm.intercell import identity

    us_key = identity.load_or_create(cells.layout.cells["us"].data_dir / "secrets" / "identity.key")
    assert put(us_key, sg_id).status_code == 403
    assert _unread(cells, "sg", mei) == before
    # The same key for its own user goes through (the checks above refused only the forgeries).
    assert put(us_key, us_id).status_code == 200
    assert _unread(cells, "sg", mei) == before + 1


def test_a_cell_that_is_down_gets_its_deliveries_when_it_is_back(cells: Cells) -> None:
    _, sam = _user(cells, "us", "icdown", "US")
    _, mei = _user(cells, "sg", "icdownsg", "SG")
    stop_cell(cells, "sg")
    try:
        with cells.client("us") as us:
            followed = us.post(
                "/api/v1/users/icdownsg/follow", headers={"Authorization": f"Bearer {sam}"}
            )
            assert followed.status_code == 200, followed.text
        # The us worker tries, fails, and keeps the delivery for its next try.
        url = make_url(
            read_config(cells.layout.cells["us"].config_file)["regions"]["us"]["database_url"]
        )
        conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
        deadline = time.monotonic() + 30
        attempts = 0
        while attempts < 1 and time.monotonic() < deadline:
            time.sleep(0.2)
            with psycopg.connect(conninfo) as conn:
                row = conn.execute("SELECT max(attempts) FROM intercell_outbox").fetchone()
            attempts = (row[0] if row else None) or 0
        assert attempts >= 1
    finally:
        start_cell(cells, "sg")
    waited = _wait_unread(cells, "sg", mei, 1)
    print(f"delivered {waited:.1f} s after the sg cell came back")
