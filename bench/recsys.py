"""For You ranking quality: our `taste_from` + `rank` against popularity and the `implicit`
library's collaborative filters, on a simulated population with planted tastes.

The generator (all of it seeded by --seed):

- T topics, one hashtag each (`#t00`...), of unequal size (topic shares ~ Dirichlet(1)).
- C creators, each with 1-2 main topics (drawn by topic share) and a fame (log-normal).
- V videos, each by a creator (more famous creators post a little more), with 1-3 hashtags
  (each from the creator's topics with probability 0.8, else any topic by share), a quality
  ~ N(0, 1), a length of 7-60 s and a publication time uniform over the 30 days.
- U users, each with a taste ~ Dirichlet(0.3 * T * topic shares) over topics (a few topics
  each), 3 favourite creators (drawn by taste . creator topics * fame) and an activity
  (log-normal number of events, 5 to 400).
- Each event is one video the platform's old feed showed the user: 40 % trending (by buzz, a
  market-level popularity exp(0.8 quality + 0.5 log fame)), 30 % a topic of the user's taste
  (then by buzz within the topic), 10 % a favourite creator's, 20 % uniform. Its time is after
  the publication (Beta(1, 3) of the time left: videos are watched mostly while new); each
  user sees a video at most once.
- Its outcome, from p = sigmoid(1.2 (log(0.01 + taste . video topics) + 2.5) + 0.8 quality
  + 1.5 favourite): completed with probability p, and then liked (0.35 p), replayed (0.25 p),
  shared (5 %), commented (5 %); if not completed: skipped with probability 1 - p (watched
  0.3-2.5 s), else a partial watch (10-90 % of the length); liked 2 % of the time. Positive =
  completed or liked.

Split: each user's last k (--holdout, 2) positives in time are the test items; everything else
the user did is the training history, seen by every method alike (users with fewer than k + 1
positives are not scored). "Now" is the end of the 30 days for everyone.

Each method returns 10 videos per user among those the user has not seen in training:

- popularity: most training positives (all 30 days), the baseline of the targets; the same
  over the last 3 days is printed as a diagnostic (it shows how much recency alone is worth);
- `implicit` ALS (64 factors, 20 iterations) and item-item kNN (plain and cosine), fitted on a
  user x video matrix of confidences: share watched + 1 per completion, like, replay, share,
  comment (skips left out), optionally positives only and optionally decayed by age;
- ours: `taste_from(training signals)`, then `rank(every video)` with Candidate.popularity =
  training positives of the last 24 hours, and exploration 0.2 as served (exploration 0 is
  printed too, as a diagnostic). No follows are passed: the baselines have none either.

No choice is made on the evaluated population's held-out items. The `implicit` grids (matrix
variant, regularisation, alpha, K) are searched on another population from the same generator
(--tune-seed, default seed + 1), split the same way; the constants of `reelm.feed.ranking` and
the 24 hours were set by hand with `--seed 8`. Metrics: hit rate @10 (any test item in the top
10) and NDCG@10, averaged over users. Wall times are fit + recommend of the chosen setting; ours
and implicit each use the 2 cores (ours with --jobs processes, implicit with its threads).

Run: .venv/bin/python bench/recsys.py [--users 2000] [--videos 5000] [--seed 7] [--quick]
(needs the `bench` extra: pip install -e '.[bench]')
"""

from __future__ import annotations

import argparse
import math
import time
import uuid
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from multiprocessing import get_context

import numpy as np
from implicit.cpu.als import AlternatingLeastSquares
from implicit.nearest_neighbours import CosineRecommender, ItemItemRecommender
from implicit.utils import ParameterWarning
from scipy.sparse import csr_matrix
from threadpoolctl import threadpool_limits

from reelm.feed.ranking import Candidate, Signal, rank, taste_from

DAYS = 30.0
START = datetime(2026, 11, 1, tzinfo=UTC)
NOW = START + timedelta(days=DAYS)
TOP = 10
POPULARITY_DAYS = 1.0  # Candidate.popularity: positives of the last 24 hours


@dataclass(frozen=True)
class Event:
    video: int
    day: float
    watched: float
    completed: bool
    replayed: bool
    skipped: bool
    liked: bool
    shared: bool
    commented: bool

    @property
    def positive(self) -> bool:
        return self.completed or self.liked


