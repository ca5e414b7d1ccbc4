"""Frame model: id rules, defaults, mask attachment, annotations and the frame-dict round trip."""

from __future__ import annotations

from collections import OrderedDict
from enum import IntEnum
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given, settings
from strategies import frame_dicts

from maskstore import FrameError, FrameGroup, SingleFrame
from maskstore.model import meta_types
from maskstore.model import derived_frame_id, frame_from_dict, normalize_frame, normalize_frame_dict
from maskstore.records import decode_frame, encode_frame


def test_given_id_is_kept():
    assert SingleFrame(source="a.png", id="f1").id == "f1"


def test_id_derives_from_first_source_uri_deterministically():
    a, b = SingleFrame(source="img/a.png"), SingleFrame(source="img/a.png")
    assert a.id == b.id == derived_frame_id("img/a.png")
    assert SingleFrame(source="img/b.png").id != a.id


def test_id_without_source_is_random_but_stable_per_frame():
    f = SingleFrame()
    assert f.id == f.id
    assert SingleFrame().id != f.id


def test_context_id_and_timestamp_defaults():
    f = SingleFrame(source="a.png")
    assert f.context_id == "a.png" and f.timestamp == 0
    d = normalize_frame_dict({"sources": [{"uri": "x.png", "timestamp": 7}]})
    assert d["timestamp"] == 7 and d["context_id"] == "x.png" and d["sources"][0]["id"] == "0"


def test_mask_source_and_masks_source_forms():
    f = SingleFrame(source="a.png", mask_source="m.png")
    assert f.masks_source == {"00": "m.png"}
    f.masks_source = ["m1.png", "m2.png"]
    assert f.masks_source == {"00": "m1.png", "01": "m2.png"}
    f.masks_source = {"id 1": "x.png", "id 2": "y.png"}
    assert [m.id for m in f.sources[0].masks] == ["id 1", "id 2"]


def test_content_type_derived_from_file_name():
    d = SingleFrame(source="a.jpg", mask_source="m.png").to_dict()
    assert d["sources"][0]["content_type"] == "image/jpeg"
    assert d["sources"][0]["masks"][0]["content_type"] == "image/png"


def test_annotations_box_polygon_and_frame_class():
    f = SingleFrame(source="a.png")
    f.add_annotation(box2d_xywh=(10, 20, 30, 40), labels=["car", "occluded"], confidence=0.9, metadata={"k": 1})
    f.add_annotation(poly2d_xy=[(0, 0), (5, 0), (5, 5)], labels=["person"])
    f.add_annotation(frame_class=["night"])
    rois = f.to_dict()["rois"]
    assert rois[0]["poly"] == [10, 20, 40, 20, 40, 60, 10, 60] and rois[0]["label"] == ["car", "occluded"]
    assert rois[0]["confidence"] == 0.9 and rois[0]["meta"] == {"k": 1} and rois[0]["sources"] == ["0"]
    assert rois[1]["poly"] == [0, 0, 5, 0, 5, 5]
    assert rois[2] == {"id": "2", "sources": ["0"], "label": ["night"], "confidence": None, "poly": [], "meta": {}}


def test_frame_group_is_a_dict_of_single_frames():
    fg = FrameGroup(id="g1")
    fg["front"] = SingleFrame(source="f.png", mask_source="fm.png")
    fg["rear"] = SingleFrame(source="r.png")
    assert isinstance(fg, dict) and list(fg) == ["front", "rear"]
    d = fg.to_dict()
    assert [s["id"] for s in d["sources"]] == ["front", "rear"]
    back = frame_from_dict(d)
    assert isinstance(back, FrameGroup) and back == fg
    assert back["front"].mask_source == "fm.png"


def test_unknown_keys_are_kept():
    d = {"id": "f", "sources": [{"uri": "a.png", "preview": {"uri": "p.png"},
                                 "masks": [{"uri": "m.png", "extra": 1}]}], "annotator": "bob"}
    out = SingleFrame.from_dict(d).to_dict()
    assert out["annotator"] == "bob" and out["sources"][0]["preview"] == {"uri": "p.png"}
    assert out["sources"][0]["masks"][0]["extra"] == 1


