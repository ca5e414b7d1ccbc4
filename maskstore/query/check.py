"""Type-check a parsed query before any record is read: fields exist, operators and values fit them.

A typo or a type mismatch is a :class:`~maskstore.errors.QueryTypeError` pointing at the offending
text and naming the field and both types, never an empty result (spec section 2).

>>> check_query('timestamp == "x"')
Traceback (most recent call last):
...
maskstore.errors.QueryTypeError: type mismatch: timestamp compares to an integer, not to the string "x" (line 1, column 14)
  timestamp == "x"
               ^
"""

from __future__ import annotations

import dataclasses as dc
import difflib
import functools
import re
import warnings
from collections.abc import Callable, Collection, Iterator, Mapping

from ..errors import QueryError, QuerySyntaxError, QueryTypeError, UnknownLabelWarning
from ..labels import nfc
from .nodes import (FIELDS, HAS_FIELDS, And, Compare, Coverage, Expr, Field, FieldSpec, Has, In, Not, Or,
                    Query, RoiAll, Value, value_text)
from .parse import parse_query, query_error

__all__ = ["check_query", "compile_glob", "unknown_labels", "warn_unknown_labels", "META_TYPES"]

META_TYPES = ("str", "int", "float", "bool", "list", "dict")
"""The types a version records for its meta keys (the values of ``meta_types``)."""

_ORDERING = ("<", "<=", ">", ">=")
_NUMERIC_OPS = ("==", "!=", *_ORDERING)
_OPS_BY_KIND = {  # operators per field kind; multi-valued strings have no order (see ops)
    "str": ("==", "!=", *_ORDERING, "~"),
    "int": _NUMERIC_OPS,
    "number": _NUMERIC_OPS,
    "rgb": ("==", "!="),
}
_KIND_WORDS = {"str": "a string", "int": "an integer", "number": "a number",
               "rgb": "an RGB value [r, g, b] (0..255 each) or v for [v, v, v]"}
_EXAMPLES = {"str": '"car"', "int": "1234567889", "number": "0.5", "rgb": "[1, 1, 1]"}
_META_KINDS = {"str": "str", "int": "number", "float": "number", "bool": "bool"}
_META_WORDS = {"str": ("strings", 'a string, e.g. "frankfurt"'), "number": ("numbers", "a number, e.g. 3"),
               "bool": ("booleans", "true or false")}
_INT64 = (-(2**63), 2**63 - 1)
_META_INT = (-(2**63), 2**64 - 1)  # msgpack stores signed or unsigned 64-bit integers


def check_query(query: Query | str, meta_types: Mapping[str, str] | None = None) -> Query:
    """Return ``query`` checked and normalised for the planner, or raise QueryError at the first problem.

    Normalisations: ``mask.value`` literals become ``(r, g, b)`` tuples (``3`` → ``(3, 3, 3)``);
    ``meta.k == null`` becomes ``not has(meta.k)`` and ``meta.k != null`` becomes ``has(meta.k)``;
    ``!=`` on a multi-valued field becomes ``not ==`` (as the parser does) for hand-built nodes;
    label strings, label patterns and meta keys become Unicode NFC, as labels and keys are stored.

    ``meta_types`` maps a meta path relative to ``meta`` (``"city"``, ``"camera.height"``) to one of
    :data:`META_TYPES`. Without it any scalar compares with any meta key; with it, a comparison or an
    ``order by`` on a key no frame has is an unknown field, and values must fit the key's type.
    ``has(meta.k)`` never needs the key to exist.
    """
    if isinstance(query, str):
        query = parse_query(query)
    checker = _Checker(query.text, meta_types)
    where = checker.expr(query.where) if query.where is not None else None
    order_by = query.order_by
    if order_by is not None:
        order_by = _nfc_field(order_by)
        checker.order_by(order_by)
    checker.limit(query.limit, query.limit_at)
    return dc.replace(query, where=where, order_by=order_by)


def _nfc_field(field: Field) -> Field:
    return dc.replace(field, path=tuple(map(nfc, field.path))) if field.path else field


LABEL_FIELDS = ("label", "mask.label", "roi.label")


