"""What reaches the logs: residency events of the account lifecycle, refused accesses, staff
reads through the gateway, legal requests; and what users and the public see of them."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from reelm.accounts.lifecycle import purge_due, request_deletion
from reelm.accounts.service import SignedUp, log_in
from reelm.bootstrap import Platform
from reelm.regions.cell import ResidencyViolation
from reelm.transparency import gateway
from reelm.transparency.verify import leaf_hash, open_note, verify_inclusion
from reelm.transparency.views import events_about, pending_about

from .conftest import PASSWORD, log_names


def _integrate(platform: Platform) -> None:
    for cell in platform.cells.values():
        cell.log.integrate_all()


def _kinds(platform: Platform, region: str, names: dict[str, set[str]]) -> list[str]:
    return [e.kind for e in platform.cell(region).log.entries_about(names[region])]


def test_account_lifecycle_is_logged_without_personal_data(
    fresh_platform: Platform, new_user: Callable[..., SignedUp]
) -> None:
    user = new_user(
        "AU", platform_=fresh_platform, email="lifecycle@example.com", display_name="Secret Name"
    )
    # Computed while the account exists: after the purge nobody can (the test checks).
    names = log_names(fresh_platform, user)
    _token, current = log_in(fresh_platform, "lifecycle@example.com", PASSWORD)
    request_deletion(fresh_platform, current)
    log_in(fresh_platform, user.handle, PASSWORD)  # cancels the deletion
    _token, current = log_in(fresh_platform, user.handle, PASSWORD)
    request_deletion(fresh_platform, current)
    purge_due(fresh_platform, at=datetime.now(UTC) + timedelta(days=31))
    purge_due(fresh_platform, at=datetime.now(UTC) + timedelta(days=31))  # logs nothing twice
    _integrate(fresh_platform)
    # Within an hour's batch, entries go in hash order, not in the order they happened.
    assert sorted(_kinds(fresh_platform, "au", names)) == sorted(
        [
            "account.created",
            "account.deletion_requested",
            "account.deletion_cancelled",
            "account.deletion_requested",
            "key.destroyed",
            "account.purged",
        ]
    )
    for entry in fresh_platform.cell("au").log.entries(0, 100):
        text = entry.entry.decode()
        for secret in ("lifecycle", "Secret Name", user.handle):
            assert secret not in text
        event = json.loads(text)
        assert event["region"] == "au"
        assert event["subject"] != str(user.user_id)
    # Nothing about this user in any other region's log.
    for region in ("us", "ca", "nz", "sg"):
        assert _kinds(fresh_platform, region, names) == []
    # The purge destroyed the data key, and with it the log keys: no one can name the user.
    with pytest.raises(LookupError):
        log_names(fresh_platform, user)


def test_refused_cross_region_access_is_logged_where_refused(
    platform: Platform, new_user: Callable[..., SignedUp]
) -> None:
    user = new_user("CA")
    with pytest.raises(ResidencyViolation):
        platform.cell("sg").for_user(user.user_id, "ca")
    _integrate(platform)
    assert platform.cell("sg").log.entries_about(str(user.user_id)) == []
    refused = platform.cell("sg").log.entries_about(log_names(platform, user)["sg"])
    assert [e.kind for e in refused] == ["residency.refused"]
    details = json.loads(refused[0].entry)["details"]
    assert details == {"home_region": "ca", "asked_region": "sg"}


def _bearer(platform: Platform, handle: str) -> dict[str, str]:
    token, _user = log_in(platform, handle, PASSWORD)
    return {"Authorization": f"Bearer {token}"}


def test_staff_read_needs_a_justification_and_is_logged(
    platform: Platform, client: TestClient, new_user: Callable[..., SignedUp]
) -> None:
    staff = new_user("US")
    outsider = new_user("US")
    target = new_user("NZ", email="target.person@example.com")
    gateway.grant(platform, staff.user_id, "support")
    staff_auth = _bearer(platform, staff.handle)
    url = "/api/v1/staff/access"

    refused = client.post(url, json={"user_id": str(target.user_id)}, headers=staff_auth)
    assert refused.status_code == 422
    assert refused.json()["type"] == "/problems/justification-required"
    not_staff = client.post(
        url,
        json={
            "user_id": str(target.user_id),
            "justification": {"ticket": "SUP-1", "reason_code": "user_request"},
        },
        headers=_bearer(platform, outsider.handle),
    )
    assert not_staff.status_code == 403
    bad_ticket = client.post(
        url,
        json={
            "user_id": str(target.user_id),
            "justification": {
                "ticket": "mail target.person@example.com",
                "reason_code": "user_request",
            },
        },
        headers=staff_auth,
    )
    assert bad_ticket.status_code == 422
    _integrate(platform)
    assert "staff.read" not in _kinds(platform, "nz", log_names(platform, target))

    granted = client.post(
        url,
        json={
            "user_id": str(target.user_id),
            "justification": {"ticket": "SUP-4242", "reason_code": "user_request"},
        },
        headers=staff_auth,
    )
    assert granted.status_code == 200, granted.text
    assert granted.json()["email"] == "target.person@example.com"
    # Queued before the read; the user sees it waiting for its batch window to close.
    waiting = pending_about(platform, target.user_id)
    assert [e.kind for e in waiting] == ["staff.read"]
    assert waiting[0].event["time"].endswith(":00:00.000000Z")
    _integrate(platform)
    assert pending_about(platform, target.user_id) == []
    reads = [
        e
        for e in platform.cell("nz").log.entries_about(log_names(platform, target)["nz"])
        if e.kind == "staff.read"
    ]
    assert len(reads) == 1
    details = json.loads(reads[0].entry)["details"]
    assert details["ticket"] == "SUP-4242"
    assert details["reason_code"] == "user_request"
    assert details["staff"] == str(staff.user_id)

    # The user sees it, with a proof that verifies against the signed checkpoint.
    events = [e for e in events_about(platform, target.user_id) if e.kind == "staff.read"]
    assert len(events) == 1
    event = events[0]
    checkpoint = open_note(event.checkpoint, platform.cell("nz").log.verifier_key)
    verify_inclusion(
        event.index,
        checkpoint.size,
        leaf_hash(reads[0].entry),
        [base64.b64decode(p) for p in event.proof],
        checkpoint.root,
    )
    token, _ = log_in(platform, target.handle, PASSWORD)
    client.cookies.set("reelm_session", token)
    page = client.get("/settings/transparency", headers={"Accept": "text/html"})
    assert page.status_code == 200
    assert "SUP-4242" in page.text
    assert "staff.read" in page.text
    assert "user_request" in page.text


def test_legal_requests_and_the_public_report(
    fresh_platform: Platform, new_user: Callable[..., SignedUp], monkeypatch: pytest.MonkeyPatch
) -> None:
    user = new_user("US", platform_=fresh_platform)
    s = fresh_platform.settings
    monkeypatch.setenv("REELM_ADMIN_DATABASE_URL", s.admin_database_url or "")
    monkeypatch.setenv("REELM_DATABASE_PREFIX", s.database_prefix)
    monkeypatch.setenv("REELM_DATA_DIR", str(s.data_dir))
    from reelm.cli import app

    result = CliRunner().invoke(
        app,
        [
            "legal",
            "record",
            "--authority",
            "US District Court, N.D. Cal.",
            "--kind",
            "subpoena",
            "--reference",
            "5:26-mc-80001",
            "--user",
            user.handle,
            "--outcome",
            "rejected",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "us log" in result.output
    bad = CliRunner().invoke(
        app,
        [
            "legal",
            "record",
            "--authority",
            "x\ny",
            "--kind",
            "rumour",
            "--reference",
            "1",
        ],
    )
    assert bad.exit_code == 2

    from reelm.app import create_app

    # The command leaves it to the hour's batch (tests/test_tlog_db.py); publish it now.
    _integrate(fresh_platform)
    with TestClient(create_app(fresh_platform), base_url="https://testserver") as c:
        page = c.get("/transparency/us", headers={"Accept": "text/html"})
        assert page.status_code == 200
        assert "Legal requests recorded" in page.text
        counts = fresh_platform.cell("us").log.counts(10_000)
        assert counts == {"account.created": 1, "legal.request": 1}
        assert "covering its first" in page.text
        index = c.get("/transparency", headers={"Accept": "text/html"})
        assert index.status_code == 200
        assert "/transparency/sg" in index.text
        checkpoint = c.get("/transparency/us/checkpoint")
        assert checkpoint.text.startswith("reelm.localhost/us\n2\n")


def test_rotated_log_keys_name_new_entries_and_find_old_ones(
    platform: Platform, new_user: Callable[..., SignedUp]
) -> None:
    from reelm.accounts.logsubject import rotate

    staff = new_user("US")
    user = new_user("CA")
    gateway.grant(platform, staff.user_id, "support")
    why = gateway.Justification(ticket="SUP-77", reason_code="user_request")
    gateway.staff_read(platform, staff.user_id, user.user_id, why)
    rotate(platform.cell("ca").for_user(user.user_id, "ca"))
    gateway.staff_read(platform, staff.user_id, user.user_id, why)
    _integrate(platform)
    reads = [e for e in events_about(platform, user.user_id) if e.kind == "staff.read"]
    # Two reads in one month: before the rotation they would share a name; now they do not.
    assert len(reads) == 2
    assert reads[0].event["subject"] != reads[1].event["subject"]


def test_the_operator_ties_entries_to_an_account_only_under_a_logged_legal_request(
    platform: Platform, new_user: Callable[..., SignedUp]
) -> None:
    user = new_user("NZ")
    request = gateway.LegalRequest(
        authority="NZ Police", kind="court_order", reference="CRI-2026-1", outcome="disclosed"
    )
    _integrate(platform)
    found = gateway.entries_under_legal_request(platform, request, user.user_id)
    kinds = [e.kind for e in found]
    assert "account.created" in kinds
    # The request itself is logged first, about the user: they see it on their own page.
    assert [e.kind for e in pending_about(platform, user.user_id)] == ["legal.request"]
    _integrate(platform)
    logged = [e for e in events_about(platform, user.user_id) if e.kind == "legal.request"]
    assert [e.event["details"]["reference"] for e in logged] == ["CRI-2026-1"]
