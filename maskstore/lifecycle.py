"""Archive lifecycle: what changed between two versions, copying frames between archives, compaction.

- **diff** compares stored record bytes by frame id and decodes only the frames whose bytes differ:
  equal dicts usually give equal bytes (records are msgpack of the normalized dict), but meta keys
  keep the order they were given in, so differing bytes are confirmed by comparing the decoded dicts.
- **copy** moves frames with their stored mask statistics (no mask is decoded again) and every
  embedded file they name, one write transaction per batch, so a destination never holds a frame
  without its files.
- **compact** is a logical copy into a fresh file (every sub-database with its flags, unreferenced
  embedded files skipped, frame records recompressed with a dictionary trained on frames from the
  whole archive, so small batches and archives of 0.1.0 get compressed too), then an atomic
  rename: LMDB's own ``env.copy(compact=True)`` cannot skip
  blobs, and py-lmdb 3.0's crashes (SIGSEGV, reproduced on a 269 MB archive of 600 embedded 442 kB
  files, half of them unreferenced; it was first seen at 134 MB).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lmdb

from . import compression, frame_groups, records
from .ingest.prepare import file_references
from .layout import DICTIONARY_PREFIX, entries, id_entry_seq, install_dictionary
from .errors import ArchiveError, MaskstoreError, ReadOnlyError
from .labels import mask_labels_dict
from .media import BLOB_PREFIX
from .store import DEFAULT_MAP_SIZE, copy_databases, fsync_path, lock_out_others, open_here, remove_file

if TYPE_CHECKING:
    from .archive import Archive, DatasetVersion

# ---------------------------------------------------------------------------------------- diff


@dataclass(frozen=True)
class TableChange:
    """A version table (``mask_labels`` or ``label_colors``) as it was and as it is."""

    table: str
    before: Any
    after: Any

    def to_dict(self) -> dict[str, Any]:
        return {"change": self.table, "before": self.before, "after": self.after}

    def entries(self) -> list[tuple[str, str, str]]:
        """(mask value or label, before, after) of each entry that differs, as words for a table."""
        if self.table == "mask_labels":
            old, new = mask_labels_dict(self.before), mask_labels_dict(self.after)
            keyed = {list(k).__repr__(): (", ".join(old[k]) if k in old else "(none)",
                                          ", ".join(new[k]) if k in new else "(none)") for k in old.keys() | new.keys()}
        else:
            hexed = lambda c: "#%02x%02x%02x" % tuple(c) if c is not None else "(none)"  # noqa: E731
            keyed = {k: (hexed(self.before.get(k)), hexed(self.after.get(k)))
                     for k in self.before.keys() | self.after.keys()}
        return sorted((k, a, b) for k, (a, b) in keyed.items() if a != b)


@dataclass(frozen=True)
class VersionDiff:
    """Frame ids added, removed and changed (each sorted), and the changed label tables."""

    old: str
    new: str
    added: list[str]
    removed: list[str]
    changed: list[str]
    tables: list[TableChange]

    def frame_changes(self) -> list[dict[str, str]]:
        """``{"id", "change"}`` per frame, in id order (the ``--format jsonl`` lines)."""
        kinds = [(i, "added") for i in self.added] + [(i, "removed") for i in self.removed] + \
            [(i, "changed") for i in self.changed]
        return [{"id": i, "change": kind} for i, kind in sorted(kinds, key=lambda item: item[0].encode())]

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed or self.tables)


def _frame_ids(txn: lmdb.Transaction, arc: Archive, version: DatasetVersion, count: int) -> dict[bytes, bytes]:
    """id (utf-8) -> seq of every frame, in id order; ids are keys verbatim (ingest refuses ids longer
    than a key). The version's count lets the cursor run in C; a count that disagrees with the
    entries falls back to the checked walk."""
    cursor = txn.cursor(db=arc.db("frame_ids"))
    prefix = version.prefix
    if count and cursor.set_range(prefix):
        items = list(islice(cursor.iternext(), count))
        if (len(items) == count and items[-1][0].startswith(prefix)
                and not (cursor.next() and cursor.key().startswith(prefix))):
            return {key[8:]: seq for key, seq in items}
    return {key[8:]: seq for key, seq in entries(txn, arc.db("frame_ids"), prefix)}


def _records(stored: frame_groups.Records, ids: list[bytes], seqs: dict[bytes, bytes]) -> list[bytes | memoryview]:
    """The plain records of some frames, by id (UTF-8) through their id table entries ``seqs``."""
    found = []
    for fid in ids:
        seq = id_entry_seq(seqs[fid], fid.decode("utf-8", "replace"))
        record = stored.plain(seq)
        if record is None:
            raise ArchiveError(f"frame seq {seq} has an id entry but no record; run maskstore check --repair")
        found.append(record)
    return found


def same_value(a: Any, b: Any) -> bool:
    """Equal, with types kept apart (``1``, ``1.0`` and ``True`` differ in a frame dict: queries and
    meta types tell them apart) and dict key order ignored."""
    if type(a) is not type(b):
        return False
    if type(a) is dict:
        return a.keys() == b.keys() and all(same_value(a[k], b[k]) for k in a)
    if type(a) is list:
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b))
    return a == b or (a != a and b != b)  # NaN equals NaN here, as its bytes do


DIFF_CHUNK = 65536  # ids whose records are fetched with one getmulti per version


def diff(new: DatasetVersion, old: DatasetVersion) -> VersionDiff:
    """What changed from ``old`` to ``new`` (two versions of one dataset in one archive)."""
    arc = new.archive
    if old.archive is not arc:
        raise MaskstoreError(f"diff compares versions of one archive; {old.label} is in {old.archive.path}, "
                             f"{new.label} in {arc.path}")

    def work(txn: lmdb.Transaction) -> VersionDiff:
        new_rec, old_rec = new.record(txn), old.record(txn)
        if new_rec["dataset"] != old_rec["dataset"]:
            raise MaskstoreError(f"diff compares versions of one dataset; {old_rec['dataset']}/{old_rec['name']} "
                                 f"and {new_rec['dataset']}/{new_rec['name']} belong to different datasets")
        new_ids = _frame_ids(txn, arc, new, new_rec["count"])
        old_ids = _frame_ids(txn, arc, old, old_rec["count"])
        common = [i for i in old_ids if i in new_ids]  # in id order, so the changed ids come out sorted
        changed = []
        old_records, new_records = frame_groups.Records(txn, arc, old.prefix), frame_groups.Records(txn, arc, new.prefix)
        for start in range(0, len(common), DIFF_CHUNK):
            chunk = common[start:start + DIFF_CHUNK]
            olds, news = _records(old_records, chunk, old_ids), _records(new_records, chunk, new_ids)
            differ = [n for n, (a, b) in enumerate(zip(olds, news)) if a != b]
            changed += [chunk[n] for n in differ
                        if not same_value(records.decode_frame(olds[n]), records.decode_frame(news[n]))]
        return VersionDiff(
            old=f"{old_rec['dataset']}/{old_rec['name']}", new=f"{new_rec['dataset']}/{new_rec['name']}",
            added=_texts(new_ids.keys() - old_ids.keys()), removed=_texts(old_ids.keys() - new_ids.keys()),
            changed=[i.decode("utf-8") for i in changed], tables=_table_changes(old_rec, new_rec))
    return arc.read(work)


def _texts(ids: Any) -> list[str]:
    return [i.decode("utf-8") for i in sorted(ids)]


def _table_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[TableChange]:
    """Tables compared as mappings: the order of a table's entries means nothing."""
    out = []
    if mask_labels_dict(old["mask_labels"]) != mask_labels_dict(new["mask_labels"]):
        out.append(TableChange("mask_labels", old["mask_labels"], new["mask_labels"]))
    if old["label_colors"] != new["label_colors"]:
        out.append(TableChange("label_colors", old["label_colors"], new["label_colors"]))
    return out


