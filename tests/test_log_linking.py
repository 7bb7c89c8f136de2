"""The linking attack on the public transparency logs (issue #12, item 2).

A world of users signs up at various times over two months; some publish videos, some videos
are withheld in a market by a moderator, some accounts are suspended, and staff read some
users' protected data (the private facts: fields, reason, ticket). Everything goes through the
real services; only the clock is simulated (the one the log and the log keys read, and the
catalog's timestamps, which the test sets as the database clock would have).

An attacker then holds what the public has: every handle, its public profile and videos
(through the public API, as they were published), the moment each suspension made a profile
disappear, and every log entry (kind, time, subject, details, position). They try to name,
for each handle, the subject under which that user's staff reads are logged, with:

1. timestamps: the sign-up entry nearest the profile's ``created_at`` (and, in a tie, the
   log's order), then whatever that entry's subject also names;
2. moderation entries: a user id in the details of an entry about a public video or account;
3. counts by kind per period: the subject whose staff reads fall in the hours and months
   where the handle did something public (signed up, published, was moderated).

Chance is a guess among the staff-read subjects the public data leaves possible for the
handle (those not before its sign-up month). The test fails when a guesser at chance would
score as many hits as the attack with a probability below ``CHANCE_FLOOR`` (one in a million):
the exact tail of the number of hits (a sum of independent Bernoulli trials, one per target).
"""

from __future__ import annotations

import base64
import importlib.util
import random
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from reelm.accounts.models import DirectoryEntry, PublicProfile
from reelm.accounts.service import CurrentUser, SignedUp, log_in
from reelm.bootstrap import Platform
from reelm.media.models import PublicVideo
from reelm.social import moderation
from reelm.transparency import gateway
from reelm.transparency.verify import leaf_hash, open_note, verify_inclusion
from reelm.transparency.views import events_about

from .conftest import PASSWORD

SEED = 20261203
USERS = 64
WITH_STAFF_READS = 36
WITH_VIDEOS = 24
RESTRICTED = 12
SUSPENDED = 6
START = datetime(2026, 10, 1, 9, 0, tzinfo=UTC)
SPAN = timedelta(days=58)
# The attack links handles if a random guesser would score as many hits with a probability
# below this: the test then fails for a real link, and by bad luck once in a million runs.
CHANCE_FLOOR = 1e-6


class _Clock:
    now = START


class _SimulatedDatetime(datetime):
    @classmethod
    def now(cls, tz: Any = None) -> _SimulatedDatetime:
        moment = _Clock.now if tz is None else _Clock.now.astimezone(tz)
        return cls.fromtimestamp(moment.timestamp(), moment.tzinfo)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[_Clock]]:
    """The clock the log (entry times, batch windows) and the log keys (their start) read."""
    monkeypatch.setattr("reelm.transparency.log.datetime", _SimulatedDatetime)
    if importlib.util.find_spec("reelm.accounts.logsubject") is not None:
        monkeypatch.setattr("reelm.accounts.logsubject.datetime", _SimulatedDatetime)
    yield _Clock
    _Clock.now = START


@dataclass
class Person:
    user: SignedUp
    signed_up: datetime
    videos: dict[datetime, uuid.UUID] = field(default_factory=dict)
    reads: int = 0


@dataclass
class Seen:
    """What the public saw: profiles, videos and when profiles disappeared."""

    profile_created: dict[str, datetime] = field(default_factory=dict)
    video_owner: dict[str, str] = field(default_factory=dict)
    video_published: dict[str, datetime] = field(default_factory=dict)
    vanished: dict[str, datetime] = field(default_factory=dict)

    def hours(self, handle: str) -> set[datetime]:
        moments = [self.profile_created[handle], self.vanished.get(handle)]
        moments += [self.video_published[v] for v, h in self.video_owner.items() if h == handle]
        return {_hour(m) for m in moments if m is not None}


