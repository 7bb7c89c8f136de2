"""The catalog's row-level security (revision c0014_catalog_rls): a region's catalog role writes
only its own region's rows. Each test connects to the catalog with the `us` region's role (the
credentials a `us` cell holds) and tries another region's rows: refused, nothing written; and
its own: written.

Rows are made by the catalog's owner for users that exist only in the catalog (a directory
entry, a profile, a video): the regions' databases are not involved, so nothing here disturbs
the shared platform's other users."""

from __future__ import annotations

import dataclasses
import logging
import secrets
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg import errors as pg_errors
from sqlalchemy import func, select, text, update
from sqlalchemy.engine import make_url

from reelm.accounts.models import DirectoryEntry, PublicProfile
from reelm.bootstrap import Platform
from reelm.media.models import PublicVideo
from reelm.migration import switch
from reelm.migration.models import Migration, MigrationUser
from reelm.regions.cell import CatalogWriteRefused, catalog_refusals
from reelm.regions.models import MarketRoute
from reelm.social.models import Comment, Follow, RegionLikes
from reelm.storage.db import Database
from reelm.transparency.models import LogQueue
from tests.conftest import signed_in

REFUSED = pg_errors.InsufficientPrivilege


def _role_url(platform: Platform, region: str) -> str:
    """The catalog reached with `region`'s own role (as that region's cell reaches it)."""
    role = make_url(platform.cell(region).db.url)
    return role.set(database=make_url(platform.catalog.url).database).render_as_string(
        hide_password=False
    )


def _libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture
def as_region(platform: Platform) -> Iterator[Callable[[str], psycopg.Connection[Any]]]:
    """An autocommit psycopg connection to the catalog under a region's role."""
    opened: list[psycopg.Connection[Any]] = []

    def connect(region: str) -> psycopg.Connection[Any]:
        conn = psycopg.connect(_libpq(_role_url(platform, region)), autocommit=True)
        opened.append(conn)
        return conn

    yield connect
    for conn in opened:
        conn.close()


@pytest.fixture
def us(as_region: Callable[[str], psycopg.Connection[Any]]) -> psycopg.Connection[Any]:
    return as_region("us")


def _user(platform: Platform, region: str) -> uuid.UUID:
    """A user homed in `region`, in the catalog only: directory entry and profile."""
    user_id = uuid.uuid4()
    handle = f"rls{secrets.token_hex(5)}"
    with platform.catalog.transaction() as c:
        c.add(DirectoryEntry(user_id=user_id, home_region=region))
        c.flush()
        c.add(
            PublicProfile(
                user_id=user_id, handle=handle, handle_key=handle, display_name=handle, links={}
            )
        )
    return user_id


def _video(platform: Platform, owner: uuid.UUID) -> uuid.UUID:
    video_id = uuid.uuid4()
    with platform.catalog.transaction() as c:
        c.add(_video_row(video_id, owner))
    return video_id


def _video_row(video_id: uuid.UUID, owner: uuid.UUID) -> PublicVideo:
    return PublicVideo(
        id=video_id,
        owner_id=owner,
        caption="a caption",
        duration=1.0,
        width=8,
        height=8,
        renditions=[],
        poster_key="p",
    )


def _bio(platform: Platform, user_id: uuid.UUID) -> str | None:
    with platform.catalog.transaction() as c:
        return c.scalar(select(PublicProfile.bio).where(PublicProfile.user_id == user_id))


def _home(platform: Platform, user_id: uuid.UUID) -> tuple[str, int] | None:
    with platform.catalog.transaction() as c:
        row = c.execute(
            select(DirectoryEntry.home_region, DirectoryEntry.epoch).where(
                DirectoryEntry.user_id == user_id
            )
        ).first()
    return None if row is None else (row[0], row[1])


# ---- users' rows: profiles, directory -----------------------------------------------------


