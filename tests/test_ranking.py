"""The For You ranking's pure logic: taste building, scoring, exploration, page rules."""

from __future__ import annotations

import itertools
import math
import uuid
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest

from reelm.feed.ranking import (
    COLD_BELOW,
    REASONS,
    Candidate,
    Ranked,
    Signal,
    Taste,
    interleave,
    normalise_tag,
    rank,
    signal_weight,
    taste_from,
)

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
_ids = itertools.count(1)


def new_id() -> uuid.UUID:
    return uuid.UUID(int=next(_ids))


def video(
    tags: tuple[str, ...] = ("misc",),
    *,
    creator: uuid.UUID | None = None,
    popularity: float = 10.0,
    age_days: float = 1.0,
) -> Candidate:
    return Candidate(
        video_id=new_id(),
        creator_id=creator or new_id(),
        hashtags=tags,
        published_at=NOW - timedelta(days=age_days),
        popularity=popularity,
    )


def watched(
    candidate: Candidate,
    *,
    days_ago: float = 1.0,
    watched_seconds: float = 0.0,
    completed: bool = False,
    liked: bool = False,
    skipped: bool = False,
) -> Signal:
    """The viewer's signal on `candidate`, a 20-second video."""
    return Signal(
        video_id=candidate.video_id,
        creator_id=candidate.creator_id,
        hashtags=candidate.hashtags,
        at=NOW - timedelta(days=days_ago),
        watched_seconds=watched_seconds,
        duration=20.0,
        completed=completed,
        liked=liked,
        skipped=skipped,
    )


def loved(candidate: Candidate, days_ago: float = 1.0) -> Signal:
    return watched(candidate, days_ago=days_ago, watched_seconds=20.0, completed=True, liked=True)


def skipped(candidate: Candidate, days_ago: float = 1.0) -> Signal:
    return watched(candidate, days_ago=days_ago, watched_seconds=1.0, skipped=True)


def empty_taste() -> Taste:
    return taste_from([], now=NOW)


def warm_taste_for(tags: tuple[str, ...], n: int = 10, *, skip: bool = False) -> Taste:
    history = [video(tags) for _ in range(n)]
    return taste_from([skipped(v) if skip else loved(v) for v in history], now=NOW)


# --- taste_from ---------------------------------------------------------------------------


def test_signal_weights_reward_engagement_and_punish_skips() -> None:
    v = video()
    finished = signal_weight(watched(v, watched_seconds=20.0, completed=True))
    assert finished > 0
    assert signal_weight(loved(v)) > finished
    assert signal_weight(watched(v, watched_seconds=12.0)) > 0  # over half, not finished
    assert signal_weight(watched(v, watched_seconds=7.0)) == 0  # a third: says nothing
    assert signal_weight(watched(v, watched_seconds=1.0)) < 0  # bailed out early
    assert signal_weight(skipped(v)) < signal_weight(watched(v, watched_seconds=1.0))


def test_signal_weight_survives_odd_numbers() -> None:
    v = video()
    for seconds, duration in [(math.nan, 20.0), (10.0, math.nan), (math.inf, 20.0), (-5.0, -1.0)]:
        weight = signal_weight(Signal(v.video_id, v.creator_id, ("a",), NOW, seconds, duration))
        assert math.isfinite(weight)


def test_taste_adds_to_creator_and_splits_hashtags() -> None:
    spam = video(tuple(f"tag{i}" for i in range(30)))
    focused = video(("#Cats",))
    taste = taste_from([loved(spam, 0), loved(focused, 0)], now=NOW)
    assert taste.hashtags["cats"] == pytest.approx(taste.creators[focused.creator_id.int])
    assert taste.hashtags["tag0"] == pytest.approx(taste.hashtags["cats"] / 30)
    assert taste.seen == {spam.video_id.int, focused.video_id.int}
    assert taste.events == 2


def test_hashtags_are_normalised() -> None:
    assert normalise_tag("  #Cats ") == normalise_tag("cats") == "cats"
    assert normalise_tag("STRASSE") == normalise_tag("straße")
    v = video(("#Cats", "cats", "CATS", "#", ""))
    taste = taste_from([loved(v, 0)], now=NOW)
    assert set(taste.hashtags) == {"cats"}


