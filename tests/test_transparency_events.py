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
from reelm.transparency.views import events_about

from .conftest import PASSWORD


def _integrate(platform: Platform) -> None:
    for cell in platform.cells.values():
        cell.log.integrate_all()


def _kinds(platform: Platform, region: str, user: SignedUp) -> list[str]:
    return [e.kind for e in platform.cell(region).log.entries_about(str(user.user_id))]


def test_account_lifecycle_is_logged_without_personal_data(
    fresh_platform: Platform, new_user: Callable[..., SignedUp]
) -> None:
    user = new_user(
        "AU", platform_=fresh_platform, email="lifecycle@example.com", display_name="Secret Name"
    )
    _token, current = log_in(fresh_platform, "lifecycle@example.com", PASSWORD)
    request_deletion(fresh_platform, current)
    log_in(fresh_platform, user.handle, PASSWORD)  # cancels the deletion
    _token, current = log_in(fresh_platform, user.handle, PASSWORD)
    request_deletion(fresh_platform, current)
    purge_due(fresh_platform, at=datetime.now(UTC) + timedelta(days=31))
    purge_due(fresh_platform, at=datetime.now(UTC) + timedelta(days=31))  # logs nothing twice
    _integrate(fresh_platform)
    assert _kinds(fresh_platform, "au", user) == [
        "account.created",
        "account.deletion_requested",
        "account.deletion_cancelled",
        "account.deletion_requested",
        "key.destroyed",
        "account.purged",
    ]
    for entry in fresh_platform.cell("au").log.entries(0, 100):
        text = entry.entry.decode()
        for secret in ("lifecycle", "Secret Name", user.handle):
            assert secret not in text
        event = json.loads(text)
        assert event["region"] == "au"
    # Nothing about this user in any other region's log.
    for region in ("us", "ca", "nz", "sg"):
        assert _kinds(fresh_platform, region, user) == []


def test_refused_cross_region_access_is_logged_where_refused(
    platform: Platform, new_user: Callable[..., SignedUp]
) -> None:
    user = new_user("CA")
    with pytest.raises(ResidencyViolation):
        platform.cell("sg").for_user(user.user_id, "ca")
    _integrate(platform)
    refused = platform.cell("sg").log.entries_about(str(user.user_id))
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
    assert "staff.read" not in _kinds(platform, "nz", target)

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
    _integrate(platform)
    reads = [
        e
        for e in platform.cell("nz").log.entries_about(str(target.user_id))
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
