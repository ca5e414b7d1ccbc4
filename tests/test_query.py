"""The query language end to end (spec section 2), through ``DatasetVersion.ids/count/query/explain``.

- Golden cases: ``tests/query_cases/*.json`` (language-neutral: ``given`` mask_labels and frames,
  ``cases`` with expected ids, ordered ids or an error); each file runs against a fresh archive.
- The planner (index lookups, column scans, set algebra, residual filters) against a brute-force
  evaluation of the same checked query over every frame dict, on hypothesis-drawn versions.
- What JSON cannot say: mask_labels changes, writes across column chunks, read-only archives,
  snapshots while streaming, the CLI.
"""

from __future__ import annotations

import json
import math
import random
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, event, example, given, note, settings
from hypothesis import strategies as st

from maskstore import Archive
from maskstore.check import check_archive
from maskstore.cli import main
from maskstore.errors import QueryError, QuerySyntaxError, QueryTypeError
from maskstore.model import Frame
from maskstore.query import columns, engine, plan
from maskstore.query.check import check_query
from maskstore.query.columns import CHUNK
from maskstore.query.evaluate import Labels, compile_expr, meta_get
from maskstore.query.nodes import FIELDS, And, Compare, Has, In, Not, Or, Query, RoiAll
from maskstore.query.parse import parse_query

CASES_DIR = Path(__file__).parent / "query_cases"
GOLDEN = sorted(p.name for p in CASES_DIR.glob("*.json") if p.name != "parse_errors.json")  # that one: test_query_parse


def load_cases(name: str) -> dict[str, Any]:
    return json.loads((CASES_DIR / name).read_text("utf-8"))


def make_version(archive: Archive, mask_labels: list[dict[str, Any]], frames: list[dict[str, Any]],
                 name: str | None = None):
    version = archive.create_version(dataset_name="test", version_name=name or uuid.uuid4().hex)
    version.set_masks_labels(mask_labels)
    if frames:
        version.add_frames(frames)
    return version


# --------------------------------------------------------------------------- the reference

def _sort_key(frame: dict[str, Any], query: Query) -> Any:
    field = query.order_by
    if field.path:
        found, value = meta_get(frame["meta"], field.path)
        return value if found else None
    return frame[field.name]


def brute_ids(version: Any, text: str, frames: list[dict[str, Any]] | None = None) -> list[str]:
    """The obviously-correct answer: check the query, test every frame dict (``frames``, else the
    version's) with the compiled closure, then sort (missing keys last, ties in insertion order
    either way) and cut."""
    query = check_query(parse_query(text), version.record()["meta_types"])
    frames = list(version.frame_dicts()) if frames is None else frames
    if query.where is not None:
        test = compile_expr(query.where, Labels(version.mask_labels))
        frames = [f for f in frames if test(f)]
    if query.order_by is not None:
        present = [f for f in frames if _sort_key(f, query) is not None]
        missing = [f for f in frames if _sort_key(f, query) is None]
        frames = sorted(present, key=lambda f: _sort_key(f, query), reverse=query.descending) + missing
    if query.limit is not None:
        frames = frames[: query.limit]
    return [f["id"] for f in frames]


def assert_same_answer(version: Any, text: str, frames: list[dict[str, Any]] | None = None) -> list[str] | None:
    """``version.ids`` equals the reference, in order (insertion order when there is no order by);
    a query the checker refuses is refused by every entry point with the same message (returns None)."""
    try:
        expected = brute_ids(version, text, frames)
    except QueryError as e:
        for run in (version.ids, version.count, version.explain):
            with pytest.raises(QueryError) as info:
                run(text)
            assert info.value.message == e.message
        return None
    got = version.ids(text)
    assert got == expected, f"query {text!r}\nplan:\n{version.explain(text)}"
    assert version.count(text) == len(expected)
    return got


# --------------------------------------------------------------------------- golden cases

@pytest.fixture(scope="module")
def golden_version(tmp_path_factory) -> Iterator[Any]:
    """A function from a case file name to its version, each in a fresh archive built on first use."""
    archives: list[Archive] = []
    versions: dict[str, Any] = {}

    def get(name: str) -> Any:
        if name not in versions:
            given_ = load_cases(name)["given"]
            archive = Archive(tmp_path_factory.mktemp("golden") / "golden.maskstore", jobs=1)
            archives.append(archive)
            versions[name] = make_version(archive, given_["mask_labels"], given_["frames"], Path(name).stem)
        return versions[name]
    yield get
    for archive in archives:
        archive.close()


def _golden_params() -> Iterator[Any]:
    for name in GOLDEN:
        for i, case in enumerate(load_cases(name)["cases"]):
            # "known_bug": the case states the right answer for a bug not fixed yet; strict, so the
            # fix makes it fail until the key is removed.
            marks = [pytest.mark.xfail(strict=True, reason=case["known_bug"])] if "known_bug" in case else []
            yield pytest.param(name, case, id=f"{Path(name).stem}-{i}:{case['query'][:60]}", marks=marks)


def _parses(text: str) -> bool:
    try:
        parse_query(text)
    except QuerySyntaxError:
        return False
    return True


@pytest.mark.parametrize("name, case", list(_golden_params()))
def test_golden(golden_version, name: str, case: dict[str, Any]) -> None:
    version, text = golden_version(name), case["query"]
    if "error" in case:
        want = case["error"]
        with pytest.raises(QueryError) as info:
            version.ids(text)
        error = info.value
        assert want["contains"] in error.message, str(error)
        assert (error.line, error.column) == (want.get("line", 1), want["column"]), str(error)
        assert "^" in str(error)
        # Text that parses is refused by the checker, naming the field; the rest (and bad glob
        # patterns) are syntax errors.
        checker = "bad pattern" not in error.message and _parses(text)
        assert isinstance(error, QueryTypeError if checker else QuerySyntaxError), type(error)
        assert not checker or error.field in text or error.field == "coverage()", error.field
        for run in (version.count, version.explain, lambda q: list(version.query_dicts(q))):
            with pytest.raises(QueryError):
                run(text)
        return
    got = version.ids(text)
    if "ordered_ids" in case:
        assert got == case["ordered_ids"]
    else:
        assert len(got) == len(set(got))
        assert sorted(got) == sorted(case["ids"])
    # Every way in gives the same frames, and the reference agrees (it is the property test's oracle).
    assert brute_ids(version, text) == got
    assert version.count(text) == len(got)
    assert [d["id"] for d in version.query_dicts(text)] == got
    assert [f.id for f in version.query(text)] == got
    assert version.explain(text).startswith("query: ")


