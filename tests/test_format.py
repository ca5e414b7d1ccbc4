"""FORMAT.md as a promise: the archive of 0.1.0 reads the same in every later release, an independent
reader written from FORMAT.md alone (``format_reader``) reads what the library reads, the worked
examples in FORMAT.md are what the code writes, and ``maskstore upgrade`` / the feature lists do what
the Compatibility section says.

``python tests/test_format.py`` rewrites FORMAT.md's worked examples from the code (after a format change).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import random
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any
from unittest import mock

import lmdb
import numpy as np
import pytest
import zstandard
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import format_reader
from fixtures.make_archive_format1 import NAME, library_view
from reliability.test_disk_full import small_disk  # noqa: F401 (a fixture: a real 8 MiB tmpfs)
from maskstore import Archive, ArchiveError, compression, frame_groups, postings, records
from maskstore.check import check_archive
from maskstore.cli import main
from maskstore.demo import run_demo
from maskstore.layout import DICTIONARY_PREFIX
from maskstore.ingest import apply_label_table, builtin_label_table
from maskstore.model import normalize_frame_dict
from maskstore.query import columns, zones
from maskstore.store import DEFAULT_MAP_SIZE
from maskstore.upgrade import Step, upgrade
from strategies import frame_dicts

HERE = Path(__file__).parent
FIXTURES = HERE / "fixtures"
FORMAT_MD = HERE.parent / "FORMAT.md"


def as_json(value: Any) -> Any:
    return json.loads(json.dumps(value))


def reader_view(path: Path) -> dict[str, Any]:
    """The independent reader's output in ``library_view``'s shape (no query answers)."""
    view = format_reader.read_archive(path)
    view.pop("format")
    return as_json(view)


def library_view_without_queries(path: Path) -> dict[str, Any]:
    view = as_json(library_view(path))
    for version in view["versions"]:
        version.pop("queries")
    return view


def check_reader_agrees(path: Path) -> None:
    """Versions, frames, labels, colours, statistics, embedded files; index keys; scan columns."""
    assert reader_view(path) == library_view_without_queries(path)
    stored, derived, ids_stored, ids_derived = format_reader.index_check(path)
    assert stored == derived and ids_stored == ids_derived
    check_columns(path)


def check_columns(path: Path) -> None:
    """Every stored chunk without a dirty mark holds, row by row, what the frame records say."""
    for columns in format_reader.read_columns(path).values():
        chunks_with_frames = {seq >> 12 for seq in columns["frames"]}
        assert chunks_with_frames <= set(columns["chunks"]) | columns["dirty"]  # a clean chunk is stored
        assert columns["summary"] is None or set(columns["summary"]) == set(columns["chunks"])
        for number, chunk in columns["chunks"].items():
            if number in columns["dirty"]:
                continue  # stale by definition
            rows = {seq - (number << 12) for seq in columns["frames"] if seq >> 12 == number}
            assert {row for row, here in enumerate(chunk["present"]) if here} == rows
            if columns["summary"] is not None:
                assert columns["summary"][number] == (len(rows), min(rows), max(rows))
            for row in rows:
                frame = columns["frames"][(number << 12) + row]
                assert format_reader.chunk_row(chunk, row) == format_reader.chunk_row_from_frame(frame)
        if columns["zones"] is not None:
            check_zone_maps(columns)


def check_zone_maps(columns: dict[str, Any]) -> None:
    """Each field's zone map holds, for every chunk without a dirty mark, the row its column gives."""
    want: dict[bytes, dict[int, tuple]] = {}
    for number, chunk in columns["chunks"].items():
        if number in columns["dirty"] or "meta_fields" not in chunk:
            continue
        rows = [row for row, here in enumerate(chunk["present"]) if here]
        if rows:
            want.setdefault(b"ts", {})[number] = format_reader.zone_row("i", [chunk["timestamp"][r] for r in rows])
        for path, (name, kind) in chunk["meta_fields"].items():
            values = [chunk["meta"][path][r] for r in rows if chunk["meta"][path][r] is not None]
            if values:
                want.setdefault(name, {})[number] = format_reader.zone_row(kind, values)
    have = {name: kept for name, table in columns["zones"].items()
            if (kept := {n: row for n, row in table.items() if n not in columns["dirty"]})}
    assert have.keys() == want.keys()
    for name, table in want.items():
        assert table.keys() == have[name].keys()
        for number, row in table.items():
            assert all(a == b or a != a and b != b for a, b in zip(row, have[name][number])), (name, number, row)


