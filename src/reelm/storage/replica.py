"""The catalog's replicas: PostgreSQL logical replication of its public tables to a local
subscriber per region, the subscriber's position, its lag, and read-your-writes.

A cell writes to the catalog primary (possibly in another jurisdiction, far away) and reads
public data that tolerates lag from its local replica. The replica is a separate cluster: its
own WAL positions mean nothing to the primary's, so how far it has got is the subscription's
``latest_end_lsn`` in ``pg_stat_subscription``, a position in the PRIMARY's WAL. We use
``latest_end_lsn`` (what the apply worker last confirmed to the primary's WAL sender, carried by
a keepalive processed after every change sent before it was applied and committed) and not
``received_lsn`` (raised when a message arrives, before the apply worker has applied it).

Read-your-writes: after a user's own catalog write the primary's WAL insert position is
remembered for that user (:class:`ReadYourWrites`, in this process's memory: bounded, entries
expire); that user's next reads go to the replica once its subscription has reached the
position (waiting up to ``WAIT`` for it), else to the primary.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from reelm.storage.db import Database

log = logging.getLogger("reelm.storage")

PUBLICATION = "reelm_catalog"

# The catalog tables a replica holds: what the public read paths (feed pools and pages, video
# and profile pages, search, hashtags, comments) read. Everything here is already visible to
# every region's cell on the primary; the replica only brings it closer.
PUBLISHED = (
    "directory",  # user id -> home region, state: the profile and video pages check it
    "profiles",
    "public_videos",
    "video_stats",
    "market_engagement",  # trending, per market (aggregates)
    "follows",  # counts, private accounts' grids, the Following feed
    "blocks",  # who may see whom
    "comments",
    "suspensions",  # hidden profiles and videos
    "video_restrictions",  # videos withheld in a market (451)
)
# And why the others are not published.
NOT_PUBLISHED = {
    "staff_members": "who may read protected data: the catalog operator's alone, no cell reads it",
    "report_cases": "the moderation queue: staff read it on the primary",
    "migrations": "a migration's coordination state, read-modify-write on the primary",
    "migration_users": "as migrations",
    "market_routes": "read under its lock by sign-ups and migrations, on the primary",
    "region_likes": "the engagement writer's own bookkeeping, on the primary",
    "engagement_receipts": "as region_likes",
    "alembic_version": "each database's own schema revision (DDL is not replicated)",
}

# How long a user's read waits for the replica to reach their own latest write before it goes
# to the primary: long enough for a loopback or same-region replica (p99 a few ms), short
# enough that a stopped replica costs a page 0.2 s, not a timeout.
WAIT = 0.2
# Remembered writes: at most this many users (the least recent forgotten first), each for this
# long (a replica that is this far behind is broken, and the operator is told by lag()).
REMEMBERED = 10_000
REMEMBER_SECONDS = 300.0
# A replica's server is asked whether it answers at most this often; one that does not is left
# alone (reads go to the primary) for DOWN_SECONDS.
PROBE_SECONDS = 1.0
DOWN_SECONDS = 5.0


def parse_lsn(value: str) -> int:
    """A pg_lsn's text form ``16/B374D848`` as a number of bytes."""
    high, _, low = value.partition("/")
    return (int(high, 16) << 32) | int(low, 16)


def format_lsn(value: int) -> str:
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


def subscription_name(name: str) -> str:
    """The subscription (and its slot on the primary, whose names are cluster-wide) of the
    replica called ``name`` (its region, say)."""
    return f"{PUBLICATION}_{name}"


def primary_position(primary: Database) -> int:
    """The end of the primary's WAL: past the commit of every transaction already committed."""
    with primary.reader.connect() as c:
        return parse_lsn(str(c.execute(text("SELECT pg_current_wal_insert_lsn()")).scalar()))


_POSITION = text(
    "SELECT min(s.latest_end_lsn)::text FROM pg_stat_subscription s "
    "JOIN pg_subscription p ON p.oid = s.subid "
    "WHERE p.subdbid = (SELECT oid FROM pg_database WHERE datname = current_database()) "
    "AND :publication = ANY (p.subpublications) AND s.relid IS NULL"
)


def replica_position(replica: Database) -> int | None:
    """How far in the primary's WAL this replica's subscription has applied and confirmed;
    None when it is not replicating (disabled, no subscription, worker not running)."""
    with replica.reader.connect() as c:
        value = c.execute(_POSITION, {"publication": PUBLICATION}).scalar()
    return None if value is None else parse_lsn(str(value))


