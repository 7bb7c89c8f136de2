"""Who moves, and starting a migration: the plan (each source region surveyed by its own
exporter) and the journal's first rows in the catalog."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from reelm.accounts.errors import InvalidInput
from reelm.accounts.models import DirectoryEntry
from reelm.bootstrap import Platform
from reelm.migration import switch
from reelm.migration.common import DEFAULT_BATCH, MigrationError, among, batches
from reelm.migration.models import Migration, MigrationUser
from reelm.migration.transport import LocalTransport, Transport
from reelm.regions import routing

# The transport between a source region and the destination (LocalTransport by default).
Transports = Callable[[str, str], Transport]


def local_transports(platform: Platform) -> Transports:
    return lambda source, destination: LocalTransport.between(platform, source, destination)


@dataclass
class Plan:
    destination: str
    market: str | None
    users: dict[str, list[uuid.UUID]] = field(default_factory=dict)  # by source region
    rows: dict[str, int] = field(default_factory=dict)  # by table
    bytes: int = 0  # protected blob bytes (plaintext) to move
    skipped: dict[str, int] = field(default_factory=dict)  # why -> how many

    @property
    def user_count(self) -> int:
        return sum(len(v) for v in self.users.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "destination": self.destination,
            "market": self.market,
            "users": {region: len(ids) for region, ids in self.users.items()},
            "rows": self.rows,
            "bytes": self.bytes,
            "skipped": self.skipped,
        }


def make_plan(
    platform: Platform,
    destination: str,
    *,
    market: str | None = None,
    user_ids: Iterable[uuid.UUID] | None = None,
    exclude: set[uuid.UUID] | None = None,
    transports: Transports | None = None,
) -> Plan:
    """Who moves, and how much. ``market`` selects by the market recorded with each account;
    ``user_ids`` names users (both: the named users of that market)."""
    if destination not in platform.cells:
        raise InvalidInput(f"unknown region {destination[:40]!r}", field="to")
    if market is None and user_ids is None:
        raise InvalidInput("name a market or a list of users", field="market")
    if market is not None:
        market = platform.policy.check_open(market)
    transports = transports or local_transports(platform)
    wanted = None if user_ids is None else set(user_ids)
    plan = Plan(destination, market)
    for region in platform.cells:
        if region == destination:
            continue
        survey = transports(region, destination).source.survey(
            market, None if wanted is None else sorted(wanted), sorted(exclude or ())
        )
        if not survey.users:
            continue
        plan.users[region] = survey.users
        for name, count in survey.rows.items():
            plan.rows[name] = plan.rows.get(name, 0) + count
        plan.bytes += survey.bytes
    if wanted is not None:
        planned = {u for ids in plan.users.values() for u in ids}
        missing = wanted - planned
        if missing:
            with platform.catalog.transaction() as c:
                homes = dict(
                    c.execute(
                        select(DirectoryEntry.user_id, DirectoryEntry.home_region).where(
                            among(DirectoryEntry.user_id, missing)
                        )
                    ).all()
                )
            here = sum(1 for u in missing if homes.get(u) == destination)
            if here:
                plan.skipped["already in the destination"] = here
            if len(missing) - here:
                plan.skipped["not found or not of the market"] = len(missing) - here
    return plan


def start(platform: Platform, plan: Plan, *, batch_size: int = DEFAULT_BATCH) -> uuid.UUID:
    """Record the migration and its users; point the market to the destination at once (new
    sign-ups go there from now on) and log the start in every region involved."""
    if plan.user_count == 0 and plan.market is None:
        raise MigrationError("nobody to move")
    migration_id = uuid.uuid4()
    with platform.catalog.transaction() as c:
        busy = c.scalar(
            select(func.count())
            .select_from(MigrationUser)
            .join(Migration, Migration.id == MigrationUser.migration_id)
            .where(
                Migration.state == "running",
                MigrationUser.state.notin_(("attested", "failed")),
                among(MigrationUser.user_id, [u for ids in plan.users.values() for u in ids]),
            )
        )
        if busy:
            raise MigrationError(
                f"{busy} of these users are in a migration still running: resume it first"
            )
        c.add(
            Migration(
                id=migration_id,
                market=plan.market,
                destination=plan.destination,
                state="running",
                plan={**plan.as_dict(), "batch_size": batch_size},
            )
        )
        c.flush()
        journal_users(c, migration_id, plan)
        if plan.market is not None:
            routing.lock_market(c, plan.market, exclusive=True)
            switch.route_market(c, migration_id)
    # 'migration.started' is logged in every region involved by the first run (Runner).
    return migration_id


def journal_users(c: Session, migration_id: uuid.UUID, plan: Plan) -> None:
    rows = [
        {
            "migration_id": migration_id,
            "user_id": u,
            "source": region,
            "state": "planned",
            "rows": 0,
            "blobs": 0,
            "blob_bytes": 0,
        }
        for region, ids in plan.users.items()
        for u in ids
    ]
    for chunk in batches(rows, 5000):
        c.execute(pg_insert(MigrationUser).on_conflict_do_nothing(), chunk)