# ---------------------------------------------------------------------------------------- copy


@dataclass
class CopyReport:
    """What a copy wrote: frames, embedded files new to the destination (and their bytes), and
    relative file URIs rewritten to absolute paths because the destination lives elsewhere."""

    source: str = ""
    target: str = ""
    frames: int = 0
    batches: int = 0
    blobs: int = 0
    blob_bytes: int = 0
    rewritten_uris: int = 0
    created: bool = False


COPY_BATCH = 1000
COPY_BATCH_BYTES = 64 << 20  # embedded bytes held for one transaction at most (plus one frame's)
_BLOB_MARK = BLOB_PREFIX.encode()


def _batches(frames: Iterator[dict[str, Any]], size: int, source: Archive,
             wanted: Callable[[bytes], bool]) -> Iterator[tuple[list[dict[str, Any]], dict[bytes, bytes]]]:
    """(frames, embedded files the destination lacks) of at most ``size`` frames or
    COPY_BATCH_BYTES of files: a batch of large embedded images must not fill the memory."""
    batch: list[dict[str, Any]] = []
    blobs: dict[bytes, bytes] = {}
    held = 0
    for frame in frames:
        for item, key in file_references(frame):
            uri = item[key]
            if not uri.startswith(BLOB_PREFIX):
                continue
            digest = _digest(frame, uri)
            if digest in blobs or not wanted(digest):
                continue
            try:
                data = source.read_blob(uri[len(BLOB_PREFIX):])
            except ArchiveError as exc:
                raise ArchiveError(f"frame {frame['id']!r}: its embedded file {uri} cannot be copied: {exc}") from None
            blobs[digest] = data
            held += len(data)
        batch.append(frame)
        if len(batch) >= size or held >= COPY_BATCH_BYTES:
            yield batch, blobs
            batch, blobs, held = [], {}, 0
    if batch:
        yield batch, blobs