@pytest.fixture
def fixture_copy(tmp_path: Path) -> Path:
    """The committed 0.1.0 archive, copied: opening it (even read-only) makes a lock file beside it."""
    path = tmp_path / f"{NAME}.maskstore"
    shutil.copyfile(FIXTURES / f"{NAME}.maskstore", path)
    return path


# ------------------------------------------------------------------------ the 0.1.0 archive

def test_the_archive_of_0_1_0_reads_exactly_as_recorded(fixture_copy):
    expected = json.loads((FIXTURES / f"{NAME}.json").read_text())
    assert as_json(library_view(fixture_copy)) == expected
    # The recorded values themselves, so an empty or truncated JSON cannot pass.
    assert [v["record"]["name"] for v in expected["versions"]] == ["v1", "v2", "m1"]
    assert expected["versions"][0]["record"]["state"] == "published" and expected["versions"][1]["record"]["parent"] == 1
    assert len(expected["blobs"]) == 9


def test_the_archive_of_0_1_0_is_read_by_the_independent_reader(fixture_copy):
    check_reader_agrees(fixture_copy)
    columns = format_reader.read_columns(fixture_copy)
    assert columns[1]["chunks"] and columns[2]["dirty"] == {0}  # stored chunks and a dirty mark, both read


def test_the_archive_of_0_1_0_still_writes(fixture_copy):
    with Archive(fixture_copy) as ar:
        v2 = ar.get_version("streets", "v2")
        v2.add_frames([{"id": "new", "context_id": "drive_z", "meta": {"speed": 40},
                        "sources": [{"uri": "x.png", "masks": [{"uri": "m.png", "values": [[1, 1, 1, 5]]}]}]}])
        assert v2.ids("meta.speed > 10") == ["group-1", "new"]
    check_reader_agrees(fixture_copy)


# ------------------------------------------------------------------------ more archives, same reader

def test_the_demo_archive_is_read_by_the_independent_reader(tmp_path):
    result = run_demo(tmp_path / "demo", jobs=1)
    view = reader_view(result.archive)
    assert len(view["blobs"]) == 8 and {v["record"]["dataset"] for v in view["versions"]} == {"voc-samples", "mattes"}
    read = {digest: format_reader.blob(result.archive, digest) for digest in view["blobs"]}
    with Archive(result.archive, readonly=True) as ar:  # the embedded files, byte for byte
        assert read == {digest: ar.read_blob(digest) for digest in view["blobs"]}
    check_reader_agrees(result.archive)


def test_archives_of_the_real_images_are_read_by_the_independent_reader(tmp_path, shared_data):
    path = tmp_path / "real.maskstore"
    voc, city, rembg = (shared_data / "labelme_voc", shared_data / "mmsegmentation_cityscapes",
                        shared_data / "rembg_examples")
    with Archive(path, jobs=1) as ar:
        v = ar.create_version(dataset_name="voc", version_name="v1")
        v.add_frames([{"id": name, "context_id": "labelme", "meta": {"split": "val", "n": i},
                       "sources": [{"uri": str(voc / "JPEGImages" / f"{name}.jpg"),
                                    "masks": [{"id": "class", "uri": str(voc / "SegmentationClass" / f"{name}.png")}]}]}
                      for i, name in enumerate(("2011_000003", "2011_000006"))], embed=True)
        apply_label_table(v, builtin_label_table("voc"))
        v.ids('label == "person"')
        c = ar.create_version(dataset_name="city", version_name="v1")
        c.add_frames([{"id": "frankfurt", "context_id": "frankfurt", "timestamp": 294,
                       "sources": [{"uri": str(city / "frankfurt_000000_000294_leftImg8bit.png"),
                                    "masks": [{"uri": str(city / "frankfurt_000000_000294_gtFine_labelIds.png"),
                                               "instance_uri": str(city / "frankfurt_000000_000294_gtFine_instanceIds.png")}]}]}])
        apply_label_table(c, builtin_label_table("cityscapes"))
        m = ar.create_version(dataset_name="mattes", version_name="v1")
        m.add_frames([{"id": "car-1", "sources": [{"uri": str(rembg / "car-1.jpg"),
                                                   "masks": [{"uri": str(rembg / "car-1.out.png")}]}]}], embed=True)
    view = reader_view(path)
    person = [value for value, labels in view["versions"][0]["masks_labels"] if "person" in labels]
    assert any(v[:3] == person[0] for v in view["versions"][0]["frames"][0]["sources"][0]["masks"][0]["values"])
    assert view["versions"][2]["frames"][0]["sources"][0]["masks"][0]["kind"] == "alpha"
    check_reader_agrees(path)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(frame_dicts, min_size=1, max_size=3, unique_by=lambda d: d["id"]))
