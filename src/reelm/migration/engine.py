"""Moving users between regions: plan -> copy -> verify -> switch -> purge -> attest.

Users move in batches (all users of a batch share one source region). Every step is
idempotent and journaled in the catalog (``migration_users.state``); a run killed at any
moment is finished by running it again (``resume``):

- **copy**: the user's blobs first, while the user keeps using the app (pre-copy); then the
  user is *frozen* in the source (``reelm.regions.fence``: writes wait), every row is copied
  (protected columns decrypted with the source key and encrypted with a new data key wrapped by
  the destination's master key; blind indexes recomputed with the destination's index key), and
  blobs added or changed since the pre-copy are copied too. The copy waits in the destination
  as ``incoming`` (no one reads it: the directory still points to the source).
- **verify**: the canonical content (``digest.py``) is computed on each side with that side's
  keys: rows decrypted, every blob hashed in full on both sides (the source's as it is streamed
  to the copy, the destination's as it is read back; both before the freeze for blobs that do
  not change meanwhile, or again after a resumed crash). A mismatch is copied once more; a
  second mismatch leaves the user where they are (unfrozen, the copy removed) and reports it.
- **switch**: in one catalog transaction the directory entry points to the destination with
  the epoch raised, and the journal says so. Then the destination's copy is activated (and its
  arrival logged), the source's is marked ``moved`` (refusing writes and session reads), and
  the videos waiting for processing are queued in the destination.
- **purge**: the source's jobs, blobs, staged files and wrapped data key, then its rows (the
  departure and the key's destruction logged with them). With the key gone, every older copy
  of the source (a backup, a ``pg_dump``) is unreadable for the user.
- **attest**: once every user is through, each region's log is integrated and a signed report
  is written; ``migration.completed`` entries in every log involved carry its SHA-256.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    LargeBinary,
    any_,
    bindparam,
    delete,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import UUID as PG_UUID
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from reelm.accounts import indexes
from reelm.accounts.errors import AccountError, InvalidInput, NotFound
from reelm.accounts.logsubject import subject as log_subject
from reelm.accounts.logsubject import subject_if_readable
from reelm.accounts.models import Account, DirectoryEntry
from reelm.bootstrap import Platform
from reelm.media.models import Upload, Video
from reelm.media.serving import BlobFile
from reelm.migration import digest as digests
from reelm.migration import switch
from reelm.migration.models import Migration, MigrationUser
from reelm.migration.tables import MOVED_TABLES, MovedTable
from reelm.regions import routing
from reelm.regions.cell import Cell
from reelm.residency import readable
from reelm.residency.readable import blob_name as _blob_name
from reelm.residency.readable import user_blob_keys as _user_blob_keys
from reelm.social.notify import DELIVER_TASK
from reelm.storage.blobs import BlobStore
from reelm.storage.crypto import (
    BLOB_CHUNK,
    DecryptionFailed,
    UserCipher,
    decrypt_blob_range,
    encrypt_blob,
    plain_size,
)
from reelm.storage.keys import KeyDestroyed

log = logging.getLogger("reelm.migration")

BEFORE_SWITCH = ("planned", "copied", "verified")
DONE = ("attested",)
DEFAULT_BATCH = 200
RUN_LOCK_SPACE = 0x6D67  # first key of the run's advisory lock: "mg"
# How long the purge waits for a source job that is running a moved user's video to notice
# the fence and end.
RUNNING_JOB_WAIT = 30.0


class MigrationError(AccountError):
    """A migration cannot start or go on (a clear message for the operator)."""

    slug = "migration-refused"
    status = 409
    title = "Migration refused"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)


# ---- fault injection -------------------------------------------------------------------------

FAULT_ENV = "REELM_MIGRATION_FAULT"
FAULT_POINTS = (
    "after-start",
    "after-precopy",
    "after-freeze",
    "after-copy",
    "after-verify",
    "after-switch",
    "after-activate",
    "after-purge-blobs",
    "after-purge-keys",
    "after-purge",
    "before-report",
    "after-report",
)


class Faults:
    """Kill the process (SIGKILL, like a crash) at a named step boundary, for the tests.

    ``REELM_MIGRATION_FAULT=after-copy`` kills at the first batch's copy; ``after-copy:3``
    at the third time the point is reached."""

    def __init__(self, spec: str | None = None) -> None:
        spec = spec if spec is not None else os.environ.get(FAULT_ENV, "")
        self.point, _, nth = spec.partition(":")
        if self.point and self.point not in FAULT_POINTS:
            raise MigrationError(f"unknown fault point {self.point!r}")
        self.remaining = int(nth or 1)

    def __call__(self, point: str) -> None:
        if point != self.point:
            return
        self.remaining -= 1
        if self.remaining <= 0:
            log.warning("fault injection: killing the process at %s", point)
            os.kill(os.getpid(), signal.SIGKILL)


# ---- progress -------------------------------------------------------------------------------

# phase ("copy", "purge", ...), users done, users in all, bytes copied so far
Progress = Callable[[str, int, int, int], None]


def _quiet(phase: str, done: int, total: int, copied: int) -> None:
    return None


# ---- plan -----------------------------------------------------------------------------------


@dataclass
class Plan:
    destination: str
    market: str | None
    users: dict[str, list[uuid.UUID]] = field(default_factory=dict)  # by source region
    rows: dict[str, int] = field(default_factory=dict)  # by table
    bytes: int = 0  # protected blob bytes (plaintext) to move
    skipped: dict[str, int] = field(default_factory=dict)  # why -> how many

    @property
    def user_count(self) -> int:
        return sum(len(v) for v in self.users.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "destination": self.destination,
            "market": self.market,
            "users": {region: len(ids) for region, ids in self.users.items()},
            "rows": self.rows,
            "bytes": self.bytes,
            "skipped": self.skipped,
        }


def _among(column: Any, ids: Iterable[uuid.UUID]) -> Any:
    """``column = ANY(:ids)``: one array parameter, however many ids (an IN list takes one
    parameter per id, and PostgreSQL's protocol allows 65,535)."""
    return column == any_(bindparam(None, list(ids), type_=ARRAY(PG_UUID(as_uuid=True))))


def _batches(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def make_plan(
    platform: Platform,
    destination: str,
    *,
    market: str | None = None,
    user_ids: Iterable[uuid.UUID] | None = None,
    exclude: set[uuid.UUID] | None = None,
) -> Plan:
    """Who moves, and how much. ``market`` selects by the market recorded with each account;
    ``user_ids`` names users (both: the named users of that market)."""
    if destination not in platform.cells:
        raise InvalidInput(f"unknown region {destination[:40]!r}", field="to")
    if market is None and user_ids is None:
        raise InvalidInput("name a market or a list of users", field="market")
    if market is not None:
        market = platform.policy.check_open(market)
    wanted = None if user_ids is None else set(user_ids)
    plan = Plan(destination, market)
    exclude = exclude or set()
    for region, cell in platform.cells.items():
        if region == destination:
            continue
        query = select(Account.user_id).where(Account.migration.is_(None))
        if market is not None:
            query = query.where(Account.market == market)
        with cell.db.transaction() as s:
            if wanted is not None:
                found: list[uuid.UUID] = []
                for chunk in _batches(sorted(wanted), 5000):
                    found += s.scalars(query.where(_among(Account.user_id, chunk)))
            else:
                found = list(s.scalars(query))
        ids = sorted(u for u in found if u not in exclude)
        if not ids:
            continue
        plan.users[region] = ids
        _measure(cell, ids, plan)
    if wanted is not None:
        planned = {u for ids in plan.users.values() for u in ids}
        missing = wanted - planned
        if missing:
            with platform.catalog.transaction() as c:
                homes = dict(
                    c.execute(
                        select(DirectoryEntry.user_id, DirectoryEntry.home_region).where(
                            _among(DirectoryEntry.user_id, missing)
                        )
                    ).all()
                )
            here = sum(1 for u in missing if homes.get(u) == destination)
            if here:
                plan.skipped["already in the destination"] = here
            if len(missing) - here:
                plan.skipped["not found or not of the market"] = len(missing) - here
    return plan


def _measure(cell: Cell, ids: list[uuid.UUID], plan: Plan) -> None:
    with cell.db.transaction() as s:
        for moved in MOVED_TABLES:
            column = moved.table.c[moved.user_column]
            count = 0
            for chunk in _batches(ids, 5000):
                count += (
                    s.scalar(
                        select(func.count()).select_from(moved.table).where(_among(column, chunk))
                    )
                    or 0
                )
            plan.rows[moved.name] = plan.rows.get(moved.name, 0) + count
        for chunk in _batches(ids, 5000):
            for original, renditions, visibility in s.execute(
                select(Video.original_bytes, Video.renditions, Video.visibility).where(
                    _among(Video.owner_id, chunk)
                )
            ):
                plan.bytes += original or 0
                if visibility != "public":
                    plan.bytes += sum(int(r.get("bytes") or 0) for r in renditions or [])


# ---- starting --------------------------------------------------------------------------------


def start(platform: Platform, plan: Plan, *, batch_size: int = DEFAULT_BATCH) -> uuid.UUID:
    """Record the migration and its users; point the market to the destination at once (new
    sign-ups go there from now on) and log the start in every region involved."""
    if plan.user_count == 0 and plan.market is None:
        raise MigrationError("nobody to move")
    migration_id = uuid.uuid4()
    with platform.catalog.transaction() as c:
        busy = c.scalar(
            select(func.count())
            .select_from(MigrationUser)
            .join(Migration, Migration.id == MigrationUser.migration_id)
            .where(
                Migration.state == "running",
                MigrationUser.state.notin_(("attested", "failed")),
                _among(MigrationUser.user_id, [u for ids in plan.users.values() for u in ids]),
            )
        )
        if busy:
            raise MigrationError(
                f"{busy} of these users are in a migration still running: resume it first"
            )
        c.add(
            Migration(
                id=migration_id,
                market=plan.market,
                destination=plan.destination,
                state="running",
                plan={**plan.as_dict(), "batch_size": batch_size},
            )
        )
        c.flush()
        _journal_users(c, migration_id, plan)
        if plan.market is not None:
            routing.lock_market(c, plan.market, exclusive=True)
            switch.route_market(c, migration_id)
    # 'migration.started' is logged in every region involved by the first run (Runner).
    return migration_id


def _journal_users(c: Session, migration_id: uuid.UUID, plan: Plan) -> None:
    rows = [
        {
            "migration_id": migration_id,
            "user_id": u,
            "source": region,
            "state": "planned",
            "rows": 0,
            "blobs": 0,
            "blob_bytes": 0,
        }
        for region, ids in plan.users.items()
        for u in ids
    ]
    for chunk in _batches(rows, 5000):
        c.execute(pg_insert(MigrationUser).on_conflict_do_nothing(), chunk)


# ---- one user's content, on one side ---------------------------------------------------------


def _plain_chunks(store: BlobStore, data_key: bytes, owner: uuid.UUID, key: str) -> Iterator[bytes]:
    sealed = BlobFile(store, key)
    total = sealed.size
    size = plain_size(total)
    for start in range(0, max(size, 1), BLOB_CHUNK * 16):
        yield decrypt_blob_range(
            data_key, owner, _blob_name(key), sealed, total, start, start + BLOB_CHUNK * 16
        )


class _Plain:
    """A file-like view of a decrypted blob for encrypt_blob (reads in BLOB_CHUNK pieces)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = b""
        self.sha = hashlib.sha256()
        self.size = 0

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._buffer) < size:
            piece = next(self._chunks, None)
            if piece is None:
                break
            self._buffer += piece
        out, self._buffer = (
            (self._buffer, b"") if size < 0 else (self._buffer[:size], self._buffer[size:])
        )
        self.sha.update(out)
        self.size += len(out)
        return out


def _blob_digest(store: BlobStore, data_key: bytes, owner: uuid.UUID, key: str) -> tuple[str, int]:
    sha, size = hashlib.sha256(), 0
    for piece in _plain_chunks(store, data_key, owner, key):
        sha.update(piece)
        size += len(piece)
    return sha.hexdigest(), size


def _staged_files(
    platform: Platform, region: str, uploads: dict[uuid.UUID, uuid.UUID | None]
) -> list[Path]:
    """The staged bytes of uploads that are not videos yet (upload id -> its video id): the
    ``<id>.part`` being written, or the ``<id>.src`` an upload being finished was renamed to
    (its bytes are nowhere else until the video's original is stored)."""
    directory = platform.settings.staging_dir(region)
    found = []
    for upload_id, video_id in uploads.items():
        if video_id is not None:
            continue  # the original is in the blob store; a .src left is a transcode source
        for suffix in (".part", ".src"):
            path = directory / f"{upload_id}{suffix}"
            if path.exists():
                found.append(path)
                break
    return found


def _file_digest(path: Path, length: int) -> tuple[str, int]:
    """SHA-256 of a staged upload's first ``length`` bytes (the ones its row accounts for:
    bytes past the recorded offset are an interrupted request's, and the client resends them)."""
    sha, size = hashlib.sha256(), 0
    with path.open("rb") as f:
        while size < length and (piece := f.read(min(1 << 20, length - size))):
            sha.update(piece)
            size += len(piece)
    return sha.hexdigest(), size


@dataclass
class _Side:
    """What one region holds of a batch of users: rows per user per table."""

    rows: dict[uuid.UUID, dict[str, list[dict[str, Any]]]]


def _read_rows(cell: Cell, ids: list[uuid.UUID]) -> _Side:
    rows: dict[uuid.UUID, dict[str, list[dict[str, Any]]]] = {
        u: {m.name: [] for m in MOVED_TABLES} for u in ids
    }
    with cell.db.transaction() as s:
        for moved in MOVED_TABLES:
            table = moved.table
            order = list(table.primary_key.columns)
            for row in s.execute(
                select(table).where(_among(table.c[moved.user_column], ids)).order_by(*order)
            ).mappings():
                rows[row[moved.user_column]][moved.name].append(dict(row))
    return _Side(rows)


def _document_rows(
    moved: MovedTable, rows: list[dict[str, Any]], cipher: UserCipher
) -> list[dict[str, Any]]:
    out = []
    for row in rows:
        doc: dict[str, Any] = {}
        for column, value in row.items():
            if column in moved.indexes or column in moved.lookups or column in moved.local:
                continue
            if column in moved.encrypted:
                value = cipher.decrypt_optional(moved.encrypted[column], value)
            doc[column] = value
        out.append(doc)
    return out


def _document(
    platform: Platform,
    cell: Cell,
    user_id: uuid.UUID,
    rows: dict[str, list[dict[str, Any]]] | None,
    hashed: dict[str, tuple[str, int]] | None = None,
    tables: dict[str, list[dict[str, Any]]] | None = None,
) -> dict[str, Any]:
    """The user's canonical content as this cell holds it, read with this cell's keys.
    ``hashed``: blobs already hashed in full on this side (key -> SHA-256, size), and known
    unchanged since; every other blob is read and hashed now. ``tables``: the rows already
    decrypted on this side (the copy decrypts the source's anyway), instead of ``rows``."""
    data_key = cell.keys.data_key(user_id)
    if tables is None:
        assert rows is not None
        cipher = UserCipher(user_id, data_key)
        tables = {m.name: _document_rows(m, rows[m.name], cipher) for m in MOVED_TABLES}
    blobs = {}
    for key in _user_blob_keys(cell.blobs, user_id):
        known = (hashed or {}).get(key)
        sha, size = known if known is not None else _blob_digest(cell.blobs, data_key, user_id, key)
        blobs[key] = {"sha256": sha, "size": size}
    offsets = {r["id"]: r["offset"] for r in tables["uploads"]}
    pending = {r["id"]: r["video_id"] for r in tables["uploads"]}
    staged = {}
    for path in _staged_files(platform, cell.region, pending):
        sha, size = _file_digest(path, offsets[uuid.UUID(path.stem)])
        staged[path.name] = {"sha256": sha, "size": size}
    # A table keyed by a per-user lookup is in a different primary-key order on each side
    # (the lookup key changes with the data key): such rows are compared in content order.
    tables = {
        name: sorted(docs, key=_content_order) if _LOOKUP_TABLES.get(name) else docs
        for name, docs in tables.items()
    }
    return {"user": str(user_id), "tables": tables, "blobs": blobs, "staged": staged}


_LOOKUP_TABLES = {m.name: bool(m.lookups) for m in MOVED_TABLES}


def _content_order(doc: dict[str, Any]) -> str:
    return json.dumps(digests.canonical(doc), sort_keys=True)


# ---- the run ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class BlobCheck:
    """One blob copied: the source's size and modification time when it was read, and the
    SHA-256 of its plaintext as read from the source and as read back from the destination."""

    stamp: tuple[int, datetime]
    source_sha: str
    dest_sha: str
    size: int


@dataclass
class Outcome:
    migration_id: uuid.UUID
    moved: int = 0
    failed: dict[str, str] = field(default_factory=dict)  # user id -> reason
    rows: int = 0
    blobs: int = 0
    bytes: int = 0
    seconds: float = 0.0
    # Per batch, how long its users' writes were paused (freeze to activation), in seconds.
    pauses: list[float] = field(default_factory=list)
    report: dict[str, Any] | None = None
    # Moved users' values in the destination that their new key does not open: user -> places.
    unreadable: dict[str, list[str]] = field(default_factory=dict)


class Runner:
    def __init__(
        self,
        platform: Platform,
        migration_id: uuid.UUID,
        *,
        progress: Progress | None = None,
        faults: Faults | None = None,
        batch_size: int | None = None,
    ) -> None:
        self.platform = platform
        self.migration_id = migration_id
        self.progress = progress or _quiet
        self.fault = faults or Faults()
        with platform.catalog.transaction() as c:
            migration = c.get(Migration, migration_id)
            if migration is None:
                raise NotFound(f"no migration {migration_id}")
            self.migration = migration
        self.dest = platform.cell(migration.destination)
        self.batch_size = batch_size or int(migration.plan.get("batch_size", DEFAULT_BATCH))
        self.outcome = Outcome(migration_id)
        self.copied_bytes = 0
        self._source_docs: dict[uuid.UUID, dict[str, list[dict[str, Any]]]] = {}
        self._dest_epoch = 0  # the destination's index epoch for the batch being copied

    # -- driving ---------------------------------------------------------------------------
    def run(self, *, retry_failed: bool = False) -> Outcome:
        """Take the migration's lock (one runner at a time), then move everyone left."""
        if self.migration.state != "running":
            raise MigrationError(f"migration {self.migration_id} is {self.migration.state}")
        with self._run_lock():
            return self._run(retry_failed=retry_failed)

    @contextlib.contextmanager
    def _run_lock(self) -> Iterator[None]:
        """The migration's advisory lock, held on a connection of its own while a process
        runs (or aborts) it: a second one is refused instead of racing the first."""
        params = {"space": RUN_LOCK_SPACE, "id": str(self.migration_id)}
        with self.platform.catalog.engine.connect() as conn:
            if not conn.scalar(text("SELECT pg_try_advisory_lock(:space, hashtext(:id))"), params):
                raise MigrationError(
                    f"migration {self.migration_id} is being run by another process"
                )
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:space, hashtext(:id))"), params)

    def _run(self, *, retry_failed: bool) -> Outcome:
        began = time.monotonic()
        self._sweep_scratch()
        self._log_started()
        if retry_failed:
            retry = self._retryable()
            self._set_state(retry, "planned", error=None)
            self._forget_settled(set(retry))
        self.fault("after-start")
        while True:
            self._move_all()
            # Sign-ups of the market that landed in another region while the route changed
            # (they read the old route): found and moved too, until there are none.
            if self.migration.market is None or not self._adopt_stragglers():
                break
            self._log_started()
        self._check_readable()
        self._finish()
        self.outcome.seconds = time.monotonic() - began
        return self.outcome

    def _check_readable(self) -> None:
        """Everything the moved users hold in the destination, written before or after their
        switch, opens with the key the destination holds for them now. A value sealed under
        any other key (a process that kept a destroyed key) is lost: reported, never hidden."""
        lost = readable.unreadable(self.dest, self._users_in(("purged", "attested")))
        for user_id, places in sorted(lost.items()):
            log.error(
                "user %s: %d values do not open in %s", user_id, len(places), self.dest.region
            )
        self.outcome.unreadable = {str(u): places for u, places in lost.items()}

    def _retryable(self) -> list[uuid.UUID]:
        """Failed users still living in their journaled source (one moved since by another
        migration, or deleted, is not this migration's to retry)."""
        with self.platform.catalog.transaction() as c:
            return list(
                c.scalars(
                    select(MigrationUser.user_id)
                    .join(DirectoryEntry, DirectoryEntry.user_id == MigrationUser.user_id)
                    .where(
                        MigrationUser.migration_id == self.migration_id,
                        MigrationUser.state == "failed",
                        DirectoryEntry.home_region == MigrationUser.source,
                        DirectoryEntry.state != "deleted",
                    )
                )
            )

    def _forget_settled(self, retrying: set[uuid.UUID]) -> None:
        """Failed users who no longer live in their journaled source (moved since by another
        migration, or deleted) are not this migration's: they leave its journal."""
        others = [u for u in self._users_in(("failed",)) if u not in retrying]
        if not others:
            return
        with self.platform.catalog.transaction() as c:
            c.execute(
                delete(MigrationUser).where(
                    MigrationUser.migration_id == self.migration_id,
                    _among(MigrationUser.user_id, others),
                    MigrationUser.state == "failed",
                )
            )
        log.info("%d failed users live elsewhere now: no longer in this migration", len(others))

    def _sweep_scratch(self) -> None:
        """Temporary files an interrupted run left in the destination's staging area."""
        directory = self.platform.settings.staging_dir(self.dest.region)
        if directory.exists():
            for path in directory.glob(".migration.*"):
                path.unlink(missing_ok=True)

    def _log_started(self) -> None:
        """``migration.started`` in every region involved, once (a crash between the journal's
        commit and the log's is made good here)."""
        details = {
            "migration": str(self.migration_id),
            "market": self.migration.market,
            "to": self.dest.region,
        }
        needle = str(self.migration_id).encode()
        for region in sorted({self.dest.region, *self._sources()}):
            cell = self.platform.cell(region)
            with cell.db.transaction() as s:
                done = s.scalar(
                    text(
                        "SELECT EXISTS (SELECT 1 FROM tlog_entries WHERE kind = :k "
                        "AND position(:n IN entry) > 0) OR EXISTS (SELECT 1 FROM tlog_queue "
                        "WHERE kind = :k AND position(:n IN entry) > 0)"
                    ),
                    {"k": "migration.started", "n": needle},
                )
                if not done:
                    cell.log.append(s, "migration.started", None, details)

    def _users_in(self, states: tuple[str, ...]) -> list[uuid.UUID]:
        with self.platform.catalog.transaction() as c:
            return list(
                c.scalars(
                    select(MigrationUser.user_id).where(
                        MigrationUser.migration_id == self.migration_id,
                        MigrationUser.state.in_(states),
                    )
                )
            )

    def _counts(self) -> dict[str, int]:
        with self.platform.catalog.transaction() as c:
            return dict(
                c.execute(
                    select(MigrationUser.state, func.count())
                    .where(MigrationUser.migration_id == self.migration_id)
                    .group_by(MigrationUser.state)
                ).all()
            )

    def _move_all(self) -> None:
        counts = self._counts()
        total = sum(counts.values()) - counts.get("failed", 0)
        done = counts.get("purged", 0) + counts.get("attested", 0)
        self.progress("move", done, total, self.copied_bytes)
        while True:
            with self.platform.catalog.transaction() as c:
                batch = list(
                    c.execute(
                        select(MigrationUser.user_id, MigrationUser.source, MigrationUser.state)
                        .where(
                            MigrationUser.migration_id == self.migration_id,
                            MigrationUser.state.in_((*BEFORE_SWITCH, "switched")),
                        )
                        .order_by(MigrationUser.source, MigrationUser.user_id)
                        .limit(self.batch_size)
                    ).all()
                )
            if not batch:
                return
            source = batch[0].source
            rows = [r for r in batch if r.source == source]
            self._move_batch(self.platform.cell(source), rows)
            done += sum(1 for r in rows if r.user_id not in self._failed_now)
            self.progress("move", done, total, self.copied_bytes)

    def abort(self) -> Outcome:
        """Stop the migration. Users not yet switched stay where they are (copies removed,
        unfrozen); users already switched have moved, so their purge is finished. A market
        route this migration set is taken back (new sign-ups follow the configuration again)."""
        with self._run_lock():
            with self.platform.catalog.transaction() as c:
                rows = list(
                    c.execute(
                        select(MigrationUser.user_id, MigrationUser.source).where(
                            MigrationUser.migration_id == self.migration_id,
                            MigrationUser.state.in_(BEFORE_SWITCH),
                        )
                    )
                )
            for user_id, source in rows:
                self._give_up(self.platform.cell(source), user_id, "migration aborted")
            self._move_all()  # the switched ones: activate and purge
            for region in {self.dest.region, *self._sources()}:
                self.platform.cell(region).log.integrate_all()
            self._set_state(self._users_in(("purged",)), "attested")
            with self.platform.catalog.transaction() as c:
                if self.migration.market is not None:
                    switch.unroute_market(c, self.migration_id)
                c.execute(
                    update(Migration)
                    .where(Migration.id == self.migration_id)
                    .values(state="aborted", finished_at=datetime.now(UTC))
                )
            return self.outcome

    # -- one batch --------------------------------------------------------------------------
    _failed_now: set[uuid.UUID] = set()

    def _move_batch(self, src: Cell, rows: list[Any]) -> None:
        self._failed_now = set()
        early = [r.user_id for r in rows if r.state in BEFORE_SWITCH]
        early = self._drop_deleted(src, early)
        if early:
            # Blobs are copied, read back and hashed before the freeze: the frozen window
            # only copies and hashes what changed since, so writes pause for seconds even
            # when the users have gigabytes of media.
            # The users' new data keys, wrapped by the destination's master key, made durable
            # together (one file system flush instead of one fsync per user).
            self.dest.keys.create_data_keys(u for u in early if src.keys.has_data_key(u))
            checks = self._copy_blobs(src, early, {}, prune=False)
            self.fault("after-precopy")
            frozen_at = time.monotonic()
            self._freeze(src, early)
            self.fault("after-freeze")
            early = self._copy_rows(src, early)
            checks = self._copy_blobs(src, early, checks)
            self._copy_staged(src, early)
            self._set_state(early, "copied")
            self.fault("after-copy")
            verified = self._verify(src, early, checks)
            self.fault("after-verify")
            self._switch(src, verified)
            self.fault("after-switch")
        switched = [r.user_id for r in rows if r.state == "switched"]
        switched += [u for u in early if u not in self._failed_now]
        if switched:
            self._activate(src, switched)
            if early:
                self.outcome.pauses.append(time.monotonic() - frozen_at)
            self.fault("after-activate")
            self._purge(src, switched)

    def _drop_deleted(self, src: Cell, ids: list[uuid.UUID]) -> list[uuid.UUID]:
        """Users whose account was purged (their deletion came due) before their turn have
        nothing left to move: they leave the journal, and a blob pre-copied by an interrupted
        run goes too."""
        with src.db.transaction() as s:
            present = set(s.scalars(select(Account.user_id).where(_among(Account.user_id, ids))))
        gone = [u for u in ids if u not in present]
        for user_id in gone:
            self._remove_copy(src, user_id)  # a no-op for a user who lives there
        if gone:
            with self.platform.catalog.transaction() as c:
                c.execute(
                    delete(MigrationUser).where(
                        MigrationUser.migration_id == self.migration_id,
                        _among(MigrationUser.user_id, gone),
                        MigrationUser.state.in_(BEFORE_SWITCH),
                    )
                )
            log.info("%d users were deleted before their turn: nothing to move", len(gone))
        return [u for u in ids if u in present]

    def _set_state(
        self, ids: list[uuid.UUID], state: str, *, error: str | None = None, **values: Any
    ) -> None:
        if not ids:
            return
        with self.platform.catalog.transaction() as c:
            c.execute(
                update(MigrationUser)
                .where(
                    MigrationUser.migration_id == self.migration_id,
                    _among(MigrationUser.user_id, ids),
                )
                .values(state=state, error=error, **values)
            )

    # -- copy -------------------------------------------------------------------------------
    def _copy_blobs(
        self,
        src: Cell,
        ids: list[uuid.UUID],
        known: dict[str, BlobCheck],
        *,
        prune: bool = True,
    ) -> dict[str, BlobCheck]:
        """Copy every protected blob of the users, re-encrypted under the destination key, and
        read each copy back to hash it. A blob in ``known`` whose source size and modification
        time are unchanged is not copied again. ``prune``: remove destination blobs the
        source no longer has. Returns the checks of every blob the source has now."""
        checks: dict[str, BlobCheck] = {}
        for user_id in ids:
            if not src.keys.has_data_key(user_id):
                continue
            new_key = self.dest.keys.create_data_key(user_id)
            old_key = src.keys.data_key(user_id)
            for key in _user_blob_keys(src.blobs, user_id):
                stamp = (src.blobs.size(key), src.blobs.modified(key))
                check = known.get(key)
                if check is not None and check.stamp == stamp and self.dest.blobs.exists(key):
                    checks[key] = check
                    continue
                plain = _Plain(_plain_chunks(src.blobs, old_key, user_id, key))
                scratch = self._scratch()
                try:
                    with scratch.open("wb") as sealed:
                        encrypt_blob(new_key, user_id, _blob_name(key), plain, sealed)  # type: ignore[arg-type]
                    self.dest.blobs.put_file(key, scratch)
                finally:
                    scratch.unlink(missing_ok=True)
                dest_sha, _ = _blob_digest(self.dest.blobs, new_key, user_id, key)
                checks[key] = BlobCheck(stamp, plain.sha.hexdigest(), dest_sha, plain.size)
                self.copied_bytes += plain.size
            if prune:  # the final pass: the destination keeps exactly the source's blobs
                for key in _user_blob_keys(self.dest.blobs, user_id):
                    if key not in checks:
                        self.dest.blobs.delete(key)
        return checks

    def _scratch(self) -> Path:
        directory = self.platform.settings.staging_dir(self.dest.region)
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        return directory / f".migration.{uuid.uuid4().hex}"

    def _freeze(self, src: Cell, ids: list[uuid.UUID]) -> None:
        """Writes of these users wait from now on (see reelm.regions.fence): lock the account
        rows (waiting for writes in flight to commit) and mark them frozen."""
        with src.db.transaction() as s:
            s.execute(
                select(Account.user_id)
                .where(_among(Account.user_id, ids))
                .order_by(Account.user_id)
                .with_for_update()
            )
            s.execute(
                update(Account)
                .where(_among(Account.user_id, ids), Account.migration.is_(None))
                .values(migration="frozen")
            )
        # Their writes have stopped: the source lets them go at the directory's epoch now.
        with self.platform.catalog.transaction() as c:
            switch.release(c, self.migration_id, src.region, ids)

    def _copy_rows(self, src: Cell, ids: list[uuid.UUID]) -> list[uuid.UUID]:
        """Copy the users' rows, re-encrypted. Returns the users copied; one whose data cannot
        be copied (its source key gone, its email or phone already used by an account of the
        destination) stays home, and the others go on."""
        side = _read_rows(src, ids)
        # The destination's current index-key epoch: the copies' blind indexes are its. (A
        # rotation there retiring it before the insert below makes the insert fail on the
        # epoch's foreign key, and the batch is done again on resume.)
        with self.dest.db.transaction() as s:
            self._dest_epoch = indexes.current_epoch(s, self.dest)
        rows: dict[uuid.UUID, dict[str, list[dict[str, Any]]]] = {}
        counts: dict[uuid.UUID, int] = {}
        failed: dict[uuid.UUID, str] = {}
        for user_id in ids:
            tables = side.rows[user_id]
            if not tables["accounts"]:
                continue
            try:
                old = UserCipher(user_id, src.keys.data_key(user_id))
                new = UserCipher(user_id, self.dest.keys.create_data_key(user_id))
                copies: dict[str, list[dict[str, Any]]] = {}
                docs: dict[str, list[dict[str, Any]]] = {}
                for moved in MOVED_TABLES:
                    pairs = [self._reencrypt(moved, row, old, new) for row in tables[moved.name]]
                    copies[moved.name] = [copy for copy, _ in pairs]
                    docs[moved.name] = [doc for _, doc in pairs]
            except (KeyDestroyed, DecryptionFailed) as exc:
                failed[user_id] = f"the source data does not open: {type(exc).__name__}"
                continue
            rows[user_id] = copies
            counts[user_id] = sum(len(v) for v in tables.values())
            # The source's side of the verification: the frozen rows, decrypted with the
            # source key as they were read for the copy.
            self._source_docs[user_id] = docs
        failed.update(self._index_clashes(ids, rows))
        for user_id in failed:
            rows.pop(user_id, None)
            counts.pop(user_id, None)
            self._source_docs.pop(user_id, None)
        out = {
            m.name: [r for copies in rows.values() for r in copies[m.name]] for m in MOVED_TABLES
        }
        with self.dest.db.transaction() as s:
            for moved in reversed(MOVED_TABLES):
                s.execute(delete(moved.table).where(_among(moved.table.c[moved.user_column], ids)))
            for moved in MOVED_TABLES:
                for chunk in _batches(out[moved.name], 1000):
                    s.execute(insert(moved.table), chunk)
        self._journal_values("rows = v.n", {"n": ("integer", counts)})
        self.outcome.rows += sum(counts.values())
        for user_id, reason in failed.items():
            self._give_up(src, user_id, reason)
        return [u for u in ids if u not in failed]

    def _index_clashes(
        self, ids: list[uuid.UUID], rows: dict[uuid.UUID, dict[str, list[dict[str, Any]]]]
    ) -> dict[uuid.UUID, str]:
        """Users whose email or phone an account of the destination already has (emails are
        unique across regions at sign-up; phone numbers only within a region), under any of
        the destination's live index epochs."""
        wanted: dict[bytes, uuid.UUID] = {}
        with self.dest.db.transaction() as s:
            epochs = indexes.live_epochs(s)
        for user_id in rows:
            for account in self._source_docs[user_id]["accounts"]:
                for column, name in (("email_ct", "email"), ("phone_ct", "phone")):
                    if account[column] is not None:
                        for bidx in self.dest.blind_indexes(epochs, name, account[column]):
                            wanted[bidx] = user_id
        if not wanted:
            return {}
        with self.dest.db.transaction() as s:
            taken = s.execute(
                select(Account.email_bidx, Account.phone_bidx).where(
                    ~_among(Account.user_id, ids),
                    or_(
                        Account.email_bidx
                        == any_(bindparam(None, list(wanted), type_=ARRAY(LargeBinary))),
                        Account.phone_bidx
                        == any_(bindparam(None, list(wanted), type_=ARRAY(LargeBinary))),
                    ),
                )
            ).all()
        clashes: dict[uuid.UUID, str] = {}
        for email, phone in taken:
            for value, what in ((email, "email"), (phone, "phone number")):
                if value is not None and bytes(value) in wanted:
                    clashes[wanted[bytes(value)]] = f"an account of the destination has this {what}"
        return clashes

    def _journal_values(
        self, assignments: str, columns: dict[str, tuple[str, dict[Any, Any]]]
    ) -> None:
        """One UPDATE of many users' journal rows: ``columns`` maps a name to its SQL type and
        the values per user id; ``assignments`` uses them as ``v.<name>``."""
        users = sorted(next(iter(columns.values()))[1])
        if not users:
            return
        names = ", ".join(columns)
        arrays = ", ".join(f"CAST(:{name} AS {kind}[])" for name, (kind, _) in columns.items())
        params: dict[str, Any] = {"m": self.migration_id, "u": users}
        for name, (_, values) in columns.items():
            params[name] = [values[u] for u in users]
        with self.platform.catalog.transaction() as c:
            c.execute(
                text(
                    f"UPDATE migration_users AS j SET {assignments}, updated_at = now() "
                    f"FROM unnest(CAST(:u AS uuid[]), {arrays}) AS v(u, {names}) "
                    "WHERE j.migration_id = :m AND j.user_id = v.u"
                ),
                params,
            )

    def _reencrypt(
        self, moved: MovedTable, row: dict[str, Any], old: UserCipher, new: UserCipher
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The row for the destination, and the row's canonical document (decrypted)."""
        copy = dict(row)
        plain: dict[str, str | None] = {}
        for column, name in moved.encrypted.items():
            plain[column] = old.decrypt_optional(name, row[column])
            copy[column] = new.encrypt_optional(name, plain[column])
        doc = {
            column: plain.get(column, value)
            for column, value in row.items()
            if column not in moved.indexes
            and column not in moved.lookups
            and column not in moved.local
        }
        for column, source in moved.indexes.items():
            value = plain[source]
            copy[column] = (
                None
                if value is None
                else self.dest.blind_indexes([self._dest_epoch], moved.encrypted[source], value)[0]
            )
        for column, source in moved.lookups.items():
            copy[column] = new.lookup(moved.encrypted[source], plain[source] or "")
        if "migration" in moved.local:
            copy["migration"] = "incoming"
        if "index_epoch" in moved.local:
            copy["index_epoch"] = self._dest_epoch
        return copy, doc

    def _copy_staged(self, src: Cell, ids: list[uuid.UUID]) -> None:
        """Uploads in progress: their bytes so far, so the upload resumes where it stopped."""
        with src.db.transaction() as s:
            uploads = list(
                s.execute(
                    select(Upload.id, Upload.offset, Upload.video_id).where(
                        _among(Upload.owner_id, ids)
                    )
                )
            )
        offsets = {r.id: r.offset for r in uploads}
        target = self.platform.settings.staging_dir(self.dest.region)
        pending = {r.id: r.video_id for r in uploads}
        copied: set[str] = set()
        for path in _staged_files(self.platform, src.region, pending):
            target.mkdir(parents=True, exist_ok=True, mode=0o700)
            partial = target / f".migration.{uuid.uuid4().hex}"
            try:
                with path.open("rb") as f, partial.open("wb") as out:
                    os.chmod(partial, 0o600)
                    remaining = offsets[uuid.UUID(path.stem)]
                    while remaining > 0 and (piece := f.read(min(1 << 20, remaining))):
                        out.write(piece)
                        remaining -= len(piece)
                    out.flush()
                    os.fsync(out.fileno())
            except FileNotFoundError:
                # Renamed under us (.part -> .src by an upload being finished): the
                # verification sees the difference and the second pass copies the new name.
                partial.unlink(missing_ok=True)
                continue
            partial.replace(target / path.name)
            copied.add(path.name)
        # A name the source no longer has (an earlier pass copied the .part of what is now
        # a .src) must not linger in the destination.
        for upload_id in pending:
            for suffix in (".part", ".src"):
                name = f"{upload_id}{suffix}"
                if name not in copied and pending[upload_id] is None:
                    (target / name).unlink(missing_ok=True)

    # -- verify ----------------------------------------------------------------------------
    def _verify(
        self,
        src: Cell,
        ids: list[uuid.UUID],
        checks: dict[str, BlobCheck] | None = None,
        *,
        second: bool = False,
    ) -> list[uuid.UUID]:
        """Compare each user's digest on both sides. Blobs copied in this run were hashed as
        they were read from the source and again as read back from the destination (and the
        source's are unchanged since: same size and time, and the user is frozen); blobs
        copied by an earlier, interrupted run are read again on both sides now."""
        checks = checks or {}
        unchanged = {
            key: check
            for key, check in checks.items()
            if (src.blobs.size(key), src.blobs.modified(key)) == check.stamp
        }
        src_hashed = {k: (c.source_sha, c.size) for k, c in unchanged.items()}
        dst_hashed = {k: (c.dest_sha, c.size) for k, c in unchanged.items()}
        known = {u: self._source_docs.pop(u) for u in ids if u in self._source_docs}
        src_side = _read_rows(src, [u for u in ids if u not in known])
        dst_side = _read_rows(self.dest, ids)
        good: list[uuid.UUID] = []
        bad: dict[uuid.UUID, str] = {}
        totals: dict[uuid.UUID, tuple[bytes, int, int]] = {}
        for user_id in ids:
            tables = known.get(user_id)
            if tables is None and not src_side.rows[user_id]["accounts"]:
                bad[user_id] = "the account is gone from the source"
                continue
            try:
                a = _document(
                    self.platform,
                    src,
                    user_id,
                    src_side.rows.get(user_id),
                    src_hashed,
                    tables=tables,
                )
                b = _document(self.platform, self.dest, user_id, dst_side.rows[user_id], dst_hashed)
            except Exception as exc:  # a blob that does not open, a key missing...
                bad[user_id] = f"could not read the copy: {type(exc).__name__}"
                continue
            theirs = digests.digest(b)
            if digests.digest(a) != theirs:
                bad[user_id] = "digest mismatch in " + ", ".join(digests.differences(a, b))
                continue
            good.append(user_id)
            totals[user_id] = (
                theirs,
                len(b["blobs"]),
                sum(v["size"] for v in b["blobs"].values()),
            )
        self._journal_values(
            "state = 'verified', digest = v.d, blobs = v.b, blob_bytes = v.s",
            {
                "d": ("bytea", {u: t[0] for u, t in totals.items()}),
                "b": ("integer", {u: t[1] for u, t in totals.items()}),
                "s": ("bigint", {u: t[2] for u, t in totals.items()}),
            },
        )
        if bad and not second:
            retry = list(bad)
            log.warning("%d users did not verify; copying them once more", len(retry))
            retry = self._copy_rows(src, retry)
            again = self._copy_blobs(src, retry, {})
            self._copy_staged(src, retry)
            return good + self._verify(src, retry, again, second=True)
        for user_id, reason in bad.items():
            self._give_up(src, user_id, reason)
        return good

    def _give_up(self, src: Cell, user_id: uuid.UUID, reason: str) -> None:
        """The user stays where they are: the copy goes, the source thaws, the reason is kept."""
        log.error("user %s stays in %s: %s", user_id, src.region, reason)
        self._remove_copy(src, user_id)
        with src.db.transaction() as s:
            s.execute(
                update(Account)
                .where(Account.user_id == user_id, Account.migration == "frozen")
                .values(migration=None)
            )
        with self.platform.catalog.transaction() as c:
            switch.unrelease(c, self.migration_id, [user_id])
        self._set_state([user_id], "failed", error=reason[:500])
        self._failed_now.add(user_id)
        self.outcome.failed[str(user_id)] = reason
        # A job the fence stopped left its video waiting: it is made here after all.
        with src.db.transaction() as s:
            waiting = list(
                s.scalars(
                    select(Video.id).where(
                        Video.owner_id == user_id, Video.status.in_(("queued", "processing"))
                    )
                )
            )
        if waiting:
            from reelm.media.videos import enqueue

            for video_id in waiting:
                enqueue(self.platform, src.region, video_id)

    def _home(self, user_id: uuid.UUID) -> str | None:
        with self.platform.catalog.transaction() as c:
            entry = c.get(DirectoryEntry, user_id)
        return None if entry is None else entry.home_region

    def _remove_copy(self, src: Cell, user_id: uuid.UUID) -> None:
        """Remove this migration's copy of a user from the destination: only a copy that is
        not the user's data (``incoming``, or no account row), never a user who lives there."""
        dest = self.dest
        if self._home(user_id) == dest.region:
            log.error("user %s lives in %s: their data there is not a copy", user_id, dest.region)
            return
        with dest.db.transaction() as s:
            account = s.execute(
                select(Account.migration).where(Account.user_id == user_id).with_for_update()
            ).first()
            if account is not None and account[0] != "incoming":
                log.error("user %s has settled data in %s: not removed", user_id, dest.region)
                return
            uploads = dict.fromkeys(s.scalars(select(Upload.id).where(Upload.owner_id == user_id)))
            for moved in reversed(MOVED_TABLES):
                s.execute(delete(moved.table).where(moved.table.c[moved.user_column] == user_id))
        for key in _user_blob_keys(dest.blobs, user_id):
            dest.blobs.delete(key)
        for path in _staged_files(self.platform, dest.region, uploads):
            path.unlink(missing_ok=True)
        dest.keys.destroy_data_key(user_id)

    # -- switch ----------------------------------------------------------------------------
    def _switch(self, src: Cell, ids: list[uuid.UUID]) -> None:
        """The directory points to the destination (epoch raised), in the same catalog
        statement as the journal's 'switched': the destination commits what the source
        released at the freeze (reelm.migration.switch)."""
        if not ids:
            return
        with self.platform.catalog.transaction() as c:
            flipped = switch.switch_home(c, self.migration_id, ids)
        # The directory did not point to the source (changed by hand?): never purge those.
        for user_id in ids:
            if user_id not in flipped:
                self._give_up(src, user_id, "the directory entry no longer points to the source")

    def _activate(self, src: Cell, ids: list[uuid.UUID]) -> None:
        """After the switch: the destination's copy becomes the user's data (arrival logged
        once, with it), the source's refuses writes, waiting videos are queued."""
        digests_by_user = self._journal_digests(ids)
        with self.dest.db.transaction() as s:
            arrived = list(
                s.scalars(
                    update(Account)
                    .where(_among(Account.user_id, ids), Account.migration == "incoming")
                    .values(migration=None)
                    .returning(Account.user_id)
                )
            )
            for user_id in arrived:
                self.dest.log.append(
                    s,
                    "migration.arrived",
                    log_subject(s, self.dest.for_user(user_id, self.dest.region)),
                    {
                        "migration": str(self.migration_id),
                        "from": src.region,
                        "digest": digests_by_user.get(user_id, b"").hex(),
                    },
                )
            waiting = list(
                s.scalars(
                    # Every switched user's, not only those activated now: a crash after the
                    # activation committed must not leave a video waiting without a job (the
                    # queueing lock keeps it to one job per video).
                    select(Video.id).where(
                        _among(Video.owner_id, ids), Video.status.in_(("queued", "processing"))
                    )
                )
            )
        with src.db.transaction() as s:
            s.execute(
                update(Account)
                .where(_among(Account.user_id, ids), Account.migration.is_distinct_from("moved"))
                .values(migration="moved")
            )
        if waiting:
            from reelm.media.videos import enqueue

            for video_id in waiting:
                enqueue(self.platform, self.dest.region, video_id)
        self._finish_uploads(ids)

    def _finish_uploads(self, ids: list[uuid.UUID]) -> None:
        """Uploads whose every byte had arrived but whose finishing met the fence: a tus
        client that sees the upload complete does not ask again, so it is finished here."""
        from reelm.accounts.service import CurrentUser
        from reelm.media.errors import MediaRejected
        from reelm.media.videos import finish_upload

        with self.dest.db.transaction() as s:
            complete = list(
                s.execute(
                    select(Upload.id, Upload.owner_id, Account.market)
                    .join(Account, Account.user_id == Upload.owner_id)
                    .where(
                        _among(Upload.owner_id, ids),
                        Upload.video_id.is_(None),
                        Upload.offset == Upload.length,
                    )
                )
            )
        for upload_id, owner, market in complete:
            who = CurrentUser(owner, self.dest.region, market, "", b"")
            try:
                finish_upload(self.platform, who, upload_id)
            except MediaRejected:
                pass  # refused and discarded, as it would have been before the move
            except Exception:
                log.exception("upload %s could not be finished after the move", upload_id)

    def _journal_digests(self, ids: list[uuid.UUID]) -> dict[uuid.UUID, bytes]:
        with self.platform.catalog.transaction() as c:
            return {
                u: d
                for u, d in c.execute(
                    select(MigrationUser.user_id, MigrationUser.digest).where(
                        MigrationUser.migration_id == self.migration_id,
                        _among(MigrationUser.user_id, ids),
                    )
                )
                if d is not None
            }

    # -- purge -----------------------------------------------------------------------------
    def _purge(self, src: Cell, ids: list[uuid.UUID]) -> None:
        with src.db.transaction() as s:
            videos = list(s.scalars(select(Video.id).where(_among(Video.owner_id, ids))))
            uploads = list(s.scalars(select(Upload.id).where(_among(Upload.owner_id, ids))))
        self._purge_jobs(src, videos)
        with src.db.transaction() as s:
            # Notifications the users sent that wait behind another user's fence: sealed under
            # their key, destroyed below, so they could never be delivered (reelm.social.notify).
            s.execute(
                text(
                    "DELETE FROM procrastinate_jobs WHERE task_name = :task "
                    "AND args->>'actor' = ANY(:ids) AND status <> 'doing'"
                ),
                {"task": DELIVER_TASK, "ids": [str(u) for u in ids]},
            )
        for user_id in ids:
            for key in _user_blob_keys(src.blobs, user_id):
                src.blobs.delete(key)
        # Staged uploads, transcode sources and work directories, scratch files: named
        # "<id>.<suffix>" or ".<id>.<random>" (one listing of the directory per batch).
        staging = self.platform.settings.staging_dir(src.region)
        wanted = {str(item) for item in (*videos, *uploads)}
        if wanted and staging.exists():
            for entry in os.scandir(staging):
                if entry.name.lstrip(".").split(".", 1)[0] not in wanted:
                    continue
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    Path(entry.path).unlink(missing_ok=True)
        self.fault("after-purge-blobs")
        # The user's log keys moved with them: the destination names the departure, so it
        # is named even when the source's key was destroyed before a crash.
        with self.dest.db.transaction() as s:
            named = {
                user_id: subject_if_readable(s, self.dest.for_user(user_id, self.dest.region))
                for user_id in ids
            }
        destroyed = src.keys.destroy_data_keys(ids)
        self.fault("after-purge-keys")
        digests_by_user = self._journal_digests(ids)
        with src.db.transaction() as s:
            for moved in reversed(MOVED_TABLES[1:]):
                s.execute(delete(moved.table).where(_among(moved.table.c[moved.user_column], ids)))
            departed = list(
                s.scalars(
                    delete(Account).where(_among(Account.user_id, ids)).returning(Account.user_id)
                )
            )
            for user_id in departed:
                details = {
                    "migration": str(self.migration_id),
                    "to": self.dest.region,
                    "digest": digests_by_user.get(user_id, b"").hex(),
                }
                src.log.append(s, "migration.departed", named.get(user_id), details)
                src.log.append(
                    s, "key.destroyed", named.get(user_id), {"migration": str(self.migration_id)}
                )
        log.info(
            "purged %d moved users from %s (%d keys destroyed now)",
            len(ids),
            src.region,
            len(destroyed),
        )
        self._set_state(ids, "purged")
        self.outcome.moved += len(ids)
        self.fault("after-purge")

    def _purge_jobs(self, src: Cell, videos: list[uuid.UUID]) -> None:
        """Delete the source's jobs naming these videos. A job running one of them ends on its
        own (the fence stops it before it writes anything): it is waited for."""
        if not videos:
            return
        names = [str(v) for v in videos]
        deadline = time.monotonic() + RUNNING_JOB_WAIT
        while True:
            with src.db.transaction() as s:
                s.execute(
                    text(
                        "DELETE FROM procrastinate_jobs WHERE args->>'video_id' = ANY(:ids) "
                        "AND status <> 'doing'"
                    ),
                    {"ids": names},
                )
                running = s.scalar(
                    text(
                        "SELECT count(*) FROM procrastinate_jobs "
                        "WHERE args->>'video_id' = ANY(:ids)"
                    ),
                    {"ids": names},
                )
            if not running or time.monotonic() > deadline:
                if running:
                    log.warning("%d running jobs of moved videos left in %s", running, src.region)
                return
            time.sleep(0.5)

    # -- stragglers --------------------------------------------------------------------------
    def _adopt_stragglers(self) -> bool:
        assert self.migration.market is not None
        with self.platform.catalog.transaction() as c:
            known = set(
                c.scalars(
                    select(MigrationUser.user_id).where(
                        MigrationUser.migration_id == self.migration_id
                    )
                )
            )
        plan = make_plan(
            self.platform, self.dest.region, market=self.migration.market, exclude=known
        )
        if plan.user_count == 0:
            return False
        with self.platform.catalog.transaction() as c:
            _journal_users(c, self.migration_id, plan)
        return True

    # -- attest ----------------------------------------------------------------------------
    def _finish(self) -> None:
        from reelm.migration.report import build_report

        counts = self._counts()
        failed = counts.get("failed", 0)
        regions = {self.dest.region, *self._sources()}
        for region in regions:
            self.platform.cell(region).log.integrate_all()
        purged = self._users_in(("purged",))
        self._set_state(purged, "attested")
        # The moved users' blind indexes are in the sources' backups: retire the keys that
        # computed them (idempotent: a resumed run rotates again, harmlessly).
        for region in sorted(self._sources()):
            indexes.rotate(self.platform.cell(region))
        self.fault("before-report")
        self.outcome.failed.update(self._failures())
        self.outcome.report = build_report(self.platform, self.migration_id)
        self.fault("after-report")
        with self.platform.catalog.transaction() as c:
            c.execute(
                update(Migration)
                .where(Migration.id == self.migration_id)
                .values(
                    state="running" if failed else "done",
                    finished_at=None if failed else datetime.now(UTC),
                    report_sha256=bytes.fromhex(self.outcome.report["report_sha256"]),
                    report=self.outcome.report,
                )
            )

    def _sources(self) -> set[str]:
        with self.platform.catalog.transaction() as c:
            return set(
                c.scalars(
                    select(MigrationUser.source)
                    .where(MigrationUser.migration_id == self.migration_id)
                    .distinct()
                )
            )

    def _failures(self) -> dict[str, str]:
        with self.platform.catalog.transaction() as c:
            return {
                str(u): e or ""
                for u, e in c.execute(
                    select(MigrationUser.user_id, MigrationUser.error).where(
                        MigrationUser.migration_id == self.migration_id,
                        MigrationUser.state == "failed",
                    )
                )
            }


# ---- in the background (the operator API) ----------------------------------------------------

_background: dict[uuid.UUID, threading.Thread] = {}
_background_lock = threading.Lock()


def run_in_background(platform: Platform, migration_id: uuid.UUID) -> None:
    """Run (or resume) a migration in a thread of this process, unless one already does.
    A failure is logged; the journal keeps the state for a resume."""
    with _background_lock:
        running = _background.get(migration_id)
        if running is not None and running.is_alive():
            return

        def run() -> None:
            try:
                Runner(platform, migration_id).run(retry_failed=True)
            except Exception:
                log.exception("migration %s stopped; resume it to finish", migration_id)

        thread = threading.Thread(target=run, name=f"migration-{migration_id}", daemon=True)
        _background[migration_id] = thread
        thread.start()


def running_in_background(migration_id: uuid.UUID) -> bool:
    thread = _background.get(migration_id)
    return thread is not None and thread.is_alive()


# ---- status ---------------------------------------------------------------------------------


def running_migration(platform: Platform) -> uuid.UUID | None:
    with platform.catalog.transaction() as c:
        return c.scalar(
            select(Migration.id)
            .where(Migration.state == "running")
            .order_by(Migration.created_at.desc())
            .limit(1)
        )


def being_run(platform: Platform, migration_id: uuid.UUID) -> bool:
    """Whether a process holds the migration's run lock now."""
    params = {"space": RUN_LOCK_SPACE, "id": str(migration_id)}
    with platform.catalog.engine.connect() as conn:
        free = conn.scalar(text("SELECT pg_try_advisory_lock(:space, hashtext(:id))"), params)
        if free:
            conn.execute(text("SELECT pg_advisory_unlock(:space, hashtext(:id))"), params)
    return not free


def last_migration(platform: Platform) -> uuid.UUID | None:
    with platform.catalog.transaction() as c:
        return c.scalar(select(Migration.id).order_by(Migration.created_at.desc()).limit(1))


def status(platform: Platform, migration_id: uuid.UUID) -> dict[str, Any]:
    with platform.catalog.transaction() as c:
        migration = c.get(Migration, migration_id)
        if migration is None:
            raise NotFound(f"no migration {migration_id}")
        states = dict(
            c.execute(
                select(MigrationUser.state, func.count())
                .where(MigrationUser.migration_id == migration_id)
                .group_by(MigrationUser.state)
            ).all()
        )
        sources = dict(
            c.execute(
                select(MigrationUser.source, func.count())
                .where(MigrationUser.migration_id == migration_id)
                .group_by(MigrationUser.source)
            ).all()
        )
    return {
        "migration": str(migration.id),
        "market": migration.market,
        "destination": migration.destination,
        "state": migration.state,
        "created_at": migration.created_at.isoformat(),
        "finished_at": migration.finished_at.isoformat() if migration.finished_at else None,
        "users": states,
        "sources": sources,
        "plan": migration.plan,
        "report_sha256": migration.report_sha256.hex() if migration.report_sha256 else None,
    }


def overview(platform: Platform, limit: int = 50) -> list[dict[str, Any]]:
    """The latest migrations, for the public transparency page: market, regions, progress,
    state and the report's SHA-256 (random ids and counts only)."""
    with platform.catalog.transaction() as c:
        # Not the report itself (megabytes for a large migration): whether there is one.
        migrations = list(
            c.execute(
                select(
                    Migration.id,
                    Migration.market,
                    Migration.destination,
                    Migration.state,
                    Migration.created_at,
                    Migration.finished_at,
                    Migration.report_sha256,
                    Migration.report.is_not(None).label("has_report"),
                )
                .order_by(Migration.created_at.desc())
                .limit(limit)
            )
        )
        counts: dict[uuid.UUID, dict[str, int]] = {}
        sources: dict[uuid.UUID, set[str]] = {}
        if migrations:
            for mid, source, state, n in c.execute(
                select(
                    MigrationUser.migration_id,
                    MigrationUser.source,
                    MigrationUser.state,
                    func.count(),
                )
                .where(MigrationUser.migration_id.in_([m.id for m in migrations]))
                .group_by(MigrationUser.migration_id, MigrationUser.source, MigrationUser.state)
            ):
                by_state = counts.setdefault(mid, {})
                by_state[state] = by_state.get(state, 0) + n
                sources.setdefault(mid, set()).add(source)
    out = []
    for m in migrations:
        by_state = counts.get(m.id, {})
        total = sum(by_state.values())
        out.append(
            {
                "id": str(m.id),
                "market": m.market,
                "sources": sorted(sources.get(m.id, set())),
                "destination": m.destination,
                "state": m.state,
                "started_at": m.created_at,
                "finished_at": m.finished_at,
                "users": total,
                "moved": by_state.get("purged", 0) + by_state.get("attested", 0),
                "failed": by_state.get("failed", 0),
                "report_sha256": m.report_sha256.hex() if m.report_sha256 else None,
                "has_report": bool(m.has_report),
            }
        )
    return out


def stored_report(platform: Platform, migration_id: uuid.UUID) -> dict[str, Any]:
    with platform.catalog.transaction() as c:
        migration = c.get(Migration, migration_id)
    if migration is None or migration.report is None:
        raise NotFound("no report for this migration (yet)")
    return migration.report


def in_transit(platform: Platform) -> dict[str, tuple[str, str, str]]:
    """Users of running migrations not yet purged: user id -> (source, destination, state).
    residency-scan treats their copies as in transit, not as leaks."""
    with platform.catalog.transaction() as c:
        rows = c.execute(
            select(
                MigrationUser.user_id,
                MigrationUser.source,
                Migration.destination,
                MigrationUser.state,
            )
            .join(Migration, Migration.id == MigrationUser.migration_id)
            .where(
                Migration.state == "running",
                MigrationUser.state.in_((*BEFORE_SWITCH, "switched")),
            )
        ).all()
    return {str(u): (s, d, st) for u, s, d, st in rows}


__all__ = [
    "FAULT_ENV",
    "FAULT_POINTS",
    "Faults",
    "MigrationError",
    "Outcome",
    "Plan",
    "Runner",
    "in_transit",
    "make_plan",
    "running_migration",
    "start",
    "status",
]
