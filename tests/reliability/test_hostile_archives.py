"""Hostile archives: a valid archive with one record tampered by raw LMDB writes.

Whatever the tampering (flipped bytes, values of the wrong type, huge or negative numbers, nesting
10,000 deep, lying column chunks, index entries pointing nowhere, blobs that do not match their hash),
the Python API and every CLI command either answer or fail with ``ArchiveError`` (CLI: one line
"Error: ..." and exit 1) — never another exception, never a hang, never a huge allocation. And when
``check`` finds nothing wrong, queries answer exactly what the records say.

Each probe runs in a child process with a 4 GiB heap limit (RLIMIT_DATA) and a timeout, so a crash, a
runaway allocation or a hang fails one example instead of the suite.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Any

import lmdb
import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from maskstore import Archive
from maskstore.layout import CHUNK_BITS, u64

from .helpers import child_env, edit_postings, frame_records, put_frame_records
from .helpers import cli as plain_cli

TESTS = Path(__file__).resolve().parents[1]
DATASET, VERSION = "d", "v1"
LABELS = {(0, 0, 0): ["background"], (1, 1, 1): ["person"], (2, 2, 2): ["car"]}
QUERIES = ["", 'label == "car"', 'label == "person" or meta.city == "a"', "timestamp > 2",
           'coverage("person") > 0.1', 'not label == "person"', 'context_id == "c1"', "meta.n >= 2 and has(roi)",
           'id == "f3"', 'roi.label == "car" and roi.confidence > 0.5', "meta.d.k == 1", 'meta.city ~ "*"',
           "has(mask) order by meta.f desc limit 4", "mask.value == [2, 2, 2]"]
CLI_COMMANDS = [["info"], ["check"], ["query"], ["query", "--count"], ["query", "--format", "jsonl"],
                ["query", "--format", "table", 'label == "car"'], ["stats"], ["labels"], ["export", "{out}"],
                ["render", "f1", "-o", "{out}.png"]]


def cli(*args: object) -> subprocess.CompletedProcess[str]:
    """The installed command, with MASKSTORE_TRACEBACK=1: a bug shows as a traceback, not as the
    command line's catch-all "Error: ... (unexpected)" line."""
    return plain_cli(*args, env=child_env(MASKSTORE_TRACEBACK="1"))


def build_template(path: Path, images: Path) -> None:
    """Six frames with embedded 8x6 images and masks, meta of every kind, ROIs; columns stored."""
    images.mkdir(parents=True, exist_ok=True)
    frames = []
    for i in range(6):
        source, mask = images / f"s{i}.png", images / f"m{i}.png"
        Image.fromarray(np.full((6, 8, 3), 40 * i, np.uint8)).save(source)
        Image.fromarray(((np.arange(48).reshape(6, 8) + i) % 3).astype(np.uint8)).save(mask)  # values 0, 1, 2
        frames.append({"id": f"f{i}", "timestamp": i, "context_id": f"c{i % 2}",
                       "meta": {"city": "ab"[i % 2], "n": i, "f": i / 2, "flag": i % 2 == 0, "l": [1, i],
                                "d": {"k": i % 2}, "big": 2**62 + i},
                       "sources": [{"id": "0", "uri": str(source), "masks": [{"id": "00", "uri": str(mask)}]}],
                       "rois": [{"label": ["car" if i % 3 else "person"], "confidence": i / 6}]})
    with Archive(path, jobs=1) as ar:
        v = ar.create_version(dataset_name=DATASET, version_name=VERSION)
        v.set_masks_labels(LABELS)
        v.add_frames(frames, embed=True)
        v.count("")  # stores the column chunks, so tampering can reach them


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hostile")
    path = root / "template.maskstore"
    build_template(path, root / "images")
    return path


def copy_of(template: Path, tmp_path: Path, name: str = "t.maskstore") -> Path:
    path = tmp_path / name
    path.write_bytes(template.read_bytes())
    return path


# ------------------------------------------------------------------------------------ raw access

def raw_env(path: Path) -> lmdb.Environment:
    return lmdb.open(str(path), subdir=False, max_dbs=32, lock=False)


def raw_entries(path: Path, db: str) -> list[tuple[bytes, bytes]]:
    """The entries of ``db``; of ``frames``, its records one by one (out of their groups)."""
    env = raw_env(path)
    with env.begin() as txn:
        handle = env.open_db(db.encode(), txn=txn, create=False)
        items = frame_records(txn, handle) if db == "frames" else [(bytes(k), bytes(v)) for k, v in txn.cursor(db=handle)]
    env.close()
    return items


