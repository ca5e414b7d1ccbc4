"""Export the frames of a query as masked images: ``<out>/<frame_id>/<source_id>.<ext>``.

Files are written atomically (temporary name, then rename), so an interrupted export never leaves
a half file that a re-run would mistake for a finished one; re-runs skip files that exist. Work is
spread over processes that each open the archive read-only (an LMDB handle must not cross a fork),
with a bounded number of tasks in flight so memory stays flat however many frames are selected.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import zlib
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from .archive import Archive, DatasetVersion
from .errors import FrameError, MaskstoreError
from .labels import RGB
from .model import frame_from_dict
from .render import legend_entries, render
from .stats import process_pool
from .summary import font

FORMATS = {"png": "png", "jpeg": "jpg", "jpg": "jpg"}
# Encoding dominates export time (benchmarks/results/export.md): level 1 with zlib's run-length strategy
# encoded faster than plain level 1 and about as small as level 6, which is 3.5x slower.
PNG_COMPRESS_LEVEL = 1
PNG_STRATEGY = zlib.Z_RLE
FRAMES_PER_TASK = 2  # small tasks: the last one does not leave the other workers idle for long
_WINDOWS_RESERVED = re.compile(r"^(con|prn|aux|nul|com[0-9]|lpt[0-9])(\..*)?$", re.IGNORECASE)
_UNSAFE = re.compile(r'[\x00-\x1f\x7f<>:"/\\|?*]')
MAX_NAME_BYTES = 120


def safe_name(name: str) -> str:
    """A file name for an id that stays inside its folder on every OS.

    Unchanged when already safe; otherwise unsafe characters become ``_`` and a short hash of the
    original id is appended, so different ids never share a file and re-runs find the same name.
    """
    cleaned = _UNSAFE.sub("_", name).rstrip(" .")
    if cleaned in ("", ".", "..") or _WINDOWS_RESERVED.match(cleaned):
        cleaned = "_" + cleaned
    if len(cleaned.encode("utf-8")) > MAX_NAME_BYTES:
        cleaned = cleaned.encode("utf-8")[:MAX_NAME_BYTES].decode("utf-8", errors="ignore")
    if cleaned == name:
        return name
    return f"{cleaned}~{hashlib.sha1(name.encode('utf-8')).hexdigest()[:10]}"


@dataclass
class ExportReport:
    """What an export did; ``errors`` holds (frame id, message) of frames that could not be rendered."""

    written: int = 0
    skipped: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)
    manifest: Path | None = None
    legend: Path | None = None


@dataclass(frozen=True)
class Job:
    """Everything a worker needs, picklable: where the archive is, what to render, where to write."""

    archive: str
    version_id: int
    out: str
    mode: str
    ext: str
    mask_id: str | None
    options: tuple[tuple[str, Any], ...]


def _save(array: np.ndarray, path: Path, ext: str) -> None:
    image = Image.fromarray(array)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    if ext == "png":
        image.save(tmp, format="PNG", compress_level=PNG_COMPRESS_LEVEL, compress_type=PNG_STRATEGY)
    else:
        image.save(tmp, format="JPEG", quality=92)
    os.replace(tmp, path)


def _render_frames(job: Job, version: DatasetVersion, frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    options = dict(job.options)
    for d in frames:
        frame = frame_from_dict(d)
        folder = Path(job.out) / safe_name(frame.id)
        for source in frame.sources:
            masks = [m for m in source.masks if job.mask_id is None or m.id == job.mask_id]
            if not masks:
                continue
            path = folder / f"{safe_name(source.id or '0')}.{job.ext}"
            row = {"frame_id": frame.id, "source_id": source.id, "mask_id": masks[0].id, "mode": job.mode,
                   "path": path.relative_to(job.out).as_posix()}
            if path.exists():
                with Image.open(path) as done:
                    rows.append({**row, "status": "skipped", "width": done.width, "height": done.height})
                continue
            try:
                array = render(frame, version, mode=job.mode, source_id=source.id, mask_id=masks[0].id, **options)
                folder.mkdir(parents=True, exist_ok=True)
                _save(array, path, job.ext)
            except MaskstoreError as exc:
                rows.append({**row, "status": "error", "error": str(exc)})
                continue
            rows.append({**row, "status": "written", "width": int(array.shape[1]), "height": int(array.shape[0])})
    return rows


_WORKER_ARCHIVES: dict[str, Archive] = {}


def _worker(job: Job, frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
    archive = _WORKER_ARCHIVES.get(job.archive)
    if archive is None:
        archive = _WORKER_ARCHIVES[job.archive] = Archive(job.archive, readonly=True)
    return _render_frames(job, DatasetVersion(archive, job.version_id), frames)


def _chunks(items: Iterable[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


def _run_pool(job: Job, tasks: Iterator[list[dict[str, Any]]], jobs: int) -> Iterator[list[dict[str, Any]]]:
    """Results of the tasks, at most ``4 * jobs`` in flight, as they finish."""
    with process_pool(jobs) as pool:
        pending: set[Future] = set()
        for task in tasks:
            pending.add(pool.submit(_worker, job, task))
            if len(pending) >= 4 * jobs:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                yield from (f.result() for f in done)
        for future in pending:
            yield future.result()


def draw_legend(entries: list[tuple[str, RGB]], path: Path) -> Path:
    """A PNG listing each label next to a swatch of its colour."""
    row = 26
    label_font = font(16)
    image = Image.new("RGB", (360, 16 + row * max(len(entries), 1)), "white")
    draw = ImageDraw.Draw(image)
    for i, (label, color) in enumerate(entries):
        y = 8 + i * row
        draw.rectangle([10, y, 40, y + row - 8], fill=tuple(color), outline="black")
        draw.text((52, y), label, fill="black", font=label_font)
    image.save(path)
    return path


def export(version: DatasetVersion, out: str | os.PathLike[str], query: str = "", mode: str = "segmentation",
           jobs: int | None = None, format: str = "png", mask_id: str | None = None,
           progress: Callable[[int], None] | None = None, **render_options: Any) -> ExportReport:
    """Render every selected frame's sources into ``out``; see the module docstring.

    ``render_options`` go to ``maskstore.render`` (opacity, colors, background, resize, tint, ...).
    """
    ext = FORMATS.get(format.lower())
    if ext is None:
        raise FrameError(f"export format must be png or jpeg, got {format!r}")
    if ext == "jpg" and mode in ("alpha", "index") and render_options.get("background") is None:
        raise FrameError("JPEG has no alpha channel and is lossy; export alpha and index maps as png "
                         "(or pass a background colour for alpha)")
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    job = Job(str(version.archive.path.resolve()), version.id, str(out_dir), mode, ext, mask_id,
              tuple(sorted(render_options.items())))
    jobs = max(1, jobs if jobs is not None else (os.cpu_count() or 1))
    tasks = _chunks(version.query_dicts(query), FRAMES_PER_TASK)
    results = _run_pool(job, tasks, jobs) if jobs > 1 else (_render_frames(job, version, t) for t in tasks)
    report = ExportReport(manifest=out_dir / "manifest.jsonl")
    tmp_manifest = out_dir / ".manifest.jsonl.tmp"
    with tmp_manifest.open("w", encoding="utf-8") as manifest:
        for rows in results:
            for row in rows:
                manifest.write(json.dumps(row, ensure_ascii=False) + "\n")
                if row["status"] == "written":
                    report.written += 1
                elif row["status"] == "skipped":
                    report.skipped += 1
                else:
                    report.errors.append((row["frame_id"], row["error"]))
            if progress is not None:
                progress(len({r["frame_id"] for r in rows}))
    os.replace(tmp_manifest, report.manifest)
    if mode == "segmentation":
        entries = legend_entries(version.mask_labels, version.get_label_colors(), render_options.get("colors"))
        report.legend = draw_legend(entries, out_dir / "legend.png")
    return report
