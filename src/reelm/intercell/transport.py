"""HTTP between cells: the sender's job that PUTs an outbox row to its peer, signed, until the
peer acknowledges it (any 2xx); a peer that refuses it for good (another 4xx) leaves the row
marked for the operator, and anything else (down, 5xx, 408, 429) is retried with back-off."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import httpx2
import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import delete, func, update

from reelm.bootstrap import Platform
from reelm.intercell import identity, signing
from reelm.intercell.delivery import BODY_FIELD
from reelm.intercell.models import Outbox
from reelm.storage.crypto import DecryptionFailed
from reelm.storage.keys import KeyDestroyed

log = logging.getLogger("reelm.intercell")

PATH = "/cell/v1/deliveries/"
TIMEOUT_SECONDS = 10.0
RETRIED_STATUSES = frozenset({408, 425, 429})


class NotAcknowledged(RuntimeError):
    """The peer did not acknowledge the delivery (down, busy, 5xx): the job is retried."""


def identity_key(platform: Platform) -> Ed25519PrivateKey:
    """This process's identity key, read (or made) once."""
    key = platform.caches.get("intercell.identity")
    if key is None:
        key = platform.caches["intercell.identity"] = identity.load_or_create(
            platform.settings.identity_key_path()
        )
    assert isinstance(key, Ed25519PrivateKey)
    return key


def _client(platform: Platform) -> httpx2.Client:
    client = platform.caches.get("intercell.http")
    if client is None:
        client = platform.caches["intercell.http"] = httpx2.Client(timeout=TIMEOUT_SECONDS)
    assert isinstance(client, httpx2.Client)
    return client


def envelope(
    delivery_id: uuid.UUID,
    sender: str,
    region: str,
    kind: str,
    acting_for: uuid.UUID,
    body: dict[str, Any],
) -> bytes:
    """The request body: RFC 8785 canonical JSON, so every retry sends the same bytes (the
    receiver tells a retry from a different delivery under the same id by their digest)."""
    return bytes(
        rfc8785.dumps(
            {
                "v": 1,
                "id": str(delivery_id),
                "from": sender,
                "to": region,
                "kind": kind,
                "acting_for": str(acting_for),
                "body": body,
            }
        )
    )


def put(platform: Platform, sender: str, region: str, delivery_id: uuid.UUID, raw: bytes) -> int:
    """PUT one signed delivery to ``region``'s cell; its HTTP status (NotAcknowledged when the
    peer cannot be reached)."""
    url = f"{platform.settings.peers[region].base_url}{PATH}{delivery_id}"
    headers = signing.sign(identity_key(platform), sender, "PUT", url, raw)
    try:
        response = _client(platform).put(url, content=raw, headers=headers)
    except httpx2.TransportError as exc:
        raise NotAcknowledged(f"{region} unreachable: {type(exc).__name__}") from None
    return response.status_code


def send(platform: Platform, sender: str, delivery_id: uuid.UUID) -> str:
    """The ``intercell.send`` job: 'acknowledged', 'refused', 'gone' (nothing to send), or
    NotAcknowledged to be retried."""
    import json

    cell = platform.cell(sender)
    with cell.db.transaction() as s:
        row = s.get(Outbox, delivery_id)
        if row is None or row.refused_at is not None:
            return "gone"
        to, kind, acting_for, sealed = row.to_region, row.kind, row.acting_for, row.body_ct
    try:
        body = json.loads(cell.for_user(acting_for, sender).cipher().decrypt(BODY_FIELD, sealed))
    except (KeyDestroyed, DecryptionFailed):
        # The acting user is gone (purged, or moved with their key): nothing can be sent.
        with cell.db.transaction() as s:
            s.execute(delete(Outbox).where(Outbox.id == delivery_id))
        return "gone"
    raw = envelope(delivery_id, sender, to, kind, acting_for, body)
    try:
        status = put(platform, sender, to, delivery_id, raw)
    except NotAcknowledged:
        _note(platform, sender, delivery_id, None, refused=False)
        raise
    if 200 <= status < 300:
        with cell.db.transaction() as s:
            s.execute(delete(Outbox).where(Outbox.id == delivery_id))
        return "acknowledged"
    if 400 <= status < 500 and status not in RETRIED_STATUSES:
        log.warning("delivery %s of kind %s refused by %s: HTTP %d", delivery_id, kind, to, status)
        _note(platform, sender, delivery_id, status, refused=True)
        return "refused"
    _note(platform, sender, delivery_id, status, refused=False)
    raise NotAcknowledged(f"{to} answered HTTP {status}")


def _note(
    platform: Platform, sender: str, delivery_id: uuid.UUID, status: int | None, *, refused: bool
) -> None:
    with platform.cell(sender).db.transaction() as s:
        s.execute(
            update(Outbox)
            .where(Outbox.id == delivery_id)
            .values(
                attempts=Outbox.attempts + 1,
                last_status=status,
                refused_at=func.now() if refused else None,
            )
        )
