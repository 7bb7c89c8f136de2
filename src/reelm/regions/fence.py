"""The migration fence: while a user's data is being moved to another region, writes to the
source region wait, and after the switch the source refuses them.

Every write of a user's protected data in a region takes ``hold(session, user_id)`` in its
transaction first: a KEY SHARE lock on the user's account row, which checks the row's
``migration`` column. The migration freezes a user by locking the row FOR UPDATE (it waits
for the writes in flight to commit) and setting ``migration = 'frozen'``; from then on
``hold`` raises ``UserMoving``, which the web layer answers by retrying the request after a
short pause (by then the directory points to the new home) or, for a streamed upload, with
503 and Retry-After so the client resumes. No write can slip between the last copy and the
switch, and none is lost: it is retried against the new home.
"""

from __future__ import annotations

import uuid

from sqlalchemy import text
from sqlalchemy.orm import Session

_HOLD = text("SELECT migration FROM accounts WHERE user_id = :user_id FOR KEY SHARE")
_HOLD_ROW = text("SELECT migration FROM accounts WHERE user_id = :user_id FOR UPDATE")


class UserMoving(RuntimeError):
    """The user's data is moving to another region (or has moved): retry in a moment, after
    reading the directory again."""

    def __init__(self, user_id: uuid.UUID) -> None:
        super().__init__(f"user {user_id} is moving between regions")
        self.user_id = user_id


def hold(session: Session, user_id: uuid.UUID, *, row_lock: bool = False) -> None:
    """Keep the user from being frozen until this transaction ends, or raise UserMoving.

    ``row_lock``: for a transaction that goes on to lock the account row FOR UPDATE itself
    (two concurrent KEY SHARE holders both upgrading would deadlock)."""
    row = session.execute(_HOLD_ROW if row_lock else _HOLD, {"user_id": user_id}).first()
    if row is None or row[0] is not None:
        raise UserMoving(user_id)


def is_settled(session: Session, user_id: uuid.UUID) -> bool:
    """Whether the user lives here and is not moving (a read-only check, no lock)."""
    row = session.execute(
        text("SELECT migration FROM accounts WHERE user_id = :user_id"), {"user_id": user_id}
    ).first()
    return row is not None and row[0] is None
