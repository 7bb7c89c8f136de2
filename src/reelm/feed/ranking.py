"""Ranking of the "For You" feed: pure functions, no I/O.

`taste_from` turns what a viewer did (signals read in the viewer's home region, never copied
out of it) into a `Taste`; `rank` orders candidate videos for that taste and mixes in
exploration picks. Callers fetch the signals and the candidates; this module only computes, so it
is cheap enough to run on every page (500 candidates in 1-2 ms on one core).

The weights below were set with `bench/recsys.py --seed 8`, a simulated population other than
the one whose figures docs/performance.md reports (seed 7), so no reported held-out item chose
them. Only the bench backs them: a simulation, not real viewers.
"""

from __future__ import annotations

import heapq
import math
import random
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from types import MappingProxyType
from typing import overload

REASONS = ("affinity", "followed", "popular", "fresh", "explore")

# Fewer signals than this and a taste says too little to personalise: cold-start mix.
COLD_BELOW = 5

# What one signal is worth (see `signal_weight`).
COMPLETED, REPLAYED, LIKED, SHARED, COMMENTED = 1.0, 1.0, 1.5, 2.0, 1.0
LONG_WATCH = 0.5  # watched at least half of it without finishing
SKIPPED = -1.0
SHORT_WATCH = -0.5  # under a fifth of it (or under 2 s when the length is unknown), no skip
# A popularity past this is a bug upstream, not a signal; capping keeps every score finite.
POPULARITY_CAP = 1e12


@dataclass(frozen=True, slots=True)
class Weights:
    """How much each part of the score counts. `WARM` and `COLD` are the two profiles."""

    affinity: float  # times log(affinity_floor + positive affinity)
    affinity_floor: float  # what a video with no known affinity counts as
    creator: float  # a creator's share of the taste, relative to a hashtag's share
    followed: float  # added to the positive affinity of a followed creator's video
    negative: float  # times the (negative) share of skipped hashtags and creators
    popularity: float  # times log(1 + popularity)
    freshness: float  # times 0.5 ** (age / fresh_half_life_days)
    fresh_half_life_days: float


WARM = Weights(
    affinity=0.6,
    affinity_floor=0.1,
    creator=3.0,
    followed=0.5,
    negative=4.0,
    popularity=0.4,
    freshness=1.0,
    fresh_half_life_days=3.0,
)
# Cold: positive affinity is noise at this depth, so popularity and freshness lead; skips and
# follows still count.
COLD = Weights(
    affinity=0.0,
    affinity_floor=0.1,
    creator=0.0,
    followed=0.5,
    negative=4.0,
    popularity=1.0,
    freshness=1.0,
    fresh_half_life_days=3.0,
)


@dataclass(frozen=True, slots=True)
class Signal:
    """One thing the viewer did, read from the viewer's home region."""

    video_id: uuid.UUID
    creator_id: uuid.UUID
    hashtags: tuple[str, ...]
    at: datetime  # tz-aware; a naive one is taken as UTC
    watched_seconds: float = 0.0
    duration: float = 0.0  # video length in seconds (0 if unknown)
    completed: bool = False
    replayed: bool = False
    skipped: bool = False
    liked: bool = False
    shared: bool = False
    commented: bool = False


@dataclass(frozen=True, slots=True)
class Candidate:
    """A public video that could be shown. `source` says where it came from (informative only:
    the score does not read it)."""

    video_id: uuid.UUID
    creator_id: uuid.UUID
    hashtags: tuple[str, ...]
    published_at: datetime  # a naive one is taken as UTC
    popularity: float  # recent engagement in the viewer's market, >= 0 (NaN counts as 0)
    source: str = "fresh"  # "fresh" | "trending" | "followed" | "affinity" | "explore"
    # Worked out once, when the candidate is made: a market pool's candidates are scored page
    # after page (reelm.feed.pools).
    tags: tuple[str, ...] = field(init=False, repr=False, compare=False)  # `_tags(hashtags)`
    published_s: float = field(init=False, repr=False, compare=False)  # seconds since the epoch
    log_popularity: float = field(init=False, repr=False, compare=False)  # log(1 + popularity)

    def __post_init__(self) -> None:
        popular = self.popularity
        popular = min(popular, POPULARITY_CAP) if popular > 0 else 0.0  # NaN too
        object.__setattr__(self, "tags", _tags(self.hashtags))
        object.__setattr__(self, "published_s", _epoch(self.published_at))
        object.__setattr__(self, "log_popularity", math.log1p(popular))


