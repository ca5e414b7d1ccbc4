"""Run queries against a version: parse and check (cached), plan, execute, order, limit, stream.

``DatasetVersion.query/ids/count/explain`` call into here; the column cache lives on the Archive so
every handle of a version in one process shares it until the version's generation changes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

import lmdb
import numpy as np

from .. import records
from ..archive import CHUNK_BITS, DatasetVersion, u64
from ..model import Frame, frame_from_dict
from . import columns
from .check import check_query, warn_unknown_labels
from .evaluate import Labels
from .nodes import Query, to_text
from .parse import parse_query
from .plan import Context, Everything, Step, plan_expr


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
    if cached is None or cached[0] != rec["generation"]:
        cached = (rec["generation"], columns.load_chunks(txn, version, rec["generation"]), {})
        cache[version.id] = cached
    return Context(txn, version, cached[1], Labels(rec["mask_labels"]), rec["meta_types"], cached[2])


def _plan(query: Query, ctx: Context) -> Step:
    return Everything() if query.where is None else plan_expr(query.where, ctx)


def _python(value: object) -> object:
    """A numpy scalar as the Python value (object columns already hold Python numbers)."""
    return value.item() if isinstance(value, np.generic) else value


def _ordered(query: Query, ctx: Context, seqs: np.ndarray) -> np.ndarray:
    """Sort by the order-by field (missing values last, ties in insertion order), then limit."""
    if query.order_by is not None and len(seqs):
        by_base = {c.base: c for c in ctx.chunks}
        keys, missing = [], np.zeros(len(seqs), bool)
        field = query.order_by
        for i, seq in enumerate(seqs.tolist()):
            chunk = by_base[(seq >> CHUNK_BITS) << CHUNK_BITS]
            row = seq - chunk.base
            if field.path:
                col = chunk.meta.get(".".join(field.path))
                value = None if col is None else (
                    col.uniques[col.codes[row]] if col.codes[row] >= 0 else None) if isinstance(col, columns.StrColumn) \
                    else (_python(col.values[row]) if col.present[row] and col.kind != "present" else None)
            elif field.name == "timestamp":
                value = int(chunk.timestamp[row])
            else:
                col = chunk.ids if field.name == "id" else chunk.context
                value = col.uniques[col.codes[row]]
            missing[i] = value is None
            keys.append(value)
        present = [k for k in keys if k is not None]
        ranks = np.zeros(len(seqs), np.int64)
        if present:
            # Timestamps are int64 already; anything else (strings, meta numbers that may mix big ints
            # with floats) is ranked with Python's exact comparisons, as the residual filters compare.
            exact = None if field.name == "timestamp" and not field.path else object
            _, inverse = np.unique(np.array(present, dtype=exact), return_inverse=True)
            ranks[~missing] = inverse
        order = np.lexsort((seqs, -ranks if query.descending else ranks, missing))
        seqs = seqs[order]
    return seqs if query.limit is None else seqs[: int(query.limit)]


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
    return _ordered(query, ctx, _plan(query, ctx).run(ctx)), ctx


def ids(version: DatasetVersion, text: str | Query) -> list[str]:
    def work(txn: lmdb.Transaction) -> list[str]:
        seqs, ctx = select(version, text, txn)
        return ctx.ids_of(seqs)
    return version.archive.read(work)


def count(version: DatasetVersion, text: str | Query) -> int:
    return version.archive.read(lambda txn: len(select(version, text, txn)[0]))


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
            lines.append(f"order by {query.order_by.text}{' desc' if query.descending else ''} (column sort)")
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
        frames_db = version.archive.db("frames")
        yield version.record(txn), (records.decode_frame(txn.get(version.prefix + u64(seq), db=frames_db))
                                    for seq in seqs.tolist())
