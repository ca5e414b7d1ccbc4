"""The LMDB environment: versions, frame records and their secondary indexes, written together.

Layout (one environment, one file, named sub-databases; keys big-endian so they sort numerically):

=============  ===================================  ==========================================
sub-db         key                                  value
=============  ===================================  ==========================================
meta           b"format", b"next_version"           format record / counter
versions       version id (8)                       version record
frames         version id (8) + seq (8)             frame record (the normalized frame dict)
frame_ids      version id (8) + frame id (utf-8)    seq (8)
ix_context     version id (8) + context id          seq (dupsort, dupfixed)
ix_value       version id (8) + r g b (3)           seq (dupsort, dupfixed)
ix_source      version id (8) + source id           seq (dupsort, dupfixed)
ix_mask        version id (8) + mask id             seq (dupsort, dupfixed)
ix_roi         version id (8) + ROI label           seq (dupsort, dupfixed)
dirty          version id (8) + chunk (8)           empty: column chunks to rebuild (older writers)
columns        version id (8) + chunk (8)           scan columns of 4096 frame seqs (query.columns)
blobs          sha256 (32)                          embedded image or mask bytes
=============  ===================================  ==========================================

Every write is one transaction: a frame, its statistics and its index entries commit together.
Labels never enter an index: ``label == X`` resolves X to mask values at query time, so changing
``mask_labels`` needs no rebuild.
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import os
import struct
import time
import gc
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

import lmdb
from PIL import Image

from . import _speedups, records
from .errors import (ArchiveError, FrameError, FrameNotFoundError, MaskError, MaskstoreError,
                     NetworkFilesystemWarning, ReadOnlyError, VersionNotFoundError)
from .labels import RGB, mask_labels_dict, normalize_label_colors, normalize_mask_labels, parse_color
from .media import BLOB_PREFIX, blob_uri, content_type_of, local_path, open_image, read_bytes
from .model import (Frame, frame_from_dict, normalize_frame, normalize_frame_dict, refuse_constructor_words,
                    type_name)
from .stats import MaskDecoder
from .store import DEFAULT_MAX_READERS, Store, lock_default

if TYPE_CHECKING:
    import numpy as np

T = TypeVar("T")


class Prepared(NamedTuple):
    """A batch ready to write, in columns: per frame its id, its record and the (dotted path, type)
    of its meta values; the index keys of the batch; and its embedded files by digest."""

    ids: list[str]
    records: list[bytes]
    types: list[tuple[tuple[str, str], ...]]
    postings: _speedups.Postings
    blobs: dict[bytes, bytes]


U64 = struct.Struct(">Q")
INDEX_DBS = ("ix_context", "ix_value", "ix_source", "ix_mask", "ix_roi")
VERSION_DBS = ("frames", "frame_ids", "dirty", "columns") + INDEX_DBS
DUP_DBS = frozenset(INDEX_DBS)
MAX_KEY_TEXT = 400  # LMDB keys stop at 511 bytes; longer texts are indexed by their hash
# Content types that ``content_type_of`` gave per file suffix, for the compiled encoder.
SUFFIX_TYPES: dict[str, str | None] = {}
CHUNK_BITS = 12  # scan columns are rebuilt in chunks of 4096 frame seqs


def u64(n: int) -> bytes:
    return U64.pack(n)


def entries(txn: lmdb.Transaction, db: Any, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) of every entry whose key starts with ``prefix``, in key order, duplicates included
    (MDB_NEXT visits each): how every per-version scan walks its sub-database."""
    cursor = txn.cursor(db=db)
    if cursor.set_range(prefix):
        for key, value in cursor:
            if not key.startswith(prefix):
                return
            yield key, value


def text_key(text: str) -> bytes:
    """Index key bytes of a string; 0xff never starts UTF-8, so hashed keys cannot collide with text."""
    raw = text.encode("utf-8")
    return raw if len(raw) <= MAX_KEY_TEXT else b"\xff" + hashlib.sha256(raw).digest()


def value_key(rgb: Sequence[int]) -> bytes:
    """Index key of a mask value: its r, g, b bytes (a ``[r, g, b, count]`` entry works too)."""
    return bytes(rgb[:3])



def index_entries(rec: Mapping[str, Any]) -> dict[str, set[bytes]]:
    """Index keys (without the version prefix) of one frame record, per index sub-database: the
    writer's own definition (``_speedups.Postings``), so delete, check and repair agree with it."""
    postings = _speedups.Postings(text_key, MAX_KEY_TEXT)
    postings.add_record(0, rec)
    return {name: {key for key, _ in items} for name, items in postings.items(b"", [b""]).items()}