SPEC_EXAMPLES = [  # spec section 2, verbatim
    'context_id == "car_1"',
    'label == "person"',
    'label in ["person", "rider"] and not label == "cat"',
    'meta.city == "frankfurt" and timestamp >= 1234567889',
    'source.id == "front" and mask.id == "00"',
    'context_id ~ "drive_*"',
    'coverage("road") > 0.25',
    "has(mask) and not has(meta.weather)",
    '(label == "car" or label == "truck") order by timestamp desc limit 100',
    'roi.label == "car" and roi.confidence > 0.8',
]


def _nodes(node: Any) -> Iterator[Any]:
    yield node
    for item in getattr(node, "items", ()):
        yield from _nodes(item)
    if isinstance(node, Not):
        yield from _nodes(node.item)


def test_golden_cases_cover_the_language() -> None:
    """Every operator, field, function, order and limit form of spec section 2 has a golden case."""
    cases = [(name, c) for name in GOLDEN for c in load_cases(name)["cases"]]
    assert len(cases) >= 80
    assert {"ids", "ordered_ids", "error"} <= {k for _, c in cases for k in c}
    queries = [c["query"] for _, c in cases if "error" not in c]
    assert set(SPEC_EXAMPLES) <= {c["query"] for name, c in cases if name == "spec_examples.json" and "error" not in c}
    ops, fields, kinds, has, orders, limits, meta_depth = set(), set(), set(), set(), set(), 0, 0
    for text in queries:
        query = parse_query(text)
        for node in _nodes(query.where) if query.where is not None else ():
            kinds.add(type(node).__name__)
            if isinstance(node, Compare):
                ops.add(node.op)
            if isinstance(node, In):
                ops.add("in")
            if isinstance(node, (Compare, In)):
                fields.add("meta" if node.field.path else node.field.name)
                meta_depth = max(meta_depth, len(node.field.path))
            if isinstance(node, Has):
                has.add("meta" if node.field.path else node.field.name)
        if query.order_by is not None:
            orders.add(("meta" if query.order_by.path else query.order_by.name, query.descending))
        limits += query.limit is not None
    assert ops == {"==", "!=", "<", "<=", ">", ">=", "~", "in"}
    assert fields == set(FIELDS) | {"meta"}
    assert meta_depth >= 3
    assert kinds == {"Compare", "In", "Has", "Coverage", "Not", "And", "Or", "RoiAll"}
    assert has == {"mask", "roi", "meta"}
    assert {f for f, _ in orders} == {"id", "context_id", "timestamp", "meta"} and {d for _, d in orders} == {True, False}
    assert limits >= 5
    texts = " ".join(queries)
    assert "(" in texts and " asc" in texts and "not in" in texts
    assert "" in queries and any(q and not q.strip() for q in queries)


# --------------------------------------------------------------------------- semantics in Python

LABELLED = [
    {"id": "a", "context_id": "c", "timestamp": 1, "meta": {},
     "sources": [{"id": "0", "uri": "/a.png", "masks": [{"id": "00", "uri": "/am.png", "values": [[1, 1, 1, 25], [2, 2, 2, 75]]}]}],
     "rois": []},
    {"id": "b", "context_id": "c", "timestamp": 2, "meta": {},
     "sources": [{"id": "0", "uri": "/b.png", "masks": [{"id": "00", "uri": "/bm.png", "values": [[2, 2, 2, 10]]}]}],
     "rois": [{"label": ["dog"], "confidence": 0.5}]},
    {"id": "c", "context_id": "c", "timestamp": 3, "meta": {}, "sources": [], "rois": []},
]


def test_changing_mask_labels_changes_answers_immediately(archive: Archive) -> None:
    """Labels resolve to values at query time: no rebuild, and every handle sees the new table."""
    v = make_version(archive, [{"value": [1, 1, 1], "labels": ["person"]}], LABELLED)
    other_handle = archive.get_version("test", v.version_name)
    assert v.ids('label == "person"') == ["a"]
    assert v.ids('label == "car"') == []
    assert v.ids('coverage("person") == 0.25') == ["a"]

    v.set_masks_labels({(1, 1, 1): ["car"], (2, 2, 2): ["person", "car"]})
    for handle in (v, other_handle):
        assert handle.ids('label == "person"') == ["a", "b"]
        assert handle.ids('label == "car"') == ["a", "b"]
        assert handle.ids('coverage("person") == 0.75') == ["a"]
        assert handle.ids('coverage("car") == 1') == ["a", "b"]
        assert handle.ids('label != "car"') == ["c"]
        assert handle.ids('label ~ "d*"') == ["b"]

    v.set_masks_labels({})
    assert v.ids('label == "person"') == []
    assert v.ids('label ~ "*"') == ["b"]  # the ROI label stays
    assert v.ids('coverage("car") > 0') == []
    assert "mask values labelled ['person']: none" in v.explain('label == "person"')


def test_label_ne_is_not_label_eq_for_every_multi_valued_field(golden_version) -> None:
    v = golden_version("labels.json")
    everything = v.ids("")
    for field, values in [("label", ["person", "cat", "road", "bus"]), ("mask.label", ["road", "cat"]),
                          ("roi.label", ["truck", "cat"]), ("mask.id", ["00", "01"]), ("source.id", ["0", "x"])]:
        for value in values:
            eq, ne = v.ids(f'{field} == "{value}"'), v.ids(f'{field} != "{value}"')
            assert ne == v.ids(f'not {field} == "{value}"') == v.ids(f'not ({field} == "{value}")')
            assert ne == [i for i in everything if i not in eq]
    for value in ("0", "[9, 9, 9]", "[1, 2, 3]"):
        eq = v.ids(f"mask.value == {value}")
        assert v.ids(f"mask.value != {value}") == [i for i in everything if i not in eq]


def test_roi_binding_follows_the_ast(golden_version) -> None:
    """'and' between roi comparisons makes one RoiAll; or/not keep them apart (spec section 2)."""
    bound = parse_query('roi.label == "car" and roi.confidence > 0.8 and label == "x"').where
    assert isinstance(bound, And) and isinstance(bound.items[0], RoiAll) and len(bound.items[0].items) == 2
    assert isinstance(parse_query('roi.label == "car" or roi.confidence > 0.8').where, Or)
    apart = parse_query('roi.label == "car" and not roi.confidence > 0.8').where
    assert isinstance(apart, And) and not any(isinstance(i, RoiAll) for i in apart.items)
    v = golden_version("roi.json")
    assert "filter records" in v.explain('roi.label == "car" and roi.confidence > 0.8')