@pytest.mark.parametrize("bad, words", [
    ({"id": 3.5}, "frame id must be a string"),
    ({"timestamp": "x"}, "timestamp must be an integer"),
    ({"meta": {"a": object()}}, "meta.a"),
    ({"meta": {"a": float("nan")}}, "NaN"),
    ({"sources": [{"uri": "a.png"}, {"uri": "b.png"}]}, None),
    ({"sources": [{"uri": "a.png", "id": "x"}, {"uri": "b.png", "id": "x"}]}, "duplicate source ids"),
    ({"sources": [{"uri": "a.png", "masks": [{"uri": "m", "values": [[1, 2, 300, 4]]}]}]}, "0..255"),
    ({"sources": [{"uri": "a.png", "masks": [{"uri": "m", "values": [[1, 2, 3]]}]}]}, "pixel_count"),
    ({"rois": [{"label": [1]}]}, "ROI label"),
    ({"sources": [{"uri": 5}]}, "source uri must be a string"),
])
def test_bad_frame_dicts_raise_frame_error(bad, words):
    if words is None:
        normalize_frame_dict(bad)  # two sources with default ids "0" and "1" are fine
        return
    with pytest.raises(FrameError, match=words):
        normalize_frame_dict(bad)


# ------------------------------------------------------------------------------- round trip

@settings(max_examples=150, deadline=None)
@given(frame_dicts)
def test_frame_dict_round_trip(d):
    normal = normalize_frame_dict(d)
    assert normalize_frame_dict(normal) == normal
    assert frame_from_dict(normal).to_dict() == normal


# ------------------------------------------------------------------------------- frozen outputs
# normalize_frame_dict is on the bulk-ingest path and written for speed; these freeze what it returned
# before (the stored bytes, and the first error of a bad frame) so a faster version cannot drift.

NORMALIZED_CASES: dict[str, Any] = {
    "benchmark": {
        "id": "drive_0042_000007", "timestamp": 1_600_420_000_000, "context_id": "drive_0042",
        "meta": {"city": "aachen", "weather": "rain", "speed": 12.5, "frame_no": 7},
        "sources": [{"id": "front", "uri": "/data/drive_0042/front/000007.png", "width": 2048, "height": 1024,
                     "masks": [{"id": "00", "uri": "/data/drive_0042/masks/000007.png",
                                "values": [[7, 7, 7, 1000], [24, 24, 24, 2_096_152]]}]}],
    },
    "defaults": {"sources": [{"uri": "x.png", "timestamp": 7}]},
    "everything": {
        "meta": {"nested": {"deep": {"x": 1, "none": None}, "list": [1, "a", {"k": 2.5}, [True]]},
                 "flag": False, "inf": float("inf"), "t": (1, 2)},
        "annotator": "bob", "id": 42, "timestamp": 5.0,
        "sources": [
            {"uri": "file:///data/a.JPG?x=1", "timestamp": 9.0, "width": 640.0, "height": None, "preview": {"uri": "p"},
             "masks": [{"uri": "https://h/m.png", "values": [(1, 2, 3, 4), [5, 6, 7, 0]], "extra": [1]},
                       {"uri": "m2.unknownext", "id": "b", "content_type": "image/x-own", "timestamp": 3}]},
            {"uri": "noext", "id": "rear", "content_type": None, "masks": None},
        ],
        "rois": [{"label": "car", "poly": [0, 1.5, 2, 3], "confidence": 1, "meta": {"k": [1]}, "note": "n"},
                 {"id": 7, "sources": ["rear", 3], "label": ["a", "b"], "confidence": None}],
        "context_id": "ctx",
    },
    "mapping_types": OrderedDict([
        ("sources", [MappingProxyType({"uri": "a.png", "masks": [OrderedDict([("uri", "m.png"), ("id", "z")])]})]),
        ("meta", MappingProxyType({"m": OrderedDict([("a", 1)])})), ("rois", [MappingProxyType({"label": []})]),
        ("id", "f")]),
    "no_masks_two_sources": {"id": "g", "sources": [{"uri": "a.png", "id": "x", "timestamp": 3},
                                                     {"uri": "b.png", "timestamp": 4, "masks": []}], "rois": [{}]},
}

