"""Likes and shares.

A like is the liker's protected data: it is stored in the liker's home region, encrypted, and
looked up by a key derived from the liker's own data key. The catalog keeps the count only.
A share counts a shared link (the link itself is the public video's page)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from functools import cache

from sqlalchemy import LargeBinary, Select, Uuid, any_, bindparam, delete, select
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlalchemy.orm import Session

from reelm.accounts.service import CurrentUser
from reelm.bootstrap import Platform
from reelm.feed import signals
from reelm.media import catalog
from reelm.media.models import PublicVideo
from reelm.regions.cell import Cell, UserScope
from reelm.regions.fence import hold
from reelm.social import engagement, notify
from reelm.social.models import LIKE_FIELD, Like, VideoStats

LIKE_SCORE = signals.WEIGHTS["liked"]
SHARE_SCORE = signals.WEIGHTS["shared"]


def _scope(platform: Platform, user: CurrentUser) -> UserScope:
    return platform.cell(user.home_region).for_user(user.user_id, user.home_region)


def _video(platform: Platform, video_id: uuid.UUID) -> tuple[list[str], float]:
    with platform.catalog.transaction() as c:
        row = c.execute(
            select(PublicVideo.hashtags, PublicVideo.duration).where(PublicVideo.id == video_id)
        ).one()
    return list(row[0]), float(row[1])


def like(platform: Platform, user: CurrentUser, video_id: uuid.UUID) -> int:
    """Like a video the user may see. Idempotent; returns the video's like count.

    The like and what it adds to the catalog's counts (an outbox row) commit together in the
    liker's home region, then the count is applied to the catalog (reelm.social.engagement):
    a like saved is counted once, even when the catalog failed the first time."""
    facts = catalog.check(platform, user, "like", video_id)
    tags, duration = _video(platform, video_id)
    scope = _scope(platform, user)
    cipher = scope.cipher()

    def save(s: Session) -> uuid.UUID | None:
        hold(s, user.user_id)
        added = s.execute(
            insert(Like)
            .values(
                user_id=user.user_id,
                lookup=cipher.lookup(LIKE_FIELD, str(video_id)),
                video_ct=cipher.encrypt(LIKE_FIELD, str(video_id)),
            )
            .on_conflict_do_nothing()
            .returning(Like.user_id)
        ).first()
        if added is None:
            return None
        signals.add_action(s, scope, video_id, facts.owner_id, tags, duration, "liked")
        return engagement.owe(s, video_id, user.market, likes=1, score=LIKE_SCORE)

    owed = scope.cell.db.retrying(save)
    engagement.settle(platform, user.home_region, [owed] if owed else [])
    with platform.catalog.read() as c:
        count = engagement.likes_of(c, video_id)
    if owed is not None:
        notify.send(platform, facts.owner_id, "like", user.user_id, video_id=video_id)
    return count


def unlike(platform: Platform, user: CurrentUser, video_id: uuid.UUID) -> int:
    """Take a like back. Idempotent; works on a video that is no longer visible too."""
    scope = _scope(platform, user)
    lookup = scope.cipher().lookup(LIKE_FIELD, str(video_id))

    def take_back(s: Session) -> uuid.UUID | None:
        hold(s, user.user_id)
        gone = s.execute(
            delete(Like)
            .where(Like.user_id == user.user_id, Like.lookup == lookup)
            .returning(Like.user_id)
        ).first()
        if gone is None:
            return None
        return engagement.owe(s, video_id, user.market, likes=-1)

    owed = scope.cell.db.retrying(take_back)
    engagement.settle(platform, user.home_region, [owed] if owed else [])
    with platform.catalog.read() as c:
        return engagement.likes_of(c, video_id)


def liked_among(
    platform: Platform, user: CurrentUser | None, video_ids: Iterable[uuid.UUID]
) -> set[uuid.UUID]:
    """Which of these videos the user has liked: one probe of the user's lookups."""
    ids = list(video_ids)
    if user is None or not ids:
        return set()
    scope = _scope(platform, user)
    cipher = scope.cipher()
    wanted = {cipher.lookup(LIKE_FIELD, str(v)): v for v in ids}
    with scope.cell.db.rows() as c:
        found = c.execute(_liked_among(), {"user": user.user_id, "lookups": list(wanted)})
        return {wanted[bytes(x)] for (x,) in found}


