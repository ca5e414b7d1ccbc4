"""Posting lists of the five index sub-databases (``ix_*``), packed in blocks (FORMAT.md, "Index blocks").

One LMDB entry per (version, index key, chunk of 4096 seqs) holds the seqs of that chunk the key has,
as Roaring does: sorted little-endian uint16 offsets while that is smaller, else a 512-byte bitmap.
A dupsort entry per (key, frame) cost 8 bytes of value plus LMDB's node header for every posting
(89 bytes a frame for ``ix_value`` at 1M frames); a block costs one node per key and chunk.

Every writer (add, update, delete, repair, conversion) and every reader (lookups, seq windows, key
listings, check) goes through this module, so the block bytes are spelt out once. Archives written
before the ``packed-postings`` feature hold one dupsort entry per posting: a read-only open reads them
through the same functions (``arc.packed_indexes`` says which layout), a writable open converts them
once (``convert``).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import lmdb
import numpy as np

from . import _accel
from .errors import ArchiveError
from .layout import CHUNK_BITS, INDEX_DBS, MAX_KEY_TEXT, U64, delete_prefix, entries, text_key, u64

BLOCK_SEQS = 1 << CHUNK_BITS  # seqs one block covers: a scan-column chunk's
BITMAP_BYTES = BLOCK_SEQS // 8  # a bitmap block: bit i (LSB first) of byte i // 8 is offset i
MAX_ARRAY = BITMAP_BYTES // 2 - 1  # offsets an array block holds; from 256 on the bitmap is no larger
U16 = struct.Struct(">H")
EMPTY = np.zeros(0, np.uint64)
REPAIR_HINT = "run maskstore check --repair to rebuild the indexes"

Postings = dict[bytes, np.ndarray]
"""Index key (without the version prefix) -> sorted unique uint64 seqs, for one index sub-database."""


class BlockError(ValueError):
    """A block's key or bytes are not what a writer stores (the message says which part and why)."""


# ------------------------------------------------------------------------------ keys and block bytes

def key_head(prefix: bytes, key: bytes) -> bytes:
    """The part every block key of one index key starts with: its blocks are contiguous, in chunk
    order, and the length prefix keeps a key from being read as the start of a longer one."""
    return prefix + U16.pack(len(key)) + key


def block_key(prefix: bytes, key: bytes, chunk: int) -> bytes:
    """``u64(version) ‖ u16(len(key)) ‖ key ‖ u64(chunk)``."""
    return key_head(prefix, key) + u64(chunk)


def split_block_key(raw: bytes) -> tuple[bytes, int]:
    """(index key, chunk) of a block key (its version prefix is not checked here)."""
    raw = bytes(raw)
    if len(raw) < 18 or U16.unpack(raw[8:10])[0] != len(raw) - 18:
        raise BlockError(f"a block key of {len(raw)} bytes whose length field does not match it")
    return raw[10:-8], U64.unpack(raw[-8:])[0]


def encode_block(offsets: np.ndarray) -> bytes:
    """The block of some sorted unique offsets (0 ... 4095) within one chunk."""
    if len(offsets) <= MAX_ARRAY:
        return np.asarray(offsets, "<u2").tobytes()
    bits = np.zeros(BLOCK_SEQS, bool)
    bits[offsets] = True
    return np.packbits(bits, bitorder="little").tobytes()


def decode_block(data: bytes) -> np.ndarray:
    """Sorted unique uint16 offsets of a block; BlockError when its bytes cannot be one."""
    if len(data) == BITMAP_BYTES:
        return np.flatnonzero(np.unpackbits(np.frombuffer(data, np.uint8), bitorder="little").view(bool)).astype(np.uint16)
    if not data or len(data) % 2 or len(data) > BITMAP_BYTES:
        raise BlockError(f"{len(data)} bytes, neither a bitmap ({BITMAP_BYTES}) nor an array of "
                         f"1 to {MAX_ARRAY} offsets")
    offsets = np.frombuffer(data, "<u2")
    if len(offsets) > 1 and not (offsets[1:] > offsets[:-1]).all():
        raise BlockError("offsets out of order")
    if offsets[-1] >= BLOCK_SEQS:
        raise BlockError(f"offset {int(offsets[-1])} beyond a chunk of {BLOCK_SEQS} seqs")
    return offsets


def key_text(key: bytes) -> str:
    """An index key for a message: its text, or its bytes in hex when it is no UTF-8 text."""
    try:
        return repr(bytes(key).decode("utf-8"))
    except UnicodeDecodeError:
        return bytes(key).hex()


