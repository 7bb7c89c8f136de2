"""Who may try a password now: log-in limits that slow guessing without locking the owner out.

The scheme is OWASP's "device cookies", as large sites run it:

- every client address has its limit (`login_rate`), whatever account it tries;
- a client the account knows (it holds a live session of the account, or a device cookie the
  server signed when the account last logged in from it) is limited per device only
  (`login_rate` again), so a stranger's failures never lock the owner out of their own device;
- everyone else shares one count per account, whatever spelling names it (handle in any case or
  width, or email): after `login_free_attempts` in a day, each attempt waits 2 s, then 4 s,
  8 s... up to `login_backoff_max_seconds`. An owner on a new device waits that long at worst,
  never hours.

An identifier that names no account is counted under its own spelling (`identity_key`) with the
same schedule, so the limits answer alike whether the account exists. One thing they do tell:
an attacker who exhausted an account's count through its handle sees the back-off when trying
its email, so learns that they name one account; the sign-up form's "email already registered"
already tells that an email has an account, at the same per-address budget.
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass

from itsdangerous import BadSignature, TimestampSigner

from reelm.bootstrap import Platform

DEVICE_COOKIE = "reelm_device"
# A device stays known this long after its last log-in (well past a session's end: the cookie is
# what lets an owner whose session ended in through an attack).
DEVICE_DAYS = 180
DEVICE_SECONDS = DEVICE_DAYS * 86400
# Attempts by unknown clients are counted for a day from the first one.
ATTEMPT_MEMORY = 86400
_NONCE_BYTES = 12


@dataclass(frozen=True)
class Visitor:
    """A client trying to log in: its address, the accounts it proves it is known to, and the
    device (session or device cookie) that proof came from, counted on its own."""

    address: str
    known_to: frozenset[uuid.UUID] = frozenset()
    device: str = ""


class DeviceCookies:
    """Signed `<user id>.<nonce>` values: the server's word that this browser logged in as the
    user. The nonce tells devices of one account apart (each has its own count)."""

    def __init__(self, secret: bytes) -> None:
        self._signer = TimestampSigner(secret, salt="reelm-device")

    def issue(self, user_id: uuid.UUID) -> str:
        return self._signer.sign(f"{user_id.hex}.{secrets.token_urlsafe(_NONCE_BYTES)}").decode()

    def read(self, value: str | None) -> tuple[uuid.UUID, str] | None:
        """(user id, device id) of a valid cookie, else None."""
        if not value or len(value) > 200:
            return None
        try:
            raw = self._signer.unsign(value, max_age=DEVICE_SECONDS).decode()
        except BadSignature:
            return None
        user_hex, _, nonce = raw.partition(".")
        try:
            return uuid.UUID(hex=user_hex), nonce
        except ValueError:
            return None


def admit(platform: Platform, visitor: Visitor, spelling_key: str, user: uuid.UUID | None) -> None:
    """Let this attempt on `user` (None: the identifier names no account, `spelling_key` stands
    for it) reach the password check, or raise RateLimited."""
    limits, settings = platform.rate_limits, platform.settings
    if user is not None and user in visitor.known_to:
        limits.hit("login", f"device:{visitor.device}")
        return
    limits.back_off(
        "login-account",
        f"account:{user}" if user is not None else spelling_key,
        free=settings.login_free_attempts,
        longest=settings.login_backoff_max_seconds,
        memory=ATTEMPT_MEMORY,
    )
