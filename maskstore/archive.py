"""The façade: versions, frames, labels and blobs of one archive, over the stages below.

The file's layout (sub-databases, keys, records) is ``layout.py`` and FORMAT.md; the LMDB
environment is ``store.py``; batches are prepared in ``ingest.prepare`` before a write transaction
opens, and this module writes them: a frame, its statistics and its index entries commit together.
Labels never enter an index: ``label == X`` resolves X to mask values at query time, so changing
``mask_labels`` needs no rebuild. Queries, export and array loading are the stages after the
archive (``query``, ``export``, ``loaders``); the methods here call them, and they never import this
module.
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import lmdb
import numpy as np
from PIL import Image

from . import compression, frame_groups, postings, records
from .errors import (ArchiveError, FrameError, FrameNotFoundError, MaskstoreError, NetworkFilesystemWarning,
                     ReadOnlyError, VersionError, VersionNotFoundError)
from .ingest.prepare import (Prepared, Preparer, check_blobs_present, gc_paused, merge_frame, merge_meta_types,
                             partial_frame_dict)
from .labels import RGB, check_tolerance, mask_labels_dict, normalize_label_colors, normalize_mask_labels, parse_color
from .layout import (CURRENT_DICTIONARY_KEY, FORMAT_KEY, INDEX_DBS, NEXT_VERSION_KEY, SUB_DATABASES, U64,
                     VERSION_DBS, delete_prefix, entries, id_entry_seq, install_dictionary, load_dictionaries, put_sorted, require_feature,
                     text_key, u64)
from .media import BLOB_PREFIX, blob_digest, local_path, open_image
from .model import Frame, frame_from_dict
from .store import DEFAULT_MAX_READERS, Store, lock_default, network_filesystem

if TYPE_CHECKING:
    import numpy as np

T = TypeVar("T")


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
        self._preparer = Preparer(jobs)
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
        self.packed_indexes = True  # the ix_* layout (postings); set from the format record on open
        self.frame_groups = True  # the frames layout (frame_groups); set from the format record on open
        # Scan columns the query engine loaded, per version id (query.engine); dropped on close.
        self.column_cache: dict[int, Any] = {}
        self._store.on_reopen = self._open_dbs
        try:
            self._check_not_truncated()
            self._open_dbs()
            self.load_dictionaries()
        except BaseException:
            self._store.close()
            raise
        compression.add_source(self)

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

    def _decode_format(self, data: bytes) -> dict[str, Any]:
        try:
            return records.decode_format(data)
        except ArchiveError as exc:
            raise ArchiveError(f"{self.path}: {exc}") from None

    def _index_layout(self, txn: lmdb.Transaction, fmt: dict[str, Any]) -> None:
        """Which layout the ``ix_*`` sub-databases hold (``postings``): the format record says, and each
        index's LMDB flags must agree, or a dupsort entry would be read as a block (or the reverse)."""
        self.packed_indexes = records.PACKED_POSTINGS in fmt["required_features"]
        self.frame_groups = records.FRAME_GROUPS in fmt["required_features"]
        for name in INDEX_DBS:
            if self._dbs[name].flags(txn)["dupsort"] == self.packed_indexes:
                raise ArchiveError(f"{self.path} is damaged: index {name} is stored "
                                   f"{'with' if self.packed_indexes else 'without'} one entry per posting, but the "
                                   "format record says otherwise; restore it from a copy")

    def _open_dbs(self) -> None:
        """Sub-database handles. A read-only open takes them in read transactions, so it never waits for
        a writer; a writable open takes the writer lock for one instant (py-lmdb opens a writable
        environment's handles in a write transaction), creating what a new archive lacks."""
        wanted = SUB_DATABASES
        self._dbs.clear()
        if not self.readonly:
            self._create_dbs(wanted)
            return
        names = self.read(lambda t: {bytes(k).decode(errors="replace") for k, _ in t.cursor()})
        if "meta" not in names:
            raise ArchiveError(f"{self.path} is not a maskstore archive (no format marker)")
        if missing := set(wanted) - names:
            raise ArchiveError(f"{self.path} is damaged: sub-databases {sorted(missing)} are missing")
        for name in wanted:  # an existing sub-database keeps the flags it was created with
            self._dbs[name] = self.env.open_db(name.encode(), create=False)
        fmt = self.read(lambda t: t.get(FORMAT_KEY, db=self._dbs["meta"]))
        if fmt is None:
            raise ArchiveError(f"{self.path} is not a maskstore archive (no format marker)")
        self.read(lambda t: self._index_layout(t, self._decode_format(fmt)))

    def _create_dbs(self, wanted: tuple[str, ...]) -> None:
        def work(txn: lmdb.Transaction) -> None:
            others = [k for k, _ in txn.cursor() if bytes(k).decode(errors="replace") not in wanted]
            for name in wanted:  # an existing sub-database keeps the flags it was created with
                self._dbs[name] = self.env.open_db(name.encode(), txn=txn, create=True)
            fmt = txn.get(FORMAT_KEY, db=self._dbs["meta"])
            if fmt is None:
                if txn.stat(self._dbs["versions"])["entries"] or others:
                    raise ArchiveError(f"{self.path} is an LMDB file but not a maskstore archive")
                txn.put(FORMAT_KEY, records.encode_format(records.FEATURES_FORMAT, required=(
                    records.COLUMN_FIELDS, records.PACKED_POSTINGS, records.FRAME_GROUPS, records.COLUMN_ZONES)),
                    db=self._dbs["meta"])
                self.packed_indexes = self.frame_groups = True
                return
            required = self._decode_format(fmt)["required_features"]
            if records.PACKED_POSTINGS not in required:
                self.packed_indexes = True  # an archive from before packed postings: converted once, here
                postings.convert(txn, self.env, self._dbs, self)
                require_feature(txn, self._dbs["meta"], records.PACKED_POSTINGS)
            if records.FRAME_GROUPS not in required:  # from before frame groups: converted once, here
                load_dictionaries(txn, self._dbs["meta"])  # its compressed records decompress on the way
                current = txn.get(CURRENT_DICTIONARY_KEY, db=self._dbs["meta"])
                frame_groups.convert(txn, self._dbs["frames"], None if current is None else bytes(current))
                require_feature(txn, self._dbs["meta"], records.FRAME_GROUPS)
            self._index_layout(txn, self._decode_format(txn.get(FORMAT_KEY, db=self._dbs["meta"])))
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

    def load_dictionaries(self) -> None:
        """Make the frame-record dictionaries this archive holds known to the process (``compression``):
        on open, and again when a record names one another process stored since."""
        if self._store.env is not None and self._dbs:
            self.read(lambda txn: load_dictionaries(txn, self._dbs["meta"]))

    def _frame_dictionary(self, txn: lmdb.Transaction, plain: list[bytes]) -> bytes | None:
        """The dictionary frame groups are written with: the archive's current one. Until it has one,
        the first batch of ``compression.TRAIN_MIN_RECORDS`` frames or more (``plain``) trains it;
        archives that never get such a batch compress without one until ``maskstore compact``."""
        meta = self._dbs["meta"]
        current = txn.get(CURRENT_DICTIONARY_KEY, db=meta)
        if current is None:
            trained = compression.train(compression.sample(plain))
            return None if trained is None else install_dictionary(txn, meta, trained)
        load_dictionaries(txn, meta)  # when another process stored it after this one opened
        return bytes(current)

    def close(self) -> None:
        compression.remove_source(self)
        self.column_cache.clear()
        self._preparer.close()
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

    def _version_record(self, txn: lmdb.Transaction, vid: int) -> dict[str, Any]:
        data = txn.get(u64(vid), db=self._dbs["versions"])
        if data is None:
            raise VersionNotFoundError(f"version id {vid} no longer exists in {self.path}")
        return records.decode_version(data)

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
            raise self._not_found(f"{dataset_name}/{version_name}")
        return DatasetVersion(self, rec["id"])

    def _not_found(self, wanted: str, txn: lmdb.Transaction | None = None) -> VersionNotFoundError:
        """The error for a version that is not there, listing the versions that are (as ``txn`` sees
        them: inside a write transaction, a new read transaction must not start)."""
        names = [self._label(rec) for rec in (self._version_records(txn) if txn else
                                              self.read(lambda t: list(self._version_records(t))))]
        return VersionNotFoundError(f"no version {wanted} in {self.path}; it has: "
                                    f"{', '.join(names) or 'no versions yet'}")

    def _parent_record(self, txn: lmdb.Transaction, dataset_name: str, parent: DatasetVersion | str) -> dict:
        """The record of a parent given as a version of ``dataset_name`` (``"v1"``), as ``"D/V"`` of any
        dataset, or as a ``DatasetVersion`` of this archive. Names may hold "/" themselves, so "D/V" is
        tried at every "/"; a name that fits twice is refused rather than guessed."""
        if isinstance(parent, DatasetVersion):
            if parent.archive is not self:
                raise VersionError(f"parent {parent.label} is in {parent.archive.path}, not in {self.path}; "
                                   "copy its frames into this archive first")
            return self._version_record(txn, parent.id)
        found = self._find_version(txn, dataset_name, parent)
        if found is not None:
            return found
        cuts = [i for i, ch in enumerate(parent) if ch == "/"]
        fits = [rec for rec in (self._find_version(txn, parent[:i], parent[i + 1:]) for i in cuts) if rec]
        if len(fits) > 1:
            raise VersionError(f"parent {parent!r} names several versions "
                               f"({', '.join(self._label(r) for r in fits)}); rename one of them")
        if not fits:
            raise self._not_found(f"{parent} (nor {dataset_name}/{parent})" if cuts else f"{dataset_name}/{parent}",
                                  txn)
        return fits[0]

    @staticmethod
    def _label(rec: Mapping[str, Any]) -> str:
        return f"{rec['dataset']}/{rec['name']}"

    def pick_version(self, dataset_name: str | None, version_name: str | None,
                     how: str = "dataset_name= and version_name=") -> DatasetVersion:
        """The version named, or the only one that fits what was given: how the command line and the
        Dask readers let a one-version archive go unnamed. ``how`` says, in the caller's words, how to
        name one."""
        if dataset_name and version_name:
            return self.get_version(dataset_name, version_name)
        found = [v for v in self.versions()
                 if dataset_name in (None, v.dataset_name) and version_name in (None, v.version_name)]
        if len(found) == 1:
            return found[0]
        names = ", ".join(v.label for v in self.versions()) or "none"
        if not found:
            raise VersionNotFoundError(f"no matching version in {self.path} (it has: {names})")
        raise MaskstoreError(f"{self.path} holds several versions ({names}); choose one with {how}")

    def create_version(self, dataset_name: str, version_name: str,
                       parent: DatasetVersion | str | None = None, description: str = "",
                       meta: Mapping[str, Any] | None = None, *, exist_ok: bool = False) -> DatasetVersion:
        """A new draft version; with a parent it starts with a copy of the parent's frames and labels.
        ``parent`` is a version of the same dataset (``"v1"``), any version as ``"D/V"``, or a
        ``DatasetVersion``.

        ``exist_ok=True`` returns the version of that name when it exists already (as it is: parent
        and description are not compared), so a script that failed half-way can simply run again.
        """
        if not dataset_name or not version_name:
            raise FrameError("dataset_name and version_name must be non-empty")

        def work(txn: lmdb.Transaction) -> int:
            existing = self._find_version(txn, dataset_name, version_name)
            if existing is not None:
                if exist_ok:
                    return existing["id"]
                raise FrameError(f"version {dataset_name}/{version_name} exists already; open it with "
                                 "get_version, or pass exist_ok=True to create_version to reuse it")
            prec = None if parent is None else self._parent_record(txn, dataset_name, parent)
            counter = txn.get(NEXT_VERSION_KEY, db=self._dbs["meta"])
            vid = U64.unpack(counter)[0] if counter else 1
            txn.put(NEXT_VERSION_KEY, u64(vid + 1), db=self._dbs["meta"])
            rec: dict[str, Any] = {
                "id": vid, "dataset": dataset_name, "name": version_name, "parent": None,
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "description": description,
                "meta": dict(meta or {}), "state": "draft", "mask_labels": [], "label_colors": {},
                "meta_types": {}, "next_seq": 0, "count": 0, "generation": 0,
            }
            if prec is not None:
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
            txn.cursor(db=db).putmulti(items)

    def delete_version(self, dataset_name: str, version_name: str, force: bool = False) -> list[DatasetVersion]:
        """Remove a version and everything it holds; returns its children, which keep their frames (each
        child has its own copy) and take the deleted version's parent. A published version or one with
        children needs ``force=True``. Embedded files stay until ``compact``: other versions may use them."""
        def work(txn: lmdb.Transaction) -> list[int]:
            rec = self._find_version(txn, dataset_name, version_name)
            if rec is None:
                raise self._not_found(f"{dataset_name}/{version_name}", txn)
            children = [r for r in self._version_records(txn) if r["parent"] == rec["id"]]
            reasons = (["it is published"] if rec["state"] == "published" else []) + \
                ([f"it has children ({', '.join(map(self._label, children))})"] if children else [])
            if reasons and not force:
                raise VersionError(f"version {self._label(rec)} was not deleted: {' and '.join(reasons)}; "
                                   "pass force=True to delete it anyway (children keep their frames)")
            prefix = u64(rec["id"])
            for name in VERSION_DBS:
                delete_prefix(txn, self._dbs[name], prefix)
            txn.delete(prefix, db=self._dbs["versions"])
            for child in children:  # a published child too: its parent link is history, not content
                child["parent"] = rec["parent"]
                txn.put(u64(child["id"]), records.encode_version(child), db=self._dbs["versions"])
            return [child["id"] for child in children]

        return [DatasetVersion(self, vid) for vid in self.write(work)]

    def versions_info(self) -> list[dict[str, Any]]:
        """One row per version, oldest first: ``dataset``, ``version``, ``frames``, ``state``, ``parent``
        (``"D/V"`` or None), ``created`` (ISO 8601 UTC; None for versions from before it was stored) and
        ``description``: what ``maskstore versions --json`` prints. One snapshot."""
        return [row for _, row in self.read(self._version_rows)]

    def info(self) -> dict[str, Any]:
        """What ``maskstore info`` shows: the file, its format number and size, and every version's row of
        ``versions_info`` with the number of mask values it labels (``labelled_values``)."""
        rows = [{**row, "labelled_values": len(rec["mask_labels"])} for rec, row in self.read(self._version_rows)]
        fmt = records.decode_format(self.read(lambda t: t.get(FORMAT_KEY, db=self._dbs["meta"])))
        return {"archive": str(self.path), "format": fmt["version"], "size": self.path.stat().st_size,
                "versions": rows}

    def _version_rows(self, txn: lmdb.Transaction) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        recs = list(self._version_records(txn))
        labels = {rec["id"]: self._label(rec) for rec in recs}
        return [(rec, {"dataset": rec["dataset"], "version": rec["name"], "frames": rec["count"],
                       "state": rec["state"], "parent": labels.get(rec["parent"]),
                       "created": DatasetVersion.created_text(rec.get("created")),
                       "description": rec["description"] if isinstance(rec.get("description"), str) else ""})
                for rec in recs]

    # ------------------------------------------------------------------ blobs

    def read_blob(self, hexdigest: str) -> bytes:
        """Bytes of an embedded image or mask."""
        key = blob_digest(hexdigest)
        if key is None:
            raise ArchiveError(f"{BLOB_PREFIX}{hexdigest} is not a valid blob URI (64 hex digits)")
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

    def open_image(self, uri: str, what: str = "image", timestamp: int = 0,
                   content_type: str | None = None) -> Image.Image:
        """Decode an image or mask (a video's frame at ``timestamp`` ms) named by a frame's URI."""
        return open_image(self.resolve(uri), self.read_blob, what=what, timestamp=timestamp,
                          content_type=content_type)


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
            return self.archive.read(lambda t: self.archive._version_record(t, self.id))
        return self.archive._version_record(txn, self.id)

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
    def children(self) -> list[DatasetVersion]:
        """Versions made from this one (``create_version(parent=...)``), oldest first."""
        return [v for v in self.archive.versions() if v.record()["parent"] == self.id]

    @property
    def description(self) -> str:
        text = self.record().get("description")
        return text if isinstance(text, str) else ""

    @property
    def created(self) -> str | None:
        """When the version was created, ISO 8601 in UTC (``2026-01-31T12:00:00+00:00``)."""
        return self.created_text(self.record().get("created"))

    @staticmethod
    def created_text(stored: Any) -> str | None:
        """A record's ``created`` as ISO 8601 UTC: records store that text; older ones stored Unix
        seconds, and the oldest nothing (None)."""
        if isinstance(stored, str):
            return stored
        if isinstance(stored, (int, float)) and not isinstance(stored, bool):
            try:
                return datetime.fromtimestamp(stored, timezone.utc).isoformat(timespec="seconds")
            except (OverflowError, OSError, ValueError):
                return None
        return None

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
        """Make the version read-only for ever; publishing a published version changes nothing."""
        def work(txn: lmdb.Transaction, rec: dict[str, Any]) -> None:
            rec["state"] = "published"
        if not self.is_published:
            self._update(work)

    def rename(self, new_name: str) -> None:
        """Give the version another name within its dataset. Children keep pointing at it (they store
        its id, not its name); a name another version of the dataset has is refused. A published
        version can be renamed: its name is how it is found, not part of its content."""
        if not new_name:
            raise VersionError("a version name must be non-empty")
        arc = self.archive

        def work(txn: lmdb.Transaction) -> None:
            rec = self.record(txn)
            taken = arc._find_version(txn, rec["dataset"], new_name)
            if taken is not None and taken["id"] != self.id:
                raise VersionError(f"cannot rename {rec['dataset']}/{rec['name']} to {new_name}: "
                                   f"{rec['dataset']}/{new_name} exists already")
            rec["name"] = new_name
            txn.put(self.prefix, records.encode_version(rec), db=arc.db("versions"))
        arc.write(work)

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

    def set_mask_tolerance(self, tolerance: int) -> None:
        """Mask pixels within ``tolerance`` (largest per-channel difference) of a ``mask_labels`` value
        carry its labels in rendering, label queries, coverage and stats: for lossy (video) masks.
        Applied when read, so changing it rebuilds nothing; ``mask.value`` stays exact."""
        tolerance = check_tolerance(tolerance)
        self._update(lambda txn, rec: rec.__setitem__("mask_tolerance", tolerance))

    def get_mask_tolerance(self) -> int:
        return self.record().get("mask_tolerance", 0)

    mask_tolerance = property(get_mask_tolerance)

    # ------------------------------------------------------------------ writing frames

    def _prepare(self, frames: Iterable[Frame | Mapping[str, Any]], embed: bool,
                 merge: bool = False) -> Prepared:
        """The batch to write (``ingest.prepare``), all before the write transaction, so a bad frame
        fails the call before anything is written; a merge reads the stored frames first."""
        given = list(frames)
        if merge:
            given = [partial_frame_dict(f) for f in given]
            old = self._records_by_id([str(g.get("id")) for g in given])
            given = [merge_frame(old[str(g.get("id"))], g) for g in given]
        arc = self.archive
        return arc._preparer.prepare(given, embed, arc.read_blob, arc.resolve)

    def _records_by_id(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        def work(txn: lmdb.Transaction) -> dict[str, dict[str, Any]]:
            out, stored = {}, frame_groups.Records(txn, self.archive, self.prefix)
            for fid in ids:
                try:
                    seq = txn.get(self.prefix + text_key(fid), db=self.archive.db("frame_ids"))
                except UnicodeEncodeError:  # a lone surrogate: no stored frame can have such an id
                    seq = None
                if seq is None:
                    raise FrameNotFoundError(f"no frame {fid!r} in {self.label}")
                out[fid] = records.decode_frame(stored.plain(id_entry_seq(seq, fid)), f"frame {fid!r}")
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
            blobs_db = arc.db("blobs")
            check_blobs_present(batch, lambda key: txn.get(key, db=blobs_db) is not None, str(arc.path))
            ids_db, stored_records = arc.db("frame_ids"), frame_groups.Records(txn, arc, prefix)
            id_keys = batch.postings.id_keys(prefix, batch.ids)
            stored = dict(txn.cursor(db=ids_db).getmulti(id_keys))
            if must_exist and len(stored) < len(id_keys):
                missing = next(i for i, key in zip(batch.ids, id_keys) if key not in stored)
                raise FrameNotFoundError(f"no frame {missing!r} in {rec['dataset']}/{rec['name']} to update")
            replaced: dict[int, dict[str, Any]] = {}
            if stored:  # replaced frames keep their seq; their old index postings go
                numbers = []
                for fid, key in zip(batch.ids, id_keys):
                    seq = stored.get(key)
                    if seq is None:
                        numbers.append(rec["next_seq"])
                        rec["next_seq"] += 1
                    else:
                        number = id_entry_seq(seq, fid)
                        replaced[number] = stored_records.frame(number)
                        numbers.append(number)
            else:
                first = rec["next_seq"]
                numbers = range(first, first + len(id_keys))
                rec["next_seq"] += len(id_keys)
            seqs = list(map(u64, numbers))
            new_ids = [(key, seq) for key, seq in zip(id_keys, seqs) if key not in stored]
            rec["count"] += len(new_ids)
            merge_meta_types(rec["meta_types"], batch)
            postings.update(txn, arc, prefix, postings.of_records(replaced),
                            postings.from_groups(batch.postings.groups(), np.asarray(numbers, np.uint64)))
            frame_groups.write(txn, arc.db("frames"), prefix, dict(zip(numbers, batch.records)),
                               dictionary=arc._frame_dictionary(txn, batch.records))
            put_sorted(txn, arc.db("frame_ids"), sorted(new_ids))
            built.update(columns.update(txn, self, dict(zip(numbers, batch.records))))
            return len(batch.ids)
        built: dict[bytes, Any] = {}
        return self._update(work, built)


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

    def _add(self, frames: Iterable[Frame | Mapping[str, Any]], embed: bool, merge: bool, must_exist: bool,
             blobs: Mapping[bytes, bytes] | None = None) -> int:
        """``blobs``: embedded files (by digest) written in the frames' transaction (``copy_to``)."""
        with gc_paused():
            prepared = self._prepare(frames, embed, merge=merge)
            if blobs:
                prepared.blobs.update(blobs)
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
            deleted: dict[int, dict[str, Any]] = {}
            stored = frame_groups.Records(txn, arc, self.prefix)
            for fid in ids:
                id_key = self.prefix + text_key(fid)
                seq = txn.get(id_key, db=arc.db("frame_ids"))
                if seq is None:
                    raise FrameNotFoundError(f"no frame {fid!r} in {rec['dataset']}/{rec['name']} to delete")
                number = id_entry_seq(seq, fid)
                deleted[number] = records.decode_frame(stored.plain(number), f"frame {fid!r}")
                txn.delete(id_key, db=arc.db("frame_ids"))
                rec["count"] -= 1
            frame_groups.write(txn, arc.db("frames"), self.prefix, {}, deleted,
                               dictionary=arc._frame_dictionary(txn, []))
            postings.update(txn, arc, self.prefix, removed=postings.of_records(deleted))
            built.update(columns.update(txn, self, dict.fromkeys(deleted)))
            return len(ids)
        built: dict[bytes, Any] = {}
        return self._update(work, built)

    # ------------------------------------------------------------------ lifecycle (maskstore.lifecycle)

    def diff(self, other: DatasetVersion) -> Any:
        """What changed from ``other`` to this version: frames added, removed and changed (by id), and
        changed label tables; see ``maskstore.lifecycle.VersionDiff``. Unchanged frames are compared
        as stored bytes, never decoded."""
        from .lifecycle import diff
        return diff(self, other)

    def copy_to(self, other: DatasetVersion | Archive, query: str = "", *, dataset_name: str | None = None,
                version_name: str | None = None, **options: Any) -> Any:
        """Copy the query's frames, their stored mask statistics and the embedded files they name into
        ``other`` (a version, or an archive whose version of these names, by default this one's, is
        created when missing), one transaction per batch; frames of the same id are replaced. Relative
        file URIs become absolute paths when ``other`` lives in another folder. Returns a ``CopyReport``."""
        from .lifecycle import copy_frames, copy_to_archive
        if isinstance(other, Archive):
            return copy_to_archive(self, other, dataset_name, version_name, query, **options)
        return copy_frames(self, other, query, **options)

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
            stored = frame_groups.Records(txn, arc, self.prefix)
            if seqs is None:
                for seq, plain in stored.items():
                    yield seq, records.decode_frame(plain, f"frame seq {seq}")
            else:
                for seq in seqs.tolist():
                    plain = stored.plain(seq)
                    if plain is not None:
                        yield seq, records.decode_frame(plain, f"frame seq {seq}")

    def __iter__(self) -> Iterator[Frame]:
        return (frame_from_dict(d) for _, d in self.iter_records())

    def frame_dicts(self) -> Iterator[dict[str, Any]]:
        """Every frame in the frame-dict shape, in insertion order (for JSON-lines export)."""
        return (d for _, d in self.iter_records())

    # ------------------------------------------------------------------ queries (maskstore.query)
    # The stages after the archive (query, export, loaders) load on first use, so ``import maskstore``
    # stays light; they never import this module.

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

    def open_image(self, uri: str, what: str = "image", timestamp: int = 0,
                   content_type: str | None = None) -> Image.Image:
        """Decode an image or mask of this version (embedded blobs included)."""
        return self.archive.open_image(uri, what, timestamp, content_type)


def compact(path: str | os.PathLike[str], out: str | os.PathLike[str] | None = None) -> Any:
    """Drop the embedded files no frame of any version references and rewrite the archive compactly:
    atomically in place (the original stays intact until the new file is complete and on disk; a
    crash at any moment leaves it as it was), or into a new file ``out``. In place it needs the file
    to itself: an ArchiveError when another process (or this one) has it open. Returns a
    ``maskstore.lifecycle.CompactReport`` (sizes before and after, files dropped)."""
    from .lifecycle import compact as compact_file
    return compact_file(path, out, Archive)


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
