"""Scale-out on Dask: many archive files (shards) read, exported and summarised by a cluster.

LMDB must not be written over a network file system, so the unit of scale is an archive file,
opened read-only by every worker (published versions without LMDB's lock: they never change, and
read-only or network mounts cannot hold a lock). The client plans: it runs the query on each
shard's own indexes and columns and sends the workers only the chunks of frame seqs (4096 seqs,
``columns.CHUNK``) that hold a selected frame, each with the selected seqs and the version's
generation, so a worker reads exactly the snapshot the client planned (or says the shard changed).

- ``read_frames``: a ``dask.dataframe`` with one partition per chunk; ``columns=`` reaches the read.
- ``frames``: a ``dask.bag`` of frame dicts, same partitions.
- ``export``: workers render and write the files ``v.export`` writes; the client writes the one
  merged ``manifest.jsonl`` and the legend. A re-run resumes, as with ``v.export``.
- ``stats``: ``maskstore stats`` per shard on the workers, summed on the client (no frame moves).

LMDB opens a file once per process, so this module keeps one read-only handle per shard and
process, shared by plans and tasks (``close_archives`` releases them); an open ``Archive`` may be
passed in place of a path. Requires the optional extra ``maskstore[dask]``. See docs/scale.md.
"""

from __future__ import annotations

import glob
import os
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import dask
import dask.bag as db
import dask.dataframe as dd
import lmdb
import numpy as np
import pandas as pd
import pyarrow as pa
from distributed import Client, as_completed, default_client

from . import export as exporting
from . import frame_groups, postings
from .archive import Archive, DatasetVersion
from .errors import MaskstoreError, QueryError
from .layout import CHUNK_BITS, HASHED_KEY_MARK
from .query import columns, engine
from .query.columns import Chunk, StrColumn
from .query.evaluate import Labels
from .summary import UNLABELLED, LabelStat, label_stats

FIXED = ("archive", "id", "context_id", "timestamp", "labels")
_ARROW = {"str": pa.string(), "int": pa.int64(), "float": pa.float64(), "bool": pa.bool_()}
_FIXED_TYPES = {"archive": pa.string(), "id": pa.string(), "context_id": pa.string(), "timestamp": pa.int64(),
                "labels": pa.list_(pa.string())}
EXPORT_FRAMES_PER_TASK = 16  # export tasks: small enough to balance 2 workers, big enough to amortise


# ------------------------------------------------------------------------------------------ planning

@dataclass(frozen=True)
class Part:
    """One partition: the selected frames of one chunk of one shard's version, as planned."""

    archive: str              # the path as given
    path: str                 # absolute, for the workers
    version_id: int
    generation: int           # the version's generation when planned: workers check it
    lock: bool                # False for published versions: read without LMDB's lock
    base: int                 # first seq of the chunk
    seqs: tuple[int, ...] | None  # the selected seqs; None: every frame of the chunk


@dataclass(frozen=True)
class Shard:
    """One archive's planned version: its record and its partitions."""

    archive: str
    record: dict[str, Any]
    parts: list[Part]


Shards = str | os.PathLike[str] | Archive | Iterable[str | os.PathLike[str] | Archive]


def archive_paths(archives: Shards) -> list[str | Archive]:
    """The shards: a path, a glob (sorted matches) or a list of paths, in the order given. An open
    ``Archive`` stands for its file (LMDB opens a file once per process: the caller's handle serves)."""
    if isinstance(archives, Archive):
        return [archives]
    if isinstance(archives, (str, os.PathLike)):
        text = os.fspath(archives)
        found = sorted(glob.glob(text)) if glob.has_magic(text) else [text]
        if not found:
            raise MaskstoreError(f"no archive matches {text}")
        return found
    paths = [a if isinstance(a, Archive) else os.fspath(a) for a in archives]
    if not paths:
        raise MaskstoreError("no archives given")
    return paths


