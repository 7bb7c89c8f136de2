"""Moving users between regions: plan -> copy -> verify -> switch -> purge -> attest.

Users move in batches (all users of a batch share one source region). Every step is
idempotent and journaled in the catalog (``migration_users.state``); a run killed at any
moment is finished by running it again (``resume``). The coordinator holds the journal and
the directory (both in the catalog) and no region's data: it drives the source cell's
exporter and the destination cell's importer through a ``Transport`` (``transport.py``),
and neither side ever holds the other's keys or database.

- **copy**: the user's blobs first, while the user keeps using the app (pre-copy); then the
  user is *frozen* in the source (``reelm.regions.fence``: writes wait), every row is
  exported (protected columns decrypted with the source key) and imported (encrypted with a
  new data key wrapped by the destination's master key; blind indexes recomputed with the
  destination's index key), and blobs added or changed since the pre-copy are copied too.
  The copy waits in the destination as ``incoming`` (no one reads it: the directory still
  points to the source).
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
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, select, text, update

from reelm.accounts.errors import NotFound
from reelm.bootstrap import Platform
from reelm.migration import digest as digests
from reelm.migration import switch
from reelm.migration.common import (
    BEFORE_SWITCH,
    DEFAULT_BATCH,
    RUN_LOCK_SPACE,
    Faults,
    MigrationError,
    among,
    log,
)
from reelm.migration.journal import Journal
from reelm.migration.messages import BlobCheck
from reelm.migration.models import Migration, MigrationUser
from reelm.migration.plan import Transports, journal_users, make_plan
from reelm.migration.transport import LocalTransport, Transport

# phase ("copy", "purge", ...), users done, users in all, bytes copied so far
Progress = Callable[[str, int, int, int], None]


def _quiet(phase: str, done: int, total: int, copied: int) -> None:
    return None


def _local(platform: Platform, source: str, destination: str, fault: Faults) -> Transport:
    return LocalTransport.between(platform, source, destination, fault)


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


class Runner(Journal):
    def __init__(
        self,
        platform: Platform,
        migration_id: uuid.UUID,
        *,
        progress: Progress | None = None,
        faults: Faults | None = None,
        batch_size: int | None = None,
        transports: Transports | None = None,
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
        self.destination = migration.destination
        self.batch_size = batch_size or int(migration.plan.get("batch_size", DEFAULT_BATCH))
        self.outcome = Outcome(migration_id)
        self.copied_bytes = 0
        self._make_transport = transports or (
            lambda source, destination: _local(platform, source, destination, self.fault)
        )
        self._transports: dict[str, Transport] = {}

    def _to(self, source: str) -> Transport:
        """The transport between a source region and the destination (one per run)."""
        if source not in self._transports:
            self._transports[source] = self._make_transport(source, self.destination)
        return self._transports[source]

    @property
    def _dest(self) -> Transport:
        """A transport to the destination (any source's: the destination's side is the same)."""
        if not self._transports:
            sources = sorted(self._sources() - {self.destination})
            self._to(sources[0] if sources else self.destination)
        return next(iter(self._transports.values()))

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
        self._dest.destination.sweep_scratch(self.migration_id)
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
        moved = self._users_in(("purged", "attested"))
        lost = self._dest.destination.unreadable(self.migration_id, moved)
        for user_id, places in sorted(lost.items()):
            log.error(
                "user %s: %d values do not open in %s", user_id, len(places), self.destination
            )
        self.outcome.unreadable = {str(u): places for u, places in lost.items()}

    def _log_started(self) -> None:
        """``migration.started`` in every region involved, once (a crash between the journal's
        commit and the log's is made good here)."""
        details = {
            "migration": str(self.migration_id),
            "market": self.migration.market,
            "to": self.destination,
        }
        for region in sorted({self.destination, *self._sources()}):
            if region == self.destination:
                self._dest.destination.log_started(self.migration_id, details)
            else:
                self._to(region).source.log_started(self.migration_id, details)

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
            self._move_batch(self._to(source), rows)
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
                self._give_up(self._to(source), user_id, "migration aborted")
            self._move_all()  # the switched ones: activate and purge
            self._integrate_logs()
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

    def _integrate_logs(self) -> None:
        for region in {self.destination, *self._sources()}:
            if region == self.destination:
                self._dest.destination.integrate_log(self.migration_id)
            else:
                self._to(region).source.integrate_log(self.migration_id)

    # -- one batch --------------------------------------------------------------------------
    _failed_now: set[uuid.UUID] = set()

    def _move_batch(self, t: Transport, rows: list[Any]) -> None:
        self._failed_now = set()
        early = [r.user_id for r in rows if r.state in BEFORE_SWITCH]
        early = self._drop_deleted(t, early)
        if early:
            # Blobs are copied, read back and hashed before the freeze: the frozen window
            # only copies and hashes what changed since, so writes pause for seconds even
            # when the users have gigabytes of media.
            checks = self._copy_blobs(t, early, {}, prune=False)
            self.fault("after-precopy")
            frozen_at = time.monotonic()
            self._freeze(t, early)
            self.fault("after-freeze")
            early = self._copy_rows(t, early)
            checks = self._copy_blobs(t, early, checks)
            self._copy_staged(t, early)
            self._set_state(early, "copied")
            self.fault("after-copy")
            verified = self._verify(t, early, checks)
            self.fault("after-verify")
            self._switch(t, verified)
            self.fault("after-switch")
        switched = [r.user_id for r in rows if r.state == "switched"]
        switched += [u for u in early if u not in self._failed_now]
        if switched:
            self._activate(t, switched)
            if early:
                self.outcome.pauses.append(time.monotonic() - frozen_at)
            self.fault("after-activate")
            self._purge(t, switched)

    def _drop_deleted(self, t: Transport, ids: list[uuid.UUID]) -> list[uuid.UUID]:
        """Users whose account was purged (their deletion came due) before their turn have
        nothing left to move: they leave the journal, and a blob pre-copied by an interrupted
        run goes too."""
        present = set(t.source.present(self.migration_id, ids))
        gone = [u for u in ids if u not in present]
        for user_id in gone:
            self._remove_copy(t, user_id)  # a no-op for a user who lives there
        if gone:
            with self.platform.catalog.transaction() as c:
                c.execute(
                    delete(MigrationUser).where(
                        MigrationUser.migration_id == self.migration_id,
                        among(MigrationUser.user_id, gone),
                        MigrationUser.state.in_(BEFORE_SWITCH),
                    )
                )
            log.info("%d users were deleted before their turn: nothing to move", len(gone))
        return [u for u in ids if u in present]

    # -- copy -------------------------------------------------------------------------------
    def _copy_blobs(
        self,
        t: Transport,
        ids: list[uuid.UUID],
        known: dict[str, BlobCheck],
        *,
        prune: bool = True,
    ) -> dict[str, BlobCheck]:
        """Copy every protected blob of the users (the source streams each to the
        destination, which seals it under the user's new key and reads it back to hash it).
        A blob in ``known`` whose source size and modification time are unchanged is not
        copied again. ``prune``: remove destination blobs the source no longer has. Returns
        the checks of every blob the source has now."""
        checks: dict[str, BlobCheck] = {}
        inventory = t.source.blob_inventory(self.migration_id, ids)
        # The users' new data keys, wrapped by the destination's master key.
        t.destination.create_keys(self.migration_id, list(inventory))
        held = t.destination.held_blobs(self.migration_id, list(inventory)) if known else {}
        for user_id, blobs in inventory.items():
            for key, stamp in blobs.items():
                check = known.get(key)
                if check is not None and check.stamp == stamp and key in held[user_id]:
                    checks[key] = check
                    continue
                checks[key] = t.copy_blob(self.migration_id, user_id, key)
                self.copied_bytes += checks[key].size
            if prune:  # the final pass: the destination keeps exactly the source's blobs
                t.destination.prune_blobs(self.migration_id, user_id, list(blobs))
        return checks

    def _freeze(self, t: Transport, ids: list[uuid.UUID]) -> None:
        """Writes of these users wait from now on (see reelm.regions.fence)."""
        t.source.freeze(self.migration_id, ids)

    def _copy_rows(self, t: Transport, ids: list[uuid.UUID]) -> list[uuid.UUID]:
        """Copy the users' rows, re-encrypted. Returns the users copied; one whose data cannot
        be copied (its source key gone, its email or phone already used by an account of the
        destination) stays home, and the others go on."""
        batch = t.source.export_batch(self.migration_id, ids)
        self.fault("after-export")
        receipt = t.destination.import_batch(self.migration_id, ids, batch)
        failed = {**batch.failed, **receipt.failed}
        counts = {u: n for u, n in batch.counts.items() if u not in failed}
        self._journal_values("rows = v.n", {"n": ("integer", counts)})
        self.outcome.rows += sum(counts.values())
        for user_id, reason in failed.items():
            self._give_up(t, user_id, reason)
        return [u for u in ids if u not in failed]

    def _copy_staged(self, t: Transport, ids: list[uuid.UUID]) -> None:
        """Uploads in progress: their bytes so far, so the upload resumes where it stopped."""
        t.copy_staged(self.migration_id, ids)

    # -- verify ----------------------------------------------------------------------------
    def _verify(
        self,
        t: Transport,
        ids: list[uuid.UUID],
        checks: dict[str, BlobCheck] | None = None,
        *,
        second: bool = False,
    ) -> list[uuid.UUID]:
        """Compare each user's digest, computed on each side with its own keys. Blobs copied
        in this run were hashed as they were read from the source and again as read back from
        the destination (and the source's are unchanged since: same size and time, and the
        user is frozen); blobs copied by an earlier, interrupted run are read again on both
        sides now."""
        checks = checks or {}
        stamps = t.source.blob_stamps(self.migration_id, list(checks))
        unchanged = {key: check for key, check in checks.items() if stamps[key] == check.stamp}
        src_hashed = {k: (c.source_sha, c.size) for k, c in unchanged.items()}
        dst_hashed = {k: (c.dest_sha, c.size) for k, c in unchanged.items()}
        theirs = t.source.digests(self.migration_id, ids, src_hashed)
        readable = [u for u in ids if u not in theirs.failed]
        ours = t.destination.digests(self.migration_id, readable, dst_hashed)
        good: list[uuid.UUID] = []
        bad: dict[uuid.UUID, str] = dict(theirs.failed)
        totals: dict[uuid.UUID, tuple[bytes, int, int]] = {}
        for user_id in readable:
            b = ours.users.get(user_id)
            if b is None:
                bad[user_id] = ours.failed[user_id]
                continue
            a = theirs.users[user_id]
            if a.digest != b.digest:
                bad[user_id] = "digest mismatch in " + ", ".join(
                    digests.differences(a.outline, b.outline)
                )
                continue
            good.append(user_id)
            totals[user_id] = (b.digest, b.blobs, b.blob_bytes)
        bad = {u: bad[u] for u in ids if u in bad}  # in the batch's order, as before
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
            retry = self._copy_rows(t, retry)
            again = self._copy_blobs(t, retry, {})
            self._copy_staged(t, retry)
            return good + self._verify(t, retry, again, second=True)
        for user_id, reason in bad.items():
            self._give_up(t, user_id, reason)
        return good

    def _give_up(self, t: Transport, user_id: uuid.UUID, reason: str) -> None:
        """The user stays where they are: the copy goes, the source thaws, the reason is kept."""
        log.error("user %s stays in %s: %s", user_id, t.source.region, reason)
        self._remove_copy(t, user_id)
        t.source.thaw(self.migration_id, user_id)
        self._set_state([user_id], "failed", error=reason[:500])
        self._failed_now.add(user_id)
        self.outcome.failed[str(user_id)] = reason

    def _remove_copy(self, t: Transport, user_id: uuid.UUID) -> None:
        """Remove this migration's copy of a user from the destination, never a user who
        lives there."""
        if self._home(user_id) == self.destination:
            log.error(
                "user %s lives in %s: their data there is not a copy", user_id, self.destination
            )
            return
        t.destination.remove_copy(self.migration_id, user_id)

    # -- switch ----------------------------------------------------------------------------
    def _switch(self, t: Transport, ids: list[uuid.UUID]) -> None:
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
                self._give_up(t, user_id, "the directory entry no longer points to the source")

    def _activate(self, t: Transport, ids: list[uuid.UUID]) -> None:
        """After the switch: the destination's copy becomes the user's data (arrival logged
        once, with it), the source's refuses writes, waiting videos are queued."""
        t.destination.activate(self.migration_id, ids, t.source.region, self._journal_digests(ids))
        t.source.mark_moved(self.migration_id, ids)
        t.destination.resume_work(self.migration_id, ids)

    # -- purge -----------------------------------------------------------------------------
    def _purge(self, t: Transport, ids: list[uuid.UUID]) -> None:
        t.source.purge_files(self.migration_id, ids)
        self.fault("after-purge-blobs")
        # The user's log keys moved with them: the destination names the departure, so it
        # is named even when the source's key was destroyed before a crash.
        named = t.destination.subjects(self.migration_id, ids)
        destroyed = t.source.destroy_keys(self.migration_id, ids)
        self.fault("after-purge-keys")
        t.source.purge_rows(
            self.migration_id, ids, self.destination, self._journal_digests(ids), named
        )
        log.info(
            "purged %d moved users from %s (%d keys destroyed now)",
            len(ids),
            t.source.region,
            len(destroyed),
        )
        self._set_state(ids, "purged")
        self.outcome.moved += len(ids)
        self.fault("after-purge")

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
            self.platform,
            self.destination,
            market=self.migration.market,
            exclude=known,
            transports=self._to_pair,
        )
        if plan.user_count == 0:
            return False
        with self.platform.catalog.transaction() as c:
            journal_users(c, self.migration_id, plan)
        return True

    def _to_pair(self, source: str, destination: str) -> Transport:
        return self._to(source)

    # -- attest ----------------------------------------------------------------------------
    def _finish(self) -> None:
        from reelm.migration.report import build_report

        counts = self._counts()
        failed = counts.get("failed", 0)
        self._integrate_logs()
        purged = self._users_in(("purged",))
        self._set_state(purged, "attested")
        # The moved users' blind indexes are in the sources' backups: retire the keys that
        # computed them (idempotent: a resumed run rotates again, harmlessly).
        for region in sorted(self._sources()):
            self._to(region).source.rotate_index(self.migration_id)
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