def test_empty_and_blank_queries_select_every_frame(archive: Archive) -> None:
    v = make_version(archive, [], LABELLED)
    for text in ("", " ", "\n", "\t \r\n "):
        assert v.ids(text) == ["a", "b", "c"]
        assert v.count(text) == 3
    assert v.ids() == ["a", "b", "c"] and v.count() == 3 and len(list(v.query())) == 3
    assert "(all frames)" in v.explain("")


def test_empty_version(archive: Archive) -> None:
    v = make_version(archive, [], [])
    assert v.ids("") == [] and v.count('label == "x"') == 0 and list(v.query("order by timestamp")) == []
    with pytest.raises(QueryError, match="no frame of this version has that key"):
        v.ids('meta.city == "x"')
    assert v.ids("has(meta.city)") == []


def test_query_streams_frames_from_one_snapshot(archive: Archive) -> None:
    v = make_version(archive, [], [dict(LABELLED[2], id=f"f{i}", timestamp=i) for i in range(5)])
    stream = v.query("order by timestamp desc")
    assert not isinstance(stream, list)
    first = next(stream)
    assert isinstance(first, Frame) and first.id == "f4"
    v.add_frames([dict(LABELLED[2], id="late", timestamp=99)])
    v.delete_frames(["f1"])
    assert [f.id for f in stream] == ["f3", "f2", "f1", "f0"]  # the snapshot taken when it started
    assert v.ids("order by timestamp desc") == ["late", "f4", "f3", "f2", "f0"]
    assert next(v.query_dicts('id == "late"')) == v.get_frame_dict("late")


def _many_frames(n: int, tag: str = "") -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        meta: dict[str, Any] = {"k": i % 7, "city": ["bonn", "koln", "ulm"][i % 3]}
        if i % 5 == 0:
            meta["rare"] = True
        out.append({"id": f"f{i:05d}", "context_id": f"ctx{i % 11}", "timestamp": (i * 7919) % 1000,
                    "meta": meta,
                    "sources": [{"id": "0", "uri": f"/img/{i}.png",
                                 "masks": [{"id": "00", "uri": f"/m/{i}.png",
                                            "values": [[i % 4, i % 4, i % 4, 10 + i % 3], [9, 9, 9, 5]]}]}],
                    "rois": [{"label": ["dog" + tag], "confidence": (i % 10) / 10}] if i % 13 == 0 else []})
    return out


MANY_QUERIES = [
    "", 'label == "one"', 'label == "dog"', 'meta.city == "koln" and meta.k >= 3', "meta.k != 2",
    'context_id in ["ctx3", "ctx10"] and timestamp < 500', "has(meta.rare) and not label == \"two\"",
    'coverage("one") > 0.5', 'roi.label == "dog" and roi.confidence >= 0.5', "mask.value == 3 or meta.k == 0",
    'id ~ "f04*" order by timestamp desc limit 30', "order by meta.k desc", "timestamp >= 990 order by id",
    'meta.k in [1, 2] and id > "f08000" order by meta.city',
]


def test_columns_follow_writes_across_chunks(archive: Archive) -> None:
    """Replace, merge-update, delete and append frames spread over three column chunks (4096 frames
    each); every answer matches the reference after each write."""
    frames = _many_frames(9000)
    v = make_version(archive, [{"value": [1, 1, 1], "labels": ["one"]}, {"value": [2, 2, 2], "labels": ["two"]}],
                     frames)
    for text in MANY_QUERIES:
        assert_same_answer(v, text, frames)
    changed = [dict(f, meta={"k": 100, "city": "bonn"}, timestamp=-1) for f in frames[4090:4100]]
    v.add_frames(changed)  # replaces: same ids, same seqs
    v.update_frames([{"id": "f08999", "meta": {"k": 55}}], merge=True)
    v.delete_frames([f["id"] for f in frames[100:200]] + ["f04095", "f08192"])
    v.add_frames(_many_frames(3, tag="x") + [dict(frames[150], id="new")])
    assert len(v) == 9000 - 102 + 1
    now = list(v.frame_dicts())
    for text in MANY_QUERIES + ["meta.k == 100", "timestamp == -1 order by id desc", 'label == "dogx"',
                                "meta.k == 55"]:
        assert_same_answer(v, text, now)
    assert v.ids("meta.k == 55") == ["f08999"]


def test_chunks_an_older_writer_left_dirty_still_answer(tmp_path: Path) -> None:
    """Writers before columns were kept on write stored stale columns and a dirty mark: queries (also
    read-only) rebuild such a chunk from the records, and the next write into it stores it rebuilt."""
    path = tmp_path / "a.maskstore"
    frames = _many_frames(40)
    with Archive(path, jobs=1) as ar:
        v = make_version(ar, [{"value": [1, 1, 1], "labels": ["one"]}], frames[:20], "v")
        key = v.prefix + (0).to_bytes(8, "big")
        stale = ar.read(lambda t: columns.chunk_fields(t, v, 0))
        v.add_frames(frames[20:])

        def as_an_older_writer(txn: Any) -> None:
            for name, value in stale.items():
                txn.put(key + name, value, db=ar.db("columns"))
            txn.put(key, b"", db=ar.db("dirty"))
        ar.write(as_an_older_writer)
    with Archive(path, readonly=True) as ar:
        for text in MANY_QUERIES:
            assert_same_answer(ar.get_version("test", "v"), text, frames)
    with Archive(path, jobs=1) as ar:
        v = ar.get_version("test", "v")
        v.delete_frames(["f00003"])
        assert ar.read(lambda t: t.get(key, db=ar.db("dirty"))) is None
        assert check_archive(ar) == []
        for text in MANY_QUERIES:
            assert_same_answer(v, text, frames[:3] + frames[4:])


def test_child_versions_and_readonly_archives(tmp_path: Path) -> None:
    """A child starts with its parent's frames (and columns); a read-only archive answers from
    columns no writer has rebuilt yet; neither version sees the other's later frames."""
    path = tmp_path / "a.maskstore"
    with Archive(path, jobs=1) as ar:
        parent = make_version(ar, [{"value": [1, 1, 1], "labels": ["one"]}], _many_frames(50), "parent")
        assert parent.count('label == "one"') == 13  # columns built and stored
        child = ar.create_version(dataset_name="test", version_name="child", parent=parent)
        child.add_frames(_many_frames(60)[50:])
        child.delete_frames(["f00001"])
        parent.add_frames([dict(_many_frames(1)[0], id="parent-only")])
        # No query after these writes: the readers below use the columns the writers stored.
    with Archive(path, readonly=True) as ar:
        parent, child = ar.get_version("test", "parent"), ar.get_version("test", "child")
        assert parent.count("") == 51 and child.count("") == 59
        assert "parent-only" in parent.ids('id ~ "p*"') and child.ids('id ~ "p*"') == []
        assert child.ids('label == "one" and id >= "f00050"') == ["f00053", "f00057"]
        for version in (parent, child):
            for text in MANY_QUERIES:
                assert_same_answer(version, text)


