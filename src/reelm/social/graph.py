"""The social graph: follows, follow requests and blocks (catalog tables: see models).

Following a public account takes effect at once; following a private one sends a request the
account approves or declines. Blocking removes follows both ways and hides each from the other
(reelm.social.access)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert

from reelm.accounts.errors import NotFound
from reelm.accounts.lifecycle import Profile, public_profile
from reelm.accounts.models import DirectoryEntry, PublicProfile
from reelm.accounts.service import CurrentUser
from reelm.bootstrap import Platform
from reelm.social import access, notify
from reelm.social.models import Block, Follow
from reelm.storage.db import Database

MAX_LIST = 100


@dataclass(frozen=True, slots=True)
class Counts:
    followers: int
    following: int


@dataclass(frozen=True, slots=True)
class Person:
    handle: str
    display_name: str
    since: datetime


def checked_profile(
    platform: Platform, viewer: CurrentUser | None, handle: str, action: access.ProfileAction
) -> tuple[Profile, access.Relation]:
    """The profile ``handle`` if ``viewer`` may do ``action`` to it (reelm.social.access),
    and how the viewer stands with it; hidden profiles are not found."""
    target = public_profile(platform, handle)
    who = access.Viewer(viewer.user_id if viewer else None, viewer.market if viewer else None)
    relation = access.relation(platform, who.user_id, target.user_id)
    facts = access.profile_facts(platform, target.user_id)
    access.decide_profile(who, action, facts, relation).enforce()
    return target, relation


def _target(platform: Platform, user: CurrentUser, handle: str) -> Profile:
    return checked_profile(platform, user, handle, "follow")[0]


def follow(platform: Platform, user: CurrentUser, handle: str) -> str:
    """Follow ``handle``: 'active', or 'requested' for a private account. Idempotent."""
    target = _target(platform, user, handle)
    state = "requested" if target.is_private else "active"
    with platform.catalog_write(user.user_id) as c:
        inserted = c.execute(
            insert(Follow)
            .values(follower_id=user.user_id, followee_id=target.user_id, state=state)
            .on_conflict_do_nothing()
            .returning(Follow.state)
        ).first()
        if inserted is None:
            current = c.scalar(
                select(Follow.state).where(
                    Follow.follower_id == user.user_id, Follow.followee_id == target.user_id
                )
            )
            return current or state
    kind = "follow_request" if state == "requested" else "follow"
    notify.send(platform, target.user_id, kind, user.user_id)
    return state


def unfollow(platform: Platform, user: CurrentUser, handle: str) -> None:
    """Stop following ``handle``, or withdraw a request. Idempotent."""
    target = public_profile(platform, handle)
    with platform.catalog_write(user.user_id) as c:
        c.execute(
            delete(Follow).where(
                Follow.follower_id == user.user_id, Follow.followee_id == target.user_id
            )
        )


def answer_request(platform: Platform, user: CurrentUser, handle: str, *, approve: bool) -> None:
    """Approve or decline ``handle``'s request to follow the user."""
    asker = public_profile(platform, handle)
    with platform.catalog_write(user.user_id) as c:
        where = and_(
            Follow.follower_id == asker.user_id,
            Follow.followee_id == user.user_id,
            Follow.state == "requested",
        )
        if approve:
            change = update(Follow).where(where).values(state="active")
        else:
            change = delete(Follow).where(where)  # type: ignore[assignment]
        done = c.execute(change.returning(Follow.follower_id)).first()
    if not done:
        raise NotFound(f"@{asker.handle} has not asked to follow you")
    if approve:
        notify.send(platform, asker.user_id, "follow_accepted", user.user_id)


def remove_follower(platform: Platform, user: CurrentUser, handle: str) -> None:
    follower = public_profile(platform, handle)
    with platform.catalog_write(user.user_id) as c:
        c.execute(
            delete(Follow).where(
                Follow.follower_id == follower.user_id, Follow.followee_id == user.user_id
            )
        )


def approve_all(platform: Platform, user: CurrentUser) -> int:
    """A private account that turns public: its waiting requests become follows."""
    with platform.catalog_write(user.user_id) as c:
        return len(
            c.execute(
                update(Follow)
                .where(Follow.followee_id == user.user_id, Follow.state == "requested")
                .values(state="active")
                .returning(Follow.follower_id)
            ).all()
        )


def state_of(platform: Platform, viewer: CurrentUser | None, target: uuid.UUID) -> str | None:
    """'active', 'requested' or None: the follow button's state."""
    relation = access.relation(platform, viewer.user_id if viewer else None, target)
    return "active" if relation.follows else "requested" if relation.requested else None


