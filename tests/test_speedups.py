"""The compiled path (``maskstore._speedups``) against its pure-Python twin (``maskstore._fallback``)
and the Python rules it copies, plus what ``maskstore._accel`` does when the build is missing or stale.

For any frame dict, valid or not: where ``encode_common`` accepts it, its record decodes to the same
values (types and key order included) as ``records.encode_frame(normalize_frame_dict(frame))`` — what
the pure-Python path writes — and its id, meta types and index keys are the ones the Python path
gives; where the Python path raises, ``encode_common`` declines. Both ``Postings`` give the same index
keys, and both ``frame_ok`` accept and refuse the same records, hostile ones included.
"""

from __future__ import annotations

import ast
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import msgpack
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import maskstore
from maskstore import Archive, FrameError, _accel, _fallback, records
from maskstore.ingest.prepare import SUFFIX_TYPES
from maskstore.layout import MAX_KEY_TEXT, text_key
from maskstore.check import check_archive
from maskstore.media import content_type_of
from maskstore.model import nfc_keys
from maskstore.model import normalize_frame, normalize_frame_dict

from strategies import frame_dicts

pytestmark = pytest.mark.skipif(_accel.purepython_requested(), reason="MASKSTORE_PUREPYTHON=1 runs without the "
                                "compiled module; the default run compares it with the Python twin")
# Not built or stale: every test here fails with the ImportError that says how to rebuild.
speedups = None if _accel.purepython_requested() else _accel.compiled()

# Hostile and boundary pieces: every type the Python rules treat specially, ints at each msgpack
# width, strings and containers at each header size, lone surrogates.
INT_EDGES = [0, 1, -1, -32, -33, 127, 128, -128, -129, 255, 256, 32767, 32768, -32768, -32769, 65535, 65536,
             2**31 - 1, 2**31, -2**31, -2**31 - 1, 2**32 - 1, 2**32, 2**63 - 1, 2**63, -2**63, -2**63 - 1,
             2**64 - 1, 2**64]
texts = st.one_of(st.text(max_size=6), st.sampled_from(["", ".", "a.b", "\ud800", "x" * 31, "x" * 32, "é" * 128,
                                                        "x" * 255, "x" * 256, "x" * 65536, "f.PNG", "http://h/a.jpg",
                                                        "blob:sha256:ab", "a/b.c/d", "img.tar.gz"]))
ints = st.one_of(st.integers(-300, 300), st.sampled_from(INT_EDGES))
leaves = st.one_of(st.none(), st.booleans(), ints, st.floats(), texts, st.binary(max_size=3),
                   st.sampled_from([b"x" * 256, 1.0, -0.0, math.inf, math.nan]))
anything = st.recursive(leaves, lambda kids: st.one_of(
    st.lists(kids, max_size=17), st.lists(kids, max_size=3).map(tuple),
    st.dictionaries(texts, kids, max_size=17)), max_leaves=12)
maybe = st.one_of(st.none(), ints, texts, st.floats(), st.booleans())
good_texts = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=6) | st.sampled_from(
    ["a.png", "b.JPG", "http://h/c.png", "x" * 40, "y" * 300])


def mostly(valid, hostile):
    """Usually the valid piece, so most frames are accepted and compared; sometimes the hostile one."""
    return st.integers(0, 9).flatmap(lambda n: hostile if n == 0 else valid)


def shuffled_dict(draw, fields: dict) -> dict:
    """A dict of the drawn fields, some left out, plus extra keys, in a drawn order."""
    items = [(k, v) for k, v in fields.items() if draw(st.integers(0, 5))]
    items += draw(st.lists(st.tuples(mostly(good_texts, texts), anything), max_size=2))
    return dict(draw(st.permutations(items)))


@st.composite
def values_lists(draw):
    entry = st.one_of(st.tuples(ints, ints, ints, ints).map(list),
                      st.tuples(st.integers(0, 255), st.integers(0, 255), st.integers(0, 255),
                                st.integers(0, 2**40)).map(list),
                      st.lists(st.integers(0, 9), max_size=5), st.just([True, 0, 0, 1]), st.just((1, 2, 3, 4)))
    good = st.tuples(st.integers(0, 255), st.integers(0, 255), st.integers(0, 255), st.integers(0, 2**64)).map(list)
    return draw(mostly(st.lists(good, max_size=4), st.one_of(st.none(), st.lists(entry, max_size=4), st.just("x"))))


