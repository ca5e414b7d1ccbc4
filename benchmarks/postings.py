"""What would packed posting blocks save over the value index's one dupsort entry per (value, frame)
(issue 14)? Measured, without changing the archive's layout.

An archive of ``benchmarks/query.py``'s generated frames is built; its ``ix_value`` entries are then
written a second way into a scratch LMDB file: one entry per (version, mask value, chunk of 4096 seqs)
whose value is the chunk's seqs as a Roaring-style container (sorted little-endian uint16 offsets when
that is smaller, else a 512-byte bitmap). Both are measured in LMDB pages in use, and so is reading
every seq of one value each way (the dupsort cursor, and numpy decoding the blocks).

    python benchmarks/postings.py                 # 1,000,000 frames
    python benchmarks/postings.py --quick         # 100,000 frames
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import lmdb
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import machine_lines, table, write_result  # noqa: E402
from query import MASK_LABELS, PERSON, batches  # noqa: E402

from maskstore import Archive  # noqa: E402
from maskstore.layout import CHUNK_BITS, U64, entries, u64  # noqa: E402

CHUNK = 1 << CHUNK_BITS


def pages_bytes(txn: lmdb.Transaction, db: object) -> int:
    stat = txn.stat(db)
    return (stat["branch_pages"] + stat["leaf_pages"] + stat["overflow_pages"]) * stat["psize"]


def container(offsets: np.ndarray) -> bytes:
    """A chunk's seqs (offsets within it) as Roaring does: an array of uint16, or a bitmap."""
    if len(offsets) * 2 < CHUNK // 8:
        return offsets.astype("<u2").tobytes()
    bits = np.zeros(CHUNK, bool)
    bits[offsets] = True
    return np.packbits(bits, bitorder="little").tobytes()


def seqs_of(block: bytes, base: int) -> np.ndarray:
    if len(block) == CHUNK // 8:
        return np.flatnonzero(np.unpackbits(np.frombuffer(block, np.uint8), bitorder="little")) + base
    return np.frombuffer(block, "<u2").astype(np.int64) + base


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
            scratch = lmdb.open(str(Path(tmp) / "packed.lmdb"), subdir=False, map_size=1 << 34, sync=False, max_dbs=2,
                                metasync=False)
            packed_db = scratch.open_db(b"ix_value_packed")
            with ar._begin() as txn:
                dup_bytes = pages_bytes(txn, ar.db("ix_value"))
                by_value: dict[bytes, list[int]] = {}
                for key, seq in entries(txn, ar.db("ix_value"), v.prefix):
                    by_value.setdefault(bytes(key), []).append(U64.unpack(seq)[0])
            items = []
            for key in sorted(by_value):
                seqs = np.asarray(by_value[key], np.int64)
                for chunk in np.unique(seqs >> CHUNK_BITS):
                    inside = seqs[(seqs >> CHUNK_BITS) == chunk] - (int(chunk) << CHUNK_BITS)
                    items.append((key + u64(int(chunk)), container(inside)))
            with scratch.begin(write=True) as wtxn:
                wtxn.cursor(db=packed_db).putmulti(items, append=True)
            with scratch.begin() as stxn:
                packed_bytes = pages_bytes(stxn, packed_db)
            person = v.prefix + bytes([PERSON] * 3)

            def read_dupsort() -> np.ndarray:
                with ar._begin() as txn:
                    cursor = txn.cursor(db=ar.db("ix_value"))
                    cursor.set_key(person)
                    return np.frombuffer(b"".join(cursor.iternext_dup()), ">u8").astype(np.int64)

            def read_packed() -> np.ndarray:
                with scratch.begin() as stxn:
                    out = []
                    for key, block in entries(stxn, packed_db, person):
                        out.append(seqs_of(bytes(block), U64.unpack(key[-8:])[0] << CHUNK_BITS))
                    return np.concatenate(out)

            assert np.array_equal(read_dupsort(), read_packed())
            times = {}
            for name, fn in (("dupsort", read_dupsort), ("packed", read_packed)):
                fn()
                runs = []
                for _ in range(7):
                    start = time.perf_counter()
                    fn()
                    runs.append(time.perf_counter() - start)
                times[name] = statistics.median(runs)
            rows = len(read_dupsort())
            scratch.close()
    entries_count = sum(map(len, by_value.values()))
    text = "\n".join([
        "# Value index: dupsort entries vs packed posting blocks", "",
        f"Produced by `python benchmarks/postings.py {' '.join(sys.argv[1:])}`: {n:,} frames of "
        "`benchmarks/query.py`'s generator. The archive's `ix_value` (one dupsort entry, an 8-byte seq, per "
        "mask value of each frame) against the same entries written as one LMDB entry per (version, value, "
        "chunk of 4096 seqs) holding a Roaring-style container (uint16 offsets, or a 512-byte bitmap when "
        "smaller) in a scratch file; LMDB pages in use. Reading: every seq of `(24, 24, 24)` (person), "
        "median of 7 after a warm-up. The archive's layout is unchanged: this only measures.", "",
        *machine, "",
        table(["layout", "bytes per frame", "LMDB entries", f"read one value's {rows:,} seqs, ms"],
              [["dupsort (now)", dup_bytes / n, entries_count, times["dupsort"] * 1e3],
               ["packed blocks", packed_bytes / n, len(items), times["packed"] * 1e3]]), "",
        f"Packed blocks would take the value index from {dup_bytes / n:.1f} to {packed_bytes / n:.1f} bytes "
        f"a frame ({dup_bytes / packed_bytes:.0f}x smaller); writers would rewrite a (value, chunk) block per "
        "batch instead of adding entries, and deletes would rewrite blocks too.", ""])
    print(text)
    if not args.no_write:
        write_result("postings", text)


if __name__ == "__main__":
    main()
