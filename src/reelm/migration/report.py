"""The migration report: a signed JSON document anyone can check against the public logs.

``body``: the migration (id, market, destination), totals, and per user the source, counts,
the verified digest and the log entries of its departure (source log) and arrival
(destination log). ``signature``: Ed25519 by the destination region's log key over
``reelm-migration-report/1\\n`` + SHA-256(canonical body) (the prefix keeps a report signature
from ever passing for a checkpoint signature). ``anchors``: for each region involved, the
``migration.completed`` entry carrying SHA-256(body), its index, a checkpoint signed by that
region's log and the inclusion proof of the entry under it.

``verify_report`` checks the signature, every anchor (entry, proof, checkpoint signature),
and, given access to the logs (a platform or a deployment's public API), that every user's
departure and arrival entries are in the logs with the digest the report states.

Building a report is idempotent: the body is a function of the journal and the logs (its time
is the journal's last change, not the clock), and a region whose log already holds the body's
``migration.completed`` entry is not given a second one. A crash between logging the report and
storing it is resumed into the same report, logged once."""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import func, select, text

from reelm.accounts.logsubject import subject_if_readable
from reelm.bootstrap import Platform
from reelm.migration.models import Migration, MigrationUser
from reelm.transparency.log import TransparencyLog
from reelm.transparency.models import LogEntry
from reelm.transparency.pseudonyms import Pseudonym, period_of
from reelm.transparency.verify import (
    VerificationError,
    VerifierKey,
    leaf_hash,
    open_note,
    verify_inclusion,
)

FORMAT = "reelm-migration-report/1"
SIGNING_PREFIX = b"reelm-migration-report/1\n"


def body_sha256(body: dict[str, Any]) -> bytes:
    return hashlib.sha256(rfc8785.dumps(body)).digest()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _pseudonyms(platform: Platform, region: str, users: list[uuid.UUID]) -> dict[str, Pseudonym]:
    """The moved users' pseudonyms, read where their log keys now are (the destination)."""
    cell = platform.cell(region)
    found: dict[str, Pseudonym] = {}
    with cell.db.transaction() as s:
        for user_id in users:
            named = subject_if_readable(s, cell.for_user(user_id, region))
            if named is not None:
                found[str(user_id)] = named
    return found


def _entries(
    platform: Platform, region: str, named: dict[str, Pseudonym], kind: str, migration: str
) -> dict[str, tuple[int, str]]:
    """Index and subject of this migration's ``kind`` entry about each user in the region's
    log. Entries name users by pseudonyms (per kind and month): each is matched to the user
    whose pseudonym for the entry's month it is (or, written before pseudonyms, their id)."""
    found: dict[str, tuple[int, str]] = {}
    by_name: dict[str, str] = {user: user for user in named}
    months: set[str] = set()
    with platform.cell(region).db.transaction() as s:
        rows = s.execute(
            select(LogEntry.subject, LogEntry.idx, LogEntry.entry)
            .where(
                LogEntry.kind == kind,
                text("position(:needle IN entry) > 0").bindparams(needle=migration.encode()),
            )
            .order_by(LogEntry.idx)
        ).all()
    for subject, idx, entry in rows:
        event = json.loads(entry)
        if subject is None or event.get("details", {}).get("migration") != migration:
            continue
        month = period_of(datetime.fromisoformat(event["time"]))
        if month not in months:
            months.add(month)
            by_name.update({p.name(kind, month): user for user, p in named.items()})
        user = by_name.get(subject)
        if user is not None:
            found.setdefault(user, (int(idx), subject))
    return found


_FIND_ANCHOR = (
    "SELECT {column} FROM {table} WHERE kind = 'migration.completed' "
    "AND position(CAST(:sha AS bytea) IN entry) > 0 ORDER BY {column} LIMIT 1"
)
_ANCHOR_ENTRY = text(_FIND_ANCHOR.format(column="idx", table="tlog_entries"))
_ANCHOR_QUEUED = text(_FIND_ANCHOR.format(column="id", table="tlog_queue"))


