"""A region's transparency log: append events, integrate them into the Merkle tree, sign
checkpoints, and serve entries and proofs.

Appends are rows in ``tlog_queue`` written in the same transaction as the action they record,
so an action and its log event commit or fail together. One integrator at a time (a PostgreSQL
advisory lock, so several processes may run one) moves queued events into the tree, stores the
new complete-subtree hashes, and signs a checkpoint: one total order per region.

Entries are published in batches: an entry's time is the start of its batch window
(``batch_seconds``, an hour by default), the scheduled integrator folds a window in only once
it has closed, and within a window entries go in the order of their leaf hashes. So neither an
entry's time nor its place in the log says more than "during that hour": a sign-up cannot be
tied to the profile that appeared a few milliseconds before it (docs/transparency.md).
"""

from __future__ import annotations

import base64
import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy import Connection, String, any_, bindparam, delete, func, insert, select, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from reelm.storage.db import Database
from reelm.transparency import merkle
from reelm.transparency.models import LogCheckpoint, LogEntry, LogQueue
from reelm.transparency.pseudonyms import Pseudonym, period_of
from reelm.transparency.verify import (
    Checkpoint,
    VerifierKey,
    key_id,
    leaf_hash,
)

log = logging.getLogger("reelm.transparency")

# pg_advisory_xact_lock key of the integrator ("tlog" in ASCII).
INTEGRATOR_LOCK = 0x746C6F67
_FETCH_NODES = text(
    "SELECT n.level, n.idx, n.hash FROM tlog_nodes n "
    "JOIN unnest(CAST(:levels AS smallint[]), CAST(:idxs AS bigint[])) AS w(level, idx) "
    "ON n.level = w.level AND n.idx = w.idx"
)
MAX_BATCH = 20_000
_NAMES = ARRAY(String(64))
# Default length of a batch window: entries say the hour they were written, no more.
BATCH_SECONDS = 3600
# A window is published this long after it closed, so that transactions still committing at
# the hour land in their own window's batch rather than alone after it.
PUBLISH_GRACE = timedelta(minutes=1)
# An entry about a user: a pseudonym (named per kind and period), a plain id, or no one.
Subject = Pseudonym | str | None


def window_start(moment: datetime, batch_seconds: int) -> datetime:
    """The start of the batch window holding ``moment`` (UTC)."""
    epoch = int(moment.timestamp())
    return datetime.fromtimestamp(epoch - epoch % max(batch_seconds, 1), UTC)


def canonical_event(
    kind: str, region: str, subject: str | None, details: dict[str, Any], at: datetime | None = None
) -> bytes:
    """An entry: RFC 8785 canonical JSON. Subjects are pseudonyms or random ids, never
    personal data."""
    moment = (at or datetime.now(UTC)).astimezone(UTC)
    event: Any = {
        "v": 1,
        "kind": kind,
        "time": moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "region": region,
        "subject": subject,
        "details": details,
    }
    return bytes(rfc8785.dumps(event))


@dataclass(frozen=True)
class SignedCheckpoint:
    size: int
    root: bytes
    note: str


