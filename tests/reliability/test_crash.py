"""Crash consistency: a writer process is killed with SIGKILL at random (seeded) moments; every time
the archive reopens clean, with exactly the work of whole calls in it.

After each kill the state must equal "the calls the child reported done" or "those plus the one in
flight" — never anything in between — and ``check`` plus every index lookup must agree with the
records (``helpers.assert_archive_consistent``).
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest

from maskstore import Archive

from .helpers import (DATASET, MASKSTORE_CLI, TEMPLATE_BATCH_SIZE, TEMPLATE_BATCHES, VERSION, Child,
                      assert_archive_consistent, build_archive, cli, make_frame, worker)

MAIN = f"{DATASET}/{VERSION}"


def kill_after(child, rng: random.Random, low: float, high: float) -> None:
    """Wait until the child has opened the archive, then SIGKILL it after a seeded random delay."""
    child.wait_for("ready")
    time.sleep(rng.uniform(low, high))
    child.kill()
    assert child.proc.returncode in (-9, 0), f"the child failed before the kill:\n{child.stderr}"


def test_killed_add_frames_leaves_whole_batches(tmp_path: Path) -> None:
    """12 kills of a writer adding 40-frame batches to one archive that is reopened and written again
    after every crash: present batches are exactly those of the earlier runs plus this run's
    reported batches (plus, possibly, the one in flight)."""
    rng = random.Random(20240501)
    path = tmp_path / "add.maskstore"
    build_archive(path, 0, 40)
    present: set[int] = set()
    mid_call = 0
    for run in range(12):
        start = run * 100
        child = worker("add", path, start, 60, 40)
        kill_after(child, rng, 0.0, 0.12)
        done = [int(d[0]) for d in child.done()]
        assert done == list(range(start, start + len(done))), child.lines
        mid_call += child.began_unfinished()
        snap = assert_archive_consistent(path, batch_size=40)[MAIN]
        reported = present | set(done)
        assert snap.batch_numbers in (reported, reported | {start + len(done)}), (run, done, child.stderr)
        present = snap.batch_numbers
    # The kills are meant to land inside calls, not only between them.
    assert mid_call >= 3, f"only {mid_call} of 12 kills landed inside an add_frames call"
    assert len(present) > 12


def gens_after(steps: int, batches: int) -> list[int]:
    """Generation of each batch after ``steps`` update calls (gen 1 batch 0, gen 1 batch 1, ...)."""
    full, part = divmod(steps, batches)
    return [full + 1 if b < part else full for b in range(batches)]


def test_killed_update_frames_leaves_each_batch_old_or_new(fresh_copy) -> None:
    rng = random.Random(7)
    for run in range(4):
        path = fresh_copy(f"update{run}.maskstore")
        child = worker("update", path, TEMPLATE_BATCHES, TEMPLATE_BATCH_SIZE, 40)
        kill_after(child, rng, 0.02, 0.4)
        n = len(child.done())
        snap = assert_archive_consistent(path, batch_size=TEMPLATE_BATCH_SIZE)[MAIN]
        per_batch: dict[int, set[int]] = {}
        for fid, rec in snap.records.items():
            per_batch.setdefault(int(fid[1:5]), set()).add(rec["meta"]["gen"])
        assert all(len(g) == 1 for g in per_batch.values()), f"a batch mixes generations: {per_batch}"
        gens = [per_batch[b].pop() for b in range(TEMPLATE_BATCHES)]
        assert gens in (gens_after(n, TEMPLATE_BATCHES), gens_after(n + 1, TEMPLATE_BATCHES)), (n, gens)
        for fid, rec in snap.records.items():
            i = int(fid[-3:])
            assert rec["context_id"] == f"ctx-{(i + rec['meta']['gen']) % 5}"
            assert rec["meta"]["batch"] == int(fid[1:5]) and rec["meta"]["i"] == i  # merge kept the rest


def test_killed_delete_frames_removes_whole_batches_in_order(fresh_copy) -> None:
    rng = random.Random(11)
    for run in range(4):
        path = fresh_copy(f"delete{run}.maskstore")
        child = worker("delete", path, TEMPLATE_BATCHES, TEMPLATE_BATCH_SIZE)
        kill_after(child, rng, 0.0, 0.05)
        n = len(child.done())
        snap = assert_archive_consistent(path, batch_size=TEMPLATE_BATCH_SIZE)[MAIN]
        assert snap.batch_numbers in (set(range(n, TEMPLATE_BATCHES)), set(range(n + 1, TEMPLATE_BATCHES))), n


def test_killed_create_version_leaves_no_partial_copy(fresh_copy) -> None:
    """Each child version is a full copy of the parent's frames and labels, or does not exist."""
    rng = random.Random(3)
    for run in range(3):
        path = fresh_copy(f"copy{run}.maskstore")
        child = worker("copy", path, 25)
        kill_after(child, rng, 0.0, 0.15)
        n = len(child.done())
        snaps = assert_archive_consistent(path, batch_size=TEMPLATE_BATCH_SIZE)
        parent = snaps.pop(MAIN)
        assert set(snaps) in ({f"{DATASET}/c{k:03d}" for k in range(n)},
                              {f"{DATASET}/c{k:03d}" for k in range(n + 1)}), (n, sorted(snaps))
        for name, snap in snaps.items():
            assert snap.records == parent.records, f"{name} is not a full copy of its parent"
        with Archive(path, readonly=True) as ar:
            tables = {v.version_name: v.get_masks_labels() for v in ar.versions()}
        assert all(t == tables[VERSION] for t in tables.values())


