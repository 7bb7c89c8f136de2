"""The authorisation function: every combination of viewer kind x video visibility x private
account x block x teen x market restriction x suspension, for every action; and its SQL form
(what every list filters by) agrees with it on real PostgreSQL rows."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from datetime import date
from typing import Any

import pytest
from sqlalchemy import insert

from reelm.accounts.lifecycle import update_privacy
from reelm.accounts.models import PublicProfile
from reelm.accounts.schemas import PrivacyUpdate
from reelm.accounts.service import CurrentUser
from reelm.media import catalog
from reelm.media.models import PublicVideo
from reelm.social import access
from reelm.social.access import ACTIONS, Relation, VideoFacts, Viewer, decide
from reelm.social.models import Block, Follow, Suspension, VideoRestriction

from .conftest import _factory, signed_in

OWNER = uuid.uuid4()
OTHER = uuid.uuid4()
VIEWERS = {
    "anonymous": (Viewer(None, "FR"), Relation()),
    "stranger": (Viewer(OTHER, "FR"), Relation()),
    "requester": (Viewer(OTHER, "FR"), Relation(requested=True)),
    "follower": (Viewer(OTHER, "FR"), Relation(follows=True)),
    "blocked": (Viewer(OTHER, "FR"), Relation(follows=False, blocked_by_owner=True)),
    "blocker": (Viewer(OTHER, "FR"), Relation(blocks_owner=True)),
    "owner": (Viewer(OWNER, "FR"), Relation()),
}


def _matrix() -> Iterator[tuple[Any, ...]]:
    yield from itertools.product(
        VIEWERS,
        ("public", "followers", "private"),
        (False, True),  # private account
        (False, True),  # teen
        (False, True),  # withheld in the viewer's market
        (False, True),  # creator suspended
        (False, True),  # comments on
        ("everyone", "followers"),
        ACTIONS,
    )


def test_every_combination_follows_the_rules() -> None:
    checked = 0
    for kind, visibility, private, teen, withheld, suspended, comments, who, action in _matrix():
        viewer, relation = VIEWERS[kind]
        video = VideoFacts(
            id=uuid.uuid4(),
            owner_id=OWNER,
            visibility=visibility,
            allow_comments=comments,
            comments_from=who,
            owner_private=private,
            owner_teen=teen,
            owner_suspended=suspended,
            restricted_in=frozenset({"FR"}) if withheld else frozenset(),
            in_catalog=visibility == "public",
        )
        d = decide(viewer, action, video, relation)
        seen = decide(viewer, "view", video, relation)
        where = (kind, visibility, private, teen, withheld, suspended, comments, who, action)
        checked += 1
        assert d.status in (200, 401, 403, 404, 451), where
        assert d.allowed == (d.status == 200), where
        # Acting on a video needs seeing it.
        assert not d.allowed or seen.allowed, where
        if kind == "owner":
            assert seen.allowed, where  # creators always see their own videos
            if suspended and action != "view":
                assert d.status == 403, where
            continue
        if suspended or kind in ("blocked", "blocker"):
            assert d.status == 404, where  # gone, and nothing says it exists
            continue
        if visibility == "private":
            assert d.status == 404, where
        if (visibility == "followers" or private) and kind != "follower":
            assert d.status == 404, where
        if withheld and seen.status != 404:
            assert d.status == 451, where
        if kind == "anonymous" and action != "view" and seen.allowed:
            assert d.status == 401, where
        if teen and action in ("download", "duet"):
            assert not d.allowed, where
        if action == "comment" and seen.allowed and kind != "anonymous":
            # Under-16s take comments from followers, whatever the video says.
            open_to_all = who == "everyone" and not teen
            wanted = visibility == "public" and comments and (open_to_all or kind == "follower")
            assert d.allowed == wanted, where
        if action in ("share", "download", "duet") and visibility != "public":
            assert not d.allowed, where
        if (
            action == "view"
            and visibility == "public"
            and not private
            and not withheld
            and kind in ("anonymous", "stranger", "requester", "follower")
        ):
            assert d.allowed, where
        if action in ("like", "report") and kind in ("stranger", "follower") and seen.allowed:
            assert d.allowed, where
    assert checked == 7 * 3 * 2 * 2 * 2 * 2 * 2 * 2 * len(ACTIONS)


def test_profiles() -> None:
    me = Viewer(OTHER, "FR")
    teen = access.ProfileFacts(OWNER, private=True, teen=True)
    adult = access.ProfileFacts(OWNER)
    assert decide_profile_status(me, "message", teen) == 403
    assert decide_profile_status(me, "message", adult) == 200
    # Under-16s: requests only from people they follow (issue #12), or already there.
    assert decide_profile_status(me, "follow", teen) == 403
    invited = Relation(followed_by_owner=True)
    assert decide_profile_status(me, "follow", teen, invited) == 200  # a request
    assert decide_profile_status(me, "follow", teen, Relation(requested=True)) == 200
    assert decide_profile_status(me, "follow", access.ProfileFacts(OWNER, private=True)) == 200
    assert decide_profile_status(Viewer(None, "FR"), "follow", adult) == 401
    assert decide_profile_status(me, "view", access.ProfileFacts(OWNER, suspended=True)) == 404
    assert decide_profile_status(me, "view", adult, Relation(blocked_by_owner=True)) == 404
    assert decide_profile_status(Viewer(OWNER, "FR"), "follow", adult) == 403


def decide_profile_status(
    viewer: Viewer, action: Any, profile: access.ProfileFacts, relation: Relation = access.NOBODY
) -> int:
    return access.decide_profile(viewer, action, profile, relation).status


# ---- the SQL form, on real rows --------------------------------------------------------------


@pytest.fixture(scope="module")
def world(admin_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    make = _factory(admin_url, tmp_path_factory)
    platform = next(make)()

    def person(market: str = "FR", born: date = date(1990, 1, 1)) -> CurrentUser:
        return signed_in(platform, "ax", market, born)[1]

    # Eight creators: every mix of private account, teen (always private) and suspended.
    creators: dict[tuple[bool, bool, bool], CurrentUser] = {}
    for private, teen, suspended in itertools.product((False, True), repeat=3):
        if teen and not private:
            continue
        born = date(date.today().year - 14, 1, 1) if teen else date(1990, 1, 1)
        user = person(born=born)
        if private and not teen:
            update_privacy(platform, user, PrivacyUpdate(private_account=True))
        creators[(private, teen, suspended)] = user
    viewers = {
        kind: person() for kind in ("stranger", "follower", "requester", "blocked", "blocker")
    }
    videos: list[tuple[uuid.UUID, CurrentUser, bool]] = []
    with platform.catalog.transaction() as c:
        for (_private, _teen, suspended), creator in creators.items():
            if suspended:
                c.add(Suspension(user_id=creator.user_id, reason="spam"))
            for withheld in (False, True):
                video_id = uuid.uuid4()
                c.execute(
                    insert(PublicVideo).values(
                        id=video_id,
                        owner_id=creator.user_id,
                        caption="matrix",
                        hashtags=["matrix"],
                        mentions=[],
                        allow_comments=True,
                        duration=1.0,
                        width=360,
                        height=640,
                        renditions=[],
                        poster_key=f"v/{video_id}/poster.jpg",
                    )
                )
                if withheld:
                    c.add(VideoRestriction(video_id=video_id, market="FR", reason="court-order"))
                videos.append((video_id, creator, withheld))
            c.add(
                Follow(
                    follower_id=viewers["follower"].user_id,
                    followee_id=creator.user_id,
                    state="active",
                )
            )
            c.add(
                Follow(
                    follower_id=viewers["requester"].user_id,
                    followee_id=creator.user_id,
                    state="requested",
                )
            )
            c.add(Block(blocker_id=creator.user_id, blocked_id=viewers["blocked"].user_id))
            c.add(Block(blocker_id=viewers["blocker"].user_id, blocked_id=creator.user_id))
    yield {"platform": platform, "creators": creators, "viewers": viewers, "videos": videos}
    next(make, None)


def test_lists_show_exactly_what_decide_allows(world: dict[str, Any]) -> None:
    platform = world["platform"]
    with platform.catalog.transaction() as c:
        teen_flags = {
            p.user_id: p.teen
            for p in c.query(PublicProfile).where(
                PublicProfile.user_id.in_([u.user_id for u in world["creators"].values()])
            )
        }
    assert sum(teen_flags.values()) == 2  # the sign-up set the teen flag
    lookers: dict[str, CurrentUser | None] = {"anonymous": None, **world["viewers"]}
    for creator in world["creators"].values():
        lookers[f"owner-{creator.handle}"] = creator
    for name, user in lookers.items():
        for market in ("FR", "US") if user is None else (user.market,):
            listed = {
                card.id
                for card in catalog.hashtag_feed(
                    platform, user, "matrix", limit=50, market=market
                ).items
            }
            expected = set()
            for video_id, _creator, _withheld in world["videos"]:
                facts = catalog.public_facts(platform, video_id)
                assert facts is not None
                who = catalog.viewer_of(user, market)
                relation = access.relation(platform, who.user_id, facts.owner_id)
                if decide(who, "view", facts, relation).allowed:
                    expected.add(video_id)
            assert listed == expected, name
            # The same rules as For You's last check runs them: one statement for every
            # viewer of a kind, the viewer given as parameters (access.listable_shape).
            ids = [video_id for video_id, _, _ in world["videos"]]
            who = catalog.viewer_of(user, market)
            shaped = catalog.cards_in_order(platform, user, ids, rules=who)
            assert {card.id for card in shaped} == expected, name
            if name == "follower":
                # Sees the active creators' videos that are not withheld in FR: 3 creators.
                assert len(listed) == 3
            if name == "anonymous" and market == "US":
                assert len(listed) == 2  # the public, active creator's two videos


def test_direct_access_answers_what_decide_says(world: dict[str, Any]) -> None:
    platform = world["platform"]
    stranger = world["viewers"]["stranger"]
    follower = world["viewers"]["follower"]
    public_active = world["creators"][(False, False, False)]
    withheld = next(v for v, c, w in world["videos"] if c is public_active and w)
    shown = next(v for v, c, w in world["videos"] if c is public_active and not w)
    with pytest.raises(access.Unavailable):
        catalog.get_video(platform, stranger, withheld)
    assert catalog.get_video(platform, None, withheld, market="US").id == withheld
    assert catalog.get_video(platform, public_active, withheld).id == withheld  # the creator
    assert catalog.get_video(platform, stranger, shown).id == shown
    private_active = world["creators"][(True, False, False)]
    hidden = next(v for v, c, w in world["videos"] if c is private_active and not w)
    with pytest.raises(access.NotFound):
        catalog.get_video(platform, stranger, hidden)
    assert catalog.get_video(platform, follower, hidden).id == hidden
    with pytest.raises(access.NotFound):
        catalog.get_video(platform, world["viewers"]["blocked"], shown)
    suspended = world["creators"][(False, False, True)]
    gone = next(v for v, c, w in world["videos"] if c is suspended and not w)
    with pytest.raises(access.NotFound):
        catalog.get_video(platform, follower, gone)


def test_for_you_never_shows_what_the_viewer_may_not_see(world: dict[str, Any]) -> None:
    """Under-16s' videos (private, locked accounts) reach their approved followers only, and
    the For You feed, built from the same rules, never offers anyone else a video they may not
    see: not to adults outside the teen's followers, not to the blocked, not in a market where
    it is withheld."""
    from reelm.feed import service as feeds

    platform = world["platform"]
    teen_videos = {v for v, c, _ in world["videos"] if c is world["creators"][(True, True, False)]}
    for name, viewer in world["viewers"].items():
        shown: set[uuid.UUID] = set()
        cursor = None
        for _ in range(4):
            page = feeds.for_you(platform, viewer, cursor=cursor, limit=5)
            shown |= {card.id for card in page.items}
            cursor = page.next_cursor
            if cursor is None:
                break
        for video_id in shown:
            facts = catalog.public_facts(platform, video_id)
            assert facts is not None
            who = catalog.viewer_of(viewer)
            relation = access.relation(platform, who.user_id, facts.owner_id)
            assert decide(who, "view", facts, relation).allowed, (name, video_id)
        if name != "follower":
            assert not shown & teen_videos, name
    follower = world["viewers"]["follower"]
    page = feeds.for_you(platform, follower, limit=20)
    assert {c.id for c in page.items} & teen_videos  # the teen's approved follower sees them
    anonymous = feeds.for_you(platform, None, limit=20, market="US")
    assert not {c.id for c in anonymous.items} & teen_videos
