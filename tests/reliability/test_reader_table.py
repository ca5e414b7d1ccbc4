"""LMDB's reader table and writer lock, kept honestly: readers lock unless asked not to, killed readers
are cleared, a query never takes or waits for the writer lock, the map never moves under a reader, and
a forked child can use the archive its parent opened.

Reader processes here hold a read transaction open (``HOLD_READER``) until they are killed with SIGKILL.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import lmdb
import pytest

from maskstore import Archive, ArchiveError
from maskstore.query import zones

from .helpers import DATASET, VERSION, build_archive, cli, make_batch

HOLD_READER = textwrap.dedent("""
    import sys, time
    from maskstore import Archive
    ar = Archive(sys.argv[1], readonly=True)
    it = ar.get_version("d", "v1").query_dicts("")
    next(it)                       # a read transaction stays open while the iterator lives
    print("ready", flush=True)
    time.sleep(600)
""")


def hold_reader(path: Path) -> subprocess.Popen[str]:
    child = subprocess.Popen([sys.executable, "-c", HOLD_READER, str(path)], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline().strip() == "ready"
    return child


def kill(child: subprocess.Popen[str]) -> None:
    child.send_signal(signal.SIGKILL)
    child.wait()


def dirty_chunks(path: Path) -> int:
    with Archive(path, readonly=True) as ar:
        return ar.read(lambda t: t.stat(ar.db("dirty"))["entries"])


def mark_dirty(ar: Archive) -> None:
    """Every column chunk marked for rebuild, as writers did before they kept the columns current:
    queries then rebuild them (archives written by those writers must keep working)."""
    def work(txn: lmdb.Transaction) -> None:
        keys = sorted({bytes(key[:16]) for key, _ in txn.cursor(db=ar.db("columns"))
                       if len(key) > 8 and key[8:16] != zones.MARK})  # chunk keys
        txn.cursor(db=ar.db("dirty")).putmulti([(key, b"") for key in keys])
    ar.write(work)


# --------------------------------------------------------------------------- 1. no silent unlocked reads

def test_a_full_reader_table_is_an_error_not_an_unlocked_read(tmp_path: Path) -> None:
    """All reader slots taken: the next reader gets ArchiveError; it never falls back to lock=False."""
    path = tmp_path / "a.maskstore"
    build_archive(path, 2, 10)
    path.with_name(path.name + "-lock").unlink()
    # The process that makes the lock file sizes its reader table; it stays open so the size holds.
    with Archive(path, readonly=True, max_readers=2) as ar:
        holders = [hold_reader(path) for _ in range(2)]
        try:
            with pytest.raises(ArchiveError, match="reader slots"):
                ar.get_version(DATASET, VERSION).count("")
        finally:
            for child in holders:
                kill(child)
        assert ar.get_version(DATASET, VERSION).count("") == 20  # the killed holders' slots were cleared


def test_unlocked_reading_only_when_asked(tmp_path: Path) -> None:
    path = tmp_path / "a.maskstore"
    build_archive(path, 1, 10)
    lock_file = path.with_name(path.name + "-lock")
    lock_file.unlink()
    with Archive(path, readonly=True, lock=False) as ar:
        assert ar.get_version(DATASET, VERSION).count("") == 10
    assert not lock_file.exists(), "an unlocked reader created a lock file"
    with pytest.raises(ArchiveError, match="writer must take"):
        Archive(path, lock=False)


# --------------------------------------------------------------------------- 2. stale readers are cleared

@pytest.mark.slow
def test_killed_readers_do_not_grow_the_file_or_lock_out_writers(tmp_path: Path) -> None:
    """A writer keeps the archive open while readers are SIGKILLed between its updates: the file stays
    near the size the same updates give without kills, and more killed readers than reader slots
    never lock the writer out."""
    def run(path: Path, kills: bool) -> int:
        build_archive(path, 1, 50)
        with Archive(path, jobs=1, max_readers=8) as ar:
            v = ar.get_version(DATASET, VERSION)
            for gen in range(1, 13):
                if kills:
                    kill(hold_reader(path))   # its slot now pins the snapshot of this generation
                v.add_frames(make_batch(0, 50, gen=gen) * 1)
        return path.stat().st_size

    quiet = run(tmp_path / "quiet.maskstore", kills=False)
    killed = run(tmp_path / "killed.maskstore", kills=True)   # 12 killed readers > 8 slots
    assert killed <= 2 * quiet, f"{killed} bytes with killed readers vs {quiet} without"


# --------------------------------------------------------------------------- 3. a query never takes the writer lock

HOLD_WRITER = textwrap.dedent("""
    import sys, time
    from maskstore import Archive
    ar = Archive(sys.argv[1], jobs=1)
    def hold(txn):
        print("writing", flush=True)
        sys.stdin.readline()         # the write transaction stays open until the parent says so
    ar.write(hold)
    print("committed", flush=True)