def test_frames_written_by_the_library_read_the_same_with_the_independent_reader(frames):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "round.maskstore"
        with Archive(path, jobs=1) as ar:
            for i, frame in enumerate(frames):  # a version each: meta types need not agree across frames
                version = ar.create_version(dataset_name="d", version_name=str(i))
                version.add_frames([frame])
                assert version.ids(f"timestamp == {frame['timestamp']}") == [frame["id"]]  # stores the columns
            stored = [list(v.frame_dicts()) for v in ar.versions()]
        read = [v["frames"] for v in format_reader.read_archive(path)["versions"]]
        assert read == stored
        stored_index, derived, ids_stored, ids_derived = format_reader.index_check(path)
        assert stored_index == derived and ids_stored == ids_derived
        assert all(not c["dirty"] and c["chunks"] for c in format_reader.read_columns(path).values())
        check_columns(path)


def test_an_archive_written_from_format_md_alone_is_read_by_maskstore(tmp_path):
    """The other direction: records, keys and dirty marks as FORMAT.md says, written without maskstore."""
    frames = [normalize_frame_dict(EXAMPLE_FRAME),
              normalize_frame_dict({"id": "f2", "context_id": "x" * 500, "meta": {"weather": "sun", "speed": 3},
                                    "sources": [{"id": "front", "uri": "b.png", "masks": [
                                        {"uri": "b_mask.png", "values": [[2, 2, 2, 40], [1, 1, 1, 60]]}]}]})]
    record = {"dataset": "hand", "name": "v1", "parent": None, "created": 1.5, "description": "", "meta": {},
              "state": "draft", "mask_labels": [{"value": [1, 1, 1], "labels": ["person"]}],
              "label_colors": {"person": [255, 0, 0]}, "meta_types": {"weather": "str", "speed": "int"},
              "generation": 0}
    path = tmp_path / "hand.maskstore"
    format_reader.write_archive(path, [(record, frames)])
    with Archive(path, readonly=True) as ar:
        assert check_archive(ar) == []
        v = ar.get_version("hand", "v1")
        assert list(v.frame_dicts()) == frames and v.get_label_colors() == {"person": (255, 0, 0)}
        assert v.ids('label == "person"') == ["f1", "f2"] and v.ids("meta.speed < 10") == ["f2"]
        assert v.ids(f'context_id == "{"x" * 500}"') == ["f2"] and v.ids('source.id == "front"') == ["f2"]
    format_reader.write_archive(tmp_path / "needs.maskstore", [(record, frames)], required_features=["zstd-frames"])
    with pytest.raises(ArchiveError, match="zstd-frames"):
        Archive(tmp_path / "needs.maskstore", readonly=True)


# ------------------------------------------------------------------------ format record, features

def set_format_record(path: Path, **body: Any) -> None:
    env = lmdb.open(str(path), subdir=False, max_dbs=64)
    with env.begin(write=True) as txn:
        txn.put(b"format", records._pack(records.KIND_FORMAT, {"name": "maskstore", **body}),
                db=env.open_db(b"meta", txn=txn))
    env.close()


def raw_format(path: Path) -> dict[str, Any]:
    env = format_reader.open_archive(path)
    with env.begin() as txn:
        fmt = format_reader.record(txn.get(b"format", db=env.open_db(b"meta", txn=txn, create=False)), "format")
    env.close()
    return fmt


def test_an_unknown_required_feature_is_refused_by_every_reader(fixture_copy):
    set_format_record(fixture_copy, version=1, required_features=["zstd-frames"], optional_features=["zone-maps"])
    for readonly in (True, False):
        with pytest.raises(ArchiveError, match="features this maskstore does not implement: zstd-frames"):
            Archive(fixture_copy, readonly=readonly)
    with pytest.raises(format_reader.FormatError, match="zstd-frames"):
        format_reader.read_archive(fixture_copy)
    with pytest.raises(ArchiveError, match="zstd-frames"):
        upgrade(fixture_copy)


