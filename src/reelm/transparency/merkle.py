"""Building RFC 9162 proofs from stored subtree hashes.

The log stores the hash of every *complete* subtree: node (level, index) covers leaves
[index * 2**level, (index + 1) * 2**level). Any range the RFC's recursion asks for decomposes
into at most ~2 log2(n) such nodes, so a proof costs one batched read of a few dozen hashes,
whatever the log's size.

Proof builders run twice: once with a recording lookup that learns which nodes are needed, and
once with the fetched hashes (see ``needed_nodes`` and ``with_nodes``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from reelm.transparency.verify import EMPTY_ROOT, node_hash

Node = tuple[int, int]  # (level, index)
Lookup = Callable[[int, int], bytes]


def _split(n: int) -> int:
    return 1 << ((n - 1).bit_length() - 1)


def range_hash(start: int, end: int, node: Lookup) -> bytes:
    """MTH of leaves [start, end), a range the RFC recursion produces (start aligned to it)."""
    size = end - start
    if size == 0:
        return EMPTY_ROOT
    if size & (size - 1) == 0 and start % size == 0:
        return node(size.bit_length() - 1, start // size)
    k = _split(size)
    return node_hash(range_hash(start, start + k, node), range_hash(start + k, end, node))


def inclusion_path(index: int, size: int, node: Lookup) -> list[bytes]:
    """PATH(index, D[size]), RFC 9162 2.1.3.1, leaf-to-root order."""
    if not 0 <= index < size:
        raise ValueError(f"index {index} is outside a tree of size {size}")
    path: list[bytes] = []
    start, end = 0, size
    while end - start > 1:
        k = _split(end - start)
        if index < start + k:
            path.append(range_hash(start + k, end, node))
            end = start + k
        else:
            path.append(range_hash(start, start + k, node))
            start += k
    path.reverse()
    return path


def consistency_path(size1: int, size2: int, node: Lookup) -> list[bytes]:
    """PROOF(size1, D[size2]), RFC 9162 2.1.4.1."""
    if not 0 <= size1 <= size2:
        raise ValueError(f"size {size1} cannot precede size {size2}")
    if size1 == 0 or size1 == size2:
        return []
    path: list[bytes] = []
    m, start, end, complete = size1, 0, size2, True
    while True:
        n = end - start
        if m == n:
            if not complete:
                path.append(range_hash(start, end, node))
            break
        k = _split(n)
        if m <= k:
            path.append(range_hash(start + k, end, node))
            end = start + k
        else:
            path.append(range_hash(start, start + k, node))
            m -= k
            start += k
            complete = False
    path.reverse()
    return path


def needed_nodes(build: Callable[[Lookup], object]) -> set[Node]:
    """Which stored nodes a proof builder reads (it is run on placeholder hashes)."""
    seen: set[Node] = set()

    def record(level: int, index: int) -> bytes:
        seen.add((level, index))
        return b"\x00" * 32

    build(record)
    return seen


def with_nodes(hashes: dict[Node, bytes]) -> Lookup:
    def lookup(level: int, index: int) -> bytes:
        return hashes[(level, index)]

    return lookup


def new_nodes(old_size: int, leaves: list[bytes], node: Lookup) -> dict[Node, bytes]:
    """The complete-subtree nodes that appending ``leaves`` to a tree of ``old_size`` creates.

    ``node`` looks up nodes that existed before (only left siblings on the old right edge are
    asked for)."""
    made: dict[Node, bytes] = {}
    new_size = old_size + len(leaves)
    for i, leaf in enumerate(leaves):
        made[(0, old_size + i)] = leaf
    level = 1
    while (1 << level) <= new_size:
        first = old_size >> level
        last = new_size >> level
        for index in range(first, last):
            children = []
            for child in (2 * index, 2 * index + 1):
                key = (level - 1, child)
                children.append(made[key] if key in made else node(*key))
            made[(level, index)] = node_hash(children[0], children[1])
        level += 1
    return made


def edge_nodes(size: int) -> Iterable[Node]:
    """The complete subtrees whose hashes give the root of a tree of ``size``."""
    start = 0
    for level in range(size.bit_length() - 1, -1, -1):
        if size & (1 << level):
            yield (level, start >> level)
            start += 1 << level