@dataclass(frozen=True)
class World:
    hashtags: list[tuple[str, ...]]  # per video
    creator: np.ndarray  # per video
    published: np.ndarray  # day, per video
    duration: np.ndarray  # seconds, per video
    events: list[list[Event]]  # per user, in time order


def simulate(users: int, videos: int, creators: int, topics: int, seed: int) -> World:
    rng = np.random.default_rng(seed)
    share = rng.dirichlet(np.ones(topics))
    creator_topics = [
        rng.choice(topics, size=rng.integers(1, 3), replace=False, p=share) for _ in range(creators)
    ]
    creator_vec = np.zeros((creators, topics))
    for c, main in enumerate(creator_topics):
        creator_vec[c, main] = 1.0 / len(main)
    fame = rng.lognormal(0.0, 0.8, creators)
    posting = np.sqrt(fame) / np.sqrt(fame).sum()
    creator = rng.choice(creators, size=videos, p=posting)
    video_vec = np.zeros((videos, topics))
    hashtags: list[tuple[str, ...]] = []
    for v in range(videos):
        tags: list[int] = []
        for _ in range(rng.integers(1, 4)):
            own = rng.random() < 0.8
            tag = rng.choice(creator_topics[creator[v]]) if own else rng.choice(topics, p=share)
            if tag not in tags:
                tags.append(int(tag))
        video_vec[v, tags] = 1.0 / len(tags)
        hashtags.append(tuple(f"t{t:02d}" for t in tags))
    quality = rng.normal(0.0, 1.0, videos)
    published = rng.uniform(0.0, DAYS, videos)
    duration = rng.uniform(7.0, 60.0, videos)
    buzz = np.exp(0.8 * quality + 0.5 * np.log(fame[creator]))
    by_topic = [np.flatnonzero(video_vec[:, t]) for t in range(topics)]
    by_creator = [np.flatnonzero(creator == c) for c in range(creators)]

    def draw(cumulative: np.ndarray) -> int:
        """An index drawn in proportion to the weights whose running sum is `cumulative`."""
        index = int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right"))
        return min(index, len(cumulative) - 1)

    def by_buzz(pool: np.ndarray, cumulative: np.ndarray) -> int:
        return int(pool[draw(cumulative)]) if len(pool) else int(rng.integers(videos))

    trending = np.cumsum(buzz)
    topic_buzz = [np.cumsum(buzz[pool]) for pool in by_topic]
    creator_buzz = [np.cumsum(buzz[pool]) for pool in by_creator]
    events: list[list[Event]] = []
    for _ in range(users):
        taste = rng.dirichlet(0.3 * topics * share)
        taste_cumulative = np.cumsum(taste)
        appeal = creator_vec @ taste * fame
        favourites = rng.choice(creators, size=3, replace=False, p=appeal / appeal.sum())
        count = int(np.clip(rng.lognormal(math.log(40), 0.8), 5, 400))
        seen: set[int] = set()
        history: list[Event] = []
        for _ in range(count * 2):  # more draws than events: repeats are dropped
            if len(history) == count:
                break
            source = rng.random()
            if source < 0.4:
                video = draw(trending)
            elif source < 0.7:
                topic = draw(taste_cumulative)
                video = by_buzz(by_topic[topic], topic_buzz[topic])
            elif source < 0.8:
                favourite_creator = int(favourites[rng.integers(3)])
                video = by_buzz(by_creator[favourite_creator], creator_buzz[favourite_creator])
            else:
                video = int(rng.integers(videos))
            if video in seen:
                continue
            seen.add(video)
            favourite = creator[video] in favourites
            match = float(video_vec[video] @ taste)
            logit = 1.2 * (math.log(0.01 + match) + 2.5) + 0.8 * quality[video] + 1.5 * favourite
            p = 1.0 / (1.0 + math.exp(-logit))
            day = published[video] + (DAYS - published[video]) * rng.beta(1.0, 3.0)
            completed = bool(rng.random() < p)
            skipped = not completed and bool(rng.random() < 1.0 - p)
            if completed:
                watched = float(duration[video])
            elif skipped:
                watched = float(rng.uniform(0.3, 2.5))
            else:
                watched = float(duration[video] * rng.uniform(0.1, 0.9))
            history.append(
                Event(
                    video=video,
                    day=float(day),
                    watched=watched,
                    completed=completed,
                    replayed=completed and bool(rng.random() < 0.25 * p),
                    skipped=skipped,
                    liked=bool(rng.random() < (0.35 * p if completed else 0.02)),
                    shared=completed and bool(rng.random() < 0.05),
                    commented=completed and bool(rng.random() < 0.05),
                )
            )
        history.sort(key=lambda e: e.day)
        events.append(history)
    return World(hashtags, creator, published, duration, events)