def _digest(frame: Mapping[str, Any], uri: str) -> bytes:
    try:
        digest = bytes.fromhex(uri[len(BLOB_PREFIX):])
    except ValueError:
        digest = b""
    if len(digest) != 32:
        raise ArchiveError(f"frame {frame['id']!r}: {uri} is not a valid blob URI")
    return digest


def _rewrite_relative(frame: dict[str, Any], source: Archive, target: Archive) -> int:
    """Relative file URIs resolve against the archive's folder: when the destination's folder is
    another, they become the absolute paths they named, so the copied frames still find their files."""
    count = 0
    for item, key in file_references(frame):
        uri = item[key]
        resolved = source.resolve(uri)
        if resolved != uri and resolved != target.resolve(uri):
            item[key] = resolved
            count += 1
    return count


def copy_frames(source: DatasetVersion, target: DatasetVersion, query: str = "", *,
                batch_size: int = COPY_BATCH, progress: Callable[[int], None] | None = None,
                report: CopyReport | None = None) -> CopyReport:
    """Copy the query's frames of ``source`` into ``target`` (see ``DatasetVersion.copy_to``)."""
    from .query import columns
    report = report or CopyReport()
    report.source, report.target = source.label, target.label
    src_arc, dst_arc = source.archive, target.archive
    if target.is_published:
        raise ReadOnlyError(f"cannot copy into {target.label}: it is published and read-only; create a child "
                            "version to copy into")
    if source == target:
        raise MaskstoreError(f"cannot copy {source.label} into itself")
    _adopt_tables(source, target)
    rewrite = src_arc.path.absolute().parent != dst_arc.path.absolute().parent

    settled: set[bytes] = set()  # digests the destination holds, or that a batch of this copy brings

    def wanted(digest: bytes) -> bool:
        if dst_arc is src_arc or digest in settled:
            return False
        settled.add(digest)
        return dst_arc.read(lambda t: t.get(digest, db=dst_arc.db("blobs")) is None)

    frames = source.query_dicts(query)
    for batch, blobs in _batches(frames, batch_size, src_arc, wanted):
        if rewrite:
            report.rewritten_uris += sum(_rewrite_relative(f, src_arc, dst_arc) for f in batch)
        target._add(batch, embed=False, merge=False, must_exist=False, blobs=blobs)
        report.frames += len(batch)
        report.batches += 1
        report.blobs += len(blobs)
        report.blob_bytes += sum(map(len, blobs.values()))
        if progress is not None:
            progress(len(batch))
    columns.refresh(target)
    return report


