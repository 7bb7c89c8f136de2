"""/api/v1: resumable uploads, tus 1.0 (core, creation, termination).

The protocol: https://tus.io/protocols/resumable-upload.

``OPTIONS /api/v1/videos`` tells what the server supports. ``POST /api/v1/videos`` with
``Upload-Length`` and ``Upload-Metadata`` (``caption``, ``visibility``, ``allow_comments``,
``comments_from``, ``filename``, values base64) creates the upload and answers
``Location: /api/v1/uploads/<id>``; ``PATCH`` appends at ``Upload-Offset``; ``HEAD`` tells the
offset to resume from; ``DELETE`` cancels. The PATCH that completes the file also checks it: a
file that is not a video we take is answered with problem+json saying why, and is gone.

Every route, headers and bodies included, is described in the OpenAPI (tus clients read the
headers; the schemathesis run checks them). Byte counts are read by ``reelm.numbers``.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request, Response, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from reelm.accounts.errors import AccountError, InvalidInput
from reelm.api.deps import CurrentUserDep, PlatformDep
from reelm.api.problems import problem_responses
from reelm.media import uploads, videos
from reelm.media.uploads import UploadMeta
from reelm.numbers import NotANumber, parse_natural

# Answers carry headers only, but for the creation's JSON.
router = APIRouter(prefix="/api/v1", tags=["uploads"], default_response_class=Response)

TUS_VERSION = "1.0.0"
TUS_HEADERS = {"Tus-Resumable": TUS_VERSION}
OFFSET_STREAM = "application/offset+octet-stream"
# Upload-Length and Upload-Offset: a petabyte is 16 digits, far above any max_upload_bytes.
TUS_MAX_DIGITS = 15
MAX_METADATA = 16_384


class UploadCreated(BaseModel):
    upload_url: str
    video_id: uuid.UUID
    expires_at: datetime


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


def _answer(
    status: int, description: str, headers: Mapping[str, object], *problems: int
) -> dict[int | str, dict[str, Any]]:
    """A tus route's OpenAPI responses: its answer (headers, no body) and its problems."""
    return {
        status: {"description": description, "headers": headers},
        **problem_responses(*problems),
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
    status_code=204,
    summary="What the tus server supports (tus 1.0 discovery)",
    responses=_answer(
        204,
        "The tus versions, extensions and largest upload this server takes",
        {
            "Tus-Resumable": TUS_RESUMABLE,
            "Tus-Version": _header("Supported tus versions", enum=[TUS_VERSION]),
            "Tus-Extension": _header("Supported extensions: creation,termination"),
            "Tus-Max-Size": _header("The largest upload, in bytes", pattern="^[0-9]+$"),
        },
    ),
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
    response_class=JSONResponse,
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
    summary="Where to resume an upload (tus 1.0 core)",
    responses=_answer(200, "The upload's offset and length, no body", OFFSET_STATE, 401, 404),
)
def upload_offset(platform: PlatformDep, user: CurrentUserDep, upload_id: uuid.UUID) -> Response:
    state = uploads.upload_state(platform, user, upload_id)
    return Response(status_code=200, headers=_offset_headers(state))


@router.patch(
    "/uploads/{upload_id}",
    status_code=204,
    responses=_answer(
        204,
        "Appended. The PATCH that completes the file also checks it, and then carries "
        "Location: the video",
        {
            **OFFSET_STATE,
            "Location": _header(
                "On the last PATCH only: the video made of the upload", required=False
            ),
        },
        *(400, 401, 404, 409, 412, 413, 415, 422),
    ),
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
    status_code=204,
    summary="Cancel an upload (tus 1.0 termination)",
    responses=_answer(
        204, "Cancelled: its bytes are gone", {"Tus-Resumable": TUS_RESUMABLE}, 401, 404, 409
    ),
)
def upload_cancel(platform: PlatformDep, user: CurrentUserDep, upload_id: uuid.UUID) -> Response:
    uploads.terminate(platform, user, upload_id)
    return Response(status_code=204, headers=TUS_HEADERS)
