"""Are maskstore queries faster than SQLite with its best indexes, on the same frames, in the same run?

N metadata-only frames (precomputed mask values, so no image is opened; ~1000 contexts; the label
"person" on ~10% of frames by mask value plus ~2% by ROI; meta city/weather/speed; timestamps) go
into a maskstore archive and into SQLite. SQLite gets what a careful user would build for these
queries: a frames table (context_id, timestamp, JSON body), a materialised ``frame_labels(label, seq)``
table (labels already resolved: the best case for SQLite, and one that must be rebuilt whenever
mask_labels change, which maskstore never needs), covering indexes on context and timestamp, and an
expression index on ``json_extract(body, '$.meta.city')``. ``meta.speed`` has no index in either.

Each workload returns the same thing from both stores (a list of frame ids; for streaming, the
decoded frame dicts), is checked to select the same id set, and is timed as the median of 5 runs
after one warm-up run (reported as "first"); maskstore and SQLite runs alternate so the machine's
noise falls on both. One-time costs are reported apart: building maskstore's column tables after
ingest, and loading them on the first query of a freshly opened archive.

A child process then streams ``v.query("")`` over all N frames and reports its resident memory
before, during and after: the stream must stay flat.

    python benchmarks/query.py --quick              # 100,000 frames
    python benchmarks/query.py                      # 1,000,000 frames, writes results/query.md

Stdout gets the markdown report (also written to ``benchmarks/results/query.md`` unless --no-write);
progress goes to stderr.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import math
import os
import platform
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from maskstore import Archive

REPO = Path(__file__).resolve().parent.parent
RESULT = Path(__file__).resolve().parent / "results" / "query.md"

SEED = 20240607
BATCH = 10_000
CONTEXTS = 1000
WIDTH, HEIGHT = 2048, 1024
T0 = 1_600_000_000_000  # ms
CITIES = ["aachen", "bochum", "bremen", "cologne", "darmstadt", "dusseldorf", "erfurt", "frankfurt",
          "hamburg", "zurich"]
WEATHER = ["clear", "cloudy", "overcast", "rain", "fog"]
# Cityscapes label ids 4..33 as single-channel values (v, v, v); 24 is "person".
NAMES = {4: "static", 5: "dynamic", 6: "ground", 7: "road", 8: "sidewalk", 9: "parking", 10: "rail track",
         11: "building", 12: "wall", 13: "fence", 14: "guard rail", 15: "bridge", 16: "tunnel", 17: "pole",
         18: "polegroup", 19: "traffic light", 20: "traffic sign", 21: "vegetation", 22: "terrain", 23: "sky",
         24: "person", 25: "rider", 26: "car", 27: "truck", 28: "bus", 29: "caravan", 30: "trailer",
         31: "train", 32: "motorcycle", 33: "bicycle"}
PERSON = 24
OTHER_IDS = [v for v in NAMES if v != PERSON]
MASK_LABELS = [{"value": [v, v, v], "labels": [name]} for v, name in NAMES.items()]
REPEATS = 5


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- the frames

def make_frame(i: int, n: int, rng: random.Random) -> dict[str, Any]:
    per_context = -(-n // CONTEXTS)
    context, frame_no = divmod(i, per_context)
    drive = f"drive_{context:04d}"
    k = rng.randint(3, 8)
    values = rng.sample(OTHER_IDS, k)
    if rng.random() < 0.10:
        values[rng.randrange(k)] = PERSON
    cuts = sorted(rng.sample(range(1, WIDTH * HEIGHT), k - 1))
    counts = [b - a for a, b in zip([0, *cuts], [*cuts, WIDTH * HEIGHT])]
    rois = []
    if rng.random() < 0.02:
        rois.append({"label": ["person"], "confidence": round(rng.random(), 3),
                     "poly": [10, 10, 60, 10, 60, 120, 10, 120]})
    return {
        "id": f"{drive}_{frame_no:06d}",
        "timestamp": T0 + context * 10_000_000 + frame_no * 100,
        "context_id": drive,
        "meta": {"city": CITIES[context % len(CITIES)], "weather": WEATHER[rng.randrange(len(WEATHER))],
                 "speed": round(rng.uniform(0.0, 100.0), 2)},
        "sources": [{"id": "front", "uri": f"/data/{drive}/front/{frame_no:06d}.png", "width": WIDTH,
                     "height": HEIGHT,
                     "masks": [{"id": "00", "uri": f"/data/{drive}/masks/{frame_no:06d}.png",
                                "values": [[v, v, v, c] for v, c in sorted(zip(values, counts))]}]}],
        "rois": rois,
    }


def batches(n: int) -> Iterator[list[dict[str, Any]]]:
    for start in range(0, n, BATCH):
        rng = random.Random(SEED * 1_000_003 + start)
        yield [make_frame(i, n, rng) for i in range(start, min(n, start + BATCH))]


def add_timed(version: Any, n: int) -> float:
    """Seconds maskstore spends taking the generator's ``n`` frames batch by batch and syncing them
    (an archive opened with ``sync=False``); making the frames is not counted."""
    seconds = 0.0
    for frames in batches(n):
        start = time.perf_counter()
        version.add_frames(frames)
        seconds += time.perf_counter() - start
    start = time.perf_counter()
    version.archive.sync()
    return seconds + time.perf_counter() - start


def frame_labels(frame: dict[str, Any]) -> set[str]:
    """What ``label`` means (spec section 2): labels of the mask values, and the ROI labels."""
    out = {NAMES[v[0]] for s in frame["sources"] for m in s["masks"] for v in m["values"] if v[0] in NAMES}
    return out | {label for r in frame["rois"] for label in r["label"]}


# ----------------------------------------------------------------------------- SQLite

SCHEMA = """
    CREATE TABLE frames(seq INTEGER PRIMARY KEY, id TEXT NOT NULL, context_id TEXT NOT NULL,
                        timestamp INTEGER NOT NULL, body TEXT NOT NULL);
    CREATE TABLE frame_labels(label TEXT NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY (label, seq)) WITHOUT ROWID;