def _damaged(name: str, key: bytes, chunk: int, why: str) -> ArchiveError:
    base = chunk << CHUNK_BITS
    return ArchiveError(f"index {name}: the block of key {key_text(key)} for seqs {base}...{base + BLOCK_SEQS - 1} "
                        f"is damaged ({why}); {REPAIR_HINT}")


# ------------------------------------------------------------------------------ reading

def read(txn: lmdb.Transaction, arc: Any, name: str, prefix: bytes, key: bytes,
         ranges: list[tuple[int, int]] | None = None) -> np.ndarray:
    """Sorted uint64 seqs of one key of index ``name`` in the version ``prefix``; with ``ranges``,
    only those in some ``[start, stop)`` (only the blocks of those chunks are read)."""
    if not arc.packed_indexes:
        return _read_dupsort(txn, arc, name, prefix + key, ranges)
    head = key_head(prefix, key)
    if ranges is None:
        return _decode_many(name, key, list(_blocks(txn, arc.db(name), head)))
    # A window (runs of whole chunks, ``plan.Context.window_seqs``): only the blocks of its chunks.
    starts, stops = np.array(ranges, np.uint64).reshape(-1, 2).T
    chunks = sorted_unique([np.arange(a >> CHUNK_BITS, ((b - 1) >> CHUNK_BITS) + 1, dtype=np.uint64)
                            for a, b in zip(starts.tolist(), stops.tolist()) if b > a])
    db = arc.db(name)
    seqs = _decode_many(name, key, [(chunk, data) for chunk in chunks.tolist()
                                    if (data := txn.get(head + u64(chunk), db=db)) is not None])
    at = np.searchsorted(starts, seqs, side="right") - 1
    return seqs[(at >= 0) & (seqs < stops[np.maximum(at, 0)])]


def _blocks(txn: lmdb.Transaction, db: Any, head: bytes) -> Iterator[tuple[int, bytes]]:
    """(chunk, block) of every block of one index key, in chunk order."""
    cursor = txn.cursor(db=db)
    if cursor.set_range(head):
        for raw, data in cursor:
            if not raw.startswith(head) or len(raw) != len(head) + 8:
                return
            yield U64.unpack(raw[-8:])[0], data


def _decode_many(name: str, key: bytes, blocks: list[tuple[int, bytes]]) -> np.ndarray:
    """The sorted seqs of some blocks of one key (in chunk order), decoded together: all arrays in one
    buffer, all bitmaps in one ``unpackbits``, so a common key costs a few numpy calls, not a few per
    block. When the checks fail, block by block, the damaged one is an ArchiveError naming it."""
    if len(blocks) == 1:  # a rare key (one context, one mask id in a small version): no batching to do
        chunk, data = blocks[0]
        try:
            return decode_block(data).astype(np.uint64) + np.uint64(chunk << CHUNK_BITS)
        except BlockError as exc:
            raise _damaged(name, key, chunk, str(exc)) from None
    arrays = [(chunk, data) for chunk, data in blocks if len(data) != BITMAP_BYTES]
    bitmaps = [(chunk, data) for chunk, data in blocks if len(data) == BITMAP_BYTES]
    parts = []
    if arrays:
        lengths = np.array([len(data) for _, data in arrays]) // 2
        raw = b"".join(data for _, data in arrays)
        offsets = np.frombuffer(raw, "<u2") if len(raw) % 2 == 0 else None
        starts = np.cumsum(lengths) - lengths
        step = np.ones(0 if offsets is None else len(offsets), bool)
        if offsets is not None and len(offsets) > 1:
            step[1:] = offsets[1:] > offsets[:-1]
            step[starts[starts < len(step)]] = True  # each block starts afresh
        if (offsets is None or not lengths.all() or lengths.max() > MAX_ARRAY or not step.all()
                or offsets.max() >= BLOCK_SEQS):
            for chunk, data in arrays:
                try:
                    decode_block(data)
                except BlockError as exc:
                    raise _damaged(name, key, chunk, str(exc)) from None
        bases = np.array([chunk for chunk, _ in arrays], np.uint64) << np.uint64(CHUNK_BITS)
        parts.append(np.repeat(bases, lengths) + offsets)
    if bitmaps:
        bits = np.unpackbits(np.frombuffer(b"".join(data for _, data in bitmaps), np.uint8).reshape(len(bitmaps), -1),
                             axis=1, bitorder="little")
        found = np.flatnonzero(bits.view(bool)).astype(np.uint64)  # row * 4096 + offset; bool: nonzero's fast path
        bases = np.array([chunk for chunk, _ in bitmaps], np.uint64) << np.uint64(CHUNK_BITS)
        parts.append(bases[found >> np.uint64(CHUNK_BITS)] + (found & np.uint64(BLOCK_SEQS - 1)))
    if not parts:
        return EMPTY
    return parts[0] if len(parts) == 1 else np.sort(np.concatenate(parts), kind="stable")


