"""Export the frames of a query as masked images: ``<out>/<frame_id>/<source_id>.<ext>``.

One export is one snapshot: the selection, the frame records, ``mask_labels`` and ``label_colors``
come from one read transaction, and the workers get those labels and colours in their ``Job``
instead of reading the version again, so a writer changing colours meanwhile cannot mix them.

The output folder is written only through file descriptors of folders opened without following
links (``O_NOFOLLOW``, ``dir_fd``): a link planted in it is replaced or refused, never written
through. Every file is written under a temporary name unique to its writer and renamed when
complete; a failed write removes its temporary file and stops the export with one error.

``.maskstore-export.json`` records the settings (version, mode, format, options, labels and
colours). A re-run with the same settings resumes: complete files are skipped. A folder holding an
export made with other settings is refused unless ``overwrite=True``, which replaces that export.
Work is spread over processes that each open the archive read-only (an LMDB handle must not cross
a fork), with a bounded number of tasks in flight so memory stays flat however many frames are
selected.
"""

from __future__ import annotations

import errno
import hashlib
import inspect
import io
import json
import os
import re
import secrets
import stat
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, wait
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np
from PIL import Image, ImageDraw

from .errors import FrameError, MaskstoreError
from .labels import RGB, packed_key, parse_color
from .model import frame_from_dict
from .query import engine
from .render import check_options, legend_entries, render
from .stats import process_pool
from .summary import font

if TYPE_CHECKING:
    from .archive import Archive, DatasetVersion

FORMATS = {"png": "png", "jpeg": "jpg", "jpg": "jpg"}
# Encoding dominates export time (benchmarks/results/export.md): level 1 with zlib's run-length strategy
# encoded faster than plain level 1 and about as small as level 6, which is 3.5x slower.
PNG_COMPRESS_LEVEL = 1
PNG_STRATEGY = zlib.Z_RLE
FRAMES_PER_TASK = 2  # small tasks: the last one does not leave the other workers idle for long
MANIFEST = "manifest.jsonl"
LEGEND = "legend.png"
OWN_PREFIX = ".maskstore-"  # the export's own hidden files: settings and temporary files
SETTINGS = OWN_PREFIX + "export.json"
TMP_PREFIX = OWN_PREFIX + "tmp-"
# What an older maskstore left in an export folder: its shared temporary manifest and image temp files.
_LEGACY_TMP = re.compile(r"^\..*\.tmp$")
# End of a complete file: a PNG's IEND chunk, a JPEG's end-of-image marker.
_TRAILERS = {"png": b"\x00\x00\x00\x00IEND\xaeB`\x82", "jpg": b"\xff\xd9"}
_WINDOWS_RESERVED = re.compile(r"^(con|prn|aux|nul|com[0-9]|lpt[0-9])(\..*)?$", re.IGNORECASE)
_UNSAFE = re.compile(r'[\x00-\x1f\x7f<>:"/\\|?*]')
HASH_CHARS = 16  # 64 bits: ids that share a cleaned name collide with odds of 1 in 2**64 per pair
_HASHED = re.compile(rf"~[0-9a-f]{{{HASH_CHARS}}}$")
MAX_NAME_BYTES = 120
# The render options' defaults, so an option left out and one given at its default are one setting.
_RENDER_DEFAULTS = {name: p.default for name, p in inspect.signature(render).parameters.items()
                    if p.default is not inspect.Parameter.empty and name not in ("mode", "source_id", "mask_id")}


def safe_name(name: str, hashed: bool = False) -> str:
    """A file name for an id that stays inside its folder on every OS.

    Unchanged when already safe; otherwise unsafe characters become ``_`` and a hash of the original
    id is appended (always with ``hashed``), so different ids never share a file and re-runs find
    the same name. An id that looks like such a name, or is named like one of the export's own files,
    is hashed too, so it cannot take another id's file or the manifest's place.
    """
    cleaned = _UNSAFE.sub("_", name).rstrip(" .")
    if cleaned in ("", ".", "..") or _WINDOWS_RESERVED.match(cleaned) or cleaned.casefold().startswith(OWN_PREFIX):
        cleaned = "_" + cleaned
    if len(cleaned.encode("utf-8")) > MAX_NAME_BYTES:
        cleaned = cleaned.encode("utf-8")[:MAX_NAME_BYTES].decode("utf-8", errors="ignore")
    own = cleaned.casefold() in (MANIFEST, LEGEND) or _HASHED.search(cleaned)
    if cleaned == name and not own and not hashed:
        return name
    return f"{cleaned}~{hashlib.sha1(name.encode('utf-8', errors='surrogatepass')).hexdigest()[:HASH_CHARS]}"


