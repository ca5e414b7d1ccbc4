"""Do compressed frame records make archives smaller without slowing lookups (issue 14), this checkout
against another?

Each checkout (its own interpreter and maskstore) ingests the same generated frames
(benchmarks/query.py's generator, batches of 10,000, ``sync=False``) into its own archive: ingest time
and bytes per frame by sub-database. Then, per round, a new process per checkout opens its archive
read-only and times, after one warm-up each: the ids of one context (no record read), its frames
streamed as frame dicts (every record decoded), 1,000 frames fetched by id, and every frame of a label streamed as frame dicts; the
checkouts' rounds alternate, so both see the same machine load, and their answers must be equal.

    python benchmarks/records.py --frames 1000000 --compare main=/work/main/.venv/bin/python
    python benchmarks/records.py --quick          # this checkout only, 100,000 frames, 3 rounds
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
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

CONTEXT_QUERY = 'context_id == "drive_0421"'
LABEL_QUERY = 'label == "person"'
BY_ID = 1000


def build_child(path: str, n: int) -> dict[str, Any]:
    from query import MASK_LABELS, add_timed
    from maskstore import Archive
    with Archive(path, sync=False) as ar:
        v = ar.create_version(dataset_name="bench", version_name="v1")
        v.set_masks_labels(MASK_LABELS)
        seconds = add_timed(v, n)
        sizes = {}
        for name in ("meta", "versions", "frames", "frame_ids", "columns", "ix_context", "ix_value", "ix_source",
                     "ix_mask", "ix_roi", "dirty", "blobs"):
            stat = ar.read(lambda txn: txn.stat(ar.db(name)))
            sizes[name] = (stat["branch_pages"] + stat["leaf_pages"] + stat["overflow_pages"]) * stat["psize"]
    return {"ingest_s": seconds, "db_bytes": sizes, "file_bytes": Path(path).stat().st_size}


def lookup_child(path: str, n: int) -> dict[str, Any]:
    from maskstore import Archive

    def timed(fn: Any) -> tuple[float, Any]:
        fn()  # warm-up
        start = time.perf_counter()
        out = fn()
        return time.perf_counter() - start, out

    with Archive(path, readonly=True) as ar:
        v = ar.get_version("bench", "v1")
        ids = random.Random(7).sample(v.ids(""), min(BY_ID, n))
        out, answers = {}, {}
        for name, fn in [("context_ids", lambda: v.ids(CONTEXT_QUERY)),
                         ("context", lambda: list(v.query_dicts(CONTEXT_QUERY))),
                         ("by_id", lambda: [v.get_frame_dict(i) for i in ids]),
                         ("label", lambda: list(v.query_dicts(LABEL_QUERY)))]:
            out[name + "_s"], dicts = timed(fn)
            out[name + "_rows"] = len(dicts)
            answers[name] = hashlib.sha256(json.dumps(dicts, sort_keys=True).encode()).hexdigest()
    return {**out, "answers": answers}


def _run(python: str, *args: str) -> dict[str, Any]:
    """A child of ``python``; another checkout's interpreter imports its own maskstore (no PYTHONPATH)."""
    env = dict(os.environ)
    if python != sys.executable:
        env.pop("PYTHONPATH", None)
    out = subprocess.run([python, __file__, *args], capture_output=True, text=True, check=True, env=env).stdout
    return json.loads(out)


