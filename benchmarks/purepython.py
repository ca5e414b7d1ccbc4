"""What does the compiled ``_speedups`` buy over its pure-Python twin (``MASKSTORE_PUREPYTHON=1``)?

Two measurements, each in fresh interpreters (the implementation is chosen at import), compiled and
pure-Python alternating so the machine's noise falls on both:

1. ingest: ``version.add_frames`` of the ingest benchmark's metadata-only frames (batches of 10,000,
   ``Archive(sync=False)``), the frames made before the clock starts;
2. reading: ``records.decode_frame`` of every stored record (msgpack, then ``frame_ok``), the
   per-frame work of a query that streams frames.

    python benchmarks/purepython.py --quick     # 20,000 frames, 3 rounds
    python benchmarks/purepython.py             # 200,000 frames, 3 rounds; writes results/purepython.md
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import log, machine_lines, rate, table, write_result  # noqa: E402

HERE = Path(__file__).resolve().parent

# One round in a fresh interpreter: ingest into a new archive, then decode every record; JSON out.
CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
from ingest import batches
from maskstore import Archive, _accel, records
n, path = int(sys.argv[2]), sys.argv[3]
frames = list(batches(n))
with Archive(path, sync=False, jobs=1) as ar:
    v = ar.create_version(dataset_name="d", version_name="v")
    start = time.perf_counter()
    for batch in frames:
        v.add_frames(batch)
    ingest = time.perf_counter() - start
    def read(txn):
        cursor = txn.cursor(db=ar.db("frames"))
        return [bytes(value) for _, value in cursor]
    raw = ar.read(read)
    start = time.perf_counter()
    for data in raw:
        records.decode_frame(data)
    decode = time.perf_counter() - start
print(json.dumps({"implementation": _accel.IMPLEMENTATION, "ingest": ingest, "decode": decode, "records": len(raw)}))
"""


def one_round(n: int, purepython: bool, workdir: Path) -> dict:
    path = workdir / f"{'python' if purepython else 'compiled'}.maskstore"
    path.unlink(missing_ok=True)
    env = {**os.environ, "MASKSTORE_PUREPYTHON": "1" if purepython else ""}
    result = subprocess.run([sys.executable, "-c", CHILD, str(HERE), str(n), str(path)], env=env,
                            capture_output=True, text=True, check=True)
    out = json.loads(result.stdout)
    assert out["implementation"] == ("python" if purepython else "compiled"), out
    assert out["records"] == n, out
    path.unlink()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20,000 frames")
    parser.add_argument("--frames", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    n = args.frames or (20_000 if args.quick else 200_000)
    start = time.perf_counter()
    runs: dict[str, list[dict]] = {"compiled": [], "python": []}
    with tempfile.TemporaryDirectory(prefix="maskstore-purepython-") as tmp:
        for r in range(args.rounds):
            for purepython in ((False, True) if r % 2 == 0 else (True, False)):
                name = "python" if purepython else "compiled"
                runs[name].append(one_round(n, purepython, Path(tmp)))
                last = runs[name][-1]
                log(f"round {r + 1}: {name} ingest {last['ingest']:.2f} s, decode {last['decode']:.2f} s")
    med = {name: {k: statistics.median(run[k] for run in rs) for k in ("ingest", "decode")}
           for name, rs in runs.items()}
    rows = [[name, round(rate(n, med[name]["ingest"])), round(rate(n, med[name]["decode"]))]
            for name in ("compiled", "python")]
    ratio_ingest = med["python"]["ingest"] / med["compiled"]["ingest"]
    ratio_decode = med["python"]["decode"] / med["compiled"]["decode"]
    report = "\n".join([
        "# Compiled path vs pure-Python twin",
        "",
        "Question: what does the compiled `_speedups` buy over its pure-Python twin, which "
        "`MASKSTORE_PUREPYTHON=1` selects? (`benchmarks/purepython.py`)",
        "",
        *machine_lines(),
        f"- whole script: {time.perf_counter() - start:.0f} s",
        "",
        f"{n:,} metadata-only frames of the ingest benchmark (no image opened), batches of 10,000, "
        f"`Archive(sync=False)`; then `records.decode_frame` of every stored record. Each of {args.rounds} rounds runs "
        "both implementations in fresh interpreters, in alternating order; medians.",
        "",
        table(["implementation", "ingest frames/s", "decode_frame records/s"], rows),
        "",
        f"**pure-Python / compiled time: ingest {ratio_ingest:.2f}x, decode_frame {ratio_decode:.2f}x.**",
    ])
    print(report)
    write_result("purepython", report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