def test_profile_of_another_regions_user_is_refused(
    platform: Platform, us: psycopg.Connection[Any]
) -> None:
    sg_user, us_user = _user(platform, "sg"), _user(platform, "us")
    with pytest.raises(REFUSED, match="row-level security"):
        us.execute("UPDATE profiles SET bio = 'pwned' WHERE user_id = %s", (sg_user,))
    with pytest.raises(REFUSED, match="row-level security"):
        us.execute("DELETE FROM profiles WHERE user_id = %s", (sg_user,))
    assert _bio(platform, sg_user) == ""
    # A profile for another region's user (its directory entry has none yet) is refused too.
    bare = uuid.uuid4()
    with platform.catalog.transaction() as c:
        c.add(DirectoryEntry(user_id=bare, home_region="sg"))
    with pytest.raises(REFUSED, match="new row violates row-level security"):
        us.execute(
            "INSERT INTO profiles (user_id, handle, handle_key, display_name, bio, links, "
            "is_private) VALUES (%s, 'x' || substr(md5(random()::text), 1, 12), null, 'x', "
            "'', '{}', false)",
            (bare,),
        )
    with platform.catalog.transaction() as c:
        assert c.get(PublicProfile, bare) is None
    # Its own users' profiles: written.
    done = us.execute("UPDATE profiles SET bio = 'mine' WHERE user_id = %s", (us_user,))
    assert done.rowcount == 1
    assert _bio(platform, us_user) == "mine"


def test_directory_rows_of_another_region_are_refused(
    platform: Platform, us: psycopg.Connection[Any]
) -> None:
    sg_user, us_user = _user(platform, "sg"), _user(platform, "us")
    planted = uuid.uuid4()
    with pytest.raises(REFUSED, match="new row violates row-level security"):
        us.execute(
            "INSERT INTO directory (user_id, home_region, epoch, state) "
            "VALUES (%s, 'sg', 1, 'active')",
            (planted,),
        )
    assert _home(platform, planted) is None
    # Moving a user by hand, either way, is refused: the switch is the migration's.
    with pytest.raises(REFUSED, match="row-level security"):
        us.execute("UPDATE directory SET home_region = 'us' WHERE user_id = %s", (sg_user,))
    with pytest.raises(REFUSED, match="row-level security"):
        us.execute("UPDATE directory SET home_region = 'sg' WHERE user_id = %s", (us_user,))
    with pytest.raises(REFUSED, match="row-level security"):
        us.execute("UPDATE directory SET state = 'deleting' WHERE user_id = %s", (sg_user,))
    with pytest.raises(REFUSED, match="row-level security"):
        us.execute("DELETE FROM directory WHERE user_id = %s", (sg_user,))
    assert _home(platform, sg_user) == ("sg", 1)
    assert _home(platform, us_user) == ("us", 1)
    with platform.catalog.transaction() as c:
        entry = c.get(DirectoryEntry, sg_user)
        assert entry is not None and entry.state == "active"
    # Its own: a new user homed here, and a state change of its own user.
    mine = uuid.uuid4()
    us.execute(
        "INSERT INTO directory (user_id, home_region, epoch, state) VALUES (%s, 'us', 1, 'active')",
        (mine,),
    )
    assert (
        us.execute("UPDATE directory SET state = 'deleting' WHERE user_id = %s", (mine,)).rowcount
        == 1
    )
    assert _home(platform, mine) == ("us", 1)


def test_role_region_map_is_the_owners(platform: Platform, us: psycopg.Connection[Any]) -> None:
    assert us.execute("SELECT reelm_role_region()").fetchone() == ("us",)
    for statement in (
        "UPDATE cell_roles SET region = 'sg'",
        "INSERT INTO cell_roles (role, region) VALUES ('someone', 'sg')",
        "DELETE FROM cell_roles",
        "DELETE FROM staff_members",
    ):
        with pytest.raises(REFUSED, match="permission denied"):
            us.execute(statement)
    assert us.execute("SELECT reelm_role_region()").fetchone() == ("us",)