def _plan_shard(shard: str | Archive, query: str, dataset: str | None, version: str | None, compact: bool) -> Shard:
    """The query run on the shard's own indexes and columns, grouped into chunk partitions; with
    ``compact``, a partition of every frame of its chunk names no seqs (a smaller task graph)."""
    ar = _reading(shard)
    v = ar.pick_version(dataset, version, how="dataset= and version=")
    path = shard if isinstance(shard, str) else str(ar.path)

    def work(txn: lmdb.Transaction) -> Shard:
        rec = v.record(txn)
        parsed = engine.prepare(query, rec["meta_types"])
        if parsed.order_by is not None or parsed.limit is not None:
            raise QueryError("order by and limit are not supported across shards: sort or head the "
                             "Dask result instead")
        seqs, ctx = engine.select(v, parsed, txn)
        published = rec["state"] == "published"
        full = {c.base: int(c.present.sum()) for c in ctx.chunks}
        seqs = np.sort(seqs)
        bases = (seqs >> np.uint64(CHUNK_BITS)) << np.uint64(CHUNK_BITS)
        starts = np.flatnonzero(np.r_[True, bases[1:] != bases[:-1]]) if len(seqs) else []
        parts = []
        for start, stop in zip(starts, [*starts[1:], len(seqs)]):
            base = int(bases[start])
            chosen = None if compact and stop - start == full[base] else tuple(seqs[start:stop].tolist())
            parts.append(Part(path, str(ar.path.resolve()), v.id, rec["generation"], not published, base, chosen))
        return Shard(path, rec, parts)
    return ar.read(work)


def plan(archives: Shards, query: str = "", dataset: str | None = None, version: str | None = None,
         compact: bool = True) -> list[Shard]:
    """Every shard's partitions for ``query`` (planned here, on the client)."""
    return [_plan_shard(shard, query, dataset, version, compact) for shard in archive_paths(archives)]


# ------------------------------------------------------------------------------------------ worker side

# LMDB opens a file once per process: one handle per shard, shared by the tasks (and threads) of a
# worker, and by the planner when the tasks run in the client's process (Dask's local schedulers).
_OPEN: dict[str, Archive] = {}
_LENT: weakref.WeakValueDictionary[str, Archive] = weakref.WeakValueDictionary()  # the caller's own handles
_OPENING = threading.Lock()


def _handle(path: str, lock: bool | None) -> Archive:
    """The process's read-only handle of a shard (the caller's own, when it passed one), kept open
    so later partitions and plans find its columns decoded already."""
    with _OPENING:
        held = _LENT.get(path) or _OPEN.get(path)
        if held is None:
            held = _OPEN[path] = Archive(path, readonly=True, lock=lock)
        return held


def _open(part: Part) -> Archive:
    return _handle(part.path, part.lock)


def _reading(shard: str | Archive) -> Archive:
    """The shard for planning (with LMDB's lock: the client does not know yet whether it is published)."""
    if isinstance(shard, Archive):
        _LENT[str(shard.path.resolve())] = shard
        return shard
    return _handle(str(Path(shard).resolve()), None)


def close_archives() -> None:
    """Close the shards this process opened for plans and tasks, so it can open them itself again
    (LMDB allows one handle per file and process)."""
    with _OPENING:
        while _OPEN:
            _OPEN.popitem()[1].close()


@contextmanager
def _snapshot(part: Part) -> Iterator[tuple[DatasetVersion, lmdb.Transaction, dict[str, Any]]]:
    """A read transaction on the partition's shard, refused when the version changed since planning."""
    archive = _open(part)
    version = DatasetVersion(archive, part.version_id)
    with archive._begin() as txn:
        rec = version.record(txn)
        if rec["generation"] != part.generation:
            raise MaskstoreError(f"{part.archive} changed after the query was planned (generation "
                                 f"{part.generation} -> {rec['generation']}); run it again, or publish the "
                                 "version so it cannot change")
        yield version, txn, rec