def raw_write(path: Path, db: str, puts: list[tuple[bytes, bytes]] = (), deletes: list[tuple[bytes, bytes | None]] = ()) -> None:
    env = raw_env(path)
    with env.begin(write=True) as txn:
        handle = env.open_db(db.encode(), txn=txn, create=False)
        if db == "frames":  # records one by one, in their groups
            put_frame_records(txn, handle, puts, [key for key, _ in deletes])
        else:
            for key, value in deletes:
                txn.delete(key, value or b"", db=handle)
            for key, value in puts:
                txn.put(key, value, db=handle)
    env.close()


def version_prefix(path: Path) -> bytes:
    return raw_entries(path, "versions")[0][0]


# ------------------------------------------------------------------------------------ hostile values

def deep(opener: bytes, depth: int, leaf: bytes = b"\x00") -> bytes:
    return opener * depth + leaf


HOSTILE_VALUES: dict[str, bytes] = {
    "lists-10k-deep": deep(b"\x91", 10_000),
    "lists-1000-deep": deep(b"\x91", 1000),
    "maps-1000-deep": deep(b"\x81\xa1k", 1000),
    "lists-300-deep": deep(b"\x91", 300),
    "uint64-max": msgpack.packb(2**64 - 1),
    "int64-min": msgpack.packb(-(2**63)),
    "2**36": msgpack.packb(2**36),
    "minus-one": msgpack.packb(-1),
    "string": msgpack.packb("x"),
    "escape-string": msgpack.packb("\x1b[2J\x1b]0;pwned\x07"),
    "null": msgpack.packb(None),
    "empty-list": msgpack.packb([]),
    "empty-map": msgpack.packb({}),
    "float": msgpack.packb(1.5),
    "nan": msgpack.packb(float("nan")),
    "bytes": msgpack.packb(b"\x00\x01", use_bin_type=True),
    "true": msgpack.packb(True),
    "int-key-map": msgpack.packb({1: 2}),
    "list-of-ints": msgpack.packb([1, 2, 3, 4]),
    "value-like": msgpack.packb([[1, 1, 1, 2**63], [2, 2, 2, 2**63]]),
    "ext": msgpack.packb(msgpack.ExtType(1, b"x")),
}
SENTINEL = "\ufffe-hostile-sentinel-\ufffe"