# ---- public videos and what hangs on them -----------------------------------------------


def test_public_videos_of_another_regions_user_are_refused(
    platform: Platform, us: psycopg.Connection[Any]
) -> None:
    sg_user, us_user = _user(platform, "sg"), _user(platform, "us")
    sg_video = _video(platform, sg_user)
    planted = uuid.uuid4()
    insert = (
        "INSERT INTO public_videos (id, owner_id, caption, hashtags, mentions, allow_comments, "
        "duration, width, height, renditions, poster_key, share_count) "
        "VALUES (%s, %s, 'c', '{}', '{}', true, 1, 8, 8, '[]', 'p', 0)"
    )
    with pytest.raises(REFUSED, match="new row violates row-level security"):
        us.execute(insert, (planted, sg_user))
    for statement in (
        "UPDATE public_videos SET caption = 'pwned' WHERE id = %s",
        # Taking it over: the old row is another region's.
        f"UPDATE public_videos SET owner_id = '{us_user}' WHERE id = %s",
        "DELETE FROM public_videos WHERE id = %s",
    ):
        with pytest.raises(REFUSED, match="row-level security"):
            us.execute(statement, (sg_video,))
    with platform.catalog.transaction() as c:
        video = c.get(PublicVideo, sg_video)
        assert video is not None and (video.caption, video.owner_id) == ("a caption", sg_user)
        assert c.get(PublicVideo, planted) is None
    # Its own user's: published, edited, and taken down.
    mine = uuid.uuid4()
    us.execute(insert, (mine, us_user))
    us.execute("UPDATE public_videos SET caption = 'edited' WHERE id = %s", (mine,))
    with platform.catalog.transaction() as c:
        assert c.scalar(select(PublicVideo.caption).where(PublicVideo.id == mine)) == "edited"
    assert us.execute("DELETE FROM public_videos WHERE id = %s", (mine,)).rowcount == 1


def test_comments_and_follows_act_for_own_users_only(
    platform: Platform, us: psycopg.Connection[Any], as_region: Callable[[str], Any]
) -> None:
    sg_user, us_user = _user(platform, "sg"), _user(platform, "us")
    sg_video, us_video = _video(platform, sg_user), _video(platform, us_user)
    comment = (
        "INSERT INTO comments (id, video_id, author_id, body, mentions) "
        "VALUES (%s, %s, %s, 'hi', '{}')"
    )
    forged = uuid.uuid4()
    with pytest.raises(REFUSED, match="new row violates row-level security"):
        us.execute(comment, (forged, us_video, sg_user))
    # Its user comments on the SG user's video; the SG user's comment on its user's video
    # may be deleted by its user (the video's creator), not edited.
    mine, theirs = uuid.uuid4(), uuid.uuid4()
    us.execute(comment, (mine, sg_video, us_user))
    with platform.catalog.transaction() as c:
        c.add(Comment(id=theirs, video_id=us_video, author_id=sg_user, body="x", mentions=[]))
    with pytest.raises(REFUSED, match="row-level security"):
        us.execute("UPDATE comments SET body = 'pwned' WHERE id = %s", (theirs,))
    assert us.execute("DELETE FROM comments WHERE id = %s", (theirs,)).rowcount == 1
    # A follow asked in the SG user's name is refused; its user's follow of the SG user is
    # written, and only SG may approve a request to its user.
    follow = "INSERT INTO follows (follower_id, followee_id, state) VALUES (%s, %s, %s)"
    with pytest.raises(REFUSED, match="new row violates row-level security"):
        us.execute(follow, (sg_user, us_user, "active"))
    us.execute(follow, (us_user, sg_user, "requested"))
    with pytest.raises(REFUSED, match="row-level security"):
        us.execute(
            "UPDATE follows SET state = 'active' WHERE follower_id = %s AND followee_id = %s",
            (us_user, sg_user),
        )
    sg = as_region("sg")
    sg.execute(
        "UPDATE follows SET state = 'active' WHERE follower_id = %s AND followee_id = %s",
        (us_user, sg_user),
    )
    with platform.catalog.transaction() as c:
        states = c.execute(
            select(Follow.follower_id, Follow.state).where(
                Follow.followee_id.in_([sg_user, us_user])
            )
        ).all()
        assert states == [(us_user, "active")]
        assert c.get(Comment, forged) is None and c.get(Comment, mine) is not None


