"""Watch signals: what a viewer did with the videos they were shown, written to the viewer's
home region only (encrypted with their key) and read back there by the For You ranking.

The catalog learns aggregates only: a video's view count, and its engagement score per market
and day (what trending and the cold-start mix rank by), owed through the region's outbox and
applied by reelm.social.engagement, as likes and shares are. Which viewer watched what never
leaves the viewer's home region.
"""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime
from functools import cache
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Integer, Select, Uuid, any_, bindparam, select
from sqlalchemy.orm import Session

from reelm.accounts.models import DirectoryEntry, PublicProfile
from reelm.accounts.service import CurrentUser
from reelm.bootstrap import Platform
from reelm.feed import ranking
from reelm.feed.pools import signal_memory
from reelm.feed.ranking import Signal
from reelm.media.models import PublicVideo
from reelm.regions.cell import UserScope
from reelm.regions.fence import hold
from reelm.social import access, engagement
from reelm.social.models import SIGNAL_FIELD, WatchSignal
from reelm.storage.db import uuid_array_param

MAX_BATCH = 100
MAX_SECONDS = 3600.0  # a clip is at most minutes long; anything above is a broken client
# How much one event adds to a video's engagement in the viewer's market.
WEIGHTS = {"view": 1.0, "completed": 2.0, "replayed": 1.0, "liked": 3.0, "shared": 4.0}
SKIP_WEIGHT = -0.5
# The For You ranking reads at most this many of a viewer's latest signals.
HISTORY = 1000


class WatchEvent(BaseModel):
    """One video watched: how long, and whether it was completed, replayed or skipped."""

    model_config = ConfigDict(extra="forbid")

    video_id: uuid.UUID
    watched_seconds: float = Field(ge=0, le=MAX_SECONDS, allow_inf_nan=False)
    completed: bool = False
    replayed: bool = False
    skipped: bool = False


class WatchBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    events: list[WatchEvent] = Field(min_length=1, max_length=MAX_BATCH)


def _scope(platform: Platform, user: CurrentUser) -> UserScope:
    return platform.cell(user.home_region).for_user(user.user_id, user.home_region)


def _event(
    video_id: uuid.UUID,
    creator: uuid.UUID,
    tags: Iterable[str],
    duration: float,
    **flags: float | bool,
) -> dict[str, object]:
    return {
        "v": str(video_id),
        "c": str(creator),
        "t": list(tags),
        "d": round(duration, 3),
        **{k: v for k, v in flags.items() if v},
    }


def _facts(
    platform: Platform, user: CurrentUser, ids: Iterable[uuid.UUID]
) -> dict[uuid.UUID, tuple[uuid.UUID, list[str], float]]:
    """Creator, hashtags and duration of the listed videos this viewer may see."""
    who = access.Viewer(user.user_id, user.market)
    wanted = list(set(ids))
    with platform.catalog.transaction() as c:
        rows = c.execute(
            access.listable(
                select(
                    PublicVideo.id, PublicVideo.owner_id, PublicVideo.hashtags, PublicVideo.duration
                )
                .join(PublicProfile, PublicProfile.user_id == PublicVideo.owner_id)
                .join(DirectoryEntry, DirectoryEntry.user_id == PublicVideo.owner_id)
                .where(PublicVideo.id.in_(wanted)),
                who,
            )
        ).all()
    return {v: (o, list(t), float(d)) for v, o, t, d in rows}


def record(platform: Platform, user: CurrentUser, batch: WatchBatch) -> tuple[int, int]:
    """Store a batch of watch events in the viewer's home region. Events for videos the
    viewer may not see (or that are gone) are dropped. Returns (accepted, dropped)."""
    facts = _facts(platform, user, (e.video_id for e in batch.events))
    scope = _scope(platform, user)
    cipher = scope.cipher()
    rows = []
    scores: dict[uuid.UUID, float] = defaultdict(float)
    views: dict[uuid.UUID, int] = defaultdict(int)
    for e in batch.events:
        known = facts.get(e.video_id)
        if known is None:
            continue
        creator, tags, duration = known
        event = _event(
            e.video_id,
            creator,
            tags,
            duration,
            w=round(min(e.watched_seconds, MAX_SECONDS), 3),
            cp=e.completed,
            rp=e.replayed,
            sk=e.skipped,
        )
        rows.append(
            WatchSignal(
                id=uuid.uuid4(),
                user_id=user.user_id,
                event_ct=cipher.encrypt(SIGNAL_FIELD, json.dumps(event, separators=(",", ":"))),
            )
        )
        views[e.video_id] += 1
        scores[e.video_id] += (
            WEIGHTS["view"]
            + WEIGHTS["completed"] * e.completed
            + WEIGHTS["replayed"] * e.replayed
            + SKIP_WEIGHT * e.skipped
        )
    if rows:

        def save(s: Session) -> list[uuid.UUID]:
            hold(s, user.user_id)
            s.add_all(rows)
            return engagement.owe_views(s, user.market, views, scores)

        owed = scope.cell.db.retrying(save)
        engagement.settle(platform, user.home_region, owed)
    return len(rows), len(batch.events) - len(rows)


def add_action(
    s: Session,
    scope: UserScope,
    video_id: uuid.UUID,
    creator: uuid.UUID,
    tags: Iterable[str],
    duration: float,
    action: str,
) -> None:
    """A like, share or comment as a signal, in the caller's home-region transaction."""
    event = _event(video_id, creator, tags, duration, **{action: True})
    s.add(
        WatchSignal(
            id=uuid.uuid4(),
            user_id=scope.user_id,
            event_ct=scope.cipher().encrypt(SIGNAL_FIELD, json.dumps(event, separators=(",", ":"))),
        )
    )