# --------------------------------------------------------------------------- regressions: bugs these tests found

def test_meta_ints_beyond_int64(archive: Archive) -> None:
    v = make_version(archive, [], [{"id": "big", "meta": {"n": 2**64 - 1}, "sources": [], "rois": []},
                                   {"id": "small", "meta": {"n": -1}, "sources": [], "rois": []}])
    assert v.ids("") == ["big", "small"]
    assert v.ids("meta.n == 18446744073709551615") == ["big"]
    assert v.ids("meta.n > 0") == ["big"]
    assert v.ids("order by meta.n") == ["small", "big"]


def test_meta_ints_beyond_float_precision(archive: Archive) -> None:
    v = make_version(archive, [], [{"id": "a", "meta": {"n": 2**53 + 1}, "sources": [], "rois": []},
                                   {"id": "b", "meta": {"n": 0.5}, "sources": [], "rois": []},
                                   {"id": "c", "meta": {"n": 2**53}, "sources": [], "rois": []}])
    assert v.ids(f"meta.n == {2**53}") == ["c"]
    assert v.ids(f"meta.n == {2**53 + 1}") == ["a"]
    assert v.ids(f"meta.n > {2**53}") == ["a"]


def test_order_by_meta_ints_beyond_float_precision(archive: Archive) -> None:
    v = make_version(archive, [], [{"id": "a", "meta": {"n": 2**53 + 1}, "sources": [], "rois": []},
                                   {"id": "b", "meta": {"n": 0.5}, "sources": [], "rois": []},
                                   {"id": "c", "meta": {"n": 2**53}, "sources": [], "rois": []}])
    assert v.ids("order by meta.n") == ["b", "c", "a"]
    assert v.ids("order by meta.n desc") == ["a", "c", "b"]


def test_glob_matches_long_roi_labels(archive: Archive) -> None:
    long = "x" * 401
    v = make_version(archive, [], [{"id": "a", "sources": [], "rois": [{"label": [long]}]}])
    assert v.ids(f'roi.label == "{long}"') == ["a"]  # equality hashes the literal the same way
    assert v.ids('roi.label ~ "x*"') == ["a"]
    assert v.ids('label ~ "x*"') == ["a"]


def test_coverage_without_mask_values(archive: Archive) -> None:
    v = make_version(archive, [{"value": [7, 7, 7], "labels": ["road"]}],
                     [{"id": "a", "sources": [{"uri": "/a.png"}], "rois": []}])
    assert v.ids('coverage("road") == 0') == ["a"]
    assert v.ids('coverage("road") > 0.25') == []


# --------------------------------------------------------------------------- property: planner == reference

LABELS = ["person", "car", "road", "cat", "sky"]
VALUES = [(0, 0, 0), (1, 1, 1), (2, 2, 2), (3, 3, 3), (1, 2, 3)]
CONTEXTS = ["drive_1", "drive_2", "car_1", "x"]
CITIES = ["bonn", "koln", "Berlin", ""]
SOURCE_IDS = ["front", "rear", "0"]
MASK_IDS = ["00", "01", "a"]
URIS = ["/d/a.png", "/d/b.jpg", "s3/c.webp"]
CONFIDENCES = [0.0, 0.25, 0.5, 0.8, 0.9, 1, 1.0]
LONG = "L" * 401  # longer than an index key holds: stored hashed in ix_roi
BIG = ["9007199254740992", "9007199254740993", "18446744073709551615"]  # 2**53, 2**53 + 1, 2**64 - 1

mask_st = st.builds(
    lambda values: {"uri": "/m.png", "values": [[*v, c] for v, c in values]},
    st.lists(st.tuples(st.sampled_from(VALUES), st.integers(0, 50)), max_size=3, unique_by=lambda t: t[0]))
source_st = st.builds(lambda uri, masks: {"uri": uri, "masks": [dict(m, id=MASK_IDS[i]) for i, m in enumerate(masks)]},
                      st.sampled_from(URIS), st.lists(mask_st, max_size=2))
roi_st = st.fixed_dictionaries({"label": st.lists(st.sampled_from(LABELS + ["truck", LONG]), max_size=2, unique=True),
                                "confidence": st.none() | st.sampled_from(CONFIDENCES)})
number_st = st.integers(-5, 100) | st.sampled_from([0.5, 12.0, 80.5, -3.25, *map(int, BIG)])
meta_st = st.fixed_dictionaries({}, optional={
    "city": st.sampled_from(CITIES) | st.none(), "speed": number_st, "night": st.booleans(),
    "cam": st.fixed_dictionaries({}, optional={"h": number_st}), "tags": st.lists(st.sampled_from(CITIES), max_size=2)})
frame_st = st.fixed_dictionaries({
    "context_id": st.sampled_from(CONTEXTS), "timestamp": st.integers(-3, 5) | st.integers(-2**62, 2**62),
    "meta": meta_st, "sources": st.lists(source_st, max_size=2), "rois": st.lists(roi_st, max_size=3)})
mask_labels_st = st.dictionaries(st.sampled_from(VALUES + [(4, 4, 4)]),
                                 st.lists(st.sampled_from(LABELS), max_size=2, unique=True), max_size=5) \
    .map(lambda d: [{"value": list(k), "labels": v} for k, v in d.items()])


def _quote(s: str) -> str:
    return json.dumps(s)


def _string_atom(field: str, pool: list[str]) -> st.SearchStrategy[str]:
    """Comparisons of a string field: equality, glob, in / not in (and order for single-valued ones)."""
    ops = ["==", "!=", "~"] + (["<", "<=", ">", ">="] if not FIELDS[field].multi else [])
    patterns = st.sampled_from(["*", "?", "d*", "*_?", "[a-c]*", "[!f]*", "x", "*.png", "L*"])
    return st.one_of(
        st.builds(lambda op, v: f"{field} {op} {_quote(v)}", st.sampled_from(ops), st.sampled_from(pool)),
        st.builds(lambda p: f"{field} ~ {_quote(p)}", patterns),
        st.builds(lambda neg, vs: f"{field} {'not in' if neg else 'in'} [{', '.join(map(_quote, vs))}]",
                  st.booleans(), st.lists(st.sampled_from(pool), max_size=3)))


