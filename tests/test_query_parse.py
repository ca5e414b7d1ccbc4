"""The query front end: grammar → AST (parse), types (check), printer (to_text), errors in words."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from maskstore.errors import MaskstoreError, QueryError, QuerySyntaxError, QueryTypeError
from maskstore.query.check import check_query, compile_glob
from maskstore.query.nodes import (FIELDS, And, Compare, Coverage, Field, Has, In, Not, Or, Query, RoiAll,
                                   to_text, value_text)
from maskstore.query.parse import parse_query

CASES = json.loads((Path(__file__).parent / "query_cases" / "parse_errors.json").read_text("utf-8"))["cases"]


def F(name: str, *path: str) -> Field:
    return Field(name, tuple(path))


def C(name: str, op: str, value: object) -> Compare:
    field = F("meta", *name.split(".")[1:]) if name.startswith("meta.") else F(name)
    return Compare(field, op, value)


def where(text: str) -> object:
    return parse_query(text).where


def assert_located(error: QueryError, text: str) -> None:
    """The error points inside the text (or one past a line's end) and formats without failing."""
    lines = text.splitlines() or [""]
    assert 1 <= error.line <= len(lines), (error.line, text)
    assert 1 <= error.column <= len(lines[error.line - 1]) + 1, (error.column, text)
    assert "^" in str(error)


# --- spec section 2: every example parses to the expected AST --------------------------------

SPEC_EXAMPLES = [
    ('context_id == "car_1"', C("context_id", "==", "car_1")),
    ('label == "person"', C("label", "==", "person")),
    ('label in ["person", "rider"] and not label == "cat"',
     And((In(F("label"), ("person", "rider")), Not(C("label", "==", "cat"))))),
    ('meta.city == "frankfurt" and timestamp >= 1234567889',
     And((C("meta.city", "==", "frankfurt"), C("timestamp", ">=", 1234567889)))),
    ('source.id == "front" and mask.id == "00"', And((C("source.id", "==", "front"), C("mask.id", "==", "00")))),
    ('context_id ~ "drive_*"                      # glob match'.split("#")[0], C("context_id", "~", "drive_*")),
    ('coverage("road") > 0.25', Coverage("road", ">", 0.25)),
    ("has(mask) and not has(meta.weather)", And((Has(F("mask")), Not(Has(F("meta", "weather")))))),
]


@pytest.mark.parametrize("text, expected", SPEC_EXAMPLES)
def test_spec_examples_parse_and_check(text: str, expected: object) -> None:
    query = parse_query(text)
    assert query == Query(expected)
    assert check_query(query) == query


def test_spec_example_with_order_and_limit() -> None:
    query = parse_query('(label == "car" or label == "truck") order by timestamp desc limit 100')
    assert query == Query(Or((C("label", "==", "car"), C("label", "==", "truck"))), F("timestamp"), True, 100)
    assert check_query(query) == query


@pytest.mark.parametrize("text", ["", "   ", "\n\t \n"])
def test_blank_query_selects_everything(text: str) -> None:
    assert parse_query(text) == Query()
    assert check_query(text) == Query()


def test_precedence_not_over_and_over_or() -> None:
    a, b, c = C("id", "==", "a"), C("id", "==", "b"), C("id", "==", "c")
    assert where('id == "a" or id == "b" and not id == "c"') == Or((a, And((b, Not(c)))))
    assert where('not id == "a" and id == "b"') == And((Not(a), b))
    assert where('(id == "a" or id == "b") and id == "c"') == And((Or((a, b)), c))
    assert where('not (id == "a" or id == "b")') == Not(Or((a, b)))
    assert where('id == "a" and (id == "b" and id == "c")') == And((a, b, c))  # flattened
    assert where('(id == "a" or id == "b") or id == "c"') == Or((a, b, c))


def test_every_operator_and_literal() -> None:
    for op in ("==", "!=", "<", "<=", ">", ">="):
        assert where(f"meta.n {op} -3") == C("meta.n", op, -3)
    assert where("meta.x == 1.5e-3") == C("meta.x", "==", 0.0015)
    assert where("meta.x == -0.5") == C("meta.x", "==", -0.5)
    assert where("meta.x == true") == C("meta.x", "==", True)
    assert where("meta.x == FALSE") == C("meta.x", "==", False)
    assert where("meta.x == null") == C("meta.x", "==", None)
    assert where("meta.x in []") == In(F("meta", "x"), ())
    assert where("mask.value == [1, 2, 3]") == C("mask.value", "==", (1, 2, 3))
    assert where("meta.x not in [1, 'a']") == Not(In(F("meta", "x"), (1, "a")))


def test_typed_equality_true_is_not_one() -> None:
    assert where("meta.x == true") != where("meta.x == 1")
    assert where("meta.x == 1") != where("meta.x == 1.0")
    assert len({parse_query("meta.x == true"), parse_query("meta.x == 1")}) == 2
    # offsets are ignored: the same query laid out differently is equal and hashes alike
    assert parse_query('label=="a"') == parse_query('  label  ==\n "a"')
    assert hash(parse_query('label=="a"')) == hash(parse_query('  label  ==\n "a"'))


@pytest.mark.parametrize("literal, value", [
    (r'"a\"b"', 'a"b'), (r"'a\'b'", "a'b"), (r'"a\\b"', "a\\b"), (r'"a\nb\tc\rd"', "a\nb\tc\rd"),
    (r'"\u00e9"', "é"), (r'"\ud83d\ude00"', "😀"), (r"'say \"hi\"'", 'say "hi"'), (r'"a\/b"', "a/b"),
    ('"it\'s"', "it's"), ("'\"'", '"'), ('""', ""),
])
def test_string_escapes(literal: str, value: str) -> None:
    assert where(f"context_id == {literal}") == C("context_id", "==", value)


def test_keywords_are_case_insensitive_and_fields_are_not() -> None:
    assert parse_query('LABEL == "a"').where == C("LABEL", "==", "a")
    lower = parse_query('not label == "a" and label in ["b"] or has(mask) order by id asc limit 3')
    upper = parse_query('NOT label == "a" AND label IN ["b"] Or HAS(mask) ORDER BY id ASC LIMIT 3')
    assert lower == upper
    assert parse_query("order by id DESC").descending


def test_meta_paths_take_keywords_and_quoted_parts() -> None:
    assert where("meta.order.limit == 1") == C("meta.order.limit", "==", 1)
    assert where('meta."camera height" > 1.5') == Compare(F("meta", "camera height"), ">", 1.5)
    assert where("meta.a.b.c == 'x'") == Compare(F("meta", "a", "b", "c"), "==", "x")
    assert F("meta", "camera height", "in").text == 'meta."camera height".in'


def test_not_equal_on_multi_valued_fields_is_not_equal() -> None:
    for name, spec in FIELDS.items():
        literal = "1" if spec.kind in ("int", "number", "rgb") else '"x"'
        value = 1 if literal == "1" else "x"
        got = where(f"{name} != {literal}")
        assert got == (Not(C(name, "==", value)) if spec.multi else C(name, "!=", value)), name
    assert where("meta.k != 1") == C("meta.k", "!=", 1)  # single-valued: stays a comparison


def test_roi_comparisons_joined_by_and_bind_to_one_roi() -> None:
    car, conf = C("roi.label", "==", "car"), C("roi.confidence", ">", 0.8)
    ts = C("timestamp", ">", 3)
    assert where('roi.label == "car" and roi.confidence > 0.8') == RoiAll((car, conf))
    assert where('timestamp > 3 and roi.label == "car" and (roi.confidence > 0.8)') == And((ts, RoiAll((car, conf))))
    both_in = where('roi.label in ["car"] and timestamp > 3 and roi.confidence > 0.8')
    assert both_in == And((RoiAll((In(F("roi.label"), ("car",)), conf)), ts))
    # under or / not, each comparison is its own "some ROI"
    assert where('roi.label == "car" or roi.confidence > 0.8') == Or((car, conf))
    assert where('roi.label == "car" and not roi.confidence > 0.8') == And((car, Not(conf)))
    assert where('roi.label == "car" and roi.label != "truck"') == And((car, Not(C("roi.label", "==", "truck"))))
    assert where('roi.label == "car" and timestamp > 3') == And((car, ts))  # a lone one stays plain
    nested = where('(roi.label == "car" and roi.confidence > 0.8) or timestamp > 3')
    assert nested == Or((RoiAll((car, conf)), ts))


def test_positions_are_kept_for_the_checker() -> None:
    node = where('timestamp > 3 and\n  label in ["a", "b"]')
    ts, label = node.items
    assert (ts.at, ts.value_at) == (0, 12)
    assert (label.at, label.values_at) == (20, (30, 35))
    assert parse_query("limit 5").limit_at == 6


def test_nesting_is_bounded() -> None:
    from maskstore.query.parse import MAX_DEPTH

    deep = ["not " * MAX_DEPTH + 'id == "a"', "(" * MAX_DEPTH + 'id == "a"' + ")" * MAX_DEPTH]
    for text in deep:
        assert to_text(check_query(text))
    for text in ["not " + deep[0], "(" + deep[1] + ")", "(not " * 60 + 'id == "a"' + ")" * 60]:
        with pytest.raises(QueryError, match="nested more than"):
            parse_query(text)
    long_and = " and ".join(['not id == "a"'] * 2000)  # long but flat: fine
    assert len(parse_query(long_and).where.items) == 2000


def test_parse_is_cached_and_rejects_non_strings() -> None:
    assert parse_query('label == "a"') is parse_query('label == "a"')
    with pytest.raises(TypeError):
        parse_query(b'label == "a"')  # type: ignore[arg-type]


# --- check: types, normalisation ------------------------------------------------------------

def test_check_normalises_for_the_planner() -> None:
    assert check_query("mask.value == 3").where == C("mask.value", "==", (3, 3, 3))
    assert check_query("mask.value != [1, 2, 3]").where == Not(C("mask.value", "==", (1, 2, 3)))
    assert check_query("mask.value in [0, [1, 2, 3]]").where == In(F("mask.value"), ((0, 0, 0), (1, 2, 3)))
    assert check_query("meta.w == null").where == Not(Has(F("meta", "w")))
    assert check_query("meta.w != null").where == Has(F("meta", "w"))
    hand_built = Query(Compare(F("label"), "!=", "car"))
    assert check_query(hand_built).where == Not(C("label", "==", "car"))


def test_check_with_meta_types() -> None:
    types = {"city": "str", "n": "int", "speed": "float", "ok": "bool", "tags": "list", "cam": "dict"}
    for text in ['meta.city == "a"', 'meta.city ~ "fr*"', 'meta.city < "m"', "meta.n > 2.5", "meta.speed in [1, 2.5]",
                 "meta.ok == false", "has(meta.tags)", "has(meta.nothing)", "order by meta.n desc"]:
        check_query(text, types)
    for text in ["meta.city > 3", "meta.n == 'a'", "meta.ok > true", "meta.ok == 1", "meta.tags == 'a'",
                 "meta.cam.x == 1", "meta.nope == 1", "order by meta.cam"]:
        with pytest.raises(QueryError):
            check_query(text, types)
    check_query("meta.nope == 1")  # without types, any key may exist


def test_check_accepts_allowed_operators() -> None:
    for text in ['id < "m"', 'context_id >= "drive_10"', 'label ~ "ca?"', 'source.uri ~ "*.png"',
                 "roi.confidence <= 1", "timestamp in [1, 2]", 'coverage("road") == 0', 'coverage("road") != 1',
                 "limit 0", 'source.content_type in ["image/png"]']:
        check_query(text)


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_golden_errors(case: dict) -> None:
    with pytest.raises(QueryError) as info:
        check_query(case["query"], case.get("meta_types"))
    error = info.value
    assert error.column == case["error"]["column"], str(error)
    assert error.line == case["error"].get("line", 1), str(error)
    assert case["error"]["contains"] in str(error)
    assert_located(error, case["query"])
    assert_error_data(error, case["query"])


def assert_error_data(error: QueryError, text: str) -> None:
    """A query that does not parse fails with a QuerySyntaxError whose token sits at its position; one
    that parses fails the check with a QueryTypeError naming a field of the query (bad glob patterns
    are syntax errors of their string)."""
    try:
        parse_query(text)
    except QuerySyntaxError:
        parsed = False
    else:
        parsed = True
    if not parsed or "bad pattern" in error.message:
        assert isinstance(error, QuerySyntaxError) and not isinstance(error, QueryTypeError)
        assert error.expected_tokens == sorted(set(error.expected_tokens))
        if error.token is not None and not parsed:
            line = text.splitlines()[error.line - 1]
            assert line[error.column - 1:].startswith(error.token), (error.token, line, error.column)
    else:
        assert isinstance(error, QueryTypeError) and not isinstance(error, QuerySyntaxError)
        assert error.field and (error.field in text or error.field == "coverage()"), error.field


@pytest.mark.parametrize("text, line, column, token, expected_tokens", [
    ("label ==", 1, 9, None, ["<number>", "<string>", "[", "false", "null", "true"]),
    ('label == "car")', 1, 15, ")", ["<end>", "and", "limit", "or", "order"]),
    ('(label == "car"', 1, 16, None, [")", "and", "or"]),
    ('label = "car"', 1, 7, "=", ["!=", ".", "<", "<=", "==", ">", ">=", "in", "not", "~"]),
    ('label == "car" and\n  timestamp >', 2, 14, None, ["<number>", "<string>", "[", "false", "null", "true"]),
    ('label == "car', 1, 10, '"car', ['"']),
    ("label in \"car\"", 1, 10, '"car"', ["["]),
])
def test_syntax_errors_carry_position_token_and_expected_tokens(text: str, line: int, column: int,
                                                                token: str | None, expected_tokens: list) -> None:
    with pytest.raises(QuerySyntaxError) as info:
        parse_query(text)
    error = info.value
    assert (error.line, error.column, error.token, error.expected_tokens) == (line, column, token, expected_tokens)
    assert isinstance(error, QueryError) and isinstance(error, ValueError)


@pytest.mark.parametrize("text, meta_types, field, expected_type, found_type", [
    ('timestamp == "x"', None, "timestamp", "int", "str"),
    ("timestamp > 1.5", None, "timestamp", "int", "float"),
    ("mask.value == 300", None, "mask.value", "rgb", "int"),
    ('coverage("road") > "x"', None, "coverage()", "number", "str"),
    ("meta.city > 3", {"city": "str"}, "meta.city", "str", "int"),
    ("meta.tags == 'a'", {"tags": "list"}, "meta.tags", "scalar", "list"),
    ("meta.n == [1, 2]", None, "meta.n", "scalar", "list"),
    ("meta.n > null", None, "meta.n", None, "null"),
    ("limit 1.5", None, "limit", "int", "float"),
    ("lable == 'car'", None, "lable", None, None),
    ("timestamp ~ '1*'", None, "timestamp", "int", None),
])
def test_type_errors_name_the_field_and_both_types(text: str, meta_types: dict | None, field: str,
                                                   expected_type: str | None, found_type: str | None) -> None:
    with pytest.raises(QueryTypeError) as info:
        check_query(text, meta_types)
    error = info.value
    assert (error.field, error.expected_type, error.found_type) == (field, expected_type, found_type)


def test_query_error_subclasses_are_exported() -> None:
    import maskstore
    assert maskstore.QuerySyntaxError is QuerySyntaxError and maskstore.QueryTypeError is QueryTypeError
    assert {"QuerySyntaxError", "QueryTypeError"} <= set(maskstore.__all__)
    with pytest.raises(QuerySyntaxError, match="bad pattern"):
        check_query('label ~ "[z-a]"')


def test_golden_cases_cover_every_kind_of_error() -> None:
    assert len(CASES) >= 30
    phrases = " | ".join(c["error"]["contains"] for c in CASES)
    for kind in ["expected a value after", "unterminated string", "expected a field name", "unexpected ')'",
                 "unknown escape", "unknown field", "did you mean", "type mismatch", "does not apply",
                 "unclosed '['", "limit must be", "cannot order by", "coverage", "has() takes", "holds strings"]:
        assert kind in phrases, kind


def test_query_error_is_a_value_error_with_a_caret() -> None:
    with pytest.raises(ValueError) as info:
        parse_query('label == "car" and\n  timestamp >')
    error = info.value
    assert isinstance(error, QueryError) and isinstance(error, MaskstoreError)
    assert (error.line, error.column) == (2, 14)
    assert str(error).splitlines()[1:] == ["    timestamp >", "               ^"]
    assert error.expected == "a value after '>', e.g. \"car\" or 3"


# --- globs -------------------------------------------------------------------------------------

@pytest.mark.parametrize("pattern, text, matches", [
    ("drive_*", "drive_12", True), ("drive_*", "xdrive_1", False), ("a?c", "abc", True), ("a?c", "ac", False),
    ("[ab]x", "bx", True), ("[!ab]x", "bx", False), ("[a-c]", "b", True), ("[]]", "]", True),
    (r"\*", "*", True), (r"\*", "a", False), ("a.b", "axb", False), ("*", "", True), ("a*b*c", "aXbYc", True),
])
def test_compile_glob(pattern: str, text: str, matches: bool) -> None:
    assert bool(compile_glob(pattern).fullmatch(text)) is matches


# --- printer -----------------------------------------------------------------------------------

def test_to_text_parenthesises_by_precedence() -> None:
    a, b, c = C("id", "==", "a"), C("id", "==", "b"), C("id", "==", "c")
    assert to_text(And((Or((a, b)), c))) == '(id == "a" or id == "b") and id == "c"'
    assert to_text(Or((And((a, b)), c))) == 'id == "a" and id == "b" or id == "c"'
    assert to_text(Not(And((a, b)))) == 'not (id == "a" and id == "b")'
    assert to_text(Not(Not(a))) == 'not not id == "a"'
    assert to_text(Query(None, F("meta", "a b"), True, 5)) == 'order by meta."a b" desc limit 5'
    assert value_text("line\nbreak\u2028\x00") == r'"line\nbreak\u2028\u0000"'


# --- properties --------------------------------------------------------------------------------

def assert_parse_or_query_error(text: str) -> None:
    try:
        query = parse_query(text)
    except QueryError as e:
        assert_located(e, text)
        return
    assert parse_query(to_text(query)) == query
    try:
        check_query(query)
    except QueryError as e:
        assert_located(e, text)


@given(st.text(max_size=80))
@example('label == "\\')
@example("label\x0b== 1")
@example("label ==\r\n")
@example("'")
def test_random_text_only_raises_query_error(text: str) -> None:
    assert_parse_or_query_error(text)


TOKENS = ["label", "meta.city", "timestamp", "roi.label", "mask.value", "==", "!=", "<", ">=", "~", "in",
          "not", "and", "or", "(", ")", "[", "]", ",", ".", '"car"', "'x", '"a\\', "3", "-1.5e3", "true", "null",
          "has", "coverage", "order", "by", "desc", "limit", "=", "&", "\n", "#", "é"]


@given(st.lists(st.sampled_from(TOKENS), max_size=14), st.sampled_from([" ", "", "\n"]))
def test_token_soup_only_raises_query_error(tokens: list[str], sep: str) -> None:
    assert_parse_or_query_error(sep.join(tokens))


def cased(word: str) -> st.SearchStrategy[str]:
    return st.sampled_from([word, word.upper(), word.capitalize()])


@st.composite
def string_pairs(draw: st.DrawFn) -> tuple[str, str]:
    """(literal, text): ``text`` quoted in either style, with escapes and \\u escapes drawn at random."""
    text = draw(st.text(max_size=8))
    quote = draw(st.sampled_from(['"', "'"]))
    out = []
    for ch in text:
        if ch in (quote, "\\"):
            out.append("\\" + ch)
        elif ch in "\n\r\t":
            out.append({"\n": "\\n", "\r": "\\r", "\t": "\\t"}[ch])
        elif draw(st.booleans()):
            code = ord(ch)
            if code > 0xFFFF:
                high, low = 0xD800 + ((code - 0x10000) >> 10), 0xDC00 + ((code - 0x10000) & 0x3FF)
                out.append(f"\\u{high:04x}\\u{low:04X}")
            else:
                out.append(f"\\u{code:04x}")
        else:
            out.append(ch)
    return quote + "".join(out) + quote, text


def string_literals() -> st.SearchStrategy[str]:
    return string_pairs().map(lambda pair: pair[0])


numbers = st.one_of(st.integers(-(2**70), 2**70).map(str),
                    st.floats(allow_nan=False, allow_infinity=False).map(repr))
scalars = st.one_of(string_literals(), numbers, cased("true"), cased("false"), cased("null"))
lists = st.lists(st.one_of(scalars, st.lists(numbers, max_size=3).map(lambda v: "[" + ", ".join(v) + "]")),
                 max_size=4).map(lambda v: "[" + ",".join(v) + "]")
fields = st.one_of(
    st.sampled_from([*FIELDS, "meta.city", "meta.a.b", 'meta."x y"', "meta.order", "mask", "roi", "lable"]),
    st.from_regex(r"meta\.[a-z_][a-z0-9_]{0,6}", fullmatch=True),
)
ops = st.sampled_from(["==", "!=", "<", "<=", ">", ">=", "~"])
ws = st.sampled_from([" ", "  ", "\n", "\t "])
atoms = st.one_of(
    st.tuples(fields, ws, ops, ws, st.one_of(scalars, lists)).map("".join),
    st.tuples(fields, ws, cased("in"), ws, lists).map("".join),
    st.tuples(fields, ws, cased("not"), ws, cased("in"), ws, lists).map("".join),
    st.tuples(cased("has"), fields).map(lambda t: f"{t[0]}({t[1]})"),
    st.tuples(cased("coverage"), string_literals(), ops, numbers).map(lambda t: f"{t[0]}({t[1]}) {t[2]} {t[3]}"),
)
exprs = st.recursive(atoms, lambda inner: st.one_of(
    st.tuples(inner, ws, cased("and"), ws, inner).map("".join),
    st.tuples(inner, ws, cased("or"), ws, inner).map("".join),
    st.tuples(cased("not"), ws, inner).map("".join),
    inner.map(lambda e: f"({e})"),
), max_leaves=8)
queries = st.tuples(
    st.one_of(st.just(""), exprs),
    st.one_of(st.just(""), st.tuples(cased("order"), cased("by"), fields, st.sampled_from(["", "asc", "DESC"]))
              .map(lambda t: " ".join(t))),
    st.one_of(st.just(""), st.tuples(cased("limit"), numbers).map(lambda t: " ".join(t))),
).map(lambda t: " ".join(t))


@given(queries)
def test_grammar_shaped_queries_parse_check_and_round_trip(text: str) -> None:
    query = parse_query(text)  # must not raise: the text follows the grammar
    assert parse_query(to_text(query)) == query
    try:
        checked = check_query(query)
    except QueryError as e:
        assert_located(e, text)
        return
    assert check_query(to_text(checked)) == checked


@given(string_pairs())
def test_string_literals_decode_and_print_back(pair: tuple[str, str]) -> None:
    literal, text = pair
    assert where(f"context_id == {literal}").value == text
    assert where(f"context_id == {value_text(text)}").value == text
