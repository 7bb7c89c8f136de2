"""A cell: the running code of one region, holding that region's stores and nothing else.

``Cell.for_user`` is the residency guard: every read or write of a user's protected data goes
through it, and it refuses a user whose home is another region.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from uuid import UUID

from reelm.storage.blobs import BlobStore
from reelm.storage.crypto import UserCipher, blind_index, cipher_for
from reelm.storage.db import Database
from reelm.storage.keys import KeyStore
from reelm.transparency.log import BATCH_SECONDS, TransparencyLog
from reelm.transparency.pseudonyms import Pseudonym, region_pseudonym

log = logging.getLogger("reelm.residency")


class ResidencyViolation(RuntimeError):
    """Protected data of a user was asked of a region that is not the user's home."""

    def __init__(self, user_id: UUID, home_region: str, asked_region: str) -> None:
        super().__init__(
            f"user {user_id} lives in {home_region!r}; region {asked_region!r} refused access"
        )
        self.user_id = user_id
        self.home_region = home_region
        self.asked_region = asked_region


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
