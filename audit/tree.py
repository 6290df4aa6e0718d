"""The stored Merkle tree: tiles extended when a checkpoint is made, and every node,
root and proof read back from them.

Recording an event never touches the tree (it is the hot path of every webhook turn);
`tree_extend` hashes only the events after the previous checkpoint. Tiles follow
c2sp.org/tlog-tiles: tile (L, n) holds, 32 bytes each, the hashes of the complete
subtrees at tree level 8L with indexes 256n, 256n + 1, ... (up to 256 of them). Any
node is one of these hashes or the root over at most 128 of them in one tile, so a root
or a proof at a million events reads a few rows, and extending the tree keeps at most
256 hashes per tile level in memory.
"""

from collections.abc import Iterator
from dataclasses import dataclass

from django.db import transaction

from audit import merkle
from audit.integrity import GENESIS_HASH, chain_hash
from audit.models import AuditTreeTile
from audit.selectors import chain_links, event_hash

TILE_HEIGHT = 8
TILE_WIDTH = 1 << TILE_HEIGHT
H = merkle.HASH_SIZE
# Full tiles written per INSERT: ~0.5 MB of hashes.
FLUSH_TILES = 64
# Tiles a reader keeps: 8 MiB at most, whatever the number of proofs it serves.
CACHE_TILES = 1024


class TreeUnavailableError(Exception):
    """The stored tree does not cover what was asked (no checkpoint that far yet, or
    its tiles are missing)."""


class ChainError(Exception):
    """The events to add to the tree do not form an unbroken chain."""


