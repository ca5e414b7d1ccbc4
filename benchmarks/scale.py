"""Do maskstore queries stay fast as versions grow, compared with DuckDB and SQLite on the same frames?

The frames and SQLite store of ``benchmarks/query.py`` (its generator, schema and workloads), at
100,000 and 1,000,000 frames (``--full`` adds 3M and 10M), plus DuckDB with the same frames as a
native table (``labels`` a list column resolved like SQLite's ``frame_labels``; city, weather and
speed as columns). Per size:

- maskstore ingest in a child process (``sync=False``, batches of 10,000), then its first query
  after ingest (``meta.city == "frankfurt"``, a column scan: before this work it rebuilt every
  column chunk) against the same query warm, and the peak RSS of that first query alone;
- a fresh process opening the archive read-only: its first query, and its RSS after it;
- warm queries on all three stores, median of 5 alternating runs, same ids checked;
- bytes per frame of each store, and maskstore's per sub-database breakdown.

    python benchmarks/scale.py --quick     # 100,000 frames
    python benchmarks/scale.py             # 100,000 and 1,000,000 frames, writes results/scale.md
    python benchmarks/scale.py --full      # also 3M and 10M (hours; not in CI)
    python benchmarks/scale.py --sizes 10000000 --no-write   # one size, printed only
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import log, machine_lines, table, write_result  # noqa: E402
from query import (INDEXES, MASK_LABELS, NAMES, add_timed, batches, create_sqlite, frame_labels, open_sqlite,  # noqa: E402
                   sqlite_insert, timed, workloads)

from maskstore import Archive  # noqa: E402
from maskstore.archive import VERSION_DBS  # noqa: E402
from maskstore.query.parse import parse_query  # noqa: E402

FIRST_QUERY = 'meta.city == "frankfurt"'
REPEATS = 5
COLD_RUNS = 3


def _status_mib(field: str) -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak() -> None:
    """Linux: ``5`` in clear_refs resets VmHWM, so the next peak is one step's own."""
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")


# ----------------------------------------------------------------------------- children

def ingest_child(path: str, n: int) -> dict[str, Any]:
    """Ingest, then the first query after it and the same query warm, in this one process."""
    warnings.simplefilter("ignore")
    with Archive(path, sync=False) as ar:
        v = ar.create_version(dataset_name="bench", version_name="v1")
        v.set_masks_labels(MASK_LABELS)
        v.count('label == "person"')  # imports and the parser, once per process: not the columns' cost
        parse_query(FIRST_QUERY)  # nor parsing the text (cached per text; checking it is in the timing)
        seconds = add_timed(v, n)
        _reset_peak()
        before = _status_mib("VmRSS")
        first, count = timed(lambda: v.count(FIRST_QUERY))
        peak = _status_mib("VmHWM")
        warm = statistics.median(timed(lambda: v.count(FIRST_QUERY))[0] for _ in range(REPEATS))
        sizes = {name: _db_bytes(ar, name) for name in ("meta", "versions", "blobs", *VERSION_DBS)}
    return {"ingest_s": seconds, "first_s": first, "warm_s": warm, "rows": count, "rss_before_mib": before,
            "first_peak_mib": peak, "db_bytes": sizes}


def _db_bytes(ar: Archive, name: str) -> int:
    stat = ar.read(lambda txn: txn.stat(ar.db(name)))
    return (stat["branch_pages"] + stat["leaf_pages"] + stat["overflow_pages"]) * stat["psize"]