def test_older_signals_weigh_less_and_future_ones_count_as_new() -> None:
    old, recent, future = video(("old",)), video(("recent",)), video(("future",))
    taste = taste_from(
        [loved(old, days_ago=14), loved(recent, days_ago=0), loved(future, days_ago=-3)],
        now=NOW,
        half_life_days=14,
    )
    assert taste.hashtags["old"] == pytest.approx(taste.hashtags["recent"] / 2)
    assert taste.hashtags["future"] == pytest.approx(taste.hashtags["recent"])


def test_taste_needs_a_positive_half_life() -> None:
    for bad in (0.0, -1.0, math.nan):
        with pytest.raises(ValueError, match="half_life_days"):
            taste_from([], now=NOW, half_life_days=bad)


def test_cold_until_enough_signals() -> None:
    history = [loved(video()) for _ in range(COLD_BELOW)]
    assert taste_from(history[:-1], now=NOW).is_cold()
    assert not taste_from(history, now=NOW).is_cold()
    assert empty_taste().is_cold()


# --- rank: what it must never do -------------------------------------------------------------


def test_never_returns_a_seen_video() -> None:
    pool = [video(popularity=1000) for _ in range(20)]
    taste = taste_from([loved(v) for v in pool[:15]], now=NOW)
    page = rank(pool, taste, now=NOW, limit=20, seed=1)
    returned = {r.candidate.video_id for r in page}
    assert returned == {v.video_id for v in pool[15:]}


def test_no_duplicates_even_when_candidates_repeat() -> None:
    pool = [video() for _ in range(5)]
    page = rank(pool * 3, empty_taste(), now=NOW, limit=15, seed=1)
    ids = [r.candidate.video_id for r in page]
    assert len(ids) == len(set(ids)) == 5


def test_no_two_neighbours_by_one_creator() -> None:
    star, other = new_id(), new_id()
    # The star's videos would fill the whole page on score alone.
    pool = [video(creator=star, popularity=10_000) for _ in range(10)]
    pool += [video(creator=other, popularity=1) for _ in range(3)]
    pool += [video(popularity=1) for _ in range(3)]
    page = rank(pool, empty_taste(), now=NOW, limit=10, exploration=0.0)
    creators = [r.candidate.creator_id for r in page]
    assert len(page) == 10
    assert all(a != b for a, b in itertools.pairwise(creators))
    assert creators.count(star) == 5  # every other slot: as much of the star as allowed


def test_first_item_differs_from_the_last_creator_of_the_previous_page() -> None:
    star = new_id()
    pool = [video(creator=star, popularity=10_000), video(popularity=1)]
    page = rank(pool, empty_taste(), now=NOW, limit=2, exploration=0.0, last_creator=star)
    assert page[0].candidate.creator_id != star
    assert len(page) == 2


def test_a_page_ends_short_rather_than_repeat_a_creator() -> None:
    solo = new_id()
    pool = [video(creator=solo) for _ in range(5)]
    assert len(rank(pool, empty_taste(), now=NOW, limit=5, seed=1)) == 1
    assert rank(pool, empty_taste(), now=NOW, limit=5, seed=1, last_creator=solo) == []


def test_empty_inputs() -> None:
    assert rank([], empty_taste(), now=NOW, limit=10, seed=1) == []
    assert rank([video()], empty_taste(), now=NOW, limit=0) == []
    assert rank([video()], empty_taste(), now=NOW, limit=-3) == []
    everything_seen = [video() for _ in range(3)]
    taste = taste_from([loved(v) for v in everything_seen], now=NOW)
    assert rank(everything_seen, taste, now=NOW, limit=10) == []


def test_reasons_are_from_the_documented_set() -> None:
    cats = warm_taste_for(("cats",))
    pool = [video(("cats",)) for _ in range(5)] + [video((f"x{i}",)) for i in range(20)]
    page = rank(pool, cats, now=NOW, limit=10, seed=3)
    assert {r.reason for r in page} <= set(REASONS)
    assert all(math.isfinite(r.score) for r in page)


# --- rank: personalisation ----------------------------------------------------------------


