"""Exports for training and other tools (spec section 8): class-index PNGs and dataset layouts.

The layout tests are round trips on the real files of ../shared/data through the command line:
ingest -> ``export --layout`` -> ingest the exported folder with the matching importer into a new
archive -> the same frame ids, labels and mask statistics (values and pixel counts).
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from maskstore import Archive, FrameGroup, MaskError, SingleFrame
from maskstore.cli import main
from maskstore.ingest import builtin_label_table, set_labels
from maskstore.ingest.cityscapes import cityscapes_labels
from maskstore.ingest.voc import voc_labels, voc_table
from maskstore.export import encode_image
from maskstore.layouts import LayoutFile, file_content, plan_layout, voc_colormap
from maskstore.media import mask_pixels, value_counts

STEM = "frankfurt_000000_000294"
# What ingest stores about a mask: values and pixel counts, or an alpha mask's coverage; and its size.
STATISTICS = ("values", "kind", "coverage", "width", "height")


def run(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args])


def ok(*args: object):
    result = run(*args)
    assert result.exit_code == 0, result.output
    return result


def one_line_error(*args: object) -> str:
    """Run a command that must fail as a user error: exit 1, one line on stderr, no traceback."""
    result = run(*args)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


def state(path: Path) -> tuple[dict[str, list], dict, dict]:
    """(frame id -> mask statistics, mask_labels, label_colors) of the archive's only version."""
    with Archive(path, readonly=True) as ar:
        (version,) = ar.versions()
        stats = {d["id"]: [{k: m[k] for k in STATISTICS if k in m} for s in d["sources"] for m in s["masks"]]
                 for d in version.frame_dicts()}
        return stats, version.get_masks_labels(), version.get_label_colors()


def round_trip(tmp_path: Path, source: Path, layout: str, ingest_again: list[object], *export_args: object
               ) -> tuple[tuple, tuple, Path]:
    """Export ``source`` in ``layout``, ingest the folder with ``ingest_again`` (OUT stands for it)."""
    out = tmp_path / f"out-{layout}"
    ok("export", source, out, "--layout", layout, "--jobs", 1, *export_args)
    again = tmp_path / f"again-{layout}.maskstore"
    ok("ingest", again, "-d", "again", "-V", "v1", *[str(a).replace("OUT", str(out)) for a in ingest_again])
    return state(source), state(again), out


def assert_same(before: tuple, after: tuple) -> None:
    stats, labels, _ = before
    assert after[0] == stats
    assert all(masks and all("values" in m or "coverage" in m for m in masks) for masks in stats.values())
    assert after[1] == labels


# ---------------------------------------------------------------------------------------- fixtures

@pytest.fixture
def voc_archive(tmp_path, shared_data) -> Path:
    path = tmp_path / "voc.maskstore"
    ok("ingest", path, "-d", "voc", "-V", "v1", "--voc", shared_data / "labelme_voc")
    return path


def rgb_coded_archive(tmp_path: Path, shared_data: Path, table: str) -> Path:
    """The RGB colour-coded VOC masks (``1_target.png`` beside ``1_image.png``) under a bundled table."""
    path, folder = tmp_path / "rgb.maskstore", shared_data / "deeplabv3plus_voc_rgb"
    ok("ingest", path, "--images", folder, "--masks", folder, "--image-suffix", "_image", "--mask-suffix", "_target",
       "--labels", table)
    return path


@pytest.fixture
def cityscapes_root(tmp_path, shared_data) -> Path:
    src, root = shared_data / "mmsegmentation_cityscapes", tmp_path / "cityscapes"
    for top, suffix in (("leftImg8bit", "leftImg8bit"), ("gtFine", "gtFine_labelIds"),
                        ("gtFine", "gtFine_labelTrainIds"), ("gtFine", "gtFine_instanceIds")):
        (root / top / "val" / "frankfurt").mkdir(parents=True, exist_ok=True)
        shutil.copy(src / f"{STEM}_{suffix}.png", root / top / "val" / "frankfurt" / f"{STEM}_{suffix}.png")
    return root


@pytest.fixture
def cityscapes_archive(tmp_path, cityscapes_root) -> Path:
    path = tmp_path / "city.maskstore"
    ok("ingest", path, "-d", "city", "-V", "v1", "--cityscapes", cityscapes_root)
    return path


# ---------------------------------------------------------------------------------------- VOC

