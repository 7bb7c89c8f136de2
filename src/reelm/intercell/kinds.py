"""What may cross from one cell to another, and the one function that applies each kind.

A handler runs in the cell of the region it is delivered to, whether the delivery came
in-process (single-machine mode, or a region of this cell) or over HTTP (``/cell/v1/``): one
code path. It is called as ``handler(platform, region, acting_for, delivery_id, body)``, must be
idempotent for a delivery id (a delivery is applied once, but a crash between the handler's
commit and the receipt's may run it again), and raises ``BadBody`` for a body it does not
accept (400), ``NotAllowed`` for an acting user it refuses (403), and
``reelm.regions.fence.UserMoving`` to be retried later.

Handlers are named by dotted path and imported when first used: the services that send a kind
(reelm.social) sit above this package, which must not import them at import time."""

from __future__ import annotations

import importlib
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from reelm.bootstrap import Platform

Handler = Callable[["Platform", str, uuid.UUID, uuid.UUID, dict[str, Any]], Any]

# kind -> "module:function". Each carries ids and the public data its handler needs, nothing
# protected of the sender (docs/architecture.md, "The inter-cell protocol").
KINDS: dict[str, str] = {
    # A notification to a user of the receiving region: follow, follow request, request
    # accepted, like, comment, reply, mention. Body: recipient id, the event's kind and the
    # video and comment ids it is about; the actor is the acting user.
    "notification": "reelm.social.notify:receive",
    # A moderator's decision about a user of the receiving region (their video, comment or
    # account): the decision as the moderation API takes it (target, id, action, reason code,
    # market) and the target's id; the moderator is the acting user, checked staff again.
    "moderation": "reelm.social.moderation:receive",
}


class BadBody(ValueError):
    """A delivery whose body its kind does not accept (answered 400, nothing written)."""


class NotAllowed(PermissionError):
    """A delivery its kind refuses for who it acts for (answered 403, nothing written)."""


def handler_of(kind: str) -> Handler:
    path = KINDS.get(kind)
    if path is None:
        raise BadBody(f"no such kind {kind!r}")
    module, name = path.split(":")
    handler: Handler = getattr(importlib.import_module(module), name)
    return handler


def uuid_field(body: dict[str, Any], name: str, *, optional: bool = False) -> uuid.UUID | None:
    """A UUID member of a body, or BadBody."""
    value = body.get(name)
    if value is None and optional:
        return None
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise BadBody(f"{name} must be a UUID") from None
