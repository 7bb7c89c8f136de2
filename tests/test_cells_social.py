"""A US user and an SG user, each served by their own region's cell (separate OS processes
holding only their own secrets): follows, likes, comments and mentions across the two, the
notifications delivered to the other cell, and a follow request to a private account there."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import tus
from tests.cells import Cells, running_cells
from tests.test_blobcheck import make_clip
from tests.test_cells import log_in, sign_up


@pytest.fixture(scope="module")
def cells(admin_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cells]:
    root = tmp_path_factory.mktemp("cells-social")
    with running_cells(admin_url, root, ["us", "sg"]) as running:
        yield running


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def eventually(check: Callable[[], Any], what: str, seconds: float = 30) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds:.0f} s: {what} (last: {found!r})")
        time.sleep(0.2)


def kinds(cells: Cells, region: str, token: str) -> set[tuple[str, str]]:
    with cells.client(region) as client:
        answer = client.get("/api/v1/me/notifications", headers=auth(token))
    assert answer.status_code == 200, answer.text
    return {(n["kind"], (n["actor"] or {}).get("handle", "")) for n in answer.json()}


def test_a_user_of_each_region_follows_likes_comments_and_mentions_the_other(
    cells: Cells, tmp_path: Path
) -> None:
    sign_up(cells, "us", "alice.us", "US")
    sign_up(cells, "sg", "mei.sg", "SG")
    sign_up(cells, "sg", "kai.sg", "SG")
    alice = log_in(cells, "us", "alice.us")
    mei = log_in(cells, "sg", "mei.sg")
    kai = log_in(cells, "sg", "kai.sg")

    # Mei posts a clip in her region; the sg cell's worker makes it playable.
    with cells.client("sg") as sg:
        done = tus.upload(sg, mei, make_clip(tmp_path / "clip.mp4").read_bytes(), caption="hi")
        assert done.status_code == 204, done.text

        def ready() -> str | None:
            videos = sg.get("/api/v1/me/videos", headers=auth(mei)).json()
            return next((v["id"] for v in videos if v["status"] == "ready"), None)

        video = eventually(ready, "the sg worker made the video playable", 120)
        private = sg.patch(
            "/api/v1/me", headers=auth(kai), json={"privacy": {"private_account": True}}
        )
        assert private.status_code == 200, private.text

    with cells.client("us") as us:
        # The us cell reads Mei's public video from the catalog, and writes Alice's side.
        assert us.get(f"/api/v1/videos/{video}").status_code == 200
        assert us.post("/api/v1/users/mei.sg/follow", headers=auth(alice)).status_code == 200
        assert us.post(f"/api/v1/videos/{video}/like", headers=auth(alice)).status_code == 200
        comment = us.post(
            f"/api/v1/videos/{video}/comments",
            headers=auth(alice),
            json={"body": "so good, @kai.sg look"},
        )
        assert comment.status_code == 201, comment.text
        asked = us.post("/api/v1/users/kai.sg/follow", headers=auth(alice))
        assert asked.status_code == 200, asked.text

    wanted = {("follow", "alice.us"), ("like", "alice.us"), ("comment", "alice.us")}
    eventually(lambda: wanted <= kinds(cells, "sg", mei), "Mei's notifications reached sg", 30)
    eventually(
        lambda: (
            {("mention", "alice.us"), ("follow_request", "alice.us")} <= kinds(cells, "sg", kai)
        ),
        "Kai's mention and follow request reached sg",
        30,
    )

    with cells.client("sg") as sg:
        requests = sg.get("/api/v1/me/follow-requests", headers=auth(kai))
        assert requests.status_code == 200, requests.text
        assert "alice.us" in requests.text
        approved = sg.post(
            "/api/v1/me/follow-requests/alice.us", headers=auth(kai), json={"approve": True}
        )
        assert approved.status_code in (200, 204), approved.text
        followers = sg.get("/api/v1/users/kai.sg/followers", headers=auth(kai))
        assert "alice.us" in followers.text
    eventually(
        lambda: ("follow_accepted", "kai.sg") in kinds(cells, "us", alice),
        "Alice heard that Kai accepted",
        30,
    )
    with cells.client("us") as us:
        # A follower served by another region's cell gets the creators' profile grids (their
        # followers-only videos are their home cell's alone).
        for handle in ("mei.sg", "kai.sg"):
            grid = us.get(f"/api/v1/users/{handle}/videos", headers=auth(alice))
            assert grid.status_code == 200, grid.text
        assert video in us.get("/api/v1/users/mei.sg/videos", headers=auth(alice)).text
    for region in ("us", "sg"):
        said = cells.run(region, "residency-scan")
        assert "clean" in said.lower(), said
