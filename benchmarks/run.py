"""Run every benchmark, then rebuild ``benchmarks/RESULTS.md`` from ``benchmarks/results/*.md``.

    python benchmarks/run.py                   # all four, full size (the 1M-frame ones take a while)
    python benchmarks/run.py --quick           # all four, small: a smoke run
    python benchmarks/run.py --only export     # just these (repeat --only or use commas)
    python benchmarks/run.py --collect-only    # rerun nothing, only rebuild RESULTS.md

Each script runs as its own subprocess (a fresh interpreter, so one benchmark's memory and worker
pools do not leak into the next) and writes its own result file; a script that fails is reported and
the others still run. ``--quick`` results overwrite the recorded ones like the scripts' own
``--quick`` does: each result file names its size and command, and git has the full runs.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS_DIR, log, machine_lines  # noqa: E402

HERE = Path(__file__).resolve().parent
OUTPUT = HERE / "RESULTS.md"

# name -> (the question it answers, the arguments of a quick run)
BENCHMARKS: dict[str, tuple[str, list[str]]] = {
    "ingest": ("How fast do frames go into an archive compared with SQLite, and do mask statistics "
               "scale with processes?", ["--quick"]),
    "query": ("How fast are queries (and streaming their frames) compared with SQLite on the same "
              "frames?", ["--quick"]),
    "scale": ("Do queries stay fast from 100k to 1M frames (first query after ingest, a fresh process, "
              "order-by-limit, bytes per frame) compared with DuckDB and SQLite?", ["--quick"]),
    "records": ("Do frame records compressed with the archive's own zstd dictionary make archives smaller "
                "without slowing lookups or ingest (this checkout alone; --compare NAME=PYTHON for an A/B)?",
                ["--quick"]),
    "postings": ("How much smaller and faster to read are the indexes' packed posting blocks than the "
                 "one dupsort entry per (key, frame) they replaced?", ["--quick"]),
    "firstquery": ("How fast does a new process answer its first query (imports, parser, columns), and how "
                   "much memory does it take?", ["--quick"]),
    "render": ("Does rendering a 2048x1024 frame cost little more than decoding it (end-to-end / decode "
               "<= 1.3), and much less than a naive renderer?", ["--repeats", "5"]),  # render.py has no --quick: it is small already
    "export": ("How close does export get to the codec floor, and does it scale with jobs?", ["--quick"]),
    "viewer": ("Does the frame viewer redraw, step and open large versions within its goals in Chromium?",
               ["--frames", "100000"]),
    "purepython": ("What does the compiled _speedups buy over its pure-Python twin (MASKSTORE_PUREPYTHON=1), "
                   "for ingest and decode_frame?", ["--quick"]),
    "video": ("Does rendering consecutive video frames cost little more than decoding the videos, and export "
              "--video little more than decoding and re-encoding them?",
              ["--frames", "60", "--repeats", "1"]),
    "lifecycle": ("Are diff (1,000,000 frames, 1% edited) and copy (100,000 frames) much faster than decoding "
                  "every frame and a JSON-lines round trip?", ["--quick"]),
    "dask": ("Do reads and exports scale out on Dask workers compared with one process?",
             ["--frames", "100000", "--export-frames", "40", "--repeats", "1"]),
}


def run_benchmark(name: str, quick: bool) -> tuple[int, float]:
    """Run ``benchmarks/<name>.py`` in a fresh interpreter; (exit status, seconds)."""
    command = [sys.executable, str(HERE / f"{name}.py"), *(BENCHMARKS[name][1] if quick else [])]
    log(f"== {name}: {' '.join(command[1:])}")
    start = time.perf_counter()
    status = subprocess.run(command, cwd=HERE.parent).returncode
    seconds = time.perf_counter() - start
    log(f"== {name}: {'ok' if status == 0 else f'FAILED (exit {status})'} in {seconds:.0f} s")
    return status, seconds


def demote(markdown: str) -> str:
    """Every heading one level down (outside code fences), so a result file's title becomes a section."""
    lines, fenced = [], False
    for line in markdown.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        lines.append("#" + line if not fenced and re.match(r"#{1,5} ", line) else line)
    return "\n".join(lines)


