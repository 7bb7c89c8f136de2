"""/api/v1: follows, blocks, likes, shares, comments, notifications, watch signals, and the
For You, Following and trending lists. Every decision of who may see or do what is
reelm.social.access's; these routes only translate."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from reelm.api.deps import CurrentUserDep, MarketDep, OptionalUserDep, PlatformDep
from reelm.api.problems import problem_responses
from reelm.api.videos import VideoPage, _page
from reelm.feed import service as feeds
from reelm.feed import signals
from reelm.media import catalog
from reelm.social import comments, graph, likes, notify

router = APIRouter(prefix="/api/v1", tags=["social"])

Handle = Annotated[str, Path(max_length=60)]
Cursor = Annotated[str | None, Query(max_length=1200)]


# ---- follows and blocks ----------------------------------------------------------------------


class FollowState(BaseModel):
    state: str | None = Field(description="'active', 'requested' (a private account) or null")


class Counts(BaseModel):
    followers: int
    following: int


class PersonOut(BaseModel):
    handle: str
    display_name: str
    since: datetime


def _people(people: list[graph.Person]) -> list[PersonOut]:
    return [PersonOut(handle=p.handle, display_name=p.display_name, since=p.since) for p in people]


@router.post(
    "/users/{handle}/follow",
    responses=problem_responses(401, 403, 404),
    summary="Follow someone (a private account gets a request)",
)
def follow(platform: PlatformDep, user: CurrentUserDep, handle: Handle) -> FollowState:
    return FollowState(state=graph.follow(platform, user, handle))


@router.delete(
    "/users/{handle}/follow",
    responses=problem_responses(401, 404),
    summary="Unfollow, or withdraw a follow request",
)
def unfollow(platform: PlatformDep, user: CurrentUserDep, handle: Handle) -> FollowState:
    graph.unfollow(platform, user, handle)
    return FollowState(state=None)


@router.get("/users/{handle}/counts", responses=problem_responses(404), summary="Follow counts")
def counts(platform: PlatformDep, viewer: OptionalUserDep, handle: Handle) -> Counts:
    found = graph.profile_counts(platform, viewer, handle)
    return Counts(followers=found.followers, following=found.following)


@router.get(
    "/users/{handle}/followers",
    responses=problem_responses(403, 404),
    summary="Who follows this account (a private account shows them to its followers)",
)
def followers(platform: PlatformDep, viewer: OptionalUserDep, handle: Handle) -> list[PersonOut]:
    return _people(graph.followers(platform, viewer, handle))


@router.get(
    "/users/{handle}/following",
    responses=problem_responses(403, 404),
    summary="Whom this account follows",
)
def following(platform: PlatformDep, viewer: OptionalUserDep, handle: Handle) -> list[PersonOut]:
    return _people(graph.following(platform, viewer, handle))


@router.get("/me/follow-requests", summary="People asking to follow you")
def follow_requests(platform: PlatformDep, user: CurrentUserDep) -> list[PersonOut]:
    return _people(graph.requests(platform, user))


class Answer(BaseModel):
    model_config = ConfigDict(extra="forbid")

    approve: bool


@router.post(
    "/me/follow-requests/{handle}",
    status_code=204,
    responses=problem_responses(401, 404, 422),
    summary="Approve or decline a follow request",
)
def answer(platform: PlatformDep, user: CurrentUserDep, handle: Handle, body: Answer) -> Response:
    graph.answer_request(platform, user, handle, approve=body.approve)
    return Response(status_code=204)


@router.delete(
    "/me/followers/{handle}",
    status_code=204,
    responses=problem_responses(404),
    summary="Remove one of your followers",
)
def remove_follower(platform: PlatformDep, user: CurrentUserDep, handle: Handle) -> Response:
    graph.remove_follower(platform, user, handle)
    return Response(status_code=204)


@router.post(
    "/users/{handle}/block",
    status_code=204,
    responses=problem_responses(401, 403, 404),
    summary="Block someone: follows end, neither sees the other",
)
def block(platform: PlatformDep, user: CurrentUserDep, handle: Handle) -> Response:
    graph.block(platform, user, handle)
    return Response(status_code=204)


@router.delete(
    "/users/{handle}/block",
    status_code=204,
    responses=problem_responses(404),
    summary="Unblock",
)
def unblock(platform: PlatformDep, user: CurrentUserDep, handle: Handle) -> Response:
    graph.unblock(platform, user, handle)
    return Response(status_code=204)


@router.get("/me/blocks", summary="People you blocked")
def my_blocks(platform: PlatformDep, user: CurrentUserDep) -> list[PersonOut]:
    return _people(graph.blocked(platform, user))


# ---- likes and shares ------------------------------------------------------------------------


class LikeState(BaseModel):
    liked: bool
    likes: int


class ShareCount(BaseModel):
    shares: int
    url: str


@router.post(
    "/videos/{video_id}/like",
    responses=problem_responses(401, 403, 404, 451),
    summary="Like a video (stored in your home region; the count is public)",
)
def like(platform: PlatformDep, user: CurrentUserDep, video_id: uuid.UUID) -> LikeState:
    return LikeState(liked=True, likes=likes.like(platform, user, video_id))


@router.delete("/videos/{video_id}/like", responses=problem_responses(401), summary="Unlike")
def unlike(platform: PlatformDep, user: CurrentUserDep, video_id: uuid.UUID) -> LikeState:
    return LikeState(liked=False, likes=likes.unlike(platform, user, video_id))


@router.post(
    "/videos/{video_id}/share",
    responses=problem_responses(401, 403, 404, 451),
    summary="Count a share of a public video; answers its link",
)
def share(platform: PlatformDep, user: CurrentUserDep, video_id: uuid.UUID) -> ShareCount:
    return ShareCount(shares=likes.share(platform, user, video_id), url=f"/v/{video_id}")


# ---- comments --------------------------------------------------------------------------------


class CommentOut(BaseModel):
    id: uuid.UUID
    video_id: uuid.UUID
    parent_id: uuid.UUID | None
    body: str
    mentions: list[str]
    author: dict[str, str]
    created_at: datetime
    replies: int
    mine: bool
    can_delete: bool

    @classmethod
    def of(cls, c: comments.CommentView) -> CommentOut:
        return cls(
            id=c.id,
            video_id=c.video_id,
            parent_id=c.parent_id,
            body=c.body,
            mentions=list(c.mentions),
            author={"handle": c.author_handle, "display_name": c.author_name},
            created_at=c.created_at,
            replies=c.replies,
            mine=c.mine,
            can_delete=c.can_delete,
        )


class CommentList(BaseModel):
    items: list[CommentOut]
    next_cursor: str | None


class NewComment(BaseModel):
    model_config = ConfigDict(extra="forbid")

    body: str = Field(max_length=4 * comments.MAX_BODY)
    reply_to: uuid.UUID | None = None


@router.get(
    "/videos/{video_id}/comments",
    responses=problem_responses(404, 422, 451),
    summary="A video's comments (newest first), or one comment's replies (oldest first)",
)
def list_comments(
    platform: PlatformDep,
    viewer: OptionalUserDep,
    market: MarketDep,
    video_id: uuid.UUID,
    parent: uuid.UUID | None = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=comments.MAX_PAGE)] = 20,
) -> CommentList:
    page = comments.list_comments(
        platform, viewer, video_id, parent=parent, cursor=cursor, limit=limit, market=market
    )
    return CommentList(items=[CommentOut.of(c) for c in page.items], next_cursor=page.next_cursor)


@router.post(
    "/videos/{video_id}/comments",
    status_code=201,
    responses=problem_responses(401, 403, 404, 422, 451),
    summary="Comment on a video, or reply to a comment",
)
def add_comment(
    platform: PlatformDep, user: CurrentUserDep, video_id: uuid.UUID, body: NewComment
) -> CommentOut:
    return CommentOut.of(comments.add(platform, user, video_id, body.body, reply_to=body.reply_to))


@router.delete(
    "/comments/{comment_id}",
    status_code=204,
    responses=problem_responses(401, 403, 404),
    summary="Delete your comment, or any comment on your video",
)
def delete_comment(platform: PlatformDep, user: CurrentUserDep, comment_id: uuid.UUID) -> Response:
    comments.delete_comment(platform, user, comment_id)
    return Response(status_code=204)


# ---- notifications ---------------------------------------------------------------------------


class NotificationOut(BaseModel):
    id: uuid.UUID
    kind: str
    actor: dict[str, str] | None
    video_id: uuid.UUID | None
    comment_id: uuid.UUID | None
    read: bool
    created_at: datetime


@router.get("/me/notifications", summary="Your latest notifications (reading marks them read)")
def notifications(
    platform: PlatformDep,
    user: CurrentUserDep,
    limit: Annotated[int, Query(ge=1, le=notify.MAX_LIST)] = 30,
) -> list[NotificationOut]:
    return [
        NotificationOut(
            id=n.id,
            kind=n.kind,
            actor=(
                {"handle": n.actor_handle, "display_name": n.actor_name or ""}
                if n.actor_handle
                else None
            ),
            video_id=n.video_id,
            comment_id=n.comment_id,
            read=n.read,
            created_at=n.created_at,
        )
        for n in notify.recent(platform, user, limit=limit)
    ]


class Unread(BaseModel):
    unread: int


@router.get("/me/notifications/unread", summary="How many notifications you have not read")
def unread(platform: PlatformDep, user: CurrentUserDep) -> Unread:
    return Unread(unread=notify.unread(platform, user))


# ---- signals and feeds -----------------------------------------------------------------------


class Accepted(BaseModel):
    accepted: int
    dropped: int = Field(description="events about videos you may not see, or that are gone")


@router.post(
    "/signals",
    responses=problem_responses(401, 413, 422),
    summary="Watch events (watched seconds, completion, replay, skip), up to 100 at once",
)
def post_signals(
    platform: PlatformDep, user: CurrentUserDep, batch: signals.WatchBatch
) -> Accepted:
    accepted, dropped = signals.record(platform, user, batch)
    return Accepted(accepted=accepted, dropped=dropped)


@router.get(
    "/feed/for-you",
    responses=problem_responses(422),
    summary="Your For You feed (ranked in your home region from your own signals)",
)
def for_you(
    platform: PlatformDep,
    viewer: OptionalUserDep,
    market: MarketDep,
    cursor: Cursor = None,
    limit: Annotated[int, Query(ge=1, le=catalog.MAX_PAGE)] = 5,
) -> VideoPage:
    return _page(feeds.for_you(platform, viewer, cursor=cursor, limit=limit, market=market))


@router.get(
    "/feed/following",
    responses=problem_responses(401, 422),
    summary="Videos of the creators you follow, newest first",
)
def following_feed(
    platform: PlatformDep,
    user: CurrentUserDep,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=catalog.MAX_PAGE)] = 10,
) -> VideoPage:
    return _page(catalog.following_feed(platform, user, cursor=cursor, limit=limit))


class TrendingTag(BaseModel):
    tag: str
    score: float


@router.get("/hashtags/trending", summary="This week's hashtags in your market")
def trending(
    platform: PlatformDep,
    market: MarketDep,
    limit: Annotated[int, Query(ge=1, le=50)] = 10,
) -> list[TrendingTag]:
    return [
        TrendingTag(tag=t, score=round(s, 2))
        for t, s in feeds.trending_hashtags(platform, market, limit=limit)
    ]
