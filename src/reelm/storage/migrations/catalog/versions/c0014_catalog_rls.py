"""catalog rows limited by region: row-level security for the regions' catalog roles

Revision ID: c0014_catalog_rls
Revises: c0013
Create Date: 2026-12-03 17:30:00

Every region reaches the catalog with its own login role (``{prefix}_{region}``). Until this
revision each role could write every catalog row, so a region's credentials could rewrite
another region's users' directory entries, profiles and videos. From here on a region role
writes only rows that belong to its region (docs/architecture.md, "Storage per region", has
the table of who writes what):

- ``cell_roles`` maps each region role to its region; only the catalog's owner writes it
  (``reelm.storage.provision.grant_catalog_tables`` fills it). ``reelm_role_region()`` is the
  region of ``current_user`` (NULL for the owner and any role not in the map).
- ``RULES`` below says, per table and operation, when a row is the calling region's: a user's
  row when the user's directory entry is homed there, a region's row when its region column
  names it. Each rule is used twice: by a row-level security policy on the new row of an
  INSERT or UPDATE ("new row violates row-level security policy"), and by the table's BEFORE
  UPDATE OR DELETE trigger on the old row (an error too, instead of the silent skip a USING
  clause would give, so reelm can tell the refusal apart and log it). Reads stay open: the
  catalog is public data. RLS is not forced on the owner: the single-machine process (the
  owner's URL) works as before. Cascaded deletes run as the owner and pass.
- A region migration changes a user's home: no region's role passes both the old row's check
  and the new one's. The source region *releases* each frozen user (a ``migration_releases``
  row at the directory epoch it froze them at, written under its own role), and the
  destination *commits* the switch through ``reelm_switch_home`` (SECURITY DEFINER, owned by
  the catalog's owner), which flips only users released at the expected epoch, verified in the
  journal of a running migration to the caller's region. ``market_routes`` is written only by
  ``reelm_route_market`` / ``reelm_unroute_market`` for the destination of a market migration.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "c0014_catalog_rls"
down_revision: str | Sequence[str] | None = "c0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The region of the role running the statement, computed once per statement (an InitPlan).
ME = "(SELECT public.reelm_role_region())"


def _home(column: str) -> str:
    """The home region of the user a row's ``column`` names."""
    return f"(SELECT d.home_region FROM public.directory d WHERE d.user_id = $row.{column})"


# The home region of the owner of the video a row's video_id names.
_VIDEO_OWNER = (
    "(SELECT d.home_region FROM public.public_videos v "
    "JOIN public.directory d ON d.user_id = v.owner_id WHERE v.id = $row.video_id)"
)


def _all(rule: str) -> dict[str, str]:
    return dict.fromkeys(("INSERT", "UPDATE", "DELETE"), rule)


# Per table, per operation: when a row ($row) is the calling region's to write. A role in no
# region (the rule is NULL, read as false) writes nothing.
RULES: dict[str, dict[str, str]] = {
    "directory": _all(f"$row.home_region = {ME}"),
    "profiles": _all(f"{_home('user_id')} = {ME}"),
    "public_videos": _all(f"{_home('owner_id')} = {ME}"),
    # Its author writes a comment; the video's creator may also delete it.
    "comments": {
        "INSERT": f"{_home('author_id')} = {ME}",
        "UPDATE": f"{_home('author_id')} = {ME}",
        "DELETE": f"{_home('author_id')} = {ME} OR {_VIDEO_OWNER} = {ME}",
    },
    # The follower asks; the followee approves; either ends it.
    "follows": {
        "INSERT": f"{_home('follower_id')} = {ME}",
        "UPDATE": f"{_home('followee_id')} = {ME}",
        "DELETE": f"{_home('follower_id')} = {ME} OR {_home('followee_id')} = {ME}",
    },
    # The blocker blocks; a purge of either user removes the row.
    "blocks": {
        "INSERT": f"{_home('blocker_id')} = {ME}",
        "UPDATE": f"{_home('blocker_id')} = {ME}",
        "DELETE": f"{_home('blocker_id')} = {ME} OR {_home('blocked_id')} = {ME}",
    },
    # Moderation acts in the home region of the content's owner.
    "suspensions": _all(f"{_home('user_id')} = {ME}"),
    "video_restrictions": _all(f"{_VIDEO_OWNER} = {ME}"),
    "region_likes": _all(f"$row.region = {ME}"),
    "engagement_receipts": _all(f"$row.region = {ME}"),
    # The destination coordinates its migration; a source writes its own users' rows.
    "migrations": _all(f"$row.destination = {ME}"),
    "migration_users": _all(
        f"$row.source = {ME} OR (SELECT m.destination FROM public.migrations m "
        f"WHERE m.id = $row.migration_id) = {ME}"
    ),
    "migration_releases": _all(f"{_home('user_id')} = {ME}"),
}


