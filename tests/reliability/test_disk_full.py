"""A full disk, for real: an 8 MiB tmpfs mounted for the test (root only; skipped otherwise).

* ``maskstore ingest`` that fills the disk exits 1 with one line naming the disk and what was
  committed; the archive opens afterwards, ``check`` passes, and it holds exactly the committed frames.
* ``maskstore export`` into a full disk fails cleanly and leaves no temporary file behind.
* A query never fails because storing its column cache does: reads answer on a full disk.
"""

from __future__ import annotations

import errno
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from typing import Any
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from maskstore import Archive
from maskstore.layout import entries
from maskstore.query import zones

from .helpers import assert_archive_consistent, cli, write_jsonl

pytestmark = pytest.mark.slow

DISK_MIB = 8
PAD = 2000  # bytes of metadata per frame: 6000 frames need more than the disk holds
BATCH = 500
COMMITTED = re.compile(r"(\d+) frames in (\d+) batches were committed")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real, small file system: ENOSPC comes from the kernel, not from a mock."""
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs Linux and root (the test fills a real disk)")
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_MIB}m", "tmpfs", str(disk)],
                             capture_output=True, text=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield disk
    finally:
        if subprocess.run(["umount", str(disk)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(disk)], check=True)


def fill(disk: Path) -> None:
    """Take every free byte of the disk."""
    fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        for size in (1 << 16, 1 << 12, 1 << 9, 1):
            try:
                while os.write(fd, b"\0" * size):
                    pass
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
    finally:
        os.close(fd)
    assert os.statvfs(disk).f_bavail == 0


def padded_frames(count: int) -> list[dict]:
    return [{"id": f"f{i:05d}", "meta": {"i": i, "pad": f"{i:05d}" + "x" * PAD}, "sources": []} for i in range(count)]


def error_lines(stderr: str) -> list[str]:
    """stderr without the progress bar: tqdm redraws with carriage returns, messages end in newlines."""
    return [line for line in stderr.splitlines() if line.strip() and "\r" not in line]


def test_ingest_that_fills_the_disk_says_so_in_one_line_and_keeps_whole_batches(small_disk: Path,
                                                                                 tmp_path: Path) -> None:
    frames = write_jsonl(tmp_path / "frames.jsonl", padded_frames(6000))
    archive = small_disk / "a.maskstore"
    done = cli("ingest", archive, "-d", "d", "-V", "v1", "--frames", frames, "--batch-size", BATCH)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    lines = error_lines(done.stderr.split("\r")[-1])
    assert len(lines) == 1 and lines[0].startswith("Error: "), done.stderr
    message = lines[0]
    assert str(small_disk) in message and "full" in message, message
    counted = COMMITTED.search(message)
    assert counted, message
    committed, batches = int(counted.group(1)), int(counted.group(2))
    assert committed == batches * BATCH > 0
    # The archive opens and checks clean, with exactly the frames the message reported.
    snapshot = assert_archive_consistent(archive)["d/v1"]
    assert sorted(snapshot.ids) == [f"f{i:05d}" for i in range(committed)]
    assert cli("check", archive).returncode == 0


def noisy_frames(folder: Path, count: int) -> list[dict]:
    """Frames whose images are noise, so every exported PNG is large (~190 KiB)."""
    folder.mkdir()
    rng = np.random.default_rng(5)
    frames = []
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)).save(folder / f"img{i}.png")
        mask = np.zeros((256, 256), np.uint8)
        mask[:64] = 1
        Image.fromarray(mask).save(folder / f"mask{i}.png")
        frames.append({"id": f"f{i:03d}", "sources": [{"id": "0", "uri": str(folder / f"img{i}.png"),
                                                       "masks": [{"id": "m", "uri": str(folder / f"mask{i}.png")}]}]})
    return frames


@pytest.mark.parametrize("jobs", [1, 2])
def test_export_into_a_full_disk_fails_cleanly_and_leaves_no_temp_file(small_disk: Path, tmp_path: Path,
                                                                       jobs: int) -> None:
    archive = tmp_path / "a.maskstore"
    with Archive(archive, jobs=1) as ar:
        ar.create_version("d", "v1").add_frames(noisy_frames(tmp_path / "media", 80))
    out = small_disk / "out"
    done = cli("export", archive, out, "--jobs", jobs)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert any(line.startswith("Error: ") for line in error_lines(done.stderr)), done.stderr
    left = [p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and "tmp" in p.name.lower()]
    assert not left, f"temporary files left on the full disk: {left}"
    # What was written is whole: every PNG there opens.
    for png in out.glob("*/*.png"):
        with Image.open(png) as image:
            image.load()


def test_query_on_a_full_disk_answers_although_its_column_cache_cannot_be_stored(small_disk: Path) -> None:
    archive = small_disk / "a.maskstore"
    with Archive(archive, jobs=1) as ar:  # less padding: its write stores the padding twice (records, columns)
        ar.create_version("d", "v1").add_frames([dict(f, meta={**f["meta"], "pad": f["meta"]["pad"][:500]})
                                                 for f in padded_frames(1500)])

        def as_an_older_writer(txn: Any) -> None:  # it left the columns to queries: rebuild marks only
            keys = [bytes(key) for key, _ in txn.cursor(db=ar.db("columns"))]
            for key in keys:
                txn.delete(key, db=ar.db("columns"))
            chunks = sorted({key[:16] for key in keys if len(key) > 8 and key[8:16] != zones.MARK})  # version + chunk
            txn.cursor(db=ar.db("dirty")).putmulti([(key, b"") for key in chunks])
        ar.write(as_an_older_writer)
    fill(small_disk)
    with Archive(archive) as ar:  # writable: a query may try to store the columns it rebuilt
        v = ar.get_version("d", "v1")
        dirty = ar.read(lambda txn: sum(1 for _ in entries(txn, ar.db("dirty"), v.prefix)))
        assert dirty, "the columns are not dirty: this test would not exercise the cache write"
        assert v.count("meta.i >= 1000") == 500
        assert v.ids('meta.pad ~ "00007*"') == ["f00007"]
        still = ar.read(lambda txn: sum(1 for _ in entries(txn, ar.db("dirty"), v.prefix)))
        assert still == dirty, "the column cache was stored on a full disk: the failing write went untested"
    done = cli("query", archive, "meta.i < 10", "--count")
    assert (done.returncode, done.stdout.strip()) == (0, "10"), done.stderr
    assert json.loads(cli("query", archive, "meta.i == 3", "--format", "jsonl").stdout)["id"] == "f00003"
