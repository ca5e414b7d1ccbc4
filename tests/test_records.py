"""Record encoding: lossless round trips, refusal of newer formats and of damaged bytes, and hostile
records that decode only into what every reader can use."""

from __future__ import annotations

import json
from typing import Any

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from maskstore import ArchiveError, postings, records
from maskstore.labels import mask_labels_dict, parse_color
from maskstore.model import frame_from_dict, normalize_frame_dict
from maskstore.query.columns import CHUNK, StrColumn, build_chunk, decode_fields, encode_fields
from maskstore.query.engine import prepare
from maskstore.query.evaluate import Labels, compile_expr

from reliability.test_hostile_archives import paths_of, splice
from strategies import frame_dicts, metas
from test_packing import PACKED_CHUNKS

version_records = st.fixed_dictionaries({
    "id": st.integers(1, 2**63), "dataset": st.text(min_size=1), "name": st.text(min_size=1),
    "parent": st.none() | st.integers(1, 2**63), "created": st.floats(0, 2e9), "description": st.text(),
    "meta": st.dictionaries(st.text(), metas, max_size=3), "state": st.sampled_from(["draft", "published"]),
    "mask_labels": st.lists(st.fixed_dictionaries({"value": st.lists(st.integers(0, 255), min_size=3, max_size=3),
                                                   "labels": st.lists(st.text(), max_size=3)}), max_size=5),
    "label_colors": st.dictionaries(st.text(), st.lists(st.integers(0, 255), min_size=3, max_size=3), max_size=4),
    "meta_types": st.dictionaries(st.text(), st.sampled_from(["str", "int", "float", "bool", "list", "dict"])),
    "next_seq": st.integers(0, 2**40), "count": st.integers(0, 2**40), "generation": st.integers(0, 2**40),
})


@settings(max_examples=100, deadline=None)
@given(frame_dicts)
def test_frame_record_round_trip(d):
    frame = normalize_frame_dict(d)
    assert records.decode_frame(records.encode_frame(frame)) == frame


@settings(max_examples=100, deadline=None)
@given(version_records)
def test_version_record_round_trip(rec):
    assert records.decode_version(records.encode_version(rec)) == rec


def test_format_record_round_trip():
    # A new archive is format 1, as 0.1.0 wrote it, until it holds compressed frame records.
    assert records.decode_format(records.encode_format()) == {"name": "maskstore", "version": records.PLAIN_FORMAT,
                                                              "required_features": [], "optional_features": []}


def test_newer_record_format_is_refused_with_the_version_needed():
    data = bytearray(records.encode_frame({"id": "x"}))
    data[0] = records.FORMAT_VERSION + 1
    with pytest.raises(ArchiveError, match=f"format {records.FORMAT_VERSION + 1}.*upgrade maskstore"):
        records.decode_frame(bytes(data))


def test_newer_archive_format_marker_is_refused():
    data = records._pack(records.KIND_FORMAT, {"name": "maskstore", "version": 99})
    with pytest.raises(ArchiveError, match="format 99"):
        records.decode_format(data)


def test_wrong_kind_and_garbage_are_damaged_records():
    with pytest.raises(ArchiveError, match="kind"):
        records.decode_frame(records.encode_version({"id": 1}))
    with pytest.raises(ArchiveError, match="damaged"):
        records.decode_frame(bytes([records.FORMAT_VERSION]) + records.KIND_FRAME + b"\xc1\xc1")


def test_huge_declared_lengths_are_refused_without_allocating():
    # an array header that claims 2**32-1 items, followed by nothing
    body = b"\xdd\xff\xff\xff\xff"
    with pytest.raises(ArchiveError, match="damaged"):
        records.decode_frame(bytes([records.FORMAT_VERSION]) + records.KIND_FRAME + body)


# ------------------------------------------------------------------------------------ hostile records
# Any value anywhere: a record either decodes into something every reader can use, or is an ArchiveError.

hostile_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text(max_size=4)
    | st.binary(max_size=2),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=3) | st.integers(0, 3), kids,
                                                             max_size=3),
    max_leaves=12)


def replaced(record: Any, data: st.DataObject) -> bytes:
    """``record`` packed with the value at one drawn path replaced by a drawn hostile value."""
    path = data.draw(st.sampled_from(paths_of(record)))
    raw = data.draw(st.sampled_from([msgpack.packb(data.draw(hostile_values), use_bin_type=True),
                                     b"\x91" * 150 + b"\x00", b"\x91" * 2000 + b"\x00"]))
    return splice(msgpack.packb(record, use_bin_type=True), path, raw)


