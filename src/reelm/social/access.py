"""Who may see or act on what: the one authorisation function.

``decide(viewer, action, video, relation)`` is pure: every endpoint and page gathers the facts
(``video_facts``, ``relation``) and asks it, so the rules live in one place and one table of
tests covers them (tests/test_access.py runs every combination).

The rules, in the order they apply:

1. A video whose creator was deleted, is being deleted or is suspended is gone (404), except
   for the creator, who still sees their own videos but may not act.
2. A block, either way, hides the video and its creator (404): the blocked user learns
   nothing, not even that the video exists.
3. Private videos are for their creator; followers-only videos (and every video of a private
   account) for the creator's approved followers. Anyone else gets 404.
4. A video withheld in the viewer's market answers 451 there, to everyone but its creator.
5. Acting needs a signed-in viewer (401); commenting needs comments on, and the creator's
   followers when the creator chose "followers"; comments exist on public videos only.
6. Videos of under-16s are never downloaded or duetted (403), and they never reach adults
   outside their followers: their accounts are private and locked, so rule 3 already keeps
   them out of every public list, feed and recommendation. Their videos take comments from
   followers only (403), whatever a video's own setting says.
7. Profiles of under-16s: no messages, and follow requests only from people they follow
   (they invite one by following first: 403 otherwise). People search leaves them out for
   anyone who does not follow them (reelm.search.service).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal, TypeVarTuple

from sqlalchemy import (
    ColumnElement,
    Select,
    String,
    Uuid,
    and_,
    bindparam,
    exists,
    or_,
    select,
)

from reelm.accounts.errors import AccountError, NotAuthenticated, NotFound
from reelm.accounts.models import DirectoryEntry, PublicProfile
from reelm.bootstrap import Platform
from reelm.media.models import PublicVideo
from reelm.social.models import Block, Follow, Suspension, VideoRestriction
from reelm.storage.db import Database

Action = Literal["view", "like", "comment", "share", "download", "duet", "report"]
ACTIONS: tuple[Action, ...] = ("view", "like", "comment", "share", "download", "duet", "report")


class Forbidden(AccountError):
    slug = "forbidden"
    status = 403
    title = "Not allowed"


class Unavailable(AccountError):
    """RFC 7725: withheld in this market for a legal reason."""

    slug = "unavailable-for-legal-reasons"
    status = 451
    title = "Unavailable for legal reasons"


@dataclass(frozen=True, slots=True)
class Viewer:
    user_id: uuid.UUID | None  # None: not signed in
    market: str | None  # where the request comes from (the account's market when signed in)


@dataclass(frozen=True, slots=True)
class VideoFacts:
    id: uuid.UUID
    owner_id: uuid.UUID
    visibility: str  # public, followers, private
    allow_comments: bool = True
    comments_from: str = "everyone"  # everyone, followers
    owner_private: bool = False
    owner_teen: bool = False
    owner_active: bool = True  # directory state 'active'
    owner_suspended: bool = False
    restricted_in: frozenset[str] = frozenset()
    in_catalog: bool = True  # a ready public video (comments live beside it)


@dataclass(frozen=True, slots=True)
class Relation:
    """The viewer as the creator sees them."""

    follows: bool = False  # an approved follower
    requested: bool = False  # a follow request waiting
    blocked_by_owner: bool = False
    blocks_owner: bool = False
    followed_by_owner: bool = False  # the creator follows the viewer (approved)


NOBODY = Relation()


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    status: int  # 200, 401, 403, 404, 451
    reason: str

    def enforce(self) -> None:
        """Raise the error a refusal is answered with."""
        if self.allowed:
            return
        error = {401: NotAuthenticated, 403: Forbidden, 451: Unavailable}.get(self.status, NotFound)
        raise error(self.reason)


ALLOW = Decision(True, 200, "allowed")


def _no(status: int, reason: str) -> Decision:
    return Decision(False, status, reason)


def decide(viewer: Viewer, action: Action, video: VideoFacts, relation: Relation) -> Decision:
    owner = viewer.user_id is not None and viewer.user_id == video.owner_id
    if owner:
        if action == "view":
            return ALLOW
        if not video.owner_active or video.owner_suspended:
            return _no(403, "your account cannot do this now")
        return _owner_action(action, video)
    if not video.owner_active or video.owner_suspended:
        return _no(404, "no such video")
    if relation.blocked_by_owner or relation.blocks_owner:
        return _no(404, "no such video")
    if video.visibility == "private":
        return _no(404, "no such video")
    if (video.visibility == "followers" or video.owner_private) and not relation.follows:
        return _no(404, "no such video")
    if viewer.market is not None and viewer.market in video.restricted_in:
        return _no(451, "this video is not available in your country for a legal reason")
    if action == "view":
        return ALLOW
    if viewer.user_id is None:
        return _no(401, "sign in first")
    if action in ("download", "duet") and video.owner_teen:
        return _no(403, "videos of people under 16 cannot be downloaded or duetted")
    if action == "comment":
        return _comment(video, relation)
    if action in ("download", "duet", "share") and video.visibility != "public":
        return _no(403, "only public videos can be shared, downloaded or duetted")
    return ALLOW


def _owner_action(action: Action, video: VideoFacts) -> Decision:
    if action == "comment":
        if not video.in_catalog:
            return _no(403, "comments are available on public videos only")
        if not video.allow_comments:
            return _no(403, "comments are off for this video")
    if action in ("download", "duet", "share") and video.visibility != "public":
        return _no(403, "only public videos can be shared, downloaded or duetted")
    if action == "report":
        return _no(403, "you cannot report your own video")
    return ALLOW


def _comment(video: VideoFacts, relation: Relation) -> Decision:
    if not video.in_catalog:
        return _no(403, "comments are available on public videos only")
    if not video.allow_comments:
        return _no(403, "comments are off for this video")
    if (video.comments_from == "followers" or video.owner_teen) and not relation.follows:
        # An under-16's videos take comments from followers whatever a video says (one
        # stored before the rule may still say everyone).
        return _no(403, "only the creator's followers can comment on this video")
    return ALLOW


# ---- profiles --------------------------------------------------------------------------------

ProfileAction = Literal["view", "follow", "message", "report"]


@dataclass(frozen=True, slots=True)
class ProfileFacts:
    user_id: uuid.UUID
    private: bool = False
    teen: bool = False
    active: bool = True
    suspended: bool = False


def decide_profile(
    viewer: Viewer, action: ProfileAction, profile: ProfileFacts, relation: Relation
) -> Decision:
    """A profile page (name, bio, counts) is seen by anyone it is not hidden from; its videos
    go through ``decide``. Following a private account sends a request."""
    if viewer.user_id is not None and viewer.user_id == profile.user_id:
        if action == "view":
            return ALLOW
        return _no(403, "you cannot do this to your own account")
    if not profile.active or profile.suspended:
        return _no(404, "no such account")
    if relation.blocked_by_owner:
        return _no(404, "no such account")
    if relation.blocks_owner:
        # The blocker still finds the page, to unblock; nothing else.
        return ALLOW if action == "view" else _no(403, "unblock this account first")
    if action == "view":
        return ALLOW
    if viewer.user_id is None:
        return _no(401, "sign in first")
    if action == "message" and profile.teen:
        return _no(403, "people under 16 cannot be messaged")
    if action == "follow" and profile.teen and not _invited(relation):
        return _no(403, "people under 16 can be asked to follow only by people they follow")
    return ALLOW


def _invited(relation: Relation) -> bool:
    """An under-16 invites a follow request by following that person first (the request is
    a follow back); a follow or a request already there stays as it is."""
    return relation.followed_by_owner or relation.follows or relation.requested


# ---- gathering the facts ---------------------------------------------------------------------


def relation(
    platform: Platform,
    viewer: uuid.UUID | None,
    owner: uuid.UUID,
    *,
    reads: Database | None = None,
) -> Relation:
    """One catalog round trip: follow state and blocks either way. From ``reads`` (the
    replica, for a page), by default the primary (a check before a write)."""
    if viewer is None or viewer == owner:
        return NOBODY
    with (reads or platform.catalog).transaction() as c:
        row = c.execute(
            select(
                select(Follow.state)
                .where(Follow.follower_id == viewer, Follow.followee_id == owner)
                .scalar_subquery(),
                exists().where(Block.blocker_id == owner, Block.blocked_id == viewer),
                exists().where(Block.blocker_id == viewer, Block.blocked_id == owner),
                exists().where(
                    Follow.follower_id == owner,
                    Follow.followee_id == viewer,
                    Follow.state == "active",
                ),
            )
        ).one()
    return Relation(
        follows=row[0] == "active",
        requested=row[0] == "requested",
        blocked_by_owner=bool(row[1]),
        blocks_owner=bool(row[2]),
        followed_by_owner=bool(row[3]),
    )


def profile_facts(
    platform: Platform, user_id: uuid.UUID, *, reads: Database | None = None
) -> ProfileFacts:
    with (reads or platform.catalog).transaction() as c:
        row = c.execute(
            select(
                PublicProfile.is_private,
                PublicProfile.teen,
                DirectoryEntry.state,
                exists().where(Suspension.user_id == user_id),
            )
            .join(DirectoryEntry, DirectoryEntry.user_id == PublicProfile.user_id)
            .where(PublicProfile.user_id == user_id)
        ).first()
    if row is None:
        return ProfileFacts(user_id, active=False)
    return ProfileFacts(
        user_id, private=row[0], teen=row[1], active=row[2] == "active", suspended=bool(row[3])
    )


def restrictions(platform: Platform, video_id: uuid.UUID) -> frozenset[str]:
    with platform.catalog.transaction() as c:
        return frozenset(
            c.scalars(select(VideoRestriction.market).where(VideoRestriction.video_id == video_id))
        )


# ---- the same rules as SQL, for lists --------------------------------------------------------


LISTABLE_VIEWER, LISTABLE_MARKET = "listable_viewer", "listable_market"  # parameter names
Ts = TypeVarTuple("Ts")


def listable(query: Select[*Ts], viewer: Viewer) -> Select[*Ts]:
    """`query` (over ``public_videos`` joined to ``profiles`` and ``directory``) left with the
    videos `viewer` may see in lists: rules 1-4 of ``decide`` for "view" (what every feed, grid
    and search list filters by, so a page is full). Videos withheld in the viewer's market are
    left out of lists (a direct link answers 451). tests/test_access.py checks that this and
    ``decide`` agree on every combination.

    The clause is one per kind of viewer (`listable_shape`), the viewer's id and market bound
    as parameters: building it per viewer cost 0.4-1.5 ms, and keeping it per viewer had the
    garbage collector walk hundreds of thousands of objects (100 ms a full collection,
    bench/feed.py)."""
    return query.where(listable_shape(*listable_kind(viewer))).params(listable_values(viewer))


def listable_kind(viewer: Viewer) -> tuple[bool, bool]:
    """Which `listable_shape` applies to this viewer: (signed in, has a market)."""
    return viewer.user_id is not None, viewer.market is not None


def listable_values(viewer: Viewer) -> dict[str, Any]:
    """The parameters of `listable_shape` for this viewer."""
    values: dict[str, Any] = {}
    if viewer.user_id is not None:
        values[LISTABLE_VIEWER] = viewer.user_id
    if viewer.market is not None:
        values[LISTABLE_MARKET] = viewer.market
    return values


@lru_cache(maxsize=4)
def listable_shape(signed_in: bool, in_market: bool) -> ColumnElement[bool]:
    """The clause of `listable` for a kind of viewer, the viewer's id and market left as
    parameters (`listable_values`): statements built once and kept hold it, and are given the
    values when they run."""
    return _listable(
        bindparam(LISTABLE_VIEWER, type_=Uuid()) if signed_in else None,
        bindparam(LISTABLE_MARKET, type_=String()) if in_market else None,
    )


def _listable(me: Any, market: Any) -> ColumnElement[bool]:
    """The clause for the viewer `me` in `market` (values or parameters; None: signed out, no
    market)."""
    owner = PublicVideo.owner_id
    clause = and_(
        DirectoryEntry.state == "active",
        ~exists().where(Suspension.user_id == owner),
    )
    if market is not None:
        clause = and_(
            clause,
            ~exists().where(
                VideoRestriction.video_id == PublicVideo.id,
                VideoRestriction.market == market,
            ),
        )
    if me is None:
        return and_(clause, PublicProfile.is_private.is_(False))
    follows = exists().where(
        Follow.follower_id == me, Follow.followee_id == owner, Follow.state == "active"
    )
    blocked = exists().where(
        or_(
            and_(Block.blocker_id == owner, Block.blocked_id == me),
            and_(Block.blocker_id == me, Block.blocked_id == owner),
        )
    )
    return or_(
        owner == me,
        and_(clause, ~blocked, or_(PublicProfile.is_private.is_(False), follows)),
    )