def drop_from_page_cache(path: str) -> None:
    """Evict the file's pages from the page cache, as after a reboot or on another machine. Right
    after an ingest the cache holds the writer's pages in large folios, which a reader's fault maps
    whole (hundreds of KiB per page touched), so its RSS says more about the writer than about it."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def fresh_child(path: str, cold: bool = False) -> dict[str, Any]:
    """A new process: open read-only, first query (loads the columns it needs), RSS after; ``cold``:
    with the file dropped from the page cache first."""
    warnings.simplefilter("ignore")
    if cold:
        drop_from_page_cache(path)
    start = time.perf_counter()
    with Archive(path, readonly=True) as ar:
        v = ar.get_version("bench", "v1")
        opened = time.perf_counter() - start
        first, _ = timed(lambda: v.count(FIRST_QUERY))
        rss, anon = _status_mib("VmRSS"), _status_mib("RssAnon")
        lookup, _ = timed(lambda: v.ids('context_id == "drive_0421"'))
    return {"open_s": opened, "first_s": first, "rss_mib": rss, "anon_mib": anon, "lookup_s": lookup}


def _child(*args: str) -> dict[str, Any]:
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


# ----------------------------------------------------------------------------- the other stores

DUCK_SCHEMA = """CREATE TABLE frames(seq BIGINT, id VARCHAR, context_id VARCHAR, timestamp BIGINT, city VARCHAR,
                                     weather VARCHAR, speed DOUBLE, labels VARCHAR[])"""
# Coverage, materialised for both SQL stores like frame_labels: each frame's pixels per mask label.
SQLITE_PIXELS = ("CREATE TABLE label_pixels(label TEXT, seq INTEGER, pixels INTEGER, total INTEGER, "
                 "PRIMARY KEY (label, seq)) WITHOUT ROWID")
DUCK_PIXELS = "CREATE TABLE label_pixels(label VARCHAR, seq BIGINT, pixels BIGINT, total BIGINT)"


def label_pixels(frames: list[dict[str, Any]], seq: int) -> list[tuple[str, int, int, int]]:
    """(label, seq, pixels of the values so labelled, all mask pixels) per frame and mask label."""
    rows = []
    for i, f in enumerate(frames, seq):
        values = [v for s in f["sources"] for m in s["masks"] for v in m["values"]]
        pixels: dict[str, int] = {}
        for v in values:
            if v[0] in NAMES:
                pixels[NAMES[v[0]]] = pixels.get(NAMES[v[0]], 0) + v[3]
        rows += [(label, i, count, sum(v[3] for v in values)) for label, count in pixels.items()]
    return rows


# The whole frame as the generator gives it, nested: what maskstore's frame records hold (maskstore
# adds the defaults ingest fills in: ids, content types, per-source and per-mask timestamps).
DUCK_WHOLE_SCHEMA = """CREATE TABLE frames(
    seq BIGINT, id VARCHAR, context_id VARCHAR, timestamp BIGINT,
    meta STRUCT(city VARCHAR, weather VARCHAR, speed DOUBLE),
    sources STRUCT(id VARCHAR, uri VARCHAR, width INTEGER, height INTEGER,
                   masks STRUCT(id VARCHAR, uri VARCHAR, "values" BIGINT[][])[])[],
    rois STRUCT(label VARCHAR[], confidence DOUBLE, poly DOUBLE[])[])"""


def whole_rows(frames: list[dict[str, Any]], seq: int) -> list[dict[str, Any]]:
    return [{"seq": seq + i, **f, "rois": [{"label": r["label"], "confidence": r.get("confidence"),
                                             "poly": [float(x) for x in r.get("poly", [])]} for r in f["rois"]]}
            for i, f in enumerate(frames)]


def build_others(n: int, sq_path: Path, duck_path: Path, whole_path: Path) -> dict[str, float]:
    """SQLite as benchmarks/query.py builds it, and DuckDB (query columns; and whole frames, for their
    size only), from one pass of the generator."""
    import duckdb
    import pyarrow as pa
    seconds = {"SQLite": 0.0, "DuckDB": 0.0, "DuckDB whole frames": 0.0}
    conn, duck, whole = create_sqlite(sq_path), duckdb.connect(str(duck_path)), duckdb.connect(str(whole_path))
    duck.execute(DUCK_SCHEMA)
    whole.execute(DUCK_WHOLE_SCHEMA)
    whole_schema = whole.sql("SELECT * FROM frames LIMIT 0").to_arrow_table().schema
    conn.execute(SQLITE_PIXELS)
    duck.execute(DUCK_PIXELS)
    seq = 0
    for frames in batches(n):
        start = time.perf_counter()
        next_seq = sqlite_insert(conn, frames, seq)
        pixels = label_pixels(frames, seq)
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO label_pixels VALUES (?, ?, ?, ?)", pixels)
        conn.execute("COMMIT")
        seconds["SQLite"] += time.perf_counter() - start
        start = time.perf_counter()
        batch = pa.table({  # noqa: F841 (DuckDB reads the local by name)
            "seq": list(range(seq, next_seq)), "id": [f["id"] for f in frames],
            "context_id": [f["context_id"] for f in frames], "timestamp": [f["timestamp"] for f in frames],
            "city": [f["meta"]["city"] for f in frames], "weather": [f["meta"]["weather"] for f in frames],
            "speed": [float(f["meta"]["speed"]) for f in frames],
            "labels": [sorted(frame_labels(f)) for f in frames]})
        duck.execute("INSERT INTO frames SELECT * FROM batch")
        pixel_batch = pa.table(dict(zip(("label", "seq", "pixels", "total"), map(list, zip(*pixels)))))  # noqa: F841
        duck.execute("INSERT INTO label_pixels SELECT * FROM pixel_batch")
        seconds["DuckDB"] += time.perf_counter() - start
        start = time.perf_counter()
        nested = pa.Table.from_pylist(whole_rows(frames, seq), schema=whole_schema)  # noqa: F841 (by name)
        whole.execute("INSERT INTO frames SELECT * FROM nested")
        seconds["DuckDB whole frames"] += time.perf_counter() - start
        seq = next_seq
    start = time.perf_counter()
    conn.executescript(INDEXES)
    conn.close()
    seconds["SQLite"] += time.perf_counter() - start
    start = time.perf_counter()
    duck.execute("CHECKPOINT")
    duck.close()
    seconds["DuckDB"] += time.perf_counter() - start
    start = time.perf_counter()
    whole.execute("CHECKPOINT")
    whole.close()
    seconds["DuckDB whole frames"] += time.perf_counter() - start
    return seconds


def duck_sql(name: str) -> str:
    """DuckDB's SQL for each workload of benchmarks/query.py (and the ones added here)."""
    return {
        "context equality": "SELECT id FROM frames WHERE context_id = $1 ORDER BY seq",
        "label equality": "SELECT id FROM frames WHERE list_contains(labels, $1) ORDER BY seq",
        "meta equality": "SELECT id FROM frames WHERE city = $1 ORDER BY seq",
        "label and meta": "SELECT id FROM frames WHERE list_contains(labels, $1) AND city = $2 ORDER BY seq",
        "timestamp range": "SELECT id FROM frames WHERE timestamp >= $1 AND timestamp < $2 ORDER BY seq",
        "unindexed meta range": "SELECT id FROM frames WHERE speed > $1 ORDER BY seq",
        "order by timestamp desc limit 100 over a label":
            "SELECT id FROM frames WHERE list_contains(labels, $1) ORDER BY timestamp DESC LIMIT 100",
        "count everything": "SELECT count(*) FROM frames",
        "timestamp range count": "SELECT count(*) FROM frames WHERE timestamp >= $1 AND timestamp < $2",
        "coverage over a threshold": "SELECT f.id FROM frames f JOIN label_pixels p ON p.seq = f.seq WHERE p.label = $1 "
                                     "AND p.pixels::DOUBLE / p.total > $2 ORDER BY f.seq",
        "coverage count": "SELECT count(*) FROM label_pixels WHERE label = $1 AND pixels::DOUBLE / total > $2",
    }[name]