@settings(max_examples=300, deadline=None)
@given(frame_dicts, st.data())
def test_a_frame_record_with_any_value_replaced_is_usable_or_an_archive_error(d, data):
    body = replaced(normalize_frame_dict(d), data)
    record = bytes([records.FORMAT_VERSION]) + records.KIND_FRAME + body
    try:
        frame = records.decode_frame(record)
    except ArchiveError as exc:
        assert "frame record" in str(exc)
        return
    json.dumps(frame)                              # JSON-lines export
    build_chunk(0, [(0, record)])                  # scan columns
    postings.of_records({0: frame})                # index postings: writers, check and repair
    compile_expr(prepare('label == "a" or meta.x.y > 1 or roi.confidence > 0.5', {"x.y": "float"}).where, Labels([]))(frame)
    frame_from_dict(frame)                         # Frame objects (query, export)


@settings(max_examples=300, deadline=None)
@given(version_records, st.data())
def test_a_version_record_with_any_value_replaced_is_usable_or_an_archive_error(rec, data):
    body = replaced(rec, data)
    try:
        version = records.decode_version(bytes([records.FORMAT_VERSION]) + records.KIND_VERSION + body)
    except ArchiveError as exc:
        assert "version record" in str(exc)
        return
    Labels(version["mask_labels"]).values_of(["a"])
    mask_labels_dict(version["mask_labels"])
    [parse_color(c) for c in version["label_colors"].values()]
    assert 0 <= version["count"] < 2**64 and 0 <= version["next_seq"] < 2**64


def _chunk_of(ds: list[dict[str, Any]]) -> Any:
    return build_chunk(0, [(i * 7, records.encode_frame(normalize_frame_dict(dict(d, id=f"f{i}")))) for i, d in enumerate(ds)])


@settings(max_examples=100, deadline=None)
@given(st.lists(frame_dicts, min_size=1, max_size=4))
def test_column_fields_round_trip(ds):
    chunk = _chunk_of(ds)
    fields = encode_fields(chunk)
    loaded = decode_fields(0, fields)
    assert encode_fields(loaded) == fields
    assert (loaded.present == chunk.present).all() and (loaded.timestamp == chunk.timestamp).all()
    assert loaded.ids.uniques == chunk.ids.uniques and (loaded.ids.codes == chunk.ids.codes).all()
    assert loaded.context.uniques == chunk.context.uniques
    assert set(loaded.meta) == set(chunk.meta) and all(
        type(loaded.meta[p]) is type(chunk.meta[p]) for p in chunk.meta)
    assert (loaded.value_keys == chunk.value_keys).all() and (loaded.value_counts == chunk.value_counts).all()


frame_ids = st.text(max_size=30) | st.text(min_size=100, max_size=133)  # long ids: str16 headers, 2-byte sizes


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_the_ids_field_round_trips_and_gives_any_selection_of_rows(data):
    """Empty, unicode and long ids, sparse chunks and full ones; taking any rows (in any order) gives
    exactly their ids, whatever the encoding the writer chose (plain or zstd, 1 or 2-byte sizes)."""
    rows = data.draw(st.sampled_from(["sparse", "full", "counting"]))
    present = np.zeros(CHUNK, bool) if rows == "sparse" else np.ones(CHUNK, bool)
    if rows == "sparse":
        present[data.draw(st.lists(st.integers(0, CHUNK - 1), min_size=1, max_size=50, unique=True))] = True
    n = int(present.sum())
    if rows == "sparse":
        texts = data.draw(st.lists(frame_ids, min_size=n, max_size=n, unique=True))
    elif rows == "full":  # ids of many sizes
        texts = [data.draw(frame_ids) + f"#{i}" for i in range(n)]
    else:  # ids of one size (stored byte-shuffled)
        prefix = data.draw(frame_ids)
        texts = [f"{prefix}{i:04d}" for i in range(n)]
    codes = np.full(CHUNK, -1, np.int32)
    codes[present] = np.arange(n)
    from maskstore.query import columns
    stored = columns._encode_ids(present, StrColumn(texts, codes))
    ids = columns._decode_ids(present, stored)
    wanted = np.flatnonzero(present)[data.draw(st.lists(st.integers(0, n - 1), max_size=60))]
    assert ids.take(wanted) == [texts[codes[r]] for r in wanted.tolist()]
    column = ids.column()
    assert column.uniques == texts and (column.codes == codes).all()


def _tampered(value: bytes, how: str, data: Any) -> bytes | None:
    """``value`` truncated, lengthened, with a byte changed, or with 4 or 8 bytes overwritten by a number
    (a code, a text offset, a count or a header field, depending on where it lands); None: deleted."""
    if how == "delete":
        return None
    if how == "truncate":
        return value[:data.draw(st.integers(0, max(len(value) - 1, 0)))]
    if how == "lengthen":
        return value + data.draw(st.binary(min_size=1, max_size=9))
    at = data.draw(st.integers(0, max(len(value) - 1, 0)))
    if how == "byte":
        return value[:at] + bytes([data.draw(st.integers(0, 255))]) + value[at + 1:]
    number = data.draw(st.sampled_from([-2, -1, 0, 1, 4096, 2**31 - 1, 0x80808080, 0xFFFFFFFF]))
    size = data.draw(st.sampled_from([4, 8]))  # 8: a packed array's count, base or table length
    return value[:at] + (number % 2**(8 * size)).to_bytes(size, "little") + value[at + size:]


