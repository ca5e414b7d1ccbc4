"""How fast does a fresh process answer its first query (issue 14), this checkout against an older one?

Each checkout builds its own archive from the same generated frames (benchmarks/query.py's generator),
stores its columns with one query, then every measured query runs in a new Python process that opens
the archive read-only and asks exactly one query. Wall time is the whole process (interpreter start
to exit) seen by the parent; max RSS comes from ``wait4``; the child splits its time into imports,
the Lark parser, opening, loading columns and the rest of the query. The checkouts' runs alternate, so
both see the same machine load.

    python benchmarks/firstquery.py --frames 200000 --compare old=/work/wt-old/.venv/bin/python
    python benchmarks/firstquery.py --quick      # this checkout only, 100,000 frames, 3 rounds
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import checkout_parser, checkout_pythons, machine_lines, table, write_result  # noqa: E402
QUERIES = ['label == "car"', 'context_id == "drive_0421"', 'label == "person" order by timestamp desc limit 100']

NOTES = """Columns: loading a version's scan columns. Since the column summary (FORMAT.md) that is one
entry per version, 16 bytes a chunk (its number, frames, first and last row); before it, each
chunk's first entry, `_present` (512 bytes of bits), found by jumping from chunk to chunk; before
column fields, copying every chunk (one msgpack value, about 135 bytes a frame) out of LMDB. Every
field is fetched, copied out of LMDB and checked when the query first touches it (inside "query"),
a chunk's `_present` included (checked against its summary row). The parser is loaded from the
user's cache directory (compiled once per grammar, Lark and Python version).

Fields are copied (``txn.get``), not mapped: an array that outlived its read transaction would point at
pages a writer may reuse. A context or label lookup answered by an index reads the summary, then
`_present` and `ids` of the chunks holding its results, nothing of the others; `plan.check_chunks`
checks the records against the summary with three cursor probes (it probed two records per chunk).
A chunk's ids are stored as slices of one (byte-shuffled, zstd) value, so a result makes one Python
string per frame it returns (it decoded every id of every chunk it touched). Max RSS still grows with
the chunks a query touches: this kernel maps a few hundred KiB of page cache around every place a
process reads in the map (measured with a plain ``mmap``, ``MADV_RANDOM`` or not), shared page
cache rather than heap; a label matching 10% of the frames touches every chunk."""


def build_child(path: str, n: int) -> dict[str, Any]:
    """Build the archive with the interpreter's maskstore; one query so its columns are stored."""
    from query import MASK_LABELS, batches
    from maskstore import Archive
    start = time.perf_counter()
    with Archive(path, sync=False) as ar:
        v = ar.create_version(dataset_name="bench", version_name="v1")
        v.set_masks_labels(MASK_LABELS)
        for frames in batches(n):
            v.add_frames(frames)
        ar.sync()
        assert v.count("") == n
    return {"build_s": time.perf_counter() - start}


def fresh_child(path: str, text: str) -> dict[str, Any]:
    """One query in this new process, its steps timed (the parser and the column load are the
    library's own functions, so the split works on old and new checkouts alike)."""
    t0 = time.perf_counter()
    from maskstore import Archive
    from maskstore.query import columns, parse
    t1 = time.perf_counter()
    parse._parser()
    t2 = time.perf_counter()
    loaded = [0.0]
    name = "load" if hasattr(columns, "load") else "load_chunks"  # before column fields: load_chunks
    load = getattr(columns, name)

    def timed_load(*args: Any) -> Any:
        start = time.perf_counter()
        try:
            return load(*args)
        finally:
            loaded[0] += time.perf_counter() - start
    setattr(columns, name, timed_load)
    ar = Archive(path, readonly=True)
    v = ar.get_version("bench", "v1")
    t3 = time.perf_counter()
    found = v.ids(text)
    t4 = time.perf_counter()
    return {"imports_s": t1 - t0, "parser_s": t2 - t1, "open_s": t3 - t2, "columns_s": loaded[0],
            "query_s": t4 - t3 - loaded[0], "n": len(found), "head": found[:3]}


def run_fresh(python: str, path: Path, text: str) -> dict[str, Any]:
    start = time.perf_counter()
    proc = subprocess.Popen([python, __file__, "--fresh-child", str(path), text], stdout=subprocess.PIPE)
    out = proc.stdout.read()  # type: ignore[union-attr]
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if status:
        raise SystemExit(f"child failed: {python} {text}")
    return {**json.loads(out), "wall_s": wall, "maxrss_mib": usage.ru_maxrss / 1024}


def main() -> None:
    ap = checkout_parser(__doc__.splitlines()[0], "firstquery", 200_000, "100,000 frames, 3 rounds")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--fresh-child", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--build-child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.fresh_child:
        print(json.dumps(fresh_child(*args.fresh_child)))
        return
    if args.build_child:
        print(json.dumps(build_child(args.build_child[0], int(args.build_child[1]))))
        return
    machine = machine_lines()
    n, rounds = (100_000, 3) if args.quick else (args.frames, args.rounds)
    pythons = checkout_pythons(args)
    with tempfile.TemporaryDirectory(prefix="firstquery-") as tmp:
        paths = {name: Path(tmp) / f"{name}.maskstore" for name in pythons}
        for name, python in pythons.items():
            out = subprocess.run([python, __file__, "--build-child", str(paths[name]), str(n)],
                                 capture_output=True, text=True, check=True).stdout
            print(f"{name}: built {n:,} frames in {json.loads(out)['build_s']:.1f} s", file=sys.stderr)
        runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for _ in range(rounds):
            for text in QUERIES:
                for name, python in pythons.items():
                    runs.setdefault((name, text), []).append(run_fresh(python, paths[name], text))
        answers = {text: {json.dumps([r["n"], r["head"]]) for name in pythons for r in runs[name, text]}
                   for text in QUERIES}
        assert all(len(a) == 1 for a in answers.values()), f"the checkouts answer differently: {answers}"
    keys = ["wall_s", "imports_s", "parser_s", "open_s", "columns_s", "query_s", "maxrss_mib"]
    rows = [[f"`{text}`", name, *[round(statistics.median(r[k] for r in runs[name, text]) * (1e3 if k.endswith("_s") else 1))
                                  for k in keys]] for text in QUERIES for name in pythons]
    header = ["query", "checkout", *[k.removesuffix("_s").removesuffix("_mib") + (", MiB" if k.endswith("mib") else ", ms")
                                     for k in keys]]
    text = "\n".join([
        "# First query of a fresh process", "",
        f"Produced by `python benchmarks/firstquery.py {' '.join(sys.argv[1:])}`: {n:,} frames of "
        "`benchmarks/query.py`'s generator, each checkout building its own archive; median of "
        f"{rounds} new processes per query and checkout, each opening the archive read-only and asking one "
        "query (wall: interpreter start to exit; max RSS from wait4). The checkouts' runs alternate.", "",
        *machine, "", table(header, rows), "", NOTES])
    print(text)
    if not args.no_write:
        write_result("firstquery", text)

if __name__ == "__main__":
    main()