def history(platform: Platform, user: CurrentUser, *, limit: int = HISTORY) -> list[Signal]:
    """The viewer's latest signals, decrypted in their home region, oldest first."""
    return [_signal(r) for r in remembered(platform, user, limit=limit)]


def folded_history(
    platform: Platform, user: CurrentUser, *, limit: int = HISTORY
) -> list[ranking.Folded]:
    """`history` as reelm.feed.ranking.fold reads it."""
    return [folded for folded, _ in remembered(platform, user, limit=limit)]


def remembered(platform: Platform, user: CurrentUser, *, limit: int = HISTORY) -> list[Remembered]:
    """The viewer's latest signals, decrypted in their home region, oldest first.

    What this process decrypted for an earlier page is reused (reelm.feed.pools.SignalMemory):
    the region says which ids the latest window holds now, and only those not decrypted yet are
    read and decrypted, so the answer is always the region's current window."""
    scope = _scope(platform, user)
    memory = signal_memory(platform)
    key = (user.user_id, user.home_region)
    known = memory.get(key)
    window_of, blobs_of, blobs_among = _statements()
    with scope.cell.db.rows() as c:
        if not known:
            rows = c.execute(blobs_of, {"user": user.user_id, "limit": limit}).all()
            window = [(i, at) for i, at, _ in rows]
            blobs = {i: blob for i, _, blob in rows}
        else:
            window = [
                (i, at)
                for i, at in c.execute(window_of, {"user": user.user_id, "limit": limit}).all()
            ]
            missing = [i for i, _ in window if i.int not in known]
            blobs = (
                dict(c.execute(blobs_among, {"user": user.user_id, "ids": missing}).all())
                if missing
                else {}
            )
    current: dict[int, Remembered] = {}
    cipher = scope.cipher() if blobs else None
    for i, at in window:
        one = known.get(i.int)
        if one is None and cipher is not None and i in blobs:
            one = _remember(json.loads(cipher.decrypt(SIGNAL_FIELD, blobs[i])), at)
        if one is not None:
            current[i.int] = one
    memory.put(key, current)
    return [current[i.int] for i, _ in reversed(window) if i.int in current]


@cache
def _statements() -> tuple[
    Select[uuid.UUID, datetime], Select[uuid.UUID, datetime, bytes], Select[uuid.UUID, bytes]
]:
    """The window's ids, the window with its blobs, and the blobs of some ids (parameters:
    user, limit, ids); built once."""
    mine = WatchSignal.user_id == bindparam("user", type_=Uuid())
    latest = (WatchSignal.created_at.desc(), WatchSignal.id)
    window = select(WatchSignal.id, WatchSignal.created_at).where(mine).order_by(*latest)
    with_blobs = (
        select(WatchSignal.id, WatchSignal.created_at, WatchSignal.event_ct)
        .where(mine)
        .order_by(*latest)
    )
    among = select(WatchSignal.id, WatchSignal.event_ct).where(
        mine, WatchSignal.id == any_(uuid_array_param("ids"))
    )
    limit = bindparam("limit", type_=Integer())
    return window.limit(limit), with_blobs.limit(limit), among


# A decrypted signal as kept in memory: what the ranking folds (reelm.feed.ranking.Folded), then
# when, how long it was watched, the video's length and the flags (one bit each). Only numbers,
# strings and a datetime, so the garbage collector stops tracking it (hundreds of thousands of
# tracked objects made each full collection pause the process for 100-150 ms; bench/feed.py).
Remembered = tuple[ranking.Folded, tuple[datetime, float, float, int]]
FLAGS = ("cp", "rp", "sk", "liked", "shared", "commented")
BIT = {flag: 1 << n for n, flag in enumerate(FLAGS)}


def _remember(e: dict[str, Any], at: datetime) -> Remembered:
    signal = Signal(
        video_id=uuid.UUID(e["v"]),
        creator_id=uuid.UUID(e["c"]),
        hashtags=tuple(e["t"]),
        at=at if at.tzinfo else at.replace(tzinfo=UTC),
        watched_seconds=float(e.get("w", 0.0)),
        duration=float(e.get("d", 0.0)),
        completed=bool(e.get("cp")),
        replayed=bool(e.get("rp")),
        skipped=bool(e.get("sk")),
        liked=bool(e.get("liked")),
        shared=bool(e.get("shared")),
        commented=bool(e.get("commented")),
    )
    flags = sum(BIT[flag] for flag in FLAGS if e.get(flag))
    return ranking.folded(signal), (signal.at, signal.watched_seconds, signal.duration, flags)


def _signal(r: Remembered) -> Signal:
    (video, creator, tags, _, _), (at, watched, duration, flags) = r
    return Signal(
        video_id=uuid.UUID(int=video),
        creator_id=uuid.UUID(int=creator),
        hashtags=tags,
        at=at,
        watched_seconds=watched,
        duration=duration,
        completed=bool(flags & BIT["cp"]),
        replayed=bool(flags & BIT["rp"]),
        skipped=bool(flags & BIT["sk"]),
        liked=bool(flags & BIT["liked"]),
        shared=bool(flags & BIT["shared"]),
        commented=bool(flags & BIT["commented"]),
    )
