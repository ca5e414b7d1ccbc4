"""A ``--frames`` file of a million junk lines: a clear error with the first bad line number, in
bounded memory. Peak RSS is measured around the CLI process alone (a wrapper process reports
``RUSAGE_CHILDREN`` of its one child), against the same command on a one-line file.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from maskstore import Archive

from .helpers import MASKSTORE_CLI, build_archive, make_frame

LINES = 1_000_000
HEADROOM_KIB = 32 * 1024  # peak RSS may exceed the one-line run by this much, whatever the file size

MEASURE = r"""
import resource, subprocess, sys
result = subprocess.run(sys.argv[1:], capture_output=True, text=True)
sys.stderr.write(result.stderr)
print(result.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def ingest_measured(archive: Path, frames_file: Path, *extra: str, patch: str = "") -> tuple[int, int, str]:
    """(exit status, peak RSS in KiB, stderr) of ``maskstore ingest`` on ``frames_file``. ``patch`` is
    Python run in the CLI process before ``main`` (to lower a limit)."""
    command = [str(MASKSTORE_CLI)] if not patch else [sys.executable, "-c",
                                                      f"{patch}\nfrom maskstore.cli import main\nmain()"]
    result = subprocess.run([sys.executable, "-c", MEASURE, *command, "ingest", str(archive), "-d", "d", "-V", "v1",
                             "--frames", str(frames_file), "--batch-size", "2", "--jobs", "1", *extra],
                            capture_output=True, text=True, timeout=120)
    status, rss = result.stdout.split()
    return int(status), int(rss), result.stderr


@pytest.fixture(scope="module")
def baseline_rss(tmp_path_factory: pytest.TempPathFactory) -> int:
    folder = tmp_path_factory.mktemp("baseline")
    frames_file = folder / "one.jsonl"
    frames_file.write_text(json.dumps(make_frame(0, 0)) + "\n")
    build_archive(folder / "a.maskstore", 0, 1, labels=False)
    status, rss, err = ingest_measured(folder / "a.maskstore", frames_file)
    assert status == 0, err
    return rss


@pytest.fixture
def frames_file(tmp_path: Path):
    """Where the big file goes; deleted after the test so kept pytest temp folders stay small."""
    path = tmp_path / "frames.jsonl"
    yield path
    path.unlink(missing_ok=True)


def write_lines(path: Path, head: list[str], filler: bytes, count: int) -> None:
    """``head`` lines, then ``filler`` repeated until the file has ``count`` lines (written in blocks)."""
    with path.open("wb") as out:
        out.write("".join(line + "\n" for line in head).encode())
        left = count - len(head)
        block = filler * 50_000
        while left >= 50_000:
            out.write(block)
            left -= 50_000
        out.write(filler * left)


def valid_lines(n: int) -> list[str]:
    return [json.dumps(make_frame(0, i)) for i in range(n)]


@pytest.mark.parametrize("junk", [b"{not json at all ..." + b"." * 80 + b"\n", b"[1, 2, 3]" + b" " * 90 + b"\n",
                                  b"\xff\xfe binary \x00 junk" + b"\x01" * 80 + b"\n"],
                         ids=["not-json", "not-an-object", "not-utf8"])
def test_million_junk_lines_give_the_first_bad_line(tmp_path: Path, frames_file: Path, baseline_rss: int,
                                                    junk: bytes) -> None:
    write_lines(frames_file, valid_lines(3), junk, LINES)
    size = frames_file.stat().st_size
    assert size > 90 * LINES
    archive = tmp_path / "a.maskstore"
    build_archive(archive, 0, 1, labels=False)
    status, rss, err = ingest_measured(archive, frames_file)
    assert status == 1 and "Traceback" not in err, err
    assert f"{frames_file}:4:" in err, err  # file:line of the first bad line
    assert "2 frames in 1 batches were committed" in err, err
    assert rss < baseline_rss + HEADROOM_KIB, f"peak RSS {rss // 1024} MiB for a {size >> 20} MiB file"
    with Archive(archive, readonly=True) as ar:
        assert sorted(ar.get_version("d", "v1").ids("")) == ["b0000-000", "b0000-001"]


def test_junk_after_a_million_blank_lines_is_found_streaming(tmp_path: Path, frames_file: Path,
                                                             baseline_rss: int) -> None:
    """999,999 blank lines are read through (they are skipped) before the junk on line 1,000,000."""
    write_lines(frames_file, [], b" " * 99 + b"\n", LINES - 1)
    with frames_file.open("ab") as out:
        out.write(b"junk!\n")
    status, rss, err = ingest_measured(tmp_path / "a.maskstore", frames_file)
    assert status == 1 and f"{frames_file}:{LINES}:" in err, err
    assert rss < baseline_rss + HEADROOM_KIB, f"peak RSS {rss // 1024} MiB"


def test_one_endless_line_is_refused_in_bounded_memory(tmp_path: Path, frames_file: Path, baseline_rss: int) -> None:
    """With the line limit lowered to 1 MiB, a 96 MiB line without a newline must be refused after
    reading about 1 MiB of it."""
    with frames_file.open("wb") as out:
        out.write((json.dumps(make_frame(0, 0)) + "\n").encode())
        for _ in range(96):
            out.write(b"x" * (1 << 20))
    status, rss, err = ingest_measured(tmp_path / "a.maskstore", frames_file,
                                       patch="import maskstore.ingest.jsonl as j; j.MAX_LINE_BYTES = 1 << 20")
    assert status == 1 and f"{frames_file}:2: line is longer than" in err, err
    assert rss < baseline_rss + HEADROOM_KIB, f"peak RSS {rss // 1024} MiB for a 96 MiB line"
