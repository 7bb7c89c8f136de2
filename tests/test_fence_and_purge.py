"""Two writes found by review after the hardening merge: log keys made for an older account
while it is frozen for a migration (they would be lost with the source's copy, and the entries
named with them never found by the user), and held notifications left in the job queue by a
user who is then purged (their rows would name the deleted user as a sender)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from sqlalchemy import select, text, update

from reelm.accounts import logsubject
from reelm.accounts.lifecycle import purge_due
from reelm.accounts.models import Account
from reelm.accounts.service import SignedUp, now
from reelm.bootstrap import Platform
from reelm.jobs import queue_of
from reelm.regions.fence import UserMoving
from reelm.social.notify import DELIVER_TASK


def test_log_keys_are_not_made_behind_a_migration_fence(
    fresh_platform: Platform, new_user: Callable[..., SignedUp]
) -> None:
    user = new_user("FR", platform_=fresh_platform)
    cell = fresh_platform.cell(user.home_region)
    scope = cell.for_user(user.user_id, cell.region)
    with cell.db.transaction() as s:  # an account from before log keys, now being moved
        s.execute(
            update(Account)
            .where(Account.user_id == user.user_id)
            .values(log_keys_ct=None, migration="frozen")
        )
    with pytest.raises(UserMoving), cell.db.transaction() as s:
        logsubject.log_keys(s, scope)
    with cell.db.transaction() as s:
        assert s.scalar(select(Account.log_keys_ct).where(Account.user_id == user.user_id)) is None
        s.execute(update(Account).where(Account.user_id == user.user_id).values(migration=None))
    with cell.db.transaction() as s:  # once the fence is down, they are made as before
        first = logsubject.log_keys(s, scope)
    with cell.db.transaction() as s:
        assert logsubject.log_keys(s, scope).current == first.current


def test_a_purge_removes_the_held_deliveries_its_user_sent(
    fresh_platform: Platform, new_user: Callable[..., SignedUp]
) -> None:
    user = new_user("FR", platform_=fresh_platform)
    cell = fresh_platform.cell(user.home_region)
    queue = queue_of(fresh_platform, cell.region)
    queue.defer(DELIVER_TASK, actor=str(user.user_id), sealed="AAAA")
    with cell.db.transaction() as s:
        s.execute(
            update(Account)
            .where(Account.user_id == user.user_id)
            .values(purge_after=now() - timedelta(days=1))
        )
    assert user.user_id in purge_due(fresh_platform, regions=[cell.region])
    with cell.db.transaction() as s:
        left = s.scalar(
            text("SELECT count(*) FROM procrastinate_jobs WHERE args->>'actor' = :a"),
            {"a": str(user.user_id)},
        )
    assert left == 0