def _named_labels(node: Expr) -> Iterator[tuple[str, str]]:
    """(field, label) of every label a checked query names exactly: ``==``/``in`` on the label fields
    and ``coverage()``, which reads mask pixels."""
    if isinstance(node, (And, Or, RoiAll)):
        for item in node.items:
            yield from _named_labels(item)
    elif isinstance(node, Not):
        yield from _named_labels(node.item)
    elif isinstance(node, Coverage):
        yield "mask.label", node.label
    elif isinstance(node, (Compare, In)) and node.field.name in LABEL_FIELDS and not node.field.path:
        values = node.values if isinstance(node, In) else (node.value,) if node.op == "==" else ()
        yield from ((node.field.name, v) for v in values if isinstance(v, str))


def unknown_labels(query: Query, mask_labels: Collection[str],
                   roi_labels: Callable[[], Collection[str] | None]) -> list[str]:
    """"no label 'persn'; did you mean 'person'?" for each label the query names that the version
    does not have: such a condition matches nothing, which a typo would otherwise make silently.
    ``roi_labels()`` lists the version's ROI labels, or gives None when they cannot be listed (then
    only mask-only conditions are judged); it is called only for a label no mask value carries."""
    out = []
    for field, label in dict.fromkeys(_named_labels(query.where) if query.where is not None else ()):
        if field != "roi.label" and label in mask_labels:
            continue
        rois = None if field == "mask.label" else roi_labels()
        if field != "mask.label" and (rois is None or label in rois):
            continue
        what, known = {"mask.label": ("mask label", list(mask_labels)), "roi.label": ("ROI label", list(rois or ()))
                       }.get(field, ("label", [*mask_labels, *(rois or ())]))
        out.append(f"no {what} {label!r}, so nothing matches it" + _suggest(label, known))
    return out


def warn_unknown_labels(query: Query, version: str, mask_labels: Collection[str],
                        roi_labels: Callable[[], Collection[str] | None]) -> None:
    """``unknown_labels`` as UnknownLabelWarnings (the CLI prints them as "Warning: ..." lines)."""
    for message in unknown_labels(query, mask_labels, roi_labels):
        warnings.warn(UnknownLabelWarning(f"{version} has {message}"), stacklevel=2)


@functools.lru_cache(maxsize=256)
def compile_glob(pattern: str) -> re.Pattern[str]:
    """The regex (use ``.fullmatch``) for a ``~`` pattern; raise QuerySyntaxError (no position) if malformed.

    ``*`` any run of characters, ``?`` one character, ``[abc]`` ``[a-z]`` one of, ``[!a-z]`` (or ``[^a-z]``)
    none of, ``\\`` makes the next character literal. A ``]`` right after ``[`` or ``[!`` is literal.
    Case-sensitive. Shared with the planner so checking and matching agree.

    >>> bool(compile_glob("drive_*").fullmatch("drive_12"))
    True
    """
    out: list[str | None] = []  # None marks a '*'
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "*":
            if not out or out[-1] is not None:
                out.append(None)
        elif ch == "?":
            out.append(".")
        elif ch == "\\":
            if i + 1 == n:
                raise QuerySyntaxError("the pattern ends with a lone '\\'", expected="a character after '\\'")
            i += 1
            out.append(re.escape(pattern[i]))
        elif ch == "[":
            i, cls = _glob_class(pattern, i)
            out.append(cls)
        else:
            out.append(re.escape(ch))
        i += 1
    return re.compile(_without_backtracking(out), re.DOTALL)


def _without_backtracking(tokens: list[str | None]) -> str:
    """Join glob tokens into a regex that cannot backtrack catastrophically (like ``fnmatch``):
    each piece between two stars is an atomic group ``(?>.*?piece)``, so ``*a*a*a*b`` stays linear
    per star instead of exponential."""
    pieces: list[list[str]] = [[]]
    for token in tokens:
        if token is None:
            pieces.append([])
        else:
            pieces[-1].append(token)
    if len(pieces) == 1:
        return "".join(pieces[0])
    middle = "".join(f"(?>.*?{''.join(p)})" for p in pieces[1:-1])
    return "".join(pieces[0]) + middle + ".*" + "".join(pieces[-1])


