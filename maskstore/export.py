"""Export the frames of a query as masked images: ``<out>/<frame_id>/<source_id>.<ext>``; or, with
``layout=``, their images and masks in a dataset layout (``maskstore.layouts``).

Both go through one writer: a frame becomes a list of ``Output`` files (folder, name, how to make
the bytes), written and resumed alike. Class-index images (``mode="index"``) are 8-bit PNGs, 16-bit
when a class id exceeds 255.

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
from fractions import Fraction
from functools import partial
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np
from PIL import Image, ImageDraw

from .errors import FrameError, MaskError, MaskstoreError
from .labels import RGB, packed_key, parse_color
from .layouts import LABEL_TABLE, SPLIT_FOLDER, Layout, file_content, layout_files, plan_layout
from .media import read_bytes, video_frame_rate
from .model import frame_from_dict
from .query import engine
from .render import check_options, legend_entries, render
from .stats import process_pool
from .summary import font
from .video import encode_video, is_video
from .video import size_of as video_size_of

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
PNG_MAX_ID = 65535  # a PNG's widest grey sample is 16 bits
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
    if mode == "index":
        enumeration = options.get("enumeration")
        ids = [options.get("ignore", 255), *(enumeration.values() if isinstance(enumeration, Mapping) else ())]
        wide = [i for i in ids if isinstance(i, int) and i > PNG_MAX_ID]
        if wide:
            raise FrameError(f"class id {max(wide)} does not fit a PNG: class-index images hold ids up to "
                             f"{PNG_MAX_ID} (16-bit PNGs when an id exceeds 255)")


def encode_image(image: np.ndarray | Image.Image, ext: str) -> bytes:
    """The PNG or JPEG bytes of a rendered array or an image (16-bit grey stays 16-bit in a PNG)."""
    buffer = io.BytesIO()
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
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
        if ext == "mp4":  # written whole then renamed; checked by reading its header
            return video_size_of(f) if stat.S_ISREG(os.fstat(fd).st_mode) else None
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


def _folder(root: int, parts: tuple[str, ...], out: str) -> int:
    """A folder under the export folder (a frame's, or a layout's ``a/b/c``), each level made when
    missing and opened without following links."""
    fd = os.dup(root)
    try:
        for depth, name in enumerate(parts, start=1):
            with suppress(FileExistsError):
                os.mkdir(name, dir_fd=fd)
            try:
                inner = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            except OSError as exc:
                if exc.errno not in (errno.ENOTDIR, errno.ELOOP):
                    raise
                link = stat.S_ISLNK(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode)
                what = "a symbolic link; export never writes through links" if link else "not a folder"
                raise MaskstoreError(f"{out}/{'/'.join(parts[:depth])} is {what}") from None
            os.close(fd)
            fd = inner
    except BaseException:
        os.close(fd)
        raise
    return fd


# ----------------------------------------------------------------------------- settings

def _settings(rec: dict[str, Any], colors: dict[str, RGB], mode: str, ext: str, mask_id: str | None,
              options: Mapping[str, Any], layout: Layout | None = None) -> dict[str, Any]:
    """Everything that decides an exported image's bytes, as JSON values; the label and colour
    tables by digest, so the record stays small however many labels there are."""
    if layout is not None:
        return {"dataset": rec["dataset"], "version": rec["name"], "layout": layout.name, "kind": layout.kind,
                "split": layout.split, "mask_id": mask_id, "mask_labels": _digest(rec["mask_labels"]),
                "label_colors": _digest(colors)}
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
        if rec.get("mask_tolerance"):  # absent when 0, so exports made before tolerance existed resume
            settings["mask_tolerance"] = rec["mask_tolerance"]
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


def differences(found: dict[str, Any], settings: dict[str, Any]) -> str:
    """What changed, for the refusal: values of plain settings, names of tables (kept as digests)."""
    if not found:
        return "its settings are unknown: made by an older maskstore, or its settings file is damaged"
    names = [k for k in sorted(set(found) | set(settings)) if found.get(k) != settings.get(k)]
    plain = (bool, int, float, str, type(None))
    return ", ".join(f"{k} differ" if k in ("mask_labels", "label_colors") or not isinstance(found.get(k), plain)
                     or not isinstance(settings.get(k), plain) else f"{k}: {found.get(k)!r} there, {settings.get(k)!r} now"
                     for k in names)


def _clear(root: int) -> None:
    """Remove an earlier export: the png and jpg files of the frame folders and of a layout's folders
    at any depth (then the emptied folders), a VOC split list, the manifest, the legend, the label
    table and temporary files. Links and other files are left alone."""
    with os.scandir(root) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                _clear_folder(root, entry.name, ())
            elif entry.name in (MANIFEST, LEGEND, LABEL_TABLE) or _temporary(entry.name):
                os.unlink(entry.name, dir_fd=root)


def _clear_folder(parent: int, name: str, path: tuple[str, ...]) -> None:
    path = (*path, name)
    folder = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent)
    try:
        with os.scandir(folder) as files:
            for file in files:
                if file.is_dir(follow_symlinks=False):
                    _clear_folder(folder, file.name, path)
                elif file.is_file(follow_symlinks=False) and (
                        _own_file(file.name) or (path == SPLIT_FOLDER and file.name.endswith(".txt"))):
                    os.unlink(file.name, dir_fd=folder)
    finally:
        os.close(folder)
    with suppress(OSError):
        os.rmdir(name, dir_fd=parent)


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
            raise MaskstoreError(f"{out} holds an export made with other settings ({differences(found or {}, settings)}); "
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
    layout: Layout | None = None
    mask_tolerance: int = 0
    video: bool = False  # one overlay video per task (a context's frames) instead of images


@dataclass(frozen=True)
class SnapshotVersion:
    """A version as of the export's snapshot: ``render`` reads labels and colours from here."""

    archive: Archive
    mask_labels: list[dict[str, Any]]
    label_colors: dict[str, RGB]
    mask_tolerance: int = 0

    def get_label_colors(self) -> dict[str, RGB]:
        return self.label_colors

    def open_image(self, uri: str, what: str = "image", timestamp: int = 0,
                   content_type: str | None = None) -> Image.Image:
        return self.archive.open_image(uri, what, timestamp, content_type)

    def read_bytes(self, uri: str) -> bytes:
        return read_bytes(self.archive.resolve(uri), self.archive.read_blob)

    def frame_rate(self, frames: list[dict[str, Any]]) -> Fraction:
        """The rate of an overlay video of these frames (one context, in timestamp order): its source
        video's, else one frame per median timestamp step, else 25 per second."""
        source = frames[0]["sources"][0]
        if is_video(source["uri"], source.get("content_type")):
            return video_frame_rate(self.archive.resolve(source["uri"]), self.archive.read_blob)
        steps = sorted(b["timestamp"] - a["timestamp"] for a, b in zip(frames, frames[1:]) if b["timestamp"] > a["timestamp"])
        return Fraction(1000, steps[len(steps) // 2]) if steps else Fraction(25)


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


@dataclass(frozen=True)
class Output:
    """One file a frame's export writes: its folders under the export folder, name, format, manifest
    row, how to make its content (an array or image to encode, or bytes as they are) and the mask it
    shows (for the legend)."""

    folder: tuple[str, ...]
    name: str
    ext: str
    row: dict[str, Any]
    make: Callable[[], np.ndarray | Image.Image | bytes]
    mask: Mapping[str, Any] | None = None


def _mode_outputs(job: Job, version: SnapshotVersion, d: Mapping[str, Any]) -> list[Output]:
    """``<frame_id>/<source_id>.<ext>``: each source's mask rendered in the export's mode."""
    folder = safe_name(d["id"])
    return [Output((folder,), name, job.ext, {"frame_id": d["id"], "source_id": s["id"], "mask_id": m["id"],
                                              "mode": job.mode, "path": f"{folder}/{name}"},
                   partial(_render_one, job, version, d, s, m), m)
            for s, m, name in _planned(d, job.mask_id, job.ext)]


def _layout_outputs(job: Job, version: SnapshotVersion, d: Mapping[str, Any]) -> list[Output]:
    """The image and mask files of a frame in the job's dataset layout (``maskstore.layouts``)."""
    layout = job.layout
    assert layout is not None
    planned = _planned(d, job.mask_id, "png")
    if not planned:
        return []
    if len(planned) > 1:
        raise FrameError(f"frame {d['id']!r} has masks on {len(planned)} sources "
                         f"({', '.join(repr(s['id']) for s, _, _ in planned)}); the {layout.name} layout holds one "
                         "image and one mask per frame: choose the mask with mask_id")
    (source, mask, _), = planned
    exts = ["jpg" if item.get("content_type") == "image/jpeg" else "png" for item in (source, mask)]
    outputs = []
    for file in layout_files(layout, d, source, mask, *exts):
        parts = (*file.folder, file.name)
        if not all(safe_name(p) == p for p in parts):
            raise FrameError(f"frame {d['id']!r}: {'/'.join(parts)} is no safe file path, and another name would "
                             f"give another id when the {layout.name} folder is ingested again; give the frame "
                             "an id that is a plain file name")
        outputs.append(Output(file.folder, file.name, file.ext,
                              {"frame_id": d["id"], "source_id": source["id"], "mask_id": mask["id"],
                               "layout": layout.name, "file": file.role, "path": "/".join(parts)},
                              partial(file_content, layout, file, version.read_bytes, version.open_image)))
    return outputs


def _encoded(content: np.ndarray | Image.Image | bytes, ext: str) -> tuple[bytes, tuple[int, int]]:
    """The bytes to write and the image's (width, height)."""
    if isinstance(content, bytes):
        try:
            with Image.open(io.BytesIO(content)) as image:
                return content, image.size
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            raise MaskError(f"not a readable image: {exc}") from None
    size = (int(content.shape[1]), int(content.shape[0])) if isinstance(content, np.ndarray) else content.size
    try:
        return encode_image(content, ext), size
    except (OSError, KeyError, ValueError) as exc:  # a mode the format cannot hold, e.g. a float matte as PNG
        mode = content.mode if isinstance(content, Image.Image) else content.dtype
        raise MaskError(f"cannot write a {mode} image as {ext}: {exc}") from None


def _export_frame(job: Job, version: SnapshotVersion, root: int, d: Mapping[str, Any], done: Done) -> None:
    """Make and write one frame's files; a failed write is recorded in ``done`` and ends the frame."""
    try:
        outputs = _layout_outputs(job, version, d) if job.layout is not None else _mode_outputs(job, version, d)
    except MaskstoreError as exc:
        done.add({"frame_id": d["id"], "status": "error", "error": str(exc)})
        return
    folders: dict[tuple[str, ...], int] = {}
    try:
        for out in outputs:
            try:
                if out.folder not in folders:
                    folders[out.folder] = _folder(root, out.folder, job.out)
            except MaskstoreError as exc:
                done.add({**out.row, "status": "error", "error": str(exc)})
                continue
            except OSError as exc:
                done.failure = (f"{job.out}/{'/'.join(out.folder)}", exc.errno or 0, exc.strerror or str(exc))
                return
            folder = folders[out.folder]
            size = _finished(folder, out.name, out.ext) if job.resume else None
            if size is not None:
                done.add({**out.row, "status": "skipped", "width": size[0], "height": size[1]}, out.mask)
                continue
            try:
                data, size = _encoded(out.make(), out.ext)
            except MaskstoreError as exc:
                done.add({**out.row, "status": "error", "error": str(exc)})
                continue
            try:
                with _atomic(folder, out.name) as f:
                    f.write(data)
            except OSError as exc:
                done.failure = (f"{job.out}/{out.row['path']}", exc.errno or 0, exc.strerror or str(exc))
                return
            done.add({**out.row, "status": "written", "width": size[0], "height": size[1]}, out.mask)
    finally:
        for fd in folders.values():
            os.close(fd)


def by_context(frames: Iterable[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """The frames of each context in timestamp order (then id): the tasks of a video export."""
    contexts: dict[str, list[dict[str, Any]]] = {}
    for d in frames:
        contexts.setdefault(d["context_id"], []).append(d)
    for context in sorted(contexts):
        yield sorted(contexts[context], key=lambda d: (d["timestamp"], d["id"]))


def _export_video(job: Job, version: SnapshotVersion, root: int, frames: list[dict[str, Any]], done: Done) -> None:
    """One context's frames rendered, in order, into ``<context>.mp4`` (written whole, then renamed)."""
    context = frames[0]["context_id"]
    name = f"{safe_name(context)}.mp4"
    row = {"context_id": context, "path": name, "mode": job.mode, "frames": len(frames)}
    if job.resume and _finished(root, name, "mp4") is not None:
        done.add({**row, "status": "skipped"})
        return
    try:
        rate = version.frame_rate(frames)
        pictures = (_render_one(job, version, d, *_video_source(d, job.mask_id)) for d in frames)
        with _atomic(root, name) as f:
            width, height = encode_video(f, pictures, rate)
    except MaskstoreError as exc:
        done.add({**row, "status": "error", "error": str(exc)})
        return
    except OSError as exc:
        done.failure = (f"{job.out}/{name}", exc.errno or 0, exc.strerror or str(exc))
        return
    done.add({**row, "status": "written", "fps": str(rate), "width": width, "height": height})


def _video_source(d: Mapping[str, Any], mask_id: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The source and mask a frame shows in its context's video: the first source with the mask, as
    ``render.pick_mask`` and the image exports choose."""
    planned = _planned(d, mask_id, "")
    if not planned:
        raise FrameError(f"frame {d['id']!r} has no mask{f' {mask_id!r}' if mask_id else ''} on any source")
    source, mask, _ = planned[0]
    return source, mask


def render_task(job: Job, archive: Archive, root: int, frames: list[dict[str, Any]]) -> Done:
    """One task of an export, in whatever process runs it: its frames' files, or its context's video."""
    version = SnapshotVersion(archive, job.mask_labels, job.label_colors, job.mask_tolerance)
    done = Done(len(frames))
    if job.video:
        _export_video(job, version, root, frames, done)
        return done
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
        return render_task(job, archive, root, frames)
    finally:
        os.close(root)


def _chunks(items: Iterable[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


def _run_here(job: Job, archive: Archive, root: int, tasks: Iterator[list[dict[str, Any]]]) -> Iterator[Done]:
    for task in tasks:
        done = render_task(job, archive, root, task)
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
                report.errors.append((row.get("frame_id", row.get("context_id")), row["error"]))
        present = None if present is None or done.values is None else present | done.values
        failure = failure or done.failure
        if progress is not None:
            progress(done.frames)
    return present, failure


@contextmanager
def _split_list(root: int, out: Path, layout: Layout | None) -> Iterator[BinaryIO | None]:
    """VOC's ``ImageSets/Segmentation/<split>.txt`` when the layout has a split, written like the
    manifest (complete or not at all); else None."""
    if layout is None or layout.name != "voc" or layout.split is None:
        yield None
        return
    folder = _folder(root, SPLIT_FOLDER, str(out))
    try:
        with _atomic(folder, f"{safe_name(layout.split)}.txt") as f:
            yield f
    finally:
        os.close(folder)


def _listed(results: Iterator[Done], listing: BinaryIO) -> Iterator[Done]:
    """The results, writing the id of each frame whose mask is in the folder to the split list."""
    for done in results:
        for row in done.rows:
            if row.get("file") == "mask" and row["status"] != "error":
                listing.write(row["frame_id"].encode() + b"\n")
        yield done


@dataclass(frozen=True)
class Plan:
    """An export's choices, checked before the folder is touched: what a local export, a Dask export
    and a video export share (they differ only in how their tasks run)."""

    out: Path
    mode: str
    ext: str
    mask_id: str | None
    options: dict[str, Any]
    layout: str | None = None
    split: str | None = None
    video: bool = False

    def settings(self, rec: dict[str, Any]) -> tuple[dict[str, Any], dict[str, RGB], Layout | None]:
        """(settings record, colours, layout) of this plan on a version record."""
        colors = {label: parse_color(c) for label, c in rec["label_colors"].items()}
        chosen = None if self.layout is None else plan_layout(self.layout, self.split, rec["mask_labels"], colors,
                                                               f"{rec['dataset']}/{rec['name']}")
        settings = _settings(rec, colors, self.mode, self.ext, self.mask_id, self.options, chosen)
        if self.video:
            settings["video"] = True
        return settings, colors, chosen


def plan_export(out: str | os.PathLike[str], mode: str = "segmentation", format: str = "png",
                mask_id: str | None = None, layout: str | None = None, split: str | None = None,
                video: bool = False, **render_options: Any) -> Plan:
    """Check an export's options (see ``export``) and fix its file format."""
    if layout is not None and (mode != "segmentation" or render_options or format != "png" or video):
        raise FrameError("a layout export writes the images and masks themselves: mode, format, video and "
                         "render options do not apply to it")
    if layout is None and split is not None:
        raise FrameError("a split applies to a layout export only")
    if video and (mode not in ("segmentation", "alpha") or render_options.get("layer_only")):
        raise FrameError('a video export writes RGB frames: mode "segmentation" or "alpha", without layer_only')
    ext = "mp4" if video else image_format(out, format)
    if not video:
        check_format(ext, mode, render_options)
    check_options(mode, **render_options)
    return Plan(Path(out), mode, ext, mask_id, render_options, layout, split, video)


Runner = Callable[[Job, int], Iterator[Done]]


def write_export(plan: Plan, rec: dict[str, Any], archive: str | os.PathLike[str], run: Runner,
                 overwrite: bool = False, progress: Callable[[int], None] | None = None) -> ExportReport:
    """Claim ``plan.out`` for this export (resume, refuse or overwrite), run its tasks (``run(job,
    root)`` yields what each did), and write the manifest, the split list and the legend or label
    table. Every way of running an export goes through here."""
    root = _open_folder(plan.out)
    report = ExportReport(manifest=plan.out / MANIFEST)
    try:
        settings, colors, chosen = plan.settings(rec)
        resume = _claim(root, plan.out, settings, overwrite)
        job = Job(str(Path(archive).resolve()), str(plan.out.resolve()), plan.mode, plan.ext, plan.mask_id,
                  tuple(sorted(plan.options.items())), rec["mask_labels"], colors, resume, chosen,
                  rec.get("mask_tolerance", 0), plan.video)
        results = run(job, root)
        with _atomic(root, MANIFEST) as manifest, _split_list(root, plan.out, chosen) as listing:
            if listing is not None:
                results = _listed(results, listing)
            present, failure = _collect(results, manifest, report, progress)
            if failure is not None:
                raise _stopped(plan.out, report, *failure)
        if chosen is not None:
            with _atomic(root, LABEL_TABLE) as f:
                f.write(("[\n" + ",\n".join(json.dumps(e) for e in chosen.table_file()) + "\n]\n").encode())
        elif plan.mode == "segmentation":
            entries = legend_entries(rec["mask_labels"], colors, plan.options.get("colors"), present)
            with _atomic(root, LEGEND) as f:
                draw_legend(entries, f)
            report.legend = plan.out / LEGEND
    except OSError as exc:
        raise _stopped(plan.out, report, str(exc.filename or plan.out), exc.errno or 0,
                       exc.strerror or str(exc)) from None
    finally:
        os.close(root)
    return report


def export(version: DatasetVersion, out: str | os.PathLike[str], query: str = "", mode: str = "segmentation",
           jobs: int | None = None, format: str = "png", mask_id: str | None = None,
           progress: Callable[[int], None] | None = None, overwrite: bool = False,
           layout: str | None = None, split: str | None = None, video: bool = False,
           **render_options: Any) -> ExportReport:
    """Render every selected frame's sources into ``out``; see the module docstring.

    ``render_options`` go to ``maskstore.render`` (opacity, colors, background, resize, tint, ...).
    ``overwrite`` replaces an export made there with other settings (else that is an error).
    ``layout`` (``voc``, ``cityscapes``, ``folders``) writes the images and masks themselves in that
    dataset layout instead, with its ``labels.json`` (and ``split``): see ``maskstore.layouts``.
    ``video`` writes one overlay video per context instead (``<context>.mp4``, frames in timestamp
    order at the source's frame rate), one context per task.
    """
    plan = plan_export(out, mode, format, mask_id, layout, split, video, **render_options)
    jobs = max(1, jobs if jobs is not None else (os.cpu_count() or 1))
    with engine.snapshot(version, query) as (rec, frames):
        tasks = by_context(frames) if video else _chunks(frames, FRAMES_PER_TASK)

        def run(job: Job, root: int) -> Iterator[Done]:
            if jobs > 1:
                return _run_pool(job, tasks, jobs, type(version.archive))
            return _run_here(job, version.archive, root, tasks)
        return write_export(plan, rec, version.archive.path, run, overwrite, progress)
