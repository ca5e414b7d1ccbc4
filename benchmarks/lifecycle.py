"""Are ``diff`` and ``copy`` much faster than the naive ways, on the same archive, in the same run?

- diff: two versions of N metadata-only frames (the generator of benchmarks/query.py) where v2 is a
  child of v1 with 1% of its frames edited (0.6% changed meta, 0.2% removed, 0.2% added).
  maskstore: ``v2.diff(v1)`` (stored record bytes compared by id; only differing records decoded).
  naive: decode every frame of both versions (``frame_dicts``) into dicts by id and compare them.
- copy: M frames of a source archive into a fresh archive.
  maskstore: ``v.copy_to(archive)`` (records decoded once, statistics kept, one transaction per batch
  of 1000, scan columns stored at the end). naive: the JSON-lines round trip a user would do without
  it: ``maskstore query --format jsonl`` into a file, then ``maskstore ingest --frames`` of that
  file (library calls: ``json.dumps`` of ``query_dicts``, ``ingest(read_frames_jsonl(...))``, batches of
  1000, then the scan columns, as the CLI does).

Both sides of each question are checked to give the same answer (the same id lists; the same frame
dicts in both destinations) and timed as the median of ``--repeats`` runs, alternating.

    python benchmarks/lifecycle.py              # diff of 2 x 1,000,000 frames, copy of 100,000
    python benchmarks/lifecycle.py --quick      # 100,000 and 10,000

Stdout gets the markdown report (also ``benchmarks/results/lifecycle.md`` unless --no-write).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import log, machine_lines, rate, table, write_result  # noqa: E402
from query import MASK_LABELS, batches  # noqa: E402

from maskstore import Archive, DatasetVersion  # noqa: E402
from maskstore.ingest import ingest  # noqa: E402
from maskstore.ingest.jsonl import read_frames_jsonl  # noqa: E402
from maskstore.query import columns  # noqa: E402

EDIT_SHARE = 0.01
SEED = 7


def build(path: Path, n: int) -> DatasetVersion:
    """An archive at ``path`` with bench/v1 of n frames; returns the open version (archive left open)."""
    ar = Archive(path, sync=False, jobs=1)
    v = ar.create_version(dataset_name="bench", version_name="v1")
    v.set_masks_labels(MASK_LABELS)
    for frames in batches(n):
        v.add_frames(frames)
    columns.refresh(v)
    ar.sync()
    return v


def edit(v1: DatasetVersion) -> tuple[DatasetVersion, dict[str, list[str]]]:
    """bench/v2, a child of v1 with EDIT_SHARE of its frames edited; the expected diff."""
    v2 = v1.archive.create_version(dataset_name="bench", version_name="v2", parent=v1)
    ids = v1.ids()
    rng = random.Random(SEED)
    touched = rng.sample(ids, int(len(ids) * EDIT_SHARE))
    k = len(touched) // 5
    removed, changed = sorted(touched[:k]), sorted(touched[k:len(touched) - k])
    added = sorted(f"new_{i:07d}" for i in range(len(touched) - len(removed) - len(changed)))
    v2.delete_frames(removed)
    for start in range(0, len(changed), 10_000):
        frames = [v2.get_frame_dict(i) for i in changed[start:start + 10_000]]
        for f in frames:
            f["meta"]["speed"] = round(f["meta"]["speed"] + 1.5, 2)
        v2.add_frames(frames)
    template = v1.get_frame_dict(ids[0])
    v2.add_frames([{**template, "id": i} for i in added])
    columns.refresh(v2)
    return v2, {"added": added, "removed": removed, "changed": changed}


def naive_diff(new: DatasetVersion, old: DatasetVersion) -> dict[str, list[str]]:
    a = {d["id"]: d for d in old.frame_dicts()}
    b = {d["id"]: d for d in new.frame_dicts()}
    return {"added": sorted(b.keys() - a.keys()), "removed": sorted(a.keys() - b.keys()),
            "changed": sorted(i for i in a.keys() & b.keys() if a[i] != b[i])}


def fast_diff(new: DatasetVersion, old: DatasetVersion) -> dict[str, list[str]]:
    d = new.diff(old)
    return {"added": d.added, "removed": d.removed, "changed": d.changed}


def copy_maskstore(source: DatasetVersion, folder: Path, run: int) -> Path:
    path = folder / f"copy{run}.maskstore"
    with Archive(path, sync=False, jobs=1) as ar:
        source.copy_to(ar)
        ar.sync()
    return path


def copy_naive(source: DatasetVersion, folder: Path, run: int) -> Path:
    path, lines = folder / f"naive{run}.maskstore", folder / f"naive{run}.jsonl"
    with open(lines, "w", encoding="utf-8") as out:
        for d in source.query_dicts(""):
            out.write(json.dumps(d, ensure_ascii=False) + "\n")
    with Archive(path, sync=False, jobs=1) as ar:
        v = ar.create_version(dataset_name=source.dataset_name, version_name=source.version_name)
        v.set_masks_labels(source.mask_labels)
        ingest(v, read_frames_jsonl(lines), batch_size=1000)
        columns.refresh(v)
        ar.sync()
    lines.unlink()
    return path


def timed_pair(fns: dict[str, Callable[[int], Any]], repeats: int) -> tuple[dict[str, float], dict[str, Any]]:
    """Median seconds per function, calls alternating; the last result of each."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    results: dict[str, Any] = {}
    for run in range(repeats):
        order = list(fns) if run % 2 == 0 else list(reversed(fns))
        for name in order:
            start = time.perf_counter()
            results[name] = fns[name](run)
            times[name].append(time.perf_counter() - start)
            log(f"  {name}: {times[name][-1]:.2f} s")
    return {name: statistics.median(t) for name, t in times.items()}, results