def test_completing_and_liking_cats_brings_cats_up() -> None:
    pool = [video(("dogs",)) for _ in range(5)] + [video(("cats",)) for _ in range(5)]
    before = rank(pool, empty_taste(), now=NOW, limit=10, exploration=0.0)
    cat_ids = {v.video_id for v in pool[5:]}
    # Identical popularity and age: the cold order does not prefer cats.
    assert {r.candidate.video_id for r in before[:5]} != cat_ids
    after = rank(pool, warm_taste_for(("cats",)), now=NOW, limit=10, exploration=0.0)
    assert {r.candidate.video_id for r in after[:5]} == cat_ids
    assert all(r.reason == "affinity" for r in after[:5])


def test_affinity_beats_moderate_popularity_but_popularity_still_orders_within() -> None:
    taste = warm_taste_for(("cats",))
    cat_quiet, cat_loud = video(("cats",), popularity=5), video(("cats",), popularity=500)
    other_loud = video(("news",), popularity=200)  # 40 times the quiet cat video
    page = rank([other_loud, cat_quiet, cat_loud], taste, now=NOW, limit=3, exploration=0.0)
    assert [r.candidate for r in page] == [cat_loud, cat_quiet, other_loud]


def test_skips_push_down() -> None:
    dogs, neutral = video(("dogs",)), video(("birds",))
    liked_elsewhere = [loved(video(("cats",))) for _ in range(6)]
    dog_skips = [skipped(video(("dogs",))) for _ in range(4)]
    taste = taste_from(liked_elsewhere + dog_skips, now=NOW)
    assert taste.hashtags["dogs"] < 0
    page = rank([dogs, neutral], taste, now=NOW, limit=2, exploration=0.0)
    assert [r.candidate for r in page] == [neutral, dogs]
    # Even a cold taste listens to skips.
    cold = taste_from(dog_skips, now=NOW)
    assert cold.is_cold()
    page = rank([dogs, neutral], cold, now=NOW, limit=2, exploration=0.0)
    assert [r.candidate for r in page] == [neutral, dogs]


def test_a_skipped_creator_is_pushed_down() -> None:
    bore = new_id()
    taste = taste_from(
        [loved(video(("cats",))) for _ in range(6)]
        + [skipped(video(("cats",), creator=bore)) for _ in range(3)],
        now=NOW,
    )
    theirs, another = video(("cats",), creator=bore), video(("cats",))
    page = rank([theirs, another], taste, now=NOW, limit=2, exploration=0.0)
    assert [r.candidate for r in page] == [another, theirs]


def test_followed_creators_get_a_boost() -> None:
    fav = new_id()
    taste = warm_taste_for(("cats",))
    taste_following = taste_from([], now=NOW, followed=[fav])
    theirs, other = video(("news",), creator=fav), video(("news",))
    page = rank([other, theirs], taste_following, now=NOW, limit=2, exploration=0.0)
    assert page[0].candidate == theirs
    assert page[0].reason == "followed"
    warm_following = Taste(taste.creators, taste.hashtags, taste.seen, frozenset({fav.int}), 10)
    page = rank([other, theirs], warm_following, now=NOW, limit=2, exploration=0.0)
    assert page[0].candidate == theirs


def test_cold_start_orders_by_popularity_then_freshness() -> None:
    by_popularity = [video(popularity=p, age_days=2) for p in (1, 1000, 10, 100)]
    page = rank(by_popularity, empty_taste(), now=NOW, limit=4, exploration=0.0)
    assert [r.candidate.popularity for r in page] == [1000, 100, 10, 1]
    assert {r.reason for r in page} <= {"popular", "fresh"}
    by_age = [video(age_days=d) for d in (20, 0.1, 5)]
    page = rank(by_age, empty_taste(), now=NOW, limit=3, exploration=0.0)
    assert [r.candidate for r in page] == [by_age[1], by_age[2], by_age[0]]


def test_warm_taste_prefers_fresh_when_all_else_is_equal() -> None:
    taste = warm_taste_for(("cats",))
    old, new = video(("cats",), age_days=10), video(("cats",), age_days=0.5)
    page = rank([old, new], taste, now=NOW, limit=2, exploration=0.0)
    assert [r.candidate for r in page] == [new, old]


# --- rank: exploration ----------------------------------------------------------------------


