"""Verification of reelm's transparency logs: RFC 9162 Merkle hashing and proofs, and C2SP
signed-note checkpoints (Ed25519).

This module is the whole trusted base of an independent verifier: it imports only the standard
library and ``cryptography``, so an auditor can read it in one sitting and run it without the
rest of reelm.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

HASH_SIZE = 32
ALG_ED25519 = 0x01


class VerificationError(Exception):
    """A proof, checkpoint or signature does not verify."""


# ---- RFC 9162 section 2.1: hashing ------------------------------------------------------


def leaf_hash(entry: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


EMPTY_ROOT = hashlib.sha256(b"").digest()


def _largest_power_of_two_below(n: int) -> int:
    """k such that k < n <= 2k, k a power of two (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


def root_from_leaves(hashes: Sequence[bytes]) -> bytes:
    """MTH(D[n]) from leaf hashes, per RFC 9162 2.1.1 (reference implementation, O(n))."""
    n = len(hashes)
    if n == 0:
        return EMPTY_ROOT
    if n == 1:
        return hashes[0]
    k = _largest_power_of_two_below(n)
    return node_hash(root_from_leaves(hashes[:k]), root_from_leaves(hashes[k:]))


# ---- a compact range: the tree of n leaves as the roots of its full subtrees -----------------
#
# The roots of the perfect subtrees that make up [0, n), largest first (one per set bit of n):
# enough to append leaves and compute every later root, in O(log n) space. An auditor keeps it
# between runs, so it re-hashes each entry once, and all of them.


def extend_range(frontier: Sequence[bytes], size: int, leaves: Sequence[bytes]) -> list[bytes]:
    """The compact range of ``size + len(leaves)`` leaves, from that of ``size`` leaves."""
    if len(frontier) != size.bit_count():
        raise VerificationError(f"a compact range of {size} leaves has {size.bit_count()} hashes")
    out = list(frontier)
    for leaf in leaves:
        out.append(leaf)
        size += 1
        # Each trailing one bit of the old size is a pair of equal subtrees to merge.
        merges = (size & -size).bit_length() - 1
        for _ in range(merges):
            right = out.pop()
            out.append(node_hash(out.pop(), right))
    return out


def range_root(frontier: Sequence[bytes]) -> bytes:
    """MTH of the tree whose compact range this is (RFC 9162: fold from the right)."""
    if not frontier:
        return EMPTY_ROOT
    root = frontier[-1]
    for left in reversed(frontier[:-1]):
        root = node_hash(left, root)
    return root


# ---- RFC 9162 2.1.3.2: verifying an inclusion proof -----------------------------------------


def _inclusion_length(index: int, size: int) -> int:
    """The exact number of hashes in PATH(index, D[size]): the levels where the paths to
    ``index`` and to the last leaf part (inner), plus the full subtrees to the left above them."""
    inner = (index ^ (size - 1)).bit_length()
    return inner + bin(index >> inner).count("1")


def _consistency_length(size1: int, size2: int) -> int:
    level = (size1 & -size1).bit_length() - 1  # trailing zero bits of size1
    index = (size1 - 1) >> level
    length = _inclusion_length(index, ((size2 - 1) >> level) + 1)
    return length if index == 0 else length + 1


def verify_inclusion(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes
) -> None:
    """Raise VerificationError unless ``leaf`` is at ``index`` in the tree of ``size``/``root``."""
    if not 0 <= index < size:
        raise VerificationError(f"index {index} is outside a tree of size {size}")
    if any(len(p) != HASH_SIZE for p in proof):
        raise VerificationError("proof hashes must be 32 bytes")
    if len(proof) != _inclusion_length(index, size):
        raise VerificationError(
            f"an inclusion proof of {index} in {size} has {_inclusion_length(index, size)} "
            f"hashes, not {len(proof)}"
        )
    fn, sn = index, size - 1
    r = leaf
    for p in proof:
        if sn == 0:
            raise VerificationError("inclusion proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise VerificationError("inclusion proof is shorter than the tree is deep")
    if r != root:
        raise VerificationError("inclusion proof does not lead to the root")


# ---- RFC 9162 2.1.4.2: verifying a consistency proof ---------------------------------------


def verify_consistency(
    size1: int, size2: int, root1: bytes, root2: bytes, proof: Sequence[bytes]
) -> None:
    """Raise VerificationError unless the tree (size2, root2) extends (size1, root1)."""
    if not 0 <= size1 <= size2:
        raise VerificationError(f"size {size1} cannot precede size {size2}")
    if any(len(p) != HASH_SIZE for p in proof):
        raise VerificationError("proof hashes must be 32 bytes")
    if size1 == size2:
        if proof:
            raise VerificationError("a proof between equal sizes must be empty")
        if root1 != root2:
            raise VerificationError("same size, different roots: the log has forked")
        return
    if size1 == 0:
        if proof:
            raise VerificationError("a proof from the empty tree must be empty")
        return
    if not proof:
        raise VerificationError("empty consistency proof")
    # Checking the length first also closes the known verifier bug of accepting a proof
    # with hashes left over; the loop below checks it again on its own.
    expected = _consistency_length(size1, size2)
    if len(proof) != expected:
        raise VerificationError(
            f"a consistency proof from {size1} to {size2} has {expected} hashes, not {len(proof)}"
        )
    path = list(proof)
    if size1 & (size1 - 1) == 0:  # size1 is a power of two: its root is the first node
        path.insert(0, root1)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            # The known verifier bug: a proof with hashes left over must fail, not pass.
            raise VerificationError("consistency proof is longer than needed")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise VerificationError("consistency proof does not reach the second tree's root")
    if fr != root1:
        raise VerificationError("consistency proof does not match the first root")
    if sr != root2:
        raise VerificationError("consistency proof does not match the second root")


# ---- C2SP signed note and tlog-checkpoint ---------------------------------------------------


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def body(self) -> bytes:
        lines = [
            self.origin,
            str(self.size),
            base64.b64encode(self.root).decode(),
            *self.extensions,
        ]
        return ("\n".join(lines) + "\n").encode()


def key_id(name: str, public_key: bytes) -> bytes:
    """C2SP signed-note key ID: SHA-256(name || 0x0A || alg || key)[:4]."""
    return hashlib.sha256(name.encode() + b"\n" + bytes([ALG_ED25519]) + public_key).digest()[:4]


@dataclass(frozen=True)
class VerifierKey:
    """A note verifier key, in its text form ``<name>+<hex key id>+<base64(alg || key)>``."""

    name: str
    public_key: bytes

    @classmethod
    def parse(cls, text: str) -> VerifierKey:
        try:
            name, hex_id, b64 = text.strip().split("+", 2)
            raw = base64.b64decode(b64, validate=True)
        except ValueError as exc:
            raise VerificationError(f"malformed verifier key: {exc}") from None
        if len(raw) != 33 or raw[0] != ALG_ED25519:
            raise VerificationError("verifier key is not an Ed25519 key")
        key = cls(name, raw[1:])
        if key_id(name, key.public_key).hex() != hex_id:
            raise VerificationError("verifier key id does not match its name and key")
        return key

    def __str__(self) -> str:
        raw = bytes([ALG_ED25519]) + self.public_key
        return (
            f"{self.name}+{key_id(self.name, self.public_key).hex()}+"
            + base64.b64encode(raw).decode()
        )


def parse_checkpoint_body(body: bytes) -> Checkpoint:
    try:
        text = body.decode()
    except UnicodeDecodeError:
        raise VerificationError("checkpoint is not UTF-8") from None
    if not text.endswith("\n"):
        raise VerificationError("checkpoint body must end with a newline")
    lines = text[:-1].split("\n")
    if len(lines) < 3:
        raise VerificationError("checkpoint needs origin, size and root")
    origin, size_text, root_b64 = lines[0], lines[1], lines[2]
    if not origin or not re.fullmatch(r"0|[1-9][0-9]{0,19}", size_text, re.ASCII):
        raise VerificationError("malformed checkpoint origin or size")
    if any(not line for line in lines[3:]) or any(ord(ch) < 0x20 for line in lines for ch in line):
        raise VerificationError("checkpoint has an empty extension line or a control character")
    try:
        root = base64.b64decode(root_b64, validate=True)
    except ValueError:
        raise VerificationError("checkpoint root is not base64") from None
    if len(root) != HASH_SIZE:
        raise VerificationError("checkpoint root is not 32 bytes")
    return Checkpoint(origin, int(size_text), root, tuple(lines[3:]))


def open_note(note: str | bytes, key: VerifierKey) -> Checkpoint:
    """Check a signed note's signature by ``key`` and return its checkpoint."""
    data = note.encode() if isinstance(note, str) else note
    sep = data.rfind(b"\n\n")
    if sep < 0:
        raise VerificationError("signed note has no signature block")
    body, signatures = data[: sep + 1], data[sep + 2 :].decode(errors="replace")
    wanted = key_id(key.name, key.public_key)
    for line in signatures.splitlines():
        if not line.startswith("\u2014 "):
            raise VerificationError("malformed signature line")
        try:
            name, b64 = line[2:].split(" ")
            raw = base64.b64decode(b64, validate=True)
        except ValueError:
            raise VerificationError("malformed signature line") from None
        if name != key.name or raw[:4] != wanted:
            continue  # another signer (a witness cosignature, say)
        try:
            Ed25519PublicKey.from_public_bytes(key.public_key).verify(raw[4:], body)
        except InvalidSignature:
            raise VerificationError("checkpoint signature does not verify") from None
        checkpoint = parse_checkpoint_body(body)
        if checkpoint.origin != key.name:
            raise VerificationError("checkpoint origin does not match the log's key name")
        return checkpoint
    raise VerificationError(f"no signature by {key.name} on this checkpoint")
