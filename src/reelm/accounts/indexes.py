"""Blind indexes of emails and phone numbers, under region index keys that rotate by epoch.

Log-in finds an account by its email, and sign-up refuses an email or phone already in use,
through a keyed HMAC of the normalised value (``storage.crypto.blind_index``). The key has to
be the region's, not the user's: a lookup starts from the address alone. But a region key that
lived as long as the region would let anyone holding an old database backup and that key
confirm a guessed address of a user deleted or moved since (the backup still holds the user's
index; crypto-shredding the data key does not reach it). So the key changes by *epoch*:

- every account row says under which epoch its indexes were computed (``index_epoch``, a
  foreign key to ``index_epochs``, which lists the live epochs); writes use the newest;
- ``rotate`` makes a new epoch, re-indexes every row under it (decrypting the email and phone
  with the user's data key; a user whose key is already destroyed gets an index that matches
  nothing), deletes the old epochs' rows (the foreign key refuses while any account still
  references one, so a write racing the rotation cannot be left behind), and then destroys the
  old keys. From then on no key the region holds matches an index in any earlier backup;
- lookups compute the value's index under every live epoch, and look again when the set of
  epochs changed while they looked (a row re-indexed meanwhile is then found under the new one).

Rotation runs after every purge that removed an account, after a migration's purges, and daily;
docs/residency.md says what window that leaves.
"""

from __future__ import annotations

import logging
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import ColumnElement, bindparam, delete, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from reelm.accounts.models import Account, IndexEpoch
from reelm.regions.cell import Cell
from reelm.storage.crypto import DecryptionFailed, UserCipher
from reelm.storage.db import RegionBase
from reelm.storage.keys import KEY_BYTES, LEGACY_INDEX_EPOCH, KeyDestroyed

log = logging.getLogger("reelm.accounts")

# pg_try_advisory_lock key of a region's rotation ("idxr"): one rotation at a time.
ROTATION_LOCK = 0x69647872
REINDEX_BATCH = 500
# Each attempt re-indexes the rows written under an old epoch since the last one; writes in
# flight at the rotation's start are few, so a second attempt nearly always retires.
RETIRE_ATTEMPTS = 20
_COLUMNS = {"email": Account.email_bidx, "phone": Account.phone_bidx}
_LOCK_CURRENT = text("SELECT epoch FROM index_epochs ORDER BY epoch DESC LIMIT 1 FOR KEY SHARE")


def live_epochs(session: Session) -> list[int]:
    return list(session.scalars(select(IndexEpoch.epoch).order_by(IndexEpoch.epoch)))


def current_epoch(session: Session, cell: Cell) -> int:
    """The newest epoch, its row locked until the transaction ends (a rotation cannot retire
    it under a write). A region without one makes epoch 1."""
    epoch = session.scalar(_LOCK_CURRENT)
    if epoch is None:
        cell.keys.create_index_key(LEGACY_INDEX_EPOCH + 1)
        session.execute(
            text("INSERT INTO index_epochs (epoch) VALUES (:e) ON CONFLICT DO NOTHING"),
            {"e": LEGACY_INDEX_EPOCH + 1},
        )
        epoch = session.scalar(_LOCK_CURRENT)
    return int(epoch)


@dataclass(frozen=True)
class Indexed:
    """An account's blind-index columns, as written now."""

    index_epoch: int
    email_bidx: bytes
    phone_bidx: bytes | None


def for_writing(session: Session, cell: Cell, email: str, phone: str | None) -> Indexed:
    """The indexes of a row written in ``session``'s transaction, under the current epoch."""
    epoch = current_epoch(session, cell)
    (email_bidx,) = cell.blind_indexes([epoch], "email", email)
    phone_bidx = cell.blind_indexes([epoch], "phone", phone)[0] if phone else None
    return Indexed(epoch, email_bidx, phone_bidx)


def find(
    session: Session, cell: Cell, field: str, value: str, *where: ColumnElement[bool]
) -> uuid.UUID | None:
    """The account of the region whose ``field`` is ``value``, under any live epoch."""
    column = _COLUMNS[field]
    epochs = live_epochs(session)
    while True:
        try:
            hashes = cell.blind_indexes(epochs, field, value, all_live=True)
        except KeyDestroyed:
            hashes = []  # retired and destroyed since we read the epochs: read them again
        if hashes:
            found = session.scalar(select(Account.user_id).where(column.in_(hashes), *where))
            if found is not None:
                return found
        # A rotation may have moved the row to a newer epoch while we looked: look again
        # under the epochs live now. Epochs only grow, so an unchanged set means not here.
        now = live_epochs(session)
        if now == epochs:
            return None
        epochs = now


# ---- rotation --------------------------------------------------------------------------------


