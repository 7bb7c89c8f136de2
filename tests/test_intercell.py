"""The inter-cell protocol (reelm.intercell): signatures, the receiver's checks, delivery once,
and a peer that is down losing nothing.

The HTTP tests run two platforms over the same databases: a sender whose settings list ``sg``
as a peer (so it reaches ``sg`` only over HTTP, as a cell would), and a receiver, served by a
real uvicorn on a loopback port, whose settings list ``us`` as a peer with the sender's public
key."""

from __future__ import annotations

import datetime
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient
from sqlalchemy import func, select, text, update

from reelm.accounts.service import SignedUp
from reelm.bootstrap import Platform, build
from reelm.config import PeerSettings
from reelm.intercell import delivery, identity, signing, transport
from reelm.intercell.models import Outbox, Receipt, SentCount
from reelm.intercell.receiver import REFUSED_KIND, forget_receipts
from reelm.social import notify
from reelm.social.models import Notification
from reelm.transparency.models import LogQueue

from .conftest import free_port, serving, signed_in
from .tus import run_jobs

URL = "http://127.0.0.1:1/cell/v1/deliveries/"


# ---- signatures (pure) -----------------------------------------------------------------------


def _signed(key: Ed25519PrivateKey, region: str = "us", body: bytes = b'{"a":1}', **kw: Any):
    return signing.sign(key, region, "PUT", URL + "x", body, **kw)


def test_signature_verifies_and_names_its_cell() -> None:
    key = Ed25519PrivateKey.generate()
    headers = _signed(key)
    # The authority is not covered: a proxy in front of the receiver changes it.
    got = signing.verify(
        headers.items(),
        "PUT",
        "https://sg.example/cell/v1/deliveries/x",
        b'{"a":1}',
        {"us": key.public_key()},
    )
    assert got.region == "us"
    assert len(got.nonce) >= 16
    assert 'keyid="us"' in headers["Signature-Input"]
    assert "content-digest" in headers["Signature-Input"]


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ("body", "bad-signature"),
        ("path", "bad-signature"),
        ("method", "bad-signature"),
        ("wrong_key", "bad-signature"),
        ("other_cells_key_id", "bad-signature"),
        ("unknown_key_id", "unknown-cell"),
        ("stale", "bad-signature"),
        ("future", "bad-signature"),
        ("digest_header", "bad-signature"),
    ],
)
def test_signature_refusals(change: str, reason: str) -> None:
    us, sg = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    peers = {"us": us.public_key(), "sg": sg.public_key()}
    body, method, url = b'{"a":1}', "PUT", URL + "x"
    created = None
    if change == "stale":
        created = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=310)
    if change == "future":
        created = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=60)
    signer = Ed25519PrivateKey.generate() if change == "wrong_key" else us
    # Signed with us's key but claiming to be sg: sg's key does not verify it.
    region = {"other_cells_key_id": "sg", "unknown_key_id": "ca"}.get(change, "us")
    headers = signing.sign(signer, region, method, url, body, created=created)
    if change == "body":
        body = b'{"a":2}'
    if change == "path":
        url = URL + "y"
    if change == "method":
        method = "POST"
    if change == "digest_header":
        headers["Content-Digest"] = "sha-256=:" + "A" * 43 + "=:"
    with pytest.raises(signing.Refused) as refused:
        signing.verify(headers.items(), method, url, body, peers)
    assert refused.value.status == 401
    assert refused.value.reason == reason


def test_public_keys_round_trip_and_bad_ones_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "secrets" / "identity.key"
    key = identity.load_or_create(path)
    assert path.stat().st_mode & 0o777 == 0o600
    # A second start reads the same key.
    again = identity.load_or_create(path)
    text_key = identity.encode_public(key.public_key())
    assert text_key == identity.encode_public(again.public_key())
    assert len(text_key) == 43
    PeerSettings(base_url="http://127.0.0.1:9", public_key=text_key)
    with pytest.raises(ValueError, match="32 bytes"):
        identity.decode_public("AAAA")


# ---- two cells over HTTP ---------------------------------------------------------------------