def split(histories: list[list[Event]], k: int) -> tuple[list[list[Event]], list[set[int]]]:
    """Each history without its last k positives, and those positives' videos (an empty set for
    a user with fewer than k + 1 positives: not scored)."""
    train: list[list[Event]] = []
    held: list[set[int]] = []
    for history in histories:
        positives = [i for i, e in enumerate(history) if e.positive]
        if len(positives) < k + 1:
            train.append(history)
            held.append(set())
            continue
        out = set(positives[-k:])
        train.append([e for i, e in enumerate(history) if i not in out])
        held.append({history[i].video for i in out})
    return train, held


def evaluate(
    recommended: list[list[int]], held: list[set[int]], users: list[int]
) -> tuple[float, float]:
    hits, ndcg = 0.0, 0.0
    for row, user in zip(recommended, users, strict=True):
        target = held[user]
        dcg = sum(1.0 / math.log2(r + 2) for r, v in enumerate(row[:TOP]) if v in target)
        ideal = sum(1.0 / math.log2(r + 2) for r in range(min(len(target), TOP)))
        hits += dcg > 0
        ndcg += dcg / ideal
    return hits / len(users), ndcg / len(users)


def positive_counts(train: list[list[Event]], videos: int, days: float) -> np.ndarray:
    """Training positives of each video in the last `days` of the window."""
    counts = np.zeros(videos)
    for history in train:
        for e in history:
            counts[e.video] += e.positive and e.day >= DAYS - days
    return counts


def popularity(
    world: World, train: list[list[Event]], users: list[int], days: float = DAYS
) -> list[list[int]]:
    """Most training positives first (only those of the last `days`)."""
    counts = positive_counts(train, len(world.hashtags), days)
    order = np.argsort(-counts, kind="stable")
    out = []
    for user in users:
        seen = {e.video for e in train[user]}
        out.append([int(v) for v in order[: TOP + len(seen)] if v not in seen][:TOP])
    return out


def confidence(e: Event, duration: float, params: dict[str, float]) -> float:
    """A training event as an `implicit` matrix entry (0: left out): the share of the video
    watched plus one for each of completion, like, replay, share, comment; a skip is
    `params["skip"]` (0, or -1: a dislike, which ALS takes as such); only positives if
    `params["positives_only"]`; halved every `params["half_life_days"]` before the end of the
    window (0: no decay)."""
    if e.skipped:
        value = params["skip"]
    elif params["positives_only"] and not e.positive:
        return 0.0
    else:
        share = min(e.watched / duration, 1.0) if duration > 0 else 0.5
        value = share + e.completed + e.liked + e.replayed + e.shared + e.commented
    half_life = params["half_life_days"]
    return value * 0.5 ** ((DAYS - e.day) / half_life) if half_life else value


def user_items(world: World, train: list[list[Event]], params: dict[str, float]) -> csr_matrix:
    rows, cols, values = [], [], []
    for user, history in enumerate(train):
        for e in history:
            value = confidence(e, float(world.duration[e.video]), params)
            if value:
                rows.append(user)
                cols.append(e.video)
                values.append(value)
    shape = (len(train), len(world.hashtags))
    return csr_matrix((np.array(values, dtype=np.float32), (rows, cols)), shape=shape)


def top_unseen(scores: np.ndarray, train: list[list[Event]], users: list[int]) -> list[list[int]]:
    """The 10 best-scored videos of each user (rows of `scores`) that the user has not seen in
    training: every watched video counts as seen, skips too, whatever entered the model."""
    out = []
    for row, user in zip(scores, users, strict=True):
        row[[e.video for e in train[user]]] = -np.inf
        best = np.argpartition(-row, TOP)[:TOP]
        out.append([int(v) for v in best[np.argsort(-row[best], kind="stable")]])
    return out


