"""The compiled ingest path (``maskstore._speedups``) against the Python rules it copies.

For any frame dict, valid or not: where ``encode_common`` accepts it, its record is byte for byte
``records.encode_frame(normalize_frame_dict(frame))``, and its id, meta types and index keys are the
ones the Python path gives; where the Python path raises, ``encode_common`` declines.
"""

from __future__ import annotations

import math

import msgpack
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from maskstore import Archive, FrameError, _speedups, records
from maskstore.ingest.prepare import SUFFIX_TYPES
from maskstore.layout import MAX_KEY_TEXT, text_key
from maskstore.check import check_archive
from maskstore.media import content_type_of
from maskstore.model import nfc_keys
from maskstore.model import normalize_frame

from strategies import frame_dicts

# Hostile and boundary pieces: every type the Python rules treat specially, ints at each msgpack
# width, strings and containers at each header size, lone surrogates.
INT_EDGES = [0, 1, -1, -32, -33, 127, 128, -128, -129, 255, 256, 32767, 32768, -32768, -32769, 65535, 65536,
             2**31 - 1, 2**31, -2**31, -2**31 - 1, 2**32 - 1, 2**32, 2**63 - 1, 2**63, -2**63, -2**63 - 1,
             2**64 - 1, 2**64]
texts = st.one_of(st.text(max_size=6), st.sampled_from(["", ".", "a.b", "\ud800", "x" * 31, "x" * 32, "é" * 128,
                                                        "x" * 255, "x" * 256, "x" * 65536, "f.PNG", "http://h/a.jpg",
                                                        "blob:sha256:ab", "a/b.c/d", "img.tar.gz"]))
ints = st.one_of(st.integers(-300, 300), st.sampled_from(INT_EDGES))
leaves = st.one_of(st.none(), st.booleans(), ints, st.floats(), texts, st.binary(max_size=3),
                   st.sampled_from([b"x" * 256, 1.0, -0.0, math.inf, math.nan]))
anything = st.recursive(leaves, lambda kids: st.one_of(
    st.lists(kids, max_size=17), st.lists(kids, max_size=3).map(tuple),
    st.dictionaries(texts, kids, max_size=17)), max_leaves=12)
maybe = st.one_of(st.none(), ints, texts, st.floats(), st.booleans())
good_texts = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=6) | st.sampled_from(
    ["a.png", "b.JPG", "http://h/c.png", "x" * 40, "y" * 300])


def mostly(valid, hostile):
    """Usually the valid piece, so most frames are accepted and compared; sometimes the hostile one."""
    return st.integers(0, 9).flatmap(lambda n: hostile if n == 0 else valid)


def shuffled_dict(draw, fields: dict) -> dict:
    """A dict of the drawn fields, some left out, plus extra keys, in a drawn order."""
    items = [(k, v) for k, v in fields.items() if draw(st.integers(0, 5))]
    items += draw(st.lists(st.tuples(mostly(good_texts, texts), anything), max_size=2))
    return dict(draw(st.permutations(items)))


@st.composite
def values_lists(draw):
    entry = st.one_of(st.tuples(ints, ints, ints, ints).map(list),
                      st.tuples(st.integers(0, 255), st.integers(0, 255), st.integers(0, 255),
                                st.integers(0, 2**40)).map(list),
                      st.lists(st.integers(0, 9), max_size=5), st.just([True, 0, 0, 1]), st.just((1, 2, 3, 4)))
    good = st.tuples(st.integers(0, 255), st.integers(0, 255), st.integers(0, 255), st.integers(0, 2**64)).map(list)
    return draw(mostly(st.lists(good, max_size=4), st.one_of(st.none(), st.lists(entry, max_size=4), st.just("x"))))


@st.composite
def masks(draw):
    return shuffled_dict(draw, {"id": draw(mostly(st.none() | good_texts, ints)), "uri": draw(mostly(good_texts, ints)),
                                "content_type": draw(mostly(st.none() | good_texts, maybe)),
                                "timestamp": draw(mostly(st.none() | ints, maybe)), "values": draw(values_lists())})


@st.composite
def sources(draw):
    return shuffled_dict(draw, {"id": draw(mostly(st.none() | good_texts, ints)), "uri": draw(mostly(good_texts, ints)),
                                "content_type": draw(mostly(st.none() | good_texts, maybe)),
                                "timestamp": draw(mostly(st.none() | ints, maybe)),
                                "width": draw(mostly(st.none() | ints, maybe)),
                                "height": draw(mostly(st.none() | ints, maybe)),
                                "masks": draw(mostly(st.none() | st.lists(masks(), max_size=3), st.just({})))})


@st.composite
def hostile_frames(draw):
    good_meta = st.dictionaries(good_texts.filter(lambda k: k and "." not in k),
                                st.recursive(st.none() | st.booleans() | ints | st.floats(allow_nan=False) | good_texts,
                                             lambda kids: st.lists(kids, max_size=3)
                                             | st.dictionaries(st.sampled_from("abc"), kids, max_size=3),
                                             max_leaves=6), max_size=5)
    meta = draw(mostly(st.none() | good_meta, st.one_of(st.dictionaries(texts, anything, max_size=5), st.just([]))))
    return shuffled_dict(draw, {
        "id": draw(mostly(good_texts, st.one_of(texts, ints, st.none()))),
        "timestamp": draw(mostly(st.none() | ints, maybe)), "context_id": draw(mostly(st.none() | good_texts, maybe)),
        "meta": meta, "sources": draw(mostly(st.none() | st.lists(sources(), max_size=3), st.just(""))),
        "rois": draw(mostly(st.none() | st.just([]), st.just([{"label": "car"}]) | st.just(())))})


