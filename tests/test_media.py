"""Mask statistics: every real mask of ../shared/data matches numpy's unique on the decoded pixels, and
masks whose values are not categories (cut-outs, float mattes, lossy or animated files) are told apart."""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image, ImageOps

from maskstore import Archive, MaskError, _accel, media, records
from maskstore.ingest.prepare import SUFFIX_TYPES
from maskstore.layout import MAX_KEY_TEXT, text_key
from maskstore.cli import main
from maskstore.media import content_type_of, mask_statistics, read_bytes
from maskstore.model import normalize_frame_dict

REAL_MASKS = [
    "mmsegmentation_cityscapes/frankfurt_000000_000294_gtFine_labelIds.png",
    "mmsegmentation_cityscapes/frankfurt_000000_000294_gtFine_labelTrainIds.png",
    "mmsegmentation_lip_mapillary/lip/train_segmentations/684_2150041.png",
    "mmsegmentation_lip_mapillary/lip/val_segmentations/86_185913.png",
    "mmsegmentation_lip_mapillary/mapillary_v1.2/__CRyFzoDOXn6unQ6a3DnQ.png",
    "labelme_voc/SegmentationClass/2011_000003.png",
    "labelme_voc/SegmentationClass/2011_000006.png",
    "labelme_voc/SegmentationObject/2011_000003.png",
    "deeplabv3plus_voc_rgb/1_target.png",
    "deeplabv3plus_voc_rgb/114_target.png",
    "pymatting_lemur/lemur_alpha.png",
    "fba_matting_troll/predictions/troll_alpha.png",
    "fba_matting_troll/trimaps/troll.png",
]


def reference_values(path: Path) -> list[list[int]]:
    """Obviously right: every pixel's RGB (palette colour for P, (v,v,v) for grey), counted by numpy."""
    image = Image.open(path)
    rgb = np.asarray(image.convert("RGB")).reshape(-1, 3)
    uniq, counts = np.unique(rgb, axis=0, return_counts=True)
    return [[int(r), int(g), int(b), int(c)] for (r, g, b), c in zip(uniq, counts)]


@pytest.mark.parametrize("name", REAL_MASKS)
def test_real_mask_statistics_match_numpy_unique(shared_data, name):
    path = shared_data / name
    stats = mask_statistics(str(path))
    assert stats.values == reference_values(path)
    assert (stats.width, stats.height) == Image.open(path).size


def test_cityscapes_label_id_counts_from_the_dataset_readme(shared_data):
    stats = mask_statistics(str(shared_data / REAL_MASKS[0]))
    counts = {v[0]: v[3] for v in stats.values}
    assert counts[7] == 9740 and counts[26] == 1802 and sum(counts.values()) == 256 * 128


def test_sixteen_bit_mask_above_255_is_refused_naming_file_and_value(shared_data):
    path = shared_data / "mmsegmentation_cityscapes/frankfurt_000000_000294_gtFine_instanceIds.png"
    with pytest.raises(MaskError, match=r"instanceIds\.png.*26002"):
        mask_statistics(str(path))


def test_sixteen_bit_mask_within_255_reads_as_grey(tmp_path):
    path = tmp_path / "m16.png"
    Image.fromarray(np.array([[0, 7], [7, 255]], dtype=np.uint16)).save(path)
    assert mask_statistics(str(path)).values == [[0, 0, 0, 1], [7, 7, 7, 2], [255, 255, 255, 1]]


def test_truncated_png_is_a_mask_error(tmp_path, shared_data):
    data = (shared_data / REAL_MASKS[0]).read_bytes()
    path = tmp_path / "cut.png"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(MaskError, match="cut.png"):
        mask_statistics(str(path))


def test_not_an_image_is_a_mask_error(tmp_path):
    path = tmp_path / "x.png"
    path.write_text("hello")
    with pytest.raises(MaskError, match="x.png"):
        mask_statistics(str(path))


