"""Record encoding: lossless round trips, refusal of newer formats and of damaged bytes."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from maskstore import ArchiveError, records
from maskstore.model import normalize_frame_dict

from strategies import frame_dicts, metas

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
    assert records.decode_format(records.encode_format()) == {"name": "maskstore", "version": records.FORMAT_VERSION}


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
    assert msgpack.packb([1]) != body