@st.composite
def masks(draw):
    return shuffled_dict(draw, {"id": draw(mostly(st.none() | good_texts, ints)), "uri": draw(mostly(good_texts, ints)),
                                "content_type": draw(mostly(st.none() | good_texts, maybe)),
                                "timestamp": draw(mostly(st.none() | ints, maybe)), "values": draw(values_lists())})


@st.composite
def sources(draw):
    return shuffled_dict(draw, {"id": draw(mostly(st.none() | good_texts, ints)), "uri": draw(mostly(good_texts, ints)),
                                "content_type": draw(mostly(st.none() | good_texts, maybe)),
                                "timestamp": draw(mostly(st.none() | ints, maybe)),
                                "width": draw(mostly(st.none() | ints, maybe)),
                                "height": draw(mostly(st.none() | ints, maybe)),
                                "masks": draw(mostly(st.none() | st.lists(masks(), max_size=3), st.just({})))})


@st.composite
def hostile_frames(draw):
    good_meta = st.dictionaries(good_texts.filter(lambda k: k and "." not in k),
                                st.recursive(st.none() | st.booleans() | ints | st.floats(allow_nan=False) | good_texts,
                                             lambda kids: st.lists(kids, max_size=3)
                                             | st.dictionaries(st.sampled_from("abc"), kids, max_size=3),
                                             max_leaves=6), max_size=5)
    meta = draw(mostly(st.none() | good_meta, st.one_of(st.dictionaries(texts, anything, max_size=5), st.just([]))))
    return shuffled_dict(draw, {
        "id": draw(mostly(good_texts, st.one_of(texts, ints, st.none()))),
        "timestamp": draw(mostly(st.none() | ints, maybe)), "context_id": draw(mostly(st.none() | good_texts, maybe)),
        "meta": meta, "sources": draw(mostly(st.none() | st.lists(sources(), max_size=3), st.just(""))),
        "rois": draw(mostly(st.none() | st.just([]), st.just([{"label": "car"}]) | st.just(())))})


def python_way(frame):
    """(record, id, meta types, index keys) from the Python rules, or None where they refuse."""
    try:
        d, types = normalize_frame(frame)
        record = records.encode_frame(d)
    except (FrameError, UnicodeEncodeError, OverflowError, ValueError, TypeError, RecursionError):
        return None
    postings = _fallback.Postings(text_key, MAX_KEY_TEXT)
    postings.add_record(0, d)
    return record, d["id"], tuple(types), postings.groups()


def compiled_way(frame):
    postings = speedups.Postings(text_key, MAX_KEY_TEXT)
    (record,), (frame_id,), (types,) = speedups.encode_common([frame], records.FRAME_HEAD, content_type_of,
                                                              SUFFIX_TYPES, postings)
    if record is None:
        assert frame_id is None and types is None
        return None
    return record, frame_id, types, postings.groups()


def typed(value):
    """``value`` with every type spelled out (1, 1.0 and True differ; -0.0 and 0.0 too) and dict keys
    kept in order: what equal decoded records must share, whatever bytes encode them."""
    if type(value) is dict:
        return "dict", [(typed(k), typed(v)) for k, v in value.items()]
    if type(value) is list:
        return "list", [typed(v) for v in value]
    return type(value).__name__, value.hex() if type(value) is float else value


def decoded(record: bytes):
    assert record[:2] == records.FRAME_HEAD
    return typed(msgpack.unpackb(record[2:], raw=False, strict_map_key=False))


def check_same(frame):
    fast = compiled_way(frame)
    if fast is not None:
        slow = python_way(frame)
        assert slow is not None, "the compiled path accepted a frame the Python rules refuse"
        assert decoded(fast[0]) == decoded(slow[0])
        assert fast[1:] == slow[1:]
    return fast