def all_workloads(n: int) -> list[tuple[str, str, str, tuple[Any, ...], str]]:
    """benchmarks/query.py's id workloads, plus order-by-limit and counts: (name, query, SQL, params, kind)."""
    by_label = "FROM frame_labels l JOIN frames f ON f.seq = l.seq WHERE l.label = ?"
    ranged = next(w for w in workloads(n) if w[0] == "timestamp range")
    return [w for w in workloads(n) if w[4] == "ids"] + [
        ("order by timestamp desc limit 100 over a label", 'label == "person" order by timestamp desc limit 100',
         f"SELECT f.id {by_label} ORDER BY f.timestamp DESC LIMIT 100", ("person",), "ids"),
        ("count everything", "", "SELECT count(*) FROM frames", (), "count"),
        ("timestamp range count", ranged[1], "SELECT count(*) FROM frames WHERE timestamp >= ? AND timestamp < ?",
         ranged[3], "count"),
        ("coverage over a threshold", 'coverage("person") > 0.2', "SELECT f.id FROM label_pixels p JOIN frames f "
         "ON f.seq = p.seq WHERE p.label = ? AND CAST(p.pixels AS REAL) / p.total > ?", ("person", 0.2), "ids"),
        ("coverage count", 'coverage("car") > 0.1',
         "SELECT count(*) FROM label_pixels WHERE label = ? AND CAST(pixels AS REAL) / total > ?", ("car", 0.1), "count"),
    ]