EXPECTED_RECORDS = {  # records.encode_frame(normalize_frame_dict(case)).hex(), frozen
    "benchmark": (
        "014686a26964b164726976655f303034325f303030303037a974696d657374616d70cf00000174a0773100aa636f6e74"
        "6578745f6964aa64726976655f30303432a46d65746184a463697479a661616368656ea777656174686572a47261696e"
        "a57370656564cb4029000000000000a86672616d655f6e6f07a7736f75726365739187a26964a566726f6e74a3757269"
        "d9212f646174612f64726976655f303034322f66726f6e742f3030303030372e706e67a57769647468cd0800a6686569"
        "676874cd0400a56d61736b739185a26964a23030a3757269d9212f646174612f64726976655f303034322f6d61736b73"
        "2f3030303030372e706e67a676616c7565739294070707cd03e894181818ce001ffc18ac636f6e74656e745f74797065"
        "a9696d6167652f706e67a974696d657374616d70cf00000174a0773100ac636f6e74656e745f74797065a9696d616765"
        "2f706e67a974696d657374616d70cf00000174a0773100a4726f697390"
    ),
    "defaults": (
        "014686a7736f75726365739187a3757269a5782e706e67a974696d657374616d7007a26964a130ac636f6e74656e745f"
        "74797065a9696d6167652f706e67a57769647468c0a6686569676874c0a56d61736b7390a26964d92030386664376136"
        "34656432613532643362636338363033353136613232363830a974696d657374616d7007aa636f6e746578745f6964a5"
        "782e706e67a46d65746180a4726f697390"
    ),
    "everything": (
        "014687a46d65746184a66e657374656482a46465657082a17801a46e6f6e65c0a46c6973749401a16181a16bcb400400"
        "000000000091c3a4666c6167c2a3696e66cb7ff0000000000000a174920102a9616e6e6f7461746f72a3626f62a26964"
        "a23432a974696d657374616d7005a7736f75726365739288a3757269b666696c653a2f2f2f646174612f612e4a50473f"
        "783d31a974696d657374616d7009a57769647468cd0280a6686569676874c0a77072657669657781a3757269a170a56d"
        "61736b739286a3757269af68747470733a2f2f682f6d2e706e67a676616c7565739294010203049405060700a5657874"
        "72619101a26964a23030ac636f6e74656e745f74797065a9696d6167652f706e67a974696d657374616d700984a37572"
        "69ad6d322e756e6b6e6f776e657874a26964a162ac636f6e74656e745f74797065ab696d6167652f782d6f776ea97469"
        "6d657374616d7003a26964a130ac636f6e74656e745f74797065aa696d6167652f6a70656787a3757269a56e6f657874"
        "a26964a472656172ac636f6e74656e745f74797065c0a56d61736b7390a974696d657374616d7005a57769647468c0a6"
        "686569676874c0a4726f69739287a56c6162656c91a3636172a4706f6c799400cb3ff80000000000000203aa636f6e66"
        "6964656e636501a46d65746181a16b9101a46e6f7465a16ea26964a130a7736f757263657391a13086a26964a137a773"
        "6f757263657392a472656172a133a56c6162656c92a161a162aa636f6e666964656e6365c0a4706f6c7990a46d657461"
        "80aa636f6e746578745f6964a3637478"
    ),
    "mapping_types": (
        "014686a7736f75726365739187a3757269a5612e706e67a56d61736b739184a3757269a56d2e706e67a26964a17aac63"
        "6f6e74656e745f74797065a9696d6167652f706e67a974696d657374616d7000a26964a130ac636f6e74656e745f7479"
        "7065a9696d6167652f706e67a974696d657374616d7000a57769647468c0a6686569676874c0a46d65746181a16d81a1"
        "6101a4726f69739186a56c6162656c90a26964a130a7736f757263657391a130aa636f6e666964656e6365c0a4706f6c"
        "7990a46d65746180a26964a166a974696d657374616d7000aa636f6e746578745f6964a5612e706e67"
    ),
    "no_masks_two_sources": (
        "014686a26964a167a7736f75726365739287a3757269a5612e706e67a26964a178a974696d657374616d7003ac636f6e"
        "74656e745f74797065a9696d6167652f706e67a57769647468c0a6686569676874c0a56d61736b739087a3757269a562"
        "2e706e67a974696d657374616d7004a56d61736b7390a26964a131ac636f6e74656e745f74797065a9696d6167652f70"
        "6e67a57769647468c0a6686569676874c0a4726f69739186a26964a130a56c6162656c90a7736f757263657391a178aa"
        "636f6e666964656e6365c0a4706f6c7990a46d65746180a974696d657374616d7003aa636f6e746578745f6964a5612e"
        "706e67a46d65746180"
    ),
}