def exploration_pool() -> tuple[Taste, list[Candidate]]:
    taste = warm_taste_for(("cats",))
    cats = [video(("cats",), popularity=100) for _ in range(30)]
    strangers = [video((f"topic{i}",), popularity=i) for i in range(30)]
    return taste, cats + strangers


@pytest.mark.parametrize(("exploration", "limit"), [(0.2, 10), (0.2, 7), (0.5, 10), (1.0, 10)])
def test_exploration_share(exploration: float, limit: int) -> None:
    taste, pool = exploration_pool()
    for seed in range(20):
        page = rank(pool, taste, now=NOW, limit=limit, exploration=exploration, seed=seed)
        explored = [r for r in page if r.reason == "explore"]
        assert len(page) == limit
        assert len(explored) >= math.ceil(exploration * limit)
        for r in explored:  # drawn from candidates the viewer has no affinity with
            assert r.candidate.creator_id.int not in taste.creators
            assert not set(map(normalise_tag, r.candidate.hashtags)) & set(taste.hashtags)


def test_no_exploration_when_asked_for_none() -> None:
    taste, pool = exploration_pool()
    page = rank(pool, taste, now=NOW, limit=10, exploration=0.0, seed=1)
    assert all(r.reason == "affinity" for r in page)


def test_exploration_is_capped_by_the_strangers_there_are() -> None:
    taste = warm_taste_for(("cats",))
    pool = [video(("cats",)) for _ in range(10)] + [video(("new",))]
    page = rank(pool, taste, now=NOW, limit=10, exploration=0.5, seed=1)
    assert len(page) == 10
    assert [r.reason for r in page].count("explore") == 1


def test_exploration_out_of_range_is_clamped() -> None:
    taste, pool = exploration_pool()
    for odd, expected in [(math.nan, 0), (-1.0, 0), (7.0, 10)]:
        page = rank(pool, taste, now=NOW, limit=10, exploration=odd, seed=1)
        assert [r.reason for r in page].count("explore") == expected


def test_exploration_picks_are_spread_over_the_page() -> None:
    taste, pool = exploration_pool()
    page = rank(pool, taste, now=NOW, limit=10, exploration=0.2, seed=5)
    assert [i for i, r in enumerate(page) if r.reason == "explore"] == [4, 9]


def test_exploration_draws_in_proportion_to_one_plus_popularity() -> None:
    taste = warm_taste_for(("cats",))
    heavy = video(("heavy",), popularity=99)
    light = [video((f"light{i}",), popularity=0) for i in range(9)]
    cats = [video(("cats",)) for _ in range(9)]
    draws = Counter(
        next(
            r.candidate
            for r in rank(cats + light + [heavy], taste, now=NOW, limit=10, seed=s)
            if r.reason == "explore"
        )
        == heavy
        for s in range(400)
    )
    # P(heavy first) = 100 / 109 = 0.917: 367 of 400 expected; 330 is over 6 sigma away.
    assert draws[True] > 330
    assert draws[False] > 5  # and the others do get a chance


def test_same_seed_same_page_other_seed_other_exploration() -> None:
    taste, pool = exploration_pool()
    pages = {
        seed: [r.candidate.video_id for r in rank(pool, taste, now=NOW, limit=10, seed=seed)]
        for seed in (1, 1, "viewer:2026-12-01", b"\x00", 2, 3)
    }
    again = [r.candidate.video_id for r in rank(pool, taste, now=NOW, limit=10, seed=1)]
    assert again == pages[1]
    assert len({tuple(p) for p in pages.values()}) > 1


def test_cold_taste_still_explores() -> None:
    pool = [video(popularity=p) for p in range(50)]
    page = rank(pool, empty_taste(), now=NOW, limit=10, seed=4)
    assert [r.reason for r in page].count("explore") >= 2


# --- rank: odd values and time zones ---------------------------------------------------------