def test_voc_layout_round_trip_on_real_palette_masks(tmp_path, voc_archive, shared_data):
    before, after, out = round_trip(tmp_path, voc_archive, "voc", ["--voc", "OUT", "--split", "train"],
                                    "--split", "train")
    assert_same(before, after)
    assert sorted(before[0]) == ["2011_000003", "2011_000006"]
    assert (out / "ImageSets/Segmentation/train.txt").read_text().split() == sorted(before[0])
    assert json.loads((out / "labels.json").read_text()) == builtin_label_table("voc")
    mask = Image.open(out / "SegmentationClass/2011_000003.png")
    assert mask.mode == "P" and sorted(np.unique(np.asarray(mask)).tolist()) == [0, 5, 15, 255]
    # the JPEGs are the original files, byte for byte
    for frame_id in before[0]:
        assert (out / f"JPEGImages/{frame_id}.jpg").read_bytes() == \
            (shared_data / f"labelme_voc/JPEGImages/{frame_id}.jpg").read_bytes()
    # the object mask the importer kept on the class mask comes along, where the importer finds it again
    with Archive(tmp_path / "again-voc.maskstore", readonly=True) as ar:
        mask = ar.versions()[0].get_frame("2011_000003").to_dict()["sources"][0]["masks"][0]
    assert Path(mask["object_uri"]).read_bytes() == \
        (shared_data / "labelme_voc/SegmentationObject/2011_000003.png").read_bytes()


def test_voc_layout_writes_rgb_colour_coded_masks_as_palette_masks(tmp_path, shared_data):
    src = rgb_coded_archive(tmp_path, shared_data, "voc")
    before, after, out = round_trip(tmp_path, src, "voc", ["--voc", "OUT"])
    assert_same(before, after)
    assert sorted(before[0]) == ["1", "114"]
    mask = Image.open(out / "SegmentationClass/1.png")
    assert mask.mode == "P" and sorted(np.unique(np.asarray(mask)).tolist()) == [0, 1, 255]
    assert Image.open(out / "JPEGImages/1.jpg").format == "JPEG"  # PNG photos become the JPEGs VOC expects


def written_mask(layout: str, mask: Image.Image) -> Image.Image:
    """A mask as the layout writes it, encoded and decoded again."""
    labels = builtin_label_table("voc" if layout == "voc" else "cityscapes")
    chosen = plan_layout(layout, None, [{"value": e["value"], "labels": e["labels"]} for e in labels], {}, "t/v")
    file = LayoutFile(("masks",), "m.png", "png", "mask", "drawn.png")
    content = file_content(chosen, file, lambda uri: b"", lambda uri, what: mask)
    return Image.open(io.BytesIO(encode_image(content, "png")))


@settings(max_examples=60, deadline=None)
@given(indices=arrays(np.uint8, st.tuples(st.integers(1, 12), st.integers(1, 12))), as_rgb=st.booleans(),
       layout=st.sampled_from(["voc", "cityscapes"]))
def test_layout_masks_keep_every_value_and_count(indices, as_rgb, layout):
    """Palette, grey and RGB masks whose values the layout can hold come back with the same statistics."""
    mask = Image.fromarray(indices)  # grey: Cityscapes ids
    if layout == "voc":
        mask.putpalette(voc_colormap().ravel().tolist())  # palette: VOC colours
    if as_rgb:
        mask = mask.convert("RGB")
    written = written_mask(layout, mask)
    assert written.mode == ("P" if layout == "voc" else "L")
    assert value_counts(mask_pixels(written)) == value_counts(mask_pixels(mask))


@settings(max_examples=30, deadline=None)
@given(rgb=arrays(np.uint8, st.tuples(st.integers(1, 6), st.integers(1, 6), st.just(3))))
def test_values_outside_the_layouts_mask_format_are_named(rgb):
    keys = set(map(tuple, rgb.reshape(-1, 3).tolist()))
    voc_colours = set(map(tuple, voc_colormap().tolist()))
    for layout, fits in (("voc", voc_colours.__contains__), ("cityscapes", lambda c: c[0] == c[1] == c[2])):
        outside = sorted(c for c in keys if not fits(c))
        if not outside:
            written_mask(layout, Image.fromarray(rgb))
            continue
        with pytest.raises(MaskError, match="holds values that are not") as caught:
            written_mask(layout, Image.fromarray(rgb))
        assert str(outside[0]) in str(caught.value)


