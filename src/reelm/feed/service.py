"""The For You feed and trending hashtags.

For You, per page:

1. *taste*: the viewer's latest signals (``signals.history``), decrypted in the viewer's home
   region, and the creators they follow; a viewer who is not signed in, or has too few
   signals, is cold (the cold-start mix: market popularity and freshness);
2. *candidates* from the public catalog, each list filtered by reelm.social.access.listable:
   the freshest videos, those trending in the viewer's market this week, recent videos of
   followed creators and of the creators and hashtags the viewer engages with, and a random
   sample (exploration);
3. *ranking* (reelm.feed.ranking.rank): no video the viewer watched or was already served in
   this session, never the same creator twice in a row, at least 20% exploration.

The cursor carries what this session already served (short ids), so the next page does not
repeat it; it is read by nobody else and a forged one can only hide videos from its bearer.
Signals sent between two pages are read on the next page: it already reflects them.
"""

from __future__ import annotations

import base64
import binascii
import struct
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import cache, lru_cache
from typing import Any, TypeVar

from sqlalchemy import (
    CompoundSelect,
    Select,
    Uuid,
    any_,
    bindparam,
    case,
    func,
    literal,
    or_,
    select,
    union_all,
)

from reelm.accounts.errors import InvalidInput
from reelm.accounts.models import PublicProfile
from reelm.accounts.service import CurrentUser
from reelm.bootstrap import Platform
from reelm.feed import pools, ranking, signals
from reelm.media import catalog
from reelm.media.catalog import Page
from reelm.media.models import PublicVideo
from reelm.social import access
from reelm.social.models import Block, Follow, MarketEngagement
from reelm.storage.db import uuid_array_param

EXPLORATION = 0.2
SERVED_MEMORY = 120  # ids a cursor remembers
POOL = {"fresh": 150, "trending": 150, "followed": 60, "affinity": 80, "explore": 100}
MAX_PAGE = catalog.MAX_PAGE


# ---- cursor ----------------------------------------------------------------------------------


def _short(video_id: uuid.UUID) -> bytes:
    return video_id.bytes[:6]


SHORT_SHIFT = 128 - 48  # int.from_bytes(_short(v)) == v.int >> SHORT_SHIFT


def _encode(page: int, last_creator: uuid.UUID | None, served: list[bytes]) -> str:
    raw = struct.pack(">H", min(page, 65535)) + (last_creator.bytes if last_creator else b"\0" * 16)
    raw += b"".join(served[-SERVED_MEMORY:])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(cursor: str | None) -> tuple[int, uuid.UUID | None, list[bytes]]:
    if not cursor:
        return 0, None, []
    try:
        if len(cursor) > 1200:
            raise ValueError
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        if len(raw) < 18 or (len(raw) - 18) % 6:
            raise ValueError
    except (ValueError, binascii.Error):
        raise InvalidInput("this cursor is not one we gave out", field="cursor") from None
    page = struct.unpack(">H", raw[:2])[0]
    last = raw[2:18]
    served = [raw[i : i + 6] for i in range(18, len(raw), 6)]
    return page, (uuid.UUID(bytes=last) if any(last) else None), served


# ---- candidates ------------------------------------------------------------------------------

K = TypeVar("K")


@dataclass(frozen=True)
class Ties:
    """What of the viewer's own edges shapes a page: who they follow, who is blocked either
    way, and the newest videos of followed private accounts the viewer may list (no shared pool
    holds those)."""

    followed: list[uuid.UUID]
    blocked: frozenset[int]  # creator_id.int
    private_videos: list[ranking.Candidate]


@cache
def _edges() -> CompoundSelect[str, uuid.UUID, bool]:
    """Who the viewer (parameter `me`) follows, with whether each is private, and who is
    blocked either way: one statement."""
    me = bindparam("me", type_=Uuid())
    return union_all(
        select(literal("follows"), Follow.followee_id, PublicProfile.is_private)
        .join(PublicProfile, PublicProfile.user_id == Follow.followee_id)
        .where(Follow.follower_id == me, Follow.state == "active"),
        select(
            literal("blocked"),
            case((Block.blocker_id == me, Block.blocked_id), else_=Block.blocker_id),
            literal(False),
        ).where(or_(Block.blocker_id == me, Block.blocked_id == me)),
    )


@lru_cache(maxsize=64)
def _followed_private(market: str | None) -> Select[Any]:
    """The newest videos a signed-in viewer in `market` may list (access.listable_shape, its
    parameters given when it runs) of the accounts in parameter `owners`. Built once per market:
    building it cost more than running it."""
    return (
        pools.candidate_rows(market or "")
        .where(
            access.listable_shape(True, market is not None),
            PublicVideo.owner_id == any_(uuid_array_param("owners")),
        )
        .order_by(PublicVideo.published_at.desc(), PublicVideo.id.desc())
        .limit(POOL["followed"])
    )


def ties_of(platform: Platform, viewer: CurrentUser | None, who: access.Viewer) -> Ties:
    """The viewer's ties: one statement, two when the viewer follows private accounts."""
    if viewer is None:
        return Ties([], frozenset(), [])
    with platform.catalog_reads(viewer.user_id).rows() as c:
        edges = c.execute(_edges(), {"me": viewer.user_id}).all()
        followed = [(other, is_private) for kind, other, is_private in edges if kind == "follows"]
        blocked = frozenset(other.int for kind, other, _ in edges if kind == "blocked")
        private = [f for f, is_private in followed if is_private]
        rows = (
            c.execute(
                _followed_private(who.market), {"owners": private, **access.listable_values(who)}
            ).all()
            if private
            else []
        )
    videos = [pools.candidate(r, "followed") for r in rows]
    return Ties([f for f, _ in followed], blocked, videos)


