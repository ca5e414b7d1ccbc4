"""Columnar side tables: the scalar fields of every frame as numpy arrays, for scans at numpy speed.

Decoding msgpack record by record tops out near half a million frames a second in Python; a
predicate over a million frames has to be an array operation instead. Each version keeps its
columns in chunks of ``CHUNK`` frame seqs in the ``columns`` sub-database. Writers keep them current
in their own transaction (``update``): the written frames' rows are built and merged into the stored
chunk with numpy, so no query after an ingest rebuilds anything. Chunks an older writer only marked
``dirty`` are still rebuilt by the first query that needs them (from its snapshot's records, stored
when no writer holds the archive), so archives written before keep working.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import lmdb
import msgpack
import numpy as np

from .. import records
from .._accel import chunk_rows  # compiled, or its pure-Python twin
from ..layout import CHUNK_BITS, U64, entries, u64
from ..errors import ArchiveError

if TYPE_CHECKING:
    from ..archive import DatasetVersion

CHUNK = 1 << CHUNK_BITS
_DTYPES = {"int": np.int64, "float": np.float64, "bool": np.bool_, "present": np.bool_, "object": object}


@dataclass
class StrColumn:
    """Strings dictionary-coded per chunk: predicates run on the few distinct values, then on codes."""

    uniques: list[str]
    codes: np.ndarray  # int32, -1 where absent

    def select(self, keep: Any) -> np.ndarray:
        """Rows whose string satisfies ``keep`` (called once per distinct string)."""
        wanted = [i for i, s in enumerate(self.uniques) if keep(s)]
        if len(wanted) == 1:
            return self.codes == wanted[0]
        return np.isin(self.codes, wanted) if wanted else np.zeros(len(self.codes), bool)


@dataclass
class ValueColumn:
    """Numbers or booleans with a presence mask (ints stay int64 so large ids compare exactly)."""

    kind: str  # "int", "float", "bool", "object" (numbers numpy would round) or "present" (dicts, lists)
    values: np.ndarray
    present: np.ndarray


@dataclass
class Chunk:
    base: int
    present: np.ndarray                  # bool: a frame lives at this seq
    timestamp: np.ndarray                # int64
    ids: StrColumn
    context: StrColumn
    n_masks: np.ndarray                  # int32
    n_rois: np.ndarray                   # int32
    value_offsets: np.ndarray            # int64[CHUNK + 1]: CSR of the frame's mask values
    value_keys: np.ndarray               # uint32 packed RGB
    value_counts: np.ndarray             # int64 pixel counts, summed over the frame's masks
    meta: dict[str, StrColumn | ValueColumn] = field(default_factory=dict)


def build_chunk(base: int, rows: Iterable[tuple[int, bytes]]) -> Chunk:
    """Columns of the frame records ``(seq, record)`` whose seqs fall in ``[base, base + CHUNK)``,
    records as written (``records.encode_frames``) and read back whole (``records.decode_frame``
    accepts them): the per-row work is compiled (``_accel.chunk_rows``) and reads the bytes."""
    present, timestamp, ids, contexts, n_masks, n_rois, offsets, keys, counts, meta = \
        chunk_rows(base, CHUNK, sorted(rows))
    return Chunk(base, present, timestamp, StrColumn(*ids), StrColumn(*contexts), n_masks, n_rois, offsets, keys,
                 counts, {path: _meta_column(*column) for path, column in meta.items()})


def _exact(value: Any, kind: str) -> bool:
    """Whether a numpy column of ``kind`` holds this value without rounding."""
    if isinstance(value, float):
        return True
    return -(2**63) <= value < 2**63 if kind == "int" else abs(value) <= 2**53


def _all_exact(values: list[Any], kinds: frozenset[str], kind: str) -> bool:
    """Whether a numpy column of ``kind`` holds all these numbers without rounding (ints alone: two C calls)."""
    if kinds == {"int"}:
        return -(2**63) <= min(values) and max(values) < 2**63
    return all(_exact(v, kind) for v in values)


def _meta_column(kinds: frozenset[str], rows: Sequence[int], values: list[Any]) -> StrColumn | ValueColumn:
    """One meta path's column from its value kinds, rows (ascending) and values."""
    if kinds == {"str"}:
        uniques = list(dict.fromkeys(values))
        codes = np.full(CHUNK, -1, np.int32)
        codes[rows] = np.fromiter(map({text: i for i, text in enumerate(uniques)}.__getitem__, values),
                                  np.int32, len(values))
        return StrColumn(uniques, codes)
    present = np.zeros(CHUNK, bool)
    present[rows] = True
    if kinds <= {"int", "float"} or kinds == {"bool"}:
        kind = "bool" if kinds == {"bool"} else "float" if "float" in kinds else "int"
        if "int" in kinds and not _all_exact(values, kinds, kind):
            kind = "object"  # ints that int64 or float64 would round: Python numbers, compared exactly
        arr = np.zeros(CHUNK, _DTYPES[kind])
        arr[rows] = values
        return ValueColumn(kind, arr, present)
    return ValueColumn("present", present, present)