@cache
def _liked_among() -> Select[bytes]:
    """Which of the lookups (parameter `lookups`) the user (`user`) has: built once."""
    return select(Like.lookup).where(
        Like.user_id == bindparam("user", type_=Uuid()),
        Like.lookup == any_(bindparam("lookups", type_=ARRAY(LargeBinary()))),
    )


def share(platform: Platform, user: CurrentUser, video_id: uuid.UUID) -> int:
    """Count a share of a public video; returns the video's share count."""
    facts = catalog.check(platform, user, "share", video_id)
    tags, duration = _video(platform, video_id)
    scope = _scope(platform, user)

    def save(s: Session) -> uuid.UUID:
        hold(s, user.user_id)
        signals.add_action(s, scope, video_id, facts.owner_id, tags, duration, "shared")
        return engagement.owe(s, video_id, user.market, shares=1, score=SHARE_SCORE)

    owed = scope.cell.db.retrying(save)
    engagement.settle(platform, user.home_region, [owed])
    with platform.catalog.read() as c:
        return int(c.scalar(select(VideoStats.shares).where(VideoStats.video_id == video_id)) or 0)


def forget(platform: Platform, cell: Cell, user_id: uuid.UUID) -> int:
    """Before a user's key is destroyed: take their likes out of the public counts, and the
    rows out of the region. Returns how many were counted out.

    Straight to the catalog, not through the outbox: outbox rows naming the videos a purged
    user liked would sit in the region (and its backups) after the key that hid them is gone.
    A crash between the two commits leaves the counts a little high until the region's next
    recount (reelm.social.recount)."""
    with cell.db.transaction() as s:
        rows = list(s.scalars(select(Like.video_ct).where(Like.user_id == user_id)))
        liked = []
        if rows and cell.keys.has_data_key(user_id):
            cipher = cell.for_user(user_id, cell.region).cipher()
            liked = [uuid.UUID(cipher.decrypt(LIKE_FIELD, blob)) for blob in rows]
        s.execute(delete(Like).where(Like.user_id == user_id))
    counts = engagement.Counts()
    for video_id in liked:
        counts.likes(cell.region, video_id, -1)
    platform.catalog.retrying(lambda c: engagement.write(c, counts))
    return len(liked)


def remove_user(platform: Platform, cell: Cell, user_id: uuid.UUID) -> None:
    """An account purge: the user's likes leave the public counts, their comments, follows and
    blocks leave the catalog, and their signals and notifications leave the home region.
    Idempotent (a rerun after a crash finds less to do). Called before the key is destroyed."""
    from sqlalchemy import func, or_

    from reelm.feed.pools import signal_memory
    from reelm.social.models import (
        Block,
        Comment,
        FiledReport,
        Follow,
        Notification,
        WatchSignal,
    )

    forget(platform, cell, user_id)
    signal_memory(platform).drop(user_id)
    with cell.db.transaction() as s:
        s.execute(delete(WatchSignal).where(WatchSignal.user_id == user_id))
        s.execute(delete(Notification).where(Notification.user_id == user_id))
        s.execute(delete(FiledReport).where(FiledReport.user_id == user_id))
    with platform.catalog.transaction() as c:
        written = c.execute(
            select(Comment.video_id, func.count())
            .where(Comment.author_id == user_id)
            .group_by(Comment.video_id)
        ).all()
        c.execute(delete(Comment).where(Comment.author_id == user_id))
        counts = engagement.Counts()
        for video_id, count in written:
            counts.count(video_id, "comments", -int(count))
        engagement.write(c, counts)
        c.execute(
            delete(Follow).where(or_(Follow.follower_id == user_id, Follow.followee_id == user_id))
        )
        c.execute(
            delete(Block).where(or_(Block.blocker_id == user_id, Block.blocked_id == user_id))
        )