def test_engagement_rows_of_another_region_are_refused(
    platform: Platform, us: psycopg.Connection[Any]
) -> None:
    video = _video(platform, _user(platform, "sg"))
    with platform.catalog.transaction() as c:
        c.add(RegionLikes(video_id=video, region="sg", likes=5))
    for statement in (
        "INSERT INTO region_likes (video_id, region, likes) VALUES (%s, 'sg', 100)",
        "UPDATE region_likes SET likes = 0 WHERE video_id = %s AND region = 'sg'",
        "DELETE FROM region_likes WHERE video_id = %s",
        "INSERT INTO engagement_receipts (region, outbox_id) VALUES ('sg', %s)",
    ):
        with pytest.raises(REFUSED, match="row-level security"):
            us.execute(statement, (video,))
    # Its own region's count of the SG user's video: written.
    us.execute("INSERT INTO region_likes (video_id, region, likes) VALUES (%s, 'us', 2)", (video,))
    us.execute("INSERT INTO engagement_receipts (region, outbox_id) VALUES ('us', %s)", (video,))
    with platform.catalog.transaction() as c:
        likes = dict(
            c.execute(
                select(RegionLikes.region, RegionLikes.likes).where(RegionLikes.video_id == video)
            ).all()
        )
    assert likes == {"sg": 5, "us": 2}


# ---- the migration's switch and market routes --------------------------------------------


def _migration(platform: Platform, destination: str, market: str | None = None) -> uuid.UUID:
    migration_id = uuid.uuid4()
    with platform.catalog.transaction() as c:
        c.add(Migration(id=migration_id, destination=destination, market=market, plan={}))
    return migration_id


def _journal(platform: Platform, migration_id: uuid.UUID, user_id: uuid.UUID, source: str) -> None:
    with platform.catalog.transaction() as c:
        c.add(
            MigrationUser(
                migration_id=migration_id, user_id=user_id, source=source, state="verified"
            )
        )


def _state(platform: Platform, migration_id: uuid.UUID, user_id: uuid.UUID) -> str | None:
    with platform.catalog.transaction() as c:
        return c.scalar(
            select(MigrationUser.state).where(
                MigrationUser.migration_id == migration_id, MigrationUser.user_id == user_id
            )
        )


@pytest.fixture
def roles(platform: Platform) -> Iterator[dict[str, Database]]:
    """The catalog as the `us` and `sg` cells reach it, through reelm's own Database with the
    refusal hook bootstrap installs."""
    made = {}
    for region in ("us", "sg"):
        db = Database.connect(f"catalog-as-{region}", _role_url(platform, region), pool_size=1)
        db.refusal = catalog_refusals(platform.cells, db)
        made[region] = db
    yield made
    for db in made.values():
        db.dispose()