# ------------------------------------------------------------------------------------ storage

def _encode_str(col: StrColumn) -> list[Any]:
    return [col.uniques, col.codes.tobytes()]


def encode_chunk(chunk: Chunk) -> bytes:
    meta = {path: ["s", *_encode_str(col)] if isinstance(col, StrColumn)
            else [col.kind, col.values.tolist() if col.kind == "object" else col.values.tobytes(),
                  col.present.tobytes()] for path, col in chunk.meta.items()}
    meta = dict(sorted(meta.items()))  # one byte string per set of rows, however they were built
    body = {"present": chunk.present.tobytes(), "ts": chunk.timestamp.tobytes(), "ids": _encode_str(chunk.ids),
            "ctx": _encode_str(chunk.context), "nm": chunk.n_masks.tobytes(), "nr": chunk.n_rois.tobytes(),
            "vo": chunk.value_offsets.tobytes(), "vk": chunk.value_keys.tobytes(),
            "vc": chunk.value_counts.tobytes(), "meta": meta}
    return msgpack.packb(body, use_bin_type=True)


class _Damaged(Exception):
    """A field of a stored chunk that readers cannot use; ``decode_chunk`` names the chunk."""


def _array(item: Any, dtype: Any, length: int | None, field: str) -> np.ndarray:
    """A stored array of ``dtype``: exactly ``length`` items, or any whole number of them when None."""
    size = np.dtype(dtype).itemsize
    if type(item) not in (bytes, memoryview) or len(item) % size or (length is not None and len(item) != length * size):
        raise _Damaged(f"{field} is not {length or 'whole'} {np.dtype(dtype).name} values")
    return np.frombuffer(item, dtype)


def _flags(item: Any, field: str) -> np.ndarray:
    raw = _array(item, np.uint8, CHUNK, field)
    if raw.max() > 1:
        raise _Damaged(f"{field} holds bytes other than 0 and 1")
    return raw.view(np.bool_)


def _counts(item: Any, dtype: Any, length: int | None, field: str, high: int) -> np.ndarray:
    arr = _array(item, dtype, length, field)
    if len(arr) and (arr.min() < 0 or arr.max() > high):
        raise _Damaged(f"{field} holds values outside 0..{high}")
    return arr


def _texts(item: Any) -> bool:
    try:
        "".join(item)  # C-level: every item a str
    except TypeError:
        return False
    return type(item) is list


def _decode_str(item: Any, field: str) -> StrColumn:
    if type(item) is not list or len(item) != 2 or not _texts(item[0]):
        raise _Damaged(f"{field} is not [texts, codes]")
    codes = _array(item[1], np.int32, CHUNK, field)
    if codes.min() < -1 or codes.max() >= len(item[0]):
        raise _Damaged(f"{field} has codes outside its {len(item[0])} texts")
    return StrColumn(item[0], codes)


def _decode_meta(path: str, item: Any, present: np.ndarray) -> StrColumn | ValueColumn:
    field = f"meta.{path}"
    kind = item[0] if type(item) is list and item else None
    if kind == "s":
        col: StrColumn | ValueColumn = _decode_str(item[1:], field)
        has = col.codes >= 0
    elif kind in _DTYPES and len(item) == 3:
        has = _flags(item[2], field + " presence")
        if kind == "object":
            if type(item[1]) is not list or len(item[1]) != CHUNK or \
                    not all(type(x) is int or type(x) is float for x in item[1]):
                raise _Damaged(f"{field} is not {CHUNK} numbers")
            values = np.array(item[1], dtype=object)
        else:
            values = _flags(item[1], field) if kind in ("bool", "present") else _array(item[1], _DTYPES[kind], CHUNK, field)
        col = ValueColumn(kind, values, has)
    else:
        raise _Damaged(f"{field} is not a column")
    if (has & ~present).any():
        raise _Damaged(f"{field} has values where no frame lives")
    return col


