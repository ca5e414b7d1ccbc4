"""The compiled blends (``maskstore._blend``) against the numpy path of ``maskstore.render``.

The numpy path is the reference (``tests/test_render.py`` checks it, and ``render`` with the kernels,
against naive formulas) and what ``MASKSTORE_PUREPYTHON=1`` selects; here both paths get the same
drawn images and must give the same bytes: segmentation over index (L, P, LA) and RGB-family masks,
with and without a background, colour layers, alpha over a background, tinted, and RGBA cut-outs.
"""

from __future__ import annotations

import gc
import importlib
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from maskstore.media import mask_alpha, mask_pixels

render_module = importlib.import_module("maskstore.render")
kernels = render_module._compiled()
pytestmark = pytest.mark.skipif(kernels is None, reason="maskstore._blend is not built (pip install -e .)")

LABELS = ["road", "car", "person", "sky"]
colours = st.tuples(*[st.integers(0, 255)] * 3)
MASK_KINDS = ["L", "P", "LA", "RGB", "RGBA", "RGBX"]
SOURCE_MODES = ["RGB", "RGBA", "RGBX", "L"]


@st.composite
def scenes(draw: st.DrawFn) -> dict[str, Any]:
    """A source, a mask drawn from a few values (so labels hit and runs form) and render options."""
    h, w = draw(st.integers(1, 24)), draw(st.integers(1, 40))
    kind = draw(st.sampled_from(MASK_KINDS))
    bands = 1 if kind == "P" else len(kind)
    pool = draw(arrays(np.uint8, (draw(st.integers(1, 6)), bands), elements=st.sampled_from([0, 1, 7, 128, 255])))
    mask_array = pool[draw(arrays(np.uint8, (h, w), elements=st.integers(0, len(pool) - 1)))]
    mask = Image.frombytes(kind, (w, h), mask_array.tobytes())
    if kind == "P":
        mask.putpalette(draw(arrays(np.uint8, 768, elements=st.sampled_from([0, 7, 255]))).tolist())
    src_mode = draw(st.sampled_from(SOURCE_MODES))
    src = Image.frombytes(src_mode, (w, h), draw(arrays(np.uint8, (h, w, len(src_mode)))).tobytes())
    present = {tuple(int(c) for c in v) for v in np.unique(np.asarray(mask.convert("RGB")).reshape(-1, 3), axis=0)}
    keys = draw(st.lists(st.sampled_from(sorted(present)), unique=True)) + draw(st.lists(colours, max_size=3))
    mask_labels = {k: draw(st.lists(st.sampled_from(LABELS), max_size=2, unique=True)) for k in dict.fromkeys(keys)}
    return {"src": src, "mask": mask, "mask_labels": mask_labels,
            "colors": draw(st.dictionaries(st.sampled_from(LABELS), colours)),
            "a": draw(st.integers(0, 255)), "background": draw(st.none() | colours), "tint": draw(colours)}


def both(run: Any) -> tuple[np.ndarray, np.ndarray]:
    """``run(kernels)`` through the numpy path (None) and through the kernels."""
    return run(None), run(kernels)


def assert_same(fast: np.ndarray, ref: np.ndarray) -> None:
    assert fast.dtype == ref.dtype and fast.shape == ref.shape
    assert np.array_equal(fast, ref), f"first difference at {tuple(np.argwhere(fast != ref)[0])}"


@settings(max_examples=200, deadline=None)
@given(scene=scenes())
def test_kernels_match_numpy_path(scene: dict[str, Any]) -> None:
    src, mask, a, bg = scene["src"], scene["mask"], scene["a"], scene["background"]
    table = render_module.color_table(scene["mask_labels"], colors=scene["colors"])

    def values(k: Any) -> Any:
        return render_module._mask_values(mask, "", k)

    def source(k: Any) -> np.ndarray:
        return render_module._source(src, k)

    assert_same(*both(lambda k: render_module._segmentation(k, source(k), values(k), table, a, bg)))
    assert_same(*both(lambda k: render_module._layer(k, values(k), table, a, bg)))
    assert_same(*both(lambda k: render_module._alpha(mask, "", k)))
    alpha = mask_alpha(mask)
    for colour, tint_alpha in [(scene["tint"], None), (scene["tint"], a)]:
        blend = render_module._alpha_table(colour, tint_alpha)
        assert_same(*both(lambda k: render_module._alpha_blend(k, source(k), alpha, blend)))
    assert_same(*both(lambda k: render_module._alpha_rgba(k, source(k), alpha)))


