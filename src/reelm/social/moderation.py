"""Reports and moderation.

A report says "this video, comment or account breaks a rule, for this reason". Who reported is
the reporter's protected data: the reporter's own record (what, why, their note) is kept in
their home region, encrypted, and is what stops one person from counting twice. The catalog
keeps an aggregate per target and reason (how many reports, since when): that is the
moderation queue, and it names no reporter.

Moderators (staff with the moderator or admin role) act on the queue: remove a video or a
comment, withhold a video in one market (it then answers 451 there), suspend or reinstate an
account, or dismiss the reports. Every action but a dismissal is appended to the public
transparency log of the region where the affected user lives, with the moderator's id and the
reason code, in the same step as the action.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from reelm.accounts.errors import InvalidInput, NotFound
from reelm.accounts.lifecycle import public_profile
from reelm.accounts.logsubject import user_subject_of
from reelm.accounts.models import DirectoryEntry, PublicProfile
from reelm.accounts.service import CurrentUser
from reelm.bootstrap import Platform
from reelm.media import catalog
from reelm.media.models import PublicVideo
from reelm.regions.cell import UserScope
from reelm.regions.fence import hold
from reelm.social import access, engagement
from reelm.social.models import (
    REPORT_FIELD,
    REPORT_NOTE_FIELD,
    Comment,
    FiledReport,
    ReportCase,
    Suspension,
    VideoRestriction,
)
from reelm.transparency.gateway import NotStaff, staff_role

Reason = Literal[
    "spam",
    "harassment",
    "hate",
    "violence",
    "nudity",
    "minor_safety",
    "self_harm",
    "misinformation",
    "intellectual_property",
    "other",
]
REASONS: dict[str, str] = {
    "spam": "Spam or scam",
    "harassment": "Harassment or bullying",
    "hate": "Hate speech",
    "violence": "Violence or dangerous acts",
    "nudity": "Nudity or sexual content",
    "minor_safety": "Endangers a minor",
    "self_harm": "Suicide or self-harm",
    "misinformation": "Harmful misinformation",
    "intellectual_property": "Uses my work without permission",
    "other": "Something else",
}
TargetKind = Literal["video", "comment", "user"]
Action = Literal["remove", "restrict", "suspend", "reinstate", "dismiss"]
MODERATORS = ("moderator", "admin")


class ReportIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    target: TargetKind
    id: str = Field(max_length=60, description="a video or comment id, or a user's handle")
    reason: Reason
    note: str = Field(default="", max_length=500)


class Decision(BaseModel):
    """A moderator's action on a reported (or any) target."""

    model_config = ConfigDict(extra="forbid")

    target: TargetKind
    id: str = Field(max_length=60)
    action: Action
    reason: Reason
    market: str | None = Field(default=None, pattern=r"^[A-Z]{2}$")


@dataclass(frozen=True, slots=True)
class QueueItem:
    id: uuid.UUID
    target: str
    target_id: str
    reason: str
    count: int
    first_at: datetime
    last_at: datetime
    summary: str  # what the moderator sees of the target: public content only
    owner_handle: str | None


def _scope(platform: Platform, user: CurrentUser) -> UserScope:
    return platform.cell(user.home_region).for_user(user.user_id, user.home_region)


def _resolve(platform: Platform, viewer: CurrentUser | None, target: str, raw: str) -> str:
    """The target's id as stored (a uuid for videos and comments, the user id for a user);
    NotFound for what the viewer may not see."""
    if target == "user":
        profile = public_profile(platform, _handle_of(platform, raw))
        facts = access.profile_facts(platform, profile.user_id)
        who = catalog.viewer_of(viewer)
        relation = access.relation(platform, who.user_id, profile.user_id)
        if viewer is not None:
            access.decide_profile(who, "report", facts, relation).enforce()
        return str(profile.user_id)
    try:
        ident = uuid.UUID(raw)
    except ValueError:
        raise NotFound(f"no such {target}") from None
    if target == "video":
        if viewer is not None:
            catalog.check(platform, viewer, "report", ident)
        return str(ident)
    with platform.catalog.transaction() as c:
        comment = c.get(Comment, ident)
    if comment is None:
        raise NotFound("no such comment")
    if viewer is not None:
        catalog.check(platform, viewer, "view", comment.video_id)
        if comment.author_id == viewer.user_id:
            raise access.Forbidden("you cannot report your own comment")
    return str(ident)


