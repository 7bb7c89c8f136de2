"""residency-scan: look in every database and blob store for protected data out of place.

It reports (a) protected data of a user found outside the user's home region (rows of region
tables, ciphertexts, blind indexes or clear values), and (b) any protected value stored in
clear anywhere. Findings name the user (a random id), the place and the kind of value, never
the value itself: the report is safe to mail to an operator's on-call list.

How: in each home region the scanner opens every account with that region's keys and collects
needles per user (clear email, phone and birth date; the stored ciphertexts and blind
indexes). Every table of every database is then streamed with COPY and every blob read, and
all needles are searched at once (Aho-Corasick).

It also checks where media and its traces are, by ids, per region R:

- every row of R's tables with a ``user_id`` or ``owner_id`` column belongs to a user whose
  home is R (``outside-home``; ``unknown-user`` when the directory has no such user);
- every ``originals/<owner>/<video>`` and ``private/<owner>/<video>/...`` key of R's blob store
  names an owner homed in R (``outside-home`` otherwise); one whose video has no row of that
  owner in R is an ``orphan``;
- every procrastinate job of R's database whose payload names a ``video_id`` concerns a video
  of a user homed in R, wherever the video's row is found (``outside-home``); a waiting job whose
  video is in no region is ``stale`` (finished jobs are history: their ids are not reported);
- every ``v/<video>/...`` key of the public store belongs to a video published in the catalog
  whose row in its owner's home region is still public (``public-exposure`` otherwise: protected
  media readable by anyone); the files of a public video being processed (queued or
  processing, not yet in the catalog) are expected there;
- every file of R's staging directory (``<id>.part``, ``.src``, ``.work`` ...) belongs to an
  upload or video of a user homed in R (``outside-home`` when its row is in another region or
  its owner lives elsewhere); one with no row in any region is ``stray``.

``findings`` are leaks (kinds ``plaintext``, ``outside-home``, ``unknown-user``,
``public-exposure``): the command exits 1 when there is one. ``notices`` (``orphan``, ``stale``,
``stray``) are left-overs in the right region: reported, never a failure (a video being
uploaded, deleted or processed at the moment of the scan can show one). Blob keys are listed
once per store and rows are looked up in batches of ids.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import ahocorasick
import psycopg
from psycopg import sql
from sqlalchemy import select, text
from sqlalchemy.engine import make_url

from reelm.accounts.models import Account, DirectoryEntry
from reelm.bootstrap import Platform
from reelm.media.blobcheck import (
    BATCH,
    PUBLIC_FILES,
    REGION_PREFIXES,
    MediaKey,
    batched,
    media_key,
    published_owners,
    video_owners,
)
from reelm.media.models import Upload, Video
from reelm.residency import readable
from reelm.storage.blobs import BlobStore, RangeNotSatisfiable
from reelm.storage.crypto import DecryptionFailed, cipher_for
from reelm.storage.db import CATALOG, Database
from reelm.storage.keys import KeyDestroyed

# Clear values shorter than this are too common to mean anything (and would flood reports).
MIN_CLEAR_LEN = 6


# Leaks: any one makes the scan fail. Notices: left-overs in the right place, reported only.
# ``undecryptable`` is a loss rather than a leak, and as serious: a protected value that its
# owner's current key does not open (sealed under a destroyed key) can never be read again.
LEAK_KINDS = (
    "plaintext",
    "outside-home",
    "unknown-user",
    "public-exposure",
    "market-elsewhere",
    "undecryptable",
    "unreadable",
)
NOTICE_KINDS = ("orphan", "stale", "stray", "in-transit")
# Jobs that may still run: a stale payload among them is worth a notice; finished ones are history.
PENDING_JOBS = ("todo", "doing", "aborting")


@dataclass(frozen=True)
class Finding:
    kind: str  # one of LEAK_KINDS or NOTICE_KINDS
    user_id: str  # "" when no user can be named (a key or file name of no known layout)
    where: str  # "database:<name>", "blobs:<region>", "blobs:public" or "staging:<region>"
    location: str  # table.column, table, procrastinate_jobs#<id>, blob key or staged file name
    value: str  # which value: "email", "phone", "birth_date", "email ciphertext", "row", ...
    home_region: str | None

    @property
    def leak(self) -> bool:
        return self.kind in LEAK_KINDS

    def describe(self) -> str:
        home = self.home_region or "?"
        if self.kind == "plaintext":
            what = f"{self.value} in clear"
        elif self.kind == "unknown-user":
            what = f"{self.value} of a user missing from the directory"
        elif self.kind == "public-exposure":
            what = f"{self.value}, readable by anyone"
        elif self.kind == "orphan":
            what = f"{self.value} that no video row of its region accounts for"
        elif self.kind == "stale":
            what = f"{self.value} of a video found in no region"
        elif self.kind == "stray":
            what = f"{self.value} of no upload or video in any region"
        elif self.kind == "in-transit":
            what = f"{self.value} of a user a running migration is moving to or from here"
        elif self.kind == "unreadable":
            what = f"{self.value}: not scanned"
        elif self.kind == "undecryptable":
            what = f"{self.value} that the user's current key does not open"
        elif self.kind == "market-elsewhere":
            what = f"{self.value} of a user whose market now lives in {home}"
        else:
            what = f"{self.value} outside home region {home}"
        return f"{self.where} {self.location}: {what} (user {self.user_id or '?'})"


@dataclass
class ScanReport:
    findings: list[Finding] = field(default_factory=list)  # leaks
    notices: list[Finding] = field(default_factory=list)  # orphans, stale jobs, stray files
    users: int = 0
    tables: int = 0
    rows: int = 0
    blobs: int = 0  # keys of the region stores and the public store
    jobs: int = 0  # job rows whose payload names a video
    staging_files: int = 0
    unreadable_users: int = 0

    @property
    def clean(self) -> bool:
        """No leak (notices do not count)."""
        return not self.findings

    def as_dict(self) -> dict[str, Any]:
        return {
            "clean": self.clean,
            "users": self.users,
            "tables": self.tables,
            "rows": self.rows,
            "blobs": self.blobs,
            "jobs": self.jobs,
            "staging_files": self.staging_files,
            "unreadable_users": self.unreadable_users,
            "findings": [asdict(f) for f in self.findings],
            "notices": [asdict(f) for f in self.notices],
        }


@dataclass(frozen=True)
class Needle:
    user_id: str
    home_region: str
    value: str
    clear: bool  # a clear value: a finding wherever it is; otherwise only outside home


def _hex(data: bytes) -> str:
    # COPY's text format renders bytea as \x followed by lowercase hex.
    return data.hex()


def _needles_of_region(
    platform: Platform, region: str, report: ScanReport
) -> Iterator[tuple[str, Needle]]:
    cell = platform.cell(region)
    with cell.db.transaction() as s:
        accounts = list(s.scalars(select(Account)))
    for account in accounts:
        report.users += 1
        uid = str(account.user_id)
        stored = {
            "email ciphertext": account.email_ct,
            "email blind index": account.email_bidx,
            "phone ciphertext": account.phone_ct,
            "phone blind index": account.phone_bidx,
            "birth date ciphertext": account.birth_date_ct,
            "password ciphertext": account.password_ct,
            "settings ciphertext": account.settings_ct,
        }
        for label, blob in stored.items():
            if blob:
                yield _hex(blob), Needle(uid, region, label, clear=False)
        try:
            cipher = cipher_for(cell.keys, account.user_id)
            clear = {
                "email": cipher.decrypt("email", account.email_ct),
                "phone": cipher.decrypt_optional("phone", account.phone_ct),
                "birth date": cipher.decrypt("birth_date", account.birth_date_ct),
            }
        except (KeyDestroyed, DecryptionFailed):
            report.unreadable_users += 1
            continue
        for label, value in clear.items():
            if value and len(value) >= MIN_CLEAR_LEN:
                yield value.casefold(), Needle(uid, region, label, clear=True)
                if label == "phone":
                    # Also without the '+', as numbers are often stored.
                    yield value.lstrip("+"), Needle(uid, region, label, clear=True)


def _automaton(platform: Platform, report: ScanReport) -> Any:
    automaton = ahocorasick.Automaton()
    for region in platform.cells:
        for key, needle in _needles_of_region(platform, region, report):
            existing = automaton.get(key, ())
            automaton.add_word(key, (*existing, needle))
    if len(automaton) == 0:
        return None
    automaton.make_automaton()
    return automaton


def _conninfo(db: Database) -> str:
    return make_url(db.url).set(drivername="postgresql").render_as_string(hide_password=False)


# Every relation that holds rows of its own: tables, partitions (relkind 'r'; a partitioned
# parent, 'p', holds none) and materialized views, in every schema but the system ones. Read
# from pg_class, not information_schema, which lists only what the role may already read: a
# table planted where the scanner's role has no privilege must be reported, not skipped.
_RELATIONS = """
SELECT n.nspname, c.relname, c.relkind::text,
       array_agg(a.attname::text ORDER BY a.attnum) FILTER (WHERE a.attnum IS NOT NULL),
       has_schema_privilege(n.oid, 'USAGE') AND has_table_privilege(c.oid, 'SELECT'),
       c.relrowsecurity AND NOT pg_has_role(c.relowner, 'USAGE')
           AND NOT (SELECT rolbypassrls FROM pg_roles WHERE rolname = current_user)
           -- Rows are hidden unless a permissive policy lets this role read every row
           -- (USING true, as the catalog's tables have for reads) and no restrictive one
           -- narrows it.
           AND NOT (
               EXISTS (SELECT 1 FROM pg_policy p
                       WHERE p.polrelid = c.oid AND p.polpermissive AND p.polcmd IN ('r', '*')
                         AND pg_get_expr(p.polqual, p.polrelid) = 'true'
                         AND (0 = ANY (p.polroles) OR EXISTS (
                             SELECT 1 FROM unnest(p.polroles) AS r(oid)
                             WHERE pg_has_role(r.oid, 'USAGE'))))
               AND NOT EXISTS (SELECT 1 FROM pg_policy p
                               WHERE p.polrelid = c.oid AND NOT p.polpermissive
                                 AND p.polcmd IN ('r', '*')))
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE c.relkind IN ('r', 'm')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%'
GROUP BY n.nspname, c.relname, c.relkind, n.oid, c.oid, c.relrowsecurity, c.relowner
ORDER BY 1, 2
"""


@dataclass(frozen=True)
class Relation:
    schema: str
    name: str
    kind: str  # 'r' table or partition, 'm' materialized view
    columns: list[str]
    readable: bool  # the role may read it
    filtered: bool  # row-level security hides rows from the role

    @property
    def label(self) -> str:
        return self.name if self.schema == "public" else f"{self.schema}.{self.name}"


def _tables(conn: psycopg.Connection[Any]) -> list[Relation]:
    return [
        Relation(r[0], r[1], r[2], list(r[3] or []), bool(r[4]), bool(r[5]))
        for r in conn.execute(_RELATIONS).fetchall()
    ]


def _database_region(name: str) -> str | None:
    return None if name == CATALOG else name


def _match(
    automaton: Any, text: str, where: str, region: str | None, location: str
) -> Iterator[Finding]:
    for _end, needles in automaton.iter(text.casefold()):
        for needle in needles:
            outside = needle.home_region != region
            if needle.clear:
                yield Finding(
                    "plaintext", needle.user_id, where, location, needle.value, needle.home_region
                )
            if outside:
                yield Finding(
                    "outside-home",
                    needle.user_id,
                    where,
                    location,
                    needle.value,
                    needle.home_region,
                )


def _unreadable(where: str, relation: Relation, why: str, region: str | None) -> Finding:
    return Finding("unreadable", "", where, relation.label, why, region)


# Catalog tables no cell's role may read, by design (storage/provision.py): the catalog
# operator's own scan covers them (residency-scan with the catalog owner's configuration).
OWNER_ONLY = frozenset({"staff_members"})


def _scan_database(
    db: Database,
    automaton: Any,
    directory: dict[str, str],
    report: ScanReport,
    *,
    skip: frozenset[str] = frozenset(),
) -> Iterator[Finding]:
    region = _database_region(db.name)
    where = f"database:{db.name}"
    with psycopg.connect(_conninfo(db), autocommit=True) as conn:
        for relation in _tables(conn):
            if relation.name == "alembic_version" and relation.schema == "public":
                continue
            if relation.schema == "public" and relation.name in skip and not relation.readable:
                continue
            report.tables += 1
            if not relation.readable:
                yield _unreadable(where, relation, "relation the scanner may not read", region)
                continue
            if relation.filtered:
                yield _unreadable(where, relation, "rows hidden by row-level security", region)
            # COPY (SELECT ...) works for tables, partitions and materialized views alike.
            query = sql.SQL("COPY (SELECT * FROM {}.{}) TO STDOUT").format(
                sql.Identifier(relation.schema), sql.Identifier(relation.name)
            )
            columns = relation.columns
            user_cols = [i for i, name in enumerate(columns) if name in USER_COLUMNS]
            try:
                with conn.cursor().copy(query) as copy:
                    for row in copy.rows():
                        report.rows += 1
                        yield from _scan_row(
                            row, columns, user_cols, relation.label, where, region, automaton,
                            directory,
                        )  # fmt: skip
            except psycopg.Error as exc:
                # A privilege on some columns only, a policy that errors, a view of a dropped
                # table: named by its SQLSTATE, never by a value.
                why = f"relation the scanner cannot read ({exc.sqlstate or type(exc).__name__})"
                yield _unreadable(where, relation, why, region)


# Columns that name the user a row belongs to (accounts, sessions: user_id; media: owner_id).
USER_COLUMNS = ("user_id", "owner_id")


class Directory(dict[str, str]):
    """User id -> home region, and the users a running migration is moving (id -> source,
    destination): their data may be in both regions until the purge."""

    transit: dict[str, tuple[str, str]]

    def __init__(self, homes: dict[str, str], transit: dict[str, tuple[str, str]]) -> None:
        super().__init__(homes)
        self.transit = transit


def _placed(
    uid: str, region: str, directory: dict[str, str], where: str, location: str, value: str
) -> Iterator[Finding]:
    """A leak when protected data of ``uid`` sits in ``region`` and the user lives elsewhere
    (a notice while a running migration moves the user between the two)."""
    home = directory.get(uid)
    moving = getattr(directory, "transit", {}).get(uid)
    if home is None:
        yield Finding("unknown-user", uid, where, location, value, None)
    elif home != region and moving is not None and region in moving:
        yield Finding("in-transit", uid, where, location, value, home)
    elif home != region:
        yield Finding("outside-home", uid, where, location, value, home)


def _scan_row(
    row: tuple[Any, ...],
    columns: list[str],
    user_cols: list[int],
    table: str,
    where: str,
    region: str | None,
    automaton: Any,
    directory: dict[str, str],
) -> Iterator[Finding]:
    if region is not None:
        # Every table of a region database is protected: its rows belong to home users only.
        for index in user_cols:
            if row[index] is not None:
                yield from _placed(str(row[index]), region, directory, where, table, "row")
    if automaton is None:
        return
    for name, value in zip(columns, row, strict=True):
        if value is None:
            continue
        text = value.hex() if isinstance(value, bytes | bytearray | memoryview) else str(value)
        if isinstance(value, memoryview):
            text = bytes(value).hex()
        yield from _match(automaton, text, where, region, f"{table}.{name}")


def _scan_blobs(
    platform: Platform, automaton: Any, directory: dict[str, str], report: ScanReport
) -> Iterator[Finding]:
    for region, cell in platform.cells.items():
        where = f"blobs:{region}"
        for chunk in batched(cell.blobs.iter_keys()):
            places = {key: media_key(key) for key in chunk if key.startswith(REGION_PREFIXES)}
            ids = (p.video_id for p in places.values() if p is not None)
            owners = video_owners(cell.db, ids)
            for key in chunk:
                report.blobs += 1
                if key in places:
                    yield from _region_media(key, places[key], region, owners, directory)
                if automaton is None:
                    continue
                yield from _scan_blob(automaton, cell.blobs, key, where, region)


BLOB_PIECE = 4 * 1024 * 1024


def _scan_blob(
    automaton: Any, store: BlobStore, key: str, where: str, region: str
) -> Iterator[Finding]:
    """Search a blob piece by piece (originals are hundreds of MB), each piece starting with
    the previous one's last bytes so that a value across the cut is found; each finding once."""
    overlap = automaton.get_stats()["longest_word"]
    seen: set[tuple[str, str, str]] = set()
    tail = b""
    try:
        with store.open_range(key, chunk_size=BLOB_PIECE) as pieces:
            for piece in pieces:
                data = tail + piece
                for text in (data.decode("latin-1"), data.hex()):
                    for finding in _match(automaton, text, where, region, key):
                        mark = (finding.kind, finding.user_id, finding.value)
                        if mark not in seen:
                            seen.add(mark)
                            yield finding
                tail = data[-overlap:]
    except RangeNotSatisfiable:  # an empty blob holds nothing
        return


def _region_media(
    key: str,
    place: MediaKey | None,
    region: str,
    owners: dict[uuid.UUID, uuid.UUID],
    directory: dict[str, str],
) -> Iterator[Finding]:
    where = f"blobs:{region}"
    value = "original" if key.startswith("originals/") else "private video file"
    if place is None or place.owner_id is None:
        yield Finding("orphan", "", where, key, f"{value} (key of no known layout)", region)
        return
    uid = str(place.owner_id)
    placed = list(_placed(uid, region, directory, where, key, value))
    yield from placed
    if not placed and owners.get(place.video_id) != place.owner_id:
        yield Finding("orphan", uid, where, key, value, region)


def _locate(
    platform: Platform,
    ids: Iterable[uuid.UUID],
    model: type[Video] | type[Upload],
    first: str,
) -> dict[uuid.UUID, tuple[str, uuid.UUID]]:
    """id -> (region, owner id) of the rows of ``model`` found in region ``first``, else in any
    other region (one query per region, only for ids not found yet)."""
    wanted = set(ids)
    found: dict[uuid.UUID, tuple[str, uuid.UUID]] = {}
    for region in sorted(platform.cells, key=lambda r: r != first):
        if not wanted:
            break
        with platform.cell(region).db.transaction() as s:
            query = select(model.id, model.owner_id).where(model.id.in_(list(wanted)))
            found.update((i, (region, owner)) for i, owner in s.execute(query))
        wanted -= found.keys()
    return found


# video id -> region -> (owner id, visibility, status)
VideoStates = dict[uuid.UUID, dict[str, tuple[uuid.UUID, str, str]]]


def _video_states(platform: Platform, ids: set[uuid.UUID]) -> VideoStates:
    states: VideoStates = {}
    if not ids:
        return states
    for region, cell in platform.cells.items():
        query = select(Video.id, Video.owner_id, Video.visibility, Video.status)
        with cell.db.transaction() as s:
            for vid, owner, visibility, status in s.execute(query.where(Video.id.in_(list(ids)))):
                states.setdefault(vid, {})[region] = (owner, visibility, status)
    return states


def _public_problem(
    video_id: uuid.UUID,
    published_by: uuid.UUID | None,
    states: dict[str, tuple[uuid.UUID, str, str]],
    directory: dict[str, str],
) -> tuple[str, str] | None:
    """(owner id, what is wrong) for a public file of this video, or None when it belongs."""
    if published_by is not None:
        home = directory.get(str(published_by), "")
        row = states.get(home)
        if row is None:
            return str(published_by), "public file of a video gone from its home region"
        if row[1] != "public":
            return str(published_by), f"public file of a {row[1]} video"
        return None
    if any(v == "public" and st in ("queued", "processing") for _, v, st in states.values()):
        return None  # a public video being processed: the catalog gets it when it is ready
    owners = {str(owner) for owner, _, _ in states.values()}
    return (owners.pop() if len(owners) == 1 else ""), "public file of an unpublished video"


def _judged_here(
    platform: Platform,
    published_by: uuid.UUID | None,
    states: dict[str, tuple[uuid.UUID, str, str]],
    directory: dict[str, str],
) -> bool:
    """Whether this process can tell if a public file belongs: every process in the
    single-machine mode; a cell, for the videos of its own region's users only (the public
    store is shared, and another region's video is its home cell's to judge)."""
    if platform.local_region is None:
        return True
    if published_by is not None:
        return platform.is_local(directory.get(str(published_by), ""))
    return bool(states)


def _scan_public(
    platform: Platform, directory: dict[str, str], report: ScanReport
) -> Iterator[Finding]:
    """Public files of videos that are not (or no longer) published public videos."""
    where = "blobs:public"
    for chunk in batched(platform.public_blobs.iter_keys(PUBLIC_FILES)):
        report.blobs += len(chunk)
        places = {key: media_key(key) for key in chunk}
        ids = {p.video_id for p in places.values() if p is not None}
        published = published_owners(platform.catalog, ids)
        states = _video_states(platform, ids)
        for key, place in places.items():
            if place is None or place.kind != "public":
                yield Finding("public-exposure", "", where, key, "public file of no video", None)
                continue
            vid = place.video_id
            if not _judged_here(platform, published.get(vid), states.get(vid, {}), directory):
                continue
            problem = _public_problem(vid, published.get(vid), states.get(vid, {}), directory)
            if problem is not None:
                uid, value = problem
                yield Finding("public-exposure", uid, where, key, value, directory.get(uid))


def _scan_jobs(
    platform: Platform, directory: dict[str, str], report: ScanReport
) -> Iterator[Finding]:
    """Job payloads naming a video: the video's owner must live in the job's region."""
    query = text(
        "SELECT id, status::text, args->>'video_id' FROM procrastinate_jobs "
        "WHERE args->>'video_id' IS NOT NULL AND id > :after ORDER BY id LIMIT :limit"
    )
    for region, cell in platform.cells.items():
        where = f"database:{cell.db.name}"
        after = 0
        while True:
            with cell.db.transaction() as s:
                jobs = list(s.execute(query, {"after": after, "limit": BATCH}))
            if not jobs:
                break
            after = jobs[-1][0]
            report.jobs += len(jobs)
            payloads = {job_id: _uuid(raw) for job_id, _, raw in jobs}
            found = _locate(
                platform, {v for v in payloads.values() if v is not None}, Video, region
            )
            for job_id, status, _ in jobs:
                location = f"procrastinate_jobs#{job_id}"
                vid = payloads[job_id]
                if vid is None or vid not in found:
                    if status in PENDING_JOBS:
                        yield Finding("stale", "", where, location, "job payload", None)
                    continue
                uid = str(found[vid][1])
                yield from _placed(uid, region, directory, where, location, "job payload")


def _uuid(text_: str | None) -> uuid.UUID | None:
    try:
        return uuid.UUID(text_) if text_ else None
    except ValueError:
        return None


STAGED = {".part": "staged upload", ".src": "transcode source", ".work": "transcode work files"}


def _staged_id(name: str) -> uuid.UUID | None:
    """The upload (= video) id of a staging file: ``<id>.<suffix>`` or a hidden temporary."""
    stem = name.lstrip(".").split(".", 1)[0]
    found = _uuid(stem)
    return found if found is not None and str(found) == stem else None


def _staged_value(path: Path) -> str:
    return STAGED.get(path.suffix, "staging file")


def _scan_staging(
    platform: Platform, directory: dict[str, str], report: ScanReport
) -> Iterator[Finding]:
    """Files of uploads in progress and transcodes: in clear, so only of home users."""
    for region in platform.cells:
        root = platform.settings.staging_dir(region)
        if not root.is_dir():
            continue
        where = f"staging:{region}"
        for chunk in batched(sorted(root.iterdir())):
            report.staging_files += len(chunk)
            ids = {path: _staged_id(path.name) for path in chunk}
            wanted = {i for i in ids.values() if i is not None}
            # The upload's row, else the video's (which outlives it), in R first.
            here = _locate(platform, wanted, Upload, region)
            here.update(_locate(platform, wanted - here.keys(), Video, region))
            for path, staged in ids.items():
                value = _staged_value(path)
                if staged is None or staged not in here:
                    yield Finding("stray", "", where, path.name, value, region)
                    continue
                uid = str(here[staged][1])
                yield from _placed(uid, region, directory, where, path.name, value)


def scan(platform: Platform) -> ScanReport:
    report = ScanReport()
    from reelm.migration.engine import in_transit

    with platform.catalog.transaction() as s:
        homes = {
            str(uid): home
            for uid, home in s.execute(select(DirectoryEntry.user_id, DirectoryEntry.home_region))
        }
    transit = {uid: (src, dst) for uid, (src, dst, _state) in in_transit(platform).items()}
    directory = Directory(homes, transit)
    automaton = _automaton(platform, report)
    seen: set[Finding] = set()

    def add(findings: Iterable[Finding]) -> None:
        for finding in findings:
            if finding not in seen:
                seen.add(finding)
                (report.findings if finding.leak else report.notices).append(finding)

    # A cell's catalog role is refused the owner's tables; the single-machine mode reads all.
    skip = OWNER_ONLY if platform.local_region is not None else frozenset()
    add(_scan_database(platform.catalog, automaton, directory, report, skip=skip))
    for cell in platform.cells.values():
        add(_scan_database(cell.db, automaton, directory, report))
    add(_scan_blobs(platform, automaton, directory, report))
    add(_scan_public(platform, directory, report))
    add(_scan_jobs(platform, directory, report))
    add(_scan_staging(platform, directory, report))
    add(_scan_markets(platform, directory))
    add(_scan_readable(platform, directory))
    return report


def _scan_readable(platform: Platform, directory: Directory) -> Iterator[Finding]:
    """Protected values of each region's home users that their current key does not open."""
    for region, cell in platform.cells.items():
        with cell.db.transaction() as s:
            ids = [u for u in s.scalars(select(Account.user_id)) if directory.get(str(u)) == region]
        for user_id, places in readable.unreadable(cell, ids).items():
            for place in places:
                table = "." in place and "/" not in place
                where = f"database:{cell.db.name}" if table else f"blobs:{region}"
                value = "protected value" if table else "protected file"
                yield Finding("undecryptable", str(user_id), where, place, value, region)


def _scan_markets(platform: Platform, directory: Directory) -> Iterator[Finding]:
    """Users of a market a migration moved (``market_routes``) who still live elsewhere: their
    data is outside the jurisdiction the market was moved to (``market-elsewhere``). Markets
    never moved are not checked here: their users live where the policy put them at sign-up
    (and a migration of listed users may move some ahead of their market)."""
    from reelm.regions import routing

    routes = routing.routes(platform)
    if not routes:
        return
    for region, cell in platform.cells.items():
        with cell.db.transaction() as s:
            left = s.execute(
                select(Account.user_id, Account.market).where(
                    Account.migration.is_(None), Account.market.in_(list(routes))
                )
            ).all()
        for user_id, market in left:
            expected, uid = routes[market], str(user_id)
            if expected == region or directory.get(uid) != region:
                continue
            kind = "in-transit" if uid in directory.transit else "market-elsewhere"
            yield Finding(kind, uid, f"database:{cell.db.name}", "accounts", "account", expected)