NUM_OPS = st.sampled_from(["==", "!=", "<", "<=", ">", ">="])
atom_st = st.one_of(
    _string_atom("id", ["f0", "f1", "f3", "f", "g"]),
    _string_atom("context_id", CONTEXTS + ["drive"]),
    _string_atom("label", LABELS + ["truck", LONG]),
    _string_atom("mask.label", LABELS),
    _string_atom("roi.label", LABELS + ["truck", LONG]),
    _string_atom("source.id", SOURCE_IDS),
    _string_atom("source.uri", URIS),
    _string_atom("source.content_type", ["image/png", "image/jpeg", "image/webp"]),
    _string_atom("mask.id", MASK_IDS),
    st.builds(lambda op, v: f"timestamp {op} {v}", NUM_OPS, st.integers(-4, 6)),
    st.builds(lambda vs: f"timestamp in [{', '.join(map(str, vs))}]", st.lists(st.integers(-4, 6), max_size=3)),
    st.builds(lambda op, v: f"roi.confidence {op} {v}", NUM_OPS, st.sampled_from(CONFIDENCES + [0.3])),
    st.builds(lambda op, v: f"mask.value {op} {v}", st.sampled_from(["==", "!="]),
              st.sampled_from(["0", "1", "4", "[1, 2, 3]", "[3, 2, 1]"])),
    st.builds(lambda vs: f"mask.value in [{', '.join(vs)}]", st.lists(st.sampled_from(["0", "2", "[1, 2, 3]"]), max_size=2)),
    st.builds(lambda op, v: f"meta.city {op} {v}", st.sampled_from(["==", "!=", "<", ">=", "~"]),
              st.sampled_from([_quote(c) for c in CITIES] + ['"k*"', "null", "3"])),
    st.builds(lambda op, v: f"meta.speed {op} {v}", NUM_OPS,
              st.sampled_from(["0", "12", "12.0", "50", "-3.25", "null", *BIG, "9007199254740992.0"])),
    st.builds(lambda op, v: f"meta.cam.h {op} {v}", NUM_OPS, st.sampled_from(["0", "0.5", "80.5"])),
    st.builds(lambda op, v: f"meta.night {op} {v}", st.sampled_from(["==", "!="]), st.sampled_from(["true", "false"])),
    st.builds(lambda vs: f"meta.speed in [{', '.join(vs)}]", st.lists(st.sampled_from(["0", "12", "0.5"]), max_size=2)),
    st.builds(lambda f: f"has({f})", st.sampled_from(["mask", "roi", "meta.city", "meta.cam", "meta.cam.h", "meta.tags"])),
    st.builds(lambda label, op, v: f"coverage({_quote(label)}) {op} {v}", st.sampled_from(LABELS), NUM_OPS,
              st.sampled_from(["0", "0.25", "0.5", "1"])),
)
expr_st = st.recursive(atom_st, lambda kids: st.one_of(
    st.builds(lambda e: f"not {e}", kids),
    st.builds(lambda e: f"({e})", kids),
    st.builds(lambda a, b: f"{a} and {b}", kids, kids),
    st.builds(lambda a, b: f"{a} or {b}", kids, kids),
    st.builds(lambda a, b: f"({a} or {b})", kids, kids)), max_leaves=5)
query_st = st.builds(
    lambda where, order, limit: " ".join(p for p in (where, order, limit) if p),
    st.none() | expr_st,
    st.none() | st.builds(lambda f, d: f"order by {f}{d}", st.sampled_from(["id", "context_id", "timestamp", "meta.city",
                                                                            "meta.speed", "meta.night", "meta.cam.h"]),
                          st.sampled_from(["", " asc", " desc"])),
    st.none() | st.builds(lambda n: f"limit {n}", st.integers(0, 6)))


@pytest.fixture(scope="module")
def shared_archive(tmp_path_factory) -> Iterator[Archive]:
    with Archive(tmp_path_factory.mktemp("prop") / "prop.maskstore", jobs=1) as ar:
        yield ar


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(mask_labels=mask_labels_st, frames=st.lists(frame_st, max_size=10), queries=st.lists(query_st, min_size=1, max_size=4),
       deleted=st.sets(st.integers(0, 9), max_size=3))
@example(mask_labels=[{"value": [1, 1, 1], "labels": ["car"]}],
         frames=[{"context_id": "x", "timestamp": 0, "meta": {}, "sources": [], "rois": [{"label": ["car"], "confidence": 0.5}]},
                 {"context_id": "x", "timestamp": 0, "meta": {}, "sources": [], "rois": [{"label": ["car"], "confidence": 0.9}]}],
         queries=['roi.label == "car" and roi.confidence > 0.8 order by timestamp desc',
                  'roi.label == "car" and not roi.confidence > 0.8'],
         deleted={1})
def test_planner_matches_brute_force(shared_archive, mask_labels, frames, queries, deleted) -> None:
    """Index lookups, column scans, set algebra and residual closures give exactly the frames (in
    exactly the order) that testing every frame dict with the checked query's closure gives; again
    after some frames are deleted (dirty column chunks rebuilt)."""
    frames = [dict(f, id=f"f{i}") for i, f in enumerate(frames)]
    v = make_version(shared_archive, mask_labels, frames)
    for text in queries:
        note(f"query: {text}")
        got = assert_same_answer(v, text)
        event("refused by the checker" if got is None else "empty" if not got else "some frames")
    gone = [f"f{i}" for i in deleted if i < len(frames)]
    if gone:
        v.delete_frames(gone)
        for text in queries:
            assert_same_answer(v, text)


write_st = st.one_of(
    st.tuples(st.just("add"), st.lists(st.tuples(st.integers(0, 11), frame_st), max_size=6, unique_by=lambda t: t[0])),
    st.tuples(st.just("delete"), st.sets(st.integers(0, 11), max_size=4)),
    st.tuples(st.just("merge"), st.integers(0, 11), meta_st))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(mask_labels=mask_labels_st, writes=st.lists(write_st, min_size=1, max_size=6),
       queries=st.lists(query_st, min_size=1, max_size=3))
def test_columns_kept_on_write_match_brute_force(shared_archive, mask_labels, writes, queries) -> None:
    """Adds (new ids and replacements), deletes and merge-updates in any order keep the stored
    columns exactly what the records give (``maskstore check``), and after every write each query
    answers what testing every frame dict gives."""
    v = make_version(shared_archive, mask_labels, [])
    for op, *args in writes:
        have = set(v.ids(""))
        if op == "add":
            v.add_frames([dict(f, id=f"f{i}") for i, f in args[0]])
        elif op == "delete":
            if gone := [f"f{i}" for i in args[0] if f"f{i}" in have]:
                v.delete_frames(gone)
        elif f"f{args[0]}" in have:
            v.update_frames([{"id": f"f{args[0]}", "meta": args[1]}], merge=True)
        note(f"{op}: {args}")
        assert [p for p in check_archive(shared_archive) if "scan columns" in str(p)] == []
        for text in queries:
            assert_same_answer(v, text)