def _handle_of(platform: Platform, raw: str) -> str:
    """A user target is named by handle; the queue names it by id (handles change)."""
    try:
        user_id = uuid.UUID(raw)
    except ValueError:
        return raw
    with platform.catalog.transaction() as c:
        handle = c.scalar(select(PublicProfile.handle).where(PublicProfile.user_id == user_id))
    if handle is None:
        raise NotFound("no such account")
    return handle


def report(platform: Platform, user: CurrentUser, data: ReportIn) -> bool:
    """File a report. Returns False when the user had already reported this target for this
    reason (nothing is counted twice)."""
    if "\x00" in data.note:
        raise InvalidInput("the note cannot contain NUL characters", field="note")
    target_id = _resolve(platform, user, data.target, data.id)
    scope = _scope(platform, user)
    cipher = scope.cipher()
    key = f"{data.target}:{target_id}:{data.reason}"
    with scope.cell.db.transaction() as s:
        hold(s, user.user_id)
        added = s.execute(
            insert(FiledReport)
            .values(
                id=uuid.uuid4(),
                user_id=user.user_id,
                lookup=cipher.lookup(REPORT_FIELD, key),
                report_ct=cipher.encrypt(REPORT_FIELD, key),
                note_ct=cipher.encrypt(REPORT_NOTE_FIELD, data.note.strip())
                if data.note.strip()
                else None,
            )
            .on_conflict_do_nothing()
            .returning(FiledReport.id)
        ).first()
    if added is None:
        return False
    with platform.catalog.transaction() as c:
        stmt = insert(ReportCase).values(
            id=uuid.uuid4(), target=data.target, target_id=target_id, reason=data.reason, count=1
        )
        c.execute(
            stmt.on_conflict_do_update(
                index_elements=["target", "target_id", "reason"],
                index_where=ReportCase.state == "open",
                set_={"count": ReportCase.count + 1, "last_at": func.now()},
            )
        )
    return True


# ---- staff -----------------------------------------------------------------------------------


def _moderator(platform: Platform, user: CurrentUser) -> None:
    if staff_role(platform, user.user_id) not in MODERATORS:
        raise NotStaff("moderation is for staff with the moderator or admin role")


def queue(platform: Platform, user: CurrentUser, *, limit: int = 50) -> list[QueueItem]:
    """Open report cases, most reported first, with what they are about."""
    _moderator(platform, user)
    with platform.catalog.transaction() as c:
        cases = list(
            c.scalars(
                select(ReportCase)
                .where(ReportCase.state == "open")
                .order_by(ReportCase.count.desc(), ReportCase.first_at)
                .limit(max(1, min(limit, 200)))
            )
        )
        items = []
        for case in cases:
            summary, owner = _summary(c, case.target, case.target_id)
            items.append(
                QueueItem(
                    case.id,
                    case.target,
                    case.target_id,
                    case.reason,
                    case.count,
                    case.first_at,
                    case.last_at,
                    summary,
                    owner,
                )
            )
    return items