def run_implicit(
    world: World, train: list[list[Event]], users: list[int], family: str, params: dict[str, float]
) -> list[list[int]]:
    matrix = user_items(world, train, params)
    if family == "als":
        als = AlternatingLeastSquares(
            factors=int(params["factors"]),
            regularization=params["regularization"],
            alpha=params["alpha"],
            iterations=20,
            random_state=1,
        )
        als.fit(matrix, show_progress=False)
        scores = als.user_factors[users] @ als.item_factors.T
    else:
        kind = CosineRecommender if family == "cosine" else ItemItemRecommender
        knn = kind(K=int(params["K"]))
        doubles = matrix.astype(np.float64)  # the neighbour models want doubles
        knn.fit(doubles, show_progress=False)
        scores = (doubles[users] @ knn.similarity).toarray()
    return top_unseen(np.asarray(scores, dtype=np.float64), train, users)


# Each family's grid, searched on another population (see `tune`): the matrix (see
# `confidence`; the neighbour models take no dislikes) and the model's own knobs.
MATRICES = [
    {"positives_only": only, "skip": skip, "half_life_days": half_life}
    for only, skip in [(0, 0.0), (1, 0.0), (0, -1.0)]
    for half_life in (0, 3, 7)
]
GRIDS: dict[str, list[dict[str, float]]] = {
    "als": [
        {"factors": 64, "regularization": reg, "alpha": alpha, **matrix}
        for reg in (1.0, 10.0)
        for alpha in (1.0, 10.0)
        for matrix in MATRICES
    ],
    **{
        family: [{"K": k, **m} for k in (50, 200, 1000) for m in MATRICES if not m["skip"]]
        for family in ("itemitem", "cosine")
    },
}


def candidates_of(world: World, counts: np.ndarray) -> list[Candidate]:
    ids = [uuid.UUID(int=v + 1) for v in range(len(world.hashtags))]
    return [
        Candidate(
            video_id=ids[v],
            creator_id=uuid.UUID(int=(1 << 64) + int(world.creator[v])),
            hashtags=world.hashtags[v],
            published_at=START + timedelta(days=float(world.published[v])),
            popularity=float(counts[v]),
        )
        for v in range(len(world.hashtags))
    ]


def signal_of(world: World, e: Event) -> Signal:
    return Signal(
        video_id=uuid.UUID(int=e.video + 1),
        creator_id=uuid.UUID(int=(1 << 64) + int(world.creator[e.video])),
        hashtags=world.hashtags[e.video],
        at=START + timedelta(days=e.day),
        watched_seconds=e.watched,
        duration=float(world.duration[e.video]),
        completed=e.completed,
        replayed=e.replayed,
        skipped=e.skipped,
        liked=e.liked,
        shared=e.shared,
        commented=e.commented,
    )


# What the forked workers of `ours` read: set just before the fork, so nothing is pickled.
_SHARED: dict[str, object] = {}


def ours(
    world: World, train: list[list[Event]], users: list[int], exploration: float, jobs: int
) -> list[list[int]]:
    """`taste_from` + `rank` per user, in `jobs` processes (implicit uses as many threads).
    Candidate popularity as the platform computes it: positives of the last 24 hours."""
    counts = positive_counts(train, len(world.hashtags), POPULARITY_DAYS)
    _SHARED.update(
        world=world, train=train, exploration=exploration, candidates=candidates_of(world, counts)
    )
    size = math.ceil(len(users) / jobs)
    chunks = [users[i : i + size] for i in range(0, len(users), size)]
    with get_context("fork").Pool(jobs) as pool:
        return [page for part in pool.map(_pages, chunks) for page in part]


def _pages(users: list[int]) -> list[list[int]]:
    world: World = _SHARED["world"]  # type: ignore[assignment]
    train: list[list[Event]] = _SHARED["train"]  # type: ignore[assignment]
    candidates: list[Candidate] = _SHARED["candidates"]  # type: ignore[assignment]
    exploration: float = _SHARED["exploration"]  # type: ignore[assignment]
    out = []
    for user in users:
        taste = taste_from((signal_of(world, e) for e in train[user]), now=NOW)
        page = rank(candidates, taste, now=NOW, limit=TOP, exploration=exploration, seed=user)
        out.append([r.candidate.video_id.int - 1 for r in page])
    return out


def tune(world: World, k: int) -> dict[str, dict[str, float]]:
    """Each implicit family's grid point with the best NDCG@10 on `world`: another population
    from the same generator (--tune-seed), split the same way. The evaluated population's
    held-out items are never looked at to choose anything."""
    train, held = split(world.events, k)
    users = [u for u, h in enumerate(held) if h]
    chosen = {}
    for family, grid in GRIDS.items():
        scored = [
            (evaluate(run_implicit(world, train, users, family, params), held, users)[1], i)
            for i, params in enumerate(grid)
        ]
        chosen[family] = grid[max(scored)[1]]
    return chosen


