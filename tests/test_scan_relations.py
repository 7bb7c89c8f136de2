"""residency-scan looks at every relation of every database, including those its role cannot
read: a table an operator, an extension or an attacker planted (in any schema, as a partition or
a materialized view) is scanned when it can be, and reported as ``unreadable`` when it cannot,
never skipped in silence and never the end of the scan."""

from __future__ import annotations

from collections.abc import Callable

import psycopg
from sqlalchemy.engine import make_url

from reelm.accounts.service import SignedUp
from reelm.bootstrap import Platform
from reelm.residency.scan import scan


def _as_superuser(admin_url: str, database_url: str) -> str:
    name = make_url(database_url).database
    url = make_url(admin_url).set(drivername="postgresql", database=name)
    return url.render_as_string(hide_password=False)


def test_planted_relations_are_scanned_or_reported_unreadable(
    fresh_platform: Platform, admin_url: str, new_user: Callable[..., SignedUp]
) -> None:
    email = "planted.person@example.com"
    user = new_user("FR", platform_=fresh_platform, email=email)
    region_db = fresh_platform.cell(user.home_region).db
    assert scan(fresh_platform).clean
    with psycopg.connect(_as_superuser(admin_url, region_db.url), autocommit=True) as conn:
        # Readable by the region's role but outside public, as a partition and as a view.
        role = make_url(region_db.url).username
        conn.execute("CREATE SCHEMA side")
        conn.execute(f'GRANT USAGE ON SCHEMA side TO "{role}"')
        conn.execute("CREATE TABLE side.parts (k int, note text) PARTITION BY RANGE (k)")
        conn.execute("CREATE TABLE side.parts_1 PARTITION OF side.parts FOR VALUES FROM (0) TO (9)")
        conn.execute("INSERT INTO side.parts VALUES (1, %s)", (f"mail {email}",))
        conn.execute("CREATE MATERIALIZED VIEW side.copy AS SELECT note FROM side.parts")
        conn.execute(f'GRANT SELECT ON side.parts_1, side.copy TO "{role}"')
        # Not readable by the region's role: owned by the superuser, no grant.
        conn.execute("CREATE TABLE hidden (note text)")
        conn.execute("INSERT INTO hidden VALUES (%s)", (email,))
    with psycopg.connect(
        _as_superuser(admin_url, fresh_platform.catalog.url), autocommit=True
    ) as conn:
        conn.execute("CREATE TABLE planted (note text)")
        conn.execute("INSERT INTO planted VALUES ('x')")

    report = scan(fresh_platform)
    found = {(f.kind, f.where, f.location) for f in report.findings}
    region_where = f"database:{region_db.name}"
    catalog_where = f"database:{fresh_platform.catalog.name}"
    assert ("plaintext", region_where, "side.parts_1.note") in found
    assert ("plaintext", region_where, "side.copy.note") in found
    assert ("unreadable", region_where, "hidden") in found
    assert ("unreadable", catalog_where, "planted") in found
    assert not report.clean
    # The rest was scanned as before: every user, every database.
    assert report.users >= 1 and report.tables > 40