def meta_items(meta: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted path, value) of every meta entry, nested dicts included and walked."""
    for key, value in meta.items():
        path = prefix + key
        yield path, value
        if isinstance(value, Mapping):
            yield from meta_items(value, path + ".")


def meta_types(meta: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """(dotted path, type name) of every meta value; null has no type. Ingest gets the same list
    from ``model.normalize_frame``, found while validating meta."""
    return ((path, type_name(value)) for path, value in meta_items(meta) if value is not None)


def _merge_meta_type(known: dict[str, str], path: str, kind: str, frame_id: str) -> None:
    old = known.get(path)
    if old is None or old == kind:
        known[path] = kind
    elif {old, kind} == {"int", "float"}:
        known[path] = "float"  # ints widen to float; both are numbers
    else:
        raise FrameError(f"frame {frame_id!r}: meta.{path} is a {kind} here but a {old} in other frames of "
                         "this version; a meta key keeps one type across a version")


NETWORK_FILESYSTEMS = frozenset({"nfs", "nfs4", "cifs", "smb3", "smbfs", "fuse.sshfs", "9p", "afs", "glusterfs",
                                 "fuse.glusterfs", "lustre", "fuse.s3fs", "fuse.rclone", "davfs", "fuse.davfs2"})


def mounts() -> list[tuple[str, str]]:
    """(mount point, file system type) of this machine's mounts (Linux); empty where unknown."""
    try:
        lines = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return []
    return [(fields[1].replace("\\040", " "), fields[2]) for fields in (line.split() for line in lines)
            if len(fields) >= 3]


