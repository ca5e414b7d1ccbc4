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

import lmdb
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .archive import DatasetVersion, text_key, u64
from .labels import RGB, label_colors
from . import records
from .query import columns, engine
from .query.plan import EMPTY, Context, Lookup, sorted_unique

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
        mask_seqs, pixels, total = _mask_hits(ctx)
        roi_seqs = _roi_frames(ctx)
        names = list(dict.fromkeys([*ctx.labels.names, *sorted(roi_seqs)]))
        rows = [LabelStat(n, len(sorted_unique([*mask_seqs.get(n, []), roi_seqs.get(n, EMPTY)])), pixels.get(n, 0),
                          pixels.get(n, 0) / total if total else 0.0, len(roi_seqs.get(n, EMPTY))) for n in names]
        rest = pixels[None]
        rows.append(LabelStat(UNLABELLED, len(sorted_unique(mask_seqs[None])), rest, rest / total if total else 0.0,
                              unlabelled=True))
        return int(sum(int(c.present.sum()) for c in ctx.chunks)), rows
    return version.archive.read(work)


def _mask_hits(ctx: Context) -> tuple[dict[str | None, list[np.ndarray]], dict[str | None, int], int]:
    """Per mask label (None: no label) the seqs of frames with its pixels and its pixel count, and the
    pixel count of all masks."""
    labels = ctx.labels
    keys = {name: np.array(labels.values_of([name]), np.uint32) for name in labels.names}
    labelled = np.array(sorted(labels.of_value), np.uint32)
    seqs: dict[str | None, list[np.ndarray]] = {name: [] for name in [*labels.names, None]}
    pixels: dict[str | None, int] = dict.fromkeys(seqs, 0)
    total = 0
    for chunk in ctx.chunks:
        owner = np.repeat(np.arange(len(chunk.present), dtype=np.uint64), np.diff(chunk.value_offsets))
        owner += np.uint64(chunk.base)
        total += int(chunk.value_counts.sum())
        hits = {name: np.isin(chunk.value_keys, k) for name, k in keys.items()}
        hits[None] = ~np.isin(chunk.value_keys, labelled)
        for name, hit in hits.items():
            seqs[name].append(np.unique(owner[hit]))
            pixels[name] += int(chunk.value_counts[hit].sum())
    return seqs, pixels, total


def _roi_frames(ctx: Context) -> dict[str, np.ndarray]:
    """Seqs of the frames with a ROI of each ROI label: from the ROI index, or from the records of
    frames with ROIs when some label is too long to be named by its index key."""
    if ctx.roi_labels is not None:
        return {name: Lookup("ix_roi", (text_key(name),), name).run(ctx) for name in ctx.roi_labels}
    found: dict[str, set[int]] = {}
    frames_db = ctx.version.archive.db("frames")
    for chunk in ctx.chunks:
        for seq in (np.nonzero(chunk.present & (chunk.n_rois > 0))[0] + chunk.base).tolist():
            rec = records.decode_frame(ctx.txn.get(ctx.version.prefix + u64(seq), db=frames_db))
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