def test_an_unknown_optional_feature_is_ignored(fixture_copy):
    set_format_record(fixture_copy, version=1, optional_features=["zone-maps"])
    expected = json.loads((FIXTURES / f"{NAME}.json").read_text())
    assert as_json(library_view(fixture_copy)) == expected
    with Archive(fixture_copy) as ar:  # and a writer keeps the record as it is
        ar.get_version("mattes", "m1").delete_frames(["declared"])
        fmt = records.decode_format(ar.read(lambda t: t.get(b"format", db=ar.db("meta"))))
    assert fmt["optional_features"] == ["zone-maps"]
    assert format_reader.read_archive(fixture_copy)["format"]["optional_features"] == ["zone-maps"]


@pytest.mark.parametrize("body, problem", [({"version": "1"}, "version"), ({"version": 0}, "version"),
                                           ({"version": 1, "required_features": "x"}, "required_features"),
                                           ({"version": 1, "optional_features": [1]}, "optional_features")])
def test_a_damaged_format_record_names_the_field(fixture_copy, body, problem):
    set_format_record(fixture_copy, **body)
    with pytest.raises(ArchiveError, match=f"format record is damaged: {problem}"):
        Archive(fixture_copy, readonly=True)


def test_a_new_archive_requires_column_fields_zones_packed_postings_and_frame_groups(tmp_path):
    """New archives store scan columns field by field, index postings in blocks and frame records in
    groups, so readers that do not know how must refuse them: the features for readers that read the
    lists, format 2 for 0.1.0, which reads only the number."""
    with Archive(tmp_path / "a.maskstore") as ar:
        data = ar.read(lambda t: bytes(t.get(b"format", db=ar.db("meta"))))
    assert format_reader.record(data, "format") == {"name": "maskstore", "version": 2,
                                                     "required_features": ["column-fields", "column-zones",
                                                                           "frame-groups", "packed-postings"]}
    for feature in ("column-fields", "column-zones", "frame-groups", "packed-postings"):
        with pytest.raises(ArchiveError, match=feature):
            with mock.patch.object(records, "KNOWN_FEATURES", records.KNOWN_FEATURES - {feature}):
                Archive(tmp_path / "a.maskstore", readonly=True)


def _old_layout_keys(path: Path) -> list[bytes]:
    env = format_reader.open_archive(path)
    with env.begin() as txn:
        keys = [bytes(k) for k, _ in txn.cursor(db=env.open_db(b"columns", txn=txn, create=False))
                if len(k) == 16 and k[8:] != zones.MARK]  # the zone maps' marker is 16 bytes too
    env.close()
    return keys


def test_the_column_chunks_of_0_1_0_answer_and_are_stored_field_by_field_when_writable(fixture_copy):
    """Chunks stored as one msgpack value are rebuilt from the records: in memory for a read-only open
    (the file stays as it was), and stored field by field, with the feature listed, when writable."""
    expected = json.loads((FIXTURES / f"{NAME}.json").read_text())
    old = _old_layout_keys(fixture_copy)
    assert old
    with Archive(fixture_copy, readonly=True) as ar:
        answers = {v.name: v.ids("timestamp >= 0") for v in ar.versions()}
    assert _old_layout_keys(fixture_copy) == old and "required_features" not in raw_format(fixture_copy)
    with Archive(fixture_copy) as ar:
        assert {v.name: v.ids("timestamp >= 0") for v in ar.versions()} == answers
        assert check_archive(ar) == []
    assert _old_layout_keys(fixture_copy) == []
    assert raw_format(fixture_copy)["required_features"] == ["column-fields", "column-zones", "frame-groups",
                                                             "packed-postings"]
    assert raw_format(fixture_copy)["version"] == 2  # 0.1.0 now refuses it as newer
    assert as_json(library_view(fixture_copy)) == expected
    check_reader_agrees(fixture_copy)


# ------------------------------------------------------------------------ maskstore upgrade

def add_feature(name: str, slow: float = 0.0) -> Step:
    """A step for the tests: lists an optional feature and writes a key into the copy's meta."""
    def apply(copy: Path, fmt: dict[str, Any]) -> None:
        # a map as large as maskstore's: the copy is packed full (no free pages), so LMDB's default
        # 10 MiB map may have no room for one more page
        env = lmdb.open(str(copy), subdir=False, max_dbs=64, map_size=DEFAULT_MAP_SIZE)
        with env.begin(write=True) as txn:
            txn.put(b"upgraded-by-test", name.encode(), db=env.open_db(b"meta", txn=txn))
        env.close()
        time.sleep(slow)
        fmt["optional_features"].append(name)
    return Step(f"adds {name}", lambda fmt: name not in fmt["optional_features"], apply)