def _candidates(
    pool: pools.MarketPool, taste: ranking.Taste, ties: Ties, seed: bytes
) -> list[ranking.Candidate]:
    """Candidates from the market's pool (reelm.feed.pools) and followed private accounts'
    newest, less those of blocked creators."""
    lists = [
        pool.fresh(POOL["fresh"]),
        pool.trending_now(POOL["trending"]),
        ties.private_videos,
        pool.newest_of(
            pool.by_creator, [f.int for f in ties.followed], POOL["followed"], source="followed"
        ),
        pool.newest_of(pool.by_creator, _top(taste.creators, 10), POOL["affinity"] // 2),
        pool.newest_of(pool.by_tag, _top(taste.hashtags, 10), POOL["affinity"]),
        pool.sample(POOL["explore"], seed),
    ]
    seen: dict[int, ranking.Candidate] = {}
    blocked = ties.blocked
    for candidates in lists:
        for candidate in candidates:
            if candidate.creator_id.int not in blocked:
                seen.setdefault(candidate.video_id.int, candidate)
    return list(seen.values())


def _top(weights: Mapping[K, float], n: int) -> list[K]:
    items = [(k, v) for k, v in weights.items() if v > 0]
    items.sort(key=lambda kv: -kv[1])
    return [k for k, _ in items[:n]]


# ---- the feed --------------------------------------------------------------------------------


def taste_of(
    platform: Platform, viewer: CurrentUser | None, now: datetime, followed: list[uuid.UUID]
) -> ranking.Taste:
    if viewer is None:
        return ranking.taste_from((), now=now)
    return ranking.fold(signals.folded_history(platform, viewer), now=now, followed=followed)


def for_you(
    platform: Platform,
    viewer: CurrentUser | None,
    *,
    cursor: str | None = None,
    limit: int = 5,
    market: str | None = None,
) -> Page:
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"limit must be between 1 and {MAX_PAGE}", field="limit")
    page, last_creator, served = _decode(cursor)
    now = datetime.now(UTC)
    who = catalog.viewer_of(viewer, market)
    pool = pools.market_pool(platform, who.market or "")
    ties = ties_of(platform, viewer, who)
    taste = taste_of(platform, viewer, now, ties.followed)
    seed = f"{who.user_id}|{page}|{b''.join(served[-3:]).hex()}|{now:%Y%m%d%H}".encode()
    candidates = _candidates(pool, taste, ties, seed)
    gone = {int.from_bytes(short) for short in served}
    fresh = [c for c in candidates if c.video_id.int >> SHORT_SHIFT not in gone]
    picked = ranking.rank(
        fresh,
        taste,
        now=now,
        limit=limit,
        exploration=EXPLORATION,
        seed=seed,
        last_creator=last_creator,
    )
    # A pool may be up to pools.REBUILD seconds old: the cards are read with the full rules.
    cards = catalog.cards_in_order(
        platform, viewer, [r.candidate.video_id for r in picked], rules=who
    )
    if not cards and cursor is None:
        # Nothing in the pool this viewer may see, where the catalog may have some (videos
        # that became listable since the pool was built: an account made public, a suspension
        # lifted; or a viewer who has watched everything): a first page is never empty while
        # the viewer's Newest is not.
        cards = catalog.feed(platform, viewer, limit=limit, market=market).items
    if not cards:
        return Page([], None)
    served += [_short(card.id) for card in cards]
    return Page(cards, _encode(page + 1, cards[-1].owner_id, served))


# ---- trending hashtags -----------------------------------------------------------------------


def _ids(who: access.Viewer) -> Select[uuid.UUID, uuid.UUID, list[str], datetime]:
    return access.listable(
        catalog._all_public().with_only_columns(
            PublicVideo.id, PublicVideo.owner_id, PublicVideo.hashtags, PublicVideo.published_at
        ),
        who,
    )


def trending_hashtags(
    platform: Platform, market: str | None, *, limit: int = 10
) -> list[tuple[str, float]]:
    """This week's hashtags in the market, by the engagement of their videos; where the market
    has none yet, the most used hashtags of the newest public videos."""
    limit = max(1, min(limit, 50))
    since = date.today() - timedelta(days=pools.TRENDING_DAYS)
    who = access.Viewer(None, market)
    with platform.catalog_replica.read() as c:
        tag = func.unnest(PublicVideo.hashtags).label("tag")
        scored = (
            _ids(who)
            .with_only_columns(tag, MarketEngagement.score)
            .join(MarketEngagement, MarketEngagement.video_id == PublicVideo.id)
            .where(MarketEngagement.market == (market or ""), MarketEngagement.day >= since)
            .subquery()
        )
        rows = c.execute(
            select(scored.c.tag, func.sum(scored.c.score))
            .group_by(scored.c.tag)
            .having(func.sum(scored.c.score) > 0)
            .order_by(func.sum(scored.c.score).desc(), scored.c.tag)
            .limit(limit)
        ).all()
        if rows:
            return [(t, float(s)) for t, s in rows]
        recent = c.scalars(
            _ids(who)
            .with_only_columns(PublicVideo.hashtags)
            .order_by(PublicVideo.published_at.desc())
            .limit(500)
        ).all()
    counts: Counter[str] = Counter(t for tags in recent for t in tags)
    return [
        (t, float(n)) for t, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]
    ]