def test_switch_needs_the_sources_release_and_the_destinations_commit(
    platform: Platform, roles: dict[str, Database]
) -> None:
    """SG -> US: only SG releases its user, only US commits, at the released epoch."""
    us_db, sg_db = roles["us"], roles["sg"]
    user = _user(platform, "sg")
    to_us = _migration(platform, "us")
    _journal(platform, to_us, user, "sg")
    # The destination cannot release another region's user; unreleased, nothing switches.
    with pytest.raises(CatalogWriteRefused), us_db.transaction() as c:
        switch.release(c, to_us, "sg", [user])
    with us_db.transaction() as c:
        assert switch.switch_home(c, to_us, [user]) == set()
    # The source releases; a stale epoch switches nobody.
    with sg_db.transaction() as c:
        switch.release(c, to_us, "sg", [user])
    with us_db.transaction() as c:
        stale = c.scalars(
            text("SELECT * FROM reelm_switch_home(:m, ARRAY[CAST(:u AS uuid)], ARRAY[2])"),
            {"m": to_us, "u": user},
        ).all()
    assert stale == []
    assert _home(platform, user) == ("sg", 1) and _state(platform, to_us, user) == "verified"
    # The source cannot commit a switch to another region (nor can a third region).
    with pytest.raises(CatalogWriteRefused, match="the switch"), sg_db.transaction() as c:
        switch.switch_home(c, to_us, [user])
    assert _home(platform, user) == ("sg", 1) and _state(platform, to_us, user) == "verified"
    # The destination commits at the released epoch: moved, epoch raised, journal switched.
    with us_db.transaction() as c:
        assert switch.switch_home(c, to_us, [user]) == {user}
    assert _home(platform, user) == ("us", 2) and _state(platform, to_us, user) == "switched"
    with us_db.transaction() as c:  # done once: a second commit changes nothing
        assert switch.switch_home(c, to_us, [user]) == set()
    assert _home(platform, user) == ("us", 2)


def test_switch_to_another_region_is_refused_to_a_region_role(
    platform: Platform, roles: dict[str, Database]
) -> None:
    """US may not commit a switch of SG's user to SG's neighbour, nor to a finished one."""
    user = _user(platform, "sg")
    to_nz = _migration(platform, "nz")
    _journal(platform, to_nz, user, "sg")
    with roles["sg"].transaction() as c:
        switch.release(c, to_nz, "sg", [user])
    with pytest.raises(CatalogWriteRefused, match="the switch"), roles["us"].transaction() as c:
        switch.switch_home(c, to_nz, [user])
    with platform.catalog.transaction() as c:
        c.execute(update(Migration).where(Migration.id == to_nz).values(state="aborted"))
    with pytest.raises(CatalogWriteRefused, match="the switch"), roles["us"].transaction() as c:
        switch.switch_home(c, to_nz, [user])
    assert _home(platform, user) == ("sg", 1) and _state(platform, to_nz, user) == "verified"


def test_market_routes_change_only_through_the_destinations_migration(
    platform: Platform, us: psycopg.Connection[Any]
) -> None:
    market = "Q" + secrets.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
    with platform.catalog.transaction() as c:
        c.execute(text("DELETE FROM market_routes WHERE market = :m"), {"m": market})
    with pytest.raises(REFUSED, match="permission denied"):
        us.execute("INSERT INTO market_routes (market, region) VALUES (%s, 'us')", (market,))
    to_sg = _migration(platform, "sg", market)
    with pytest.raises(REFUSED, match="market route"):
        us.execute("SELECT reelm_route_market(%s)", (to_sg,))
    to_us = _migration(platform, "us", market)
    us.execute("SELECT reelm_route_market(%s)", (to_us,))
    with platform.catalog.transaction() as c:
        assert c.get(MarketRoute, market) is not None
        assert c.scalar(select(MarketRoute.region).where(MarketRoute.market == market)) == "us"
    with pytest.raises(REFUSED, match="market route"):
        us.execute("SELECT reelm_unroute_market(%s)", (to_sg,))
    us.execute("SELECT reelm_unroute_market(%s)", (to_us,))
    with platform.catalog.transaction() as c:
        assert c.get(MarketRoute, market) is None


# ---- the refusal in reelm: a clear error, logged without personal data -------------------


