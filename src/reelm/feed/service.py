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
import hashlib
import struct
import uuid
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import Select, func, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session
from sqlalchemy.types import String

from reelm.accounts.errors import InvalidInput
from reelm.accounts.service import CurrentUser
from reelm.bootstrap import Platform
from reelm.feed import ranking, signals
from reelm.media import catalog
from reelm.media.catalog import Page
from reelm.media.models import PublicVideo
from reelm.social import access
from reelm.social.models import Follow, MarketEngagement, VideoStats

EXPLORATION = 0.2
TRENDING_DAYS = 7
SERVED_MEMORY = 120  # ids a cursor remembers
POOL = {"fresh": 150, "trending": 150, "followed": 60, "affinity": 80, "explore": 100}
MAX_PAGE = catalog.MAX_PAGE


# ---- cursor ----------------------------------------------------------------------------------


def _short(video_id: uuid.UUID) -> bytes:
    return video_id.bytes[:6]


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
IdRow = tuple[uuid.UUID, uuid.UUID, list[str], datetime]


def _ids(who: access.Viewer) -> Select[uuid.UUID, uuid.UUID, list[str], datetime]:
    return (
        catalog._all_public()
        .with_only_columns(
            PublicVideo.id, PublicVideo.owner_id, PublicVideo.hashtags, PublicVideo.published_at
        )
        .where(access.listable(who))
    )


