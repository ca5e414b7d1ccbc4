"""Cityscapes: ``leftImg8bit/<split>/<city>/<stem>_leftImg8bit.png`` with its ``gtFine`` mask.

One frame per image that has the chosen ground-truth file: id = ``<stem>`` (e.g.
``frankfurt_000000_000294``, unique across Cityscapes), ``context_id`` = city, ``meta`` =
``{"city", "split"}``, one source ``"0"`` with one mask ``"00"``. Images without the mask and masks
without the image go to ``skipped``; other ``gtFine`` files (colour, polygons, other kinds) are not
part of the request and are not reported.

Kinds (``kind=``), with the labels of ``cityscapes_labels(kind)`` (official table, packaged as
``maskstore/tables/cityscapes.json``):

- ``labelIds``: the mask is ``<stem>_gtFine_labelIds.png``; value ``(id, id, id)`` -> ``[name]`` for
  every id >= 0, 0 "unlabeled" included (license plate, id -1, never appears in a mask).
- ``labelTrainIds``: the mask is ``<stem>_gtFine_labelTrainIds.png``; ``(t, t, t)`` -> ``[name]`` for
  the 19 train ids, and 255 -> ``["ignore"]`` (the one train id several labels share).
- ``instanceIds``: ``<stem>_gtFine_instanceIds.png`` holds ``id * 1000 + k`` for the instances of
  person, car, ...: 16-bit values with no RGB value, which ingest refuses (spec section 1). So the
  semantic mask of the frame is the ``labelIds`` file (it equals ``value // 1000`` of the instance
  file at every pixel) labelled as for ``labelIds``, and the instance file's absolute path is kept on
  that mask as ``"instance_uri"``: it round-trips in the frame dict and a training loader can open it,
  while queries and statistics see only what has a colour. A frame needs both files here.

Colours are the official ones; ``ignore`` is black like the other void labels.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import FrameError
from ..labels import packaged_table

KINDS = ("labelIds", "labelTrainIds", "instanceIds")
IMAGE_SUFFIX = "_leftImg8bit"
IGNORE_TRAIN_ID = 255
IGNORE_NAME = "ignore"
IGNORE_COLOR = [0, 0, 0]


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise FrameError(f"unknown Cityscapes mask kind {kind!r}; use one of {', '.join(KINDS)}")


def cityscapes_table() -> list[dict[str, Any]]:
    """The official label table: ``[{"id", "name", "trainId", "category", ..., "color"}, ...]``."""
    return packaged_table("cityscapes")


def cityscapes_labels(kind: str = "labelIds") -> tuple[list[dict[str, Any]], dict[str, list[int]]]:
    """``(mask_labels, label_colors)`` for masks of this kind (see the module docstring).

    >>> labels, colors = cityscapes_labels()
    >>> labels[26], colors["car"]
    ({'value': [26, 26, 26], 'labels': ['car']}, [0, 0, 142])
    >>> cityscapes_labels("labelTrainIds")[0][-1]
    {'value': [255, 255, 255], 'labels': ['ignore']}
    """
    _check_kind(kind)
    table = cityscapes_table()
    if kind != "labelTrainIds":
        entries = [e for e in table if e["id"] >= 0]
        return ([{"value": [e["id"]] * 3, "labels": [e["name"]]} for e in entries],
                {e["name"]: list(e["color"]) for e in entries})
    by_train: dict[int, list[dict[str, Any]]] = {}
    for e in table:
        if e["trainId"] >= 0:
            by_train.setdefault(e["trainId"], []).append(e)
    labels, colors = [], {}
    for train_id in sorted(by_train):
        group = by_train[train_id]
        if train_id == IGNORE_TRAIN_ID:
            labels.append({"value": [train_id] * 3, "labels": [IGNORE_NAME]})
            colors[IGNORE_NAME] = list(IGNORE_COLOR)
        else:
            # One label per train id in the official table; were there several, all their names apply.
            labels.append({"value": [train_id] * 3, "labels": [e["name"] for e in group]})
            colors.update({e["name"]: list(e["color"]) for e in group})
    return labels, colors


def _split_dir(root: Path, top: str, split: str) -> Path:
    folder = root / top / split
    if not folder.is_dir():
        have = sorted(p.name for p in (root / top).iterdir() if p.is_dir()) if (root / top).is_dir() else []
        hint = f"it has splits: {', '.join(have)}" if have else f"there is no {top}/ folder; is {root} a Cityscapes root?"
        raise FrameError(f"no {top}/{split} under {root}; {hint}")
    return folder


def _files(folder: Path, suffix: str) -> dict[tuple[str, str], Path]:
    """``(city, stem)`` -> file for ``<city>/<stem><suffix>.png`` under a split folder."""
    out = {}
    for path in sorted(folder.glob(f"*/*{suffix}.png")):
        if path.is_file() and len(path.stem) > len(suffix):
            out[(path.parent.name, path.stem[: -len(suffix)])] = path
    return out


def frames_from_cityscapes(root: str | Path, split: str = "val", kind: str = "labelIds",
                           skipped: list[tuple[str, str]] | None = None) -> Iterator[dict[str, Any]]:
    """Frame dicts of one split of a Cityscapes tree (layout checked and files listed on call).

    >>> labels, colors = cityscapes_labels("labelIds")                     # doctest: +SKIP
    >>> v.set_masks_labels(labels); v.set_label_colors(colors)              # doctest: +SKIP
    >>> ingest(v, frames_from_cityscapes("cityscapes/", "val"))            # doctest: +SKIP
    """
    _check_kind(kind)
    root = Path(root).resolve()
    images = _files(_split_dir(root, "leftImg8bit", split), IMAGE_SUFFIX)
    gt_dir = _split_dir(root, "gtFine", split)
    semantic_kind = "labelIds" if kind == "instanceIds" else kind
    masks = _files(gt_dir, f"_gtFine_{semantic_kind}")
    instances = _files(gt_dir, "_gtFine_instanceIds") if kind == "instanceIds" else {}
    unused: list[tuple[Path, str]] = []
    unused += [(p, f"no gtFine {semantic_kind} mask for this image") for k, p in images.items() if k not in masks]
    unused += [(p, "no leftImg8bit image for this mask") for k, p in masks.items() if k not in images]
    if kind == "instanceIds":
        unused += [(p, "no gtFine instanceIds file for this image") for k, p in images.items()
                   if k in masks and k not in instances]
        unused += [(p, "no leftImg8bit image, or no labelIds mask (the semantic mask), for this instance file")
                   for k, p in instances.items() if not (k in images and k in masks)]
    pairs = []
    seen: dict[str, str] = {}
    for key, image in images.items():
        if key not in masks or (kind == "instanceIds" and key not in instances):
            continue
        city, stem = key
        if stem in seen:  # ids must be unique; Cityscapes stems start with the city, so this is a broken tree
            unused.append((image, f"frame id {stem!r} is taken by the image in {seen[stem]}/"))
            continue
        seen[stem] = city
        pairs.append((city, stem, image, masks[key], instances.get(key)))
    if skipped is not None:
        skipped += [(str(p), reason) for p, reason in unused]
    return (_frame(split, *pair) for pair in pairs)


def _frame(split: str, city: str, stem: str, image: Path, mask: Path, instance: Path | None) -> dict[str, Any]:
    mask_dict: dict[str, Any] = {"id": "00", "uri": str(mask)}
    if instance is not None:
        mask_dict["instance_uri"] = str(instance)
    return {"id": stem, "context_id": city, "meta": {"city": city, "split": split},
            "sources": [{"id": "0", "uri": str(image), "masks": [mask_dict]}]}