"""
INDEXES = """
    CREATE UNIQUE INDEX frames_id ON frames(id);
    CREATE INDEX frames_context ON frames(context_id, id);
    CREATE INDEX frames_time ON frames(timestamp, id);
    CREATE INDEX frames_city ON frames(json_extract(body, '$.meta.city'));
    ANALYZE;
"""


def create_sqlite(path: Path) -> sqlite3.Connection:
    """A new SQLite store for bulk loading (no journal, no sync); indexes come after the load."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=OFF")
    conn.execute("PRAGMA synchronous=OFF")
    conn.executescript(SCHEMA)
    return conn


def sqlite_insert(conn: sqlite3.Connection, frames: list[dict[str, Any]], seq: int) -> int:
    """One batch into the SQLite store, in one transaction; the next seq."""
    rows, labels = [], []
    for f in frames:
        rows.append((seq, f["id"], f["context_id"], f["timestamp"], json.dumps(f)))
        labels += [(label, seq) for label in frame_labels(f)]
        seq += 1
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO frames VALUES (?, ?, ?, ?, ?)", rows)
    conn.executemany("INSERT INTO frame_labels VALUES (?, ?)", labels)
    conn.execute("COMMIT")
    return seq


def open_sqlite(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA mmap_size=17179869184")  # its fastest read path; maskstore reads an mmap too
    conn.execute("PRAGMA cache_size=-1000000")    # 1 GB page cache
    return conn


# ----------------------------------------------------------------------------- build both stores

def build(n: int, ms_path: Path, sq_path: Path) -> dict[str, float]:
    seconds = {"maskstore": 0.0, "SQLite": 0.0}
    with Archive(ms_path, sync=False) as ar:
        v = ar.create_version(dataset_name="bench", version_name="v1")
        v.set_masks_labels(MASK_LABELS)
        conn = create_sqlite(sq_path)
        seq = 0
        for b, frames in enumerate(batches(n)):
            start = time.perf_counter()
            v.add_frames(frames)
            seconds["maskstore"] += time.perf_counter() - start
            start = time.perf_counter()
            seq = sqlite_insert(conn, frames, seq)
            seconds["SQLite"] += time.perf_counter() - start
            if b % 10 == 9 or seq == n:
                log(f"  built {seq:,}/{n:,}  maskstore {seconds['maskstore']:.1f} s  SQLite {seconds['SQLite']:.1f} s")
        start = time.perf_counter()
        conn.executescript(INDEXES)
        conn.close()
        seconds["SQLite"] += time.perf_counter() - start
        start = time.perf_counter()
        ar.sync()
        seconds["maskstore"] += time.perf_counter() - start
        # Writers store the columns as they write: the first query after ingest only loads them.
        start = time.perf_counter()
        assert v.count("") == n
        seconds["columns"] = time.perf_counter() - start
    return seconds


# ----------------------------------------------------------------------------- workloads

def workloads(n: int) -> list[tuple[str, str, str, tuple[Any, ...], str]]:
    """(name, maskstore query, SQL, SQL parameters, result kind)."""
    lo, hi = T0 + 100 * 10_000_000, T0 + 150 * 10_000_000
    by_label = "FROM frame_labels l JOIN frames f ON f.seq = l.seq WHERE l.label = ?"
    return [
        ("context equality", 'context_id == "drive_0421"',
         "SELECT id FROM frames WHERE context_id = ?", ("drive_0421",), "ids"),
        ("label equality", 'label == "person"', f"SELECT f.id {by_label}", ("person",), "ids"),
        ("meta equality", 'meta.city == "frankfurt"',
         "SELECT id FROM frames WHERE json_extract(body, '$.meta.city') = ?", ("frankfurt",), "ids"),
        ("label and meta", 'label == "person" and meta.city == "frankfurt"',
         f"SELECT f.id {by_label} AND json_extract(f.body, '$.meta.city') = ?", ("person", "frankfurt"), "ids"),
        ("timestamp range", f"timestamp >= {lo} and timestamp < {hi}",
         "SELECT id FROM frames WHERE timestamp >= ? AND timestamp < ?", (lo, hi), "ids"),
        ("unindexed meta range", "meta.speed > 80",
         "SELECT id FROM frames WHERE json_extract(body, '$.meta.speed') > ?", (80,), "ids"),
        ("stream frames of a label", 'label == "person"', f"SELECT f.body {by_label}", ("person",), "frames"),
    ]


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    gc.collect()  # no run pays for the garbage of the one before
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def run_workloads(n: int, ms_path: Path, sq_path: Path) -> tuple[list[dict[str, Any]], float]:
    """Time every workload on both stores; each row also carries maskstore's plan."""
    rows = []
    with Archive(ms_path, readonly=True) as ar:
        v = ar.get_version("bench", "v1")
        # A freshly opened archive loads its column tables on the first query.
        load_seconds, _ = timed(lambda: v.count('id == "none"'))
        conn = open_sqlite(sq_path)
        for name, query, sql, params, kind in workloads(n):
            if kind == "ids":
                ms_run: Callable[[], Any] = lambda q=query: v.ids(q)
                sq_run: Callable[[], Any] = lambda s=sql, p=params: [r[0] for r in conn.execute(s, p)]
            else:
                ms_run = lambda q=query: list(v.query_dicts(q))
                sq_run = lambda s=sql, p=params: [json.loads(r[0]) for r in conn.execute(s, p)]
            ms_first, result = timed(ms_run)
            ms_ids = [d["id"] for d in result] if kind == "frames" else result
            sq_first, result = timed(sq_run)
            sq_ids = [d["id"] for d in result] if kind == "frames" else result
            del result
            ms_times, sq_times = [], []
            for i in range(REPEATS):  # alternate, so noise falls on both
                order = [(ms_run, ms_times), (sq_run, sq_times)]
                for run, times in order if i % 2 == 0 else order[::-1]:
                    times.append(timed(run)[0])
            same = set(ms_ids) == set(sq_ids) and len(ms_ids) == len(sq_ids)
            row = {"name": name, "query": query, "rows": len(ms_ids), "same": same, "plan": v.explain(query),
                   "ms_first": ms_first, "sq_first": sq_first,
                   "ms": statistics.median(ms_times), "sq": statistics.median(sq_times)}
            row["ratio"] = row["ms"] / row["sq"]
            rows.append(row)
            log(f"  {name:<26} {len(ms_ids):>9,} rows  maskstore {row['ms'] * 1e3:9.1f} ms  "
                f"SQLite {row['sq'] * 1e3:9.1f} ms  ratio {row['ratio']:.3f}  same ids: {same}")
        conn.close()
    return rows, load_seconds


# ----------------------------------------------------------------------------- streaming memory

def _status_kib(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return -1


def rss_child(archive: str) -> None:
    """Runs in a fresh process: stream every frame and report resident memory as it goes."""
    def sample(label: str, count: int) -> dict[str, Any]:
        return {"at": label, "frames": count, "rss_mib": _status_kib("VmRSS") / 1024,
                "anon_mib": _status_kib("RssAnon") / 1024,
                "peak_mib": _status_kib("VmHWM") / 1024}  # ru_maxrss would carry the parent's peak over exec
    with Archive(archive, readonly=True) as ar:
        v = ar.get_version("bench", "v1")
        n = len(v)
        samples = [sample("archive open", 0)]
        marks = {1, n // 10, n // 2, n}
        count = 0
        start = time.perf_counter()
        for frame in v.query(""):
            count += 1
            if count in marks:
                samples.append(sample(f"{count / n:.0%} streamed" if count > 1 else "first frame", count))
        seconds = time.perf_counter() - start
        assert count == n
    print(json.dumps({"samples": samples, "seconds": seconds, "frames": count}))


def measure_rss(ms_path: Path) -> dict[str, Any]:
    out = subprocess.run([sys.executable, __file__, "--rss-child", str(ms_path)], capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout)


# ----------------------------------------------------------------------------- report

def machine_lines() -> list[str]:
    try:
        ram = f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.1f} GiB RAM"
    except (ValueError, OSError, AttributeError):
        ram = "RAM unknown"
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "maskstore", "grammar"], cwd=REPO,
                               capture_output=True, text=True, check=True).stdout.strip()
        commit = head + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    import lmdb
    import numpy
    return [
        f"- date: {datetime.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}",
        f"- machine: {platform.platform()}, {platform.machine()}, {os.cpu_count()} CPUs (shared, noisy), {ram}",
        f"- python {platform.python_version()}; SQLite {sqlite3.sqlite_version}; LMDB "
        f"{'.'.join(map(str, lmdb.version()))} (py-lmdb {lmdb.__version__}); numpy {numpy.__version__}",
        f"- maskstore commit: {commit}",
    ]


