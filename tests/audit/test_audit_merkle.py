import hashlib

import pytest

from gateway.audit import merkle


def leaves(n: int) -> list[bytes]:
    return [hashlib.sha256(str(i).encode()).digest() for i in range(n)]


@pytest.mark.parametrize("n", range(1, 40))
def test_root_is_rfc6962_tree_hash(n: int) -> None:
    assert merkle.root(leaves(n)) == merkle._root_recursive(leaves(n))


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 13, 31])
def test_every_leaf_proves_and_only_at_its_index(n: int) -> None:
    hs = leaves(n)
    root = merkle.root(hs)
    for i in range(n):
        proof = merkle.inclusion_proof(hs, i)
        assert merkle.verify_inclusion(hs[i], i, n, proof, root)
        for j in range(n):
            if j != i:
                assert not merkle.verify_inclusion(hs[i], j, n, proof, root)
        # (The tree size is not bound by the proof alone: receipts take it from the signed
        # checkpoint, see test_receipts.)
        assert not merkle.verify_inclusion(hashlib.sha256(b"x").digest(), i, n, proof, root)


def test_rfc6962_known_answer() -> None:
    # Two-leaf tree: MTH = SHA-256(0x01 || SHA-256(0x00 || a) || SHA-256(0x00 || b)).
    a, b = b"\x01" * 32, b"\x02" * 32
    expected = hashlib.sha256(b"\x01" + hashlib.sha256(b"\x00" + a).digest()
                              + hashlib.sha256(b"\x00" + b).digest()).digest()
    assert merkle.root([a, b]) == expected
