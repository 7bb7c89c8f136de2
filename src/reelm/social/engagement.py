"""Engagement counts: how likes, shares, comments and watch signals reach the catalog.

A like or a share is written in the liker's home region and counted in the catalog: two
databases, and the second write can fail after the first committed (a like saved whose count
was lost was then never counted, even when the liker tried again: issue #12). So the region's
write records what it owes the catalog in the region's outbox, in the same transaction
(`owe`); `drain` applies outbox rows to the catalog once each (a receipt per row, written in
the catalog's transaction, makes a second delivery a no-op) and then deletes them. The request
that wrote a row drains it at once (`settle`); the worker sweeps what a failed request left,
every minute (`sweep`).

Every catalog counter is written by `write`, in one order: market engagement, then the
regions' like counts, then the video's counts, each in key order. Two writers of the same
videos then wait for each other instead of deadlocking (likes once took `video_stats` first
and watch signals `market_engagement` first). A deadlock or serialization failure that happens
all the same is run again (`Database.retrying`).

reelm.social.recount proves the like counts: a region counts its own likes per video
(decrypting them with its own keys, in the region) and sets its row of `region_likes`;
`video_stats.likes` is the sum of the regions' rows.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections import defaultdict
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import cache
from typing import NamedTuple

from sqlalchemy import ColumnElement, any_, delete, func, select, text, update
from sqlalchemy.dialects.postgresql import Insert, insert
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session
from sqlalchemy.sql.dml import ReturningInsert

from reelm.bootstrap import Platform
from reelm.media.models import PublicVideo
from reelm.social.models import (
    EngagementOutbox,
    EngagementReceipt,
    MarketEngagement,
    RegionLikes,
    VideoStats,
)
from reelm.storage.db import uuid_array

log = logging.getLogger("reelm.social.engagement")

# A video's public counts, in `video_stats`.
STAT_COLUMNS = ("likes", "comments", "shares", "views")
# Outbox rows applied in one catalog transaction by a sweep.
DRAIN_BATCH = 500
# A receipt whose region delete was lost (a crash between the two commits) is pruned after
# this; an outbox row waits seconds, or as long as the catalog is down, never days.
RECEIPT_DAYS = 7
# First key of the advisory lock on a region's like counts (second: the region's hash). A
# drain holds it shared, so drains never wait for each other; a recount takes it exclusive,
# so no drain of the region is half-applied while it compares.
LIKES_LOCK_SPACE = 0x6C6B  # "lk"


class Owed(NamedTuple):
    """An outbox row as a drain reads it."""

    id: uuid.UUID
    video_id: uuid.UUID
    market: str
    day: date
    likes: int
    shares: int
    views: int
    score: float


OUTBOX_COLUMNS = tuple(getattr(EngagementOutbox, name) for name in Owed._fields)


@cache
def _receipt() -> ReturningInsert[tuple[uuid.UUID]]:
    """A receipt per row, answering the rows not received before (built once)."""
    return insert(EngagementReceipt).on_conflict_do_nothing().returning(EngagementReceipt.outbox_id)


@dataclass
class Counts:
    """What some events add to the catalog, folded so that each row is written once."""

    scores: defaultdict[tuple[str, date, uuid.UUID], float] = field(
        default_factory=lambda: defaultdict(float)
    )
    stats: defaultdict[tuple[uuid.UUID, str], int] = field(default_factory=lambda: defaultdict(int))
    region_likes: defaultdict[tuple[uuid.UUID, str], int] = field(
        default_factory=lambda: defaultdict(int)
    )

    def score(
        self, market: str, video_id: uuid.UUID, score: float, day: date | None = None
    ) -> None:
        if math.isfinite(score) and score != 0:
            self.scores[(market, day or date.today(), video_id)] += score

    def count(self, video_id: uuid.UUID, column: str, by: int) -> None:
        if column not in STAT_COLUMNS:
            raise ValueError(f"no count {column!r}")
        self.stats[(video_id, column)] += by

    def likes(self, region: str, video_id: uuid.UUID, by: int) -> None:
        """Likes held in ``region``: its row of `region_likes` and the video's total."""
        self.region_likes[(video_id, region)] += by
        self.count(video_id, "likes", by)

    def owed(self, region: str, row: Owed) -> None:
        self.score(row.market, row.video_id, row.score, row.day)
        if row.likes:
            self.likes(region, row.video_id, row.likes)
        self.count(row.video_id, "shares", row.shares)
        self.count(row.video_id, "views", row.views)

    def videos(self) -> set[uuid.UUID]:
        return {v for _, _, v in self.scores} | {v for v, _ in self.stats}