@dataclass
class Rotation:
    region: str
    epoch: int  # the new epoch
    reindexed: int = 0
    shredded: int = 0  # rows whose data key was already gone: indexed to match nothing
    retired: list[int] = field(default_factory=list)
    destroyed: list[int] = field(default_factory=list)


def rotate(cell: Cell) -> Rotation | None:
    """Move every account of the region to a new index-key epoch and destroy the old keys.

    Returns None when there is nothing to rotate (no epoch yet) or another process is rotating
    the region now. Idempotent and safe to interrupt: a rerun finishes what a crash left."""
    with cell.db.engine.connect() as conn:
        if not conn.scalar(text("SELECT pg_try_advisory_lock(:k)"), {"k": ROTATION_LOCK}):
            return None
        try:
            return _rotate(cell)
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": ROTATION_LOCK})


def _rotate(cell: Cell) -> Rotation | None:
    with cell.db.transaction() as s:
        live = live_epochs(s)
    if not live:
        return None
    _destroy_retired_keys(cell, live)
    new = max(live) + 1
    cell.keys.create_index_key(new)  # the key first: a row naming the epoch has its key
    with cell.db.transaction() as s:
        s.execute(
            text("INSERT INTO index_epochs (epoch) VALUES (:e) ON CONFLICT DO NOTHING"),
            {"e": new},
        )
    rotation = Rotation(cell.region, new)
    for _ in range(RETIRE_ATTEMPTS):
        _reindex(cell, new, rotation)
        try:
            with cell.db.transaction() as s:
                rotation.retired = list(
                    s.scalars(
                        delete(IndexEpoch).where(IndexEpoch.epoch < new).returning(IndexEpoch.epoch)
                    )
                )
                cell.log.append(
                    s,
                    "index.rotated",
                    None,
                    {"epoch": new, "retired": rotation.retired, "reindexed": rotation.reindexed},
                )
            break
        except IntegrityError:
            continue  # a row was written under an old epoch meanwhile: index it too
    else:
        raise RuntimeError(f"{cell.region}: old index epochs still in use after rotating")
    rotation.destroyed = _destroy_retired_keys(cell, [new])
    log.info(
        "index keys of %s rotated to epoch %d: %d rows re-indexed, epochs %s destroyed",
        cell.region,
        new,
        rotation.reindexed,
        rotation.destroyed,
    )
    return rotation


def _destroy_retired_keys(cell: Cell, live: Sequence[int]) -> list[int]:
    """Destroy the keys of epochs older than the newest live one that are no longer live (a
    crash may have left one between retiring it and destroying it). A key newer than every
    live epoch is a rotation's next epoch, made before its row: it stays."""
    return [
        epoch
        for epoch in cell.keys.index_key_epochs()
        if epoch < max(live) and epoch not in live and cell.keys.destroy_index_key(epoch)
    ]


_TABLE = RegionBase.metadata.tables["accounts"]
_ACCOUNTS = _TABLE.c
_REINDEX = (
    update(_TABLE)
    .where(_ACCOUNTS.user_id == bindparam("u"), _ACCOUNTS.index_epoch < bindparam("new"))
    .values(email_bidx=bindparam("e"), phone_bidx=bindparam("p"), index_epoch=bindparam("new"))
)


def _reindex(cell: Cell, new: int, rotation: Rotation) -> None:
    after = uuid.UUID(int=0)
    while True:
        with cell.db.transaction() as s:
            rows = list(
                s.execute(
                    select(Account.user_id, Account.email_ct, Account.phone_ct)
                    .where(Account.index_epoch < new, Account.user_id > after)
                    .order_by(Account.user_id)
                    .limit(REINDEX_BATCH)
                )
            )
            if not rows:
                return
            changes = []
            for user_id, email_ct, phone_ct in rows:
                try:
                    cipher = UserCipher(user_id, cell.keys.data_key(user_id))
                    email = cipher.decrypt("email", email_ct)
                    phone = cipher.decrypt_optional("phone", phone_ct)
                except (KeyDestroyed, DecryptionFailed):
                    # Crypto-shredded, its rows not yet deleted (a purge under way): its
                    # index dies with its key instead of being carried to the new epoch.
                    rotation.shredded += 1
                    changes.append(
                        {"u": user_id, "e": secrets.token_bytes(KEY_BYTES), "p": None, "new": new}
                    )
                    continue
                (e,) = cell.blind_indexes([new], "email", email)
                p = cell.blind_indexes([new], "phone", phone)[0] if phone else None
                changes.append({"u": user_id, "e": e, "p": p, "new": new})
            s.connection().execute(_REINDEX, changes)
            rotation.reindexed += len(changes)
        after = rows[-1][0]
