"""Setting up (and taking down) a replica of the catalog: the publication on the primary, the
schema and the subscription on the replica. Idempotent: run again, it finishes what is missing
and publishes tables added since. `reelm catalog replica` runs it; docs/operations.md, "The
catalog's replicas", says how and in which order."""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo
from sqlalchemy.engine import make_url

from reelm.storage import migrate
from reelm.storage.db import CATALOG, Database
from reelm.storage.replica import PUBLICATION, PUBLISHED, subscription_name

NAME = re.compile(r"^[a-z][a-z0-9_]{0,40}$")


class ReplicationError(RuntimeError):
    """The clusters cannot replicate as asked (the message says what to change)."""


def libpq(url: str) -> str:
    """A SQLAlchemy or libpq URL as the libpq key=value form PostgreSQL itself takes."""
    uri = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    return make_conninfo(uri)


def _connect(url: str) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(libpq(url), autocommit=True)


@dataclass(frozen=True)
class Progress:
    """Tables of the subscription copied and streaming ('r'), out of all; ``missing``: tables
    of this release the primary does not have yet (published by a run after its upgrade)."""

    ready: int
    tables: int
    states: dict[str, str]
    missing: tuple[str, ...] = ()


def check_primary(primary_url: str) -> None:
    """The primary can publish: ``wal_level = logical`` and every published table has a
    primary key (UPDATE and DELETE are replicated by it)."""
    with _connect(primary_url) as c:
        level = c.execute("SHOW wal_level").fetchone()
        if level is None or level[0] != "logical":
            raise ReplicationError(
                f"the catalog primary runs with wal_level = {level[0] if level else '?'}: "
                "set wal_level = logical (postgresql.conf or ALTER SYSTEM) and restart it"
            )
        rows = c.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND c.relname = ANY(%s) AND NOT EXISTS ("
            "SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary)",
            [list(PUBLISHED)],
        ).fetchall()
        if rows:
            raise ReplicationError(f"published tables without a primary key: {rows}")


def publish(primary_url: str) -> tuple[str, ...]:
    """Create the publication, or set its tables to this release's list: those the primary
    has (its schema may be a release behind: replicas are upgraded first). Returns the others,
    published by a run after the primary's upgrade."""
    with _connect(primary_url) as c:
        present = {
            str(r[0])
            for r in c.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                "AND tablename = ANY(%s)",
                [list(PUBLISHED)],
            )
        }
        if not present:
            raise ReplicationError(
                "the primary has no catalog tables: its operator runs "
                "`reelm db upgrade --catalog` first"
            )
        tables = sql.SQL(", ").join(sql.Identifier("public", t) for t in PUBLISHED if t in present)
        exists = c.execute(
            "SELECT 1 FROM pg_publication WHERE pubname = %s", [PUBLICATION]
        ).fetchone()
        verb = (
            "ALTER PUBLICATION {} SET TABLE {}" if exists else "CREATE PUBLICATION {} FOR TABLE {}"
        )
        c.execute(sql.SQL(verb).format(sql.Identifier(PUBLICATION), tables))
    return tuple(t for t in PUBLISHED if t not in present)


def prepare_replica(replica_url: str) -> None:
    """The replica's schema at this release's head: DDL is not replicated, and a subscriber
    is upgraded before its primary (an added column or table waits there harmlessly)."""
    replica = Database.connect(f"{CATALOG}-replica", replica_url, pool_size=1)
    try:
        migrate.upgrade(replica.engine, CATALOG)
    finally:
        replica.dispose()


