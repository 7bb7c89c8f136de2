"""Job queues per region, in each region's own database, run by that region's worker."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import psycopg
from sqlalchemy import update
from sqlalchemy.engine import make_url

from reelm.accounts.lifecycle import request_deletion
from reelm.accounts.models import Account, DirectoryEntry
from reelm.accounts.service import SignedUp, log_in
from reelm.bootstrap import Platform
from reelm.jobs import RegionQueue, WorkerThread, queue_of
from reelm.residency.scan import scan

from .conftest import PASSWORD


def _jobs_in(platform: Platform, region: str) -> int:
    url = make_url(platform.cell(region).db.url).set(drivername="postgresql")
    with psycopg.connect(url.render_as_string(hide_password=False)) as conn:
        row = conn.execute("SELECT count(*) FROM procrastinate_jobs").fetchone()
    return int(row[0]) if row else 0


def _due_for_purge(platform: Platform, user: SignedUp) -> None:
    _token, current = log_in(platform, user.handle, PASSWORD)
    request_deletion(platform, current)
    with platform.cell(user.home_region).db.transaction() as s:
        s.execute(
            update(Account)
            .where(Account.user_id == user.user_id)
            .values(purge_after=datetime.now(UTC) - timedelta(minutes=1))
        )


OURS = 1  # the timestamp our purge jobs carry: periodic ones carry their cron time


def _purges(queue: RegionQueue) -> list[str]:
    """Statuses of the purge jobs this test deferred (a worker also defers the periodic jobs
    whose time came, the hourly purge among them)."""
    return [
        j.status
        for j in queue.jobs()
        if j.task_name == "accounts.purge_due" and j.task_kwargs.get("timestamp") == OURS
    ]


def test_a_region_worker_runs_its_own_jobs_only(
    fresh_platform: Platform, new_user: Callable[..., SignedUp]
) -> None:
    us_user = new_user("US", platform_=fresh_platform)
    ca_user = new_user("CA", platform_=fresh_platform)
    for user in (us_user, ca_user):
        _due_for_purge(fresh_platform, user)
    us = queue_of(fresh_platform, "us")
    ca = queue_of(fresh_platform, "ca")
    try:
        us.defer("accounts.purge_due", timestamp=OURS)
        ca.defer("accounts.purge_due", timestamp=OURS)
        assert _jobs_in(fresh_platform, "us") == 1
        assert _jobs_in(fresh_platform, "ca") == 1
        assert _jobs_in(fresh_platform, "sg") == 0
        # Only the us worker runs: the us account is purged, the Canadian one waits for its own.
        asyncio.run(us.work(fresh_platform, wait=False))
        assert _purges(us) == ["succeeded"]
        assert _purges(ca) == ["todo"]
        with fresh_platform.catalog.transaction() as s:
            states = {
                u.user_id: s.get(DirectoryEntry, u.user_id).state  # type: ignore[union-attr]
                for u in (us_user, ca_user)
            }
        assert states == {us_user.user_id: "deleted", ca_user.user_id: "deleting"}
        # Job rows carry ids and timestamps only: the scanner finds nothing out of place.
        assert scan(fresh_platform).clean
    finally:
        us.close()
        ca.close()


def test_worker_thread_starts_and_stops(
    fresh_platform: Platform, new_user: Callable[..., SignedUp]
) -> None:
    user = new_user("NZ", platform_=fresh_platform)
    _due_for_purge(fresh_platform, user)
    nz = queue_of(fresh_platform, "nz")
    workers = WorkerThread(fresh_platform, ["nz", "au"]).start()
    try:
        nz.defer("accounts.purge_due", timestamp=OURS)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and _purges(nz) != ["succeeded"]:
            time.sleep(0.1)
        assert _purges(nz) == ["succeeded"]
    finally:
        workers.stop()
        nz.close()
    assert not workers._thread.is_alive()