# ----------------------------------------------------------------------------- image files

def image_format(path: str | os.PathLike[str], format: str | None = None) -> str:
    """The file extension to write (``png`` or ``jpg``): ``format`` when given, else from ``path``."""
    given = format if format is not None else Path(path).suffix.lstrip(".")
    ext = FORMATS.get(given.lower())
    if ext is None:
        what = f"format {format!r}" if format is not None else f"extension of {os.fspath(path)}"
        raise FrameError(f"cannot tell the image format from the {what}: use .png, .jpg or .jpeg, "
                         "or choose one with --format png|jpeg")
    return ext


def check_format(ext: str, mode: str, options: Mapping[str, Any]) -> None:
    """Refuse what a JPEG cannot hold: alpha (the colour layer, alpha without a background) and class
    ids (lossy compression would change them)."""
    rgba = options.get("layer_only") or (mode == "alpha" and options.get("background") is None
                                         and options.get("tint") is None)
    if ext == "jpg" and (rgba or mode == "index"):
        raise FrameError(f"JPEG has no alpha channel and is lossy; write {mode} images as png "
                         "(or, for alpha, give a background colour)")


def encode_image(array: np.ndarray, ext: str) -> bytes:
    """The PNG or JPEG bytes of a rendered array."""
    buffer = io.BytesIO()
    image = Image.fromarray(array)
    if ext == "png":
        image.save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL, compress_type=PNG_STRATEGY)
    else:
        image.save(buffer, format="JPEG", quality=92)
    return buffer.getvalue()


def write_image(array: np.ndarray, path: str | os.PathLike[str], ext: str) -> None:
    """Write one rendered image to ``path`` atomically; a failure is one error naming the file."""
    path = Path(path)
    data = encode_image(array, ext)
    try:
        folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            with _atomic(folder, path.name) as f:
                f.write(data)
        finally:
            os.close(folder)
    except OSError as exc:
        raise MaskstoreError(f"cannot write {path}: {exc.strerror or exc}") from None


def _temporary_name() -> str:
    """Unique to its writer, so two exports into one folder never share a temporary file."""
    return f"{TMP_PREFIX}{os.getpid()}-{secrets.token_hex(6)}"


@contextmanager
def _atomic(folder: int, name: str) -> Iterator[BinaryIO]:
    """A file written under a temporary name of its own and renamed over ``name`` once complete.

    Nothing is ever written through a link at ``name`` (the rename replaces the link), two writers
    never share a temporary file, and on any failure the temporary file is removed.
    """
    tmp = _temporary_name()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666, dir_fd=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
        os.replace(tmp, name, src_dir_fd=folder, dst_dir_fd=folder)
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp, dir_fd=folder)
        raise


def _finished(folder: int, name: str, ext: str) -> tuple[int, int] | None:
    """(width, height) of a complete image at ``name``, else None: a regular file (not a link), its
    format's last bytes in place, a header Pillow reads. An empty or cut file (a crash before the
    data reached the disk) is rendered again."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=folder)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        trailer = _TRAILERS[ext]
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size <= len(trailer):
            return None
        f.seek(-len(trailer), os.SEEK_END)
        if f.read() != trailer:
            return None
        f.seek(0)
        try:
            with Image.open(f, formats=["PNG" if ext == "png" else "JPEG"]) as image:
                return image.size
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
            return None


def _frame_folder(root: int, name: str, out: str) -> int:
    """The frame's folder in the export folder, made when missing, opened without following links."""
    with suppress(FileExistsError):
        os.mkdir(name, dir_fd=root)
    try:
        return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=root)
    except OSError as exc:
        if exc.errno not in (errno.ENOTDIR, errno.ELOOP):
            raise
        link = stat.S_ISLNK(os.stat(name, dir_fd=root, follow_symlinks=False).st_mode)
        what = "a symbolic link; export never writes through links" if link else "not a folder"
        raise MaskstoreError(f"{out}/{name} is {what}") from None


