"""Concurrency: one writer and several reader processes at once; writers serialised by LMDB.

Each reader (``worker.py read``) checks, over and over for a bounded time, that what one read
transaction or one query call returns is whole batches, agrees with itself and only grows.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from maskstore import Archive

from .helpers import DATASET, VERSION, assert_archive_consistent, build_archive, worker

MAIN = f"{DATASET}/{VERSION}"
READ_SECONDS = 6.0


def test_readers_see_consistent_snapshots_while_a_writer_adds(tmp_path: Path) -> None:
    """1 writer (40-frame batches for ~5 s, starting with a 64 KiB map so the map grows under the
    readers) and 2 readers (also with a small map, so they must adopt the grown size)."""
    path = tmp_path / "busy.maskstore"
    build_archive(path, 2, 40)
    go = tmp_path / "go"
    readers = [worker("read", path, READ_SECONDS, 40, seed, 1 << 16) for seed in (1, 2)]
    writer = worker("add", path, 2, 2000, 40, "map_size=65536", f"go={go}", "seconds=5", "pause=0.01")
    for child in readers + [writer]:
        child.wait_for("ready")
    go.touch()
    assert writer.finish(60) == 0, writer.stderr
    for reader in readers:
        assert reader.finish(60) == 0, f"reader saw an inconsistent snapshot:\n{reader.stderr}"
        summary = json.loads(reader.lines[-1])
        assert summary["iterations"] >= 3, summary
        assert len(summary["counts"]) >= 3, f"the reader never saw the writer's progress: {summary}"
    done = len(writer.done())
    snap = assert_archive_consistent(path, batch_size=40)[MAIN]
    assert snap.batch_numbers == set(range(done + 2))
    # The map grew (many times) while the readers were reading, and the readers followed it.
    grown = int(writer.lines[-1].split()[1])
    assert writer.lines[-1].startswith("map_size") and grown >= 1 << 20, writer.lines[-1]
    assert all(json.loads(r.lines[-1])["map_size"] >= grown for r in readers)


def test_two_writers_are_serialised_and_both_succeed(tmp_path: Path) -> None:
    path = tmp_path / "two.maskstore"
    build_archive(path, 0, 25)
    go = tmp_path / "go"
    writers = [worker("add", path, start, 80, 25, f"go={go}") for start in (0, 1000)]
    for child in writers:
        child.wait_for("ready")
    go.touch()
    for child in writers:
        assert child.finish(60) == 0, child.stderr
        assert len(child.done()) == 80
    snap = assert_archive_consistent(path, batch_size=25)[MAIN]
    assert snap.batch_numbers == set(range(80)) | set(range(1000, 1080))
    assert len(snap.ids) == 2 * 80 * 25
    # They really ran at the same time: each started before the other finished.
    spans = [(float(c.done()[0][1]), float(c.done()[-1][1])) for c in writers]
    assert spans[0][0] < spans[1][1] and spans[1][0] < spans[0][1], spans


def test_a_second_writer_waits_for_the_first_to_commit(tmp_path: Path) -> None:
    path = tmp_path / "lock.maskstore"
    build_archive(path, 0, 50)
    release = tmp_path / "release"
    holder = worker("hold", path, release)
    holder.wait_for("holding")
    # Opening an archive for writing is itself a (tiny) write transaction, so the second writer
    # blocks already there; either way it must not commit before the first one ends.
    second = worker("add", path, 0, 1, 50)
    time.sleep(1.5)
    assert second.proc.poll() is None and not second.done(), \
        f"a second writer got through while the first held the write transaction: {second.lines}"
    release.touch()
    assert holder.finish(30) == 0, holder.stderr
    assert second.finish(30) == 0, second.stderr
    released = float(holder.lines[-1].split()[1])
    committed = float(second.done()[0][1])
    assert committed >= released - 0.05  # (clocks of two processes on one machine)
    assert assert_archive_consistent(path, batch_size=50)[MAIN].batch_numbers == {0}


def test_concurrent_create_version_of_one_name_succeeds_once(tmp_path: Path) -> None:
    path = tmp_path / "race.maskstore"
    build_archive(path, 0, 1)
    go = tmp_path / "go"
    racers = [worker("create", path, "race", go) for _ in range(3)]
    for child in racers:
        child.wait_for("ready")
    go.touch()
    outcomes = []
    for child in racers:
        assert child.finish(30) == 0, child.stderr
        outcomes.append(child.lines[-1])
    assert sorted(o.split()[0] for o in outcomes) == ["created", "refused", "refused"], outcomes
    assert all("exists already" in o for o in outcomes if o.startswith("refused"))
    with Archive(path, readonly=True) as ar:
        assert [v.version_name for v in ar.versions()].count("race") == 1