@dataclass
class Cells:
    sender: Platform  # us's cell (sg is a peer)
    receiver: Platform  # sg's cell (us is a peer)
    port: int
    us_key: Ed25519PrivateKey
    us_user: SignedUp
    sg_user: SignedUp

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
def cells(
    platform_factory: Callable[..., Platform],
    tmp_path: Path,
    new_user: Callable[..., SignedUp],
) -> Iterator[Cells]:
    us_key = identity.load_or_create(tmp_path / "us.key")
    sg_key = identity.load_or_create(tmp_path / "sg.key")
    port = free_port()
    sender = platform_factory(
        identity_key_file=tmp_path / "us.key",
        peers={
            "sg": {
                "base_url": f"http://127.0.0.1:{port}",
                "public_key": identity.encode_public(sg_key.public_key()),
            }
        },
    )
    receiver = build(
        sender.settings.model_copy(
            update={
                "identity_key_file": tmp_path / "sg.key",
                "peers": {
                    "us": PeerSettings(
                        base_url="http://127.0.0.1:9",
                        public_key=identity.encode_public(us_key.public_key()),
                    )
                },
            }
        ),
        upgrade=False,
    )
    try:
        yield Cells(
            sender,
            receiver,
            port,
            us_key,
            new_user("US", platform_=sender),
            new_user("FR", platform_=sender),
        )
    finally:
        receiver.close()


def _notes(platform: Platform, user: SignedUp) -> int:
    with platform.cell(user.home_region).db.transaction() as s:
        return int(s.scalar(select(func.count()).where(Notification.user_id == user.user_id)) or 0)


def _refusals(platform: Platform) -> int:
    """Refusals logged by the receiver's regions (with one region a cell, its own log)."""
    total = 0
    for region, cell in platform.cells.items():
        if delivery.is_local(platform, region):
            with cell.db.transaction() as s:
                total += s.scalar(select(func.count()).where(LogQueue.kind == REFUSED_KIND)) or 0
    return total


def _receipts(platform: Platform, region: str) -> int:
    with platform.cell(region).db.transaction() as s:
        return int(s.scalar(select(func.count()).select_from(Receipt)) or 0)


def _outbox(platform: Platform, region: str) -> list[Outbox]:
    with platform.cell(region).db.transaction() as s:
        rows = list(s.scalars(select(Outbox)))
        s.expunge_all()
        return rows


def _follow_envelope(c: Cells, ident: uuid.UUID, **changes: Any) -> bytes:
    body = {
        "recipient": str(c.sg_user.user_id),
        "event": {"kind": "follow", "actor": str(c.us_user.user_id)},
        "once": None,
    }
    fields: dict[str, Any] = {
        "delivery_id": ident,
        "sender": "us",
        "region": "sg",
        "kind": "notification",
        "acting_for": c.us_user.user_id,
        "body": body,
        **changes,
    }
    return transport.envelope(**fields)


def _put(
    c: Cells,
    ident: uuid.UUID,
    raw: bytes,
    *,
    key: Ed25519PrivateKey | None = None,
    region: str = "us",
    headers: dict[str, str] | None = None,
) -> httpx2.Response:
    url = f"{c.url}/cell/v1/deliveries/{ident}"
    signed = headers or signing.sign(key or c.us_key, region, "PUT", url, raw)
    return httpx2.put(url, content=raw, headers=signed, timeout=10)


def test_a_notification_crosses_to_the_other_cell_once(cells: Cells) -> None:
    c = cells
    with serving(c.receiver, c.port):
        assert notify.send(c.sender, c.sg_user.user_id, "follow", c.us_user.user_id)
        # Queued in the sender's region, not written in sg's database by the sender.
        assert _notes(c.sender, c.sg_user) == 0
        [row] = _outbox(c.sender, "us")
        assert row.to_region == "sg" and row.kind == "notification"
        assert b"follow" not in row.body_ct  # sealed under the actor's key
        run_jobs(c.sender, "us")
        assert _notes(c.sender, c.sg_user) == 1
        assert _outbox(c.sender, "us") == []
        # The same delivery posted three more times (fresh signatures): applied once.
        ident = uuid.uuid4()
        raw = _follow_envelope(c, ident)
        answers = [_put(c, ident, raw) for _ in range(3)]
        assert [a.status_code for a in answers] == [200, 200, 200]
        assert [a.json()["applied"] for a in answers] == [True, False, False]
        assert _notes(c.sender, c.sg_user) == 2
    # Receipts are kept as long as a sender may retry, then forgotten.
    month = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=29)
    assert forget_receipts(c.receiver, "sg", now=month) == 0
    assert forget_receipts(c.receiver, "sg", now=month + datetime.timedelta(days=2)) == 2
    names = c.sender.cell("us")
    with names.db.transaction() as s:
        counted = s.scalar(select(SentCount.count).where(SentCount.to_region == "sg"))
    assert counted == 1
    # The actor sees the transfer among the events about them (by their pseudonym).
    from reelm.transparency.views import pending_about

    kinds = [e.kind for e in pending_about(c.sender, c.us_user.user_id)]
    assert delivery.SENT_FOR_KIND in kinds
    # Once the hour is over, one entry counts the hour's deliveries to sg.
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=2)
    assert delivery.log_counts(c.sender, "us", now=later) == 1
    assert delivery.log_counts(c.sender, "us", now=later) == 0
    with names.db.transaction() as s:
        [entry] = s.scalars(select(LogQueue.entry).where(LogQueue.kind == delivery.SENT_KIND))
    details = json.loads(entry)["details"]
    assert details["to"] == "sg" and details["kind"] == "notification" and details["count"] == 1