def _hour(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def _month(moment: datetime) -> tuple[int, int]:
    return (moment.year, moment.month)


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _world(
    platform: Platform,
    http: TestClient,
    clock: type[_Clock],
    new_user: Callable[..., SignedUp],
    rng: random.Random,
) -> tuple[dict[str, Person], Seen]:
    clock.now = START - timedelta(days=1)
    staff = new_user("US", platform_=platform)
    gateway.grant(platform, staff.user_id, "admin")
    _token, moderator = log_in(platform, staff.handle, PASSWORD)
    seen = Seen()
    people: dict[str, Person] = {}
    # (time, order, action): run in time order, as the world would.
    events: list[tuple[datetime, int, Callable[[], None]]] = []

    def at(moment: datetime, action: Callable[[], None]) -> None:
        events.append((moment, len(events), action))

    starts = sorted(START + SPAN * rng.random() for _ in range(USERS))
    # Some sign-ups share an hour with the one before: the log must not sort them out.
    for i in range(3, USERS, 4):
        starts[i] = starts[i - 1] + timedelta(minutes=rng.randint(1, 50))
    starts.sort()
    for i, moment in enumerate(starts):
        at(moment, partial(_sign_up, platform, http, new_user, people, seen, i, moment))
    order = list(range(USERS))
    rng.shuffle(order)
    end = START + SPAN + timedelta(days=2)
    read_targets = order[:WITH_STAFF_READS]
    creators = order[WITH_STAFF_READS // 2 : WITH_STAFF_READS // 2 + WITH_VIDEOS]
    suspended = order[-SUSPENDED:]
    videos: list[tuple[int, datetime]] = []
    for i in creators:
        first = starts[i]
        for _ in range(rng.randint(1, 2)):
            when = first + timedelta(minutes=rng.randint(5, 3 * 24 * 60))
            videos.append((i, when))
            at(when, partial(_publish, platform, http, people, seen, i, when))
    for i, when in rng.sample(videos, RESTRICTED):
        later = when + timedelta(hours=rng.randint(1, 240))
        at(later, partial(_restrict, platform, moderator, people, i, when))
    for i in suspended:
        later = starts[i] + timedelta(hours=rng.randint(2, 400))
        at(later, partial(_suspend, platform, moderator, people, seen, i, later))
    for n, i in enumerate(read_targets):
        first = starts[i]
        for k in range(rng.randint(1, 3)):
            when = first + (end - first) * rng.random()
            at(when, partial(_read, platform, staff, people, i, f"SUP-{n}{k}"))
    for moment, _, action in sorted(events, key=lambda e: (e[0], e[1])):
        clock.now = moment
        action()
    clock.now = end
    for cell in platform.cells.values():
        cell.log.integrate_all()
    return people, seen


def _key(i: int) -> str:
    return f"p{i}"


def _sign_up(
    platform: Platform,
    http: TestClient,
    new_user: Callable[..., SignedUp],
    people: dict[str, Person],
    seen: Seen,
    i: int,
    moment: datetime,
) -> None:
    user = new_user("DE", platform_=platform)
    with platform.catalog.transaction() as c:
        # The catalog's own clock, simulated: its rows say when they were written.
        for table in (PublicProfile, DirectoryEntry):
            c.execute(update(table).where(table.user_id == user.user_id).values(created_at=moment))
    people[_key(i)] = Person(user, moment)
    profile = http.get(f"/api/v1/users/{user.handle}")
    assert profile.status_code == 200, profile.text
    seen.profile_created[user.handle] = _parse(profile.json()["created_at"])


def _publish(
    platform: Platform,
    http: TestClient,
    people: dict[str, Person],
    seen: Seen,
    i: int,
    moment: datetime,
) -> None:
    person = people[_key(i)]
    video = uuid.uuid4()
    with platform.catalog.transaction() as c:
        c.add(
            PublicVideo(
                id=video,
                owner_id=person.user.user_id,
                caption="a clip",
                hashtags=[],
                mentions=[],
                duration=5.0,
                width=720,
                height=1280,
                renditions=[],
                poster_key=f"v/{video}/poster.jpg",
                published_at=moment,
            )
        )
    person.videos[moment] = video
    shown = http.get(f"/api/v1/videos/{video}")
    assert shown.status_code == 200, shown.text
    seen.video_owner[str(video)] = shown.json()["author"]["handle"]
    seen.video_published[str(video)] = _parse(shown.json()["created_at"])


def _restrict(
    platform: Platform, moderator: CurrentUser, people: dict[str, Person], i: int, when: datetime
) -> None:
    video = people[_key(i)].videos[when]  # the one published then
    decision = moderation.Decision(
        target="video", id=str(video), action="restrict", reason="violence", market="FR"
    )
    moderation.act(platform, moderator, decision)


def _suspend(
    platform: Platform,
    moderator: CurrentUser,
    people: dict[str, Person],
    seen: Seen,
    i: int,
    moment: datetime,
) -> None:
    handle = people[_key(i)].user.handle
    decision = moderation.Decision(target="user", id=handle, action="suspend", reason="spam")
    moderation.act(platform, moderator, decision)
    seen.vanished[handle] = moment  # an observer polling the profile sees it go


def _read(
    platform: Platform, staff: SignedUp, people: dict[str, Person], i: int, ticket: str
) -> None:
    person = people[_key(i)]
    why = gateway.Justification(ticket=ticket, reason_code="safety_investigation")
    gateway.staff_read(platform, staff.user_id, person.user.user_id, why)
    person.reads += 1


def _public_log(http: TestClient) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    for region in ("us", "ca", "au", "nz", "sg"):
        start = 0
        while True:
            page = http.get(
                f"/api/v1/transparency/{region}/entries",
                params={"start": start, "end": start + 1000},
            ).json()["entries"]
            entries += [{**e["event"], "index": e["index"], "log": region} for e in page]
            if len(page) < 1000:
                break
            start += 1000
    return entries


def _attack(seen: Seen, log: list[dict[str, Any]], rng: random.Random) -> dict[str, str]:
    """For each handle, the attacker's guess at the subject of its staff reads."""
    reads = [e for e in log if e["kind"] == "staff.read" and e["subject"]]
    read_subjects = {e["subject"] for e in reads}
    read_hours: dict[str, set[datetime]] = defaultdict(set)
    read_months: dict[str, set[tuple[int, int]]] = defaultdict(set)
    for e in reads:
        read_hours[e["subject"]].add(_hour(_parse(e["time"])))
        read_months[e["subject"]].add(_month(_parse(e["time"])))
    # 1. Timestamps: the k-th handle to appear in an interval is the k-th sign-up entry there.
    created = sorted(
        (e for e in log if e["kind"] == "account.created"),
        key=lambda e: (_parse(e["time"]), e["index"]),
    )
    handles = sorted(seen.profile_created, key=lambda h: seen.profile_created[h])
    by_time: dict[str, str] = {}
    pool = list(created)
    for handle in handles:
        if not pool:
            break
        when = seen.profile_created[handle]
        nearest = min(pool, key=lambda e: abs((_parse(e["time"]) - when).total_seconds()))
        pool.remove(nearest)
        by_time[handle] = str(nearest["subject"])
    # 2. Moderation entries naming a user beside a video (or account) the public can see.
    by_moderation: dict[str, str] = {}
    for e in log:
        if not e["kind"].startswith("moderation."):
            continue
        owner = e["details"].get("owner") or e["details"].get("author")
        shown_by = seen.video_owner.get(e["subject"])
        if owner and shown_by:
            by_moderation[shown_by] = owner
    guesses: dict[str, str] = {}
    for handle in handles:
        for direct in (by_moderation.get(handle), by_time.get(handle)):
            if direct in read_subjects:
                guesses[handle] = str(direct)
                break
        else:
            # 3. Counts per period: the subject whose reads share the handle's public hours,
            # then its months; ties broken at random.
            possible = _possible(seen, handle, read_subjects, read_months)
            public = seen.hours(handle)
            if possible:
                best = max(
                    sorted(possible),
                    key=lambda s: (len(read_hours[s] & public), rng.random()),
                )
                guesses[handle] = best
    return guesses


def _possible(
    seen: Seen, handle: str, subjects: set[str], months: dict[str, set[tuple[int, int]]]
) -> set[str]:
    """Staff-read subjects the public data leaves possible for the handle: none of their reads
    is before the month it signed up in."""
    joined = _month(seen.profile_created[handle])
    return {s for s in subjects if min(months[s]) >= joined}


def test_no_handle_is_tied_to_its_log_subjects_better_than_chance(
    fresh_platform: Platform, new_user: Callable[..., SignedUp], clock: type[_Clock]
) -> None:
    from reelm.app import create_app

    rng = random.Random(SEED)
    with TestClient(create_app(fresh_platform), base_url="https://testserver") as http:
        people, seen = _world(fresh_platform, http, clock, new_user, rng)
        log = _public_log(http)
    truth = _subjects_of(people, fresh_platform)
    guesses = _attack(seen, log, random.Random(SEED + 1))

    reads = [e for e in log if e["kind"] == "staff.read"]
    read_subjects = {e["subject"] for e in reads}
    months: dict[str, set[tuple[int, int]]] = defaultdict(set)
    for e in reads:
        months[e["subject"]].add(_month(_parse(e["time"])))
    targets = [p for p in people.values() if p.reads]
    hits = 0
    chances: list[float] = []
    for person in targets:
        handle = person.user.handle
        mine = truth[handle] & read_subjects
        hits += guesses.get(handle) in mine
        possible = _possible(seen, handle, read_subjects, months)
        chances.append(len(mine & possible) / max(len(possible), 1))
    odds = _chance_of_at_least(hits, chances)
    assert odds >= CHANCE_FLOOR, (
        f"the public log ties handles to their staff reads: {hits} of {len(targets)} handles "
        f"matched, where chance expects {sum(chances):.1f} and would reach {hits} with "
        f"probability {odds:.1e}"
    )

    # Nothing of the log or the profiles is more precise than the design says.
    assert all(_parse(e["time"]).minute == 0 and _parse(e["time"]).second == 0 for e in log)
    assert all(
        t == t.replace(day=1, hour=0, minute=0, second=0) for t in seen.profile_created.values()
    )
    kinds_of: dict[str, set[str]] = defaultdict(set)
    for e in log:
        if e["subject"] and e["kind"] not in ("staff.granted", "staff.revoked"):
            kinds_of[e["subject"]].add(e["kind"])
    assert all(len(k) == 1 for k in kinds_of.values()), "a subject names entries of two kinds"
    ids = {str(p.user.user_id) for p in people.values()}
    assert not any(i in str(e) for e in log for i in ids), "a user id is in a public entry"

    # Each user still finds all their own entries, and each one is proved in the signed log.
    for person in targets[:3]:
        own = events_about(fresh_platform, person.user.user_id)
        assert sum(e.kind == "staff.read" for e in own) == person.reads
        assert sum(e.kind == "account.created" for e in own) == 1
        for event in own:
            tlog = fresh_platform.cell(event.region).log
            checkpoint = open_note(event.checkpoint, tlog.verifier_key)
            entry = tlog.entries(event.index, event.index + 1)[0].entry
            proof = [base64.b64decode(p) for p in event.proof]
            verify_inclusion(event.index, checkpoint.size, leaf_hash(entry), proof, checkpoint.root)


def _chance_of_at_least(hits: int, chances: list[float]) -> float:
    """P(at least ``hits`` successes) for independent trials of these probabilities."""
    dist = [1.0]
    for p in chances:
        dist = [
            (dist[k] if k < len(dist) else 0.0) * (1 - p) + (dist[k - 1] * p if k else 0.0)
            for k in range(len(dist) + 1)
        ]
    return sum(dist[hits:])


def _subjects_of(people: dict[str, Person], platform: Platform) -> dict[str, set[str]]:
    """The ground truth: every subject the log gives each user (what their own page finds)."""
    return {
        person.user.handle: {
            e.event["subject"] for e in events_about(platform, person.user.user_id)
        }
        for person in people.values()
    }
