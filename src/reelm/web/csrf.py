"""CSRF protection for forms and the pages' scripts: a token signed for the visitor's session.

A signed-in visitor's token is bound to their session (a keyed hash of the session token's
hash): a cross-site page can make the browser send the session cookie but can neither read a
page to learn the token nor make one, and a token fetched by anyone else (anonymously, or by a
cookie they planted in the victim's browser) is bound to another session and refused. This is
the signed double-submit pattern with the session as what is signed (OWASP).

Before log-in there is no session: the sign-up and log-in forms' token is bound to a random
cookie instead (a form posted from another site lacks the cookie's token). Logging in starts a
session, so every token issued before it stops working; the cookie is replaced too.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from pathlib import Path

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import Request

from reelm.storage.keys import read_or_create_secret

CSRF_COOKIE = "reelm_csrf"
CSRF_FIELD = "csrf_token"
MAX_AGE = 12 * 3600
# Bytes of the keyed binding carried in a token: enough that guessing one is hopeless.
BINDING_BYTES = 16


def load_or_create_secret(path: Path) -> bytes:
    return read_or_create_secret(path)


def session_binding(token_hash: bytes) -> str:
    return "session:" + token_hash.hex()


def visitor_binding(cookie_value: str) -> str:
    return "visitor:" + cookie_value


def request_binding(request: Request) -> str | None:
    """What this request's token must be bound to: the session the gate resolved, else the
    visitor's CSRF cookie (None: neither, so no token can be valid)."""
    user = getattr(request.state, "user", None)
    if user is not None:
        return session_binding(user.token_hash)
    cookie = request.cookies.get(CSRF_COOKIE)
    return visitor_binding(cookie) if cookie else None


class Csrf:
    def __init__(self, secret: bytes) -> None:
        self._signer = URLSafeTimedSerializer(secret, salt="reelm-csrf")
        # The binding travels inside the token, readable by whoever sees the page: it is a keyed
        # hash, so the token carries nothing of the session itself.
        self._binding_key = hmac.new(secret, b"reelm-csrf-binding", hashlib.sha256).digest()

    @staticmethod
    def new_cookie_value() -> str:
        return secrets.token_urlsafe(24)

    def _bound(self, binding: str) -> str:
        digest = hmac.new(self._binding_key, binding.encode(), hashlib.sha256).digest()
        return digest[:BINDING_BYTES].hex()

    def token_for(self, binding: str) -> str:
        return self._signer.dumps(self._bound(binding))

    def valid(self, binding: str | None, token: str | None) -> bool:
        if not binding or not token or len(token) > 500:
            return False
        try:
            signed = self._signer.loads(token, max_age=MAX_AGE)
        except BadSignature:
            return False
        return isinstance(signed, str) and hmac.compare_digest(signed, self._bound(binding))
