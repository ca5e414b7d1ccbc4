"""Frames, sources, masks and ROIs, and the frame-dict shape they travel in.

The frame dict (spec section 1, the shape ClearML's SDK writes) is the single interchange form:
objects turn into it with ``to_dict()``, the archive stores it, and ``normalize_frame_dict`` is the
one place where defaults are filled in and types are checked, for objects and raw dicts alike.
Unknown keys are kept at every level so foreign frames round-trip.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from ._accel import MAX_DEPTH, MAX_FRAME_PIXELS, MAX_SIDE
from .errors import FrameError
from .labels import nfc
from .media import ALPHA, content_type_of

FRAME_KEYS = ("id", "timestamp", "context_id", "meta", "sources", "rois")
# SingleFrame's keywords: a frame dict written with them instead of "sources" would hold no image.
CONSTRUCTOR_WORDS = ("source", "mask_source", "masks_source")
EXAMPLE_FRAME_DICT = '{"id": "a", "sources": [{"uri": "img.png", "masks": [{"uri": "mask.png"}]}]}'
SOURCE_KEYS = ("id", "content_type", "uri", "timestamp", "width", "height", "masks")
MASK_KEYS = ("id", "content_type", "uri", "timestamp")
ROI_KEYS = ("id", "sources", "label", "confidence", "poly", "meta")


def derived_frame_id(uri: str) -> str:
    """The id a frame gets from its first source URI, so re-adding an image updates its frame."""
    try:
        return uuid.uuid5(uuid.NAMESPACE_URL, uri).hex
    except UnicodeEncodeError:
        raise FrameError(f"source URI {uri!r} is not valid Unicode (a lone surrogate), so it cannot be "
                         "stored or name a frame") from None


def mask_id(index: int) -> str:
    """Generated mask ids: "00", "01", ... (spec section 1)."""
    return f"{index:02d}"


# ----------------------------------------------------------------------------- validation
# Frames usually arrive as plain dicts, so ``type(x) is dict`` is tried before ``isinstance(x, Mapping)``:
# the ABC check costs several times more, and bulk ingest makes it for every level of every frame.

def _fail(frame_id: Any, message: str) -> FrameError:
    where = f"frame {frame_id!r}: " if frame_id is not None else ""
    return FrameError(where + message)


def _int_or_none(value: Any, what: str, frame_id: Any) -> int | None:
    if type(value) is int or value is None:
        return value
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise _fail(frame_id, f"{what} must be an integer, got {value!r}")
    return value


def _str(value: Any, what: str, frame_id: Any) -> str:
    if not isinstance(value, str):
        raise _fail(frame_id, f"{what} must be a string, got {value!r}")
    return value


# Meta types of the exact builtin types, the common case; type_name covers subclasses.
_SCALAR_TYPES = {str: "str", bool: "bool", int: "int", float: "float"}


def type_name(value: Any) -> str:
    """The meta type of a value: one type per key across a version (ints widen to floats)."""
    kind = _SCALAR_TYPES.get(type(value))
    if kind is not None:
        return kind
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    return "dict" if isinstance(value, Mapping) else "list"


def meta_items(meta: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted path, value) of every meta entry, nested dicts included and walked."""
    for key, value in meta.items():
        path = prefix + key
        yield path, value
        if isinstance(value, Mapping):
            yield from meta_items(value, path + ".")


