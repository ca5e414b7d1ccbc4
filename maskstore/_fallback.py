"""The pure-Python twin of ``_speedups``: same names, same answers, no compiler needed.

``_accel`` picks this module when ``MASKSTORE_PUREPYTHON=1`` is set or the compiled module is missing
or stale. It is also the reference the compiled module is tested against (``tests/test_speedups.py``):
``Postings`` gives the same index keys, ``frame_ok`` accepts and refuses the same records, and
``frame_problem`` — the slow walk readers run only once a record is refused — names the field.
``encode_common`` declines every frame: the archive then writes each through
``model.normalize_frame`` and ``records.encode_frames``, the rules the compiled encoder copies.
``chunk_rows`` decodes each record and walks the dict, where the compiled twin reads the bytes.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from typing import Any

import msgpack
import numpy as np

MAX_DEPTH = 90  # deeper frames go the Python way, and meet its limits there (records.MAX_DEPTH is 100)
MAX_SIDE = 2**31  # source width and height stay below it (records._size_ok)
MAX_FRAME_PIXELS = 2**50  # mask pixels one frame may count: per-frame sums fit int64 columns
_INT64 = 2**63
_LIMIT_SHOWN = f"2**{MAX_FRAME_PIXELS.bit_length() - 1}"  # MAX_FRAME_PIXELS, a power of two, as written


def encode_common(frames: list, record_head: bytes, content_type_of: Callable, suffix_types: dict,
                  postings: Postings) -> tuple[list, list, list]:
    """``_speedups.encode_common`` declining every frame: ``(records, ids, meta types)``, all None."""
    n = len(frames)
    return [None] * n, [None] * n, [None] * n


# ----------------------------------------------------------------------------- index keys

class Postings:
    """Index entries of a batch, grouped by key (``_speedups.Postings``, in Python): context id,
    source ids, mask ids, mask values (r, g, b bytes) and ROI labels, each key with the batch
    positions of the frames that have it. Texts longer than ``max_key_text`` UTF-8 bytes are keyed
    by ``text_key``."""

    def __init__(self, text_key: Callable[[Any], bytes], max_key_text: int) -> None:
        self.context: dict[Any, list[int]] = {}
        self.value: dict[int, list[int]] = {}
        self.source: dict[Any, list[int]] = {}
        self.mask: dict[Any, list[int]] = {}
        self.roi: dict[Any, list[int]] = {}
        self.text_key = text_key
        self.max_key_text = max_key_text

    def add_record(self, pos: int, rec: Any) -> None:
        """The keys of a normalized frame dict or a stored record."""
        key = self._text_bytes
        self.context.setdefault(key(rec["context_id"]), []).append(pos)
        for s in rec["sources"]:
            self.source.setdefault(key(s["id"]), []).append(pos)
            for m in s["masks"]:
                self.mask.setdefault(key(m["id"]), []).append(pos)
                for v in m.get("values") or ():
                    self.value.setdefault(_rgb(v), []).append(pos)
        for r in rec["rois"]:
            for label in r["label"]:
                self.roi.setdefault(key(label), []).append(pos)

    def _text_bytes(self, text: Any) -> bytes:
        if type(text) is str:
            raw = text.encode("utf-8")
            if len(raw) <= self.max_key_text:
                return raw
        return self.text_key(text)

    def id_keys(self, prefix: bytes, texts: list) -> list[bytes]:
        """``prefix`` + the key of each text."""
        return [prefix + self._text_bytes(text) for text in texts]

    def groups(self) -> dict[str, dict[bytes, list[int]]]:
        """``{index sub-database: {key: [batch positions]}}``: positions in the order frames came, one
        twice when a frame has a key twice."""
        values = {bytes((code >> 16, (code >> 8) & 255, code & 255)): positions for code, positions in self.value.items()}
        return {"ix_context": self.context, "ix_value": values, "ix_source": self.source,
                "ix_mask": self.mask, "ix_roi": self.roi}


def _rgb(v: Sequence[int]) -> int:
    """A mask value's channels as one int, 0xRRGGBB."""
    r, g, b = map(operator.index, v[:3])
    if not (0 <= r <= 255 and 0 <= g <= 255 and 0 <= b <= 255):
        raise ValueError(f"mask value {v[:3]!r} has a channel outside 0..255")
    return (r << 16) | (g << 8) | b


