"""Is `maskstore view` fast enough to use, measured in headless Chromium in one run?

Issue 15's three speed points, each timed in the page itself (``performance.now``), median of repeats:

1. an opacity or label-colour change on a 2048x1024 frame redraws in <= 50 ms (the Cityscapes sample of
   ../shared/data scaled up 8x, its labelIds mask with it; one segmentation mask at 50 %);
2. opening the next frame takes <= 300 ms (click on "next" until the new frame's pixels are on the
   canvas), both right after the previous frame settled (the page has prefetched it) and cold (+10,
   nothing prefetched);
3. a 1,000,000-frame metadata-only version (benchmarks/ingest.py's generator) opens (page load until
   the count, the first page of ids and the first frame's details are shown) and answers
   ``label == "person"`` (Enter until the new count is shown) in <= 1 s each.

The baseline for 1 is the time the page needs just to copy the source into the canvas (no mask).

    python benchmarks/viewer.py                       # builds the 1,000,000-frame archive (minutes)
    python benchmarks/viewer.py --large PATH          # reuse one built by an earlier run (kept with --keep)
    python benchmarks/viewer.py --frames 100000       # a smaller "large" version

Needs Debian's chromium and playwright (the test extra). Stdout gets the markdown report, also written
to ``benchmarks/results/viewer.md``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from playwright.sync_api import sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from common import log, machine_lines, table, write_result  # noqa: E402
from viewer_helpers import CITY, ViewerProcess, build_large, chromium_launch_args, wait_shown  # noqa: E402

from maskstore import Archive  # noqa: E402

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
FRAMES = 24
REPEATS = 15

# Dispatch an input event on a control and time the synchronous redraw, then the next animation frame.
REDRAW = """async ([selector, values]) => {
    const control = document.querySelector(selector), sync = [], painted = [];
    for (const value of values) {
        const start = performance.now();
        control.value = value;
        control.dispatchEvent(new Event("input", {bubbles: true}));
        sync.push(performance.now() - start);
        await new Promise((resolve) => requestAnimationFrame(() => setTimeout(resolve, 0)));
        painted.push(performance.now() - start);
    }
    return [sync, painted];
}"""

# Click a button and time until the canvas shows the given frame, polled every animation frame.
OPEN = """async ([button, frameId]) => {
    const start = performance.now();
    document.querySelector(`[data-testid="${button}"]`).click();
    const canvas = document.querySelector('[data-testid="frame-canvas"]');
    while (!((document.body.dataset.shown || "").startsWith(frameId + "\\n") && canvas.dataset.state === "ready"))
        await new Promise((resolve) => requestAnimationFrame(resolve));
    return performance.now() - start;
}"""

QUERY = """async ([query, count]) => {
    const input = document.querySelector('[data-testid="query-input"]');
    const shown = document.querySelector('[data-testid="frame-count"]');
    const start = performance.now();
    input.value = query;
    input.form.requestSubmit();
    while (shown.textContent !== String(count)) await new Promise((resolve) => setTimeout(resolve, 2));
    return performance.now() - start;
}"""


def big_frames(folder: Path) -> list[dict[str, Any]]:
    """FRAMES frames of 2048x1024: the Cityscapes sample scaled 8x, each a different shift of it."""
    city = DATA / "mmsegmentation_cityscapes"
    image = Image.open(city / f"{CITY}_leftImg8bit.png").convert("RGB").resize((2048, 1024), Image.Resampling.BICUBIC)
    mask = Image.open(city / f"{CITY}_gtFine_labelIds.png").resize((2048, 1024), Image.Resampling.NEAREST)
    frames = []
    for i in range(FRAMES):
        shift = (i * 37, i * 11)
        source, target = folder / f"big_{i:02d}.png", folder / f"big_{i:02d}_mask.png"
        Image.fromarray(np.roll(np.asarray(image), shift, (1, 0))).save(source, compress_level=1)
        Image.fromarray(np.roll(np.asarray(mask), shift, (1, 0))).save(target)
        frames.append({"id": f"big_{i:02d}", "sources": [{"id": "0", "uri": str(source),
                                                          "masks": [{"id": "00", "uri": str(target)}]}]})
    return frames


def median(values: list[float]) -> float:
    return statistics.median(values)


def interactive(browser: Any, folder: Path) -> dict[str, Any]:
    path = folder / "big.maskstore"
    labels = json_labels()
    with Archive(path) as archive:
        version = archive.create_version(dataset_name="big", version_name="v1")
        version.set_masks_labels(labels)
        version.add_frames(big_frames(folder))
    viewer = ViewerProcess(path, "--readonly")  # colour changes stay in the page: the run writes nothing
    try:
        page = browser.new_page(viewport={"width": 1400, "height": 800})
        page.goto(viewer.page_url(frame="big_00"))
        wait_shown(page, "big_00")
        opacity = page.evaluate(REDRAW, ['[data-testid="mask-opacity"]', [str(20 + 3 * i) for i in range(REPEATS)]])
        color = page.evaluate(REDRAW, ['[data-testid="legend-item"][data-label="road"] input',
                                       [f"#{(40 + 9 * i):02x}40{(200 - 7 * i):02x}" for i in range(REPEATS)]])
        page.evaluate("document.querySelector('[data-testid=\"mask-visible\"]').click()")
        copy_only = page.evaluate(REDRAW, ['[data-testid="mask-opacity"]', [str(20 + 3 * i) for i in range(REPEATS)]])
        page.evaluate("document.querySelector('[data-testid=\"mask-visible\"]').click()")
        warm, cold = [], []
        for i in range(1, 10):
            page.wait_for_timeout(1500)  # the user looks at the frame; the page prefetches the next one
            warm.append(page.evaluate(OPEN, ["next-frame", f"big_{i:02d}"]))
        page.goto(viewer.page_url(frame="big_00"))
        wait_shown(page, "big_00")
        for i in (10, 20):
            page.wait_for_timeout(300)
            cold.append(page.evaluate(OPEN, ["next-10", f"big_{i:02d}"]))
        page.close()
    finally:
        viewer.close()
    return {"opacity": opacity, "color": color, "copy": copy_only, "warm": warm, "cold": cold}


def json_labels() -> dict[tuple[int, int, int], list[str]]:
    table = json.loads((DATA / "mmsegmentation_cityscapes" / "cityscapes_labels.json").read_text())
    return {(r["id"],) * 3: [r["name"]] for r in table["labels"] if r["id"] >= 0}


def large(browser: Any, path: Path) -> dict[str, Any]:
    with Archive(path, readonly=True) as archive:
        version = archive.versions()[0]
        total, person = version.count(), version.count('label == "person"')
        first = version.ids("limit 1")[0]
    viewer = ViewerProcess(path)
    opens, queries = [], []
    try:
        page = browser.new_page(viewport={"width": 1400, "height": 800})
        for _ in range(5):
            page.goto("about:blank")
            start = page.evaluate("performance.timeOrigin + performance.now()")
            page.goto(viewer.url, wait_until="commit")
            page.wait_for_function(
                """([count, first]) => document.querySelector('[data-testid="frame-count"]')?.textContent === count
                   && document.querySelector('[data-testid="frame-id"]')?.textContent === first
                   && document.querySelectorAll('[data-testid="frame-item"]').length > 0""",
                arg=[str(total), first], polling="raf")
            opens.append(page.evaluate("performance.timeOrigin + performance.now()") - start)
            queries.append(page.evaluate(QUERY, ['label == "person"', person]))
        page.close()
    finally:
        viewer.close()
    return {"frames": total, "person": person, "open": opens, "query": queries}


def report(r: dict[str, Any], big: dict[str, Any], machine: list[str]) -> str:
    def row(name: str, values: list[float], goal: float | None) -> list[Any]:
        verdict = "" if goal is None else ("met" if median(values) <= goal else "NOT met")
        return [name, median(values), min(values), max(values), len(values),
                "" if goal is None else f"<= {goal:g} ms {verdict}"]
    rows = [
        row("opacity change, redraw (sync: blend + putImageData)", r["opacity"][0], 50),
        row("opacity change, until the next animation frame", r["opacity"][1], None),
        row("label colour change, redraw (sync)", r["color"][0], 50),
        row("label colour change, until the next animation frame", r["color"][1], None),
        row("baseline: no mask shown, copy source to canvas (sync)", r["copy"][0], None),
        row("next frame, after the page prefetched it", r["warm"], 300),
        row("next frame +10, cold (no prefetch)", r["cold"], 300),
        row(f"open a {big['frames']:,}-frame version, first load right after the server started",
            big["open"][:1], 1000),
        row(f"open a {big['frames']:,}-frame version again (page load to count, ids, first frame)",
            big["open"][1:], 1000),
        row(f"query label == \"person\" ({big['person']:,} frames), Enter to count", big["query"], 1000),
    ]
    lines = ["# Viewer speed: `maskstore view` in headless Chromium", "",
             "Produced by `python benchmarks/viewer.py`. Times in ms, measured in the page "
             "(`performance.now`); frame 2048x1024, one segmentation mask.", "",
             *machine,
             "- note: the machine was shared with other busy sessions during the run (load average "
             f"{open('/proc/loadavg').read().split()[0]} at the end); numbers are pessimistic", "",
             table(["what", "median ms", "min ms", "max ms", "runs", "goal"], rows)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--large", type=Path, help="an archive built by an earlier run (--keep) to reuse")
    parser.add_argument("--frames", type=int, default=1_000_000)
    parser.add_argument("--keep", type=Path, help="keep the large archive at this path")
    args = parser.parse_args()
    machine = machine_lines()
    with tempfile.TemporaryDirectory(prefix="viewer-bench-") as tmp, sync_playwright() as playwright:
        folder = Path(tmp)
        browser = playwright.chromium.launch(**chromium_launch_args())
        log("interactive: 2048x1024 frames")
        r = interactive(browser, folder)
        path = args.large or args.keep or folder / "large.maskstore"
        if args.large is None:
            log(f"building {args.frames:,} metadata-only frames")
            build_large(path, args.frames)
        log("large version")
        big = large(browser, path)
        browser.close()
    text = report(r, big, machine)
    write_result("viewer", text)
    print(text)


if __name__ == "__main__":
    main()