def _read_dupsort(txn: lmdb.Transaction, arc: Any, name: str, full_key: bytes,
                  ranges: list[tuple[int, int]] | None) -> np.ndarray:
    """``read`` for the layout before ``packed-postings``: one 8-byte seq per duplicate."""
    cursor = txn.cursor(db=arc.db(name))
    if ranges is None:
        # keyfixed: LMDB hands back every (key, seq) pair packed in one buffer, no Python per posting
        raw = cursor.getmulti([full_key], dupdata=True, dupfixed_bytes=8, keyfixed=True)
        return np.frombuffer(raw, np.dtype([("key", f"V{len(full_key)}"), ("seq", ">u8")]))["seq"].astype(np.uint64)
    parts = []
    for start, stop in ranges:
        if not cursor.set_range_dup(full_key, u64(start)):
            continue
        end, found = u64(stop), []
        for seq in cursor.iternext_dup(keys=False, values=True):
            if seq >= end:
                break
            found.append(seq)
        raw = b"".join(found)
        if len(raw) != 8 * len(found):
            raise ArchiveError(f"index {name} holds a seq that is not 8 bytes; {REPAIR_HINT}")
        parts.append(np.frombuffer(raw, ">u8").astype(np.uint64))
    return np.concatenate(parts) if parts else EMPTY


def keys(txn: lmdb.Transaction, arc: Any, name: str, prefix: bytes) -> list[bytes]:
    """The distinct index keys of a version, in key order (of the stored layout)."""
    cursor = txn.cursor(db=arc.db(name))
    out: list[bytes] = []
    if not cursor.set_range(prefix):
        return out
    if not arc.packed_indexes:
        for raw in cursor.iternext_nodup(keys=True, values=False):
            if not raw.startswith(prefix):
                break
            out.append(bytes(raw[len(prefix):]))
        return out
    while True:  # from each key's first block, a jump past its last one
        raw = cursor.key()
        if not raw.startswith(prefix):
            return out
        try:
            key, _ = split_block_key(raw)
        except BlockError as exc:
            raise ArchiveError(f"index {name}: {exc}; {REPAIR_HINT}") from None
        out.append(key)
        if not cursor.set_range(block_key(prefix, key, 2**64 - 1) + b"\x00"):
            return out


def stored(txn: lmdb.Transaction, arc: Any, name: str, prefix: bytes
           ) -> Iterator[tuple[bytes, int, np.ndarray | str]]:
    """(index key, chunk, seqs or why the entry is damaged) of every stored entry of a version: for
    check and repair, which go on past damage. The old layout gives one seq per entry."""
    for raw, data in entries(txn, arc.db(name), prefix):
        if not arc.packed_indexes:
            if len(data) != 8:
                yield bytes(raw[8:]), 0, f"a seq of {len(data)} bytes (8 expected)"
            else:
                seq = U64.unpack(data)[0]
                yield bytes(raw[8:]), seq >> CHUNK_BITS, np.array([seq], np.uint64)
            continue
        try:
            key, chunk = split_block_key(raw)
        except BlockError as exc:
            yield bytes(raw[8:]), 0, str(exc)
            continue
        try:
            yield key, chunk, decode_block(bytes(data)).astype(np.uint64) + np.uint64(chunk << CHUNK_BITS)
        except BlockError as exc:
            yield key, chunk, str(exc)


# ------------------------------------------------------------------------------ what frames index

def from_groups(groups: Mapping[str, Mapping[bytes, list[int]]], seqs: np.ndarray) -> dict[str, Postings]:
    """``_accel.Postings.groups()`` (keys -> batch positions) with positions turned into seqs."""
    return {name: {key: sorted_unique([seqs[np.asarray(positions, np.intp)]]) for key, positions in by_key.items()}
            for name, by_key in groups.items()}


def sorted_unique(parts: list[np.ndarray]) -> np.ndarray:
    """Union of some arrays as one sorted unique array: a stable sort (radix for integers; sorted runs
    cost one pass) and a neighbour test, where numpy's hash-based ``np.unique`` costs ~30x more."""
    if not parts:
        return EMPTY
    seqs = parts[0] if len(parts) == 1 else np.concatenate(parts)
    if len(seqs) > 1 and (seqs[1:] > seqs[:-1]).all():
        return seqs  # one posting list, or disjoint ones in order: sorted and unique already
    seqs = np.sort(seqs, kind="stable")
    if len(seqs) > 1:
        seqs = seqs[np.concatenate(([True], seqs[1:] != seqs[:-1]))]
    return seqs