def test_huge_and_odd_popularity_neither_crash_nor_poison_the_order() -> None:
    huge = video(popularity=1e18)
    nan = video(popularity=math.nan)
    inf = video(popularity=math.inf)
    negative = video(popularity=-50)
    normal = [video(popularity=p) for p in (5, 50)]
    pool = [nan, negative, huge, inf, *normal]
    for taste in (empty_taste(), warm_taste_for(("misc",))):
        page = rank(pool, taste, now=NOW, limit=10, exploration=0.0)
        assert len(page) == len(pool)
        assert all(math.isfinite(r.score) for r in page)
        assert page[0].candidate in (huge, inf)
        order = [r.candidate for r in page]
        # NaN counts as 0: below every positive popularity, tied with the negative one.
        assert order.index(nan) > order.index(normal[0])
        assert {order.index(nan), order.index(negative)} == {4, 5}
    exploring = rank(pool, empty_taste(), now=NOW, limit=10, exploration=1.0, seed=1)
    assert all(math.isfinite(r.score) for r in exploring)


def test_odd_dates_do_not_crash() -> None:
    ancient = Candidate(new_id(), new_id(), ("a",), datetime(1, 1, 1, tzinfo=UTC), 1.0)
    future = Candidate(new_id(), new_id(), ("a",), datetime(9999, 1, 1, tzinfo=UTC), 1.0)
    page = rank([ancient, future], empty_taste(), now=NOW, limit=2, exploration=0.0)
    assert [r.candidate for r in page] == [future, ancient]
    assert all(math.isfinite(r.score) for r in page)


def test_time_zones_are_instants_and_naive_means_utc() -> None:
    tokyo = timezone(timedelta(hours=9))
    taste = warm_taste_for(("cats",))
    in_utc = [video(("cats",), age_days=d) for d in (0.2, 2, 9)] + [video(("x",))]
    shifted = [
        Candidate(c.video_id, c.creator_id, c.hashtags, c.published_at.astimezone(tokyo), 10.0)
        for c in in_utc
    ]
    naive = [
        Candidate(c.video_id, c.creator_id, c.hashtags, c.published_at.replace(tzinfo=None), 10.0)
        for c in in_utc
    ]

    def scores(pool: list[Candidate], now: datetime) -> list[tuple[uuid.UUID, float]]:
        page = rank(pool, taste, now=now, limit=4, exploration=0.0)
        return [(r.candidate.video_id, round(r.score, 9)) for r in page]

    expected = scores(in_utc, NOW)
    assert scores(shifted, NOW.astimezone(tokyo)) == expected
    assert scores(naive, NOW.replace(tzinfo=None)) == expected
    signal = loved(video(("cats",)), days_ago=3)
    aware = taste_from([signal], now=NOW.astimezone(tokyo))
    naive_taste = taste_from([replace(signal, at=signal.at.replace(tzinfo=None))], now=NOW)
    assert aware.hashtags["cats"] == pytest.approx(naive_taste.hashtags["cats"])
    assert aware.hashtags["cats"] == pytest.approx(signal_weight(signal) * 0.5 ** (3 / 14))


# --- interleave and cost --------------------------------------------------------------------


def test_interleave_places_exploration_and_falls_back() -> None:
    main = [Ranked(video(), 1.0, "popular") for _ in range(6)]
    explore = [Ranked(video(), 0.0, "explore") for _ in range(2)]
    page = interleave(main, explore, limit=8, explore_slots=2)
    assert [r.reason for r in page] == ["popular"] * 3 + ["explore"] + ["popular"] * 3 + ["explore"]
    # With no exploration picks left, the main order fills the slots, and the other way round.
    assert len(interleave(main, [], limit=8, explore_slots=2)) == 6
    assert len(interleave([], explore, limit=8, explore_slots=2)) == 2


def test_a_displaced_exploration_pick_takes_the_next_slot() -> None:
    a, b, c, d, x = (new_id() for _ in range(5))
    main = [Ranked(video(creator=who), 1.0, "popular") for who in (a, x, b, c, d, a)]
    explore = [Ranked(video(creator=x), 0.0, "explore") for _ in range(2)]
    page = interleave(main, explore, limit=6, explore_slots=2)
    # Slot 2 is an exploration slot, but both picks are by x, like slot 1: slot 3 takes one.
    assert [r.reason for r in page] == ["popular"] * 3 + ["explore", "popular", "explore"]
    creators = [r.candidate.creator_id for r in page]
    assert all(p != q for p, q in itertools.pairwise(creators))