def _chunk(txn: lmdb.Transaction, version: DatasetVersion, base: int) -> Chunk:
    """One chunk's columns: stored, or built from the records when a write left it dirty."""
    stored = columns.stored_chunk(txn, version, base >> CHUNK_BITS)
    return stored if stored is not None else columns.records_chunk(txn, version, base >> CHUNK_BITS)


def _rows(part: Part, chunk: Chunk) -> np.ndarray:
    if part.seqs is None:
        return np.flatnonzero(chunk.present)
    return np.array(part.seqs, np.int64) - part.base


def _strings(col: StrColumn, rows: np.ndarray) -> pa.Array:
    codes = col.codes[rows]
    return pa.DictionaryArray.from_arrays(pa.array(codes, mask=codes < 0), pa.array(col.uniques, pa.string())
                                          ).cast(pa.string())


def _meta(chunk: Chunk, path: str, rows: np.ndarray, kind: str) -> pa.Array:
    col = chunk.meta.get(path)
    target = _ARROW[kind]
    if col is None:
        return pa.nulls(len(rows), target)
    if isinstance(col, StrColumn):
        return _strings(col, rows)
    values, missing = col.values[rows], ~col.present[rows]
    if col.kind == "object":  # ints beyond int64/float64 precision: Python numbers
        if kind == "int":
            raise MaskstoreError(f"meta.{path} holds integers beyond 64 bits, which a dataframe column "
                                 "cannot hold; leave it out with columns=")
        values = values.astype(np.float64)
    return pa.array(values, mask=missing).cast(target)


def _roi_labels(txn: lmdb.Transaction, version: DatasetVersion, chunk: Chunk, rows: np.ndarray
                ) -> list[tuple[int, str]]:
    """(row position, label) of the ROIs of the given rows, from the ROI index the query reads (the
    chunk's range of each label's postings), or from the records when a label is stored hashed."""
    with_rois = np.flatnonzero(chunk.n_rois[rows] > 0)
    position = dict(zip(rows[with_rois].tolist(), with_rois.tolist()))  # row in the chunk -> in the partition
    if not position:
        return []
    found = []
    window = [(chunk.base, chunk.base + len(chunk.present))]
    for key in postings.keys(txn, version.archive, "ix_roi", version.prefix):
        if key[:1] == HASHED_KEY_MARK:
            return _roi_labels_of_records(txn, version, chunk, position)
        name = key.decode("utf-8")
        for seq in postings.read(txn, version.archive, "ix_roi", version.prefix, key, window).tolist():
            if seq - chunk.base in position:
                found.append((position[seq - chunk.base], name))
    return found


def _roi_labels_of_records(txn: lmdb.Transaction, version: DatasetVersion, chunk: Chunk,
                           position: dict[int, int]) -> list[tuple[int, str]]:
    stored = frame_groups.Records(txn, version.archive, version.prefix)
    found = []
    for row, i in position.items():
        rec = stored.frame(chunk.base + row)
        found += [(i, name) for name in dict.fromkeys(n for roi in rec["rois"] for n in roi["label"])]
    return found


def _expand(starts: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """CSR ranges ``[start, start + count)`` flattened: (index of the range, position) per item."""
    owner = np.repeat(np.arange(len(counts)), counts)
    return owner, starts[owner] + np.arange(len(owner)) - (np.cumsum(counts) - counts)[owner]


def _labels(txn: lmdb.Transaction, version: DatasetVersion, rec: dict[str, Any], chunk: Chunk,
            rows: np.ndarray) -> pa.Array:
    """Per row, every X for which ``label == X`` holds: labels of its mask values, then of its ROIs,
    in the version's label order (mask_labels, then ROI-only labels by name)."""
    labels = Labels(rec["mask_labels"])
    rois = _roi_labels(txn, version, chunk, rows)
    names = labels.names + sorted({n for _, n in rois} - set(labels.names))
    index = {name: i for i, name in enumerate(names)}
    keys = np.array(sorted(labels.of_value), np.uint32)
    per_key = [[index[n] for n in labels.of_value[int(k)]] for k in keys] + [[]]  # last: a value without labels
    owner, entry = _expand(chunk.value_offsets[rows], np.diff(chunk.value_offsets)[rows])
    values = chunk.value_keys[entry]
    at = np.searchsorted(keys, values)
    found = at < len(keys)
    found[found] = keys[at[found]] == values[found]
    key_row = np.where(found, at, len(keys))
    widths = np.array([len(p) for p in per_key], np.int64)
    which, label_at = _expand((np.cumsum(widths) - widths)[key_row], widths[key_row])
    hit = np.zeros((len(rows), len(names)), bool)
    hit[owner[which], np.array([i for p in per_key for i in p], np.int64)[label_at]] = True
    for i, name in rois:
        hit[i, index[name]] = True
    row_of, label_of = np.nonzero(hit)
    offsets = np.searchsorted(row_of, np.arange(len(rows) + 1)).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(names, pa.string()).take(pa.array(label_of)))


