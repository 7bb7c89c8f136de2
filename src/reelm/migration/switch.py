"""The catalog's side of a migration's switch, under the regions' row-level security.

A user's directory entry may be written only by the user's home region (catalog revision
c0014_catalog_rls), so no region's role can move a user alone. Two keys turn instead:

- the **source** *releases* the users it has frozen (``release``): a ``migration_releases``
  row per user, at the directory epoch of the moment their writes stopped, written under the
  source's own role (its users' rows are its to write);
- the **destination**, having verified the copy, *commits* the switch (``switch_home``) through
  the SECURITY DEFINER function ``reelm_switch_home``, which flips only users released at the
  expected epoch and verified in the journal of a running migration to the caller's region.

The single-machine process (the catalog owner's URL) takes the same two steps through the
same functions: one code path. The market route of a market migration changes through
``reelm_route_market`` / ``reelm_unroute_market`` (the destination's, or the owner's)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from sqlalchemy import text
from sqlalchemy.orm import Session

_RELEASE = text(
    "INSERT INTO migration_releases (migration_id, user_id, epoch) "
    "SELECT :migration, d.user_id, d.epoch FROM directory d "
    "WHERE d.user_id = ANY(CAST(:ids AS uuid[])) AND d.home_region = :source "
    "ON CONFLICT (migration_id, user_id) DO UPDATE "
    "SET epoch = EXCLUDED.epoch, released_at = now()"
)
_UNRELEASE = text(
    "DELETE FROM migration_releases "
    "WHERE migration_id = :migration AND user_id = ANY(CAST(:ids AS uuid[]))"
)
_RELEASED = text(
    "SELECT user_id, epoch FROM migration_releases "
    "WHERE migration_id = :migration AND user_id = ANY(CAST(:ids AS uuid[]))"
)
_SWITCH = text(
    "SELECT * FROM reelm_switch_home("
    ":migration, CAST(:users AS uuid[]), CAST(:epochs AS integer[]))"
)


def release(c: Session, migration_id: uuid.UUID, source: str, ids: Iterable[uuid.UUID]) -> None:
    """The source lets its frozen users go (idempotent: a resumed run releases again, at the
    epoch of now). Users the directory no longer homes in ``source`` are not released."""
    c.execute(_RELEASE, {"migration": migration_id, "ids": list(ids), "source": source})


def unrelease(c: Session, migration_id: uuid.UUID, ids: Iterable[uuid.UUID]) -> None:
    """The users stay (a failed copy, an abort): their release is taken back."""
    c.execute(_UNRELEASE, {"migration": migration_id, "ids": list(ids)})


def switch_home(c: Session, migration_id: uuid.UUID, ids: Iterable[uuid.UUID]) -> set[uuid.UUID]:
    """Point the released users' directory entries to the migration's destination (epoch
    raised, journal 'switched'). Returns the users switched: one whose entry changed since
    its release (another epoch), or who was not released, stays."""
    released: dict[uuid.UUID, int] = dict(
        c.execute(_RELEASED, {"migration": migration_id, "ids": list(ids)}).all()
    )
    if not released:
        return set()
    users = list(released)
    return set(
        c.scalars(
            _SWITCH,
            {
                "migration": migration_id,
                "users": users,
                "epochs": [released[u] for u in users],
            },
        )
    )


def route_market(c: Session, migration_id: uuid.UUID) -> None:
    """The migration's market sends its new sign-ups to the migration's destination."""
    c.execute(text("SELECT reelm_route_market(:migration)"), {"migration": migration_id})


def unroute_market(c: Session, migration_id: uuid.UUID) -> None:
    """Take back the market route this migration set (if nobody changed it since)."""
    c.execute(text("SELECT reelm_unroute_market(:migration)"), {"migration": migration_id})