def field(markdown: str, name: str) -> str | None:
    """The value of a ``- name: value`` line of a result file's header (machine, date, commit)."""
    found = re.search(rf"^- {re.escape(name)}: (.*)$", markdown, re.MULTILINE)
    return found.group(1).strip() if found else None


def anchor(title: str) -> str:
    """GitHub's anchor for a heading."""
    return "#" + re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")


def collect() -> str:
    """RESULTS.md: what each benchmark asks, how to run them, the machine, then every result file."""
    texts = {name: (RESULTS_DIR / f"{name}.md").read_text(encoding="utf-8")
             for name in BENCHMARKS if (RESULTS_DIR / f"{name}.md").is_file()}
    rows, sections = [], []
    for name, (question, _) in BENCHMARKS.items():
        text = texts.get(name)
        if text is None:
            rows.append(f"| {name} | {question} | no results yet: `python benchmarks/run.py --only {name}` |")
            continue
        title = text.splitlines()[0].lstrip("# ").strip()
        commit = field(text, "maskstore commit")
        if commit and " " in commit:  # "abc1234 + uncommitted edits to ..." and the like: details in the report
            commit = commit.split()[0] + " (details in the report)"
        taken = ", ".join(x for x in (field(text, "date"), commit) if x)
        rows.append(f"| [{name}]({anchor(title)}) | {question} | {taken} |")
        sections.append(f"<!-- from benchmarks/results/{name}.md -->\n\n" + demote(text).strip())
    machines = sorted({m for m in (field(t, "machine") for t in texts.values()) if m})
    if not machines:
        machines = [line.removeprefix("- machine: ") for line in machine_lines() if line.startswith("- machine:")]
    header = [
        "# maskstore benchmarks",
        "",
        "<!-- Built by `python benchmarks/run.py` from benchmarks/results/*.md; edit the scripts, not this "
        "file. -->",
        "",
        "Each script in `benchmarks/` answers one question against a baseline measured in the same run; "
        "its report is `benchmarks/results/<name>.md`, gathered below.",
        "",
        "| benchmark | question | measured (date, maskstore commit) |",
        "| --- | --- | --- |",
        *rows,
        "",
        "Run them all with `python benchmarks/run.py` (`--quick` for a smaller smoke run, which overwrites "
        "the result files; `--only export` for one; `--collect-only` to rebuild this file without running "
        "anything). Each script also runs alone: `python benchmarks/<name>.py --help`.",
        "",
        "Machine" + ("s" if len(machines) > 1 else "") + ": " + "; ".join(machines) + ". It is shared with other "
        "work, so compare ratios measured within one run (each report's baselines), not absolute numbers "
        "across reports.",
    ]
    return "\n".join(header + [""] + [s + "\n" for s in sections]).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small runs (each script's --quick)")
    parser.add_argument("--only", action="append", metavar="NAME",
                        help=f"run only these, comma-separated or repeated: {', '.join(BENCHMARKS)}")
    parser.add_argument("--collect-only", action="store_true",
                        help="run nothing; rebuild RESULTS.md from the existing result files")
    args = parser.parse_args(argv)
    chosen = list(BENCHMARKS)
    if args.only:
        chosen = [n.strip() for item in args.only for n in item.split(",") if n.strip()]
        unknown = [n for n in chosen if n not in BENCHMARKS]
        if unknown:
            parser.error(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    failed = []
    if not args.collect_only:
        for name in chosen:
            status, _ = run_benchmark(name, args.quick)
            if status != 0:
                failed.append(name)
    OUTPUT.write_text(collect(), encoding="utf-8")
    log(f"wrote {OUTPUT}")
    if failed:
        log(f"failed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