def test_voc_colormap_is_the_table_voc_uses():
    cmap = voc_colormap()
    for entry in voc_table():
        assert cmap[entry["id"]].tolist() == entry["color"]
    assert len({tuple(c) for c in cmap.tolist()}) == 256  # every index its own colour: no value is ambiguous


# ---------------------------------------------------------------------------------------- Cityscapes

def test_cityscapes_layout_round_trip_on_the_real_frame(tmp_path, cityscapes_archive):
    before, after, out = round_trip(tmp_path, cityscapes_archive, "cityscapes", ["--cityscapes", "OUT"])
    assert_same(before, after)
    assert list(before[0]) == [STEM]
    mask = out / f"gtFine/val/frankfurt/{STEM}_gtFine_labelIds.png"
    real = cityscapes_archive.parent / "cityscapes/gtFine/val/frankfurt" / f"{STEM}_gtFine_labelIds.png"
    assert np.array_equal(np.asarray(Image.open(mask)), np.asarray(Image.open(real)))
    image = out / f"leftImg8bit/val/frankfurt/{STEM}_leftImg8bit.png"
    assert image.read_bytes() == (real.parents[4] / "cityscapes/leftImg8bit/val/frankfurt" /
                                  f"{STEM}_leftImg8bit.png").read_bytes()
    with Archive(tmp_path / "again-cityscapes.maskstore", readonly=True) as ar:
        assert ar.versions()[0].get_frame(STEM).context_id == "frankfurt"


def test_cityscapes_layout_keeps_train_ids_and_the_split(tmp_path, cityscapes_root):
    src = tmp_path / "train.maskstore"
    ok("ingest", src, "--cityscapes", cityscapes_root, "--kind", "labelTrainIds")
    before, after, out = round_trip(tmp_path, src, "cityscapes",
                                    ["--cityscapes", "OUT", "--split", "test", "--kind", "labelTrainIds"],
                                    "--split", "test")
    assert_same(before, after)
    assert (out / f"gtFine/test/frankfurt/{STEM}_gtFine_labelTrainIds.png").is_file()


def test_cityscapes_layout_keeps_the_instance_file(tmp_path, cityscapes_root):
    src = tmp_path / "instances.maskstore"
    ok("ingest", src, "--cityscapes", cityscapes_root, "--kind", "instanceIds")
    before, after, out = round_trip(tmp_path, src, "cityscapes", ["--cityscapes", "OUT", "--kind", "instanceIds"])
    assert_same(before, after)
    copied = out / f"gtFine/val/frankfurt/{STEM}_gtFine_instanceIds.png"
    assert copied.read_bytes() == (cityscapes_root / f"gtFine/val/frankfurt/{STEM}_gtFine_instanceIds.png").read_bytes()
    with Archive(tmp_path / "again-cityscapes.maskstore", readonly=True) as ar:
        assert ar.versions()[0].get_frame(STEM).to_dict()["sources"][0]["masks"][0]["instance_uri"] == str(copied)


def test_a_frame_without_a_city_goes_to_the_unknown_city(tmp_path, shared_data):
    src = shared_data / "mmsegmentation_cityscapes"
    with Archive(tmp_path / "plain.maskstore") as ar:
        v = ar.create_version(dataset_name="plain", version_name="v1")
        set_labels(v, *cityscapes_labels("labelIds"))
        v.add_frames([SingleFrame(source=str(src / f"{STEM}_leftImg8bit.png"),
                                  mask_source=str(src / f"{STEM}_gtFine_labelIds.png"))])
        (frame_id,) = v.ids()
        assert "/" in v.get_frame(frame_id).context_id  # the default: the source's path
    before, after, out = round_trip(tmp_path, tmp_path / "plain.maskstore", "cityscapes", ["--cityscapes", "OUT"])
    assert_same(before, after)
    assert (out / f"gtFine/val/unknown/{frame_id}_gtFine_labelIds.png").is_file()


def test_a_frame_with_masks_on_several_sources_is_an_error_for_that_frame(tmp_path, shared_data):
    voc = shared_data / "labelme_voc"
    with Archive(tmp_path / "group.maskstore") as ar:
        v = ar.create_version(dataset_name="group", version_name="v1")
        set_labels(v, *voc_labels())
        group = FrameGroup(id="pair")
        for camera, stem in (("left", "2011_000003"), ("right", "2011_000006")):
            group[camera] = SingleFrame(source=str(voc / f"JPEGImages/{stem}.jpg"),
                                        mask_source=str(voc / f"SegmentationClass/{stem}.png"))
        v.add_frames([group])
        report = v.export(tmp_path / "out", layout="voc", jobs=1)
        assert report.written == 0
        assert report.errors == [("pair", "frame 'pair' has masks on 2 sources ('left', 'right'); the voc layout "
                                          "holds one image and one mask per frame: choose the mask with mask_id")]


