"""The query AST: small frozen nodes that the parser builds, the checker validates and the planner reads.

Values inside nodes are plain Python: ``str``, ``int``, ``float``, ``bool``, ``None``, or a ``tuple`` for
a list literal. Nodes compare and hash by *type and value* (``meta.x == true`` and ``meta.x == 1`` are
different queries even though ``True == 1`` in Python) and ignore source offsets (``at`` fields), so a
query printed with :func:`to_text` parses back to an equal node and nodes can key caches.

Offsets (``at``, ``value_at``...) are 0-based character positions in :attr:`Query.text`, or -1 for
nodes built by hand; the checker turns them into line and column for its errors.

>>> from maskstore.query.parse import parse_query
>>> to_text(parse_query("label != 'cat'  ORDER BY timestamp DESC"))
'not label == "cat" order by timestamp desc'
"""

from __future__ import annotations

import dataclasses as dc
import math
import re
from typing import Union

Value = Union[str, int, float, bool, None, tuple]
"""A literal: ``tuple`` is a list literal such as ``[1, 2, 3]``."""


@dc.dataclass(frozen=True)
class FieldSpec:
    """What the language knows about a field: its value kind and whether a frame holds several."""

    kind: str
    """``"str"``, ``"int"`` (timestamp), ``"number"`` (int or float), ``"rgb"`` (mask.value)."""
    multi: bool
    """True when a frame can hold several values: comparisons mean "some value matches"."""


FIELDS: dict[str, FieldSpec] = {
    "id": FieldSpec("str", False),
    "context_id": FieldSpec("str", False),
    "timestamp": FieldSpec("int", False),
    "label": FieldSpec("str", True),
    "mask.label": FieldSpec("str", True),
    "roi.label": FieldSpec("str", True),
    "roi.confidence": FieldSpec("number", True),
    "source.id": FieldSpec("str", True),
    "source.uri": FieldSpec("str", True),
    "source.content_type": FieldSpec("str", True),
    "mask.id": FieldSpec("str", True),
    "mask.value": FieldSpec("rgb", True),
}
"""Every field except ``meta.<path>`` (whose type is per version: see ``check_query(meta_types=...)``)."""

HAS_FIELDS = ("mask", "roi")
"""Bare names ``has()`` accepts besides ``meta.<path>``."""

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Characters that would break a printed query onto several lines (str.splitlines) or are invisible.
_ESCAPED = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _typed(value: object) -> object:
    """Key for equality: a value together with its type, recursively (so True != 1, 1 != 1.0)."""
    if isinstance(value, tuple):
        return (tuple, tuple(_typed(v) for v in value))
    if isinstance(value, Node):
        return value
    return (type(value), value)


class Node:
    """Base of all AST nodes: typed, offset-blind equality and hashing."""

    __slots__ = ()

    def _key(self) -> tuple:
        return tuple(_typed(getattr(self, f.name)) for f in dc.fields(self) if f.compare)  # type: ignore[arg-type]

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._key() == other._key()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._key()))


def _at() -> int:
    return dc.field(default=-1, compare=False, repr=False)


@dc.dataclass(frozen=True, eq=False)
class Field(Node):
    """A field reference. ``name`` is a key of :data:`FIELDS`, ``"meta"``, ``"mask"``/``"roi"`` (in has())
    or whatever unknown name the user typed; ``path`` holds the keys of ``meta.<path>`` (else empty)."""

    name: str
    path: tuple[str, ...] = ()
    at: int = _at()

    @property
    def text(self) -> str:
        """The field as the user would write it: ``meta.city``, ``meta."camera height"``."""
        return ".".join([*(_part(p) for p in self.name.split(".")), *(_part(p) for p in self.path)])

    @property
    def spec(self) -> FieldSpec | None:
        """The field's entry in :data:`FIELDS`; None for meta and unknown fields."""
        return FIELDS.get(self.name) if not self.path else None


@dc.dataclass(frozen=True, eq=False)
class Compare(Node):
    """``field op value``; op is one of ``== != < <= > >= ~`` (``~``: glob match, see check.compile_glob).

    On multi-valued fields the parser never leaves ``!=``: ``label != X`` becomes ``Not(label == X)``."""

    field: Field
    op: str
    value: Value
    at: int = _at()
    value_at: int = _at()


@dc.dataclass(frozen=True, eq=False)
class In(Node):
    """``field in [v, ...]``: the field (some value of it, if multi-valued) equals one of ``values``."""

    field: Field
    values: tuple
    at: int = _at()
    values_at: tuple[int, ...] = dc.field(default=(), compare=False, repr=False)


