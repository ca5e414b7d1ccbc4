"""Pascal VOC: ``JPEGImages/<id>.jpg`` with ``SegmentationClass/<id>.png`` (and ``SegmentationObject``).

Which ids: those listed in ``ImageSets/Segmentation/<split>.txt`` when a split is given (a listed id
whose image or class mask is missing goes to ``skipped``), else every ``SegmentationClass/*.png``
that has its ``JPEGImages/<id>.jpg``. Without a split, class masks without an image and object masks
without a class mask are reported one by one, and the JPEGs that have no class mask (in VOC most of
them: detection-only images) in one ``skipped`` entry for the folder.

Frames: id = context id = the VOC id (``2011_000003``), ``meta`` = ``{"split": S}`` when a split is
given, one source ``"0"`` (the JPEG) with the class mask as mask ``"00"``.

Labels (``voc_labels()``, table packaged as ``maskstore/tables/voc.json``): a class mask is a palette
image, so its pixel value is the palette colour of the class index (spec section 1); each class colour
maps to ``[class name]`` and (224, 224, 192) to ``["void"]``. The same table labels RGB colour-coded
VOC targets, whose pixels are those colours.

Object masks: ``SegmentationObject/<id>.png`` stores instance indices 1, 2, ... through the same
palette, so instance 1 has the colour of "aeroplane", 2 of "bicycle", 15 of "person". Since a
version's labels apply to every mask, attaching it as a mask would make ``label == "aeroplane"``
select every frame with one object. By default its path is therefore kept on the class mask as
``"object_uri"`` (round-trips, no statistics); ``object_masks=True`` attaches it as a second mask
``"object"`` instead (statistics and ``mask.id == "object"`` queries, at the price of those false
label matches).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import FrameError
from ..labels import packaged_table

VOID_VALUE = 255


def voc_table() -> list[dict[str, Any]]:
    """The class table: ``[{"id", "name", "color"}, ...]``, 21 classes and void (id 255)."""
    return packaged_table("voc")


def voc_labels() -> tuple[list[dict[str, Any]], dict[str, list[int]]]:
    """``(mask_labels, label_colors)``: palette colour -> ``[class]``; colours are the palette colours.

    >>> labels, colors = voc_labels()
    >>> labels[15], labels[-1], colors["void"]
    ({'value': [192, 128, 128], 'labels': ['person']}, {'value': [224, 224, 192], 'labels': ['void']}, [224, 224, 192])
    """
    table = voc_table()
    return ([{"value": list(e["color"]), "labels": [e["name"]]} for e in table],
            {e["name"]: list(e["color"]) for e in table})


def _split_ids(root: Path, split: str) -> list[str]:
    sets = root / "ImageSets" / "Segmentation"
    path = sets / f"{split}.txt"
    if not path.is_file():
        have = sorted(p.stem for p in sets.glob("*.txt")) if sets.is_dir() else []
        hint = f"splits there: {', '.join(have)}" if have else "leave the split out to take every SegmentationClass mask"
        raise FrameError(f"no split list {path}; {hint}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise FrameError(f"cannot read split list {path}: {exc}") from None
    # VOC's detection lists carry a second column (1/-1); the segmentation lists do not, but allow it.
    return list(dict.fromkeys(line.split()[0] for line in text.splitlines() if line.strip()))


def frames_from_voc(root: str | Path, split: str | None = None, skipped: list[tuple[str, str]] | None = None,
                    *, object_masks: bool = False) -> Iterator[dict[str, Any]]:
    """Frame dicts of a VOC tree (``VOC2012/`` or any folder with the same sub-folders).

    >>> v.set_masks_labels(voc_labels()[0]); v.set_label_colors(voc_labels()[1])   # doctest: +SKIP
    >>> ingest(v, frames_from_voc("VOCdevkit/VOC2012", split="val"))              # doctest: +SKIP
    """
    root = Path(root).resolve()
    jpegs, classes, objects = root / "JPEGImages", root / "SegmentationClass", root / "SegmentationObject"
    for folder in (jpegs, classes):
        if not folder.is_dir():
            raise FrameError(f"no {folder.name}/ folder under {root}; is it a VOC root (e.g. VOCdevkit/VOC2012)?")
    unused: list[tuple[Path, str]] = []
    if split is not None:
        ids = _split_ids(root, split)
        listed = f"listed in ImageSets/Segmentation/{split}.txt"
        for fid in ids:
            if not (jpegs / f"{fid}.jpg").is_file():
                unused.append((jpegs / f"{fid}.jpg", f"{listed} but the image is missing"))
            elif not (classes / f"{fid}.png").is_file():
                unused.append((classes / f"{fid}.png", f"{listed} but the class mask is missing"))
        ids = [i for i in ids if (jpegs / f"{i}.jpg").is_file() and (classes / f"{i}.png").is_file()]
    else:
        mask_ids = sorted(p.stem for p in classes.glob("*.png") if p.is_file())
        image_ids = {p.stem for p in jpegs.glob("*.jpg") if p.is_file()}
        ids = [i for i in mask_ids if i in image_ids]
        unused += [(classes / f"{i}.png", "no JPEGImages/<id>.jpg for this class mask")
                   for i in mask_ids if i not in image_ids]
        if objects.is_dir():
            have = set(mask_ids)
            unused += [(p, "no SegmentationClass mask for this object mask")
                       for p in sorted(objects.glob("*.png")) if p.stem not in have]
        without = len(image_ids) - len(ids)
        if without:
            unused.append((jpegs, f"{without} images have no SegmentationClass mask (detection-only images)"))
    if skipped is not None:
        skipped += [(str(p), reason) for p, reason in unused]
    return (_frame(fid, jpegs, classes, objects, split, object_masks) for fid in ids)


def _frame(fid: str, jpegs: Path, classes: Path, objects: Path, split: str | None,
           object_masks: bool) -> dict[str, Any]:
    mask: dict[str, Any] = {"id": "00", "uri": str(classes / f"{fid}.png")}
    masks = [mask]
    obj = objects / f"{fid}.png"
    if obj.is_file():
        if object_masks:
            masks.append({"id": "object", "uri": str(obj)})
        else:
            mask["object_uri"] = str(obj)
    return {"id": fid, "context_id": fid, "meta": {"split": split} if split is not None else {},
            "sources": [{"id": "0", "uri": str(jpegs / f"{fid}.jpg"), "masks": masks}]}
