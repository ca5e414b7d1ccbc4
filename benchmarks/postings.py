"""How much do packed posting blocks (the ``ix_*`` layout since ``packed-postings``) save over the
dupsort layout they replaced (one LMDB entry, an 8-byte seq, per posting), and how fast do they read?

An archive of ``benchmarks/query.py``'s generated frames is built (packed blocks, as maskstore writes
them); the same postings are then written the old way, one dupsort entry per (key, seq), into a scratch
LMDB file with the old sub-database flags. Both are measured in LMDB pages in use per index
sub-database, and reading is timed through the one reading function (``maskstore.postings.read``),
which reads both layouts: every seq of a common mask value, and of one context.

    python benchmarks/postings.py                 # 1,000,000 frames
    python benchmarks/postings.py --quick         # 100,000 frames
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import lmdb
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import machine_lines, table, write_result  # noqa: E402
from query import MASK_LABELS, PERSON, batches  # noqa: E402

from maskstore import Archive, postings  # noqa: E402
from maskstore.layout import INDEX_DBS, u64  # noqa: E402


def pages_bytes(txn: lmdb.Transaction, db: object) -> int:
    stat = txn.stat(db)
    return (stat["branch_pages"] + stat["leaf_pages"] + stat["overflow_pages"]) * stat["psize"]


class DupsortArchive:
    """What ``postings.read`` needs of an archive, for the scratch file in the old layout."""

    packed_indexes = False

    def __init__(self, env: lmdb.Environment) -> None:
        self.env = env
        self.dbs = {name: env.open_db(name.encode(), dupsort=True, dupfixed=True) for name in INDEX_DBS}

    def db(self, name: str) -> object:
        return self.dbs[name]


def median_ms(fn: Callable[[], object], runs: int = 7) -> float:
    fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=1_000_000)
    ap.add_argument("--quick", action="store_true", help="100,000 frames")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    n = 100_000 if args.quick else args.frames
    machine = machine_lines()
    with tempfile.TemporaryDirectory(prefix="postings-") as tmp:
        with Archive(Path(tmp) / "a.maskstore", sync=False) as ar:
            v = ar.create_version(dataset_name="bench", version_name="v1")
            v.set_masks_labels(MASK_LABELS)
            for frames in batches(n):
                v.add_frames(frames)
            scratch = lmdb.open(str(Path(tmp) / "dupsort.lmdb"), subdir=False, map_size=1 << 36, sync=False,
                                max_dbs=8, metasync=False)
            old = DupsortArchive(scratch)
            rows: list[list[object]] = []
            total_packed = total_dup = 0
            with ar._begin() as txn:
                for name in INDEX_DBS:
                    pairs = sorted((v.prefix + key, u64(seq)) for key, _, seqs in postings.stored(txn, ar, name, v.prefix)
                                   for seq in seqs.tolist())
                    with scratch.begin(write=True) as wtxn:
                        wtxn.cursor(db=old.db(name)).putmulti(pairs, dupdata=True, append=True)
                    with scratch.begin() as stxn:
                        dup_bytes = pages_bytes(stxn, old.db(name))
                    packed_bytes = pages_bytes(txn, ar.db(name))
                    rows.append([name, dup_bytes / n, packed_bytes / n, len(pairs), txn.stat(ar.db(name))["entries"]])
                    total_dup += dup_bytes
                    total_packed += packed_bytes
            reads = []
            for what, name, key in (("mask value (24, 24, 24) (person)", "ix_value", bytes([PERSON] * 3)),
                                    ("context drive_0421", "ix_context", b"drive_0421")):
                with ar._begin() as txn, scratch.begin() as stxn:
                    found = postings.read(txn, ar, name, v.prefix, key)
                    assert np.array_equal(found, postings.read(stxn, old, name, v.prefix, key))
                    dup_ms = median_ms(lambda: postings.read(stxn, old, name, v.prefix, key))
                    packed_ms = median_ms(lambda: postings.read(txn, ar, name, v.prefix, key))
                reads.append([f"every seq of {what}", len(found), dup_ms, packed_ms, dup_ms / packed_ms])
            scratch.close()
    text = "\n".join([
        "# Index postings: packed blocks vs the dupsort entries they replaced", "",
        f"Produced by `python benchmarks/postings.py {' '.join(sys.argv[1:])}`: {n:,} frames of "
        "`benchmarks/query.py`'s generator in an archive (packed blocks: one entry per (version, key, chunk of "
        "4096 seqs) holding uint16 offsets or a 512-byte bitmap, FORMAT.md \"Index blocks\"), and the same "
        "postings written as before `packed-postings` (one dupsort entry, an 8-byte seq, per posting) into a "
        "scratch file in key order, so its pages are full as `compact` leaves them (batch by batch ingest left "
        "the dupsort indexes about twice as large: `scale.md` before this change); LMDB pages in use. Reads go "
        "through `maskstore.postings.read` for both layouts (the dupsort side is one `getmulti` that LMDB "
        "fills in C), median of 7 after a warm-up.", "",
        *machine, "",
        table(["index", "dupsort bytes per frame", "packed bytes per frame", "postings", "packed entries"],
              rows + [["all five", total_dup / n, total_packed / n, sum(r[3] for r in rows), sum(r[4] for r in rows)]]),
        "",
        table(["read", "seqs", "dupsort ms", "packed ms", "dupsort / packed"], reads), "",
        f"Packed blocks take the five indexes from {total_dup / n:.1f} to {total_packed / n:.1f} bytes a frame "
        f"({(total_dup - total_packed) / n:.1f} saved).", ""])
    print(text)
    if not args.no_write:
        write_result("postings", text)


if __name__ == "__main__":
    main()