def _anchored(tlog: TransparencyLog, migration_id: uuid.UUID, sha: bytes) -> LogEntry:
    """The region's ``migration.completed`` entry of this report, appended if the log has
    none yet (queued counts: a crash may have left it there), and integrated."""
    needle = {"sha": sha.hex().encode()}
    with tlog.db.transaction() as s:
        if s.scalar(_ANCHOR_ENTRY, needle) is None and s.scalar(_ANCHOR_QUEUED, needle) is None:
            tlog.append(
                s,
                "migration.completed",
                None,
                {"migration": str(migration_id), "report_sha256": sha.hex()},
            )
    tlog.integrate_all()
    with tlog.db.transaction() as s:
        entry = s.get(LogEntry, s.scalar(_ANCHOR_ENTRY, needle))
        assert entry is not None
        return entry


def build_report(platform: Platform, migration_id: uuid.UUID) -> dict[str, Any]:
    with platform.catalog.transaction() as c:
        migration = c.get(Migration, migration_id)
        assert migration is not None
        # The report's time: when its journal last changed. Built again from the same
        # journal (after a crash), it is the same report, with the same hash.
        as_of = c.scalar(
            select(func.max(MigrationUser.updated_at)).where(
                MigrationUser.migration_id == migration_id
            )
        )
        users = list(
            c.execute(
                select(
                    MigrationUser.user_id,
                    MigrationUser.source,
                    MigrationUser.state,
                    MigrationUser.rows,
                    MigrationUser.blobs,
                    MigrationUser.blob_bytes,
                    MigrationUser.digest,
                    MigrationUser.error,
                )
                .where(MigrationUser.migration_id == migration_id)
                .order_by(MigrationUser.user_id)
            )
        )
    dest = migration.destination
    moved = [u for u in users if u.state == "attested"]
    subjects_by_source: dict[str, list[str]] = {}
    for u in moved:
        subjects_by_source.setdefault(u.source, []).append(str(u.user_id))
    mid = str(migration_id)
    named = _pseudonyms(platform, dest, [u.user_id for u in moved])
    arrived = _entries(platform, dest, named, "migration.arrived", mid)
    departed: dict[str, tuple[int, str]] = {}
    destroyed: dict[str, tuple[int, str]] = {}
    for region in subjects_by_source:
        departed.update(_entries(platform, region, named, "migration.departed", mid))
        destroyed.update(_entries(platform, region, named, "key.destroyed", mid))
    body: dict[str, Any] = {
        "format": FORMAT,
        "migration": str(migration_id),
        "market": migration.market,
        "destination": dest,
        "started_at": migration.created_at.astimezone(UTC).isoformat(),
        "as_of": (as_of or migration.created_at).astimezone(UTC).isoformat(),
        "complete": len(moved) == len(users),
        "totals": {
            "users": len(moved),
            "failed": sum(1 for u in users if u.state == "failed"),
            "rows": sum(u.rows for u in moved),
            "blobs": sum(u.blobs for u in moved),
            "bytes": sum(u.blob_bytes for u in moved),
        },
        "sources": {
            region: len(subjects) for region, subjects in sorted(subjects_by_source.items())
        },
        "users": [
            {
                "user": str(u.user_id),
                "from": u.source,
                "rows": u.rows,
                "blobs": u.blobs,
                "bytes": u.blob_bytes,
                "digest": (u.digest or b"").hex(),
                "departed": _index(departed, u.user_id),
                "key_destroyed": _index(destroyed, u.user_id),
                "arrived": _index(arrived, u.user_id),
                # How the logs name the user in each entry: pseudonyms of these kinds only.
                "subjects": {
                    kind: found[str(u.user_id)][1]
                    for kind, found in (
                        ("migration.departed", departed),
                        ("key.destroyed", destroyed),
                        ("migration.arrived", arrived),
                    )
                    if str(u.user_id) in found
                },
            }
            for u in moved
        ],
        "failed": [
            {"user": str(u.user_id), "from": u.source, "reason": u.error or ""}
            for u in users
            if u.state == "failed"
        ],
    }
    sha = body_sha256(body)
    dest_log = platform.cell(dest).log
    signature = dest_log.sign_document(SIGNING_PREFIX, sha)
    anchors: dict[str, Any] = {}
    for region in sorted({dest, *subjects_by_source}):
        tlog = platform.cell(region).log
        mine = _anchored(tlog, migration_id, sha)
        checkpoint = tlog.latest()
        assert checkpoint is not None
        _, proof = tlog.inclusion_proof(mine.idx, checkpoint.size)
        anchors[region] = {
            "index": int(mine.idx),
            "entry": _b64(mine.entry),
            "checkpoint": checkpoint.note,
            "proof": [_b64(p) for p in proof],
            "verifier_key": str(tlog.verifier_key),
        }
    return {
        "body": body,
        "report_sha256": sha.hex(),
        "signature": _b64(signature),
        "anchors": anchors,
    }


