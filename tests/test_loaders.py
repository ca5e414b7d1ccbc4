"""Training loaders (iter_arrays) and the PyTorch adapter, on the real VOC and Cityscapes files."""

from __future__ import annotations

import importlib
import importlib.util
import random
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from maskstore import Archive, FrameError
from maskstore.ingest import ingest, set_labels
from maskstore.ingest.cityscapes import cityscapes_labels
from maskstore.ingest.voc import voc_labels, voc_table
from maskstore.loaders import default_enumeration, iter_arrays, ordered_ids

VOC_IDS = ["2011_000003", "2011_000006"]
CITY = "frankfurt_000000_000294"


@pytest.fixture
def voc_version(tmp_path, shared_data):
    src = shared_data / "labelme_voc"
    with Archive(tmp_path / "voc.maskstore", jobs=1) as ar:
        v = ar.create_version("voc", "v1")
        set_labels(v, *voc_labels())
        ingest(v, [{"id": fid, "sources": [{"uri": str(src / "JPEGImages" / f"{fid}.jpg"),
                                            "masks": [{"uri": str(src / "SegmentationClass" / f"{fid}.png")}]}]}
                   for fid in VOC_IDS])
        yield v


def voc_class_map(path: Path, enumeration: dict[str, int], ignore: int = 255) -> np.ndarray:
    """The obvious mapping: palette index -> class name (VOC table) -> enumerated id."""
    names = {e["id"]: e["name"] for e in voc_table()}
    lut = np.full(256, ignore, dtype=np.int64)
    for index, name in names.items():
        lut[index] = enumeration.get(name, ignore)
    return lut[np.asarray(Image.open(path))]


def test_index_maps_match_a_direct_numpy_mapping(voc_version, shared_data):
    enumeration = {"background": 0, "person": 1, "sofa": 2}
    rows = list(iter_arrays(voc_version, enumeration=enumeration))
    assert [fid for fid, _, _ in rows] == VOC_IDS
    for fid, image, classes in rows:
        jpeg = Image.open(shared_data / "labelme_voc/JPEGImages" / f"{fid}.jpg")
        assert image.dtype == np.uint8 and image.shape == (jpeg.height, jpeg.width, 3)
        assert np.array_equal(image, np.asarray(jpeg.convert("RGB")))
        assert classes.shape == (jpeg.height, jpeg.width)
        expected = voc_class_map(shared_data / "labelme_voc/SegmentationClass" / f"{fid}.png", enumeration)
        assert np.array_equal(classes.astype(np.int64), expected)
    # chair (9) and void (255) are not enumerated: ignore
    assert set(np.unique(rows[1][2]).tolist()) == {0, 1, 2, 255}


def test_default_enumeration_numbers_labels_in_table_order(voc_version, shared_data):
    enumeration = default_enumeration(voc_version)
    assert enumeration["background"] == 0 and enumeration["tvmonitor"] == 20 and "void" not in enumeration
    (_, _, classes), = iter_arrays(voc_version, 'label == "sofa"', ignore=99)
    expected = voc_class_map(shared_data / "labelme_voc/SegmentationClass/2011_000006.png", enumeration, 99)
    assert np.array_equal(classes.astype(np.int64), expected)
    assert 99 in classes  # the void boundaries: the ignore id asked for, not a class


def test_cityscapes_default_enumeration_is_the_label_id_and_unlabeled_is_ignored(tmp_path, shared_data):
    src = shared_data / "mmsegmentation_cityscapes"
    with Archive(tmp_path / "c.maskstore", jobs=1) as ar:
        v = ar.create_version("cityscapes", "v1")
        set_labels(v, *cityscapes_labels("labelIds"))
        v.add_frames([{"id": CITY, "sources": [{"uri": str(src / f"{CITY}_leftImg8bit.png"),
                                                "masks": [{"uri": str(src / f"{CITY}_gtFine_labelIds.png")}]}]}])
        (fid, image, classes), = iter_arrays(v, 'label == "car"')
        assert fid == CITY and image.shape == (128, 256, 3) and classes.shape == (128, 256)
        label_ids = np.asarray(Image.open(src / f"{CITY}_gtFine_labelIds.png"))
        assert np.array_equal(classes, np.where(label_ids == 0, 255, label_ids))  # 0 is "unlabeled": ignore


def test_other_render_modes(voc_version):
    (_, image, layer), = iter_arrays(voc_version, 'label == "bottle"', mode="segmentation")
    assert layer.shape == image.shape and layer.dtype == np.uint8
    (_, image, rgba), = iter_arrays(voc_version, 'label == "bottle"', mode="alpha")
    assert rgba.shape == image.shape[:2] + (4,)
    with pytest.raises(FrameError, match="enumeration"):
        next(iter_arrays(voc_version, mode="alpha", enumeration={"person": 1}))