COMMON = {"id": "drive_0001_000042", "timestamp": 1_600_000_000_000, "context_id": "drive_0001",
          "meta": {"city": "bremen", "speed": 12.5, "frame_no": 42, "ok": True, "none": None,
                   "nested": {"a": [1, 2.5, "x", None, [True]], "b": {"c": 1}}},
          "sources": [{"id": "front", "uri": "/data/front/000042.png", "width": 2048, "height": 1024,
                       "masks": [{"id": "00", "uri": "/data/masks/000042.png",
                                  "values": [[7, 7, 7, 1000], [24, 24, 24, 5], [255, 0, 10, 2**40]]}]}]}


@settings(max_examples=600, deadline=None)
@given(hostile_frames())
@example(COMMON)
@example({"id": "f", "sources": [{"uri": "http://example.com/x.JPG?a=b", "masks": [{"uri": "m.png", "values": []}]}]})
@example({"id": "f", "sources": [{"uri": "a.png", "masks": [{"uri": "b.png", "values": [[1, 2, 3, 4]]}] * 2}]})
@example({"id": "f", "meta": {"cafe\u0301": 1, "n": [{"\u212b": None}]}})  # NFD and a singleton: declined
def test_compiled_records_decode_like_the_python_path(frame):
    check_same(frame)


@settings(max_examples=300, deadline=None)
@given(frame_dicts)
def test_compiled_path_accepts_common_frames_and_agrees(frame):
    """The shared frame strategy: everything but ROIs and meta keys not in Unicode NFC (which go the
    Python way) is accepted."""
    fast = check_same(frame)
    assert (fast is None) == (bool(frame["rois"]) or nfc_keys(frame["meta"], None) is not frame["meta"])


def test_common_frame_is_accepted_with_defaults_filled():
    frame = {"id": "f", "sources": [{"uri": "/d/a.png", "masks": [{"uri": "/d/a_mask.png", "values": [[1, 1, 1, 9]]}]}]}
    record, frame_id, types, postings = check_same(frame)
    body = msgpack.unpackb(record[2:])
    assert body["context_id"] == "/d/a.png" and body["sources"][0]["id"] == "0"
    assert body["sources"][0]["masks"][0] == {"uri": "/d/a_mask.png", "values": [[1, 1, 1, 9]], "id": "00",
                                              "content_type": "image/png", "timestamp": 0}
    assert postings["ix_value"] == {b"\x01\x01\x01": [0]}


@pytest.mark.parametrize("frame", [
    {"id": "f", "sources": [{"uri": "a.png", "masks": [{"uri": "m.png"}]}]},  # no values: decoded in Python
    {"id": "f", "rois": [{"label": "car"}]},
    {"sources": [{"uri": "a.png"}]},  # derived id
    {"id": 5}, {"id": "f", "meta": {"x": math.nan}}, {"id": "f", "meta": {"k": 2**64}},
])
def test_declines_what_the_python_path_owns(frame):
    assert compiled_way(frame) is None


@pytest.mark.parametrize("value", [v for v in INT_EDGES if -2**63 <= v < 2**64] + [0.5, -1e300, math.inf, "", "x" * 70000, [], [1] * 16,
                                                      {str(i): i for i in range(16)}, b"", b"x" * 70000])
def test_msgpack_writer_matches_msgpack(value):
    frame = dict(COMMON, extra=value)
    fast = compiled_way(frame)
    assert fast[0] == records.FRAME_HEAD + msgpack.packb(normalize_frame(frame)[0], use_bin_type=True)


def test_mixed_batch_keeps_positions(tmp_path):
    """Accepted and declined frames in one batch land with the right seqs, index entries and order."""
    frames = [dict(COMMON, id=f"f{i}") for i in range(6)]
    frames[1] = dict(frames[1], rois=[{"label": "car"}])
    frames[4] = {"sources": [{"uri": "/d/derived.png", "masks": [{"uri": "/d/m.png", "values": [[9, 9, 9, 1]]}]}]}
    with Archive(tmp_path / "a.maskstore") as ar:
        v = ar.create_version(dataset_name="d", version_name="v")
        v.add_frames(frames)
        ids = [d["id"] for d in v.frame_dicts()]
        assert ids[:4] == ["f0", "f1", "f2", "f3"] and ids[5] == "f5" and len(ids[4]) == 32
        assert v.ids("label == 'x'") == [] and v.count("mask.value == [9, 9, 9]") == 1
        assert v.count("mask.value == [24, 24, 24]") == 5 and v.count("roi.label == 'car'") == 1
        assert check_archive(ar) == []