@pytest.mark.parametrize(
    ("attack", "status"),
    [
        ("forged", 401),  # signed by a key that is not us's
        ("replayed", 401),  # the very same signed request a second time
        ("stale", 401),
        ("wrong_cell", 403),  # us signs for a user homed in sg
        ("not_for_this_cell", 403),  # a delivery to a region the receiver does not run
        ("from_mismatch", 403),  # the body says it comes from another region than its signer
        ("other_body", 409),  # a delivery id reused with another body
        ("bad_body", 400),
        # Well signed, but of the wrong JSON types (each was a 500, retried for weeks):
        ("kind_not_a_string", 400),
        ("acting_for_an_integer", 400),
        ("event_kind_not_a_string", 400),
        ("forged_actor", 400),  # an event naming another actor than the acting user
    ],
)
def test_refused_requests_write_nothing_and_are_logged(
    cells: Cells, attack: str, status: int
) -> None:
    c = cells
    ident = uuid.uuid4()
    raw = _follow_envelope(c, ident)
    with serving(c.receiver, c.port):
        if attack == "replayed":
            url = f"{c.url}/cell/v1/deliveries/{ident}"
            headers = signing.sign(c.us_key, "us", "PUT", url, raw)
            assert _put(c, ident, raw, headers=headers).status_code == 200
        elif attack == "other_body":
            assert _put(c, ident, raw).status_code == 200
        before = (_notes(c.sender, c.sg_user), _receipts(c.sender, "sg"))
        refused_before = _refusals(c.receiver)
        if attack == "forged":
            answer = _put(c, ident, raw, key=Ed25519PrivateKey.generate())
        elif attack == "replayed":
            answer = _put(c, ident, raw, headers=headers)
        elif attack == "stale":
            url = f"{c.url}/cell/v1/deliveries/{ident}"
            old = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=10)
            answer = _put(
                c, ident, raw, headers=signing.sign(c.us_key, "us", "PUT", url, raw, created=old)
            )
        elif attack == "wrong_cell":
            raw = _follow_envelope(c, ident, acting_for=c.sg_user.user_id)
            answer = _put(c, ident, raw)
        elif attack == "not_for_this_cell":
            answer = _put(c, ident, _follow_envelope(c, ident, region="us"))
        elif attack == "from_mismatch":
            answer = _put(c, ident, _follow_envelope(c, ident, sender="ca"))
        elif attack == "other_body":
            other = _follow_envelope(
                c,
                ident,
                body={
                    "recipient": str(c.sg_user.user_id),
                    "event": {"kind": "like", "actor": str(c.us_user.user_id)},
                    "once": None,
                },
            )
            answer = _put(c, ident, other)
        elif attack == "bad_body":
            answer = _put(c, ident, b"not json")
        elif attack in ("kind_not_a_string", "acting_for_an_integer", "event_kind_not_a_string"):
            envelope = json.loads(raw)
            if attack == "kind_not_a_string":
                envelope["kind"] = ["notification"]
            elif attack == "acting_for_an_integer":
                envelope["acting_for"] = c.us_user.user_id.int
            else:
                envelope["body"]["event"]["kind"] = {"follow": 1}
            answer = _put(c, ident, json.dumps(envelope).encode())
        else:
            forged = _follow_envelope(
                c,
                ident,
                body={
                    "recipient": str(c.sg_user.user_id),
                    "event": {"kind": "follow", "actor": str(uuid.uuid4())},
                    "once": None,
                },
            )
            answer = _put(c, ident, forged)
        assert answer.status_code == status, answer.text
        assert answer.headers["content-type"] == "application/problem+json"
        assert (_notes(c.sender, c.sg_user), _receipts(c.sender, "sg")) == before
        assert _refusals(c.receiver) == refused_before + 1