def _glob_class(pattern: str, start: int) -> tuple[int, str]:
    """Translate the ``[...]`` opening at ``start``; return the index of its ``]`` and the regex class."""
    j = start + 1
    negate = j < len(pattern) and pattern[j] in "!^"
    j += negate
    body_start = j
    if j < len(pattern) and pattern[j] == "]":
        j += 1
    close = pattern.find("]", j)
    if close < 0:
        raise QuerySyntaxError(f"unclosed '[' at character {start + 1} of the pattern",
                         expected="a ']' to close the set, or '\\[' for a literal '['")
    body, parts, k = pattern[body_start:close], [], 0
    while k < len(body):
        if k + 2 < len(body) and body[k + 1] == "-":
            low, high = body[k], body[k + 2]
            if low > high:
                raise QuerySyntaxError(f"empty range '{low}-{high}' in the pattern", expected=f"'{high}-{low}'")
            parts.append(f"{re.escape(low)}-{re.escape(high)}")
            k += 3
        else:
            parts.append(re.escape(body[k]))
            k += 1
    return close, "[" + ("^" if negate else "") + "".join(parts) + "]"


def _describe(value: Value) -> str:
    if isinstance(value, tuple):
        return "a list"
    text = value_text(value)
    text = text if len(text) <= 30 else text[:27] + "..."
    if value is None:
        return "null"
    if isinstance(value, str):
        return f"the string {text}"
    if isinstance(value, bool):
        return f"the boolean {text}"
    return f"the {'integer' if isinstance(value, int) else 'number'} {text}"


def _type_of(value: Value) -> str:
    """The query type of a literal, for QueryTypeError.found_type."""
    if isinstance(value, tuple):
        return "list"
    if value is None:
        return "null"
    return "bool" if isinstance(value, bool) else "int" if isinstance(value, int) else \
        "float" if isinstance(value, float) else "str"


