"""Notifications: something happened to a user (a new follower or follow request, a request
accepted, a like, a comment or reply, a mention). Written into the recipient's home region,
encrypted with the recipient's key: who interacted with you is your protected data.

A recipient being moved to another region is behind the migration fence: nothing can be
written for them until the directory points to their new home. Their notification is not
dropped but *held*: a ``social.deliver`` job in the actor's home region (the region that owes
the delivery, as in the cells design), its payload the actor's id and the event sealed under
the actor's data key (which recipient, which video: the actor's protected activity, so it is
shredded with the actor). The job retries with growing waits until the fence lifts, then
writes the notification wherever the recipient lives, under the id chosen when it was sent
(a retry after a write that committed writes nothing twice)."""

from __future__ import annotations

import base64
import json
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from reelm.accounts.models import DirectoryEntry, PublicProfile
from reelm.accounts.service import CurrentUser
from reelm.bootstrap import Platform
from reelm.regions.cell import UserScope
from reelm.regions.fence import UserMoving, hold
from reelm.social.models import NOTIFICATION_FIELD, Block, Notification
from reelm.storage.crypto import DecryptionFailed
from reelm.storage.keys import KeyDestroyed

log = logging.getLogger("reelm.social")

MAX_LIST = 50
ONCE_FIELD = "notification_once"
DELIVER_TASK = "social.deliver"
# The field name a held delivery is sealed under (in the actor's cipher).
HELD_FIELD = "held_notification"
# A held delivery retries 2, 4, 8 ... s later (exponential_wait=2), 16 times: about 36 hours in
# all, long enough for an operator to resume a migration that crashed with a batch frozen.
DELIVER_ATTEMPTS = 16
DELIVER_BACKOFF = 2


@dataclass(frozen=True, slots=True)
class Note:
    id: uuid.UUID
    kind: str  # follow, follow_request, follow_accepted, like, comment, reply, mention
    actor_handle: str | None  # None once the actor is gone
    actor_name: str | None
    video_id: uuid.UUID | None
    comment_id: uuid.UUID | None
    read: bool
    created_at: datetime


def send(
    platform: Platform,
    recipient: uuid.UUID,
    kind: str,
    actor: uuid.UUID,
    *,
    video_id: uuid.UUID | None = None,
    comment_id: uuid.UUID | None = None,
    once: str | None = None,
) -> bool:
    """Best effort: a recipient who blocked the actor or is gone gets nothing (the action
    itself is not refused for it). One being moved to another region right now gets it once
    the move is through (held, see the module's docstring).

    ``once``: what must reach the recipient at most once (a video's caption mentioning them,
    however often it is edited). The notification's id is then derived from it under the
    recipient's own key, so a second send finds the first and writes nothing: no table of
    who was told what, and the id tells nothing once the key is destroyed. (A user moved to
    another region has a new key: a later edit may tell them once more.)"""
    if recipient == actor:
        return False
    event = {"kind": kind, "actor": str(actor)}
    if video_id is not None:
        event["video"] = str(video_id)
    if comment_id is not None:
        event["comment"] = str(comment_id)
    note_id = uuid.uuid4()
    try:
        return _deliver(platform, note_id, recipient, actor, event, once)
    except UserMoving:
        _hold(platform, note_id, recipient, actor, event, once)
        return True
    except KeyDestroyed:
        return False  # the recipient is being purged: there is no one to tell


def _deliver(
    platform: Platform,
    note_id: uuid.UUID,
    recipient: uuid.UUID,
    actor: uuid.UUID,
    event: dict[str, str],
    once: str | None,
) -> bool:
    """To the recipient's home cell, through the inter-cell protocol (in-process when that
    region is this cell's: reelm.intercell.deliver). Only ids cross: the recipient, the event's
    kind, video and comment; the actor is the user the delivery acts for. True when written
    (or queued for another cell)."""
    from reelm import intercell

    home = _recipient_home(platform, recipient, actor)
    if home is None:
        return False
    body: dict[str, Any] = {"recipient": str(recipient), "event": event, "once": once}
    done = intercell.deliver(
        platform, home, NOTIFY_KIND, body, acting_for=actor, delivery_id=note_id
    )
    return True if done is None else bool(done)