def test_library_layout_export_on_two_processes(tmp_path, voc_archive):
    with Archive(voc_archive, readonly=True) as ar:
        report = ar.versions()[0].export(tmp_path / "out", layout="voc", jobs=2)
    assert (report.written, report.skipped, report.errors, report.legend) == (5, 0, [], None)
    assert len(list((tmp_path / "out").rglob("*.png"))) == 3 and len(list((tmp_path / "out").rglob("*.jpg"))) == 2


# ---------------------------------------------------------------------------------------- folders

def test_folders_layout_round_trip_keeps_any_label_table_and_nested_ids(tmp_path, shared_data):
    lip = shared_data / "mmsegmentation_lip_mapillary/lip"
    images, masks = tmp_path / "lip/images", tmp_path / "lip/masks"
    for split in ("train", "val"):
        for image in (lip / f"{split}_images").iterdir():
            (images / split).mkdir(parents=True, exist_ok=True)
            (masks / split).mkdir(parents=True, exist_ok=True)
            shutil.copy(image, images / split / image.name)
            shutil.copy(lip / f"{split}_segmentations" / f"{image.stem}.png", masks / split / f"{image.stem}.png")
    table = [{"value": [e["id"]] * 3, "labels": [e["name"]], "color": e["color"]}
             for e in json.loads((shared_data / "mmsegmentation_lip_mapillary/lip_labels.json").read_text())["labels"]]
    (tmp_path / "lip.json").write_text(json.dumps(table))
    src = tmp_path / "lip.maskstore"
    ok("ingest", src, "--images", images, "--masks", masks, "--labels", tmp_path / "lip.json")
    before, after, out = round_trip(tmp_path, src, "folders",
                                    ["--images", "OUT/images", "--masks", "OUT/masks", "--labels", "OUT/labels.json"])
    assert_same(before, after)
    assert after[2] == before[2]  # the colours come back too
    assert sorted(before[0]) == ["train/684_2150041", "val/86_185913"]
    for stem in before[0]:  # the files themselves, copied
        assert (out / "images" / f"{stem}.jpg").read_bytes() == (images / f"{stem}.jpg").read_bytes()
        assert (out / "masks" / f"{stem}.png").read_bytes() == (masks / f"{stem}.png").read_bytes()


def test_folders_layout_round_trip_of_alpha_cut_outs(tmp_path, shared_data):
    src = tmp_path / "rembg.maskstore"
    ok("ingest", src, "--images", shared_data / "rembg_examples", "--masks", shared_data / "rembg_examples",
       "--mask-suffix", ".out")
    before, after, _ = round_trip(tmp_path, src, "folders", ["--images", "OUT/images", "--masks", "OUT/masks"])
    assert_same(before, after)
    assert sorted(before[0]) == ["car-1", "car-2", "girl-1"]
    assert all(m["kind"] == "alpha" for masks in before[0].values() for m in masks)


def test_a_voc_version_goes_to_folders_and_back(tmp_path, voc_archive):
    before, after, _ = round_trip(tmp_path, voc_archive, "folders",
                                  ["--images", "OUT/images", "--masks", "OUT/masks", "--labels", "OUT/labels.json"])
    assert_same(before, after)


# ---------------------------------------------------------------------------------------- re-runs

def test_a_layout_export_resumes_and_overwrite_clears_nested_folders(tmp_path, voc_archive):
    out = tmp_path / "out"
    ok("export", voc_archive, out, "--layout", "voc", "--split", "val", "--jobs", 1)
    again = ok("export", voc_archive, out, "--layout", "voc", "--split", "val", "--jobs", 1)
    assert "wrote 0 images, skipped 5" in again.stderr
    refused = one_line_error("export", voc_archive, out, "--layout", "folders")
    assert "--overwrite" in refused and "layout: 'voc' there, 'folders' now" in refused
    ok("export", voc_archive, out, "--layout", "folders", "--overwrite", "--jobs", 1)
    assert sorted(p.name for p in out.iterdir()) == [".maskstore-export.json", "images", "labels.json",
                                                     "manifest.jsonl", "masks"]


# ---------------------------------------------------------------------------------------- refusals