@settings(max_examples=400, deadline=None)
@given(st.lists(frame_dicts, min_size=1, max_size=4).map(_chunk_of) | PACKED_CHUNKS, st.data())
def test_a_tampered_column_field_is_usable_or_an_archive_error_naming_chunk_and_field(chunk, data):
    """Chunks of random frame dicts, and chunks whose numbers take every packed form (FORMAT.md)."""
    fields = encode_fields(chunk)
    name = data.draw(st.sampled_from(sorted(fields)))
    how = data.draw(st.sampled_from(["delete", "truncate", "lengthen", "byte", "int32"]))
    changed = _tampered(fields[name], how, data)
    stored = {k: v for k, v in fields.items() if k != name}
    if changed is not None:
        stored[name] = changed
    try:
        loaded = decode_fields(0, stored)
    except ArchiveError as exc:
        assert "scan columns of frames 0..4095" in str(exc)
        if name != b"_present" and not (how == "delete" and name.startswith(b"m:")):
            field = name.decode(errors="replace")
            assert (f"meta.{field[2:]}" if name.startswith(b"m:") else field) in str(exc) or \
                "not UTF-8" in str(exc), (name, str(exc))
        return
    # What scans and stats do with a chunk must work (no IndexError, no overflow, no huge allocation)
    np.repeat(np.arange(CHUNK), np.diff(loaded.value_offsets))
    loaded.value_counts.sum()
    loaded.ids.select(lambda s: s == "f0")
    np.array(loaded.context.uniques + [None], dtype=object)[loaded.context.codes]
    for col in loaded.meta.values():
        assert len(col.codes if hasattr(col, "codes") else col.values) == CHUNK


def test_column_field_damage_is_named(tmp_path):
    """Examples of the property above, one per kind of damage the brief names."""
    fields = encode_fields(_chunk_of([{"id": "a", "context_id": "c", "meta": {"city": "x", "n": 1}}]))
    cases = {
        b"ts": fields[b"ts"][:-1],                                              # truncated
        b"nm": fields[b"nm"] + b"\0\0\0\0",                                      # wrong length
        b"ids": fields[b"ids"][:4] + (5).to_bytes(4, "little") + fields[b"ids"][8:],  # 5 ids for 1 frame
        b"ctx": fields[b"ctx"][:-1] + b"\xff",                                  # not UTF-8
        b"m:city": fields[b"m:city"][:-3] + b"\x92\xa1x",                        # a list claiming 2 texts, holding 1
    }
    for name, value in cases.items():
        with pytest.raises(ArchiveError) as caught:
            decode_fields(0, {**fields, name: value})
        field = "meta.city" if name == b"m:city" else name.decode()
        assert "frames 0..4095" in str(caught.value) and field in str(caught.value), str(caught.value)


def test_compressed_ids_truncated_or_flipped_are_an_archive_error_naming_the_chunk():
    present = np.ones(CHUNK, bool)
    from maskstore.query import columns
    stored = columns._encode_ids(present, StrColumn([f"drive_0001_{i:06d}" for i in range(CHUNK)],
                                                    np.arange(CHUNK, dtype=np.int32)))
    assert stored[0] == columns.ID_ZSTD and stored[2] == 1  # ids of one size: compressed and byte-shuffled
    assert len(stored) < 1024  # neighbours' ids compress to under a quarter byte each
    fields = {**encode_fields(_chunk_of([{}])), b"_present": np.packbits(present, bitorder="little").tobytes()}
    for damaged in (stored[:-1], stored[:40] + bytes([stored[40] ^ 0x10]) + stored[41:], stored + b"\0"):
        with pytest.raises(ArchiveError, match=r"scan columns of frames 8192\.\.12287 are damaged: ids"):
            decode_fields(8192, {**fields, b"ids": damaged})


def test_a_missing_record_is_an_archive_error_naming_it():
    with pytest.raises(ArchiveError, match="frame seq 5 record is missing"):
        records.decode_frame(None, "frame seq 5")


@pytest.mark.parametrize("count", [-1, 2**50 + 1, 2**63, 2**64 - 1, 1.5, True])
def test_pixel_counts_must_fit_the_columns(count):
    frame = normalize_frame_dict({"id": "x", "sources": [{"uri": "a", "masks": [{"uri": "m", "values": [[1, 1, 1, 1]]}]}]})
    frame["sources"][0]["masks"][0]["values"][0][3] = count
    field = (f"sources masks count {count} pixels in all (expected at most 2**50)" if type(count) is int and count > 0
             else f"sources[0].masks[0].values[0] is [1, 1, 1, {count!r}] (expected [r, g, b, count]")
    with pytest.raises(ArchiveError) as refused:
        records.decode_frame(records.encode_frame(frame), "frame seq 4")
    assert str(refused.value).startswith(f"frame seq 4 record is damaged: frame 'x': {field}")
