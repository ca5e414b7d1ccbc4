"""Does maskstore.dask spread work over Dask workers as well as one process does it alone?

Question: on 3 published shards of N metadata-only frames each (the generator of benchmarks/query.py:
~10% "person" by mask value, ~2% by ROI, meta city/weather/speed), how long do these take on a
2-worker ``distributed.LocalCluster`` (2 processes, 1 thread each) against the same code in one
process (Dask's synchronous scheduler), and against the query engine alone (``v.count``)?

- count: ``len(read_frames(shards, columns=["id"]))`` (one column built per partition)
- label query: ``read_frames(shards, 'label == "person"', columns=["id", "labels"])``, rows counted
- baseline: Dask alone, the same number of partitions of 4096 rows made from nothing (``from_map``,
  ``len``): what the scheduler costs on this machine at that moment
- labels table: ``read_frames(shards, columns=["labels"])["labels"].explode().value_counts(split_out=1)``
  (every frame's label list built on the workers, then a tree reduction)

and: exporting M real 2048x1024 frames (the inputs of benchmarks/export.py, split over 2 shards) with
``maskstore.dask.export`` on the 2 workers vs ``v.export(jobs=2)`` of one archive holding all M
(goal: >= 0.8 of the local speed). Every timing includes planning on the client. Medians of
``--repeats`` runs after one warm-up (workers opening shards and decoding columns).

    python benchmarks/dask.py                                   # 3 x 1,000,000 frames, 400 export frames
    python benchmarks/dask.py --frames 200000 --export-frames 100

Stdout gets the markdown report (also ``benchmarks/results/dask.md`` unless --no-write).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

# This file is named dask.py: its folder must not shadow the dask package (here or in the workers,
# which start with this process's sys.path), so the folder goes to the end of the path.
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]

import dask  # noqa: E402
import dask.dataframe as dd  # noqa: E402
import distributed  # noqa: E402
import pandas as pd  # noqa: E402
import pyarrow as pa  # noqa: E402

sys.path.append(str(HERE))
from common import log, machine_lines, median_time, rate, table, write_result  # noqa: E402
from export import make_inputs  # noqa: E402
from query import MASK_LABELS, batches  # noqa: E402

import maskstore.dask as mdask  # noqa: E402
from maskstore import Archive, SingleFrame  # noqa: E402
from maskstore.ingest import set_labels  # noqa: E402
from maskstore.ingest.cityscapes import cityscapes_labels  # noqa: E402
from maskstore.query import columns  # noqa: E402

SHARDS = 3
QUERY = 'label == "person"'


def build_shards(folder: Path, n: int) -> list[Path]:
    """SHARDS published archives of n frames each (ids made distinct per shard)."""
    paths = []
    for k in range(SHARDS):
        path = folder / f"shard{k}.maskstore"
        start = time.perf_counter()
        with Archive(path, sync=False, jobs=1) as ar:
            v = ar.create_version(dataset_name="bench", version_name="v1")
            v.set_masks_labels(MASK_LABELS)
            for frames in batches(n):
                for f in frames:
                    f["id"] = f"s{k}_{f['id']}"
                v.add_frames(frames)
            columns.refresh(v)  # what maskstore ingest does at its end
            v.publish()
            ar.sync()
        log(f"  shard {k}: {n:,} frames in {time.perf_counter() - start:.1f} s")
        paths.append(path)
    return paths


def _made_from_nothing(i: int) -> pd.DataFrame:
    return pd.DataFrame({"id": pd.array([str(i)] * 4096, dtype=pd.ArrowDtype(pa.string()))})


def workloads(shards: list[str]) -> dict[str, Callable[[], Any]]:
    partitions = mdask.read_frames(shards, columns=["id"]).npartitions
    return {
        # Baseline: Dask alone, as many partitions of 4096 rows, each made from nothing.
        "Dask alone (no archive)": lambda: len(dd.from_map(_made_from_nothing, range(partitions))),
        "count": lambda: len(mdask.read_frames(shards, columns=["id"])),
        "label query": lambda: len(mdask.read_frames(shards, QUERY, columns=["id", "labels"])),
        "labels table": lambda: mdask.read_frames(shards, columns=["labels"])["labels"].explode()
        .value_counts(split_out=1).compute().sort_index().to_dict(),
    }


def engine_only(shards: list[str]) -> dict[str, float]:
    """The query engine in this process (fresh handles: the columns are decoded in the timing)."""
    def count(query: str) -> int:
        total = 0
        for path in shards:
            with Archive(path, readonly=True, lock=False) as ar:
                total += ar.get_version("bench", "v1").count(query)
        return total
    return {"count": median_time(lambda: count(""), 3), "label query": median_time(lambda: count(QUERY), 3)}


def timed(fns: dict[str, Callable[[], Any]], repeats: int) -> tuple[dict[str, float], dict[str, Any]]:
    results = {name: fn() for name, fn in fns.items()}  # warm-up: shards opened, columns decoded
    return {name: median_time(fn, repeats) for name, fn in fns.items()}, results


def run_reads(folder: Path, n: int, repeats: int, cluster: distributed.LocalCluster) -> dict[str, Any]:
    shards = [str(p) for p in build_shards(folder, n)]
    one = engine_only(shards)
    log(f"  engine only: {one}")
    with dask.config.set(scheduler="sync"):
        sync, expected = timed(workloads(shards), repeats)
    log(f"  one process (sync scheduler): {sync}")
    mdask.close_archives()
    with distributed.Client(cluster):
        two, got = timed(workloads(shards), repeats)
    log(f"  2 workers: {two}")
    same = all(got[k] == expected[k] for k in got if k != "Dask alone (no archive)")
    return {"n": n, "engine": one, "sync": sync, "cluster": two, "same": same, "rows": expected}


def build_images(folder: Path, m: int) -> tuple[Path, list[Path]]:
    """One archive of the m frames, and two shards of half each (Cityscapes labels and colours)."""
    pairs = make_inputs(folder / "inputs", m)
    labels, colors = cityscapes_labels("labelIds")
    frames = [SingleFrame(source=str(src), mask_source=str(mask), id=f"frame_{i:05d}", timestamp=i)
              for i, (src, mask) in enumerate(pairs)]
    paths = []
    for name, chosen in (("whole", frames), ("img0", frames[: m // 2]), ("img1", frames[m // 2:])):
        path = folder / f"{name}.maskstore"
        with Archive(path, sync=False, jobs=2) as ar:
            v = ar.create_version(dataset_name="bench", version_name="v1")
            set_labels(v, labels, colors)
            v.add_frames(chosen)
            v.publish()
        paths.append(path)
    return paths[0], paths[1:]


def run_export(folder: Path, m: int, repeats: int, cluster: distributed.LocalCluster) -> dict[str, Any]:
    whole, shards = build_images(folder, m)
    local, remote = [], []
    with distributed.Client(cluster):
        mdask.export(shards[:1], folder / "warm", "timestamp < 4")  # workers import the renderer once
        for rep in range(repeats):
            for kind in (("local", "dask") if rep % 2 == 0 else ("dask", "local")):
                out = folder / f"out-{kind}-{rep}"
                start = time.perf_counter()
                if kind == "local":
                    with Archive(whole, readonly=True, lock=False) as ar:
                        report = ar.get_version("bench", "v1").export(out, jobs=2)
                else:
                    report = mdask.export([str(s) for s in shards], out)
                seconds = time.perf_counter() - start
                (local if kind == "local" else remote).append(seconds)
                assert report.written == m and not report.errors, (kind, report.written, report.errors[:2])
                log(f"  export {kind}: {rate(m, seconds):.2f} frames/s")
    return {"m": m, "local": statistics.median(local), "dask": statistics.median(remote)}


def report(r: dict[str, Any], e: dict[str, Any], machine: list[str], command: str, load: tuple) -> str:
    n, total = r["n"], SHARDS * r["n"]
    rows = []
    for name in ("Dask alone (no archive)", "count", "label query", "labels table"):
        engine = r["engine"].get(name)
        rows.append([name, f"{engine:.2f}" if engine else "-", f"{r['sync'][name]:.2f}", f"{r['cluster'][name]:.2f}",
                     f"x{r['sync'][name] / r['cluster'][name]:.2f}",
                     f"{rate(total, r['cluster'][name]) / 2 / 1e6:.2f} M"])
    m = e["m"]
    return "\n".join([
        f"# maskstore.dask: {SHARDS} shards x {n:,} metadata-only frames; export of {m} real frames", "",
        *machine, f"- load average {load[0]:.1f} before, {load[1]:.1f} after (2 cores shared with other work)",
        f"- command: `{command}`", "",
        "Seconds (median), all including the plan on the client (the query on each shard's own columns):", "",
        table(["workload", "engine only (v.count)", "one process (Dask sync)", "2 workers", "speed-up",
               "frames/s per worker"], rows), "",
        f"Results equal between one process and the cluster: {r['same']} "
        f"({r['rows']['count']:,} frames; {r['rows']['label query']:,} with a person).", "",
        f"Export of {m} frames at 2048x1024 (PNG, segmentation): `v.export(jobs=2)` "
        f"{rate(m, e['local']):.2f} frames/s, `maskstore.dask.export` on 2 workers {rate(m, e['dask']):.2f} "
        f"frames/s: **{e['local'] / e['dask']:.2f} of local speed** (goal >= 0.8).", ""])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=1_000_000, help="frames per shard")
    parser.add_argument("--export-frames", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    machine = machine_lines() + [f"- dask {dask.__version__}, distributed {distributed.__version__}"]
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="maskstore-dask-bench-") as tmp, \
            distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                     memory_limit=0) as cluster:
        log(f"reads: {SHARDS} shards x {args.frames:,} frames")
        r = run_reads(Path(tmp), args.frames, args.repeats, cluster)
        log(f"export: {args.export_frames} frames")
        e = run_export(Path(tmp), args.export_frames, max(1, args.repeats - 1), cluster)
    command = "python benchmarks/dask.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = report(r, e, machine, command.strip(), (load, os.getloadavg()[0]))
    print(text)
    if not args.no_write:
        write_result("dask", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