def counts(platform: Platform, user_id: uuid.UUID, *, reads: Database | None = None) -> Counts:
    """Approved follows of people who are still here."""
    with (reads or platform.catalog).transaction() as c:
        followers, following = c.execute(
            select(
                select(func.count())
                .select_from(Follow)
                .join(DirectoryEntry, DirectoryEntry.user_id == Follow.follower_id)
                .where(
                    Follow.followee_id == user_id,
                    Follow.state == "active",
                    DirectoryEntry.state == "active",
                )
                .scalar_subquery(),
                select(func.count())
                .select_from(Follow)
                .join(DirectoryEntry, DirectoryEntry.user_id == Follow.followee_id)
                .where(
                    Follow.follower_id == user_id,
                    Follow.state == "active",
                    DirectoryEntry.state == "active",
                )
                .scalar_subquery(),
            )
        ).one()
    return Counts(int(followers), int(following))


def profile_counts(platform: Platform, viewer: CurrentUser | None, handle: str) -> Counts:
    """Counts are shown on every profile the viewer may see, private ones included."""
    target, _ = checked_profile(platform, viewer, handle, "view")
    return counts(platform, target.user_id)


def _people(platform: Platform, where: object, person_column: object, limit: int) -> list[Person]:
    with platform.catalog.transaction() as c:
        rows = c.execute(
            select(PublicProfile.handle, PublicProfile.display_name, Follow.created_at)
            .select_from(Follow)
            .join(PublicProfile, PublicProfile.user_id == person_column)
            .join(DirectoryEntry, DirectoryEntry.user_id == person_column)
            .where(where, DirectoryEntry.state == "active")  # type: ignore[arg-type]
            .order_by(Follow.created_at.desc())
            .limit(max(1, min(limit, MAX_LIST)))
        ).all()
    return [Person(h, n, t) for h, n, t in rows]


def requests(platform: Platform, user: CurrentUser, *, limit: int = MAX_LIST) -> list[Person]:
    """People waiting for the user to approve their follow request."""
    where = and_(Follow.followee_id == user.user_id, Follow.state == "requested")
    return _people(platform, where, Follow.follower_id, limit)


def followers(
    platform: Platform, viewer: CurrentUser | None, handle: str, *, limit: int = MAX_LIST
) -> list[Person]:
    """A profile's followers: anyone may see them for a public account; for a private one,
    the account and its followers only."""
    target = _listable_profile(platform, viewer, handle)
    where = and_(Follow.followee_id == target.user_id, Follow.state == "active")
    return _people(platform, where, Follow.follower_id, limit)


def following(
    platform: Platform, viewer: CurrentUser | None, handle: str, *, limit: int = MAX_LIST
) -> list[Person]:
    target = _listable_profile(platform, viewer, handle)
    where = and_(Follow.follower_id == target.user_id, Follow.state == "active")
    return _people(platform, where, Follow.followee_id, limit)


def _listable_profile(platform: Platform, viewer: CurrentUser | None, handle: str) -> Profile:
    target, relation = checked_profile(platform, viewer, handle, "view")
    mine = viewer is not None and viewer.user_id == target.user_id
    if target.is_private and not mine and not relation.follows:
        raise access.Forbidden("this account is private: follow it to see who it follows")
    return target


# ---- blocks ----------------------------------------------------------------------------------


def block(platform: Platform, user: CurrentUser, handle: str) -> None:
    """Block ``handle``: follows both ways end; each is hidden from the other. Idempotent."""
    target = public_profile(platform, handle)
    if target.user_id == user.user_id:
        raise access.Forbidden("you cannot block yourself")
    me, them = user.user_id, target.user_id
    with platform.catalog_write(user.user_id) as c:
        c.execute(insert(Block).values(blocker_id=me, blocked_id=them).on_conflict_do_nothing())
        c.execute(
            delete(Follow).where(
                or_(
                    and_(Follow.follower_id == me, Follow.followee_id == them),
                    and_(Follow.follower_id == them, Follow.followee_id == me),
                )
            )
        )


def unblock(platform: Platform, user: CurrentUser, handle: str) -> None:
    target = public_profile(platform, handle)
    with platform.catalog_write(user.user_id) as c:
        c.execute(
            delete(Block).where(
                Block.blocker_id == user.user_id, Block.blocked_id == target.user_id
            )
        )


def blocked(platform: Platform, user: CurrentUser) -> list[Person]:
    with platform.catalog.transaction() as c:
        rows = c.execute(
            select(PublicProfile.handle, PublicProfile.display_name, Block.created_at)
            .join(PublicProfile, PublicProfile.user_id == Block.blocked_id)
            .where(Block.blocker_id == user.user_id)
            .order_by(Block.created_at.desc())
            .limit(MAX_LIST)
        ).all()
    return [Person(h, n, t) for h, n, t in rows]


def is_blocking(platform: Platform, user: CurrentUser | None, target: uuid.UUID) -> bool:
    return access.relation(platform, user.user_id if user else None, target).blocks_owner