def test_killed_set_masks_labels_leaves_old_or_new_table(fresh_copy) -> None:
    rng = random.Random(5)
    for run in range(3):
        path = fresh_copy(f"labels{run}.maskstore")
        child = worker("labels", path, 100000)
        kill_after(child, rng, 0.01, 0.2)
        n = len(child.done())
        assert_archive_consistent(path, batch_size=TEMPLATE_BATCH_SIZE)  # label queries vs records
        with Archive(path, readonly=True) as ar:
            table = ar.get_version(DATASET, VERSION).get_masks_labels()
        tags = {name.split("-")[0] for names in table.values() for name in names}
        assert len(tags) == 1 and len(table) == 4, f"a mixed label table: {table}"
        assert tags.pop() in (f"g{n}", f"g{n + 1}"), (n, table)


# ------------------------------------------------------------------------------- the CLI, killed

def write_frames_file(path: Path, frames: int, batch_size: int) -> None:
    with path.open("w") as out:
        for k in range(frames):
            out.write(json.dumps(make_frame(k // batch_size, k % batch_size)) + "\n")


@pytest.mark.parametrize("fast", [False, True], ids=["durable", "fast"])
def test_killed_cli_ingest_keeps_every_committed_batch(tmp_path: Path, fast: bool) -> None:
    """``maskstore ingest --frames`` killed mid-run, 3 times: the archive holds a prefix of whole
    batches, and at least every batch another process could already see before the kill.

    With ``--fast`` too: a commit without fsync is in the OS page cache, which outlives the process.
    What a power loss or OS crash would do to a ``--fast`` ingest is not tested (cannot be, here).
    """
    rng = random.Random(99 + fast)
    frames_file = tmp_path / "frames.jsonl"
    write_frames_file(frames_file, 20000, 100)
    for run in range(3):
        path = tmp_path / f"cli{run}.maskstore"
        build_archive(path, 0, 100)
        args = ["ingest", path, "-d", DATASET, "-V", VERSION, "--frames", frames_file, "--batch-size", 100,
                "--jobs", 1] + (["--fast"] if fast else [])
        child = Child([str(MASKSTORE_CLI), *map(str, args)])
        seen = 0
        with Archive(path, readonly=True) as ar:
            v = ar.get_version(DATASET, VERSION)
            deadline = time.monotonic() + 30
            while len(v) == 0 and child.proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.005)
            time.sleep(rng.uniform(0.0, 0.15))
            seen = len(v)  # committed: another process sees it
            child.kill()
        assert child.proc.returncode == -9, f"ingest finished before the kill; make the file longer\n{child.stderr}"
        snap = assert_archive_consistent(path, batch_size=100)[MAIN]
        assert snap.batch_numbers == set(range(len(snap.batch_numbers))), "batches are not a prefix"
        assert len(snap.ids) >= seen > 0, f"lost committed frames: saw {seen} before the kill, {len(snap.ids)} after"
    # Running the same command again completes the ingest without duplicates.
    done = cli(*args)
    assert done.returncode == 0, done.stderr
    assert len(assert_archive_consistent(path, batch_size=100)[MAIN].ids) == 20000
