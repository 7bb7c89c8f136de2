"""Search: people, hashtags and videos, over the catalog's public data only.

Both the stored text and the query are folded (reelm.search.text), then matched as a substring
(ILIKE on the folded text, served by a pg_trgm GIN index), so accents, case, full-width letters,
CJK text of any length and emoji all match. People are ranked by trigram similarity; videos come
newest first, in pages; hashtags by how many public videos carry them. Nothing protected is
searched: captions of private videos, emails and the like never reach the catalog."""

from __future__ import annotations

import unicodedata
from collections import Counter
from dataclasses import dataclass

from sqlalchemy import func, select

from reelm.accounts.errors import InvalidInput
from reelm.accounts.models import DirectoryEntry, PublicProfile
from reelm.accounts.service import CurrentUser
from reelm.bootstrap import Platform
from reelm.media import catalog
from reelm.search.text import MAX_QUERY, fold, like_pattern

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
    return Results(query, _people(platform, words, pattern), _hashtags(platform, words), videos)


def _people(platform: Platform, folded: str, pattern: str) -> list[Person]:
    with platform.catalog.transaction() as c:
        rows = c.execute(
            select(PublicProfile.handle, PublicProfile.display_name, PublicProfile.is_private)
            .join(DirectoryEntry, DirectoryEntry.user_id == PublicProfile.user_id)
            .where(
                DirectoryEntry.state == "active",
                PublicProfile.search_text.ilike(pattern, escape="\\"),
            )
            .order_by(
                # A handle that starts with the query first, then the closest texts.
                PublicProfile.handle_key.startswith(
                    folded.replace(" ", ""), autoescape=True
                ).desc(),
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
