"""Notifications: something happened to a user (a new follower or follow request, a request
accepted, a like, a comment or reply, a mention). Written into the recipient's home region,
encrypted with the recipient's key: who interacted with you is your protected data."""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert

from reelm.accounts.models import DirectoryEntry, PublicProfile
from reelm.accounts.service import CurrentUser
from reelm.bootstrap import Platform
from reelm.regions.cell import UserScope
from reelm.regions.fence import UserMoving, hold
from reelm.social.models import NOTIFICATION_FIELD, Block, Notification

log = logging.getLogger("reelm.social")

MAX_LIST = 50
ONCE_FIELD = "notification_once"


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
    """Best effort: a recipient who blocked the actor, is gone, or is being moved to another
    region right now gets nothing (the action itself is not refused for it).

    ``once``: what must reach the recipient at most once (a video's caption mentioning them,
    however often it is edited). The notification's id is then derived from it under the
    recipient's own key, so a second send finds the first and writes nothing: no table of
    who was told what, and the id tells nothing once the key is destroyed. (A user moved to
    another region has a new key: a later edit may tell them once more.)"""
    if recipient == actor:
        return False
    with platform.catalog.transaction() as c:
        home = c.scalar(
            select(DirectoryEntry.home_region).where(
                DirectoryEntry.user_id == recipient, DirectoryEntry.state == "active"
            )
        )
        blocked = c.scalar(
            select(func.count()).where(Block.blocker_id == recipient, Block.blocked_id == actor)
        )
    if home is None or blocked or home not in platform.cells:
        return False
    scope = platform.cell(home).for_user(recipient, home)
    event = {"kind": kind, "actor": str(actor)}
    if video_id is not None:
        event["video"] = str(video_id)
    if comment_id is not None:
        event["comment"] = str(comment_id)
    cipher = scope.cipher()
    ident = uuid.uuid4()
    if once is not None:
        ident = uuid.UUID(bytes=cipher.lookup(ONCE_FIELD, once)[:16], version=4)
    try:
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
                .on_conflict_do_nothing()
                .returning(Notification.id)
            ).first()
    except UserMoving:
        log.info("notification for %s skipped: the user is moving", recipient)
        return False
    return written is not None


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
