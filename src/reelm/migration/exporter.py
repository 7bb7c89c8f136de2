"""The source cell's side of a migration: it reads the moving users' rows and blobs in its own
cell, decrypts them with its own keys, streams them to the destination's importer (through a
``Receiver``: in-process today, the inter-cell protocol between cell processes), computes its
side of the verification, and at the end purges the users and destroys their keys.

It is given a platform that holds its cell only (``transport.confined``): it can neither
read nor write another region, whatever its code does."""

from __future__ import annotations

import hashlib
import os
import shutil
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, select, text, update

from reelm.accounts import indexes
from reelm.accounts.models import Account
from reelm.bootstrap import Platform
from reelm.media.models import Upload, Video
from reelm.migration import switch
from reelm.migration.common import Fault, among, batches, log, no_fault
from reelm.migration.messages import (
    BlobCheck,
    Digests,
    ExportBatch,
    Receiver,
    Stamp,
    Survey,
)
from reelm.migration.side import (
    CellSide,
    Tables,
    fingerprint,
    plain_chunks,
    read_rows,
    staged_files,
    user_blob_keys,
)
from reelm.migration.tables import MOVED_TABLES, MovedTable
from reelm.social.notify import DELIVER_TASK
from reelm.storage.crypto import DecryptionFailed, UserCipher
from reelm.storage.keys import KeyDestroyed
from reelm.transparency.pseudonyms import Pseudonym

# How long the purge waits for a source job that is running a moved user's video to notice
# the fence and end.
RUNNING_JOB_WAIT = 30.0


