"""Zone maps of the scan columns: per chunk, which kind of value a field holds, how many frames hold
one, and the lowest and highest of them (FORMAT.md, "Zone maps").

A fresh process answering ``meta.city == "frankfurt"`` on 10M frames would otherwise read the city
column of all 2,442 chunks, one random page each from a cold disk; from one entry per field and
million frames it reads only the chunks whose bounds can hold the value, as DuckDB's and Parquet's
min/max statistics do.
Rows are kept by writers in the transaction that stores the chunks (``columns._store``), so they are
derived data like the columns themselves; a CRC-32 makes a torn or flipped entry damage, never a
chunk silently skipped.
"""

from __future__ import annotations

import struct
import threading
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, NamedTuple

import msgpack
import numpy as np

from ..errors import ArchiveError
from ..layout import CHUNK_BITS, u64
from .packing import unpacker_limits

MARK = b"\xff" * 8
"""After the version id, where a chunk number would be: no chunk has this number (seqs are 64-bit, so
chunk numbers stay below 2**52). ``columns/u64(v) ‖ MARK`` says the version's zone maps are kept;
``columns/u64(v) ‖ MARK ‖ u64(block) ‖ field name`` holds one field's rows of one block of chunks."""

BLOCK_BITS = 8
"""An entry holds the rows of 256 consecutive chunks (about 1M seqs): a write rewrites the entries of
the blocks it touched, never a row for every chunk of the version, and a query reads one entry per
million frames."""

MAX_TEXT = 64
"""Texts of more UTF-8 bytes are not kept as bounds (the chunk's bounds are left out): a zone map stays
small whatever the texts are."""

RANGED = ("s", "i", "f", "b")  # kinds whose rows may hold bounds
KINDS = frozenset("sifbop")  # the meta column kinds of FORMAT.md ("Chunk encoding"); ``ts`` is "i"
_HEAD = struct.Struct("<c3xI")  # "Z", three zero bytes, CRC-32 of the body


class Zone(NamedTuple):
    """One chunk's row of a field's zone map."""

    kind: str    # the kind of the chunk's column of the field
    count: int   # frames holding a value (1 to 4096)
    low: Any     # the lowest and highest value, or None (kinds without order, long texts)
    high: Any


def key(prefix: bytes, block: int, name: bytes) -> bytes:
    """Where the zone map of field ``name`` keeps its rows of chunks ``block << BLOCK_BITS ...``."""
    return prefix + MARK + u64(block) + name


def blocks(numbers: np.ndarray) -> list[int]:
    """The blocks holding the rows of chunks ``numbers`` (uint64)."""
    return np.unique(numbers >> np.uint64(BLOCK_BITS)).tolist()


def of_values(kind: str, values: np.ndarray) -> Zone | None:
    """The row of a chunk whose column of ``kind`` holds ``values`` (one per frame holding a value):
    None when no frame holds one."""
    if not len(values):
        return None
    if kind not in RANGED:
        return Zone(kind, len(values), None, None)
    low, high = np.min(values).item(), np.max(values).item()  # NaN when the chunk holds one
    return Zone(kind, len(values), low, high)


def of_texts(texts: list[str], count: int) -> Zone | None:
    """The row of a string column: ``texts`` its distinct values, ``count`` the frames holding one."""
    if not count:
        return None
    low, high = min(texts), max(texts)
    if max(len(low.encode()), len(high.encode())) > MAX_TEXT:
        return Zone("s", count, None, None)
    return Zone("s", count, low, high)


_ARRAYS = ("numbers", "kinds", "counts", "low", "high")  # Table's fields, in order


@dataclass
class Table:
    """A field's zone map as arrays, one row per chunk: decoded, aligned with a version's chunks and
    updated without a Python step per row (a writer rewrites it at every batch, a query reads it whole).
    Kind ``b"\\0"`` and count 0: no frame of the chunk holds a value."""

    numbers: np.ndarray  # uint64 chunk numbers
    kinds: np.ndarray    # "S1"
    counts: np.ndarray   # int64
    low: np.ndarray      # object: the bounds, None where there are none
    high: np.ndarray

    @classmethod
    def of(cls, rows: dict[int, Zone]) -> Table:
        numbers = sorted(rows)
        zones = [rows[n] for n in numbers]
        return cls(np.array(numbers, np.uint64), np.array([z.kind.encode() for z in zones], "S1"),
                   np.array([z.count for z in zones], np.int64), _objects([z.low for z in zones]),
                   _objects([z.high for z in zones]))

    @classmethod
    def joined(cls, tables: list[Table]) -> Table:
        """The rows of ``tables`` (of increasing, disjoint chunks) as one table."""
        if not tables:
            return cls.of({})
        return cls(*(np.concatenate([getattr(t, name) for t in tables])
                     for name in _ARRAYS))

    def __len__(self) -> int:
        return len(self.numbers)

    def replaced(self, numbers: np.ndarray, rows: dict[int, Zone]) -> Table:
        """This table without the rows of chunks ``numbers``, with ``rows`` (a subset of them) instead."""
        keep = ~np.isin(self.numbers, numbers)
        new = Table.of(rows)
        parts = [np.concatenate((getattr(self, name)[keep], getattr(new, name)))
                 for name in _ARRAYS]
        order = np.argsort(parts[0], kind="stable")
        return Table(*(part[order] for part in parts))

    def aligned(self, numbers: np.ndarray) -> Table:
        """One row per chunk of ``numbers`` (increasing), empty where this table has none."""
        at = np.searchsorted(self.numbers, numbers).clip(0, max(len(self) - 1, 0))
        found = self.numbers[at] == numbers if len(self) else np.zeros(len(numbers), bool)
        out = Table(numbers, np.full(len(numbers), b"\0", "S1"), np.zeros(len(numbers), np.int64),
                    np.full(len(numbers), None, object), np.full(len(numbers), None, object))
        for name in _ARRAYS[1:]:
            getattr(out, name)[found] = getattr(self, name)[at[found]]
        return out

    def put(self, i: int, row: Zone | None) -> None:
        """Row ``i`` (of an aligned table) set to ``row``."""
        row = row or Zone("\0", 0, None, None)
        self.kinds[i], self.counts[i], self.low[i], self.high[i] = row.kind.encode(), row.count, row.low, row.high

    def encode(self) -> bytes:
        body = msgpack.packb([self.numbers.astype("<u8").tobytes(), self.kinds.tobytes(),
                              self.counts.astype("<u2").tobytes(), self.low.tolist(), self.high.tolist()],
                             use_bin_type=True)
        return _HEAD.pack(b"Z", zlib.crc32(body)) + body


