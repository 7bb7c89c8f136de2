"""Search: people, hashtags and videos, over the catalog's public data only.

Both the stored text and the query are folded (reelm.search.text), then matched as a substring
(ILIKE on the folded text, served by a pg_trgm GIN index), so accents, case, full-width letters,
CJK text of any length and emoji all match. People are ranked by trigram similarity; videos come
newest first, in pages; hashtags by how many public videos carry them. Nothing protected is
searched: captions of private videos, emails and the like never reach the catalog. Under-16s
are found by their followers (and themselves) only, as TikTok does for 13-15 year olds."""

from __future__ import annotations

import unicodedata
from collections import Counter
from dataclasses import dataclass

from sqlalchemy import ColumnElement, exists, func, or_, select

from reelm.accounts.errors import InvalidInput
from reelm.accounts.models import DirectoryEntry, PublicProfile
from reelm.accounts.service import CurrentUser
from reelm.bootstrap import Platform
from reelm.media import catalog
from reelm.search.text import MAX_QUERY, fold, like_pattern
from reelm.social.models import Follow

PEOPLE = 8
HASHTAGS = 8
# Videos read to count the hashtags a query matches (the most recent ones).
HASHTAG_SAMPLE = 500


@dataclass(frozen=True, slots=True)
class Person:
    handle: str
    display_name: str
    is_private: bool


@dataclass(frozen=True, slots=True)
class Hashtag:
    tag: str
    videos: int


@dataclass(frozen=True, slots=True)
class Results:
    query: str
    people: list[Person]
    hashtags: list[Hashtag]
    videos: catalog.Page


def clean_query(query: str) -> str:
    query = query.strip()
    if not query:
        raise InvalidInput("type something to search for", field="q")
    if len(query) > MAX_QUERY:
        raise InvalidInput(f"searches are limited to {MAX_QUERY} characters", field="q")
    if any(unicodedata.category(c) in ("Cc", "Cs") for c in query):
        raise InvalidInput("the search contains control characters", field="q")
    return query


def search(
    platform: Platform,
    viewer: CurrentUser | None,
    query: str,
    *,
    cursor: str | None = None,
    limit: int = 10,
) -> Results:
    """People and hashtags on the first page only; videos on every page (``cursor``)."""
    query = clean_query(query)
    folded = fold(query)
    words = folded.lstrip("#@") or folded
    pattern = like_pattern(words)
    videos = catalog.matching(platform, viewer, pattern, cursor=cursor, limit=limit)
    if cursor is not None:
        return Results(query, [], [], videos)
    people = _people(platform, viewer, words, pattern)
    return Results(query, people, _hashtags(platform, words), videos)


def _findable(viewer: CurrentUser | None) -> ColumnElement[bool]:
    """Whose profiles a viewer finds: under-16s only by their followers (and themselves),
    as TikTok does for 13-15 year olds; everyone else by anyone."""
    if viewer is None:
        return PublicProfile.teen.is_(False)
    follows = exists().where(
        Follow.follower_id == viewer.user_id,
        Follow.followee_id == PublicProfile.user_id,
        Follow.state == "active",
    )
    return or_(PublicProfile.teen.is_(False), PublicProfile.user_id == viewer.user_id, follows)


def _people(
    platform: Platform, viewer: CurrentUser | None, folded: str, pattern: str
) -> list[Person]:
    with catalog.reads_for(platform, viewer).read() as c:
        rows = c.execute(
            select(PublicProfile.handle, PublicProfile.display_name, PublicProfile.is_private)
            .join(DirectoryEntry, DirectoryEntry.user_id == PublicProfile.user_id)
            .where(
                DirectoryEntry.state == "active",
                PublicProfile.search_text.ilike(pattern, escape="\\"),
                _findable(viewer),
            )
            .order_by(
                # A handle that starts with the query first, then the closest texts.
                PublicProfile.handle.startswith(folded.replace(" ", ""), autoescape=True).desc(),
                func.similarity(PublicProfile.search_text, folded).desc(),
                PublicProfile.handle,
            )
            .limit(PEOPLE)
        ).all()
    return [Person(h, n, p) for h, n, p in rows]


def _hashtags(platform: Platform, folded: str) -> list[Hashtag]:
    """Hashtags of public videos that start with the query (folded: ``#cafe`` finds
    ``#Café``), by the number of recent videos carrying them."""
    tag_query = folded.replace(" ", "")
    rows = catalog.matching_hashtags(platform, like_pattern(f"#{tag_query}"), HASHTAG_SAMPLE)
    counts: Counter[str] = Counter()
    for tags in rows:
        counts.update(t for t in set(tags) if fold(t).startswith(tag_query))
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return [Hashtag(tag, n) for tag, n in ranked[:HASHTAGS]]
