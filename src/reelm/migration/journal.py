"""A migration's journal in the catalog (``migration_users``): which user is at which step,
their digests and counts, and the reasons of those who stayed. The coordinator's memory: a
run killed at any moment reads here where to go on."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import delete, func, select, text, update

from reelm.accounts.models import DirectoryEntry
from reelm.bootstrap import Platform
from reelm.migration.common import among, log
from reelm.migration.models import MigrationUser


class Journal:
    platform: Platform
    migration_id: uuid.UUID

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
                    among(MigrationUser.user_id, others),
                    MigrationUser.state == "failed",
                )
            )
        log.info("%d failed users live elsewhere now: no longer in this migration", len(others))

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
                    among(MigrationUser.user_id, ids),
                )
                .values(state=state, error=error, **values)
            )

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

    def _journal_digests(self, ids: list[uuid.UUID]) -> dict[uuid.UUID, bytes]:
        with self.platform.catalog.transaction() as c:
            return {
                u: d
                for u, d in c.execute(
                    select(MigrationUser.user_id, MigrationUser.digest).where(
                        MigrationUser.migration_id == self.migration_id,
                        among(MigrationUser.user_id, ids),
                    )
                )
                if d is not None
            }

    def _home(self, user_id: uuid.UUID) -> str | None:
        with self.platform.catalog.transaction() as c:
            entry = c.get(DirectoryEntry, user_id)
        return None if entry is None else entry.home_region