def _summary(c: Session, target: str, target_id: str) -> tuple[str, str | None]:
    if target == "video":
        row = c.execute(
            select(PublicVideo.caption, PublicProfile.handle)
            .join(PublicProfile, PublicProfile.user_id == PublicVideo.owner_id)
            .where(PublicVideo.id == uuid.UUID(target_id))
        ).first()
        return (row[0] or "(no caption)", row[1]) if row else ("(gone)", None)
    if target == "comment":
        row = c.execute(
            select(Comment.body, PublicProfile.handle)
            .join(PublicProfile, PublicProfile.user_id == Comment.author_id)
            .where(Comment.id == uuid.UUID(target_id))
        ).first()
        return (row[0], row[1]) if row else ("(gone)", None)
    profile = c.get(PublicProfile, uuid.UUID(target_id))
    if profile is None:
        return "(gone)", None
    return f"{profile.display_name}: {profile.bio}".strip(": "), profile.handle


def _home(platform: Platform, user_id: uuid.UUID) -> str:
    with platform.catalog.transaction() as c:
        entry = c.get(DirectoryEntry, user_id)
    if entry is None:
        raise NotFound("no such account")
    return entry.home_region


def act(platform: Platform, moderator: CurrentUser, decision: Decision) -> str:
    """Carry out a moderation decision; returns what was done, in words. Logged publicly
    (except a dismissal) in the affected user's home region, by that region's cell: a decision
    about another cell's user is delivered there (the ``moderation`` inter-cell kind), which
    checks the moderator again and applies it."""
    from reelm import intercell

    _moderator(platform, moderator)
    target_id = _resolve(platform, None, decision.target, decision.id)
    if decision.action != "dismiss":
        home = _affected_home(platform, decision.target, target_id)
        if not intercell.is_local(platform, home):
            body = {"decision": decision.model_dump(), "target_id": target_id}
            intercell.deliver(platform, home, MODERATION_KIND, body, acting_for=moderator.user_id)
            return f"sent to the {home} cell, which applies it"
    return _apply(platform, moderator.user_id, decision, target_id)


MODERATION_KIND = "moderation"


def receive(
    platform: Platform,
    region: str,
    acting_for: uuid.UUID,
    delivery_id: uuid.UUID,
    body: dict[str, Any],
) -> str:
    """The ``moderation`` kind's handler, in the affected user's home cell: the decision of a
    moderator of another cell (still staff with a moderator's role, per the catalog)."""
    from pydantic import ValidationError

    from reelm.intercell.kinds import BadBody, NotAllowed

    try:
        decision = Decision.model_validate(body.get("decision"))
    except ValidationError:
        raise BadBody("not a moderation decision") from None
    if staff_role(platform, acting_for) not in MODERATORS:
        raise NotAllowed("the acting user is not a moderator")
    target_id = str(body.get("target_id"))
    try:
        home = _affected_home(platform, decision.target, target_id)
    except (NotFound, ValueError):
        return "gone"  # removed meanwhile: nothing left to act on
    if home != region:
        raise NotAllowed("the decision is about a user of another region")
    return _apply(platform, acting_for, decision, target_id)


def _affected_home(platform: Platform, target: str, target_id: str) -> str:
    """The home region of the user a decision affects: the video's owner, the comment's
    author, or the account itself."""
    ident = uuid.UUID(target_id)
    if target == "user":
        return _home(platform, ident)
    with platform.catalog.transaction() as c:
        if target == "video":
            owner = c.scalar(select(PublicVideo.owner_id).where(PublicVideo.id == ident))
        else:
            owner = c.scalar(select(Comment.author_id).where(Comment.id == ident))
    if owner is None:
        raise NotFound(f"no such {target}")
    return _home(platform, owner)


