"""Files that are not (good) archives: garbage, empty, truncated, from a newer format, or with hostile
records planted inside. Each must give ``ArchiveError`` with a clear message — never a crash.

Opening happens in a subprocess wherever a crash (SIGBUS from a mapped page past the end of the file)
is possible, so a crash fails one test instead of killing the suite.
"""

from __future__ import annotations

import random
import shutil
import subprocess
import sys
from pathlib import Path

import lmdb
import msgpack
import pytest

from maskstore import Archive, ArchiveError, records
from maskstore.layout import u64
from maskstore.check import check_archive

from .helpers import DATASET, VERSION, cli, frame_id, put_frame_records

OPEN_SCRIPT = r"""
import sys
from maskstore import Archive, ArchiveError, records
from maskstore.check import check_archive
try:
    with Archive(sys.argv[1], readonly=sys.argv[2] == "ro", jobs=1) as ar:
        for v in ar.versions():
            v.ids("")
            list(v.frame_dicts())
        check_archive(ar)
except ArchiveError as exc:
    print("ArchiveError:", exc)
    sys.exit(3)
print("opened")
"""


def open_in_subprocess(path: Path, mode: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", OPEN_SCRIPT, str(path), mode], capture_output=True, text=True,
                          timeout=60)


def describe(result: subprocess.CompletedProcess[str]) -> str:
    how = f"killed by signal {-result.returncode}" if result.returncode < 0 else f"exit {result.returncode}"
    return f"{how}\nstdout: {result.stdout}\nstderr: {result.stderr[-2000:]}"


def assert_refused(path: Path, mode: str, *words: str, named: bool = True) -> str:
    """Opening ``path`` raises ArchiveError (exit 3 of the script), naming the file and ``words``."""
    result = open_in_subprocess(path, mode)
    assert result.returncode == 3, describe(result)
    message = result.stdout.strip()
    assert not named or str(path) in message, message
    for word in words:
        assert word in message, message
    return message


def assert_cli_refuses(path: Path) -> None:
    for command in (["info"], ["check"], ["query", "--count"]):
        result = cli(command[0], path, *command[1:])
        assert result.returncode == 1, f"maskstore {command[0]}: " + describe(result)
        assert result.stderr.startswith("Error: ") and "Traceback" not in result.stderr, result.stderr


MODES = ["ro", "rw"]


# ------------------------------------------------------------------------------------- not archives

@pytest.mark.parametrize("mode", MODES)
def test_garbage_file_is_refused(tmp_path: Path, mode: str) -> None:
    path = tmp_path / "garbage.maskstore"
    path.write_bytes(random.Random(1).randbytes(64 * 1024))
    assert_refused(path, mode, "not a maskstore archive")
    assert path.read_bytes() == random.Random(1).randbytes(64 * 1024)  # not "repaired" into an archive


def test_garbage_file_is_refused_by_the_cli(tmp_path: Path) -> None:
    path = tmp_path / "garbage.maskstore"
    path.write_bytes(random.Random(2).randbytes(20000))
    assert_cli_refuses(path)


@pytest.mark.parametrize("mode", MODES)
def test_other_lmdb_file_is_refused(tmp_path: Path, mode: str) -> None:
    path = tmp_path / "other.lmdb"
    env = lmdb.open(str(path), subdir=False)
    with env.begin(write=True) as txn:
        txn.put(b"some", b"thing")
    env.close()
    assert_refused(path, mode, "not a maskstore archive")


def test_empty_file_read_only_is_refused_clearly(tmp_path: Path) -> None:
    path = tmp_path / "zero.maskstore"
    path.write_bytes(b"")
    message = assert_refused(path, "ro").replace(str(path), "<path>")
    assert "empty" in message or "not a maskstore archive" in message, message
    result = cli("info", path)
    assert "empty" in result.stderr or "not a maskstore archive" in result.stderr, result.stderr


def test_empty_file_opened_for_writing_becomes_a_new_archive(tmp_path: Path) -> None:
    """Documented behaviour: like a missing file, an empty one is initialised (nothing is lost)."""
    path = tmp_path / "empty.maskstore"
    path.write_bytes(b"")
    with Archive(path, jobs=1) as ar:
        assert ar.versions() == [] and check_archive(ar) == []
    with Archive(path, readonly=True) as ar:
        assert ar.versions() == []


# ------------------------------------------------------------------------------------- truncated