def _objects(items: list[Any]) -> np.ndarray:
    out = np.empty(len(items), object)
    out[:] = items
    return out


Slot = tuple[str, bytes, int, bytes]
"""Where an entry lives: (archive path, version prefix, block, field name)."""
KEPT = 1024
"""Decoded entries kept per process, one per slot (about 7 MiB at 7 KiB an entry)."""
_kept: OrderedDict[Slot, tuple[bytes, Table]] = OrderedDict()
_kept_lock = threading.Lock()


def keep(slot: Slot, data: bytes, table: Table) -> None:
    """Remember that the entry at ``slot`` holds ``data``, which decodes to ``table`` (made read-only):
    a writer keeps each entry it writes, so neither its next batch nor the query after an ingest
    decodes it again."""
    for name in _ARRAYS:
        getattr(table, name).flags.writeable = False
    with _kept_lock:
        _kept[slot] = (data, table)
        _kept.move_to_end(slot)
        while len(_kept) > KEPT:
            _kept.popitem(last=False)


def read(slot: Slot, data: bytes, what: str) -> Table:
    """The entry ``data`` found at ``slot``, decoded (``decode``), or as kept when it holds the same
    bytes: only entries another process (or handle) changed are decoded again."""
    with _kept_lock:
        found = _kept.get(slot)
    if found is not None and found[0] == data:
        return found[1]
    table = decode(data, what, slot[2])
    keep(slot, data, table)
    return table


def decode(data: bytes, what: str, block: int) -> Table:
    """The stored rows of one block of a zone map, or ArchiveError naming ``what`` (the field) and why not."""
    def damaged(why: str) -> ArchiveError:
        return ArchiveError(f"the scan column zone map of {what} is damaged: {why}; run maskstore check --repair")

    if len(data) < _HEAD.size or data[:4] != b"Z\0\0\0":
        raise damaged("it has no zone map header")
    body = memoryview(data)[_HEAD.size:]
    if zlib.crc32(body) != _HEAD.unpack_from(data)[1]:
        raise damaged("its checksum does not match")
    try:
        numbers, kinds, counts, lows, highs = msgpack.unpackb(body, **unpacker_limits(len(body)))
        table = Table(np.frombuffer(numbers, "<u8").astype(np.uint64), np.frombuffer(kinds, "S1"),
                      np.frombuffer(counts, "<u2").astype(np.int64), _objects(lows), _objects(highs))
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise damaged(f"its rows do not decode ({exc or type(exc).__name__})") from None
    n = len(table)
    if not (len(table.kinds) == len(table.counts) == len(table.low) == len(table.high) == n):
        raise damaged("its columns differ in length")
    if ((table.numbers >> np.uint64(BLOCK_BITS)) != block).any() or (table.numbers[1:] <= table.numbers[:-1]).any() or \
            (table.counts < 1).any() or (table.counts > 1 << CHUNK_BITS).any() or \
            not np.isin(table.kinds, _KIND_CODES).all():
        raise damaged(f"its rows are not increasing chunks of block {block} of a known kind and 1 to 4096 frames")
    for kind, types in _BOUND_TYPES.items():
        rows = table.kinds == kind
        if not {type(x) for x in table.low[rows]} | {type(x) for x in table.high[rows]} <= types:
            raise damaged(f"it holds bounds of kind {kind.decode()} that are not of that kind")
    if (table.low == None).tolist() != (table.high == None).tolist():  # noqa: E711 (elementwise)
        raise damaged("it holds a lowest value without a highest")
    return table


_KIND_CODES = np.array([k.encode() for k in sorted(KINDS)], "S1")
_NONE = type(None)
_BOUND_TYPES = {b"s": {str, _NONE}, b"i": {int}, b"f": {float}, b"b": {bool}, b"o": {_NONE}, b"p": {_NONE}}
