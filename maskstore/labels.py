"""Mask labels: RGB pixel value <-> label names, packed value keys, and label colours.

Values are packed as ``r << 16 | g << 8 | b`` so a whole mask becomes one uint32 array and
lookups are numpy operations instead of tuple comparisons.
"""

from __future__ import annotations

import colorsys
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from .errors import FrameError

RGB = tuple[int, int, int]


def pack_rgb(value: Iterable[int]) -> int:
    r, g, b = _rgb(value, "mask value")
    return (r << 16) | (g << 8) | b


def packed_key(value: Sequence[int]) -> int:
    """Packed key of a stored value (``[r, g, b]`` or ``[r, g, b, count]``), already validated at
    ingest: the hot loops over frame records use this instead of ``pack_rgb``."""
    return (value[0] << 16) | (value[1] << 8) | value[2]


def unpack_rgb(key: int) -> RGB:
    key = int(key)
    return ((key >> 16) & 255, (key >> 8) & 255, key & 255)


def _rgb(value: Any, what: str) -> RGB:
    try:
        r, g, b = (int(c) for c in value)
    except (TypeError, ValueError):
        raise FrameError(f"{what} must be three integers [r, g, b], got {value!r}") from None
    if not all(0 <= c <= 255 for c in (r, g, b)):
        raise FrameError(f"{what} must have channels in 0..255, got {value!r}")
    return (r, g, b)


def normalize_mask_labels(labels: Mapping[Any, Any] | Iterable[Mapping[str, Any]]) -> list[dict]:
    """Accept the Python dict form or the stored list form; return the list form, validated.

    >>> normalize_mask_labels({(1, 1, 1): ["person"]})
    [{'value': [1, 1, 1], 'labels': ['person']}]
    """
    items: Iterable[tuple[Any, Any]]
    if isinstance(labels, Mapping):
        items = labels.items()
    else:
        entries = list(labels)
        for entry in entries:
            if not isinstance(entry, Mapping) or "value" not in entry or "labels" not in entry:
                raise FrameError(f'a mask_labels entry must be {{"value": [r, g, b], "labels": [...]}}, got {entry!r}')
        items = [(entry["value"], entry["labels"]) for entry in entries]
    out: list[dict] = []
    seen: set[RGB] = set()
    for value, names in items:
        if isinstance(value, int):
            value = (value, value, value)
        rgb = _rgb(value, "mask_labels value")
        if rgb in seen:
            raise FrameError(f"mask_labels lists the value {list(rgb)} twice")
        seen.add(rgb)
        if isinstance(names, str):
            names = [names]
        names = list(names)
        if not all(isinstance(n, str) for n in names):
            raise FrameError(f"labels of value {list(rgb)} must be strings, got {names!r}")
        out.append({"value": list(rgb), "labels": names})
    return out


def mask_labels_dict(labels: list[dict]) -> dict[RGB, list[str]]:
    return {tuple(entry["value"]): list(entry["labels"]) for entry in labels}  # type: ignore[misc]


def values_with_label(labels: list[dict], label: str) -> np.ndarray:
    """Packed keys of every value whose label list holds ``label`` (sorted)."""
    keys = [pack_rgb(e["value"]) for e in labels if label in e["labels"]]
    return np.array(sorted(keys), dtype=np.uint32)


def all_label_names(labels: list[dict]) -> list[str]:
    """Every label name in table order, each once."""
    return list(dict.fromkeys(name for e in labels for name in e["labels"]))


def parse_color(color: Any) -> RGB:
    """``(r, g, b)``, ``[r, g, b]`` or ``"#rrggbb"``."""
    if isinstance(color, str):
        text = color.strip().lstrip("#")
        if len(text) != 6:
            raise FrameError(f'a colour must be [r, g, b] or "#rrggbb", got {color!r}')
        try:
            return (int(text[0:2], 16), int(text[2:4], 16), int(text[4:6], 16))
        except ValueError:
            raise FrameError(f'a colour must be [r, g, b] or "#rrggbb", got {color!r}') from None
    return _rgb(color, "colour")


def normalize_label_colors(colors: Mapping[str, Any]) -> dict[str, list[int]]:
    return {str(label): list(parse_color(c)) for label, c in colors.items()}


def default_color(label: str) -> RGB:
    """A stable, saturated colour per label name, so a label looks the same in every export.

    The hue comes from a hash of the name; saturation and value vary a little with it so that
    labels whose hues land close together still differ.
    """
    digest = hashlib.blake2b(label.encode("utf-8"), digest_size=8).digest()
    hue = int.from_bytes(digest[:4], "big") / 2**32
    saturation = 0.55 + 0.4 * (digest[4] / 255)
    value = 0.75 + 0.25 * (digest[5] / 255)
    r, g, b = colorsys.hsv_to_rgb(hue, saturation, value)
    return (round(r * 255), round(g * 255), round(b * 255))