# ----------------------------------------------------------------------------- settings

def _settings(rec: dict[str, Any], colors: dict[str, RGB], mode: str, ext: str, mask_id: str | None,
              options: Mapping[str, Any]) -> dict[str, Any]:
    """Everything that decides an exported image's bytes, as JSON values; the label and colour
    tables by digest, so the record stays small however many labels there are."""
    chosen = {**_RENDER_DEFAULTS, **options}
    for key in ("background", "tint"):
        if chosen.get(key) is not None:
            chosen[key] = parse_color(chosen[key])
    if chosen.get("colors") is not None:
        chosen["colors"] = {str(label): parse_color(c) for label, c in chosen["colors"].items()}
    settings = {"dataset": rec["dataset"], "version": rec["name"], "mode": mode, "format": ext,
                "mask_id": mask_id, **chosen}
    if mode != "alpha":
        settings["mask_labels"] = _digest(rec["mask_labels"])
    if mode == "segmentation":
        settings["label_colors"] = _digest(colors)
    return json.loads(json.dumps(settings, sort_keys=True))


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def _read_settings(root: int) -> dict[str, Any] | None:
    """The settings recorded in the export folder; None when there are none, ``{}`` when they cannot
    be read (damaged, or a link)."""
    try:
        fd = os.open(SETTINGS, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=root)
    except FileNotFoundError:
        return None
    except OSError:
        return {}
    with os.fdopen(fd, "rb") as f:
        try:
            found = json.loads(f.read(1 << 20))
        except (OSError, ValueError):
            return {}
    return found if isinstance(found, dict) else {}


def _holds_export(root: int) -> bool:
    """True when the folder holds an export: its settings, or a manifest (an older maskstore's)."""
    for name in (SETTINGS, MANIFEST, ".manifest.jsonl.tmp"):
        with suppress(FileNotFoundError):
            os.stat(name, dir_fd=root, follow_symlinks=False)
            return True
    return False


def _create_settings(root: int, settings: dict[str, Any]) -> bool:
    """Record the settings unless another export recorded its own first (link never replaces)."""
    tmp = _temporary_name()
    with _atomic(root, tmp) as f:
        f.write(json.dumps(settings, sort_keys=True, indent=1).encode())
    try:
        os.link(tmp, SETTINGS, src_dir_fd=root, dst_dir_fd=root, follow_symlinks=False)
        return True
    except FileExistsError:
        return False
    finally:
        os.unlink(tmp, dir_fd=root)


def _differences(found: dict[str, Any], settings: dict[str, Any]) -> str:
    """What changed, for the refusal: values of plain settings, names of tables (kept as digests)."""
    if not found:
        return "its settings are unknown: made by an older maskstore, or its settings file is damaged"
    names = [k for k in sorted(set(found) | set(settings)) if found.get(k) != settings.get(k)]
    plain = (bool, int, float, str, type(None))
    return ", ".join(f"{k} differ" if k in ("mask_labels", "label_colors") or not isinstance(found.get(k), plain)
                     or not isinstance(settings.get(k), plain) else f"{k}: {found.get(k)!r} there, {settings.get(k)!r} now"
                     for k in names)


def _clear(root: int) -> None:
    """Remove an earlier export: the png and jpg files of the frame folders (then the emptied folders),
    the manifest, the legend and temporary files. Links and other files are left alone."""
    with os.scandir(root) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                folder = os.open(entry.name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=root)
                try:
                    with os.scandir(folder) as files:
                        for file in files:
                            if file.is_file(follow_symlinks=False) and _own_file(file.name):
                                os.unlink(file.name, dir_fd=folder)
                finally:
                    os.close(folder)
                with suppress(OSError):
                    os.rmdir(entry.name, dir_fd=root)
            elif entry.name in (MANIFEST, LEGEND) or _temporary(entry.name):
                os.unlink(entry.name, dir_fd=root)