# --------------------------------------------------------------------------- property: across column chunks

def _chunked_frames(n: int) -> list[dict[str, Any]]:
    """Frames over several column chunks, with values that follow the chunk (so per-chunk value ranges
    tell chunks apart) yet overlap their neighbours' (ties across chunk borders): what the top-k of
    ``order by ... limit`` and the coverage column read chunk by chunk."""
    rng = random.Random(14)
    frames = []
    for i in range(n):
        chunk = i // CHUNK
        meta: dict[str, Any] = {"i": chunk * 10 + rng.randrange(12), "big": 2**60 + chunk * 10 + rng.randrange(12),
                                "f": rng.choice([-math.inf, math.inf, chunk / 2, chunk / 2 + 0.25, 0.5]),
                                "b": rng.random() < 0.3, "mixed": chunk + (0.5 if chunk % 2 else 0)}
        if chunk % 2 and rng.random() < 0.1:
            del meta["i"]  # missing values (last whichever the direction) in some chunks only
        if chunk == 2 and rng.random() < 0.01:
            meta["obj"] = 2**64 - 1  # beyond int64: Python numbers in that chunk
        elif rng.random() < 0.5:
            meta["obj"] = rng.randrange(-50, 50)
        if rng.random() < 0.002:
            meta["sparse"] = rng.randrange(5)  # fewer values than most limits
        values = rng.sample([1, 2, 3, 4], rng.randrange(4))
        frames.append({"id": f"f{i:05d}", "context_id": f"c{i % 7}", "timestamp": (3 - chunk) * 1000 + rng.randrange(1100),
                       "meta": meta, "rois": [],
                       "sources": [{"uri": "/s.png", "masks": [{"uri": "/m.png", "values": [
                           [v, v, v, rng.randrange(0, 100) if rng.random() < 0.95 else 0] for v in values]}]}]})
    return frames


@pytest.fixture(scope="module")
def chunked_versions(tmp_path_factory) -> Iterator[list[tuple[Any, list[dict[str, Any]]]]]:
    """Two versions over 4 column chunks (a top-k's window needs 4): every chunk in place, and with
    chunk 1 gone (positions no longer seqs); each with its frame dicts, the reference's input."""
    mask_labels = [{"value": [1, 1, 1], "labels": ["person"]}, {"value": [2, 2, 2], "labels": ["car", "person"]},
                   {"value": [3, 3, 3], "labels": ["road"]}]
    with Archive(tmp_path_factory.mktemp("chunked") / "chunked.maskstore", jobs=1) as ar:
        whole = make_version(ar, mask_labels, _chunked_frames(3 * CHUNK + 300), "whole")
        holes = make_version(ar, mask_labels, _chunked_frames(4 * CHUNK + 100), "holes")
        holes.delete_frames([f"f{i:05d}" for i in range(CHUNK, 2 * CHUNK)] + ["f13000", "f00005"])
        yield [(v, list(v.frame_dicts())) for v in (whole, holes)]


chunked_query_st = st.builds(
    lambda where, field, direction, limit: " ".join(p for p in (where, f"order by {field}{direction}", limit) if p),
    st.sampled_from(["", 'label == "person"', 'label == "road"', "meta.i > 15", "timestamp < 1500", 'not label == "car"',
                     "has(meta.sparse)", 'context_id == "c3"']),
    st.sampled_from(["timestamp", "meta.i", "meta.big", "meta.f", "meta.b", "meta.obj", "meta.sparse", "meta.mixed", "id"]),
    st.sampled_from(["", " asc", " desc"]),
    st.sampled_from(["", "limit 0", "limit 1", "limit 20000"]) | st.integers(1, 5000).map(lambda n: f"limit {n}"))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(which=st.sampled_from([0, 1]), text=chunked_query_st, walk=st.booleans())
@example(which=0, text="order by timestamp desc limit 100", walk=False)
@example(which=1, text='label == "person" order by meta.i limit 3000', walk=True)
@example(which=0, text="order by meta.sparse desc limit 40", walk=False)
def test_top_k_across_chunks_matches_brute_force(chunked_versions, which: int, text: str, walk: bool) -> None:
    """``order by`` with a limit runs the plan over only the chunks whose value ranges can hold the
    first rows (index postings read by cursor walks over those chunks' seqs when ``walk``: at this
    size only a forced share), yet gives exactly the reference's frames in its order: ints beyond
    2**53, infinities, booleans, ties across chunk borders (insertion order), missing values, fields
    no range covers (Python numbers, ints beside floats, strings) and fewer values than the limit."""
    version, frames = chunked_versions[which]
    note(f"query: {text}")
    with mock.patch.object(plan, "WALK_SHARE", 1 if walk else plan.WALK_SHARE):
        assert assert_same_answer(version, text, frames) is not None


@pytest.mark.parametrize("text", ['label == "person"', 'mask.value in [1, 3]', 'context_id == "c3"'])
def test_index_walks_over_a_window_give_exactly_its_postings(chunked_versions, text: str) -> None:
    """Postings read by cursor walks over a top-k's window of chunks are the index's postings in
    those chunks, none missing at a chunk's first or last seq (adjacent chunks walked as one range)."""
    for version, _ in chunked_versions:
        def work(txn: Any) -> None:
            ctx = engine.context(txn, version)
            step = plan.plan_expr(engine.prepare(text, version.record(txn)["meta_types"]).where, ctx)
            whole = step.run(ctx)
            chunk_of = ctx.positions(whole) // CHUNK
            for chunks in ([0], [1], [0, 1], [0, 2], [len(ctx.chunks) - 1]):
                ctx.window = np.isin(np.arange(len(ctx.chunks)), chunks)
                with mock.patch.object(plan, "WALK_SHARE", 1):
                    assert step.run(ctx).tolist() == whole[np.isin(chunk_of, chunks)].tolist(), chunks
        version.archive.read(work)


BIG_I = 2**60
range_atom_st = st.one_of(*(
    st.builds(lambda op, v, f=field: f"{f} {op} {v}", NUM_OPS, st.sampled_from(values))
    for field, values in [("timestamp", ["-1", "500", "1000", "2099", "2100", "3099.5", "4200"]),
                          ("meta.i", ["-1", "0", "10", "11", "15", "20", "41", "45", "11.5", str(2**53 + 1)]),
                          ("meta.big", [str(BIG_I + 9), str(BIG_I + 25), f"{BIG_I + 25}.0", "0", str(2**63)]),
                          ("meta.f", ["0.5", "0.75", "1", "1.25", "-1e308", "2"]),
                          ("meta.sparse", ["0", "2", "4.5"]), ("meta.b", ["1", "0", "true"]),
                          ("meta.mixed", ["1", "1.5", "2.5", "3"]), ("meta.obj", ["0", "-60"])]),
    st.builds(lambda f, vs: f"{f} in [{', '.join(vs)}]", st.sampled_from(["timestamp", "meta.i", "meta.sparse"]),
              st.lists(st.sampled_from(["-1", "0", "3", "15", "41", "1050"]), max_size=3)))