def network_filesystem(path: Path) -> str | None:
    """The file system type when ``path`` lives on a network mount, else None."""
    folder = str(path.resolve().parent)
    best = ("", "")
    for point, fstype in mounts():
        inside = folder == point or folder.startswith(point.rstrip("/") + "/")
        if inside and len(point) > len(best[0]):
            best = (point, fstype)
    return best[1] if best[1] in NETWORK_FILESYSTEMS else None


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector around a batch: a batch allocates many small containers
    that all live until it ends, so generational collections would only rescan them (a quarter of
    ingest time when measured)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class Archive:
    """One archive file holding many datasets and their versions.

    >>> with Archive("city.maskstore") as ar:                      # doctest: +SKIP
    ...     v = ar.create_version(dataset_name="Example", version_name="v1")
    """

    def __init__(self, path: str | os.PathLike[str], readonly: bool = False, *, lock: bool | None = None,
                 max_readers: int = DEFAULT_MAX_READERS, map_size: int | None = None, sync: bool = True,
                 jobs: int | None = None) -> None:
        """``lock=False`` reads without LMDB's reader table: only for archives no process writes
        (read-only media, published snapshots); the default is locked unless ``MASKSTORE_NO_LOCK=1``.
        ``max_readers`` sizes the reader table when this open creates the lock file."""
        self.path = Path(path)
        self._folder = self.path.absolute().parent
        self.readonly = readonly
        self._decoder = MaskDecoder(jobs)
        if self.path.is_dir():
            raise ArchiveError(f"{self.path} is a folder; an archive is a single file (e.g. data.maskstore)")
        if readonly and not self.path.exists():
            raise ArchiveError(f"no archive at {self.path}")
        if readonly and self.path.stat().st_size == 0:
            raise ArchiveError(f"{self.path} is an empty file, not a maskstore archive")
        if not readonly and (fs := network_filesystem(self.path)):
            warnings.warn(f"{self.path} is on a {fs} network file system: LMDB cannot lock or map it safely "
                          "for writing; copy the archive to a local disk to write it (reading it "
                          "read-only from one machine is fine)", NetworkFilesystemWarning, stacklevel=2)
        self._store = Store(self.path, readonly=readonly, lock=lock_default() if lock is None else lock,
                            map_size=map_size, sync=sync, max_readers=max_readers)
        self._dbs: dict[str, Any] = {}
        # Scan columns the query engine loaded, per version id (query.engine); dropped on close.
        self.column_cache: dict[int, Any] = {}
        self._store.on_reopen = self._open_dbs
        try:
            self._check_not_truncated()
            self._open_dbs()
        except BaseException:
            self._store.close()
            raise

    # ------------------------------------------------------------------ environment

    @property
    def env(self) -> lmdb.Environment:
        return self._store.env

    def _check_not_truncated(self) -> None:
        """A file shorter than its last page would kill the process (SIGBUS) on the first read there."""
        needed = (self.env.info()["last_pgno"] + 1) * self.env.stat()["psize"]
        size = self.path.stat().st_size
        if 0 < size < needed:
            raise ArchiveError(f"{self.path} is truncated: {size} bytes, but its pages need {needed}; "
                               "restore it from a copy")

    def _decode_format(self, data: bytes) -> None:
        try:
            records.decode_format(data)
        except ArchiveError as exc:
            raise ArchiveError(f"{self.path}: {exc}") from None

    def _open_dbs(self) -> None:
        """Sub-database handles. A read-only open takes them in read transactions, so it never waits for
        a writer; a writable open takes the writer lock for one instant (py-lmdb opens a writable
        environment's handles in a write transaction), creating what a new archive lacks."""
        wanted = ("meta", "versions", "blobs") + VERSION_DBS
        self._dbs.clear()
        if not self.readonly:
            self._create_dbs(wanted)
            return
        names = self.read(lambda t: {bytes(k).decode(errors="replace") for k, _ in t.cursor()})
        if "meta" not in names:
            raise ArchiveError(f"{self.path} is not a maskstore archive (no format marker)")
        if missing := set(wanted) - names:
            raise ArchiveError(f"{self.path} is damaged: sub-databases {sorted(missing)} are missing")
        for name in wanted:
            self._dbs[name] = self.env.open_db(name.encode(), create=False, dupsort=name in DUP_DBS,
                                               dupfixed=name in DUP_DBS)
        fmt = self.read(lambda t: t.get(b"format", db=self._dbs["meta"]))
        if fmt is None:
            raise ArchiveError(f"{self.path} is not a maskstore archive (no format marker)")
        self._decode_format(fmt)

    def _create_dbs(self, wanted: tuple[str, ...]) -> None:
        def work(txn: lmdb.Transaction) -> None:
            others = [k for k, _ in txn.cursor() if bytes(k).decode(errors="replace") not in wanted]
            for name in wanted:
                self._dbs[name] = self.env.open_db(name.encode(), txn=txn, create=True, dupsort=name in DUP_DBS,
                                                   dupfixed=name in DUP_DBS)
            fmt = txn.get(b"format", db=self._dbs["meta"])
            if fmt is None:
                if txn.stat(self._dbs["versions"])["entries"] or others:
                    raise ArchiveError(f"{self.path} is an LMDB file but not a maskstore archive")
                txn.put(b"format", records.encode_format(), db=self._dbs["meta"])
            else:
                self._decode_format(fmt)
        self.write(work)

    def _begin(self, write: bool = False) -> AbstractContextManager[lmdb.Transaction]:
        return self._store.begin(write)

    def read(self, fn: Callable[[lmdb.Transaction], T]) -> T:
        """Run ``fn`` in one read transaction: a consistent snapshot."""
        return self._store.read(fn)

    def write(self, fn: Callable[[lmdb.Transaction], T]) -> T:
        """Run ``fn`` in one write transaction, all or nothing; grow the map and retry when full."""
        return self._store.write(fn)

    def try_write(self, fn: Callable[[lmdb.Transaction], Any]) -> bool:
        """Run ``fn`` in a write transaction only if that needs no waiting (for caches readers store)."""
        return self._store.try_write(fn)

    def db(self, name: str) -> Any:
        return self._dbs[name]

    def sync(self) -> None:
        """Flush to disk: needed only when opened with ``sync=False``."""
        self._store.sync()

    def close(self) -> None:
        self.column_cache.clear()
        self._decoder.close()
        self._store.close()

    def __enter__(self) -> Archive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ versions

    def _version_records(self, txn: lmdb.Transaction) -> Iterator[dict[str, Any]]:
        for key, data in txn.cursor(db=self._dbs["versions"]):
            rec = records.decode_version(data)
            if u64(rec["id"]) != key:  # the key is what frames and lookups use
                raise ArchiveError(f"version record {bytes(key).hex()} is damaged: it says id {rec['id']}")
            yield rec

    def versions(self) -> list[DatasetVersion]:
        """Every version of every dataset, oldest first."""
        return [DatasetVersion(self, rec["id"]) for rec in self.read(lambda t: list(self._version_records(t)))]

    def datasets(self) -> list[str]:
        return list(dict.fromkeys(v.dataset_name for v in self.versions()))

    def _find_version(self, txn: lmdb.Transaction, dataset_name: str, version_name: str) -> dict | None:
        for rec in self._version_records(txn):
            if rec["dataset"] == dataset_name and rec["name"] == version_name:
                return rec
        return None

    def get_version(self, dataset_name: str, version_name: str) -> DatasetVersion:
        rec = self.read(lambda t: self._find_version(t, dataset_name, version_name))
        if rec is None:
            names = [f"{v.dataset_name}/{v.version_name}" for v in self.versions()]
            raise VersionNotFoundError(f"no version {dataset_name}/{version_name} in {self.path}; "
                                       f"it has: {', '.join(names) or 'no versions yet'}")
        return DatasetVersion(self, rec["id"])

    def create_version(self, dataset_name: str, version_name: str,
                       parent: DatasetVersion | str | None = None, description: str = "",
                       meta: Mapping[str, Any] | None = None, *, exist_ok: bool = False) -> DatasetVersion:
        """A new draft version; with a parent it starts with a copy of the parent's frames and labels.

        ``exist_ok=True`` returns the version of that name when it exists already (as it is: parent
        and description are not compared), so a script that failed half-way can simply run again.
        """
        if not dataset_name or not version_name:
            raise FrameError("dataset_name and version_name must be non-empty")
        parent_version = self.get_version(dataset_name, parent) if isinstance(parent, str) else parent

        def work(txn: lmdb.Transaction) -> int:
            existing = self._find_version(txn, dataset_name, version_name)
            if existing is not None:
                if exist_ok:
                    return existing["id"]
                raise FrameError(f"version {dataset_name}/{version_name} exists already; open it with "
                                 "get_version, or pass exist_ok=True to create_version to reuse it")
            counter = txn.get(b"next_version", db=self._dbs["meta"])
            vid = U64.unpack(counter)[0] if counter else 1
            txn.put(b"next_version", u64(vid + 1), db=self._dbs["meta"])
            rec: dict[str, Any] = {
                "id": vid, "dataset": dataset_name, "name": version_name, "parent": None,
                "created": time.time(), "description": description, "meta": dict(meta or {}),
                "state": "draft", "mask_labels": [], "label_colors": {}, "meta_types": {},
                "next_seq": 0, "count": 0, "generation": 0,
            }
            if parent_version is not None:
                prec = _version_record(txn, self, parent_version.id)
                rec.update({k: prec[k] for k in ("mask_labels", "label_colors", "meta_types", "next_seq", "count")})
                rec["parent"] = prec["id"]
                self._copy_version_entries(txn, u64(prec["id"]), u64(vid))
            txn.put(u64(vid), records.encode_version(rec), db=self._dbs["versions"])
            return vid

        return DatasetVersion(self, self.write(work))

    def _copy_version_entries(self, txn: lmdb.Transaction, src: bytes, dst: bytes) -> None:
        for name in VERSION_DBS:
            db = self._dbs[name]
            items = [(dst + key[8:], value) for key, value in entries(txn, db, src)]
            txn.cursor(db=db).putmulti(items, dupdata=name in DUP_DBS)

    def delete_version(self, dataset_name: str, version_name: str) -> None:
        """Remove a version and everything it holds (its children keep their own copies)."""
        version = self.get_version(dataset_name, version_name)
        prefix = u64(version.id)

        def work(txn: lmdb.Transaction) -> None:
            for name in VERSION_DBS:
                cursor = txn.cursor(db=self._dbs[name])
                if cursor.set_range(prefix):
                    while cursor.key().startswith(prefix):
                        if not cursor.delete(dupdata=True):
                            break
            txn.delete(prefix, db=self._dbs["versions"])
        self.write(work)

    # ------------------------------------------------------------------ blobs

    def read_blob(self, hexdigest: str) -> bytes:
        """Bytes of an embedded image or mask."""
        try:
            key = bytes.fromhex(hexdigest)
        except ValueError:
            raise ArchiveError(f"{BLOB_PREFIX}{hexdigest} is not a valid blob URI") from None
        data = self.read(lambda t: t.get(key, db=self._dbs["blobs"]))
        if data is None:
            raise ArchiveError(f"{BLOB_PREFIX}{hexdigest} is not embedded in {self.path}")
        # Every read is verified: hashing costs a fraction of decoding the image, and a damaged or
        # hostile archive must not render bytes that are not the ones its URI names.
        if hashlib.sha256(data).digest() != key:
            raise ArchiveError(f"{BLOB_PREFIX}{hexdigest} in {self.path} does not match its sha256: the "
                               "archive is damaged; run maskstore check")
        return data

    def resolve(self, uri: str) -> str:
        """The URI to read: a relative local path is relative to the archive's folder, so an archive
        moved together with its media folder keeps working wherever the reader runs."""
        path = local_path(uri)
        if path is None or path.is_absolute() or "://" in uri:
            return uri
        return str(self._folder / path)

    def open_image(self, uri: str, what: str = "image") -> Image.Image:
        return open_image(self.resolve(uri), self.read_blob, what=what)