""")


def test_a_query_answers_while_another_process_holds_the_write_lock(tmp_path: Path) -> None:
    path = tmp_path / "a.maskstore"
    build_archive(path, 3, 40)
    with Archive(path, jobs=1) as ar:
        mark_dirty(ar)
    assert dirty_chunks(path) > 0  # the query must build columns
    writer = subprocess.Popen([sys.executable, "-c", HOLD_WRITER, str(path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert writer.stdout is not None and writer.stdin is not None
    try:
        assert writer.stdout.readline().strip() == "writing"
        answer: list[object] = []

        def query() -> None:
            with Archive(path, readonly=True) as ar:
                answer.append(ar.get_version(DATASET, VERSION).count("meta.i < 10"))
        reader = threading.Thread(target=query, daemon=True)
        reader.start()
        reader.join(60)
        assert answer == [30], "the query waited for the writer (or failed)"
        assert writer.poll() is None, "the writer was not holding the lock during the query"
    except BaseException:
        writer.kill()
        raise
    finally:
        writer.stdin.write("\n")
        writer.stdin.flush()
        writer.wait(60)


def test_writable_query_stores_columns_only_when_no_writer_holds_the_archive(tmp_path: Path) -> None:
    path = tmp_path / "a.maskstore"
    build_archive(path, 3, 40)
    with Archive(path, jobs=1) as ar:
        v = ar.get_version(DATASET, VERSION)
        mark_dirty(ar)
        assert ar.read(lambda t: t.stat(ar.db("dirty"))["entries"]) > 0
        assert v.count("meta.i < 10") == 30
        assert ar.read(lambda t: t.stat(ar.db("dirty"))["entries"]) == 0, "the first answer did not store columns"
        v.add_frames(make_batch(7, 40))
        mark_dirty(ar)
        # While the writer lock is held (by this thread's own open write), the query still answers and
        # leaves its chunks dirty instead of waiting.
        held = threading.Event()
        release = threading.Event()

        def hold(txn: lmdb.Transaction) -> None:
            held.set()
            release.wait(60)
        holder = threading.Thread(target=lambda: ar.write(hold))
        holder.start()
        held.wait(60)
        try:
            assert v.count("meta.i < 10") == 40
        finally:
            release.set()
            holder.join(60)
        assert ar.read(lambda t: t.stat(ar.db("dirty"))["entries"]) > 0


def test_cli_ingest_stores_the_columns_so_queries_do_not_rebuild(tmp_path: Path) -> None:
    frames = tmp_path / "frames.jsonl"
    frames.write_text("".join(json.dumps(f) + "\n" for f in make_batch(0, 30)))
    path = tmp_path / "a.maskstore"
    result = cli("ingest", path, "-d", DATASET, "-V", VERSION, "--frames", frames)
    assert result.returncode == 0, result.stderr
    assert dirty_chunks(path) == 0


# --------------------------------------------------------------------------- 4. the map never moves under a reader

def test_map_growth_never_invalidates_an_open_query(tmp_path: Path) -> None:
    """A small map must grow while this process iterates a query: the write fails with a clear error
    (LMDB cannot remap under an open read transaction) and the loop goes on, whole and correct."""
    path = tmp_path / "a.maskstore"
    build_archive(path, 2, 40)
    with Archive(path, jobs=1, map_size=path.stat().st_size + (64 << 10)) as ar:
        v = ar.get_version(DATASET, VERSION)
        seen = []
        it = v.query_dicts("")
        seen.append(next(it)["id"])
        with pytest.raises(ArchiveError, match="open read transaction"):
            for b in range(10, 60):
                v.add_frames(make_batch(b, 40))
        seen += [d["id"] for d in it]
        assert len(seen) == len(set(seen)) >= 80
        v.add_frames(make_batch(100, 40))  # with the iterator finished the map grows as before
    with Archive(path, readonly=True) as ar:
        assert ar.get_version(DATASET, VERSION).count("meta.batch == 100") == 40


def test_default_map_is_reserved_so_it_never_grows(tmp_path: Path) -> None:
    path = tmp_path / "a.maskstore"
    build_archive(path, 1, 10)
    with Archive(path) as ar:
        assert ar.env.info()["map_size"] >= 1 << 40 or sys.maxsize <= 2**32
    assert path.stat().st_size < 10 << 20, "the reserved map must not be allocated on disk"


# --------------------------------------------------------------------------- 8. forked children

FORK_SCRIPT = textwrap.dedent("""
    import os, sys
    from maskstore import Archive
    ar = Archive(sys.argv[1], readonly=True)
    v = ar.get_version("d", "v1")
    before = v.count("")
    for job in ("inherited", "fresh"):
        pid = os.fork()
        if pid == 0:
            if job == "inherited":          # the parent's handle works in the child
                n = v.count('meta.i < 5')
            else:                           # or the child opens the file itself (DataLoader workers)
                with Archive(sys.argv[1], readonly=True) as again:
                    n = again.get_version("d", "v1").count("")
            print(job, n, flush=True)
            sys.exit(0)                     # normal exit: finalizers run in the child
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    print("parent", before, v.count(""), flush=True)
""")


def forking_script_output(script: str, tmp_path: Path) -> list[str]:
    """The lines a script prints that forks over an archive of 40 frames; it must exit 0."""
    path = tmp_path / "a.maskstore"
    build_archive(path, 2, 20)
    result = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_a_forked_child_uses_or_reopens_its_parents_archive(tmp_path: Path) -> None:
    assert forking_script_output(FORK_SCRIPT, tmp_path) == ["inherited 10", "fresh 40", "parent 40 40"]


FORK_MID_QUERY = textwrap.dedent("""
    import os, sys
    from maskstore import Archive, ArchiveError
    ar = Archive(sys.argv[1], readonly=True)
    v = ar.get_version("d", "v1")
    it = v.query_dicts("")
    first = next(it)["id"]
    pid = os.fork()
    if pid == 0:
        try:
            v.count("")
        except ArchiveError as exc:
            print("child refused:", "fork" in str(exc), flush=True)
        sys.exit(0)
    os.waitpid(pid, 0)
    rest = [d["id"] for d in it]
    print("parent", 1 + len(rest), flush=True)
