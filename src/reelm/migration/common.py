"""What every part of a migration shares: its error, its fault injection, batching helpers."""

from __future__ import annotations

import logging
import os
import signal
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from sqlalchemy import any_, bindparam
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import UUID as PG_UUID

from reelm.accounts.errors import AccountError

log = logging.getLogger("reelm.migration")

BEFORE_SWITCH = ("planned", "copied", "verified")
DONE = ("attested",)
DEFAULT_BATCH = 200
RUN_LOCK_SPACE = 0x6D67  # first key of the run's advisory lock: "mg"


class MigrationError(AccountError):
    """A migration cannot start or go on (a clear message for the operator)."""

    slug = "migration-refused"
    status = 409
    title = "Migration refused"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)


# ---- fault injection -------------------------------------------------------------------------

FAULT_ENV = "REELM_MIGRATION_FAULT"
FAULT_POINTS = (
    "after-start",
    "after-precopy",
    "after-freeze",
    # The source's rows read and decrypted, nothing written in the destination yet.
    "after-export",
    # The destination's copy of the rows committed, its receipt not yet returned.
    "after-import",
    "after-copy",
    "after-verify",
    "after-switch",
    "after-activate",
    "after-purge-blobs",
    "after-purge-keys",
    "after-purge",
    "before-report",
    "after-report",
)


class Faults:
    """Kill the process (SIGKILL, like a crash) at a named step boundary, for the tests.

    ``REELM_MIGRATION_FAULT=after-copy`` kills at the first batch's copy; ``after-copy:3``
    at the third time the point is reached."""

    def __init__(self, spec: str | None = None) -> None:
        spec = spec if spec is not None else os.environ.get(FAULT_ENV, "")
        self.point, _, nth = spec.partition(":")
        if self.point and self.point not in FAULT_POINTS:
            raise MigrationError(f"unknown fault point {self.point!r}")
        self.remaining = int(nth or 1)

    def __call__(self, point: str) -> None:
        if point != self.point:
            return
        self.remaining -= 1
        if self.remaining <= 0:
            log.warning("fault injection: killing the process at %s", point)
            os.kill(os.getpid(), signal.SIGKILL)


Fault = Callable[[str], None]


def no_fault(point: str) -> None:
    return None


# ---- batching --------------------------------------------------------------------------------


def among(column: Any, ids: Iterable[uuid.UUID]) -> Any:
    """``column = ANY(:ids)``: one array parameter, however many ids (an IN list takes one
    parameter per id, and PostgreSQL's protocol allows 65,535)."""
    return column == any_(bindparam(None, list(ids), type_=ARRAY(PG_UUID(as_uuid=True))))


def batches(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
