"""Plan a checked query: index lookups and column scans produce sorted seq arrays, set algebra combines
them, and what neither answers becomes a residual closure over the candidates' records.

Every step yields a sorted, unique uint64 array of frame seqs, so ``and``/``or``/``not`` are numpy
set operations. ``explain`` prints the plan tree the run executes.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

import lmdb
import numpy as np

from .. import frame_groups, postings
from ..postings import EMPTY, sorted_unique
from ..layout import CHUNK_BITS, HASHED_KEY_MARK, id_entry_seq, text_key, value_key
from ..errors import ArchiveError
from ..labels import unpack_rgb
from . import zones
from .columns import BASES, CHUNK, FRAME_COUNTS, Chunk, StrColumn, ValueColumn, meta_field, zone_of
from .evaluate import Labels, comparable, compare, compile_expr, glob, rgb_value
from .nodes import And, Compare, Coverage, Expr, Field, Has, In, Not, Or, RoiAll, to_text

if TYPE_CHECKING:
    from ..archive import DatasetVersion

SCALAR_META = ("str", "int", "float", "bool")
_RANGE_DTYPES = {"int": np.int64, "bool": np.int64, "float": np.float64}
WALK_SHARE = 16
"""A window of at most 1/WALK_SHARE of the chunks reads only the index blocks of its seq ranges; a
larger one reads every block of the key and filters."""


@dataclass
class Ranges:
    """A zone map: per chunk of the version, the lowest and highest value of one numeric field."""

    kind: str          # a key of _RANGE_DTYPES: the dtype of low and high
    low: np.ndarray
    high: np.ndarray
    has: np.ndarray    # some frame of the chunk holds a value
    full: np.ndarray   # every frame of the chunk holds one


POSTINGS = "postings"
POSTINGS_CACHE_SEQS = 1 << 23
"""Lookups keep their checked seqs with the chunks (``Context.shared``, which a write replaces), at most
this many per version (64 MiB): a common label's 1.2M seqs at 10M frames decode from 2,442 blocks once,
not at every query."""

DENSE_FROM = 64
"""A lookup of at least one frame in DENSE_FROM positions (64 a chunk on average) checks its seqs
against the version's dense ``present`` (``Context._present_at``)."""


