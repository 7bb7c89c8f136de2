"""The public transparency report of a region, computed from its log up to one checkpoint."""

from __future__ import annotations

from dataclasses import dataclass

from reelm.transparency.log import TransparencyLog

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
    )
