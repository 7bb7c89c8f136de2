"""The receiver's side: check an inter-cell request, then apply it once.

The checks, in order (each refusal is logged in the application log without personal data
and as an ``intercell.refused`` entry in the receiving region's transparency log, and writes
nothing else):

1. the signature (reelm.intercell.signing): a configured peer's key id, its key verifies,
   ``created`` within the window, the content digest matches the body (401);
2. the body: JSON of the envelope, its id the URL's, a known kind (400);
3. the body's ``from`` is the signing cell, its ``to`` a region of this cell (403);
4. the user it acts for is homed, per the catalog's directory, in the sending region (403);
5. the nonce is new (401), and the id is new or was applied with the same body (a retry:
   acknowledged, not applied again) rather than another (409).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert

from reelm.bootstrap import Platform
from reelm.intercell import identity, signing
from reelm.intercell.delivery import home_of, is_local
from reelm.intercell.kinds import KINDS, BadBody, NotAllowed, handler_of
from reelm.intercell.models import Receipt, SeenNonce
from reelm.intercell.signing import Refused

log = logging.getLogger("reelm.intercell")

REFUSED_KIND = "intercell.refused"
_REGION = re.compile(r"[a-z][a-z0-9]{1,15}")


@dataclass(frozen=True)
class Answer:
    applied: bool  # False: a retry of a delivery applied before
    result: Any = None


def peer_keys(platform: Platform) -> dict[str, Ed25519PublicKey]:
    keys = platform.caches.get("intercell.peers")
    if keys is None:
        keys = platform.caches["intercell.peers"] = {
            region: identity.decode_public(peer.public_key)
            for region, peer in platform.settings.peers.items()
        }
    assert isinstance(keys, dict)
    return keys


def receive(
    platform: Platform,
    delivery_id: str,
    method: str,
    url: str,
    headers: Iterable[tuple[str, str]],
    raw: bytes,
) -> Answer:
    """Check and apply one delivery, or raise Refused (logged). UserMoving propagates: the
    sender retries later."""
    envelope: dict[str, Any] | None = None
    try:
        verified = signing.verify(headers, method, url, raw, peer_keys(platform))
        envelope = _envelope(delivery_id, raw)
        return _apply(platform, verified, envelope, raw)
    except Refused as refusal:
        _log_refusal(platform, refusal, envelope or _unchecked(raw))
        raise


def _unchecked(raw: bytes) -> dict[str, Any] | None:
    """The body of a refused request, read only to pick which of this cell's logs records the
    refusal (with one region a cell, the same log whatever it says)."""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    return body if isinstance(body, dict) else None


def _envelope(delivery_id: str, raw: bytes) -> dict[str, Any]:
    try:
        envelope = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise Refused(400, "bad-body", "the body is not JSON") from None
    if not isinstance(envelope, dict) or envelope.get("v") != 1:
        raise Refused(400, "bad-body", "the body is not a version 1 delivery")
    if envelope.get("id") != delivery_id:
        raise Refused(400, "bad-body", "the body's id is not the URL's")
    acting_for = envelope.get("acting_for")
    try:
        uuid.UUID(delivery_id)
        if not isinstance(acting_for, str):
            raise ValueError(acting_for)
        uuid.UUID(acting_for)
    except ValueError:
        raise Refused(400, "bad-body", "id and acting_for must be UUIDs") from None
    kind = envelope.get("kind")
    if not isinstance(kind, str) or kind not in KINDS or not isinstance(envelope.get("body"), dict):
        raise Refused(400, "bad-body", "unknown kind, or a body that is not an object")
    return envelope


def _apply(
    platform: Platform, verified: signing.Verified, envelope: dict[str, Any], raw: bytes
) -> Answer:
    sender, region = verified.region, envelope.get("to")
    if envelope.get("from") != sender:
        raise Refused(403, "wrong-cell", "the body names another sender", sender)
    if not isinstance(region, str) or not is_local(platform, region):
        raise Refused(
            403, "wrong-cell", "the delivery is for a region this cell does not run", sender
        )
    acting_for = uuid.UUID(envelope["acting_for"])
    if home_of(platform, acting_for) != sender:
        raise Refused(403, "not-homed", "the user is not homed in the sending region", sender)
    ident, kind = uuid.UUID(envelope["id"]), envelope["kind"]
    digest = hashlib.sha256(raw).digest()
    now = datetime.now(UTC)
    with platform.cell(region).db.transaction() as s:
        # Nonces older than the window can never be accepted again: forget them.
        s.execute(
            delete(SeenNonce).where(
                SeenNonce.seen_at < now - timedelta(seconds=2 * signing.WINDOW_SECONDS)
            )
        )
        fresh = s.execute(
            insert(SeenNonce)
            .values(nonce=verified.nonce, seen_at=now)
            .on_conflict_do_nothing()
            .returning(SeenNonce.nonce)
        ).first()
        if fresh is None:
            raise Refused(401, "replayed", "this signature was used before", sender)
        first = s.execute(
            insert(Receipt)
            .values(id=ident, from_region=sender, kind=kind, digest=digest)
            .on_conflict_do_nothing()
            .returning(Receipt.id)
        ).first()
        if first is None:
            known = s.scalar(select(Receipt.digest).where(Receipt.id == ident))
            if known != digest:
                raise Refused(409, "conflict", "this id was delivered with another body", sender)
            return Answer(applied=False)
        try:
            result = handler_of(kind)(platform, region, acting_for, ident, envelope["body"])
        except BadBody as exc:
            raise Refused(400, "bad-body", str(exc), sender) from None
        except NotAllowed as exc:
            raise Refused(403, "not-allowed", str(exc), sender) from None
    return Answer(applied=True, result=result)


# Longer than a sender retries (2 + 4 + ... + 2**20 s, about 24 days): a receipt is kept while
# a retry of its delivery may still come.
RECEIPT_DAYS = 30


def forget_receipts(platform: Platform, region: str, now: datetime | None = None) -> int:
    """Receipts older than any retry (hourly, by the region's worker); how many went."""
    before = (now or datetime.now(UTC)) - timedelta(days=RECEIPT_DAYS)
    with platform.cell(region).db.transaction() as s:
        gone = s.execute(delete(Receipt).where(Receipt.received_at < before).returning(Receipt.id))
        return len(gone.all())


def _log_refusal(platform: Platform, refusal: Refused, envelope: dict[str, Any] | None) -> None:
    """Application log and the receiving region's transparency log: the reason code and the
    region the request claimed to come from (a region code, or nothing)."""
    claimed = refusal.claimed if refusal.claimed and _REGION.fullmatch(refusal.claimed) else None
    log.warning(
        "inter-cell request refused: %s (HTTP %d, from %s)",
        refusal.reason,
        refusal.status,
        claimed or "?",
    )
    to = envelope.get("to") if envelope else None
    own = [r for r in platform.cells if is_local(platform, r)]
    fallback = platform.local_region or (own[0] if own else None)
    region = to if isinstance(to, str) and to in own else fallback
    if region is None:
        return
    platform.cell(region).log.append_now(
        REFUSED_KIND, None, {"reason": refusal.reason, "from": claimed}
    )