@pytest.mark.parametrize("name", list(NORMALIZED_CASES))
def test_normalized_record_bytes_are_frozen(name):
    given = NORMALIZED_CASES[name]
    before = repr(given)
    record = encode_frame(normalize_frame_dict(given))
    assert record.hex() == "".join(EXPECTED_RECORDS[name]), decode_frame(record)
    assert repr(given) == before  # the input is not changed


BAD_CASES: dict[str, Any] = {
    "not a dict": [1],
    "float id": {"id": 3.5},
    "bool id": {"id": True},
    "empty id": {"id": ""},
    "sources not list": {"id": "f", "sources": (1,)},
    "bad timestamp": {"id": "f", "timestamp": "x"},
    "bad source timestamp as default": {"id": "f", "sources": [{"uri": "a", "timestamp": 1.5}]},
    "timestamp range": {"id": "f", "timestamp": 2**63},
    "source not a dict": {"id": "f", "sources": [1]},
    "source uri": {"id": "f", "sources": [{"uri": 5}]},
    "source id": {"id": "f", "sources": [{"uri": "a", "id": 5}]},
    "source ts": {"id": "f", "timestamp": 1, "sources": [{"uri": "a", "timestamp": "x"}]},
    "source width": {"id": "f", "sources": [{"uri": "a", "width": True}]},
    "source height": {"id": "f", "sources": [{"uri": "a", "height": 1.5}]},
    "masks not list": {"id": "f", "sources": [{"uri": "a", "masks": "m"}]},
    "mask not a dict": {"id": "f", "sources": [{"uri": "a", "masks": ["m"]}]},
    "mask uri": {"id": "f", "sources": [{"uri": "a", "masks": [{"uri": None}]}]},
    "mask id": {"id": "f", "sources": [{"uri": "a", "masks": [{"uri": "m", "id": 0}]}]},
    "mask ts": {"id": "f", "sources": [{"uri": "a", "masks": [{"uri": "m", "timestamp": []}]}]},
    "values channel": {"id": "f", "sources": [{"uri": "a", "masks": [{"uri": "m", "values": [[1, 2, 300, 4]]}]}]},
    "values short": {"id": "f", "sources": [{"uri": "a", "masks": [{"uri": "m", "values": [[1, 2, 3]]}]}]},
    "values count": {"id": "f", "sources": [{"uri": "a", "masks": [{"uri": "m", "values": [[1, 2, 3, -1]]}]}]},
    "values count bool": {"id": "f", "sources": [{"uri": "a", "masks": [{"uri": "m", "values": [[1, 2, 3, True]]}]}]},
    "values not list": {"id": "f", "sources": [{"uri": "a", "masks": [{"uri": "m", "values": 5}]}]},
    "values item": {"id": "f", "sources": [{"uri": "a", "masks": [{"uri": "m", "values": [5]}]}]},
    "values float": {"id": "f", "sources": [{"uri": "a", "masks": [{"uri": "m", "values": [[1.0, 2, 3, 4]]}]}]},
    "dup mask ids": {"id": "f", "sources": [{"uri": "a", "masks": [{"uri": "m", "id": "0"}, {"uri": "n", "id": "0"}]}]},
    "dup mask ids generated": {"id": "f", "sources": [{"uri": "a", "masks": [{"uri": "m", "id": "01"}, {"uri": "n"}]}]},
    "dup source ids": {"sources": [{"uri": "a.png", "id": "x"}, {"uri": "b.png", "id": "x"}]},
    "context": {"id": "f", "context_id": 5},
    "meta not dict": {"id": "f", "meta": [1]},
    "meta object": {"id": "f", "meta": {"a": object()}},
    "meta nan": {"id": "f", "meta": {"a": float("nan")}},
    "meta nested nan": {"id": "f", "meta": {"a": {"b": [1, float("nan")]}}},
    "meta key": {"id": "f", "meta": {1: 2}},
    "meta nested key": {"id": "f", "meta": {"a": {"": 2}}},
    "meta dotted key": {"id": "f", "meta": {"a.b": 2}},
    "meta set": {"id": "f", "meta": {"a": {1, 2}}},
    "meta bytes in list": {"id": "f", "meta": {"a": [b"x"]}},
    "rois not list": {"id": "f", "rois": {"a": 1}},
    "roi not dict": {"id": "f", "rois": [[]]},
    "roi label": {"id": "f", "rois": [{"label": [1]}]},
    "roi confidence": {"id": "f", "rois": [{"confidence": "x"}]},
    "roi poly odd": {"id": "f", "rois": [{"poly": [1, 2, 3]}]},
    "roi poly bool": {"id": "f", "rois": [{"poly": [True, 2]}]},
    "roi meta": {"id": "f", "rois": [{"meta": {"a": {1}}}]},
    "two problems: source then meta": {"id": "f", "meta": {"a": object()}, "sources": [{"uri": 1}]},
    "two problems: mask then dup source": {"id": "f", "sources": [{"uri": "a", "id": "x", "masks": [1]},
                                                                   {"uri": "b", "id": "x"}]},
    "two problems: context then meta": {"id": "f", "context_id": 1, "meta": 2},
    "two problems: meta then rois": {"id": "f", "meta": {"a": object()}, "rois": 1},
    "two problems: key then value": {"id": "f", "meta": {"a": object(), 1: 2}},
    "two problems: values then mask ts": {"id": "f", "sources": [{"uri": "a", "masks": [
        {"uri": "m", "timestamp": "x", "values": 1}]}]},
    "two problems: source uri then id": {"id": "f", "sources": [{"uri": 1, "id": 2}]},
    "two problems: width then masks": {"id": "f", "sources": [{"uri": "a", "width": "w", "masks": 1}]},
}

