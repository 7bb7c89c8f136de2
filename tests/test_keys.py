"""A key store's cache never outlives the key file it came from: several processes (a server,
a worker, a migration) share one region's key store, and any of them may destroy a user's key
or, when the user comes back to the region, make a new one."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import update

from reelm.accounts.models import Account
from reelm.accounts.service import SignedUp
from reelm.bootstrap import Platform
from reelm.residency import readable
from reelm.residency.scan import scan
from reelm.storage.crypto import UserCipher
from reelm.storage.keys import KeyDestroyed, LocalKeyStore


def test_a_cached_key_is_bound_to_the_exact_key_file(tmp_path: Path) -> None:
    serving = LocalKeyStore("sg", tmp_path)  # a long-running server, with its cache
    migrating = LocalKeyStore("sg", tmp_path)  # `reelm migrate`, another process
    user = uuid.uuid4()
    first = serving.create_data_key(user)
    first_id = serving.key_id(user)
    assert serving.data_key(user) == first  # cached now
    assert migrating.destroy_data_key(user)  # the user moves away
    with pytest.raises(KeyDestroyed):
        serving.data_key(user)
    second = migrating.create_data_key(user)  # ...and comes back
    assert second != first
    assert serving.data_key(user) == second
    assert serving.key_id(user) == migrating.key_id(user) != first_id
    # The same with the old key still in the cache when the new file appears.
    serving.data_key(user)
    migrating.destroy_data_key(user)
    third = migrating.create_data_key(user)
    assert serving.data_key(user) == third


def test_a_key_caught_while_being_destroyed_reads_as_destroyed(tmp_path: Path) -> None:
    """Destruction overwrites the key file before unlinking it; a reader in between gets
    KeyDestroyed, never the cached key and never an unexpected error."""
    keys = LocalKeyStore("sg", tmp_path)
    user = uuid.uuid4()
    keys.create_data_key(user)
    path = tmp_path / "users" / f"{user}.key"
    path.write_bytes(b"\0" * len(path.read_bytes()))
    with pytest.raises(KeyDestroyed):
        keys.data_key(user)


def test_concurrent_readers_see_one_key_at_a_time(tmp_path: Path) -> None:
    keys = LocalKeyStore("sg", tmp_path)
    other = LocalKeyStore("sg", tmp_path)
    user = uuid.uuid4()
    made = [keys.create_data_key(user)]
    seen: set[bytes] = set()
    errors: list[BaseException] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            try:
                seen.add(keys.data_key(user))
            except KeyDestroyed:
                pass
            except BaseException as exc:
                errors.append(exc)

    readers = [threading.Thread(target=read) for _ in range(3)]
    for t in readers:
        t.start()
    for _ in range(30):
        other.destroy_data_key(user)
        made.append(other.create_data_key(user))
    stop.set()
    for t in readers:
        t.join()
    assert errors == []
    assert seen <= set(made)
    assert keys.data_key(user) == made[-1]


def test_scan_reports_values_sealed_under_another_key(
    fresh_platform: Platform, new_user: Callable[..., SignedUp]
) -> None:
    user = new_user("FR", platform_=fresh_platform)
    cell = fresh_platform.cell(user.home_region)
    assert scan(fresh_platform).clean
    dead = UserCipher(user.user_id, b"\x07" * 32)  # a key the region no longer holds
    with cell.db.transaction() as s:
        s.execute(
            update(Account)
            .where(Account.user_id == user.user_id)
            .values(settings_ct=dead.encrypt("settings", "{}"))
        )
    assert readable.unreadable(cell, [user.user_id]) == {user.user_id: ["accounts.settings_ct"]}
    report = scan(fresh_platform)
    assert [(f.kind, f.user_id, f.location) for f in report.findings] == [
        ("undecryptable", str(user.user_id), "accounts.settings_ct")
    ]
