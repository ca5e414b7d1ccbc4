"""Per-label statistics of a version from the stored mask statistics: no image is decoded.

For each label: how many frames hold it (as ``label == X`` counts them: a mask pixel of a value
labelled X, or a ROI labelled X) and what share of all mask pixels it covers; one more row for the
pixels whose value has no label, so the pixel shares of a table with one label per value add up to
100%. Computed on the columnar side tables and the ROI index, so a million frames take a moment.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import lmdb
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .layout import text_key
from .labels import RGB, label_colors
from . import frame_groups
from .query import columns, engine
from .query.evaluate import Labels
from .query.plan import EMPTY, Context, Lookup, sorted_unique

if TYPE_CHECKING:
    from .archive import DatasetVersion

UNLABELLED = "(unlabelled)"
UNLABELLED_COLOR: RGB = (160, 160, 160)


@dataclass(frozen=True)
class LabelStat:
    label: str
    frames: int  # frames where ``label == X`` holds: a mask pixel or a ROI has the label
    pixels: int
    share: float  # of all mask pixels of the version
    roi_frames: int = 0  # frames with a ROI labelled X
    unlabelled: bool = False  # the row of mask pixels whose value has no label (``label`` is UNLABELLED)


def label_stats(version: DatasetVersion) -> tuple[int, list[LabelStat]]:
    """(frames in the version, rows): the labels of ``mask_labels`` in table order, then labels only
    ROIs carry (sorted), then the unlabelled row. Rows with nothing are included: callers filter."""
    columns.refresh(version)

    def work(txn: lmdb.Transaction) -> tuple[int, list[LabelStat]]:
        ctx = engine.context(txn, version)
        mask_names = ctx.labels.names
        roi_seqs = _roi_frames(ctx)
        both = {i for i, name in enumerate(mask_names) if name in roi_seqs}
        mask_frames, pixels, total, mask_seqs = _mask_hits(ctx, both)

        def row(name: str, i: int | None) -> LabelStat:
            rois = roi_seqs.get(name, EMPTY)
            frames = len(rois) if i is None else len(sorted_unique([mask_seqs[i], rois])) if i in both \
                else int(mask_frames[i])
            count = int(pixels[i]) if i is not None else 0
            return LabelStat(name, frames, count, count / total if total else 0.0, len(rois))

        rows = [row(name, i) for i, name in enumerate(mask_names)]
        rows += [row(name, None) for name in sorted(set(roi_seqs) - set(mask_names))]
        rest = int(pixels[-1])
        rows.append(LabelStat(UNLABELLED, int(mask_frames[-1]), rest, rest / total if total else 0.0, unlabelled=True))
        return int(sum(int(c.present.sum()) for c in ctx.chunks)), rows
    return version.archive.read(work)


def _value_rows(labels: Labels) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The labelled values as a lookup: sorted packed keys, and per key (plus a last row for values
    not in the table) the label indices it carries as (lengths, starts, flat); a value without a
    label, in the table or not, carries index ``len(labels.names)``, "no label"."""
    none = len(labels.names)
    keys = np.array(sorted(labels.of_value), np.uint32)
    index = {name: i for i, name in enumerate(labels.names)}
    per_row = [[index[n] for n in dict.fromkeys(labels.of_value[int(k)])] or [none] for k in keys] + [[none]]
    lengths = np.array([len(r) for r in per_row], np.int64)
    return keys, lengths, np.cumsum(lengths) - lengths, np.array([i for r in per_row for i in r], np.int64)