@settings(max_examples=100, deadline=None)
@given(scene=scenes())
def test_public_functions_agree_with_the_switch(scene: dict[str, Any]) -> None:
    """The array functions (export's and the viewer's entry points) take ``MaskPixels``, whose RGB
    masks are packed keys: the kernels read those as bytes; ``MASKSTORE_PUREPYTHON=1`` gives numpy."""
    src, pixels = render_module.source_rgb(scene["src"]), mask_pixels(scene["mask"])
    table = render_module.color_table(scene["mask_labels"], colors=scene["colors"])
    opacity, bg, alpha = scene["a"] / 255, scene["background"], mask_alpha(scene["mask"])
    calls = [lambda: render_module.blend_segmentation(src, pixels, table, opacity, bg),
             lambda: render_module.segmentation_layer(pixels, table, opacity, bg),
             lambda: render_module.alpha_over(src, alpha, scene["tint"]),
             lambda: render_module.alpha_tint(src, alpha, scene["tint"], opacity),
             lambda: render_module.alpha_rgba(src, alpha)]
    for call in calls:
        with mock.patch.dict(os.environ, {"MASKSTORE_PUREPYTHON": "1"}):
            assert render_module._kernels() is None
            ref = call()
        with mock.patch.dict(os.environ, {"MASKSTORE_PUREPYTHON": "0"}):
            assert render_module._kernels() is kernels
            assert_same(call(), ref)


def test_empty_images() -> None:
    table = render_module.color_table({(1, 1, 1): ["road"]})
    src = np.zeros((0, 5, 3), np.uint8)
    for mask in [render_module.MaskPixels(np.zeros((0, 5), np.uint8), np.zeros(256, np.uint32), None),
                 render_module.MaskPixels(None, None, np.zeros((0, 5), np.uint32))]:
        assert_same(*both(lambda k: render_module._segmentation(k, src, mask, table, 128, None)))
        assert_same(*both(lambda k: render_module._layer(k, mask, table, 128, (1, 2, 3))))


def test_images_in_several_memory_blocks_are_copied_and_render_alike() -> None:
    """Pillow exports its memory only when the rows are one block (16 MiB by default): a larger
    image is read with ``numpy.asarray`` and renders the same."""
    side = int((Image.core.get_block_size() / 4) ** 0.5) + 2
    rng = np.random.default_rng(0)
    src = Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8))
    mask = Image.fromarray(rng.choice(np.array([[0, 0, 0], [9, 9, 9], [200, 1, 3]], np.uint8), (side, side)))
    assert kernels.image_pixels(src) is None and kernels.image_pixels(mask) is None
    table = render_module.color_table({(9, 9, 9): ["road"], (200, 1, 3): ["car"]})
    assert_same(*both(lambda k: render_module._segmentation(
        k, render_module._source(src, k), render_module._mask_values(mask, "", k), table, 128, None)))


def test_pillow_pixels_are_read_in_place_and_outlive_the_image() -> None:
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    image = Image.fromarray(rgb)
    pixels = kernels.image_pixels(image)
    assert pixels.shape == (5, 7, 4) and not pixels.flags.writeable
    image.paste((1, 2, 3), (0, 0, 1, 1))  # in place: Pillow's edit shows through
    assert pixels[0, 0, :3].tolist() == [1, 2, 3]
    del image
    gc.collect()
    assert np.array_equal(pixels[1:, :, :3], rgb[1:])
    assert kernels.image_pixels(Image.fromarray(rgb[..., 0])).shape == (5, 7, 1)
    for mode in ["I;16", "I", "F"]:  # wider samples: not 8-bit pixels, so not the kernels' input
        assert kernels.image_pixels(Image.new(mode, (3, 2))) is None


def test_threads_render_alike() -> None:
    """The loops run without the GIL; frames rendered on threads at once are the serial bytes."""
    rng = np.random.default_rng(2)
    table = render_module.color_table({(v, v, v): [LABELS[v % 4]] for v in range(0, 40, 3)})
    frames = [(rng.integers(0, 256, (64, 96, 3), dtype=np.uint8),
               render_module.MaskPixels(rng.integers(0, 40, (64, 96), dtype=np.uint8),
                                        (np.arange(256, dtype=np.uint32) * 0x010101), None)) for _ in range(8)]
    serial = [render_module._segmentation(kernels, s, m, table, 100, None) for s, m in frames]
    with ThreadPoolExecutor(2) as pool:
        threaded = list(pool.map(lambda f: render_module._segmentation(kernels, *f, table, 100, None), frames))
    for a, b in zip(threaded, serial):
        assert_same(a, b)


def test_kernels_refuse_tables_that_would_read_out_of_bounds() -> None:
    src, index, out = np.zeros((2, 3, 3), np.uint8), np.zeros((2, 3), np.uint8), np.empty((2, 3, 3), np.uint8)
    blend = render_module._alpha_table((1, 2, 3), None)
    lut, lanes = np.ascontiguousarray(blend.lut[:, :2]), blend.lanes[:2]
    with pytest.raises(ValueError, match="outside"):
        kernels.blend_index(src, index, np.full(256, 2, np.uint32), lut, lanes, out)
    with pytest.raises(ValueError, match="outside"):
        kernels.blend_rgb(src, np.zeros((2, 3, 3), np.uint8), np.array([5], np.uint32), np.array([0], np.uint32),
                          2, lut, lanes, out)
    with pytest.raises(ValueError, match="shape"):
        kernels.blend_index(src, np.zeros((3, 3), np.uint8), np.zeros(256, np.uint32), lut, lanes, out)
    with pytest.raises(ValueError, match="16 bits"):
        kernels.blend_index(src, index, np.zeros(256, np.uint32), lut, lanes + 255, out)
    with pytest.raises(ValueError, match="shape"):
        kernels.layer_index(index, np.zeros(16, np.uint32), np.empty((2, 3), np.uint32))
