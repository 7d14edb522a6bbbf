"""Merkle tree hash, inclusion proofs and their verification, as in RFC 6962 / RFC 9162.

Leaves are event hashes. ``leaf = SHA-256(0x00 || event_hash)``, ``node = SHA-256(0x01 ||
left || right)``; the split of ``n`` leaves is at the largest power of two below ``n``.
The prefixes keep a node from passing for a leaf; ``verify_inclusion`` is RFC 9162
§2.1.3.2, which also checks that the path length fits ``(index, size)``, so a proof for
one position cannot be replayed for another.

>>> leaves = [bytes([i]) * 32 for i in range(5)]
>>> verify_inclusion(leaves[3], 3, 5, inclusion_proof(leaves, 3), root(leaves))
True
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

_sha256 = hashlib.sha256


def leaf_hash(event_hash: bytes) -> bytes:
    return _sha256(b"\x00" + event_hash).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return _sha256(b"\x01" + left + right).digest()


def root(event_hashes: Sequence[bytes]) -> bytes:
    """Tree hash of a non-empty list, level by level.

    Pairing left to right and lifting an odd last node unchanged gives the same tree as
    RFC 6962's recursive split (tested against ``_root_recursive``), without recursion.
    """
    if not event_hashes:
        raise ValueError("a Merkle tree needs at least one leaf")
    level = [_sha256(b"\x00" + h).digest() for h in event_hashes]
    while len(level) > 1:
        paired = [_sha256(b"\x01" + level[i] + level[i + 1]).digest()
                  for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    return level[0]


def inclusion_proof(event_hashes: Sequence[bytes], index: int) -> list[bytes]:
    """RFC 6962 PATH(index, leaves): sibling hashes from the leaf up to the root."""
    if not 0 <= index < len(event_hashes):
        raise ValueError(f"leaf {index} is outside a tree of {len(event_hashes)}")
    level = [leaf_hash(h) for h in event_hashes]
    path: list[bytes] = []
    while len(level) > 1:
        sibling = index ^ 1
        if sibling < len(level):
            path.append(level[sibling])
        paired = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
        index //= 2
    return path


def verify_inclusion(event_hash: bytes, index: int, size: int, path: Sequence[bytes],
                     expected_root: bytes) -> bool:
    """RFC 9162 §2.1.3.2: does ``path`` lead from this leaf at ``index`` to ``expected_root``?"""
    if not 0 <= index < size:
        return False
    fn, sn = index, size - 1
    r = leaf_hash(event_hash)
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == expected_root


def _root_recursive(event_hashes: Sequence[bytes]) -> bytes:
    """RFC 6962 MTH, literally; the reference ``root`` is tested against."""
    n = len(event_hashes)
    if n == 1:
        return leaf_hash(event_hashes[0])
    k = 1 << ((n - 1).bit_length() - 1)
    return node_hash(_root_recursive(event_hashes[:k]), _root_recursive(event_hashes[k:]))