def _own_file(name: str) -> bool:
    """An image or a temporary file in a frame folder."""
    return name.endswith((".png", ".jpg")) or _temporary(name)


def _temporary(name: str) -> bool:
    return name.startswith(TMP_PREFIX) or bool(_LEGACY_TMP.match(name))


def _claim(root: int, out: Path, settings: dict[str, Any], overwrite: bool) -> bool:
    """Record this export's settings in the folder; True when it already holds an export with these
    very settings (a re-run: complete files are kept)."""
    while True:
        found = _read_settings(root)
        if found == settings:
            return True
        if found is None and not _holds_export(root):
            if _create_settings(root, settings):
                return False
            continue  # another export claimed the folder a moment ago: compare with its settings
        if not overwrite:
            raise MaskstoreError(f"{out} holds an export made with other settings ({_differences(found or {}, settings)}); "
                                 "pass --overwrite (overwrite=True) to replace it, or export into another folder")
        _clear(root)  # the old settings stay until the old images are gone, so a crash here is refused again
        with _atomic(root, SETTINGS) as f:
            f.write(json.dumps(settings, sort_keys=True, indent=1).encode())
        return False


# ----------------------------------------------------------------------------- rendering

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
    """Everything a worker needs, picklable: where the archive is (for embedded images), the labels and
    colours of the export's snapshot, what to render and where to write."""

    archive: str
    out: str
    mode: str
    ext: str
    mask_id: str | None
    options: tuple[tuple[str, Any], ...]
    mask_labels: list[dict[str, Any]]
    label_colors: dict[str, RGB]
    resume: bool


@dataclass(frozen=True)
class SnapshotVersion:
    """A version as of the export's snapshot: ``render`` reads labels and colours from here."""

    archive: Archive
    mask_labels: list[dict[str, Any]]
    label_colors: dict[str, RGB]

    def get_label_colors(self) -> dict[str, RGB]:
        return self.label_colors

    def open_image(self, uri: str, what: str = "image") -> Image.Image:
        return self.archive.open_image(uri, what)


@dataclass
class Done:
    """What one task did: its manifest rows, the mask values its images hold (None: unknown, a mask
    without statistics) and the write that failed, which stops the export: (path, errno, reason)."""

    frames: int
    rows: list[dict[str, Any]] = field(default_factory=list)
    values: set[int] | None = field(default_factory=set)
    failure: tuple[str, int, str] | None = None

    def add(self, row: dict[str, Any], mask: Mapping[str, Any] | None = None) -> None:
        self.rows.append(row)
        if mask is not None and self.values is not None:
            if mask.get("values") is None:
                self.values = None
            else:
                self.values.update(packed_key(v) for v in mask["values"])


Planned = tuple[dict[str, Any], dict[str, Any], str]


def _planned(d: Mapping[str, Any], mask_id: str | None, ext: str) -> list[Planned]:
    """(source, mask, file name) of each source of a frame dict that has a mask to export; names are
    distinct within the frame even where source ids differ only in case (case-folding file systems
    would merge them)."""
    planned, taken = [], set()
    for source in d["sources"]:
        mask = next((m for m in source["masks"] if mask_id is None or m["id"] == mask_id), None)
        if mask is None:
            continue
        name = safe_name(source["id"])
        if name.casefold() in taken:
            name = safe_name(source["id"], hashed=True)
        taken.add(name.casefold())
        planned.append((source, mask, f"{name}.{ext}"))
    return planned


def _render_one(job: Job, version: SnapshotVersion, d: Mapping[str, Any], source: dict[str, Any],
                mask: dict[str, Any]) -> np.ndarray:
    # A frame of this one source: a frame object keys its sources by id, which would merge "" and "0".
    frame = frame_from_dict({**d, "sources": [source]})
    return render(frame, version, mode=job.mode, source_id=source["id"], mask_id=mask["id"], **dict(job.options))


