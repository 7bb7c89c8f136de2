"""Rate limits on sign-up and login, with the `limits` library (memory by default)."""

from __future__ import annotations

import hashlib
import math
import time

from limits import parse
from limits.storage import MemoryStorage, Storage, storage_from_string
from limits.strategies import MovingWindowRateLimiter

from reelm.accounts.errors import RateLimited


def _digest(key: str) -> str:
    """Keys are hashed first: client addresses and identifiers never sit in the limiter's
    storage in clear."""
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def _refusal(wait: float) -> RateLimited:
    seconds = max(1, math.ceil(wait))
    return RateLimited(f"too many attempts; try again in {seconds} s", retry_after=seconds)


class RateLimits:
    def __init__(self, rules: dict[str, str], storage_uri: str | None = None) -> None:
        storage = storage_from_string(storage_uri) if storage_uri else MemoryStorage()
        if not isinstance(storage, Storage):
            raise ValueError(f"{storage_uri}: an asynchronous storage; use a synchronous one")
        self._storage = storage
        self._limiter = MovingWindowRateLimiter(self._storage)
        self._rules = {name: parse(rule) for name, rule in rules.items()}

    def hit(self, name: str, *keys: str) -> None:
        """Count one attempt for each key; raise RateLimited when any is over its limit."""
        rule = self._rules[name]
        for key in keys:
            digest = _digest(key)
            if not self._limiter.hit(rule, name, digest):
                reset = self._limiter.get_window_stats(rule, name, digest).reset_time
                raise _refusal(reset - time.time())

    def back_off(self, name: str, key: str, *, free: int, longest: int, memory: int) -> None:
        """Admit an attempt, or raise RateLimited: the first `free` attempts within `memory`
        seconds (counted from the first) pass at once; after that each attempt closes the way
        for 2 s, then 4 s, 8 s... up to `longest`.

        Atomic with any storage `limits` offers (two increments): of parallel attempts at an
        open way, exactly one creates the closing key and passes. Refused attempts are not
        counted, so hammering a closed way does not lengthen the wait."""
        digest = _digest(key)
        count_key, closed_key = f"{name}/n/{digest}", f"{name}/closed/{digest}"
        attempts = self._storage.incr(count_key, memory)
        if attempts <= free:
            return
        wait = min(2 ** (attempts - free), longest)
        if self._storage.incr(closed_key, wait) == 1:
            return
        self._storage.incr(count_key, memory, amount=-1)
        raise _refusal(self._storage.get_expiry(closed_key) - time.time())
