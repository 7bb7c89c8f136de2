"""CSRF protection for forms: a random cookie, and a signed copy of it in every form.

A cross-site page can make the browser send the cookie but cannot read it, so it cannot
produce the matching signed token (double submit, signed with the server's secret).
"""

from __future__ import annotations

import hmac
import secrets
from pathlib import Path

from itsdangerous import BadSignature, URLSafeTimedSerializer

from reelm.storage.keys import read_or_create_secret

CSRF_COOKIE = "reelm_csrf"
CSRF_FIELD = "csrf_token"
MAX_AGE = 12 * 3600


def load_or_create_secret(path: Path) -> bytes:
    return read_or_create_secret(path)


class Csrf:
    def __init__(self, secret: bytes) -> None:
        self._signer = URLSafeTimedSerializer(secret, salt="reelm-csrf")

    @staticmethod
    def new_cookie_value() -> str:
        return secrets.token_urlsafe(24)

    def token_for(self, cookie_value: str) -> str:
        return self._signer.dumps(cookie_value)

    def valid(self, cookie_value: str | None, token: str | None) -> bool:
        if not cookie_value or not token or len(token) > 500:
            return False
        try:
            signed = self._signer.loads(token, max_age=MAX_AGE)
        except BadSignature:
            return False
        return isinstance(signed, str) and hmac.compare_digest(signed, cookie_value)