_CHUNK_FIELDS = ("present", "ts", "ids", "ctx", "nm", "nr", "vo", "vk", "vc", "meta")
MAX_VALUES_PER_FRAME = 1 << 24  # distinct RGB values


def _values(present: np.ndarray, vo: Any, vk: Any, vc: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    offsets = _array(vo, np.int64, CHUNK + 1, "vo")
    sizes = np.diff(offsets)
    if offsets[0] != 0 or sizes.min() < 0 or sizes.max() > MAX_VALUES_PER_FRAME or sizes[~present].any():
        raise _Damaged("value offsets are not increasing from 0, or give values to absent frames")
    keys = _counts(vk, np.uint32, None, "vk", 0xFFFFFF)
    counts = _counts(vc, np.int64, None, "vc", records.MAX_FRAME_PIXELS)
    if not len(keys) == len(counts) == offsets[-1]:
        raise _Damaged(f"{len(keys)} value keys and {len(counts)} counts, but the offsets end at {offsets[-1]}")
    return offsets, keys, counts


def _str_of_frames(present: np.ndarray, item: Any, field: str) -> StrColumn:
    col = _decode_str(item, field)
    if ((col.codes >= 0) != present).any():
        raise _Damaged("ids or context ids disagree with the present frames")
    return col


def _meta(present: np.ndarray, item: Any) -> dict[str, StrColumn | ValueColumn]:
    if type(item) is not dict:
        raise _Damaged("fields are missing")
    return {path: _decode_meta(path, value, present) for path, value in item.items()}


# Chunk attribute(s) <- the stored fields they come from, and how (each checked against ``present``:
# O(CHUNK) numpy work, so queries can index with these arrays without bounds surprises).
_DECODERS: dict[tuple[str, ...], tuple[tuple[str, ...], Any]] = {
    ("timestamp",): (("ts",), lambda present, ts: (_array(ts, np.int64, CHUNK, "ts"),)),
    ("ids",): (("ids",), lambda present, item: (_str_of_frames(present, item, "ids"),)),
    ("context",): (("ctx",), lambda present, item: (_str_of_frames(present, item, "ctx"),)),
    ("n_masks",): (("nm",), lambda present, nm: (_counts(nm, np.int32, CHUNK, "nm", 2**31 - 1),)),
    ("n_rois",): (("nr",), lambda present, nr: (_counts(nr, np.int32, CHUNK, "nr", 2**31 - 1),)),
    ("value_offsets", "value_keys", "value_counts"): (("vo", "vk", "vc"), _values),
    ("meta",): (("meta",), lambda present, item: (_meta(present, item),)),
}
_DECODER_OF = {name: names for names in _DECODERS for name in names}


def _unpacker_limits(n: int) -> dict[str, Any]:
    """msgpack limits for a value of ``n`` bytes: no length field may claim more than the bytes hold."""
    return dict(raw=False, strict_map_key=True, max_str_len=n, max_bin_len=n, max_array_len=n,
                max_map_len=n // 2, max_ext_len=0)


_BIN_HEADERS = {0xC4: 2, 0xC5: 3, 0xC6: 5}  # msgpack bin 8/16/32: type byte and length bytes


class StoredChunk(Chunk):
    """A chunk as stored, each field decoded and checked on first use: a fresh process's first query
    on a million frames would otherwise unpack every column (a Python str per frame id) to read one.
    Loading walks the body once without building objects, to find where each field lies."""

    def __init__(self, base: int, data: bytes) -> None:  # noqa: D107 - the dataclass fields come lazily
        self.base = base
        self._data = data
        try:
            unpacker = msgpack.Unpacker(**_unpacker_limits(len(data)), max_buffer_size=max(len(data), 1))
            unpacker.feed(data)
            where: dict[str, tuple[int, int]] = {}
            for _ in range(unpacker.read_map_header()):
                name = unpacker.unpack()
                start = unpacker.tell()
                unpacker.skip()
                if type(name) is str:
                    where[name] = (start, unpacker.tell())
            if unpacker.tell() != len(data):
                raise ValueError("extra data after the chunk")
        except (ValueError, msgpack.UnpackException, TypeError) as exc:
            raise _archive_error(base, str(exc) or type(exc).__name__) from None
        if any(name not in where for name in _CHUNK_FIELDS):
            raise _archive_error(base, "fields are missing")
        self._where = where
        self.present = self._decoded(lambda present: _flags(present, "present"), ("present",))

    def _decoded(self, decode: Any, fields: tuple[str, ...], *before: Any) -> Any:
        try:
            return decode(*before, *(self._item(*self._where[name]) for name in fields))
        except (ValueError, msgpack.UnpackException, TypeError) as exc:
            raise _archive_error(self.base, str(exc) or type(exc).__name__) from None
        except _Damaged as exc:
            raise _archive_error(self.base, str(exc)) from None

    def _item(self, start: int, stop: int) -> Any:
        """One stored field: a bin is a view of the chunk's bytes (its arrays copy nothing)."""
        header = _BIN_HEADERS.get(self._data[start])
        if header is not None and stop - start - header == int.from_bytes(self._data[start + 1:start + header], "big"):
            return memoryview(self._data)[start + header:stop]
        return msgpack.unpackb(memoryview(self._data)[start:stop], **_unpacker_limits(len(self._data)))

    def __getattr__(self, name: str) -> Any:
        """Called only for a field not decoded yet: decode it (and its group), keep it."""
        names = _DECODER_OF.get(name)
        if names is None:
            raise AttributeError(name)
        fields, decode = _DECODERS[names]
        for attr, value in zip(names, self._decoded(decode, fields, self.present)):
            setattr(self, attr, value)
        return getattr(self, name)


def _archive_error(base: int, why: str) -> ArchiveError:
    return ArchiveError(f"the scan columns of frames {base}..{base + CHUNK - 1} are damaged: {why}; "
                        "run maskstore check --repair to rebuild them")


def decode_chunk(base: int, data: bytes) -> Chunk:
    """A stored chunk, every field decoded now, or ArchiveError naming its frames when it is not one
    this module wrote (``maskstore check``, merges)."""
    chunk = StoredChunk(base, data)
    for names in _DECODERS:
        getattr(chunk, names[0])
    return chunk


def _records_in(txn: lmdb.Transaction, version: DatasetVersion, base: int) -> Iterator[tuple[int, bytes]]:
    """The frame records of one chunk, plain (decompressed), each checked by decoding it (ArchiveError when damaged)."""
    cursor = txn.cursor(db=version.archive.db("frames"))
    start, stop = version.prefix + u64(base), version.prefix + u64(base + CHUNK)
    if cursor.set_range(start):
        for key, data in cursor:
            if key >= stop:
                return
            seq = U64.unpack(key[8:])[0]
            plain = records.plain_frame(data, f"frame seq {seq}")
            records.decode_frame(plain, f"frame seq {seq}")
            yield seq, plain


def _chunk_keys(items: Iterator[tuple[bytes, bytes]], db: str) -> Iterator[tuple[bytes, bytes]]:
    """Entries keyed version id (8) + chunk number (8); any other key is a damaged archive."""
    for key, value in items:
        if len(key) != 16:
            raise ArchiveError(f"{db} entry {bytes(key).hex()} is damaged: its key is not 16 bytes; "
                               "run maskstore check --repair")
        yield key, value


def _dirty_keys(txn: lmdb.Transaction, version: DatasetVersion) -> list[bytes]:
    return [key for key, _ in _chunk_keys(entries(txn, version.archive.db("dirty"), version.prefix), "dirty")]


def _build_dirty(txn: lmdb.Transaction, version: DatasetVersion, keys: list[bytes]) -> dict[bytes, Chunk | None]:
    """The given dirty chunks built from the records of ``txn`` (None: no frame lives there now)."""
    built: dict[bytes, Chunk | None] = {}
    for key in keys:
        base = U64.unpack(key[8:])[0] << CHUNK_BITS
        chunk = build_chunk(base, _records_in(txn, version, base))
        built[key] = chunk if chunk.present.any() else None
    return built


def _store(txn: lmdb.Transaction, version: DatasetVersion, built: dict[bytes, Chunk | None]) -> None:
    """Write built chunks and clear their dirty marks (in a write transaction)."""
    arc = version.archive
    for key, chunk in built.items():
        if chunk is None:
            txn.delete(key, db=arc.db("columns"))
        else:
            txn.put(key, encode_chunk(chunk), db=arc.db("columns"))
        txn.delete(key, db=arc.db("dirty"))


def refresh(version: DatasetVersion) -> None:
    """Build and store every dirty chunk of a writable archive now, waiting for the writer lock: for
    writers (the end of ``maskstore ingest``), so no later query has to rebuild them."""
    if not version.archive.readonly:
        version.archive.write(lambda txn: _store(txn, version, _build_dirty(txn, version, _dirty_keys(txn, version))))


def load_chunks(txn: lmdb.Transaction, version: DatasetVersion, generation: int) -> list[Chunk]:
    """Every chunk of the version as of ``txn`` (of the version's ``generation``). Dirty chunks are built
    in memory, then stored only if no writer holds the archive and the version is still at that
    generation: a read never takes or waits for the writer lock, and never fails on a cache write."""
    arc = version.archive
    dirty = _dirty_keys(txn, version)
    dirty_set = set(dirty)
    chunks: dict[bytes, Chunk | None] = {
        key: StoredChunk(U64.unpack(key[8:])[0] << CHUNK_BITS, data)
        for key, data in _chunk_keys(entries(txn, arc.db("columns"), version.prefix), "columns")
        if key not in dirty_set}
    if dirty:
        built = _build_dirty(txn, version, dirty)
        chunks.update(built)
        arc.try_write(lambda wtxn: _store_if_current(wtxn, version, generation, built))
    return [chunk for _, chunk in sorted(chunks.items()) if chunk is not None]


def _store_if_current(txn: lmdb.Transaction, version: DatasetVersion, generation: int,
                      built: dict[bytes, Chunk | None]) -> None:
    if version.record(txn)["generation"] == generation:
        _store(txn, version, built)


# ------------------------------------------------------------------------------ kept current on write

def _first_use(uniques: list[str], codes: np.ndarray) -> StrColumn:
    """The texts in order of first use by row, unused ones dropped: what ``build_chunk`` gives."""
    used = codes[codes >= 0]
    if not len(used):
        return StrColumn([], codes)
    values, first = np.unique(used, return_index=True)
    order = values[np.argsort(first)]
    new_code = np.full(len(uniques) + 1, -1, np.int32)  # the extra slot maps code -1 to -1
    new_code[order] = np.arange(len(order), dtype=np.int32)
    return StrColumn([uniques[i] for i in order.tolist()], new_code[codes])


def _merge_str(old: StrColumn | None, new: StrColumn | None, touched: np.ndarray) -> StrColumn:
    old = old or StrColumn([], np.full(CHUNK, -1, np.int32))
    new = new or StrColumn([], np.full(CHUNK, -1, np.int32))
    index = {text: i for i, text in enumerate(old.uniques)}
    uniques = old.uniques + [t for t in new.uniques if t not in index]
    index.update((t, i) for i, t in enumerate(uniques))
    remap = np.array([index[t] for t in new.uniques] + [-1], np.int32)
    return _first_use(uniques, np.where(touched, remap[new.codes], old.codes))


def _merge_meta(old: StrColumn | ValueColumn | None, new: StrColumn | ValueColumn | None,
                touched: np.ndarray) -> StrColumn | ValueColumn | None:
    """One meta column of the merged rows, or None when only a rebuild from the records gives the
    column ``build_chunk`` would (the value kinds differ, or float/object rows leave: the rest may be
    all ints, which float64 cannot tell apart)."""
    if isinstance(old, StrColumn) or isinstance(new, StrColumn):
        if not (old is None or isinstance(old, StrColumn)) or not (new is None or isinstance(new, StrColumn)):
            return None
        return _merge_str(old, new, touched)
    if old is not None and new is not None and old.kind != new.kind:
        return None
    if old is not None and old.kind in ("float", "object") and (old.present & touched).any():
        return None
    kind = (old or new).kind  # type: ignore[union-attr]
    zero = np.zeros(CHUNK, object if kind == "object" else _DTYPES[kind])
    present = np.where(touched, new.present if new else False, old.present if old else False)
    values = np.where(touched, new.values if new else zero, old.values if old else zero)
    return ValueColumn(kind, values.astype(zero.dtype), present)


def merge(old: Chunk, new: Chunk, touched: np.ndarray) -> Chunk | None:
    """``old`` with the ``touched`` rows taken from ``new`` (absent there: deleted), byte for byte the
    chunk ``build_chunk`` makes of the resulting rows; None when only that rebuild can tell."""
    meta: dict[str, StrColumn | ValueColumn] = {}
    for path in old.meta.keys() | new.meta.keys():
        col = _merge_meta(old.meta.get(path), new.meta.get(path), touched)
        if col is None:
            return None
        if (col.codes >= 0).any() if isinstance(col, StrColumn) else col.present.any():
            meta[path] = col
    old_sizes, new_sizes = np.diff(old.value_offsets), np.diff(new.value_offsets)
    rows = np.arange(CHUNK)
    old_owner, new_owner = np.repeat(rows, old_sizes), np.repeat(rows, new_sizes)
    kept = ~touched[old_owner]
    owner = np.concatenate((old_owner[kept], new_owner))
    order = np.argsort(owner, kind="stable")  # each row's values stay in their order
    offsets = np.zeros(CHUNK + 1, np.int64)
    np.cumsum(np.where(touched, new_sizes, old_sizes), out=offsets[1:])
    pick = lambda a, b: np.where(touched, b, a)  # noqa: E731
    return Chunk(old.base, pick(old.present, new.present), pick(old.timestamp, new.timestamp),
                 _merge_str(old.ids, new.ids, touched), _merge_str(old.context, new.context, touched),
                 pick(old.n_masks, new.n_masks), pick(old.n_rois, new.n_rois), offsets,
                 np.concatenate((old.value_keys[kept], new.value_keys))[order],
                 np.concatenate((old.value_counts[kept], new.value_counts))[order], meta)


def update(txn: lmdb.Transaction, version: DatasetVersion,
           changed: Mapping[int, bytes | None]) -> dict[bytes, Chunk | None]:
    """Bring the stored columns of the chunks holding ``changed`` seqs (each a frame record just
    written, or None: deleted) up to date, in the writer's transaction and after its records: the
    written rows are built and merged into the stored chunk, so the cost follows the batch, not the
    version. A chunk marked dirty, or one whose merge could change a column's kind, is rebuilt from
    the transaction's records. Returns the chunks stored (None: removed), for ``remember``."""
    arc = version.archive
    items = sorted(changed.items())  # a batch's seqs are mostly runs: each chunk's rows are one slice
    seqs = [seq for seq, _ in items]
    built: dict[bytes, Chunk | None] = {}
    lo = 0
    while lo < len(items):
        number = seqs[lo] >> CHUNK_BITS
        key, base = version.prefix + u64(number), number << CHUNK_BITS
        hi = bisect_left(seqs, base + CHUNK, lo)
        chunk = None
        if txn.get(key, db=arc.db("dirty")) is None:
            new = build_chunk(base, [row for row in items[lo:hi] if row[1] is not None])
            stored = txn.get(key, db=arc.db("columns"))
            if stored is None:
                chunk = new
            else:
                touched = np.zeros(CHUNK, bool)
                touched[np.array(seqs[lo:hi], np.int64) - base] = True
                chunk = merge(decode_chunk(base, stored), new, touched)
        lo = hi
        if chunk is None:
            chunk = build_chunk(base, _records_in(txn, version, base))
        built[key] = chunk if chunk.present.any() else None
    _store(txn, version, built)
    return built


@dataclass
class Cached:
    """The columns of one version as of one generation, and arrays derived from them (plan.Context)."""

    generation: int
    chunks: list[Chunk]
    shared: dict[str, Any] = field(default_factory=dict)


def remember(version: DatasetVersion, generation: int, built: dict[bytes, Chunk | None]) -> None:
    """After a write from ``generation`` committed: the archive's cached columns of the version move to
    the next generation with the written chunks swapped in, so the writer's next query loads nothing.
    A cache of another generation (another process wrote meanwhile) is dropped."""
    cache = version.archive.column_cache
    cached = cache.pop(version.id, None)
    if cached is None or cached.generation != generation:
        return
    chunks = {c.base: c for c in cached.chunks}
    for key, chunk in built.items():
        base = U64.unpack(key[8:])[0] << CHUNK_BITS
        if chunk is None:
            chunks.pop(base, None)
        else:
            chunks[base] = chunk
    # Derived arrays stay right while no chunk changes; the agreement with the records that loading
    # checks (plan.check_chunks) holds for chunks this writer built from its own records.
    shared = cached.shared if not built else {"checked": True} if "checked" in cached.shared else {}
    cache[version.id] = Cached(generation + 1, [chunks[base] for base in sorted(chunks)], shared)