def _apply(platform: Platform, moderator_id: uuid.UUID, decision: Decision, target_id: str) -> str:
    details = {
        "staff": str(moderator_id),
        "reason": decision.reason,
        "target": decision.target,
    }
    done: str
    if decision.action == "dismiss":
        done = "reports dismissed"
    elif decision.target == "video":
        done = _act_on_video(platform, decision, uuid.UUID(target_id), details)
    elif decision.target == "comment":
        if decision.action != "remove":
            raise InvalidInput("a comment can only be removed", field="action")
        with platform.catalog.transaction() as c:
            comment = c.get(Comment, uuid.UUID(target_id))
            if comment is None:
                raise NotFound("no such comment")
            author, video_id = comment.author_id, comment.video_id
            replies = c.scalar(select(func.count()).where(Comment.parent_id == comment.id)) or 0
            home = _home(platform, author)
            # Names the comment, not its author: the author's public handle beside their
            # pseudonym would tie the handle to their other entries.
            platform.cell(home).log.append_now("moderation.removed", str(comment.id), details)
            c.execute(delete(Comment).where(Comment.id == comment.id))
            engagement.count(c, video_id, "comments", -(1 + int(replies)))
        done = "comment removed"
    else:
        done = _act_on_user(platform, decision, uuid.UUID(target_id), details)
    with platform.catalog.transaction() as c:
        c.execute(
            update(ReportCase)
            .where(
                ReportCase.target == decision.target,
                ReportCase.target_id == target_id,
                ReportCase.state == "open",
            )
            .values(state="resolved", resolution=decision.action, resolved_at=func.now())
        )
    return done


def _act_on_video(
    platform: Platform, decision: Decision, video_id: uuid.UUID, details: dict[str, str]
) -> str:
    from reelm.media.videos import remove_by_moderation

    with platform.catalog.transaction() as c:
        owner = c.scalar(select(PublicVideo.owner_id).where(PublicVideo.id == video_id))
    if owner is None:
        raise NotFound("no such public video")
    home = _home(platform, owner)
    log = platform.cell(home).log
    if decision.action == "remove":
        log.append_now("moderation.removed", str(video_id), details)
        remove_by_moderation(platform, platform.cell(home), owner, video_id, decision.reason)
        return "video removed"
    if decision.action == "restrict":
        if decision.market is None:
            raise InvalidInput("say in which market to withhold it", field="market")
        log.append_now(
            "moderation.restricted",
            str(video_id),
            {**details, "market": decision.market},
        )
        with platform.catalog.transaction() as c:
            c.execute(
                insert(VideoRestriction)
                .values(video_id=video_id, market=decision.market, reason=decision.reason)
                .on_conflict_do_nothing()
            )
        return f"video withheld in {decision.market}"
    if decision.action == "reinstate":
        log.append_now(
            "moderation.reinstated",
            str(video_id),
            {**details, "market": decision.market or "*"},
        )
        with platform.catalog.transaction() as c:
            where = [VideoRestriction.video_id == video_id]
            if decision.market:
                where.append(VideoRestriction.market == decision.market)
            c.execute(delete(VideoRestriction).where(*where))
        return "video available again"
    raise InvalidInput(f"a video cannot be {decision.action}ed", field="action")


def _act_on_user(
    platform: Platform, decision: Decision, user_id: uuid.UUID, details: dict[str, str]
) -> str:
    home = _home(platform, user_id)
    log = platform.cell(home).log
    # A suspension is visible (the profile disappears), so its pseudonym (one for this kind
    # and month) is tied to the handle by anyone watching; it names nothing else.
    named = user_subject_of(platform, user_id, home)
    if decision.action == "suspend":
        log.append_now("moderation.suspended", named, details)
        with platform.catalog.transaction() as c:
            c.execute(
                insert(Suspension)
                .values(user_id=user_id, reason=decision.reason)
                .on_conflict_do_nothing()
            )
        return "account suspended"
    if decision.action == "reinstate":
        log.append_now("moderation.reinstated", named, details)
        with platform.catalog.transaction() as c:
            c.execute(delete(Suspension).where(Suspension.user_id == user_id))
        return "account reinstated"
    raise InvalidInput(f"an account cannot be {decision.action}d", field="action")


def is_suspended(platform: Platform, user_id: uuid.UUID) -> bool:
    with platform.catalog.transaction() as c:
        return c.get(Suspension, user_id) is not None
