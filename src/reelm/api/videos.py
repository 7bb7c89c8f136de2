"""/api/v1: uploads (tus 1.0), videos, the feed; and /media: the files that play.

Uploading follows tus 1.0 (core, creation, termination; https://tus.io/protocols/resumable-upload):
``POST /api/v1/videos`` with ``Upload-Length`` and ``Upload-Metadata`` (``caption``,
``visibility``, ``allow_comments``, ``comments_from``, ``filename``, values base64) creates the
upload and answers ``Location: /api/v1/uploads/<id>``; ``PATCH`` appends at
``Upload-Offset``; ``HEAD`` tells the offset to resume from; ``DELETE`` cancels. The PATCH
that completes the file also checks it: a file that is not a video we take is answered with
problem+json saying why, and is gone.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Header, Path, Query, Request, Response, status
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ValidationError
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool
from starlette.requests import ClientDisconnect

from reelm.accounts import lifecycle
from reelm.accounts.errors import AccountError, InvalidInput, NotFound
from reelm.api.deps import CurrentUserDep, MarketDep, OptionalUserDep, PlatformDep
from reelm.api.problems import problem, problem_responses
from reelm.media import catalog, uploads, videos
from reelm.media.catalog import VideoCard
from reelm.media.models import Video
from reelm.media.serving import (
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
from reelm.media.uploads import UploadMeta
from reelm.numbers import NotANumber, parse_natural
from reelm.storage.blobs import BlobNotFound

router = APIRouter(prefix="/api/v1", tags=["videos"])
media = APIRouter(prefix="/media", tags=["media"], include_in_schema=False)

TUS_VERSION = "1.0.0"
TUS_HEADERS = {"Tus-Resumable": TUS_VERSION}
OFFSET_STREAM = "application/offset+octet-stream"
# Upload-Length and Upload-Offset: a petabyte is 16 digits, far above any max_upload_bytes.
TUS_MAX_DIGITS = 15
MAX_METADATA = 16_384


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


class UploadCreated(BaseModel):
    upload_url: str
    video_id: uuid.UUID
    expires_at: datetime


def _page(page: catalog.Page) -> VideoPage:
    return VideoPage(items=[VideoOut.of(c) for c in page.items], next_cursor=page.next_cursor)


# ---- tus -------------------------------------------------------------------------------------


class TusVersion(AccountError):
    slug = "tus-version"
    status = 412
    title = "Unsupported tus version"


class NotOffsetStream(AccountError):
    slug = "unsupported-media-type"
    status = 415
    title = "Unsupported media type"


def _check_tus(version: str | None) -> None:
    if version != TUS_VERSION:
        raise TusVersion(f"send 'Tus-Resumable: {TUS_VERSION}' (tus 1.0 resumable uploads)")


def _header_number(value: str | None, ask: str, field: str) -> int:
    """A tus byte count: ASCII digits (tus 1.0: a non-negative integer), at most 15 of them."""
    try:
        return parse_natural(value, digits=TUS_MAX_DIGITS)
    except NotANumber:
        raise InvalidInput(f"{ask} (digits 0-9)", field=field) from None


def parse_metadata(header: str | None) -> UploadMeta:
    """tus Upload-Metadata: comma-separated 'key base64value' pairs."""
    values: dict[str, object] = {}
    if header and len(header) > MAX_METADATA:
        raise InvalidInput("Upload-Metadata is too long", field="Upload-Metadata")
    for pair in (header or "").split(","):
        pair = pair.strip()
        if not pair:
            continue
        key, _, encoded = pair.partition(" ")
        try:
            value = base64.b64decode(encoded, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise InvalidInput(
                f"Upload-Metadata '{key[:40]}' is not base64 of UTF-8 text", field="Upload-Metadata"
            ) from None
        if key == "allow_comments":
            values[key] = value.strip().lower() in ("1", "true", "yes", "on")
        elif key in ("caption", "visibility", "filename", "comments_from"):
            values[key] = value
        # Other keys (tus clients add 'filetype', 'name'...) are ignored.
    try:
        return UploadMeta.model_validate(values).cleaned()
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        raise InvalidInput(f"{field}: {err['msg']}", field=field) from None
    except ValueError as exc:  # NUL in the caption
        raise InvalidInput(str(exc), field="caption") from None


def _header(description: str, *, required: bool = True, **schema: object) -> dict[str, object]:
    """A response header as the OpenAPI describes it (required: always sent)."""
    return {
        "description": description,
        "required": required,
        "schema": {"type": "string", **schema},
    }


DIGITS_PATTERN = f"^[0-9]{{1,{TUS_MAX_DIGITS}}}$"
DIGITS: dict[str, object] = {"pattern": DIGITS_PATTERN}
TUS_RESUMABLE = _header("The tus version of the answer", enum=[TUS_VERSION])
OFFSET_STATE = {
    "Tus-Resumable": TUS_RESUMABLE,
    "Upload-Offset": _header("Bytes received so far: where to resume", pattern=DIGITS_PATTERN),
    "Upload-Length": _header("The declared size of the file in bytes", pattern=DIGITS_PATTERN),
    "Upload-Expires": _header("When an unfinished upload is forgotten (RFC 9110 date)"),
    "Cache-Control": _header("Always no-store"),
}
TusResumable = Annotated[
    str | None,
    Header(
        description=f"Must be {TUS_VERSION} (else 412)",
        json_schema_extra={"enum": [TUS_VERSION]},
    ),
]


@router.options(
    "/videos",
    response_class=Response,  # no body: headers only
    status_code=204,
    summary="What the tus server supports (tus 1.0 discovery)",
    responses={
        204: {
            "description": "The tus versions, extensions and largest upload this server takes",
            "headers": {
                "Tus-Resumable": TUS_RESUMABLE,
                "Tus-Version": _header("Supported tus versions", enum=[TUS_VERSION]),
                "Tus-Extension": _header("Supported extensions: creation,termination"),
                "Tus-Max-Size": _header("The largest upload, in bytes", pattern="^[0-9]+$"),
            },
        },
    },
)
def tus_options(platform: PlatformDep) -> Response:
    return Response(
        status_code=204,
        headers={
            **TUS_HEADERS,
            "Tus-Version": TUS_VERSION,
            "Tus-Extension": "creation,termination",
            "Tus-Max-Size": str(platform.settings.max_upload_bytes),
        },
    )


@router.post(
    "/videos",
    status_code=status.HTTP_201_CREATED,
    responses={
        201: {
            "description": "Created: PATCH the bytes to Location",
            "headers": {
                "Tus-Resumable": TUS_RESUMABLE,
                "Location": _header("The upload's URL (also upload_url in the body)"),
                "Upload-Offset": _header("0: no byte yet", enum=["0"]),
            },
        },
        **problem_responses(401, 412, 413, 422, 429),
    },
    summary="Start a resumable upload (tus 1.0 creation)",
)
def create_upload(
    platform: PlatformDep,
    user: CurrentUserDep,
    response: Response,
    upload_length: Annotated[
        str,
        Header(
            description="The file's size in bytes, ASCII digits (at most max_upload_bytes)",
            json_schema_extra=DIGITS,
        ),
    ],
    tus_resumable: TusResumable = None,
    upload_metadata: Annotated[
        str | None,
        Header(
            description="Comma-separated 'key base64(value)' pairs: caption, visibility "
            "(public, followers, private), allow_comments, comments_from, filename",
            max_length=MAX_METADATA,
        ),
    ] = None,
) -> UploadCreated:
    _check_tus(tus_resumable)
    length = _header_number(
        upload_length, "send the file size in bytes as Upload-Length", "upload-length"
    )
    meta = parse_metadata(upload_metadata)
    state = uploads.create_upload(platform, user, length, meta)
    url = f"/api/v1/uploads/{state.id}"
    response.headers.update({**TUS_HEADERS, "Location": url, "Upload-Offset": "0"})
    return UploadCreated(upload_url=url, video_id=state.id, expires_at=state.expires_at)


def _offset_headers(state: uploads.UploadState) -> dict[str, str]:
    return {
        **TUS_HEADERS,
        "Upload-Offset": str(state.offset),
        "Upload-Length": str(state.length),
        "Upload-Expires": state.expires_at.strftime("%a, %d %b %Y %H:%M:%S GMT"),
        "Cache-Control": "no-store",
    }


@router.head(
    "/uploads/{upload_id}",
    response_class=Response,  # no body: headers only
    summary="Where to resume an upload (tus 1.0 core)",
    responses={
        200: {"description": "The upload's offset and length, no body", "headers": OFFSET_STATE},
        **problem_responses(401, 404),
    },
)
def upload_offset(platform: PlatformDep, user: CurrentUserDep, upload_id: uuid.UUID) -> Response:
    state = uploads.upload_state(platform, user, upload_id)
    return Response(status_code=200, headers=_offset_headers(state))


@router.patch(
    "/uploads/{upload_id}",
    response_class=Response,  # no body: headers only
    status_code=204,
    responses={
        204: {
            "description": "Appended. The PATCH that completes the file also checks it, and "
            "then carries Location: the video",
            "headers": {
                **OFFSET_STATE,
                "Location": _header(
                    "On the last PATCH only: the video made of the upload", required=False
                ),
            },
        },
        **problem_responses(400, 401, 404, 409, 412, 413, 415, 422),
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "The bytes from Upload-Offset on (any number of them)",
            "content": {OFFSET_STREAM: {"schema": {"type": "string", "format": "binary"}}},
        }
    },
    summary="Append bytes to an upload (tus 1.0 core)",
)
async def upload_append(
    request: Request,
    platform: PlatformDep,
    user: CurrentUserDep,
    upload_id: uuid.UUID,
    upload_offset: Annotated[
        str,
        Header(
            description="Where these bytes start: the offset HEAD gave, ASCII digits",
            json_schema_extra=DIGITS,
        ),
    ],
    tus_resumable: TusResumable = None,
) -> Response:
    _check_tus(tus_resumable)
    content_type = request.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() != OFFSET_STREAM:
        raise NotOffsetStream(f"send the bytes as {OFFSET_STREAM}")
    offset = _header_number(upload_offset, "send the byte offset as Upload-Offset", "upload-offset")
    try:
        state = await uploads.append(platform, user, upload_id, offset, request.stream())
    except ClientDisconnect:
        # What arrived is kept; the client asks HEAD for the offset when it comes back.
        return Response(status_code=400)
    headers = _offset_headers(state)
    if state.offset == state.length:
        video_id = await run_in_threadpool(videos.finish_upload, platform, user, upload_id)
        headers["Location"] = f"/api/v1/videos/{video_id}"
    return Response(status_code=204, headers=headers)


@router.delete(
    "/uploads/{upload_id}",
    response_class=Response,  # no body: headers only
    status_code=204,
    summary="Cancel an upload (tus 1.0 termination)",
    responses={
        204: {
            "description": "Cancelled: its bytes are gone",
            "headers": {"Tus-Resumable": TUS_RESUMABLE},
        },
        **problem_responses(401, 404, 409),
    },
)
def upload_cancel(platform: PlatformDep, user: CurrentUserDep, upload_id: uuid.UUID) -> Response:
    uploads.terminate(platform, user, upload_id)
    return Response(status_code=204, headers=TUS_HEADERS)


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
    author = lifecycle.public_profile(platform, handle)
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
    responses=problem_responses(401, 404, 413, 415, 422),
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
    region: str,
    video_id: uuid.UUID,
    file: str,
    expires: Annotated[str, Query(max_length=12)] = "",
    signature: Annotated[str, Query(max_length=100)] = "",
) -> Response:
    """A followers-only or private video's file, decrypted in its home region, for the holder
    of a signed URL the API gave an authorised viewer minutes ago."""
    if region not in platform.cells or not valid_file(file):
        raise NotFound("no such file")
    cell = platform.cell(region)
    left = verify_private(cell, video_id, file, expires, signature)
    if left is None:
        return problem("link-expired", "this link has expired or is not valid: reload the page")
    with cell.db.transaction() as s:
        video = s.get(Video, video_id)
    entry = next((r for r in (video.renditions if video else []) if r["file"] == file), None)
    if video is None or entry is None or not entry["key"].startswith("private/"):
        raise NotFound("no such file")
    try:
        size, read = encrypted_reader(cell, video.owner_id, entry["key"], file)
    except BlobNotFound:
        raise NotFound("no such file") from None
    cache = f"private, max-age={min(left, 3600)}"
    return _ranged(request, size, read, mime_of(file), cache, f'"{video_id}-{file}"')