def _candidates(
    platform: Platform, who: access.Viewer, taste: ranking.Taste, seed: bytes
) -> list[ranking.Candidate]:
    since = date.today() - timedelta(days=TRENDING_DAYS)
    market = who.market or ""
    pools: list[tuple[str, list[IdRow]]] = []
    with platform.catalog.transaction() as c:
        base = _ids(who)
        newest = (PublicVideo.published_at.desc(), PublicVideo.id.desc())
        pools.append(("fresh", list(c.execute(base.order_by(*newest).limit(POOL["fresh"])))))
        trend = (
            select(MarketEngagement.video_id, _recent_score().label("s"))
            .where(MarketEngagement.market == market, MarketEngagement.day >= since)
            .group_by(MarketEngagement.video_id)
            .order_by(_recent_score().desc())
            .limit(POOL["trending"])
            .subquery()
        )
        pools.append(
            (
                "trending",
                list(c.execute(base.join(trend, trend.c.video_id == PublicVideo.id))),
            )
        )
        if who.user_id is not None:
            followed = select(Follow.followee_id).where(
                Follow.follower_id == who.user_id, Follow.state == "active"
            )
            pools.append(
                (
                    "followed",
                    list(
                        c.execute(
                            base.where(PublicVideo.owner_id.in_(followed))
                            .order_by(*newest)
                            .limit(POOL["followed"])
                        )
                    ),
                )
            )
        creators = _top(taste.creators, 10)
        tags = _top(taste.hashtags, 10)
        if creators:
            pools.append(
                (
                    "affinity",
                    list(
                        c.execute(
                            base.where(PublicVideo.owner_id.in_(creators))
                            .order_by(*newest)
                            .limit(POOL["affinity"] // 2)
                        )
                    ),
                )
            )
        if tags:
            pools.append(
                (
                    "affinity",
                    list(
                        c.execute(
                            base.where(
                                PublicVideo.hashtags.overlap(
                                    func.cast(tags, ARRAY(String(100)))  # type: ignore[arg-type]
                                )
                            )
                            .order_by(*newest)
                            .limit(POOL["affinity"])
                        )
                    ),
                )
            )
        # Exploration: the videos after a random point of the (random) id space.
        pivot = uuid.UUID(bytes=hashlib.sha256(seed).digest()[:16])
        sample: list[IdRow] = [
            tuple(r)  # type: ignore[misc]
            for r in c.execute(
                base.where(PublicVideo.id >= pivot).order_by(PublicVideo.id).limit(100)
            )
        ]
        if len(sample) < POOL["explore"]:
            sample += [
                tuple(r)  # type: ignore[misc]
                for r in c.execute(
                    base.where(PublicVideo.id < pivot)
                    .order_by(PublicVideo.id)
                    .limit(POOL["explore"] - len(sample))
                )
            ]
        pools.append(("explore", sample))
        seen: dict[uuid.UUID, tuple[str, IdRow]] = {}
        for source, rows in pools:
            for row in rows:
                seen.setdefault(row[0], (source, tuple(row)))  # type: ignore[arg-type]
        popularity = _popularity(c, market, since, list(seen))
    return [
        ranking.Candidate(
            video_id=vid,
            creator_id=row[1],
            hashtags=tuple(row[2]),
            published_at=row[3],
            popularity=popularity.get(vid, 0.0),
            source=source,
        )
        for vid, (source, row) in seen.items()
    ]


def _top(weights: Mapping[K, float], n: int) -> list[K]:
    items = [(k, v) for k, v in weights.items() if v > 0]
    items.sort(key=lambda kv: -kv[1])
    return [k for k, _ in items[:n]]


def _recent_score() -> Any:
    """A video's engagement in the market, each day counting half as much as the day after:
    what is popular now (bench/recsys.py found a one-day horizon ranks best; a week of
    history still lets a quiet market have an order)."""
    age = func.current_date() - MarketEngagement.day
    return func.sum(MarketEngagement.score * func.power(0.5, age))


def _popularity(
    c: Session, market: str, since: date, ids: list[uuid.UUID]
) -> dict[uuid.UUID, float]:
    """This week's engagement in the market; where there is none, a small share of the
    video's all-time counts (so a new market still has an order)."""
    if not ids:
        return {}
    scores: dict[uuid.UUID, Any] = dict(
        c.execute(
            select(MarketEngagement.video_id, _recent_score())
            .where(
                MarketEngagement.market == market,
                MarketEngagement.day >= since,
                MarketEngagement.video_id.in_(ids),
            )
            .group_by(MarketEngagement.video_id)
        ).all()
    )
    overall = dict(
        c.execute(
            select(VideoStats.video_id, VideoStats.views + 3 * VideoStats.likes).where(
                VideoStats.video_id.in_(ids)
            )
        ).all()
    )
    return {v: float(scores.get(v) or 0.0) + 0.1 * float(overall.get(v) or 0.0) for v in ids}


# ---- the feed --------------------------------------------------------------------------------


def taste_of(platform: Platform, viewer: CurrentUser | None, now: datetime) -> ranking.Taste:
    if viewer is None:
        return ranking.taste_from((), now=now)
    history = signals.history(platform, viewer)
    with platform.catalog.transaction() as c:
        followed = list(
            c.scalars(
                select(Follow.followee_id).where(
                    Follow.follower_id == viewer.user_id, Follow.state == "active"
                )
            )
        )
    return ranking.taste_from(history, now=now, followed=followed)


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
    taste = taste_of(platform, viewer, now)
    seed = f"{who.user_id}|{page}|{b''.join(served[-3:]).hex()}|{now:%Y%m%d%H}".encode()
    candidates = _candidates(platform, who, taste, seed)
    gone = set(served)
    fresh = [c for c in candidates if _short(c.video_id) not in gone]
    picked = ranking.rank(
        fresh,
        taste,
        now=now,
        limit=limit,
        exploration=EXPLORATION,
        seed=seed,
        last_creator=last_creator,
    )
    cards = catalog.cards_in_order(platform, viewer, [r.candidate.video_id for r in picked])
    if not cards:
        return Page([], None)
    served += [_short(card.id) for card in cards]
    return Page(cards, _encode(page + 1, cards[-1].owner_id, served))


# ---- trending hashtags -----------------------------------------------------------------------


def trending_hashtags(
    platform: Platform, market: str | None, *, limit: int = 10
) -> list[tuple[str, float]]:
    """This week's hashtags in the market, by the engagement of their videos; where the market
    has none yet, the most used hashtags of the newest public videos."""
    limit = max(1, min(limit, 50))
    since = date.today() - timedelta(days=TRENDING_DAYS)
    who = access.Viewer(None, market)
    with platform.catalog.transaction() as c:
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
