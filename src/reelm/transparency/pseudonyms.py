"""Who a log entry is about, said so that only the user (and their home region) can tell.

A public log that names accounts by their id, with exact times, lets anyone tie entries to
handles: the sign-up entry lands a few milliseconds after the profile appears, a moderation
entry names the owner of a public video. So an entry about a user carries a *pseudonym*:

    HMAC-SHA256(the user's log key, "reelm/log-subject/1" || kind || period)[:16], in hex

- The **log key** is 32 random bytes, protected data of the user: stored encrypted under their
  data key in their home region (``accounts.log_keys_ct``), moved by a region migration like
  every protected field, and destroyed with the data key (purge: crypto-shredding leaves every
  entry of the user unlinkable, even to the operator, backups included). The user may rotate
  it: a new key names entries from then on; older keys are kept so the user still finds older
  entries.
- The pseudonym differs per **kind** of entry and per **period** (calendar month). Tying one
  entry to a handle (a suspension is visible: the profile disappears) therefore ties nothing
  else: the user's staff reads, legal requests or sign-up carry other names.
- The user's own page recomputes every name they may have (kinds x months since the key's
  start) and asks each region's log for them.

A region that must log about a user of another region (a refused cross-region access) cannot
open that user's key (it holds its own keys only); it names them with a key derived from its
own secret and the user id (``region_pseudonym``): unlinkable for outsiders, recomputed by that
region when the user looks. Pure functions: no database, no I/O.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

KEY_BYTES = 32
# 128 bits: collisions between two users' names are out of reach.
NAME_HEX = 32
LABEL = b"reelm/log-subject/1"

# Kinds whose subject is a user named by their own log key.
USER_KINDS: tuple[str, ...] = (
    "account.created",
    "account.deletion_requested",
    "account.deletion_cancelled",
    "account.purged",
    "key.destroyed",
    "staff.read",
    "legal.request",
    "migration.arrived",
    "migration.departed",
    "moderation.suspended",
    "moderation.reinstated",
    "intercell.sent_for",
)
# Kinds logged about a user by a region that does not hold their key.
REGION_KINDS: tuple[str, ...] = ("residency.refused",)


def period_of(moment: datetime) -> str:
    """The period a pseudonym is valid for: the UTC calendar month."""
    return moment.astimezone(UTC).strftime("%Y-%m")


def month_start(moment: datetime) -> datetime:
    """A public date to the month (a profile's sign-up date): midnight UTC on the first."""
    utc = moment.astimezone(UTC)
    return datetime(utc.year, utc.month, 1, tzinfo=UTC)


def periods_between(first: datetime, last: datetime) -> list[str]:
    """Every month from first's to last's, both included."""
    a, b = first.astimezone(UTC), last.astimezone(UTC)
    year, month, out = a.year, a.month, []
    while (year, month) <= (b.year, b.month):
        out.append(f"{year:04d}-{month:02d}")
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return out


@dataclass(frozen=True)
class Pseudonym:
    """A user as the log names them: one key, a name per kind and period."""

    key: bytes

    def name(self, kind: str, period: str) -> str:
        message = LABEL + b"\x00" + kind.encode() + b"\x00" + period.encode()
        return hmac.new(self.key, message, hashlib.sha256).hexdigest()[:NAME_HEX]

    def names(self, kinds: Iterable[str], periods: Iterable[str]) -> set[str]:
        wanted = list(periods)
        return {self.name(kind, period) for kind in kinds for period in wanted}


def region_pseudonym(region_secret: bytes, user_id: UUID) -> Pseudonym:
    """How a region names a user of another region (it cannot open their log key)."""
    return Pseudonym(hmac.new(region_secret, LABEL + user_id.bytes, hashlib.sha256).digest())


@dataclass(frozen=True)
class LogKey:
    since: datetime
    key: bytes


@dataclass(frozen=True)
class LogKeys:
    """A user's log keys, oldest first; the last one names new entries."""

    keys: tuple[LogKey, ...]

    @classmethod
    def new(cls, at: datetime) -> LogKeys:
        return cls((LogKey(at, secrets.token_bytes(KEY_BYTES)),))

    def rotated(self, at: datetime) -> LogKeys:
        return LogKeys((*self.keys, LogKey(at, secrets.token_bytes(KEY_BYTES))))

    @property
    def current(self) -> Pseudonym:
        return Pseudonym(self.keys[-1].key)

    def all_names(self, kinds: Iterable[str], until: datetime) -> set[str]:
        """Every name these keys gave, or may have given, to an entry of these kinds."""
        wanted = list(kinds)
        names: set[str] = set()
        for i, key in enumerate(self.keys):
            end = self.keys[i + 1].since if i + 1 < len(self.keys) else until
            names |= Pseudonym(key.key).names(wanted, periods_between(key.since, end))
        return names

    def dumps(self) -> str:
        return json.dumps(
            [
                {
                    "since": k.since.astimezone(UTC).isoformat(),
                    "key": base64.b64encode(k.key).decode(),
                }
                for k in self.keys
            ]
        )

    @classmethod
    def loads(cls, text: str) -> LogKeys:
        items = json.loads(text)
        return cls(
            tuple(
                LogKey(datetime.fromisoformat(item["since"]), base64.b64decode(item["key"]))
                for item in items
            )
        )