@dc.dataclass(frozen=True, eq=False)
class Has(Node):
    """``has(mask)``, ``has(roi)``, ``has(meta.path)``: the frame has at least one / has that key."""

    field: Field
    at: int = _at()


@dc.dataclass(frozen=True, eq=False)
class Coverage(Node):
    """``coverage("label") op value``: fraction (0..1) of the frame's mask pixels carrying ``label``."""

    label: str
    op: str
    value: Value
    at: int = _at()
    value_at: int = _at()


@dc.dataclass(frozen=True, eq=False)
class Not(Node):
    """Negation of ``item``."""

    item: Expr


@dc.dataclass(frozen=True, eq=False)
class And(Node):
    """All ``items`` hold. Flat (no And item) and holds at most one :class:`RoiAll`."""

    items: tuple[Expr, ...]


@dc.dataclass(frozen=True, eq=False)
class Or(Node):
    """Some item holds. Flat (no Or item)."""

    items: tuple[Expr, ...]


@dc.dataclass(frozen=True, eq=False)
class RoiAll(Node):
    """Two or more ``roi.*`` comparisons (:class:`Compare`/:class:`In`) joined directly by ``and``: one
    ROI must satisfy them all. A lone ``roi.*`` comparison, or one under ``or``/``not``, stays a plain
    Compare/In and means "some ROI satisfies it"."""

    items: tuple[Compare | In, ...]


Expr = Union[Compare, In, Has, Coverage, Not, And, Or, RoiAll]


@dc.dataclass(frozen=True, eq=False)
class Query(Node):
    """A whole query. ``where`` None selects every frame; ``order_by`` None keeps storage order;
    ``limit`` None means no limit (an int >= 0 once checked). ``text`` is the source, for error carets."""

    where: Expr | None = None
    order_by: Field | None = None
    descending: bool = False
    limit: int | float | None = None
    text: str = dc.field(default="", compare=False, repr=False)
    limit_at: int = _at()


def _part(part: str) -> str:
    return part if _NAME.fullmatch(part) else _string(part)


def _string(s: str) -> str:
    out = []
    for ch in s:
        if ch in _ESCAPED:
            out.append(_ESCAPED[ch])
        elif ch.isprintable() or ch == " " or ord(ch) > 0xFFFF:
            out.append(ch)
        else:
            out.append(f"\\u{ord(ch):04x}")
    return '"' + "".join(out) + '"'


def value_text(value: Value) -> str:
    """A literal in query syntax: ``"car"``, ``3``, ``0.25``, ``true``, ``null``, ``[1, 2, 3]``."""
    if isinstance(value, str):
        return _string(value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value!r} has no query syntax")
        return repr(value)
    return "[" + ", ".join(value_text(v) for v in value) + "]"


_LEVEL = {Or: 1, And: 2, RoiAll: 2, Not: 3}


def _expr(node: Expr, parent_level: int) -> str:
    level = _LEVEL.get(type(node), 4)
    if isinstance(node, Or):
        text = " or ".join(_expr(i, 1) for i in node.items)
    elif isinstance(node, (And, RoiAll)):
        text = " and ".join(_expr(i, 2) for i in node.items)
    elif isinstance(node, Not):
        text = "not " + _expr(node.item, 3)
    elif isinstance(node, Compare):
        text = f"{node.field.text} {node.op} {value_text(node.value)}"
    elif isinstance(node, In):
        text = f"{node.field.text} in {value_text(node.values)}"
    elif isinstance(node, Has):
        text = f"has({node.field.text})"
    elif isinstance(node, Coverage):
        text = f"coverage({_string(node.label)}) {node.op} {value_text(node.value)}"
    else:
        raise TypeError(f"not a query node: {node!r}")
    return f"({text})" if level < parent_level else text


def to_text(node: Query | Expr) -> str:
    """Print a query (or part of one) in canonical syntax; ``parse_query(to_text(q)) == q``.

    Used by ``explain`` and in messages, so users see the query the way it was understood.
    """
    if not isinstance(node, Query):
        return _expr(node, 0)
    parts = [_expr(node.where, 0)] if node.where is not None else []
    if node.order_by is not None:
        parts.append(f"order by {node.order_by.text}" + (" desc" if node.descending else ""))
    if node.limit is not None:
        parts.append(f"limit {value_text(node.limit)}")
    return " ".join(parts)