CUTS = {
    "100-bytes": lambda size: 100,
    "one-page": lambda size: 4096,
    "two-pages": lambda size: 8192,
    "half": lambda size: size // 2,
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("cut", list(CUTS))
def test_truncated_archive_is_refused(template_archive: Path, tmp_path: Path, cut: str, mode: str) -> None:
    data = template_archive.read_bytes()
    path = tmp_path / "cut.maskstore"
    path.write_bytes(data[: CUTS[cut](len(data))])
    assert_refused(path, mode)


def test_truncated_archive_is_refused_by_the_cli(template_archive: Path, tmp_path: Path) -> None:
    data = template_archive.read_bytes()
    path = tmp_path / "half.maskstore"
    path.write_bytes(data[: len(data) // 2])
    assert_cli_refuses(path)


# ------------------------------------------------------------------------------------- newer format

def set_format_record(path: Path, record: bytes) -> None:
    env = lmdb.open(str(path), subdir=False, max_dbs=32)
    meta = env.open_db(b"meta", create=False)
    with env.begin(write=True) as txn:
        txn.put(b"format", record, db=meta)
    env.close()


def format_record(path: Path) -> bytes:
    env = lmdb.open(str(path), subdir=False, max_dbs=32, readonly=True, lock=False)
    with env.begin() as txn:
        record = bytes(txn.get(b"format", db=env.open_db(b"meta", txn=txn, create=False)))
    env.close()
    return record


NEWEST = records.FORMAT_VERSION + 1  # a format no release reads yet
NEWER = {
    "format-field": b"\x01M" + msgpack.packb({"name": "maskstore", "version": NEWEST}),
    "record-byte": bytes([NEWEST]) + b"M" + msgpack.packb({"name": "maskstore", "version": NEWEST}),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("where", NEWER)
def test_newer_format_is_refused_with_upgrade_hint(fresh_copy, mode: str, where: str) -> None:
    path = fresh_copy()
    set_format_record(path, NEWER[where])
    assert_refused(path, mode, f"format {NEWEST}", "upgrade maskstore", named=False)
    assert format_record(path) == NEWER[where]  # a refused open leaves the marker as it was


def test_newer_format_message_names_the_file(fresh_copy) -> None:
    path = fresh_copy()
    set_format_record(path, NEWER["format-field"])
    assert_refused(path, "ro", f"format {NEWEST}", named=True)


def test_newer_format_is_refused_by_the_cli(fresh_copy) -> None:
    path = fresh_copy()
    set_format_record(path, NEWER["format-field"])
    assert_cli_refuses(path)
    result = cli("info", path)
    assert "upgrade" in result.stderr


# ------------------------------------------------------------------------------------- hostile records

def plant(path: Path, record: bytes, seq: int = 0, db: str = "frames") -> None:
    """Replace frame b0000-000's record (seq 0 of d/v1) with ``record``, through the archive's own
    write path (``archive.write``), the way a hostile or damaged file would present it."""
    with Archive(path, jobs=1) as ar:
        v = ar.get_version(DATASET, VERSION)
        if db == "frames":
            ar.write(lambda txn: put_frame_records(txn, ar.db(db), [(v.prefix + u64(seq), record)]))
        else:
            ar.write(lambda txn: txn.put(v.prefix, record, db=ar.db(db)))


HUGE = {
    "str32-4GiB": b"\x01F\xdb\xff\xff\xff\xff",
    "bin32-4GiB": b"\x01F\xc6\xff\xff\xff\xff",
    "array32-4G-items": b"\x01F\xdd\xff\xff\xff\xff",
    "array32-just-under-limit": b"\x01F\xdd\x03\xff\xff\xff",
    "nested-arrays": b"\x01F" + b"\xdd\x03\xff\xff\xff" * 100,
    "map32-4G-items": b"\x01F\xdf\xff\xff\xff\xff",
    "ext": b"\x01F\xc9\xff\xff\xff\xff\x01",
    "not-a-map": b"\x01F" + msgpack.packb([1, 2, 3]),
    "wrong-kind": b"\x01V" + msgpack.packb({}),
    "one-byte": b"\x01",
    "newer-record": b"\x09F" + msgpack.packb({}),
}


@pytest.mark.parametrize("record", HUGE.values(), ids=HUGE.keys())
def test_hostile_frame_record_gives_archive_error_and_check_reports_it(fresh_copy, record: bytes) -> None:
    path = fresh_copy()
    plant(path, record)
    with Archive(path, jobs=1) as ar:
        v = ar.get_version(DATASET, VERSION)
        with pytest.raises(ArchiveError, match=f"frame {frame_id(0, 0)!r} record"):  # named by its id
            v.get_frame(frame_id(0, 0))
        with pytest.raises(ArchiveError):
            v.ids('source.uri ~ "*"')  # a query that reads records (columns, kept on write, need none)
        with pytest.raises(ArchiveError):
            list(v.frame_dicts())
        assert v.get_frame(frame_id(0, 1)).id == frame_id(0, 1)  # the rest is still readable
        errors = [p for p in check_archive(ar) if p.severity == "error"]
        assert any("frame seq 0" in p.message for p in errors), errors


def test_cli_check_reports_a_hostile_record_even_after_repair(fresh_copy) -> None:
    path = fresh_copy()
    plant(path, HUGE["str32-4GiB"])
    result = cli("check", path)
    assert result.returncode == 1 and "frame seq 0" in result.stdout, describe(result)
    # --repair cannot invent the lost record; it rebuilds the indexes around it and still reports it.
    result = cli("check", "--repair", path)
    assert result.returncode == 1 and "frame seq 0" in result.stdout, describe(result)
    with Archive(path, readonly=True) as ar:
        v = ar.get_version(DATASET, VERSION)
        assert len(v) == 999 and v.get_frame(frame_id(19, 49)).id == frame_id(19, 49)


BAD_SHAPES = {
    "empty-map": msgpack.packb({}),
    "wrong-types": msgpack.packb({"id": 5, "sources": "x", "rois": None, "context_id": 1, "timestamp": "t",
                                  "meta": []}),
    "timestamp-beyond-64-bits": msgpack.packb({"id": frame_id(0, 0), "sources": [], "rois": [], "context_id": "c",
                                               "timestamp": 2**64 - 1, "meta": {}}),
}


@pytest.mark.parametrize("body", BAD_SHAPES.values(), ids=BAD_SHAPES.keys())
def test_frame_record_of_the_wrong_shape_gives_archive_error(fresh_copy, body: bytes) -> None:
    path = fresh_copy()
    plant(path, b"\x01F" + body)
    with Archive(path, jobs=1) as ar:
        v = ar.get_version(DATASET, VERSION)
        with pytest.raises(ArchiveError):
            v.ids('source.uri ~ "*"')  # a query that reads records (columns, kept on write, need none)
        errors = [p for p in check_archive(ar) if p.severity == "error"]
        assert any("frame seq 0" in p.message for p in errors), errors


def test_version_record_of_the_wrong_shape_gives_archive_error(fresh_copy) -> None:
    path = fresh_copy()
    plant(path, b"\x01V" + msgpack.packb({"id": 1}), db="versions")
    with Archive(path, jobs=1) as ar:
        errors = [p for p in check_archive(ar) if p.severity == "error"]
        assert errors
    result = cli("info", path)
    assert result.returncode == 1 and "Traceback" not in result.stderr, describe(result)


def test_hostile_records_do_not_make_msgpack_allocate(fresh_copy) -> None:
    """A few bytes claiming gigabytes: decoding is refused before anything of that size is allocated.
    Measured in a subprocess (peak RSS) so the test process's own history does not count."""
    path = fresh_copy()
    plant(path, HUGE["nested-arrays"])
    script = ("import resource, sys\nfrom maskstore import Archive, ArchiveError\n"
              "with Archive(sys.argv[1], readonly=True) as ar:\n"
              "    v = ar.get_version('d', 'v1')\n"
              "    for _ in range(20):\n"
              "        try: v.get_frame(sys.argv[2])\n"
              "        except ArchiveError: pass\n"
              "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")

    def peak_kib(frame: str) -> int:
        result = subprocess.run([sys.executable, "-c", script, str(path), frame], capture_output=True, text=True,
                                timeout=60)
        assert result.returncode == 0, result.stderr
        return int(result.stdout)
    # Against the same script reading an intact frame, so the interpreter's own size does not count.
    baseline, hostile = peak_kib(frame_id(1, 0)), peak_kib(frame_id(0, 0))
    assert hostile - baseline < 32 * 1024, f"peak RSS {hostile // 1024} MiB vs {baseline // 1024} MiB"


def test_archive_error_is_a_maskstore_error_with_the_path(tmp_path: Path) -> None:
    path = tmp_path / "dir.maskstore"
    path.mkdir()
    with pytest.raises(ArchiveError, match="is a folder"):
        Archive(path)
    with pytest.raises(ArchiveError, match="no archive at"):
        Archive(tmp_path / "missing.maskstore", readonly=True)
    assert not (tmp_path / "missing.maskstore").exists()
    shutil.rmtree(path)