def run_warm(n: int, ms_path: Path, sq_path: Path, duck_path: Path) -> list[dict[str, Any]]:
    import duckdb
    warnings.simplefilter("ignore")
    rows = []
    with Archive(ms_path, readonly=True) as ar:
        v = ar.get_version("bench", "v1")
        conn, duck = open_sqlite(sq_path), duckdb.connect(str(duck_path), read_only=True)
        for name, query, sql, params, kind in all_workloads(n):
            dsql = duck_sql(name)
            if kind == "ids":
                runs: dict[str, Callable[[], Any]] = {
                    "maskstore": lambda q=query: v.ids(q),
                    "SQLite": lambda s=sql, p=params: [r[0] for r in conn.execute(s, p)],
                    "DuckDB": lambda s=dsql, p=params: [r[0] for r in duck.execute(s, list(p)).fetchall()]}
            else:
                runs = {"maskstore": lambda q=query: v.count(q),
                        "SQLite": lambda s=sql, p=params: conn.execute(s, p).fetchone()[0],
                        "DuckDB": lambda s=dsql, p=params: duck.execute(s, list(p)).fetchone()[0]}
            answers = {store: run() for store, run in runs.items()}  # warm-up, and the answers compared
            ordered = "order by" in query
            same = all((a == answers["maskstore"]) if ordered or kind == "count" else
                       (sorted(a) == sorted(answers["maskstore"])) for a in answers.values())
            times: dict[str, list[float]] = {store: [] for store in runs}
            for i in range(REPEATS):  # rotate the order, so the machine's noise falls on all three
                order = list(runs)[i % 3:] + list(runs)[:i % 3]
                for store in order:
                    times[store].append(timed(runs[store])[0])
            med = {store: statistics.median(t) for store, t in times.items()}
            result = answers["maskstore"]
            rows.append({"name": name, "query": query or "(all frames)", "rows": result if kind == "count" else len(result),
                         "same": same, **{f"{k}_s": t for k, t in med.items()}})
            log(f"  {name:<48} maskstore {med['maskstore'] * 1e3:8.2f} ms  DuckDB {med['DuckDB'] * 1e3:8.2f} ms  "
                f"SQLite {med['SQLite'] * 1e3:8.2f} ms  same: {same}")
        conn.close()
        duck.close()
    return rows


# ----------------------------------------------------------------------------- one size, the report