def python_way(frame):
    """(record, id, meta types, index keys) from the Python rules, or None where they refuse."""
    try:
        d, types = normalize_frame(frame)
        record = records.encode_frame(d)
    except (FrameError, UnicodeEncodeError, OverflowError, ValueError, TypeError, RecursionError):
        return None
    postings = _speedups.Postings(text_key, MAX_KEY_TEXT)
    postings.add_record(0, d)
    return record, d["id"], tuple(types), postings.items(b"p", [b"seq"])


def compiled_way(frame):
    postings = _speedups.Postings(text_key, MAX_KEY_TEXT)
    (record,), (frame_id,), (types,) = _speedups.encode_common([frame], records.FRAME_HEAD, content_type_of,
                                                               SUFFIX_TYPES, postings)
    if record is None:
        assert frame_id is None and types is None
        return None
    return record, frame_id, types, postings.items(b"p", [b"seq"])


def check_same(frame):
    fast = compiled_way(frame)
    if fast is not None:
        assert fast == python_way(frame)
    return fast


COMMON = {"id": "drive_0001_000042", "timestamp": 1_600_000_000_000, "context_id": "drive_0001",
          "meta": {"city": "bremen", "speed": 12.5, "frame_no": 42, "ok": True, "none": None,
                   "nested": {"a": [1, 2.5, "x", None, [True]], "b": {"c": 1}}},
          "sources": [{"id": "front", "uri": "/data/front/000042.png", "width": 2048, "height": 1024,
                       "masks": [{"id": "00", "uri": "/data/masks/000042.png",
                                  "values": [[7, 7, 7, 1000], [24, 24, 24, 5], [255, 0, 10, 2**40]]}]}]}


@settings(max_examples=600, deadline=None)
@given(hostile_frames())
@example(COMMON)
@example({"id": "f", "sources": [{"uri": "http://example.com/x.JPG?a=b", "masks": [{"uri": "m.png", "values": []}]}]})
@example({"id": "f", "sources": [{"uri": "a.png", "masks": [{"uri": "b.png", "values": [[1, 2, 3, 4]]}] * 2}]})
@example({"id": "f", "meta": {"cafe\u0301": 1, "n": [{"\u212b": None}]}})  # NFD and a singleton: declined
def test_compiled_records_equal_the_python_path(frame):
    check_same(frame)


@settings(max_examples=300, deadline=None)
@given(frame_dicts)
def test_compiled_path_accepts_common_frames_and_agrees(frame):
    """The shared frame strategy: everything but ROIs and meta keys not in Unicode NFC (which go the
    Python way) is accepted."""
    fast = check_same(frame)
    assert (fast is None) == (bool(frame["rois"]) or nfc_keys(frame["meta"], None) is not frame["meta"])


def test_common_frame_is_accepted_with_defaults_filled():
    frame = {"id": "f", "sources": [{"uri": "/d/a.png", "masks": [{"uri": "/d/a_mask.png", "values": [[1, 1, 1, 9]]}]}]}
    record, frame_id, types, postings = check_same(frame)
    body = msgpack.unpackb(record[2:])
    assert body["context_id"] == "/d/a.png" and body["sources"][0]["id"] == "0"
    assert body["sources"][0]["masks"][0] == {"uri": "/d/a_mask.png", "values": [[1, 1, 1, 9]], "id": "00",
                                              "content_type": "image/png", "timestamp": 0}
    assert postings["ix_value"] == [(b"p\x01\x01\x01", b"seq")]


@pytest.mark.parametrize("frame", [
    {"id": "f", "sources": [{"uri": "a.png", "masks": [{"uri": "m.png"}]}]},  # no values: decoded in Python
    {"id": "f", "rois": [{"label": "car"}]},
    {"sources": [{"uri": "a.png"}]},  # derived id
    {"id": 5}, {"id": "f", "meta": {"x": math.nan}}, {"id": "f", "meta": {"k": 2**64}},
])
def test_declines_what_the_python_path_owns(frame):
    assert compiled_way(frame) is None


@pytest.mark.parametrize("value", [v for v in INT_EDGES if -2**63 <= v < 2**64] + [0.5, -1e300, math.inf, "", "x" * 70000, [], [1] * 16,
                                                      {str(i): i for i in range(16)}, b"", b"x" * 70000])
def test_msgpack_writer_matches_msgpack(value):
    frame = dict(COMMON, extra=value)
    fast = compiled_way(frame)
    assert fast[0] == records.FRAME_HEAD + msgpack.packb(normalize_frame(frame)[0], use_bin_type=True)


def test_mixed_batch_keeps_positions(tmp_path):
    """Accepted and declined frames in one batch land with the right seqs, index entries and order."""
    frames = [dict(COMMON, id=f"f{i}") for i in range(6)]
    frames[1] = dict(frames[1], rois=[{"label": "car"}])
    frames[4] = {"sources": [{"uri": "/d/derived.png", "masks": [{"uri": "/d/m.png", "values": [[9, 9, 9, 1]]}]}]}
    with Archive(tmp_path / "a.maskstore") as ar:
        v = ar.create_version(dataset_name="d", version_name="v")
        v.add_frames(frames)
        ids = [d["id"] for d in v.frame_dicts()]
        assert ids[:4] == ["f0", "f1", "f2", "f3"] and ids[5] == "f5" and len(ids[4]) == 32
        assert v.ids("label == 'x'") == [] and v.count("mask.value == [9, 9, 9]") == 1
        assert v.count("mask.value == [24, 24, 24]") == 5 and v.count("roi.label == 'car'") == 1
        assert check_archive(ar) == []