def _export_frame(job: Job, version: SnapshotVersion, root: int, d: Mapping[str, Any], done: Done) -> None:
    """Render and write one frame's images; a failed write is recorded in ``done`` and ends the frame."""
    planned = _planned(d, job.mask_id, job.ext)
    if not planned:
        return
    folder_name = safe_name(d["id"])
    rows = [{"frame_id": d["id"], "source_id": s["id"], "mask_id": m["id"], "mode": job.mode,
             "path": f"{folder_name}/{name}"} for s, m, name in planned]
    try:
        folder = _frame_folder(root, folder_name, job.out)
    except MaskstoreError as exc:
        for row in rows:
            done.add({**row, "status": "error", "error": str(exc)})
        return
    except OSError as exc:
        done.failure = (f"{job.out}/{folder_name}", exc.errno or 0, exc.strerror or str(exc))
        return
    try:
        for (source, mask, name), row in zip(planned, rows):
            size = _finished(folder, name, job.ext) if job.resume else None
            if size is not None:
                done.add({**row, "status": "skipped", "width": size[0], "height": size[1]}, mask)
                continue
            try:
                array = _render_one(job, version, d, source, mask)
                data = encode_image(array, job.ext)
            except MaskstoreError as exc:
                done.add({**row, "status": "error", "error": str(exc)})
                continue
            try:
                with _atomic(folder, name) as f:
                    f.write(data)
            except OSError as exc:
                done.failure = (f"{job.out}/{row['path']}", exc.errno or 0, exc.strerror or str(exc))
                return
            done.add({**row, "status": "written", "width": int(array.shape[1]), "height": int(array.shape[0])},
                     mask)
    finally:
        os.close(folder)


def _render_task(job: Job, archive: Archive, root: int, frames: list[dict[str, Any]]) -> Done:
    version = SnapshotVersion(archive, job.mask_labels, job.label_colors)
    done = Done(len(frames))
    for d in frames:
        _export_frame(job, version, root, d, done)
        if done.failure is not None:
            break
    return done


_WORKER_ARCHIVES: dict[str, Archive] = {}