def meta_types(meta: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """(dotted path, type name) of every meta value; null has no type. Ingest gets the same list
    from ``normalize_frame``, found while validating meta."""
    return ((path, type_name(value)) for path, value in meta_items(meta) if value is not None)


def merge_meta_type(known: dict[str, str], path: str, kind: str, frame_id: str) -> None:
    """Record that ``path`` holds a ``kind`` in ``frame_id``: a meta key keeps one type across a version."""
    old = known.get(path)
    if old is None or old == kind:
        known[path] = kind
    elif {old, kind} == {"int", "float"}:
        known[path] = "float"  # ints widen to float; both are numbers
    else:
        raise FrameError(f"frame {frame_id!r}: meta.{path} is a {kind} here but a {old} in other frames of "
                         "this version; a meta key keeps one type across a version")


def check_meta_value(value: Any, path: str, frame_id: Any) -> None:
    """Meta holds JSON-like data only; anything else would not survive msgpack or JSON export."""
    _check_meta(value, path, frame_id, None)


# Levels of nested dicts and lists meta may hold (a record stays within what readers accept,
# ``records.MAX_DEPTH``, ROI meta included), and the bound of source width and height: the limits
# the record reader (``_accel``) checks, defined once there.
MAX_META_DEPTH = MAX_DEPTH


def _check_meta(value: Any, path: str, frame_id: Any, types: list[tuple[str, str]] | None,
                depth: int = 0) -> None:
    """check_meta_value; with ``types``, it also appends (dotted path, type name) of every non-null
    value of a dict, nested dicts walked (lists are not), in the order of ``meta_types``:
    the archive needs both, and one walk costs half of two."""
    if value is None or isinstance(value, (str, bool, int)):
        return
    if depth > MAX_META_DEPTH:
        raise _fail(frame_id, f"meta.{path.split('.')[0]} is nested more than {MAX_META_DEPTH} levels deep")
    if isinstance(value, float):
        if math.isnan(value):
            raise _fail(frame_id, f"meta.{path} is NaN; store null instead")
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_meta(item, f"{path}[{i}]", frame_id, None, depth + 1)
        return
    if type(value) is dict or isinstance(value, Mapping):
        for key, item in value.items():
            if type(key) is not str or not key or "." in key:
                _check_meta_key(key, path, frame_id)
            item_path = f"{path}.{key}" if path else key
            kind = _SCALAR_TYPES.get(type(item))
            if kind is not None and item == item:  # the common case, without a call; NaN != NaN
                if types is not None:
                    types.append((item_path, kind))
                continue
            if types is not None and item is not None:
                types.append((item_path, type_name(item)))
            _check_meta(item, item_path, frame_id, types, depth + 1)
        return
    raise _fail(frame_id, f"meta.{path} has a {type(value).__name__}; meta holds str, int, float, bool, "
                          "null, lists and dicts")


def _check_meta_key(key: Any, path: str, frame_id: Any) -> None:
    if not isinstance(key, str):
        raise _fail(frame_id, f"meta.{path} has a non-string key {key!r}")
    if not key or "." in key:
        raise _fail(frame_id, f"meta key {key!r} under meta.{path} must be non-empty and contain no '.'")


def nfc_keys(value: Any, frame_id: Any) -> Any:
    """Checked meta with every dict key in Unicode NFC, so the NFC and NFD spellings of a key are one
    key (as queries spell it); ``value`` itself when every key is NFC already, the common case."""
    if type(value) is dict and all(type(k) is str and k.isascii() for k in value) \
            and all(item is None or type(item) in _SCALAR_TYPES for item in value.values()):
        return value  # flat meta with ASCII keys, the usual shape: nothing to walk
    if isinstance(value, (list, tuple)):
        items = [nfc_keys(item, frame_id) for item in value]
        return value if all(a is b for a, b in zip(items, value)) else items
    if not isinstance(value, Mapping):
        return value
    out: dict[str, Any] = {}
    for key, item in value.items():
        name = nfc(key)
        if name in out:
            raise _fail(frame_id, f"meta has the key {name!r} twice, in two Unicode spellings")
        out[name] = nfc_keys(item, frame_id)
    same = all(a == b and out[a] is value[b] for a, b in zip(out, value))
    return value if same else out


def _keep_extra(d: Mapping[str, Any], known: tuple[str, ...]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k not in known}


def _normalize_values(values: Any, frame_id: Any, uri: str) -> list[list[int]]:
    # Precomputed statistics are the bulk-import path, so the check leans on C code: unpacking
    # refuses entries that are not four items, and bytes() channels that are not ints in 0..255.
    try:
        values = [v if type(v) is list else list(v) for v in values]
        channels: list[Any] = []
        for r, g, b, count in values:
            if type(count) is not int or count < 0:
                raise ValueError
            channels += (r, g, b)
        bytes(channels)
    except (TypeError, ValueError):
        raise _fail(frame_id, f"mask {uri}: values must be a list of [r, g, b, pixel_count] with "
                              f"channels in 0..255, got {str(values)[:80]}") from None
    return values


_WHAT = {kind: (f"a {kind} must be a dict", f"{kind} uri", f"{kind} id", f"{kind} timestamp")
         for kind in ("source", "mask")}


def _media_item(item: Any, kind: str, default_id: str, parent_ts: int, frame_id: Any) -> dict[str, Any]:
    """What sources and masks share: id (default given), uri, content type guessed from the name when
    absent, timestamp inherited from the parent when absent."""
    not_dict, uri_what, id_what, ts_what = _WHAT[kind]
    if type(item) is not dict and not isinstance(item, Mapping):
        raise _fail(frame_id, f"{not_dict}, got {item!r}")
    uri = _str(item.get("uri"), uri_what, frame_id)
    out = dict(item)
    given = item.get("id")
    out["id"] = default_id if given is None else _str(given, id_what, frame_id)
    out["uri"] = uri
    out["content_type"] = item.get("content_type") or content_type_of(uri)
    ts = _int_or_none(item.get("timestamp"), ts_what, frame_id)
    out["timestamp"] = parent_ts if ts is None else ts
    return out


def _normalize_mask(m: Any, index: int, source_ts: int, frame_id: Any) -> dict[str, Any]:
    out = _media_item(m, "mask", mask_id(index), source_ts, frame_id)
    values = m.get("values")
    if values is not None:
        out["values"] = _normalize_values(values, frame_id, out["uri"])
    else:
        _check_alpha_fields(m, frame_id, out["uri"])
    return out


def _check_alpha_fields(m: Mapping[str, Any], frame_id: Any, uri: str) -> None:
    """``kind`` and ``coverage`` of a mask without values (FORMAT.md, "Mask statistics"). Beside
    values they are kept as unknown keys, as the compiled ingest path keeps them."""
    kind, coverage = m.get("kind"), m.get("coverage")
    if kind is not None and kind != ALPHA:
        raise _fail(frame_id, f'mask {uri}: kind must be "{ALPHA}" (an opacity matte) or left out, got {kind!r}')
    if coverage is not None and (kind != ALPHA or type(coverage) is not int or coverage < 0):
        raise _fail(frame_id, f'mask {uri}: coverage is the pixel count of a kind "{ALPHA}" mask, a '
                              f"non-negative integer; got {coverage!r}")


def _normalize_source(s: Any, index: int, frame_ts: int, frame_id: Any) -> dict[str, Any]:
    out = _media_item(s, "source", str(index), frame_ts, frame_id)
    ts = out["timestamp"]
    for side in ("width", "height"):
        out[side] = _int_or_none(s.get(side), f"source {side}", frame_id)
        if out[side] is not None and not 0 <= out[side] < MAX_SIDE:
            raise _fail(frame_id, f"source {side} {out[side]} is outside 0..{MAX_SIDE - 1}")
    masks = s.get("masks") or []
    if not isinstance(masks, list):
        raise _fail(frame_id, "source masks must be a list")
    masks = out["masks"] = [_normalize_mask(m, i, ts, frame_id) for i, m in enumerate(masks)]
    if len(masks) > 1:
        ids = [m["id"] for m in masks]
        if len(set(ids)) != len(ids):
            raise _fail(frame_id, f"source {out['id']!r} has duplicate mask ids {ids}")
    return out


def _normalize_roi(r: Any, index: int, default_sources: list[str], frame_id: Any) -> dict[str, Any]:
    if type(r) is not dict and not isinstance(r, Mapping):
        raise _fail(frame_id, f"a ROI must be a dict, got {r!r}")
    out = dict(r)
    out["id"] = str(r["id"]) if r.get("id") is not None else str(index)
    label = r.get("label", [])
    if isinstance(label, str):
        label = [label]
    if not isinstance(label, list) or not all(isinstance(x, str) for x in label):
        raise _fail(frame_id, f"ROI label must be a list of strings, got {label!r}")
    out["label"] = list(map(nfc, label))
    sources = r.get("sources")
    if sources is not None and not isinstance(sources, list):
        raise _fail(frame_id, f"ROI sources must be a list of source ids, got {sources!r}")
    out["sources"] = list(default_sources) if sources is None else [str(x) for x in sources]
    confidence = r.get("confidence")
    if confidence is not None and (isinstance(confidence, bool) or not isinstance(confidence, (int, float))):
        raise _fail(frame_id, f"ROI confidence must be a number, got {confidence!r}")
    out["confidence"] = confidence
    poly = r.get("poly") or []
    if not isinstance(poly, list) or not all(
            isinstance(x, (int, float)) and not isinstance(x, bool) for x in poly) or len(poly) % 2:
        raise _fail(frame_id, f"ROI poly must be a flat list of x, y numbers, got {poly!r}")
    out["poly"] = poly
    meta = r.get("meta") or {}
    if not isinstance(meta, Mapping):
        raise _fail(frame_id, f"ROI meta must be a dict, got {meta!r}")
    check_meta_value(meta, "", frame_id)
    out["meta"] = dict(nfc_keys(meta, frame_id))
    return out


def normalize_frame_dict(d: Any) -> dict[str, Any]:
    """Validate a frame dict and fill every default of spec section 1.

    Raises FrameError naming the frame; returns a new dict (the input is not changed).
    """
    return normalize_frame(d)[0]


def normalize_frame(d: Any) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """``normalize_frame_dict``, plus the (dotted path, type name) of every non-null meta value.

    The archive keeps one type per meta key across a version; the walk that validates meta finds the
    types as well, so ingest does not walk every frame's meta a second time.
    """
    if type(d) is not dict and not isinstance(d, Mapping):
        raise FrameError(f"a frame must be a dict, got {type(d).__name__}")
    given_id = d.get("id")
    if given_id is not None and not isinstance(given_id, str):
        if isinstance(given_id, int) and not isinstance(given_id, bool):
            given_id = str(given_id)
        else:
            raise _fail(given_id, f"frame id must be a string, got {given_id!r}")
    if given_id == "":
        raise FrameError("frame id must not be empty")
    sources = d.get("sources") or []
    if not isinstance(sources, list):
        raise _fail(given_id, "sources must be a list")
    first = sources[0] if sources and (type(sources[0]) is dict or isinstance(sources[0], Mapping)) else {}
    frame_id = given_id
    if frame_id is None:
        uri = first.get("uri")
        frame_id = derived_frame_id(uri) if isinstance(uri, str) else uuid.uuid4().hex
    ts = _int_or_none(d.get("timestamp"), "timestamp", frame_id)
    if ts is None:
        ts = _int_or_none(first.get("timestamp"), "source timestamp", frame_id) or 0
    if not -(2**63) <= ts < 2**63:
        raise _fail(frame_id, f"timestamp {ts} does not fit in a signed 64-bit integer")
    out = dict(d)
    out["id"] = frame_id
    out["timestamp"] = ts
    sources = out["sources"] = [_normalize_source(s, i, ts, frame_id) for i, s in enumerate(sources)]
    if sum(v[3] for s in sources for m in s["masks"] for v in m.get("values") or ()) > MAX_FRAME_PIXELS:
        raise _fail(frame_id, f"mask statistics count more than {MAX_FRAME_PIXELS} pixels")
    source_ids = [s["id"] for s in sources]
    if len(source_ids) > 1 and len(set(source_ids)) != len(source_ids):
        raise _fail(frame_id, f"duplicate source ids {source_ids}")
    context = d.get("context_id")
    if context is None:
        context = sources[0]["uri"] if sources else frame_id
    out["context_id"] = _str(context, "context_id", frame_id)
    meta = d.get("meta")
    meta = {} if meta is None else meta
    if type(meta) is not dict and not isinstance(meta, Mapping):
        raise _fail(frame_id, f"meta must be a dict, got {meta!r}")
    types: list[tuple[str, str]] = []
    _check_meta(meta, "", frame_id, types)
    if (normalized := nfc_keys(meta, frame_id)) is not meta:
        meta, types = normalized, []
        _check_meta(meta, "", frame_id, types)
    out["meta"] = dict(meta)
    rois = d.get("rois") or []
    if not isinstance(rois, list):
        raise _fail(frame_id, "rois must be a list")
    out["rois"] = [_normalize_roi(r, i, source_ids[:1], frame_id) for i, r in enumerate(rois)]
    return out, types


# ----------------------------------------------------------------------------- objects

@dataclass
class Mask:
    """A mask image attached to a source; ``values`` are its ``[r, g, b, pixel_count]`` statistics."""

    uri: str
    id: str | None = None
    content_type: str | None = None
    timestamp: int | None = None
    values: list[list[int]] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = {"id": self.id, "content_type": self.content_type, "uri": self.uri, "timestamp": self.timestamp}
        d.update(self.extra)
        if self.values is not None:
            d["values"] = self.values
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Mask:
        return cls(uri=d["uri"], id=d.get("id"), content_type=d.get("content_type"),
                   timestamp=d.get("timestamp"), values=d.get("values"),
                   extra=_keep_extra(d, MASK_KEYS + ("values",)))


@dataclass
class Source:
    """One image of a frame (a camera, a view)."""

    uri: str
    id: str | None = None
    content_type: str | None = None
    timestamp: int | None = None
    width: int | None = None
    height: int | None = None
    masks: list[Mask] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = {"id": self.id, "content_type": self.content_type, "uri": self.uri, "timestamp": self.timestamp,
             "width": self.width, "height": self.height, "masks": [m.to_dict() for m in self.masks]}
        d.update(self.extra)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Source:
        return cls(uri=d["uri"], id=d.get("id"), content_type=d.get("content_type"),
                   timestamp=d.get("timestamp"), width=d.get("width"), height=d.get("height"),
                   masks=[Mask.from_dict(m) for m in d.get("masks") or []],
                   extra=_keep_extra(d, SOURCE_KEYS))

    def mask(self, mask_id: str | None = None) -> Mask:
        """The mask with that id, or the first one."""
        for m in self.masks:
            if mask_id is None or m.id == mask_id:
                return m
        raise FrameError(f"source {self.id!r} has no mask {mask_id!r}; its masks: {[m.id for m in self.masks]}"
                         if mask_id else f"source {self.id!r} has no mask")


@dataclass
class Roi:
    """A labelled region (``poly``) or, without geometry, a frame-level label."""

    label: list[str]
    id: str | None = None
    sources: list[str] | None = None
    confidence: float | None = None
    poly: list[float] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = {"id": self.id, "sources": self.sources, "label": list(self.label),
             "confidence": self.confidence, "poly": list(self.poly), "meta": dict(self.meta)}
        d.update(self.extra)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Roi:
        label = d.get("label") or []
        return cls(label=[label] if isinstance(label, str) else list(label), id=d.get("id"),
                   sources=d.get("sources"), confidence=d.get("confidence"), poly=list(d.get("poly") or []),
                   meta=dict(d.get("meta") or {}), extra=_keep_extra(d, ROI_KEYS))


def _masks_from(masks_source: Mapping[str, str] | Iterable[str] | str | None) -> list[Mask]:
    if masks_source is None:
        return []
    if isinstance(masks_source, str):
        return [Mask(uri=masks_source, id=mask_id(0))]
    if isinstance(masks_source, Mapping):
        return [Mask(uri=uri, id=str(mid)) for mid, uri in masks_source.items()]
    return [Mask(uri=uri, id=mask_id(i)) for i, uri in enumerate(masks_source)]


class Frame:
    """What SingleFrame and FrameGroup share: id rules, context, time, meta and ROIs."""

    sources: list[Source]

    def __init__(self, *, id: str | None = None, timestamp: int | None = None, context_id: str | None = None,
                 meta: Mapping[str, Any] | None = None, metadata: Mapping[str, Any] | None = None,
                 rois: Iterable[Roi] | None = None, extra: Mapping[str, Any] | None = None) -> None:
        self._id = id
        self._random_id: str | None = None
        self._timestamp = timestamp
        self._context_id = context_id
        self.meta: dict[str, Any] = dict(meta if meta is not None else metadata or {})
        self.rois: list[Roi] = list(rois or [])
        self.extra: dict[str, Any] = dict(extra or {})

    # id / context / timestamp follow spec section 1: given, else derived from the first source.
    @property
    def id(self) -> str:
        if self._id is not None:
            return self._id
        sources = self.sources
        if sources:
            return derived_frame_id(sources[0].uri)
        if self._random_id is None:
            self._random_id = uuid.uuid4().hex
        return self._random_id

    @id.setter
    def id(self, value: str) -> None:
        self._id = value

    @property
    def context_id(self) -> str:
        if self._context_id is not None:
            return self._context_id
        sources = self.sources
        return sources[0].uri if sources else self.id

    @context_id.setter
    def context_id(self, value: str) -> None:
        self._context_id = value

    @property
    def timestamp(self) -> int:
        if self._timestamp is not None:
            return self._timestamp
        sources = self.sources
        return (sources[0].timestamp or 0) if sources else 0

    @timestamp.setter
    def timestamp(self, value: int) -> None:
        self._timestamp = value

    @property
    def metadata(self) -> dict[str, Any]:
        """ClearML's name for ``meta``."""
        return self.meta

    @metadata.setter
    def metadata(self, value: Mapping[str, Any]) -> None:
        self.meta = dict(value)

    def add_annotation(self, box2d_xywh: Iterable[float] | None = None, poly2d_xy: Iterable[Any] | None = None,
                       labels: Iterable[str] | None = None, confidence: float | None = None,
                       metadata: Mapping[str, Any] | None = None, frame_class: Iterable[str] | None = None,
                       id: str | None = None, sources: Iterable[str] | None = None) -> Roi:
        """Add a ROI: a box, a polygon, or (``frame_class``) a frame-level label without geometry."""
        poly: list[float] = []
        if box2d_xywh is not None:
            x, y, w, h = (float(v) for v in box2d_xywh)
            poly = [x, y, x + w, y, x + w, y + h, x, y + h]
        elif poly2d_xy is not None:
            points = list(poly2d_xy)
            if points and isinstance(points[0], (list, tuple)):
                points = [c for p in points for c in p]
            poly = [float(v) for v in points]
        names = list(frame_class if frame_class is not None else labels or [])
        roi = Roi(label=names, id=id if id is not None else str(len(self.rois)),
                  sources=list(sources) if sources is not None else None,
                  confidence=confidence, poly=poly, meta=dict(metadata or {}))
        self.rois.append(roi)
        return roi

    def to_dict(self) -> dict[str, Any]:
        """The frame-dict shape, with every default filled in."""
        d = {"id": self.id, "timestamp": self.timestamp, "context_id": self.context_id, "meta": self.meta,
             "sources": [s.to_dict() for s in self.sources], "rois": [r.to_dict() for r in self._all_rois()]}
        d.update(self.extra)
        return normalize_frame_dict(d)

    def _all_rois(self) -> list[Roi]:
        return self.rois

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Frame:
        """A frame from the frame-dict shape: a FrameGroup when it has several sources."""
        return frame_from_dict(d, None if cls is Frame else cls)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Frame) and self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(id={self.id!r}, context_id={self.context_id!r}, " \
               f"timestamp={self.timestamp!r}, sources={[s.id for s in self.sources]!r})"


