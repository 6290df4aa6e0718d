"""The ledger's Merkle tree (RFC 9162, section 2.1): what it commits to, its root, and
inclusion and consistency proofs.

Leaf n (0-based) is the event with sequence n + 1. Its leaf data is exactly what the
hash chain commits to for that event:

    leaf data = sequence as 8 bytes, big-endian || the 32 bytes of its content digest
    leaf hash = SHA-256(0x00 || leaf data)
    node hash = SHA-256(0x01 || left || right)

and an empty tree's root is SHA-256 of nothing. An erased event keeps its sequence and
digest, so its leaf (and every proof through it) is unchanged.

Plain bytes and callables only: the same code works on the stored tree and on hashes
recomputed from an export. The bundle's standalone verify.py re-implements these few
lines on purpose (it must not import the project).
"""

import hashlib
from collections.abc import Callable, Sequence

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

# A complete subtree's hash: (level, index) -> hash of leaves [index * 2**level,
# (index + 1) * 2**level).
NodeReader = Callable[[int, int], bytes]


def leaf_data(sequence: int, content_digest: str) -> bytes:
    digest = bytes.fromhex(content_digest)
    if len(digest) != HASH_SIZE or not 0 < sequence < 1 << 64:
        raise ValueError(f"no leaf for sequence {sequence} with digest {content_digest!r}")
    return sequence.to_bytes(8, "big") + digest


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def event_leaf_hash(sequence: int, content_digest: str) -> bytes:
    return leaf_hash(leaf_data(sequence, content_digest))


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def fold_right(hashes: Sequence[bytes]) -> bytes:
    """The root over complete subtrees given left to right, each smaller than the one
    before (how RFC 9162 splits a tree whose size is not a power of two)."""
    if not hashes:
        return EMPTY_ROOT
    root = hashes[-1]
    for left in reversed(hashes[:-1]):
        root = node_hash(left, root)
    return root


def subtree_root(hashes: Sequence[bytes]) -> bytes:
    """The root of a complete subtree from its 2**k bottom hashes."""
    level = list(hashes)
    while len(level) > 1:
        level = [node_hash(level[i], level[i + 1]) for i in range(0, len(level), 2)]
    return level[0]


class RootBuilder:
    """The root of the first n leaves, fed one leaf at a time: only the hashes of the
    at most log2(n) complete subtrees at the right edge are kept."""

    def __init__(self) -> None:
        self.size = 0
        self._edge: list[bytes] = []

    @classmethod
    def from_edge(cls, size: int, edge: Sequence[bytes]) -> "RootBuilder":
        """Carry on from a tree of `size` leaves, given the roots of the complete
        subtrees it splits into, left to right (one per bit set in `size`)."""
        if len(edge) != size.bit_count():
            raise ValueError(f"a tree of size {size} has {size.bit_count()} edge subtrees")
        builder = cls()
        builder.size, builder._edge = size, list(edge)
        return builder

    def push(self, leaf: bytes) -> None:
        self._edge.append(leaf)
        self.size += 1
        size = self.size
        while size % 2 == 0:
            right = self._edge.pop()
            self._edge[-1] = node_hash(self._edge[-1], right)
            size //= 2

    def root(self) -> bytes:
        return fold_right(self._edge)


def _split(size: int) -> int:
    """The largest power of two smaller than size (size > 1)."""
    return 1 << ((size - 1).bit_length() - 1)


def range_root(start: int, end: int, node: NodeReader) -> bytes:
    """MTH(D[start:end]) for the ranges RFC 9162's proofs visit: `start` is a multiple of
    the smallest power of two >= end - start, so the range splits into complete subtrees."""
    hashes = []
    while start < end:
        level = (end - start).bit_length() - 1
        hashes.append(node(level, start >> level))
        start += 1 << level
    return fold_right(hashes)


def inclusion_proof(index: int, size: int, node: NodeReader) -> list[bytes]:
    """PATH(index, D[size]) of RFC 9162 2.1.3.1, bottom-up."""
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} is not in a tree of size {size}")
    proof = []
    start, end = 0, size
    while end - start > 1:
        k = _split(end - start)
        if index < start + k:
            proof.append(range_root(start + k, end, node))
            end = start + k
        else:
            proof.append(range_root(start, start + k, node))
            start += k
    proof.reverse()
    return proof


def consistency_proof(old: int, new: int, node: NodeReader) -> list[bytes]:
    """PROOF(old, D[new]) of RFC 9162 2.1.4.1 (empty when old is 0 or equals new)."""
    if not 0 <= old <= new:
        raise ValueError(f"no consistency proof from size {old} to size {new}")
    if old in (0, new):
        return []
    proof = []
    start, end, m, whole = 0, new, old, True
    while True:
        n = end - start
        if m == n:
            if not whole:
                proof.append(range_root(start, end, node))
            break
        k = _split(n)
        if m <= k:
            proof.append(range_root(start + k, end, node))
            end = start + k
        else:
            proof.append(range_root(start, start + k, node))
            start += k
            m -= k
            whole = False
    proof.reverse()
    return proof


def verify_inclusion(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes
) -> bool:
    """RFC 9162 2.1.3.2."""
    if not 0 <= index < size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(
    old: int, new: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """RFC 9162 2.1.4.2 (an empty old tree is consistent with every tree)."""
    if not 0 <= old <= new:
        return False
    if old == 0:
        return not proof and old_root == EMPTY_ROOT
    if old == new:
        return not proof and old_root == new_root
    if not proof:
        return False
    path = list(proof)
    if old & (old - 1) == 0:
        path.insert(0, old_root)
    fn, sn = old - 1, new - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == old_root and sr == new_root and sn == 0