def timed(fn: Callable[[], list[list[int]]]) -> tuple[list[list[int]], float]:
    t = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - t


def main() -> None:
    # implicit's neighbour models convert a matrix of their own to CSR and say so each time.
    warnings.filterwarnings("ignore", category=ParameterWarning)
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--videos", type=int, default=5000)
    parser.add_argument("--creators", type=int, default=400)
    parser.add_argument("--topics", type=int, default=60)
    parser.add_argument("--holdout", type=int, default=2)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--tune-seed", type=int, help="population the baselines are tuned on")
    parser.add_argument("--jobs", type=int, default=2, help="processes for ours")
    parser.add_argument("--quick", action="store_true", help="500 users, 1,500 videos")
    args = parser.parse_args()
    if args.quick:
        args.users, args.videos, args.creators, args.topics = 500, 1500, 150, 30

    tune_seed = args.seed + 1 if args.tune_seed is None else args.tune_seed
    sizes = (args.users, args.videos, args.creators, args.topics)
    t = time.perf_counter()
    world = simulate(*sizes, args.seed)
    events = sum(len(h) for h in world.events)
    positives = sum(e.positive for h in world.events for e in h)
    print(
        f"simulated {args.users} users, {args.videos} videos, {args.creators} creators, "
        f"{args.topics} topics: {events} events, {positives} positive "
        f"({time.perf_counter() - t:.1f} s, seed {args.seed})"
    )
    t = time.perf_counter()
    with threadpool_limits(1, "blas"):  # implicit's advice: its own threads, one-thread BLAS
        chosen = tune(simulate(*sizes, tune_seed), args.holdout)
    print(
        f"implicit grids searched on population seed {tune_seed} ({time.perf_counter() - t:.0f} s)"
    )
    train, held = split(world.events, args.holdout)
    users = [u for u, h in enumerate(held) if h]
    print(f"{len(users)} users scored, {args.holdout} held-out positives each")

    rows: list[tuple[str, float, float, float]] = []

    def row(name: str, fn: Callable[[], list[list[int]]]) -> None:
        recommended, seconds = timed(fn)
        hit, ndcg = evaluate(recommended, held, users)
        rows.append((name, hit, ndcg, seconds))

    row("popularity", lambda: popularity(world, train, users))
    row("popularity, last 3 days (diagnostic)", lambda: popularity(world, train, users, 3.0))
    with threadpool_limits(1, "blas"):
        for family, params in chosen.items():
            shown = ", ".join(f"{k}={v:g}" for k, v in params.items())
            row(
                f"implicit {family} ({shown})",
                partial(run_implicit, world, train, users, family, params),
            )
    row("ours, exploration 0.2 (served)", lambda: ours(world, train, users, 0.2, args.jobs))
    row("ours, exploration 0 (diagnostic)", lambda: ours(world, train, users, 0.0, args.jobs))
    report(rows)


def report(rows: Sequence[tuple[str, float, float, float]]) -> None:
    by_name = {name: (hit, ndcg) for name, hit, ndcg, _ in rows}
    pop = by_name["popularity"]
    implicit_rows = [(hit, ndcg) for name, hit, ndcg, _ in rows if name.startswith("implicit")]
    best = (max(h for h, _ in implicit_rows), max(n for _, n in implicit_rows))
    width = max(len(r[0]) for r in rows)
    print(f"\n| {'method':<{width}} | HR@10 | NDCG@10 | vs popularity | vs best implicit | time |")
    print(f"|{'-' * (width + 2)}|------:|--------:|---------------|------------------|-----:|")
    for name, hit, ndcg, seconds in rows:
        print(
            f"| {name:<{width}} | {hit:.4f} | {ndcg:.4f} "
            f"| {hit / pop[0]:.2f} / {ndcg / pop[1]:.2f} "
            f"| {hit / best[0]:.2f} / {ndcg / best[1]:.2f} | {seconds:.1f} s |"
        )
    print("\n(ratios: HR@10 / NDCG@10; best implicit: the best implicit figure of each metric)")


if __name__ == "__main__":
    main()