class TileReader:
    """Node hashes from the stored tiles. `overlay` holds tiles not stored yet."""

    def __init__(self, overlay: dict[tuple[int, int], bytes] | None = None) -> None:
        self._tiles: dict[tuple[int, int], bytes] = dict(overlay or {})

    def tile(self, level: int, number: int, need: int) -> bytes:
        """The first `need` hashes (or more) of tile (level, number)."""
        data = self._tiles.get((level, number))
        if data is None or len(data) < need * H:
            stored = (
                AuditTreeTile.objects.filter(level=level, number=number, width__gte=need)
                .order_by("-width")
                .values_list("hashes", flat=True)
                .first()
            )
            if stored is None:
                raise TreeUnavailableError(
                    f"the stored tree has no tile {level}/{number} with {need} hashes"
                )
            if len(self._tiles) >= CACHE_TILES:
                self._tiles.clear()
            data = self._tiles[(level, number)] = bytes(stored)
        return data

    def node(self, level: int, index: int) -> bytes:
        tile_level, height = divmod(level, TILE_HEIGHT)
        first = index << height
        number, offset = divmod(first, TILE_WIDTH)
        count = 1 << height
        data = self.tile(tile_level, number, offset + count)
        return merkle.subtree_root(
            [data[i * H : (i + 1) * H] for i in range(offset, offset + count)]
        )

    def root(self, size: int) -> bytes:
        return merkle.range_root(0, size, self.node)

    def edge(self, size: int) -> list[bytes]:
        """The complete subtrees the first `size` leaves split into, left to right."""
        hashes, start = [], 0
        for level in reversed(range(size.bit_length())):
            if size >> level & 1:
                hashes.append(self.node(level, start >> level))
                start += 1 << level
        return hashes

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        return merkle.inclusion_proof(index, size, self.node)

    def consistency_proof(self, old: int, new: int) -> list[bytes]:
        return merkle.consistency_proof(old, new, self.node)

    def leaf_hashes(self, size: int) -> Iterator[bytes]:
        """Leaf hashes 0..size-1 in order, one tile in memory at a time."""
        for number in range(0, (size + TILE_WIDTH - 1) // TILE_WIDTH):
            width = min(TILE_WIDTH, size - number * TILE_WIDTH)
            data = self.tile(0, number, width)
            self._tiles.pop((0, number), None)
            for i in range(width):
                yield data[i * H : (i + 1) * H]


@dataclass
class _Level:
    """The partial tile at one tile level while the tree grows: its number and the
    hashes it holds so far."""

    number: int
    hashes: list[bytes]


class _TileWriter:
    def __init__(self, levels: list[_Level]) -> None:
        self.levels = levels
        self.pending: list[AuditTreeTile] = []

    def push(self, level: int, node: bytes) -> None:
        if level == len(self.levels):
            self.levels.append(_Level(0, []))
        current = self.levels[level]
        current.hashes.append(node)
        if len(current.hashes) == TILE_WIDTH:
            self.pending.append(self._tile(level, current))
            parent = merkle.subtree_root(current.hashes)
            current.number, current.hashes = current.number + 1, []
            if len(self.pending) >= FLUSH_TILES:
                self.flush()
            self.push(level + 1, parent)

    @staticmethod
    def _tile(level: int, current: _Level) -> AuditTreeTile:
        return AuditTreeTile(
            level=level,
            number=current.number,
            width=len(current.hashes),
            hashes=b"".join(current.hashes),
        )

    def finish(self) -> None:
        """Store the partial tiles at the right edge, so every node up to this size
        can be read back."""
        for level, current in enumerate(self.levels):
            if current.hashes:
                self.pending.append(self._tile(level, current))
        self.flush()

    def flush(self) -> None:
        if self.pending:
            # The same tile always has the same bytes: a concurrent or repeated
            # extension inserting it again changes nothing.
            with transaction.atomic():
                AuditTreeTile.objects.bulk_create(self.pending, ignore_conflicts=True)
            self.pending = []


def _levels_at(size: int, reader: TileReader) -> list[_Level]:
    """The partial tiles at `size`, read back from the stored tiles."""
    levels = []
    level = 0
    while size >> (TILE_HEIGHT * level):
        count = size >> (TILE_HEIGHT * level)
        number, width = divmod(count, TILE_WIDTH)
        hashes = []
        if width:
            data = reader.tile(level, number, width)
            hashes = [data[i * H : (i + 1) * H] for i in range(width)]
        levels.append(_Level(number, hashes))
        level += 1
    return levels


def tree_extend(
    *, base_size: int, base_root: bytes, base_hash: str, size: int
) -> tuple[bytes, str]:
    """Store the tiles for events base_size+1..size and return the root at `size`.

    The base is the latest checkpoint: its tiles are stored, and what is read back of
    them must give its signed root, so a new checkpoint always extends the last one
    (c2sp.org/tlog-checkpoint: a log never signs two inconsistent checkpoints). When
    the stored tiles do not give that root, the tree is rebuilt from the events; if the
    events no longer give it either, the log was changed and nothing is signed.

    Events are streamed in chunks and checked link by link on the way (a gap or a
    broken link stops it), from the chain hash the base was made at, so memory stays
    flat whatever the number of events. Returns the root and the last chain hash."""
    if size < base_size:
        raise ChainError(
            f"the ledger holds {size} events, fewer than the {base_size} of the latest checkpoint"
        )
    start = base_size
    reader = TileReader()
    try:
        edge = reader.edge(base_size)
        if merkle.fold_right(edge) != base_root:
            raise TreeUnavailableError("the stored tree does not give the checkpoint's root")
        levels = _levels_at(base_size, reader)
    except TreeUnavailableError:
        start, edge, levels = 0, [], []
    builder = merkle.RootBuilder.from_edge(start, edge)
    writer = _TileWriter(levels)
    previous: str | None = event_hash(start) if start else GENESIS_HASH
    if start and previous != base_hash:
        raise ChainError(
            f"the events up to the latest checkpoint were changed: event {start}'s hash is "
            "not the one it had when that checkpoint was signed (run verify_audit --checkpoint)"
        )
    expected, link = start + 1, base_hash
    for sequence, digest, previous_hash, link in chain_links(after=start, upto=size):
        if sequence != expected:
            raise ChainError(f"sequence {expected} is missing (found {sequence} next)")
        if (
            previous_hash != previous
            or chain_hash(sequence=sequence, previous_hash=previous, digest=digest) != link
        ):
            raise ChainError(f"the hash chain is broken at sequence {sequence}")
        try:
            leaf = merkle.event_leaf_hash(sequence, digest)
        except ValueError:
            raise ChainError(f"sequence {sequence} has a malformed content digest") from None
        writer.push(0, leaf)
        builder.push(leaf)
        rebuilt_base = start == 0 and builder.size == base_size
        if rebuilt_base and (builder.root(), link) != (base_root, base_hash):
            raise ChainError(
                f"the first {base_size} events are no longer those of the latest "
                "checkpoint: the log was changed (run verify_audit --checkpoint)"
            )
        previous, expected = link, sequence + 1
    if expected != size + 1:
        raise ChainError(f"sequence {expected} is missing (the chain head is at {size})")
    writer.finish()
    return builder.root(), link