def paths_of(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path into a decoded msgpack structure (dict keys and list indexes), the root included."""
    out = [prefix]
    if isinstance(node, dict):
        for key, item in node.items():
            out += paths_of(item, prefix + (key,))
    elif isinstance(node, list):
        for i, item in enumerate(node[:6]):
            out += paths_of(item, prefix + (i,))
    return out


def splice(body: bytes, path: tuple, raw: bytes) -> bytes:
    """``body`` (msgpack) with the value at ``path`` replaced by the raw msgpack bytes ``raw``."""
    node = msgpack.unpackb(body, raw=False, strict_map_key=False)
    if not path:
        return raw
    parent = node
    for part in path[:-1]:
        parent = parent[part]
    parent[path[-1]] = SENTINEL
    packed = msgpack.packb(node, use_bin_type=True)
    return packed.replace(msgpack.packb(SENTINEL), raw, 1)


HEADERS = {"frames": 2, "versions": 2}  # bytes before the msgpack body (column fields are raw arrays)


def structured(value: bytes, db: str, choose: Any, raw: bytes) -> bytes:
    head = HEADERS[db]
    body = value[head:]
    paths = paths_of(msgpack.unpackb(body, raw=False, strict_map_key=False))
    return value[:head] + splice(body, choose(paths), raw)


def flip(value: bytes, rng: random.Random, flips: int) -> bytes:
    data = bytearray(value)
    for _ in range(flips):
        if data:
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    return bytes(data)


# ------------------------------------------------------------------------------------ the probe

def probe(path: str, out: str) -> None:
    """Run every API call and CLI command on ``path``; print one JSON object of outcomes.

    Allowed: an answer, or ArchiveError (CLI: exit 1, "Error: ..."). Anything else exits 2 with the
    traceback. Runs in a child process under a heap limit."""
    import resource
    resource.setrlimit(resource.RLIMIT_DATA, (4 << 30, 4 << 30))  # the archive's file map does not count
    os.environ["MASKSTORE_TRACEBACK"] = "1"  # a bug raises instead of becoming the CLI's catch-all line
    from click.testing import CliRunner

    from maskstore import Archive, ArchiveError, MaskstoreError, QueryError, VersionNotFoundError, render
    from maskstore.check import check_archive
    from maskstore.cli import main
    from maskstore.query.engine import prepare
    from maskstore.query.evaluate import Labels, compile_expr
    from maskstore.summary import label_stats

    report: dict[str, Any] = {"api": {}, "cli": {}}

    # A version record whose id field disagrees with its key lists a version that then "no longer
    # exists" (Archive.versions trusts the field); meta types that lie make queries unknown-field
    # QueryErrors. check reports both.
    refused = (ArchiveError, VersionNotFoundError, QueryError)

    def attempt(name: str, fn: Any, allowed: type | tuple[type, ...] = refused) -> Any:
        try:
            result = fn()
        except allowed as exc:
            report["api"][name] = f"refused: {exc}"
            return None
        report["api"][name] = "ok"
        return result

    try:
        with Archive(path, readonly=True) as ar:
            problems = check_archive(ar)  # never raises: it reports
            report["check_errors"] = [p.message for p in problems if p.severity == "error"]
            versions = attempt("versions", ar.versions) or []
            for v in versions:
                report["reference"] = attempt("reference", lambda: reference(v, prepare, Labels, compile_expr))
                report["ids"] = {q: attempt(f"ids {q}", lambda q=q: v.ids(q)) for q in QUERIES}
                report["counts"] = {q: attempt(f"count {q}", lambda q=q: v.count(q)) for q in QUERIES}
                attempt("query_dicts", lambda: [json.dumps(d) for d in v.query_dicts("")])
                attempt("frames", lambda: list(v.query('label == "car"')))
                attempt("stats", lambda: label_stats(v))
                attempt("len", lambda: len(v))
                for fid in report["ids"][""] or []:
                    # a lost id entry makes the frame not found (FrameNotFoundError), which check reports
                    frame = attempt(f"get {fid}", lambda fid=fid: v.get_frame(fid), MaskstoreError)
                    if frame is not None:
                        attempt(f"render {fid}", lambda f=frame: render(f, v), MaskstoreError)
                attempt("export", lambda: v.export(out, mode="segmentation", jobs=1), MaskstoreError)
    except ArchiveError as exc:
        report["open"] = f"refused: {exc}"
    except BaseException:
        print(traceback.format_exc())
        sys.exit(2)
    runner = CliRunner()
    for command in CLI_COMMANDS:
        args = [command[0], path, *(a.format(out=out + "-cli") for a in command[1:])]
        result = runner.invoke(main, args)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            print(f"maskstore {' '.join(args)}:\n" + "".join(traceback.format_exception(result.exception)))
            sys.exit(2)
        report["cli"][" ".join(command)] = [result.exit_code, result.stdout, result.stderr]
    print(json.dumps(report))


def reference(v: Any, prepare: Any, labels_type: Any, compile_expr: Any) -> dict[str, list[str]]:
    """What each query answers by the obviously-correct path: every record through the closures."""
    rec = v.record()
    labels = labels_type(rec["mask_labels"])
    records = [r for _, r in v.iter_records()]
    out = {}
    for text in QUERIES:
        query = prepare(text, rec["meta_types"])
        test = compile_expr(query.where, labels) if query.where is not None else (lambda r: True)
        out[text] = [r["id"] for r in records if test(r)]
    return out


def run_probe(path: Path) -> dict[str, Any]:
    code = (f"import sys; sys.path.insert(0, {str(TESTS)!r}); "
            "from reliability.test_hostile_archives import probe; probe(sys.argv[1], sys.argv[2])")
    try:
        result = subprocess.run([sys.executable, "-c", code, str(path), str(path.with_suffix(".out"))],
                                capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        pytest.fail("the probe hung (no answer in 300 s)")
    how = f"killed by signal {-result.returncode}" if result.returncode < 0 else f"exit {result.returncode}"
    assert result.returncode == 0, f"{how}\n{result.stdout[-6000:]}\n{result.stderr[-4000:]}"
    return json.loads(result.stdout.strip().splitlines()[-1])


def assert_sound(report: dict[str, Any]) -> None:
    """Every CLI failure is one "Error:" line with exit 1; JSON lines stay JSON; no raw escapes; and an
    archive ``check`` passes answers every query exactly as the records do."""
    for command, (code, stdout, stderr) in report["cli"].items():
        assert code in (0, 1), (command, code, stderr)
        assert "\x1b" not in stdout + stderr, (command, stdout, stderr)
        if code == 1 and command not in ("check", "export {out}"):
            assert stderr.startswith("Error: ") and stderr.count("\n") == 1, (command, stderr)
        if command == "query --format jsonl" and code == 0:
            for line in stdout.splitlines():
                json.loads(line)
    if "open" in report or report["check_errors"]:
        return
    assert all(outcome == "ok" for name, outcome in report["api"].items()
               if not name.startswith(("render", "export"))), report["api"]
    for text, want in (report.get("reference") or {}).items():
        got = report["ids"][text]
        if "limit" in text:  # the reference ignores order and limit: the top ones are some of its frames
            assert set(got) <= set(want) and len(got) == min(len(want), 4), (text, got, want)
        else:
            assert got == want, (text, got, want)
        assert report["counts"][text] == len(got), (text, report["counts"][text], got)
    for command in ("check", "query --count", "stats", "info"):
        assert report["cli"][command][0] == 0, (command, report["cli"][command])


# ------------------------------------------------------------------------------------ tampering

TARGETS = ["frames", "versions", "columns", "ix_value", "ix_context", "ix_roi", "frame_ids", "blobs"]


@st.composite
def tamperings(draw: st.DrawFn) -> tuple[str, str, Any]:
    db = draw(st.sampled_from(TARGETS))
    return db, draw(st.sampled_from(ways_to_tamper(db))), draw(st.randoms(use_true_random=False))


def ways_to_tamper(db: str) -> list[str]:
    return (["structured"] if db in HEADERS else []) + ["flip", "seq", "delete", "truncate"]


def tamper(path: Path, db: str, how: str, rng: random.Random) -> str:
    """Change one entry of ``db``; returns what was done, for the failure message."""
    key, value = rng.choice(raw_entries(path, db))
    if how == "delete":
        raw_write(path, db, deletes=[(key, None)])
        return f"deleted {db} {key!r}"
    if how == "seq":  # move the entry to, or make it point at, an absurd seq
        seq = rng.choice([2**36, 2**63, 2**64 - 1, 5000, 7])
        if db in ("frames", "columns") or db.startswith("ix_"):
            new_key = (key[:8] + u64(seq if db == "frames" else seq >> CHUNK_BITS) + key[16:] if not db.startswith("ix_")
                       else key[:-8] + u64(seq >> CHUNK_BITS))  # columns: a field; ix_*: an index block
            raw_write(path, db, puts=[(new_key, value)])
            return f"copied {db} {key!r} to {new_key!r}"
        if db in ("versions", "blobs"):
            how = "flip"
        else:
            raw_write(path, db, puts=[(key, u64(seq))])
            return f"{db} {key!r} now points at seq {seq}"
    if how == "structured":
        name, raw = rng.choice(list(HOSTILE_VALUES.items()))
        new = structured(value, db, rng.choice, raw)
        raw_write(path, db, puts=[(key, new)])
        return f"{db} {key!r}: a value replaced by {name}"
    new = flip(value, rng, rng.choice([1, 2, 8])) if how == "flip" else value[: rng.randrange(len(value) + 1)]
    raw_write(path, db, puts=[(key, new)])
    return f"{db} {key!r}: {how}"


@pytest.mark.slow
@settings(max_examples=60, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(tamperings())
def test_a_tampered_record_is_answered_or_refused_never_a_crash(template: Path, tmp_path: Path,
                                                                case: tuple[str, str, Any]) -> None:
    db, how, rng = case
    path = copy_of(template, tmp_path, f"{db}-{how}-{random.Random(id(rng)).random()}.maskstore")
    what = tamper(path, db, how, rng)
    report = run_probe(path)
    try:
        assert_sound(report)
    except AssertionError as exc:
        raise AssertionError(f"after tampering: {what}\n{exc}") from None


# ------------------------------------------------------------------------------------ the reported cases

def frame_record(path: Path, seq: int) -> bytes:
    return dict(raw_entries(path, "frames"))[version_prefix(path) + u64(seq)]


def replace_in_frame(path: Path, seq: int, at: tuple, raw: bytes) -> None:
    key = version_prefix(path) + u64(seq)
    raw_write(path, "frames", puts=[(key, structured(frame_record(path, seq), "frames", lambda _: at, raw))])


REPORTED = {
    "pixel-count-beyond-int64": (("sources", 0, "masks", 0, "values", 0, 3), msgpack.packb(2**64 - 1)),
    "negative-pixel-count": (("sources", 0, "masks", 0, "values", 0, 3), msgpack.packb(-5)),
    "roi-label-not-text": (("rois", 0, "label", 0), msgpack.packb(7)),
    "meta-key-not-text": (("meta",), msgpack.packb({1: 2})),
    "meta-1000-deep": (("meta", "l"), deep(b"\x91", 1000)),
    "meta-bytes": (("meta", "city"), msgpack.packb(b"x", use_bin_type=True)),
    "source-id-missing-uri-int": (("sources", 0, "uri"), msgpack.packb(3)),
}


def mark_dirty(path: Path, seq: int) -> None:
    """What a write does to a chunk: its columns get rebuilt from the records by the next query."""
    raw_write(path, "dirty", puts=[(version_prefix(path) + u64(seq >> CHUNK_BITS), b"")])


def assert_answers_or_one_error_line(result: subprocess.CompletedProcess[str], command: list) -> None:
    assert result.returncode in (0, 1) and "Traceback" not in result.stderr, (command, result.stderr[-3000:])
    if result.returncode:
        assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1, (command, result.stderr)


@pytest.mark.parametrize("case", REPORTED, ids=list(REPORTED))
def test_reported_hostile_frame_records_are_archive_errors_in_every_command(template: Path, tmp_path: Path,
                                                                            case: str) -> None:
    path = copy_of(template, tmp_path)
    replace_in_frame(path, 1, *REPORTED[case])
    with Archive(path, readonly=True) as ar:
        from maskstore.check import check_archive
        assert any("frame seq 1" in p.message for p in check_archive(ar)), case
    # The stored columns still answer counts and stats; reading the record is refused.
    for command in (["query", "--count"], ["stats"], ["export", tmp_path / "out"]):
        assert_answers_or_one_error_line(cli(command[0], path, *command[1:]), command)
    result = cli("query", path, "--format", "jsonl")
    assert result.returncode == 1 and result.stderr.startswith("Error: frame") and "Traceback" not in result.stderr, \
        result.stderr[-3000:]
    mark_dirty(path, 1)  # now the columns are rebuilt from the records: refused too, never a crash
    for command in (["query", "--count"], ["stats"], ["query", 'meta.n > 1']):
        result = cli(command[0], path, *command[1:])
        assert result.returncode == 1 and result.stderr.startswith("Error: frame"), (command, result.stderr[-3000:])


NAMED = {  # a damaged field, what it becomes, and how the error names it (after "frame 'f1': ")
    "negative-pixel-count": (("sources", 0, "masks", 0, "values", 0, 3), -5,
                             r"sources\[0\]\.masks\[0\]\.values\[0\] is \[\d+, \d+, \d+, -5\] "
                             r"\(expected \[r, g, b, count\]"),
    "mask-value-short": (("sources", 0, "masks", 0, "values", 0), [1, 2],
                         r"sources\[0\]\.masks\[0\]\.values\[0\] is \[1, 2\] \(expected \[r, g, b, count\]"),
    "source-uri-int": (("sources", 0, "uri"), 3, r"sources\[0\]\.uri is 3 \(expected text\)"),
    "roi-label-not-text": (("rois", 0, "label", 0), 7, r"rois\[0\]\.label\[0\] is 7 \(expected text\)"),
    "source-width-negative": (("sources", 0, "width"), -1, r"sources\[0\]\.width is -1 \(expected none or an integer"),
    "meta-nan": (("meta", "d", "k"), float("nan"), r"meta\.d\.k is NaN \(expected a number\)"),
    "timestamp-text": (("timestamp",), "\x1b[2J", r"timestamp is '\\x1b\[2J' \(expected an integer"),
}


@pytest.mark.parametrize("case", NAMED, ids=list(NAMED))
def test_a_damaged_frame_record_is_refused_naming_the_field_and_value(template: Path, tmp_path: Path,
                                                                      case: str) -> None:
    """The CLI's one error line and ``check`` say which field of which frame holds what."""
    path = copy_of(template, tmp_path)
    at, value, field = NAMED[case]
    frame = msgpack.unpackb(frame_record(path, 1)[2:])["id"]
    replace_in_frame(path, 1, at, msgpack.packb(value))
    named = re.escape(f"record is damaged: frame {frame!r}: ") + field
    result = cli("query", path, "--format", "jsonl")
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr[-3000:]
    assert re.match(r"Error: frame seq 1 " + named, result.stderr), result.stderr
    checked = cli("check", path)
    assert checked.returncode == 1 and re.search(r"frame seq 1 " + named, checked.stdout), checked.stdout


VERSION_CASES = {
    "mask-label-value-not-rgb": (("mask_labels", 0, "value"), msgpack.packb([1, 2])),
    "mask-label-value-huge": (("mask_labels", 0, "value", 0), msgpack.packb(2**64 - 1)),
    "labels-not-text": (("mask_labels", 0, "labels"), msgpack.packb([1])),
    "label-colors-not-rgb": (("label_colors",), msgpack.packb({"car": "red"})),
    "meta-types-unknown": (("meta_types",), msgpack.packb({"city": 5})),
    "next-seq-negative": (("next_seq",), msgpack.packb(-1)),
    "count-negative": (("count",), msgpack.packb(-3)),
    "parent-text": (("parent",), msgpack.packb("x")),
}


@pytest.mark.parametrize("case", VERSION_CASES, ids=list(VERSION_CASES))
def test_hostile_version_records_are_archive_errors(template: Path, tmp_path: Path, case: str) -> None:
    path = copy_of(template, tmp_path)
    key, value = raw_entries(path, "versions")[0]
    at, raw = VERSION_CASES[case]
    raw_write(path, "versions", puts=[(key, structured(value, "versions", lambda _: at, raw))])
    for command in (["query", "--count", 'label == "car"'], ["stats"], ["info"], ["labels"], ["check"]):
        result = cli(command[0], path, *command[1:])
        assert result.returncode == 1 and "Traceback" not in result.stderr, (command, result.stderr[-3000:])
    assert "version" in cli("check", path).stdout


def test_a_frame_seq_of_2_36_is_refused_without_allocating(template: Path, tmp_path: Path) -> None:
    """A record at seq 2**36 and its column chunk: dense per-seq arrays would take 64 GiB."""
    path = copy_of(template, tmp_path)
    prefix = version_prefix(path)
    seq = 2**36
    raw_write(path, "frames", puts=[(prefix + u64(seq), frame_record(path, 0))])
    chunk0 = prefix + u64(0)
    raw_write(path, "columns", puts=[(prefix + u64(seq >> CHUNK_BITS) + key[16:], value)
                                     for key, value in raw_entries(path, "columns") if key.startswith(chunk0)])
    limit = "import resource; resource.setrlimit(resource.RLIMIT_DATA, (4 << 30, 4 << 30)); "
    for command in (["query", "--count"], ["query", 'meta.n > 1'], ["stats"]):
        result = subprocess.run([sys.executable, "-c", limit + "from maskstore.cli import main; main()", *command[:1],
                                 str(path), *command[1:]], capture_output=True, text=True, timeout=120,
                                env=child_env(MASKSTORE_TRACEBACK="1"))
        assert result.returncode == 1 and result.stderr.startswith("Error: "), (command, result.stderr[-3000:])
        assert "68719476736" in result.stderr or "next_seq" in result.stderr, result.stderr
    result = cli("check", path)
    assert result.returncode == 1 and "68719476736" in result.stdout, result.stdout


def lie_in_chunk(path: Path, change: Any) -> None:
    """Rewrite chunk 0 of the version, fields as ``columns.encode_fields`` stores them and its row of
    the version's summary, after ``change`` edited a writable copy of it."""
    from maskstore.query import columns
    prefix = version_prefix(path)
    key = prefix + u64(0)
    stored = columns.decode_fields(0, {k[16:]: v for k, v in raw_entries(path, "columns") if k.startswith(key)})
    copy = lambda col: columns.StrColumn(list(col.uniques), col.codes.copy()) if isinstance(col, columns.StrColumn) \
        else columns.ValueColumn(col.kind, col.values.copy(), col.present.copy())  # noqa: E731
    chunk = columns.Chunk(0, stored.present.copy(), stored.timestamp.copy(), copy(stored.ids), copy(stored.context),
                          stored.n_masks.copy(), stored.n_rois.copy(), stored.value_offsets.copy(),
                          stored.value_keys.copy(), stored.value_counts.copy(),
                          {path: copy(col) for path, col in stored.meta.items()})
    change(chunk)
    summary = np.array([(0, *chunk.span())], columns.SUMMARY_ROW).tobytes()  # the version's one chunk, as it now is
    raw_write(path, "columns", puts=[(key + name, value) for name, value in columns.encode_fields(chunk).items()] +
              [(prefix, summary)])


def drop_row(chunk: Any, row: int = 2) -> None:
    """A well-formed chunk without the frame at ``row``: every array agrees with every other, only the
    records disagree (the frame is still there)."""
    chunk.present[row] = False
    chunk.ids.codes[row] = chunk.context.codes[row] = -1
    chunk.n_masks[row] = chunk.n_rois[row] = 0
    start, stop = chunk.value_offsets[row], chunk.value_offsets[row + 1]
    chunk.value_keys = np.concatenate([chunk.value_keys[:start], chunk.value_keys[stop:]])
    chunk.value_counts = np.concatenate([chunk.value_counts[:start], chunk.value_counts[stop:]])
    chunk.value_offsets[row + 1:] -= stop - start
    for col in chunk.meta.values():
        if hasattr(col, "codes"):
            col.codes[row] = -1
        else:
            col.present[row] = False
            if col.kind == "present":
                col.values[row] = False


def swap_value_keys(chunk: Any) -> None:
    chunk.value_keys[chunk.value_keys == 0x010101] = 0x020202  # every "person" pixel now claims to be "car"


def test_a_chunk_whose_present_bits_disagree_with_the_records_is_refused(template: Path, tmp_path: Path) -> None:
    """Before: `query --count` said 5 with exit 0 while the version holds 6 frames."""
    path = copy_of(template, tmp_path)
    lie_in_chunk(path, drop_row)
    for command in (["query", "--count"], ["query", "meta.n >= 0"], ["stats"]):
        result = cli(command[0], path, *command[1:])
        assert result.returncode == 1 and result.stderr.startswith("Error: ") and "scan columns" in result.stderr, \
            (command, result.stdout, result.stderr)
    result = cli("check", path)
    assert result.returncode == 1 and "do not match their records" in result.stdout, result.stdout


def summary_of(path: Path) -> bytes:
    return dict(raw_entries(path, "columns"))[version_prefix(path)]


@pytest.mark.parametrize("damage", ["truncated", "a byte flipped", "fewer frames", "a later first row",
                                    "a chunk more", "no chunks"])
def test_a_torn_or_tampered_column_summary_is_an_archive_error_and_a_check_finding(template: Path, tmp_path: Path,
                                                                                   damage: str) -> None:
    """The summary stands in for every chunk's ``present`` when a query loads columns: each way it can
    lie is refused by the query (never a wrong answer) and reported by check; repair rebuilds it."""
    path = copy_of(template, tmp_path)
    good = summary_of(path)
    assert good == bytes(8) + (6).to_bytes(4, "little") + (0).to_bytes(2, "little") + (5).to_bytes(2, "little")
    value = {"truncated": good[:-1], "a byte flipped": good[:8] + bytes([good[8] ^ 0x40]) + good[9:],
             "fewer frames": good[:8] + (5).to_bytes(4, "little") + good[12:],
             "a later first row": good[:12] + (1).to_bytes(2, "little") + good[14:],
             "a chunk more": good + (1).to_bytes(8, "little") + good[8:], "no chunks": b""}[damage]
    raw_write(path, "columns", puts=[(version_prefix(path), value)])
    for command in (["query", 'context_id == "c1"'], ["query", "--count"], ["query", 'label == "car"']):
        result = cli(command[0], path, *command[1:])
        assert result.returncode == 1 and result.stderr.startswith("Error: "), (command, result.stdout, result.stderr)
        assert "scan column" in result.stderr, result.stderr
    result = cli("check", path)
    assert result.returncode == 1 and "scan column summary" in result.stdout, result.stdout
    assert cli("check", "--repair", path).returncode == 0
    assert cli("query", path, 'context_id == "c1"').stdout.split() == ["f1", "f3", "f5"]


def test_check_finds_a_well_formed_chunk_that_lies_about_mask_values(template: Path, tmp_path: Path) -> None:
    """What loading cannot see cheaply (which values a frame holds), check compares with the records."""
    path = copy_of(template, tmp_path)
    lie_in_chunk(path, swap_value_keys)
    result = cli("check", path)
    assert result.returncode == 1 and "do not match their records" in result.stdout, result.stdout


def test_a_chunk_with_broken_offsets_is_an_archive_error(template: Path, tmp_path: Path) -> None:
    path = copy_of(template, tmp_path)
    lie_in_chunk(path, lambda chunk: setattr(chunk, "value_offsets", np.arange(4097, dtype=np.int64)[::-1].copy()))
    for command in (["query", "--count", 'coverage("car") > 0.1'], ["stats"]):
        result = cli(command[0], path, *command[1:])
        assert result.returncode == 1 and result.stderr.startswith("Error: "), (command, result.stderr[-3000:])


def test_an_index_entry_pointing_at_no_frame_is_an_archive_error(template: Path, tmp_path: Path) -> None:
    path = copy_of(template, tmp_path)
    prefix = version_prefix(path)
    env = raw_env(path)
    with env.begin(write=True) as txn:
        edit_postings(txn, env.open_db(b"ix_context", txn=txn, create=False), add=[(prefix + b"c1", u64(4000))])
    env.close()
    for command in (["query", 'context_id == "c1"'], ["query", "--format", "jsonl", 'context_id == "c1"'],
                    ["query", 'context_id == "c1" and meta.n > 0']):
        result = cli(command[0], path, *command[1:])
        assert result.returncode == 1 and result.stderr.startswith("Error: "), (command, result.stderr[-3000:])
        assert "ix_context" in result.stderr and "check --repair" in result.stderr, result.stderr
    raw_write(path, "frame_ids", puts=[(prefix + b"f2", u64(2**36))])
    result = cli("query", path, 'id == "f2"')
    assert result.returncode == 1 and "frame_ids" in result.stderr, result.stderr


# ------------------------------------------------------------------------------------ blobs

def blob_of(path: Path, frame_seq: int, what: str) -> bytes:
    rec = msgpack.unpackb(frame_record(path, frame_seq)[2:], raw=False)
    source = rec["sources"][0]
    uri = source["masks"][0]["uri"] if what == "mask" else source["uri"]
    return bytes.fromhex(uri.rsplit(":", 1)[1])


def test_a_blob_that_does_not_match_its_hash_is_not_rendered(template: Path, tmp_path: Path) -> None:
    path = copy_of(template, tmp_path)
    digest = blob_of(path, 1, "mask")
    good = dict(raw_entries(path, "blobs"))[digest]
    Image.fromarray(np.full((6, 8), 2, np.uint8)).save(tmp_path / "other.png")  # a valid PNG, other pixels
    raw_write(path, "blobs", puts=[(digest, (tmp_path / "other.png").read_bytes())])
    assert good != (tmp_path / "other.png").read_bytes()
    result = cli("render", path, "f1", "-o", tmp_path / "f1.png")
    assert result.returncode == 1 and digest.hex() in result.stderr and "sha256" in result.stderr, result.stderr
    assert not (tmp_path / "f1.png").exists()
    result = cli("export", path, tmp_path / "out", "--jobs", "1")
    assert result.returncode == 1 and digest.hex() in result.stderr, result.stderr
    assert not list((tmp_path / "out").glob("f1/*")), "an image rendered from the wrong bytes"


def test_check_names_frames_whose_embedded_blobs_are_missing(template: Path, tmp_path: Path) -> None:
    path = copy_of(template, tmp_path)
    digest = blob_of(path, 3, "image")
    raw_write(path, "blobs", deletes=[(digest, None)])
    result = cli("check", path)
    assert result.returncode == 1, result.stdout
    lines = [ln for ln in result.stdout.splitlines() if digest.hex() in ln]
    assert lines and "frame f3: the image of source 0 is the embedded file" in lines[0] and "missing" in lines[0], \
        result.stdout


# ------------------------------------------------------------------------------------ terminal escapes

ESCAPES = "\x1b[2J\x1b]0;owned\x07\r\x08"


def test_stored_text_never_reaches_the_terminal_as_escapes(tmp_path: Path) -> None:
    path = tmp_path / "esc.maskstore"
    with Archive(path, jobs=1) as ar:
        v = ar.create_version(dataset_name="d" + ESCAPES, version_name="v1")
        v.set_masks_labels({(1, 1, 1): ["car" + ESCAPES]})
        v.add_frames([{"id": "f" + ESCAPES, "context_id": "c" + ESCAPES, "meta": {"k": ESCAPES},
                       "sources": [{"id": "s" + ESCAPES, "uri": "/x.png", "width": 2, "height": 2,
                                    "masks": [{"id": "00", "uri": "/m.png", "values": [[1, 1, 1, 4]]}]}],
                       "rois": [{"label": ["r" + ESCAPES]}]}])
    for command in (["info"], ["labels"], ["stats"], ["query"], ["query", "--format", "table"],
                    ["query", "--format", "jsonl"], ["query", "--explain", 'label == "car\\u001b"'], ["check"],
                    ["query", "-d", "nope" + ESCAPES]):
        result = cli(command[0], path, *command[1:])
        assert "\x1b" not in result.stdout + result.stderr and "\x07" not in result.stdout + result.stderr, \
            (command, result.stdout, result.stderr)
        assert "\r" not in result.stdout + result.stderr and "\x08" not in result.stdout + result.stderr, command
    jsonl = cli("query", path, "--format", "jsonl").stdout
    assert json.loads(jsonl)["id"] == "f" + ESCAPES  # JSON escapes it; the value is unchanged
    ids = cli("query", path).stdout
    assert ids.strip() == "f\\u001b[2J\\u001b]0;owned\\u0007\\u000d\\u0008", ids


def test_a_version_whose_first_chunk_is_gone_answers_by_position(tmp_path: Path) -> None:
    """Per-position arrays skip missing chunks: seqs 4096.. sit at positions 0.., and every step agrees."""
    with Archive(tmp_path / "gap.maskstore", jobs=1) as ar:
        v = ar.create_version(dataset_name=DATASET, version_name=VERSION)
        v.add_frames([{"id": f"g{i}", "context_id": f"c{i % 3}", "timestamp": i, "meta": {"n": i}}
                       for i in range(4100)])
        v.delete_frames([f"g{i}" for i in range(4096)])
        assert v.ids("") == ["g4096", "g4097", "g4098", "g4099"]
        assert v.ids('context_id == "c1"') == ["g4096", "g4099"]
        assert v.ids('meta.n > 4097') == ["g4098", "g4099"]
        assert v.ids('context_id == "c1" and meta.n > 4097') == ["g4099"]
        assert v.ids('id == "g4098"') == ["g4098"] and v.count("not timestamp > 4097") == 2
