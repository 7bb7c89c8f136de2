"""Databases: one per region plus the catalog, each reached with its own role."""

from __future__ import annotations

import functools
import logging
import random
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from psycopg import errors as pg_errors
from sqlalchemy import (
    BindParameter,
    Connection,
    Engine,
    MetaData,
    Uuid,
    bindparam,
    create_engine,
    event,
    literal,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

CATALOG = "catalog"

log = logging.getLogger("reelm.storage")
T = TypeVar("T")

# What PostgreSQL aborts a sound transaction for, to be run again: a deadlock (it picked this
# transaction as the victim) or a serialization failure. Run at most this many times in all,
# pausing a random time up to RETRY_PAUSE, then twice that, ... (so racing victims spread out).
TRANSIENT_ERRORS = (pg_errors.DeadlockDetected, pg_errors.SerializationFailure)
RETRY_ATTEMPTS = 5
RETRY_PAUSE = 0.01


def transient(exc: BaseException) -> bool:
    """Whether a database error is one that running the same transaction again can cure."""
    return isinstance(exc, DBAPIError) and isinstance(exc.orig, TRANSIENT_ERRORS)


_NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class CatalogBase(DeclarativeBase):
    """Tables of the global, public-only catalog."""

    metadata = MetaData(naming_convention=_NAMING)


class RegionBase(DeclarativeBase):
    """Tables of one region's database: the only place protected data may live."""

    metadata = MetaData(naming_convention=_NAMING)


def sqlalchemy_url(url: str) -> str:
    """Accept plain libpq URLs and point SQLAlchemy at psycopg 3."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def redact(url: str) -> str:
    return make_url(sqlalchemy_url(url)).render_as_string(hide_password=True)


# A pooled connection unused for this long is checked (SELECT 1) before it is handed out; one
# used more recently is trusted. Server restarts and idle timeouts catch idle connections; one
# that breaks while busy fails its statement, and SQLAlchemy then replaces every pooled
# connection (its "disconnect" handling), so at most the requests in flight see the error.
PING_IDLE = 10.0


def _returned(dbapi_connection: Any, record: Any) -> None:
    record.info["returned"] = time.monotonic()


def _ping_if_idle(dialect: Dialect, dbapi_connection: Any, record: Any, proxy: Any) -> None:
    returned = record.info.get("returned")
    if returned is None or time.monotonic() - returned < PING_IDLE:
        return  # new, or used moments ago
    try:
        alive = dialect.do_ping(dbapi_connection)
    except Exception as e:  # the pool replaces it: DisconnectionError makes it connect again
        raise DisconnectionError(f"a pooled connection did not answer: {e}") from e
    if not alive:
        raise DisconnectionError("a pooled connection did not answer")


@dataclass
class Database:
    """One database: its engine and a session factory. Services own the transactions."""

    name: str
    url: str
    engine: Engine
    sessions: sessionmaker[Session]
    readers: sessionmaker[Session]
    reader: Engine  # `engine` in autocommit: what `read` and `rows` use
    # What a refused write becomes (the catalog's row-level security: a domain error, logged
    # by the region refused, reelm.regions.cell.catalog_refusals); None: the error as it is.
    refusal: Callable[[DBAPIError], Exception | None] | None = None

    @classmethod
    def connect(cls, name: str, url: str, *, pool_size: int = 5) -> Database:
        engine = create_engine(
            sqlalchemy_url(url),
            pool_size=pool_size,
            max_overflow=10,
            # Connections are checked before use only after PING_IDLE seconds unused (below):
            # pool_pre_ping's round trip on every checkout was a quarter of a busy server's
            # time waiting on PostgreSQL (bench/feed.py, py-spy).
            connect_args={
                "application_name": f"reelm-{name}",
                # Plan every statement for its parameters: generic plans of prepared statements
                # chose scans 10-20x slower for the feed's lists (docs/performance.md).
                "options": "-c plan_cache_mode=force_custom_plan",
            },
        )
        event.listen(engine, "checkin", _returned)
        event.listen(engine, "checkout", functools.partial(_ping_if_idle, engine.dialect))
        autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
        return cls(
            name,
            url,
            engine,
            sessionmaker(engine, expire_on_commit=False),
            sessionmaker(autocommit, expire_on_commit=False),
            autocommit,
        )

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A unit of work: commits when the block ends normally, rolls back otherwise."""
        try:
            with self.sessions() as session, session.begin():
                yield session
        except DBAPIError as exc:
            refused = None if self.refusal is None else self.refusal(exc)
            if refused is None:
                raise
            # Not chained: the statement and its parameters (personal data, maybe) stay out
            # of any traceback that is logged.
            raise refused from None

    @contextmanager
    def snapshot(self) -> Iterator[Session]:
        """A transaction whose statements all read one snapshot (REPEATABLE READ), for reads
        that must agree with each other (a recount of rows and of what is owed for them)."""
        with self.sessions() as session, session.begin():
            session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
            yield session

    def retrying(self, work: Callable[[Session], T]) -> T:
        """``work`` in a unit of work, run again (up to RETRY_ATTEMPTS times in all) when
        PostgreSQL aborts it for a deadlock or a serialization failure, so the caller never
        sees either. ``work`` must do nothing outside the session that it cannot repeat."""
        for attempt in range(1, RETRY_ATTEMPTS + 1):
            try:
                with self.transaction() as session:
                    return work(session)
            except DBAPIError as exc:
                if attempt == RETRY_ATTEMPTS or not transient(exc):
                    raise
                log.info("%s: %s, attempt %d again", self.name, type(exc.orig).__name__, attempt)
                time.sleep(random.uniform(0, RETRY_PAUSE * 2**attempt))  # noqa: S311 - jitter
        raise AssertionError("unreachable")  # pragma: no cover

    @contextmanager
    def read(self) -> Iterator[Session]:
        """Reads outside a transaction: each statement sees what was committed when it began,
        and no BEGIN or COMMIT is sent (two round trips fewer). For the hot read paths (the
        gate, a feed page) whose statements need no common snapshot; writes go through
        `transaction`."""
        with self.readers() as session:
            yield session

    @contextmanager
    def rows(self) -> Iterator[Connection]:
        """`read` as a Core connection, for hot reads of plain rows (no ORM entities): an ORM
        session cost 0.51 ms of CPU a `SELECT 1`, a Core connection 0.31 ms (measured with
        statements built once, as bench/feed.py's page uses them)."""
        with self.reader.connect() as connection:
            yield connection

    def dispose(self) -> None:
        self.engine.dispose()


def uuid_array(ids: Iterable[uuid.UUID]) -> BindParameter[list[uuid.UUID]]:
    """One array parameter for `column == any_(uuid_array(ids))`: one statement whatever the
    number of ids (an IN list is a statement per length, and its parameters are planned one by
    one)."""
    return literal(list(ids), ARRAY(Uuid()))


def uuid_array_param(key: str) -> BindParameter[Sequence[uuid.UUID]]:
    """`uuid_array` as a named parameter whose value is given when the statement runs, for
    statements built once and kept (building one can cost more than running it)."""
    return bindparam(key, type_=ARRAY(Uuid()))