def _is_number(value: Value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _suggest(word: str, options: list[str], prefix: str = "") -> str:
    """The closest option, compared without case and without a prefix all options share (``meta.``),
    which would otherwise make every meta key look alike."""
    folded = {option.lower(): option for option in options}
    close = difflib.get_close_matches(word.lower(), list(folded), n=1, cutoff=0.6)
    return f"; did you mean '{prefix}{folded[close[0]]}'?" if close else ""


class _Checker:
    """One pass over the AST; ``text`` only serves error positions."""

    def __init__(self, text: str, meta_types: Mapping[str, str] | None) -> None:
        self.text = text
        self.meta_types = dict(meta_types) if meta_types is not None else None

    def fail(self, at: int, message: str, expected: str, field: Field | str, expected_type: str | None = None,
             found: Value = None, found_type: str | None = None) -> QueryError:
        """A QueryTypeError at ``at``: ``field`` (a node or its text), the type the field wants and the
        type found (given, or that of the literal ``found``)."""
        if found_type is None and found is not None:
            found_type = _type_of(found)
        return query_error(self.text, at, message, expected, QueryTypeError,
                           field=field if isinstance(field, str) else field.text, expected_type=expected_type,
                           found_type=found_type)

    # -- expressions ------------------------------------------------------------------------
    def expr(self, node: Expr) -> Expr:
        if isinstance(node, (And, Or, RoiAll)):
            return type(node)(tuple(self.expr(i) for i in node.items))
        if isinstance(node, Not):
            return Not(self.expr(node.item))
        if isinstance(node, (Compare, In, Has)):
            node = dc.replace(node, field=_nfc_field(node.field))
        if isinstance(node, Compare):
            return self.compare(node)
        if isinstance(node, In):
            return self.in_(node)
        if isinstance(node, Has):
            return self.has(node)
        if isinstance(node, Coverage):
            return self.coverage(node)
        raise TypeError(f"not a query node: {node!r}")

    def compare(self, node: Compare) -> Expr:
        if node.field.name == "meta" and node.field.path:
            return self.meta_compare(node)
        field, spec = node.field, self.spec(node.field)
        if node.op not in self.ops(spec):
            raise self.fail(node.at, f"operator '{node.op}' does not apply to {field.text}",
                            f"one of {', '.join(self.ops(spec))}", field, spec.kind)
        if node.op == "~":
            self.glob(field, node.value, node.value_at)
            return dc.replace(node, value=nfc(node.value)) if field.name in LABEL_FIELDS else node
        value = self.value(field, spec, node.value, node.value_at)
        if node.op == "!=" and spec.multi:
            return Not(dc.replace(node, op="==", value=value))
        return dc.replace(node, value=value)

    def in_(self, node: In) -> In:
        ats = node.values_at if len(node.values_at) == len(node.values) else (node.at,) * len(node.values)
        if node.field.name == "meta" and node.field.path:
            kind = self.meta_kind(node.field, node.at)
            for value, at in zip(node.values, ats):
                self.meta_value(node.field, kind, "==", value, at)
            return node
        spec = self.spec(node.field)
        values = tuple(self.value(node.field, spec, v, at) for v, at in zip(node.values, ats))
        return dc.replace(node, values=values)

    def has(self, node: Has) -> Has:
        field = node.field
        if field.name == "meta" and field.path:
            self.meta_path(field, node.at)
            return node
        if field.name not in HAS_FIELDS or field.path:
            raise self.fail(field.at, f"has() takes mask, roi or meta.<key>, not '{field.text}'"
                            + _suggest(field.text, list(HAS_FIELDS)), "mask, roi or meta.<key>", field)
        return node

    def coverage(self, node: Coverage) -> Coverage:
        if not isinstance(node.label, str) or not node.label:
            raise self.fail(node.at, "coverage() needs a label", 'a label, e.g. coverage("road")', "coverage()",
                            "str", node.label, "null" if node.label is None else None)
        if node.op not in _NUMERIC_OPS:
            raise self.fail(node.at, f"operator '{node.op}' does not apply to coverage()",
                            f"one of {', '.join(_NUMERIC_OPS)}", "coverage()", "number")
        value = node.value
        if not _is_number(value):
            raise self.fail(node.value_at, f"type mismatch: coverage() compares to a number, not to "
                            f"{_describe(value)}", 'a fraction between 0 and 1, e.g. coverage("road") > 0.25',
                            "coverage()", "number", value, "null" if value is None else None)
        if not 0 <= value <= 1:
            hint = f"; did you mean {value / 100!r}?" if 1 < value <= 100 else ""
            raise self.fail(node.value_at, f"coverage is a fraction between 0 and 1, not {value_text(value)}"
                            + hint, "a number between 0 and 1", "coverage()", "number", value)
        return dc.replace(node, label=nfc(node.label))

    # -- fields -----------------------------------------------------------------------------
    def spec(self, field: Field) -> FieldSpec:
        """The spec of a non-meta field, or the "unknown field" error."""
        spec = field.spec
        if spec is not None:
            return spec
        if field.name == "meta":
            raise self.fail(field.at, "meta needs a key, e.g. meta.city", "meta.<key>", field)
        suggestion = _suggest(field.text, list(FIELDS))
        head, _, rest = field.text.partition(".")
        if not suggestion and rest and difflib.get_close_matches(head, ["meta"], cutoff=0.6):
            suggestion = f"; did you mean 'meta.{rest}'?"
        if not suggestion:
            suggestion = "; fields are " + ", ".join(FIELDS) + " and meta.<key>"
        raise self.fail(field.at, f"unknown field '{field.text}'{suggestion}",
                        "a field name such as label, context_id or meta.<key>", field)

    @staticmethod
    def ops(spec: FieldSpec) -> tuple[str, ...]:
        ops = _OPS_BY_KIND[spec.kind]
        if spec.kind == "str" and spec.multi:  # "some label < x" has no use; keep labels to equality
            ops = ("==", "!=", "~")
        return (*ops, "in")

    def meta_path(self, field: Field, at: int) -> str | None:
        """Validate a meta path; return its recorded type (None when types are not given)."""
        if any(part == "" for part in field.path):
            raise self.fail(at, f"empty key in '{field.text}'", "a key, e.g. meta.city", field)
        if self.meta_types is None:
            return None
        return self.meta_types.get(".".join(field.path))

    def meta_kind(self, field: Field, at: int) -> str | None:
        """The comparison kind of a meta field: "str", "number", "bool", or None (any scalar)."""
        mtype = self.meta_path(field, at)
        if self.meta_types is not None and mtype is None:
            raise self.fail(at, f"unknown field '{field.text}'" + (_suggest(".".join(field.path),
                                                                          list(self.meta_types), "meta.")
                            or ": no frame of this version has that key"), "a meta key of this version", field)
        if mtype in ("list", "dict"):
            raise self.fail(at, f"{field.text} holds a {mtype}; only has({field.text}) applies to it",
                            f"has({field.text})", field, "scalar", found_type=mtype)
        return _META_KINDS.get(mtype) if mtype is not None else None

    def order_by(self, field: Field) -> None:
        if field.name == "meta" and field.path:
            self.meta_kind(field, field.at)
            return
        spec = self.spec(field)
        if spec.multi:
            raise self.fail(field.at, f"cannot order by {field.text}: a frame can hold several values; "
                            "order by id, context_id, timestamp or meta.<key>", "id, context_id, timestamp or meta.<key>",
                            field)

    # -- values -----------------------------------------------------------------------------
    def value(self, field: Field, spec: FieldSpec, value: Value, at: int) -> Value:
        """Check a literal against a non-meta field; return it normalised (mask.value → (r, g, b))."""
        kind = spec.kind
        if kind == "rgb":
            rgb = (value,) * 3 if _is_number(value) else value
            if (isinstance(rgb, tuple) and len(rgb) == 3
                    and all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 255 for c in rgb)):
                return rgb
        elif kind == "str" and isinstance(value, str):
            return nfc(value) if field.name in LABEL_FIELDS else value
        elif kind == "int" and isinstance(value, int) and not isinstance(value, bool):
            if not _INT64[0] <= value <= _INT64[1]:
                raise self.fail(at, f"{value} is out of range for {field.text} (64-bit integers)",
                                "an integer of 64 bits", field, kind, value)
            return value
        elif kind == "number" and _is_number(value):
            return value
        hint = "; to match any of several values, use 'in'" if isinstance(value, tuple) and kind != "rgb" else ""
        raise self.fail(at, f"type mismatch: {field.text} compares to {_KIND_WORDS[kind]}, not to "
                        f"{_describe(value)}{hint}", f"{_KIND_WORDS[kind]}, e.g. {_EXAMPLES[kind]}", field, kind,
                        value, "null" if value is None else None)

    def meta_compare(self, node: Compare) -> Expr:
        field, op, value = node.field, node.op, node.value
        kind = self.meta_kind(field, node.at)
        if value is None:
            if op not in ("==", "!="):
                raise self.fail(node.value_at, f"null compares only with == or != (operator '{op}')",
                                f"{field.text} == null, i.e. not has({field.text})", field, kind, found_type="null")
            has = Has(field, node.at)
            return Not(has) if op == "==" else has
        self.meta_value(field, kind, op, value, node.value_at)
        if op == "~":
            self.glob(field, value, node.value_at)
        return node

    def meta_value(self, field: Field, kind: str | None, op: str, value: Value, at: int) -> None:
        if isinstance(value, tuple):
            raise self.fail(at, f"type mismatch: {field.text} compares to a single value, not to a list; "
                            "to match any of several values, use 'in'", 'a string, number or boolean', field,
                            kind or "scalar", value)
        if value is None:
            raise self.fail(at, "null cannot be in a list; use has() to test for a key",
                            f"not has({field.text})", field, kind or "scalar", found_type="null")
        if isinstance(value, int) and not isinstance(value, bool) and not _META_INT[0] <= value <= _META_INT[1]:
            raise self.fail(at, f"{value} is out of range for meta values (64-bit integers)",
                            "an integer of 64 bits", field, kind or "number", value)
        if op == "~" and not isinstance(value, str):
            raise self.fail(at, f"'~' matches a glob pattern string, not {_describe(value)}",
                            'a pattern, e.g. "drive_*"', field, "str", value)
        if op in _ORDERING and isinstance(value, bool):
            raise self.fail(at, f"operator '{op}' needs a number or a string, not {_describe(value)}",
                            "a number or a string", field, kind or "scalar", value)
        actual = "str" if isinstance(value, str) else "bool" if isinstance(value, bool) else "number"
        if kind is not None and actual != kind:
            words, example = _META_WORDS[kind]
            raise self.fail(at, f"type mismatch: {field.text} holds {words} in this version, not "
                            f"{_describe(value)}", example, field, kind, value)

    def glob(self, field: Field, pattern: Value, at: int) -> None:
        """A malformed pattern is a syntax error of its string (the token), not a type error."""
        if not isinstance(pattern, str):
            raise self.fail(at, f"'~' matches a glob pattern string, not {_describe(pattern)}",
                            'a pattern, e.g. "drive_*"', field, "str", pattern, "null" if pattern is None else None)
        try:
            compile_glob(pattern)
        except QueryError as e:
            raise query_error(self.text, at, f"bad pattern: {e.message}", e.expected, token=pattern) from None

    def limit(self, limit: int | float | None, at: int) -> None:
        if limit is None:
            return
        if not (isinstance(limit, int) and not isinstance(limit, bool)) or limit < 0:
            raise self.fail(at, f"limit must be a whole number >= 0, not {value_text(limit)}",
                            "a whole number >= 0, e.g. limit 100", "limit", "int", limit)
