"""The renderer against a naive reference, on hypothesis-drawn masks and on every real pair in ../shared/data.

The reference below decodes masks with Pillow's own conversions (``convert("RGB")``, ``convert("RGBA")``,
``convert("L")``) and applies the spec section 6 formulas value by value with int64 numpy, so it shares
no lookup tables, packing or caching with ``maskstore.render``.
"""

from __future__ import annotations

import importlib
import itertools
import json
import math
import tempfile
import warnings
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from maskstore import Archive, FrameGroup, MaskError, MaskstoreError, SingleFrame
from maskstore.labels import default_colors, parse_color
from maskstore.render import (ValueTable, alpha_over, alpha_tint, class_table, color_table, mask_alpha, render,
                              source_rgb)

# the module, not the function a package-level `render` export would shadow it with
render_module = importlib.import_module("maskstore.render")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


# ----------------------------------------------------------------------------- the naive reference

def ref_mask_rgb(mask: Image.Image) -> np.ndarray:
    """Each pixel's RGB value (spec section 1), via Pillow's conversion."""
    if mask.mode.startswith("I"):
        v = np.asarray(mask).astype(np.int64)
        assert v.max() <= 255
        return np.stack([v, v, v], axis=-1)
    with warnings.catch_warnings():  # Pillow suggests RGBA for P with per-index transparency; RGB is meant
        warnings.simplefilter("ignore", UserWarning)
        return np.asarray(mask.convert("RGB")).astype(np.int64)


def ref_colour(label: str, label_colors: dict, colors: dict | None, mask_labels: list[dict]) -> tuple[int, int, int]:
    if colors and label in colors:
        return parse_color(colors[label])
    if label in label_colors:
        return parse_color(label_colors[label])
    return default_colors(e["labels"] for e in mask_labels)[label]


def ref_segmentation(src: np.ndarray, mask: Image.Image, mask_labels: list[dict], label_colors: dict,
                     colors: dict | None, opacity: float, background: Any, layer: bool = False) -> np.ndarray:
    a = math.floor(opacity * 255 + 0.5)
    rgb = ref_mask_rgb(mask)
    table = {tuple(e["value"]): e["labels"] for e in mask_labels}
    src = src.astype(np.int64)
    out = np.zeros((*rgb.shape[:2], 4), np.int64) if layer else src.copy()
    for value in np.unique(rgb.reshape(-1, 3), axis=0):
        labels = table.get(tuple(int(c) for c in value))
        if labels:
            colour = ref_colour(labels[0], label_colors, colors, mask_labels)
        elif background is not None:
            colour = parse_color(background)
        else:
            continue
        where = (rgb == value).all(axis=-1)
        if layer:
            out[where] = [*colour, a]
        else:
            out[where] = (src[where] * (255 - a) + np.array(colour) * a + 127) // 255
    return out.astype(np.uint8)


def ref_index(mask: Image.Image, mask_labels: list[dict], enumeration: dict, ignore: int) -> np.ndarray:
    rgb = ref_mask_rgb(mask)
    table = {tuple(e["value"]): e["labels"] for e in mask_labels}
    out = np.full(rgb.shape[:2], ignore, dtype=np.int64)
    for value in np.unique(rgb.reshape(-1, 3), axis=0):
        for label in table.get(tuple(int(c) for c in value), []):
            if label in enumeration:
                out[(rgb == value).all(axis=-1)] = enumeration[label]
                break
    return out.astype(np.uint8 if max([ignore, *enumeration.values()]) <= 255 else np.uint16)


def ref_alpha(mask: Image.Image) -> np.ndarray:
    if mask.mode in ("RGBA", "LA", "PA") or (mask.mode == "P" and ("transparency" in mask.info
                                                                  or mask.palette.mode == "RGBA")):
        return np.asarray(mask.convert("RGBA"))[..., 3].astype(np.int64)
    if mask.mode in ("RGB", "P"):
        return np.asarray(mask.convert("L")).astype(np.int64)
    values = np.asarray(mask.convert("L") if mask.mode == "1" else mask).astype(np.int64)
    assert values.max() <= 255
    return values


