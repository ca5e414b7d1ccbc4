"""Helpers shared by the benchmark scripts: the machine, timers, markdown tables, result files.

Each script in ``benchmarks/`` answers one question against a baseline measured in the same run
(STYLE.md); these helpers only keep the reports alike.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parent.parent


def total_ram_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def git_commit() -> str:
    """The maskstore being measured: the checkout's short commit plus any tracked files of maskstore/ with
    local edits; for a copy imported from elsewhere (PYTHONPATH), its path and ``$MASKSTORE_BENCH_COMMIT``."""
    import maskstore
    root = Path(maskstore.__file__).resolve().parent.parent
    if root != REPO:
        return f"{os.environ.get('MASKSTORE_BENCH_COMMIT', 'unknown commit')} (imported from {root})"
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "diff", "HEAD", "--name-only", "--", "maskstore"], cwd=REPO,
                               capture_output=True, text=True, check=True).stdout.split()
        return head + (f" + uncommitted edits to {', '.join(dirty)}" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine_lines() -> list[str]:
    """Markdown bullet lines describing where and when the numbers were taken (call it at the start:
    the checkout may move while a long benchmark runs)."""
    ram = total_ram_bytes()
    import lmdb
    import msgpack
    import numpy
    import PIL
    return [
        f"- date: {datetime.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}",
        f"- machine: {platform.platform()}, {platform.machine()}, {os.cpu_count()} CPUs (shared, noisy), "
        f"{ram / 2**30:.1f} GiB RAM" if ram else f"- machine: {platform.platform()}, {os.cpu_count()} CPUs",
        f"- python {platform.python_version()} ({sys.implementation.name}); lmdb {lmdb.__version__} "
        f"(LMDB {'.'.join(map(str, lmdb.version()))}); msgpack {'.'.join(map(str, msgpack.version))}; numpy {numpy.__version__}; "
        f"Pillow {PIL.__version__}",
        f"- maskstore commit: {git_commit()}",
    ]


def median_time(fn: Callable[[], Any], repeats: int = 3) -> float:
    """Median wall time of ``repeats`` calls: the machine is shared, single runs are noisy."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table; numbers right-aligned."""
    def cell(v: Any) -> str:
        return v if isinstance(v, str) else f"{v:,}" if isinstance(v, int) else f"{v:,.2f}"
    cells = [[cell(v) for v in row] for row in rows]
    align = ["---:" if rows and not isinstance(rows[0][i], str) else "---" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines)


def rate(count: float, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


def write_result(name: str, text: str) -> Path:
    """Write ``benchmarks/results/<name>.md`` and return its path."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.md"
    path.write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")
    return path


def log(message: str) -> None:
    """Progress to stderr, so stdout carries only the report."""
    print(message, file=sys.stderr, flush=True)


def _spin(n: int) -> int:
    total = 0
    for i in range(n):
        total += i
    return total


def parallel_speedup(processes: int = 2, work: int = 5_000_000) -> float:
    """How much faster ``processes`` copies of a pure-CPU loop finish in a process pool than one after
    another: the parallelism this (shared) machine really gives right now, to judge speed-ups by."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context(method)) as pool:
        list(pool.map(_spin, [1000] * processes))  # workers up
        start = time.perf_counter()
        list(pool.map(_spin, [work] * processes))
        parallel = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(processes):
        _spin(work)
    serial = time.perf_counter() - start
    return serial / parallel


def checkout_parser(description: str, name: str, frames: int, quick: str) -> argparse.ArgumentParser:
    """The options of a benchmark that measures this checkout against others' interpreters, in the
    same run: frame count, ``--quick`` (its help ``quick``), ``--compare NAME=PYTHON``, ``--no-write``."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--frames", type=int, default=frames)
    ap.add_argument("--quick", action="store_true", help=quick)
    ap.add_argument("--compare", action="append", default=[], metavar="NAME=PYTHON",
                    help="also measure the maskstore of this interpreter (another checkout's venv); repeatable")
    ap.add_argument("--no-write", action="store_true", help=f"print only, leave results/{name}.md alone")
    return ap


def checkout_pythons(args: argparse.Namespace) -> dict[str, str]:
    """Name -> interpreter of every checkout measured: this one first, then ``--compare``'s."""
    return {"this": sys.executable, **dict(item.split("=", 1) for item in args.compare)}