def test_labels_the_layout_cannot_express_are_named(tmp_path, cityscapes_archive, voc_archive):
    official = builtin_label_table("cityscapes")
    renamed = [{**e, "labels": ["automobile"]} if e["labels"] == ["car"] else e for e in official]
    with Archive(cityscapes_archive) as ar:
        ar.versions()[0].set_masks_labels([{"value": e["value"], "labels": e["labels"]} for e in renamed])
    line = one_line_error("export", cityscapes_archive, tmp_path / "a", "--layout", "cityscapes")
    assert "cityscapes layout cannot express the mask labels of city/v1: 1 value differs" in line
    assert "(26, 26, 26) 'automobile' ('car' there)" in line and "--layout folders" in line
    line = one_line_error("export", cityscapes_archive, tmp_path / "b", "--layout", "voc")
    assert "(7, 7, 7) 'road' (not in its table)" in line and "and " in line and " more" in line
    line = one_line_error("export", voc_archive, tmp_path / "c", "--layout", "cityscapes")
    assert "(0, 0, 0) 'background' ('" in line
    # a part of the table is not the table: the values left out would come back labelled
    with Archive(voc_archive) as ar:
        ar.versions()[0].set_masks_labels({(0, 0, 0): ["background"], (192, 128, 128): ["person"]})
    line = one_line_error("export", voc_archive, tmp_path / "d", "--layout", "voc")
    assert "20 values differ" in line and "(128, 0, 0) 'aeroplane' (unlabelled in the version)" in line


def test_mask_values_the_layout_cannot_hold_fail_that_frame(tmp_path, shared_data):
    # the real RGB-coded VOC masks under the Cityscapes table: values that are no grey id
    src = rgb_coded_archive(tmp_path, shared_data, "cityscapes")
    result = run("export", src, tmp_path / "out", "--layout", "cityscapes", "--jobs", 1)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "holds values that are not grey (an 8-bit Cityscapes id): (128, 0, 0), (224, 224, 192)" in result.stderr
    rows = [json.loads(line) for line in (tmp_path / "out/manifest.jsonl").read_text().splitlines()]
    assert sorted((r["frame_id"], r["file"], r["status"]) for r in rows) == [
        ("1", "image", "written"), ("1", "mask", "error"), ("114", "image", "written"), ("114", "mask", "error")]


def test_ids_that_are_no_file_name_fail_that_frame(tmp_path, shared_data):
    lip = shared_data / "mmsegmentation_lip_mapillary/lip"
    for sub, name in (("images/train", "684_2150041.jpg"), ("masks/train", "684_2150041.png")):
        (tmp_path / sub).mkdir(parents=True)
        shutil.copy(lip / ("train_images" if "images" in sub else "train_segmentations") / name, tmp_path / sub / name)
    src = tmp_path / "lip.maskstore"
    ok("ingest", src, "--images", tmp_path / "images", "--masks", tmp_path / "masks", "--labels", "voc")
    assert list(state(src)[0]) == ["train/684_2150041"]
    result = run("export", src, tmp_path / "out", "--layout", "voc", "--jobs", 1)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "frame 'train/684_2150041': JPEGImages/train/684_2150041.jpg is no safe file path" in result.stderr
    assert not (tmp_path / "out/JPEGImages").exists()


@pytest.mark.parametrize("args, words", [
    (["--layout", "voc", "--mode", "alpha"], "--mode do not apply"),
    (["--layout", "voc", "--opacity", "0.3"], "--opacity do not apply"),
    (["--split", "val"], "--split goes with --layout"),
    (["--layout", "pascal"], "'pascal' is not one of"),
])
def test_options_that_contradict_a_layout_are_usage_errors(tmp_path, voc_archive, args, words):
    result = run("export", voc_archive, tmp_path / "out", *args)
    assert result.exit_code == 2 and words in result.stderr


def test_a_split_that_is_no_plain_name_is_refused(tmp_path, voc_archive):
    assert "split '../x' is no plain name" in one_line_error("export", voc_archive, tmp_path / "o", "--layout", "voc",
                                                             "--split", "../x")


# ---------------------------------------------------------------------------------------- class-index PNGs

def label_ids(shared_data: Path) -> np.ndarray:
    return np.asarray(Image.open(shared_data / "mmsegmentation_cityscapes" / f"{STEM}_gtFine_labelIds.png"))