# ------------------------------------------------------------------------------------ index keys

long_names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=12) | \
    st.sampled_from(["x" * 8, "x" * 9, "é" * 4, "é" * 5])


@settings(max_examples=150, deadline=None)
@given(st.lists(frame_dicts, max_size=4), st.lists(long_names, max_size=4), st.integers(0, 12))
def test_both_postings_give_the_same_index_keys(frames, ids, max_key_text):
    """A batch of normalized frames (ROIs included); small ``max_key_text`` so many keys are hashed."""
    normalized = [normalize_frame_dict(f) for f in frames]
    twins = [speedups.Postings(text_key, max_key_text), _fallback.Postings(text_key, max_key_text)]
    for postings in twins:
        for pos in reversed(range(len(normalized))):  # out of order, as the archive adds declined frames
            postings.add_record(pos, normalized[pos])
    assert twins[0].groups() == twins[1].groups()
    assert twins[0].id_keys(b"v", ids) == twins[1].id_keys(b"v", ids)


@pytest.mark.parametrize("values", [[[256, 0, 0, 1]], [[0, -1, 0, 1]]])
def test_both_postings_refuse_a_channel_outside_a_byte(values):
    rec = normalize_frame_dict({"id": "f", "sources": [{"uri": "a", "masks": [{"uri": "m", "values": []}]}]})
    rec["sources"][0]["masks"][0]["values"] = values  # past the Python rules, as a damaged record would be
    for twin in (speedups, _fallback):
        with pytest.raises(ValueError, match="outside 0..255"):
            twin.Postings(text_key, MAX_KEY_TEXT).add_record(0, rec)


# ------------------------------------------------------------------------------------ reading records
# Stored records with one value anywhere replaced, deleted or duplicated, as readers see them after
# unpacking: both frame_ok agree, and the Python twin's diagnosis names the damaged field (or the
# frame-wide rule it broke: unique source ids, the pixel total, both reported at ``sources``).

decodable = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.sampled_from([0, 255, 256, -1, 2**31, 2**50])
    | st.floats() | st.text(max_size=4) | st.sampled_from(["", "a.b", "alpha", "\x1b[31m"]),
    lambda kids: st.lists(kids, max_size=5) | st.dictionaries(st.text(max_size=3), kids, max_size=3), max_leaves=10)


def paths_in(value, path=()):
    yield path
    if type(value) is dict:
        for key, item in value.items():
            yield from paths_in(item, path + (key,))
    elif type(value) is list:
        for i, item in enumerate(value):
            yield from paths_in(item, path + (i,))


def shown_path(path) -> str:
    """A path as the diagnosis writes it: ``sources[0].masks[1].values[2]``, odd keys quoted (their repr
    cut to 60 characters, as long ids are)."""
    out = ""
    for step in path:
        quoted = repr(step) if len(repr(step)) <= 60 else repr(step)[:57] + "..."
        out += f"[{step}]" if type(step) is int else (f".{step}" if step.isidentifier() else f"[{quoted}]")
    return out.removeprefix(".")


ADDED_FIELDS = ["kind", "coverage", "sources", "meta", "label", "poly", "confidence", "width", "height", "values",
                "timestamp", "masks", "id", "uri", "rois", "context_id"]