EXPECTED_ERRORS = {  # str(FrameError), frozen
    "not a dict":
        "a frame must be a dict, got list",
    "float id":
        "frame 3.5: frame id must be a string, got 3.5",
    "bool id":
        "frame True: frame id must be a string, got True",
    "empty id":
        "frame id must not be empty",
    "sources not list":
        "frame 'f': sources must be a list",
    "bad timestamp":
        "frame 'f': timestamp must be an integer, got 'x'",
    "bad source timestamp as default":
        "frame 'f': source timestamp must be an integer, got 1.5",
    "timestamp range":
        "frame 'f': timestamp 9223372036854775808 does not fit in a signed 64-bit integer",
    "source not a dict":
        "frame 'f': a source must be a dict, got 1",
    "source uri":
        "frame 'f': source uri must be a string, got 5",
    "source id":
        "frame 'f': source id must be a string, got 5",
    "source ts":
        "frame 'f': source timestamp must be an integer, got 'x'",
    "source width":
        "frame 'f': source width must be an integer, got True",
    "source height":
        "frame 'f': source height must be an integer, got 1.5",
    "masks not list":
        "frame 'f': source masks must be a list",
    "mask not a dict":
        "frame 'f': a mask must be a dict, got 'm'",
    "mask uri":
        "frame 'f': mask uri must be a string, got None",
    "mask id":
        "frame 'f': mask id must be a string, got 0",
    "mask ts":
        "frame 'f': mask timestamp must be an integer, got []",
    "values channel":
        "frame 'f': mask m: values must be a list of [r, g, b, pixel_count] with channels in 0..255, "
        "got [[1, 2, 300, 4]]",
    "values short":
        "frame 'f': mask m: values must be a list of [r, g, b, pixel_count] with channels in 0..255, got [[1, 2, 3]]",
    "values count":
        "frame 'f': mask m: values must be a list of [r, g, b, pixel_count] with channels in 0..255, "
        "got [[1, 2, 3, -1]]",
    "values count bool":
        "frame 'f': mask m: values must be a list of [r, g, b, pixel_count] with channels in 0..255, "
        "got [[1, 2, 3, True]]",
    "values not list":
        "frame 'f': mask m: values must be a list of [r, g, b, pixel_count] with channels in 0..255, got 5",
    "values item":
        "frame 'f': mask m: values must be a list of [r, g, b, pixel_count] with channels in 0..255, got [5]",
    "values float":
        "frame 'f': mask m: values must be a list of [r, g, b, pixel_count] with channels in 0..255, "
        "got [[1.0, 2, 3, 4]]",
    "dup mask ids":
        "frame 'f': source '0' has duplicate mask ids ['0', '0']",
    "dup mask ids generated":
        "frame 'f': source '0' has duplicate mask ids ['01', '01']",
    "dup source ids":
        "frame '0600a7f715b154ce89ab31d6c8ca9ef6': duplicate source ids ['x', 'x']",
    "context":
        "frame 'f': context_id must be a string, got 5",
    "meta not dict":
        "frame 'f': meta must be a dict, got [1]",
    "meta object":
        "frame 'f': meta.a has a object; meta holds str, int, float, bool, null, lists and dicts",
    "meta nan":
        "frame 'f': meta.a is NaN; store null instead",
    "meta nested nan":
        "frame 'f': meta.a.b[1] is NaN; store null instead",
    "meta key":
        "frame 'f': meta. has a non-string key 1",
    "meta nested key":
        "frame 'f': meta key '' under meta.a must be non-empty and contain no '.'",
    "meta dotted key":
        "frame 'f': meta key 'a.b' under meta. must be non-empty and contain no '.'",
    "meta set":
        "frame 'f': meta.a has a set; meta holds str, int, float, bool, null, lists and dicts",
    "meta bytes in list":
        "frame 'f': meta.a[0] has a bytes; meta holds str, int, float, bool, null, lists and dicts",
    "rois not list":
        "frame 'f': rois must be a list",
    "roi not dict":
        "frame 'f': a ROI must be a dict, got []",
    "roi label":
        "frame 'f': ROI label must be a list of strings, got [1]",
    "roi confidence":
        "frame 'f': ROI confidence must be a number, got 'x'",
    "roi poly odd":
        "frame 'f': ROI poly must be a flat list of x, y numbers, got [1, 2, 3]",
    "roi poly bool":
        "frame 'f': ROI poly must be a flat list of x, y numbers, got [True, 2]",
    "roi meta":
        "frame 'f': meta.a has a set; meta holds str, int, float, bool, null, lists and dicts",
    "two problems: source then meta":
        "frame 'f': source uri must be a string, got 1",
    "two problems: mask then dup source":
        "frame 'f': a mask must be a dict, got 1",
    "two problems: context then meta":
        "frame 'f': context_id must be a string, got 1",
    "two problems: meta then rois":
        "frame 'f': meta.a has a object; meta holds str, int, float, bool, null, lists and dicts",
    "two problems: key then value":
        "frame 'f': meta.a has a object; meta holds str, int, float, bool, null, lists and dicts",
    "two problems: values then mask ts":
        "frame 'f': mask timestamp must be an integer, got 'x'",
    "two problems: source uri then id":
        "frame 'f': source uri must be a string, got 1",
    "two problems: width then masks":
        "frame 'f': source width must be an integer, got 'w'",
}


