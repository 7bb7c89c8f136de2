"""Handles: what a user may pick, and the key that decides who owns one.

Handles use a small alphabet (a-z, 0-9, '.', '_'), like other short-video apps: input is
NFKC-normalised and case-folded first, so full-width or upper-case letters are accepted and
folded, and any other script is refused with a clear message instead of being allowed to
impersonate a Latin handle.

Two handles that a reader would take for one another share a *key*, and the catalog holds one
owner per key (``profiles.handle_key``, unique). The key is, in this order:

1. the Unicode TR39 skeleton (ICU's SpoofChecker, through PyICU: Unicode's own confusables
   data, kept current with ICU rather than copied here): ``0`` reads as ``o``, ``1`` as ``l``,
   ``m`` as ``rn``, and every look-alike of another script as its Latin prototype, should the
   alphabet ever grow;
2. case-folded again (some prototypes are capitals: ``0`` becomes ``O``);
3. the digits TR39 leaves alone folded to the letters they are read as (``3``→``e``,
   ``4``→``a``, ``5``→``s``, ``7``→``t``, ``8``→``b``), and ``i`` with ``l`` (TR39 makes ``1``
   an ``l``, and ``adm1n`` is read as ``admin``);
4. separators (``.``, ``_``, ``-``) dropped: ``maya.skates``, ``maya_skates`` and
   ``mayaskates`` are one name to a reader;
5. ``vv`` read as ``w``.

Staff and system names are reserved through the same key, so ``adm1n`` is refused as
``admin`` is, and so is any handle holding the platform's name (``reelm_support``).
"""

from __future__ import annotations

import re
import unicodedata
import uuid

import icu
from sqlalchemy import Select, or_, select

from reelm.accounts.errors import InvalidInput
from reelm.accounts.models import PublicProfile

MIN_LEN, MAX_LEN = 2, 24
# TR39 may lengthen a handle (m -> rn): the key column is twice the handle's length.
KEY_MAX_LEN = 2 * MAX_LEN
_ALLOWED = re.compile(r"^[a-z0-9._]+$")
SEPARATORS = "._-"
# What TR39's skeleton leaves in the alphabet and a reader still confuses: the digits read as
# letters (TR39 already reads 0 as o and 1 as l), and i beside l (TR39 folds 1 and I to l, so
# i joins them: adm1n reads as admin). Each digit has its own letter, so handles that differ
# in their numbers (creator6, creator8) stay apart; 2, 6 and 9 are left as they are.
_READ_AS = str.maketrans({"3": "e", "4": "a", "5": "s", "7": "t", "8": "b", "i": "l"})
_NO_SEPARATORS = str.maketrans(dict.fromkeys(SEPARATORS, None))
# One checker for the process: ICU's checks on a configured checker are safe across threads.
_SPOOF = icu.SpoofChecker()

RESERVED = frozenset(
    {
        # system words and routes
        "about",
        "api",
        "everyone",
        "healthz",
        "login",
        "logout",
        "me",
        "null",
        "root",
        "settings",
        "signup",
        "static",
        "system",
        "u",
        "users",
        "www",
        # staff and the people who speak for the platform
        "abuse",
        "admin",
        "administrator",
        "help",
        "helpdesk",
        "legal",
        "mod",
        "moderation",
        "moderator",
        "noreply",
        "official",
        "postmaster",
        "privacy",
        "safety",
        "security",
        "staff",
        "support",
        "team",
        "transparency",
        "trust",
        "verified",
        "webmaster",
    }
)
# Refused anywhere inside a handle: names that only the platform itself may carry.
RESERVED_WITHIN = ("reelm",)


def normalise(raw: str) -> str:
    """The handle as stored and shown, or InvalidInput naming what is wrong with its shape.

    Lookups use this alone (a reserved or look-alike handle simply finds nobody, or the
    account that holds its key); a new handle must also pass ``check_claimable``."""
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
    return handle


def handle_key(handle: str) -> str:
    """The ownership key of a normalised handle: two handles with one key would be mistaken
    for each other, so only one account may hold it."""
    return _read_as(handle).translate(_NO_SEPARATORS).replace("vv", "w")


def _read_as(handle: str) -> str:
    """Steps 1-3 of the key: each character as a reader takes it, separators still there."""
    return str(_SPOOF.getSkeleton(0, handle)).casefold().translate(_READ_AS)


_RESERVED_KEYS = frozenset(handle_key(name) for name in RESERVED)
_RESERVED_WITHIN = tuple(_read_as(name) for name in RESERVED_WITHIN)


def check_claimable(handle: str) -> str:
    """A normalised handle a new account may take (the catalog's unique key decides whether
    it is free), or InvalidInput when it is, or reads as, a reserved name.

    The platform's name is looked for with the separators kept: ``reelm_support`` and
    ``r33lm`` carry it, ``reel_maker`` (a reel maker) does not."""
    if handle_key(handle) in _RESERVED_KEYS:
        raise InvalidInput("this handle is reserved", field="handle")
    read = _read_as(handle)
    if any(name in read for name in _RESERVED_WITHIN):
        raise InvalidInput("this handle is reserved for reelm's own accounts", field="handle")
    return handle


def owner_lookup(handle: str) -> Select[uuid.UUID]:
    """The account a lookup of the normalised ``handle`` means (log-in, a profile's address, a
    mention): the one with exactly this handle, else the one holding its key (``@mayaskates``
    finds ``maya.skates``). Exact first: handles kept from before the key folded separators
    and digits share a key with an older one (catalog migration c0013) and are found by name.
    """
    return (
        select(PublicProfile.user_id)
        .where(or_(PublicProfile.handle == handle, PublicProfile.handle_key == handle_key(handle)))
        .order_by(PublicProfile.handle != handle)
        .limit(1)
    )