def _version_record(txn: lmdb.Transaction, archive: Archive, vid: int) -> dict[str, Any]:
    data = txn.get(u64(vid), db=archive.db("versions"))
    if data is None:
        raise VersionNotFoundError(f"version id {vid} no longer exists in {archive.path}")
    return records.decode_version(data)


def _encode(frames: list[dict[str, Any]]) -> list[bytes]:
    """The frame records, or a FrameError naming the first frame that JSON can carry but the archive
    cannot store."""
    try:
        return records.encode_frames(frames)
    except (UnicodeEncodeError, OverflowError, ValueError, TypeError):
        for frame in frames:
            try:
                records.encode_frame(frame)
            except (UnicodeEncodeError, OverflowError, ValueError, TypeError) as exc:
                raise FrameError(f"frame {frame['id']!r} cannot be stored: {exc} (strings must be valid "
                                 "Unicode without lone surrogates, integers within 64 bits)") from None
        raise


_BLOB_MARK = BLOB_PREFIX.encode()


def file_references(frame: Mapping[str, Any]) -> Iterator[tuple[dict[str, Any], str]]:
    """(dict, key) of every file a frame dict names: source and mask ``uri``s and a mask's
    ``instance_uri`` (Cityscapes instanceIds), the files ``--embed`` copies in."""
    for source in frame["sources"]:
        yield source, "uri"
        for mask in source["masks"]:
            yield mask, "uri"
            if isinstance(mask.get("instance_uri"), str):
                yield mask, "instance_uri"


def _check_blobs_present(txn: lmdb.Transaction, archive: Archive, batch: Prepared) -> None:
    """Frames may name embedded files (``blob:sha256:...``) only when this archive holds them: a frame
    moved from another archive without its files would pass ingest and fail at render. Records are
    scanned as bytes first, so batches without blob URIs cost one substring search per record."""
    for frame_id, record in zip(batch.ids, batch.records):
        if _BLOB_MARK not in record:
            continue
        for item, field in file_references(records.decode_frame(record)):
            uri = item[field]
            if not uri.startswith(BLOB_PREFIX):
                continue
            try:
                key = bytes.fromhex(uri[len(BLOB_PREFIX):])
            except ValueError:
                raise FrameError(f"frame {frame_id!r}: {uri} is not a valid blob URI") from None
            if txn.get(key, db=archive.db("blobs")) is None:
                raise FrameError(f"frame {frame_id!r}: {uri} is not embedded in {archive.path}; copy frames "
                                 "between archives with their files (ingest the original files with --embed)")