@st.composite
def damaged_records(draw):
    """(record as unpacked, the damaged path): a value replaced, a key deleted, a list item doubled, or
    a field added where the record had none (mask kind and coverage, ROI sources and meta, ...)."""
    body = msgpack.unpackb(msgpack.packb(normalize_frame_dict(draw(frame_dicts))), raw=False)
    paths = list(paths_in(body))
    how = draw(st.sampled_from(["replace", "delete", "double", "add", "alpha"]))
    masks = [p for p in paths if len(p) > 1 and p[-2] == "masks"]
    path = draw(st.sampled_from(masks if how == "alpha" and masks else paths))
    target = body
    for step in path:
        target = target[step]
    if how in ("add", "alpha") and type(target) is dict:
        if how == "alpha":  # an alpha mask's coverage: the rule of two fields
            target.update(kind="alpha", coverage=draw(st.sampled_from([-1, 0, 7, 2**63 - 1, 2**63, 1.5]) | decodable))
        else:
            path += (draw(st.sampled_from(ADDED_FIELDS)),)
            target[path[-1]] = draw(st.sampled_from(["alpha", 0, 7, -1, 2**63]) | decodable)
        return msgpack.unpackb(msgpack.packb(body), raw=False, strict_map_key=True), path
    if not path:
        return draw(decodable), path
    parent = body
    for step in path[:-1]:
        parent = parent[step]
    if how == "delete" and type(parent) is dict:
        del parent[path[-1]]
    elif how == "double" and type(parent) is list:
        parent.insert(path[-1], parent[path[-1]])
    else:
        parent[path[-1]] = draw(decodable)
    return msgpack.unpackb(msgpack.packb(body), raw=False, strict_map_key=True), path


def verdicts(body):
    """frame_ok of both twins (or the exception each raised), and the Python twin's diagnosis."""
    out = []
    for twin in (speedups, _fallback):
        try:
            out.append(twin.frame_ok(body))
        except Exception as exc:  # noqa: BLE001 - the twins must fail alike too
            out.append(type(exc))
    return out


@settings(max_examples=400, deadline=None)
@given(damaged_records())
def test_both_frame_ok_agree_on_damaged_records_and_the_diagnosis_names_the_field(case):
    body, path = case
    compiled_ok, python_ok = verdicts(body)
    assert compiled_ok is python_ok
    problem = _fallback.frame_problem(body)
    assert (problem is None) == compiled_ok
    if problem is None:
        return
    fid = body.get("id") if type(body) is dict else None
    if type(fid) is str and fid:
        shown = repr(fid) if len(repr(fid)) <= 60 else repr(fid)[:57] + "..."  # long ids are cut
        assert problem.startswith(f"frame {shown}: ")
        problem = problem.removeprefix(f"frame {shown}: ")
    damaged = shown_path(path)
    holders = [shown_path(path[:n]) for n in range(1, len(path) + 1)]  # the damaged field and what holds it
    assert not path or any(problem.startswith(h + " ") for h in holders) \
        or problem.startswith((damaged + ".", damaged + "[")), (problem, damaged)


@settings(max_examples=200, deadline=None)
@given(hostile_frames() | frame_dicts)
def test_both_frame_ok_agree_on_hostile_frame_dicts(frame):
    """Frame dicts as given (tuples, bytes, huge ints and all), not normalized: the same verdicts."""
    compiled_ok, python_ok = verdicts(frame)
    assert compiled_ok is python_ok
    if compiled_ok in (True, False):
        assert (_fallback.frame_problem(frame) is None) == compiled_ok


# ------------------------------------------------------------------------------------ the build

def test_only_the_selector_imports_the_compiled_module():
    """Every import site goes through ``_accel``, so MASKSTORE_PUREPYTHON=1 reaches all of them."""
    package = Path(maskstore.__file__).parent
    importers = []
    for source in package.rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            names = [node.module or ""] + [a.name for a in node.names] if isinstance(node, ast.ImportFrom) else \
                [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.value] if isinstance(node, ast.Constant) and type(node.value) is str else []  # import_module
            if any(name.split(".")[-1] == "_speedups" for name in names):
                importers.append(source.name)
    assert importers == ["_accel.py"]


def package_copy(tmp_path: Path, with_build: bool) -> Path:
    """maskstore copied under ``tmp_path`` (without its demo images), with or without its build."""
    package = Path(maskstore.__file__).parent
    skip = ["demo", "__pycache__"] + ([] if with_build else ["*.so", "*.pyd"])
    shutil.copytree(package, tmp_path / "maskstore", ignore=shutil.ignore_patterns(*skip))
    return tmp_path / "maskstore"