range_expr_st = st.recursive(range_atom_st, lambda kids: st.one_of(
    st.builds(lambda e: f"not ({e})", kids), st.builds(lambda a, b: f"({a}) and ({b})", kids, kids),
    st.builds(lambda a, b: f"({a}) or ({b})", kids, kids)), max_leaves=3)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(which=st.sampled_from([0, 1]), text=range_expr_st)
@example(which=0, text="meta.i >= 0")  # every chunk decided by its range, where each frame holds a value
@example(which=1, text="not (meta.i < 100)")  # ... and where some lack one
@example(which=0, text="meta.sparse != 7")
def test_zone_maps_across_chunks_match_brute_force(chunked_versions, which: int, text: str) -> None:
    """Range scans that decide whole chunks from their lowest and highest value (timestamp and numeric
    meta) give the reference's frames: frames without the field, chunks where no frame has it, ints
    beyond 2**53 against float literals, infinities, booleans (never a range) and Python numbers;
    what the checker refuses (a float against timestamp) is refused alike."""
    version, frames = chunked_versions[which]
    note(f"query: {text}")
    got = assert_same_answer(version, text, frames)
    event("refused by the checker" if got is None else "empty" if not got else "some frames")


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(which=st.sampled_from([0, 1]), label=st.sampled_from(["person", "car", "road", "sky"]),
       op=NUM_OPS, value=st.sampled_from(["0", "0.25", "0.5", "1", "0.3333333333333333"]),
       tail=st.sampled_from(["", " and meta.i > 15", " or timestamp < 1200", " order by meta.i desc limit 50"]))
def test_coverage_across_chunks_matches_brute_force(chunked_versions, which: int, label: str, op: str, value: str,
                                                     tail: str) -> None:
    """Coverage from the columns equals the reference's per-frame ratio on every chunk, for frames
    without the label (0), without any mask pixels (0) and with every pixel labelled (1)."""
    version, frames = chunked_versions[which]
    text = f"coverage({_quote(label)}) {op} {value}{tail}"
    note(f"query: {text}")
    assert assert_same_answer(version, text, frames) is not None


# --------------------------------------------------------------------------- fuzz: only QueryError escapes

TOKENS = ["label", "meta", ".", "city", "speed", "roi", "confidence", "mask", "value", "context_id", "timestamp", "id",
          "source", "==", "!=", "<", ">=", "~", "in", "not", "and", "or", "(", ")", "[", "]", ",", "has", "coverage",
          "order", "by", "desc", "limit", '"car"', "'x'", '"[a"', '"\\u00e9"', '"\\q"', "1", "-1", "0.5", "1e999", "true",
          "null", "\n", "=", "!", "&&", "@", '"', "'", "9" * 30]


@pytest.fixture(scope="module")
def fuzz_version(shared_archive):
    return make_version(shared_archive, [{"value": [1, 1, 1], "labels": ["car"]}],
                        [{"id": "a", "meta": {"city": "bonn", "speed": 3, "tags": []}, "sources": [], "rois": []}])


@settings(max_examples=300, deadline=None)
@given(text=st.one_of(st.text(max_size=40), st.lists(st.sampled_from(TOKENS), max_size=12).map(" ".join),
                      st.lists(st.sampled_from(TOKENS), max_size=12).map("".join)))
def test_any_text_gives_ids_or_a_query_error(fuzz_version, text: str) -> None:
    try:
        ids = fuzz_version.ids(text)
    except QueryError as e:
        lines = text.splitlines() or [""]
        if e.line:
            assert 1 <= e.line <= len(lines) and 1 <= e.column <= len(lines[e.line - 1]) + 1, str(e)
        assert str(e)
    else:
        assert set(ids) <= {"a"}


# --------------------------------------------------------------------------- explain and the CLI

def test_explain_shows_the_plan(golden_version) -> None:
    v = golden_version("spec_examples.json")
    plan = v.explain('label == "person" and meta.city == "frankfurt" order by timestamp desc limit 5')
    assert "index ix_value" in plan and "[24, 24, 24]" in plan and "index ix_roi" in plan
    assert 'scan columns: meta.city == "frankfurt"' in plan
    assert "order by timestamp desc" in plan and "limit 5" in plan
    assert "index ix_context" in v.explain('context_id in ["car_1", "x"]')
    assert "scan columns: timestamp >= 5" in v.explain("timestamp >= 5")
    assert "filter records" in v.explain('source.uri ~ "*.png"')
    assert v.explain("label != 'cat'").splitlines()[0] == 'query: not label == "cat"'


@pytest.fixture
def cli_archive(tmp_path: Path) -> Path:
    path = tmp_path / "q.maskstore"
    spec = load_cases("spec_examples.json")["given"]
    with Archive(path, jobs=1) as ar:
        make_version(ar, spec["mask_labels"], spec["frames"], "v1")
    return path


def test_cli_query_formats(cli_archive: Path) -> None:
    runner = CliRunner()
    base = ["query", str(cli_archive)]
    result = runner.invoke(main, base + ['label == "person"'])
    assert result.exit_code == 0, result.output
    assert result.stdout == "s1\ns4\n"
    result = runner.invoke(main, base + ["(label == 'car' or label == 'truck') order by timestamp desc", "--limit", "2"])
    assert result.stdout == "s4\ns2\n"
    assert runner.invoke(main, base + ['context_id ~ "drive_*"', "--count"]).stdout == "3\n"
    assert runner.invoke(main, base + ["", "--count"]).stdout == "6\n"
    lines = runner.invoke(main, base + ['context_id == "car_1"', "--format", "jsonl"]).stdout.splitlines()
    with Archive(cli_archive, readonly=True) as ar:
        v = ar.get_version("test", "v1")
        assert [json.loads(line) for line in lines] == [v.get_frame_dict("s1"), v.get_frame_dict("s4")]
    table = runner.invoke(main, base + ['id == "s1"', "--format", "table"]).stdout.splitlines()
    assert table[0].split("\t")[0] == "id" and table[1].startswith("s1\tcar_1\t1234567890")
    explain = runner.invoke(main, base + ['label == "car"', "--explain"])
    assert explain.exit_code == 0 and "index ix_value" in explain.stdout