def test_random_order_is_a_seeded_permutation(tmp_path, shared_data):
    src = shared_data / "labelme_voc"
    with Archive(tmp_path / "many.maskstore", jobs=1) as ar:
        v = ar.create_version("voc", "many")
        set_labels(v, *voc_labels())
        # precomputed statistics: 40 frames without decoding 40 masks
        values = [[0, 0, 0, 1], [192, 128, 128, 1]]
        v.add_frames([{"id": f"f{i:02d}", "sources": [{"uri": str(src / "JPEGImages/2011_000003.jpg"),
                       "width": 500, "height": 338,
                       "masks": [{"uri": str(src / "SegmentationClass/2011_000003.png"), "values": values}]}]}
                      for i in range(40)])
        storage = ordered_ids(v)
        assert storage == [f"f{i:02d}" for i in range(40)]
        shuffled = ordered_ids(v, order="random", seed=7)
        expected = list(storage)
        random.Random(7).shuffle(expected)
        assert shuffled == expected and shuffled != storage and sorted(shuffled) == storage
        assert ordered_ids(v, order="random", seed=7) == shuffled
        assert ordered_ids(v, order="random", seed=8) != shuffled
        got = [fid for fid, _, _ in iter_arrays(v, 'id ~ "f0*"', order="random", seed=3,
                                                enumeration={"person": 1})]
        expected = v.ids('id ~ "f0*"')
        random.Random(3).shuffle(expected)
        assert got == expected
        with pytest.raises(FrameError, match="order must be one of storage, random"):
            ordered_ids(v, order="sorted")


# ---------------------------------------------------------------------------------------- torch

def test_torch_adapter_says_how_to_install_torch(monkeypatch):
    if importlib.util.find_spec("torch") is not None:
        pytest.skip("torch is installed here")
    monkeypatch.delitem(sys.modules, "maskstore.torch", raising=False)
    with pytest.raises(ImportError, match=r'pip install "maskstore\[torch\]"'):
        importlib.import_module("maskstore.torch")


class _Tensor:
    """Just enough of a tensor for the adapter: wraps the numpy array it was made from."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array


def _fake_torch() -> dict[str, types.ModuleType]:
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch.utils")
    data = types.ModuleType("torch.utils.data")
    data.Dataset = type("Dataset", (), {})
    torch.from_numpy = _Tensor
    torch.utils, utils.data = utils, data
    return {"torch": torch, "torch.utils": utils, "torch.utils.data": data}


def test_mask_dataset_logic_with_a_stand_in_torch(monkeypatch, voc_version, shared_data):
    if importlib.util.find_spec("torch") is not None:
        pytest.skip("torch is installed here; the real-torch test covers it")
    for name, module in _fake_torch().items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.delitem(sys.modules, "maskstore.torch", raising=False)
    try:
        from maskstore.torch import MaskDataset
        enumeration = {"background": 0, "person": 1}
        ds = MaskDataset(voc_version, enumeration=enumeration)
        assert len(ds) == 2
        image, mask = ds[1]
        assert image.array.shape == (3, 375, 500) and image.array.dtype == np.uint8
        assert image.array.flags["C_CONTIGUOUS"]
        assert mask.array.dtype == np.int64
        expected = voc_class_map(shared_data / "labelme_voc/SegmentationClass/2011_000006.png", enumeration)
        assert np.array_equal(mask.array, expected)
        flipped = MaskDataset(voc_version, 'label == "bottle"', enumeration,
                              transform=lambda i, m: (i.array[:, :, ::-1], m.array[:, ::-1]))
        assert len(flipped) == 1 and flipped[0][0].shape == (3, 338, 500)
        with pytest.raises(IndexError):
            ds[2]
    finally:
        sys.modules.pop("maskstore.torch", None)


def test_mask_dataset_with_torch(voc_version, shared_data):
    torch = pytest.importorskip("torch")
    from maskstore.torch import MaskDataset
    enumeration = {"background": 0, "person": 1, "sofa": 2}
    ds = MaskDataset(voc_version, enumeration=enumeration)
    image, mask = ds[1]
    assert image.dtype == torch.uint8 and tuple(image.shape) == (3, 375, 500)
    assert mask.dtype == torch.int64 and tuple(mask.shape) == (375, 500)
    expected = voc_class_map(shared_data / "labelme_voc/SegmentationClass/2011_000006.png", enumeration)
    assert np.array_equal(mask.numpy(), expected)
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=1)))
    assert tuple(batch[0].shape) == (1, 3, 338, 500)