def test_upgrade_of_a_current_archive_is_a_no_op_with_a_message(fixture_copy):
    before = fixture_copy.read_bytes()
    result = CliRunner().invoke(main, ["upgrade", str(fixture_copy)])
    assert result.exit_code == 0, result.output
    assert "already in the current format (format 1); nothing to do" in result.output
    assert fixture_copy.read_bytes() == before


def test_upgrade_runs_the_steps_on_a_copy_and_replaces_the_archive(fixture_copy):
    expected = json.loads((FIXTURES / f"{NAME}.json").read_text())
    inode = fixture_copy.stat().st_ino
    report = upgrade(fixture_copy, [add_feature("test-a"), add_feature("test-b")])
    assert report.steps == ["adds test-a", "adds test-b"]
    assert report.after["optional_features"] == ["test-a", "test-b"]
    assert "from format 1 to format 1 with test-a, test-b" in str(report)
    assert fixture_copy.stat().st_ino != inode  # a new file renamed over the old one
    assert not fixture_copy.with_name(fixture_copy.name + ".upgrade").exists()
    assert as_json(library_view(fixture_copy)) == expected
    check_reader_agrees(fixture_copy)
    assert upgrade(fixture_copy, [add_feature("test-a"), add_feature("test-b")]).steps == []


def test_a_failing_step_leaves_the_original(fixture_copy):
    before = fixture_copy.read_bytes()

    def fail(copy: Path, fmt: dict[str, Any]) -> None:
        raise ArchiveError("step failed")
    with pytest.raises(ArchiveError, match="step failed"):
        upgrade(fixture_copy, [add_feature("test-a"), Step("fails", lambda fmt: True, fail)])
    assert fixture_copy.read_bytes() == before
    assert not fixture_copy.with_name(fixture_copy.name + ".upgrade").exists()


