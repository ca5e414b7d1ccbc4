"""Frames from an image folder and a mask folder, paired by relative path without extension.

Name suffixes cover the layouts where a mask is not named exactly like its image:

=========================  =======================================  ============================
layout                     files                                    call
=========================  =======================================  ============================
two folders, same names    ``img/a.jpg`` + ``masks/a.png``          ``pair_folders("img", "masks")``
matte beside the photo     ``lemur.png`` + ``lemur_alpha.png``      ``mask_suffix="_alpha"``
cut-out beside the photo   ``car-1.jpg`` + ``car-1.out.png``        ``mask_suffix=".out"``
target beside the photo    ``1_image.png`` + ``1_target.png``       ``image_suffix="_image", mask_suffix="_target"``
=========================  =======================================  ============================

Images and masks may be the same folder when the suffixes tell them apart. Masks are whatever the
files hold: index masks, palette masks, RGB colour-coded masks (give the version a label table whose
values are the colours), alpha mattes and RGBA cut-outs (no labels needed; render with
``mode="alpha"``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import FrameError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif"})


def _stems(root: Path, unused: list[tuple[Path, str]], skip_under: Path | None = None) -> dict[str, Path]:
    """Image files under ``root`` by relative path without extension; of two files with one name
    (``a.jpg`` and ``a.png``) the first in sorted order is used and the other goes to ``unused``."""
    if not root.is_dir():
        raise FrameError(f"{root} is not a folder")
    out: dict[str, Path] = {}
    for path in sorted(root.rglob("*")):
        if skip_under is not None and path.is_relative_to(skip_under):
            continue
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            stem = path.relative_to(root).with_suffix("").as_posix()
            if stem in out:
                unused.append((path, f"same name as {out[stem].name}, which is used instead"))
            else:
                out[stem] = path
    return out


def _strip(stem: str, suffix: str) -> str | None:
    """The name without ``suffix``, or None when it does not end with it (or is nothing but it)."""
    if not suffix:
        return stem
    head = stem[: -len(suffix)]
    return head if stem.endswith(suffix) and head and not head.endswith("/") else None


def _by_suffix(files: dict[str, Path], suffix: str, what: str,
               unused: list[tuple[Path, str]]) -> dict[str, Path]:
    """Files keyed by their name without ``suffix``; the others go to ``unused``."""
    keyed: dict[str, Path] = {}
    for stem, path in files.items():
        key = _strip(stem, suffix)
        if key is None:
            unused.append((path, f"name does not end with the {what} suffix {suffix!r}"))
        else:
            keyed[key] = path
    return keyed


def pair_folders(images: str | Path, masks: str | Path, skipped: list[tuple[str, str]] | None = None, *,
                 image_suffix: str = "", mask_suffix: str = "") -> Iterator[dict[str, Any]]:
    """One frame per image whose name has a mask; unpaired files go to ``skipped`` with the reason.

    The folders are listed when this is called (so ``skipped`` is complete and a bad layout fails at
    once); the frame dicts are made as they are iterated.

    A file pairs by its path under its folder without the extension and without ``image_suffix`` /
    ``mask_suffix``. The frame id is that shared name, so re-running updates the same frames; the
    context id is its sub-folder (or the name itself at the top level).

    >>> frames = pair_folders("photos", "photos", mask_suffix="_alpha")   # doctest: +SKIP
    """
    images_root, masks_root = Path(images).resolve(), Path(masks).resolve()
    unused: list[tuple[Path, str]] = []
    if images_root == masks_root:
        if not (image_suffix or mask_suffix) or image_suffix == mask_suffix:
            raise FrameError(f"images and masks are the same folder ({images_root}), so a suffix must tell them "
                             "apart: e.g. mask_suffix=\"_alpha\" for lemur.png + lemur_alpha.png")
        files = _stems(images_root, unused)
        # A file is a mask when it ends with the mask suffix, else an image when it ends with the image
        # suffix; with one suffix only, everything else is the other kind.
        mask_stems: dict[str, Path] = {}
        image_stems: dict[str, Path] = {}
        for stem, path in files.items():
            mask_key = _strip(stem, mask_suffix) if mask_suffix else None
            image_key = _strip(stem, image_suffix) if image_suffix else None
            if mask_key is not None:
                mask_stems[mask_key] = path
            elif image_key is not None:
                image_stems[image_key] = path
            elif not mask_suffix:
                mask_stems[stem] = path
            elif not image_suffix:
                image_stems[stem] = path
            else:
                unused.append((path, f"name ends with neither {image_suffix!r} nor {mask_suffix!r}"))
    else:
        # A mask folder inside the image folder (photos/ + photos/masks/) is not part of the images.
        nested = masks_root if masks_root.is_relative_to(images_root) else None
        image_stems = _by_suffix(_stems(images_root, unused, skip_under=nested), image_suffix, "image", unused)
        mask_stems = _by_suffix(_stems(masks_root, unused), mask_suffix, "mask", unused)
    unused += [(p, "no mask with this name") for s, p in image_stems.items() if s not in mask_stems]
    unused += [(p, "no image with this name") for s, p in mask_stems.items() if s not in image_stems]
    if skipped is not None:
        skipped += [(str(p), reason) for p, reason in unused]
    pairs = [(stem, image, mask_stems[stem]) for stem, image in image_stems.items() if stem in mask_stems]
    return (_frame(stem, image, mask) for stem, image, mask in pairs)


def _frame(stem: str, image: Path, mask: Path) -> dict[str, Any]:
    return {"id": stem, "context_id": Path(stem).parent.as_posix() if "/" in stem else stem,
            "sources": [{"id": "0", "uri": str(image), "masks": [{"id": "00", "uri": str(mask)}]}]}