class SingleFrame(Frame):
    """A frame with one image source (source id ``"0"`` unless given) and its masks."""

    def __init__(self, source: str | None = None, mask_source: str | None = None, *,
                 masks_source: Mapping[str, str] | Iterable[str] | None = None, id: str | None = None,
                 context_id: str | None = None, timestamp: int | None = None,
                 meta: Mapping[str, Any] | None = None, metadata: Mapping[str, Any] | None = None,
                 width: int | None = None, height: int | None = None, source_id: str = "0",
                 content_type: str | None = None, rois: Iterable[Roi] | None = None,
                 sources: Iterable[Source] | None = None, extra: Mapping[str, Any] | None = None) -> None:
        super().__init__(id=id, timestamp=timestamp, context_id=context_id, meta=meta, metadata=metadata,
                         rois=rois, extra=extra)
        if sources is not None:
            self.sources = list(sources)
        elif source is not None:
            self.sources = [Source(uri=source, id=source_id, content_type=content_type, timestamp=timestamp,
                                   width=width, height=height)]
        else:
            self.sources = []
        if mask_source is not None:
            self.masks_source = [mask_source]
        if masks_source is not None:
            self.masks_source = masks_source

    def _first_source(self) -> Source:
        if not self.sources:
            raise FrameError(f"frame {self.id!r} has no source to attach masks to")
        return self.sources[0]

    @property
    def source(self) -> str | None:
        return self.sources[0].uri if self.sources else None

    @property
    def mask_source(self) -> str | None:
        masks = self.sources[0].masks if self.sources else []
        return masks[0].uri if masks else None

    @mask_source.setter
    def mask_source(self, uri: str) -> None:
        self._first_source().masks = _masks_from([uri])

    @property
    def masks_source(self) -> dict[str, str]:
        """Mask id -> URI of the source; assign a dict (ids kept) or a list (ids "00", "01", ...)."""
        masks = self.sources[0].masks if self.sources else []
        return {m.id or mask_id(i): m.uri for i, m in enumerate(masks)}

    @masks_source.setter
    def masks_source(self, value: Mapping[str, str] | Iterable[str]) -> None:
        self._first_source().masks = _masks_from(value)


