"""What a user may see of the logs: every entry about them, each with an inclusion proof."""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass
from typing import Any

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


def events_about(platform: Platform, user_id: uuid.UUID) -> list[ProvenEvent]:
    """Entries whose subject is the user, in every region's log (a refused cross-region access
    is logged where it was refused), with a proof against that log's newest checkpoint."""
    found: list[ProvenEvent] = []
    for region, cell in platform.cells.items():
        latest = cell.log.latest()
        if latest is None:
            continue
        for entry in cell.log.entries_about(str(user_id)):
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