@dataclass
class Context:
    """What a run reads from: one snapshot (read transaction) of one version.

    Whole-version arrays are dense over *positions*, not seqs: chunk ``i``'s rows sit at
    ``i * CHUNK ...``, so their size follows the chunks that exist, whatever seqs a record claims."""

    txn: lmdb.Transaction
    version: DatasetVersion
    chunks: list[Chunk]
    labels: Labels
    meta_types: dict[str, str]
    shared: dict[Any, Any]  # lazily built whole-version arrays, cached with the chunks
    coverages: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)  # this run's, per label
    window: np.ndarray | None = None
    """Chunks a step must answer for (bool per chunk; None: all). A step returns every frame it selects
    in these chunks, and may return frames it selects elsewhere: a top-k asks only where its first
    rows can be."""
    stored_zones: Callable[[bytes, list[int]], zones.Table | None] = lambda name, blocks: None
    """The version's stored zone map of a field, in some blocks (``columns.Cached.stored_zones``);
    None: none kept."""
    rebuilt: frozenset[int] = frozenset()
    """Chunk numbers whose stored zone rows may be stale: built from their records in memory."""

    def __post_init__(self) -> None:
        if "checked" not in self.shared:  # once per load of the chunks, not per query
            check_chunks(self.txn, self.version, self.chunks)
            self.shared["checked"] = True

    def where(self) -> str:
        """``dataset/version``, for messages."""
        rec = self.version.record(self.txn)
        return f"{rec['dataset']}/{rec['name']}"

    def size(self) -> int:
        """The length of dense per-position arrays."""
        return len(self.chunks) * CHUNK

    def _dense(self, name: str, parts: Any) -> np.ndarray:
        if name not in self.shared:
            arrays = list(parts)
            self.shared[name] = np.concatenate(arrays) if arrays else np.zeros(0, bool)
        return self.shared[name]

    def present(self) -> np.ndarray:
        """Whether a frame lives at each position."""
        return self._dense("present", (c.present for c in self.chunks))

    def frame_counts(self) -> np.ndarray:
        """Frames in each chunk (the summary's spans: no ``present`` read)."""
        if FRAME_COUNTS not in self.shared:
            self.shared[FRAME_COUNTS] = np.array([c.span()[0] for c in self.chunks], np.int64)
        return self.shared[FRAME_COUNTS]

    def bases(self) -> np.ndarray:
        if BASES not in self.shared:
            self.shared[BASES] = np.array([c.base for c in self.chunks], np.uint64)
        return self.shared[BASES]

    def ids_of(self, seqs: np.ndarray) -> list[str]:
        """Ids in the order of ``seqs``, taken chunk by chunk from the stored ids (``Chunk.ids_at``):
        a Python str is made for each result, none for the frames around it."""
        found: list[str] = []  # in chunk order: a plain list, no object array per chunk
        parts = self.by_chunk(self.positions(seqs))
        for number, _, rows in parts:
            found += self.chunks[number].ids_at(rows)
        order = np.concatenate([part for _, part, _ in parts]) if parts else np.zeros(0, np.intp)
        if len(order) < 2 or (order[1:] > order[:-1]).all():
            return found
        out = np.empty(len(found), object)
        out[order] = np.array(found, dtype=object)
        return out.tolist()

    def contiguous(self) -> bool:
        """Whether chunk ``i`` starts at seq ``i * CHUNK`` (no chunk missing): then positions are seqs."""
        if "contiguous" not in self.shared:
            self.shared["contiguous"] = bool((self.bases() == np.arange(len(self.chunks), dtype=np.uint64) * CHUNK).all())
        return self.shared["contiguous"]

    def positions(self, seqs: np.ndarray, source: str | None = None) -> np.ndarray:
        """Dense positions of ``seqs``. With ``source`` (an index) the seqs are untrusted: ArchiveError when
        one names a seq where no frame lives, which only a damaged archive does. O(len(seqs)) numpy work."""
        if self.contiguous():
            found = seqs < np.uint64(self.size())
            positions = np.where(found, seqs, 0).astype(np.intp)
        else:
            seqs = seqs.astype(np.uint64)
            bases = self.bases()
            rows = seqs & np.uint64(CHUNK - 1)
            index = np.minimum(np.searchsorted(bases, seqs - rows), max(len(bases) - 1, 0))
            found = bases[index] == seqs - rows if len(bases) else np.zeros(len(seqs), bool)
            positions = (index * CHUNK + rows.astype(np.intp)).astype(np.intp)
        if source is not None:
            found[found] = self._present_at(positions[found])
            if not found.all():
                raise ArchiveError(f"{self.where()}: {source} points at frame seq {seqs[~found][0]}, where no "
                                   "frame lives; run maskstore check --repair to rebuild the indexes")
        return positions

    def _present_at(self, positions: np.ndarray) -> np.ndarray:
        """Whether a frame lives at each position, reading only the chunks they fall in (a lookup's
        results in a fresh process: the other chunks' ``present`` stays unread). Positions in most
        chunks (a common label's) read the version's dense ``present``, kept with the chunks for the
        next query, instead of a Python step per chunk each time."""
        if "present" not in self.shared and len(positions) * DENSE_FROM < self.size():
            out = np.zeros(len(positions), bool)
            for number, part, rows in self.by_chunk(positions):
                out[part] = self.chunks[number].present[rows]
            return out
        return self.present()[positions]

    def by_chunk(self, positions: np.ndarray) -> list[tuple[int, np.ndarray, np.ndarray]]:
        """(chunk, indexes into ``positions``, rows in the chunk) per chunk the positions fall in, in chunk
        order: a few numpy calls and a Python step per chunk, none per position."""
        chunk_of, rows = np.divmod(positions, CHUNK)
        if len(positions) > 1 and not (positions[1:] >= positions[:-1]).all():
            order = np.argsort(chunk_of, kind="stable")
        else:
            order = np.arange(len(positions))
        parts = np.split(order, np.flatnonzero(np.diff(chunk_of[order])) + 1) if len(order) else []
        return [(int(chunk_of[part[0]]), part, rows[part]) for part in parts]

    def seqs_at(self, positions: np.ndarray) -> np.ndarray:
        if self.contiguous():
            return positions.astype(np.uint64)
        return self.bases()[positions // CHUNK] + (positions % CHUNK).astype(np.uint64)

    @cached_property
    def roi_labels(self) -> list[str] | None:
        """Distinct ROI labels of the version (for globs), read from the ix_roi keys; None when some
        label is too long to be a key (stored as its hash), so globs must read the records."""
        out = []
        for key in postings.keys(self.txn, self.version.archive, "ix_roi", self.version.prefix):
            if key[:1] == HASHED_KEY_MARK:
                return None
            try:
                out.append(key.decode("utf-8"))
            except UnicodeDecodeError:
                raise ArchiveError(f"{self.where()}: ix_roi holds a key that is not UTF-8 text; "
                                   "run maskstore check --repair to rebuild the indexes") from None
        return out

    def zones(self, field: Field) -> zones.Table:
        """Per chunk, the kind, frames holding a value, and lowest and highest value of a single-valued
        field (timestamp, meta.<path>): the zone map that lets a scan or a top-k skip chunks without
        reading their columns. From the version's stored zone map (an entry per 256 chunks), rows of
        chunks built in memory (and every row, when the version keeps none) from their columns; once
        per version generation."""
        key = ("zones", field.name, field.path)
        if key not in self.shared:
            name = b"ts" if field.name == "timestamp" else meta_field(".".join(field.path))
            numbers = self.bases() >> np.uint64(CHUNK_BITS)
            stored = self.stored_zones(name, zones.blocks(numbers))
            table = (stored or zones.Table.of({})).aligned(numbers)
            own = range(len(self.chunks)) if stored is None else \
                np.flatnonzero(np.isin(numbers, np.array(sorted(self.rebuilt), np.uint64))).tolist()
            for i in own:
                table.put(i, zone_of(field_column(field, self.chunks[i])))
            self.shared[key] = table
        return self.shared[key]

    def value_ranges(self, field: Field) -> Ranges | None:
        """Per chunk, the lowest and highest value of a numeric field (timestamp, meta.<path>) over
        the frames holding one, from its zone map: what lets a top-k skip chunks. None when some chunk
        holds strings, Python numbers (ints that int64 or float64 would round) or ints beside floats,
        which have no such array."""
        table = self.zones(field)
        has = table.counts > 0
        kinds = set(table.kinds[has].tolist())
        kind = {frozenset(): "int", frozenset({b"i"}): "int", frozenset({b"f"}): "float",
                frozenset({b"b"}): "bool"}.get(frozenset(kinds))
        if kind is None:
            return None
        dtype = _RANGE_DTYPES[kind]
        low, high = np.zeros(len(has), dtype), np.zeros(len(has), dtype)
        low[has], high[has] = table.low[has].tolist(), table.high[has].tolist()
        return Ranges(kind, low, high, has, table.counts == self.frame_counts())

    def pixel_totals(self) -> np.ndarray:
        """All mask pixels of the frame at every position (int64): coverage's denominator."""
        return self._dense("pixel totals", (_frame_sums(c.value_offsets, c.value_counts) for c in self.chunks))

    def labelled_pixels(self, values: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """(positions, pixels): the frames holding any of the packed mask ``values``, and how many of
        their pixels hold them. A per-label pixel column, sparse (most frames lack most labels), built
        once per generation and set of values."""
        key = ("labelled pixels", tuple(values))
        if key not in self.shared:
            wanted = np.array(values, np.uint32)
            positions, pixels = [np.zeros(0, np.intp)], [np.zeros(0, np.int64)]
            for i, c in enumerate(self.chunks if values else ()):
                # a few values (a label's usual count): equality tests beat isin's sort
                hits = np.flatnonzero(np.logical_or.reduce([c.value_keys == v for v in wanted]) if len(wanted) <= 8
                                      else np.isin(c.value_keys, wanted))
                if len(hits):
                    rows = np.searchsorted(c.value_offsets, hits, side="right") - 1  # the frame of each hit
                    starts = np.flatnonzero(np.concatenate(([True], rows[1:] != rows[:-1])))
                    positions.append(rows[starts] + i * CHUNK)
                    pixels.append(np.add.reduceat(c.value_counts[hits], starts))
            self.shared[key] = (np.concatenate(positions), np.concatenate(pixels))
        return self.shared[key]

    def coverage(self, label: str) -> np.ndarray:
        """Share of each frame's mask pixels whose value carries ``label``, at every position (0 without
        mask pixels), as ``evaluate.coverage`` computes it: int counts, one float division."""
        if label not in self.coverages:
            positions, pixels = self.labelled_pixels(self.labels.values_of([label]))
            totals = self.pixel_totals()[positions]
            ratio = np.zeros(self.size())
            ratio[positions] = np.divide(pixels, totals, out=np.zeros(len(totals)), where=totals > 0)
            self.coverages[label] = ratio
        return self.coverages[label]

    def in_window(self, mask: np.ndarray) -> np.ndarray:
        """A dense boolean over positions, False outside the window's chunks."""
        if self.window is None:
            return mask
        return (mask.reshape(-1, CHUNK) & self.window[:, None]).reshape(-1)

    def window_seqs(self) -> list[tuple[int, int]]:
        """The window as seq ranges ``[start, stop)``, adjacent chunks joined."""
        assert self.window is not None
        bases = self.bases().tolist()
        out: list[tuple[int, int]] = []
        for i in np.flatnonzero(self.window).tolist():
            if out and out[-1][1] == bases[i]:
                out[-1] = (out[-1][0], bases[i] + CHUNK)
            else:
                out.append((bases[i], bases[i] + CHUNK))
        return out

    def universe(self) -> np.ndarray:
        return self.seqs_at(np.flatnonzero(self.in_window(self.present())))


def check_chunks(txn: lmdb.Transaction, version: DatasetVersion, chunks: list[Chunk]) -> None:
    """What loaded chunks must agree on with the records, from their spans (the version's summary: no
    chunk read) and three cursor probes: every present seq below the version's next_seq, as many
    frames as the version counts, the first and last present seq of the version a record and no
    record before the first or after the last. Each chunk's ``present`` is checked against its span
    when a query first touches it; ``maskstore check`` compares every chunk with its records."""
    rec = version.record(txn)
    where = f"{rec['dataset']}/{rec['name']}"
    spans = [chunk.span() for chunk in chunks]
    held = [(chunk, span) for chunk, span in zip(chunks, spans) if span[0]]
    total = sum(span[0] for span in spans)
    stored = frame_groups.Records(txn, version.archive, version.prefix)
    after = 0  # the first seq no record may hold: past the version's last present frame
    if held:
        first, last = held[0][0].base + held[0][1][1], held[-1][0].base + held[-1][1][2]
        if last >= rec["next_seq"]:
            raise ArchiveError(f"{where}: the scan columns hold frame seq {last}, beyond the version's next_seq "
                               f"{rec['next_seq']}; the archive is damaged")
        if stored.next_present(0) != first or stored.next_present(last) != last:
            raise ArchiveError(f"{where}: the scan columns (frames {first}..{last}) do not match the frame records; "
                               "run maskstore check --repair to rebuild them")
        after = last + 1
    stray = stored.next_present(after)
    if stray is not None:
        raise ArchiveError(f"{where}: frame seq {stray} has a record but no scan columns; run maskstore check")
    if total != rec["count"]:
        raise ArchiveError(f"{where}: the scan columns hold {total} frames, the version record counts "
                           f"{rec['count']}; run maskstore check --repair")


class Step:
    def run(self, ctx: Context) -> np.ndarray:
        raise NotImplementedError

    def count(self, ctx: Context) -> int:
        """How many frames ``run`` gives (a scan counts its mask: no seqs made)."""
        return len(self.run(ctx))

    def lines(self) -> list[str]:
        raise NotImplementedError


@dataclass
class Lookup(Step):
    """Union of the posting lists of some keys of one index (``postings``)."""

    db: str
    keys: tuple[bytes, ...]
    what: str

    def run(self, ctx: Context) -> np.ndarray:
        windowed = ctx.window is not None and np.count_nonzero(ctx.window) * WALK_SHARE <= len(ctx.window)
        if not windowed and (self.db, self.keys) in ctx.shared.get(POSTINGS, {}):
            return ctx.shared[POSTINGS][self.db, self.keys]
        ranges = ctx.window_seqs() if windowed else None
        arc, prefix = ctx.version.archive, ctx.version.prefix
        seqs = sorted_unique([postings.read(ctx.txn, arc, self.db, prefix, key, ranges) for key in self.keys])
        ctx.positions(seqs, f"index {self.db}")  # an entry pointing nowhere is damage, not a result
        if not windowed:
            cache = ctx.shared.setdefault(POSTINGS, {})
            if sum(map(len, cache.values())) + len(seqs) > POSTINGS_CACHE_SEQS:
                cache.clear()
            seqs.flags.writeable = False  # shared by later queries: nobody may change it in place
            cache[self.db, self.keys] = seqs
        return seqs

    def lines(self) -> list[str]:
        return [f"index {self.db}: {self.what}"]


@dataclass
class IdLookup(Step):
    ids: tuple[str, ...]

    def run(self, ctx: Context) -> np.ndarray:
        db = ctx.version.archive.db("frame_ids")
        found = [(i, ctx.txn.get(ctx.version.prefix + text_key(i), db=db)) for i in self.ids]
        seqs = sorted_unique([np.array([id_entry_seq(s, i) for i, s in found if s is not None], np.uint64)])
        ctx.positions(seqs, "index frame_ids")
        return seqs

    def lines(self) -> list[str]:
        return [f"index frame_ids: {len(self.ids)} id(s)"]


@dataclass
class Scan(Step):
    """A vectorized scan of the columnar side tables (and/or/not of scans is one scan of masks)."""

    node: Expr

    def mask(self, ctx: Context) -> np.ndarray:
        """Dense boolean over every position of the version: True where a frame matches. Chunks whose
        value ranges decide the predicate (zone maps) are filled without looking at rows; a coverage
        alone is one comparison over the version's coverage column."""
        if isinstance(self.node, Coverage):
            ratio = ValueColumn("float", ctx.coverage(self.node.label), ctx.in_window(ctx.present()))
            return _value_mask(ratio, self.node.op, self.node.value)
        out = np.zeros(ctx.size(), bool)
        whole, looked_at = self._chunks(ctx)
        for i in np.flatnonzero(whole).tolist():
            out[i * CHUNK:(i + 1) * CHUNK] = ctx.chunks[i].present
        for i in looked_at:
            out[i * CHUNK:(i + 1) * CHUNK] = self._rows(i, ctx)
        return out

    def _chunks(self, ctx: Context) -> tuple[np.ndarray, list[int]]:
        """(per chunk, whether the zone maps say every frame matches; the chunks whose rows must be
        looked at), both within the window."""
        always, never = _zones(self.node, ctx)
        wanted = ~never if ctx.window is None else ~never & ctx.window
        return wanted & always, np.flatnonzero(wanted & ~always).tolist()

    def _rows(self, number: int, ctx: Context) -> np.ndarray:
        return column_mask(self.node, number, ctx) & ctx.chunks[number].present

    def run(self, ctx: Context) -> np.ndarray:
        return ctx.seqs_at(np.flatnonzero(self.mask(ctx)))

    def count(self, ctx: Context) -> int:
        """Chunks the zone maps decide count their frames from the version's summary; only the others'
        rows are looked at (a range count over 10M frames touches its two border chunks, not a dense
        mask of every position)."""
        if isinstance(self.node, Coverage):
            return int(np.count_nonzero(self.mask(ctx)))
        whole, looked_at = self._chunks(ctx)
        return int(ctx.frame_counts()[whole].sum()) + sum(int(np.count_nonzero(self._rows(i, ctx))) for i in looked_at)

    def lines(self) -> list[str]:
        return [f"scan columns: {to_text(self.node)}"]


@dataclass
class Combine(Step):
    op: str  # "and" / "or"
    parts: list[Step]

    def run(self, ctx: Context) -> np.ndarray:
        if self.op == "or":
            return sorted_unique([part.run(ctx) for part in self.parts])
        # Index results first (usually small), then keep those a scan also holds: a mask lookup per
        # candidate instead of sorting two large arrays together.
        lookups = [p for p in self.parts if not isinstance(p, Scan)]
        scans = [p for p in self.parts if isinstance(p, Scan)]
        result = lookups[0].run(ctx) if lookups else scans.pop(0).run(ctx)
        for part in lookups[1:]:
            if not len(result):
                return EMPTY
            result = np.intersect1d(result, part.run(ctx), assume_unique=True)
        for scan in scans:
            if not len(result):
                return EMPTY
            result = result[scan.mask(ctx)[ctx.positions(result)]]
        return result

    def lines(self) -> list[str]:
        return [("intersect" if self.op == "and" else "union")] + ["  " + ln for p in self.parts for ln in p.lines()]


@dataclass
class Complement(Step):
    part: Step

    def run(self, ctx: Context) -> np.ndarray:
        return np.setdiff1d(ctx.universe(), self.part.run(ctx), assume_unique=True)

    def lines(self) -> list[str]:
        return ["all frames except"] + ["  " + ln for ln in self.part.lines()]


@dataclass
class Everything(Step):
    def run(self, ctx: Context) -> np.ndarray:
        return ctx.universe()

    def lines(self) -> list[str]:
        return ["all frames"]


@dataclass
class Filter(Step):
    """Residual predicates: decode the candidates' records and test them with compiled closures."""

    source: Step
    node: Expr

    def run(self, ctx: Context) -> np.ndarray:
        test = compile_expr(self.node, ctx.labels)
        stored = frame_groups.Records(ctx.txn, ctx.version.archive, ctx.version.prefix)
        keep = [seq for seq in self.source.run(ctx).tolist() if test(stored.frame(seq))]
        return np.array(keep, np.uint64)

    def lines(self) -> list[str]:
        return [f"filter records: {to_text(self.node)}"] + ["  " + ln for ln in self.source.lines()]


# ------------------------------------------------------------------------------------- planning

def _merge_scans(steps: list[Step], kind: type[And] | type[Or]) -> list[Step]:
    """Sibling scans become one scan of their and/or: one pass of boolean masks, no set algebra."""
    scans = [s.node for s in steps if isinstance(s, Scan)]
    if len(scans) < 2:
        return steps
    return [s for s in steps if not isinstance(s, Scan)] + [Scan(kind(tuple(scans)))]


def _labels_matching(node: Compare | In, ctx: Context, candidates: list[str]) -> list[str]:
    if isinstance(node, In):
        return [v for v in node.values if isinstance(v, str)]
    if node.op == "~":
        pattern = glob(node.value)
        return [name for name in candidates if pattern.fullmatch(name)]
    return [node.value] if isinstance(node.value, str) else []


def _label_step(node: Compare | In, ctx: Context) -> Step:
    """label / mask.label / roi.label: labels -> mask values (version mask_labels) and ROI postings."""
    name = node.field.name
    parts: list[Step] = []
    if name != "roi.label":
        labels = _labels_matching(node, ctx, ctx.labels.names)
        values = ctx.labels.values_of(labels)
        shown = ", ".join(str(list(unpack_rgb(v))) for v in values[:6]) + (" ..." if len(values) > 6 else "")
        parts.append(Lookup("ix_value", tuple(value_key(unpack_rgb(v)) for v in values),
                            f"mask values labelled {labels!r}: {shown or 'none'}"))
    if name != "mask.label":
        roi_labels = ctx.roi_labels
        if roi_labels is None and isinstance(node, Compare) and node.op == "~":
            return Filter(Everything(), node)
        labels = _labels_matching(node, ctx, roi_labels or [])
        parts.append(Lookup("ix_roi", tuple(text_key(x) for x in labels), f"ROI labels {labels!r}"))
    return parts[0] if len(parts) == 1 else Combine("or", parts)


def _equality_values(node: Compare | In) -> tuple[Any, ...] | None:
    if isinstance(node, In):
        return node.values
    return (node.value,) if node.op == "==" else None


INDEXED_TEXT = {"context_id": "ix_context", "source.id": "ix_source", "mask.id": "ix_mask"}


def plan_expr(node: Expr, ctx: Context) -> Step:
    """The step answering ``node``: an index or column step where one exists, else a Filter."""
    if isinstance(node, And):
        steps = _merge_scans([plan_expr(i, ctx) for i in node.items], And)
        sets = [s for s in steps if not isinstance(s, Filter)]
        residual = [s.node for s in steps if isinstance(s, Filter)]
        base = sets[0] if len(sets) == 1 else Combine("and", sets) if sets else Everything()
        if not residual:
            return base
        return Filter(base, residual[0] if len(residual) == 1 else And(tuple(residual)))
    if isinstance(node, Or):
        steps = [plan_expr(i, ctx) for i in node.items]
        if any(isinstance(s, Filter) for s in steps):
            return Filter(Everything(), node)
        steps = _merge_scans(steps, Or)
        return steps[0] if len(steps) == 1 else Combine("or", steps)
    if isinstance(node, Not):
        step = plan_expr(node.item, ctx)
        if isinstance(step, Scan):
            return Scan(Not(step.node))
        return Filter(Everything(), node) if isinstance(step, Filter) else Complement(step)
    if isinstance(node, RoiAll):
        labelled = [i for i in node.items if i.field.name == "roi.label" and _equality_values(i) is not None]
        source = _label_step(labelled[0], ctx) if labelled else Everything()
        return Filter(source, node)
    if isinstance(node, (Has, Coverage)):
        return Scan(node)
    name = node.field.name
    if node.field.path:
        kind = ctx.meta_types.get(".".join(node.field.path))
        return Scan(node) if kind is None or kind in SCALAR_META else Filter(Everything(), node)
    if name in ("label", "mask.label", "roi.label"):
        if isinstance(node, In) or node.op in ("==", "~"):
            return _label_step(node, ctx)
        return Filter(Everything(), node)
    equal = _equality_values(node)
    if name == "mask.value" and equal is not None:
        values = [rgb_value(v) for v in equal]
        return Lookup("ix_value", tuple(value_key(v) for v in values if v is not None),
                      ", ".join(str(list(v)) for v in values if v is not None))
    if name in INDEXED_TEXT and equal is not None:
        texts = tuple(v for v in equal if isinstance(v, str))
        return Lookup(INDEXED_TEXT[name], tuple(text_key(t) for t in texts), ", ".join(map(repr, texts)))
    if name == "id" and equal is not None:
        return IdLookup(tuple(v for v in equal if isinstance(v, str)))
    if name in ("id", "context_id", "timestamp"):
        return Scan(node)
    return Filter(Everything(), node)


# ------------------------------------------------------------------------------------- column scans

def _value_mask(col: StrColumn | ValueColumn | None, op: str, value: Any) -> np.ndarray:
    """Rows where ``column op value`` holds, with exactly ``evaluate.compare``'s rules."""
    if col is None:
        return np.zeros(0, bool)
    if isinstance(col, StrColumn):
        return col.select(lambda s: compare(s, op, value))
    sample = True if col.kind == "bool" else 0
    if col.kind == "present" or not comparable(sample, value) or value is None:
        return col.present.copy() if op == "!=" else np.zeros(len(col.present), bool)
    if col.kind == "int" and isinstance(value, float) and math.isfinite(value) and not isinstance(value, bool):
        # int64 against a float literal: numpy would round the ints to float64 (inexact above 2**53);
        # the same rows come from an int bound, compared exactly below
        if not value.is_integer():
            if op in ("==", "!="):
                return col.present.copy() if op == "!=" else np.zeros(len(col.present), bool)
            value = math.ceil(value) if op in ("<", ">=") else math.floor(value)
        value = int(value)
    ops = {"==": np.equal, "!=": np.not_equal, "<": np.less, "<=": np.less_equal, ">": np.greater,
           ">=": np.greater_equal}
    if col.kind == "object" or (isinstance(value, int) and abs(value) > 2**53):
        # Python comparisons, element by element: exact for every int size and int/float mix
        values = col.values if col.kind == "object" else col.values.astype(object)
        return ops[op](values, value).astype(bool) & col.present
    return ops[op](col.values, value) & col.present


def field_column(field: Field, chunk: Chunk) -> StrColumn | ValueColumn | None:
    """A chunk's column of a single-valued field (id, context_id, timestamp, meta.<path>)."""
    if field.path:
        return chunk.meta.get(".".join(field.path))
    if field.name == "timestamp":
        return ValueColumn("int", chunk.timestamp, chunk.present)
    return chunk.ids if field.name == "id" else chunk.context


def _frame_sums(offsets: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Per frame of a chunk, the sum of its values' pixel counts (CSR rows), exact in int64."""
    running = np.concatenate(([0], np.cumsum(counts)))
    return running[offsets[1:]] - running[offsets[:-1]]


def _zones(node: Expr, ctx: Context) -> tuple[np.ndarray, np.ndarray]:
    """Per chunk, whether ``node`` holds for every frame (first array) or for none (second), from the
    zone map of each field it compares (``Context.zones``); neither where that takes looking at the
    rows. Vectorized over chunks; bounds compared as Python values with ``compare``'s rules (exact for
    ints beyond 2**53 against floats; values of other kinds never equal and never ordered)."""
    undecided = np.zeros(len(ctx.chunks), bool)
    if isinstance(node, (And, Or)):
        parts = [_zones(item, ctx) for item in node.items]
        every, some = (np.logical_and, np.logical_or) if isinstance(node, And) else (np.logical_or, np.logical_and)
        return every.reduce([a for a, _ in parts]), some.reduce([b for _, b in parts])
    if isinstance(node, Not):
        always, never = _zones(node.item, ctx)
        return never, always
    if isinstance(node, Has) and node.field.path:
        counts = ctx.zones(node.field).counts
        return counts == ctx.frame_counts(), counts == 0
    if not isinstance(node, (Compare, In)) or (node.field.name != "timestamp" and not node.field.path) or \
            (isinstance(node, Compare) and node.op not in _COMPARISONS):
        return undecided, undecided
    table = ctx.zones(node.field)
    if isinstance(node, Compare):
        return _zone_compare(table, node.op, node.value, ctx)
    parts = [_zone_compare(table, "==", value, ctx) for value in node.values]
    if not parts:
        return undecided, ~undecided
    return np.logical_or.reduce([a for a, _ in parts]), np.logical_and.reduce([b for _, b in parts])


_COMPARISONS = frozenset(("==", "!=", "<", "<=", ">", ">="))


def _zone_compare(table: zones.Table, op: str, value: Any, ctx: Context) -> tuple[np.ndarray, np.ndarray]:
    """(every frame, no frame) per chunk for ``field op value``: rows without a value match no
    comparison, so "every frame" needs every frame of the chunk to hold one."""
    has = table.counts > 0
    full = has & (table.counts == ctx.frame_counts())
    if isinstance(value, (str, bool)):
        ranged = kinds = [b"s" if isinstance(value, str) else b"b"]
    elif comparable(0, value) and value is not None:
        ranged, kinds = [b"i", b"f"], [b"i", b"f", b"o"]
    else:
        return np.zeros(len(has), bool), ~has  # no literal of another kind reaches a scan; nothing decided
    other = has & ~np.isin(table.kinds, kinds)  # values of another kind: never equal, never ordered
    always, never = (full & other, ~has) if op == "!=" else (np.zeros(len(has), bool), ~has | other)
    rows = np.flatnonzero(np.isin(table.kinds, ranged) & (table.low != None))  # noqa: E711 (elementwise)
    low, high = table.low[rows], table.high[rows]
    if op in ("==", "!="):
        hit = (low == value) & (high == value)
        miss = (low > value) | (high < value)
        if op == "!=":
            hit, miss = miss, hit
    else:
        hit = {"<": high < value, "<=": high <= value, ">": low > value, ">=": low >= value}[op]
        miss = {"<": low >= value, "<=": low > value, ">": high <= value, ">=": high < value}[op]
    always[rows] = hit.astype(bool) & full[rows]
    never[rows] = miss.astype(bool)
    return always, never


def column_mask(node: Expr, number: int, ctx: Context) -> np.ndarray:
    """Boolean row mask of chunk ``number`` for a node the planner sent to a Scan."""
    chunk = ctx.chunks[number]
    size = len(chunk.present)
    if isinstance(node, (And, Or)):
        masks = [column_mask(item, number, ctx) for item in node.items]
        return np.logical_and.reduce(masks) if isinstance(node, And) else np.logical_or.reduce(masks)
    if isinstance(node, Not):
        return ~column_mask(node.item, number, ctx) & chunk.present
    if isinstance(node, Has):
        if node.field.path:
            col = chunk.meta.get(".".join(node.field.path))
            return col.present if isinstance(col, ValueColumn) else (col.codes >= 0) if col else np.zeros(size, bool)
        return (chunk.n_masks if node.field.name == "mask" else chunk.n_rois) > 0
    if isinstance(node, Coverage):
        ratio = ctx.coverage(node.label)[number * CHUNK:(number + 1) * CHUNK]
        return _value_mask(ValueColumn("float", ratio, np.ones(size, bool)), node.op, node.value)
    assert isinstance(node, (Compare, In))
    col = field_column(node.field, chunk)
    if isinstance(node, In):
        out = np.zeros(size, bool)
        for value in node.values:
            hit = _value_mask(col, "==", value)
            if len(hit):
                out |= hit
        return out
    hit = _value_mask(col, node.op, node.value)
    return hit if len(hit) else np.zeros(size, bool)