class FrameGroup(Frame, dict):
    """A frame with several sources (cameras): a dict of source id -> SingleFrame."""

    def __init__(self, id: str | None = None, *, timestamp: int | None = None, context_id: str | None = None,
                 meta: Mapping[str, Any] | None = None, metadata: Mapping[str, Any] | None = None,
                 rois: Iterable[Roi] | None = None, extra: Mapping[str, Any] | None = None) -> None:
        dict.__init__(self)
        Frame.__init__(self, id=id, timestamp=timestamp, context_id=context_id, meta=meta, metadata=metadata,
                       rois=rois, extra=extra)

    def __setitem__(self, source_id: str, frame: SingleFrame) -> None:
        if not isinstance(frame, SingleFrame) or len(frame.sources) != 1:
            raise FrameError(f"FrameGroup[{source_id!r}] takes a SingleFrame with one source")
        dict.__setitem__(self, str(source_id), frame)

    @property  # type: ignore[override]
    def sources(self) -> list[Source]:
        out = []
        for source_id, frame in self.items():
            src = frame.sources[0]
            out.append(Source(uri=src.uri, id=source_id, content_type=src.content_type, timestamp=src.timestamp,
                              width=src.width, height=src.height, masks=src.masks, extra=src.extra))
        return out

    def _all_rois(self) -> list[Roi]:
        """Group ROIs plus each member's ROIs, bound to that member's source id."""
        return self.rois + [Roi(label=r.label, id=f"{sid}:{r.id}", sources=[sid], confidence=r.confidence,
                                poly=r.poly, meta=r.meta, extra=r.extra)
                            for sid, frame in self.items() for r in frame.rois]

    __eq__ = Frame.__eq__
    __hash__ = None  # type: ignore[assignment]
    __repr__ = Frame.__repr__