def _partition(part: Part, wanted: Sequence[str], meta_types: dict[str, str]) -> pd.DataFrame:
    """The partition's rows with the ``wanted`` columns only (none: just its length)."""
    with _snapshot(part) as (version, txn, rec):
        chunk = _chunk(txn, version, part.base)
        rows = _rows(part, chunk)
        makers: dict[str, Callable[[], pa.Array]] = {
            "archive": lambda: pa.array([part.archive] * len(rows), pa.string()),
            "id": lambda: _strings(chunk.ids, rows),
            "context_id": lambda: _strings(chunk.context, rows),
            "timestamp": lambda: pa.array(chunk.timestamp[rows]),
            "labels": lambda: _labels(txn, version, rec, chunk, rows)}
        arrays = [makers[name]() if name in makers else _meta(chunk, name[5:], rows, meta_types[name[5:]])
                  for name in wanted]
        return _frame(pa.Table.from_arrays(arrays, schema=_schema(wanted, meta_types)), len(rows))


def _schema(wanted: Sequence[str], meta_types: dict[str, str]) -> pa.Schema:
    return pa.schema([(name, _FIXED_TYPES.get(name) or _ARROW[meta_types[name[5:]]]) for name in wanted])


def _frame(table: pa.Table, length: int) -> pd.DataFrame:
    return table.to_pandas(types_mapper=pd.ArrowDtype).set_axis(pd.RangeIndex(length))


@dataclass(frozen=True)
class _ReadPart:
    """The partition function of ``read_frames``: ``columns=`` in its signature is what lets Dask's
    optimizer push a column selection into the read."""

    meta_types: tuple[tuple[str, str], ...]

    def __call__(self, part: Part, columns: Sequence[str] | None = None) -> pd.DataFrame:
        types = dict(self.meta_types)
        wanted = list(FIXED) + [f"meta.{p}" for p in types] if columns is None else list(columns)
        return _partition(part, wanted, types)


def _frame_dicts(part: Part) -> list[dict[str, Any]]:
    """The partition's frame dicts, from the planned snapshot."""
    with _snapshot(part) as (version, txn, _):
        seqs = _rows(part, _chunk(txn, version, part.base)) + part.base if part.seqs is None else part.seqs
        stored = frame_groups.Records(txn, version.archive, version.prefix)
        return [stored.frame(int(s)) for s in seqs]


# ------------------------------------------------------------------------------------------ public API

def _meta_types(shards: list[Shard]) -> dict[str, str]:
    """The scalar meta paths of every shard, one type each (ints widen to floats, as in a version)."""
    types: dict[str, str] = {}
    where: dict[str, str] = {}
    for shard in shards:
        for path, kind in sorted(shard.record["meta_types"].items()):
            if kind not in _ARROW:
                continue
            old = types.get(path, kind)
            if old != kind and {old, kind} != {"int", "float"}:
                raise MaskstoreError(f"meta.{path} is a {old} in {where[path]} but a {kind} in {shard.archive}; "
                                     "a meta key needs one type across shards (leave it out with columns=)")
            types[path] = "float" if old != kind else kind
            where.setdefault(path, shard.archive)
    return types