# The copy only: an editable install's import hook would find the source tree's build for it.
ONLY_THE_COPY = "import sys; sys.meta_path[:] = [f for f in sys.meta_path if '__editable__' not in repr(f)]; "


def run_in(root: Path, script: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", ONLY_THE_COPY + script], cwd=root, capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHONPATH": str(root), "MASKSTORE_PUREPYTHON": "", **env})


def import_in(root: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Imports maskstore from the copy; prints the implementation chosen and whether _speedups was loaded."""
    return run_in(root, "import maskstore.records, maskstore._accel as a; "
                        "print(a.IMPLEMENTATION, 'maskstore._speedups' in sys.modules)", **env)


def test_a_missing_build_falls_back_to_python_with_a_warning_saying_how_to_rebuild(tmp_path):
    package_copy(tmp_path, with_build=False)
    result = import_in(tmp_path)
    assert result.stdout.split() == ["python", "False"], result.stderr
    assert "SpeedupsWarning: maskstore's compiled module _speedups is not built" in result.stderr
    assert "pip install -e ." in result.stderr and "MASKSTORE_PUREPYTHON=1" in result.stderr


def test_a_build_from_an_older_source_falls_back_to_python_with_a_warning(tmp_path):
    package = package_copy(tmp_path, with_build=True)
    assert import_in(tmp_path).stdout.split() == ["compiled", "True"]  # the copy's build is current
    with open(package / "_speedups.pyx", "a") as pyx:
        pyx.write("\n# edited after the build\n")
    result = import_in(tmp_path)
    assert result.stdout.split() == ["python", "True"], result.stderr
    assert "was built from an older _speedups.pyx" in result.stderr and "pip install -e ." in result.stderr
    asked = run_in(tmp_path, "import maskstore._accel as a; a.compiled()")
    assert "ImportError: maskstore's compiled module" in asked.stderr and "older _speedups.pyx" in asked.stderr


def test_purepython_set_leaves_the_compiled_module_unimported(tmp_path):
    package_copy(tmp_path, with_build=True)
    result = import_in(tmp_path, MASKSTORE_PUREPYTHON="1")
    assert result.stdout.split() == ["python", "False"] and "Warning" not in result.stderr, result.stderr


# ------------------------------------------------------------------------------ scan column rows
# ``chunk_rows`` both ways: for the records of a chunk, the compiled reader of record bytes and the
# Python twin (decode, walk the dicts) give the same stored chunk, byte for byte.

_META_KEYS = st.sampled_from(["a", "b", "c", "é", "x" * 40])  # few keys: paths meet across frames
_meta_leaves = st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**64 - 1), st.sampled_from([v for v in INT_EDGES if -2**63 <= v < 2**64]),
                         st.integers(2**53 - 2, 2**53 + 2), st.floats(allow_nan=False, width=64),
                         st.floats(allow_nan=False, width=32), st.sampled_from(["", "s", "t", "é" * 40, "x" * 300]))
_metas = st.recursive(_meta_leaves, lambda kids: st.one_of(st.lists(kids, max_size=3),
                                                           st.dictionaries(_META_KEYS, kids, max_size=4)), max_leaves=10)
_many_values = st.lists(st.tuples(st.sampled_from([0, 1, 7, 255]), st.integers(0, 255), st.sampled_from([0, 3, 255]),
                                  st.integers(0, 2**40)).map(list), max_size=150)
_row_masks = st.lists(st.builds(lambda vals: {"uri": "m.png", "values": vals} if vals is not None else {"uri": "m.png"},
                                st.none() | _many_values), max_size=3)
_row_frames = st.fixed_dictionaries(
    {"id": st.text(max_size=4), "timestamp": st.integers(-2**63, 2**63 - 1),
     "context_id": st.sampled_from(["d1", "d2", "é", ""])},
    optional={"meta": st.dictionaries(_META_KEYS, _metas, max_size=4),
              "sources": st.lists(st.builds(lambda ms: {"uri": "a.png", "masks": ms}, _row_masks), max_size=2),
              "rois": st.lists(st.builds(lambda label: {"label": label}, st.lists(st.text(max_size=3), max_size=2)),
                               max_size=2)})


def _chunk_both_ways(base, rows):
    """The stored fields of ``build_chunk(base, rows)`` with the compiled and the Python ``chunk_rows``."""
    from unittest import mock
    from maskstore.query import columns
    encoded = []
    for twin in (speedups.chunk_rows, _fallback.chunk_rows):
        with mock.patch.object(columns, "chunk_rows", twin):
            encoded.append(columns.encode_fields(columns.build_chunk(base, rows)))
    return encoded


@settings(max_examples=300, deadline=None)
@given(st.lists(_row_frames, max_size=12), st.sets(st.integers(0, 4095), min_size=12, max_size=12),
       st.sampled_from([0, 4096 * 3]), st.booleans())
def test_both_chunk_rows_give_the_same_chunk(frames, seqs, base, compiled_encoder):
    """Meta of every type (ints beyond 2**53 and int64, float32, nested dicts, lists, nulls), missing
    fields, masks without values and with many (repeated) values; records from either encoder."""
    normalized = []
    for i, frame in enumerate(frames):
        try:
            normalized.append(normalize_frame_dict(dict(frame, id=f"{frame['id']}{i}")))
        except FrameError:
            continue
    rows = list(zip([base + s for s in sorted(seqs)], records.encode_frames(normalized)))
    if compiled_encoder:  # the bytes the compiled encoder gives wherever it takes the frame
        postings = speedups.Postings(text_key, MAX_KEY_TEXT)
        fast, _, _ = speedups.encode_common(normalized, records.FRAME_HEAD, content_type_of, {}, postings)
        rows = [(seq, record if made is None else made) for (seq, record), made in zip(rows, fast)]
    compiled, python = _chunk_both_ways(base, rows)
    assert compiled == python
    assert not _handed_over(base, rows)  # what writers write, the compiled reader reads itself
    assert [records.decode_frame(record) for _, record in rows] == normalized  # records as the readers see them


def _handed_over(base, rows):
    """Whether the compiled ``chunk_rows`` passes these rows to the Python twin."""
    from unittest import mock
    with mock.patch.object(speedups, "_python_chunk_rows", wraps=_fallback.chunk_rows) as twin:
        speedups.chunk_rows(base, 4096, rows)
    return twin.called


def test_chunk_rows_leaves_a_key_given_twice_to_the_python_twin():
    """msgpack maps may name a key twice (no maskstore writer does): a dict keeps the last value at
    the first one's place, which only decoding gives, so the compiled reader hands such chunks over."""
    def record(*pairs):
        body = b"".join(msgpack.packb(k) + msgpack.packb(v) for k, v in pairs)
        return records.FRAME_HEAD + bytes([0x80 | len(pairs)]) + body
    base = [("id", "f"), ("timestamp", 5), ("context_id", "c"), ("sources", []), ("rois", [])]
    for pairs in ([*base, ("meta", {"a": {"x": 1}}), ("meta", {"a": 2})],
                  [*base, ("meta", {})], [*base[1:], ("id", "g"), ("meta", {}), ("id", "h")]):
        rows = [(0, record(*pairs)), (3, records.encode_frame(normalize_frame_dict({"id": "g", "meta": {"a": 1.5}})))]
        compiled, python = _chunk_both_ways(0, rows)
        assert compiled == python and _handed_over(0, rows) == (pairs[-1][0] != "meta" or pairs[-2][0] == "meta")
    twice_in_meta = record(*base, ("meta", {}))[:-1] + b"\x82\xa1a\x01\xa1a\xc0"  # {"a": 1, "a": None}
    assert _chunk_both_ways(0, [(0, twice_in_meta)])[0] == _chunk_both_ways(0, [(0, twice_in_meta)])[1]
    assert msgpack.unpackb(twice_in_meta[2:])["meta"] == {"a": None} and _handed_over(0, [(0, twice_in_meta)])


def test_chunk_rows_wants_the_rows_of_its_chunk_in_seq_order():
    rec = records.encode_frame(normalize_frame_dict({"id": "f"}))
    for rows in ([(5, rec), (2, rec)], [(4096, rec)], [(3, rec), (3, rec)]):
        with pytest.raises(ValueError):
            speedups.chunk_rows(0, 4096, rows)
