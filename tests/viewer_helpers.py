"""What the viewer tests and benchmarks/viewer.py share: a real `maskstore view` process, headless
Debian Chromium, reading the frame canvas's bytes, the real-data archive and a multi-mask reference."""

from __future__ import annotations

import base64
import importlib.util
import json
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from maskstore import Archive, DatasetVersion, render
from maskstore.model import Frame
from maskstore.labels import parse_color
from maskstore.media import mask_alpha, mask_pixels
from maskstore.render import alpha_tint, blend_segmentation, color_table, source_rgb

REPO = Path(__file__).resolve().parents[1]
MAIN = str(REPO / ".venv" / "bin" / "maskstore") if (REPO / ".venv" / "bin" / "maskstore").exists() else "maskstore"
# Playwright cannot download its own browsers here: Debian's chromium, headless, quiet on the network.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

CANVAS_BYTES = """(testid) => {
    const c = document.querySelector(`[data-testid="${testid}"]`);
    const data = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
    let text = "";
    for (let i = 0; i < data.length; i += 0x8000) text += String.fromCharCode.apply(null, data.subarray(i, i + 0x8000));
    return [c.width, c.height, btoa(text)];
}"""


def chromium_launch_args() -> dict[str, Any]:
    """Playwright's launch arguments for Debian's chromium, or None when it is not installed."""
    path = shutil.which("chromium")
    return {} if path is None else {"executable_path": path, "args": CHROMIUM_ARGS, "headless": True}


def canvas_rgb(page: Any, testid: str = "frame-canvas") -> np.ndarray:
    """The canvas's backing store as (H, W, 3) uint8, alpha checked opaque."""
    width, height, data = page.evaluate(CANVAS_BYTES, testid)
    rgba = np.frombuffer(base64.b64decode(data), dtype=np.uint8).reshape(height, width, 4)
    assert (rgba[..., 3] == 255).all(), "the frame canvas must be opaque"
    return rgba[..., :3]


def wait_shown(page: Any, frame_id: str, source_id: str | None = None) -> None:
    """Until the page has drawn this frame (and source) and no mask plane is loading."""
    page.wait_for_function(
        """([frame, source]) => {
            const shown = (document.body.dataset.shown || "").split("\\n");
            const state = document.querySelector('[data-testid="frame-canvas"]').dataset.state;
            return shown[0] === frame && (source === null || shown[1] === source) && state === "ready";
        }""", arg=[frame_id, source_id])


