"""Columnar side tables: the scalar fields of every frame as numpy arrays, for scans at numpy speed.

Decoding msgpack record by record tops out near half a million frames a second in Python; a
predicate over a million frames has to be an array operation instead. Each version keeps its
columns in chunks of ``CHUNK`` frame seqs in the ``columns`` sub-database, each field of a chunk its
own entry, fetched when a query first touches it (``StoredChunk``). Writers keep them current
in their own transaction (``update``): the written frames' rows are built and merged into the stored
chunk with numpy, so no query after an ingest rebuilds anything. Chunks an older writer only marked
``dirty`` are still rebuilt by the first query that needs them (from its snapshot's records, stored
when no writer holds the archive), so archives written before keep working.
"""

from __future__ import annotations

import struct
import threading
import weakref
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import lmdb
import msgpack
import numpy as np

from .. import compression, frame_groups, records
from . import packing, zones
from .packing import Damaged as _Damaged  # a field readers cannot use; StoredChunk names the chunk
from .packing import unpacker_limits
from .._accel import chunk_rows  # compiled, or its pure-Python twin
from ..layout import CHUNK_BITS, HASHED_KEY_MARK, U64, delete_prefix, entries, require_feature, text_key, u64
from ..errors import ArchiveError, MaskstoreError

if TYPE_CHECKING:
    from ..archive import DatasetVersion

CHUNK = 1 << CHUNK_BITS
T = TypeVar("T")
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

    def ids_at(self, rows: np.ndarray) -> list[str]:
        """The ids of present ``rows``, in that order."""
        return list(map(self.ids.uniques.__getitem__, self.ids.codes[rows].tolist()))

    def span(self) -> tuple[int, int, int]:
        """(frames, first row, last row): the chunk's row of the version's summary, computed once (a
        chunk's ``present`` never changes; writers make new chunks): the check of a load and the frame
        counts both ask every chunk, 2,442 of them at 10M frames."""
        if getattr(self, "_span", None) is None:
            self._span = _span_of(self.present)
        return self._span  # type: ignore[return-value]


def _span_of(present: np.ndarray) -> tuple[int, int, int]:
    count = int(np.count_nonzero(present))
    return (count, int(present.argmax()), len(present) - 1 - int(present[::-1].argmax())) if count else (0, 0, 0)


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
#
# Each field of a chunk is its own ``columns`` value, keyed chunk key (16) + field name, so a query
# copies out of LMDB only the fields it touches: loading a version reads its keys and ``present``.

PRESENT = b"_present"  # sorts before every other name: a chunk's first entry, all that loading reads
FIXED_FIELDS = (PRESENT, b"ts", b"ids", b"ctx", b"nm", b"nr", b"vo", b"vk", b"vc")
META_FIELD = b"m:"  # + text_key(path): one field per meta path
OLD_LAYOUT = b""  # the 16-byte key alone: a chunk as one msgpack map, as 0.1.0 wrote (rebuilt)
_META_KINDS = {"s": b"s", "int": b"i", "float": b"f", "bool": b"b", "present": b"p", "object": b"o"}
_KIND_OF_CODE = {code: kind for kind, code in _META_KINDS.items()}


def meta_field(path: str) -> bytes:
    return META_FIELD + text_key(path)


def field_label(name: bytes) -> str:
    """A field name as messages say it: ``timestamp``, ``meta.<path>`` (a hashed long path: its key)."""
    if name == b"ts":
        return "timestamp"
    key = name[len(META_FIELD):]
    if name.startswith(META_FIELD) and key[:1] != HASHED_KEY_MARK:
        return "meta." + key.decode("utf-8", errors="replace")
    return f"field {name[:40]!r}"


def zone_of(col: StrColumn | ValueColumn | None) -> zones.Zone | None:
    """A chunk's row of the zone map of a field, from its column (None: no frame holds a value)."""
    if col is None:
        return None
    if isinstance(col, StrColumn):
        return zones.of_texts(col.uniques, int(np.count_nonzero(col.codes >= 0)))
    return zones.of_values(_META_KINDS[col.kind].decode(), col.values[col.present])


def zone_rows(chunk: Chunk) -> dict[bytes, zones.Zone]:
    """Field name -> the chunk's row of its zone map: ``ts`` and each meta path the chunk holds."""
    rows = {b"ts": zone_of(ValueColumn("int", chunk.timestamp, chunk.present))}
    rows.update((meta_field(path), zone_of(col)) for path, col in chunk.meta.items())
    return {name: row for name, row in rows.items() if row is not None}


def _pad8(n: int) -> int:
    return n + -n % 8


def _encode_str(col: StrColumn) -> bytes:
    """The codes, packed, then the texts as one msgpack array of str (msgpack builds a million strs
    in C five times faster than Python slices and decodes them from UTF-8 offsets)."""
    return packing.pack_ints(col.codes) + msgpack.packb(col.uniques)


ID_PLAIN, ID_ZSTD = 0, 1  # byte 0 of an ``ids`` field: how its body is stored


def _encode_ids(present: np.ndarray, col: StrColumn) -> bytes:
    """The present rows' ids in row order, each a msgpack str, after their sizes (1, 2 or 4 bytes
    each): one id is a slice, so a query makes Python strs only for the rows it returns. Ids all of
    one size are stored byte-shuffled (a column of one byte of every id, then the next), and the body
    is zstd-compressed when that is smaller (ids of neighbouring frames mostly repeat each other):
    small enough to sit in the LMDB page beside the chunk's keys."""
    texts = [col.uniques[code] for code in col.codes[present].tolist()]
    packed = msgpack.packb(texts)
    packed = packed[1 if len(texts) < 16 else 3 if len(texts) < 1 << 16 else 5:]  # the array header off
    lengths = np.fromiter(map(len, map(str.encode, texts)), np.int64, len(texts))
    sizes = lengths + np.select([lengths < 32, lengths < 1 << 8, lengths < 1 << 16], [1, 2, 3], 5)
    width = 1 if not len(sizes) or sizes.max() < 1 << 8 else 2 if sizes.max() < 1 << 16 else 4
    shuffled = len(sizes) > 1 and bool((sizes == sizes[0]).all())
    if shuffled:  # byte j of every id together: ids that count up compress about seven times better
        packed = np.frombuffer(packed, np.uint8).reshape(len(sizes), -1).T.tobytes()
    body = sizes.astype(f"<u{width}").tobytes() + packed
    squeezed = compression.compress_plain(body)
    method, body = (ID_ZSTD, squeezed) if len(squeezed) < len(body) else (ID_PLAIN, body)
    return bytes((method, width, int(shuffled), 0)) + struct.pack("<I", len(texts)) + body