@dataclass(frozen=True, slots=True)
class Taste:
    """What the viewer's own signals say; built in the viewer's home region only.

    Creators and videos are keyed by their UUIDs' integers (`UUID.int`): `UUID.__hash__` is
    Python code, and a page folds hundreds of signals and scores hundreds of candidates."""

    creators: Mapping[int, float]  # by creator_id.int
    hashtags: Mapping[str, float]  # keys normalised by `normalise_tag`
    seen: frozenset[int]  # video_id.int of every signal
    followed: frozenset[int]  # creator_id.int
    events: int

    def is_cold(self) -> bool:
        """Too few signals to personalise."""
        return self.events < COLD_BELOW


@dataclass(frozen=True, slots=True)
class Ranked:
    candidate: Candidate
    score: float
    reason: str  # one of REASONS


@lru_cache(maxsize=65536)
def normalise_tag(tag: str) -> str:
    """`#Cats ` and `cats` are one hashtag."""
    return tag.strip().lstrip("#").casefold()


@lru_cache(maxsize=65536)
def _tags(hashtags: tuple[str, ...]) -> tuple[str, ...]:
    """Normalised, without repeats; cached, since the same videos are ranked page after page."""
    return tuple(dict.fromkeys(t for t in map(normalise_tag, hashtags) if t))


def _finite(value: float, cap: float = math.inf) -> float:
    """NaN and negatives are 0; infinities and anything past `cap` are `cap`."""
    if value != value or value <= 0:  # NaN compares unequal to itself
        return 0.0
    return min(float(value), cap)


def _epoch(at: datetime) -> float:
    return (at if at.tzinfo is not None else at.replace(tzinfo=UTC)).timestamp()


def signal_weight(signal: Signal) -> float:
    """How much one signal says "more like this" (negative: less)."""
    weight = (
        COMPLETED * signal.completed
        + REPLAYED * signal.replayed
        + LIKED * signal.liked
        + SHARED * signal.shared
        + COMMENTED * signal.commented
    )
    if signal.skipped:
        return weight + SKIPPED
    if signal.completed or weight > 0:
        return weight
    watched, duration = _finite(signal.watched_seconds), _finite(signal.duration)
    if duration > 0:
        share = watched / duration
        if share >= 0.5:
            return LONG_WATCH
        return SHORT_WATCH if share < 0.2 else 0.0
    return SHORT_WATCH if watched < 2 else 0.0


# A signal as `fold` reads it: video_id.int, creator_id.int, hashtags, when (seconds since the
# epoch) and `signal_weight`. Only numbers and strings, so callers can keep many of them around
# without the garbage collector tracking them (reelm.feed.signals keeps viewers' latest).
Folded = tuple[int, int, tuple[str, ...], float, float]


def folded(signal: Signal) -> Folded:
    return (
        signal.video_id.int,
        signal.creator_id.int,
        signal.hashtags,
        _epoch(signal.at),
        signal_weight(signal),
    )


def taste_from(
    signals: Iterable[Signal],
    *,
    now: datetime,
    followed: Iterable[uuid.UUID] = (),
    half_life_days: float = 14.0,
) -> Taste:
    """Fold signals into a taste (see `fold`)."""
    return fold(map(folded, signals), now=now, followed=followed, half_life_days=half_life_days)


def fold(
    signals: Iterable[Folded],
    *,
    now: datetime,
    followed: Iterable[uuid.UUID] = (),
    half_life_days: float = 14.0,
) -> Taste:
    """Fold signals into a taste: each signal's weight, halved every `half_life_days` of age, is
    added to its creator and, split evenly, to its hashtags (a caption with 30 tags gives each a
    thirtieth, so tag spam buys no weight). Signals from the future count as new."""
    if not half_life_days > 0:
        raise ValueError("half_life_days must be positive")
    now_s = _epoch(now)
    per_second = math.log(2) / (half_life_days * 86400)
    exp = math.exp
    creators: dict[int, float] = {}
    hashtags: dict[str, float] = {}
    seen: set[int] = set()
    events = 0
    for video, creator, raw_tags, at, weight in signals:
        events += 1
        seen.add(video)
        age = now_s - at
        if age > 0:
            weight *= exp(-per_second * age)
        creators[creator] = creators.get(creator, 0.0) + weight
        tags = _tags(raw_tags)
        if tags:
            share = weight / len(tags)
            for tag in tags:
                hashtags[tag] = hashtags.get(tag, 0.0) + share
    return Taste(
        creators=MappingProxyType(creators),
        hashtags=MappingProxyType(hashtags),
        seen=frozenset(seen),
        followed=frozenset(creator.int for creator in followed),
        events=events,
    )


def _mass(weights: Iterable[float]) -> float:
    """The divisor that turns a taste's raw weights into shares of its total (absolute) mass."""
    total = sum(abs(w) for w in weights)
    return total if total > 0 else 1.0


