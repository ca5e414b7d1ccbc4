"""``maskstore demo``: a sample archive from the bundled real images, two queries, two exports.

The bundled pairs (see ``maskstore/demo/NOTICE``) are two Pascal VOC photos with RGB colour-coded
masks and two alpha mattes. They are embedded into the archive, so it works from anywhere, offline.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from .archive import Archive, DatasetVersion
from .export import ExportReport
from .ingest import apply_label_table, builtin_label_table
from .summary import bar_chart, label_stats

SEGMENTATION_QUERY = 'label == "aeroplane" or label == "bird"'
ALPHA_QUERY = 'context_id == "matting"'


@dataclass
class DemoResult:
    archive: Path
    queries: list[tuple[str, str, list[str]]] = field(default_factory=list)  # (dataset, query, ids)
    exports: list[tuple[str, ExportReport]] = field(default_factory=list)
    chart: Path | None = None


@contextmanager
def bundled_files() -> Iterator[Path]:
    with resources.as_file(resources.files("maskstore") / "demo") as folder:
        yield Path(folder)


def _frame(folder: Path, fid: str, context: str, image: str, mask: str, meta: dict) -> dict:
    return {"id": fid, "context_id": context, "meta": meta,
            "sources": [{"id": "0", "uri": str(folder / image), "masks": [{"id": "00", "uri": str(folder / mask)}]}]}


def _version(ar: Archive, dataset: str, description: str) -> DatasetVersion:
    return ar.create_version(dataset_name=dataset, version_name="v1", description=description, exist_ok=True)


def run_demo(out: str | Path = "maskstore-demo", jobs: int | None = None) -> DemoResult:
    """Build ``<out>/demo.maskstore``, query it, export overlays and cut-outs; safe to run again.

    Segmentation masks and alpha mattes go into two versions: labels apply to every mask of a
    version, and a matte's grey levels would otherwise read as VOC classes.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    result = DemoResult(out / "demo.maskstore")
    with Archive(result.archive, jobs=jobs) as ar, bundled_files() as folder:
        voc = _version(ar, "voc-samples", "Pascal VOC photos with RGB colour-coded masks")
        voc.add_frames([_frame(folder, "voc_1", "voc", "1_image.png", "1_target.png", {"subject": "aeroplane"}),
                        _frame(folder, "voc_114", "voc", "114_image.png", "114_target.png", {"subject": "bird"})],
                       embed=True)
        apply_label_table(voc, builtin_label_table("voc"))
        mattes = _version(ar, "mattes", "photos with alpha mattes (no labels: values are opacity)")
        mattes.add_frames([_frame(folder, "lemur", "matting", "lemur.png", "lemur_alpha.png", {"source": "pymatting"}),
                           _frame(folder, "car-1", "matting", "car-1.jpg", "car-1.out.png", {"source": "rembg"})],
                          embed=True)
        result.queries.append(("voc-samples", SEGMENTATION_QUERY, voc.ids(SEGMENTATION_QUERY)))
        result.queries.append(("mattes", ALPHA_QUERY, mattes.ids(ALPHA_QUERY)))
        result.exports.append(("segmentation", voc.export(out / "segmentation", SEGMENTATION_QUERY,
                                                          mode="segmentation", jobs=jobs)))
        result.exports.append(("alpha", mattes.export(out / "alpha", ALPHA_QUERY, mode="alpha", jobs=jobs)))
        _, stats = label_stats(voc)
        result.chart = bar_chart([s for s in stats if s.frames], out / "stats.png", voc.get_label_colors(),
                                 title="voc-samples/v1: share of mask pixels per label")
    return result