""")


def test_a_fork_during_a_query_leaves_the_parents_read_intact(tmp_path: Path) -> None:
    assert forking_script_output(FORK_MID_QUERY, tmp_path) == ["child refused: True", "parent 40"]


def test_mask_dataset_under_a_forking_data_loader(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch", reason="PyTorch is an optional extra (maskstore[torch])")
    from maskstore.torch import MaskDataset
    from PIL import Image
    import numpy as np
    folder = tmp_path / "media"
    folder.mkdir()
    frames = []
    for i in range(6):
        Image.fromarray(np.full((8, 8, 3), i, np.uint8)).save(folder / f"{i}.png")
        Image.fromarray(np.full((8, 8), i % 2, np.uint8)).save(folder / f"{i}_m.png")
        frames.append({"id": f"f{i}", "sources": [{"id": "0", "uri": str(folder / f"{i}.png"),
                       "masks": [{"id": "m", "uri": str(folder / f"{i}_m.png")}]}]})
    with Archive(tmp_path / "a.maskstore", jobs=1) as ar:
        v = ar.create_version(dataset_name="d", version_name="v")
        v.add_frames(frames)
        v.set_masks_labels({(0, 0, 0): ["bg"], (1, 1, 1): ["fg"]})
        loader = torch.utils.data.DataLoader(MaskDataset(v), batch_size=2, num_workers=2,
                                             multiprocessing_context="fork")
        batches = list(loader)
    assert sum(len(b[0]) for b in batches) == 6