def test_refusal_is_a_domain_error_logged_in_the_acting_region(
    platform: Platform, roles: dict[str, Database], caplog: pytest.LogCaptureFixture
) -> None:
    sg_user = _user(platform, "sg")
    us_log = platform.cell("us").db

    def refusals() -> int:
        with us_log.transaction() as s:
            return (
                s.scalar(
                    select(func.count())
                    .select_from(LogQueue)
                    .where(
                        LogQueue.kind == "residency.refused", LogQueue.subject == "catalog:profiles"
                    )
                )
                or 0
            )

    before = refusals()
    caplog.set_level(logging.INFO)
    with pytest.raises(CatalogWriteRefused) as refused, roles["us"].transaction() as c:
        c.execute(
            update(PublicProfile)
            .where(PublicProfile.user_id == sg_user)
            .values(bio="a secret bio", display_name="Secret Name")
        )
    assert (refused.value.region, refused.value.target) == ("us", "profiles")
    assert refused.value.__cause__ is None  # the statement and its values are not chained
    assert refusals() == before + 1
    assert _bio(platform, sg_user) == ""
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "catalog write refused: region=us target=profiles" in logged
    assert str(sg_user) not in logged and "secret" not in logged.lower()


# ---- a cell's own work passes ----------------------------------------------------------------


def test_a_us_cells_own_work_passes_and_its_reach_beyond_is_refused(
    platform: Platform, roles: dict[str, Database]
) -> None:
    """reelm's own services, with the catalog reached as the `us` cell reaches it: its user
    signs up, edits the profile, follows, likes, comments on and blocks an SG user; acting
    for the SG user is refused by the catalog."""
    from reelm.accounts.lifecycle import public_profile, update_profile
    from reelm.accounts.schemas import ProfileUpdate
    from reelm.social import comments, graph, likes

    _, sg_user = signed_in(platform, "rlssg", "SG")
    assert sg_user.home_region == "sg"
    sg_handle = public_profile(platform, sg_user.handle).handle
    sg_video = _video(platform, sg_user.user_id)
    cell = dataclasses.replace(platform, catalog=roles["us"], queues={}, caches={})
    try:
        _, me = signed_in(cell, "rlsus", "US")
        assert me.home_region == "us"
        assert update_profile(cell, me, ProfileUpdate(bio="from the us cell")).bio == (
            "from the us cell"
        )
        assert graph.follow(cell, me, sg_handle) == "active"
        assert likes.like(cell, me, sg_video) == 1
        said = comments.add(cell, me, sg_video, "nice one")
        comments.delete_comment(cell, me, said.id)
        graph.block(cell, me, sg_handle)
        graph.unblock(cell, me, sg_handle)
        with pytest.raises(CatalogWriteRefused):
            update_profile(cell, sg_user, ProfileUpdate(bio="written by the us cell"))
    finally:
        for queue in cell.queues.values():
            queue.close()
    assert _bio(platform, sg_user.user_id) == ""
    with platform.catalog.transaction() as c:
        assert c.get(RegionLikes, (sg_video, "us")) is not None


def test_the_scanner_reads_every_catalog_row_through_a_region_role(
    platform: Platform, us: psycopg.Connection[Any]
) -> None:
    """A cell's residency-scan reads the catalog with its own role: the read policies hide
    nothing, and a table whose policy would hide rows is still reported."""
    from reelm.residency.scan import _tables

    owner = psycopg.connect(_libpq(platform.catalog.url), autocommit=True)
    try:
        owner.execute("CREATE TABLE rls_probe (id int)")
        owner.execute("ALTER TABLE rls_probe ENABLE ROW LEVEL SECURITY")
        owner.execute("CREATE POLICY positive ON rls_probe FOR SELECT USING (id > 0)")
        owner.execute(f"GRANT SELECT ON rls_probe TO {us.info.user}")
        filtered = {r.name: r.filtered for r in _tables(us)}
    finally:
        owner.execute("DROP TABLE IF EXISTS rls_probe")
        owner.close()
    assert filtered["rls_probe"] is True
    assert not any(filtered[t] for t in ("directory", "profiles", "public_videos", "follows"))
