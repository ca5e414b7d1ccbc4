"""Importers on the real files of ../shared/data laid out as Cityscapes, VOC and plain folder trees."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from maskstore import Archive, FrameError, MaskError
from maskstore.cli import main
from maskstore.labels import packaged_table
from maskstore.ingest import apply_label_table
from maskstore.ingest import IngestInterrupted, IngestReport, builtin_label_table, dry_run, ingest, set_labels
from maskstore.ingest.cityscapes import cityscapes_labels, frames_from_cityscapes
from maskstore.ingest.folders import pair_folders
from maskstore.ingest.voc import frames_from_voc, voc_labels
from maskstore.render import render

STEM = "frankfurt_000000_000294"
# A second, derived Cityscapes frame in another city: the real labelIds mask with every car pixel
# (26) made road (7), so label queries have something to tell apart.
DERIVED = "munster_000000_000019"


def link(src: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(src, dst)
    return dst


@pytest.fixture
def cityscapes_root(tmp_path, shared_data) -> Path:
    src, root = shared_data / "mmsegmentation_cityscapes", tmp_path / "cityscapes"
    link(src / f"{STEM}_leftImg8bit.png", root / "leftImg8bit/val/frankfurt" / f"{STEM}_leftImg8bit.png")
    for kind in ("labelIds", "labelTrainIds", "instanceIds"):
        link(src / f"{STEM}_gtFine_{kind}.png", root / "gtFine/val/frankfurt" / f"{STEM}_gtFine_{kind}.png")
    link(src / f"{STEM}_leftImg8bit.png", root / "leftImg8bit/val/munster" / f"{DERIVED}_leftImg8bit.png")
    label_ids = np.asarray(Image.open(src / f"{STEM}_gtFine_labelIds.png")).copy()
    label_ids[label_ids == 26] = 7
    (root / "gtFine/val/munster").mkdir(parents=True)
    for kind, arr in (("labelIds", label_ids), ("instanceIds", label_ids.astype(np.uint16))):
        Image.fromarray(arr).save(root / "gtFine/val/munster" / f"{DERIVED}_gtFine_{kind}.png")
    # files that pair with nothing
    link(src / f"{STEM}_leftImg8bit.png", root / "leftImg8bit/val/frankfurt/frankfurt_000001_000000_leftImg8bit.png")
    link(src / f"{STEM}_gtFine_labelIds.png", root / "gtFine/val/lindau/lindau_000000_000000_gtFine_labelIds.png")
    return root


@pytest.fixture
def voc_root(tmp_path, shared_data) -> Path:
    src, root = shared_data / "labelme_voc", tmp_path / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "SegmentationObject"):
        for path in sorted((src / sub).iterdir()):
            link(path, root / sub / path.name)
    sets = root / "ImageSets/Segmentation"
    sets.mkdir(parents=True)
    (sets / "val.txt").write_text("2011_000003\n2011_000006\n2011_999999\n")  # the last one does not exist
    (sets / "train.txt").write_text("2011_000006\n")
    return root


def ingest_all(version, frames, skipped=None):
    report = IngestReport(skipped=skipped if skipped is not None else [])
    return ingest(version, frames, batch_size=2, report=report)


# ---------------------------------------------------------------------------------------- tables

def test_packaged_cityscapes_table_matches_the_shared_facts(shared_data):
    facts = json.loads((shared_data / "mmsegmentation_cityscapes/cityscapes_labels.json").read_text())["labels"]
    assert packaged_table("cityscapes") == facts
    keys = ("id", "name", "trainId", "color")
    assert [tuple(map(str, (e[k] for k in keys))) for e in packaged_table("cityscapes")] == \
        [tuple(map(str, (e[k] for k in keys))) for e in facts]
    assert len(facts) == 35


def test_packaged_voc_table_matches_the_shared_facts(shared_data):
    for folder in ("labelme_voc", "deeplabv3plus_voc_rgb"):
        facts = json.loads((shared_data / folder / "voc_labels.json").read_text())["labels"]
        assert packaged_table("voc") == facts


def test_only_the_ignore_train_id_is_shared():
    train_ids = [e["trainId"] for e in packaged_table("cityscapes") if e["trainId"] >= 0]
    shared = {t for t in train_ids if train_ids.count(t) > 1}
    assert shared == {255}
    assert sorted(set(train_ids) - {255}) == list(range(19))


def test_cityscapes_label_tables():
    labels, colors = cityscapes_labels("labelIds")
    table = {tuple(e["value"]): e["labels"] for e in labels}
    assert len(table) == 34 and table[(0, 0, 0)] == ["unlabeled"] and table[(33, 33, 33)] == ["bicycle"]
    assert all(v[0] == v[1] == v[2] >= 0 for v in table)
    assert colors["car"] == [0, 0, 142] and colors["road"] == [128, 64, 128] and "license plate" not in colors
    train, train_colors = cityscapes_labels("labelTrainIds")
    train_table = {tuple(e["value"]): e["labels"] for e in train}
    assert train_table[(0, 0, 0)] == ["road"] and train_table[(13, 13, 13)] == ["car"]
    assert train_table[(255, 255, 255)] == ["ignore"] and len(train_table) == 20
    assert train_colors["ignore"] == [0, 0, 0] and train_colors["bicycle"] == [119, 11, 32]
    assert cityscapes_labels("instanceIds") == (labels, colors)
    with pytest.raises(FrameError, match="labelIds, labelTrainIds, instanceIds"):
        cityscapes_labels("color")


def test_builtin_label_tables_in_the_labels_file_form():
    voc = builtin_label_table("voc")
    assert voc[15] == {"value": [192, 128, 128], "labels": ["person"], "color": [192, 128, 128]}
    assert voc[-1] == {"value": [224, 224, 192], "labels": ["void"], "color": [224, 224, 192]}
    city = builtin_label_table("cityscapes")
    assert city[26] == {"value": [26, 26, 26], "labels": ["car"], "color": [0, 0, 142]}
    assert builtin_label_table("cityscapes-labelTrainIds")[-1]["labels"] == ["ignore"]
    with pytest.raises(FrameError, match="bundled: cityscapes"):
        builtin_label_table("ade20k")


# ---------------------------------------------------------------------------------------- Cityscapes

def test_cityscapes_label_ids(tmp_path, cityscapes_root):
    skipped: list[tuple[str, str]] = []
    with Archive(tmp_path / "c.maskstore", jobs=1) as ar:
        v = ar.create_version("cityscapes", "v1")
        set_labels(v, *cityscapes_labels("labelIds"))
        report = ingest_all(v, frames_from_cityscapes(cityscapes_root, "val", skipped=skipped), skipped)
        assert report.frames == 2 and len(v) == 2
        assert v.ids() == [STEM, DERIVED]
        frame = v.get_frame_dict(STEM)
        assert frame["context_id"] == "frankfurt" and frame["meta"] == {"city": "frankfurt", "split": "val"}
        source = frame["sources"][0]
        assert source["id"] == "0" and Path(source["uri"]).is_absolute()
        assert source["uri"].endswith(f"leftImg8bit/val/frankfurt/{STEM}_leftImg8bit.png")
        (mask,) = source["masks"]
        assert mask["id"] == "00" and mask["uri"].endswith(f"{STEM}_gtFine_labelIds.png")
        assert [tuple(x[:3]) for x in mask["values"]] == [(i, i, i) for i in (1, 2, 3, 4, 7, 8, 11, 13, 17, 20, 21,
                                                                              23, 24, 26)]
        assert v.get_masks_labels()[(26, 26, 26)] == ["car"] and v.get_masks_labels()[(0, 0, 0)] == ["unlabeled"]
        assert v.get_label_colors()["car"] == (0, 0, 142) and v.get_label_colors()["person"] == (220, 20, 60)
        assert v.ids('label == "car"') == [STEM]
        assert v.ids('label == "person"') == [STEM, DERIVED]
        assert v.ids('label == "road"') == [STEM, DERIVED]
        assert v.ids('context_id == "frankfurt"') == [STEM]
        assert v.ids('meta.city == "munster"') == [DERIVED]
        assert v.ids('label == "bus"') == []

        reasons = {Path(p).name: r for p, r in skipped}
        assert reasons == {"frankfurt_000001_000000_leftImg8bit.png": "no gtFine labelIds mask for this image",
                           "lindau_000000_000000_gtFine_labelIds.png": "no leftImg8bit image for this mask"}

        # a re-run updates the same frames
        ingest_all(v, frames_from_cityscapes(cityscapes_root, "val"))
        assert len(v) == 2 and v.ids() == [STEM, DERIVED]


def test_cityscapes_train_ids(tmp_path, cityscapes_root):
    skipped: list[tuple[str, str]] = []
    with Archive(tmp_path / "c.maskstore", jobs=1) as ar:
        v = ar.create_version("cityscapes", "train-ids")
        set_labels(v, *cityscapes_labels("labelTrainIds"))
        ingest_all(v, frames_from_cityscapes(cityscapes_root, kind="labelTrainIds", skipped=skipped))
        # the derived frame has no labelTrainIds file
        assert v.ids() == [STEM]
        assert any(Path(p).name == f"{DERIVED}_leftImg8bit.png" for p, _ in skipped)
        mask = v.get_frame_dict(STEM)["sources"][0]["masks"][0]
        assert mask["uri"].endswith("_gtFine_labelTrainIds.png")
        assert {x[0] for x in mask["values"]} == {0, 1, 2, 4, 5, 7, 8, 10, 11, 13, 255}
        assert v.ids('label == "car"') == [STEM] and v.ids('label == "ignore"') == [STEM]
        assert v.ids('label == "unlabeled"') == []
        assert v.get_label_colors()["sky"] == (70, 130, 180)


def test_cityscapes_instance_ids_keep_label_ids_as_the_semantic_mask(tmp_path, cityscapes_root):
    with Archive(tmp_path / "c.maskstore", jobs=1) as ar:
        v = ar.create_version("cityscapes", "instances")
        set_labels(v, *cityscapes_labels("instanceIds"))
        ingest_all(v, frames_from_cityscapes(cityscapes_root, kind="instanceIds"))
        assert v.ids() == [STEM, DERIVED]
        mask = v.get_frame_dict(STEM)["sources"][0]["masks"][0]
        assert mask["uri"].endswith(f"{STEM}_gtFine_labelIds.png")
        assert mask["instance_uri"].endswith(f"{STEM}_gtFine_instanceIds.png")
        assert v.ids('label == "car"') == [STEM]
        # the reason: the instance file itself has values above 255, which ingest refuses (spec 1)
        instance = {"id": "raw", "sources": [{"uri": str(cityscapes_root / "leftImg8bit/val/frankfurt" /
                                                         f"{STEM}_leftImg8bit.png"),
                                              "masks": [{"uri": mask["instance_uri"]}]}]}
        with pytest.raises(IngestInterrupted) as caught:
            ingest(v, [instance])
        assert isinstance(caught.value.cause, MaskError) and "26002" in str(caught.value)
        # and value // 1000 of the instance file is the labelIds file, pixel for pixel
        ids = np.asarray(Image.open(mask["uri"]))
        inst = np.asarray(Image.open(mask["instance_uri"])).astype(np.int64)
        assert np.array_equal(np.where(inst >= 1000, inst // 1000, inst), ids)


def test_cityscapes_bad_layouts(tmp_path, cityscapes_root):
    with pytest.raises(FrameError, match="no leftImg8bit/train .*it has splits: val"):
        frames_from_cityscapes(cityscapes_root, "train")
    with pytest.raises(FrameError, match="no leftImg8bit/ folder"):
        frames_from_cityscapes(tmp_path, "val")
    with pytest.raises(FrameError, match="unknown Cityscapes mask kind 'color'"):
        frames_from_cityscapes(cityscapes_root, kind="color")


# ---------------------------------------------------------------------------------------- VOC

def test_voc_with_a_split(tmp_path, voc_root):
    skipped: list[tuple[str, str]] = []
    with Archive(tmp_path / "v.maskstore", jobs=1) as ar:
        v = ar.create_version("voc", "v1")
        set_labels(v, *voc_labels())
        report = ingest_all(v, frames_from_voc(voc_root, "val", skipped=skipped))
        assert report.frames == 2 and v.ids() == ["2011_000003", "2011_000006"]
        frame = v.get_frame_dict("2011_000003")
        assert frame["context_id"] == "2011_000003" and frame["meta"] == {"split": "val"}
        source = frame["sources"][0]
        assert source["uri"] == str(voc_root.resolve() / "JPEGImages/2011_000003.jpg")
        (mask,) = source["masks"]
        assert mask["id"] == "00" and mask["uri"].endswith("SegmentationClass/2011_000003.png")
        assert mask["object_uri"].endswith("SegmentationObject/2011_000003.png")
        assert [x[:3] for x in mask["values"]] == [[0, 0, 0], [128, 0, 128], [192, 128, 128], [224, 224, 192]]
        assert "object_uri" not in v.get_frame_dict("2011_000006")["sources"][0]["masks"][0]

        labels = v.get_masks_labels()
        assert labels[(192, 128, 128)] == ["person"] and labels[(224, 224, 192)] == ["void"] and len(labels) == 22
        assert v.get_label_colors()["sofa"] == (0, 192, 0)
        assert v.ids('label == "sofa"') == ["2011_000006"]
        assert v.ids('label == "person"') == ["2011_000003", "2011_000006"]
        assert v.ids('label == "bottle"') == ["2011_000003"]
        assert v.ids('label == "aeroplane"') == []
        assert v.ids('label == "void"') == ["2011_000003", "2011_000006"]
        assert skipped == [(str(voc_root.resolve() / "JPEGImages/2011_999999.jpg"),
                            "listed in ImageSets/Segmentation/val.txt but the image is missing")]

        ingest_all(v, frames_from_voc(voc_root, "train"))  # re-run over a subset: updates, no duplicates
        assert len(v) == 2 and v.get_frame_dict("2011_000006")["meta"] == {"split": "train"}


def test_voc_without_a_split_reports_unpaired_files(tmp_path, voc_root):
    shutil.copy(voc_root / "SegmentationClass/2011_000003.png", voc_root / "SegmentationClass/2012_000001.png")
    shutil.copy(voc_root / "JPEGImages/2011_000003.jpg", voc_root / "JPEGImages/2012_000002.jpg")
    shutil.copy(voc_root / "SegmentationObject/2011_000003.png", voc_root / "SegmentationObject/2012_000003.png")
    skipped: list[tuple[str, str]] = []
    frames = list(frames_from_voc(voc_root, skipped=skipped))
    assert [f["id"] for f in frames] == ["2011_000003", "2011_000006"]
    assert all(f["meta"] == {} for f in frames)
    reasons = {Path(p).name: r for p, r in skipped}
    assert reasons == {"2012_000001.png": "no JPEGImages/<id>.jpg for this class mask",
                       "2012_000003.png": "no SegmentationClass mask for this object mask",
                       "JPEGImages": "1 images have no SegmentationClass mask (detection-only images)"}


def test_voc_object_masks_attached_on_request_collide_with_class_colours(tmp_path, voc_root):
    with Archive(tmp_path / "v.maskstore", jobs=1) as ar:
        v = ar.create_version("voc", "objects")
        set_labels(v, *voc_labels())
        ingest_all(v, frames_from_voc(voc_root, "val", object_masks=True))
        masks = v.get_frame_dict("2011_000003")["sources"][0]["masks"]
        assert [m["id"] for m in masks] == ["00", "object"]
        assert [x[:3] for x in masks[1]["values"]] == [[0, 0, 0], [0, 128, 0], [128, 0, 0], [128, 128, 0]]
        assert v.ids('mask.id == "object"') == ["2011_000003"]
        # instance 1 is drawn in the colour of class 1: the reason object masks are not attached by default
        assert v.ids('label == "aeroplane"') == ["2011_000003"]


def test_voc_bad_layouts(tmp_path, voc_root):
    with pytest.raises(FrameError, match="no split list .*splits there: train, val"):
        frames_from_voc(voc_root, "test")
    with pytest.raises(FrameError, match="no JPEGImages/ folder"):
        frames_from_voc(tmp_path / "nowhere")


# ---------------------------------------------------------------------------------------- folders

def test_rgb_colour_coded_masks_with_a_label_table(tmp_path, shared_data):
    src = shared_data / "deeplabv3plus_voc_rgb"
    skipped: list[tuple[str, str]] = []
    with Archive(tmp_path / "d.maskstore", jobs=1) as ar:
        v = ar.create_version("deeplab", "v1")
        apply_label_table(v, builtin_label_table("voc"))
        frames = pair_folders(src, src, skipped, image_suffix="_image", mask_suffix="_target")
        ingest_all(v, frames)
        assert sorted(v.ids()) == ["1", "114"] and skipped == []
        assert v.ids('label == "aeroplane"') == ["1"] and v.ids('label == "bird"') == ["114"]
        assert sorted(v.ids('label == "void"')) == ["1", "114"]
        assert v.get_label_colors()["bird"] == (128, 128, 0)
        values = v.get_frame_dict("114")["sources"][0]["masks"][0]["values"]
        assert [x[:3] for x in values] == [[0, 0, 0], [128, 128, 0], [224, 224, 192]]


def test_rgb_masks_through_the_cli_labels_option(tmp_path, shared_data):
    src = shared_data / "deeplabv3plus_voc_rgb"
    for stem in ("1", "114"):
        link(src / f"{stem}_image.png", tmp_path / "images" / f"{stem}.png")
        link(src / f"{stem}_target.png", tmp_path / "masks" / f"{stem}.png")
    table = tmp_path / "table.json"
    table.write_text(json.dumps([e for e in builtin_label_table("voc")]))
    path = tmp_path / "cli.maskstore"
    result = CliRunner().invoke(main, ["ingest", str(path), "-d", "deeplab", "-V", "v1", "--images",
                                       str(tmp_path / "images"), "--masks", str(tmp_path / "masks"),
                                       "--labels", str(table), "--jobs", "1"])
    assert result.exit_code == 0, result.output
    with Archive(path, readonly=True) as ar:
        v = ar.get_version("deeplab", "v1")
        assert v.ids('label == "bird"') == ["114"]
        assert v.get_label_colors()["aeroplane"] == (128, 0, 0)


@pytest.mark.parametrize("layout", ["lemur", "troll", "rembg"])
def test_alpha_mattes_ingest_without_labels(tmp_path, shared_data, layout):
    skipped: list[tuple[str, str]] = []
    if layout == "lemur":  # photo, matte, trimap and a second photo in one folder
        folder = shared_data / "pymatting_lemur"
        frames = pair_folders(folder, folder, skipped, mask_suffix="_alpha")
        expected = ["lemur"]
        assert sorted(Path(p).name for p, _ in skipped) == ["beach.png", "lemur_trimap.png"]
    elif layout == "troll":  # images/ and predictions/ side by side
        folder = shared_data / "fba_matting_troll"
        frames = pair_folders(folder / "images", folder / "predictions", skipped, mask_suffix="_alpha")
        expected = ["troll"]
        assert skipped == []
    else:  # RGBA cut-outs beside the JPEGs
        folder = shared_data / "rembg_examples"
        frames = pair_folders(folder, folder, skipped, mask_suffix=".out")
        expected = ["car-1", "car-2", "girl-1"]
        assert skipped == []
    with Archive(tmp_path / "a.maskstore", jobs=1) as ar:
        v = ar.create_version("mattes", "v1")
        ingest_all(v, frames)
        assert v.ids() == expected and v.get_masks_labels() == {}
        frame = v.get_frame(expected[0])
        mask = frame.sources[0].masks[0]
        if layout == "rembg":  # photo colours are no categories: an alpha mask (FORMAT.md, "Mask statistics")
            assert mask.values is None and mask.extra["kind"] == "alpha"
        else:
            assert mask.values and sum(x[3] for x in mask.values) == frame.sources[0].width * frame.sources[0].height
        rgba = render(frame, v, mode="alpha")
        matte = Image.open(mask.uri)
        alpha = matte.getchannel("A") if matte.mode == "RGBA" else matte
        assert np.array_equal(rgba[..., 3], np.asarray(alpha))


def test_pair_folders_refuses_one_folder_without_suffixes_and_reports_name_clashes(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "masks").mkdir()
    for name in ("a.jpg", "a.png", "b.png"):
        Image.new("RGB", (2, 2)).save(tmp_path / "img" / name)
    for name in ("a_mask.png", "b.png"):
        Image.new("L", (2, 2)).save(tmp_path / "masks" / name)
    with pytest.raises(FrameError, match="same folder"):
        pair_folders(tmp_path / "img", tmp_path / "img")
    skipped: list[tuple[str, str]] = []
    frames = list(pair_folders(tmp_path / "img", tmp_path / "masks", skipped, mask_suffix="_mask"))
    assert [f["id"] for f in frames] == ["a"]
    reasons = {str(Path(p).relative_to(tmp_path)): r for p, r in skipped}
    assert reasons == {"img/a.png": "same name as a.jpg, which is used instead",
                       "masks/b.png": "name does not end with the mask suffix '_mask'",
                       "img/b.png": "no mask with this name"}


# ---------------------------------------------------------------------------------------- dry run

def test_dry_run_summarises_without_writing(tmp_path, voc_root):
    with Archive(tmp_path / "v.maskstore", jobs=1) as ar:
        v = ar.create_version("voc", "v1")
        summary = dry_run(frames_from_voc(voc_root, "val", object_masks=True), sample=1)
        assert (summary.frames, summary.sources, summary.masks, summary.contexts) == (2, 2, 3, 2)
        assert summary.sample_ids == ["2011_000003"] and summary.mask_ids == {"00": 2, "object": 1}
        assert summary.problems == []
        assert summary.lines()[0] == 'would add 2 frames (2 contexts), 2 sources, 3 masks ("00" x2, "object" x1)'
        assert len(v) == 0

    bad = [{"id": "a", "sources": [{"uri": str(tmp_path / "missing.png")}]}, {"id": "a"}, {"id": 3.5}]
    summary = dry_run(bad)
    assert summary.frames == 3
    assert [w for w, _ in summary.problems] == ["a", "a", "#3"]
    assert "file not found" in summary.problems[0][1] and "given twice" in summary.problems[1][1]
