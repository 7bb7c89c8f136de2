"""Handles: what a user may pick, and the canonical key that decides who owns one.

Handles use a small alphabet (a-z, 0-9, '.', '_'), like other short-video apps: input is
NFKC-normalised and case-folded first, so full-width or upper-case letters are accepted and
folded, and any other script is refused with a clear message instead of being allowed to
impersonate a Latin handle. The ownership key also folds the confusables left inside that
alphabet (Unicode TR39 skeletons: 0/o, 1/l, rn/m, vv/w), so 'a1ice' cannot sit beside 'alice'.
"""

from __future__ import annotations

import re
import unicodedata

from reelm.accounts.errors import InvalidInput

MIN_LEN, MAX_LEN = 2, 24
_ALLOWED = re.compile(r"^[a-z0-9._]+$")
_SKELETON_SEQUENCES = (("rn", "m"), ("vv", "w"))
_SKELETON_CHARS = str.maketrans({"0": "o", "1": "l"})
RESERVED = frozenset(
    {
        "admin",
        "api",
        "about",
        "help",
        "login",
        "logout",
        "me",
        "reelm",
        "root",
        "settings",
        "signup",
        "staff",
        "support",
        "static",
        "system",
        "u",
        "users",
        "www",
        "healthz",
    }
)


def normalise(raw: str) -> str:
    """The handle as stored and shown, or InvalidInput naming what is wrong."""
    if len(raw) > 4 * MAX_LEN:
        raise InvalidInput("a handle has at most 24 characters", field="handle")
    handle = unicodedata.normalize("NFKC", raw).casefold().strip().removeprefix("@")
    if not MIN_LEN <= len(handle) <= MAX_LEN:
        raise InvalidInput(f"a handle has {MIN_LEN} to {MAX_LEN} characters", field="handle")
    if not _ALLOWED.match(handle):
        raise InvalidInput("a handle may use only letters a-z, digits, '.' and '_'", field="handle")
    if handle.startswith(".") or handle.endswith(".") or ".." in handle:
        raise InvalidInput("a handle cannot start or end with '.', or hold '..'", field="handle")
    if handle.isdigit():
        raise InvalidInput("a handle needs at least one letter", field="handle")
    if skeleton(handle) in {skeleton(r) for r in RESERVED}:
        raise InvalidInput("this handle is reserved", field="handle")
    return handle


def skeleton(handle: str) -> str:
    """The ownership key: two handles with one skeleton would be mistaken for each other."""
    key = handle.translate(_SKELETON_CHARS)
    for seq, replacement in _SKELETON_SEQUENCES:
        key = key.replace(seq, replacement)
    return key
