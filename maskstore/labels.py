"""Mask labels: RGB pixel value <-> label names, packed value keys, label colours and class ids.

Values are packed as ``r << 16 | g << 8 | b`` so a whole mask becomes one uint32 array and
lookups are numpy operations instead of tuple comparisons.

Label names enter in Unicode NFC (``nfc``), wherever they come from, so "café" typed on two keyboards
is one label. Default colours come from one categorical palette assigned in label order, so the labels
of a version never share a default colour (``default_colors``).
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from importlib import resources
from typing import Any

import numpy as np

from .errors import FrameError

RGB = tuple[int, int, int]


@lru_cache(maxsize=None)
def _packaged(name: str) -> str:
    return (resources.files("maskstore") / "tables" / f"{name}.json").read_text(encoding="utf-8")


def packaged_table(name: str) -> list[dict[str, Any]]:
    """The ``labels`` list of a table shipped in ``maskstore/tables/<name>.json`` (a fresh copy)."""
    try:
        text = _packaged(name)
    except FileNotFoundError:
        raise FrameError(f"no packaged label table {name!r}") from None
    return json.loads(text)["labels"]


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
        out.append({"value": list(rgb), "labels": list(dict.fromkeys(map(nfc, names)))})
    return out


def nfc(text: str) -> str:
    """``text`` in Unicode NFC: the NFC and NFD spellings of a name are one label or one meta key.
    ASCII is NFC already, so the common case costs one check."""
    return text if text.isascii() else unicodedata.normalize("NFC", text)


def mask_labels_dict(labels: list[dict]) -> dict[RGB, list[str]]:
    return {tuple(entry["value"]): list(entry["labels"]) for entry in labels}  # type: ignore[misc]


MAX_TOLERANCE = 255


def check_tolerance(tolerance: Any) -> int:
    if isinstance(tolerance, bool) or not isinstance(tolerance, int) or not 0 <= tolerance <= MAX_TOLERANCE:
        raise FrameError(f"mask tolerance must be an integer 0..{MAX_TOLERANCE} (largest per-channel difference), "
                         f"not {tolerance!r}")
    return tolerance


def within_tolerance(labels: list[dict], keys: np.ndarray, tolerance: int) -> list[dict]:
    """``labels`` plus an entry for each packed value of ``keys`` that has no labels of its own but
    lies within ``tolerance`` (largest per-channel difference) of a labelled value: it takes the
    labels of the nearest one, ties to the lexicographically lower ``(r, g, b)`` (spec section 10).
    Lossy masks resolved this way at query and render time need no rebuild when the tolerance changes."""
    if tolerance == 0 or not labels:
        return labels
    labelled = np.array(sorted(pack_rgb(e["value"]) for e in labels), dtype=np.int64)  # sorted: ties go low
    keys = np.setdiff1d(np.asarray(keys, dtype=np.int64), labelled)
    by_key = {pack_rgb(e["value"]): e["labels"] for e in labels}
    channels = lambda k: np.stack([(k >> 16) & 255, (k >> 8) & 255, k & 255], axis=-1)  # noqa: E731
    known = channels(labelled)
    extra = []
    for start in range(0, len(keys), 65536):  # bounded memory: keys x labelled distances per block
        block = keys[start:start + 65536]
        distance = np.abs(channels(block)[:, None, :] - known[None, :, :]).max(axis=-1)
        nearest = distance.argmin(axis=1)
        close = distance[np.arange(len(block)), nearest] <= tolerance
        extra += [{"value": list(unpack_rgb(k)), "labels": by_key[int(labelled[i])]}
                  for k, i in zip(block[close].tolist(), nearest[close].tolist())]
    return labels + extra


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
    """Label (NFC) -> ``[r, g, b]``; two spellings of one label with different colours are refused."""
    out: dict[str, list[int]] = {}
    for label, color in colors.items():
        name, rgb = nfc(str(label)), list(parse_color(color))
        if out.get(name, rgb) != rgb:
            raise FrameError(f"the colours give the label {name!r} twice (in two Unicode forms) with different colours")
        out[name] = rgb
    return out


# ---------------------------------------------------------------------------------------- default colours

# A Glasbey-style categorical palette, as data: each colour is the candidate farthest (CIELAB distance)
# from all colours before it and from black, white and mid grey. Candidates: the sRGB grid of step 15
# with lightness L* 30..88 and chroma >= 25, so every colour shows over dark and light image regions
# alike. The first 20 are >= 39.9 CIELAB units (>= 75 RGB units) apart, all 64 >= 22.1 (>= 33.5).
PALETTE: tuple[RGB, ...] = tuple((int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)) for h in (
    "0000ff 00ff00 ff0000 ff1eb4 ffd200 0069e1 0f7800 00f0c3 "
    "961e2d 876900 f0a5f0 00c3ff d2e187 e100ff 781e78 ffa587 "
    "ff8700 a5e11e ff0069 00e169 008769 004b78 5a1ec3 d269f0 "
    "c36987 78d2d2 4b5a2d b43c00 8796e1 693c1e a5a500 b40069 "
    "ffc369 ff6969 693c5a 69c378 b4a578 007887 b4d2ff 3cb400 "
    "ff69b4 9600a5 5a4b96 ffb4c3 78963c a5f078 e1002d 005aff "
    "b4693c 784bc3 b4e1b4 d29600 962dff 005a1e b487f0 c35ab4 "
    "0f87c3 e11ed2 ff874b 9678a5 0096ff ffd2a5 69f03c 871e4b").split())


def cielab(rgb: np.ndarray) -> np.ndarray:
    """CIELAB (D65) of sRGB uint8 colours (..., 3): the space the palette's distances are measured in."""
    c = np.asarray(rgb, dtype=np.float64) / 255
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    xyz = linear @ np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]).T
    xyz /= np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], axis=-1)


