"""Packed arrays of scan-column fields (``maskstore.query.packing``): every form gives back exactly
the numbers it was given, writers pick the narrowest, and damaged bytes are refused, never misread."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from maskstore import ArchiveError, records
from maskstore.model import normalize_frame_dict
from maskstore.query import packing
from maskstore.query.columns import CHUNK, build_chunk, decode_fields, encode_fields
from maskstore.query.packing import Damaged

LENGTHS = st.sampled_from([0, 1, 2, 7, 300, CHUNK])
INT64 = st.integers(-2**63, 2**63 - 1)
EXTREMES = st.sampled_from([-2**63, 2**63 - 1, 0, -1, 2**32, 2**62])


def int_arrays(length: st.SearchStrategy[int] = LENGTHS) -> st.SearchStrategy[np.ndarray]:
    """Wide-ranged, narrow-ranged (a base plus small offsets) and few-valued int64 arrays."""
    def narrow(base: int, span: int, n: int, data: Any) -> np.ndarray:
        return np.clip(base + np.array(data.draw(st.lists(st.integers(0, span), min_size=n, max_size=n)), dtype=object),
                       -2**63, 2**63 - 1).astype(np.int64)
    wide = length.flatmap(lambda n: arrays(np.int64, n, elements=INT64 | EXTREMES))
    few = st.tuples(st.lists(INT64 | EXTREMES, min_size=1, max_size=5), length, st.randoms()).map(
        lambda t: np.array([t[2].choice(t[0]) for _ in range(t[1])], np.int64))
    spans = st.sampled_from([0, 1, 255, 256, 2**16, 2**24 - 1, 2**24, 2**40, 2**56])
    narrowed = st.tuples(EXTREMES | INT64, spans, length, st.data()).map(lambda t: narrow(*t))
    return wide | few | narrowed


FLOATS = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([-0.0, 0.0, np.nan, -np.inf, 1e308, 5e-324])
DECIMAL_FLOATS = st.integers(-10**9, 10**9).flatmap(lambda n: st.integers(0, 6).map(lambda e: round(n / 10**e, e)))


def float_arrays() -> st.SearchStrategy[np.ndarray]:
    exact32 = st.floats(width=32, allow_nan=False)
    return LENGTHS.flatmap(lambda n: arrays(np.float64, n, elements=FLOATS | DECIMAL_FLOATS)
                           | arrays(np.float64, n, elements=DECIMAL_FLOATS)
                           | arrays(np.float64, n, elements=exact32))


@settings(max_examples=300, deadline=None)
@given(int_arrays(), st.booleans())
def test_packed_integers_give_back_every_value(values, table):
    data = packing.pack_ints(values, table=table)
    back, end = packing.unpack_ints(b"pad" + data, 3, len(values), "f")
    assert end == 3 + len(data) and back.dtype == np.int64 and (back == values).all()


@settings(max_examples=200, deadline=None)
@given(int_arrays())
def test_packed_integers_take_the_bytes_their_range_needs(values):
    span = int(values.max()) - int(values.min()) if len(values) else 0
    width = (span.bit_length() + 7) // 8
    assert len(packing.pack_ints(values)) == 24 + width * len(values)
    tabled = packing.pack_ints(values, table=True)  # a table only when it is smaller
    distinct = len(np.unique(values))
    assert len(tabled) == min(24 + width * len(values),
                              24 + 8 * distinct + (max(distinct - 1, 0).bit_length() + 7) // 8 * len(values)
                              if width > 1 else 24 + width * len(values))


@settings(max_examples=150, deadline=None)
@given(float_arrays())
def test_packed_floats_give_back_every_bit(values):
    data = packing.pack_floats(values)
    back, end = packing.unpack_floats(data, 0, len(values), "f")
    assert end == len(data) and back.dtype == np.float64
    assert (back.view(np.int64) == values.view(np.int64)).all()  # NaN payloads and -0.0 too
    assert len(data) <= 16 + 8 * len(values)


def test_floats_with_two_decimals_take_two_bytes_and_float32_values_four():
    speeds = np.round(np.random.default_rng(1).uniform(0, 100, CHUNK), 2)
    data = packing.pack_floats(speeds)
    assert data[0] == packing.DECIMAL and data[1] == 2 and len(data) == 16 + 24 + 2 * CHUNK
    halves = np.arange(CHUNK) * 1e6 + 0.5  # float32-exact? no: 4e9 needs more than 24 bits; decimals: yes
    assert packing.pack_floats(halves)[0] == packing.DECIMAL
    single = np.float32(np.random.default_rng(2).standard_normal(CHUNK)).astype(np.float64)
    assert packing.pack_floats(single)[0] == packing.FLOAT32
    assert packing.pack_floats(np.array([0.1, -0.0, 2.5]))[0] == packing.FLOAT64  # -0.0 is no whole number


@settings(max_examples=100, deadline=None)
@given(LENGTHS.flatmap(lambda n: arrays(np.bool_, n)))
def test_bits_give_back_every_flag(flags):
    data = packing.pack_bits(flags)
    back, end = packing.unpack_bits(data, 0, len(flags), "f")
    assert end == len(data) == (len(flags) + 7) // 8 and (back == flags).all()


def _tampered(data: bytes, draw: Any) -> bytes:
    how = draw(st.sampled_from(["truncate", "lengthen", "byte", "int32", "int64"]))
    at = draw(st.integers(0, max(len(data) - 1, 0)))
    if how == "truncate":
        return data[:at]
    if how == "lengthen":
        return data + draw(st.binary(min_size=1, max_size=9))
    if how == "byte":
        return data[:at] + bytes([draw(st.integers(0, 255))]) + data[at + 1:]
    size = 4 if how == "int32" else 8
    number = draw(st.sampled_from([-2, -1, 0, 1, 9, 4096, 2**31 - 1, 2**32 - 1, 2**63 - 1]))
    return data[:at] + (number % 2**(8 * size)).to_bytes(size, "little") + data[at + size:]


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_a_tampered_packed_array_is_refused_or_gives_exactly_its_count(data):
    """Any change to the bytes: Damaged, or ``n`` numbers of the right type read from within the
    value (never an IndexError, a huge allocation or a read past the end)."""
    kind = data.draw(st.sampled_from(["ints", "table", "floats", "bits"]))
    values = data.draw(float_arrays() if kind == "floats" else
                       LENGTHS.flatmap(lambda n: arrays(np.bool_, n)) if kind == "bits" else int_arrays())
    pack = {"ints": packing.pack_ints, "table": lambda v: packing.pack_ints(v, table=True),
            "floats": packing.pack_floats, "bits": packing.pack_bits}[kind]
    unpack = {"ints": packing.unpack_ints, "table": packing.unpack_ints,
              "floats": packing.unpack_floats, "bits": packing.unpack_bits}[kind]
    stored = _tampered(pack(values), data.draw)
    try:
        back, end = unpack(stored, 0, len(values), "f")
    except Damaged as exc:
        assert str(exc).startswith("f ")
        return
    assert len(back) == len(values) and end <= len(stored)
    assert back.dtype == {"floats": np.float64, "bits": np.bool_}.get(kind, np.int64)


# ------------------------------------------------------------------------ whole chunks, every kind

def _frames(rows: list[int], speed: list[float], big: list[int], keys: list[int]) -> list[tuple[int, bytes]]:
    """Frames at ``rows`` of chunk 0 whose fields take every packed form: decimal and float32 speeds,
    ints beyond int64 ("object"), int64 extremes, mask values from a few keys (a ``vk`` table)."""
    out = []
    for i, row in enumerate(rows):
        values = [[k >> 16, k >> 8 & 255, k & 255, 1 + (row * 7919 + j) % 2**20] for j, k in enumerate(sorted({
            keys[(i + j) % len(keys)] for j in range(3)}))]
        frame = {"id": f"f{row}", "timestamp": 1_600_000_000_000 + row * 100, "context_id": f"c{row // 1000}",
                 "meta": {"speed": speed[i % len(speed)], "big": big[i % len(big)], "edge": [-2**63, 2**63 - 1][row % 2],
                          "f32": float(np.float32(row / 3)), "flag": row % 3 == 0, "city": ["a", "b"][row % 2]},
                 "sources": [{"id": "s", "uri": "u", "masks": [{"id": "m", "uri": "m", "values": values}]}]}
        out.append((row, records.encode_frame(normalize_frame_dict(frame))))
    return out


SOME_ROWS = st.lists(st.integers(0, CHUNK - 1), min_size=1, max_size=12, unique=True).map(sorted)
PACKED_CHUNKS = st.builds(lambda rows, speed, big, keys: build_chunk(0, _frames(rows, speed, big, keys)), SOME_ROWS,
                          st.lists(DECIMAL_FLOATS, min_size=1, max_size=3),
                          st.lists(st.sampled_from([2**64 - 1, -2**63, 7]), min_size=1, max_size=2),
                          st.lists(st.integers(0, 0xFFFFFF), min_size=1, max_size=3))
"""Small chunks whose fields take the packed forms frame dicts rarely give (for tampering tests)."""
ROWS = st.sampled_from([[0], [CHUNK - 1], [5, 9, 4000], list(range(CHUNK)), list(range(0, CHUNK, 3))])


@settings(max_examples=12, deadline=None)
@given(ROWS, st.lists(DECIMAL_FLOATS | st.sampled_from([float("inf"), -0.0, 1e300]), min_size=1, max_size=3),
       st.lists(st.sampled_from([2**64 - 1, 2**63, -2**63, 0, 7]), min_size=1, max_size=3),
       st.lists(st.integers(0, 0xFFFFFF), min_size=1, max_size=4))
@example(list(range(CHUNK)), [12.34, float("inf")], [2**64 - 1, -2**63], [0, 0xFFFFFF])
def test_chunks_round_trip_through_packed_fields(rows, speed, big, keys):
    chunk = build_chunk(0, _frames(rows, speed, big, keys))
    fields = encode_fields(chunk)
    loaded = decode_fields(0, fields)
    assert encode_fields(loaded) == fields
    for name in ("present", "timestamp", "n_masks", "n_rois", "value_offsets", "value_keys", "value_counts"):
        want, got = getattr(chunk, name), getattr(loaded, name)
        assert got.dtype == want.dtype and (got == want).all(), name
    assert loaded.context.uniques == chunk.context.uniques and (loaded.context.codes == chunk.context.codes).all()
    assert set(loaded.meta) == set(chunk.meta)
    for path, col in chunk.meta.items():
        got = loaded.meta[path]
        if hasattr(col, "codes"):
            assert got.uniques == col.uniques and (got.codes == col.codes).all()
        else:
            assert got.kind == col.kind and (got.present == col.present).all()
            same = got.values[col.present] == col.values[col.present]
            assert got.values.dtype == col.values.dtype and (same | (got.values[col.present] != got.values[col.present])).all()
            if col.kind == "float":
                assert (got.values.view(np.int64) == col.values.view(np.int64)).all()


def test_a_chunk_with_two_decimal_speeds_stores_them_in_two_bytes_a_row():
    fields = encode_fields(build_chunk(0, _frames(list(range(CHUNK)), [12.34, 0.5, 99.99], [7], [0x010101, 0x020202])))
    speed = fields[b"m:speed"]
    assert len(speed) == 8 + 8 + CHUNK // 8 + 16 + 24 + 2 * CHUNK
    assert fields[b"vk"][0] == packing.TABLE and len(fields[b"nm"]) == 24  # one mask each: width 0


def test_rows_without_a_frame_or_value_widen_nothing_and_read_as_zero():
    """Gaps (deleted frames, a version's last chunk, a meta path some frames lack) would otherwise
    drag the minimum to 0: timestamps would take 6 bytes a row instead of 3."""
    rows = [r for r in range(0, CHUNK, 2)]
    chunk = build_chunk(0, _frames(rows, [12.34], [7], [1, 2]))
    fields = encode_fields(chunk)
    span = int(chunk.timestamp[rows].max() - chunk.timestamp[rows].min())
    assert len(fields[b"ts"]) == 24 + (span.bit_length() + 7) // 8 * CHUNK and len(fields[b"nm"]) == 24
    loaded = decode_fields(0, fields)
    assert (loaded.timestamp[1::2] == 0).all() and (loaded.timestamp == chunk.timestamp).all()
    assert (loaded.n_masks == chunk.n_masks).all() and loaded.n_masks.dtype == np.int32
    values = np.array([5, 0, 7, 2**63 - 1, -2**63])
    present = np.array([True, False, True, False, False])
    back, _ = packing.unpack_ints(packing.pack_ints(values, present=present), 0, 5, "f", present=present)
    assert back.tolist() == [5, 0, 7, 0, 0] and len(packing.pack_ints(values, present=present)) == 24 + 5
    floats = np.array([48.25, 3e300, 48.5])
    assert packing.unpack_floats(packing.pack_floats(floats, present[[0, 1, 2]]), 0, 3, "f",
                                 present[[0, 1, 2]])[0].tolist() == [48.25, 0.0, 48.5]


def test_a_damaged_packed_field_names_its_chunk_and_field():
    fields = encode_fields(build_chunk(0, _frames([1, 2], [1.5], [2**64 - 1], [1, 2, 3])))
    cases = {b"ts": b"Q" + fields[b"ts"][1:],                                  # an unknown tag
             b"vc": fields[b"vc"][:1] + b"\x09" + fields[b"vc"][2:],           # a width beyond 8 bytes
             b"nm": fields[b"nm"][:8] + (4095).to_bytes(8, "little") + fields[b"nm"][16:],  # the wrong count
             b"vk": fields[b"vk"][:-1]}                                        # shorter than its count
    for name, value in cases.items():
        with pytest.raises(ArchiveError) as caught:
            decode_fields(0, {**fields, name: value})
        assert "frames 0..4095" in str(caught.value) and name.decode() in str(caught.value), str(caught.value)
