"""HTTP message signatures (RFC 9421) between cells, with the cells' Ed25519 identity keys.

The library ``http-message-signatures`` builds the signature base and checks it; this module
fixes what every inter-cell request covers and what a receiver insists on:

- covered components: ``@method``, ``@path``, ``content-type`` and ``content-digest``
  (RFC 9530, SHA-256 of the body, checked against the bytes received);
- parameters: ``created`` (refused when older than the window, or in the future beyond the
  library's 5 s of skew), ``keyid`` (the sending region, which must be a configured peer),
  ``nonce`` (random per attempt; the receiver refuses one it has seen), ``alg`` and the
  application ``tag`` ``reelm-cell/1`` (a signature made for anything else is not accepted).

The host is not covered: a cell behind a proxy sees another authority than the sender dialled.
What binds a request to its destination is the body's ``to`` region, under the digest.
"""

from __future__ import annotations

import datetime
import secrets
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from http_message_signatures import (
    HTTPMessageSignaturesException,
    HTTPMessageSigner,
    HTTPMessageVerifier,
    HTTPSignatureKeyResolver,
    InvalidSignature,
    algorithms,
)

TAG = "reelm-cell/1"
LABEL = "reelm"
COVERED = ("@method", "@path", "content-type")
REQUIRED = ("@method", "@path", "content-type", "content-digest")
CONTENT_TYPE = "application/json"
WINDOW_SECONDS = 300


class Refused(Exception):
    """A request this cell does not accept: ``status`` and a short public ``reason`` code
    (no personal data: it goes to the logs and back to the sender)."""

    def __init__(self, status: int, reason: str, detail: str, claimed: str | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.reason = reason
        self.detail = detail
        self.claimed = claimed  # the key id the request named, if any


@dataclass
class _Lines:
    """Header field lines, repeated ones kept apart (what the library reads and writes)."""

    lines: list[tuple[str, str]] = field(default_factory=list)

    def items(self) -> Iterable[tuple[str, str]]:
        return list(self.lines)

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys(name for name, _ in self.lines))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and any(n.lower() == name.lower() for n, _ in self.lines)

    def __getitem__(self, name: str) -> str:
        values = [v for n, v in self.lines if n.lower() == name.lower()]
        if not values:
            raise KeyError(name)
        return ", ".join(values)

    def __setitem__(self, name: str, value: str) -> None:
        self.__delitem__(name)
        self.lines.append((name, value))

    def __delitem__(self, name: str) -> None:
        self.lines = [(n, v) for n, v in self.lines if n.lower() != name.lower()]


@dataclass
class _Message:
    method: str
    url: str
    headers: _Lines


class _Keys(HTTPSignatureKeyResolver):
    def __init__(
        self,
        private: Ed25519PrivateKey | None = None,
        public: Mapping[str, Ed25519PublicKey] | None = None,
    ) -> None:
        self.private = private
        self.public = dict(public or {})
        self.asked: str | None = None

    def resolve_private_key(self, key_id: str) -> Ed25519PrivateKey:
        if self.private is None:
            raise KeyError(key_id)
        return self.private

    def resolve_public_key(self, key_id: str) -> Ed25519PublicKey | None:
        self.asked = key_id
        return self.public.get(key_id)


def sign(
    key: Ed25519PrivateKey,
    region: str,
    method: str,
    url: str,
    body: bytes,
    *,
    created: datetime.datetime | None = None,
    nonce: str | None = None,
) -> dict[str, str]:
    """The headers of a signed request from ``region``'s cell: Content-Type, Content-Digest,
    Signature-Input and Signature."""
    message = _Message(method, url, _Lines([("Content-Type", CONTENT_TYPE)]))
    signer = HTTPMessageSigner(signature_algorithm=algorithms.ED25519, key_resolver=_Keys(key))
    signer.sign(
        message,
        key_id=region,
        created=created or datetime.datetime.now(datetime.UTC),
        nonce=nonce or secrets.token_urlsafe(24),
        tag=TAG,
        label=LABEL,
        covered_component_ids=COVERED,
        body=body,
    )
    return dict(message.headers.lines)


@dataclass(frozen=True)
class Verified:
    region: str  # the sending cell (the key id whose key verified the signature)
    nonce: str
    created: datetime.datetime


def verify(
    headers: Iterable[tuple[str, str]],
    method: str,
    url: str,
    body: bytes,
    peers: Mapping[str, Ed25519PublicKey],
    *,
    window: int = WINDOW_SECONDS,
) -> Verified:
    """Who signed this request, or Refused (401) when it is not a fresh, intact request signed
    by a configured peer. The nonce's novelty is the caller's check (it needs the database)."""
    keys = _Keys(public=peers)
    verifier = HTTPMessageVerifier(signature_algorithm=algorithms.ED25519, key_resolver=keys)
    message = _Message(method, url, _Lines(list(headers)))
    try:
        results: list[Any] = verifier.verify(
            message,
            max_age=datetime.timedelta(seconds=window),
            expect_tag=TAG,
            require_components=REQUIRED,
            body=body,
        )
    except (InvalidSignature, HTTPMessageSignaturesException) as exc:
        if keys.asked is not None and keys.asked not in peers:
            raise Refused(
                401, "unknown-cell", "the key id names no configured peer", keys.asked
            ) from None
        raise Refused(401, "bad-signature", f"signature refused: {exc}", keys.asked) from None
    params = results[0].parameters
    nonce = params.get("nonce")
    if not isinstance(nonce, str) or not 16 <= len(nonce) <= 64:
        raise Refused(401, "bad-signature", "the signature carries no usable nonce", keys.asked)
    return Verified(
        region=str(params["keyid"]),
        nonce=nonce,
        created=datetime.datetime.fromtimestamp(int(params["created"]), datetime.UTC),
    )