def _index(found: dict[str, tuple[int, str]], user_id: uuid.UUID) -> int | None:
    hit = found.get(str(user_id))
    return None if hit is None else hit[0]


def dumps(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=1, sort_keys=True)


# ---- verification -----------------------------------------------------------------------------


@dataclass(frozen=True)
class LoggedEntry:
    entry: bytes
    included: bool


# region, index -> the entry's bytes and whether it is in the region's current signed tree.
EntryFetcher = Callable[[str, int], LoggedEntry | None]


class ReportInvalid(Exception):
    pass


def platform_fetcher(platform: Platform) -> EntryFetcher:
    """Read entries from the regions' own logs and prove them in the latest checkpoint."""

    def fetch(region: str, index: int) -> LoggedEntry | None:
        if region not in platform.cells:
            return None
        tlog = platform.cell(region).log
        found = tlog.entries(index, index + 1)
        checkpoint = tlog.latest()
        if not found or checkpoint is None or checkpoint.size <= index:
            return None
        opened = open_note(checkpoint.note, tlog.verifier_key)
        _, proof = tlog.inclusion_proof(index, opened.size)
        try:
            verify_inclusion(index, opened.size, leaf_hash(found[0].entry), proof, opened.root)
        except VerificationError:
            return LoggedEntry(found[0].entry, False)
        return LoggedEntry(found[0].entry, True)

    return fetch


def verify_report(
    report: dict[str, Any],
    keys: dict[str, VerifierKey],
    fetch: EntryFetcher | None = None,
) -> list[str]:
    """Problems found (empty: the report verifies). ``keys``: each region's log verifier key,
    obtained independently of the report (pinned, or from the deployment)."""
    try:
        return _verify(report, keys, fetch)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        return [f"not a migration report ({type(exc).__name__}: {exc})"[:300]]


def _verify(
    report: dict[str, Any], keys: dict[str, VerifierKey], fetch: EntryFetcher | None
) -> list[str]:
    problems: list[str] = []
    try:
        body = report["body"]
        sha = body_sha256(body)
        dest = body["destination"]
    except (KeyError, TypeError) as exc:
        return [f"not a migration report: {exc}"]
    if body.get("format") != FORMAT:
        problems.append(f"unknown format {body.get('format')!r}")
    if report.get("report_sha256") != sha.hex():
        problems.append("report_sha256 does not match the body")
    key = keys.get(dest)
    if key is None:
        problems.append(f"no verifier key for the destination region {dest!r}")
    else:
        try:
            Ed25519PublicKey.from_public_bytes(key.public_key).verify(
                base64.b64decode(report.get("signature", "")), SIGNING_PREFIX + sha
            )
        except (InvalidSignature, ValueError):
            problems.append("the signature does not verify: the body was changed or not signed")
    users = body.get("users", [])
    totals = body.get("totals", {})
    for name in ("rows", "blobs", "bytes"):
        if sum(int(u.get(name, 0)) for u in users) != totals.get(name):
            problems.append(f"totals.{name} is not the sum over users")
    if len(users) != totals.get("users"):
        problems.append("totals.users is not the number of users listed")
    regions = {dest, *body.get("sources", {})}
    anchors = report.get("anchors", {})
    for region in sorted(regions):
        problems += _check_anchor(region, anchors.get(region), keys.get(region), sha)
    if fetch is not None:
        problems += _check_users(body, fetch)
    return problems


