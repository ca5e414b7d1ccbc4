"""Narrow, exact encodings of the numeric arrays of scan-column fields (FORMAT.md, "Packed arrays").

A chunk's numbers rarely need their in-memory width: timestamps of one chunk span a few hours, a
frame has a handful of mask values out of a few dozen distinct ones, speeds have two decimals. So,
as columnar engines do per block, each array is stored in the narrowest form that gives back exactly
the same numbers: integers as offsets from the chunk's minimum in as few bytes as their range needs
(frame of reference), or as codes into a small table of their distinct values; floats as scaled
integers when a power of ten makes every value whole (DuckDB's ALP, without its exceptions), as
float32 when that is exact, else as they are; flags as bits. Decoding gives the arrays queries use
(int64, float64, bool), so nothing downstream sees the encodings.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

REFERENCE, TABLE = 0x52, 0x54  # "R": base + offsets; "T": table of distinct values + codes
FLOAT64, FLOAT32, DECIMAL = 0x46, 0x53, 0x44  # "F", "S", "D"
MAX_DECIMALS = 10  # the largest power of ten tried for scaled floats
# tag, width, 6 zero bytes, u64 count, then for integers int64: the base ("R") or table length ("T")
_HEAD = struct.Struct("<BB6xQ")
_INT_HEAD = struct.Struct("<BB6xQq")
_EXACT_FLOAT = 2**53  # integers of float64 beyond this are not all exact


class Damaged(Exception):
    """Stored bytes that are not an array these encodings wrote; the caller names the chunk."""


def unpacker_limits(n: int) -> dict[str, Any]:
    """msgpack limits for a value of ``n`` bytes: no length field may claim more than the bytes hold."""
    return dict(raw=False, strict_map_key=True, max_str_len=n, max_bin_len=n, max_array_len=n,
                max_map_len=n // 2, max_ext_len=0)


def _width(span: int) -> int:
    """Bytes an unsigned offset of at most ``span`` takes."""
    return (span.bit_length() + 7) // 8


def _narrow(offsets: np.ndarray, width: int) -> bytes:
    """Unsigned ``offsets`` (uint64) as ``width``-byte little-endian numbers."""
    if width in (0, 1, 2, 4, 8):
        return offsets.astype(f"<u{width}").tobytes() if width else b""
    return offsets.astype("<u8").view(np.uint8).reshape(-1, 8)[:, :width].tobytes()


def _widen(data: Any, at: int, n: int, width: int, field: str) -> np.ndarray:
    """``n`` unsigned ``width``-byte numbers at ``at``: uint8/16/32/64 as stored, other widths as
    uint64 (each read as 8 overlapping bytes of a padded copy, the bytes beyond it masked off)."""
    if width > 8:
        raise Damaged(f"{field} claims {width}-byte numbers")
    if len(data) < at + n * width:
        raise Damaged(f"{field} is shorter than {n} numbers of {width} bytes")
    if width in (1, 2, 4, 8):
        return np.frombuffer(data, f"<u{width}", n, at)
    if width == 0:
        return np.zeros(n, np.uint64)
    padded = np.zeros(n * width + 8, np.uint8)
    padded[:n * width] = np.frombuffer(data, np.uint8, n * width, at)
    wide = np.ndarray((n,), "<u8", padded, 0, (width,)).astype(np.uint64)
    wide &= np.uint64((1 << 8 * width) - 1)
    return wide


def pack_ints(values: np.ndarray, table: bool = False, present: np.ndarray | None = None) -> bytes:
    """Integers within int64 in the narrowest exact form: offsets from their minimum, or (``table``,
    when smaller) codes into their sorted distinct values. Rows not ``present`` (no frame, no value)
    read as 0 whatever they hold, so they are stored as the minimum of the others and widen nothing."""
    values = np.ascontiguousarray(values, np.int64)
    if present is not None and not present.all():
        values = np.where(present, values, values[present].min() if present.any() else 0)
    n = len(values)
    lo, hi = (int(values.min()), int(values.max())) if n else (0, 0)
    width = _width(hi - lo)
    plain = _INT_HEAD.pack(REFERENCE, width, n, lo) + _narrow(values.view(np.uint64) - np.uint64(lo % 2**64), width)
    if table and width > 1:
        distinct = np.unique(values)
        code_width = _width(len(distinct) - 1)
        if 8 * len(distinct) + code_width * n < width * n:
            codes = _codes(values, distinct, lo, hi).astype(np.uint64)
            return _INT_HEAD.pack(TABLE, code_width, n, len(distinct)) + distinct.astype("<i8").tobytes() + \
                _narrow(codes, code_width)
    return plain


def _codes(values: np.ndarray, distinct: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """Each value's index in ``distinct`` (sorted). A range of at most 2**24 (packed RGB keys) is
    looked up in an array over the range, of which only the pages the values fall on are touched:
    binary search over random values costs ten times more in mispredicted branches."""
    if hi - lo >= 1 << 24:
        return np.searchsorted(distinct, values)
    lookup = np.empty(hi - lo + 1, np.int32)
    lookup[distinct - lo] = np.arange(len(distinct), dtype=np.int32)
    return lookup[values - lo]


def _head(data: Any, at: int, n: int, layout: struct.Struct, field: str, what: str) -> tuple[Any, ...]:
    """The header at ``at`` (its reserved bytes zero, its count ``n``), or Damaged."""
    if len(data) < at + layout.size or bytes(data[at + 2:at + 8]) != bytes(6):
        raise Damaged(f"{field} has no {what} header")
    head = layout.unpack_from(data, at)
    if head[2] != n:
        raise Damaged(f"{field} holds {head[2]} numbers, not {n}")
    return head


def unpack_ints(data: Any, at: int, n: int, field: str, within: tuple[int, int] | None = None,
                dtype: Any = np.int64, present: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """(``n`` values, the offset after them) of ``pack_ints``'s bytes at ``at``; with ``within``
    (lowest, highest), values outside it are Damaged (checked on the table or the narrow offsets),
    and a ``dtype`` narrower than int64 holds them all; rows not ``present`` read as 0."""
    values, end = _unpack_ints(data, at, n, field, within, dtype)
    if present is not None and not present.all():
        values[~present] = 0
    return values, end


def _unpack_ints(data: Any, at: int, n: int, field: str, within: tuple[int, int] | None,
                 dtype: Any) -> tuple[np.ndarray, int]:
    tag, width, _, number = _head(data, at, n, _INT_HEAD, field, "packed-integer")
    start = at + _INT_HEAD.size
    if tag == REFERENCE:
        offsets = _widen(data, start, n, width, field)
        if within and n and not within[0] <= number <= number + int(offsets.max()) <= within[1]:
            raise Damaged(f"{field} holds values outside {within[0]}..{within[1]}")
        values = offsets.astype(np.uint64, copy=width in (1, 2, 4, 8))  # those widths view the stored bytes
        values += np.uint64(number % 2**64)  # in place, modulo 2**64
        return values.view(np.int64).astype(dtype, copy=False), start + n * width
    if tag != TABLE:
        raise Damaged(f"{field} has no packed-integer header (tag {tag:#04x})")
    if number < (1 if n else 0) or len(data) < start + 8 * number:
        raise Damaged(f"{field} has a table of {number} values that its bytes do not hold")
    distinct = np.frombuffer(data, "<i8", number, start)
    codes = _widen(data, start + 8 * number, n, width, field)
    if n and int(codes.max()) >= number:
        raise Damaged(f"{field} has codes beyond its table of {number} values")
    if within and n and not within[0] <= int(distinct.min()) <= int(distinct.max()) <= within[1]:
        raise Damaged(f"{field} holds values outside {within[0]}..{within[1]}")
    # the (tiny) table takes the result's type first, so the one array of n values is made once
    return np.take(distinct.astype(dtype), codes), start + 8 * number + n * width


def pack_floats(values: np.ndarray, present: np.ndarray | None = None) -> bytes:
    """Floats in the narrowest form that gives back every bit (NaN payloads and -0.0 included) of
    the ``present`` rows; the others read as 0.0."""
    values = np.ascontiguousarray(values, np.float64)
    if present is not None and not present.all():
        values = np.where(present, values, 0.0)
    n, bits = len(values), values.view(np.int64)
    forms = [_HEAD.pack(FLOAT64, 8, n) + values.astype("<f8").tobytes()]
    with np.errstate(over="ignore", invalid="ignore"):  # values float32 or scaling cannot hold are not chosen
        single = values.astype(np.float32)
        if (single.astype(np.float64).view(np.int64) == bits).all():
            forms.append(_HEAD.pack(FLOAT32, 4, n) + single.astype("<f4").tobytes())
        if np.isfinite(values).all():
            for decimals in range(MAX_DECIMALS + 1):
                scaled = np.round(values * 10.0**decimals)
                if n and np.abs(scaled).max() >= _EXACT_FLOAT:
                    break
                whole = scaled.astype(np.int64)
                if (_scaled_back(whole, decimals).view(np.int64) == bits).all():
                    forms.append(_HEAD.pack(DECIMAL, decimals, n) + pack_ints(whole, present=present))
                    break
    return min(forms, key=len)


def _scaled_back(whole: np.ndarray, decimals: int) -> np.ndarray:
    """What a DECIMAL array decodes to: one IEEE division, so the writer can check it bit for bit."""
    return whole.astype(np.float64) / 10.0**decimals


def unpack_floats(data: Any, at: int, n: int, field: str,
                  present: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """(``n`` float64 values, the offset after them) of ``pack_floats``'s bytes at ``at``."""
    tag, width, _ = _head(data, at, n, _HEAD, field, "packed-float")
    start = at + _HEAD.size
    if tag == DECIMAL:
        if width > MAX_DECIMALS:
            raise Damaged(f"{field} claims {width} decimals")
        whole, end = unpack_ints(data, start, n, field, present=present)
        return _scaled_back(whole, width), end
    dtype = {(FLOAT64, 8): "<f8", (FLOAT32, 4): "<f4"}.get((tag, width))
    if dtype is None:
        raise Damaged(f"{field} has no packed-float header (tag {tag:#04x}, width {width})")
    if len(data) < start + n * width:
        raise Damaged(f"{field} is shorter than {n} floats of {width} bytes")
    return np.frombuffer(data, dtype, n, start).astype(np.float64), start + n * width


def pack_bits(flags: np.ndarray) -> bytes:
    """One bit a flag, least significant first."""
    return np.packbits(flags, bitorder="little").tobytes()


def unpack_bits(data: Any, at: int, n: int, field: str) -> tuple[np.ndarray, int]:
    """(``n`` flags, the offset after them) of ``pack_bits``'s bytes at ``at``."""
    size = (n + 7) // 8
    if len(data) < at + size:
        raise Damaged(f"{field} is shorter than {n} bits")
    raw = np.frombuffer(data, np.uint8, size, at)
    return np.unpackbits(raw, count=n, bitorder="little").view(np.bool_), at + size
