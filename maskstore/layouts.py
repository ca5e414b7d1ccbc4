"""Dataset layouts an export writes (spec section 8): ``voc``, ``cityscapes`` and ``folders``.

Each layout is what its importer (``maskstore/ingest``) reads, so ingesting the exported folder with
that importer gives the same frame ids, labels and mask statistics:

============  ===========================================================  ==============================
layout        files                                                        ingest again with
============  ===========================================================  ==============================
voc           ``JPEGImages/<id>.jpg``, ``SegmentationClass/<id>.png``       ``--voc OUT [--split S]``
              (palette PNG, VOC colormap); with a split also
              ``ImageSets/Segmentation/<split>.txt``
cityscapes    ``leftImg8bit/<split>/<city>/<id>_leftImg8bit.png``,          ``--cityscapes OUT --split S
              ``gtFine/<split>/<city>/<id>_gtFine_<kind>.png`` (8-bit ids)  [--kind K]``
folders       ``images/<id>.<ext>``, ``masks/<id>.<ext>``                    ``--images OUT/images --masks
                                                                           OUT/masks --labels OUT/labels.json``
============  ===========================================================  ==============================

Every layout also writes ``labels.json``, its label table in the ``--labels`` file form
``[{"value", "labels", "color"}]``. VOC and Cityscapes have fixed tables, so a version goes there only
when its ``mask_labels`` are that table, in any order (as after ingesting such a dataset); otherwise
``plan_layout`` refuses, naming the values that differ. A mask pixel whose value the layout's mask
format cannot hold (a colour outside the VOC colormap; a non-grey value for Cityscapes) is an error
for that frame. Folders copy the image and mask files as they are (PNG and JPEG; other formats are
written as PNG: masks with their pixels unchanged, images as the RGB that rendering sees), so any
label table and any mask kind round-trips.

A VOC object mask and a Cityscapes instance-id file that the importer kept on the mask
(``object_uri``, ``instance_uri``) are copied to ``SegmentationObject/<id>.png`` and
``gtFine/.../<id>_gtFine_instanceIds.png``, where the importers find them again.

VOC images are JPEG: a source in another format is re-encoded (lossy; masks never are). A Cityscapes
frame's city folder is its ``meta.city``, else its context id, when that is a plain name (else
``unknown``). Ids become file names unchanged (another name would give another id on the way back),
so an id that is not a safe file name (``/`` is allowed for folders only, as sub-folders) is an
error for that frame.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Mapping, Union

import numpy as np
from PIL import Image

from .errors import FrameError, MaskError
from .ingest import builtin_label_table, with_colors
from .ingest.cityscapes import IMAGE_SUFFIX
from .labels import mask_labels_dict
from .media import GREY_TABLE, mask_pixels
from .render import ClassTable, ValueTable, class_map, source_rgb

LAYOUTS = ("voc", "cityscapes", "folders")
LABEL_TABLE = "labels.json"
SPLIT_FOLDER = ("ImageSets", "Segmentation")
CITYSCAPES_KINDS = ("labelIds", "labelTrainIds")  # the kinds whose mask is the semantic one
UNKNOWN_CITY = "unknown"  # the city folder of a frame whose meta.city and context id are no plain names
_PLAIN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_NO_VALUE = 256  # a class_map id no 8-bit mask index can take: "this value has no index here"


@dataclass(frozen=True)
class Layout:
    """A layout chosen for one version: its name, mask kind (Cityscapes), split and label table."""

    name: str
    split: str | None
    kind: str | None
    table: tuple[tuple[tuple[int, ...], tuple[str, ...], tuple[int, ...] | None], ...]

    def table_file(self) -> list[dict[str, Any]]:
        """``labels.json``: the ``--labels`` file form."""
        return [{"value": list(v), "labels": list(n), **({"color": list(c)} if c is not None else {})}
                for v, n, c in self.table]


def _frozen(table: list[dict[str, Any]]) -> tuple:
    return tuple((tuple(e["value"]), tuple(e["labels"]), tuple(e["color"]) if e.get("color") else None)
                 for e in table)


def _mismatches(mask_labels: list[dict[str, Any]], table: list[dict[str, Any]]) -> list[str]:
    """Where the version's labels and the fixed table differ, in words: the importer gives the folder
    that table, so any difference would come back changed."""
    fixed, have = mask_labels_dict(table), mask_labels_dict(mask_labels)
    out = []
    for value, labels in have.items():
        there = fixed.get(value)
        if there != labels:
            where = f"{', '.join(map(repr, there))} there" if there else "not in its table"
            out.append(f"{value} {', '.join(map(repr, labels)) or 'no label'} ({where})")
    out += [f"{value} {', '.join(map(repr, labels))} (unlabelled in the version)"
            for value, labels in fixed.items() if value not in have]
    return out


def plan_layout(name: str, split: str | None, mask_labels: list[dict[str, Any]],
                label_colors: Mapping[str, Any], where: str) -> Layout:
    """The layout for a version with these labels; a ``FrameError`` when its labels cannot be
    expressed there, naming the values (``where`` names the version)."""
    if name not in LAYOUTS:
        raise FrameError(f"unknown layout {name!r}; use one of {', '.join(LAYOUTS)}")
    if name == "folders":
        if split is not None:
            raise FrameError("a split applies to the voc and cityscapes layouts only")
        return Layout(name, None, None, _frozen(with_colors(mask_labels, label_colors)))
    if split is not None and not _PLAIN.match(split):
        raise FrameError(f"split {split!r} is no plain name (letters, digits, _ . -): it names a folder or file")
    candidates = [("voc", None)] if name == "voc" else [("cityscapes-" + k, k) for k in CITYSCAPES_KINDS]
    problems = []
    for table_name, kind in candidates:
        table = builtin_label_table(table_name)
        problems.append(_mismatches(mask_labels, table))
        if not problems[-1]:
            return Layout(name, split if name == "voc" else split or "val", kind, _frozen(table))
    bad = min(problems, key=len)
    fixed = "VOC's fixed palette table" if name == "voc" else "the official Cityscapes labelIds or labelTrainIds table"
    shown = "; ".join(bad[:8]) + (f"; and {len(bad) - 8} more" if len(bad) > 8 else "")
    raise FrameError(f"the {name} layout cannot express the mask labels of {where}: "
                     f"{'1 value differs' if len(bad) == 1 else f'{len(bad)} values differ'} from {fixed}: "
                     f"{shown}; export with --layout folders, "
                     "which keeps any label table")


# ----------------------------------------------------------------------------- files of a frame

Content = Union[bytes, Image.Image]


@dataclass(frozen=True)
class LayoutFile:
    """One file of a frame in a layout: its folders under the export root, name, format and what it
    holds (``image``, ``mask``, or a ``companion`` file kept on the mask)."""

    folder: tuple[str, ...]
    name: str
    ext: str
    role: str  # "image" or "mask"
    uri: str


def layout_files(layout: Layout, d: Mapping[str, Any], source: Mapping[str, Any], mask: Mapping[str, Any],
                 image_ext: str, mask_ext: str) -> list[LayoutFile]:
    """Where a frame's image and mask go (``*_ext``: what the folders layout keeps of the originals).
    The names are the id as it is: the export refuses one that is not a safe file name."""
    fid = d["id"]
    if layout.name == "voc":
        return [LayoutFile(("JPEGImages",), f"{fid}.jpg", "jpg", "image", source["uri"]),
                LayoutFile(("SegmentationClass",), f"{fid}.png", "png", "mask", mask["uri"]),
                *_companion(mask, "object_uri", ("SegmentationObject",), f"{fid}.png")]
    if layout.name == "cityscapes":
        city = next((c for c in (d.get("meta", {}).get("city"), d["context_id"])
                     if isinstance(c, str) and _PLAIN.match(c)), UNKNOWN_CITY)
        split = layout.split or "val"
        return [LayoutFile(("leftImg8bit", split, city), f"{fid}{IMAGE_SUFFIX}.png", "png", "image", source["uri"]),
                LayoutFile(("gtFine", split, city), f"{fid}_gtFine_{layout.kind}.png", "png", "mask", mask["uri"]),
                *_companion(mask, "instance_uri", ("gtFine", split, city), f"{fid}_gtFine_instanceIds.png")]
    *sub, leaf = fid.split("/")
    return [LayoutFile(("images", *sub), f"{leaf}.{image_ext}", image_ext, "image", source["uri"]),
            LayoutFile(("masks", *sub), f"{leaf}.{mask_ext}", mask_ext, "mask", mask["uri"])]


def _companion(mask: Mapping[str, Any], key: str, folder: tuple[str, ...], name: str) -> list[LayoutFile]:
    """The file an importer keeps on the mask (VOC's object mask, Cityscapes' instance ids), copied
    where that importer finds it again."""
    uri = mask.get(key)
    return [LayoutFile(folder, name, "png", "companion", uri)] if isinstance(uri, str) else []


def kept_format(data: bytes) -> str | None:
    """``png`` or ``jpg`` when the bytes are a file of that format (copied as they are), else None."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpg"
    return None


