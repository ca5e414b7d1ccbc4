"""Vectorized renderers: segmentation overlays, alpha mattes and class-index maps (spec sections 3, 6).

Two layers. The array functions (numpy and ``MaskPixels`` in, numpy out) are what export and the
benchmarks call; ``render`` only finds a frame's source and mask, decodes them through the version
and hands the arrays over.

No step loops over pixels or labels (loops run over the three channels and over blocks of a
quarter-million pixels). Everything that depends on the labels is a table built once per version
(cached on its ``mask_labels`` and colours):

- a mask value becomes a *row* (its colour slot, class id or alpha level) through a 256-entry table
  for index masks (L, P, small I;16), or through one ``searchsorted`` over the version's sorted
  packed values for RGB masks;
- every blend of spec section 6 has the shape ``(src * w + t) // 255`` with ``w`` and ``t`` fixed
  per row, so it is precomputed as ``lut[channel, row, src]`` and each output channel is a single
  gather with the key ``row << 8 | src``.

The compiled kernels of ``maskstore._blend`` take the same tables and do the lookups and the blend
in one pass over the pixels, reading sources and RGB masks in Pillow's own memory; the numpy path
stays the reference and the fallback (module not built, or ``MASKSTORE_PUREPYTHON=1``).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from types import ModuleType
from typing import Any, Protocol, Union

import numpy as np
from PIL import Image

from ._accel import purepython_requested
from .errors import FrameError, MaskError
from .labels import (RGB, default_colors, nfc, normalize_mask_labels, pack_rgb, parse_color, unpack_rgb,
                     within_tolerance)
from .media import GREY_TABLE, MaskPixels, eight_bit, mask_alpha, mask_pixels, palette_table
from .model import Frame, Mask, Source

MODES = ("segmentation", "alpha", "index")
# Modes Pillow stores as 4 bytes per pixel, r, g, b first: the kernels read them in place.
RGB_MODES = ("RGB", "RGBA", "RGBX")
# Pixels per block. Whole-frame temporaries (np.take makes an 8-byte index per pixel, 16 MiB at
# 2048x1024) tend to get fresh memory that is page-faulted in on every frame; blocks this size stay
# in cache and are reused.
BLOCK = 1 << 18


ColorLike = Union[Sequence[int], str]  # (r, g, b), [r, g, b] or "#rrggbb"


class RenderVersion(Protocol):
    """What ``render`` needs from a dataset version (``DatasetVersion`` provides it)."""

    @property
    def mask_labels(self) -> list[dict]: ...

    def get_label_colors(self) -> Mapping[str, Any]: ...

    @property
    def mask_tolerance(self) -> int: ...

    def open_image(self, uri: str, what: str = "image") -> Image.Image: ...


def opacity_to_alpha(opacity: float) -> int:
    """Spec section 6: ``a = floor(opacity * 255 + 0.5)``, so 0.5 gives 128 everywhere."""
    if isinstance(opacity, bool) or not isinstance(opacity, (int, float)) or not 0 <= opacity <= 1:
        raise FrameError(f"opacity must be a number from 0 to 1, got {opacity!r}")
    return math.floor(opacity * 255 + 0.5)


def _blocks(n: int) -> Iterator[slice]:
    return (slice(start, start + BLOCK) for start in range(0, n, BLOCK))


def _gather(table: np.ndarray, index: np.ndarray) -> np.ndarray:
    """``table[index]`` for a whole image, block by block."""
    flat = index.reshape(-1)
    out = np.empty(flat.shape, dtype=table.dtype)
    for block in _blocks(len(flat)):
        out[block] = table.take(flat[block])
    return out.reshape(index.shape)


def _color(color: ColorLike | None) -> RGB | None:
    return None if color is None else parse_color(color)


@cache
def _compiled() -> ModuleType | None:
    try:
        from . import _blend
    except ImportError:  # a source checkout that was not built: the numpy path gives the same bytes
        return None
    return _blend


def _kernels() -> ModuleType | None:
    """The compiled blends, or None for the numpy reference: not built, or ``MASKSTORE_PUREPYTHON=1``
    (read per call, so one process can compare both)."""
    return None if purepython_requested() else _compiled()


# A mask as the renderer reads it: ``MaskPixels``, or with the kernels an RGB-family mask's own
# pixels, (H, W, 3 or 4) uint8 with r, g, b first (no packing pass).
MaskValues = Union[MaskPixels, np.ndarray]

LEVELS = np.arange(256, dtype=np.uint32)  # alpha level -> blend table row


def _rgb_bytes(mask: MaskValues) -> np.ndarray:
    """An RGB mask as (H, W, >= 3) uint8 r, g, b: packed keys ``r << 16 | g << 8 | b`` are viewed as
    their bytes, which little-endian order stores b, g, r, 0 (so the view runs backwards)."""
    if isinstance(mask, np.ndarray):
        return mask
    assert mask.keys is not None
    keys = np.ascontiguousarray(mask.keys, dtype="<u4")
    return keys.view(np.uint8).reshape(*keys.shape, 4)[..., 2::-1]


def _pillow_pixels(image: Image.Image, kernels: ModuleType) -> np.ndarray:
    """An RGB-family image as (H, W, 3 or 4) uint8, read in place when Pillow exports its memory."""
    pixels = kernels.image_pixels(image)
    return pixels if pixels is not None else np.asarray(image)


# ----------------------------------------------------------------------------- value tables

class ValueTable:
    """A version's mask values, sorted, for exact vectorized "which value is this pixel" lookups.

    Each value k owns the interval [k, k + 1). Over the sorted bounds [k0, k0+1, k1, k1+1, ...] a
    right-side ``searchsorted`` returns 2i + 1 for the i-th value and an even number for anything
    not in the table, so one search and one ``take`` answer it: no compare-and-fix-up pass.
    """

    def __init__(self, keys: np.ndarray) -> None:
        self.keys = np.asarray(keys, dtype=np.uint32)
        self._bounds = np.column_stack([self.keys, self.keys + 1]).ravel()

    def lookup(self, packed: np.ndarray, per_value: np.ndarray, missing: int) -> np.ndarray:
        """``per_value[i]`` where ``packed`` is the i-th value, ``missing`` where it is no value."""
        expanded = np.full(2 * len(self.keys) + 1, missing, dtype=per_value.dtype)
        expanded[1::2] = per_value
        flat = packed.reshape(-1)
        out = np.empty(flat.shape, dtype=per_value.dtype)
        for block in _blocks(len(flat)):
            out[block] = expanded.take(np.searchsorted(self._bounds, flat[block], side="right"))
        return out.reshape(packed.shape)


LabelsKey = tuple[tuple[tuple[int, ...], tuple[str, ...]], ...]


def _labels_key(mask_labels: Iterable[Mapping[str, Any]] | Mapping[Any, Any]) -> LabelsKey:
    """A hashable copy of mask_labels (list or dict form), cheap enough to build per frame."""
    if isinstance(mask_labels, Mapping):
        mask_labels = normalize_mask_labels(mask_labels)
    return tuple((tuple(e["value"]), tuple(e["labels"])) for e in mask_labels)


@lru_cache(maxsize=64)
def _sorted_labels(key: LabelsKey) -> tuple[ValueTable, tuple[tuple[str, ...], ...]]:
    packed = np.array([pack_rgb(value) for value, _ in key], dtype=np.uint32)
    order = np.argsort(packed, kind="stable")
    keys = packed[order]
    repeated = keys[1:][keys[1:] == keys[:-1]]
    if len(repeated):
        raise FrameError(f"mask_labels lists the value {list(unpack_rgb(repeated[0]))} twice")
    return ValueTable(keys), tuple(key[i][1] for i in order)


# ----------------------------------------------------------------------------- segmentation

@dataclass(frozen=True, eq=False)
class ColorTable:
    """Segmentation colours of a version: per sorted value a colour slot, per slot a colour.

    Slot 0 means "no label" (its ``colors`` row is unused); slots 1.. are the distinct colours of
    the values' first labels, so two labels sharing a colour share a slot.
    """

    values: ValueTable
    slots: np.ndarray
    colors: np.ndarray


def _parse_colors(colors: Mapping[str, ColorLike] | None) -> dict[str, RGB]:
    if colors is None:
        return {}
    if not isinstance(colors, Mapping):
        raise FrameError(f"colours must map a label to [r, g, b] or \"#rrggbb\", got {colors!r}")
    return {nfc(str(label)): parse_color(c) for label, c in colors.items()}


def color_table(mask_labels: Iterable[Mapping[str, Any]] | Mapping[Any, Any],
                label_colors: Mapping[str, ColorLike] | None = None,
                colors: Mapping[str, ColorLike] | None = None) -> ColorTable:
    """The colour of each value's first label: ``colors`` > ``label_colors`` > ``default_colors``.

    Cached on its inputs, so rendering many frames of one version builds it once.

    >>> t = color_table([{"value": [7, 7, 7], "labels": ["road"]}], colors={"road": "#804080"})
    >>> t.colors[t.slots[0]].tolist()
    [128, 64, 128]
    """
    chosen = {**_parse_colors(label_colors), **_parse_colors(colors)}
    return _color_table(_labels_key(mask_labels), tuple(sorted(chosen.items())))


def legend_entries(mask_labels: Iterable[Mapping[str, Any]] | Mapping[Any, Any],
                   label_colors: Mapping[str, Any] | None = None,
                   colors: Mapping[str, Any] | None = None,
                   present: Collection[int] | None = None) -> list[tuple[str, RGB]]:
    """(label, colour) of every label that colours pixels (a value's first label), in table order,
    with the same precedence as ``color_table``; given ``present`` (packed values, as ``pack_rgb``
    makes them), only the labels of those values, so a legend lists what its images show."""
    chosen = {**_parse_colors(label_colors), **_parse_colors(colors)}
    table = normalize_mask_labels(mask_labels)
    chosen = {**default_colors(e["labels"] for e in table), **chosen}
    shown = (e for e in table if e["labels"] and (present is None or pack_rgb(e["value"]) in present))
    return [(label, chosen[label]) for label in dict.fromkeys(e["labels"][0] for e in shown)]


@lru_cache(maxsize=64)
def _color_table(key: LabelsKey, chosen: tuple[tuple[str, RGB], ...]) -> ColorTable:
    values, labels = _sorted_labels(key)
    by_label = {**default_colors(names for _, names in key), **dict(chosen)}
    labelled = [i for i, names in enumerate(labels) if names]
    rgb = np.array([by_label[labels[i][0]] for i in labelled],
                   dtype=np.uint8).reshape(-1, 3)
    distinct, inverse = np.unique(rgb, axis=0, return_inverse=True)
    slots = np.zeros(len(labels), dtype=np.uint8 if len(distinct) < 256 else np.uint16)
    slots[labelled] = inverse.ravel() + 1
    return ColorTable(values, slots, np.vstack([np.zeros((1, 3), np.uint8), distinct]))


def _rows(pixels: MaskPixels, values: ValueTable, per_value: np.ndarray,
          missing: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Each pixel's ``per_value`` entry, as rows into an optional 256-entry table.

    Index masks look up only their 256 index values and return (index image, per-index table);
    RGB masks look up every pixel once and return (per-pixel entries, None).
    """
    if pixels.index is not None:
        assert pixels.table is not None
        return pixels.index, values.lookup(pixels.table, per_value, missing)
    return values.lookup(pixels.packed(), per_value, missing), None


@dataclass(frozen=True, eq=False)
class Blend:
    """One blend of spec section 6, ``(src * weight[row] + term[row, c]) // 255``, in two forms.

    ``lut[c, row, s]`` is every result (the numpy path's gathers, the kernels' single pixels);
    ``lanes[row]`` is ``weight`` eight times, then ``term`` r, g, b, 0 twice: the kernels blend runs
    of one row four pixels at a time in 16-bit lanes from it (the blends never exceed 255 * 255 + 127).
    """

    lut: np.ndarray
    lanes: np.ndarray


def _blend_table(weight: np.ndarray, term: np.ndarray) -> Blend:
    s = np.arange(256, dtype=np.int64)
    lut = (s[None, None, :] * weight[None, :, None] + term.T[:, :, None]) // 255
    lanes = np.zeros((len(weight), 16), dtype=np.uint16)
    lanes[:, :8] = weight[:, None]
    lanes[:, 8:11] = lanes[:, 12:15] = term
    return Blend(np.ascontiguousarray(lut, dtype=np.uint8), lanes)


def _apply_lut(rows: np.ndarray, src: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """``out[y, x, c] = lut[c, rows[y, x], src[y, x, c]]``: one gather per channel."""
    dtype = np.uint16 if lut.shape[1] <= 256 else np.uint32
    flat, rows_f, src_f = lut.reshape(3, -1), rows.reshape(-1), src.reshape(-1, 3)
    out = np.empty(src.shape, dtype=np.uint8)
    out_f = out.reshape(-1, 3)
    for block in _blocks(len(rows_f)):
        key = rows_f[block].astype(dtype)
        key <<= 8
        for c in range(3):
            out_f[block, c] = flat[c].take(key | src_f[block, c])
    return out


@lru_cache(maxsize=64)
def _segmentation_table(table: ColorTable, a: int, background: RGB | None) -> Blend:
    # A labelled pixel is (src * (255 - a) + colour * a + 127) // 255; slot 0 keeps src
    # (weight 255, term 127) unless a background colour paints unlabelled pixels too.
    weight = np.full(len(table.colors), 255 - a, dtype=np.int64)
    term = table.colors.astype(np.int64) * a + 127
    if background is None:
        weight[0] = 255
        term[0] = 127
    else:
        term[0] = np.array(background, dtype=np.int64) * a + 127
    return _blend_table(weight, term)


def _check_pair(src: np.ndarray, shape: tuple[int, ...], alpha: np.ndarray | None = None) -> None:
    if src.dtype != np.uint8 or src.ndim != 3 or src.shape[2] != 3:
        raise FrameError(f"the source must be a uint8 (H, W, 3) array, got {src.dtype} {src.shape}")
    if alpha is not None and alpha.dtype != np.uint8:
        raise FrameError(f"alpha must be a uint8 (H, W) array, got {alpha.dtype}")
    if src.shape[:2] != tuple(shape):
        raise MaskError(f"mask shape {tuple(shape)} does not match source shape {src.shape[:2]}")


def blend_segmentation(src: np.ndarray, pixels: MaskPixels, table: ColorTable, opacity: float = 0.5,
                       background: ColorLike | None = None) -> np.ndarray:
    """Blend label colours over ``src`` (uint8 H x W x 3) with the exact integer rule of spec section 6.

    Pixels whose value has no label keep ``src``, or, given ``background``, are blended with that
    colour like a label colour.
    """
    _check_pair(src, pixels.shape)
    return _segmentation(_kernels(), src, pixels, table, opacity_to_alpha(opacity), _color(background))


def _segmentation(kernels: ModuleType | None, src: np.ndarray, mask: MaskValues, table: ColorTable, a: int,
                  background: RGB | None) -> np.ndarray:
    blend = _segmentation_table(table, a, background)
    if kernels is None:
        assert isinstance(mask, MaskPixels)
        rows, per_index = _rows(mask, table.values, table.slots, 0)
        return _apply_lut(rows, src, blend.lut if per_index is None else blend.lut[:, per_index])
    out = np.empty((*src.shape[:2], 3), dtype=np.uint8)
    if isinstance(mask, MaskPixels) and mask.index is not None:
        index, per_index = _rows(mask, table.values, table.slots, 0)
        kernels.blend_index(src, index, per_index.astype(np.uint32), blend.lut, blend.lanes, out)
    else:
        kernels.blend_rgb(src, _rgb_bytes(mask), table.values.keys, table.slots.astype(np.uint32), 0, blend.lut,
                          blend.lanes, out)
    return out


def segmentation_layer(pixels: MaskPixels, table: ColorTable, opacity: float = 0.5,
                       background: ColorLike | None = None) -> np.ndarray:
    """The colour layer alone, as RGBA (H x W x 4): ``(colour, a)`` on labelled pixels.

    Unlabelled pixels are ``(0, 0, 0, 0)``, or ``(background, a)`` when a background is given, so
    compositing the layer over the source at its alpha reproduces ``blend_segmentation`` (up to the
    compositor's rounding).
    """
    return _layer(_kernels(), pixels, table, opacity_to_alpha(opacity), _color(background))


def _layer(kernels: ModuleType | None, mask: MaskValues, table: ColorTable, a: int,
           background: RGB | None) -> np.ndarray:
    rgba = np.zeros((len(table.colors), 4), dtype=np.uint8)
    rgba[1:, :3] = table.colors[1:]
    rgba[1:, 3] = a
    if background is not None:
        rgba[0] = (*background, a)
    packed = rgba.view(np.uint32).ravel()  # one uint32 per RGBA row, so a pixel is one gather
    if kernels is None:
        assert isinstance(mask, MaskPixels)
        rows, per_index = _rows(mask, table.values, table.slots, 0)
        layer = _gather(packed if per_index is None else packed[per_index], rows)
    elif isinstance(mask, MaskPixels) and mask.index is not None:
        index, per_index = _rows(mask, table.values, table.slots, 0)
        layer = np.empty(index.shape, dtype=np.uint32)
        kernels.layer_index(index, packed[per_index], layer)
    else:
        rgb = _rgb_bytes(mask)
        layer = np.empty(rgb.shape[:2], dtype=np.uint32)
        kernels.layer_rgb(rgb, table.values.keys, table.slots.astype(np.uint32), 0, packed, layer)
    return layer.view(np.uint8).reshape(*layer.shape, 4)


# ----------------------------------------------------------------------------- alpha

def alpha_rgba(src: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """``(src_r, src_g, src_b, alpha)``: the source cut out by the mask."""
    _check_pair(src, alpha.shape, alpha)
    return _alpha_rgba(_kernels(), src, alpha)


def _alpha_rgba(kernels: ModuleType | None, src: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    out = np.empty((*alpha.shape, 4), dtype=np.uint8)
    if kernels is not None:
        kernels.rgba(src, alpha, out)
        return out
    for c in range(3):  # one long strided copy per channel: about 3x faster than copying 3-byte pixels
        out[..., c] = src[..., c]
    out[..., 3] = alpha
    return out


def _alpha_blend(kernels: ModuleType | None, src: np.ndarray, alpha: np.ndarray, blend: Blend) -> np.ndarray:
    if kernels is None:
        return _apply_lut(alpha, src, blend.lut)
    out = np.empty((*alpha.shape, 3), dtype=np.uint8)
    kernels.blend_index(src, alpha, LEVELS, blend.lut, blend.lanes, out)
    return out


@lru_cache(maxsize=64)
def _alpha_table(color: RGB, tint_alpha: int | None) -> Blend:
    level = np.arange(256, dtype=np.int64)
    rgb = np.array(color, dtype=np.int64)
    if tint_alpha is None:
        # over a background: (src * alpha + bg * (255 - alpha) + 127) // 255
        return _blend_table(level, (255 - level)[:, None] * rgb + 127)
    # tint: the transparent share (255 - alpha) is painted with the tint at opacity a
    share = ((255 - level) * tint_alpha + 127) // 255
    return _blend_table(255 - share, share[:, None] * rgb + 127)


def alpha_over(src: np.ndarray, alpha: np.ndarray, background: ColorLike) -> np.ndarray:
    """The source composited over a background colour: ``(src * alpha + bg * (255 - alpha) + 127) // 255``."""
    _check_pair(src, alpha.shape, alpha)
    return _alpha_blend(_kernels(), src, alpha, _alpha_table(parse_color(background), None))


def alpha_tint(src: np.ndarray, alpha: np.ndarray, tint: ColorLike, opacity: float = 0.5) -> np.ndarray:
    """Colour the transparent part of the source, the way ClearML's frame viewer shows alpha masks.

    With ``a = floor(opacity * 255 + 0.5)`` and ``t = ((255 - alpha) * a + 127) // 255`` a pixel is
    ``(src * (255 - t) + tint * t + 127) // 255``: opaque pixels keep the source, fully transparent
    ones get the tint at ``opacity``. ``opacity=1`` equals ``alpha_over`` with ``background=tint``;
    ``tint=(0, 0, 0), opacity=1`` is the viewer's blacked-out background.
    """
    _check_pair(src, alpha.shape, alpha)
    return _alpha_blend(_kernels(), src, alpha, _alpha_table(parse_color(tint), opacity_to_alpha(opacity)))


# ----------------------------------------------------------------------------- class index maps

@dataclass(frozen=True, eq=False)
class ClassTable:
    """Class id of each sorted value of a version under one label enumeration."""

    values: ValueTable
    classes: np.ndarray
    ignore: int


def class_table(mask_labels: Iterable[Mapping[str, Any]] | Mapping[Any, Any], enumeration: Mapping[str, int],
                ignore: int = 255) -> ClassTable:
    """A value's class is the id of the first of its labels that the enumeration names, else ``ignore``.

    The dtype is uint8 when every id fits, else uint16 (or uint32).

    >>> t = class_table({(7, 7, 7): ["road"], (26, 26, 26): ["car"]}, {"road": 0, "car": 1})
    >>> t.classes.tolist(), t.classes.dtype.name
    ([0, 1], 'uint8')
    """
    if not isinstance(enumeration, Mapping) or not enumeration:
        raise FrameError(f'mode="index" needs a label enumeration such as {{"road": 0, "car": 1}}, '
                         f"got {enumeration!r}")
    for label, class_id in [*enumeration.items(), ("ignore", ignore)]:
        if isinstance(class_id, bool) or not isinstance(class_id, int) or not 0 <= class_id < 2**32:
            raise FrameError(f"class id of {label!r} must be an integer from 0 to 2**32 - 1, got {class_id!r}")
    return _class_table(_labels_key(mask_labels), tuple(enumeration.items()), ignore)


@lru_cache(maxsize=64)
def _class_table(key: LabelsKey, enumeration: tuple[tuple[str, int], ...], ignore: int) -> ClassTable:
    values, labels = _sorted_labels(key)
    ids = dict(enumeration)
    dtype = np.promote_types(np.uint8, np.min_scalar_type(max([ignore, *ids.values()])))
    classes = np.array([next((ids[n] for n in names if n in ids), ignore) for names in labels], dtype=dtype)
    return ClassTable(values, classes, ignore)


def class_map(pixels: MaskPixels, table: ClassTable) -> np.ndarray:
    """The mask as an (H, W) map of class ids, like a DataView's label enumeration."""
    rows, per_index = _rows(pixels, table.values, table.classes, table.ignore)
    return rows if per_index is None else _gather(per_index, rows)


# ----------------------------------------------------------------------------- frames

def source_rgb(image: Image.Image) -> np.ndarray:
    """A source image as uint8 RGB: grey JPEGs, palettes, RGBA (alpha dropped) and 16-bit or float
    images (``eight_bit``) all end up alike."""
    return np.asarray(image if image.mode == "RGB" else eight_bit(image).convert("RGB"))


def _source(image: Image.Image, kernels: ModuleType | None) -> np.ndarray:
    """``source_rgb``; with the kernels an RGB-family source as Pillow's own (H, W, 4) pixels, whose
    first three channels are what ``source_rgb`` gives (alpha and padding are never read)."""
    return _pillow_pixels(image, kernels) if kernels is not None and image.mode in RGB_MODES else source_rgb(image)


def _mask_values(image: Image.Image, uri: str, kernels: ModuleType | None) -> MaskValues:
    """``mask_pixels``; with the kernels an RGB-family mask as its own pixels (``MaskValues``), and
    L and P masks' indices read in place."""
    if kernels is not None and image.mode in RGB_MODES:
        return _pillow_pixels(image, kernels)
    pixels = kernels.image_pixels(image) if kernels is not None and image.mode in ("L", "P") else None
    if pixels is None:
        return mask_pixels(image, uri)
    return MaskPixels(pixels[..., 0], GREY_TABLE if image.mode == "L" else palette_table(image), None)


def _alpha(image: Image.Image, uri: str, kernels: ModuleType | None) -> np.ndarray:
    """``mask_alpha``; with the kernels an L mask read in place."""
    pixels = kernels.image_pixels(image) if kernels is not None and image.mode == "L" else None
    return mask_alpha(image, uri) if pixels is None else pixels[..., 0]


def pick_mask(frame: Frame, source_id: str | None = None, mask_id: str | None = None) -> tuple[Source, Mask]:
    """The named source (default: the first one with a mask) and its named (default: first) mask."""
    sources = frame.sources
    if source_id is not None:
        sources = [s for s in sources if s.id == source_id]
        if not sources:
            raise FrameError(f"frame {frame.id!r} has no source {source_id!r}; it has "
                             f"{[s.id for s in frame.sources]}")
    for source in sources:
        for mask in source.masks:
            if mask_id is None or mask.id == mask_id:
                return source, mask
    which = f"mask {mask_id!r}" if mask_id is not None else "mask"
    where = f" in source {source_id!r}" if source_id is not None else ""
    have = ", ".join(f"{m.id!r} (source {s.id!r})" for s in sources for m in s.masks)
    raise MaskError(f"frame {frame.id!r} has no {which}{where} to render; "
                    + (f"its masks: {have}" if have else "it has no masks"))


def _fit(mask: Image.Image, size: tuple[int, int], resize: str | None, frame: Frame, uri: str) -> Image.Image:
    if mask.size == size:
        return mask
    if resize == "nearest":
        return mask.resize(size, Image.Resampling.NEAREST)
    raise MaskError(f"frame {frame.id!r}: mask {uri} is {mask.width}x{mask.height} but its source is "
                    f"{size[0]}x{size[1]}; pass resize=\"nearest\" to scale the mask to the source")


def check_options(mode: str = "segmentation", opacity: float = 0.5, colors: Mapping[str, ColorLike] | None = None,
                  background: ColorLike | None = None, layer_only: bool = False, resize: str | None = None,
                  enumeration: Mapping[str, int] | None = None, ignore: int = 255, tint: ColorLike | None = None
                  ) -> None:
    """Raise ``FrameError`` for options ``render`` refuses, before anything is decoded: export checks
    them once, so a bad option fails the call instead of every frame."""
    if mode not in MODES:
        raise FrameError(f"unknown render mode {mode!r}; use one of {', '.join(MODES)}")
    if resize not in (None, "nearest"):
        raise FrameError(f'resize must be None or "nearest", got {resize!r}')
    if layer_only and mode != "segmentation":
        raise FrameError('layer_only applies to mode="segmentation" only')
    if tint is not None and (mode != "alpha" or background is not None):
        raise FrameError('tint applies to mode="alpha" without a background')
    if enumeration is not None and mode != "index":
        raise FrameError('an enumeration applies to mode="index" only')
    opacity_to_alpha(opacity)
    _parse_colors(colors)
    _color(background)
    _color(tint)
    if mode == "index":
        class_table([], enumeration or {}, ignore)


def render(frame: Frame, version: RenderVersion, mode: str = "segmentation", opacity: float = 0.5,
           source_id: str | None = None, mask_id: str | None = None, colors: Mapping[str, ColorLike] | None = None,
           background: ColorLike | None = None, layer_only: bool = False, resize: str | None = None,
           enumeration: Mapping[str, int] | None = None, ignore: int = 255, tint: ColorLike | None = None
           ) -> np.ndarray:
    """Render one mask of a frame (spec sections 3 and 6).

    - ``"segmentation"``: label colours blended over the source -> uint8 (H, W, 3); with
      ``layer_only`` the colour layer alone -> (H, W, 4), see ``segmentation_layer``. ``background``
      colours pixels whose value has no label.
    - ``"alpha"``: the mask is opacity -> RGBA (H, W, 4); composited over ``background`` -> (H, W, 3);
      ``tint`` colours the transparent part instead, see ``alpha_tint``.
    - ``"index"``: class ids under ``enumeration`` -> (H, W) uint8 (wider when ids exceed 255).

    The source defaults to the first one with a mask, the mask to its first. A mask whose size differs
    from its source's is an error unless ``resize="nearest"``.
    """
    check_options(mode, opacity, colors, background, layer_only, resize, enumeration, ignore, tint)
    bg, tint_rgb = _color(background), _color(tint)
    source, mask = pick_mask(frame, source_id, mask_id)
    mask_image = version.open_image(mask.uri, "mask", mask.timestamp or 0, mask.content_type)
    src_image = None
    if not (mode == "index" or layer_only) or source.width is None or source.height is None:
        src_image = version.open_image(source.uri, "image", source.timestamp or 0, source.content_type)
    size = src_image.size if src_image is not None else (source.width, source.height)
    mask_image = _fit(mask_image, size, resize, frame, mask.uri)  # type: ignore[arg-type]

    kernels = _kernels()
    if mode == "alpha":
        assert src_image is not None
        src, alpha = _source(src_image, kernels), _alpha(mask_image, mask.uri, kernels)
        if bg is not None:
            return _alpha_blend(kernels, src, alpha, _alpha_table(bg, None))
        if tint_rgb is not None:
            return _alpha_blend(kernels, src, alpha, _alpha_table(tint_rgb, opacity_to_alpha(opacity)))
        return _alpha_rgba(kernels, src, alpha)
    mask_labels = version.mask_labels
    tolerance = getattr(version, "mask_tolerance", 0)
    # An RGB mask read in place is not MaskPixels: index maps and lossy masks take mask_pixels.
    values: MaskValues = (_mask_values(mask_image, mask.uri, kernels) if mode == "segmentation" and not tolerance
                          else mask_pixels(mask_image, mask.uri))
    if tolerance:  # lossy masks: values near a labelled one take its labels (spec section 10)
        assert isinstance(values, MaskPixels)
        mask_labels = within_tolerance(mask_labels, values.distinct(), tolerance)
    tables: ColorTable | ClassTable = (class_table(mask_labels, enumeration or {}, ignore) if mode == "index"
                                       else color_table(mask_labels, version.get_label_colors(), colors))
    if isinstance(tables, ClassTable):
        assert isinstance(values, MaskPixels)
        return class_map(values, tables)
    assert isinstance(tables, ColorTable)
    if layer_only:
        return _layer(kernels, values, tables, opacity_to_alpha(opacity), bg)
    assert src_image is not None
    return _segmentation(kernels, _source(src_image, kernels), values, tables, opacity_to_alpha(opacity), bg)


class _RenderModule(ModuleType):
    """This module, callable: ``import maskstore.render`` gives the module (its array functions, for
    export and benchmarks), while ``maskstore.render(frame, version, ...)`` of spec section 6 still
    renders."""

    def __call__(self, frame: Frame, version: RenderVersion, *args: Any, **options: Any) -> np.ndarray:
        return render(frame, version, *args, **options)


sys.modules[__name__].__class__ = _RenderModule
