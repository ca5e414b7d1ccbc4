"""Query text → AST: the Lark LALR parser over ``grammar/query.lark`` and a Transformer to :mod:`.nodes`.

Every failure becomes a :class:`~maskstore.errors.QueryError` with line, column, a caret and what was
expected, in words; no Lark exception reaches a caller.

>>> parse_query('label != "car" limit 10')
Query(where=Not(item=Compare(field=Field(name='label', path=()), op='==', value='car')), order_by=None, descending=False, limit=10)
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.resources
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import lark
from lark import Lark, Token, Transformer, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedToken, VisitError

from ..errors import QueryError, QuerySyntaxError
from .nodes import And, Compare, Coverage, Field, Has, In, Not, Or, Query, RoiAll

__all__ = ["parse_query", "query_error"]


@functools.cache
def _parser() -> Lark:
    """The compiled grammar, once per process. Compiling it costs ~40 ms, most of a fresh process's
    first query on a small archive, so the compiled tables are kept in the user's cache directory,
    keyed by the grammar, Lark and Python versions; a missing, stale or unreadable file is rebuilt."""
    grammar = (importlib.resources.files("maskstore.grammar") / "query.lark").read_text("utf-8")
    key = hashlib.sha256(f"{grammar}\0{lark.__version__}\0{sys.version_info[:2]}".encode()).hexdigest()[:24]
    path = _cache_dir() / f"query-parser-{key}.pickle"
    try:
        with open(path, "rb") as fh:
            return Lark.load(fh)
    except Exception:  # noqa: BLE001 - any unusable cache file means: compile the grammar
        pass
    parser = Lark(grammar, parser="lalr", propagate_positions=True, maybe_placeholders=True)
    _save(parser, path)
    return parser


def _cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "maskstore"


def _save(parser: Lark, path: Path) -> None:
    """Write the compiled parser where other processes find it: to a private temporary file renamed
    into place, so a reader sees a whole file or none. A cache that cannot be written is skipped."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".query-parser-")
    except OSError:
        return
    try:
        with os.fdopen(fd, "wb") as fh:
            parser.save(fh)
        os.replace(temporary, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(temporary)


@functools.lru_cache(maxsize=512)
def parse_query(text: str) -> Query:
    """Parse query text into a :class:`~.nodes.Query` (syntax only; see ``check_query`` for types).

    Cached: the same text returns the same (immutable) object. An empty or blank text selects every
    frame (``where`` None).
    """
    if not isinstance(text, str):
        raise TypeError(f"a query is a str, not {type(text).__name__}")
    try:
        return _parse(text)
    except lark.exceptions.LarkError as e:  # last resort: no Lark type may reach a caller
        raise QuerySyntaxError(f"could not parse query: {e}", query=text) from None


def _parse(text: str) -> Query:
    interactive = _parser().parse_interactive(text)
    fed: list[Token] = []
    nesting = _Nesting()
    try:
        for token in interactive.iter_parse():
            fed.append(token)  # iter_parse yields a token just before feeding it
            if nesting.add(token) > MAX_DEPTH:
                raise query_error(text, token.start_pos, f"query nested more than {MAX_DEPTH} levels deep",
                                  "fewer nested parentheses and nots", token=token.value)
        tree = interactive.feed_eof(fed[-1] if fed else None)
    except UnexpectedToken as e:
        if fed and e.token is fed[-1]:
            fed.pop()  # the parser refused it (else the contextual lexer refused a token not yet yielded)
        raise _token_error(text, e, fed) from None
    except UnexpectedCharacters as e:
        raise _character_error(text, e, fed) from None
    try:
        where, order, limit = _ToAst().transform(tree).children
    except VisitError as e:
        if not isinstance(e.orig_exc, _Problem):
            raise
        raise query_error(text, e.orig_exc.at, e.orig_exc.message, e.orig_exc.expected) from None
    field, descending = order if order else (None, False)
    limit_value, limit_at = limit if limit else (None, -1)
    return Query(where, field, descending, limit_value, text=text, limit_at=limit_at)


def _locate(text: str, at: int) -> tuple[int, int]:
    """1-based (line, column) of offset ``at``, counting lines as ``str.splitlines`` does (as QueryError
    does when it prints the line); the end of input is one past the last character of the last line."""
    lines = text.splitlines(keepends=True) or [""]
    start = 0
    for number, raw in enumerate(lines, 1):
        body = raw.splitlines()[0] if raw else ""
        if at < start + len(raw) or number == len(lines):
            return number, min(max(at - start, 0), len(body)) + 1
        start += len(raw)
    raise AssertionError("unreachable: the last line always returns")


def query_error(text: str, at: int, message: str, expected: str = "", error: type[QueryError] = QuerySyntaxError,
                **data: Any) -> QueryError:
    """An ``error`` (a QuerySyntaxError unless the checker asks for its QueryTypeError) pointing at
    offset ``at`` of ``text`` (no position when ``at`` < 0); ``data`` are the subclass's attributes."""
    if at < 0:
        return error(message, query=text, expected=expected, **data)
    line, column = _locate(text, at)
    return error(message, query=text, line=line, column=column, expected=expected, **data)


MAX_DEPTH = 100
"""Deepest nesting of parentheses and ``not`` accepted; the AST passes are recursive, so a bound keeps a
hostile query to a QueryError instead of a RecursionError."""


class _Nesting:
    """Tracks the AST depth a token stream builds: one level per open '(' and per pending ``not``
    (a ``not`` stops nesting at the next and/or/')' of its own parenthesis level)."""

    def __init__(self) -> None:
        self.nots = [0]  # pending nots per parenthesis level, the outermost (no parenthesis) first

    def add(self, token: Token) -> int:
        if token.type == "LPAR":
            self.nots.append(0)
        elif token.type == "RPAR" and len(self.nots) > 1:
            self.nots.pop()
        elif token.type == "_NOT":
            self.nots[-1] += 1
        elif token.type in ("_AND", "_OR"):
            self.nots[-1] = 0
        return len(self.nots) - 1 + sum(self.nots)


class _Problem(Exception):
    """Raised inside the Transformer (bad escape, number out of range); parse_query adds the position."""

    def __init__(self, message: str, at: int, expected: str = "") -> None:
        super().__init__(message)
        self.message, self.at, self.expected = message, at, expected


@v_args(inline=True)
class _ToAst(Transformer):
    """Lark tree → nodes. Normalises ``!=`` on multi-valued fields and groups same-ROI comparisons."""

    def STRING(self, token: Token) -> _Lit:
        return _Lit(_unquote(token), token.start_pos)

    def NUMBER(self, token: Token) -> _Lit:
        return _Lit(_number(token), token.start_pos)

    def TRUE(self, token: Token) -> _Lit:
        return _Lit(True, token.start_pos)

    def FALSE(self, token: Token) -> _Lit:
        return _Lit(False, token.start_pos)

    def NULL(self, token: Token) -> _Lit:
        return _Lit(None, token.start_pos)

    @v_args(inline=False, meta=True)
    def list(self, meta: lark.tree.Meta, items: list) -> _Lit:
        items = [i for i in items if i is not None]  # `[]` yields one placeholder
        return _Lit(tuple(i.value for i in items), meta.start_pos, tuple(i.at for i in items))

    def field(self, first: Token, *rest: Token | _Lit) -> Field:
        parts = [p.value for p in rest]
        if first.value == "meta" and parts:
            return Field("meta", tuple(parts), at=first.start_pos)
        return Field(".".join([first.value, *parts]), at=first.start_pos)

    def compare(self, field: Field, op: Token, value: _Lit) -> Compare | Not:
        spec = field.spec
        if op.value == "!=" and spec is not None and spec.multi:
            return Not(Compare(field, "==", value.value, field.at, value.at))
        return Compare(field, op.value, value.value, field.at, value.at)

    def in_(self, field: Field, values: _Lit) -> In:
        return In(field, values.value, field.at, values.item_ats)

    def not_in(self, field: Field, values: _Lit) -> Not:
        return Not(self.in_(field, values))

    def has(self, field: Field) -> Has:
        return Has(field, field.at)

    @v_args(inline=True, meta=True)
    def coverage(self, meta: lark.tree.Meta, label: _Lit, op: Token, value: _Lit) -> Coverage:
        return Coverage(label.value, op.value, value.value, meta.start_pos, value.at)

    def not_(self, item: object) -> Not:
        return Not(item)  # type: ignore[arg-type]

    def or_(self, *items: object) -> Or:
        return Or(tuple(_flat(items, Or)))

    def and_(self, *items: object) -> object:
        return _conjoin(items)

    def order(self, field: Field, direction: Token | None) -> tuple[Field, bool]:
        return field, direction is not None and direction.type == "DESC"

    def limit(self, number: _Lit) -> tuple[object, int]:
        return number.value, number.at


class _Lit:
    """A literal on its way into a node, with its offset (and its items' offsets for a list)."""

    __slots__ = ("value", "at", "item_ats")

    def __init__(self, value: object, at: int, item_ats: tuple[int, ...] = ()) -> None:
        self.value, self.at, self.item_ats = value, at, item_ats


def _flat(items: tuple | list, kind: type) -> list:
    out: list = []
    for item in items:
        out.extend(item.items if isinstance(item, kind) else (item,))
    return out


def _is_roi(node: object) -> bool:
    return isinstance(node, (Compare, In)) and not node.field.path and node.field.name.startswith("roi.")


def _conjoin(items: tuple | list) -> object:
    """``and`` of items: flattened, with all ``roi.*`` comparisons gathered into one :class:`RoiAll`
    (at the place of the first) when there are two or more; a single item is returned as is."""
    flat = _flat(_flat(items, And), RoiAll)
    rois = [i for i in flat if _is_roi(i)]
    if len(rois) >= 2:
        first = next(k for k, i in enumerate(flat) if _is_roi(i))
        rest = [i for i in flat if not _is_roi(i)]
        flat = rest[:first] + [RoiAll(tuple(rois))] + rest[first:]
    return flat[0] if len(flat) == 1 else And(tuple(flat))


_SIMPLE_ESCAPES = {'"': '"', "'": "'", "\\": "\\", "/": "/", "n": "\n", "t": "\t", "r": "\r"}
_HEX = frozenset("0123456789abcdefABCDEF")


def _hex4(body: str, at: int) -> int | None:
    digits = body[at:at + 4]
    return int(digits, 16) if len(digits) == 4 and set(digits) <= _HEX else None


def _unquote(token: Token) -> str:
    """Decode a string literal's escapes (\\" \\' \\\\ \\/ \\n \\t \\r \\uXXXX, surrogate pairs joined)."""
    body, base = token.value[1:-1], token.start_pos + 1
    out, i = [], 0
    while i < len(body):
        ch = body[i]
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        esc = body[i + 1]  # the grammar guarantees a character after a backslash
        if esc in _SIMPLE_ESCAPES:
            out.append(_SIMPLE_ESCAPES[esc])
            i += 2
            continue
        if esc != "u":
            raise _Problem(f"unknown escape '\\{esc}' in string", base + i,
                           "one of \\\" \\' \\\\ \\n \\t \\r \\uXXXX (write \\\\ for a backslash)")
        code = _hex4(body, i + 2)
        if code is None:
            raise _Problem("\\u needs four hex digits", base + i, "an escape such as \\u00e9")
        if 0xDC00 <= code < 0xE000:
            raise _Problem("unpaired surrogate in \\u escape", base + i, "a complete character")
        i += 6
        if 0xD800 <= code < 0xDC00:
            low = _hex4(body, i + 2) if body[i:i + 2] == "\\u" else None
            if low is None or not 0xDC00 <= low < 0xE000:
                raise _Problem("unpaired surrogate in \\u escape", base + i - 6, "a complete character")
            code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
            i += 6
        out.append(chr(code))
    return "".join(out)


def _number(token: Token) -> int | float:
    text = token.value
    try:
        if any(c in text for c in ".eE"):
            value = float(text)
            if math.isfinite(value):
                return value
        else:
            return int(text)
    except ValueError:  # more digits than int() accepts
        pass
    raise _Problem(f"number {text[:20]}{'...' if len(text) > 20 else ''} is out of range", token.start_pos,
                   "a number of at most 4300 digits and below 1.8e308")


# --- syntax errors in words -------------------------------------------------------------------

_VALUE_TERMINALS = frozenset({"STRING", "NUMBER", "TRUE", "FALSE", "NULL", "LSQB"})
_FIELD_WORDS = "a field name such as label, context_id or meta.<key>"
_VALUE_WORDS = 'a value, e.g. "car" or 3'
_OP_WORDS = "an operator (==, !=, <, <=, >, >=, ~, in, not in)"
# Terminal → (rank, phrase): the rank orders phrases from the likeliest intent to the least.
_PHRASES = {
    "NAME": (0, _FIELD_WORDS),
    "OP": (1, _OP_WORDS),
    "_IN": (1, "in"),
    "_NOT": (2, "not"),
    "_HAS": (3, "has(...)"),
    "_COVERAGE": (4, 'coverage("...")'),
    "LPAR": (5, "'('"),
    "STRING": (6, _VALUE_WORDS),
    "NUMBER": (6, _VALUE_WORDS),
    "TRUE": (6, _VALUE_WORDS),
    "FALSE": (6, _VALUE_WORDS),
    "NULL": (6, _VALUE_WORDS),
    "LSQB": (6, _VALUE_WORDS),
    "DOT": (7, "'.'"),
    "COMMA": (8, "','"),
    "RSQB": (9, "']'"),
    "_AND": (10, "and"),
    "_OR": (11, "or"),
    "RPAR": (12, "')'"),
    "_BY": (13, "'by'"),
    "ASC": (14, "asc or desc"),
    "DESC": (14, "asc or desc"),
    "_ORDER": (15, "order by"),
    "_LIMIT": (16, "limit"),
    "$END": (17, "the end of the query"),
}
# Terminal -> how it is written, for QuerySyntaxError.expected_tokens.
_SPELLINGS = {"NAME": ("<name>",), "STRING": ("<string>",), "NUMBER": ("<number>",), "$END": ("<end>",),
              "OP": ("==", "!=", "<", "<=", ">", ">=", "~"), "LPAR": ("(",), "RPAR": (")",), "LSQB": ("[",),
              "RSQB": ("]",), "COMMA": (",",), "DOT": (".",), "_OR": ("or",), "_AND": ("and",), "_NOT": ("not",),
              "_IN": ("in",), "_HAS": ("has",), "_COVERAGE": ("coverage",), "_ORDER": ("order",), "_BY": ("by",),
              "_LIMIT": ("limit",), "ASC": ("asc",), "DESC": ("desc",), "TRUE": ("true",), "FALSE": ("false",),
              "NULL": ("null",)}
_TOKEN_NAMES = {"$END": "end of query", "LPAR": "'('", "RPAR": "')'", "LSQB": "'['", "RSQB": "']'",
                "COMMA": "','", "DOT": "'.'"}


def _accepted(text: str, fed: list[Token]) -> set[str]:
    """The terminals that can really follow ``fed``. Lark's own expected sets come from LALR states
    shared by several contexts (a field in a comparison, in has(), in order by) and would list too much."""
    interactive = _parser().parse_interactive(text)
    for token in fed:
        interactive.feed_token(token)
    return interactive.accepts()


def _spellings(accepted: set[str]) -> list[str]:
    """The ``expected_tokens`` of a QuerySyntaxError: what the terminals ``accepted`` look like."""
    return sorted({spelling for name in accepted for spelling in _SPELLINGS.get(name, ())})


def _expected(accepted: set[str], fed: list[Token]) -> str:
    """Words for what the parser would have accepted (``accepted``) after the tokens ``fed``."""
    names = {n for n in accepted if n in _PHRASES}
    prev = fed[-1] if fed else None
    if names == {"LSQB"}:
        return 'a list after \'in\', e.g. ["car", "bus"]'
    if names == {"NUMBER"}:
        return "a number after 'limit', e.g. limit 100"
    if names == {"STRING"}:
        return 'a label in quotes, e.g. coverage("road")'
    if prev is not None and prev.type == "OP" and names == _VALUE_TERMINALS:
        return f"a value after '{prev.value}', e.g. \"car\" or 3"
    if prev is not None and prev.type == "DOT":
        return "a key after '.', e.g. meta.city"
    if "OP" in names:
        names -= {"_IN", "_NOT"}  # after a field, _OP_WORDS names `in` and `not in` already
    phrases = sorted({_PHRASES[n] for n in names})
    words = [p for _, p in phrases]
    if not words:
        return "a valid query"
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def _describe(token: Token) -> str:
    if token.type in _TOKEN_NAMES:
        return _TOKEN_NAMES[token.type]
    text = token.value if len(token.value) <= 30 else token.value[:27] + "..."
    if token.type == "STRING":
        return f"string {text}"
    if token.type == "NUMBER":
        return f"number {text}"
    return f"'{text}'"


def _token_error(text: str, e: UnexpectedToken, fed: list[Token]) -> QueryError:
    token = e.token
    accepted = _accepted(text, fed)
    expected = _expected(accepted, fed)
    at = len(text) if token.type == "$END" else token.start_pos
    return query_error(text, at, f"unexpected {_describe(token)}; expected {expected}", expected,
                       token=None if token.type == "$END" else token.value, expected_tokens=_spellings(accepted))


_CHAR_HINTS = {
    "=": "to compare, write ==",
    "!": "write != or not",
    "&": "write and",
    "|": "write or",
}


def _character_error(text: str, e: UnexpectedCharacters, fed: list[Token]) -> QueryError:
    at = e.pos_in_stream
    char = text[at]
    if char in "\"'":
        return query_error(text, at, "unterminated string", f"a closing {char} on the same line",
                           token=text[at:].splitlines()[0], expected_tokens=[char])
    accepted = _accepted(text, fed)
    expected = _expected(accepted, fed)
    following = text[at + 1:at + 2]
    if char == "=" and following != "=":
        message = f"unexpected '='; {_CHAR_HINTS['=']}"
    elif char in _CHAR_HINTS and not (char == "!" and following == "="):
        message = f"unexpected {char!r}; {_CHAR_HINTS[char]}"
    else:
        message = f"unexpected character {char!r}; expected {expected}"
    return query_error(text, at, message, expected, token=char, expected_tokens=_spellings(accepted))
