"""Frame model: id rules, defaults, mask attachment, annotations and the frame-dict round trip."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from strategies import frame_dicts

from maskstore import FrameError, FrameGroup, SingleFrame
from maskstore.model import derived_frame_id, frame_from_dict, normalize_frame_dict


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