class TransparencyLog:
    def __init__(
        self,
        region: str,
        origin: str,
        db: Database,
        signing_seed: bytes,
        batch_seconds: int = BATCH_SECONDS,
    ) -> None:
        self.region = region
        self.batch_seconds = batch_seconds
        self.origin = origin
        self.db = db
        self._signer = Ed25519PrivateKey.from_private_bytes(signing_seed)
        public = self._signer.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.verifier_key = VerifierKey(origin, public)
        self._known_size = 0

    # ---- appending ------------------------------------------------------------------------
    def append(
        self, session: Session, kind: str, subject: Subject, details: dict[str, Any]
    ) -> None:
        """Queue an event inside the caller's transaction (it commits with the action). Its
        time is its batch window's start; a pseudonym is named for the kind and that time."""
        at = window_start(datetime.now(UTC), self.batch_seconds)
        name = subject.name(kind, period_of(at)) if isinstance(subject, Pseudonym) else subject
        entry = canonical_event(kind, self.region, name, details, at)
        session.add(LogQueue(entry=entry, kind=kind, subject=name, batch_at=at))

    def append_now(self, kind: str, subject: Subject, details: dict[str, Any]) -> None:
        with self.db.transaction() as session:
            self.append(session, kind, subject, details)

    # ---- integrating ---------------------------------------------------------------------
    def integrate(self, max_batch: int = MAX_BATCH, closed_before: datetime | None = None) -> int:
        """Move queued events into the tree and sign a checkpoint. Returns how many moved.
        ``closed_before``: only events of batch windows that started before it (the scheduled
        integrator passes the current window's start); None: everything queued (tests, and a
        migration report that must prove its anchor at once)."""
        with self.db.engine.begin() as conn:
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": INTEGRATOR_LOCK})
            query = select(
                LogQueue.id, LogQueue.entry, LogQueue.kind, LogQueue.subject, LogQueue.batch_at
            )
            if closed_before is not None:
                query = query.where(LogQueue.batch_at < closed_before)
            picked = conn.execute(
                query.order_by(LogQueue.batch_at, LogQueue.id).limit(max_batch)
            ).all()
            if not picked:
                return 0
            # Within a window, the order of the leaf hashes: it says nothing of who came first.
            queued = sorted(picked, key=lambda r: (r.batch_at, leaf_hash(r.entry), r.id))
            leaves = [leaf_hash(row.entry) for row in queued]
            size = self._size(conn)
            old = self._fetch(
                conn, merkle.needed_nodes(lambda lookup: merkle.new_nodes(size, leaves, lookup))
            )
            made = merkle.new_nodes(size, leaves, merkle.with_nodes(old))
            # COPY, not INSERT: integration writes ~3 rows per entry and must keep up with
            # thousands of appends a second.
            raw = conn.connection.driver_connection
            if raw is None:
                raise RuntimeError("integration needs a live psycopg connection")
            with raw.cursor() as cur:
                with cur.copy(
                    "COPY tlog_entries (idx, leaf_hash, entry, kind, subject) FROM STDIN"
                ) as copy:
                    for i, row in enumerate(queued):
                        copy.write_row((size + i, leaves[i], row.entry, row.kind, row.subject))
                with cur.copy("COPY tlog_nodes (level, idx, hash) FROM STDIN") as copy:
                    for (lv, ix), h in made.items():
                        copy.write_row((lv, ix, h))
            conn.execute(delete(LogQueue).where(LogQueue.id.in_([row.id for row in queued])))
            new_size = size + len(queued)
            edges = {**old, **made}
            missing = [n for n in merkle.edge_nodes(new_size) if n not in edges]
            edges.update(self._fetch(conn, missing))
            root = merkle.range_hash(0, new_size, merkle.with_nodes(edges))
            note = self.sign(Checkpoint(self.origin, new_size, root))
            conn.execute(insert(LogCheckpoint).values(size=new_size, root=root, note=note))
        return len(queued)

    def integrate_all(self) -> int:
        """Everything queued, the open window included."""
        return self._drain(None)

    def integrate_closed(self, now: datetime | None = None) -> int:
        """What the scheduled integrator does: fold in every batch window that has closed
        (``PUBLISH_GRACE`` ago)."""
        moment = (now or datetime.now(UTC)) - PUBLISH_GRACE
        return self._drain(window_start(moment, self.batch_seconds))

    def _drain(self, closed_before: datetime | None) -> int:
        total = 0
        while moved := self.integrate(closed_before=closed_before):
            total += moved
        return total

    def sign(self, checkpoint: Checkpoint) -> str:
        """A C2SP signed note: body, blank line, '— <name> base64(key id || signature)'."""
        body = checkpoint.body()
        signature = self._signer.sign(body)
        kid = key_id(self.origin, self.verifier_key.public_key)
        line = f"\u2014 {self.origin} {base64.b64encode(kid + signature).decode()}\n"
        return body.decode() + "\n" + line

    def sign_document(self, prefix: bytes, digest: bytes) -> bytes:
        """Sign another document's digest (a migration report) with the log's key. The
        prefix names the kind of document, so such a signature never reads as a checkpoint's
        (a checkpoint body starts with the log's origin line, never with a prefix)."""
        assert prefix.endswith(b"\n") and not prefix.startswith(self.origin.encode())
        return self._signer.sign(prefix + digest)

    # ---- reading -------------------------------------------------------------------------
    def _size(self, conn: Connection) -> int:
        return int(conn.scalar(select(func.coalesce(func.max(LogCheckpoint.size), 0))) or 0)

    def _fetch(self, conn: Connection, nodes: Iterable[merkle.Node]) -> dict[merkle.Node, bytes]:
        wanted = sorted(set(nodes))
        if not wanted:
            return {}
        # One statement text whatever the number of nodes, so the server can reuse its plan.
        rows = conn.execute(
            _FETCH_NODES,
            {"levels": [lv for lv, _ in wanted], "idxs": [ix for _, ix in wanted]},
        ).all()
        found = {(r.level, r.idx): r.hash for r in rows}
        if len(found) != len(wanted):
            raise LookupError("the log is missing tree nodes it needs")
        return found

    def latest(self) -> SignedCheckpoint | None:
        with self.db.engine.connect() as conn:
            row = conn.execute(
                select(LogCheckpoint).order_by(LogCheckpoint.size.desc()).limit(1)
            ).first()
        return None if row is None else SignedCheckpoint(row.size, row.root, row.note)

    def checkpoint_at(self, size: int) -> SignedCheckpoint | None:
        with self.db.engine.connect() as conn:
            row = conn.execute(select(LogCheckpoint).where(LogCheckpoint.size == size)).first()
        return None if row is None else SignedCheckpoint(row.size, row.root, row.note)

    def _tree_size(self, at_least: int = 0) -> int:
        """The newest checkpoint's size; cached, since a log only grows."""
        if at_least and at_least <= self._known_size:
            return self._known_size
        with self.db.engine.connect() as conn:
            self._known_size = max(self._known_size, self._size(conn))
        return self._known_size

    def inclusion_proof(self, index: int, size: int | None = None) -> tuple[int, list[bytes]]:
        tree = self._tree_size() if size is None else size
        if not 0 <= index < tree or tree > self._tree_size(at_least=tree):
            raise ValueError(f"no entry {index} in a tree of size {tree}")
        with self.db.engine.connect() as conn:
            nodes = self._fetch(
                conn, merkle.needed_nodes(lambda lk: merkle.inclusion_path(index, tree, lk))
            )
        return tree, merkle.inclusion_path(index, tree, merkle.with_nodes(nodes))

    def consistency_proof(self, size1: int, size2: int) -> list[bytes]:
        if not 0 <= size1 <= size2 <= self._tree_size(at_least=size2):
            raise ValueError(f"no consistency proof from {size1} to {size2}")
        with self.db.engine.connect() as conn:
            nodes = self._fetch(
                conn, merkle.needed_nodes(lambda lk: merkle.consistency_path(size1, size2, lk))
            )
        return merkle.consistency_path(size1, size2, merkle.with_nodes(nodes))

    def index_of(self, leaf: bytes) -> int | None:
        with self.db.engine.connect() as conn:
            found = conn.scalar(select(func.min(LogEntry.idx)).where(LogEntry.leaf_hash == leaf))
        return None if found is None else int(found)

    def entries(self, start: int, end: int) -> list[LogEntry]:
        with self.db.sessions() as session:
            return list(
                session.scalars(
                    select(LogEntry)
                    .where(LogEntry.idx >= start, LogEntry.idx < end)
                    .order_by(LogEntry.idx)
                )
            )

    def entries_about(self, subject: str | Iterable[str]) -> list[LogEntry]:
        """Entries whose subject is one of these names (a user's pseudonyms, or an id)."""
        names = [subject] if isinstance(subject, str) else list(subject)
        with self.db.sessions() as session:
            return list(
                session.scalars(
                    select(LogEntry)
                    .where(LogEntry.subject == any_(bindparam("names", names, type_=_NAMES)))
                    .order_by(LogEntry.idx)
                )
            )

    def queued_about(self, names: Iterable[str]) -> list[LogQueue]:
        """Events about these names still waiting for their batch window to close."""
        with self.db.sessions() as session:
            return list(
                session.scalars(
                    select(LogQueue)
                    .where(LogQueue.subject == any_(bindparam("names", list(names), type_=_NAMES)))
                    .order_by(LogQueue.id)
                )
            )

    def entries_of_kind(self, kind: str, size: int, limit: int) -> list[LogEntry]:
        """The newest ``limit`` entries of this kind among the first ``size``, newest first."""
        with self.db.sessions() as session:
            return list(
                session.scalars(
                    select(LogEntry)
                    .where(LogEntry.kind == kind, LogEntry.idx < size)
                    .order_by(LogEntry.idx.desc())
                    .limit(limit)
                )
            )

    def counts(self, size: int) -> dict[str, int]:
        with self.db.engine.connect() as conn:
            rows = conn.execute(
                select(LogEntry.kind, func.count())
                .where(LogEntry.idx < size)
                .group_by(LogEntry.kind)
            ).all()
        return {kind: int(n) for kind, n in rows}

    def staff_reads_by_reason(self, size: int) -> dict[str, int]:
        with self.db.engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT convert_from(entry, 'UTF8')::jsonb #>> '{details,reason_code}' AS r, "
                    "count(*) FROM tlog_entries WHERE kind = 'staff.read' AND idx < :size "
                    "GROUP BY r"
                ),
                {"size": size},
            ).all()
        return {str(r): int(n) for r, n in rows}


class Integrator:
    """Integrates every region's closed batch windows, polling every ``interval`` seconds, in a
    thread."""

    def __init__(self, logs: Iterable[TransparencyLog], interval: float = 0.2) -> None:
        self.logs = list(logs)
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tlog-integrator", daemon=True)

    def start(self) -> Integrator:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            for tlog in self.logs:
                try:
                    tlog.integrate_closed()
                except Exception:
                    log.exception("integrating the %s log failed; retrying", tlog.region)
            self._stop.wait(self.interval)