def md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" if i < 2 else "---:" for i in range(len(header))) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def report(n: int, build_s: dict[str, float], rows: list[dict[str, Any]], load_s: float,
           rss: dict[str, Any], sizes: dict[str, int], machine: list[str]) -> str:
    ms = lambda s: f"{s * 1e3:,.1f}"  # noqa: E731
    table = md_table(
        ["workload", "maskstore query", "rows", "maskstore ms", "SQLite ms", "ratio", "first: maskstore / SQLite ms",
         "same ids"],
        [[r["name"], f"`{r['query']}`", f"{r['rows']:,}", ms(r["ms"]), ms(r["sq"]), f"{r['ratio']:.3f}",
          f"{ms(r['ms_first'])} / {ms(r['sq_first'])}", "yes" if r["same"] else "**NO**"] for r in rows])
    geomean = math.exp(statistics.mean(math.log(r["ratio"]) for r in rows))
    scan = next(r for r in rows if r["name"] == "unindexed meta range")
    scan_ok = scan["ms"] <= 0.100 and scan["sq"] / scan["ms"] >= 10
    samples = rss["samples"]
    rss_table = md_table(["point", "frames", "RSS MiB", "anonymous MiB", "peak RSS MiB"],
                         [[s["at"], f"{s['frames']:,}", f"{s['rss_mib']:,.0f}", f"{s['anon_mib']:,.0f}",
                           f"{s['peak_mib']:,.0f}"] for s in samples])
    first_frame = next(s for s in samples if s["frames"] == 1)
    growth = samples[-1]["anon_mib"] - first_frame["anon_mib"]
    lines = [
        f"# Query speed: maskstore vs SQLite, {n:,} frames",
        "",
        "Produced by `python benchmarks/query.py" + ("" if n == 1_000_000 else f" --frames {n}") + "`. "
        "Ratio = maskstore / SQLite (below 1: maskstore faster); median of 5 runs after one warm-up run "
        "(the warm-up is the \"first\" column); the two stores alternate run by run.",
        "",
        *machine,
        "",
        "## Queries",
        "",
        table,
        "",
        f"- **geometric mean of the ratios: {geomean:.3f}** (goal <= 0.5: {'met' if geomean <= 0.5 else 'NOT met'})",
        f"- unindexed scan `meta.speed > 80`: {ms(scan['ms'])} ms, {scan['sq'] / scan['ms']:.1f}x faster than "
        f"SQLite's json_extract scan (goal <= 100 ms and >= 10x: {'met' if scan_ok else 'NOT met'})",
        f"- every workload selected the same ids in both stores: {'yes' if all(r['same'] for r in rows) else '**NO**'}",
        "",
        "One-time costs, not in the table:",
        "",
        f"- ingest of all frames: maskstore {build_s['maskstore']:.1f} s (`sync=False`, batches of {BATCH:,}), "
        f"SQLite {build_s['SQLite']:.1f} s (journal off, synchronous off, indexes built after the load)",
        f"- maskstore's first query after the ingest (loads the column tables the writers stored): {build_s['columns']:.2f} s",
        f"- first query on a freshly opened archive (loads the column tables): {ms(load_s)} ms",
        f"- files: maskstore {sizes['maskstore'] / 2**20:,.0f} MiB, SQLite {sizes['SQLite'] / 2**20:,.0f} MiB",
        "",
        "What each side runs: maskstore `v.ids(q)` (ids in storage order) or `list(v.query_dicts(q))`; SQLite "
        "the SELECT below with `fetchall` semantics (ids) or `json.loads` of each body. SQLite's `label` is a "
        "materialised `frame_labels(label, seq)` table (WITHOUT ROWID, its primary key is the index); its "
        "context and timestamp indexes cover `id`; `meta.city` has an expression index; `meta.speed` has none "
        "on either side.",
        "",
        md_table(["workload", "SQL"], [[r["name"], f"`{sql}`"] for r, (_, _, sql, _, _) in zip(rows, workloads(n))]),
        "",
        "maskstore's plans (`v.explain(q)`):",
        "",
        "```",
        *[line for r in rows if r["name"] != "stream frames of a label" for line in (r["plan"], "")][:-1],
        "```",
        "",
        "## Streaming memory",
        "",
        f"A fresh process opens the archive read-only and iterates `v.query(\"\")` over all {n:,} frames "
        f"(Frame objects, {rss['frames'] / rss['seconds']:,.0f} frames/s). RSS includes the pages of the "
        "memory-mapped archive file the reads touch (the kernel can drop them at any time); the "
        "anonymous part is the process's own heap.",
        "",
        rss_table,
        "",
        f"Heap growth from the first frame to the last: {growth:+,.0f} MiB over {n:,} frames "
        f"({'flat' if growth < 64 else 'NOT flat'}). The heap at the first frame holds the version's column tables "
        "and the selected seq array, which the whole stream shares.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", help="100,000 frames")
    parser.add_argument("--workdir", type=Path, help="where the stores go (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the stores")
    parser.add_argument("--no-write", action="store_true", help=f"do not write {RESULT.relative_to(REPO)}")
    parser.add_argument("--rss-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        rss_child(args.rss_child)
        return
    n = 100_000 if args.quick else args.frames
    machine = machine_lines()  # before the run: the commit measured, not one made meanwhile
    workdir = Path(tempfile.mkdtemp(prefix="maskstore-query-", dir=args.workdir))
    try:
        ms_path, sq_path = workdir / "bench.maskstore", workdir / "bench.sqlite"
        log(f"building {n:,} frames in {workdir}")
        build_s = build(n, ms_path, sq_path)
        sizes = {"maskstore": ms_path.stat().st_size, "SQLite": sq_path.stat().st_size}
        log("running the workloads")
        rows, load_s = run_workloads(n, ms_path, sq_path)
        log("measuring memory while streaming every frame")
        rss = measure_rss(ms_path)
        text = report(n, build_s, rows, load_s, rss, sizes, machine)
        print(text)
        if not args.no_write:
            RESULT.parent.mkdir(parents=True, exist_ok=True)
            RESULT.write_text(text, encoding="utf-8")
            log(f"wrote {RESULT}")
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