def _rule(table: str, op: str, row: str) -> str:
    return f"coalesce({RULES[table][op].replace('$row', row)}, false)"


def _guard(table: str) -> str:
    """The table's trigger function: the old row's check (a USING clause would skip the row
    silently; this refuses aloud). The owner (the single-machine process, SECURITY DEFINER
    functions, cascaded deletes) and superusers are not limited."""
    refuse = (
        'RAISE EXCEPTION \'row-level security: % of a row of table "%" refused: the row '
        "belongs to another region', lower(TG_OP), TG_TABLE_NAME "
        "USING ERRCODE = 'insufficient_privilege'"
    )
    return f"""
CREATE FUNCTION reelm_guard_{table}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF pg_has_role(current_user,
                   (SELECT c.relowner FROM pg_catalog.pg_class c WHERE c.oid = TG_RELID),
                   'MEMBER') THEN
        RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    IF TG_OP = 'UPDATE' THEN
        IF NOT {_rule(table, "UPDATE", "OLD")} THEN
            {refuse};
        END IF;
        RETURN NEW;
    END IF;
    IF NOT {_rule(table, "DELETE", "OLD")} THEN
        {refuse};
    END IF;
    RETURN OLD;
END
$$;
CREATE TRIGGER reelm_residency BEFORE UPDATE OR DELETE ON {table}
FOR EACH ROW EXECUTE FUNCTION reelm_guard_{table}();
"""


# Every name below is schema-qualified; only the SECURITY DEFINER functions pin their
# search_path as well (a SET clause costs a configuration save and restore per call, and the
# policies call their functions per row).
FUNCTIONS = """
CREATE FUNCTION reelm_role_region() RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT region FROM public.cell_roles WHERE role = current_user
$$;

-- The region of the login role that called a SECURITY DEFINER function (inside one,
-- current_user is the owner); NULL for the owner or a superuser, who may do anything.
CREATE FUNCTION reelm_caller_region(what text) RETURNS text
LANGUAGE plpgsql STABLE AS $$
DECLARE
    region text := (SELECT c.region FROM public.cell_roles c WHERE c.role = session_user);
BEGIN
    IF region IS NULL AND NOT pg_has_role(session_user, (
        SELECT relowner FROM pg_catalog.pg_class WHERE oid = 'public.directory'::regclass),
        'MEMBER') THEN
        RAISE EXCEPTION 'residency: % refused: % is not a region''s role', what, session_user
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN region;
END
$$;

-- The migration's switch: the directory entries of `users` point to the migration's
-- destination with the epoch raised, and the journal says 'switched', in one statement.
-- Only users the source released at exactly `epochs`, still homed in the journal's source
-- and verified there; returns the users switched. Called by the destination's role (it has
-- verified the copy) or the owner.
CREATE FUNCTION reelm_switch_home(p_migration uuid, p_users uuid[], p_epochs integer[])
RETURNS SETOF uuid
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    caller text := public.reelm_caller_region('the switch');
    dest text;
BEGIN
    SELECT m.destination INTO dest FROM public.migrations m
    WHERE m.id = p_migration AND m.state = 'running';
    IF dest IS NULL THEN
        RAISE EXCEPTION 'residency: the switch refused: no running migration %', p_migration
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF caller IS NOT NULL AND caller <> dest THEN
        RAISE EXCEPTION 'residency: the switch refused: region % is not the destination (%)',
                        caller, dest
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF cardinality(p_users) IS DISTINCT FROM cardinality(p_epochs) THEN
        RAISE EXCEPTION 'the switch needs one epoch for each user'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN QUERY
    WITH flipped AS (
        UPDATE public.directory d
        SET home_region = dest, epoch = d.epoch + 1
        FROM unnest(p_users, p_epochs) AS w(user_id, epoch),
             public.migration_users j,
             public.migration_releases r
        WHERE d.user_id = w.user_id AND d.epoch = w.epoch AND d.home_region <> dest
          AND j.migration_id = p_migration AND j.user_id = d.user_id
          AND j.state = 'verified' AND j.source = d.home_region
          AND r.migration_id = p_migration AND r.user_id = d.user_id AND r.epoch = d.epoch
        RETURNING d.user_id
    ), journaled AS (
        UPDATE public.migration_users j SET state = 'switched', updated_at = now()
        FROM flipped f
        WHERE j.migration_id = p_migration AND j.user_id = f.user_id
        RETURNING j.user_id
    )
    SELECT journaled.user_id FROM journaled;
END
$$;

-- A market migration sends the market's new sign-ups to its destination from its start.
CREATE FUNCTION reelm_route_market(p_migration uuid) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    caller text := public.reelm_caller_region('the market route');
    m public.migrations%ROWTYPE;
BEGIN
    SELECT * INTO m FROM public.migrations WHERE id = p_migration AND state = 'running';
    IF m.market IS NULL OR (caller IS NOT NULL AND caller <> m.destination) THEN
        RAISE EXCEPTION 'residency: the market route refused: no running market migration '
                        'to this region'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    INSERT INTO public.market_routes (market, region, migration_id)
    VALUES (m.market, m.destination, m.id)
    ON CONFLICT (market) DO UPDATE
    SET region = EXCLUDED.region, migration_id = EXCLUDED.migration_id, changed_at = now();
END
$$;

-- An aborted market migration takes back the route it set (none set since by another).
CREATE FUNCTION reelm_unroute_market(p_migration uuid) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    caller text := public.reelm_caller_region('the market route');
    m public.migrations%ROWTYPE;
BEGIN
    SELECT * INTO m FROM public.migrations WHERE id = p_migration;
    IF m.id IS NULL OR (caller IS NOT NULL AND caller <> m.destination) THEN
        RAISE EXCEPTION 'residency: the market route refused: not a migration to this region'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    DELETE FROM public.market_routes WHERE market = m.market AND migration_id = m.id;
END
$$;

-- The definer functions are the regions' only way to these writes: nobody else runs them
-- by default, and grant_catalog_tables grants EXECUTE to the region roles.
REVOKE ALL ON FUNCTION reelm_switch_home(uuid, uuid[], integer[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION reelm_route_market(uuid) FROM PUBLIC;
REVOKE ALL ON FUNCTION reelm_unroute_market(uuid) FROM PUBLIC;
"""