def measure(n: int, workdir: Path) -> dict[str, Any]:
    ms_path, sq_path, duck_path = workdir / f"{n}.maskstore", workdir / f"{n}.sqlite", workdir / f"{n}.duckdb"
    whole_path = workdir / f"{n}-whole.duckdb"
    log(f"{n:,} frames: maskstore ingest (child process)")
    ingest = _child("--ingest-child", str(ms_path), str(n))
    log(f"  ingest {ingest['ingest_s']:.1f} s, first query {ingest['first_s'] * 1e3:.1f} ms, warm "
        f"{ingest['warm_s'] * 1e3:.1f} ms")
    fresh = _child("--fresh-child", str(ms_path))
    log(f"  fresh process: first query {fresh['first_s'] * 1e3:.1f} ms, RSS {fresh['rss_mib']:.0f} MiB")
    colds = sorted((_child("--fresh-child", str(ms_path), "--cold") for _ in range(COLD_RUNS)), key=lambda r: r["first_s"])
    cold = colds[COLD_RUNS // 2]  # the median run: a cold disk read varies run to run
    runs = ", ".join(f"{r['first_s'] * 1e3:.0f}" for r in colds)
    log(f"  fresh process, file not cached: first query {cold['first_s'] * 1e3:.1f} ms (of {runs}), "
        f"RSS {cold['rss_mib']:.0f} MiB")
    log("  SQLite and DuckDB")
    others = build_others(n, sq_path, duck_path, whole_path)
    warm = run_warm(n, ms_path, sq_path, duck_path)
    sizes = {"maskstore": ms_path.stat().st_size, "SQLite": sq_path.stat().st_size,
             "DuckDB": duck_path.stat().st_size, "DuckDB whole frames": whole_path.stat().st_size}
    for path in (ms_path, sq_path, duck_path, whole_path):
        path.unlink()
    return {"n": n, "ingest": ingest, "fresh": fresh, "cold": cold, "build_s": others, "warm": warm, "sizes": sizes}


def report(results: list[dict[str, Any]], machine: list[str], command: str) -> str:
    ns = [r["n"] for r in results]
    head = ["at N frames", *[f"{n:,}" for n in ns]]
    ms = lambda s: f"{s * 1e3:,.1f}"  # noqa: E731
    scale = table(head, [
        ["maskstore ingest, s", *[f"{r['ingest']['ingest_s']:.1f}" for r in results]],
        [f"first query after ingest (`{FIRST_QUERY}` count), ms", *[ms(r["ingest"]["first_s"]) for r in results]],
        ["the same query warm, ms", *[ms(r["ingest"]["warm_s"]) for r in results]],
        ["first / warm (goal <= 2)", *[f"{r['ingest']['first_s'] / r['ingest']['warm_s']:.1f}" for r in results]],
        ["peak RSS of that first query, MiB (process RSS before it)",
         *[f"{r['ingest']['first_peak_mib']:,.0f} ({r['ingest']['rss_before_mib']:,.0f})" for r in results]],
        ["fresh process: open, ms", *[ms(r["fresh"]["open_s"]) for r in results]],
        ["fresh process: first query, ms", *[ms(r["fresh"]["first_s"]) for r in results]],
        ["fresh process: RSS after it, MiB (anonymous)",
         *[f"{r['fresh']['rss_mib']:,.0f} ({r['fresh']['anon_mib']:,.0f})" for r in results]],
        ["fresh process: then a context lookup, ms", *[ms(r["fresh"]["lookup_s"]) for r in results]],
        ["fresh process, the file not in the page cache: first query, ms (median of 3)",
         *[ms(r["cold"]["first_s"]) for r in results]],
        ["the same: RSS after it, MiB (anonymous)",
         *[f"{r['cold']['rss_mib']:,.0f} ({r['cold']['anon_mib']:,.0f})" for r in results]],
        *[[f"`{w['name']}`, ms", *[ms(next(x for x in r["warm"] if x["name"] == w["name"])["maskstore_s"])
                                  for r in results]] for w in results[0]["warm"] if w["name"].startswith("order by")],
        *[[f"bytes per frame: {store}", *[f"{r['sizes'][store] / r['n']:,.0f}" for r in results]]
          for store in ("maskstore", "DuckDB whole frames", "DuckDB", "SQLite")],
        ["maskstore / DuckDB whole frames, bytes (goal <= 2)",
         *[f"{r['sizes']['maskstore'] / r['sizes']['DuckDB whole frames']:.2f}" for r in results]],
    ])
    sections = []
    for r in results:
        rows = [[w["name"], f"`{w['query']}`", f"{w['rows']:,}", ms(w["maskstore_s"]), ms(w["DuckDB_s"]),
                 ms(w["SQLite_s"]), f"{w['DuckDB_s'] / w['maskstore_s']:.2f}", f"{w['SQLite_s'] / w['maskstore_s']:.2f}",
                 "yes" if w["same"] else "**NO**"] for w in r["warm"]]
        breakdown = sorted(r["ingest"]["db_bytes"].items(), key=lambda kv: -kv[1])
        sections += [
            f"## {r['n']:,} frames", "",
            table(["workload", "maskstore query", "rows", "maskstore ms", "DuckDB ms", "SQLite ms",
                   "DuckDB / maskstore", "SQLite / maskstore", "same answer"], rows), "",
            f"Ratios above 1: maskstore faster. Loads: DuckDB {r['build_s']['DuckDB']:.1f} s (whole frames "
            f"{r['build_s']['DuckDB whole frames']:.1f} s), SQLite "
            f"{r['build_s']['SQLite']:.1f} s, maskstore {r['ingest']['ingest_s']:.1f} s (its columns included).", "",
            "maskstore bytes per frame by sub-database (LMDB pages in use; the file also holds free pages):", "",
            table(["sub-database", "bytes per frame"],
                  [[name, f"{size / r['n']:,.1f}"] for name, size in breakdown if size]), "",
        ]
    lines = [
        "# Scale: maskstore vs DuckDB and SQLite as versions grow", "",
        f"Produced by `{command}`. Same frames as `benchmarks/query.py` (its generator, SQLite schema and "
        "queries); DuckDB gets them as a native table with a `labels` list column and city/weather/speed "
        "columns. Warm times: median of 5 runs after a warm-up, the three stores rotating run by run; "
        "DuckDB answers in seq order (`ORDER BY seq`) like the others. maskstore and SQLite hold every "
        "whole frame (sources, mask values and pixel counts, ROIs); so does a second DuckDB file, built "
        "for its size only: the generator's frame dicts as a native table with nested columns (`meta` a "
        "STRUCT, `sources` a LIST of STRUCTs holding a LIST of mask STRUCTs with their `values` as "
        "`BIGINT[][]`, `rois` a LIST of STRUCTs). \"DuckDB\" alone is the query-columns table the queries "
        "run on.", "",
        *machine, "",
        "The first query after ingest runs in the ingesting process, which built its parser and parsed "
        "the query's text before the ingest (once-per-process and once-per-text costs, ~50 ms, which the "
        "fresh-process row includes); its peak RSS is that query's own (VmHWM reset before it).",
        "",
        scale, "",
        *sections,
    ]
    return "\n".join(lines).rstrip() + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="100,000 frames only")
    parser.add_argument("--full", action="store_true", help="also 3,000,000 and 10,000,000 frames")
    parser.add_argument("--sizes", type=lambda text: [int(x) for x in text.split(",")],
                        help="comma-separated frame counts instead, e.g. 10000000")
    parser.add_argument("--workdir", type=Path, help="where the stores go (default: a temporary folder)")
    parser.add_argument("--no-write", action="store_true", help="do not write benchmarks/results/scale.md")
    parser.add_argument("--ingest-child", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--fresh-child", help=argparse.SUPPRESS)
    parser.add_argument("--cold", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.ingest_child:
        print(json.dumps(ingest_child(args.ingest_child[0], int(args.ingest_child[1]))))
        return
    if args.fresh_child:
        print(json.dumps(fresh_child(args.fresh_child, args.cold)))
        return
    sizes = args.sizes or ([100_000] if args.quick else [100_000, 1_000_000] + ([3_000_000, 10_000_000] if args.full else []))
    machine = machine_lines()
    command = "python benchmarks/scale.py" + (f" --sizes {','.join(map(str, sizes))}" if args.sizes else
                                              " --quick" if args.quick else " --full" if args.full else "")
    workdir = Path(tempfile.mkdtemp(prefix="maskstore-scale-", dir=args.workdir))
    try:
        results = [measure(n, workdir) for n in sizes]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    text = report(results, machine, command)
    print(text)
    if not args.no_write:
        log(f"wrote {write_result('scale', text)}")


if __name__ == "__main__":
    main()
