"""residency-scan: look in every database and blob store for protected data out of place.

It reports (a) protected data of a user found outside the user's home region (rows of region
tables, ciphertexts, blind indexes or clear values), and (b) any protected value stored in
clear anywhere. Findings name the user (a random id), the place and the kind of value, never
the value itself: the report is safe to mail to an operator's on-call list.

How: in each home region the scanner opens every account with that region's keys and collects
needles per user (clear email, phone and birth date; the stored ciphertexts and blind
indexes). Every table of every database is then streamed with COPY and every blob read, and
all needles are searched at once (Aho-Corasick).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import ahocorasick
import psycopg
from psycopg import sql
from sqlalchemy import select
from sqlalchemy.engine import make_url

from reelm.accounts.models import Account, DirectoryEntry
from reelm.bootstrap import Platform
from reelm.storage.crypto import DecryptionFailed, cipher_for
from reelm.storage.db import CATALOG, Database
from reelm.storage.keys import KeyDestroyed

# Clear values shorter than this are too common to mean anything (and would flood reports).
MIN_CLEAR_LEN = 6


@dataclass(frozen=True)
class Finding:
    kind: str  # "outside-home" | "plaintext" | "unknown-user"
    user_id: str
    where: str  # "database:<name>" or "blobs:<region>"
    location: str  # table.column or blob key
    value: str  # which value: "email", "phone", "birth_date", "email ciphertext", "row", ...
    home_region: str | None

    def describe(self) -> str:
        home = self.home_region or "?"
        if self.kind == "plaintext":
            what = f"{self.value} in clear"
        elif self.kind == "unknown-user":
            what = f"{self.value} of a user missing from the directory"
        else:
            what = f"{self.value} outside home region {home}"
        return f"{self.where} {self.location}: {what} (user {self.user_id})"


@dataclass
class ScanReport:
    findings: list[Finding] = field(default_factory=list)
    users: int = 0
    tables: int = 0
    rows: int = 0
    blobs: int = 0
    unreadable_users: int = 0

    @property
    def clean(self) -> bool:
        return not self.findings

    def as_dict(self) -> dict[str, Any]:
        return {
            "clean": self.clean,
            "users": self.users,
            "tables": self.tables,
            "rows": self.rows,
            "blobs": self.blobs,
            "unreadable_users": self.unreadable_users,
            "findings": [asdict(f) for f in self.findings],
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


def _tables(conn: psycopg.Connection[Any]) -> list[tuple[str, str, list[str]]]:
    rows = conn.execute(
        """SELECT table_schema, table_name, array_agg(column_name::text ORDER BY ordinal_position)
           FROM information_schema.columns
           WHERE table_schema NOT IN ('pg_catalog', 'information_schema')
           GROUP BY table_schema, table_name ORDER BY 1, 2"""
    ).fetchall()
    return [(r[0], r[1], list(r[2])) for r in rows]


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


def _scan_database(
    db: Database, automaton: Any, directory: dict[str, str], report: ScanReport
) -> Iterator[Finding]:
    region = _database_region(db.name)
    where = f"database:{db.name}"
    with psycopg.connect(_conninfo(db)) as conn:
        for schema, table, columns in _tables(conn):
            if table == "alembic_version":
                continue
            report.tables += 1
            query = sql.SQL("COPY {}.{} TO STDOUT").format(
                sql.Identifier(schema), sql.Identifier(table)
            )
            user_col = columns.index("user_id") if "user_id" in columns else None
            with conn.cursor().copy(query) as copy:
                for row in copy.rows():
                    report.rows += 1
                    yield from _scan_row(
                        row, columns, user_col, table, where, region, automaton, directory
                    )


def _scan_row(
    row: tuple[Any, ...],
    columns: list[str],
    user_col: int | None,
    table: str,
    where: str,
    region: str | None,
    automaton: Any,
    directory: dict[str, str],
) -> Iterator[Finding]:
    if region is not None and user_col is not None and row[user_col] is not None:
        # Every table of a region database is protected: its rows belong to home users only.
        uid = str(row[user_col])
        home = directory.get(uid)
        if home is None:
            yield Finding("unknown-user", uid, where, f"{table}", "row", None)
        elif home != region:
            yield Finding("outside-home", uid, where, f"{table}", "row", home)
    if automaton is None:
        return
    for name, value in zip(columns, row, strict=True):
        if value is None:
            continue
        text = value.hex() if isinstance(value, bytes | bytearray | memoryview) else str(value)
        if isinstance(value, memoryview):
            text = bytes(value).hex()
        yield from _match(automaton, text, where, region, f"{table}.{name}")


def _scan_blobs(platform: Platform, automaton: Any, report: ScanReport) -> Iterator[Finding]:
    for region, cell in platform.cells.items():
        for key in cell.blobs.iter_keys():
            report.blobs += 1
            if automaton is None:
                continue
            data = cell.blobs.get(key)
            yield from _match(automaton, data.decode("latin-1"), f"blobs:{region}", region, key)
            yield from _match(automaton, data.hex(), f"blobs:{region}", region, key)


def scan(platform: Platform) -> ScanReport:
    report = ScanReport()
    with platform.catalog.transaction() as s:
        directory = {
            str(uid): home
            for uid, home in s.execute(select(DirectoryEntry.user_id, DirectoryEntry.home_region))
        }
    automaton = _automaton(platform, report)
    seen: set[Finding] = set()
    databases = [platform.catalog] + [c.db for c in platform.cells.values()]
    for db in databases:
        for finding in _scan_database(db, automaton, directory, report):
            if finding not in seen:
                seen.add(finding)
                report.findings.append(finding)
    for finding in _scan_blobs(platform, automaton, report):
        if finding not in seen:
            seen.add(finding)
            report.findings.append(finding)
    return report


_ = uuid  # user ids are kept as strings in findings
