"""Create the databases and roles of a deployment on a PostgreSQL server we administer.

One database and one login role per region plus the catalog. A region's role owns its own
database, may connect to the catalog, and may connect to nothing else: CONNECT on every reelm
database is revoked from PUBLIC and granted back only where the residency model allows it.
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

from reelm.storage.db import CATALOG

PROVISION_LOCK = 0x7265656C6D  # "reelm"


@dataclass(frozen=True)
class Provisioned:
    """The URLs each part of the deployment must use: its own role on its own database."""

    catalog_url: str
    region_urls: dict[str, str]


def role_name(prefix: str, part: str) -> str:
    return f"{prefix}_{part}"


def _load_passwords(path: Path) -> dict[str, str]:
    if path.is_file():
        return dict(json.loads(path.read_text()))
    return {}


def _save_passwords(path: Path, passwords: dict[str, str]) -> None:
    """Write atomically, through a temporary file of this process's own (several processes
    of one deployment may start at once: workers, the web process)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:  # mkstemp makes it 0600
            json.dump(passwords, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def provision(
    admin_url: str, prefix: str, regions: Iterable[str], secrets_file: Path
) -> Provisioned:
    """Idempotently create roles and databases; return the per-part URLs."""
    parts = [CATALOG, *regions]
    passwords = _load_passwords(secrets_file)
    known = dict(passwords)
    for part in parts:
        passwords.setdefault(role_name(prefix, part), secrets.token_urlsafe(24))
    if passwords != known:
        _save_passwords(secrets_file, passwords)

    admin = make_url(admin_url).set(drivername="postgresql")
    conninfo = admin.render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        # Processes starting together (web, workers) would otherwise race on the same roles
        # ("tuple concurrently updated"); the lock ends with the connection.
        conn.execute("SELECT pg_advisory_lock(%s)", (PROVISION_LOCK,))
        for part in parts:
            role = role_name(prefix, part)
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
            verb = "ALTER" if exists else "CREATE"
            conn.execute(
                sql.SQL(
                    verb + " ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD {}"
                ).format(sql.Identifier(role), sql.Literal(passwords[role]))
            )
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (role,)).fetchone():
                conn.execute(
                    sql.SQL(
                        "CREATE DATABASE {} OWNER {} ENCODING 'UTF8' TEMPLATE template0"
                    ).format(sql.Identifier(role), sql.Identifier(role))
                )
            conn.execute(
                sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(sql.Identifier(role))
            )
        catalog_db = sql.Identifier(role_name(prefix, CATALOG))
        for part in parts[1:]:
            conn.execute(
                sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
                    catalog_db, sql.Identifier(role_name(prefix, part))
                )
            )

    def url_for(part: str) -> str:
        role = role_name(prefix, part)
        return admin.set(
            drivername="postgresql+psycopg", username=role, password=passwords[role], database=role
        ).render_as_string(hide_password=False)

    return Provisioned(url_for(CATALOG), {r: url_for(r) for r in parts[1:]})


# Catalog tables no region role writes: staff membership decides who may read anyone's
# protected data (only the catalog's owner grants it, through the logged gateway); the role ->
# region map is what the row-level security of c0014 trusts; a market's route changes only
# through reelm_route_market / reelm_unroute_market.
OWNER_ONLY = ("staff_members", "cell_roles", "market_routes")
READ_ONLY = ("cell_roles", "market_routes")
# The SECURITY DEFINER functions a region role calls for the writes no policy lets it make.
REGION_FUNCTIONS = (
    "reelm_switch_home(uuid, uuid[], integer[])",
    "reelm_route_market(uuid)",
    "reelm_unroute_market(uuid)",
)


def grant_catalog_tables(catalog_url: str, region_roles: Mapping[str, str]) -> None:
    """Run as the catalog's owner after its migrations: each region role (``region_roles``:
    role name -> its region) reads the catalog and writes its own region's rows (row-level
    security, catalog revision c0014_catalog_rls, decides which rows those are)."""
    conninfo = (
        make_url(catalog_url).set(drivername="postgresql").render_as_string(hide_password=False)
    )
    with psycopg.connect(conninfo, autocommit=True) as conn:
        has_rls = _exists(conn, "cell_roles")
        for role, region in region_roles.items():
            ident = sql.Identifier(role)
            conn.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(ident))
            conn.execute(
                sql.SQL(
                    "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {}"
                ).format(ident)
            )
            conn.execute(
                sql.SQL("GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {}").format(ident)
            )
            for table in OWNER_ONLY:
                if _exists(conn, table):
                    conn.execute(
                        sql.SQL("REVOKE ALL ON {} FROM {}").format(sql.Identifier(table), ident)
                    )
                    if table in READ_ONLY:
                        conn.execute(
                            sql.SQL("GRANT SELECT ON {} TO {}").format(sql.Identifier(table), ident)
                        )
            if has_rls:
                for function in REGION_FUNCTIONS:
                    conn.execute(
                        sql.SQL("GRANT EXECUTE ON FUNCTION {} TO {}").format(
                            sql.SQL(function), ident
                        )
                    )
                conn.execute(
                    "INSERT INTO cell_roles (role, region) VALUES (%s, %s) "
                    "ON CONFLICT (role) DO UPDATE SET region = EXCLUDED.region",
                    (role, region),
                )


def _exists(conn: psycopg.Connection[tuple[object, ...]], table: str) -> bool:
    found = conn.execute("SELECT to_regclass(%s)", (f"public.{table}",)).fetchone()
    return found is not None and found[0] is not None


def drop(admin_url: str, prefix: str, regions: Iterable[str]) -> None:
    """Drop every database and role of a deployment (tests use it to clean up)."""
    conninfo = (
        make_url(admin_url).set(drivername="postgresql").render_as_string(hide_password=False)
    )
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for part in [CATALOG, *regions]:
            role = role_name(prefix, part)
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(role))
            )
        for part in [CATALOG, *regions]:
            conn.execute(
                sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role_name(prefix, part)))
            )