def write(c: Session, counts: Counts) -> None:
    """Add ``counts`` to the catalog in the caller's transaction: the one way catalog counters
    change, in one lock order (market engagement, regions' likes, video counts; each in key
    order). Counts of videos that are no longer public are dropped. `video_stats` never goes
    below zero; a region's likes may, until its next recount (see RegionLikes)."""
    public = present(c, counts.videos())
    scores, regions, stats = _upserts()
    db = c.connection()
    scored = [
        {"market": m, "day": d, "video_id": v, "score": s}
        for (m, d, v), s in sorted(counts.scores.items())
        if v in public and s != 0
    ]
    if scored:
        db.execute(scores, scored)
    regional = [
        {"video_id": v, "region": r, "likes": n}
        for (v, r), n in sorted(counts.region_likes.items())
        if v in public and n != 0
    ]
    if regional:
        db.execute(regions, regional)
    by_video: dict[uuid.UUID, dict[str, int]] = {}
    for (v, column), n in counts.stats.items():
        if v in public and n != 0:
            by_video.setdefault(v, dict.fromkeys(STAT_COLUMNS, 0))[column] += n
    if by_video:
        db.execute(stats, [{"video_id": v, **by_video[v]} for v in sorted(by_video)])
        below = [v for v, row in by_video.items() if min(row.values()) < 0]
        if below:  # a new row took a negative count as it was (rows locked above already)
            c.execute(
                update(VideoStats)
                .where(VideoStats.video_id == any_(uuid_array(below)))
                .values({col: func.greatest(getattr(VideoStats, col), 0) for col in STAT_COLUMNS})
            )


@cache
def _upserts() -> tuple[Insert, Insert, Insert]:
    """The three counter upserts, built once and run with a list of rows (one multi-row
    statement, rows in the list's order, so locks are taken in key order): building a
    statement of 100 rows' values cost more than running it (bench/feed.py's signals)."""
    scores = insert(MarketEngagement)
    scores = scores.on_conflict_do_update(
        index_elements=["market", "day", "video_id"],
        set_={"score": MarketEngagement.score + scores.excluded.score},
    )
    regions = insert(RegionLikes)
    regions = regions.on_conflict_do_update(
        index_elements=["video_id", "region"],
        set_={"likes": RegionLikes.likes + regions.excluded.likes},
    )
    stats = insert(VideoStats)
    stats = stats.on_conflict_do_update(
        index_elements=["video_id"],
        set_={
            col: func.greatest(getattr(VideoStats, col) + getattr(stats.excluded, col), 0)
            for col in STAT_COLUMNS
        },
    )
    return scores, regions, stats


def count(
    c: Session,
    video_id: uuid.UUID,
    column: str,
    by: int,
    *,
    market: str | None = None,
    score: float = 0.0,
) -> None:
    """A catalog-only change of one video's count (a comment, its deletion), with the
    engagement it adds in ``market``: through `write`, in the caller's catalog transaction."""
    counts = Counts()
    counts.count(video_id, column, by)
    if market is not None:
        counts.score(market, video_id, score)
    write(c, counts)


def likes_of(c: Session, video_id: uuid.UUID) -> int:
    """A video's public like count."""
    return int(c.scalar(select(VideoStats.likes).where(VideoStats.video_id == video_id)) or 0)


def present(c: Session, videos: Collection[uuid.UUID]) -> set[uuid.UUID]:
    """Which of these videos are public (counts of the others are dropped)."""
    if not videos:
        return set()
    return set(c.scalars(select(PublicVideo.id).where(PublicVideo.id == any_(uuid_array(videos)))))


class RecountRunning(Exception):
    """A request's drain met the region's recount (reelm.social.recount): its rows wait for
    the next drain rather than the request waiting for the recount."""


def lock_likes(c: Session, region: str, *, exclusive: bool = False, wait: bool = True) -> None:
    """The advisory lock on a region's like counts (LIKES_LOCK_SPACE): shared by drains,
    exclusive for a recount; ``wait=False`` raises RecountRunning instead of waiting."""
    if exclusive:
        kind = "pg_advisory_xact_lock"
    else:
        kind = "pg_advisory_xact_lock_shared" if wait else "pg_try_advisory_xact_lock_shared"
    got = c.scalar(
        text(f"SELECT {kind}(:space, hashtext(:region))"),
        {"space": LIKES_LOCK_SPACE, "region": region},
    )
    if got is False:
        raise RecountRunning(region)


# ---- the outbox ------------------------------------------------------------------------------


def owe(
    s: Session,
    video_id: uuid.UUID,
    market: str,
    *,
    likes: int = 0,
    shares: int = 0,
    score: float = 0.0,
) -> uuid.UUID:
    """Record, in the caller's home-region transaction, what a like or a share adds to the
    catalog's counts. Returns the outbox row's id, for `settle`."""
    return owe_views(s, market, {video_id: 0}, {video_id: score}, likes=likes, shares=shares)[0]