def of_records(records: Mapping[int, Mapping[str, Any]]) -> dict[str, Postings]:
    """What the index sub-databases hold for some frame records (seq -> record), by the writer's own
    definition (``_accel.Postings``), so delete, check and repair agree with ingest."""
    collected = _accel.Postings(text_key, MAX_KEY_TEXT)
    for pos, rec in enumerate(records.values()):
        collected.add_record(pos, rec)
    return from_groups(collected.groups(), np.fromiter(records.keys(), np.uint64, len(records)))


# ------------------------------------------------------------------------------ writing

def update(txn: lmdb.Transaction, arc: Any, prefix: bytes, removed: Mapping[str, Postings] | None = None,
           added: Mapping[str, Postings] | None = None) -> None:
    """Take ``removed`` seqs out of the indexes and put ``added`` ones in, in the writer's transaction:
    each touched (key, chunk) block is read, merged with numpy and written once (deleted when empty)."""
    removed, added = removed or {}, added or {}
    for name in INDEX_DBS:
        gone, new = removed.get(name, {}), added.get(name, {})
        if gone or new:
            _update_index(txn, arc, name, prefix, gone, new)


def _update_index(txn: lmdb.Transaction, arc: Any, name: str, prefix: bytes, gone: Postings, new: Postings) -> None:
    db = arc.db(name)
    puts: list[tuple[bytes, bytes]] = []
    for key in gone.keys() | new.keys():
        out, add = gone.get(key, EMPTY), new.get(key, EMPTY)
        out_chunks, add_chunks = out >> np.uint64(CHUNK_BITS), add >> np.uint64(CHUNK_BITS)
        head = key_head(prefix, key)
        for chunk in sorted_unique([out_chunks, add_chunks]).tolist():
            block = head + u64(chunk)
            data = txn.get(block, db=db)
            base = np.uint64(chunk << CHUNK_BITS)
            adding = (add[add_chunks == chunk] - base).astype(np.uint16)
            if data is None:
                offsets = adding
            else:
                try:
                    offsets = decode_block(data)
                except BlockError as exc:
                    raise _damaged(name, key, chunk, str(exc)) from None
                dropping = (out[out_chunks == chunk] - base).astype(np.uint16)
                offsets = sorted_unique([offsets[~np.isin(offsets, dropping)], adding])
            if len(offsets):
                puts.append((block, encode_block(offsets)))
            elif data is not None:
                txn.delete(block, db=db)
    puts.sort()
    txn.cursor(db=db).putmulti(puts)


def rewrite(txn: lmdb.Transaction, arc: Any, prefix: bytes, wanted: Mapping[str, Postings]) -> None:
    """Replace every index entry of a version with ``wanted`` (repair)."""
    for name in INDEX_DBS:
        delete_prefix(txn, arc.db(name), prefix)
    update(txn, arc, prefix, added=wanted)


def convert(txn: lmdb.Transaction, env: lmdb.Environment, dbs: dict[str, Any], arc: Any) -> None:
    """Turn the dupsort indexes of an archive from before ``packed-postings`` into blocks, all in the
    writable open's transaction: read each whole, drop it (LMDB keeps a database's flags, so it is
    created again without dupsort), write its blocks. ``dbs`` gets the new handles."""
    for name in INDEX_DBS:
        by_version: dict[bytes, dict[bytes, list[np.ndarray]]] = {}
        db = dbs[name]
        if db.flags(txn)["dupsort"]:
            for key in _distinct_keys(txn, db):
                prefix, found = key[:8], by_version.setdefault(key[:8], {})
                raw = txn.cursor(db=db).getmulti([key], dupdata=True, dupfixed_bytes=8, keyfixed=True)
                if len(raw) % (len(key) + 8):
                    raise ArchiveError(f"index {name} holds a seq that is not 8 bytes; {REPAIR_HINT}")
                seqs = np.frombuffer(raw, np.dtype([("key", f"V{len(key)}"), ("seq", ">u8")]))["seq"]
                found.setdefault(key[8:], []).append(seqs.astype(np.uint64))
            txn.drop(db, delete=True)
            dbs[name] = env.open_db(name.encode(), txn=txn, create=True)
        for prefix, by_key in by_version.items():
            _update_index(txn, arc, name, prefix, {}, {key: sorted_unique(parts)
                                                       for key, parts in by_key.items()})


def _distinct_keys(txn: lmdb.Transaction, db: Any) -> Iterable[bytes]:
    cursor = txn.cursor(db=db)
    return [bytes(k) for k in cursor.iternext_nodup(keys=True, values=False)] if cursor.first() else []
