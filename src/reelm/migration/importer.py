"""The destination cell's side of a migration: it receives the moving users' rows and blobs
in the clear from the source's exporter, seals them under each user's new data key (wrapped
by its own master key), recomputes the blind indexes with its own index key, computes its
side of the verification, and after the switch makes the copy the users' data.

Everything it writes waits as ``incoming`` (no one reads it: the directory still points to
the source) and is written idempotently: the rows of a batch replace any earlier copy, a blob
received again replaces the earlier one. It is given a platform that holds its cell only
(``transport.confined``)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import LargeBinary, any_, bindparam, delete, insert, or_, select, update
from sqlalchemy.dialects.postgresql import ARRAY

from reelm.accounts import indexes
from reelm.accounts.logsubject import subject as log_subject
from reelm.accounts.logsubject import subject_if_readable
from reelm.accounts.models import Account
from reelm.bootstrap import Platform
from reelm.media.models import Upload, Video
from reelm.migration.common import Fault, among, batches, log, no_fault
from reelm.migration.messages import Digests, ExportBatch, ImportReceipt
from reelm.migration.side import (
    CellSide,
    blob_digest,
    blob_name,
    fingerprint,
    read_rows,
    staged_files,
    user_blob_keys,
)
from reelm.migration.tables import MOVED_TABLES, MovedTable
from reelm.residency import readable
from reelm.storage.crypto import DecryptionFailed, UserCipher, encrypt_blob
from reelm.storage.keys import KeyDestroyed


class Importer(CellSide):
    def __init__(self, platform: Platform, region: str, fault: Fault = no_fault) -> None:
        super().__init__(platform, region, fault)
        self._epoch = 0  # this region's index epoch for the batch being imported

    # -- before the copy -------------------------------------------------------------------
    def sweep_scratch(self, migration_id: uuid.UUID) -> None:
        """Temporary files an interrupted run left in the staging area."""
        if self.staging.exists():
            for path in self.staging.glob(".migration.*"):
                path.unlink(missing_ok=True)

    def create_keys(self, migration_id: uuid.UUID, user_ids: list[uuid.UUID]) -> None:
        """The users' new data keys, wrapped by this region's master key, made durable
        together (one file system flush instead of one fsync per user)."""
        self.cell.keys.create_data_keys(user_ids)

    # -- blobs and staged files (a Receiver) -----------------------------------------------
    def held_blobs(
        self, migration_id: uuid.UUID, user_ids: list[uuid.UUID]
    ) -> dict[uuid.UUID, list[str]]:
        return {u: list(user_blob_keys(self.cell.blobs, u)) for u in user_ids}

    def receive_blob(
        self, migration_id: uuid.UUID, user_id: uuid.UUID, key: str, chunks: Iterable[bytes]
    ) -> str:
        new_key = self.cell.keys.create_data_key(user_id)
        plain = _Plain(iter(chunks))
        scratch = self._scratch()
        try:
            with scratch.open("wb") as sealed:
                encrypt_blob(new_key, user_id, blob_name(key), plain, sealed)  # type: ignore[arg-type]
            self.cell.blobs.put_file(key, scratch)
        finally:
            scratch.unlink(missing_ok=True)
        dest_sha, _ = blob_digest(self.cell.blobs, new_key, user_id, key)
        return dest_sha

    def prune_blobs(self, migration_id: uuid.UUID, user_id: uuid.UUID, keep: list[str]) -> None:
        """The destination keeps exactly the source's blobs (``keep``)."""
        wanted = set(keep)
        for key in user_blob_keys(self.cell.blobs, user_id):
            if key not in wanted:
                self.cell.blobs.delete(key)

    def _scratch(self) -> Path:
        self.staging.mkdir(parents=True, exist_ok=True, mode=0o700)
        return self.staging / f".migration.{uuid.uuid4().hex}"

    def receive_staged(self, migration_id: uuid.UUID, name: str, chunks: Iterable[bytes]) -> bool:
        partial = self._scratch()
        try:
            with partial.open("wb") as out:
                os.chmod(partial, 0o600)
                for piece in chunks:
                    out.write(piece)
                out.flush()
                os.fsync(out.fileno())
        except FileNotFoundError:
            # Renamed under us (.part -> .src by an upload being finished): the
            # verification sees the difference and the second pass copies the new name.
            partial.unlink(missing_ok=True)
            return False
        partial.replace(self.staging / name)
        return True

    def tidy_staged(
        self,
        migration_id: uuid.UUID,
        pending: dict[uuid.UUID, uuid.UUID | None],
        copied: list[str],
    ) -> None:
        # A name the source no longer has (an earlier pass copied the .part of what is now
        # a .src) must not linger in the destination.
        for upload_id in pending:
            for suffix in (".part", ".src"):
                name = f"{upload_id}{suffix}"
                if name not in copied and pending[upload_id] is None:
                    (self.staging / name).unlink(missing_ok=True)

    # -- rows ------------------------------------------------------------------------------
    def import_batch(
        self, migration_id: uuid.UUID, user_ids: list[uuid.UUID], batch: ExportBatch
    ) -> ImportReceipt:
        """Replace this region's copy of the batch's users (``user_ids``) with the rows
        received, sealed under their new keys. A user whose email or phone an account of this
        region already has is refused (named in the receipt's ``failed``)."""
        # This region's current index-key epoch: the copies' blind indexes are its. (A
        # rotation here retiring it before the insert below makes the insert fail on the
        # epoch's foreign key, and the batch is done again on resume.)
        with self.cell.db.transaction() as s:
            self._epoch = indexes.current_epoch(s, self.cell)
        receipt = ImportReceipt(migration_id)
        rows: dict[uuid.UUID, dict[str, list[dict[str, Any]]]] = {}
        for user_id, tables in batch.users.items():
            try:
                new = UserCipher(user_id, self.cell.keys.create_data_key(user_id))
                rows[user_id] = {
                    moved.name: [self._seal(moved, row, new) for row in tables[moved.name]]
                    for moved in MOVED_TABLES
                }
            except (KeyDestroyed, DecryptionFailed) as exc:
                receipt.failed[user_id] = f"the source data does not open: {type(exc).__name__}"
        receipt.failed.update(self._index_clashes(user_ids, batch, rows))
        for user_id in receipt.failed:
            rows.pop(user_id, None)
        out = {
            m.name: [r for copies in rows.values() for r in copies[m.name]] for m in MOVED_TABLES
        }
        with self.cell.db.transaction() as s:
            for moved in reversed(MOVED_TABLES):
                s.execute(
                    delete(moved.table).where(among(moved.table.c[moved.user_column], user_ids))
                )
            for moved in MOVED_TABLES:
                for chunk in batches(out[moved.name], 1000):
                    s.execute(insert(moved.table), chunk)
        receipt.imported = list(rows)
        self.fault("after-import")
        return receipt

    def _seal(self, moved: MovedTable, row: dict[str, Any], new: UserCipher) -> dict[str, Any]:
        """The row for this region: protected columns sealed under the new key, blind indexes
        and lookups computed here, the fence column saying ``incoming``."""
        copy = dict(row)
        for column, name in moved.encrypted.items():
            copy[column] = new.encrypt_optional(name, row[column])
        for column, source in moved.indexes.items():
            value = row[source]
            copy[column] = (
                None
                if value is None
                else self.cell.blind_indexes([self._epoch], moved.encrypted[source], value)[0]
            )
        for column, source in moved.lookups.items():
            copy[column] = new.lookup(moved.encrypted[source], row[source] or "")
        if "migration" in moved.local:
            copy["migration"] = "incoming"
        if "index_epoch" in moved.local:
            copy["index_epoch"] = self._epoch
        return copy

    def _index_clashes(
        self,
        ids: list[uuid.UUID],
        batch: ExportBatch,
        rows: dict[uuid.UUID, dict[str, list[dict[str, Any]]]],
    ) -> dict[uuid.UUID, str]:
        """Users whose email or phone an account of this region already has (emails are
        unique across regions at sign-up; phone numbers only within a region), under any of
        this region's live index epochs."""
        wanted: dict[bytes, uuid.UUID] = {}
        with self.cell.db.transaction() as s:
            epochs = indexes.live_epochs(s)
        for user_id in rows:
            for account in batch.users[user_id]["accounts"]:
                for column, name in (("email_ct", "email"), ("phone_ct", "phone")):
                    if account[column] is not None:
                        for bidx in self.cell.blind_indexes(epochs, name, account[column]):
                            wanted[bidx] = user_id
        if not wanted:
            return {}
        with self.cell.db.transaction() as s:
            taken = s.execute(
                select(Account.email_bidx, Account.phone_bidx).where(
                    ~among(Account.user_id, ids),
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

    # -- verify ----------------------------------------------------------------------------
    def digests(
        self,
        migration_id: uuid.UUID,
        user_ids: list[uuid.UUID],
        hashed: dict[str, tuple[str, int]],
    ) -> Digests:
        """This side's fingerprints of the copies, read back with this region's keys."""
        side = read_rows(self.cell, user_ids)
        out = Digests(migration_id)
        for user_id in user_ids:
            fingerprint(out, self.cell, self.staging, user_id, side[user_id], hashed)
        return out

    def remove_copy(self, migration_id: uuid.UUID, user_id: uuid.UUID) -> None:
        """Remove this migration's copy of a user: only a copy that is not the user's data
        (``incoming``, or no account row), never a user who lives here."""
        with self.cell.db.transaction() as s:
            account = s.execute(
                select(Account.migration).where(Account.user_id == user_id).with_for_update()
            ).first()
            if account is not None and account[0] != "incoming":
                log.error("user %s has settled data in %s: not removed", user_id, self.region)
                return
            uploads = dict.fromkeys(s.scalars(select(Upload.id).where(Upload.owner_id == user_id)))
            for moved in reversed(MOVED_TABLES):
                s.execute(delete(moved.table).where(moved.table.c[moved.user_column] == user_id))
        for key in user_blob_keys(self.cell.blobs, user_id):
            self.cell.blobs.delete(key)
        for path in staged_files(self.staging, uploads):
            path.unlink(missing_ok=True)
        self.cell.keys.destroy_data_key(user_id)

    # -- after the switch ------------------------------------------------------------------
    def activate(
        self,
        migration_id: uuid.UUID,
        user_ids: list[uuid.UUID],
        source: str,
        digests_by_user: dict[uuid.UUID, bytes],
    ) -> None:
        """The copy becomes the users' data (arrival logged once, with it)."""
        cell = self.cell
        with cell.db.transaction() as s:
            arrived = list(
                s.scalars(
                    update(Account)
                    .where(among(Account.user_id, user_ids), Account.migration == "incoming")
                    .values(migration=None)
                    .returning(Account.user_id)
                )
            )
            for user_id in arrived:
                cell.log.append(
                    s,
                    "migration.arrived",
                    log_subject(s, cell.for_user(user_id, self.region)),
                    {
                        "migration": str(migration_id),
                        "from": source,
                        "digest": digests_by_user.get(user_id, b"").hex(),
                    },
                )

    def resume_work(self, migration_id: uuid.UUID, user_ids: list[uuid.UUID]) -> None:
        """Queue the videos waiting for processing, finish uploads whose finishing met the
        fence."""
        with self.cell.db.transaction() as s:
            waiting = list(
                s.scalars(
                    # Every switched user's, not only those activated now: a crash after the
                    # activation committed must not leave a video waiting without a job (the
                    # queueing lock keeps it to one job per video).
                    select(Video.id).where(
                        among(Video.owner_id, user_ids),
                        Video.status.in_(("queued", "processing")),
                    )
                )
            )
        if waiting:
            from reelm.media.videos import enqueue

            for video_id in waiting:
                enqueue(self.platform, self.region, video_id)
        self._finish_uploads(user_ids)

    def _finish_uploads(self, ids: list[uuid.UUID]) -> None:
        """Uploads whose every byte had arrived but whose finishing met the fence: a tus
        client that sees the upload complete does not ask again, so it is finished here."""
        from reelm.accounts.service import CurrentUser
        from reelm.media.errors import MediaRejected
        from reelm.media.videos import finish_upload

        with self.cell.db.transaction() as s:
            complete = list(
                s.execute(
                    select(Upload.id, Upload.owner_id, Account.market)
                    .join(Account, Account.user_id == Upload.owner_id)
                    .where(
                        among(Upload.owner_id, ids),
                        Upload.video_id.is_(None),
                        Upload.offset == Upload.length,
                    )
                )
            )
        for upload_id, owner, market in complete:
            who = CurrentUser(owner, self.region, market, "", b"")
            try:
                finish_upload(self.platform, who, upload_id)
            except MediaRejected:
                pass  # refused and discarded, as it would have been before the move
            except Exception:
                log.exception("upload %s could not be finished after the move", upload_id)

    def subjects(
        self, migration_id: uuid.UUID, user_ids: list[uuid.UUID]
    ) -> dict[uuid.UUID, bytes | None]:
        """The users' log keys moved with them: the source names the departure with them
        (even when the source's key was destroyed before a crash)."""
        with self.cell.db.transaction() as s:
            named = {
                user_id: subject_if_readable(s, self.cell.for_user(user_id, self.region))
                for user_id in user_ids
            }
        return {u: None if p is None else p.key for u, p in named.items()}

    def unreadable(
        self, migration_id: uuid.UUID, user_ids: list[uuid.UUID]
    ) -> dict[uuid.UUID, list[str]]:
        return dict(readable.unreadable(self.cell, user_ids))


class _Plain:
    """A file-like view of the received plaintext for encrypt_blob (reads in pieces)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = b""

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._buffer) < size:
            piece = next(self._chunks, None)
            if piece is None:
                break
            self._buffer += piece
        out, self._buffer = (
            (self._buffer, b"") if size < 0 else (self._buffer[:size], self._buffer[size:])
        )
        return out
