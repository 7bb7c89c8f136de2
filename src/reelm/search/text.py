"""Folding text for search: one form for every way people type the same thing.

Case is folded (``ß`` = ``ss``), compatibility forms unified (full-width letters = ASCII ones,
``ﬁ`` = ``fi``) and Latin, Greek and Cyrillic accents dropped (``Ñandú`` = ``nandu``, ``Ελλάδα``
= ``ελλαδα``), so a query without accents finds a name with them and the other way round.
Other scripts keep their marks (Japanese ``が`` stays distinct from ``か``; Hangul is recomposed)
and emoji pass through unchanged. The same function folds the stored text and the query."""

from __future__ import annotations

import unicodedata

# Combining Diacritical Marks: the accents of Latin, Greek and Cyrillic letters once decomposed.
_ACCENTS = range(0x0300, 0x0370)
MAX_QUERY = 100


def fold(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    kept = "".join(c for c in decomposed if ord(c) not in _ACCENTS)
    return " ".join(unicodedata.normalize("NFKC", kept).casefold().split())


def profile_text(handle: str, display_name: str, bio: str) -> str:
    return fold(f"{handle} {display_name} {bio}")


def video_text(caption: str, hashtags: list[str]) -> str:
    return fold(" ".join([caption, *(f"#{tag}" for tag in hashtags)]))


def like_pattern(folded_query: str) -> str:
    """``%query%`` for ILIKE, with the query's own ``%``, ``_`` and ``\\`` taken literally."""
    escaped = folded_query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"
