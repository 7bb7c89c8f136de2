"""What For You picks from, kept in memory: per market, the candidates every viewer of the
market shares, and per viewer, their latest signals already decrypted.

*Market pools* (`market_pool`): the newest `WINDOW` videos that anyone in the market may list
(reelm.social.access.listable for a signed-out viewer there: public accounts, active, not
suspended, not withheld in the market), the `TRENDING` most engaged with in the market this
week and an exploration sample drawn from the whole catalog, with their popularity. Indexed by
creator and by hashtag, so a viewer's affinity candidates are dictionary reads. Every `REFRESH`
seconds a background thread appends the videos published since (a top-up: a query of a few
rows); every `REBUILD` seconds it builds the pool again (popularity, trending and the sample
renewed, what became unlistable dropped). A full build of a 5,800-video pool costs about 160 ms
of CPU, held against the requests of that moment: rebuilding every 30 s put it in the p99 of
For You (bench/feed.py). Requests keep the pool they have meanwhile, with one exception: a
pool older than the catalog's newest publication is topped up before a page is served from it
(`current`), so the first page a visitor sees shows what is ready. The catalog's newest
publication time is one index read (`catalog_newest`), asked at most every `PROBE_SECONDS` by
a process (every time while the pool holds no video: there is nothing to serve then, and an
empty first page must be true), and at once after this process published a video (the
pipeline's notice, catalog.note_published). A pool is never the last
word on visibility: what a viewer may see beyond it (followed private accounts) comes from a
query of its own, what they may not (blocks) is removed per viewer, and the cards of a page
are read with the full rules, so a video removed, withheld or whose creator was suspended
since the last build is never shown.

*Viewer histories* (`SignalMemory`): a viewer's latest `signals.HISTORY` signals, decrypted.
Each page asks the home region which ids the latest window holds now (ids only) and decrypts
only the ones it has not seen, so a page still reflects every signal sent before it, deletions
included. Held for `MEMORY_SECONDS` at most, for `MEMORY_VIEWERS` viewers, keyed by user and
home region (a migrated user's entry is never read again and ages out).
"""

from __future__ import annotations

import heapq
import logging
import random
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import cache, lru_cache
from typing import Any, TypeVar

from sqlalchemy import Select, func, select

from reelm.bootstrap import Platform
from reelm.feed import ranking
from reelm.media import catalog
from reelm.media.models import PublicVideo
from reelm.social import access
from reelm.social.models import MarketEngagement, VideoStats

WINDOW = 5000
TRENDING = 300
EXPLORE_SAMPLE = 1000
EXPLORE_POINTS = 4  # the sample is the videos after this many random points of the id space
REFRESH = 30.0  # seconds a market pool is used before new videos are added to it
REBUILD = 300.0  # seconds a market pool is used before it is built again
# How old the catalog's newest publication time may be when a page is served from a pool: how
# long a video another process published may miss For You (this process's are seen at once).
PROBE_SECONDS = 1.0
OVERLAP = timedelta(minutes=2)  # how far before its newest video a top-up looks
MEMORY_SECONDS = 300.0
MEMORY_VIEWERS = 256
TRENDING_DAYS = 7

K = TypeVar("K")
log = logging.getLogger("reelm.feed")