# ------------------------------------------------------------------------------ reading records
# ``frame_ok`` is the shape every reader of a frame record relies on; ``frame_problem`` says which
# field breaks it. Each check returns None or a problem as (path inside the checked value, what is
# wrong); the path is joined only for the one problem reported, so accepting a record builds no text.

Problem = tuple[str, str] | None


def frame_ok(body: Any) -> bool:
    """Whether a decoded frame record has the shape readers rely on."""
    return _frame_problem(body) is None


def frame_problem(body: Any) -> str | None:
    """The first field of a decoded frame record readers could not use, named by its path and
    value (``sources[0].masks[1].values[2] is [1, 2] (expected [r, g, b, count])``), or None."""
    found = _frame_problem(body)
    if found is None:
        return None
    path, what = found
    frame_id = body.get("id") if type(body) is dict else None
    where = f"frame {_shown(frame_id)}: " if type(frame_id) is str and frame_id else ""
    return f"{where}{path + ' ' if path else ''}{what}"


def _shown(value: Any, limit: int = 60) -> str:
    """``repr`` (control characters escaped), cut to ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _is(value: Any, expected: str) -> str:
    return f"is {_shown(value)} (expected {expected})"


def _at(prefix: str, found: Problem) -> Problem:
    """``found`` with its path inside ``prefix``."""
    if found is None:
        return None
    path, what = found
    return (prefix + ("" if not path or path.startswith("[") else ".") + path, what)


def _frame_problem(body: Any) -> Problem:
    if type(body) is not dict:
        return "", f"is a {type(body).__name__} (expected a map of frame fields)"
    fid, context, ts = body.get("id"), body.get("context_id"), body.get("timestamp")
    rois, sources = body.get("rois"), body.get("sources")
    if type(fid) is not str or not fid:
        return "id", _is(fid, "non-empty text")
    if type(context) is not str:
        return "context_id", _is(context, "text")
    if type(ts) is not int or not -_INT64 <= ts < _INT64:
        return "timestamp", _is(ts, "an integer in -2**63..2**63-1")
    if type(rois) is not list:
        return "rois", _is(rois, "a list")
    if type(sources) is not list:
        return "sources", _is(sources, "a list")
    found = _at("meta", _meta_problem(body.get("meta")))
    if found:
        return found
    for i, r in enumerate(rois):
        found = _at(f"rois[{i}]", _roi_problem(r))
        if found:
            return found
    total = 0
    for i, s in enumerate(sources):
        found = _at(f"sources[{i}]", _source_problem(s))
        if found:
            return found
        for j, m in enumerate(s["masks"]):
            counted = _mask_pixels(m)
            if type(counted) is tuple:
                return _at(f"sources[{i}].masks[{j}]", counted)
            total += counted
    if not _unique_ids(sources):
        return "sources", "have the same id twice"
    if total > MAX_FRAME_PIXELS:
        return "sources", f"masks count {total} pixels in all (expected at most {_LIMIT_SHOWN})"
    return None


def _unique_ids(items: list) -> bool:
    return len(items) < 2 or len({item["id"] for item in items}) == len(items)


def _media_problem(item: Any) -> Problem:
    """What sources and masks share: text id and URI, an integer timestamp or none."""
    if type(item) is not dict:
        return "", _is(item, "a map")
    ts = item.get("timestamp")
    if type(item.get("id")) is not str:
        return "id", _is(item.get("id"), "text")
    if type(item.get("uri")) is not str:
        return "uri", _is(item.get("uri"), "text")
    if not (ts is None or type(ts) is int):
        return "timestamp", _is(ts, "an integer or none")
    return None


def _side_ok(value: Any) -> bool:
    return value is None or (type(value) is int and 0 <= value < MAX_SIDE)


def _source_problem(s: Any) -> Problem:
    found = _media_problem(s)
    if found:
        return found
    for side in ("width", "height"):
        if not _side_ok(s.get(side)):
            return side, _is(s.get(side), f"none or an integer in 0..{MAX_SIDE - 1}")
    masks = s.get("masks")
    if type(masks) is not list:
        return "masks", _is(masks, "a list")
    for j, m in enumerate(masks):
        found = _at(f"masks[{j}]", _media_problem(m))
        if found:
            return found
    return None if _unique_ids(masks) else ("masks", "have the same id twice")


def _mask_pixels(m: dict) -> int | tuple[str, str]:
    """Pixels a mask's statistics count, or the problem when ``values``, ``kind`` or ``coverage`` are
    not as ingest writes them (``[r, g, b, count]``, channels in 0..255, counts >= 0)."""
    values, kind, coverage = m.get("values"), m.get("kind"), m.get("coverage")
    if not (kind is None or kind == "alpha"):
        return "kind", _is(kind, "none or 'alpha'")
    if coverage is not None and not (kind == "alpha" and type(coverage) is int and 0 <= coverage < _INT64):
        return "coverage", _is(coverage, "none, or an integer in 0..2**63-1 on an alpha mask")
    if values is None:
        return 0
    if type(values) is not list:
        return "values", _is(values, "a list of [r, g, b, count]")
    total = 0
    for k, v in enumerate(values):
        if not (type(v) is list and len(v) == 4 and all(type(c) is int and 0 <= c <= 255 for c in v[:3])
                and type(v[3]) is int and v[3] >= 0):
            return f"values[{k}]", _is(v, "[r, g, b, count]: channels in 0..255, count >= 0")
        total += v[3]
    return total


def _number(x: Any) -> bool:
    return type(x) is int or type(x) is float


def _roi_problem(r: Any) -> Problem:
    if type(r) is not dict:
        return "", _is(r, "a map")
    label, sources, confidence, poly, meta = r.get("label"), r.get("sources"), r.get("confidence"), \
        r.get("poly"), r.get("meta")
    if type(label) is not list:
        return "label", _is(label, "a list of text")
    if sources is not None and type(sources) is not list:
        return "sources", _is(sources, "none or a list")
    if confidence is not None and not _number(confidence):
        return "confidence", _is(confidence, "none or a number")
    for k, name in enumerate(label):
        if type(name) is not str:
            return f"label[{k}]", _is(name, "text")
    if poly:
        if type(poly) is not list or len(poly) % 2:
            return "poly", _is(poly, "a list of x, y numbers")
        for k, x in enumerate(poly):
            if not _number(x):
                return f"poly[{k}]", _is(x, "a number")
    return _at("meta", _meta_problem(meta)) if meta else None


def _meta_problem(meta: Any) -> Problem:
    """Meta as ingest accepts it: a dict, keys non-empty text without '.', no NaN, nested dicts and
    lists (depth and value types are bounded by the unpacking already). Paths stay linked pairs
    (parent, key or index) until one is reported."""
    if type(meta) is not dict:
        return "", _is(meta, "a map")
    stack: list[tuple[Any, Any]] = [(None, meta)]
    while stack:
        path, node = stack.pop()
        if type(node) is dict:
            for key, value in node.items():
                if not key or "." in key:
                    return _path(path), f"has the key {_shown(key)} (expected non-empty text without '.')"
                if type(value) is float and value != value:
                    return _path((path, key)), "is NaN (expected a number)"
                if type(value) is dict or type(value) is list:
                    stack.append(((path, key), value))
        else:
            for k, value in enumerate(node):
                if type(value) is float and value != value:
                    return _path((path, k)), "is NaN (expected a number)"
                if type(value) is dict or type(value) is list:
                    stack.append(((path, k), value))
    return None


def _path(linked: Any) -> str:
    """``a.b[2]`` from ``((None, "a"), "b"), 2)``; keys that are not identifiers are quoted, so no
    stored text reaches a terminal unescaped."""
    steps = []
    while linked is not None:
        linked, step = linked
        if type(step) is int:
            steps.append(f"[{step}]")
        elif step.isidentifier():
            steps.append(f".{step}")
        else:
            steps.append(f"[{_shown(step)}]")
    return "".join(reversed(steps)).removeprefix(".")


# ------------------------------------------------------------------------------ scan column rows

_KIND_NAMES = {str: "str", bool: "bool", int: "int", float: "float", dict: "dict", list: "list"}
Texts = tuple[list[str], np.ndarray]  # distinct texts in order of first use by row, int32 codes (-1: none)
ChunkRows = tuple[np.ndarray, np.ndarray, Texts, Texts, np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                  np.ndarray, dict[str, tuple[frozenset[str], list[int], list[Any]]]]


def chunk_rows(base: int, size: int, rows: list[tuple[int, bytes]]) -> ChunkRows:
    """The per-row fields of scan columns (``query.columns.build_chunk``) for the frame records
    ``rows`` (``(seq, record)``, seqs ascending in ``[base, base + size)``, records as
    ``records.encode_frames`` writes them and ``records.decode_frame`` accepts them): present,
    timestamp, ids, context ids, mask and ROI counts, the CSR of mask values summed per frame
    (offsets, packed RGB keys, pixel counts; each frame's values in order of first appearance), and
    per meta path (nested dicts walked, nulls left out) its value kinds, rows and values."""
    present = np.zeros(size, bool)
    timestamp = np.zeros(size, np.int64)
    ids: list[str | None] = [None] * size
    contexts: list[str | None] = [None] * size
    n_masks = np.zeros(size, np.int32)
    n_rois = np.zeros(size, np.int32)
    sizes = np.zeros(size, np.int64)
    keys: list[int] = []
    counts: list[int] = []
    meta: dict[str, tuple[set[str], list[int], list[Any]]] = {}
    for seq, record in rows:
        rec = msgpack.unpackb(record[2:], raw=False)
        i = seq - base
        present[i] = True
        timestamp[i] = rec["timestamp"]
        ids[i] = rec["id"]
        contexts[i] = rec["context_id"]
        masks = [m for s in rec["sources"] for m in s["masks"]]
        n_masks[i] = len(masks)
        n_rois[i] = len(rec["rois"])
        totals: dict[int, int] = {}
        for m in masks:
            for v in m.get("values") or ():
                key = (v[0] << 16) | (v[1] << 8) | v[2]
                totals[key] = totals.get(key, 0) + v[3]
        sizes[i] = len(totals)
        keys += totals.keys()
        counts += totals.values()
        for path, value in _meta_items(rec["meta"], ""):
            kinds, at, values = meta.setdefault(path, (set(), [], []))
            kinds.add(_KIND_NAMES[type(value)])
            at.append(i)
            values.append(value)
    offsets = np.zeros(size + 1, np.int64)
    np.cumsum(sizes, out=offsets[1:])
    return (present, timestamp, text_codes(ids), text_codes(contexts), n_masks, n_rois, offsets,
            np.array(keys, np.uint32), np.array(counts, np.int64),
            {path: (frozenset(kinds), at, values) for path, (kinds, at, values) in meta.items()})


def _meta_items(meta: dict[str, Any], prefix: str) -> Any:
    """(dotted path, value) of every non-null meta value, nested dicts included and walked."""
    for key, value in meta.items():
        path = prefix + key
        if value is not None:
            yield path, value
        if type(value) is dict:
            yield from _meta_items(value, path + ".")


def text_codes(texts: list[str | None]) -> Texts:
    """Texts dictionary-coded: the distinct ones in order of first use, and a code per item."""
    index: dict[str, int] = {}
    codes = np.array([-1 if t is None else index.setdefault(t, len(index)) for t in texts], dtype=np.int32)
    return list(index), codes
