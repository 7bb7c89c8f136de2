"""Blind-index key epochs on a real PostgreSQL: a rotation re-indexes every account and
destroys the old key, lookups and sign-ups racing it never miss, and a database from before
epochs is moved off the key derived from the master key."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from reelm.accounts import indexes
from reelm.accounts.errors import EmailTaken
from reelm.accounts.models import Account, IndexEpoch
from reelm.accounts.service import SignedUp, find_by_email, log_in
from reelm.bootstrap import Platform
from reelm.storage.crypto import blind_index
from reelm.storage.keys import LEGACY_INDEX_EPOCH, KeyDestroyed

PASSWORD = "correct horse battery"


def _epochs(platform: Platform, region: str) -> tuple[list[int], dict[int, int]]:
    cell = platform.cell(region)
    with cell.db.transaction() as s:
        live = indexes.live_epochs(s)
        rows = dict(
            s.execute(select(Account.index_epoch, func.count()).group_by(Account.index_epoch)).all()
        )
    return live, {int(k): int(v) for k, v in rows.items()}


def test_a_rotation_reindexes_everyone_and_destroys_the_old_key(
    fresh_platform: Platform, new_user: Callable[..., SignedUp]
) -> None:
    users = [
        new_user(
            "CA", platform_=fresh_platform, email=f"r{n}@example.com", phone=f"+1 416 555 01{n:02d}"
        )
        for n in range(3)
    ]
    cell = fresh_platform.cell("ca")
    assert _epochs(fresh_platform, "ca") == ([1], {1: 3})
    old_key = cell.keys.index_key(1)
    # One user crypto-shredded, their rows not deleted yet (a purge interrupted there).
    cell.keys.destroy_data_key(users[2].user_id)

    rotation = indexes.rotate(cell)
    assert rotation is not None
    assert (rotation.epoch, rotation.reindexed, rotation.shredded) == (2, 3, 1)
    assert (rotation.retired, rotation.destroyed) == ([1], [1])
    assert _epochs(fresh_platform, "ca") == ([2], {2: 3})
    with pytest.raises(KeyDestroyed):
        cell.keys.index_key(1)
    with cell.db.transaction() as s:
        stored = {bytes(b) for b in s.scalars(select(Account.email_bidx))}
    assert blind_index(old_key, "email", "r0@example.com") not in stored
    # The shredded user's index matches nothing now, under any key.
    assert find_by_email(fresh_platform, "r2@example.com") is None
    # The others log in, and their email and phone are still taken.
    for n in range(2):
        log_in(fresh_platform, f"r{n}@example.com", PASSWORD)
    with pytest.raises(EmailTaken):
        new_user("CA", platform_=fresh_platform, email="r0@example.com")
    cell.log.integrate_all()
    rotated = [e for e in cell.log.entries(0, 10_000) if e.kind == "index.rotated"]
    assert len(rotated) == 1 and b'"retired":[1]' in rotated[0].entry
    again = indexes.rotate(cell)
    assert again is not None and (again.epoch, again.destroyed) == (3, [2])


def test_lookups_and_sign_ups_racing_a_rotation_never_miss(
    fresh_platform: Platform,
    new_user: Callable[..., SignedUp],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Rows move to the new epoch a few at a time while other threads look every user up and
    new users sign up: every lookup finds its account, and the rotation still retires the old
    epoch (sign-ups written under it are re-indexed before it goes)."""
    monkeypatch.setattr(indexes, "REINDEX_BATCH", 3)
    existing = [new_user("AU", platform_=fresh_platform).user_id for _ in range(24)]
    cell = fresh_platform.cell("au")
    # new_user's email is <handle>@example.com.
    with fresh_platform.catalog.transaction() as c:
        emails = {
            u: f"{h}@example.com"
            for u, h in c.execute(
                text("SELECT user_id, handle FROM profiles WHERE user_id = ANY(:ids)"),
                {"ids": existing},
            )
        }
    missed: list[str] = []
    signed_up: list[SignedUp] = []
    done = threading.Event()

    def look_up() -> None:
        while not done.is_set():
            for user_id, email in emails.items():
                found = find_by_email(fresh_platform, email)
                if found is None or found[1] != user_id:
                    missed.append(email)

    def sign_ups() -> None:
        while not done.is_set() and len(signed_up) < 20:
            signed_up.append(new_user("AU", platform_=fresh_platform))

    threads = [threading.Thread(target=look_up) for _ in range(2)]
    threads.append(threading.Thread(target=sign_ups))
    for thread in threads:
        thread.start()
    try:
        rotations = [indexes.rotate(cell) for _ in range(3)]
    finally:
        done.set()
        for thread in threads:
            thread.join(timeout=60)
    assert missed == []
    assert [r.epoch for r in rotations if r is not None] == [2, 3, 4]
    live, by_epoch = _epochs(fresh_platform, "au")
    # Sign-ups after the last rotation's retirement are under its epoch; none is older.
    assert live == [4] and set(by_epoch) == {4}
    assert cell.keys.index_key_epochs() == [4]
    for user in signed_up:
        found = find_by_email(fresh_platform, f"{user.handle}@example.com")
        assert found is not None and found[1] == user.user_id