@dataclass(frozen=True, slots=True)
class MarketPool:
    """Candidates of one market. Positions in `videos` run oldest first, and new videos are
    appended (`extended`), so a position never changes while the pool lives and a list of
    positions sorted ascending is a list of videos oldest first."""

    market: str
    built: float  # time.monotonic() of the full build
    topped: float  # time.monotonic() of the latest top-up (or of the build)
    videos: tuple[ranking.Candidate, ...]
    trending: tuple[int, ...]  # by recent engagement in the market, highest first
    explore: tuple[int, ...]  # a uniform sample of the whole catalog
    newest: datetime | None  # the latest publication time seen by the build or a top-up
    # The catalog's newest publication (listable here or not) when the build or latest top-up
    # looked: a pool is behind once the catalog has a newer one.
    horizon: datetime | None = None
    by_creator: dict[int, list[int]] = field(default_factory=dict)  # by creator_id.int
    by_tag: dict[str, list[int]] = field(default_factory=dict)
    position: dict[uuid.UUID, int] = field(default_factory=dict)  # by video id
    variants: dict[tuple[int, str], ranking.Candidate] = field(default_factory=dict)

    def fresh(self, count: int) -> list[ranking.Candidate]:
        return list(self.videos[: -count - 1 : -1]) if count > 0 else []

    def trending_now(self, count: int) -> list[ranking.Candidate]:
        return [self._as(i, "trending") for i in self.trending[:count]]

    def sample(self, count: int, seed: bytes) -> list[ranking.Candidate]:
        # Not a secret: the page's seed makes a page reproducible.
        picks = random.Random(seed).sample(  # noqa: S311
            self.explore, min(count, len(self.explore))
        )
        return [self._as(i, "explore") for i in picks]

    def newest_of(
        self, index: dict[K, list[int]], keys: Iterable[K], count: int, source: str = "affinity"
    ) -> list[ranking.Candidate]:
        """The `count` newest videos under any of `keys` of `index` (by creator or tag)."""
        lists = [index[k] for k in keys if k in index]
        return [self._as(i, source) for i in _last(lists, count)]

    def extended(self, rows: Iterable[Any], horizon: datetime | None) -> MarketPool:
        """This pool with the `candidate_rows` rows it lacks appended (videos published since
        it was built, up to the catalog's `horizon`); the lists and indexes of this pool are
        left as they are (readers may be using them), changed ones are copied."""
        rows = list(rows)
        newest = max([r[3] for r in rows] + ([self.newest] if self.newest else []), default=None)
        rows = [r for r in rows if r[0] not in self.position]
        now = time.monotonic()
        if not rows:
            return replace(self, topped=now, newest=newest, horizon=horizon)
        start = len(self.videos)
        added = tuple(candidate(r, "fresh") for r in rows)
        position = dict(self.position)
        by_creator, by_tag = dict(self.by_creator), dict(self.by_tag)
        for i, v in enumerate(added, start):
            position[v.video_id] = i
            _append(by_creator, self.by_creator, v.creator_id.int, i)
            for tag in v.tags:
                _append(by_tag, self.by_tag, tag, i)
        return replace(
            self,
            topped=now,
            newest=newest,
            horizon=horizon,
            videos=self.videos + added,
            by_creator=by_creator,
            by_tag=by_tag,
            position=position,
            variants=dict(self.variants),
        )

    def _as(self, i: int, source: str) -> ranking.Candidate:
        """Video `i` as a candidate from `source`, made once per pool."""
        made = self.variants.get((i, source))
        if made is None:
            made = self.variants.setdefault((i, source), replace(self.videos[i], source=source))
        return made


def _append(index: dict[K, list[int]], old: dict[K, list[int]], key: K, i: int) -> None:
    """Append to `index[key]`, copying the list first if it is still `old`'s."""
    positions = index.get(key)
    if positions is None or positions is old.get(key):
        positions = index[key] = list(positions or ())
    positions.append(i)


def _last(lists: list[list[int]], count: int) -> Iterator[int]:
    """The `count` largest distinct positions of ascending lists, largest first."""
    last = -1
    taken = 0
    for i in heapq.merge(*(reversed(positions) for positions in lists), reverse=True):
        if taken >= count:
            return
        if i != last:
            yield i
            taken += 1
            last = i


_build_lock = threading.Lock()


def market_pool(platform: Platform, market: str) -> MarketPool:
    """The market's pool: built on first use (that caller waits), and topped up first when the
    catalog has published since it looked (`behind`; that caller waits a few milliseconds).
    Once it is `REFRESH` seconds old, a background thread tops it up with the videos published
    since (a query of a few rows); once it is `REBUILD` seconds old, it rebuilds it (popularity,
    trending, exploration sample, and what has become unlistable dropped). Every caller keeps
    the pool it has meanwhile."""
    pools: dict[str, MarketPool] = platform.caches.setdefault("feed.pools", {})
    pool = pools.get(market)
    if pool is None:
        with _build_lock:
            pool = pools.get(market)
            if pool is None:
                pool = pools[market] = build(platform, market)
        return pool
    if behind(platform, pool):
        with _build_lock:  # held by a refresh in flight, if any: it may bring what is missing
            pool = pools[market]
            if behind(platform, pool):
                pool = pools[market] = top_up(platform, pool)
        return pool
    now = time.monotonic()
    if now - pool.topped >= REFRESH and _build_lock.acquire(blocking=False):
        full = now - pool.built >= REBUILD
        threading.Thread(
            target=_refresh, args=(platform, pools, market, full), name="feed-pool", daemon=True
        ).start()
    return pool


