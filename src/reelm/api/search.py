"""/api/v1/search: people, hashtags and public videos (see reelm.search)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel

from reelm.api.deps import ClientAddress, OptionalUserDep, PlatformDep
from reelm.api.problems import problem_responses
from reelm.api.videos import VideoOut, VideoPage
from reelm.media.catalog import MAX_PAGE
from reelm.search import service
from reelm.search.text import MAX_QUERY

router = APIRouter(prefix="/api/v1", tags=["search"])


class PersonOut(BaseModel):
    handle: str
    display_name: str
    is_private: bool
    url: str


class HashtagOut(BaseModel):
    tag: str
    videos: int
    url: str


class SearchOut(BaseModel):
    query: str
    people: list[PersonOut]
    hashtags: list[HashtagOut]
    videos: VideoPage


@router.get("/search", responses=problem_responses(422, 429, 451), summary="Search")
def search(
    platform: PlatformDep,
    viewer: OptionalUserDep,
    client: ClientAddress,
    q: Annotated[str, Query(min_length=1, max_length=MAX_QUERY)],
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 10,
) -> SearchOut:
    """People (handle, name, bio), hashtags and public videos (caption, hashtags) matching
    ``q``, whatever the accents, case or script (CJK and emoji too). People and hashtags come
    with the first page; follow ``videos.next_cursor`` for more videos."""
    platform.rate_limits.hit("search", client)
    found = service.search(platform, viewer, q, cursor=cursor, limit=limit)
    return SearchOut(
        query=found.query,
        people=[
            PersonOut(
                handle=p.handle,
                display_name=p.display_name,
                is_private=p.is_private,
                url=f"/@{p.handle}",
            )
            for p in found.people
        ],
        hashtags=[
            HashtagOut(tag=h.tag, videos=h.videos, url=f"/tag/{h.tag}") for h in found.hashtags
        ],
        videos=VideoPage(
            items=[VideoOut.of(card) for card in found.videos.items],
            next_cursor=found.videos.next_cursor,
        ),
    )