def _mask_hits(ctx: Context, want: set[int]) -> tuple[np.ndarray, np.ndarray, int, dict[int, np.ndarray]]:
    """Frames and pixels per mask label index (index ``len(names)``: no label), pixels of all masks,
    and the sorted seqs of the frames of the label indices in ``want``. One pass per chunk: each stored
    value is looked up once and expanded to its labels, then a frames x labels hit matrix: no scan and
    no sort per label."""
    keys, lengths, starts, flat = _value_rows(ctx.labels)
    width = len(ctx.labels.names) + 1
    frames, pixels, total = np.zeros(width, np.int64), np.zeros(width, np.int64), 0
    seqs: dict[int, list[np.ndarray]] = {i: [EMPTY] for i in want}
    for chunk in ctx.chunks:
        values = chunk.value_keys
        at = np.searchsorted(keys, values)
        found = at < len(keys)
        found[found] = keys[at[found]] == values[found]
        row = np.where(found, at, len(keys))
        n = lengths[row]
        entry = np.repeat(np.arange(len(row)), n)
        label = flat[np.repeat(starts[row], n) + np.arange(len(entry)) - np.repeat(np.cumsum(n) - n, n)]
        np.add.at(pixels, label, chunk.value_counts[entry])
        total += int(chunk.value_counts.sum())
        hit = np.zeros((len(chunk.present), width), bool)
        hit[np.repeat(np.arange(len(chunk.present)), np.diff(chunk.value_offsets))[entry], label] = True
        frames += hit.sum(axis=0)
        for i in want:
            seqs[i].append(np.nonzero(hit[:, i])[0].astype(np.uint64) + np.uint64(chunk.base))
    return frames, pixels, total, {i: np.concatenate(parts) for i, parts in seqs.items()}


def _roi_frames(ctx: Context) -> dict[str, np.ndarray]:
    """Seqs of the frames with a ROI of each ROI label: from the ROI index, or from the records of
    frames with ROIs when some label is too long to be named by its index key."""
    if ctx.roi_labels is not None:
        return {name: Lookup("ix_roi", (text_key(name),), name).run(ctx) for name in ctx.roi_labels}
    found: dict[str, set[int]] = {}
    stored = frame_groups.Records(ctx.txn, ctx.version.archive, ctx.version.prefix)
    for chunk in ctx.chunks:
        for seq in (np.nonzero(chunk.present & (chunk.n_rois > 0))[0] + chunk.base).tolist():
            rec = stored.frame(seq)
            for name in {n for roi in rec["rois"] for n in roi["label"]}:
                found.setdefault(name, set()).add(seq)
    return {name: np.array(sorted(seqs), np.uint64) for name, seqs in found.items()}


def stats_colors(version: DatasetVersion, stats: list[LabelStat]) -> dict[str, RGB]:
    """The colour of each row: the label's colour in renders (stored or default), grey for unlabelled."""
    colors = label_colors(version.mask_labels, version.get_label_colors(),
                          [s.label for s in stats if not s.unlabelled])
    return {**colors, UNLABELLED: UNLABELLED_COLOR}


def font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's scalable default font at ``size``, for the charts and legends maskstore draws."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
        return ImageFont.load_default()


def bar_chart(stats: list[LabelStat], path: str | Path, colors: Mapping[str, RGB] | None = None,
              title: str = "share of mask pixels per label") -> Path:
    """A horizontal bar chart PNG: one bar per row, its colour (``colors``, see ``stats_colors``; grey
    where missing), its share and frame count."""
    colors = colors or {}
    row, left, width = 28, 220, 520
    title_font, small = font(16), font(13)
    image = Image.new("RGB", (left + width + 170, 50 + row * max(len(stats), 1)), "white")
    draw = ImageDraw.Draw(image)
    draw.text((12, 12), title, fill="black", font=title_font)
    top = max((s.share for s in stats), default=0) or 1.0
    for i, stat in enumerate(stats):
        y = 44 + i * row
        draw.text((12, y + 4), stat.label[:28], fill="black", font=title_font)
        length = int(width * stat.share / top)
        color = UNLABELLED_COLOR if stat.unlabelled else colors.get(stat.label, UNLABELLED_COLOR)
        draw.rectangle([left, y + 2, left + max(length, 1), y + row - 6], fill=tuple(color), outline="black")
        draw.text((left + length + 8, y + 6), f"{stat.share:.1%}  ({stat.frames} frames)", fill="black", font=small)
    out = Path(path)
    image.save(out)
    return out