def _refresh(platform: Platform, pools: dict[str, MarketPool], market: str, full: bool) -> None:
    try:
        if platform.caches.get("feed.pools") is not pools:
            return  # the platform was closed, or the pools forgotten, since
        pools[market] = build(platform, market) if full else top_up(platform, pools[market])
    except Exception:  # the old pool stays; the next request past REFRESH tries again
        log.exception("refreshing the For You pool of a market failed")
    finally:
        _build_lock.release()


@dataclass(frozen=True, slots=True)
class _Probe:
    at: float  # time.monotonic() before the read
    newest: datetime | None
    notice: object | None  # catalog.published_notice when it was read


@cache
def _newest_published() -> Select[Any]:
    """The catalog's newest publication time: the first entry of the feed's index."""
    return select(func.max(PublicVideo.published_at))


def catalog_newest(platform: Platform, max_age: float) -> datetime | None:
    """The catalog's newest publication time, read at most `max_age` seconds ago and not
    before this process's latest publication."""
    probe: _Probe | None = platform.caches.get("feed.probe")
    notice = catalog.published_notice(platform)
    now = time.monotonic()
    if probe is not None and now - probe.at < max_age and probe.notice is notice:
        return probe.newest
    with platform.catalog_replica.rows() as c:
        newest = c.execute(_newest_published()).scalar()
    platform.caches["feed.probe"] = _Probe(now, newest, notice)
    return newest


def behind(platform: Platform, pool: MarketPool) -> bool:
    """Whether the catalog has published since `pool` last looked. Asked afresh for a pool
    without a video, else from a probe at most `PROBE_SECONDS` old."""
    newest = catalog_newest(platform, PROBE_SECONDS if pool.videos else 0.0)
    return newest is not None and (pool.horizon is None or newest > pool.horizon)


def forget_pools(platform: Platform) -> None:
    """Drop every market pool (the next page rebuilds): after a change that must show at once
    in this process, such as a new video in tests."""
    platform.caches.pop("feed.pools", None)


def top_up(platform: Platform, pool: MarketPool) -> MarketPool:
    """`pool` with the listable videos published since its newest (less `OVERLAP`, for those
    whose publication committed late), oldest first."""
    if pool.newest is None:  # nothing was listable: build again
        return build(platform, pool.market)
    who = access.Viewer(None, pool.market or None)
    with platform.catalog_replica.rows() as c:
        horizon = c.execute(_newest_published()).scalar()
        rows = c.execute(
            access.listable(candidate_rows(pool.market), who)
            .where(PublicVideo.published_at >= pool.newest - OVERLAP)
            .order_by(PublicVideo.published_at, PublicVideo.id)
        ).all()
    return pool.extended(rows, horizon)


