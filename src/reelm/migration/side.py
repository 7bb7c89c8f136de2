"""What both sides of a migration do the same way, each in its own cell with its own keys:
read a user's rows, hash their blobs and staged uploads, and reduce it all to the canonical
document (``digest.py``) whose SHA-256 the two sides compare. Nothing here reaches past the
one cell it is given."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import select, text

from reelm.bootstrap import Platform
from reelm.media.serving import BlobFile
from reelm.migration import digest as digests
from reelm.migration.common import Fault, among, no_fault
from reelm.migration.messages import Digests, Fingerprint
from reelm.migration.tables import MOVED_TABLES, MovedTable
from reelm.regions.cell import Cell
from reelm.residency.readable import blob_name
from reelm.residency.readable import user_blob_keys as user_blob_keys
from reelm.storage.blobs import BlobStore
from reelm.storage.crypto import BLOB_CHUNK, UserCipher, decrypt_blob_range, plain_size

__all__ = ["blob_name", "user_blob_keys"]

# A user's rows as one cell holds them: table name -> rows (column -> value).
Tables = dict[str, list[dict[str, Any]]]


def plain_chunks(store: BlobStore, data_key: bytes, owner: uuid.UUID, key: str) -> Iterator[bytes]:
    sealed = BlobFile(store, key)
    total = sealed.size
    size = plain_size(total)
    for start in range(0, max(size, 1), BLOB_CHUNK * 16):
        yield decrypt_blob_range(
            data_key, owner, blob_name(key), sealed, total, start, start + BLOB_CHUNK * 16
        )


def blob_digest(store: BlobStore, data_key: bytes, owner: uuid.UUID, key: str) -> tuple[str, int]:
    sha, size = hashlib.sha256(), 0
    for piece in plain_chunks(store, data_key, owner, key):
        sha.update(piece)
        size += len(piece)
    return sha.hexdigest(), size


def staged_files(directory: Path, uploads: dict[uuid.UUID, uuid.UUID | None]) -> list[Path]:
    """The staged bytes of uploads that are not videos yet (upload id -> its video id): the
    ``<id>.part`` being written, or the ``<id>.src`` an upload being finished was renamed to
    (its bytes are nowhere else until the video's original is stored)."""
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


def file_digest(path: Path, length: int) -> tuple[str, int]:
    """SHA-256 of a staged upload's first ``length`` bytes (the ones its row accounts for:
    bytes past the recorded offset are an interrupted request's, and the client resends them)."""
    sha, size = hashlib.sha256(), 0
    with path.open("rb") as f:
        while size < length and (piece := f.read(min(1 << 20, length - size))):
            sha.update(piece)
            size += len(piece)
    return sha.hexdigest(), size


def read_rows(cell: Cell, ids: list[uuid.UUID]) -> dict[uuid.UUID, Tables]:
    """What one region holds of a batch of users: rows per user per table."""
    rows: dict[uuid.UUID, Tables] = {u: {m.name: [] for m in MOVED_TABLES} for u in ids}
    with cell.db.transaction() as s:
        for moved in MOVED_TABLES:
            table = moved.table
            order = list(table.primary_key.columns)
            for row in s.execute(
                select(table).where(among(table.c[moved.user_column], ids)).order_by(*order)
            ).mappings():
                rows[row[moved.user_column]][moved.name].append(dict(row))
    return rows


def document_rows(
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


def document(
    cell: Cell,
    staging: Path,
    user_id: uuid.UUID,
    rows: Tables | None,
    hashed: dict[str, tuple[str, int]] | None = None,
    tables: Tables | None = None,
) -> dict[str, Any]:
    """The user's canonical content as this cell holds it, read with this cell's keys.
    ``hashed``: blobs already hashed in full on this side (key -> SHA-256, size), and known
    unchanged since; every other blob is read and hashed now. ``tables``: the rows already
    decrypted on this side (the copy decrypts the source's anyway), instead of ``rows``."""
    data_key = cell.keys.data_key(user_id)
    if tables is None:
        assert rows is not None
        cipher = UserCipher(user_id, data_key)
        tables = {m.name: document_rows(m, rows[m.name], cipher) for m in MOVED_TABLES}
    blobs = {}
    for key in user_blob_keys(cell.blobs, user_id):
        known = (hashed or {}).get(key)
        sha, size = known if known is not None else blob_digest(cell.blobs, data_key, user_id, key)
        blobs[key] = {"sha256": sha, "size": size}
    offsets = {r["id"]: r["offset"] for r in tables["uploads"]}
    pending = {r["id"]: r["video_id"] for r in tables["uploads"]}
    staged = {}
    for path in staged_files(staging, pending):
        sha, size = file_digest(path, offsets[uuid.UUID(path.stem)])
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


def outline(doc: dict[str, Any]) -> dict[str, Any]:
    """The document with each table replaced by its digest: what a side sends for the other
    to compare with (``digest.differences`` names the same parts in it as in the document,
    and it carries no one's data)."""
    return {
        **doc,
        "tables": {
            name: digests.digest({"rows": rows}).hex() for name, rows in doc["tables"].items()
        },
    }


class CellSide:
    """One side of a migration: given a platform that holds its own region's cell only."""

    def __init__(self, platform: Platform, region: str, fault: Fault = no_fault) -> None:
        self.platform = platform
        self.cell = platform.cell(region)
        self.region = region
        self.fault = fault

    @property
    def staging(self) -> Path:
        return self.platform.settings.staging_dir(self.region)

    def log_started(self, migration_id: uuid.UUID, details: dict[str, Any]) -> None:
        log_started(self.cell, details)

    def integrate_log(self, migration_id: uuid.UUID) -> None:
        self.cell.log.integrate_all()


def log_started(cell: Cell, details: dict[str, Any]) -> None:
    """``migration.started`` in this cell's log, once (a crash between the journal's commit
    and the log's is made good by the next run)."""
    needle = str(details["migration"]).encode()
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


def fingerprint(
    out: Digests,
    cell: Cell,
    staging: Path,
    user_id: uuid.UUID,
    rows: Tables | None,
    hashed: dict[str, tuple[str, int]],
    tables: Tables | None = None,
) -> None:
    """This side's fingerprint of a user into ``out`` (or why it cannot be read)."""
    try:
        doc = document(cell, staging, user_id, rows, hashed, tables=tables)
    except Exception as exc:  # a blob that does not open, a key missing...
        out.failed[user_id] = f"could not read the copy: {type(exc).__name__}"
        return
    out.users[user_id] = Fingerprint.of(digests.digest(doc), outline(doc))