class IdTexts:
    """A stored chunk's ids as stored (msgpack strs of the present rows in row order, after their
    sizes; or byte-shuffled, ``shuffled``: byte j of every id in row ``j`` of a 2-D view): ``take`` turns
    only the rows asked for into Python strs, in one msgpack call."""

    def __init__(self, present: np.ndarray, text: np.ndarray, sizes: np.ndarray, shuffled: bool) -> None:
        self.present, self.text, self.sizes = present, text, sizes  # kept per chunk: no more than that
        self.rank = np.cumsum(present, dtype=np.int16) - 1  # row -> its entry (rows asked for are present)
        self.shuffled = text.reshape(int(sizes[0]), -1) if shuffled else None

    def byte(self, k: int, which: np.ndarray) -> np.ndarray:
        """Byte ``k`` of the ``which`` entries (each longer than k): to check their str headers."""
        if self.shuffled is not None:
            return self.shuffled[k][which]
        return self.text[(np.cumsum(self.sizes, dtype=np.int64) - self.sizes)[which] + k]

    def take(self, rows: np.ndarray) -> list[str]:
        """The ids of present ``rows`` (row numbers in the chunk), in that order."""
        entries = self.rank[rows]
        if not len(entries):
            return []
        every = len(entries) == len(self.sizes) and bool((entries[1:] > entries[:-1]).all())
        if self.shuffled is not None:  # the selected ids' columns, back to one id after another
            picked = (self.shuffled if every else self.shuffled[:, entries]).T.tobytes()
        elif every:
            picked = self.text.tobytes()
        else:
            starts = np.cumsum(self.sizes, dtype=np.int64) - self.sizes
            sizes = self.sizes[entries].astype(np.int64)
            ends = np.cumsum(sizes)
            picked = self.text[np.repeat(starts[entries] - (ends - sizes), sizes) + np.arange(ends[-1])].tobytes()
        try:
            return msgpack.unpackb(b"\xdd" + struct.pack(">I", len(entries)) + picked, raw=False)
        except UnicodeDecodeError:
            raise _Damaged("ids holds texts that are not UTF-8") from None

    def column(self) -> StrColumn:
        """Every id, as the string column queries over ``id`` scan."""
        return StrColumn(self.take(np.flatnonzero(self.present)), np.where(self.present, self.rank, -1).astype(np.int32))


def _str_header_sizes(ids: IdTexts) -> np.ndarray:
    """Per entry, the size its msgpack str header declares (header included; -1: not a str header)."""
    every = np.ones(len(ids.sizes), bool)
    heads = ids.byte(0, every).astype(np.int64)
    declared = np.where((heads & 0xE0) == 0xA0, 1 + (heads & 0x1F), -1)
    for code, head_size in ((0xD9, 2), (0xDA, 3), (0xDB, 5)):
        mine = heads == code
        if mine.any():
            if (ids.sizes[mine] < head_size).any():
                return np.full(len(heads), -1)
            length = np.zeros(np.count_nonzero(mine), np.int64)
            for k in range(1, head_size):
                length = length << 8 | ids.byte(k, mine)
            declared[mine] = head_size + length
    return declared


def _decode_ids(present: np.ndarray, data: bytes) -> IdTexts:
    if len(data) < 8 or data[0] not in (ID_PLAIN, ID_ZSTD) or data[1] not in (1, 2, 4) or data[2] > 1 or data[3]:
        raise _Damaged("ids has no header")
    width, count = data[1], struct.unpack_from("<I", data, 4)[0]
    if count != np.count_nonzero(present):
        raise _Damaged(f"ids holds {count} ids for {np.count_nonzero(present)} frames")
    body = memoryview(data)[8:]
    if data[0] == ID_ZSTD:
        try:
            most = count * (width + min(1 << 8 * width, records.MAX_RECORD_BYTES))  # each size fits its width
            body = memoryview(compression.decompress_plain(body, most))
        except ValueError as exc:
            raise _Damaged(f"ids is damaged: {exc}") from None
    sizes = _array(body, f"<u{width}", count, "ids sizes")
    text = np.frombuffer(body, np.uint8, offset=width * count)
    shuffled = bool(data[2])
    if int(sizes.sum(dtype=np.int64)) != len(text) or (count and sizes.min() < 1) or \
            (shuffled and (count < 2 or (sizes != sizes[0]).any())):
        raise _Damaged("ids sizes do not frame its texts")
    ids = IdTexts(present, text, sizes, shuffled)
    if count and (_str_header_sizes(ids) != sizes).any():
        raise _Damaged("ids sizes do not frame its texts as msgpack strs")
    return ids


def _encode_meta(path: str, col: StrColumn | ValueColumn) -> bytes:
    """Kind, the path (a hashed key does not give it back), then presence bits and packed values."""
    kind = "s" if isinstance(col, StrColumn) else col.kind
    raw = path.encode("utf-8")
    head = _META_KINDS[kind] + bytes(3) + struct.pack("<I", len(raw)) + raw + bytes(_pad8(len(raw)) - len(raw))
    if isinstance(col, StrColumn):
        return head + _encode_str(col)
    body = packing.pack_bits(col.present)
    if kind == "object":
        body += msgpack.packb(col.values.tolist())
    elif kind != "present":
        body += packing.pack_bits(col.values) if kind == "bool" else \
            {"int": packing.pack_ints, "float": packing.pack_floats}[kind](col.values, present=col.present)
    return head + body