@pytest.mark.parametrize("key_cached", [True, False])
def test_a_lookup_that_read_the_epochs_before_a_rotation_looks_again(
    fresh_platform: Platform,
    new_user: Callable[..., SignedUp],
    monkeypatch: pytest.MonkeyPatch,
    key_cached: bool,
) -> None:
    """The worst timing for a log-in: it reads the live epochs, then a whole rotation runs
    (rows re-indexed, the old key destroyed), then it looks the email up."""
    user = new_user("NZ", platform_=fresh_platform, email="late@example.com")
    cell = fresh_platform.cell("nz")
    real = indexes.live_epochs
    calls = 0

    def stale_then_rotated(session: Session) -> list[int]:
        nonlocal calls
        calls += 1
        epochs = real(session)
        if calls == 1:
            assert indexes.rotate(cell) is not None
            if not key_cached:
                cell._index_keys.clear()
        return epochs

    monkeypatch.setattr(indexes, "live_epochs", stale_then_rotated)
    with cell.db.transaction() as s:
        assert indexes.find(s, cell, "email", "late@example.com") == user.user_id
    assert calls >= 2


def test_accounts_from_before_epochs_move_off_the_derived_key(
    fresh_platform: Platform,
) -> None:
    """Rows written before r0010 are epoch 0, indexed with the key derived from the master
    key: found under it, then re-indexed under a random key by the first rotation."""
    cell = fresh_platform.cell("nz")
    legacy = cell.keys.index_key(LEGACY_INDEX_EPOCH)
    user_id = uuid.uuid4()
    with cell.db.transaction() as s:
        s.add(IndexEpoch(epoch=LEGACY_INDEX_EPOCH))
        s.flush()
        cipher = cell.for_user(user_id, "nz").cipher(create=True)
        s.add(
            Account(
                user_id=user_id,
                market="NZ",
                email_ct=cipher.encrypt("email", "old@example.com"),
                email_bidx=blind_index(legacy, "email", "old@example.com"),
                index_epoch=LEGACY_INDEX_EPOCH,
                birth_date_ct=b"x",
                password_ct=b"x",
                settings_ct=b"x",
            )
        )
    assert find_by_email(fresh_platform, "old@example.com") == (cell, user_id)
    rotation = indexes.rotate(cell)
    assert rotation is not None
    assert (rotation.epoch, rotation.retired, rotation.destroyed) == (1, [0], [])
    assert _epochs(fresh_platform, "nz") == ([1], {1: 1})
    assert find_by_email(fresh_platform, "old@example.com") == (cell, user_id)