def owe_views(
    s: Session,
    market: str,
    views: dict[uuid.UUID, int],
    scores: dict[uuid.UUID, float],
    *,
    likes: int = 0,
    shares: int = 0,
) -> list[uuid.UUID]:
    """`owe` for a batch of watch signals: a row per video, in one statement."""
    today = date.today()
    ids = [uuid.uuid4() for _ in views]
    rows = [
        {
            "id": row_id,
            "video_id": v,
            "market": market,
            "day": today,
            "likes": likes,
            "shares": shares,
            "views": n,
            "score": scores.get(v, 0.0) if math.isfinite(scores.get(v, 0.0)) else 0.0,
        }
        for row_id, (v, n) in zip(ids, views.items(), strict=True)
    ]
    s.connection().execute(insert(EngagementOutbox), rows)
    return ids


def drain(
    platform: Platform, region: str, ids: Collection[uuid.UUID] | None = None, *, wait: bool = True
) -> int:
    """Apply the region's outbox rows to the catalog, each once, and delete them.

    ``ids``: these rows only (a request's own; waited for if another drain holds them, which
    then applies them). None: up to DRAIN_BATCH rows that no other drain holds. The region's
    rows stay locked until the catalog has committed; a crash in between leaves them, with
    their receipts, and the next drain deletes them without counting them again. Returns how
    many rows were applied now. ``wait=False``: raise RecountRunning rather than wait for the
    region's recount (which holds the catalog side for as long as it decrypts)."""
    with platform.cell(region).db.transaction() as s:
        query = select(*OUTBOX_COLUMNS)
        if ids is None:
            query = query.limit(DRAIN_BATCH).with_for_update(skip_locked=True)
        else:
            wanted = uuid_array(ids)
            query = query.where(EngagementOutbox.id == any_(wanted)).order_by(EngagementOutbox.id)
            query = query.with_for_update()
        rows = [Owed(*row) for row in s.execute(query)]
        if not rows:
            return 0
        done = [row.id for row in rows]
        applied = platform.catalog.retrying(lambda c: _receive(c, region, rows, wait))
        s.execute(delete(EngagementOutbox).where(EngagementOutbox.id == any_(uuid_array(done))))
    _forget_receipts(platform, region, EngagementReceipt.outbox_id == any_(uuid_array(done)), wait)
    return applied


def _forget_receipts(
    platform: Platform, region: str, which: ColumnElement[bool], wait: bool
) -> None:
    """Delete receipts whose rows have left the region's outbox. Under the shared lock too: a
    recount that saw the rows in its snapshot must still see their receipts. A request does
    not wait for a recount to end; its receipts then go with the sweep's pruning."""
    try:
        with platform.catalog.transaction() as c:
            lock_likes(c, region, wait=wait)
            c.execute(delete(EngagementReceipt).where(EngagementReceipt.region == region, which))
    except RecountRunning:
        pass


def _receive(c: Session, region: str, rows: Iterable[Owed], wait: bool) -> int:
    """The catalog's side of a drain: receipts first (a row received before is skipped), then
    the counts of the rows received now."""
    ordered = sorted(rows, key=lambda row: row.id)
    lock_likes(c, region, wait=wait)
    fresh = set(
        c.connection()
        .execute(_receipt(), [{"region": region, "outbox_id": row.id} for row in ordered])
        .scalars()
    )
    counts = Counts()
    for row in ordered:
        if row.id in fresh:
            counts.owed(region, row)
    write(c, counts)
    return len(fresh)


def settle(platform: Platform, region: str, ids: Collection[uuid.UUID]) -> None:
    """After a request's region commit: apply what it owes the catalog now, so its answer
    shows the new count. No ids (a repeated like, say): apply what earlier requests left. If
    the catalog fails, the request has still succeeded: its rows wait in the outbox for the
    next request or the worker's sweep."""
    try:
        drain(platform, region, ids or None, wait=False)
    except RecountRunning:
        log.info("%s: engagement left in the outbox while the likes are recounted", region)
    except SQLAlchemyError as exc:
        log.warning(
            "%s: engagement left in the outbox for the sweep (%s)", region, type(exc).__name__
        )


def sweep(platform: Platform, region: str) -> int:
    """The worker's pass over a region's outbox: drain it all, then prune old receipts.
    Returns how many rows were applied."""
    applied = 0
    while True:
        now = drain(platform, region)
        applied += now
        if now < DRAIN_BATCH:
            break
    cutoff = datetime.now(UTC) - timedelta(days=RECEIPT_DAYS)
    _forget_receipts(platform, region, EngagementReceipt.received_at < cutoff, True)
    if applied:
        log.info("%s: %d outbox row(s) applied by the sweep", region, applied)
    return applied