def _adopt_tables(source: DatasetVersion, target: DatasetVersion) -> None:
    """The target takes the source's label table when it has none; a table that gives a copied value
    other labels would silently relabel the copied frames, so it is refused. Colours of labels the
    target has no colour for are added."""
    src, dst = source.record(), target.record()
    if not dst["mask_labels"]:
        if src["mask_labels"]:
            target.set_masks_labels(src["mask_labels"])
    else:
        theirs, ours = mask_labels_dict(src["mask_labels"]), mask_labels_dict(dst["mask_labels"])
        for value, names in theirs.items():
            if ours.get(value) != names:
                raise MaskstoreError(
                    f"cannot copy {source.label} into {target.label}: mask value {list(value)} is {names} in the "
                    f"source but {ours.get(value, 'unlabelled')} in the destination; make the label tables agree "
                    "first (maskstore labels --set)")
    missing = {k: v for k, v in src["label_colors"].items() if k not in dst["label_colors"]}
    if missing:
        target.set_label_colors(missing)


def copy_to_archive(source: DatasetVersion, target: Archive, dataset_name: str | None = None,
                    version_name: str | None = None, query: str = "", **options: Any) -> CopyReport:
    """Copy into ``dataset_name/version_name`` of ``target`` (default: the source's names), created
    when missing; a version created here is removed again when the copy fails before any frame."""
    rec = source.record()
    dataset_name, version_name = dataset_name or rec["dataset"], version_name or rec["name"]
    created = all((v.dataset_name, v.version_name) != (dataset_name, version_name) for v in target.versions())
    version = target.create_version(dataset_name=dataset_name, version_name=version_name, exist_ok=True)
    try:
        report = copy_frames(source, version, query, report=CopyReport(created=created), **options)
    except BaseException:
        if created and len(version) == 0:
            target.delete_version(dataset_name, version_name)
        raise
    return report


# ---------------------------------------------------------------------------------------- compact


@dataclass
class CompactReport:
    """Sizes in bytes of the file before and after, and the embedded files dropped."""

    path: Path
    before: int
    after: int
    blobs_dropped: int = 0
    bytes_dropped: int = 0
    blobs_kept: int = 0
    counts: dict[str, int] = field(default_factory=dict)


_BLOB_URI = re.compile(rb"blob:sha256:([0-9a-f]{64})")


def referenced_blobs(txn: lmdb.Transaction, arc: Archive) -> set[bytes]:
    """Digests of every embedded file a frame record of any version names, found in the record bytes
    without decoding (a meta string that spells a blob URI keeps that blob too: never too few)."""
    found: set[bytes] = set()
    for data in frame_groups.every_record(txn, arc):
        data = bytes(data)
        if _BLOB_MARK in data:
            found.update(bytes.fromhex(h.decode()) for h in _BLOB_URI.findall(data))
    return found


def temp_path(out: Path) -> Path:
    """Where the compacted copy is built: beside ``out`` (so the rename is atomic), one fixed name, so
    a run killed half-way leaves nothing the next run does not overwrite."""
    return out.with_name(f".{out.name}.compacting")


def _refuse_readonly(path: Path) -> None:
    st = path.stat()
    if not os.access(path, os.W_OK) or not st.st_mode & 0o222:
        raise ReadOnlyError(f"cannot compact {path} in place: the file is read-only; make it writable, or write "
                            "the compacted copy elsewhere with -o OUT")


