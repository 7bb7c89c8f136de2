"""The public transparency report of a region, computed from its log up to one checkpoint."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from reelm.transparency.auditor import RELEASE_KIND, release_of
from reelm.transparency.log import TransparencyLog

# The most release entries a report lists (the newest ones).
MAX_RELEASES = 100

# What each kind of entry means, in the order the report shows them.
KINDS: dict[str, str] = {
    "account.created": "Accounts created in this region",
    "account.deletion_requested": "Account deletions requested",
    "account.deletion_cancelled": "Account deletions cancelled by the user",
    "account.creation_undone": "Sign-ups taken back after a failure",
    "account.purged": "Accounts purged",
    "key.destroyed": "Data keys destroyed (crypto-shredding)",
    "residency.refused": "Cross-region access refused by the residency guard",
    "staff.granted": "Staff access granted",
    "staff.revoked": "Staff access revoked",
    "staff.read": "Staff reads of protected data",
    "legal.request": "Legal requests recorded",
    "moderation.removed": "Videos and comments removed by moderators",
    "moderation.restricted": "Videos withheld in a market",
    "moderation.suspended": "Accounts suspended",
    "moderation.reinstated": "Accounts or videos reinstated",
    "migration.started": "Region migrations started",
    "migration.arrived": "Users moved into this region",
    "migration.departed": "Users moved out of this region (their data purged here)",
    "migration.completed": "Region migrations completed (signed report anchored)",
    RELEASE_KIND: "Process starts, each stating its code and configuration digests",
}


@dataclass(frozen=True)
class Report:
    region: str
    origin: str
    size: int
    root_b64: str
    note: str
    counts: dict[str, int]
    staff_reads_by_reason: dict[str, int]
    # The newest release entries, newest first (auditor.release_of's fields).
    releases: list[dict[str, Any]]

    def rows(self) -> list[tuple[str, str, int]]:
        known = [(k, label, self.counts.get(k, 0)) for k, label in KINDS.items()]
        other = [(k, k, n) for k, n in sorted(self.counts.items()) if k not in KINDS]
        return known + other


def region_report(tlog: TransparencyLog) -> Report:
    import base64

    latest = tlog.latest()
    size = latest.size if latest else 0
    root = base64.b64encode(latest.root).decode() if latest else ""
    return Report(
        region=tlog.region,
        origin=tlog.origin,
        size=size,
        root_b64=root,
        note=latest.note if latest else "",
        counts=tlog.counts(size),
        staff_reads_by_reason=tlog.staff_reads_by_reason(size),
        releases=releases(tlog, size),
    )


def releases(tlog: TransparencyLog, size: int, limit: int = MAX_RELEASES) -> list[dict[str, Any]]:
    """What the release entries among the first ``size`` state, newest first."""
    found = (release_of(e.idx, e.entry) for e in tlog.entries_of_kind(RELEASE_KIND, size, limit))
    return [r for r in found if r is not None]
