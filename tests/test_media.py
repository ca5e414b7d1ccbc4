"""Mask statistics on every real mask of ../shared/data match numpy's unique on the decoded pixels."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from maskstore import MaskError
from maskstore.media import mask_statistics, read_bytes

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
    "rembg_examples/car-1.out.png",
    "clearml_docs/concepts_masks.png",
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