def compact(path: str | os.PathLike[str], out: str | os.PathLike[str] | None,
            open_archive: Callable[..., Archive]) -> CompactReport:
    """Write a compacted copy of the archive at ``path`` without the embedded files no frame references,
    to ``out``, or (when None) atomically in place of the original; ``maskstore.compact`` is the
    entry point (``open_archive`` is the façade's ``Archive``, which this stage does not import)."""
    path = Path(path)
    if not path.is_file():
        raise ArchiveError(f"no archive at {path}")
    in_place = out is None or Path(out).absolute() == path.absolute()
    target = path if in_place else Path(out)
    if not in_place and target.exists():
        raise ArchiveError(f"{target} exists; -o names a new file for the compacted archive (remove it first)")
    lock_fd = None
    if in_place:
        _refuse_readonly(path)
        if open_here(path):  # fcntl locks never conflict within one process, so ask the registry
            raise ArchiveError(f"cannot compact {path}: this process has it open; close the Archive first")
        lock_fd = lock_out_others(path, "compact")
    tmp = temp_path(target)
    try:
        before = path.stat().st_size
        # In place, this process holds the exclusive lock, so no writer exists and none can start:
        # read without LMDB's reader table. To another file, a locked read snapshot is enough.
        with open_archive(path, readonly=True, lock=not in_place) as arc:
            report = CompactReport(target, before, 0)
            remove_file(tmp)
            try:
                _logical_copy(arc, tmp, report)
                os.chmod(tmp, path.stat().st_mode & 0o777)
                with open_archive(tmp, readonly=True, lock=False):
                    pass  # the new file opens as an archive before it replaces anything
            except BaseException:
                remove_file(tmp)
                raise
        os.replace(tmp, target)
        fsync_path(target.parent)
        if in_place:
            _reset_lock_file(target)
        report.after = target.stat().st_size
        return report
    finally:
        if lock_fd is not None:
            os.close(lock_fd)


def _reset_lock_file(path: Path) -> None:
    """Open the new file once through LMDB while this process still holds the exclusive lock: LMDB
    then re-initialises the lock file from the new file's last transaction, before any process that
    waited to open the archive reads it (a stale transaction id there would pick the wrong meta page)."""
    env = lmdb.open(str(path), subdir=False, max_dbs=32, map_size=max(path.stat().st_size, 1 << 20))
    env.close()


def _logical_copy(arc: Archive, tmp: Path, report: CompactReport) -> None:
    """Every sub-database into a fresh file (``store.copy_databases``), embedded files no frame names
    left out, from one snapshot."""
    try:
        dst = lmdb.open(str(tmp), subdir=False, max_dbs=32, map_size=DEFAULT_MAP_SIZE, lock=False, sync=False,
                        metasync=False, readahead=False)
    except lmdb.Error as exc:
        raise ArchiveError(_copy_failure(tmp, exc)) from None

    def referenced(key: bytes, value: bytes) -> bool:
        if bytes(key) in keep:
            report.blobs_kept += 1
            return True
        report.blobs_dropped += 1
        report.bytes_dropped += len(value)
        return False

    try:
        with arc._begin() as txn:
            keep = referenced_blobs(txn, arc)
            dictionary = compression.train(_training_records(txn, arc))
            if dictionary is None:
                report.counts = copy_databases(arc.env, txn, dst, {b"blobs": referenced})
            else:
                dictionary_id = compression.register(dictionary)
                kept = {b"blobs": referenced, b"meta": lambda key, _: not key.startswith(DICTIONARY_PREFIX)}
                report.counts = copy_databases(arc.env, txn, dst, kept,
                                               {b"frames": lambda key, value: frame_groups.recompressed(key, value, dictionary_id)})
                with dst.begin(write=True) as wtxn:
                    install_dictionary(wtxn, dst.open_db(b"meta", txn=wtxn), dictionary)
        dst.sync(True)
    except lmdb.Error as exc:
        raise ArchiveError(_copy_failure(tmp, exc)) from None
    finally:
        dst.close()


def _training_records(txn: lmdb.Transaction, arc: Archive) -> list[bytes]:
    """Plain frame records spread evenly over the whole archive, for the dictionary compact trains."""
    per_entry = frame_groups.GROUP_SEQS if arc.frame_groups else 1
    step = max(1, -(-txn.stat(arc.db("frames"))["entries"] * per_entry // compression.TRAIN_MAX_RECORDS))
    return [bytes(data) for data in islice(frame_groups.every_record(txn, arc), 0, None, step)]


def _copy_failure(tmp: Path, exc: lmdb.Error) -> str:
    text = str(exc).removeprefix(f"{tmp}: ")  # py-lmdb puts the path in front of some messages
    if "No space" in text or isinstance(exc, lmdb.DiskError):
        return (f"cannot write the compacted copy {tmp}: the disk is full ({text}); the original is untouched "
                "(free some space, or write the copy to another disk with -o OUT)")
    return f"cannot write the compacted copy {tmp}: {text}; the original is untouched"