def ref_alpha_render(src: np.ndarray, mask: Image.Image, background: Any = None, tint: Any = None,
                     opacity: float = 0.5) -> np.ndarray:
    alpha = ref_alpha(mask)[..., None]
    src = src.astype(np.int64)
    if background is not None:
        bg = np.array(parse_color(background))
        return ((src * alpha + bg * (255 - alpha) + 127) // 255).astype(np.uint8)
    if tint is not None:
        t = ((255 - alpha) * math.floor(opacity * 255 + 0.5) + 127) // 255
        return ((src * (255 - t) + np.array(parse_color(tint)) * t + 127) // 255).astype(np.uint8)
    return np.concatenate([src, alpha], axis=-1).astype(np.uint8)


def ref_source(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def assert_same(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    if not np.array_equal(actual, expected):
        bad = np.argwhere(actual != expected)[0]
        raise AssertionError(f"differs at {tuple(bad)}: {actual[tuple(bad[:2])]} != {expected[tuple(bad[:2])]}")


# ----------------------------------------------------------------------------- archive plumbing

@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory):
    with Archive(tmp_path_factory.mktemp("render") / "render.maskstore", sync=False, jobs=1) as ar:
        yield ar


_names = itertools.count()


def new_version(ar: Archive, mask_labels: Any = None, label_colors: dict | None = None):
    v = ar.create_version(dataset_name="render", version_name=f"v{next(_names)}")
    if mask_labels:
        v.set_masks_labels(mask_labels)
    if label_colors:
        v.set_label_colors(label_colors)
    return v


def add_pair(v, source: Path, mask: Path, frame_id: str = "f") -> Any:
    v.add_frames([SingleFrame(source=str(source), mask_source=str(mask), id=frame_id)])
    return v.get_frame(frame_id)


# ----------------------------------------------------------------------------- hypothesis: drawn masks

LABELS = ["road", "car", "person", "sky", "tree", "sign"]
colours = st.tuples(*[st.integers(0, 255)] * 3)
opacities = st.one_of(st.sampled_from([0.0, 0.5, 1.0, 0.002, 0.998, 1 / 3]), st.floats(0, 1))


@st.composite
def mask_images(draw: st.DrawFn) -> Image.Image:
    """A small mask of any kind maskstore reads, drawn from a few values so labels hit."""
    h, w = draw(st.integers(1, 8)), draw(st.integers(1, 8))
    kind = draw(st.sampled_from(["L", "P", "P+trns", "RGB", "RGBA", "LA", "I;16"]))
    pool = draw(st.lists(st.integers(0, 255), min_size=1, max_size=5, unique=True))
    index = draw(arrays(np.uint8, (h, w), elements=st.sampled_from(pool)))
    if kind == "L":
        return Image.fromarray(index)
    if kind == "I;16":
        return Image.frombytes("I;16", (w, h), index.astype("<u2").tobytes())
    if kind.startswith("P"):
        image = Image.frombytes("P", (w, h), index.tobytes())
        n = draw(st.integers(max(pool) + 1, 256))  # every used index has a palette entry
        palette = draw(arrays(np.uint8, (n, 3), elements=st.sampled_from([0, 64, 128, 255])))
        image.putpalette(palette.ravel().tolist())
        if kind == "P+trns":
            image.info["transparency"] = draw(st.one_of(
                st.sampled_from(pool), st.binary(min_size=1, max_size=n)))
        return image
    bands = len(kind)
    colours_pool = draw(arrays(np.uint8, (len(pool), bands), elements=st.sampled_from([0, 1, 128, 200, 255])))
    rank = np.searchsorted(np.array(sorted(pool)), index)
    return Image.frombytes(kind, (w, h), colours_pool[rank].tobytes())


@st.composite
def scenes(draw: st.DrawFn) -> dict:
    mask = draw(mask_images())
    w, h = mask.size
    src_mode = draw(st.sampled_from(["RGB", "L", "RGBA"]))
    src = Image.frombytes(src_mode, (w, h), draw(arrays(np.uint8, (h, w, len(src_mode)))).tobytes())
    present = [tuple(int(c) for c in v) for v in np.unique(ref_mask_rgb(mask).reshape(-1, 3), axis=0)]
    absent = draw(st.lists(colours, max_size=3))
    keys = list(dict.fromkeys(draw(st.lists(st.sampled_from(present), max_size=len(present), unique=True)) + absent))
    label_lists = st.lists(st.sampled_from(LABELS), max_size=3, unique=True)
    mask_labels = {k: draw(label_lists) for k in keys}
    if draw(st.booleans()):  # more distinct colours than a uint16 lookup key can address
        fillers = [(250, i // 256, i % 256) for i in range(300)]
        mask_labels.update({k: [f"filler{i}"] for i, k in enumerate(fillers) if k not in mask_labels})
    return {
        "mask": mask, "src": src, "mask_labels": mask_labels,
        "label_colors": draw(st.dictionaries(st.sampled_from(LABELS), colours)),
        "colors": draw(st.none() | st.dictionaries(st.sampled_from(LABELS), colours)),
        "opacity": draw(opacities),
        "background": draw(st.none() | colours),
        "tint": draw(colours),
        "enumeration": draw(st.dictionaries(st.sampled_from(LABELS), st.integers(0, 300) | st.integers(0, 9))),
        "ignore": draw(st.sampled_from([255, 0, 1000])),
        "block": draw(st.sampled_from([1, 3, 7, render_module.BLOCK])),  # drawn frames span many blocks too
    }


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scene=scenes())
def test_drawn_masks_match_reference(store: Archive, scene: dict) -> None:
    with tempfile.TemporaryDirectory() as tmp, mock.patch.object(render_module, "BLOCK", scene["block"]):
        scene["mask"].save(Path(tmp) / "mask.png")
        scene["src"].save(Path(tmp) / "src.png")
        mask, src = Image.open(Path(tmp) / "mask.png"), ref_source(Path(tmp) / "src.png")
        v = new_version(store, scene["mask_labels"], scene["label_colors"])
        frame = add_pair(v, Path(tmp) / "src.png", Path(tmp) / "mask.png")
        labels, label_colors = v.mask_labels, v.get_label_colors()
        opacity, bg, colors = scene["opacity"], scene["background"], scene["colors"]

        assert_same(render(frame, v, opacity=opacity, colors=colors, background=bg),
                    ref_segmentation(src, mask, labels, label_colors, colors, opacity, bg))
        assert_same(render(frame, v, opacity=opacity, colors=colors, background=bg, layer_only=True),
                    ref_segmentation(src, mask, labels, label_colors, colors, opacity, bg, layer=True))
        assert_same(render(frame, v, mode="alpha"), ref_alpha_render(src, mask))
        assert_same(render(frame, v, mode="alpha", background=scene["tint"]),
                    ref_alpha_render(src, mask, background=scene["tint"]))
        assert_same(render(frame, v, mode="alpha", tint=scene["tint"], opacity=opacity),
                    ref_alpha_render(src, mask, tint=scene["tint"], opacity=opacity))
        if scene["enumeration"]:
            assert_same(render(frame, v, mode="index", enumeration=scene["enumeration"], ignore=scene["ignore"]),
                        ref_index(mask, labels, scene["enumeration"], scene["ignore"]))


@st.composite
def unsaved_alpha_masks(draw: st.DrawFn) -> Image.Image:
    """Alpha-bearing kinds PNG does not round-trip: PA, RGBA palettes, 1-bit, 32-bit integers."""
    h, w = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    kind = draw(st.sampled_from(["PA", "P-RGBA", "1", "I"]))
    index = draw(arrays(np.uint8, (h, w)))
    if kind == "1":
        return Image.fromarray(index).convert("1")
    if kind == "I":
        return Image.fromarray(index.astype(np.int32))
    rawmode = "RGBA" if kind == "P-RGBA" else "RGB"
    image = Image.frombytes("P", (w, h), index.tobytes())
    image.putpalette(draw(arrays(np.uint8, (256, len(rawmode)))).ravel().tolist(), rawmode)
    if kind == "PA":
        image = image.convert("PA")
        image.putalpha(Image.fromarray(draw(arrays(np.uint8, (h, w)))))
    return image


@given(mask=unsaved_alpha_masks())
def test_mask_alpha_of_other_modes(mask: Image.Image) -> None:
    assert_same(mask_alpha(mask), ref_alpha(mask).astype(np.uint8))


@given(keys=st.lists(st.integers(0, 0xFFFFFF), unique=True, max_size=20),
       probes=st.lists(st.integers(0, 0xFFFFFF), max_size=30), data=st.data())
def test_value_table_lookup(keys: list[int], probes: list[int], data: st.DataObject) -> None:
    probes += data.draw(st.lists(st.sampled_from(keys), max_size=10)) if keys else []
    table = ValueTable(np.array(sorted(keys), dtype=np.uint32))
    per_value = np.arange(1, len(keys) + 1, dtype=np.int64)
    found = table.lookup(np.array(probes, dtype=np.uint32), per_value, -1)
    assert found.tolist() == [sorted(keys).index(p) + 1 if p in keys else -1 for p in probes]


# ----------------------------------------------------------------------------- real images

def _table(path: Path) -> list[dict]:
    return json.loads(path.read_text())["labels"]


def _labels(name: str) -> tuple[dict, dict]:
    """mask_labels and label_colors for one of the shared label tables."""
    if name == "cityscapes":
        rows = _table(SHARED_DATA / "mmsegmentation_cityscapes/cityscapes_labels.json")
        return ({(r["id"],) * 3: [r["name"]] for r in rows if r["id"] >= 0},
                {r["name"]: r["color"] for r in rows})
    if name == "cityscapes_train":  # two labels per value: the first colours it, either can enumerate it
        rows = _table(SHARED_DATA / "mmsegmentation_cityscapes/cityscapes_labels.json")
        labels: dict = {(r["trainId"],) * 3: [r["name"], r["category"]] for r in rows if 0 <= r["trainId"] < 255}
        labels[(255, 255, 255)] = ["ignore"]
        return labels, {r["name"]: r["color"] for r in rows}
    if name == "concepts":
        rows = _table(SHARED_DATA / "clearml_docs/clearml_concepts_mask_labels.json")
        return {tuple(r["color"]): [r["name"]] for r in rows}, {}
    file = {"voc": "labelme_voc/voc_labels.json", "lip": "mmsegmentation_lip_mapillary/lip_labels.json",
            "mapillary": "mmsegmentation_lip_mapillary/mapillary_v1.2_labels.json"}[name]
    rows = _table(SHARED_DATA / file)
    if name == "lip":  # index masks: the value is the class id; the colours are only for display
        return {(r["id"],) * 3: [r["name"]] for r in rows}, {r["name"]: r["color"] for r in rows}
    return {tuple(r["color"]): [r["name"]] for r in rows}, {r["name"]: r["color"] for r in rows}


CITY = "mmsegmentation_cityscapes/frankfurt_000000_000294_"
LIP = "mmsegmentation_lip_mapillary/lip/"
PAIRS = [  # (source, mask, label table or None for alpha mattes)
    (CITY + "leftImg8bit.png", CITY + "gtFine_labelIds.png", "cityscapes"),
    (CITY + "leftImg8bit.png", CITY + "gtFine_labelTrainIds.png", "cityscapes_train"),
    ("labelme_voc/JPEGImages/2011_000003.jpg", "labelme_voc/SegmentationClass/2011_000003.png", "voc"),
    ("labelme_voc/JPEGImages/2011_000006.jpg", "labelme_voc/SegmentationClass/2011_000006.png", "voc"),
    ("labelme_voc/JPEGImages/2011_000003.jpg", "labelme_voc/SegmentationObject/2011_000003.png", "voc"),
    ("deeplabv3plus_voc_rgb/1_image.png", "deeplabv3plus_voc_rgb/1_target.png", "voc"),
    ("deeplabv3plus_voc_rgb/114_image.png", "deeplabv3plus_voc_rgb/114_target.png", "voc"),
    (LIP + "train_images/684_2150041.jpg", LIP + "train_segmentations/684_2150041.png", "lip"),
    (LIP + "val_images/86_185913.jpg", LIP + "val_segmentations/86_185913.png", "lip"),
    ("mmsegmentation_lip_mapillary/mapillary_v1.2/__CRyFzoDOXn6unQ6a3DnQ.jpg",
     "mmsegmentation_lip_mapillary/mapillary_v1.2/__CRyFzoDOXn6unQ6a3DnQ.png", "mapillary"),
    ("pymatting_lemur/lemur.png", "pymatting_lemur/lemur_alpha.png", None),
    ("pymatting_lemur/lemur.png", "pymatting_lemur/lemur_trimap.png", None),
    ("fba_matting_troll/images/troll.png", "fba_matting_troll/predictions/troll_alpha.png", None),
    ("fba_matting_troll/images/troll.png", "fba_matting_troll/trimaps/troll.png", None),
    ("rembg_examples/car-1.jpg", "rembg_examples/car-1.out.png", None),
    ("rembg_examples/girl-1.jpg", "rembg_examples/girl-1.out.png", None),
    ("rembg_examples/car-2.jpg", "rembg_examples/car-2.out.png", None),
]


@pytest.fixture(scope="module")
def real(store: Archive) -> dict:
    """One version per pair, ingested through the archive like a user would."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real-image fixtures not found at {SHARED_DATA} (the shared/ folder beside the repo)")
    out = {}
    for source, mask, table in PAIRS:
        labels, colours = _labels(table) if table else ({}, {})
        v = new_version(store, labels, colours)
        out[mask] = (v, add_pair(v, SHARED_DATA / source, SHARED_DATA / mask))
    return out


@pytest.mark.parametrize("source, mask, table", PAIRS, ids=[Path(m).name for _, m, _ in PAIRS])
def test_real_pairs_match_reference(real: dict, source: str, mask: str, table: str | None) -> None:
    v, frame = real[mask]
    src, mask_image = ref_source(SHARED_DATA / source), Image.open(SHARED_DATA / mask)
    assert_same(render(frame, v, mode="alpha"), ref_alpha_render(src, mask_image))
    assert_same(render(frame, v, mode="alpha", background=(0, 177, 64)),
                ref_alpha_render(src, mask_image, background=(0, 177, 64)))
    assert_same(render(frame, v, mode="alpha", tint=(0, 0, 0), opacity=0.7),
                ref_alpha_render(src, mask_image, tint=(0, 0, 0), opacity=0.7))
    if table is None:
        return
    labels, label_colors = v.mask_labels, v.get_label_colors()
    names = [name for e in labels for name in e["labels"]]
    colors = {names[1]: "#ff00ff"}
    for opacity, bg in [(0.5, None), (0.35, (255, 255, 255))]:
        assert_same(render(frame, v, opacity=opacity, colors=colors, background=bg),
                    ref_segmentation(src, mask_image, labels, label_colors, colors, opacity, bg))
    assert_same(render(frame, v, layer_only=True),
                ref_segmentation(src, mask_image, labels, label_colors, None, 0.5, None, layer=True))
    for enumeration in [{n: i for i, n in enumerate(names[::2])}, {n: 300 + i for i, n in enumerate(names)}]:
        assert_same(render(frame, v, mode="index", enumeration=enumeration),
                    ref_index(mask_image, labels, enumeration, 255))


def test_first_label_picks_the_colour_and_enumeration_order_decides_the_class(real: dict) -> None:
    v, frame = real[CITY + "gtFine_labelTrainIds.png"]  # trainId 0 is ["road", "flat"]
    road = (SHARED_DATA / (CITY + "gtFine_labelTrainIds.png"))
    road_pixels = np.asarray(Image.open(road)) == 0
    layer = render(frame, v, layer_only=True, opacity=1.0)
    assert (layer[road_pixels] == [128, 64, 128, 255]).all()
    classes = render(frame, v, mode="index", enumeration={"flat": 1, "road": 7})
    assert (classes[road_pixels] == 7).all()
    classes = render(frame, v, mode="index", enumeration={"flat": 1})
    assert (classes[road_pixels] == 1).all()


# ----------------------------------------------------------------------------- sizes and errors

@pytest.fixture(scope="module")
def concepts(store: Archive):
    """The ClearML docs example: its mask is 1352x677, its photo 1351x675."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real-image fixtures not found at {SHARED_DATA} (the shared/ folder beside the repo)")
    v = new_version(store, *_labels("concepts"))
    frame = add_pair(v, SHARED_DATA / "clearml_docs/concepts_masks_image_only.png",
                     SHARED_DATA / "clearml_docs/concepts_masks.png", "concepts")
    return v, frame


@pytest.mark.parametrize("mode, options", [("segmentation", {}), ("alpha", {}), ("index", {"enumeration": {"car": 1}}),
                                           ("segmentation", {"layer_only": True})])
def test_size_mismatch_names_both_sizes(concepts: tuple, mode: str, options: dict) -> None:
    v, frame = concepts
    with pytest.raises(MaskError) as err:
        render(frame, v, mode=mode, **options)
    message = str(err.value)
    assert "1352x677" in message and "1351x675" in message
    assert "'concepts'" in message and "concepts_masks.png" in message and 'resize="nearest"' in message


def test_resize_nearest_scales_the_mask_to_the_source(concepts: tuple) -> None:
    v, frame = concepts
    src = ref_source(SHARED_DATA / "clearml_docs/concepts_masks_image_only.png")
    mask = Image.open(SHARED_DATA / "clearml_docs/concepts_masks.png").resize((1351, 675), Image.Resampling.NEAREST)
    assert_same(render(frame, v, resize="nearest"),
                ref_segmentation(src, mask, v.mask_labels, v.get_label_colors(), None, 0.5, None))
    assert_same(render(frame, v, mode="alpha", resize="nearest"), ref_alpha_render(src, mask))
    assert render(frame, v, mode="index", enumeration={"car": 1}, resize="nearest").shape == (675, 1351)


def test_16_bit_mask_above_255_is_refused(store: Archive, shared_data: Path) -> None:
    # precomputed values make ingest trust the mask without opening it, so render meets it first
    v = new_version(store, {(7, 7, 7): ["road"]})
    uri = str(shared_data / (CITY + "gtFine_instanceIds.png"))
    v.add_frames([{"id": "inst", "sources": [{"uri": str(shared_data / (CITY + "leftImg8bit.png")),
                                              "masks": [{"uri": uri, "values": [[7, 7, 7, 1]]}]}]}])
    for mode, options in [("segmentation", {}), ("alpha", {}), ("index", {"enumeration": {"road": 0}})]:
        with pytest.raises(MaskError, match=r"26002.*above 255"):
            render(v.get_frame("inst"), v, mode=mode, **options)


def test_16_bit_mask_up_to_255_renders_as_values(store: Archive, tmp_path: Path) -> None:
    values = np.array([[0, 7, 255], [7, 7, 0]], dtype="<u2")
    Image.frombytes("I;16", (3, 2), values.tobytes()).save(tmp_path / "m.png")
    Image.new("RGB", (3, 2), (10, 20, 30)).save(tmp_path / "s.png")
    v = new_version(store, {(7, 7, 7): ["road"]}, {"road": (200, 100, 0)})
    frame = add_pair(v, tmp_path / "s.png", tmp_path / "m.png")
    assert render(frame, v, mode="index", enumeration={"road": 3}).tolist() == [[255, 3, 255], [3, 3, 255]]
    assert render(frame, v, mode="alpha")[..., 3].tolist() == values.tolist()
    assert render(frame, v, opacity=1.0)[0, 1].tolist() == [200, 100, 0]


def test_import_gives_the_module_and_calling_it_renders(store: Archive, tmp_path: Path) -> None:
    """``import maskstore.render`` is the module; ``maskstore.render(frame, v, ...)`` (spec section 6)
    is the same call as ``maskstore.render.render``, options and errors included."""
    import types

    import maskstore
    import maskstore.render
    assert isinstance(maskstore.render, types.ModuleType) and maskstore.render is render_module
    assert maskstore.render.render is render and maskstore.render.blend_segmentation is not None
    Image.fromarray(np.array([[0, 1], [1, 0]], np.uint8), "L").save(tmp_path / "m.png")
    Image.new("RGB", (2, 2), (10, 20, 30)).save(tmp_path / "s.png")
    v = new_version(store, {(1, 1, 1): ["car"]}, {"car": (250, 0, 0)})
    frame = add_pair(v, tmp_path / "s.png", tmp_path / "m.png")
    called = maskstore.render(frame, v, mode="segmentation", opacity=1.0)
    assert called.tolist() == render(frame, v, opacity=1.0).tolist()
    assert called[0, 1].tolist() == [250, 0, 0] and called[0, 0].tolist() == [10, 20, 30]
    assert maskstore.render(frame, v, "index", enumeration={"car": 4}).tolist() == [[255, 4], [4, 255]]
    with pytest.raises(MaskstoreError, match="opacity"):
        maskstore.render(frame, v, opacity=2)


@pytest.mark.parametrize("options, message", [
    ({"mode": "heatmap"}, "unknown render mode"),
    ({"opacity": 1.5}, "opacity"),
    ({"opacity": float("nan")}, "opacity"),
    ({"resize": "bilinear"}, "resize"),
    ({"mode": "alpha", "layer_only": True}, "layer_only"),
    ({"mode": "alpha", "tint": (0, 0, 0), "background": (1, 1, 1)}, "tint"),
    ({"tint": (0, 0, 0)}, "tint"),
    ({"mode": "index"}, "enumeration"),
    ({"mode": "index", "enumeration": {"road": -1}}, "class id"),
    ({"enumeration": {"road": 1}}, "enumeration"),
    ({"colors": {"road": "red"}}, "colour"),
    ({"mask_id": "nope"}, "no mask 'nope'"),
    ({"source_id": "rear"}, "no source 'rear'"),
])
def test_bad_options_are_maskstore_errors(real: dict, options: dict, message: str) -> None:
    v, frame = real[CITY + "gtFine_labelIds.png"]
    with pytest.raises(MaskstoreError, match=message):
        render(frame, v, **options)


def test_frame_group_renders_the_source_with_a_mask(store: Archive, shared_data: Path) -> None:
    v = new_version(store, *_labels("cityscapes"))
    group = FrameGroup(id="g")
    group["front"] = SingleFrame(source=str(shared_data / "rembg_examples/car-1.jpg"))
    group["rear"] = SingleFrame(source=str(shared_data / (CITY + "leftImg8bit.png")),
                                mask_source=str(shared_data / (CITY + "gtFine_labelIds.png")))
    v.add_frames([group])
    frame = v.get_frame("g")
    assert_same(render(frame, v), render(frame, v, source_id="rear", mask_id="00"))
    assert render(frame, v).shape == (128, 256, 3)
    with pytest.raises(MaskError, match="no mask in source 'front'"):
        render(frame, v, source_id="front")


def test_tint_at_full_opacity_is_the_background_composite() -> None:
    src = np.arange(256 * 3, dtype=np.uint8).reshape(16, 16, 3)
    alpha = np.arange(256, dtype=np.uint8).reshape(16, 16)
    assert_same(alpha_tint(src, alpha, (0, 0, 0), opacity=1.0), alpha_over(src, alpha, (0, 0, 0)))
    assert_same(alpha_tint(src, alpha, (9, 9, 9), opacity=0.0), src)


def test_tables_are_built_once_per_labels_and_colours(real: dict) -> None:
    v, _ = real[CITY + "gtFine_labelIds.png"]
    first = color_table(v.mask_labels, v.get_label_colors())
    assert color_table(v.mask_labels, v.get_label_colors()) is first
    assert color_table(v.mask_labels, v.get_label_colors(), {"road": (1, 2, 3)}) is not first
    assert class_table(v.mask_labels, {"road": 0}) is class_table(v.get_masks_labels(), {"road": 0})


def test_source_images_of_every_mode_become_rgb(shared_data: Path) -> None:
    grey = Image.open(shared_data / (LIP + "val_images/86_185913.jpg"))
    rgba = Image.open(shared_data / "pymatting_lemur/lemur.png")
    assert grey.mode == "L" and rgba.mode == "RGBA"
    for image in (grey, rgba):
        assert_same(source_rgb(image), np.asarray(image.convert("RGB")))