def _recipient_home(platform: Platform, recipient: uuid.UUID, actor: uuid.UUID) -> str | None:
    """The recipient's home region, None when there is no one to notify (gone, or blocking
    the actor: the public catalog says both, in every region)."""
    with platform.catalog.transaction() as c:
        home = c.scalar(
            select(DirectoryEntry.home_region).where(
                DirectoryEntry.user_id == recipient, DirectoryEntry.state == "active"
            )
        )
        blocked = c.scalar(
            select(func.count()).where(Block.blocker_id == recipient, Block.blocked_id == actor)
        )
    return None if home is None or blocked else home


NOTIFY_KIND = "notification"
EVENT_KINDS = frozenset(
    {"follow", "follow_request", "follow_accepted", "like", "comment", "reply", "mention"}
)


def receive(
    platform: Platform,
    region: str,
    acting_for: uuid.UUID,
    delivery_id: uuid.UUID,
    body: dict[str, Any],
) -> bool:
    """The ``notification`` kind's handler, in the recipient's home cell (in-process or behind
    ``/cell/v1/``). The notification's id is the delivery's: applying it twice writes once."""
    from reelm.intercell.kinds import BadBody, uuid_field

    event = body.get("event")
    once = body.get("once")
    kind = event.get("kind") if isinstance(event, dict) else None
    if not isinstance(event, dict) or not isinstance(kind, str) or kind not in EVENT_KINDS:
        raise BadBody("event must be an object with a known kind")
    if once is not None and (not isinstance(once, str) or len(once) > 200):
        raise BadBody("once must be a short string")
    # The actor is the user the sending cell acts for (checked homed there): a cell cannot
    # send a notification in the name of someone else.
    if event.get("actor") != str(acting_for):
        raise BadBody("the event's actor must be the user the delivery acts for")
    clean = {"kind": str(event["kind"]), "actor": str(acting_for)}
    for name, member in (("video", "video"), ("comment", "comment")):
        if member in event:
            clean[name] = str(uuid_field(event, member))
    if set(event) - {"kind", "actor", "video", "comment"}:
        raise BadBody("the event carries members no notification has")
    recipient = uuid_field(body, "recipient")
    assert recipient is not None
    try:
        return _write(platform, region, delivery_id, recipient, acting_for, clean, once)
    except KeyDestroyed:
        return False


def drop_held_from(s: Session, user_id: uuid.UUID) -> None:
    """At the purge of ``user_id``, in their region's transaction: the deliveries they sent
    that were held (sealed under the key being destroyed, so never deliverable) and the
    finished ones, whose job rows would otherwise name them as a sender after deletion."""
    s.execute(
        text(
            "DELETE FROM procrastinate_jobs WHERE task_name = :task "
            "AND args->>'actor' = :actor AND status <> 'doing'"
        ),
        {"task": DELIVER_TASK, "actor": str(user_id)},
    )


def _write(
    platform: Platform,
    region: str,
    note_id: uuid.UUID,
    recipient: uuid.UUID,
    actor: uuid.UUID,
    event: dict[str, str],
    once: str | None = None,
) -> bool:
    """Write the notification in ``region``, the recipient's home (raises UserMoving behind a
    fence). False when there is no one to notify there, or ``once`` was told already."""
    home = _recipient_home(platform, recipient, actor)
    if home != region:
        return False
    scope = platform.cell(region).for_user(recipient, region)
    cipher = scope.cipher()
    ident = note_id
    if once is not None:
        ident = uuid.UUID(bytes=cipher.lookup(ONCE_FIELD, once)[:16], version=4)
    with scope.cell.db.transaction() as s:
        hold(s, recipient)
        written = s.execute(
            insert(Notification)
            .values(
                id=ident,
                user_id=recipient,
                event_ct=cipher.encrypt(NOTIFICATION_FIELD, json.dumps(event)),
                read=False,
            )
            .on_conflict_do_nothing(index_elements=["id"])
            .returning(Notification.id)
        ).first()
    return written is not None


