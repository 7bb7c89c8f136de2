"""/api/v1: videos and the feeds; and /media: the files that play.

Uploading (tus 1.0) is ``api/uploads.py``.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from starlette.concurrency import iterate_in_threadpool

from reelm.accounts import lifecycle
from reelm.accounts.errors import NotFound
from reelm.api.deps import CurrentUserDep, MarketDep, OptionalUserDep, PlatformDep
from reelm.api.problems import problem, problem_responses
from reelm.media import catalog, videos
from reelm.media.catalog import VideoCard
from reelm.media.serving import (
    PRIVATE_CACHE,
    PUBLIC_CACHE,
    BadRange,
    ByteRange,
    Reader,
    chunks,
    encrypted_reader,
    mime_of,
    parse_range,
    valid_file,
    verify_private,
)
from reelm.storage.blobs import BlobNotFound

router = APIRouter(prefix="/api/v1", tags=["videos"])
media = APIRouter(prefix="/media", tags=["media"], include_in_schema=False)


# ---- shapes ----------------------------------------------------------------------------------


class SourceOut(BaseModel):
    url: str
    type: str
    width: int
    height: int
    label: str


class AuthorOut(BaseModel):
    handle: str
    display_name: str


class StatsOut(BaseModel):
    likes: int
    comments: int
    shares: int


class VideoOut(BaseModel):
    id: uuid.UUID
    status: str
    progress: int
    failure: str | None
    visibility: str
    allow_comments: bool
    comments_from: str
    caption: str
    hashtags: list[str]
    mentions: list[str]
    duration: float | None
    width: int | None
    height: int | None
    author: AuthorOut
    poster_url: str | None
    sources: list[SourceOut]
    share_url: str | None
    created_at: datetime
    mine: bool
    stats: StatsOut
    liked: bool
    removed: str | None = None

    @classmethod
    def of(cls, card: VideoCard) -> VideoOut:
        return cls(
            id=card.id,
            status=card.status,
            progress=card.progress,
            failure=card.failure,
            visibility=card.visibility,
            allow_comments=card.allow_comments,
            comments_from=card.comments_from,
            caption=card.caption,
            hashtags=list(card.hashtags),
            mentions=list(card.mentions),
            duration=card.duration,
            width=card.width,
            height=card.height,
            author=AuthorOut(handle=card.author_handle, display_name=card.author_name),
            poster_url=card.poster_url,
            sources=[
                SourceOut(
                    url=s.url, type=s.mime_type, width=s.width, height=s.height, label=s.label
                )
                for s in card.sources
            ],
            share_url=f"/v/{card.id}" if card.visibility == "public" else None,
            created_at=card.created_at,
            mine=card.mine,
            stats=StatsOut(likes=card.likes, comments=card.comments, shares=card.shares),
            liked=card.liked,
            removed=card.removed,
        )


class VideoPage(BaseModel):
    items: list[VideoOut]
    next_cursor: str | None


def _page(page: catalog.Page) -> VideoPage:
    return VideoPage(items=[VideoOut.of(c) for c in page.items], next_cursor=page.next_cursor)


# ---- videos ----------------------------------------------------------------------------------


@router.get("/feed", responses=problem_responses(422), summary="Public videos, newest first")
def get_feed(
    platform: PlatformDep,
    viewer: OptionalUserDep,
    market: MarketDep,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=catalog.MAX_PAGE)] = 10,
) -> VideoPage:
    return _page(catalog.feed(platform, viewer, cursor=cursor, limit=limit, market=market))


@router.get("/hashtags/{tag}/videos", summary="Public videos with a hashtag, newest first")
def get_hashtag(
    platform: PlatformDep,
    viewer: OptionalUserDep,
    market: MarketDep,
    tag: Annotated[str, Path(max_length=100)],
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=catalog.MAX_PAGE)] = 10,
) -> VideoPage:
    from reelm.media.captions import fold_tag

    page = catalog.hashtag_feed(
        platform, viewer, fold_tag(tag.lstrip("#")), cursor=cursor, limit=limit, market=market
    )
    return _page(page)


@router.get(
    "/users/{handle}/videos", responses=problem_responses(404), summary="A profile's videos"
)
def get_profile_videos(
    platform: PlatformDep,
    viewer: OptionalUserDep,
    market: MarketDep,
    handle: Annotated[str, Path(max_length=60)],
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=catalog.MAX_PAGE)] = 24,
) -> VideoPage:
    author = lifecycle.public_profile(platform, handle, reads=catalog.reads_for(platform, viewer))
    page = catalog.profile_videos(
        platform, viewer, author, cursor=cursor, limit=limit, market=market
    )
    return _page(page)


@router.get("/me/videos", summary="Your videos in every state, and uploads in progress")
def get_my_videos(platform: PlatformDep, user: CurrentUserDep) -> list[VideoOut]:
    return [VideoOut.of(c) for c in catalog.own_videos(platform, user)]


@router.get("/videos/{video_id}", responses=problem_responses(404, 451), summary="One video")
def get_video(
    platform: PlatformDep,
    viewer: OptionalUserDep,
    market: MarketDep,
    video_id: uuid.UUID,
    by: Annotated[
        str | None,
        Query(max_length=60, description="The author's handle: finds a followers-only video"),
    ] = None,
) -> VideoOut:
    author = lifecycle.public_profile(platform, by) if by else None
    return VideoOut.of(catalog.get_video(platform, viewer, video_id, market=market, by=author))


@router.patch(
    "/videos/{video_id}",
    responses=problem_responses(401, 403, 404, 413, 415, 422),
    summary="Change your video's caption, visibility or comment setting",
)
def patch_video(
    platform: PlatformDep, user: CurrentUserDep, video_id: uuid.UUID, change: videos.VideoUpdate
) -> VideoOut:
    videos.update_video(platform, user, video_id, change)
    return VideoOut.of(catalog.get_video(platform, user, video_id))


@router.delete(
    "/videos/{video_id}",
    status_code=204,
    responses=problem_responses(401, 404),
    summary="Delete your video: its files and original go too",
)
def delete_video(platform: PlatformDep, user: CurrentUserDep, video_id: uuid.UUID) -> Response:
    videos.delete_video(platform, user, video_id)
    return Response(status_code=204)


@router.post(
    "/videos/{video_id}/retry",
    status_code=202,
    responses=problem_responses(401, 404, 409),
    summary="Process a failed video again",
)
def retry_video(platform: PlatformDep, user: CurrentUserDep, video_id: uuid.UUID) -> VideoOut:
    videos.retry_video(platform, user, video_id)
    return VideoOut.of(catalog.get_video(platform, user, video_id))


# ---- /media ----------------------------------------------------------------------------------


def _ranged(
    request: Request, size: int, read: Reader, mime: str, cache: str, etag: str
) -> Response:
    """A file, or the one byte range asked for (206), streamed in pieces."""
    headers = {"Accept-Ranges": "bytes", "Cache-Control": cache, "ETag": etag}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    try:
        span = parse_range(request.headers.get("range"), size)
    except BadRange:
        return Response(status_code=416, headers={**headers, "Content-Range": f"bytes */{size}"})
    code = 200
    if span is None:
        span = ByteRange(0, size)
    else:
        code = 206
        headers["Content-Range"] = f"bytes {span.start}-{span.end - 1}/{size}"
    headers["Content-Length"] = str(span.length)
    if request.method == "HEAD":
        return Response(status_code=code, headers=headers, media_type=mime)
    return StreamingResponse(
        iterate_in_threadpool(chunks(read, span)),
        status_code=code,
        headers=headers,
        media_type=mime,
    )


@media.api_route("/v/{video_id}/{file}", methods=["GET", "HEAD"])
def public_file(
    request: Request,
    platform: PlatformDep,
    viewer: OptionalUserDep,
    video_id: uuid.UUID,
    file: str,
) -> Response:
    """A public video's rendition or poster, while the viewer may see the video: cached 5
    minutes where anyone may (a private account's videos, for its followers, stay private)."""
    if not valid_file(file):
        raise NotFound("no such file")
    cache = PUBLIC_CACHE
    if not catalog.listed_for_anyone(platform, video_id):
        if viewer is None or not catalog.is_listed(platform, video_id, viewer):
            raise NotFound("no such file")
        cache = "private, max-age=300"
    key = videos.public_prefix(video_id) + file
    store = platform.public_blobs
    try:
        size = store.size(key)
    except BlobNotFound:
        raise NotFound("no such file") from None

    def read(start: int, end: int) -> bytes:
        return store.read_range(key, start, end)

    return _ranged(request, size, read, mime_of(file), cache, f'"{video_id}-{file}"')


@media.api_route("/p/{region}/{video_id}/{file}", methods=["GET", "HEAD"])
def protected_file(
    request: Request,
    platform: PlatformDep,
    viewer: OptionalUserDep,
    region: str,
    video_id: uuid.UUID,
    file: str,
    expires: Annotated[str, Query(max_length=12)] = "",
    signature: Annotated[str, Query(max_length=100)] = "",
) -> Response:
    """A followers-only or private video's file, decrypted in its home region: for the session
    the API signed the URL for, while that viewer may still watch the video (decided again
    every few seconds, reelm.media.serving.Decisions)."""
    if region not in platform.cells or not valid_file(file):
        raise NotFound("no such file")
    cell = platform.cell(region)
    session = viewer.token_hash if viewer is not None else None
    if verify_private(cell, video_id, file, expires, signature, session) is None:
        return problem("link-expired", "this link has expired or is not yours: reload the page")
    assert viewer is not None  # verify_private refuses a request without a session
    owner, key = catalog.protected_rendition(platform, cell, viewer, video_id, file)
    try:
        size, read = encrypted_reader(cell, owner, key, file)
    except BlobNotFound:
        raise NotFound("no such file") from None
    return _ranged(request, size, read, mime_of(file), PRIVATE_CACHE, f'"{video_id}-{file}"')