def wait_for(replica: Database, position: int, timeout: float) -> bool:
    """Whether the replica reaches ``position`` within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    pause = 0.0002  # a same-region replica is usually there within a millisecond
    while True:
        reached = replica_position(replica)
        if reached is not None and reached >= position:
            return True
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(pause, left))
        pause = min(pause * 2, 0.01)


@dataclass(frozen=True)
class Lag:
    """How far a replica is behind: bytes of the primary's WAL it had not reached when asked,
    and the seconds it took to reach where the primary was then (None: not within the
    timeout, or not replicating)."""

    bytes: int | None
    seconds: float | None


def lag(primary: Database, replica: Database, *, timeout: float = 5.0) -> Lag:
    """Measure the replica's lag now: the bench and `reelm catalog replica-lag` call it."""
    start = time.monotonic()
    target = primary_position(primary)
    reached = replica_position(replica)
    if reached is not None and reached >= target:  # there already: two round trips
        return Lag(0, time.monotonic() - start)
    behind = None if reached is None else target - reached
    if wait_for(replica, target, timeout):
        return Lag(behind, time.monotonic() - start)
    return Lag(behind, None)


class ReadYourWrites:
    """Which catalog a user's reads go to: the replica, unless it has not yet reached that
    user's latest write.

    In this process's memory, keyed by user id (a cell serves its users from one process,
    and a user's requests reach their home cell: docs/architecture.md). Bounded: REMEMBERED
    users, each for REMEMBER_SECONDS; a user forgotten early reads the replica as anyone does.
    """

    def __init__(
        self,
        primary: Database,
        replica: Database,
        *,
        wait: float = WAIT,
        size: int = REMEMBERED,
        seconds: float = REMEMBER_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.primary = primary
        self.replica = replica
        self.wait = wait
        self.size = size
        self.seconds = seconds
        self.clock = clock
        self._pending: OrderedDict[uuid.UUID, tuple[int, float]] = OrderedDict()
        self._lock = threading.Lock()
        self._probed = -PROBE_SECONDS  # when the replica's server was last asked
        self._down_until = 0.0
        # Reads served by each side since start (tests and the bench look).
        self.served = {"replica": 0, "primary": 0, "waited": 0}

    @property
    def replicated(self) -> bool:
        return self.replica is not self.primary

    def wrote(self, user_id: uuid.UUID) -> None:
        """The user has just committed a catalog write: remember where the primary's WAL was."""
        if not self.replicated:
            return
        position = primary_position(self.primary)
        with self._lock:
            self._pending.pop(user_id, None)
            self._pending[user_id] = (position, self.clock() + self.seconds)
            while len(self._pending) > self.size:
                self._pending.popitem(last=False)

    def pending(self, user_id: uuid.UUID) -> int | None:
        """The position this user's reads must see, if any is remembered and still due."""
        with self._lock:
            found = self._pending.get(user_id)
            if found is not None and found[1] <= self.clock():
                del self._pending[user_id]
                found = None
        return None if found is None else found[0]

    def _caught_up(self, user_id: uuid.UUID, position: int) -> None:
        with self._lock:
            found = self._pending.get(user_id)
            if found is not None and found[0] <= position:
                del self._pending[user_id]

    def reader(self, user_id: uuid.UUID | None) -> Database:
        """The database this user's lag-tolerant reads go to (None: a visitor not signed in)."""
        if not self.replicated or not self._replica_answers():
            return self.primary
        position = None if user_id is None else self.pending(user_id)
        if position is None:
            self._count("replica")
            return self.replica
        assert user_id is not None
        self._count("waited")
        try:
            reached = wait_for(self.replica, position, self.wait)
        except DBAPIError:
            reached = False
        if reached:
            self._caught_up(user_id, position)
            self._count("replica")
            return self.replica
        log.info("catalog replica behind a user's write: read from the primary")
        self._count("primary")
        return self.primary

    def _replica_answers(self) -> bool:
        """Whether the replica's server answers, asked at most every PROBE_SECONDS: a replica
        that is down sends reads to the primary for DOWN_SECONDS, instead of failing pages.
        (A replica that answers but does not replicate keeps serving, stale: its operator
        sees it in `reelm catalog replica-lag`.)"""
        now = self.clock()
        with self._lock:
            if now < self._down_until:
                return False
            if now - self._probed < PROBE_SECONDS:
                return True
            self._probed = now
        try:
            replica_position(self.replica)
        except DBAPIError:
            log.warning("the catalog replica does not answer: reading the primary for now")
            with self._lock:
                self._down_until = now + DOWN_SECONDS
            return False
        return True

    def _count(self, side: str) -> None:
        with self._lock:
            self.served[side] += 1