class ViewerProcess:
    """``maskstore view ARCHIVE --port 0 --no-browser ...`` as a real process; ``url`` is its first line."""

    def __init__(self, archive: Path, *args: str) -> None:
        self.proc = subprocess.Popen([MAIN, "view", str(archive), "--port", "0", "--no-browser", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.url = self.proc.stdout.readline().strip()  # type: ignore[union-attr]
        if not self.url:
            self.proc.wait(10)
            raise RuntimeError(f"maskstore view printed no URL: {self.proc.stderr.read()}")  # type: ignore[union-attr]
        self.base = self.url.split("/?", 1)[0]
        self.token = self.url.split("token=", 1)[1]

    def page_url(self, **query: str) -> str:
        from urllib.parse import urlencode
        return f"{self.base}/?{urlencode({'token': self.token, **query})}"

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for stream in (self.proc.stdout, self.proc.stderr):
            stream.close()  # type: ignore[union-attr]


# ---------------------------------------------------------------------------------------- real data

def cityscapes_labels(data: Path) -> tuple[dict[tuple[int, int, int], list[str]], dict[str, list[int]]]:
    table = json.loads((data / "mmsegmentation_cityscapes" / "cityscapes_labels.json").read_text())
    rows = [row for row in table["labels"] if row["id"] >= 0]
    return ({(r["id"],) * 3: [r["name"]] for r in rows}, {r["name"]: r["color"] for r in rows})


def voc_labels(data: Path) -> dict[tuple[int, int, int], list[str]]:
    table = json.loads((data / "labelme_voc" / "voc_labels.json").read_text())
    return {tuple(r["color"]): [f"voc {r['name']}"] for r in table["labels"]}


CITY = "frankfurt_000000_000294"


def kind_frames(data: Path) -> list[dict[str, Any]]:
    """One frame per mask kind of ../shared/data: L label ids, P palette, RGB colour codes, an L alpha
    matte, an RGBA cut-out's alpha channel; the Cityscapes frame has two masks."""
    city = data / "mmsegmentation_cityscapes"

    def frame(fid: str, source: Path, masks: Mapping[str, Path]) -> dict[str, Any]:
        return {"id": fid, "context_id": fid.split("-")[0], "meta": {"kind": fid},
                "sources": [{"id": "0", "uri": str(source),
                             "masks": [{"id": mid, "uri": str(uri)} for mid, uri in masks.items()]}]}
    return [
        frame("city-labelIds", city / f"{CITY}_leftImg8bit.png",
              {"labelIds": city / f"{CITY}_gtFine_labelIds.png",
               "trainIds": city / f"{CITY}_gtFine_labelTrainIds.png"}),
        frame("voc-palette", data / "labelme_voc/JPEGImages/2011_000003.jpg",
              {"class": data / "labelme_voc/SegmentationClass/2011_000003.png"}),
        frame("deeplab-rgb", data / "deeplabv3plus_voc_rgb/1_image.png",
              {"target": data / "deeplabv3plus_voc_rgb/1_target.png"}),
        frame("lemur-alpha", data / "pymatting_lemur/lemur.png", {"alpha": data / "pymatting_lemur/lemur_alpha.png"}),
        frame("rembg-rgba", data / "rembg_examples/car-1.jpg", {"cutout": data / "rembg_examples/car-1.out.png"}),
    ]


def kinds_version(archive: Archive, data: Path, name: str = "v1") -> DatasetVersion:
    """A version holding every kind, labelled with the Cityscapes ids and the VOC colours."""
    version = archive.create_version(dataset_name="kinds", version_name=name)
    city, colors = cityscapes_labels(data)
    labels = {**voc_labels(data), **city}  # Cityscapes wins (0, 0, 0): "unlabeled"
    version.set_masks_labels(labels)
    version.set_label_colors(colors)
    version.add_frames(kind_frames(data))
    return version


# ---------------------------------------------------------------------------------------- reference

def compose(frame: Frame, version: DatasetVersion, source_id: str,
            layers: Sequence[tuple[str, str, float, str]], colors: Mapping[str, Any] | None = None) -> np.ndarray:
    """Spec section 9's rule for several masks, from render's own array functions: each (mask id,
    mode, opacity, tint) in order, over the result of the one before."""
    source = next(s for s in frame.sources if s.id == source_id)
    out = source_rgb(version.open_image(source.uri))
    table = color_table(version.mask_labels, version.get_label_colors(), colors)
    for mask_id, mode, opacity, tint in layers:
        mask = next(m for m in source.masks if m.id == mask_id)
        image = version.open_image(mask.uri, what="mask")
        if mode == "segmentation":
            out = blend_segmentation(out, mask_pixels(image, mask.uri), table, opacity)
        else:
            out = alpha_tint(out, mask_alpha(image, mask.uri), parse_color(tint), opacity)
    return out


def rendered(frame: Frame, version: DatasetVersion, **options: Any) -> np.ndarray:
    """``maskstore.render``'s RGB (alpha mode with a tint is RGB already)."""
    return render(frame, version, **options)[..., :3]


def load_benchmark_generator(name: str = "ingest") -> ModuleType:
    """``benchmarks/<name>.py`` as a module: its seeded metadata-only frame generator builds big versions."""
    spec = importlib.util.spec_from_file_location(f"maskstore_bench_{name}", REPO / "benchmarks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def build_large(path: Path, frames: int) -> DatasetVersion | None:
    """A metadata-only version of ``frames`` frames from benchmarks/ingest.py's seeded generator (2048x1024
    frames of 1000 drives, Cityscapes label ids 4..33, "person" on about 10%), its scan columns built."""
    generator = load_benchmark_generator("ingest")
    names = {value: f"label {value}" for value in generator.LABEL_IDS} | {generator.CHOSEN: "person"}
    with Archive(path, sync=False) as archive:
        version = archive.create_version(dataset_name="big", version_name="v1")
        version.set_masks_labels({(v, v, v): [name] for v, name in names.items()})
        for batch in generator.batches(frames):
            version.add_frames(batch)
        archive.sync()
        version.count('label == "person"')  # the first query builds the scan columns; later runs load them
    return None