def _check_ids(ids: list[str]) -> None:
    """Frame ids of one call are unique and short enough to be keys (4 UTF-8 bytes a character at most,
    so the caller checks only batches with a long id, or a repeated one)."""
    seen: set[str] = set()
    for frame_id in ids:
        if frame_id in seen:
            raise FrameError(f"frame id {frame_id!r} appears twice in one call; ids must be unique")
        if len(frame_id.encode("utf-8", errors="surrogatepass")) > MAX_KEY_TEXT:
            raise FrameError(f"frame id {frame_id[:40]!r}... is longer than {MAX_KEY_TEXT} bytes")
        seen.add(frame_id)


def _partial_frame_dict(frame: Frame | Mapping[str, Any]) -> dict[str, Any]:
    """The fields a caller really gave, for merging: defaults must not overwrite stored values."""
    if isinstance(frame, Mapping):
        return dict(frame)
    d = frame.to_dict()
    if frame._timestamp is None:
        d.pop("timestamp")
    if frame._context_id is None:
        d.pop("context_id")
    return d


def _merge_by_id(old: list[dict], new: list[dict]) -> list[dict]:
    out = {item["id"]: item for item in old}
    out.update({item["id"]: item for item in new})
    return list(out.values())


def _merge_frame(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """update_frames(merge=True): meta merges key by key, sources and ROIs by id, the rest replaces."""
    merged = {**old, **{k: v for k, v in new.items() if k not in ("meta", "sources", "rois")}}
    merged["meta"] = {**old.get("meta", {}), **normalize_frame_dict({"id": old["id"], "meta": new.get("meta")})["meta"]}
    merged["sources"] = _merge_by_id(old["sources"], normalize_frame_dict({"id": old["id"], "sources": new.get("sources") or []})["sources"])
    merged["rois"] = _merge_by_id(old["rois"], normalize_frame_dict({"id": old["id"], "rois": new.get("rois") or []})["rois"])
    return merged


class _OnArchive:
    """A method of ``Archive`` offered on ``DatasetVersion``: ``DatasetVersion.create_version(...)``
    calls it on the default archive, ``v.create_version(...)`` on ``v``'s archive, so code written
    for ClearML's SDK runs with only its import changed."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.__doc__ = getattr(Archive, name).__doc__

    def __get__(self, version: DatasetVersion | None, owner: type) -> Callable[..., DatasetVersion]:
        archive = version.archive if version is not None else None
        return functools.partial(self._call, archive)

    def _call(self, archive: Archive | None, *args: Any, **kwargs: Any) -> DatasetVersion:
        return getattr(archive or default_archive(), self.name)(*args, **kwargs)


class DatasetVersion:
    """A named version of a dataset: its frames, mask labels and colours.

    The object is a handle: every call reads the current state from the archive, so several
    handles (and processes) see each other's committed writes.
    """

    def __init__(self, archive: Archive, version_id: int) -> None:
        self.archive = archive
        self.id = version_id
        self.prefix = u64(version_id)

    # ------------------------------------------------------------------ record

    def record(self, txn: lmdb.Transaction | None = None) -> dict[str, Any]:
        """The version record as stored now."""
        if txn is None:
            return self.archive.read(lambda t: _version_record(t, self.archive, self.id))
        return _version_record(txn, self.archive, self.id)

    @property
    def dataset_name(self) -> str:
        return self.record()["dataset"]

    @property
    def version_name(self) -> str:
        return self.record()["name"]

    @property
    def name(self) -> str:
        return self.version_name

    @property
    def parent(self) -> DatasetVersion | None:
        pid = self.record()["parent"]
        return None if pid is None else DatasetVersion(self.archive, pid)

    @property
    def state(self) -> str:
        return self.record()["state"]

    @property
    def is_published(self) -> bool:
        return self.state == "published"

    @property
    def mask_labels(self) -> list[dict[str, Any]]:
        """The list form: ``[{"value": [r, g, b], "labels": [...]}, ...]``."""
        return self.record()["mask_labels"]

    @property
    def label(self) -> str:
        """``dataset/version``: how messages and the CLI name a version."""
        rec = self.record()
        return f"{rec['dataset']}/{rec['name']}"

    # ClearML-style entry points: on the class they use the default archive (``maskstore.use`` or
    # MASKSTORE_ARCHIVE), on a version that version's archive.
    create_version = _OnArchive("create_version")
    get_version = _OnArchive("get_version")

    def __repr__(self) -> str:
        rec = self.record()
        return f"DatasetVersion({rec['dataset']!r}, {rec['name']!r}, frames={rec['count']}, state={rec['state']!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DatasetVersion) and other.archive is self.archive and other.id == self.id

    def __hash__(self) -> int:
        return hash((id(self.archive), self.id))

    def _update(self, fn: Callable[[lmdb.Transaction, dict[str, Any]], T], built: dict[bytes, Any] | None = None) -> T:
        """Write transaction with the version record loaded, checked writable, and saved after; then
        the archive's cached scan columns follow the commit (``built``: the chunks ``fn`` stored)."""
        from .query import columns
        start: dict[str, int] = {}

        def work(txn: lmdb.Transaction) -> T:
            rec = self.record(txn)
            if rec["state"] == "published":
                raise ReadOnlyError(f"version {rec['dataset']}/{rec['name']} is published and read-only; "
                                    "create a child version to change it")
            start["generation"] = rec["generation"]
            result = fn(txn, rec)
            rec["generation"] += 1
            txn.put(self.prefix, records.encode_version(rec), db=self.archive.db("versions"))
            return result
        result = self.archive.write(work)
        columns.remember(self, start["generation"], built or {})
        return result

    def publish(self) -> None:
        """Make the version read-only for ever."""
        def work(txn: lmdb.Transaction, rec: dict[str, Any]) -> None:
            rec["state"] = "published"
        self._update(work)

    def set_description(self, description: str) -> None:
        self._update(lambda txn, rec: rec.__setitem__("description", description))

    # ------------------------------------------------------------------ labels and colours

    def set_masks_labels(self, labels: Mapping[Any, Any] | Iterable[Mapping[str, Any]]) -> None:
        """``{(r, g, b): ["label", ...]}`` (or the list form); replaces the version's table."""
        table = normalize_mask_labels(labels)
        self._update(lambda txn, rec: rec.__setitem__("mask_labels", table))

    def get_masks_labels(self) -> dict[RGB, list[str]]:
        return mask_labels_dict(self.mask_labels)

    def set_label_colors(self, colors: Mapping[str, Any]) -> None:
        """Colours per label, merged into the version's table (``(r, g, b)`` or ``"#rrggbb"``)."""
        table = normalize_label_colors(colors)
        self._update(lambda txn, rec: rec["label_colors"].update(table))

    def get_label_colors(self) -> dict[str, RGB]:
        return {label: parse_color(c) for label, c in self.record()["label_colors"].items()}

    # ------------------------------------------------------------------ writing frames

    def _prepare(self, frames: Iterable[Frame | Mapping[str, Any]], embed: bool,
                 merge: bool = False) -> Prepared:
        """Normalize, merge, decode mask statistics, read blobs and encode the records: all before the
        write transaction, so a bad frame fails the call before anything is written."""
        given = list(frames)
        if merge:
            given = [_partial_frame_dict(f) for f in given]
            old = self._records_by_id([str(g.get("id")) for g in given])
            given = [_merge_frame(old[str(g.get("id"))], g) for g in given]
        elif set(map(type, given)) - {dict}:
            given = [f.to_dict() if isinstance(f, Frame) else f for f in given]
        refuse_constructor_words(given)
        postings = _speedups.Postings(text_key, MAX_KEY_TEXT)
        if embed:  # every frame the Python way: embedding rewrites URIs in the normalized dicts
            n = len(given)
            encoded, ids, types = [None] * n, [None] * n, [None] * n
        else:
            encoded, ids, types = _speedups.encode_common(given, records.FRAME_HEAD, content_type_of,
                                                          SUFFIX_TYPES, postings)
        declined = [pos for pos, record in enumerate(encoded) if record is None]
        normalized = [normalize_frame(given[pos]) for pos in declined]
        dicts = [d for d, _ in normalized]
        for pos, (d, frame_types) in zip(declined, normalized):
            ids[pos], types[pos] = d["id"], tuple(frame_types)
        if len(set(ids)) != len(ids) or max(map(len, ids), default=0) * 4 > MAX_KEY_TEXT:
            _check_ids(ids)
        self.archive._decoder.fill(dicts, self.archive.read_blob, self.archive.resolve)
        blobs = self._embed(dicts) if embed else {}
        for pos, d, record in zip(declined, dicts, _encode(dicts)):
            encoded[pos] = record
            postings.add_record(pos, d)
        return Prepared(ids, encoded, types, postings, blobs)

    def _embed(self, dicts: list[dict[str, Any]]) -> dict[bytes, bytes]:
        blobs: dict[bytes, bytes] = {}
        for d in dicts:
            for item, key in file_references(d):
                if item[key].startswith(BLOB_PREFIX):
                    continue
                try:
                    data = read_bytes(self.archive.resolve(item[key]))
                except MaskstoreError as exc:
                    raise MaskError(f"frame {d['id']!r}: {exc}") from None
                uri = blob_uri(data)
                blobs[bytes.fromhex(uri[len(BLOB_PREFIX):])] = data
                item["original_" + key], item[key] = item[key], uri
        return blobs

    def _records_by_id(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        def work(txn: lmdb.Transaction) -> dict[str, dict[str, Any]]:
            out = {}
            for fid in ids:
                try:
                    seq = txn.get(self.prefix + text_key(fid), db=self.archive.db("frame_ids"))
                except UnicodeEncodeError:  # a lone surrogate: no stored frame can have such an id
                    seq = None
                if seq is None:
                    raise FrameNotFoundError(f"no frame {fid!r} in {self.label}")
                out[fid] = records.decode_frame(txn.get(self.prefix + seq, db=self.archive.db("frames")))
            return out
        return self.archive.read(work)

    def _write_frames(self, batch: Prepared, must_exist: bool) -> int:
        """Records, then every index entry of the batch sorted and written with one putmulti per
        sub-database: sorted bulk writes are what makes large ingests fast in LMDB."""
        from .query import columns  # downstream of the archive: imported at call time, like the engine
        arc = self.archive
        prefix = self.prefix

        def work(txn: lmdb.Transaction, rec: dict[str, Any]) -> int:
            for digest, data in batch.blobs.items():
                txn.put(digest, data, db=arc.db("blobs"), overwrite=False)
            _check_blobs_present(txn, arc, batch)
            ids_db, frames_db = arc.db("frame_ids"), arc.db("frames")
            id_keys = batch.postings.id_keys(prefix, batch.ids)
            stored = dict(txn.cursor(db=ids_db).getmulti(id_keys))
            if must_exist and len(stored) < len(id_keys):
                missing = next(i for i, key in zip(batch.ids, id_keys) if key not in stored)
                raise FrameNotFoundError(f"no frame {missing!r} in {rec['dataset']}/{rec['name']} to update")
            if stored:  # replaced frames keep their seq, once their old index entries are gone
                numbers = []
                for key in id_keys:
                    seq = stored.get(key)
                    if seq is None:
                        numbers.append(rec["next_seq"])
                        rec["next_seq"] += 1
                    else:
                        self._unindex(txn, seq, records.decode_frame(txn.get(prefix + seq, db=frames_db)))
                        numbers.append(U64.unpack(seq)[0])
            else:
                first = rec["next_seq"]
                numbers = range(first, first + len(id_keys))
                rec["next_seq"] += len(id_keys)
            seqs = list(map(u64, numbers))
            new_ids = [(key, seq) for key, seq in zip(id_keys, seqs) if key not in stored]
            rec["count"] += len(new_ids)
            self._merge_meta_types(rec["meta_types"], batch)
            entries = batch.postings.items(prefix, seqs)
            entries["frames"] = sorted(zip([prefix + seq for seq in seqs], batch.records))
            entries["frame_ids"] = sorted(new_ids)
            for name, items in entries.items():
                txn.cursor(db=arc.db(name)).putmulti(items, dupdata=name in DUP_DBS)
            built.update(columns.update(txn, self, dict(zip(numbers, batch.records))))
            return len(batch.ids)
        built: dict[bytes, Any] = {}
        return self._update(work, built)

    @staticmethod
    def _merge_meta_types(known: dict[str, str], batch: Prepared) -> None:
        """The version's meta types, with the batch's merged in. Frames of a batch mostly share one
        list of types, so each distinct list is merged once, in order of first use: a conflict then
        names the first frame that has it, as a frame-by-frame merge would."""
        for types in dict.fromkeys(batch.types):
            for path, kind in types:
                if known.get(path) != kind:
                    _merge_meta_type(known, path, kind, batch.ids[batch.types.index(types)])

    def _unindex(self, txn: lmdb.Transaction, seq: bytes, d: Mapping[str, Any]) -> None:
        arc = self.archive
        for name, keys in index_entries(d).items():
            db = arc.db(name)
            for key in keys:
                txn.delete(self.prefix + key, seq, db=db)

    def add_frames(self, frames: Iterable[Frame | Mapping[str, Any]], *, embed: bool = False) -> int:
        """Add frames (objects or frame dicts) in one transaction: all of them or none.

        A frame whose id exists already replaces that frame (adding the same image again updates it).
        Masks without precomputed ``values`` are decoded once for their statistics.
        """
        return self._add(frames, embed, merge=False, must_exist=False)

    def update_frames(self, frames: Iterable[Frame | Mapping[str, Any]], merge: bool = False, *,
                      embed: bool = False) -> int:
        """Replace existing frames, or with ``merge=True`` merge the given fields into them."""
        return self._add(frames, embed, merge=merge, must_exist=True)

    def _add(self, frames: Iterable[Frame | Mapping[str, Any]], embed: bool, merge: bool, must_exist: bool) -> int:
        with gc_paused():
            prepared = self._prepare(frames, embed, merge=merge)
            count = self._write_frames(prepared, must_exist=must_exist)
            # Free the batch while the collector is still paused, or its first run rescans it all.
            del prepared
        return count

    def delete_frames(self, frame_ids: Iterable[str | Frame]) -> int:
        """Delete frames by id in one transaction; an unknown id fails the whole call."""
        from .query import columns
        ids = [f.id if isinstance(f, Frame) else f for f in frame_ids]

        def work(txn: lmdb.Transaction, rec: dict[str, Any]) -> int:
            arc = self.archive
            deleted: dict[int, None] = {}
            for fid in ids:
                id_key = self.prefix + text_key(fid)
                seq = txn.get(id_key, db=arc.db("frame_ids"))
                if seq is None:
                    raise FrameNotFoundError(f"no frame {fid!r} in {rec['dataset']}/{rec['name']} to delete")
                seq = bytes(seq)
                self._unindex(txn, seq, records.decode_frame(txn.get(self.prefix + seq, db=arc.db("frames"))))
                txn.delete(self.prefix + seq, db=arc.db("frames"))
                txn.delete(id_key, db=arc.db("frame_ids"))
                rec["count"] -= 1
                deleted[U64.unpack(seq)[0]] = None
            built.update(columns.update(txn, self, deleted))
            return len(ids)
        built: dict[bytes, Any] = {}
        return self._update(work, built)

    # ------------------------------------------------------------------ reading frames

    def __len__(self) -> int:
        return int(self.record()["count"])

    def get_frame_dict(self, frame_id: str) -> dict[str, Any]:
        return self._records_by_id([frame_id])[frame_id]

    def get_frame(self, frame_id: str) -> Frame:
        return frame_from_dict(self.get_frame_dict(frame_id))

    def __contains__(self, frame_id: object) -> bool:
        if not isinstance(frame_id, str):
            return False
        key = self.prefix + text_key(frame_id)
        return self.archive.read(lambda t: t.get(key, db=self.archive.db("frame_ids")) is not None)

    def iter_records(self, seqs: "np.ndarray | None" = None) -> Iterator[tuple[int, dict[str, Any]]]:
        """(seq, frame dict) in insertion order, or for the given sorted seqs, from one snapshot."""
        arc = self.archive
        with arc._begin() as txn:
            if seqs is None:
                for key, data in entries(txn, arc.db("frames"), self.prefix):
                    yield U64.unpack(key[8:])[0], records.decode_frame(data)
            else:
                frames_db = arc.db("frames")
                for seq in seqs.tolist():
                    data = txn.get(self.prefix + u64(seq), db=frames_db)
                    if data is not None:
                        yield seq, records.decode_frame(data)

    def __iter__(self) -> Iterator[Frame]:
        return (frame_from_dict(d) for _, d in self.iter_records())

    def frame_dicts(self) -> Iterator[dict[str, Any]]:
        """Every frame in the frame-dict shape, in insertion order (for JSON-lines export)."""
        return (d for _, d in self.iter_records())

    # ------------------------------------------------------------------ queries (maskstore.query)
    # The query stage comes after the archive in the data flow, so it is imported at call time.

    def query(self, query: str = "") -> Iterator[Frame]:
        """Frames selected by a query, streamed one at a time from one snapshot."""
        from .query import engine
        return engine.query(self, query)

    def query_dicts(self, query: str = "") -> Iterator[dict[str, Any]]:
        """Like ``query`` but frame dicts (the JSON-lines export shape), without building objects."""
        from .query import engine
        return engine.frame_dicts(self, query)

    def ids(self, query: str = "") -> list[str]:
        """Ids of the selected frames, in result order."""
        from .query import engine
        return engine.ids(self, query)

    def count(self, query: str = "") -> int:
        from .query import engine
        return engine.count(self, query)

    def explain(self, query: str = "") -> str:
        """The plan the query runs: index lookups, column scans, residual filters."""
        from .query import engine
        return engine.explain(self, query)

    def export(self, out: str | os.PathLike[str], query: str = "", mode: str = "segmentation",
               jobs: int | None = None, **options: Any) -> Any:
        """Masked images of the query's frames into ``out``; see ``maskstore.export.export``."""
        from .export import export
        return export(self, out, query=query, mode=mode, jobs=jobs, **options)

    def iter_arrays(self, query: str = "", **options: Any) -> Iterator[tuple[str, "np.ndarray", "np.ndarray"]]:
        """(frame_id, image, mask) arrays of the query's frames, for training; see ``maskstore.loaders``."""
        from .loaders import iter_arrays
        return iter_arrays(self, query, **options)

    def open_image(self, uri: str, what: str = "image") -> Image.Image:
        """Decode an image or mask of this version (embedded blobs included)."""
        return self.archive.open_image(uri, what)


# ---------------------------------------------------------------------------------------- default archive

ARCHIVE_ENV = "MASKSTORE_ARCHIVE"
_default: dict[str, Any] = {"chosen": None, "open": None}  # the path use() chose; the Archive open now


def use(path: str | os.PathLike[str] | None) -> Archive | None:
    """Choose the default archive of ``DatasetVersion.create_version`` / ``get_version`` (created when
    missing); ``None`` forgets the choice, and the MASKSTORE_ARCHIVE environment variable applies again.

    >>> maskstore.use("city.maskstore")                                          # doctest: +SKIP
    >>> version = DatasetVersion.create_version(dataset_name="Example", version_name="v1")  # doctest: +SKIP
    """
    _default["chosen"] = None if path is None else Path(path)
    if path is None:
        _close_default()
        return None
    return default_archive()


def default_archive() -> Archive:
    """The archive ``use`` chose, else the one MASKSTORE_ARCHIVE names; opened once and kept open
    until another is chosen or the process exits."""
    path = _default["chosen"] or (Path(os.environ[ARCHIVE_ENV]) if os.environ.get(ARCHIVE_ENV) else None)
    if path is None:
        raise MaskstoreError(f"no default archive: call maskstore.use(\"data.maskstore\") or set the "
                             f"{ARCHIVE_ENV} environment variable, or open one with Archive(path)")
    current = _default["open"]
    if current is None or current.path != path:
        _close_default()
        _default["open"] = Archive(path)
    return _default["open"]


@atexit.register
def _close_default() -> None:
    if _default["open"] is not None:
        _default["open"].close()
        _default["open"] = None
