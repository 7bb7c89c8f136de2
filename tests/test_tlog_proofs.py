"""RFC 9162 hashing and proofs (pure logic): published vectors, every small tree, random
large trees, and the forgeries a verifier must reject."""

from __future__ import annotations

import random
from functools import cache

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from reelm.transparency import merkle
from reelm.transparency.verify import (
    Checkpoint,
    VerificationError,
    VerifierKey,
    leaf_hash,
    node_hash,
    open_note,
    root_from_leaves,
    verify_consistency,
    verify_inclusion,
)

# RFC 6962 reference data (the Certificate Transparency test vectors): leaves, then the root
# for each tree size 0..8, an inclusion proof and a consistency proof.
LEAVES = [
    bytes.fromhex(h)
    for h in [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
]
ROOTS = [
    bytes.fromhex(h)
    for h in [
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ]
]
INCLUSION_0_OF_8 = [
    bytes.fromhex(h)
    for h in [
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ]
]
INCLUSION_5_OF_8 = [
    bytes.fromhex(h)
    for h in [
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ]
]
CONSISTENCY_2_TO_8 = [
    bytes.fromhex(h)
    for h in [
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ]
]


def _tree(leaves: list[bytes]) -> merkle.Lookup:
    nodes: dict[merkle.Node, bytes] = {}
    nodes.update(merkle.new_nodes(0, leaves, lambda lv, ix: nodes[(lv, ix)]))
    return merkle.with_nodes(nodes)


def test_published_vectors() -> None:
    hashes = [leaf_hash(x) for x in LEAVES]
    for size in range(9):
        assert root_from_leaves(hashes[:size]) == ROOTS[size]
    look = _tree(hashes)
    assert merkle.inclusion_path(0, 8, look) == INCLUSION_0_OF_8
    assert merkle.inclusion_path(5, 8, look) == INCLUSION_5_OF_8
    assert merkle.consistency_path(2, 8, look) == CONSISTENCY_2_TO_8
    verify_inclusion(0, 8, hashes[0], INCLUSION_0_OF_8, ROOTS[8])
    verify_inclusion(5, 8, hashes[5], INCLUSION_5_OF_8, ROOTS[8])
    verify_consistency(2, 8, ROOTS[2], ROOTS[8], CONSISTENCY_2_TO_8)


def test_incremental_nodes_match_one_batch() -> None:
    leaves = [leaf_hash(i.to_bytes(2, "big")) for i in range(300)]
    stepwise: dict[merkle.Node, bytes] = {}
    rng = random.Random(7)
    start = 0
    while start < len(leaves):
        batch = leaves[start : start + rng.randint(1, 9)]
        stepwise.update(merkle.new_nodes(start, batch, lambda lv, ix: stepwise[(lv, ix)]))
        start += len(batch)
    whole: dict[merkle.Node, bytes] = {}
    whole.update(merkle.new_nodes(0, leaves, lambda lv, ix: whole[(lv, ix)]))
    assert stepwise == whole


def test_every_proof_of_every_small_tree() -> None:
    leaves = [leaf_hash(i.to_bytes(2, "big")) for i in range(140)]
    look = _tree(leaves)
    roots = [root_from_leaves(leaves[:n]) for n in range(len(leaves) + 1)]
    for n in range(1, len(leaves) + 1):
        for i in range(n):
            verify_inclusion(i, n, leaves[i], merkle.inclusion_path(i, n, look), roots[n])
        for m in range(n + 1):
            verify_consistency(m, n, roots[m], roots[n], merkle.consistency_path(m, n, look))


def test_proofs_in_larger_trees_up_to_a_few_hundred() -> None:
    leaves = [leaf_hash(i.to_bytes(2, "big")) for i in range(400)]
    look = _tree(leaves)
    rng = random.Random(11)
    for n in range(141, 401):
        root = root_from_leaves(leaves[:n])
        for i in {0, n - 1, rng.randrange(n)}:
            verify_inclusion(i, n, leaves[i], merkle.inclusion_path(i, n, look), root)
        m = rng.randrange(1, n + 1)
        verify_consistency(
            m, n, root_from_leaves(leaves[:m]), root, merkle.consistency_path(m, n, look)
        )


def test_random_proofs_in_trees_of_millions() -> None:
    """Leaves are computed on demand; node hashes are memoised, so ~4M hashes at most."""

    @cache
    def node(level: int, index: int) -> bytes:
        if level == 0:
            return leaf_hash(index.to_bytes(8, "big"))
        return node_hash(node(level - 1, 2 * index), node(level - 1, 2 * index + 1))

    rng = random.Random(2026)
    for _ in range(12):
        n = rng.randrange(1_000_000, 2_100_000)
        m = rng.randrange(1, n)
        root_n = merkle.range_hash(0, n, node)
        root_m = merkle.range_hash(0, m, node)
        i = rng.randrange(n)
        verify_inclusion(i, n, node(0, i), merkle.inclusion_path(i, n, node), root_n)
        proof = merkle.consistency_path(m, n, node)
        verify_consistency(m, n, root_m, root_n, proof)
        # The same proof presented for the neighbouring true checkpoints does not verify.
        root_next = merkle.range_hash(0, n + 1, node)
        with pytest.raises(VerificationError):
            verify_consistency(m, n + 1, root_m, root_next, proof)
        with pytest.raises(VerificationError):
            verify_consistency(m + 1, n, merkle.range_hash(0, m + 1, node), root_n, proof)


# ---- forgeries -------------------------------------------------------------------------

LEAVES_64 = [leaf_hash(i.to_bytes(2, "big")) for i in range(64)]
LOOK_64 = _tree(LEAVES_64)
ROOTS_64 = [root_from_leaves(LEAVES_64[:n]) for n in range(65)]


def test_tampered_entry_fails_inclusion() -> None:
    proof = merkle.inclusion_path(9, 40, LOOK_64)
    with pytest.raises(VerificationError):
        verify_inclusion(9, 40, leaf_hash(b"forged"), proof, ROOTS_64[40])
    for bad_index, bad_size in [(8, 40), (10, 40), (9, 41), (9, 39), (40, 40), (-1, 40)]:
        # The true root of the claimed size: a proof for one position fits no other.
        root = ROOTS_64[bad_size] if 0 < bad_size <= 64 else ROOTS_64[40]
        with pytest.raises(VerificationError):
            verify_inclusion(bad_index, bad_size, LEAVES_64[9], proof, root)
    with pytest.raises(VerificationError):
        verify_inclusion(9, 40, LEAVES_64[9], [*proof, proof[0]], ROOTS_64[40])
    with pytest.raises(VerificationError):
        verify_inclusion(9, 40, LEAVES_64[9], proof[:-1], ROOTS_64[40])
    with pytest.raises(VerificationError):
        verify_inclusion(9, 40, LEAVES_64[9], [*proof[:-1], b"\x00" * 32], ROOTS_64[40])


def test_reordered_entries_change_the_root() -> None:
    swapped = list(LEAVES_64[:40])
    swapped[3], swapped[4] = swapped[4], swapped[3]
    assert root_from_leaves(swapped) != ROOTS_64[40]
    proof = merkle.inclusion_path(3, 40, _tree(swapped))
    with pytest.raises(VerificationError):
        verify_inclusion(3, 40, LEAVES_64[4], proof, ROOTS_64[40])


def test_forked_log_is_detected() -> None:
    fork = list(LEAVES_64[:50])
    fork[45] = leaf_hash(b"the other history")
    fork_root = root_from_leaves(fork)
    with pytest.raises(VerificationError, match="forked"):
        verify_consistency(50, 50, ROOTS_64[50], fork_root, [])
    # A proof from the honest checkpoint to the fork's does not verify.
    fork_look = _tree(fork + LEAVES_64[50:60])
    fork_60 = root_from_leaves(fork + LEAVES_64[50:60])
    with pytest.raises(VerificationError):
        verify_consistency(
            50, 60, ROOTS_64[50], fork_60, merkle.consistency_path(50, 60, fork_look)
        )


def test_rollback_and_wrong_sizes_are_rejected() -> None:
    proof = merkle.consistency_path(20, 50, LOOK_64)
    with pytest.raises(VerificationError):
        verify_consistency(50, 20, ROOTS_64[50], ROOTS_64[20], proof)  # rollback
    for m, n in [(21, 50), (19, 50), (20, 51), (20, 49)]:
        with pytest.raises(VerificationError):
            verify_consistency(m, n, ROOTS_64[m], ROOTS_64[n], proof)
    with pytest.raises(VerificationError):
        verify_consistency(20, 50, ROOTS_64[20], ROOTS_64[50], [])


def test_proof_must_consume_exactly_the_second_tree() -> None:
    """The known verifier bug: accepting a proof with hashes left over after sn reaches 0."""
    for m, n in [(4, 8), (6, 8), (20, 50), (32, 64), (1, 2)]:
        proof = merkle.consistency_path(m, n, LOOK_64)
        verify_consistency(m, n, ROOTS_64[m], ROOTS_64[n], proof)
        with pytest.raises(VerificationError):
            verify_consistency(m, n, ROOTS_64[m], ROOTS_64[n], [*proof, LEAVES_64[0]])
        with pytest.raises(VerificationError):
            verify_consistency(m, n, ROOTS_64[m], ROOTS_64[n], proof[:-1])


# ---- signed notes -----------------------------------------------------------------------


def _key(name: str) -> tuple[Ed25519PrivateKey, VerifierKey]:
    private = Ed25519PrivateKey.generate()
    public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return private, VerifierKey(name, public)


def _note(private: Ed25519PrivateKey, key: VerifierKey, cp: Checkpoint) -> str:
    import base64

    from reelm.transparency.verify import key_id

    body = cp.body()
    sig = base64.b64encode(key_id(key.name, key.public_key) + private.sign(body)).decode()
    return body.decode() + "\n" + f"\u2014 {key.name} {sig}\n"


def test_signed_note_round_trip_and_forgeries() -> None:
    private, key = _key("reelm.example/us")
    assert VerifierKey.parse(str(key)) == key
    cp = Checkpoint("reelm.example/us", 40, ROOTS_64[40])
    note = _note(private, key, cp)
    assert open_note(note, key) == cp
    with pytest.raises(VerificationError):
        open_note(note.replace("\n40\n", "\n41\n"), key)  # body changed after signing
    other_private, other_key = _key("reelm.example/us")
    with pytest.raises(VerificationError):
        open_note(note, other_key)  # same name, other key: its signature is not there
    with pytest.raises(VerificationError):
        open_note(_note(other_private, key, cp), key)  # claims our key id, wrong signature
    with pytest.raises(VerificationError):
        open_note("not a note", key)
    wrong_origin = _note(private, key, Checkpoint("reelm.example/sg", 40, ROOTS_64[40]))
    with pytest.raises(VerificationError, match="origin"):
        open_note(wrong_origin, key)
    with pytest.raises(VerificationError):
        VerifierKey.parse(str(key).replace("+", "+0", 1))


@pytest.mark.parametrize("size", ["١٢", "²", "012", "-1", "1e3", "12 "])
def test_checkpoint_size_must_be_plain_ascii_digits(size: str) -> None:
    from reelm.transparency.verify import parse_checkpoint_body

    body = f"reelm.example/us\n{size}\n{'A' * 43}=\n".encode()
    with pytest.raises(VerificationError):
        parse_checkpoint_body(body)


def test_login_rate_limit_key_ignores_spelling() -> None:
    from reelm.accounts.service import identity_key

    assert len({identity_key(x) for x in ["alice", "ALICE", "@alice", "ａｌｉｃｅ", "a1ice"]}) == 1
    assert identity_key("Alice@Example.com") == identity_key("alice@example.com")