class Exporter(CellSide):
    def __init__(self, platform: Platform, region: str, fault: Fault = no_fault) -> None:
        super().__init__(platform, region, fault)
        # The users' rows as decrypted for the copy (the frozen rows): the source's side of
        # the verification that follows, instead of reading and decrypting them again.
        self._docs: dict[uuid.UUID, Tables] = {}

    # -- plan ------------------------------------------------------------------------------
    def survey(
        self, market: str | None, user_ids: list[uuid.UUID] | None, exclude: list[uuid.UUID]
    ) -> Survey:
        """Who of this region would move (not moving already), and how much they hold."""
        query = select(Account.user_id).where(Account.migration.is_(None))
        if market is not None:
            query = query.where(Account.market == market)
        with self.cell.db.transaction() as s:
            if user_ids is not None:
                found: list[uuid.UUID] = []
                for chunk in batches(sorted(set(user_ids)), 5000):
                    found += s.scalars(query.where(among(Account.user_id, chunk)))
            else:
                found = list(s.scalars(query))
        skip = set(exclude)
        survey = Survey(sorted(u for u in found if u not in skip))
        if survey.users:
            self._measure(survey)
        return survey

    def _measure(self, survey: Survey) -> None:
        ids = survey.users
        with self.cell.db.transaction() as s:
            for moved in MOVED_TABLES:
                column = moved.table.c[moved.user_column]
                count = 0
                for chunk in batches(ids, 5000):
                    count += (
                        s.scalar(
                            select(func.count())
                            .select_from(moved.table)
                            .where(among(column, chunk))
                        )
                        or 0
                    )
                survey.rows[moved.name] = count
            for chunk in batches(ids, 5000):
                for original, renditions, visibility in s.execute(
                    select(Video.original_bytes, Video.renditions, Video.visibility).where(
                        among(Video.owner_id, chunk)
                    )
                ):
                    survey.bytes += original or 0
                    if visibility != "public":
                        survey.bytes += sum(int(r.get("bytes") or 0) for r in renditions or [])

    # -- before the copy -------------------------------------------------------------------
    def present(self, migration_id: uuid.UUID, user_ids: list[uuid.UUID]) -> list[uuid.UUID]:
        """The users whose account is still here (one whose deletion came due is not)."""
        with self.cell.db.transaction() as s:
            return list(s.scalars(select(Account.user_id).where(among(Account.user_id, user_ids))))

    def freeze(self, migration_id: uuid.UUID, user_ids: list[uuid.UUID]) -> None:
        """Writes of these users wait from now on (see reelm.regions.fence): lock the account
        rows (waiting for writes in flight to commit) and mark them frozen."""
        with self.cell.db.transaction() as s:
            s.execute(
                select(Account.user_id)
                .where(among(Account.user_id, user_ids))
                .order_by(Account.user_id)
                .with_for_update()
            )
            s.execute(
                update(Account)
                .where(among(Account.user_id, user_ids), Account.migration.is_(None))
                .values(migration="frozen")
            )
        # Their writes have stopped: the source lets them go at the directory's epoch now (the
        # destination commits the switch: reelm.migration.switch).
        with self.platform.catalog.transaction() as c:
            switch.release(c, migration_id, self.region, user_ids)

    # -- copy ------------------------------------------------------------------------------
    def export_batch(self, migration_id: uuid.UUID, user_ids: list[uuid.UUID]) -> ExportBatch:
        """The users' rows with their protected columns decrypted (blind indexes and lookups
        left out: the destination computes its own). A user whose data does not open (their
        key gone) is named in ``failed`` instead."""
        side = read_rows(self.cell, user_ids)
        batch = ExportBatch(migration_id)
        for user_id in user_ids:
            tables = side[user_id]
            if not tables["accounts"]:
                continue
            try:
                old = UserCipher(user_id, self.cell.keys.data_key(user_id))
                plain = {
                    moved.name: [_decrypt(moved, row, old) for row in tables[moved.name]]
                    for moved in MOVED_TABLES
                }
            except (KeyDestroyed, DecryptionFailed) as exc:
                batch.failed[user_id] = f"the source data does not open: {type(exc).__name__}"
                continue
            batch.users[user_id] = plain
            batch.counts[user_id] = sum(len(v) for v in tables.values())
            # The source's side of the verification: the frozen rows, decrypted with the
            # source key as they were read for the copy.
            self._docs[user_id] = {
                moved.name: [
                    {c: v for c, v in row.items() if c not in moved.local}
                    for row in plain[moved.name]
                ]
                for moved in MOVED_TABLES
            }
        return batch

    def blob_inventory(
        self, migration_id: uuid.UUID, user_ids: list[uuid.UUID]
    ) -> dict[uuid.UUID, dict[str, Stamp]]:
        """Each user's protected blobs here and their size and modification time (users
        without a data key have nothing readable to move, and are left out)."""
        out: dict[uuid.UUID, dict[str, Stamp]] = {}
        for user_id in user_ids:
            if not self.cell.keys.has_data_key(user_id):
                continue
            out[user_id] = {
                key: (self.cell.blobs.size(key), self.cell.blobs.modified(key))
                for key in user_blob_keys(self.cell.blobs, user_id)
            }
        return out

    def blob_stamps(self, migration_id: uuid.UUID, keys: list[str]) -> dict[str, Stamp]:
        return {key: (self.cell.blobs.size(key), self.cell.blobs.modified(key)) for key in keys}

    def send_blob(
        self, migration_id: uuid.UUID, user_id: uuid.UUID, key: str, to: Receiver
    ) -> BlobCheck:
        """Stream one blob's plaintext to the destination, hashing it on the way; the
        destination seals it under its own key and hashes what it reads back."""
        stamp = (self.cell.blobs.size(key), self.cell.blobs.modified(key))
        hashed = _Hashed(
            plain_chunks(self.cell.blobs, self.cell.keys.data_key(user_id), user_id, key)
        )
        dest_sha = to.receive_blob(migration_id, user_id, key, hashed)
        return BlobCheck(stamp, hashed.sha.hexdigest(), dest_sha, hashed.size)

    def send_staged(self, migration_id: uuid.UUID, user_ids: list[uuid.UUID], to: Receiver) -> None:
        """Uploads in progress: their bytes so far, so the upload resumes where it stopped."""
        with self.cell.db.transaction() as s:
            uploads = list(
                s.execute(
                    select(Upload.id, Upload.offset, Upload.video_id).where(
                        among(Upload.owner_id, user_ids)
                    )
                )
            )
        offsets = {r.id: r.offset for r in uploads}
        pending = {r.id: r.video_id for r in uploads}
        copied: list[str] = []
        for path in staged_files(self.staging, pending):
            if to.receive_staged(
                migration_id, path.name, _file_chunks(path, offsets[uuid.UUID(path.stem)])
            ):
                copied.append(path.name)
        to.tidy_staged(migration_id, pending, copied)

    # -- verify ----------------------------------------------------------------------------
    def digests(
        self,
        migration_id: uuid.UUID,
        user_ids: list[uuid.UUID],
        hashed: dict[str, tuple[str, int]],
    ) -> Digests:
        """The source's side of the verification, with the source's keys."""
        known = {u: self._docs.pop(u) for u in user_ids if u in self._docs}
        side = read_rows(self.cell, [u for u in user_ids if u not in known])
        out = Digests(migration_id)
        for user_id in user_ids:
            tables = known.get(user_id)
            if tables is None and not side[user_id]["accounts"]:
                out.failed[user_id] = "the account is gone from the source"
                continue
            fingerprint(out, self.cell, self.staging, user_id, side.get(user_id), hashed, tables)
        return out

    # -- after the switch, or when a user stays --------------------------------------------
    def thaw(self, migration_id: uuid.UUID, user_id: uuid.UUID) -> None:
        """The user stays here: writable again, and a job the fence stopped is made again."""
        # Taken back before the user may write again, so no writable user stays released.
        with self.platform.catalog.transaction() as c:
            switch.unrelease(c, migration_id, [user_id])
        with self.cell.db.transaction() as s:
            s.execute(
                update(Account)
                .where(Account.user_id == user_id, Account.migration == "frozen")
                .values(migration=None)
            )
        # A job the fence stopped left its video waiting: it is made here after all.
        with self.cell.db.transaction() as s:
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
                enqueue(self.platform, self.region, video_id)

    def mark_moved(self, migration_id: uuid.UUID, user_ids: list[uuid.UUID]) -> None:
        """The source's copy refuses writes and session reads from now on."""
        with self.cell.db.transaction() as s:
            s.execute(
                update(Account)
                .where(
                    among(Account.user_id, user_ids), Account.migration.is_distinct_from("moved")
                )
                .values(migration="moved")
            )

    # -- purge -----------------------------------------------------------------------------
    def purge_files(self, migration_id: uuid.UUID, user_ids: list[uuid.UUID]) -> None:
        """The moved users' jobs, held notifications, blobs and staged files."""
        cell = self.cell
        with cell.db.transaction() as s:
            videos = list(s.scalars(select(Video.id).where(among(Video.owner_id, user_ids))))
            uploads = list(s.scalars(select(Upload.id).where(among(Upload.owner_id, user_ids))))
        self._purge_jobs(videos)
        with cell.db.transaction() as s:
            # Notifications the users sent that wait behind another user's fence: sealed under
            # their key, destroyed below, so they could never be delivered (reelm.social.notify).
            s.execute(
                text(
                    "DELETE FROM procrastinate_jobs WHERE task_name = :task "
                    "AND args->>'actor' = ANY(:ids) AND status <> 'doing'"
                ),
                {"task": DELIVER_TASK, "ids": [str(u) for u in user_ids]},
            )
        for user_id in user_ids:
            for key in user_blob_keys(cell.blobs, user_id):
                cell.blobs.delete(key)
        # Staged uploads, transcode sources and work directories, scratch files: named
        # "<id>.<suffix>" or ".<id>.<random>" (one listing of the directory per batch).
        staging = self.staging
        wanted = {str(item) for item in (*videos, *uploads)}
        if wanted and staging.exists():
            for entry in os.scandir(staging):
                if entry.name.lstrip(".").split(".", 1)[0] not in wanted:
                    continue
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    Path(entry.path).unlink(missing_ok=True)

    def _purge_jobs(self, videos: list[uuid.UUID]) -> None:
        """Delete the source's jobs naming these videos. A job running one of them ends on its
        own (the fence stops it before it writes anything): it is waited for."""
        if not videos:
            return
        names = [str(v) for v in videos]
        deadline = time.monotonic() + RUNNING_JOB_WAIT
        while True:
            with self.cell.db.transaction() as s:
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
                    log.warning("%d running jobs of moved videos left in %s", running, self.region)
                return
            time.sleep(0.5)

    def destroy_keys(self, migration_id: uuid.UUID, user_ids: list[uuid.UUID]) -> list[uuid.UUID]:
        """Destroy the moved users' data keys here; returns those that still existed."""
        return self.cell.keys.destroy_data_keys(user_ids)

    def purge_rows(
        self,
        migration_id: uuid.UUID,
        user_ids: list[uuid.UUID],
        to: str,
        digests_by_user: dict[uuid.UUID, bytes],
        subjects: dict[uuid.UUID, bytes | None],
    ) -> None:
        """The moved users' rows, the departure and the key's destruction logged with them
        (named by the log keys the destination holds now: ``subjects``)."""
        named = {u: None if k is None else Pseudonym(k) for u, k in subjects.items()}
        with self.cell.db.transaction() as s:
            for moved in reversed(MOVED_TABLES[1:]):
                s.execute(
                    delete(moved.table).where(among(moved.table.c[moved.user_column], user_ids))
                )
            departed = list(
                s.scalars(
                    delete(Account)
                    .where(among(Account.user_id, user_ids))
                    .returning(Account.user_id)
                )
            )
            for user_id in departed:
                details = {
                    "migration": str(migration_id),
                    "to": to,
                    "digest": digests_by_user.get(user_id, b"").hex(),
                }
                self.cell.log.append(s, "migration.departed", named.get(user_id), details)
                self.cell.log.append(
                    s, "key.destroyed", named.get(user_id), {"migration": str(migration_id)}
                )

    # -- attest ----------------------------------------------------------------------------
    def rotate_index(self, migration_id: uuid.UUID) -> None:
        """The moved users' blind indexes are in this region's backups: retire the key that
        computed them (idempotent: a resumed run rotates again, harmlessly)."""
        indexes.rotate(self.cell)


class _Hashed:
    """An iterator over a blob's plaintext pieces that hashes and counts what it yields."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self.sha = hashlib.sha256()
        self.size = 0

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        piece = next(self._chunks)
        self.sha.update(piece)
        self.size += len(piece)
        return piece


def _decrypt(moved: MovedTable, row: dict[str, Any], old: UserCipher) -> dict[str, Any]:
    """A row as it travels: protected columns in the clear, blind indexes and lookups left
    out (the destination computes its own)."""
    out = {c: v for c, v in row.items() if c not in moved.indexes and c not in moved.lookups}
    for column, name in moved.encrypted.items():
        out[column] = old.decrypt_optional(name, row[column])
    return out


def _file_chunks(path: Path, length: int) -> Iterable[bytes]:
    """A staged upload's first ``length`` bytes (FileNotFoundError once iterated if it was
    renamed meanwhile)."""
    with path.open("rb") as f:
        remaining = length
        while remaining > 0 and (piece := f.read(min(1 << 20, remaining))):
            yield piece
            remaining -= len(piece)
