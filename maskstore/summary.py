"""Per-label statistics of a version from the stored mask statistics: no image is decoded.

For each label of ``mask_labels``: how many frames hold it and what share of all mask pixels it
covers. Computed on the columnar side tables, so a million frames take a moment, not a decode.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import lmdb
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .archive import DatasetVersion
from .labels import RGB, default_color
from .query import columns, engine


@dataclass(frozen=True)
class LabelStat:
    label: str
    frames: int
    pixels: int
    share: float  # of all mask pixels of the version


def label_stats(version: DatasetVersion) -> tuple[int, list[LabelStat]]:
    """(frames in the version, one LabelStat per label in table order)."""
    columns.refresh(version)

    def work(txn: lmdb.Transaction) -> tuple[int, list[LabelStat]]:
        ctx = engine.context(txn, version)
        labels = ctx.labels
        frames = {name: 0 for name in labels.names}
        pixels = {name: 0 for name in labels.names}
        total_pixels = 0
        for chunk in ctx.chunks:
            owner = np.repeat(np.arange(len(chunk.present)), np.diff(chunk.value_offsets))
            total_pixels += int(chunk.value_counts.sum())
            for name in labels.names:
                hit = np.isin(chunk.value_keys, np.array(labels.values_of([name]), np.uint32))
                frames[name] += len(np.unique(owner[hit]))
                pixels[name] += int(chunk.value_counts[hit].sum())
        n_frames = int(sum(int(c.present.sum()) for c in ctx.chunks))
        stats = [LabelStat(n, frames[n], pixels[n], pixels[n] / total_pixels if total_pixels else 0.0)
                 for n in labels.names]
        return n_frames, stats
    return version.archive.read(work)


def font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's scalable default font at ``size``, for the charts and legends maskstore draws."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
        return ImageFont.load_default()


def bar_chart(stats: list[LabelStat], path: str | Path, colors: dict[str, RGB] | None = None,
              title: str = "share of mask pixels per label") -> Path:
    """A horizontal bar chart PNG: one bar per label, its colour, its share and frame count."""
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
        color = colors.get(stat.label) or default_color(stat.label)
        draw.rectangle([left, y + 2, left + max(length, 1), y + row - 6], fill=tuple(color), outline="black")
        draw.text((left + length + 8, y + 6), f"{stat.share:.1%}  ({stat.frames} frames)", fill="black", font=small)
    out = Path(path)
    image.save(out)
    return out
