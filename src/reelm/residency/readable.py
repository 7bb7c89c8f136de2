"""Does every protected value of a region still open with its owner's current data key?

A value sealed under any other key is lost for good: nobody holds that key any more. That is
what a serving process did when it handed out a user's destroyed key after the user came back to
a region they had lived in before. The digests a migration compares are taken before the switch,
so they cannot see it. This check can: it opens every protected field of every row (the tables
and fields `migration.tables.MOVED_TABLES` names) and the first and last chunk of every
protected blob, using the keys the region holds now. `residency-scan` runs it over the whole
region, and a migration runs it on the users it moved, once they are purged from the source.
Nothing decrypted is kept or reported: only where a value does not open.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from sqlalchemy import select

from reelm.media.serving import BlobFile
from reelm.migration.tables import MOVED_TABLES
from reelm.regions.cell import Cell
from reelm.storage.blobs import BlobStore
from reelm.storage.crypto import DecryptionFailed, UserCipher, decrypt_blob_range, plain_size
from reelm.storage.keys import KeyDestroyed

# Protected blobs of a user: originals/<user>/<video>, private/<user>/<video>/<file>.
BLOB_PREFIXES = ("originals", "private")
ORIGINAL_NAME = "original"
# Users read per query.
BATCH = 500

# user id -> the places ("table.column", or a blob key) whose values do not open
Unreadable = dict[uuid.UUID, list[str]]


def blob_name(key: str) -> str:
    """The name a protected blob's chunks are bound to (their associated data)."""
    return ORIGINAL_NAME if key.startswith("originals/") else key.rsplit("/", 1)[-1]


def user_blob_keys(store: BlobStore, user_id: uuid.UUID) -> list[str]:
    keys: list[str] = []
    for prefix in BLOB_PREFIXES:
        keys += store.iter_keys(f"{prefix}/{user_id}/")
    return sorted(keys)


def _ciphers(cell: Cell, ids: list[uuid.UUID]) -> dict[uuid.UUID, UserCipher | None]:
    """Each user's cipher under the key the region holds now; None once it is destroyed (a
    user being deleted or moved away: their values are meant to be unreadable)."""
    out: dict[uuid.UUID, UserCipher | None] = {}
    for user_id in ids:
        try:
            out[user_id] = UserCipher(user_id, cell.keys.data_key(user_id))
        except KeyDestroyed:
            out[user_id] = None
    return out


def _rows(cell: Cell, ciphers: dict[uuid.UUID, UserCipher | None], found: Unreadable) -> None:
    ids = [u for u, c in ciphers.items() if c is not None]
    with cell.db.transaction() as s:
        for moved in MOVED_TABLES:
            table = moved.table
            columns = list(moved.encrypted)
            owner = table.c[moved.user_column]
            query = select(owner, *(table.c[c] for c in columns)).where(owner.in_(ids))
            for row in s.execute(query):
                cipher = ciphers[row[0]]
                assert cipher is not None
                for column, value in zip(columns, row[1:], strict=True):
                    try:
                        cipher.decrypt_optional(moved.encrypted[column], value)
                    except DecryptionFailed:
                        found.setdefault(row[0], []).append(f"{moved.name}.{column}")


def _blobs(cell: Cell, ciphers: dict[uuid.UUID, UserCipher | None], found: Unreadable) -> None:
    for user_id, cipher in ciphers.items():
        if cipher is None:
            continue
        data_key = cell.keys.data_key(user_id)
        for key in user_blob_keys(cell.blobs, user_id):
            sealed = BlobFile(cell.blobs, key)
            size = plain_size(sealed.size)
            try:
                # The first chunk, then the last (empty reads open it), so a blob sealed under
                # another key or cut short is caught without reading it all.
                decrypt_blob_range(data_key, user_id, blob_name(key), sealed, sealed.size, 0, 1)
                decrypt_blob_range(
                    data_key, user_id, blob_name(key), sealed, sealed.size, size, size
                )
            except DecryptionFailed:
                found.setdefault(user_id, []).append(key)


def unreadable(cell: Cell, user_ids: Iterable[uuid.UUID]) -> Unreadable:
    """The places of these users' protected values, in ``cell``, that their current data key
    does not open (users whose key is destroyed are skipped: unreadable on purpose)."""
    found: Unreadable = {}
    ids = list(user_ids)
    for start in range(0, len(ids), BATCH):
        ciphers = _ciphers(cell, ids[start : start + BATCH])
        _rows(cell, ciphers, found)
        _blobs(cell, ciphers, found)
    return found