def frames_of(path: Path) -> dict[str, dict]:
    with Archive(path, readonly=True) as ar:
        (v,) = ar.versions()
        return {d["id"]: d for d in v.frame_dicts()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=1_000_000, help="frames per version for diff")
    parser.add_argument("--copy-frames", type=int, default=100_000, help="frames copied")
    parser.add_argument("--quick", action="store_true", help="100,000 frames for diff, 10,000 for copy")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.frames, args.copy_frames = 100_000, 10_000
    machine = machine_lines()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="maskstore-lifecycle-bench-") as tmp:
        folder = Path(tmp)
        log(f"diff: building 2 versions of {args.frames:,} frames")
        start = time.perf_counter()
        v1 = build(folder / "diff.maskstore", args.frames)
        v2, expected = edit(v1)
        v1.archive.sync()
        build_s = time.perf_counter() - start
        diff_s, diffs = timed_pair({"maskstore": lambda run: fast_diff(v2, v1),
                                    "naive": lambda run: naive_diff(v2, v1)}, args.repeats)
        assert diffs["maskstore"] == diffs["naive"] == expected, "the two diffs disagree"
        size = Path(v1.archive.path).stat().st_size
        v1.archive.close()

        log(f"copy: {args.copy_frames:,} frames")
        source = build(folder / "source.maskstore", args.copy_frames)
        copy_s, paths = timed_pair({"maskstore": lambda run: copy_maskstore(source, folder, run),
                                    "naive": lambda run: copy_naive(source, folder, run)}, args.repeats)
        copied, naive = frames_of(paths["maskstore"]), frames_of(paths["naive"])
        assert copied == naive and len(copied) == args.copy_frames, "the two copies differ"
        source.archive.close()
    command = "python benchmarks/lifecycle.py " + " ".join(argv if argv is not None else sys.argv[1:])
    n, m = args.frames, args.copy_frames
    changes = sum(map(len, expected.values()))
    lines = [
        f"# Lifecycle: diff of 2 x {n:,} frames, copy of {m:,} frames",
        "",
        "Question: are `diff` and `copy` much faster than the naive ways (decode every frame and compare; "
        "JSON-lines export and re-ingest)? (`benchmarks/lifecycle.py`)",
        "",
        *machine,
        f"- command: `{command.strip()}`",
        f"- whole script: {time.perf_counter() - started:.0f} s (building the archives: {build_s:.0f} s for diff)",
        "",
        "## diff",
        "",
        f"bench/v2 is a child of bench/v1 ({n:,} metadata-only frames of benchmarks/query.py, archive "
        f"{size / 2**20:,.0f} MiB) with {changes:,} frames edited: {len(expected['changed']):,} changed "
        f"(meta.speed), {len(expected['removed']):,} removed, {len(expected['added']):,} added. Both ways "
        f"return the same three id lists (checked). Median of {args.repeats}.",
        "",
        table(["way", "seconds", "frames/s (both versions)"],
              [["maskstore `v2.diff(v1)`: record bytes by id", diff_s["maskstore"], rate(2 * n, diff_s["maskstore"])],
               ["naive: decode every frame of both, compare dicts", diff_s["naive"], rate(2 * n, diff_s["naive"])]]),
        "",
        f"**naive / maskstore: {diff_s['naive'] / diff_s['maskstore']:.1f}x**",
        "",
        "## copy",
        "",
        f"{m:,} frames of the same generator into a fresh archive (no embedded files). Both destinations "
        f"hold equal frame dicts (checked). Median of {args.repeats}.",
        "",
        table(["way", "seconds", "frames/s"],
              [["maskstore `v.copy_to(archive)`", copy_s["maskstore"], rate(m, copy_s["maskstore"])],
               ["naive: `query --format jsonl` to a file, `ingest --frames` it", copy_s["naive"],
                rate(m, copy_s["naive"])]]),
        "",
        f"**naive / maskstore: {copy_s['naive'] / copy_s['maskstore']:.1f}x**",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_write:
        write_result("lifecycle", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