def _hold(
    platform: Platform,
    note_id: uuid.UUID,
    recipient: uuid.UUID,
    actor: uuid.UUID,
    event: dict[str, str],
    once: str | None,
) -> None:
    """Queue the delivery in the actor's home region, sealed under the actor's key."""
    from reelm.jobs import queue_of

    with platform.catalog.transaction() as c:
        region = c.scalar(select(DirectoryEntry.home_region).where(DirectoryEntry.user_id == actor))
    if region is None or region not in platform.cells:
        return
    held = json.dumps(
        {"id": str(note_id), "recipient": str(recipient), "event": event, "once": once}
    )
    sealed = platform.cell(region).for_user(actor, region).cipher().encrypt(HELD_FIELD, held)
    queue_of(platform, region).defer(
        DELIVER_TASK, actor=str(actor), sealed=base64.b64encode(sealed).decode()
    )
    log.info("notification for %s held: the user is moving", recipient)


def deliver_held(platform: Platform, region: str, actor: uuid.UUID, sealed: bytes) -> bool:
    """The job of a held notification: write it now, or raise UserMoving to be retried. A
    delivery whose actor's key is gone (the actor deleted or moved since) is dropped."""
    cell = platform.cell(region)
    try:
        held: dict[str, Any] = json.loads(
            cell.for_user(actor, region).cipher().decrypt(HELD_FIELD, sealed)
        )
    except (KeyDestroyed, DecryptionFailed):
        log.info("a held notification of %s dropped: its sender's key is gone", actor)
        return False
    return _deliver(
        platform,
        uuid.UUID(held["id"]),
        uuid.UUID(held["recipient"]),
        actor,
        held["event"],
        held.get("once"),
    )


def _scope(platform: Platform, user: CurrentUser) -> UserScope:
    return platform.cell(user.home_region).for_user(user.user_id, user.home_region)


def unread(platform: Platform, user: CurrentUser) -> int:
    scope = _scope(platform, user)
    with scope.cell.db.transaction() as s:
        return int(
            s.scalar(
                select(func.count()).where(
                    Notification.user_id == user.user_id, Notification.read.is_(False)
                )
            )
            or 0
        )


def recent(
    platform: Platform, user: CurrentUser, *, limit: int = MAX_LIST, mark_read: bool = True
) -> list[Note]:
    """The newest notifications, decrypted here; opening them marks them read."""
    limit = max(1, min(limit, MAX_LIST))
    scope = _scope(platform, user)
    cipher = scope.cipher()
    with scope.cell.db.transaction() as s:
        rows = list(
            s.scalars(
                select(Notification)
                .where(Notification.user_id == user.user_id)
                .order_by(Notification.created_at.desc(), Notification.id.desc())
                .limit(limit)
            )
        )
        if mark_read and any(not r.read for r in rows):
            hold(s, user.user_id)
            s.execute(
                update(Notification)
                .where(Notification.id.in_([r.id for r in rows if not r.read]))
                .values(read=True)
            )
    events = [(r, json.loads(cipher.decrypt(NOTIFICATION_FIELD, r.event_ct))) for r in rows]
    actors = {uuid.UUID(e["actor"]) for _, e in events}
    with platform.catalog.transaction() as c:
        names = {
            p.user_id: (p.handle, p.display_name)
            for p in c.scalars(
                select(PublicProfile)
                .join(DirectoryEntry, DirectoryEntry.user_id == PublicProfile.user_id)
                .where(PublicProfile.user_id.in_(actors), DirectoryEntry.state == "active")
            )
        }
    out = []
    for row, event in events:
        handle, name = names.get(uuid.UUID(event["actor"]), (None, None))
        out.append(
            Note(
                id=row.id,
                kind=event["kind"],
                actor_handle=handle,
                actor_name=name,
                video_id=uuid.UUID(event["video"]) if "video" in event else None,
                comment_id=uuid.UUID(event["comment"]) if "comment" in event else None,
                read=row.read,
                created_at=row.created_at,
            )
        )
    return out
