"""A region's transparency log: append events, integrate them into the Merkle tree, sign
checkpoints, and serve entries and proofs.

Appends are rows in ``tlog_queue`` written in the same transaction as the action they record,
so an action and its log event commit or fail together. One integrator at a time (a PostgreSQL
advisory lock, so several processes may run one) moves queued events into the tree in id order,
stores the new complete-subtree hashes, and signs a checkpoint: one total order per region.
"""

from __future__ import annotations

import base64
import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy import Connection, delete, func, insert, select, text
from sqlalchemy.orm import Session

from reelm.storage.db import Database
from reelm.transparency import merkle
from reelm.transparency.models import LogCheckpoint, LogEntry, LogQueue
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


def canonical_event(
    kind: str, region: str, subject: str | None, details: dict[str, Any], at: datetime | None = None
) -> bytes:
    """An entry: RFC 8785 canonical JSON. Subjects are random ids, never personal data."""
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
    def __init__(self, region: str, origin: str, db: Database, signing_seed: bytes) -> None:
        self.region = region
        self.origin = origin
        self.db = db
        self._signer = Ed25519PrivateKey.from_private_bytes(signing_seed)
        public = self._signer.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.verifier_key = VerifierKey(origin, public)
        self._known_size = 0

    # ---- appending ------------------------------------------------------------------------
    def append(
        self, session: Session, kind: str, subject: str | None, details: dict[str, Any]
    ) -> None:
        """Queue an event inside the caller's transaction (it commits with the action)."""
        entry = canonical_event(kind, self.region, subject, details)
        session.add(LogQueue(entry=entry, kind=kind, subject=subject))

    def append_now(self, kind: str, subject: str | None, details: dict[str, Any]) -> None:
        with self.db.transaction() as session:
            self.append(session, kind, subject, details)

    # ---- integrating ---------------------------------------------------------------------
    def integrate(self, max_batch: int = MAX_BATCH) -> int:
        """Move queued events into the tree and sign a checkpoint. Returns how many moved."""
        with self.db.engine.begin() as conn:
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": INTEGRATOR_LOCK})
            queued = conn.execute(
                select(LogQueue.id, LogQueue.entry, LogQueue.kind, LogQueue.subject)
                .order_by(LogQueue.id)
                .limit(max_batch)
            ).all()
            if not queued:
                return 0
            size = self._size(conn)
            leaves = [leaf_hash(row.entry) for row in queued]
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
        total = 0
        while moved := self.integrate():
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

    def entries_about(self, subject: str) -> list[LogEntry]:
        with self.db.sessions() as session:
            return list(
                session.scalars(
                    select(LogEntry).where(LogEntry.subject == subject).order_by(LogEntry.idx)
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
    """Integrates every region's queued events at least once a second, in a thread."""

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
                    tlog.integrate()
                except Exception:
                    log.exception("integrating the %s log failed; retrying", tlog.region)
            self._stop.wait(self.interval)
