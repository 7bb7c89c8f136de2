"""The likes recount: each region proves its own like counts.

Likes are encrypted with each liker's key in the liker's home region, so only the region can
count them: it decrypts them there, with its own keys, and only a number per video leaves it.
`reconcile_likes` sets the region's rows of the catalog's `region_likes` to what it holds (less
what its outbox still owes, which the drain adds), and each video's `video_stats.likes` to the
sum of its regions' rows. The worker runs it hourly per region; `reelm social reconcile` by
hand. It holds the region's like-count lock (reelm.social.engagement.lock_likes) exclusive from
its snapshot of the region to its commit, so no drain is half-applied while it compares.
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass

from sqlalchemy import any_, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from reelm.accounts.models import DirectoryEntry
from reelm.bootstrap import Platform
from reelm.regions.cell import Cell
from reelm.social.engagement import lock_likes, present
from reelm.social.models import (
    LIKE_FIELD,
    EngagementOutbox,
    EngagementReceipt,
    Like,
    RegionLikes,
    VideoStats,
)
from reelm.storage.db import uuid_array

log = logging.getLogger("reelm.social.recount")

DIRECTORY_CHUNK = 5000  # user ids per directory query


@dataclass(frozen=True)
class Recount:
    """A region's recount: videos compared, and how many had a wrong count (the region's row
    of `region_likes`, or the video's total) that is now right."""

    region: str
    videos: int
    corrected: int


def reconcile_likes(platform: Platform, region: str) -> Recount:
    """Recount the likes a region holds, per video, and make the catalog agree: the region's
    row of `region_likes`, and `video_stats.likes` as the sum of the regions' rows.

    The region's likes are decrypted here, in the region, with its own keys, and only numbers
    per video leave it. Likes still owed to the catalog (outbox rows without a receipt) are
    taken off the expected count, since their drain adds them. Only the likes of users whose
    directory entry names this region are counted (during a migration both regions hold a
    copy; the directory says which is the user's). The region's drains wait meanwhile (a
    request's leaves its rows to the next drain), for as long as the decryption takes."""
    cell = platform.cell(region)

    def compare(c: Session) -> tuple[int, int]:
        # Exclusive from before the region's snapshot to the end: no drain of the region
        # applies (or forgets a receipt) between what the region holds and what is compared.
        lock_likes(c, region, exclusive=True)
        held, owed = _recount(platform, cell)
        counted = dict(
            c.execute(
                select(RegionLikes.video_id, RegionLikes.likes)
                .where(RegionLikes.region == region)
                .order_by(RegionLikes.video_id)
                .with_for_update()
            ).all()
        )
        received = set(
            c.scalars(
                select(EngagementReceipt.outbox_id).where(
                    EngagementReceipt.region == region,
                    EngagementReceipt.outbox_id == any_(uuid_array(list(owed))),
                )
            )
        )
        unapplied: defaultdict[uuid.UUID, int] = defaultdict(int)
        for row_id, (video_id, n) in owed.items():
            if row_id not in received:
                unapplied[video_id] += n
        videos = present(c, set(counted) | set(held))
        expected = {v: held.get(v, 0) - unapplied[v] for v in videos}
        wrong = {v: n for v, n in expected.items() if counted.get(v, 0) != n}
        if wrong:
            stmt = insert(RegionLikes).values(
                [{"video_id": v, "region": region, "likes": wrong[v]} for v in sorted(wrong)]
            )
            c.execute(
                stmt.on_conflict_do_update(
                    index_elements=["video_id", "region"], set_={"likes": stmt.excluded.likes}
                )
            )
        return len(videos), len(set(wrong) | _total_likes(c, videos))

    videos, corrected = platform.catalog.retrying(compare)
    if corrected:
        log.warning("%s: like counts of %d video(s) corrected by the recount", region, corrected)
    return Recount(region, videos, corrected)


def _total_likes(c: Session, videos: Collection[uuid.UUID]) -> set[uuid.UUID]:
    """Make each video's `video_stats.likes` the sum of its regions' rows; the videos whose
    total was wrong. Rows locked in id order, as `write` locks them."""
    if not videos:
        return set()
    ids = uuid_array(sorted(videos))
    totals = dict(
        c.execute(
            select(VideoStats.video_id, VideoStats.likes)
            .where(VideoStats.video_id == any_(ids))
            .order_by(VideoStats.video_id)
            .with_for_update()
        ).all()
    )
    sums = dict(
        c.execute(
            select(RegionLikes.video_id, func.sum(RegionLikes.likes))
            .where(RegionLikes.video_id == any_(ids))
            .group_by(RegionLikes.video_id)
        ).all()
    )
    right = {v: max(int(sums.get(v) or 0), 0) for v in videos}
    wrong = {v for v, n in right.items() if totals.get(v, 0) != n}
    if wrong:
        stmt = insert(VideoStats).values(
            [{"video_id": v, "likes": right[v]} for v in sorted(wrong)]
        )
        c.execute(
            stmt.on_conflict_do_update(
                index_elements=["video_id"], set_={"likes": stmt.excluded.likes}
            )
        )
    return wrong


def _recount(
    platform: Platform, cell: Cell
) -> tuple[dict[uuid.UUID, int], dict[uuid.UUID, tuple[uuid.UUID, int]]]:
    """In one snapshot of the region: its likes per video (of users at home here, whose key
    still exists), and the likes its outbox still owes (row id -> video, likes)."""
    held: defaultdict[uuid.UUID, int] = defaultdict(int)
    with cell.db.snapshot() as s:
        owed = {
            row_id: (video_id, int(n))
            for row_id, video_id, n in s.execute(
                select(
                    EngagementOutbox.id, EngagementOutbox.video_id, EngagementOutbox.likes
                ).where(EngagementOutbox.likes != 0)
            )
        }
        users = list(s.scalars(select(Like.user_id).distinct()))
        home = _at_home(platform, cell.region, users)
        rows = s.execute(select(Like.user_id, Like.video_ct).order_by(Like.user_id)).yield_per(1000)
        current: uuid.UUID | None = None
        cipher = None
        for user_id, blob in rows:
            if user_id not in home:
                continue
            if user_id != current:
                current = user_id
                has_key = cell.keys.has_data_key(user_id)
                cipher = cell.for_user(user_id, cell.region).cipher() if has_key else None
            if cipher is not None:
                held[uuid.UUID(cipher.decrypt(LIKE_FIELD, bytes(blob)))] += 1
    return dict(held), owed


def _at_home(platform: Platform, region: str, users: list[uuid.UUID]) -> set[uuid.UUID]:
    home: set[uuid.UUID] = set()
    with platform.catalog.read() as c:
        for start in range(0, len(users), DIRECTORY_CHUNK):
            chunk = uuid_array(users[start : start + DIRECTORY_CHUNK])
            home.update(
                c.scalars(
                    select(DirectoryEntry.user_id).where(
                        DirectoryEntry.user_id == any_(chunk), DirectoryEntry.home_region == region
                    )
                )
            )
    return home