def main() -> None:
    ap = checkout_parser(__doc__.splitlines()[0], "records", 1_000_000, "100,000 frames, 3 rounds")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--build-child", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--lookup-child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.build_child:
        print(json.dumps(build_child(args.build_child[0], int(args.build_child[1]))))
        return
    if args.lookup_child:
        print(json.dumps(lookup_child(args.lookup_child[0], int(args.lookup_child[1]))))
        return
    machine = machine_lines()
    n, rounds = (100_000, 3) if args.quick else (args.frames, args.rounds)
    pythons = checkout_pythons(args)
    # -P: the maskstore of that interpreter, not the one in the folder this runs in (sys.path[0] of -c)
    commits = {name: subprocess.run([python, "-P", "-c", "import maskstore, subprocess, pathlib; print(subprocess.run("
                                     "['git', 'log', '-1', '--format=%h %s'], capture_output=True, text=True, "
                                     "cwd=pathlib.Path(maskstore.__file__).parent).stdout.strip()[:70])"],
                                    capture_output=True, text=True,
                                    env={k: v for k, v in os.environ.items() if k != "PYTHONPATH" or name == "this"}
                                    ).stdout.strip() for name, python in pythons.items()}
    commits["this"] = commits["this"] or os.environ.get("MASKSTORE_BENCH_COMMIT", "")
    with tempfile.TemporaryDirectory(prefix="records-") as tmp:
        paths = {name: Path(tmp) / f"{name}.maskstore" for name in pythons}
        built = {}
        for name, python in pythons.items():
            built[name] = _run(python, "--build-child", str(paths[name]), str(n))
            print(f"{name}: ingested {n:,} frames in {built[name]['ingest_s']:.1f} s", file=sys.stderr)
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in pythons}
        for _ in range(rounds):
            for name, python in pythons.items():
                runs[name].append(_run(python, "--lookup-child", str(paths[name]), str(n)))
        answers = {json.dumps(r["answers"], sort_keys=True) for rs in runs.values() for r in rs}
        assert len(answers) == 1, "the checkouts answer differently"
    first = runs["this"][0]
    lookups = [("context_ids", f"`{CONTEXT_QUERY}` ids only, no record read ({first['context_ids_rows']:,} ids)"),
               ("context", f"`{CONTEXT_QUERY}` as frame dicts ({first['context_rows']:,} frames)"),
               ("by_id", f"{first['by_id_rows']:,} frames by id (`get_frame_dict`)"),
               ("label", f"`{LABEL_QUERY}` as frame dicts ({first['label_rows']:,} frames)")]
    med = {name: {key: statistics.median(r[key + "_s"] for r in runs[name]) for key, _ in lookups} for name in pythons}
    names = list(pythons)
    speed = table(["lookup", *[f"{name}, ms" for name in names], *[f"{name} / this" for name in names[1:]]],
                  [[label, *[med[name][key] * 1e3 for name in names], *[med[name][key] / med["this"][key] for name in names[1:]]]
                   for key, label in lookups])
    dbs = [db for db in built["this"]["db_bytes"] if any(built[name]["db_bytes"][db] for name in names)]
    sizes = table(["sub-database", *[f"{name}, bytes per frame" for name in names]],
                  [[db, *[built[name]["db_bytes"][db] / n for name in names]] for db in dbs]
                  + [["(file)", *[built[name]["file_bytes"] / n for name in names]]])
    ingest = table(["checkout", "commit", "ingest, s", "frames/s"],
                   [[name, commits[name] or "?", built[name]["ingest_s"], round(n / built[name]["ingest_s"])]
                    for name in names])
    text = "\n".join([
        "# Compressed frame records: size and lookups", "",
        f"Produced by `python benchmarks/records.py {' '.join(sys.argv[1:])}`: {n:,} frames of "
        "`benchmarks/query.py`'s generator, each checkout ingesting its own archive; lookups are the median "
        f"of {rounds} new processes per checkout (one warm-up, then one timed run each), the checkouts "
        "alternating; every checkout gave the same answers.", "",
        *machine, "", "## Ingest", "", ingest, "", "## Bytes per frame by sub-database", "",
        "LMDB pages in use (branch, leaf and overflow) per frame; the file also holds free pages.", "",
        sizes, "", "## Lookups", "", speed, ""])
    print(text)
    if not args.no_write:
        write_result("records", text)


if __name__ == "__main__":
    main()
