"""Run queries against a version: parse and check (cached), plan, execute, order, limit, stream.

``DatasetVersion.query/ids/count/explain`` call into here; the column cache lives on the Archive so
every handle of a version in one process shares it until the version's generation changes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import lmdb
import numpy as np

from .. import frame_groups, postings
from ..labels import within_tolerance
from ..model import Frame, frame_from_dict
from . import columns
from .check import check_query, warn_unknown_labels
from .evaluate import Labels
from .nodes import Field, Query, to_text
from .parse import parse_query
from .plan import Context, Everything, Step, field_column, plan_expr, sorted_unique

if TYPE_CHECKING:
    from ..archive import DatasetVersion


@lru_cache(maxsize=512)
def _checked(text: str, meta_types: tuple[tuple[str, str], ...]) -> Query:
    return check_query(parse_query(text), dict(meta_types))


def prepare(text: str | Query, meta_types: dict[str, str]) -> Query:
    """Parse and type-check before anything is read; cached per query text and meta types."""
    if isinstance(text, Query):
        return check_query(text, meta_types)
    return _checked(text, tuple(sorted(meta_types.items())))


def context(txn: lmdb.Transaction, version: DatasetVersion, rec: dict | None = None) -> Context:
    """The version as of ``txn``; pass its record when the caller has already decoded it."""
    rec = version.record(txn) if rec is None else rec
    cache = version.archive.column_cache
    cached = cache.get(version.id)
    if cached is None or cached.generation != rec["generation"]:
        cached = cache[version.id] = columns.load(txn, version, rec["generation"])
    cached.use(txn)
    return Context(txn, version, cached.chunks, Labels(_mask_labels(txn, version, rec, cached.shared)),
                   rec["meta_types"], cached.shared, stored_zones=cached.stored_zones, rebuilt=cached.rebuilt)


def _mask_labels(txn: lmdb.Transaction, version: DatasetVersion, rec: dict, shared: dict[str, Any]) -> list[dict]:
    """``mask_labels`` as queries see them: under a mask tolerance, each stored value near a labelled
    one (the version's distinct values: the keys of its value index) takes that one's labels.

    Resolved once per cached generation of the columns: the value index changes only with frame
    writes, which give the cache fresh ``shared`` arrays, and the key holds what label-only writes
    (which keep them) change."""
    tolerance = rec.get("mask_tolerance", 0)
    if not tolerance:
        return rec["mask_labels"]
    key = f"labels within {tolerance} of {rec['mask_labels']!r}"
    if key not in shared:
        shared[key] = _resolve_tolerance(txn, version, rec["mask_labels"], tolerance)
    return shared[key]


def _resolve_tolerance(txn: lmdb.Transaction, version: DatasetVersion, labels: list[dict], tolerance: int) -> list[dict]:
    keys = [int.from_bytes(key, "big") for key in postings.keys(txn, version.archive, "ix_value", version.prefix)]
    return within_tolerance(labels, np.array(keys, dtype=np.int64), tolerance)


def _plan(query: Query, ctx: Context) -> Step:
    return Everything() if query.where is None else plan_expr(query.where, ctx)


def _order_column(field: Field, chunk: columns.Chunk) -> columns.StrColumn | columns.ValueColumn | None:
    col = field_column(field, chunk)
    return None if isinstance(col, columns.ValueColumn) and col.kind == "present" else col


def _sort_keys(field: Field, ctx: Context, seqs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(key, missing) per seq: int64 or float64 keys ordered as the values compare (strings by
    rank), gathered chunk by chunk with numpy; Python numbers only when a column holds ints that
    float64 would round, or ints beside floats."""
    positions = ctx.positions(seqs)
    rows = positions % columns.CHUNK
    bounds = np.searchsorted(positions // columns.CHUNK, np.arange(len(ctx.chunks) + 1))
    missing = np.ones(len(seqs), bool)
    parts: list[tuple[slice, Any]] = []
    for i in np.flatnonzero(np.diff(bounds)).tolist():
        part = slice(int(bounds[i]), int(bounds[i + 1]))
        col = _order_column(field, ctx.chunks[i])
        if col is not None:
            here = rows[part]
            has = col.codes[here] >= 0 if isinstance(col, columns.StrColumn) else col.present[here]
            missing[part] = ~has
            parts.append((part, col))
    if not parts:
        return np.zeros(len(seqs), np.int64), missing
    if isinstance(parts[0][1], columns.StrColumn):
        used = [(part, col, np.unique(col.codes[rows[part]])) for part, col in parts]  # ids: one per frame
        texts = sorted({col.uniques[c] for _, col, codes in used for c in codes.tolist() if c >= 0})
        rank = {t: i for i, t in enumerate(texts)}
        keys = np.zeros(len(seqs), np.int64)
        for part, col, codes in used:
            ranks = np.zeros(len(col.uniques) + 1, np.int64)
            ranks[codes] = [rank.get(col.uniques[c], 0) if c >= 0 else 0 for c in codes.tolist()]
            keys[part] = ranks[col.codes[rows[part]]]
        return keys, missing
    kinds = {col.kind for _, col in parts}
    dtype = {frozenset({"int"}): np.int64, frozenset({"bool"}): np.int64, frozenset({"float"}): np.float64}
    exact = dtype.get(frozenset(kinds), object)
    keys = np.zeros(len(seqs), exact)
    for part, col in parts:
        keys[part] = col.values[rows[part]]
    if exact is object:  # Python's exact comparisons, as the residual filters compare
        _, keys[~missing] = np.unique(keys[~missing], return_inverse=True)
        keys = keys.astype(np.int64)
    return keys, missing


def _reversed(keys: np.ndarray) -> np.ndarray:
    """Keys in the opposite order, without overflow: ~x for ints, -x for floats."""
    return ~keys if keys.dtype == np.int64 else -keys


def _top_candidates(query: Query, ctx: Context, plan: Step, limit: int) -> np.ndarray | None:
    """Frames the query selects that include its first ``limit`` by a numeric order, from the plan run
    over only the chunks whose value ranges (a zone map) can hold them: the chunks whose best bound
    comes first (one, then four times as many) until ``limit`` selected frames hold a value; their
    ``limit``-th best key then rules out every chunk whose best bound is worse. None when the field
    has no ranges or the answer needs most chunks anyway (the caller runs the whole plan)."""
    field = query.order_by
    assert field is not None
    ranges = ctx.value_ranges(field)
    if ranges is None:
        return None
    best = _reversed(ranges.high) if query.descending else ranges.low  # in key order: smaller comes first
    usable = np.flatnonzero(ranges.has)
    usable = usable[np.argsort(best[usable], kind="stable")]
    take = 1
    while take * 4 <= len(usable):
        ctx.window = np.zeros(len(ctx.chunks), bool)
        ctx.window[usable[:take]] = True
        seqs = plan.run(ctx)
        keys, missing = _sort_keys(field, ctx, seqs)
        if np.count_nonzero(~missing) >= limit:
            keys = _reversed(keys[~missing]) if query.descending else keys[~missing]
            kth = np.partition(keys, limit - 1)[limit - 1]
            rest = (best <= kth) & ranges.has & ~ctx.window
            if np.count_nonzero(rest) * 2 > len(rest):  # ranges that do not tell chunks apart
                ctx.window = None
                return plan.run(ctx)
            if rest.any():
                ctx.window = rest
                seqs = sorted_unique([seqs, plan.run(ctx)])
            ctx.window = None
            return seqs
        take *= 4
    ctx.window = None
    return None


def _ordered(query: Query, ctx: Context, seqs: np.ndarray) -> np.ndarray:
    """Sort by the order-by field (missing values last, ties in insertion order), then limit: with a
    limit, only the rows that can make the first ``limit`` are sorted (a partition finds them)."""
    limit = None if query.limit is None else int(query.limit)
    if query.order_by is None or not len(seqs):
        return seqs if limit is None else seqs[:limit]
    keys, missing = _sort_keys(query.order_by, ctx, seqs)
    if query.descending:
        keys = _reversed(keys)
    have = np.flatnonzero(~missing)  # insertion order, as seqs are
    if limit is not None and limit < len(have):
        cut = np.partition(keys[have], limit - 1)[limit - 1] if limit else None
        have = have[keys[have] <= cut] if limit else have[:0]
    order = have[np.lexsort((have, keys[have]))]
    if limit is None or len(order) < limit:
        order = np.concatenate((order, np.flatnonzero(missing)))
    return seqs[order] if limit is None else seqs[order[:limit]]


def _checked_in(version: DatasetVersion, text: str | Query, txn: lmdb.Transaction) -> tuple[Query, Context]:
    """The checked query (before any frame or column is read) and the version's context, from one
    decode of the version record."""
    rec = version.record(txn)
    query = prepare(text, rec["meta_types"])
    ctx = context(txn, version, rec)
    warn_unknown_labels(query, f"{rec['dataset']}/{rec['name']}", ctx.labels.names, lambda: ctx.roi_labels)
    return query, ctx


def select(version: DatasetVersion, text: str | Query, txn: lmdb.Transaction) -> tuple[np.ndarray, Context]:
    """Seqs of the selected frames in result order, from the snapshot ``txn``, and its context."""
    query, ctx = _checked_in(version, text, txn)
    plan = _plan(query, ctx)
    seqs = None
    if query.order_by is not None and query.limit is not None and query.limit > 0:
        seqs = _top_candidates(query, ctx, plan, int(query.limit))
    return _ordered(query, ctx, plan.run(ctx) if seqs is None else seqs), ctx


def ids(version: DatasetVersion, text: str | Query) -> list[str]:
    def work(txn: lmdb.Transaction) -> list[str]:
        seqs, ctx = select(version, text, txn)
        return ctx.ids_of(seqs)
    return version.archive.read(work)


def count(version: DatasetVersion, text: str | Query) -> int:
    """How many frames the query selects: no sort (order by changes no count), and without a where
    clause the version record's count, which loading the columns checked against them."""
    def work(txn: lmdb.Transaction) -> int:
        query, ctx = _checked_in(version, text, txn)
        found = version.record(txn)["count"] if query.where is None else _plan(query, ctx).count(ctx)
        return found if query.limit is None else min(found, int(query.limit))
    return version.archive.read(work)


def frame_dicts(version: DatasetVersion, text: str | Query) -> Iterator[dict]:
    """Frame dicts of the selection, read one at a time from one snapshot (flat memory).

    The query is checked now, so a bad query raises here rather than at the first ``next()``."""
    prepare(text, version.record()["meta_types"])
    return _stream(version, text)


def _stream(version: DatasetVersion, text: str | Query) -> Iterator[dict]:
    with snapshot(version, text) as (_, frames):
        yield from frames


def query(version: DatasetVersion, text: str | Query) -> Iterator[Frame]:
    return (frame_from_dict(d) for d in frame_dicts(version, text))


def explain(version: DatasetVersion, text: str | Query) -> str:
    def work(txn: lmdb.Transaction) -> str:
        query, ctx = _checked_in(version, text, txn)
        lines = [f"query: {to_text(query) or '(all frames)'}", "plan:"]
        lines += ["  " + ln for ln in _plan(query, ctx).lines()]
        if query.order_by is not None:
            top = query.limit is not None and ctx.value_ranges(query.order_by) is not None
            how = "top-k over the chunks whose value ranges can hold the first rows" if top else "column sort"
            lines.append(f"order by {query.order_by.text}{' desc' if query.descending else ''} ({how})")
        if query.limit is not None:
            lines.append(f"limit {query.limit}")
        return "\n".join(lines)
    return version.archive.read(work)


@contextmanager
def snapshot(version: DatasetVersion, text: str | Query) -> Iterator[tuple[dict, Iterator[dict]]]:
    """The version record and the selected frame dicts, both read in one transaction.

    An export renders every frame with the labels and colours of the moment it selected them, however
    long it runs and whatever another process writes meanwhile. Use the frames inside the ``with``."""
    with version.archive._begin() as txn:
        seqs, _ = select(version, text, txn)
        stored = frame_groups.Records(txn, version.archive, version.prefix)
        yield version.record(txn), (stored.frame(seq) for seq in seqs.tolist())