def upgrade() -> None:
    op.create_table(
        "cell_roles",
        sa.Column("role", sa.Text(), nullable=False),
        sa.Column("region", sa.String(length=16), nullable=False),
        sa.PrimaryKeyConstraint("role", name=op.f("pk_cell_roles")),
    )
    op.create_table(
        "migration_releases",
        sa.Column("migration_id", sa.UUID(), nullable=False),
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column(
            "released_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["migration_id"],
            ["migrations.id"],
            name=op.f("fk_migration_releases_migration_id_migrations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["directory.user_id"],
            name=op.f("fk_migration_releases_user_id_directory"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("migration_id", "user_id", name=op.f("pk_migration_releases")),
    )
    op.execute(FUNCTIONS)
    for table in RULES:
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(f"CREATE POLICY reelm_read ON {table} FOR SELECT USING (true)")
        op.execute(
            f"CREATE POLICY reelm_insert ON {table} FOR INSERT "
            f"WITH CHECK ({_rule(table, 'INSERT', table)})"
        )
        # The old row is the trigger's to check (aloud); the new row is the policy's.
        op.execute(
            f"CREATE POLICY reelm_update ON {table} FOR UPDATE USING (true) "
            f"WITH CHECK ({_rule(table, 'UPDATE', table)})"
        )
        op.execute(f"CREATE POLICY reelm_delete ON {table} FOR DELETE USING (true)")
        op.execute(_guard(table))


def downgrade() -> None:
    for table in RULES:
        op.execute(f"DROP TRIGGER reelm_residency ON {table}")
        op.execute(f"DROP FUNCTION reelm_guard_{table}()")
        for policy in ("reelm_read", "reelm_insert", "reelm_update", "reelm_delete"):
            op.execute(f"DROP POLICY {policy} ON {table}")
        op.execute(f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY")
    for function in (
        "reelm_unroute_market(uuid)",
        "reelm_route_market(uuid)",
        "reelm_switch_home(uuid, uuid[], integer[])",
        "reelm_caller_region(text)",
        "reelm_role_region()",
    ):
        op.execute(f"DROP FUNCTION {function}")
    op.drop_table("migration_releases")
    op.drop_table("cell_roles")
