"""Frames from an image folder and a mask folder, paired by relative path without extension."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import FrameError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif"})


def _stems(root: Path) -> dict[str, Path]:
    if not root.is_dir():
        raise FrameError(f"{root} is not a folder")
    out: dict[str, Path] = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            out.setdefault(path.relative_to(root).with_suffix("").as_posix(), path)
    return out


def pair_folders(images: str | Path, masks: str | Path,
                 skipped: list[tuple[str, str]] | None = None) -> Iterator[dict[str, Any]]:
    """One frame per image whose stem has a mask; unpaired files go to ``skipped`` with the reason.

    The frame id is the stem (its path under the folder), so re-running updates the same frames.
    """
    image_files, mask_files = _stems(Path(images)), _stems(Path(masks))
    if skipped is not None:
        skipped += [(str(p), "no mask with this name") for s, p in image_files.items() if s not in mask_files]
        skipped += [(str(p), "no image with this name") for s, p in mask_files.items() if s not in image_files]
    for stem, image in image_files.items():
        mask = mask_files.get(stem)
        if mask is None:
            continue
        yield {"id": stem, "context_id": Path(stem).parent.as_posix() if "/" in stem else stem,
               "sources": [{"id": "0", "uri": str(image.resolve()),
                            "masks": [{"id": "00", "uri": str(mask.resolve())}]}]}
