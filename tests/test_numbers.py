"""Numbers from the wire are ASCII digits or a clear refusal: never a 500, never a lenient read.

`str.isdigit()` is true for `²`, which `int()` cannot read (a 500 before the one parser);
`int()` reads `٣` (and fullwidth digits) as 3, and refuses more than 4,300 digits.
"""

from __future__ import annotations

import asyncio
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx2 as httpx
import pytest
from fastapi import FastAPI

from reelm.app import create_app
from reelm.bootstrap import Platform
from reelm.media.serving import BadRange, ByteRange, parse_range
from reelm.numbers import MAX_DIGITS, NotANumber, natural_or_none, parse_natural
from tests.conftest import signed_in

PROBLEM_JSON = "application/problem+json"
# Superscript two passes str.isdigit() and fails int(); Arabic-Indic three and fullwidth one
# are read by int(); the rest are what int() forgives and HTTP does not.
NOT_ASCII_DIGITS = ["²", "٣", "１", "1²", " 7", "7 ", "+7", "-7", "7_0", "0x10", "", "9" * 5000]
# Headers travel as Latin-1 bytes: these are the ones a client can actually send.
HEADER_VALUES = ["²", "¹0", "³", " 7", "+7", "-1", "7_0", "9" * 5000, "99999999999999999999"]


@pytest.mark.parametrize("text", NOT_ASCII_DIGITS)
def test_parse_natural_refuses_what_is_not_ascii_digits(text: str) -> None:
    with pytest.raises(NotANumber):
        parse_natural(text)
    assert natural_or_none(text) is None


def test_parse_natural_reads_ascii_digits_within_bounds() -> None:
    assert parse_natural("0") == 0
    assert parse_natural("007") == 7
    assert parse_natural("9" * MAX_DIGITS) == 10**MAX_DIGITS - 1
    assert natural_or_none("42") == 42
    with pytest.raises(NotANumber):
        parse_natural("9" * (MAX_DIGITS + 1))
    with pytest.raises(NotANumber, match="at most 10"):
        parse_natural("11", most=10)
    with pytest.raises(NotANumber):
        parse_natural("1234", digits=3)
    with pytest.raises(NotANumber):
        parse_natural(None)


@pytest.mark.parametrize("header", ["bytes=²-", "bytes=0-²", "bytes=-²", "bytes=٣-", "bytes=１-"])
def test_a_range_of_other_digits_is_ignored(header: str) -> None:
    """A malformed Range is ignored (the whole file, RFC 9110 14.2), not a 500 or a guess."""
    assert parse_range(header, 100) is None


def test_ranges_in_ascii_digits_still_work() -> None:
    assert parse_range("bytes=10-19", 100) == ByteRange(10, 20)
    assert parse_range("bytes=-10", 100) == ByteRange(90, 100)
    with pytest.raises(BadRange):
        parse_range("bytes=100-", 100)


@pytest.fixture(scope="module")
def app(platform: Platform) -> FastAPI:
    return create_app(platform)


def call(app: FastAPI, method: str, url: str, headers: dict[str, bytes], **kw: Any) -> Any:
    """One request in process, with header values as raw bytes: a TestClient would re-encode
    them as UTF-8, while a client on the wire can send any Latin-1 byte (`²` is 0xB2). In a
    thread of its own: Playwright's sync API may hold an event loop in this one."""

    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as c:
            return await c.request(method, url, headers=headers, **kw)

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, send()).result()


def _problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    body: dict[str, Any] = response.json()
    assert body["status"] == status and body["detail"]
    return body


def _auth(platform: Platform, prefix: str) -> dict[str, bytes]:
    token, _ = signed_in(platform, prefix)
    return {"Tus-Resumable": b"1.0.0", "Authorization": f"Bearer {token}".encode()}


@pytest.mark.parametrize("value", HEADER_VALUES)
def test_upload_length_in_other_digits_is_invalid_input(
    platform: Platform, app: FastAPI, value: str
) -> None:
    headers = {**_auth(platform, "len"), "Upload-Length": value.encode("latin-1")}
    response = call(app, "POST", "/api/v1/videos", headers)
    assert _problem(response, 422)["field"] == "upload-length"


@pytest.mark.parametrize("value", HEADER_VALUES)
def test_upload_offset_in_other_digits_is_invalid_input(
    platform: Platform, app: FastAPI, value: str
) -> None:
    auth = _auth(platform, "off")
    created = call(app, "POST", "/api/v1/videos", {**auth, "Upload-Length": b"10"})
    assert created.status_code == 201, created.text
    url = created.headers["Location"]
    headers = {
        **auth,
        "Upload-Offset": value.encode("latin-1"),
        "Content-Type": b"application/offset+octet-stream",
    }
    response = call(app, "PATCH", url, headers, content=b"0123456789")
    assert _problem(response, 422)["field"] == "upload-offset"
    assert call(app, "HEAD", url, auth).headers["Upload-Offset"] == "0"  # nothing was written


@pytest.mark.parametrize("expires", ["²", "٣" * 10, "１" * 10, "-1", " 1", "9" * 5000])
def test_a_signed_url_with_other_digits_is_refused(
    platform: Platform, app: FastAPI, expires: str
) -> None:
    """Signed in, so that a URL bound to the viewer's session gets as far as its expiry."""
    url = f"/media/p/us/{uuid.uuid4()}/720p.mp4"
    query = {"expires": expires, "signature": "x" * 43}
    response = call(app, "GET", url, _auth(platform, "exp"), params=query)
    assert response.status_code in (403, 422), response.text
    assert response.headers["content-type"] == PROBLEM_JSON


@pytest.mark.parametrize("value", ["²", "9" * 5000, "+1", " 1", "1_0"])
def test_a_content_length_in_other_digits_is_a_bad_request(app: FastAPI, value: str) -> None:
    response = call(app, "GET", "/api/v1/feed", {"Content-Length": value.encode("latin-1")})
    _problem(response, 400)
