"""What a user may see of the logs: every entry about them, each with an inclusion proof, and
the events still waiting for their batch window to close.

Entries name the user by pseudonyms only their home region can compute (per kind of entry
and month, from their log keys: ``reelm.accounts.logsubject``), so the page asks every
region's log for every name the user may have had."""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass
from typing import Any

from reelm.accounts.errors import NotFound
from reelm.accounts.logsubject import names_by_region
from reelm.accounts.models import DirectoryEntry
from reelm.bootstrap import Platform


@dataclass(frozen=True)
class ProvenEvent:
    region: str
    index: int
    kind: str
    event: dict[str, Any]
    leaf_hash: str
    tree_size: int
    proof: list[str]
    checkpoint: str

    @property
    def is_staff_access(self) -> bool:
        return self.kind == "staff.read"


@dataclass(frozen=True)
class PendingEvent:
    """Written, not yet published: its batch window has not closed."""

    region: str
    kind: str
    event: dict[str, Any]


def _names(platform: Platform, user_id: uuid.UUID) -> dict[str, set[str]]:
    with platform.catalog.transaction() as c:
        entry = c.get(DirectoryEntry, user_id)
    if entry is None or entry.state == "deleted":
        raise NotFound("no such account")
    home = platform.cell(entry.home_region)
    return names_by_region(platform, home.for_user(user_id, entry.home_region))


def pending_about(platform: Platform, user_id: uuid.UUID) -> list[PendingEvent]:
    """The user's events still queued (a staff read is queued before the data is read)."""
    found = [
        PendingEvent(region, row.kind, json.loads(row.entry))
        for region, names in _names(platform, user_id).items()
        for row in platform.cell(region).log.queued_about(names)
    ]
    found.sort(key=lambda e: str(e.event.get("time", "")), reverse=True)
    return found


def events_about(platform: Platform, user_id: uuid.UUID) -> list[ProvenEvent]:
    """Entries about the user in every region's log (a refused cross-region access is logged
    where it was refused; a migrated user's old region still names them by the same
    pseudonyms), with a proof against that log's newest checkpoint."""
    found: list[ProvenEvent] = []
    for region, names in _names(platform, user_id).items():
        cell = platform.cell(region)
        latest = cell.log.latest()
        if latest is None:
            continue
        for entry in cell.log.entries_about(names):
            if entry.idx >= latest.size:
                continue
            size, proof = cell.log.inclusion_proof(entry.idx, latest.size)
            found.append(
                ProvenEvent(
                    region=region,
                    index=entry.idx,
                    kind=entry.kind,
                    event=json.loads(entry.entry),
                    leaf_hash=base64.b64encode(entry.leaf_hash).decode(),
                    tree_size=size,
                    proof=[base64.b64encode(p).decode() for p in proof],
                    checkpoint=latest.note,
                )
            )
    found.sort(key=lambda e: str(e.event.get("time", "")), reverse=True)
    return found
