"""Captions: the hashtags and mentions a caption holds.

A hashtag is ``#`` followed by letters, digits, marks or ``_`` in any script (``#café``,
``#東京``, ``#スケボー``), NFKC-normalised and case-folded so ``#Café`` and ``#CAFÉ`` are one tag.
A mention is ``@`` followed by a handle in the handle alphabet (a-z 0-9 . _), folded the same
way as handles. A ``#`` or ``@`` inside a word (``a#b``, ``me@example.com``) is not a tag.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from reelm.accounts.handles import MAX_LEN as HANDLE_MAX

MAX_TAG_LEN = 100
MAX_TAGS = 30
MAX_MENTIONS = 20

# \w in Python's re is Unicode-aware: letters and digits of every script, and "_". Marks
# (combining accents, the vowel signs of Indic scripts) are added so a tag is not cut mid-word.
_WORD = r"[\w\u0300-\u036f\u0900-\u0dff\u3099\u309a]"
_TAG_OR_MENTION = re.compile(
    rf"(?<![\w#&])#({_WORD}+)|(?<![\w@.])@([A-Za-z0-9._]{{2,{HANDLE_MAX}}})(?![\w@])"
)


@dataclass(frozen=True, slots=True)
class ParsedCaption:
    text: str
    hashtags: tuple[str, ...]  # folded, in order of first appearance, no duplicates
    mentions: tuple[str, ...]  # folded handles, same rules


def fold_tag(tag: str) -> str:
    """The canonical form of a hashtag (without '#'): what search and links use."""
    return unicodedata.normalize("NFKC", tag).casefold()


def _unique(values: list[str], limit: int) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for value in values:
        if value and value not in seen:
            seen[value] = None
        if len(seen) == limit:
            break
    return tuple(seen)


@dataclass(frozen=True, slots=True)
class Segment:
    """A piece of a caption: plain text, a hashtag (``target`` is the folded tag) or a mention
    (``target`` is the folded handle)."""

    kind: str  # "text", "tag" or "mention"
    text: str
    target: str = ""


def segments(text: str) -> list[Segment]:
    """The caption cut into text, hashtags and mentions, in order (what pages turn into links)."""
    out: list[Segment] = []
    last = 0
    for match in _TAG_OR_MENTION.finditer(text):
        if match[1] is not None:
            tag = fold_tag(match[1])[:MAX_TAG_LEN]
            if tag.isdigit():  # "#1" is a number, not a topic
                continue
            found = Segment("tag", match[0], tag)
            end = match.end()
        else:
            written = match[2].rstrip(".")  # a full stop ends the sentence, not the handle
            found = Segment("mention", "@" + written, written.casefold())
            end = match.start() + len(found.text)
        if match.start() > last:
            out.append(Segment("text", text[last : match.start()]))
        out.append(found)
        last = end
    if last < len(text):
        out.append(Segment("text", text[last:]))
    return out


def parse_caption(text: str) -> ParsedCaption:
    """Hashtags and mentions of an already cleaned caption (see ``clean_text``)."""
    parts = segments(text)
    tags = [p.target for p in parts if p.kind == "tag"]
    mentions = [p.target for p in parts if p.kind == "mention"]
    return ParsedCaption(text, _unique(tags, MAX_TAGS), _unique(mentions, MAX_MENTIONS))