def test_a_cell_that_is_down_loses_nothing(cells: Cells) -> None:
    c = cells
    # The receiver is not listening: the job fails and is retried later; the row waits.
    assert notify.send(c.sender, c.sg_user.user_id, "like", c.us_user.user_id)
    run_jobs(c.sender, "us")
    [row] = _outbox(c.sender, "us")
    assert row.attempts == 1 and row.refused_at is None
    assert _notes(c.sender, c.sg_user) == 0
    with serving(c.receiver, c.port):
        # Its retry is due now rather than in a few seconds.
        with c.sender.cell("us").db.transaction() as s:
            s.execute(
                text(
                    "UPDATE procrastinate_jobs SET scheduled_at = now() "
                    "WHERE task_name = :task AND status = 'todo'"
                ),
                {"task": delivery.SEND_TASK},
            )
        run_jobs(c.sender, "us")
    assert _outbox(c.sender, "us") == []
    assert _notes(c.sender, c.sg_user) == 1


def test_a_refused_delivery_stays_for_the_operator_and_is_not_retried(cells: Cells) -> None:
    c = cells
    assert notify.send(c.sender, c.sg_user.user_id, "follow", c.us_user.user_id)
    # The receiver no longer knows us's key (its peers were re-keyed): 401 for good.
    c.receiver.caches["intercell.peers"] = {"us": Ed25519PrivateKey.generate().public_key()}
    with serving(c.receiver, c.port):
        run_jobs(c.sender, "us")
    [row] = _outbox(c.sender, "us")
    assert row.last_status == 401 and row.refused_at is not None
    assert _notes(c.sender, c.sg_user) == 0


def test_the_same_handler_runs_in_process_for_a_local_region(
    platform: Platform, new_user: Callable[..., SignedUp], client: TestClient
) -> None:
    """Single-machine mode: no peers, every region local; the delivery is applied at once,
    and still counted and logged for the actor when it crosses regions."""
    token, actor = signed_in(platform, "actor", market="US")
    recipient = new_user("FR")
    with platform.cell("us").db.transaction() as s:
        s.execute(update(SentCount).values(count=0))
    assert notify.send(platform, recipient.user_id, "follow", actor.user_id)
    assert _notes(platform, recipient) == 1
    assert _outbox(platform, "us") == [] or all(
        r.acting_for != actor.user_id for r in _outbox(platform, "us")
    )
    with platform.cell("us").db.transaction() as s:
        assert s.scalar(select(func.sum(SentCount.count)).where(SentCount.to_region == "sg")) >= 1
    from reelm.transparency.views import pending_about

    assert delivery.SENT_FOR_KIND in [e.kind for e in pending_about(platform, actor.user_id)]
    page = client.get("/settings/transparency", headers={"Authorization": f"Bearer {token}"})
    assert page.status_code == 200
    assert "Sent on your behalf to region sg: a notification" in page.text
    # Within one region nothing crosses: not counted.
    neighbour = new_user("US")
    with platform.cell("us").db.transaction() as s:
        before = s.scalar(select(func.coalesce(func.sum(SentCount.count), 0)))
    assert notify.send(platform, neighbour.user_id, "follow", actor.user_id)
    with platform.cell("us").db.transaction() as s:
        assert s.scalar(select(func.coalesce(func.sum(SentCount.count), 0))) == before


def test_a_moderators_decision_about_another_cells_user_is_applied_there(cells: Cells) -> None:
    from reelm.social import moderation
    from reelm.transparency import gateway

    c = cells
    _, moderator = signed_in(c.sender, "mod", market="US")
    gateway.grant(c.sender, moderator.user_id, "moderator")
    decision = moderation.Decision(
        target="user", id=c.sg_user.handle, action="suspend", reason="spam"
    )
    done = moderation.act(c.sender, moderator, decision)
    assert "sg cell" in done
    # Nothing is done by the moderator's cell: the sg cell applies it, once it is delivered.
    assert not moderation.is_suspended(c.sender, c.sg_user.user_id)
    with serving(c.receiver, c.port):
        run_jobs(c.sender, "us")
    assert moderation.is_suspended(c.sender, c.sg_user.user_id)
    with c.sender.cell("sg").db.transaction() as s:
        logged = s.scalar(select(func.count()).where(LogQueue.kind == "moderation.suspended"))
    assert logged == 1
    # A user of us who is not a moderator cannot have the us cell suspend anyone in sg.
    ident = uuid.uuid4()
    forged = transport.envelope(
        ident,
        "us",
        "sg",
        "moderation",
        c.us_user.user_id,
        {
            "decision": decision.model_dump() | {"action": "reinstate"},
            "target_id": str(c.sg_user.user_id),
        },
    )
    with serving(c.receiver, c.port):
        answer = _put(c, ident, forged)
    assert answer.status_code == 403, answer.text
    assert moderation.is_suspended(c.sender, c.sg_user.user_id)