def build(platform: Platform, market: str) -> MarketPool:
    who = access.Viewer(None, market or None)
    listable = access.listable(candidate_rows(market), who)
    # Core execution (not the ORM session's): these are plain rows, thousands of them. From
    # the replica: a market's pool is anyone's, and it tops up as the replica catches up.
    with platform.catalog_replica.rows() as c:
        horizon = c.execute(_newest_published()).scalar()  # first: what the build has at least
        newest = c.execute(
            listable.order_by(PublicVideo.published_at.desc(), PublicVideo.id.desc()).limit(WINDOW)
        ).all()
        since = func.current_date() - TRENDING_DAYS
        trend = (
            select(MarketEngagement.video_id, _week().label("s"))
            .where(MarketEngagement.market == market, MarketEngagement.day >= since)
            .group_by(MarketEngagement.video_id)
            .order_by(_week().desc())
            .limit(TRENDING)
            .subquery()
        )
        trending = c.execute(
            listable.join(trend, trend.c.video_id == PublicVideo.id).order_by(
                trend.c.s.desc(), PublicVideo.id
            )
        ).all()
        # Exploration: the listable videos after random points of the (random) id space.
        explore: list[Any] = []
        for _ in range(EXPLORE_POINTS):
            explore += c.execute(
                listable.where(PublicVideo.id >= uuid.uuid4())
                .order_by(PublicVideo.id)
                .limit(EXPLORE_SAMPLE // EXPLORE_POINTS)
            ).all()
    rows: dict[uuid.UUID, Any] = {r[0]: r for r in newest}
    for r in (*trending, *explore):
        rows.setdefault(r[0], r)
    ordered = sorted(rows.values(), key=lambda r: (r[3], r[0]))
    videos = tuple(candidate(r, "fresh") for r in ordered)
    position = {v.video_id: i for i, v in enumerate(videos)}
    by_creator: dict[int, list[int]] = {}
    by_tag: dict[str, list[int]] = {}
    for i, v in enumerate(videos):
        by_creator.setdefault(v.creator_id.int, []).append(i)
        for tag in v.tags:
            by_tag.setdefault(tag, []).append(i)
    built = time.monotonic()
    return MarketPool(
        market=market,
        built=built,
        topped=built,
        videos=videos,
        trending=tuple(position[r[0]] for r in trending),
        explore=tuple(dict.fromkeys(position[r[0]] for r in explore)),
        newest=videos[-1].published_at if videos else None,
        horizon=horizon,
        by_creator=by_creator,
        by_tag=by_tag,
        position=position,
    )


def _week() -> Any:
    """A video's engagement in the market, each day counting half as much as the day after:
    what is popular now (bench/recsys.py found a one-day horizon ranks best; a week of
    history still lets a quiet market have an order)."""
    age = func.current_date() - MarketEngagement.day
    return func.sum(MarketEngagement.score * func.power(0.5, age))


@lru_cache(maxsize=64)
def candidate_rows(market: str) -> Select[Any]:
    """Public videos (not yet filtered by who may list them) as candidate rows: id, creator,
    hashtags, published, popularity. Popularity: this week's engagement in the market (one
    index probe per video, ix_market_engagement_video) plus a small share of the video's
    all-time counts, so a new market still has an order. Kept per market (a statement is
    immutable; the week is counted from the database's current date)."""
    since = func.current_date() - TRENDING_DAYS
    week = (
        select(func.coalesce(_week(), 0.0))
        .where(
            MarketEngagement.video_id == PublicVideo.id,
            MarketEngagement.market == market,
            MarketEngagement.day >= since,
        )
        .scalar_subquery()
    )
    counts = func.coalesce(VideoStats.views, 0) + 3 * func.coalesce(VideoStats.likes, 0)
    return catalog._all_public().with_only_columns(
        PublicVideo.id,
        PublicVideo.owner_id,
        PublicVideo.hashtags,
        PublicVideo.published_at,
        week + 0.1 * counts,
    )


def candidate(row: Any, source: str) -> ranking.Candidate:
    """A `candidate_rows` row as a candidate."""
    return ranking.Candidate(
        video_id=row[0],
        creator_id=row[1],
        hashtags=tuple(row[2]),
        published_at=row[3],
        popularity=float(row[4] or 0.0),
        source=source,
    )


# ---- viewers' signals ------------------------------------------------------------------------


@dataclass
class _Remembered:
    at: float
    signals: dict[int, Any]  # by signal id (UUID.int): reelm.feed.signals.Remembered


class SignalMemory:
    """Decrypted signals of the viewers seen lately (least recently used dropped first)."""

    def __init__(self, viewers: int = MEMORY_VIEWERS, seconds: float = MEMORY_SECONDS) -> None:
        self._viewers, self._seconds = viewers, seconds
        self._entries: OrderedDict[tuple[uuid.UUID, str], _Remembered] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[uuid.UUID, str]) -> dict[int, Any]:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or time.monotonic() - entry.at > self._seconds:
                self._entries.pop(key, None)
                return {}
            self._entries.move_to_end(key)
            return entry.signals

    def put(self, key: tuple[uuid.UUID, str], signals: dict[int, Any]) -> None:
        with self._lock:
            self._entries[key] = _Remembered(time.monotonic(), signals)
            self._entries.move_to_end(key)
            while len(self._entries) > self._viewers:
                self._entries.popitem(last=False)

    def drop_all(self) -> None:
        with self._lock:
            self._entries.clear()

    def drop(self, user_id: uuid.UUID) -> None:
        with self._lock:
            for key in [k for k in self._entries if k[0] == user_id]:
                del self._entries[key]


def signal_memory(platform: Platform) -> SignalMemory:
    memory: SignalMemory = platform.caches.setdefault("feed.signals", SignalMemory())
    return memory