def _check_anchor(
    region: str, anchor: dict[str, Any] | None, key: VerifierKey | None, sha: bytes
) -> list[str]:
    if anchor is None:
        return [f"no anchor in the {region} log"]
    if key is None:
        return [f"no verifier key for region {region!r}"]
    try:
        entry = base64.b64decode(anchor["entry"])
        event = json.loads(entry)
        if event.get("kind") != "migration.completed" or event.get("region") != region:
            return [f"{region}: the anchor is not a migration.completed entry of {region}"]
        if event.get("details", {}).get("report_sha256") != sha.hex():
            return [f"{region}: the logged report digest is not this report's"]
        checkpoint = open_note(anchor["checkpoint"], key)
        proof = [base64.b64decode(p) for p in anchor["proof"]]
        verify_inclusion(
            int(anchor["index"]), checkpoint.size, leaf_hash(entry), proof, checkpoint.root
        )
    except (KeyError, ValueError, TypeError, VerificationError) as exc:
        return [f"{region}: the anchor does not verify ({exc})"]
    return []


def _check_users(body: dict[str, Any], fetch: EntryFetcher) -> list[str]:
    problems: list[str] = []
    migration = body["migration"]
    for user in body.get("users", []):
        for kind, region, index in (
            ("migration.departed", user.get("from"), user.get("departed")),
            ("key.destroyed", user.get("from"), user.get("key_destroyed")),
            ("migration.arrived", body["destination"], user.get("arrived")),
        ):
            where = f"user {user.get('user')}: {kind}"
            if index is None:
                problems.append(f"{where} has no log entry")
                continue
            found = fetch(region, int(index))
            if found is None:
                problems.append(f"{where} not found in the {region} log at {index}")
                continue
            event = json.loads(found.entry)
            details = event.get("details", {})
            if (
                event.get("kind") != kind
                or event.get("region") != region
                # Reports made before pseudonyms name the subject by the user's id.
                or event.get("subject") != user.get("subjects", {}).get(kind, user.get("user"))
                or details.get("migration") != migration
                or (kind != "key.destroyed" and details.get("digest") != user.get("digest"))
            ):
                problems.append(f"{where}: the logged entry says otherwise")
            elif not found.included:
                problems.append(f"{where}: not in the {region} log's signed tree")
        if len(problems) > 20:
            problems.append("(more problems not listed)")
            break
    return problems


def platform_keys(platform: Platform) -> dict[str, VerifierKey]:
    return {region: cell.log.verifier_key for region, cell in platform.cells.items()}


def http_sources(base_url: str) -> tuple[dict[str, VerifierKey], EntryFetcher]:
    """Verifier keys and entries from a deployment's public transparency API (what an
    outside auditor has). Pin the keys with --key to not trust the deployment for them."""
    from reelm.transparency.auditor import Client

    client = Client(base_url)
    keys = {
        r["region"]: VerifierKey.parse(r["verifier_key"])
        for r in client.json("/api/v1/transparency")["regions"]
    }
    notes: dict[str, Any] = {}

    def fetch(region: str, index: int) -> LoggedEntry | None:
        if region not in keys:
            return None
        if region not in notes:
            note = client.get(f"/transparency/{region}/checkpoint").decode()
            notes[region] = open_note(note, keys[region])
        checkpoint = notes[region]
        found = client.json(f"/api/v1/transparency/{region}/entries", start=index, end=index + 1)[
            "entries"
        ]
        if not found or checkpoint.size <= index:
            return None
        entry = base64.b64decode(found[0]["entry"])
        proof = client.json(
            f"/api/v1/transparency/{region}/proof/inclusion", index=index, size=checkpoint.size
        )["proof"]
        try:
            verify_inclusion(
                index,
                checkpoint.size,
                leaf_hash(entry),
                [base64.b64decode(p) for p in proof],
                checkpoint.root,
            )
        except VerificationError:
            return LoggedEntry(entry, False)
        return LoggedEntry(entry, True)

    return keys, fetch