def encode_fields(chunk: Chunk) -> dict[bytes, bytes]:
    """Field name -> stored value of every field of ``chunk``, numbers packed (``packing``)."""
    present = chunk.present
    fields = {PRESENT: packing.pack_bits(present), b"ts": packing.pack_ints(chunk.timestamp, present=present),
              b"ids": _encode_ids(present, chunk.ids), b"ctx": _encode_str(chunk.context),
              b"nm": packing.pack_ints(chunk.n_masks, present=present),
              b"nr": packing.pack_ints(chunk.n_rois, present=present),
              b"vo": packing.pack_ints(np.diff(chunk.value_offsets)),
              b"vk": packing.pack_ints(chunk.value_keys, table=True), b"vc": packing.pack_ints(chunk.value_counts)}
    fields.update((meta_field(path), _encode_meta(path, col)) for path, col in chunk.meta.items())
    return fields


def _array(data: bytes, dtype: Any, length: int, field: str, offset: int = 0) -> np.ndarray:
    """``length`` items of ``dtype`` at ``offset``."""
    if len(data) - offset < length * np.dtype(dtype).itemsize:
        raise _Damaged(f"{field} is not {length} {np.dtype(dtype).name} values")
    return np.frombuffer(data, dtype, length, offset)


def _exactly(data: bytes, dtype: Any, length: int, field: str) -> np.ndarray:
    if len(data) != length * np.dtype(dtype).itemsize:
        raise _Damaged(f"{field} is {len(data)} bytes, not {length} {np.dtype(dtype).name} values")
    return _array(data, dtype, length, field)


def _whole(unpacked: tuple[np.ndarray, int], data: bytes, field: str) -> np.ndarray:
    """The array an unpack gave, if it ends where the value does."""
    values, end = unpacked
    if end != len(data):
        raise _Damaged(f"{field} has {len(data) - end} bytes after its values")
    return values


def _ints(data: bytes, field: str, length: int = CHUNK, within: tuple[int, int] | None = None,
          dtype: Any = np.int64, present: np.ndarray | None = None) -> np.ndarray:
    return _whole(packing.unpack_ints(data, 0, length, field, within, dtype, present), data, field)


def _decode_str(data: bytes, field: str, offset: int = 0) -> StrColumn:
    codes, offset = packing.unpack_ints(data, offset, CHUNK, field, (-1, CHUNK - 1))
    rest = memoryview(data)[offset:]
    try:
        texts = msgpack.unpackb(rest, **unpacker_limits(len(rest)))
    except UnicodeDecodeError:
        raise _Damaged(f"{field} holds texts that are not UTF-8") from None
    except (ValueError, msgpack.UnpackException, TypeError) as exc:
        raise _Damaged(f"{field} texts are not a msgpack array: {exc or type(exc).__name__}") from None
    if type(texts) is not list or len(texts) > CHUNK or not _all_str(texts):
        raise _Damaged(f"{field} texts are not a list of at most {CHUNK} strings")
    if len(codes) and (codes.min() < -1 or codes.max() >= len(texts)):
        raise _Damaged(f"{field} has codes outside its {len(texts)} texts")
    return StrColumn(texts, codes.astype(np.int32, copy=False))


def _all_str(items: list[Any]) -> bool:
    try:
        "".join(items)  # C-level: every item a str
    except TypeError:
        return False
    return True


def _meta_path(data: bytes, field: str) -> tuple[str, str, int]:
    """(kind, path, where the payload starts) of a stored meta column."""
    if len(data) < 8 or data[:1] not in _KIND_OF_CODE or data[1:4] != bytes(3):
        raise _Damaged(f"{field} has no meta column header")
    size = struct.unpack_from("<I", data, 4)[0]
    start = 8 + _pad8(size)
    if len(data) < start:
        raise _Damaged(f"{field} is shorter than its path")
    try:
        return _KIND_OF_CODE[data[:1]], data[8:8 + size].decode("utf-8"), start
    except UnicodeDecodeError:
        raise _Damaged(f"{field} has a path that is not UTF-8") from None


def _decode_meta(path: str, data: bytes, present: np.ndarray) -> StrColumn | ValueColumn:
    field = f"meta.{path}"
    kind, stored_path, start = _meta_path(data, field)
    if stored_path != path:
        raise _Damaged(f"{field} holds the column of another path")
    if kind == "s":
        col: StrColumn | ValueColumn = _decode_str(data, field, start)
        has = col.codes >= 0
    else:
        has, start = packing.unpack_bits(data, start, CHUNK, field + " presence")
        if kind == "present":
            values = _whole((has, start), data, field)
        elif kind == "object":
            try:
                values = msgpack.unpackb(memoryview(data)[start:], **unpacker_limits(len(data) - start))
            except (ValueError, msgpack.UnpackException, TypeError) as exc:
                raise _Damaged(f"{field} is not {CHUNK} numbers: {exc}") from None
            if type(values) is not list or len(values) != CHUNK or \
                    not all(type(x) is int or type(x) is float for x in values):
                raise _Damaged(f"{field} is not {CHUNK} numbers")
            values = np.array(values, dtype=object)
        else:
            values = _whole(packing.unpack_bits(data, start, CHUNK, field) if kind == "bool" else
                            packing.unpack_floats(data, start, CHUNK, field, has) if kind == "float" else
                            packing.unpack_ints(data, start, CHUNK, field, present=has), data, field)
        col = ValueColumn(kind, values, has)
    if (has & ~present).any():
        raise _Damaged(f"{field} has values where no frame lives")
    return col


