"""Pooled connections (reelm.storage.db): one left idle is checked before use and replaced if
the server dropped it; one used moments ago is not (no round trip on every checkout)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from reelm.storage import db as storage
from reelm.storage.db import Database


@pytest.fixture
def database(admin_url: str) -> Iterator[Database]:
    database = Database.connect("pool-test", admin_url, pool_size=1)
    yield database
    database.dispose()


def _backend(database: Database) -> int:
    with database.rows() as c:
        return int(c.execute(text("SELECT pg_backend_pid()")).scalar_one())


def _cut(admin_url: str, pid: int) -> None:
    with psycopg.connect(admin_url) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))


def _count_pings(database: Database, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    pings: list[Any] = []
    real = database.engine.dialect.do_ping

    def counting(connection: Any) -> bool:
        pings.append(connection)
        return bool(real(connection))

    monkeypatch.setattr(database.engine.dialect, "do_ping", counting)
    return pings


def test_an_idle_connection_the_server_dropped_is_replaced(
    admin_url: str, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = _backend(database)
    _cut(admin_url, first)
    pings = _count_pings(database, monkeypatch)
    monkeypatch.setattr(storage, "PING_IDLE", 0.0)  # every pooled connection counts as idle
    second = _backend(database)  # no error: checked, found dead, replaced
    assert second != first
    assert len(pings) == 1


def test_a_connection_used_moments_ago_is_not_pinged(
    admin_url: str, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    pings = _count_pings(database, monkeypatch)
    first = _backend(database)
    assert _backend(database) == first  # the same pooled connection, not checked
    assert pings == []
    # Dropped while trusted: that use fails, and the pool starts afresh for the next one.
    _cut(admin_url, first)
    with pytest.raises(OperationalError):
        _backend(database)
    assert _backend(database) != first