def file_content(layout: Layout, file: LayoutFile, read_bytes: Callable[[str], bytes],
                 open_image: Callable[[str, str], Image.Image]) -> Content:
    """The bytes to write as they are, or an image to encode as ``file.ext``."""
    if file.role == "image":
        data = read_bytes(file.uri)
        if kept_format(data) == file.ext:
            return data
        return Image.fromarray(source_rgb(open_image(file.uri, "image")))  # as render sees a source
    if layout.name == "folders" or file.role == "companion":
        data = read_bytes(file.uri)
        return data if kept_format(data) == file.ext else open_image(file.uri, "mask")
    image = open_image(file.uri, "mask")
    if layout.name == "voc":
        out = Image.fromarray(_indices(image, file.uri, _voc_keys(), "a VOC colormap colour"))
        out.putpalette(voc_colormap().ravel().tolist())
        return out
    return Image.fromarray(_indices(image, file.uri, GREY_TABLE, "grey (an 8-bit Cityscapes id)"))


@lru_cache(maxsize=1)
def voc_colormap() -> np.ndarray:
    """The 256 colours of VOC's palette (index i spreads its bits over r, g, b from the top bit down):
    1 is (128, 0, 0), 255 is void's (224, 224, 192)."""
    index = np.arange(256)
    cmap = np.zeros((256, 3), dtype=np.uint8)
    for bit in range(8):
        for channel in range(3):
            cmap[:, channel] |= (((index >> (3 * bit + channel)) & 1) << (7 - bit)).astype(np.uint8)
    return cmap


@lru_cache(maxsize=1)
def _voc_keys() -> np.ndarray:
    c = voc_colormap().astype(np.uint32)
    return (c[:, 0] << 16) | (c[:, 1] << 8) | c[:, 2]


def _indices(image: Image.Image, uri: str, keys: np.ndarray, what: str) -> np.ndarray:
    """The mask as 8-bit indices whose colour (``keys[i]``, packed RGB) is the pixel's value; a value
    no index has is a ``MaskError`` naming it."""
    order = np.argsort(keys, kind="stable")
    table = ClassTable(ValueTable(keys[order]), order.astype(np.uint16), _NO_VALUE)
    pixels = mask_pixels(image, uri)
    out = class_map(pixels, table)
    lost = out == _NO_VALUE
    if lost.any():
        values = [tuple(int(k) >> s & 255 for s in (16, 8, 0)) for k in np.unique(pixels.packed()[lost])[:5]]
        raise MaskError(f"mask {uri} holds values that are not {what}: {', '.join(map(str, values))}")
    return out.astype(np.uint8)
