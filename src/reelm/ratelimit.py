"""Rate limits on sign-up and login, with the `limits` library (memory by default)."""

from __future__ import annotations

import hashlib
import time

from limits import parse
from limits.storage import MemoryStorage, storage_from_string
from limits.strategies import MovingWindowRateLimiter

from reelm.accounts.errors import RateLimited


class RateLimits:
    def __init__(self, rules: dict[str, str], storage_uri: str | None = None) -> None:
        storage = storage_from_string(storage_uri) if storage_uri else MemoryStorage()
        self._limiter = MovingWindowRateLimiter(storage)
        self._rules = {name: parse(rule) for name, rule in rules.items()}

    def hit(self, name: str, *keys: str) -> None:
        """Count one attempt for each key; raise RateLimited when any is over its limit.

        Keys are hashed first: client addresses and identifiers never sit in the limiter's
        storage in clear.
        """
        rule = self._rules[name]
        for key in keys:
            digest = hashlib.sha256(key.encode()).hexdigest()[:32]
            if not self._limiter.hit(rule, name, digest):
                reset = self._limiter.get_window_stats(rule, name, digest).reset_time
                wait = max(1, int(reset - time.time()))
                raise RateLimited(f"too many attempts; try again in {wait} s", retry_after=wait)