def _explore_slots(limit: int, count: int) -> frozenset[int]:
    """`count` positions spread evenly over a page of `limit`, the last one last."""
    return frozenset((j + 1) * limit // count - 1 for j in range(count)) if count else frozenset()


def interleave(
    main: Sequence[Ranked],
    explore: Sequence[Ranked],
    *,
    limit: int,
    explore_slots: int,
    last_creator: uuid.UUID | None = None,
) -> list[Ranked]:
    """One page from the main order and the exploration draw: `explore_slots` positions spread
    evenly take the next exploration pick, the others the next main pick; a slot whose own queue
    has nothing it may take takes from the other, and an exploration pick so displaced takes the
    next slot it can. No video twice, and never two neighbours (nor the first item and
    `last_creator`) by one creator: an item that would repeat the creator waits for a later
    slot. When no remaining item has another creator, the page ends short rather than repeat.
    The creator rule wins over the exploration count: an exploration pick whose creator is
    that of its neighbour in the last slot is not placed (the page is greedy, not a search)."""
    slots = _explore_slots(limit, min(explore_slots, limit))
    queues = (main, explore)
    heads = [0, 0]
    used: set[uuid.UUID] = set()
    page: list[Ranked] = []
    previous = last_creator
    owed = 0  # exploration slots that had to take a main pick
    while len(page) < limit:
        owed += len(page) in slots
        first = 1 if owed else 0
        pick = _next(queues[first], heads, first, used, previous)
        taken = first
        if pick is None:
            taken = 1 - first
            pick = _next(queues[taken], heads, taken, used, previous)
        if pick is None:
            break
        if taken == 1 and owed:
            owed -= 1
        used.add(pick.candidate.video_id)
        page.append(pick)
        previous = pick.candidate.creator_id
    return page


def _next(
    queue: Sequence[Ranked],
    heads: list[int],
    which: int,
    used: set[uuid.UUID],
    previous: uuid.UUID | None,
) -> Ranked | None:
    """The first item of `queue` not used yet and not by `previous`'s creator."""
    while heads[which] < len(queue) and queue[heads[which]].candidate.video_id in used:
        heads[which] += 1
    for i in range(heads[which], len(queue)):
        item = queue[i]
        if item.candidate.video_id not in used and item.candidate.creator_id != previous:
            return item
    return None


class _Queue(Sequence[Ranked]):
    """Candidates in descending (key, then earlier first) order, as `Ranked`, computed lazily: a
    heap finds the first `head`, and the rest is sorted only if a page reads that far (the
    creator rule can make it), so the order is the full sort's either way. Each `Ranked` is made
    on first look: a page reads a few dozen of thousands of candidates."""

    def __init__(
        self,
        candidates: Sequence[Candidate],
        keys: list[tuple[float, int]],  # (key, -index)
        scores: list[float],
        reasons: list[str] | str,
        head: int,
    ):
        self._candidates, self._keys, self._scores, self._reasons = (
            candidates,
            keys,
            scores,
            reasons,
        )
        self._order = heapq.nlargest(head, keys)
        self._made: dict[int, Ranked] = {}

    def __len__(self) -> int:
        return len(self._keys)

    @overload
    def __getitem__(self, position: int) -> Ranked: ...
    @overload
    def __getitem__(self, position: slice) -> Sequence[Ranked]: ...
    def __getitem__(self, position: int | slice) -> Ranked | Sequence[Ranked]:
        if isinstance(position, slice):
            return [self[i] for i in range(*position.indices(len(self)))]
        if position < 0:
            position += len(self)
        if not 0 <= position < len(self):
            raise IndexError(position)
        made = self._made.get(position)
        if made is None:
            if position >= len(self._order):
                self._order = sorted(self._keys, reverse=True)
            index = -self._order[position][1]
            reason = self._reasons if isinstance(self._reasons, str) else self._reasons[index]
            made = self._made[position] = Ranked(
                self._candidates[index], self._scores[index], reason
            )
        return made


def rank(
    candidates: Sequence[Candidate],
    taste: Taste,
    *,
    now: datetime,
    limit: int,
    exploration: float = 0.2,
    seed: int | bytes | str | None = None,
    last_creator: uuid.UUID | None = None,
) -> list[Ranked]:
    """The next page of at most `limit` videos for `taste`.

    Score (warm taste): affinity * log(floor + positive share of the video's hashtags (their mean)
    + creator share + followed boost) + negative * (share of skipped tags and creator)
    + popularity * log(1 + popularity) + freshness * 0.5 ** (age / half-life). A cold taste
    uses the `COLD` weights: popularity and freshness, skips and follows.

    At least ceil(exploration * limit) items (when that many unseen candidates exist that the
    viewer has no affinity with: neither creator nor any hashtag in the taste, creator not
    followed) are exploration picks, drawn with probability proportional to 1 + popularity by a
    random generator seeded with `seed` (None: a fresh one). Seen videos never come back; see
    `interleave` for the order and the creator rule.
    """
    if limit <= 0:
        return []
    scores: list[float] = [0.0] * len(candidates)
    reasons: list[str] = [""] * len(candidates)
    keys, strangers = _score(candidates, taste, now, scores, reasons)
    wanted = min(math.ceil(_finite(exploration, 1.0) * limit), len(strangers), limit)
    head = 2 * limit + 32
    explore = _draw(candidates, strangers if wanted else [], seed)
    return interleave(
        _Queue(candidates, keys, scores, reasons, head),
        _Queue(candidates, explore, scores, "explore", head),
        limit=limit,
        explore_slots=wanted,
        last_creator=last_creator,
    )


def _score(
    candidates: Sequence[Candidate],
    taste: Taste,
    now: datetime,
    scores: list[float],
    reasons: list[str],
) -> tuple[list[tuple[float, int]], list[int]]:
    """Fills `scores` and `reasons` (by candidate index) for every unseen candidate (the first of
    duplicates); returns their (score, -index) and the indices of the strangers: candidates the
    viewer has no affinity with. One loop, written for speed: the per-candidate cost of a page."""
    weights = COLD if taste.is_cold() else WARM
    now_s = _epoch(now)
    fresh_per_second = math.log(2) / (weights.fresh_half_life_days * 86400)
    tag_mass, creator_mass = _mass(taste.hashtags.values()), _mass(taste.creators.values())
    # Keyed by the UUIDs' integers, as the taste is: UUID.__hash__ is Python code, and hashing
    # three UUIDs a candidate would cost as much as the rest of the score.
    taste_tags = taste.hashtags
    taste_creators = taste.creators
    followed = taste.followed
    w_affinity, w_creator, w_followed = weights.affinity, weights.creator, weights.followed
    floor = weights.affinity_floor
    w_negative, w_popularity, w_freshness = weights.negative, weights.popularity, weights.freshness
    log, exp = math.log, math.exp

    keys: list[tuple[float, int]] = []
    strangers: list[int] = []
    done = set(taste.seen)
    for index, candidate in enumerate(candidates):
        size = len(done)
        done.add(candidate.video_id.int)
        if len(done) == size:  # seen, or a duplicate
            continue
        tags = candidate.tags
        tag_sum, known = 0.0, False
        for tag in tags:
            value = taste_tags.get(tag)
            if value is not None:
                tag_sum += value
                known = True
        tag_share = tag_sum / len(tags) / tag_mass if tags else 0.0
        creator = candidate.creator_id.int
        is_followed = creator in followed
        raw = taste_creators.get(creator)
        creator_share = 0.0 if raw is None else raw / creator_mass
        if raw is None and not known and not is_followed:
            strangers.append(index)
        positive = (tag_share if tag_share > 0 else 0.0) + w_creator * (
            creator_share if creator_share > 0 else 0.0
        )
        if w_affinity:
            affinity = w_affinity * log(floor + positive + w_followed * is_followed)
        else:
            affinity = w_followed * is_followed
        negative = w_negative * (
            (tag_share if tag_share < 0 else 0.0) + (creator_share if creator_share < 0 else 0.0)
        )
        popularity = w_popularity * candidate.log_popularity
        age = now_s - candidate.published_s
        freshness = w_freshness * exp(-fresh_per_second * age) if age > 0 else w_freshness
        if is_followed:
            reason = "followed"
        elif positive > 0 and w_affinity:
            reason = "affinity"
        else:
            reason = "fresh" if freshness > popularity else "popular"
        score = affinity + negative + popularity + freshness
        scores[index], reasons[index] = score, reason
        keys.append((score, -index))
    return keys, strangers


def _draw(
    candidates: Sequence[Candidate], pool: list[int], seed: int | bytes | str | None
) -> list[tuple[float, int]]:
    """Keys (key, -index) whose descending order is a weighted draw without replacement from
    `pool`, weight 1 + popularity (Efraimidis-Spirakis: key log(u) / w, largest first)."""
    rng = random.Random(seed)  # noqa: S311 - a reproducible feed order, not a secret
    log, random_ = math.log, rng.random
    return [
        (
            log(1.0 - random_()) / (1.0 + _finite(candidates[index].popularity, POPULARITY_CAP)),
            -index,
        )
        for index in pool
    ]