def test_upgrade_refuses_newer_formats_and_non_archives(fixture_copy, tmp_path):
    set_format_record(fixture_copy, version=records.FORMAT_VERSION + 1)
    result = CliRunner().invoke(main, ["upgrade", str(fixture_copy)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"format {records.FORMAT_VERSION + 1}" in result.stderr and "upgrade maskstore" in result.stderr
    other = tmp_path / "notes.txt"
    other.write_text("not an archive" * 1000)
    with pytest.raises(ArchiveError, match="not a maskstore archive"):
        upgrade(other)


def test_upgrade_refuses_an_archive_another_writer_holds(fixture_copy):
    fd = os.open(fixture_copy, os.O_RDONLY)  # what every maskstore writer holds while it writes
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(ArchiveError, match="another process is writing"):
            upgrade(fixture_copy, [add_feature("test-a")])
    finally:
        os.close(fd)


def test_upgrade_refuses_an_archive_another_process_has_open(fixture_copy):
    child = subprocess.Popen([sys.executable, "-c", "import sys, time; from maskstore import Archive; "
                              "ar = Archive(sys.argv[1], readonly=True); print(len(ar.versions()), flush=True); "
                              "time.sleep(60)", str(fixture_copy)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "3"
        with pytest.raises(ArchiveError, match="another process has .* open"):
            upgrade(fixture_copy, [add_feature("test-a")])
    finally:
        child.kill()
        child.wait()
    assert upgrade(fixture_copy, [add_feature("test-a")]).steps == ["adds test-a"]


UPGRADE_CHILD = textwrap.dedent("""
    import sys
    sys.path[:0] = [{tests!r}]
    from test_format import add_feature
    from maskstore.upgrade import upgrade
    upgrade(sys.argv[1], [add_feature("test-a", slow=float(sys.argv[2]))])
""")


def _noise(i: int) -> str:
    return "".join(hashlib.sha512(f"{i}.{part}".encode()).hexdigest() for part in range(3))


@pytest.mark.slow
@pytest.mark.parametrize("moment", ["copying", "in a step"])
def test_sigkill_during_upgrade_leaves_the_original_intact(tmp_path, moment):
    path = tmp_path / "big.maskstore"
    with Archive(path, jobs=1) as ar:  # large enough that the copy takes a while: pads zstd cannot shrink
        v = ar.create_version(dataset_name="d", version_name="v1")
        v.add_frames([{"id": f"f{i}", "context_id": f"c{i % 97}", "meta": {"n": i, "pad": _noise(i)},
                       "sources": [{"uri": f"{i}.png", "masks": [{"uri": f"{i}m.png", "values": [[i % 7, 1, 2, 9]]}]}]}
                      for i in range(20_000)])
        v.ids("meta.n > 5")
    before = path.read_bytes()
    expected = library_view_without_queries(path)
    copy = path.with_name(path.name + ".upgrade")
    child = subprocess.Popen([sys.executable, "-c", UPGRADE_CHILD.format(tests=str(HERE)), str(path),
                              "0" if moment == "copying" else "60"])
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if moment == "copying" and copy.exists() and copy.stat().st_size > 2 << 20:
                break
            if moment == "in a step" and copy.exists() and _has_test_key(copy):
                break
            assert child.poll() is None, "the upgrade ended before it could be killed"
            time.sleep(0.002)
        else:
            pytest.fail("the upgrade never reached the moment to kill it")
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert path.read_bytes() == before
    assert library_view_without_queries(path) == expected
    report = upgrade(path, [add_feature("test-a")])  # the next upgrade removes the stale copy and runs
    assert report.steps == ["adds test-a"] and not copy.exists()
    assert library_view_without_queries(path) == expected


@pytest.mark.slow
def test_upgrade_on_a_full_disk_fails_cleanly_and_keeps_the_original(small_disk):
    path = small_disk / "a.maskstore"
    noise = random.Random(0)  # padding zstd cannot squeeze: the archive must stay too big to copy
    with Archive(path, jobs=1) as ar:  # over 4 MiB on an 8 MiB disk: the copy cannot fit beside it
        ar.create_version(dataset_name="d", version_name="v1").add_frames(
            [{"id": f"f{i}", "meta": {"pad": noise.randbytes(600).hex()}, "sources": [{"uri": f"{i}.png"}]}
             for i in range(2000)])
    assert path.stat().st_size > 4 * 2**20
    before = path.read_bytes()
    with pytest.raises(ArchiveError, match="cannot upgrade .* the archive is unchanged"):
        upgrade(path, [add_feature("test-a")])
    assert path.read_bytes() == before
    assert not path.with_name(path.name + ".upgrade").exists()


def _has_test_key(copy: Path) -> bool:
    try:
        env = lmdb.open(str(copy), subdir=False, readonly=True, lock=False, max_dbs=64)
    except lmdb.Error:
        return False
    try:
        with env.begin() as txn:
            return txn.get(b"upgraded-by-test", db=env.open_db(b"meta", txn=txn, create=False)) is not None
    except lmdb.Error:
        return False
    finally:
        env.close()


# ------------------------------------------------------------------------ FORMAT.md's worked examples

EXAMPLE_FRAME = {"id": "f1", "timestamp": 100, "context_id": "drive_a", "meta": {"weather": "rain", "speed": 12},
                 "sources": [{"uri": "img.png", "masks": [{"uri": "mask.png", "values": [[0, 0, 0, 90], [1, 1, 1, 10]]}]}],
                 "rois": [{"label": ["car"]}]}


def hex_dump(data: bytes) -> str:
    """16 bytes a line: offset, hex, printable ASCII (as ``xxd``)."""
    lines = []
    for at in range(0, len(data), 16):
        part = data[at:at + 16]
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in part)
        lines.append(f"{at:04x}: {' '.join(f'{b:02x}' for b in part):<47}  {text}")
    return "\n".join(lines)


def readable_json(value: Any) -> str:
    """Indented JSON with lists of numbers and short lists on one line."""
    text = json.dumps(value, indent=1, ensure_ascii=False)
    inner = re.compile(r"\[\s*([^\[\]{}]*?)\s*\]")
    while (folded := inner.sub(lambda m: "<" + re.sub(r",\s+", ", ", m[1]) + ">", text)) != text:
        text = folded
    return text.replace("<", "[").replace(">", "]")


def parse_hex_dump(text: str) -> bytes:
    return bytes.fromhex("".join(line[6:53] for line in text.splitlines()))


# FORMAT.md's example dictionary: raw content (zstd's other dictionary form), short enough to print.
EXAMPLE_DICTIONARY = (b"\x01F\x86\xa2id\xa9timestamp\xaacontext_id\xa4meta\xa7sources\x91\x87\xa3uri\xa5masks"
                      b"\x91\x85\xa6values\xaccontent_type\xa9image/png\xa5width\xa6height\xa4rois\x91\x86"
                      b"\xa5label\xaaconfidence\xa4poly")


def worked_examples() -> dict[str, str]:
    """FORMAT.md's examples, from an archive the code writes now: EXAMPLE_FRAME in version 1."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "example.maskstore"
        with Archive(path, jobs=1) as ar:
            ar.create_version(dataset_name="example", version_name="v1").add_frames([EXAMPLE_FRAME])
        env = format_reader.open_archive(path)
        with env.begin() as txn:
            def entries(name: str) -> list[tuple[bytes, bytes]]:
                return [(bytes(k), bytes(v)) for k, v in txn.cursor(db=env.open_db(name.encode(), txn=txn, create=False))]
            fmt = entries("meta")[0][1]
            (frame_key, group), = entries("frames")
            (_, frame), = frame_groups.decode_group(group, 0)
            frame, body = bytes(frame), zstandard.ZstdDecompressor().decompress(group[frame_groups.BODY_START:])
            fields = {key[16:]: value for key, value in entries("columns") if len(key) > 8 and key[8:16] == bytes(8)}  # chunk 0's
            zone_maps = {key[24:]: value for key, value in entries("columns") if key[8:16] == zones.MARK}  # block 0's
            index = [(name, key, value) for name in format_reader.INDEX_DBS for key, value in entries(name)]
            keys = [("frames", frame_key, "frame group (below)"),
                    *[(name, key, value.hex()) for name, key, value in
                      [("frame_ids", *entries("frame_ids")[0])] + index],
                    *[("dirty", key, "(empty)") for key, _ in entries("dirty")],
                    *[("columns", key, _columns_entry(key, value)) for key, value in entries("columns")]]
        env.close()
    key_lines = [f"{name:<10} {key[:8].hex()} {key[8:].hex():<18} -> {value}" if name not in format_reader.INDEX_DBS
                 else f"{name:<10} {key[:8].hex()} {key[8:10].hex()} {key[10:-8].hex():<14} {key[-8:].hex()} -> {value}"
                 for name, key, value in keys]
    dictionary = compression.register(EXAMPLE_DICTIONARY)
    (compressed,) = records.compress_frames([frame], dictionary)
    return {
        "dictionary-entry": f"meta {(DICTIONARY_PREFIX + dictionary).hex()}\n  -> "
                            f"{records.encode_dictionary(EXAMPLE_DICTIONARY).hex()}",
        "compressed-record": hex_dump(compressed),
        "frame-group": f"value  {group[:2].hex(' ')} | {group[2:10].hex()} | zstd frame of the body\n"
                       f"body   {body[:1].hex()} | {body[1:2].hex()} | {body[2:6].hex()} | "
                       f"the frame record above ({len(body) - 6} bytes)",
        "format-record": hex_dump(fmt) + "\n\n" + json.dumps(format_reader.record(fmt, "format")),
        "frame-record": hex_dump(frame),
        "frame-decoded": readable_json(format_reader.record(frame, "frame")),
        "frame-keys": "\n".join(key_lines),
        "packed-arrays": "\n\n".join([f"vk\n{hex_dump(fields[b'vk'])}", f"vc\n{hex_dump(fields[b'vc'])}",
                                      f"ts\n{hex_dump(fields[b'ts'])}"]),
        "ids-field": hex_dump(fields[b"ids"]),
        "zone-map": hex_dump(zone_maps[b"ts"]),
        "column-summary": hex_dump(np.array([(0, 4096, 0, 4095), (2, 2, 5, 9)], columns.SUMMARY_ROW).tobytes()),
        "index-blocks": "\n".join(f"{label:<24} -> {runs(postings.encode_block(np.array(offsets, np.uint16)))}"
                                   for label, offsets in INDEX_BLOCK_EXAMPLES),
    }


def _columns_entry(key: bytes, value: bytes) -> str:
    if len(key) == 8:
        return f"column summary {value.hex()}"
    if key[8:16] != zones.MARK:
        return f"chunk field {key[16:].decode()} ({len(value)} bytes)"
    return f"zone map of {key[24:].decode()}, block {int.from_bytes(key[16:24], 'big')} ({len(value)} bytes)" \
        if len(key) > 16 else "zone map marker (empty)"


INDEX_BLOCK_EXAMPLES = [("offsets 0, 5, 4095", [0, 5, 4095]), ("offsets 0 ... 255, 4095", [*range(256), 4095])]


def runs(data: bytes) -> str:
    """Bytes in hex, a run of more than 4 equal bytes as ``ff*32``."""
    parts: list[str] = []
    i = 0
    while i < len(data):
        j = i
        while j < len(data) and data[j] == data[i]:
            j += 1
        if j - i > 4:
            parts.append(f"{data[i]:02x}*{j - i}")
        elif parts and "*" not in parts[-1]:
            parts[-1] += data[i:j].hex()
        else:
            parts.append(data[i:j].hex())
        i = j
    return " ".join(parts)


def test_format_md_index_block_examples_decode_to_their_offsets():
    """FORMAT.md's block examples read back, by the library and by the independent reader."""
    documented = {m["name"]: m["body"] for m in BLOCK.finditer(FORMAT_MD.read_text())}["index-blocks"]
    for line, (_, offsets) in zip(documented.splitlines(), INDEX_BLOCK_EXAMPLES, strict=True):
        data = bytes.fromhex("".join(part.split("*")[0] * int(part.split("*")[1]) if "*" in part else part
                                     for part in line.split("-> ")[1].split()))
        assert postings.decode_block(data).tolist() == offsets
        key = bytes(8) + b"\x00\x01k" + bytes(8)
        assert [struct.unpack(">Q", seq)[0] for _, seq in format_reader.index_pairs(key, data, True)] == offsets


BLOCK = re.compile(r"<!-- example: (?P<name>[\w-]+) -->\n```\n(?P<body>.*?)\n```", re.S)


def test_format_md_worked_examples_are_what_the_code_writes():
    documented = {m["name"]: m["body"] for m in BLOCK.finditer(FORMAT_MD.read_text())}
    generated = worked_examples()
    assert set(documented) == set(generated)
    # Bytes are compared after decoding: map order in a record is not part of the format.
    frame = parse_hex_dump(documented["frame-record"])
    assert frame[:2] == records.FRAME_HEAD
    assert records.decode_frame(frame) == json.loads(documented["frame-decoded"])
    assert json.loads(documented["frame-decoded"]) == json.loads(generated["frame-decoded"])
    assert documented["frame-keys"] == generated["frame-keys"]
    assert documented["frame-group"] == generated["frame-group"]
    assert documented["ids-field"] == generated["ids-field"]
    assert documented["column-summary"] == generated["column-summary"]
    assert documented["index-blocks"] == generated["index-blocks"]
    assert documented["format-record"] == generated["format-record"]
    assert documented["dictionary-entry"] == generated["dictionary-entry"]
    assert documented["packed-arrays"] == generated["packed-arrays"]
    vk, vc, ts = (parse_hex_dump(part.split("\n", 1)[1]) for part in documented["packed-arrays"].split("\n\n"))
    assert format_reader._packed_ints(vk, 0)[0] == [0x000000, 0x010101]  # the independent reader agrees
    assert format_reader._packed_ints(vc, 0)[0] == [90, 10]
    assert format_reader._packed_ints(ts, 0)[0] == [100] * 4096  # width 0: row 0's 100, the only frame's
    # The compressed bytes are zstd's to choose (another zstd may pick other matches): the head must be
    # what this code writes, and the documented record must decompress to the documented frame record.
    compressed, written = parse_hex_dump(documented["compressed-record"]), parse_hex_dump(generated["compressed-record"])
    assert compressed[:10] == written[:10] and records.plain_frame(compressed) == frame
    assert format_reader.frame_record(compressed, {compressed[2:10]: zstandard.ZstdDecompressor(
        dict_data=zstandard.ZstdCompressionDict(EXAMPLE_DICTIONARY), format=zstandard.FORMAT_ZSTD1_MAGICLESS)}) == \
        json.loads(documented["frame-decoded"])


def rewrite_format_md() -> None:
    examples = worked_examples()
    text = BLOCK.sub(lambda m: f"<!-- example: {m['name']} -->\n```\n{examples[m['name']]}\n```", FORMAT_MD.read_text())
    FORMAT_MD.write_text(text)


if __name__ == "__main__":
    sys.path[:0] = [str(HERE)]
    rewrite_format_md()
