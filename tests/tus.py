"""A small tus 1.0 client for the tests (the web page has its own, in JavaScript)."""

from __future__ import annotations

import asyncio
import base64
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

import httpx2 as httpx

from reelm.bootstrap import Platform
from reelm.jobs import queue_of

TUS = {"Tus-Resumable": "1.0.0"}
T = TypeVar("T")


def metadata(**values: Any) -> str:
    return ",".join(f"{k} {base64.b64encode(str(v).encode()).decode()}" for k, v in values.items())


def create(http: httpx.Client, token: str, length: int, **meta: Any) -> httpx.Response:
    headers = {**TUS, "Authorization": f"Bearer {token}", "Upload-Length": str(length)}
    if meta:
        headers["Upload-Metadata"] = metadata(**meta)
    return http.post("/api/v1/videos", headers=headers)


def patch(http: httpx.Client, token: str, url: str, offset: int, data: bytes) -> httpx.Response:
    headers = {
        **TUS,
        "Authorization": f"Bearer {token}",
        "Upload-Offset": str(offset),
        "Content-Type": "application/offset+octet-stream",
    }
    return http.patch(url, headers=headers, content=data)


def upload(
    http: httpx.Client, token: str, data: bytes, *, chunk: int = 1 << 20, **meta: Any
) -> httpx.Response:
    """Create and send a whole file; the last PATCH's response (204, or the rejection)."""
    created = create(http, token, len(data), **meta)
    assert created.status_code == 201, created.text
    url = created.headers["Location"]
    offset = 0
    while True:
        response = patch(http, token, url, offset, data[offset : offset + chunk])
        if response.status_code != 204:
            return response
        offset = int(response.headers["Upload-Offset"])
        if offset == len(data):
            return response


def run_apart(work: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to its end in a thread of its own, with its own event loop: Playwright's
    sync API (the session's browser, once a page test started it) holds one in this thread."""
    result: list[T] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            result.append(asyncio.run(work))
        except BaseException as exc:  # re-raised in the test's thread
            failure.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return result[0]


def run_jobs(platform: Platform, region: str) -> None:
    """Run the region's queued jobs until none is left (a worker that stops when idle)."""
    run_apart(queue_of(platform, region).work(platform, wait=False))