def test_cli_query_errors_are_clean(cli_archive: Path) -> None:
    result = CliRunner().invoke(main, ["query", str(cli_archive), 'timestamp == "x"'])
    assert result.exit_code == 1
    assert "Traceback" not in result.output and result.stdout == ""
    assert re.search(r"type mismatch.*line 1, column 14", result.stderr)
    assert "^" in result.stderr


# --------------------------------------------------------------------------- API edges

def test_a_bad_query_raises_when_query_is_called_not_when_iterated(archive: Archive) -> None:
    v = make_version(archive, [], [{"id": "a", "sources": [], "rois": []}])
    with pytest.raises(QueryError):
        v.query('timestamp == "x"')
    with pytest.raises(QueryError):
        v.query_dicts("label ==")


def test_meta_typos_suggest_the_closest_key_ignoring_case(archive: Archive) -> None:
    v = make_version(archive, [], [{"id": "a", "meta": {"city": "x", "speed": 1, "weather": "rain"},
                                    "sources": [], "rois": []}])
    with pytest.raises(QueryError, match="did you mean 'meta.weather'"):
        v.ids('meta.wether == "rain"')
    with pytest.raises(QueryError, match="did you mean 'meta.city'"):
        v.ids('meta.CITY == "x"')
    with pytest.raises(QueryError, match="did you mean 'label'"):
        v.ids('LABEL == "x"')
    with pytest.raises(QueryError, match="no frame of this version has that key"):
        v.ids('meta.nope == 1')


def test_int_meta_against_a_float_literal_is_exact_above_two_to_the_53(tmp_path):
    """Found by test_planner_matches_brute_force: the int64 column was compared as float64, so
    9007199254740993 == 9007199254740992.0 held in scans while Python (and the record path) says no."""
    with Archive(tmp_path / "a.maskstore") as ar:
        v = ar.create_version(dataset_name="D", version_name="v1")
        v.add_frames([{"id": "big", "meta": {"n": 2**53 + 1}}, {"id": "one", "meta": {"n": 1}},
                      {"id": "neg", "meta": {"n": -5}}])
        cases = {"meta.n == 9007199254740992.0": [], "meta.n > 9007199254740992.0": ["big"],
                 "meta.n < 1.5": ["one", "neg"], "meta.n <= 0.5": ["neg"], "meta.n >= -5.5": ["big", "one", "neg"],
                 "meta.n != 1.0": ["big", "neg"], "meta.n == 1.0": ["one"], "meta.n > 1e300": []}
        for query, expected in cases.items():
            assert sorted(v.ids(query)) == sorted(expected), query


def test_a_fresh_lookup_reads_the_summary_and_only_the_chunks_it_answers_from(tmp_path: Path,
                                                                             monkeypatch: Any) -> None:
    """Columns cost nothing to open: a fresh archive's context or label lookup (answered by an index)
    fetches the version's summary (one entry, whatever the number of chunks) and ``present`` and
    ``ids`` of the chunks holding its results, nothing of the other chunks; a meta scan fetches that
    path's zone map and the path's column of the chunks its bounds do not decide, nothing else. Counted at the one place stored chunks fetch fields
    (``FieldReader.fetch``)."""
    frames = _many_frames(9000)  # chunks 0, 1, 2
    frames[5000] = dict(frames[5000], context_id="only-here")
    frames[8500]["sources"][0]["masks"][0]["values"] = [[7, 7, 7, 4]]
    with Archive(tmp_path / "a.maskstore", jobs=1) as ar:
        make_version(ar, [{"value": [7, 7, 7], "labels": ["seven"]}], frames, "v")
    fetched: list[tuple[int, bytes] | str] = []
    fetch = columns.FieldReader.fetch

    def counted(self: columns.FieldReader, key: bytes) -> bytes | None:
        fetched.append("summary" if len(key) == 8 else (int.from_bytes(key[8:16], "big"), key[16:]))
        return fetch(self, key)
    monkeypatch.setattr(columns.FieldReader, "fetch", counted)
    with Archive(tmp_path / "a.maskstore", readonly=True) as ar:
        v = ar.get_version("test", "v")
        assert v.ids('context_id == "only-here"') == ["f05000"]
        assert fetched == ["summary", (1, b"_present"), (1, b"ids")]
        fetched.clear()
        assert v.ids('label == "seven"') == ["f08500"]
        assert fetched == [(2, b"_present"), (2, b"ids")]
        fetched.clear()
        assert v.count("meta.k == 3") == sum(f["meta"]["k"] == 3 for f in frames)
        zone_maps = [(2**64 - 1, b""), (2**64 - 1, bytes(8) + b"m:k")]  # the zone maps' marker, then block 0 of the field's
        assert sorted(fetched) == [(0, b"_present"), (0, b"m:k"), (1, b"m:k"), (2, b"m:k"), *zone_maps]
        fetched.clear()  # bounds that rule a value out, or in for every frame: no chunk is read
        assert (v.count("meta.k == 9"), v.count("meta.k >= 0"), v.count("meta.k < 7 and meta.k > -1")) == (0, 9000, 9000)
        assert fetched == []


def test_cached_lookups_and_present_follow_every_write(tmp_path):
    """Lookups keep their seqs, and large ones the dense ``present``, with the chunks of one
    generation (plan.POSTINGS, plan.DENSE_FROM): a write, through this version object or another, shows at once."""
    def frame(fid: str, value: int) -> dict:
        return {"id": fid, "sources": [{"id": "s", "uri": f"{fid}.png",
                                        "masks": [{"id": "m", "uri": f"{fid}m.png", "values": [[value] * 3 + [9]]}]}]}
    path = tmp_path / "a.maskstore"
    with Archive(path) as ar:
        v = ar.create_version(dataset_name="d", version_name="v")
        v.set_masks_labels([{"value": [24, 24, 24], "labels": ["person"]}])
        v.add_frames([frame(f"p{i}", 24) for i in range(3)] + [frame("c", 1)])
        assert v.ids('label == "person"') == ["p0", "p1", "p2"]
        assert v.ids('label == "person"') == ["p0", "p1", "p2"]  # from the cache
        w = ar.get_version("d", "v")
        w.add_frames([frame("p3", 24)])
        w.delete_frames(["p0"])
        assert v.ids('label == "person"') == ["p1", "p2", "p3"]
        assert v.ids('label == "person" and mask.id == "m"') == ["p1", "p2", "p3"]
        v.update_frames([frame("p1", 1)])
        assert v.ids('label == "person"') == ["p2", "p3"] == w.ids('label == "person"')