@lru_cache(maxsize=1)
def _extension() -> tuple[RGB, ...]:
    """The palette continued by the rule that made it, over the same candidates, for versions with
    more labels than ``PALETTE`` holds (about 4,200 more colours). Distances are rounded to integers
    of 1/1000 unit before comparing, so every machine picks the same colours in the same order."""
    levels = np.arange(0, 256, 15)
    grid = np.array(np.meshgrid(levels, levels, levels, indexing="ij")).reshape(3, -1).T
    lab = cielab(grid)
    keep = (lab[:, 0] >= 30) & (lab[:, 0] <= 88) & (np.hypot(lab[:, 1], lab[:, 2]) >= 25)
    grid, lab = grid[keep], np.round(lab[keep] * 1000).astype(np.int64)
    taken = np.round(cielab(np.array([(0, 0, 0), (255, 255, 255), (128, 128, 128), *PALETTE])) * 1000)
    nearest = ((lab[:, None, :] - taken.astype(np.int64)[None]) ** 2).sum(-1).min(axis=1)
    out: list[RGB] = []
    while nearest[pick := int(np.argmax(nearest))] > 0:  # 0: only colours already dealt are left
        out.append(tuple(int(c) for c in grid[pick]))  # type: ignore[arg-type]
        nearest = np.minimum(nearest, ((lab - lab[pick]) ** 2).sum(-1))
    return tuple(out)


def palette_color(index: int) -> RGB:
    """Colour ``index`` of the default sequence: ``PALETTE``, then its extension, then over again."""
    if index < len(PALETTE):
        return PALETTE[index]
    extension = _extension()
    return extension[index - len(PALETTE)] if index - len(PALETTE) < len(extension) else \
        palette_color(index % (len(PALETTE) + len(extension)))


def label_order(label_lists: Iterable[Sequence[str]], extra: Iterable[str] = ()) -> list[str]:
    """Labels in the order default colours are dealt: each value's first label (the one that colours
    its pixels) in table order, then the other labels of the table, then ``extra`` (e.g. ROI labels)."""
    lists = [list(names) for names in label_lists]
    firsts = [names[0] for names in lists if names]
    return list(dict.fromkeys([*firsts, *(n for names in lists for n in names), *extra]))


def default_colors(label_lists: Iterable[Sequence[str]], extra: Iterable[str] = ()) -> dict[str, RGB]:
    """The default colour of every label of a version: palette colour i for the i-th label of
    ``label_order``. The same table gives the same colours in every run and process, and the first
    64 labels are at least 22 CIELAB units apart (a hash per name let Hair and Sunglasses land 23
    RGB units apart). ``label_lists`` is each value's label list, e.g. from ``mask_labels``."""
    return {name: palette_color(i) for i, name in enumerate(label_order(label_lists, extra))}


def label_colors(mask_labels: list[dict], stored: Mapping[str, Any] | None = None,
                 extra: Iterable[str] = ()) -> dict[str, RGB]:
    """Every label's colour: the version's stored ``label_colors`` over the defaults."""
    colors = default_colors((e["labels"] for e in mask_labels), extra)
    colors.update({nfc(str(k)): parse_color(v) for k, v in (stored or {}).items()})
    return colors


# ---------------------------------------------------------------------------------------- class ids

IGNORE_LABELS = frozenset({"void", "ignore", "unlabeled", "unlabelled"})
"""Label names (any case) that mean "do not train on this": VOC's ``void`` (value 255), Cityscapes'
``unlabeled`` (label id 0) and ``ignore`` (train id 255)."""


def is_ignore_label(name: str) -> bool:
    return name.casefold() in IGNORE_LABELS


def default_enumeration(mask_labels: list[dict]) -> dict[str, int]:
    """Class id of each label for training: its position among the version's labels in table order,
    except ``IGNORE_LABELS``, which are left out so they get the ``ignore`` id of the class map.

    >>> default_enumeration([{"value": [0, 0, 0], "labels": ["background"]},
    ...                      {"value": [255, 255, 255], "labels": ["void"]}])
    {'background': 0}
    """
    return {name: i for i, name in enumerate(all_label_names(mask_labels)) if not is_ignore_label(name)}


# ---------------------------------------------------------------------------------------- label tables

def split_label_table(table: Any) -> tuple[list[dict], dict[str, list[int]]]:
    """A label-table file ``[{"value", "labels", "color"}]`` as (mask_labels, colours): each entry's
    colour belongs to its first label. The one reader of the form, for ``ingest --labels`` and
    ``labels --set`` alike."""
    if not isinstance(table, list):
        raise FrameError('a label table is a list: [{"value": [r, g, b], "labels": [...], "color": [r, g, b]}]')
    mask_labels = normalize_mask_labels(table)
    colors = {entry["labels"][0]: given["color"] for given, entry in zip(table, mask_labels)
              if given.get("color") is not None and entry["labels"]}
    return mask_labels, normalize_label_colors(colors)


def _names(labels: Sequence[str]) -> str:
    return ", ".join(repr(n) for n in labels) or "no label"


def label_table_change(current: list[dict], mask_labels: list[dict]) -> str | None:
    """What replacing a version's ``current`` mask_labels by ``mask_labels`` would change, in words;
    None when nothing (or when the version had none)."""
    if not current or current == mask_labels:
        return None
    old, new = mask_labels_dict(current), mask_labels_dict(mask_labels)
    for value in [*old, *new]:
        if old.get(value) != new.get(value):
            return (f"value {list(value)} is {_names(old.get(value, []))} in the version but "
                    f"{_names(new.get(value, []))} in the new table")
    return "the new table lists the same values in another order (the order sets class ids and default colours)"