@pytest.mark.parametrize("name", list(BAD_CASES))
def test_first_error_of_a_bad_frame_is_frozen(name):
    with pytest.raises(FrameError) as info:
        normalize_frame_dict(BAD_CASES[name])
    assert str(info.value) == EXPECTED_ERRORS[name]


# ------------------------------------------------------------------------------- meta types

@settings(max_examples=150, deadline=None)
@given(frame_dicts)
def test_meta_types_found_while_validating_equal_the_archive_walk(d):
    normal, types = normalize_frame(d)
    assert types == list(meta_types(normal["meta"]))


class Level(IntEnum):
    HIGH = 2


class Name(str):
    pass


def test_meta_types_of_subclasses_nested_dicts_lists_and_null():
    meta = {"a": Level.HIGH, "b": Name("x"), "c": OrderedDict([("d", None), ("e", {"f": 1.5})]),
            "g": (1, 2), "h": [{"i": 1}], "j": None, "k": True, "l": float("inf")}
    normal, types = normalize_frame({"id": "f", "meta": meta})
    assert types == list(meta_types(normal["meta"])) == [
        ("a", "int"), ("b", "str"), ("c", "dict"), ("c.e", "dict"), ("c.e.f", "float"), ("g", "list"),
        ("h", "list"), ("k", "bool"), ("l", "float")]


def test_a_malformed_url_has_no_content_type_instead_of_an_error():
    d = normalize_frame_dict({"id": "f", "sources": [{"uri": "http://[x.png"}]})
    assert d["sources"][0]["content_type"] is None


def test_a_frame_group_keeps_a_source_with_an_empty_id_beside_source_0() -> None:
    """Reported by the export work: the "" source vanished from Frame objects beside a "0" source."""
    from maskstore.model import frame_from_dict
    frame = frame_from_dict({"id": "a", "sources": [{"id": "", "uri": "/x.png"}, {"id": "0", "uri": "/y.png"}]})
    assert [s["id"] for s in frame.to_dict()["sources"]] == ["", "0"]
    assert [s.uri for s in frame.sources] == ["/x.png", "/y.png"]
