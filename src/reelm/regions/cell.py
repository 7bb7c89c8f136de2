"""A cell: the running code of one region, holding that region's stores and nothing else.

``Cell.for_user`` is the residency guard: every read or write of a user's protected data goes
through it, and it refuses a user whose home is another region.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from uuid import UUID

from psycopg import errors as pg_errors
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from reelm.storage.blobs import BlobStore
from reelm.storage.crypto import UserCipher, blind_index, cipher_for
from reelm.storage.db import Database
from reelm.storage.keys import KeyStore
from reelm.transparency.log import BATCH_SECONDS, TransparencyLog
from reelm.transparency.pseudonyms import Pseudonym, region_pseudonym

log = logging.getLogger("reelm.residency")


class ResidencyRefused(RuntimeError):
    """A region was refused something that is another region's (answered 421)."""


class ResidencyViolation(ResidencyRefused):
    """Protected data of a user was asked of a region that is not the user's home."""

    def __init__(self, user_id: UUID, home_region: str, asked_region: str) -> None:
        super().__init__(
            f"user {user_id} lives in {home_region!r}; region {asked_region!r} refused access"
        )
        self.user_id = user_id
        self.home_region = home_region
        self.asked_region = asked_region


class CatalogWriteRefused(ResidencyRefused):
    """The catalog refused a region's write of another region's row (its row-level security,
    catalog revision c0014_catalog_rls) or a switch or market route not its to make.
    ``target``: the catalog table, or what was refused ("the switch", "the market route")."""

    def __init__(self, region: str, target: str) -> None:
        super().__init__(f"the catalog refused region {region!r} a write of {target}")
        self.region = region
        self.target = target


# What the catalog says when it refuses (the messages of PostgreSQL's row-level security and
# grants, and of c0014's trigger and functions): the table named, or the refused operation.
_TABLE = re.compile(r'table "?(\w+)"?')
_OPERATION = re.compile(r"^residency: (.+?) refused")


def refused_target(message: str) -> str:
    """The table (or operation) a catalog refusal names: never a row's values."""
    found = _OPERATION.search(message) or _TABLE.search(message)
    return found.group(1) if found else "the catalog"


class NotInThisCell(RuntimeError):
    """A region's stores were asked of a process that does not hold them (a cell holds its own
    region's only): whatever must happen there goes through the inter-cell protocol."""

    def __init__(self, region: str, local: Iterable[str]) -> None:
        held = ", ".join(sorted(local)) or "none"
        super().__init__(f"region {region!r} is not held by this process (it holds: {held})")
        self.region = region


@dataclass(frozen=True)
class UserScope:
    """Access to one user's protected data in their home cell."""

    cell: Cell
    user_id: UUID

    def cipher(self, *, create: bool = False) -> UserCipher:
        return cipher_for(self.cell.keys, self.user_id, create=create)


@dataclass
class Cell:
    region: str
    db: Database
    keys: KeyStore
    blobs: BlobStore

    origin: str = ""
    log_batch_seconds: int = BATCH_SECONDS
    _index_keys: dict[int, bytes] = field(default_factory=dict, repr=False)
    _index_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @cached_property
    def log(self) -> TransparencyLog:
        return TransparencyLog(
            self.region,
            self.origin,
            self.db,
            self.keys.signing_seed("log-signing"),
            self.log_batch_seconds,
        )

    def region_pseudonym(self, user_id: UUID) -> Pseudonym:
        """How this region's log names a user it does not hold the key of (a refused access):
        keyed by this region's secret, so only this region can recompute it for the user."""
        return region_pseudonym(self._pseudonym_secret, user_id)

    @cached_property
    def _pseudonym_secret(self) -> bytes:
        # Its own secret in the key store: not a blind-index key (those rotate and are
        # destroyed, and the user's page must recompute this name later).
        return self.keys.signing_seed("log-pseudonym")

    def for_user(self, user_id: UUID, home_region: str) -> UserScope:
        """The guard. home_region comes from the directory, never from the request."""
        if home_region != self.region:
            # Ids are random: logging one reveals nothing about the person (the application
            # log is not public; the transparency log gets a pseudonym).
            log.warning(
                "residency violation refused: user=%s home=%s asked=%s",
                user_id,
                home_region,
                self.region,
            )
            self.log.append_now(
                "residency.refused",
                self.region_pseudonym(user_id),
                {"home_region": home_region, "asked_region": self.region},
            )
            raise ResidencyViolation(user_id, home_region, self.region)
        return UserScope(self, user_id)

    def catalog_refused(self, message: str) -> CatalogWriteRefused:
        """The catalog refused this region a write (``message``: PostgreSQL's): logged here
        and in this region's transparency log, as the guard's refusals are. Neither names a
        user: the catalog's message names only the table."""
        target = refused_target(message)
        log.warning("catalog write refused: region=%s target=%s", self.region, target)
        self.log.append_now(
            "residency.refused",
            f"catalog:{target}",
            {"asked_region": self.region, "catalog": target},
        )
        return CatalogWriteRefused(self.region, target)

    def blind_indexes(
        self, epochs: Iterable[int], field: str, value: str, *, all_live: bool = False
    ) -> list[bytes]:
        """``value``'s blind index under each of these index-key epochs (read from the
        region's database by reelm.accounts.indexes). ``all_live``: these are every live
        epoch, so the keys of others are dropped from memory (a retired key leaves too)."""
        wanted = list(epochs)
        with self._index_lock:
            if all_live:
                for gone in set(self._index_keys) - set(wanted):
                    del self._index_keys[gone]
            for epoch in wanted:
                if epoch not in self._index_keys:
                    self._index_keys[epoch] = self.keys.index_key(epoch)
            keys = [self._index_keys[epoch] for epoch in wanted]
        return [blind_index(key, field, value) for key in keys]


def catalog_refusals(
    cells: Mapping[str, Cell], catalog: Database
) -> Callable[[DBAPIError], Exception | None]:
    """``catalog``'s refusal hook (``Database.refusal``): a write the catalog refused for lack
    of privilege becomes CatalogWriteRefused, logged by the cell of the region whose role the
    catalog connection uses (asked of the catalog once: ``reelm_role_region()``). The owner's
    connection (the single-machine mode) is in no region: its errors pass unchanged."""
    region: list[str | None] = []

    def refused(exc: DBAPIError) -> Exception | None:
        if not isinstance(exc.orig, pg_errors.InsufficientPrivilege):
            return None
        if not region:
            try:
                with catalog.rows() as conn:
                    region.append(conn.scalar(text("SELECT reelm_role_region()")))
            except DBAPIError:  # a catalog from before c0014_catalog_rls: the error as it is
                return None
        acting = region[0]
        if acting is None or acting not in cells:
            return None
        return cells[acting].catalog_refused(exc.orig.diag.message_primary or "")

    return refused