def expected_index(ids: np.ndarray, enumeration: dict[str, int], ignore: int, dtype) -> np.ndarray:
    """The reference: each Cityscapes id through its name to the enumeration's class id."""
    name = {e["value"][0]: e["labels"][0] for e in builtin_label_table("cityscapes")}
    lookup = {i: enumeration.get(name.get(i), ignore) for i in range(256)}
    return np.vectorize(lookup.get)(ids).astype(dtype)


def test_index_export_writes_class_ids_with_ignore(tmp_path, cityscapes_archive, shared_data):
    enumeration = {"road": 0, "sidewalk": 1, "car": 2, "person": 3}
    (tmp_path / "enum.json").write_text(json.dumps(enumeration))
    out = tmp_path / "idx"
    ok("export", cityscapes_archive, out, "--mode", "index", "--enumeration", tmp_path / "enum.json",
       "--ignore", 250, "--jobs", 1)
    image = Image.open(out / STEM / "0.png")
    assert image.mode == "L"
    got = np.asarray(image)
    assert np.array_equal(got, expected_index(label_ids(shared_data), enumeration, 250, np.uint8))
    assert (got == 250).any() and set(np.unique(got).tolist()) == {0, 1, 2, 3, 250}


def test_index_export_is_16_bit_when_ids_exceed_255(tmp_path, cityscapes_archive, shared_data):
    enumeration = {"road": 300, "building": 65535, "car": 7}
    (tmp_path / "enum.json").write_text(json.dumps(enumeration))
    out = tmp_path / "idx"
    ok("export", cityscapes_archive, out, "--mode", "index", "--enumeration", tmp_path / "enum.json", "--jobs", 1)
    image = Image.open(out / STEM / "0.png")
    assert image.mode.startswith("I")  # a 16-bit grey PNG
    got = np.asarray(image)
    assert np.array_equal(got, expected_index(label_ids(shared_data), enumeration, 255, np.uint16))
    assert {300, 65535, 7, 255} == set(np.unique(got).tolist())


def test_cli_render_writes_the_same_class_ids(tmp_path, cityscapes_archive):
    (tmp_path / "enum.json").write_text(json.dumps({"road": 0, "car": 300}))
    ok("export", cityscapes_archive, tmp_path / "idx", "--mode", "index", "--enumeration", tmp_path / "enum.json",
       "--jobs", 1)
    ok("render", cityscapes_archive, STEM, "-o", tmp_path / "one.png", "--mode", "index",
       "--enumeration", tmp_path / "enum.json")
    assert np.array_equal(np.asarray(Image.open(tmp_path / "one.png")),
                          np.asarray(Image.open(tmp_path / "idx" / STEM / "0.png")))
    line = one_line_error("render", cityscapes_archive, STEM, "-o", tmp_path / "two.png",
                          "--enumeration", tmp_path / "enum.json")
    assert "an enumeration applies to --mode index only" in line


def test_library_index_export_matches_render(tmp_path, cityscapes_archive):
    import maskstore
    with Archive(cityscapes_archive, readonly=True) as ar:
        v = ar.versions()[0]
        v.export(tmp_path / "idx", mode="index", enumeration={"car": 1000}, ignore=0, jobs=1)
        want = maskstore.render(v.get_frame(STEM), v, mode="index", enumeration={"car": 1000}, ignore=0)
    assert want.dtype == np.uint16
    assert np.array_equal(np.asarray(Image.open(tmp_path / "idx" / STEM / "0.png")), want)


@pytest.mark.parametrize("enum, words", [
    (None, "needs a label enumeration"),
    ([["road", 0]], "needs a label enumeration"),
    ({"road": "zero"}, "class id of 'road' must be an integer"),
    ({"road": 70000}, "class id 70000 does not fit a PNG"),
])
def test_bad_enumerations_are_one_line(tmp_path, cityscapes_archive, enum, words):
    args = ["export", cityscapes_archive, tmp_path / "idx", "--mode", "index"]
    if enum is not None:
        (tmp_path / "enum.json").write_text(json.dumps(enum))
        args += ["--enumeration", tmp_path / "enum.json"]
    assert words in one_line_error(*args)


def test_an_enumeration_file_that_is_no_json_is_one_line(tmp_path, cityscapes_archive):
    (tmp_path / "enum.json").write_text("{road: 0")
    line = one_line_error("export", cityscapes_archive, tmp_path / "idx", "--mode", "index",
                          "--enumeration", tmp_path / "enum.json")
    assert "cannot read" in line and "enum.json" in line
