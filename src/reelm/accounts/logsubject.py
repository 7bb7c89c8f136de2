"""How the transparency logs name a user: pseudonyms from log keys kept in the home region.

The keys (``reelm.transparency.pseudonyms``) are a protected field of the account, encrypted
under the user's data key: a migration moves them with the account, so a moved user still
finds the entries the old region wrote about them; the purge destroys the data key, and with
it every way to tie those entries to the account.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from reelm.accounts.models import Account, DirectoryEntry
from reelm.bootstrap import Platform
from reelm.regions.cell import UserScope
from reelm.regions.fence import hold
from reelm.storage.crypto import UserCipher
from reelm.storage.keys import KeyDestroyed
from reelm.transparency.pseudonyms import (
    REGION_KINDS,
    USER_KINDS,
    LogKeys,
    Pseudonym,
    periods_between,
)

FIELD = "log_keys"


def new_log_keys(cipher: UserCipher) -> tuple[bytes, LogKeys]:
    """Fresh keys for a new account, and their ciphertext for ``accounts.log_keys_ct``."""
    keys = LogKeys.new(datetime.now(UTC))
    return cipher.encrypt(FIELD, keys.dumps()), keys


def log_keys(session: Session, scope: UserScope) -> LogKeys:
    """The user's log keys, made now (in the caller's transaction) for an account older than
    them. Two transactions racing to make them: the second waits on the row and reads the
    first's, so every entry is named with keys that were kept."""
    cipher = scope.cipher()
    stored = session.scalar(select(Account.log_keys_ct).where(Account.user_id == scope.user_id))
    if stored is None:
        # A write to the account: behind a migration's fence it waits (UserMoving), or keys
        # made in the source after its rows were copied would be lost with the source's copy,
        # and the entries named with them could never be found by the user.
        hold(session, scope.user_id, row_lock=True)
        made, keys = new_log_keys(cipher)
        won = session.scalar(
            update(Account)
            .where(Account.user_id == scope.user_id, Account.log_keys_ct.is_(None))
            .values(log_keys_ct=made)
            .returning(Account.user_id)
        )
        if won is not None:
            return keys
        stored = session.scalar(select(Account.log_keys_ct).where(Account.user_id == scope.user_id))
        if stored is None:
            raise LookupError(f"no account {scope.user_id} in {scope.cell.region}")
    return LogKeys.loads(cipher.decrypt(FIELD, stored))


def subject(session: Session, scope: UserScope) -> Pseudonym:
    """The pseudonym that names the user in an entry written now."""
    return log_keys(session, scope).current


def subject_if_readable(session: Session, scope: UserScope) -> Pseudonym | None:
    """The pseudonym, or None once the data key is gone (a purge resumed after the key was
    destroyed): such an entry names no one, as the account can no longer be tied to it."""
    try:
        return subject(session, scope)
    except (KeyDestroyed, LookupError):
        return None


def rotate(scope: UserScope) -> None:
    """A new log key names the user's entries from now on; the old ones are kept so the user
    still finds their older entries."""
    with scope.cell.db.transaction() as s:
        keys = log_keys(s, scope)
        s.execute(
            update(Account)
            .where(Account.user_id == scope.user_id)
            .values(
                log_keys_ct=scope.cipher().encrypt(FIELD, keys.rotated(datetime.now(UTC)).dumps())
            )
        )


def names_by_region(platform: Platform, scope: UserScope) -> dict[str, set[str]]:
    """Every name the logs may use for the user, per region: their pseudonyms (the same in
    every region), each region's own name for them, and their id (entries written before
    pseudonyms existed)."""
    until = datetime.now(UTC)
    with scope.cell.db.transaction() as s:
        mine = log_keys(s, scope).all_names(USER_KINDS, until)
    with platform.catalog.transaction() as c:
        since = c.scalar(
            select(DirectoryEntry.created_at).where(DirectoryEntry.user_id == scope.user_id)
        )
    periods = periods_between(since or until, until)
    return {
        region: {
            *mine,
            *cell.region_pseudonym(scope.user_id).names(REGION_KINDS, periods),
            str(scope.user_id),
        }
        for region, cell in platform.cells.items()
    }


def user_subject_of(platform: Platform, user_id: uuid.UUID, home: str) -> Pseudonym:
    """The current pseudonym of a user, read in their home region in a transaction of its own
    (for callers that log with ``append_now``)."""
    cell = platform.cell(home)
    scope = cell.for_user(user_id, home)
    with cell.db.transaction() as s:
        return subject(s, scope)
