"""Migrations as operators and the public see them: running one in the background, its
status, the latest ones for the transparency page, the stored report, users in transit."""

from __future__ import annotations

import threading
import uuid
from typing import Any

from sqlalchemy import func, select, text

from reelm.accounts.errors import NotFound
from reelm.bootstrap import Platform
from reelm.migration.common import BEFORE_SWITCH, RUN_LOCK_SPACE, log
from reelm.migration.coordinator import Runner
from reelm.migration.models import Migration, MigrationUser

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