def _worker(job: Job, frames: list[dict[str, Any]], open_archive: Callable[..., Archive]) -> Done:
    """One task in a worker process; ``open_archive`` is the caller's archive class (pickled by name),
    so this stage opens the worker's own read-only handle without importing the façade above it."""
    archive = _WORKER_ARCHIVES.get(job.archive)
    if archive is None:
        archive = _WORKER_ARCHIVES[job.archive] = open_archive(job.archive, readonly=True)
    try:
        root = os.open(job.out, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        return Done(len(frames), failure=(job.out, exc.errno or 0, exc.strerror or str(exc)))
    try:
        return _render_task(job, archive, root, frames)
    finally:
        os.close(root)


def _chunks(items: Iterable[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


def _run_here(job: Job, archive: Archive, root: int, tasks: Iterator[list[dict[str, Any]]]) -> Iterator[Done]:
    for task in tasks:
        done = _render_task(job, archive, root, task)
        yield done
        if done.failure is not None:
            return


def _run_pool(job: Job, tasks: Iterator[list[dict[str, Any]]], jobs: int,
              open_archive: Callable[..., Archive]) -> Iterator[Done]:
    """Results as tasks finish, at most ``4 * jobs`` in flight. After a failed write no task starts;
    the running ones finish and report what they wrote."""
    with process_pool(jobs) as pool:
        pending: set[Future] = set()
        failed = False
        try:
            while True:
                while not failed and len(pending) < 4 * jobs and (task := next(tasks, None)) is not None:
                    pending.add(pool.submit(_worker, job, task, open_archive))
                if not pending:
                    return
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    done = future.result()
                    failed |= done.failure is not None
                    yield done
                if failed:
                    pending = {f for f in pending if not f.cancel()}
        finally:
            for future in pending:
                future.cancel()


def draw_legend(entries: list[tuple[str, RGB]], file: str | os.PathLike[str] | BinaryIO) -> None:
    """A PNG listing each label next to a swatch of its colour."""
    row = 26
    label_font = font(16)
    image = Image.new("RGB", (360, 16 + row * max(len(entries), 1)), "white")
    draw = ImageDraw.Draw(image)
    for i, (label, color) in enumerate(entries):
        y = 8 + i * row
        draw.rectangle([10, y, 40, y + row - 8], fill=tuple(color), outline="black")
        draw.text((52, y), label, fill="black", font=label_font)
    image.save(file, format="PNG")


# ----------------------------------------------------------------------------- export

def _open_folder(out: Path) -> int:
    try:
        out.mkdir(parents=True, exist_ok=True)
        return os.open(out, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        raise MaskstoreError(f"cannot export into {out}: {exc.strerror or exc}"
                             f"{f' ({exc.filename})' if exc.filename else ''}") from None


def _stopped(out: Path, report: ExportReport, path: str, code: int, reason: str) -> MaskstoreError:
    full = " (the disk holding it is full)" if code in (errno.ENOSPC, errno.EDQUOT) else ""
    return MaskstoreError(f"export to {out} stopped{full}: cannot write {path}: {reason}; {report.written} images "
                          f"written, {report.skipped} already there; run the same export again to finish it")


def _collect(results: Iterator[Done], manifest: BinaryIO, report: ExportReport,
             progress: Callable[[int], None] | None) -> tuple[set[int] | None, tuple[str, int, str] | None]:
    """Write the manifest rows and count them; the mask values shown and the first failed write."""
    present: set[int] | None = set()
    failure = None
    for done in results:
        for row in done.rows:
            manifest.write(json.dumps(row, ensure_ascii=False).encode() + b"\n")
            if row["status"] == "written":
                report.written += 1
            elif row["status"] == "skipped":
                report.skipped += 1
            else:
                report.errors.append((row["frame_id"], row["error"]))
        present = None if present is None or done.values is None else present | done.values
        failure = failure or done.failure
        if progress is not None:
            progress(done.frames)
    return present, failure


def export(version: DatasetVersion, out: str | os.PathLike[str], query: str = "", mode: str = "segmentation",
           jobs: int | None = None, format: str = "png", mask_id: str | None = None,
           progress: Callable[[int], None] | None = None, overwrite: bool = False,
           **render_options: Any) -> ExportReport:
    """Render every selected frame's sources into ``out``; see the module docstring.

    ``render_options`` go to ``maskstore.render`` (opacity, colors, background, resize, tint, ...).
    ``overwrite`` replaces an export made there with other settings (else that is an error).
    """
    ext = image_format(out, format)
    check_format(ext, mode, render_options)
    check_options(mode, **render_options)
    jobs = max(1, jobs if jobs is not None else (os.cpu_count() or 1))
    out_dir = Path(out)
    root = _open_folder(out_dir)
    report = ExportReport(manifest=out_dir / MANIFEST)
    try:
        with engine.snapshot(version, query) as (rec, frames):
            colors = {label: parse_color(c) for label, c in rec["label_colors"].items()}
            settings = _settings(rec, colors, mode, ext, mask_id, render_options)
            resume = _claim(root, out_dir, settings, overwrite)
            job = Job(str(version.archive.path.resolve()), str(out_dir.resolve()), mode, ext, mask_id,
                      tuple(sorted(render_options.items())), rec["mask_labels"], colors, resume)
            tasks = _chunks(frames, FRAMES_PER_TASK)
            results = (_run_pool(job, tasks, jobs, type(version.archive)) if jobs > 1
                       else _run_here(job, version.archive, root, tasks))
            with _atomic(root, MANIFEST) as manifest:
                present, failure = _collect(results, manifest, report, progress)
                if failure is not None:
                    raise _stopped(out_dir, report, *failure)
        if mode == "segmentation":
            entries = legend_entries(rec["mask_labels"], colors, render_options.get("colors"), present)
            with _atomic(root, LEGEND) as f:
                draw_legend(entries, f)
            report.legend = out_dir / LEGEND
    except OSError as exc:
        raise _stopped(out_dir, report, str(exc.filename or out_dir), exc.errno or 0,
                       exc.strerror or str(exc)) from None
    finally:
        os.close(root)
    return report