def read_frames(archives: Shards, query: str = "", dataset: str | None = None, version: str | None = None,
                columns: Sequence[str] | None = None) -> dd.DataFrame:
    """The selected frames of every shard as a Dask dataframe, one partition per chunk of frames.

    Columns: ``archive``, ``id``, ``context_id``, ``timestamp``, ``labels`` (list of str) and
    ``meta.<dotted.path>`` (missing: NA); ``columns=`` (and any later column selection) is read only.

    >>> maskstore.dask.read_frames("shards/*.maskstore", 'label == "person"').id.count().compute()  # doctest: +SKIP
    """
    shards = plan(archives, query, dataset, version)
    types = _meta_types(shards)
    names = list(FIXED) + [f"meta.{p}" for p in types]
    unknown = [c for c in columns or () if c not in names]
    if unknown:
        raise QueryError(f"no column {unknown[0]!r}; the columns are {', '.join(names)}")
    parts = [p for s in shards for p in s.parts]
    meta = _frame(_schema(names, types).empty_table(), 0)
    if not parts:
        return dd.from_pandas(meta if columns is None else meta[list(columns)], npartitions=1)
    return dd.from_map(_ReadPart(tuple(types.items())), parts, meta=meta, columns=columns,
                       label="maskstore-read", enforce_metadata=False)


def frames(archives: Shards, query: str = "", dataset: str | None = None, version: str | None = None) -> db.Bag:
    """The selected frames of every shard as a Dask bag of frame dicts, one partition per chunk."""
    parts = [p for s in plan(archives, query, dataset, version) for p in s.parts]
    return db.from_sequence(parts, partition_size=1).map_partitions(
        lambda chosen: [d for part in chosen for d in _frame_dicts(part)])


def _results(fn: Callable[[Any], Any], items: list[Any]) -> Iterator[Any]:
    """``fn`` of each item, as each finishes: on the current Dask client, else on Dask's configured
    local scheduler. Leaving early cancels what has not run."""
    try:
        client = default_client()
    except ValueError:
        yield from dask.compute(*[dask.delayed(fn, pure=False)(item) for item in items])
        return
    futures = client.map(fn, items, pure=False)
    try:
        for future in as_completed(futures):
            yield future.result()
    finally:
        client.cancel(futures)


@contextmanager
def connect(address: str) -> Iterator[Client]:
    """A client of the Dask scheduler at ``address``, current inside the ``with``."""
    try:
        client = Client(address, timeout="20s")
    except (OSError, TimeoutError) as exc:
        raise MaskstoreError(f"cannot reach the Dask scheduler at {address}: {exc}; start one with "
                             "`dask scheduler` and workers with `dask worker ADDRESS`") from None
    with client:
        yield client


# ------------------------------------------------------------------------------------------ export

