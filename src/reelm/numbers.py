"""Whole numbers from outside: HTTP headers, query values, byte ranges. ASCII digits only.

One parser for all of them, because Python's own tests are too kind for input from the wire:
``str.isdigit()`` is true for ``²`` and ``٣``; ``int()`` reads any Unicode decimal digit (``٣``,
fullwidth ``U+FF11``), a sign, spaces and underscores (``" +7_0 "`` is 70), and raises (a 500,
when nobody catches it) for ``²`` or for more than 4,300 digits. HTTP numbers
(``Content-Length``, ``Range``, tus's ``Upload-Length`` and ``Upload-Offset``, a signed URL's
``expires``) are ``1*DIGIT`` in ASCII (RFC 9110 5.6.1, RFC 5234 B.1): anything else is refused
here, with one clear error, before any arithmetic.
"""

from __future__ import annotations

# Enough for any byte count or unix time we take; every value this short fits PostgreSQL's
# bigint, so a parsed number can go to the database as it is.
MAX_DIGITS = 18
_ASCII_DIGITS = frozenset("0123456789")


class NotANumber(ValueError):
    """Not a whole number in ASCII digits, or out of its bounds."""


def parse_natural(text: str | None, *, most: int | None = None, digits: int = MAX_DIGITS) -> int:
    """``text`` as a non-negative whole number: one to ``digits`` ASCII digits 0-9 (leading
    zeros allowed, as HTTP allows them), no sign, space or underscore, at most ``most``.
    Raises :class:`NotANumber` otherwise."""
    if not text:
        raise NotANumber("a number is required")
    if len(text) > digits or not _ASCII_DIGITS.issuperset(text):
        raise NotANumber(f"not a whole number of at most {digits} digits 0-9")
    value = int(text)
    if most is not None and value > most:
        raise NotANumber(f"at most {most}")
    return value


def natural_or_none(text: str | None, *, digits: int = MAX_DIGITS) -> int | None:
    """:func:`parse_natural`, with None for what it refuses."""
    try:
        return parse_natural(text, digits=digits)
    except NotANumber:
        return None