def frame_from_dict(d: Mapping[str, Any], cls: type[Frame] | None = None) -> Frame:
    """Build a frame object from a frame dict; ``cls`` forces SingleFrame or FrameGroup."""
    n = normalize_frame_dict(d)
    extra = _keep_extra(n, FRAME_KEYS)
    rois = [Roi.from_dict(r) for r in n["rois"]]
    sources = [Source.from_dict(s) for s in n["sources"]]
    common = dict(id=n["id"], timestamp=n["timestamp"], context_id=n["context_id"], meta=n["meta"],
                  rois=rois, extra=extra)
    if cls is FrameGroup or (cls is None and len(sources) > 1):
        group = FrameGroup(**common)
        for src in sources:
            group[src.id] = SingleFrame(sources=[src])
        return group
    return SingleFrame(sources=sources, **common)


def uses_constructor_words(d: Mapping[str, Any]) -> bool:
    """Whether a frame dict names its files with SingleFrame's keywords instead of ``sources``."""
    return "sources" not in d and any(key in d for key in CONSTRUCTOR_WORDS)


def refuse_constructor_words(frames: list[Any]) -> None:
    """A frame dict written with SingleFrame's keywords is refused, not stored without its files."""
    for d in frames:
        if isinstance(d, Mapping) and uses_constructor_words(d):
            raise FrameError(f"frame {d.get('id')!r}: {', '.join(k for k in CONSTRUCTOR_WORDS if k in d)} "
                             "are SingleFrame's keywords: pass SingleFrame(**d), or a frame dict of the "
                             f"shape {EXAMPLE_FRAME_DICT}")