def test_decompression_bomb_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "bomb.png"
    Image.new("L", (200, 200)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(MaskError, match="too large"):
        mask_statistics(str(path))


def test_file_uri_and_missing_file(tmp_path):
    path = tmp_path / "a b.png"
    buf = io.BytesIO()
    Image.new("L", (2, 2)).save(buf, "PNG")
    path.write_bytes(buf.getvalue())
    assert read_bytes("file://" + str(path).replace(" ", "%20")) == buf.getvalue()
    with pytest.raises(MaskError, match="file not found"):
        read_bytes(str(tmp_path / "missing.png"))


# ----------------------------------------------------------------------------- what a mask's values are
# Driven through the CLI where users met each defect, then checked on the stored record.

def ingest_cli(tmp_path: Path, frames: list[dict], *extra: str):
    """``maskstore ingest`` of ``frames`` as JSON lines into tmp/a.maskstore; the CliRunner result."""
    lines = tmp_path / "frames.jsonl"
    lines.write_text("".join(json.dumps(f) + "\n" for f in frames))
    return CliRunner().invoke(main, ["ingest", str(tmp_path / "a.maskstore"), "-d", "d", "-V", "v1",
                                     "--frames", str(lines), "--jobs", "1", *extra])


def pair(source: Path | str, mask: Path | str, fid: str = "f", **mask_fields) -> dict:
    return {"id": fid, "sources": [{"id": "0", "uri": str(source),
                                    "masks": [{"id": "00", "uri": str(mask), **mask_fields}]}]}


def stored_mask(tmp_path: Path, fid: str = "f") -> tuple[dict, dict, int]:
    """(mask dict, source dict, frame record bytes) as the archive holds them."""
    with Archive(tmp_path / "a.maskstore", readonly=True) as ar:
        d = ar.get_version("d", "v1").get_frame_dict(fid)
    source = d["sources"][0]
    return source["masks"][0], source, len(records.encode_frame(d))


def cli_render(tmp_path: Path, *args: str, fid: str = "f") -> np.ndarray:
    out = tmp_path / "out.png"
    result = CliRunner().invoke(main, ["render", str(tmp_path / "a.maskstore"), fid, "-o", str(out), *args])
    assert result.exit_code == 0, result.output
    return np.asarray(Image.open(out))


def assert_cli_error(result, *words: str) -> str:
    assert result.exit_code == 1, result.output
    line = result.stderr.strip()
    assert line.startswith("Error: ") and "Traceback" not in result.output and len(line.splitlines()) == 1, line
    for word in words:
        assert word in line, line
    return line


@pytest.mark.parametrize("name", ["car-1", "girl-1", "car-2"])
def test_rgba_cutout_is_an_alpha_mask_not_its_photo_colours(shared_data, tmp_path, name):
    """Reported: a rembg cut-out stored ~20k "mask values" (its photo colours), 330 kB per frame."""
    folder = shared_data / "rembg_examples"
    matte = folder / f"{name}.out.png"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = ingest_cli(tmp_path, [pair(folder / f"{name}.jpg", matte)])
    assert result.exit_code == 0, result.output
    assert not [w for w in caught if "distinct values" in str(w.message)]  # a cut-out is a matte, as expected
    mask, source, record_bytes = stored_mask(tmp_path)
    alpha = np.asarray(Image.open(matte).getchannel("A"))
    assert "values" not in mask and mask["kind"] == "alpha"
    assert mask["coverage"] == np.count_nonzero(alpha) and 0 < mask["coverage"] < alpha.size
    assert (mask["width"], mask["height"]) == (source["width"], source["height"]) == Image.open(matte).size
    assert record_bytes < 1000
    with Archive(tmp_path / "a.maskstore", readonly=True) as ar:
        v = ar.get_version("d", "v1")
        assert v.count("mask.value == [0, 0, 0]") == 0 and v.count("has(mask)") == 1
    # alpha rendering is untouched: the cut-out's alpha over the photo (spec section 6)
    rgba = cli_render(tmp_path, "--mode", "alpha")
    photo = np.asarray(Image.open(folder / f"{name}.jpg").convert("RGB"))
    assert np.array_equal(rgba[..., :3], photo) and np.array_equal(rgba[..., 3], alpha)


def test_anti_aliased_label_mask_is_stored_as_alpha_and_the_cli_says_so(shared_data, tmp_path):
    """The ClearML docs' colour-coded mask is a screenshot: 5 label colours and ~18k edge blends. No
    label count of it would be right, and the user is told it will match no label."""
    docs = shared_data / "clearml_docs"
    with pytest.warns(UserWarning) as caught:  # the CLI prints it as "Warning: ..." on stderr
        result = ingest_cli(tmp_path, [pair(docs / "concepts_masks_image_only.png", docs / "concepts_masks.png")])
    assert result.exit_code == 0, result.output
    assert [str(w.message) for w in caught] == [
        f"1 of 1 decoded masks have more than {media.MAX_CATEGORICAL_VALUES} distinct values and no alpha band "
        f'that varies, so they are stored as alpha masks, without label statistics (FORMAT.md, "Mask statistics"); '
        f"the first: frame 'f' mask {docs / 'concepts_masks.png'}"]
    mask, _, record_bytes = stored_mask(tmp_path)
    assert mask["kind"] == "alpha" and record_bytes < 1000


def colour_mask(path: Path, n_colours: int) -> Path:
    """An RGB mask (64 x 64) using exactly ``n_colours`` distinct colours."""
    keys = np.arange(64 * 64, dtype=np.uint32) % n_colours * 2654435761 % (1 << 24)
    rgb = np.stack([keys >> 16, (keys >> 8) & 255, keys & 255], axis=-1).astype(np.uint8).reshape(64, 64, 3)
    assert len(np.unique(rgb.reshape(-1, 3), axis=0)) == n_colours
    Image.fromarray(rgb).save(path)
    return path


def test_distinct_value_limit_boundary(tmp_path):
    """The largest categorical mask has MAX_CATEGORICAL_VALUES values; one more makes it an alpha mask."""
    at_limit = mask_statistics(str(colour_mask(tmp_path / "a.png", media.MAX_CATEGORICAL_VALUES)))
    assert at_limit.kind is None and len(at_limit.values) == media.MAX_CATEGORICAL_VALUES
    above = mask_statistics(str(colour_mask(tmp_path / "b.png", media.MAX_CATEGORICAL_VALUES + 1)))
    luma = np.asarray(Image.open(tmp_path / "b.png").convert("L"))
    assert above.values is None and above.kind == "alpha" and above.coverage == np.count_nonzero(luma)
    assert above.fields() == {"kind": "alpha", "coverage": above.coverage, "width": 64, "height": 64}
    assert at_limit.fields() == {"values": at_limit.values, "width": 64, "height": 64}


def test_grey_matte_stays_categorical_unless_declared_alpha(shared_data, tmp_path):
    """A grey matte has at most 256 levels, like a label-id mask; its owner can say which it is."""
    folder = shared_data / "pymatting_lemur"
    frames = [pair(folder / "lemur.png", folder / "lemur_alpha.png", "levels"),
              pair(folder / "lemur.png", folder / "lemur_alpha.png", "declared", kind="alpha")]
    result = ingest_cli(tmp_path, frames)
    assert result.exit_code == 0, result.output
    levels, _, _ = stored_mask(tmp_path, "levels")
    declared, _, _ = stored_mask(tmp_path, "declared")
    alpha = np.asarray(Image.open(folder / "lemur_alpha.png"))
    assert len(levels["values"]) == 256 and "kind" not in levels
    assert "values" not in declared and declared["coverage"] == np.count_nonzero(alpha)
    assert np.array_equal(cli_render(tmp_path, "--mode", "alpha", fid="declared")[..., 3], alpha)


@pytest.mark.parametrize("bad", [{"kind": "matte"}, {"kind": 1}, {"kind": "alpha", "coverage": -1},
                                 {"kind": "alpha", "coverage": 1.5}])
def test_declared_kind_is_checked(tmp_path, bad):
    Image.new("L", (2, 2)).save(tmp_path / "m.png")
    result = ingest_cli(tmp_path, [pair(tmp_path / "m.png", tmp_path / "m.png", **bad)])
    assert_cli_error(result, "frame 'f'", "m.png")


def compiled_record(frame: dict) -> bytes | None:
    """The compiled ingest path's record of a frame, None where it leaves the frame to Python."""
    if _accel.purepython_requested():
        pytest.skip("MASKSTORE_PUREPYTHON=1 runs without the compiled module")
    speedups = _accel.compiled()
    postings = speedups.Postings(text_key, MAX_KEY_TEXT)
    (record,), _, _ = speedups.encode_common([frame], records.FRAME_HEAD, content_type_of, SUFFIX_TYPES, postings)
    return record


@pytest.mark.parametrize("mask", [{"kind": "alpha", "coverage": 3, "width": 2, "height": 2}, {"kind": "alpha"},
                                  {"kind": "matte"}, {"coverage": 3}])
def test_compiled_ingest_leaves_alpha_masks_to_the_python_rules(mask):
    """The compiled path declines every mask without values, so kind and coverage are checked in one place."""
    assert compiled_record({"id": "f", "sources": [{"uri": "s.png", "masks": [{"uri": "m.png", **mask}]}]}) is None


def test_kind_beside_values_is_kept_as_given_on_both_paths():
    frame = {"id": "f", "sources": [{"uri": "s.png", "width": 1, "height": 1, "masks": [
        {"uri": "m.png", "values": [[1, 1, 1, 1]], "kind": "matte", "coverage": -1}]}]}
    assert compiled_record(frame) == records.encode_frame(normalize_frame_dict(frame))


def test_jpeg_mask_is_refused_naming_the_file(shared_data, tmp_path):
    """Reported: a JPEG mask stored thousands of noise values and undercounted a label by a third."""
    labels = shared_data / "mmsegmentation_cityscapes" / "frankfurt_000000_000294_gtFine_labelIds.png"
    Image.open(labels).save(tmp_path / "mask.jpg", quality=90)
    noisy = len(np.unique(np.asarray(Image.open(tmp_path / "mask.jpg"))))
    assert noisy > len(np.unique(np.asarray(Image.open(labels))))  # the file really is lossy
    result = ingest_cli(tmp_path, [pair(labels, tmp_path / "mask.jpg")])
    assert_cli_error(result, str(tmp_path / "mask.jpg"), "JPEG", "PNG")
    # declared an opacity matte, the same file is fine: no categorical statistic is taken from it
    result = ingest_cli(tmp_path, [pair(labels, tmp_path / "mask.jpg", kind="alpha")])
    assert result.exit_code == 0, result.output
    assert "values" not in stored_mask(tmp_path)[0]


def test_float_matte_renders_scaled_to_8_bit(tmp_path):
    """Reported: a float TIFF matte (0..1) rendered fully transparent."""
    unit = np.array([[0.0, 0.25, 0.5], [0.75, 1.0, 0.002]], dtype=np.float32)
    Image.fromarray(unit).save(tmp_path / "matte.tif")
    Image.fromarray(np.full((2, 3, 3), 200, np.uint8)).save(tmp_path / "src.png")
    assert Image.open(tmp_path / "matte.tif").mode == "F"
    result = ingest_cli(tmp_path, [pair(tmp_path / "src.png", tmp_path / "matte.tif")])
    assert result.exit_code == 0, result.output
    expected = np.floor(unit.astype(np.float64) * 255 + 0.5).astype(np.uint8)
    assert expected.tolist() == [[0, 64, 128], [191, 255, 1]]
    assert np.array_equal(cli_render(tmp_path, "--mode", "alpha")[..., 3], expected)
    mask = stored_mask(tmp_path)[0]
    assert mask["kind"] == "alpha" and mask["coverage"] == 5


def test_float_values_outside_unit_range_are_clipped():
    image = Image.fromarray(np.array([[-3.0, 0.5, 7.0, np.nan]], dtype=np.float32))
    assert media.mask_alpha(image).tolist() == [[0, 128, 255, 0]]


def test_sixteen_bit_source_renders_scaled_to_8_bit(tmp_path):
    """Reported: a 16-bit (I;16) source rendered white."""
    grey16 = np.array([[0, 255, 256, 4095], [32768, 65280, 65535, 1000]], dtype=np.uint16)
    Image.fromarray(grey16).save(tmp_path / "src.png")
    assert Image.open(tmp_path / "src.png").mode == "I;16"
    Image.fromarray(np.full((2, 4), 255, np.uint8)).save(tmp_path / "mask.png")
    assert ingest_cli(tmp_path, [pair(tmp_path / "src.png", tmp_path / "mask.png")]).exit_code == 0
    rgba = cli_render(tmp_path, "--mode", "alpha")
    assert rgba[..., 0].tolist() == [[0, 0, 1, 15], [128, 255, 255, 3]]
    assert np.array_equal(rgba[..., 0], rgba[..., 2]) and np.array_equal(rgba[..., 1], rgba[..., 2])


def test_float_and_32_bit_sources_scale_like_16_bit():
    unit = Image.fromarray(np.array([[0.0, 0.5, 1.0]], np.float32))
    assert np.asarray(media.eight_bit(unit)).tolist() == [[0, 128, 255]]
    wide = Image.fromarray(np.array([[0, 65535, 70000, -5]], np.int32))
    assert np.asarray(media.eight_bit(wide)).tolist() == [[0, 255, 255, 0]]


def exif_rotated(array: np.ndarray, path: Path, orientation: int) -> Path:
    """Save ``array`` with an EXIF orientation tag (the pixels as stored, not as shown)."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(array).save(path, exif=exif)
    return path


@pytest.mark.parametrize("orientation", [2, 3, 4, 5, 6, 7, 8])
def test_exif_orientation_applies_to_sources_and_masks_alike(tmp_path, orientation):
    """Reported: EXIF orientation was ignored, so a camera JPEG and its (upright) mask disagreed in size."""
    rng = np.random.default_rng(orientation)
    stored = rng.integers(0, 256, (4, 6, 3), dtype=np.uint8)
    src = exif_rotated(stored, tmp_path / "src.jpg", orientation)
    upright = np.asarray(ImageOps.exif_transpose(Image.open(src)))  # what every viewer shows
    labels = rng.integers(0, 3, upright.shape[:2], dtype=np.uint8)
    Image.fromarray(labels).save(tmp_path / "upright.png")
    # the same mask stored in camera order with the camera's tag: it must read exactly the same
    camera_order = np.asarray(Image.fromarray(labels).transpose(ORIENTATION_INVERSE[orientation]))
    exif_rotated(camera_order, tmp_path / "tagged.png", orientation)
    result = ingest_cli(tmp_path, [pair(src, tmp_path / "upright.png", "a"), pair(src, tmp_path / "tagged.png", "b")])
    assert result.exit_code == 0, result.output
    for fid in ("a", "b"):
        mask, source, _ = stored_mask(tmp_path, fid)
        assert (source["width"], source["height"]) == (mask["width"], mask["height"]) == upright.shape[1::-1]
        assert mask["values"] == mask_statistics(str(tmp_path / "upright.png")).values
        rgba = cli_render(tmp_path, "--mode", "alpha", fid=fid)
        assert np.array_equal(rgba[..., :3], upright) and np.array_equal(rgba[..., 3], labels)


# Pillow's transposition that undoes each orientation (the inverse of ImageOps.exif_transpose's)
ORIENTATION_INVERSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
                       4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
                       6: Image.Transpose.ROTATE_90, 7: Image.Transpose.TRANSVERSE,
                       8: Image.Transpose.ROTATE_270}


def test_garbage_orientation_is_ignored(tmp_path):
    path = exif_rotated(np.zeros((2, 3), np.uint8), tmp_path / "m.png", 77)
    assert media.image_size(str(path)) == (3, 2) and media.open_image(str(path)).size == (3, 2)


def animated(path: Path, fmt: str) -> Path:
    frames = [Image.fromarray(np.full((4, 4), v, np.uint8)) for v in (1, 2, 3)]
    if fmt == "PNG":
        frames[0].save(path, format=fmt, save_all=True, append_images=frames[1:])
    else:
        frames[0].save(path, format=fmt, save_all=True, append_images=frames[1:], duration=100)
    return path


@pytest.mark.parametrize("fmt,suffix", [("GIF", "gif"), ("PNG", "png"), ("TIFF", "tif")])
def test_animated_mask_is_refused_naming_the_file(tmp_path, fmt, suffix):
    """Reported: a multi-frame mask silently used its first frame."""
    mask = animated(tmp_path / f"m.{suffix}", fmt)
    Image.new("RGB", (4, 4)).save(tmp_path / "src.png")
    assert getattr(Image.open(mask), "n_frames", 1) == 3
    assert_cli_error(ingest_cli(tmp_path, [pair(tmp_path / "src.png", mask)]), str(mask), "3 frames")
    # a frame whose statistics came precomputed renders no further than ingest went
    assert ingest_cli(tmp_path, [pair(tmp_path / "src.png", mask, values=[[1, 1, 1, 16]])]).exit_code == 0
    result = CliRunner().invoke(main, ["render", str(tmp_path / "a.maskstore"), "f", "-o", str(tmp_path / "o.png")])
    assert_cli_error(result, str(mask), "3 frames")


def test_single_frame_gif_is_a_mask(tmp_path):
    Image.fromarray(np.full((4, 4), 5, np.uint8)).save(tmp_path / "m.gif")
    assert mask_statistics(str(tmp_path / "m.gif")).values == [[5, 5, 5, 16]]


# ----------------------------------------------------------------------------- properties

@st.composite
def colour_images(draw: st.DrawFn) -> Image.Image:
    """Small RGB or RGBA images drawn from a few colours, with a few alpha levels."""
    h, w = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    mode = draw(st.sampled_from(["RGB", "RGBA"]))
    pool = draw(arrays(np.uint8, (draw(st.integers(1, 12)), len(mode)), elements=st.sampled_from([0, 1, 7, 200, 255])))
    picks = draw(arrays(np.uint8, (h, w), elements=st.integers(0, len(pool) - 1)))
    return Image.frombytes(mode, (w, h), pool[picks].tobytes())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(image=colour_images(), limit=st.integers(1, 8))
def test_a_mask_is_categorical_exactly_up_to_the_value_limit(tmp_path, monkeypatch, image, limit):
    """Categorical masks keep every value and count; past the limit only the opacity is counted."""
    monkeypatch.setattr(media, "MAX_CATEGORICAL_VALUES", limit)
    image.save(tmp_path / "m.png")
    stats = mask_statistics(str(tmp_path / "m.png"))
    rgb = np.asarray(image.convert("RGB")).reshape(-1, 3)
    distinct = len(np.unique(rgb, axis=0))
    if distinct <= limit:
        assert stats.kind is None and stats.values == reference_values(tmp_path / "m.png")
    else:
        opacity = np.asarray(image.getchannel("A") if image.mode == "RGBA" else image.convert("L"))
        assert stats.values is None and stats.coverage == np.count_nonzero(opacity)
    assert (stats.width, stats.height) == image.size


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(orientation=st.integers(0, 9), fmt=st.sampled_from(["JPEG", "PNG", "TIFF", "WEBP"]),
       size=st.tuples(st.integers(1, 9), st.integers(1, 9)))
def test_size_from_the_header_is_the_decoded_size(tmp_path, orientation, fmt, size):
    """Ingest reads a source's size from its header, render decodes it: they must agree, and the pixels
    are Pillow's own ``exif_transpose`` of the file (which TIFFs in Pillow 13 get from Pillow itself)."""
    path = tmp_path / f"s.{fmt.lower()}"
    exif = Image.Exif()
    exif[0x0112] = orientation
    pixels = np.random.default_rng(orientation).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format=fmt, exif=exif)
    decoded = media.open_image(str(path))
    assert media.image_size(str(path)) == decoded.size == (size[::-1] if orientation in (5, 6, 7, 8) else size)
    assert np.array_equal(np.asarray(decoded), np.asarray(ImageOps.exif_transpose(Image.open(path))))