def subscribe(replica_url: str, name: str, publisher: str) -> bool:
    """Create the subscription (True) or enable and refresh the one there is (False)."""
    sub = sql.Identifier(subscription_name(name))
    with _connect(replica_url) as c:
        exists = c.execute(
            "SELECT 1 FROM pg_subscription WHERE subname = %s", [subscription_name(name)]
        ).fetchone()
        if exists:
            c.execute(sql.SQL("ALTER SUBSCRIPTION {} ENABLE").format(sub))
            # Tables published since it was made: their rows are copied, then streamed.
            c.execute(sql.SQL("ALTER SUBSCRIPTION {} REFRESH PUBLICATION").format(sub))
            return False
        # A new subscription copies every row: what an earlier one left here would collide.
        # CASCADE: the unpublished tables that refer to these (staff_members) are empty here.
        c.execute(
            sql.SQL("TRUNCATE {} CASCADE").format(
                sql.SQL(", ").join(sql.Identifier("public", t) for t in PUBLISHED)
            )
        )
        c.execute(
            sql.SQL(
                # streaming off: a transaction is applied when its commit arrives, in commit
                # order, so the position confirmed to the primary has been applied
                # (reelm.storage.replica relies on it).
                "CREATE SUBSCRIPTION {} CONNECTION {} PUBLICATION {} WITH (streaming = off)"
            ).format(sub, sql.Literal(publisher), sql.Identifier(PUBLICATION))
        )
        return True


def progress(replica_url: str, name: str) -> Progress:
    with _connect(replica_url) as c:
        rows = c.execute(
            "SELECT r.srrelid::regclass::text, r.srsubstate::text FROM pg_subscription_rel r "
            "JOIN pg_subscription s ON s.oid = r.srsubid WHERE s.subname = %s",
            [subscription_name(name)],
        ).fetchall()
    states = {str(t): str(s) for t, s in rows}
    return Progress(sum(s == "r" for s in states.values()), len(states), states)


def wait_ready(
    replica_url: str,
    name: str,
    *,
    timeout: float = 600.0,
    report: Callable[[Progress], None] | None = None,
) -> Progress:
    """Wait until every table of the subscription is copied and streaming."""
    deadline = time.monotonic() + timeout
    while True:
        done = progress(replica_url, name)
        if report is not None:
            report(done)
        if done.tables and done.ready == done.tables:
            return done
        if time.monotonic() > deadline:
            raise ReplicationError(f"the replica's tables are not ready after {timeout:.0f} s")
        time.sleep(0.05)


def grant_readers(replica_url: str, roles: Iterable[str]) -> None:
    """Let the cells' roles read the replica's published tables (and nothing else there)."""
    with _connect(replica_url) as c:
        for role in roles:
            ident = sql.Identifier(role)
            c.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(ident))
            c.execute(
                sql.SQL("GRANT SELECT ON {} TO {}").format(
                    sql.SQL(", ").join(sql.Identifier("public", t) for t in PUBLISHED), ident
                )
            )
            # The schema revision, which a cell checks at start.
            c.execute(sql.SQL("GRANT SELECT ON public.alembic_version TO {}").format(ident))


def set_up(
    primary_url: str,
    replica_url: str,
    name: str,
    *,
    publisher: str | None = None,
    readers: Iterable[str] = (),
    timeout: float = 600.0,
    report: Callable[[Progress], None] | None = None,
) -> Progress:
    """Everything, in order: check the primary, schema on the replica, publication,
    subscription, readers' grants, then wait for the copy. ``publisher``: how the replica's
    server reaches the primary (libpq conninfo), when not as ``primary_url`` says."""
    if not NAME.match(name):
        raise ReplicationError(f"replica name {name!r}: lower case letters, digits and _ only")
    check_primary(primary_url)
    prepare_replica(replica_url)
    missing = publish(primary_url)
    subscribe(replica_url, name, make_conninfo(publisher) if publisher else libpq(primary_url))
    grant_readers(replica_url, readers)
    done = wait_ready(replica_url, name, timeout=timeout, report=report)
    return dataclasses.replace(done, missing=missing)


def tear_down(replica_url: str, name: str) -> bool:
    """Drop the replica's subscription and, with it, its slot on the primary (a slot left
    behind keeps the primary's WAL forever). False: there was none."""
    sub = sql.Identifier(subscription_name(name))
    with _connect(replica_url) as c:
        exists = c.execute(
            "SELECT 1 FROM pg_subscription WHERE subname = %s", [subscription_name(name)]
        ).fetchone()
        if not exists:
            return False
        c.execute(sql.SQL("DROP SUBSCRIPTION {}").format(sub))
    return True
