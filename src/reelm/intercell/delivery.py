"""The sender's side: ``deliver`` and the outbox.

``deliver(platform, region, kind, body, acting_for=...)`` is the single entry point for
anything that must act in another region's cell. When ``region`` is local to this process the
kind's handler runs here and now; otherwise the delivery is written to the sender region's
outbox in the caller's transaction, with its job (``intercell.send``) on the sender region's
queue, which PUTs it signed to the peer until the peer acknowledges it. A peer that is down
loses nothing: the row waits until acknowledged.

Every delivery that leaves its region is counted (``intercell_counts``, one transparency log
entry per hour, destination and kind) and named in the sender region's log under the acting
user's pseudonym (``intercell.sent_for``), which their "Who touched your data" page finds.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from reelm.accounts.models import DirectoryEntry
from reelm.bootstrap import Platform
from reelm.intercell.kinds import KINDS, handler_of
from reelm.intercell.models import Outbox, SentCount
from reelm.transparency.log import window_start

log = logging.getLogger("reelm.intercell")

SEND_TASK = "intercell.send"
QUEUE = "intercell"
# The sealed body's field name in the acting user's cipher.
BODY_FIELD = "intercell_body"
# An unacknowledged delivery is tried again 2, 4, 8 ... s later, 20 times: about 24 days.
SEND_ATTEMPTS = 20
SEND_BACKOFF = 2
# Log kinds: the hourly count of a region's deliveries, and the acting user's own entry.
SENT_KIND = "intercell.sent"
SENT_FOR_KIND = "intercell.sent_for"


def is_local(platform: Platform, region: str) -> bool:
    """Whether this process runs ``region``'s cell. A region listed in ``peers`` is another
    cell's, even when the process could open its database (single-machine mode with peers:
    the tests' senders; a cell never lists itself)."""
    return platform.is_local(region) and region not in platform.settings.peers


def home_of(platform: Platform, user_id: uuid.UUID) -> str | None:
    with platform.catalog.transaction() as c:
        return c.scalar(select(DirectoryEntry.home_region).where(DirectoryEntry.user_id == user_id))


def deliver(
    platform: Platform,
    region: str,
    kind: str,
    body: dict[str, Any],
    *,
    acting_for: uuid.UUID,
    delivery_id: uuid.UUID | None = None,
    session: Session | None = None,
) -> Any:
    """Deliver ``body`` of ``kind`` to ``region``'s cell, on behalf of ``acting_for`` (a user of
    a region of this cell). Returns the handler's result when it ran in-process, None when
    queued. ``session``: the caller's transaction in the acting user's home region, which the
    outbox row and the counts join (else a transaction of their own)."""
    if kind not in KINDS:
        raise ValueError(f"no inter-cell kind {kind!r}")
    ident = delivery_id or uuid.uuid4()
    sender = home_of(platform, acting_for)
    if sender is None or not is_local(platform, sender):
        raise ValueError(f"user {acting_for} is not homed in a region of this cell")
    if is_local(platform, region):
        result = handler_of(kind)(platform, region, acting_for, ident, body)
        if sender != region:
            with _in(platform, sender, session) as s:
                _count(platform, s, sender, region, kind, acting_for)
        return result
    from reelm.regions.fence import hold

    cell = platform.cell(sender)
    sealed = cell.for_user(acting_for, sender).cipher().encrypt(BODY_FIELD, json.dumps(body))
    with _in(platform, sender, session) as s:
        # A user being moved sends nothing from the old region: their outbox rows would stay
        # behind, sealed under a key the new region does not hold.
        hold(s, acting_for)
        s.add(Outbox(id=ident, to_region=region, kind=kind, acting_for=acting_for, body_ct=sealed))
        # The job in the same transaction: a crash leaves both or neither.
        s.execute(
            text(
                "INSERT INTO procrastinate_jobs (queue_name, task_name, args) "
                "VALUES (:queue, :task, CAST(:args AS jsonb))"
            ),
            {"queue": QUEUE, "task": SEND_TASK, "args": json.dumps({"delivery": str(ident)})},
        )
        _count(platform, s, sender, region, kind, acting_for)
    return None


@contextmanager
def _in(platform: Platform, region: str, session: Session | None) -> Iterator[Session]:
    if session is not None:
        yield session
        return
    with platform.cell(region).db.transaction() as s:
        yield s


def _count(
    platform: Platform,
    s: Session,
    sender: str,
    region: str,
    kind: str,
    acting_for: uuid.UUID,
) -> None:
    from reelm.accounts.logsubject import subject

    cell = platform.cell(sender)
    period = window_start(datetime.now(UTC), cell.log_batch_seconds)
    s.execute(
        insert(SentCount)
        .values(period_start=period, to_region=region, kind=kind, count=1)
        .on_conflict_do_update(
            index_elements=["period_start", "to_region", "kind"],
            set_={"count": SentCount.count + 1},
        )
    )
    cell.log.append(
        s,
        SENT_FOR_KIND,
        subject(s, cell.for_user(acting_for, sender)),
        {"to": region, "kind": kind},
    )


def log_counts(platform: Platform, region: str, now: datetime | None = None) -> int:
    """One ``intercell.sent`` entry per closed period, destination and kind, with the count
    (hourly, by the region's worker). Returns how many entries were written."""
    cell = platform.cell(region)
    current = window_start(now or datetime.now(UTC), cell.log_batch_seconds)
    with cell.db.transaction() as s:
        rows = list(
            s.scalars(
                select(SentCount)
                .where(SentCount.logged.is_(False), SentCount.period_start < current)
                .with_for_update(skip_locked=True)
            )
        )
        for row in rows:
            cell.log.append(
                s,
                SENT_KIND,
                None,
                {
                    "to": row.to_region,
                    "kind": row.kind,
                    "count": row.count,
                    "period": row.period_start.strftime("%Y-%m-%dT%H:%M:%SZ"),
                },
            )
            row.logged = True
    return len(rows)


def drop_from(s: Session, user_id: uuid.UUID) -> None:
    """At the purge of ``user_id``: their unsent deliveries (sealed under the key being
    destroyed, never sendable again) and their jobs."""
    ids = [str(i) for i in s.scalars(select(Outbox.id).where(Outbox.acting_for == user_id))]
    if not ids:
        return
    s.execute(
        text(
            "DELETE FROM procrastinate_jobs WHERE task_name = :task "
            "AND args->>'delivery' = ANY(:ids) AND status <> 'doing'"
        ),
        {"task": SEND_TASK, "ids": ids},
    )
    s.execute(delete(Outbox).where(Outbox.acting_for == user_id))