def _export_task(task: tuple[Part, exporting.Job]) -> exporting.Done:
    """Render and write one task's frames on a worker (files are whole: written, then renamed)."""
    part, job = task
    frames_ = _frame_dicts(part)
    root = os.open(job.out, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return exporting.render_task(job, _open(part), root, frames_)
    finally:
        os.close(root)


def _pieces(part: Part, size: int) -> Iterator[Part]:
    """A partition (planned with its seqs) cut into export tasks of ``size`` frames: a chunk holds up
    to 4096 frames, far more than one task should render."""
    assert part.seqs is not None
    for i in range(0, len(part.seqs), size):
        yield replace(part, seqs=part.seqs[i:i + size])


def _shared_record(shards: list[Shard], plan: exporting.Plan) -> dict[str, Any]:
    """The version record the export's settings come from: every shard must give the same settings
    (one folder holds one export)."""
    first = plan.settings(shards[0].record)[0]
    for shard in shards[1:]:
        settings = plan.settings(shard.record)[0]
        if settings != first:
            raise MaskstoreError(f"{shard.archive} cannot join the export of {shards[0].archive}: "
                                 f"{exporting.differences(first, settings)}")
    return shards[0].record


def export(archives: Shards, out: str | os.PathLike[str], query: str = "", mode: str = "segmentation",
           dataset: str | None = None, version: str | None = None, format: str = "png",
           mask_id: str | None = None, overwrite: bool = False, progress: Callable[[int], None] | None = None,
           **render_options: Any) -> exporting.ExportReport:
    """``v.export`` over every shard, rendered and written by the Dask workers (which must see ``out``,
    a shared folder on a cluster); one merged ``manifest.jsonl`` and legend. Re-run to resume."""
    chosen = exporting.plan_export(out, mode, format, mask_id, **render_options)
    shards = plan(archives, query, dataset, version, compact=False)
    rec = _shared_record(shards, chosen)

    def run(job: exporting.Job, root: int) -> Iterator[exporting.Done]:
        tasks = [(piece, replace(job, archive=piece.path)) for s in shards for part in s.parts
                 for piece in _pieces(part, EXPORT_FRAMES_PER_TASK)]
        return _results(_export_task, tasks)
    return exporting.write_export(chosen, rec, shards[0].archive, run, overwrite, progress)


# ------------------------------------------------------------------------------------------ stats

@dataclass(frozen=True)
class _ShardStats:
    frames: int
    rows: list[LabelStat]
    pixels: int          # all mask pixels of the shard (the shares' denominator)
    mask_names: list[str]


def _shard_stats(shard: Part) -> _ShardStats:
    """One shard's statistics, on a worker (``shard`` names its version; it has no seqs)."""
    version = DatasetVersion(_open(shard), shard.version_id)
    n, rows = label_stats(version)

    def totals(txn: lmdb.Transaction) -> _ShardStats:
        # label_stats left the version's columns in the archive's cache: nothing is read again.
        ctx = engine.context(txn, version)
        return _ShardStats(n, rows, sum(int(c.value_counts.sum()) for c in ctx.chunks), ctx.labels.names)
    return version.archive.read(totals)


def combine(parts: Iterable[_ShardStats]) -> tuple[int, list[LabelStat]]:
    """Shard statistics summed: frames, pixels and ROI frames add up (shards hold different frames),
    shares are of all shards' mask pixels; rows ordered as ``label_stats`` orders them."""
    parts = list(parts)
    total = sum(p.pixels for p in parts)
    mask_names = list(dict.fromkeys(n for p in parts for n in p.mask_names))
    sums: dict[tuple[str, bool], list[int]] = {}
    for p in parts:
        for row in p.rows:
            acc = sums.setdefault((row.label, row.unlabelled), [0, 0, 0])
            acc[0] += row.frames
            acc[1] += row.pixels
            acc[2] += row.roi_frames
    order = [(n, False) for n in mask_names]
    order += sorted(k for k in sums if not k[1] and k[0] not in set(mask_names))
    order.append((UNLABELLED, True))
    rows = [LabelStat(name, *sums.get((name, flag), [0, 0, 0])[:2], share=0.0,
                      roi_frames=sums.get((name, flag), [0, 0, 0])[2], unlabelled=flag) for name, flag in order]
    rows = [replace(r, share=r.pixels / total if total else 0.0) for r in rows]
    return sum(p.frames for p in parts), rows


def stats(archives: Shards, dataset: str | None = None, version: str | None = None) -> tuple[int, list[LabelStat]]:
    """``maskstore stats`` (``summary.label_stats``) of every shard, computed on the workers and
    summed: (frames, rows). Only the per-label numbers travel to the client."""
    items = []
    for shard in archive_paths(archives):
        ar = _reading(shard)
        v = ar.pick_version(dataset, version, how="dataset= and version=")
        rec = v.record()
        items.append(Part(str(ar.path), str(ar.path.resolve()), v.id, rec["generation"],
                          rec["state"] != "published", 0, None))
    return combine(_results(_shard_stats, items))
