"""Query nodes compiled to Python closures over frame dicts.

This is the residual path of the planner (predicates no index or column answers) and, run over
every frame, the obviously-correct reference the planner is tested against. Comparisons follow one
rule everywhere (``compare``), which the column scans mirror.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Iterable, Mapping
from functools import cached_property
from typing import Any

from ..labels import pack_rgb, packed_key
from .check import compile_glob
from .nodes import And, Compare, Coverage, Expr, Has, In, Not, Or, RoiAll, Value

Predicate = Callable[[Mapping[str, Any]], bool]
glob = functools.lru_cache(maxsize=256)(compile_glob)
_ORDER = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}


def _number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def comparable(a: object, b: object) -> bool:
    """Values of one kind: numbers with numbers, strings with strings, booleans with booleans."""
    return (_number(a) and _number(b)) or type(a) is type(b)


def compare(a: Any, op: str, b: Any) -> bool:
    """``a op b`` for query values: values of different kinds are unequal and unordered."""
    if op == "~":
        return isinstance(a, str) and glob(b).fullmatch(a) is not None
    if op == "==":
        return comparable(a, b) and a == b
    if op == "!=":
        return not (comparable(a, b) and a == b)
    return comparable(a, b) and a is not None and _ORDER[op](a, b)


def rgb_value(value: Value) -> tuple[int, int, int] | None:
    """``mask.value`` literals: ``[r, g, b]`` or ``v`` meaning ``(v, v, v)``."""
    if isinstance(value, tuple) and len(value) == 3:
        return tuple(int(c) for c in value)  # type: ignore[return-value]
    if _number(value):
        return (int(value), int(value), int(value))  # type: ignore[arg-type]
    return None


class Labels:
    """The version's ``mask_labels`` as lookups both ways (value key <-> label names)."""

    def __init__(self, mask_labels: list[dict[str, Any]]) -> None:
        self.of_value: dict[int, list[str]] = {pack_rgb(e["value"]): list(e["labels"]) for e in mask_labels}
        self._values: dict[frozenset[str], list[int]] = {}

    @cached_property
    def names(self) -> list[str]:
        return list(dict.fromkeys(n for names in self.of_value.values() for n in names))

    def values_of(self, labels: Iterable[str]) -> list[int]:
        """Sorted packed keys of the values carrying any of ``labels``; remembered, since scans ask
        once per column chunk."""
        wanted = frozenset(labels)
        found = self._values.get(wanted)
        if found is None:
            found = self._values[wanted] = sorted(key for key, names in self.of_value.items()
                                                  if wanted.intersection(names))
        return found


def meta_get(meta: Mapping[str, Any], path: tuple[str, ...]) -> tuple[bool, Any]:
    node: Any = meta
    for part in path:
        if not isinstance(node, Mapping) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _masks(frame: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [m for s in frame["sources"] for m in s["masks"]]


def _mask_keys(frame: Mapping[str, Any]) -> set[int]:
    return {packed_key(v) for m in _masks(frame) for v in m.get("values") or ()}


def field_values(frame: Mapping[str, Any], name: str, path: tuple[str, ...], labels: Labels) -> list[Any]:
    """Every value a frame holds for a field (multi-valued fields give several)."""
    if path:
        found, value = meta_get(frame["meta"], path)
        if not found or value is None:
            return []
        return list(value) if isinstance(value, list) else [value]
    if name in ("id", "context_id", "timestamp"):
        return [frame[name]]
    if name in ("label", "mask.label", "roi.label"):
        out: list[str] = []
        if name != "roi.label":
            out += [n for key in _mask_keys(frame) for n in labels.of_value.get(key, ())]
        if name != "mask.label":
            out += [n for r in frame["rois"] for n in r["label"]]
        return out
    if name == "roi.confidence":
        return [r["confidence"] for r in frame["rois"] if r.get("confidence") is not None]
    if name.startswith("source."):
        return [s.get(name[7:]) for s in frame["sources"]]
    if name == "mask.id":
        return [m["id"] for m in _masks(frame)]
    if name == "mask.value":
        return [tuple(v[:3]) for m in _masks(frame) for v in m.get("values") or ()]
    raise KeyError(name)


def coverage(frame: Mapping[str, Any], wanted: frozenset[int]) -> float:
    """Pixels whose value is in ``wanted`` / all mask pixels of the frame (0 without mask statistics)."""
    total = labelled = 0
    for m in _masks(frame):
        for v in m.get("values") or ():
            total += v[3]
            if packed_key(v) in wanted:
                labelled += v[3]
    return labelled / total if total else 0.0


def _value_test(op: str, value: Value, name: str) -> Callable[[Any], bool]:
    if name == "mask.value":
        want = rgb_value(value)
        return (lambda v: v == want) if op == "==" else (lambda v: v != want)
    return lambda v: compare(v, op, value)


def _roi_test(node: Compare | In) -> Callable[[Mapping[str, Any]], bool]:
    """One ROI against one roi.* condition (for RoiAll: every condition on the same ROI)."""
    key = "label" if node.field.name == "roi.label" else "confidence"

    def values(roi: Mapping[str, Any]) -> list[Any]:
        return list(roi["label"]) if key == "label" else [roi["confidence"]] if roi.get("confidence") is not None else []
    if isinstance(node, In):
        return lambda roi: any(compare(v, "==", w) for v in values(roi) for w in node.values)
    return lambda roi: any(compare(v, node.op, node.value) for v in values(roi))


def compile_expr(node: Expr, labels: Labels) -> Predicate:
    """A closure answering ``node`` for one frame dict."""
    if isinstance(node, And):
        parts = [compile_expr(i, labels) for i in node.items]
        return lambda f: all(p(f) for p in parts)
    if isinstance(node, Or):
        parts = [compile_expr(i, labels) for i in node.items]
        return lambda f: any(p(f) for p in parts)
    if isinstance(node, Not):
        inner = compile_expr(node.item, labels)
        return lambda f: not inner(f)
    if isinstance(node, RoiAll):
        tests = [_roi_test(i) for i in node.items]
        return lambda f: any(all(t(r) for t in tests) for r in f["rois"])
    if isinstance(node, Has):
        name, path = node.field.name, node.field.path
        if path:
            return lambda f: meta_get(f["meta"], path)[1] is not None
        if name == "mask":
            return lambda f: bool(_masks(f))
        return lambda f: bool(f["rois"])
    if isinstance(node, Coverage):
        wanted = frozenset(labels.values_of([node.label]))  # once, not per frame
        return lambda f: compare(coverage(f, wanted), node.op, node.value)
    name, path = node.field.name, node.field.path
    if isinstance(node, In):
        tests = [_value_test("==", v, name) for v in node.values]
        return lambda f: any(t(v) for v in field_values(f, name, path, labels) for t in tests)
    test = _value_test(node.op, node.value, name)
    return lambda f: any(test(v) for v in field_values(f, name, path, labels))