MAX_VALUES_PER_FRAME = 1 << 24  # distinct RGB values


def _values(present: np.ndarray, vo: bytes, vk: bytes, vc: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CSR offsets from the stored values per row, then the keys and counts they index."""
    sizes = _ints(vo, "vo", within=(0, MAX_VALUES_PER_FRAME))
    if sizes[~present].any():
        raise _Damaged("vo gives values to absent frames")
    offsets = np.zeros(CHUNK + 1, np.int64)
    np.cumsum(sizes, out=offsets[1:])
    total = int(offsets[-1])  # vk and vc each say how many numbers they hold: a lying vo stops here
    keys = _ints(vk, "vk", total, (0, 0xFFFFFF), np.uint32)
    counts = _ints(vc, "vc", total, (0, records.MAX_FRAME_PIXELS))
    return offsets, keys, counts


def _str_of_frames(present: np.ndarray, data: bytes, field: str) -> StrColumn:
    col = _decode_str(data, field)  # the texts end where the value does: no bytes after them
    if ((col.codes >= 0) != present).any():
        raise _Damaged(f"{field} disagrees with the present frames")
    return col


def _row_counts(present: np.ndarray, data: bytes, field: str) -> np.ndarray:
    return _ints(data, field, within=(0, 2**31 - 1), dtype=np.int32, present=present)


# Chunk attribute(s) <- the stored fields they come from, and how (each checked against ``present``:
# O(CHUNK) numpy work, so queries can index with these arrays without bounds surprises).
_DECODERS: dict[tuple[str, ...], tuple[tuple[bytes, ...], Any]] = {
    ("timestamp",): ((b"ts",), lambda present, ts: (_ints(ts, "ts", present=present),)),
    ("id_texts",): ((b"ids",), lambda present, data: (_decode_ids(present, data),)),
    ("context",): ((b"ctx",), lambda present, data: (_str_of_frames(present, data, "ctx"),)),
    ("n_masks",): ((b"nm",), lambda present, nm: (_row_counts(present, nm, "nm"),)),
    ("n_rois",): ((b"nr",), lambda present, nr: (_row_counts(present, nr, "nr"),)),
    ("value_offsets", "value_keys", "value_counts"): ((b"vo", b"vk", b"vc"), _values),
}
_DECODER_OF = {name: names for names in _DECODERS for name in names}


def _present(data: bytes) -> np.ndarray:
    """One bit a row, little-endian: 512 bytes, small enough for LMDB to keep beside the chunk's keys."""
    return np.unpackbits(_exactly(data, np.uint8, CHUNK // 8, "_present"), count=CHUNK, bitorder="little").view(np.bool_)


def _present_as_summarized(data: bytes, span: tuple[int, int, int]) -> np.ndarray:
    present = _present(data)
    if _span_of(present) != span:
        raise _Damaged(f"_present holds {_span_of(present)} (frames, first row, last row), the version's summary "
                       f"{span}")
    return present


class StoredChunk(Chunk):
    """A stored chunk whose fields are fetched (``fetch``: field name -> value or None) and checked on
    first use: a fresh process's first query on millions of frames would otherwise copy every field
    out of LMDB (about 135 bytes a frame) to read ``present``. ``names`` lists the chunk's field names,
    for the few callers that walk every meta column (writers' merges, check)."""

    def __init__(self, base: int, fetch: Callable[[bytes], bytes | None],
                 names: Callable[[], Iterable[bytes]], span: tuple[int, int, int] | None = None) -> None:  # noqa: D107
        self.base = base
        self._fetch = fetch
        self.meta = _LazyMeta(self, names)
        self._span = span  # from the version's summary: ``present`` comes when a query touches the chunk
        if span is None:
            self.present = self._decoded(lambda: _present(self._field(PRESENT)))
            self._span = _span_of(self.present)

    def _meta_name(self, name: bytes) -> str:
        """The path of meta field ``name``; a hashed key (a long path) gives it only with its value."""
        if not name.startswith(META_FIELD) or len(name) == len(META_FIELD):
            raise _Damaged(f"unknown field {name[:40]!r}")
        key = name[len(META_FIELD):]
        if key[:1] != HASHED_KEY_MARK:
            try:
                return key.decode("utf-8")
            except UnicodeDecodeError:
                raise _Damaged(f"field {name[:40]!r} names a path that is not UTF-8") from None
        path = _meta_path(self._field(name), f"field {name[:40]!r}")[1]
        if text_key(path) != key:
            raise _Damaged(f"field {name[:40]!r} holds the column of another path")
        return path

    def _field(self, name: bytes) -> bytes:
        data = self._fetch(name)
        if data is None:
            raise _Damaged(f"{name.decode(errors='replace')} is missing")
        return data

    def _decoded(self, decode: Callable[[], Any]) -> Any:
        try:
            return decode()
        except _Damaged as exc:
            raise _archive_error(self.base, str(exc)) from None

    def ids_at(self, rows: np.ndarray) -> list[str]:
        """The ids of present ``rows``, from the stored bytes: no str made for any other row."""
        return self._decoded(lambda: self.id_texts.take(rows))

    def __getattr__(self, name: str) -> Any:
        """Called only for a field not decoded yet: fetch and decode it (and its group), keep it."""
        if name == "ids":  # scans over ids and merges need every id as a string column
            self.ids = self._decoded(lambda: self.id_texts.column())
            return self.ids
        if name == "present":
            self.present = self._decoded(lambda: _present_as_summarized(self._field(PRESENT), self._span))
            return self.present
        names = _DECODER_OF.get(name)
        if names is None:
            raise AttributeError(name)
        fields, decode = _DECODERS[names]
        values = self._decoded(lambda: decode(self.present, *(self._field(f) for f in fields)))
        for attr, value in zip(names, values):
            setattr(self, attr, value)
        return getattr(self, name)


class _LazyMeta(Mapping):
    """A stored chunk's meta columns by path, each fetched and decoded when a query first asks for it
    (``get``); the paths it has are listed from the chunk's keys only when something walks them."""

    def __init__(self, chunk: StoredChunk, names: Callable[[], Iterable[bytes]]) -> None:
        self._chunk, self._list_names = chunk, names
        self._columns: dict[str, StrColumn | ValueColumn] = {}
        self._paths: list[str] | None = None

    def __getitem__(self, path: str) -> StrColumn | ValueColumn:
        if path not in self._columns:
            chunk = self._chunk
            data = chunk._fetch(meta_field(path))
            if data is None:
                raise KeyError(path)
            self._columns[path] = chunk._decoded(lambda: _decode_meta(path, data, chunk.present))
        return self._columns[path]

    def _walk(self) -> list[str]:
        if self._paths is None:
            names = set(self._chunk._decoded(lambda: list(self._list_names())))
            if missing := [n.decode() for n in FIXED_FIELDS if n not in names]:
                raise _archive_error(self._chunk.base, f"fields {', '.join(missing)} are missing")
            self._paths = [self._chunk._decoded(lambda: self._chunk._meta_name(name))
                           for name in sorted(names.difference(FIXED_FIELDS))]
        return self._paths

    def __iter__(self) -> Iterator[str]:
        return iter(self._walk())

    def __len__(self) -> int:
        return len(self._walk())


def _archive_error(base: int, why: str) -> ArchiveError:
    return ArchiveError(f"the scan columns of frames {base}..{base + CHUNK - 1} are damaged: {why}; "
                        "run maskstore check --repair to rebuild them")


def decode_fields(base: int, fields: Mapping[bytes, bytes]) -> Chunk:
    """A chunk from its stored fields, every one decoded now, or ArchiveError naming its frames and the
    field when it is not one this module wrote (``maskstore check``, Dask workers, tests)."""
    chunk = StoredChunk(base, fields.get, fields.keys)
    for names in (*_DECODERS, ("ids",)):
        getattr(chunk, names[0])
    for path in chunk.meta:
        chunk.meta[path]
    return chunk


def chunk_fields(txn: lmdb.Transaction, version: DatasetVersion, number: int) -> dict[bytes, bytes]:
    """Field name -> stored value of one chunk as of ``txn`` (``OLD_LAYOUT``: a chunk as 0.1.0 wrote it)."""
    key = version.prefix + u64(number)
    return {bytes(k[16:]): v for k, v in entries(txn, version.archive.db("columns"), key)}


def stored_chunk(txn: lmdb.Transaction, version: DatasetVersion, number: int) -> Chunk | None:
    """Chunk ``number`` as stored, fully decoded, or None when only its records can give it (no fields,
    a dirty mark, or the layout of 0.1.0)."""
    fields = chunk_fields(txn, version, number)
    if not fields or OLD_LAYOUT in fields or txn.get(version.prefix + u64(number), db=version.archive.db("dirty")):
        return None
    return decode_fields(number << CHUNK_BITS, fields)


def _records_in(txn: lmdb.Transaction, version: DatasetVersion, base: int) -> Iterator[tuple[int, bytes]]:
    """The frame records of one chunk, plain (decompressed), each checked by decoding it (ArchiveError when damaged)."""
    for seq, plain in frame_groups.Records(txn, version.archive, version.prefix).items(base, base + CHUNK):
        records.decode_frame(plain, f"frame seq {seq}")
        yield seq, plain


def records_chunk(txn: lmdb.Transaction, version: DatasetVersion, number: int) -> Chunk:
    """Chunk ``number`` built from the records of ``txn``."""
    base = number << CHUNK_BITS
    return build_chunk(base, _records_in(txn, version, base))


def _dirty_keys(txn: lmdb.Transaction, version: DatasetVersion) -> list[bytes]:
    keys = [bytes(key) for key, _ in entries(txn, version.archive.db("dirty"), version.prefix)]
    if bad := [key for key in keys if len(key) != 16 or U64.unpack(key[8:])[0] >= 1 << (64 - CHUNK_BITS)]:
        raise ArchiveError(f"dirty entry {bad[0].hex()} is damaged: its key is not a version id and a chunk "
                           "number; run maskstore check --repair")
    return keys


def _chunk_heads(txn: lmdb.Transaction, version: DatasetVersion) -> dict[bytes, bytes]:
    """Chunk key -> the name of its first entry (``PRESENT``; ``OLD_LAYOUT`` for a chunk of 0.1.0). The
    cursor jumps from chunk to chunk, landing on first entries only: py-lmdb touches every page of the
    value it lands on, so walking all keys would map every column of the version."""
    prefix, out = version.prefix, {}
    cursor = txn.cursor(db=version.archive.db("columns"))
    seek = prefix
    while cursor.set_range(seek):
        key = cursor.key()
        if not key.startswith(prefix):
            break
        if len(key) == len(prefix):  # the version's summary
            seek = prefix + bytes(8)
            continue
        if len(key) < 16:
            raise ArchiveError(f"columns entry {bytes(key).hex()} is damaged: its key is shorter than a "
                               "version id and a chunk number; run maskstore check --repair")
        if key[8:16] == zones.MARK:  # the zone maps, after every chunk
            break
        out[bytes(key[:16])] = bytes(key[16:])
        seek = prefix + u64(U64.unpack(key[8:16])[0] + 1)
    return out


def _chunk_names(txn: lmdb.Transaction, arc: Any, key: bytes) -> list[bytes]:
    """The field names of chunk ``key`` (its values' pages are touched: for writers and check)."""
    cursor = txn.cursor(db=arc.db("columns"))
    names = []
    if cursor.set_range(key):
        for found in cursor.iternext(keys=True, values=False):
            if not found.startswith(key):
                break
            names.append(bytes(found[16:]))
    return names


def _build_dirty(txn: lmdb.Transaction, version: DatasetVersion, keys: list[bytes]) -> dict[bytes, Chunk | None]:
    """The given dirty chunks built from the records of ``txn`` (None: no frame lives there now)."""
    built: dict[bytes, Chunk | None] = {}
    for key in keys:
        chunk = records_chunk(txn, version, U64.unpack(key[8:])[0])
        built[key] = chunk if chunk.present.any() else None
    return built


# ------------------------------------------------------------------------------ the version's summary
#
# One entry per version, ``columns/u64(v)`` (8 bytes, so before every chunk of the version): per chunk
# its number, frames, first and last row. A fresh query reads it instead of every chunk's ``_present``
# (each a page of the map, which this kernel maps with ~192 KiB around it), and checks the records
# against it with O(1) probes (``plan.check_chunks``); a chunk's ``_present`` is checked against its row
# when a query first touches the chunk. Writers keep it current in the transaction that stores chunks.

SUMMARY_ROW = np.dtype([("chunk", "<u8"), ("count", "<u4"), ("first", "<u2"), ("last", "<u2")])


def summary_rows(data: bytes) -> list[tuple[int, int, int, int]]:
    """(chunk, frames, first row, last row) of a stored summary, or ArchiveError saying why not."""
    if len(data) % SUMMARY_ROW.itemsize:
        raise ArchiveError(f"the scan column summary is damaged: it is {len(data)} bytes, not whole rows of "
                           f"{SUMMARY_ROW.itemsize}")
    rows = np.frombuffer(data, SUMMARY_ROW)
    number = rows["chunk"]
    count, first, last = (rows[name].astype(np.int64) for name in ("count", "first", "last"))
    if (count < 1).any() or (count > CHUNK).any() or (last >= CHUNK).any() or (last - first + 1 < count).any() \
            or ((count == 1) & (first != last)).any() or (number >= 1 << (64 - CHUNK_BITS)).any() \
            or (number[1:] <= number[:-1]).any():
        raise ArchiveError("the scan column summary is damaged: its rows are not increasing chunks of 1 to 4096 "
                           "frames between their first and last row")
    return rows.tolist()


def read_summary(txn: lmdb.Transaction, version: DatasetVersion,
                 data: bytes | None = None) -> list[tuple[int, int, int, int]] | None:
    """The version's summary rows (stored, or its value ``data``); None when it has none (written
    before summaries: its chunks are walked)."""
    if data is None:
        data = txn.get(version.prefix, db=version.archive.db("columns"))
    if data is None:
        return None
    try:
        return summary_rows(data)
    except ArchiveError as exc:
        rec = version.record(txn)
        raise ArchiveError(f"{rec['dataset']}/{rec['name']}: {exc}; run maskstore check --repair") from None


def _summary_before(txn: lmdb.Transaction, version: DatasetVersion,
                    built: dict[bytes, Chunk | None]) -> dict[int, tuple[int, int, int]]:
    """Chunk number -> span of the stored chunks, before ``built`` is stored. Without a (sound) summary,
    from every chunk's ``_present``; chunks only the records can give (0.1.0's, damaged) join ``built``."""
    try:
        rows = read_summary(txn, version)
    except ArchiveError:
        rows = None  # rebuilt from the chunks below
    if rows is not None:
        return {number: (count, first, last) for number, count, first, last in rows}
    db, out = version.archive.db("columns"), {}
    for key, head in _chunk_heads(txn, version).items():
        if key in built:
            continue
        number = U64.unpack(key[8:])[0]
        try:
            span = _span_of(_present(txn.get(key + PRESENT, db=db) or b"")) if head == PRESENT else (0, 0, 0)
        except _Damaged:
            span = (0, 0, 0)
        if span[0]:
            out[number] = span
        else:
            chunk = records_chunk(txn, version, number)
            built[key] = chunk if chunk.present.any() else None
    return out


Zones = dict[tuple[int, bytes], zones.Table]  # (block, field name) -> that block's rows of the field's zone map


def _stored_in(txn: lmdb.Transaction, version: DatasetVersion, key: bytes,
               names: Callable[[], Iterable[bytes]]) -> StoredChunk:
    """Chunk ``key`` as a writer's transaction holds it, each field fetched when first touched."""
    db = version.archive.db("columns")
    return StoredChunk(U64.unpack(key[8:])[0] << CHUNK_BITS, lambda name: txn.get(key + name, db=db), names)


def _zones_before(txn: lmdb.Transaction, version: DatasetVersion, built: dict[bytes, Chunk | None],
                  stored: Iterable[int]) -> Zones:
    """The zone maps of the blocks ``built`` touches, before it is stored. A version without zone maps
    (stored before them, or after a repair), or with a damaged one, gets them for every ``stored``
    chunk from its columns, once (its marker is deleted, so every block is written); chunks only the
    records can give join ``built``."""
    db, mark = version.archive.db("columns"), version.prefix + zones.MARK
    if txn.get(mark, db=db) is not None:
        tables: Zones = {}
        try:
            for block in zones.blocks(np.array([U64.unpack(key[8:])[0] for key in built], np.uint64)):
                for key, data in entries(txn, db, mark + u64(block)):
                    name = bytes(key[len(mark) + 8:])
                    tables[block, name] = zones.read(_slot(version, block, name), data, field_label(name))
            return tables
        except ArchiveError:
            txn.delete(mark, db=db)
    rows: dict[tuple[int, bytes], dict[int, zones.Zone]] = {}
    for number in stored:
        key = version.prefix + u64(number)
        if key in built:
            continue
        chunk = _stored_in(txn, version, key, partial(_chunk_names, txn, version.archive, key))
        try:
            for name, row in zone_rows(chunk).items():
                rows.setdefault((number >> zones.BLOCK_BITS, name), {})[number] = row
        except ArchiveError:
            built[key] = records_chunk(txn, version, number)
    return {where: zones.Table.of(table) for where, table in rows.items()}


def _store(txn: lmdb.Transaction, version: DatasetVersion, built: dict[bytes, Chunk | None]) -> None:
    """Write built chunks and clear their dirty marks (in a write transaction), the version's summary
    and its zone maps. Only fields whose bytes changed are put; fields the chunk no longer has (and a
    0.1.0 chunk value) are deleted."""
    arc = version.archive
    db = arc.db("columns")
    summary = _summary_before(txn, version, built)
    tables = _zones_before(txn, version, built, list(summary))
    new_rows: dict[tuple[int, bytes], dict[int, zones.Zone]] = {}
    for key, chunk in built.items():
        fields = {} if chunk is None else encode_fields(chunk)
        stale = []
        for name_key, value in entries(txn, db, key):
            name = bytes(name_key[16:])
            if name not in fields:
                stale.append(bytes(name_key))
            elif fields[name] == value:
                del fields[name]
        for name_key in stale:
            txn.delete(name_key, db=db)
        for name, value in fields.items():
            txn.put(key + name, value, db=db)
        txn.delete(key, db=arc.db("dirty"))
        number = U64.unpack(key[8:])[0]
        if chunk is None:
            summary.pop(number, None)
            continue
        summary[number] = chunk.span()
        for name, row in zone_rows(chunk).items():
            new_rows.setdefault((number >> zones.BLOCK_BITS, name), {})[number] = row
    rows = np.array([(number, *span) for number, span in sorted(summary.items())], SUMMARY_ROW)
    txn.put(version.prefix, rows.tobytes(), db=db)
    _store_zones(txn, version, tables, new_rows, np.array([U64.unpack(key[8:])[0] for key in built], np.uint64))
    # chunks stored field by field, a summary and zone maps: readers without the features must refuse
    require_feature(txn, arc.db("meta"), records.COLUMN_FIELDS)
    require_feature(txn, arc.db("meta"), records.COLUMN_ZONES)


def _store_zones(txn: lmdb.Transaction, version: DatasetVersion, tables: Zones,
                 new_rows: dict[tuple[int, bytes], dict[int, zones.Zone]], numbers: np.ndarray) -> None:
    """The zone maps with the rows of chunks ``numbers`` replaced by ``new_rows``: only the entries of
    the blocks they fall in, every entry when the version did not keep zone maps yet."""
    db, mark = version.archive.db("columns"), version.prefix + zones.MARK
    if txn.get(mark, db=db) is None:
        delete_prefix(txn, db, mark)  # leftovers of a damaged or stale set
        txn.put(mark, b"", db=db)
    empty = zones.Table.of({})
    for block, name in tables.keys() | new_rows.keys():
        table = tables.get((block, name), empty).replaced(numbers, new_rows.get((block, name), {}))
        if len(table):
            data = table.encode()
            txn.put(zones.key(version.prefix, block, name), data, db=db)
            zones.keep(_slot(version, block, name), data, table)  # by content: right whether or not this commits
        else:
            txn.delete(zones.key(version.prefix, block, name), db=db)


def _slot(version: DatasetVersion, block: int, name: bytes) -> zones.Slot:
    return str(version.archive.path), version.prefix, block, name


def refresh(version: DatasetVersion) -> None:
    """Build and store every dirty chunk of a writable archive now, waiting for the writer lock: for
    writers (the end of ``maskstore ingest``), so no later query has to rebuild them."""
    if not version.archive.readonly:
        version.archive.write(lambda txn: _store(txn, version, _build_dirty(txn, version, _to_rebuild(txn, version))))


def _to_rebuild(txn: lmdb.Transaction, version: DatasetVersion, heads: dict[bytes, bytes] | None = None) -> list[bytes]:
    """Chunk keys only the records can give: dirty marks, and chunks in the layout of 0.1.0."""
    heads = _chunk_heads(txn, version) if heads is None else heads
    return sorted(set(_dirty_keys(txn, version)).union(key for key, first in heads.items() if first == OLD_LAYOUT))


class FieldReader:
    """Where the stored chunks of one cached generation fetch their fields: the read transaction of the
    query running in this thread (``use``), which sees the same columns as any other transaction of the
    generation. Values are copied out, so no array outlives the transaction it came from. Outside a
    query (its transaction ended) a short read transaction of its own, if the generation is still it."""

    def __init__(self, version: DatasetVersion, generation: int) -> None:
        self.version, self.generation = version, generation
        self._local = threading.local()

    def use(self, txn: lmdb.Transaction) -> None:
        self._local.txn = weakref.ref(txn)  # a py-lmdb transaction holds its reader slot while it lives

    def fetch(self, key: bytes) -> bytes | None:
        db = self.version.archive.db("columns")
        return self._in_txn(lambda txn: txn.get(key, db=db))

    def names(self, chunk_key: bytes) -> list[bytes]:
        return self._in_txn(lambda txn: _chunk_names(txn, self.version.archive, chunk_key))

    def _in_txn(self, read: Callable[[lmdb.Transaction], T]) -> T:
        ref = getattr(self._local, "txn", None)
        txn = ref() if ref is not None else None
        if txn is not None:
            try:
                return read(txn)
            except lmdb.Error:  # that transaction has ended
                self._local.txn = None
        return self.version.archive.read(lambda t: read(self._current(t)))

    def _current(self, txn: lmdb.Transaction) -> lmdb.Transaction:
        rec = self.version.record(txn)
        if rec["generation"] != self.generation:
            raise MaskstoreError(f"{rec['dataset']}/{rec['name']} changed while its scan columns were in use; "
                                 "ask again")
        return txn


def load(txn: lmdb.Transaction, version: DatasetVersion, generation: int) -> Cached:
    """The version's chunks as of ``txn`` (of the version's ``generation``), from the version's summary
    (one entry; without one, each chunk's first entry, ``_present``, and the summary is stored when no
    writer holds the archive); fields come when a query touches them. Dirty chunks and chunks of
    0.1.0 are built in memory, then stored only if no writer holds the archive and the version is
    still at that generation: a read never takes or waits for the writer lock, and never fails on a
    cache write."""
    arc = version.archive
    reader = FieldReader(version, generation)
    reader.use(txn)
    summary = read_summary(txn, version, reader.fetch(version.prefix))
    if summary is None:
        heads = _chunk_heads(txn, version)
        rebuild = _to_rebuild(txn, version, heads)
        spans: dict[bytes, tuple[int, int, int] | None] = dict.fromkeys(heads)  # ``_present`` read now
    else:
        spans = {version.prefix + u64(number): (count, first, last) for number, count, first, last in summary}
        rebuild = _dirty_keys(txn, version)
    skip = set(rebuild)
    chunks: dict[bytes, Chunk | None] = {
        key: StoredChunk(U64.unpack(key[8:])[0] << CHUNK_BITS, partial(_fetch_field, reader, key),
                         partial(reader.names, key), span)
        for key, span in spans.items() if key not in skip}
    if rebuild or (summary is None and spans):
        built = _build_dirty(txn, version, rebuild)
        chunks.update(built)
        arc.try_write(lambda wtxn: _store_if_current(wtxn, version, generation, built))
    return Cached(generation, [chunk for _, chunk in sorted(chunks.items()) if chunk is not None], reader=reader,
                  rebuilt=frozenset(U64.unpack(key[8:])[0] for key in rebuild))


def _fetch_field(reader: FieldReader, key: bytes, name: bytes) -> bytes | None:
    return reader.fetch(key + name)


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
        names = _chunk_names(txn, arc, key)
        if txn.get(key, db=arc.db("dirty")) is None and OLD_LAYOUT not in names:
            new = build_chunk(base, [row for row in items[lo:hi] if row[1] is not None])
            if not names:
                chunk = new
            else:
                touched = np.zeros(CHUNK, bool)
                touched[np.array(seqs[lo:hi], np.int64) - base] = True
                stored = _stored_in(txn, version, key, lambda: names)
                chunk = merge(stored, new, touched)
        lo = hi
        if chunk is None:
            chunk = records_chunk(txn, version, number)
        built[key] = chunk if chunk.present.any() else None
    _store(txn, version, built)
    return built


@dataclass
class Cached:
    """The columns of one version as of one generation, and arrays derived from them (plan.Context)."""

    generation: int
    chunks: list[Chunk]
    shared: dict[str, Any] = field(default_factory=dict)
    reader: FieldReader | None = None  # where its stored chunks fetch fields (None: all built in memory)
    zoned: bool | None = None  # the version keeps zone maps (None: not asked yet)
    rebuilt: frozenset[int] = frozenset()  # chunks built from their records in memory: stored zone rows may be stale

    def stored_zones(self, name: bytes, blocks: list[int]) -> zones.Table | None:
        """The rows of the version's stored zone map of field ``name`` in ``blocks`` (none where no
        chunk holds the field); None when the version keeps no zone maps."""
        if self.reader is None:
            return None
        version = self.reader.version
        if self.zoned is None:  # asked once, when a query first needs a zone map: lookups never do
            self.zoned = self.reader.fetch(version.prefix + zones.MARK) is not None
        if not self.zoned:
            return None
        found = [(block, self.reader.fetch(zones.key(version.prefix, block, name))) for block in blocks]
        return zones.Table.joined([zones.read(_slot(version, block, name), data, field_label(name))
                                   for block, data in found if data is not None])

    def use(self, txn: lmdb.Transaction) -> None:
        """Let the stored chunks fetch fields through ``txn`` (a transaction of this generation)."""
        if self.reader is not None:
            self.reader.use(txn)


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
    shared = cached.shared if not built else _carried(cached.shared, built, chunks)
    if cached.reader is not None:  # the chunks it serves were not written: the next generation has them too
        cached.reader.generation = generation + 1
    written = {U64.unpack(key[8:])[0] for key in built}  # stored with their zone rows, which are kept from now on
    cache[version.id] = Cached(generation + 1, [chunks[base] for base in sorted(chunks)], shared, cached.reader,
                               True if built else cached.zoned, cached.rebuilt - written)


BASES, FRAME_COUNTS = "bases", "frame counts"  # keys of ``Cached.shared``: per chunk, as plan.Context gives them


def _carried(shared: dict[str, Any], built: dict[bytes, Chunk | None], chunks: dict[int, Chunk]) -> dict[str, Any]:
    """The derived arrays of the next generation that follow from this one's without a step per chunk:
    the check of the load, and each chunk's base and frame count (``plan.Context``) with the written
    chunks' rows replaced (made whole once), so the first query after an ingest does not walk 2,442
    chunks for them."""
    out: dict[str, Any] = {"checked": True} if "checked" in shared else {}
    if BASES in shared and FRAME_COUNTS in shared:
        written = np.array([U64.unpack(key[8:])[0] << CHUNK_BITS for key in built], np.uint64)
        kept = ~np.isin(shared[BASES], written)
        now = [base for base in written.tolist() if base in chunks]
        bases = np.concatenate((shared[BASES][kept], np.array(now, np.uint64)))
        counts = np.concatenate((shared[FRAME_COUNTS][kept], np.array([chunks[b].span()[0] for b in now], np.int64)))
        order = np.argsort(bases, kind="stable")
        out[BASES], out[FRAME_COUNTS] = bases[order], counts[order]
    else:
        out[BASES] = np.array(sorted(chunks), np.uint64)
        out[FRAME_COUNTS] = np.array([chunks[b].span()[0] for b in sorted(chunks)], np.int64)
    return out
