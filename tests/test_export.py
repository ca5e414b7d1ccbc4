"""Export, the render/export/demo commands: safe paths, manifest, legend, resumable runs, same pixels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from maskstore import Archive, SingleFrame, render
from maskstore.cli import main
from maskstore.export import safe_name


@pytest.fixture
def seg_version(tmp_path, version):
    img = np.arange(6 * 8 * 3, dtype=np.uint8).reshape(6, 8, 3)
    mask = np.zeros((6, 8), np.uint8)
    mask[2:4, 2:6] = 1
    mask[5, :] = 2
    Image.fromarray(img).save(tmp_path / "img.png")
    Image.fromarray(mask).save(tmp_path / "mask.png")
    version.set_masks_labels({(1, 1, 1): ["car"], (2, 2, 2): ["road"]})
    version.set_label_colors({"car": (255, 0, 0), "road": (0, 0, 255)})
    version.add_frames([SingleFrame(source=str(tmp_path / "img.png"), mask_source=str(tmp_path / "mask.png"), id=fid)
                        for fid in ("plain", "../escape", "/abs/path", "nul\x00byte", "CON", "..", "x" * 300, "a/b")])
    return version


def inside(root: Path, path: Path) -> bool:
    return path.resolve().is_relative_to(root.resolve())


def test_hostile_ids_stay_inside_the_output_folder(tmp_path, seg_version):
    out = tmp_path / "out"
    report = seg_version.export(out, jobs=1)
    assert report.written == 8 and not report.errors
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert sorted(r["frame_id"] for r in rows) == sorted(f.id for f in seg_version)
    paths = [out / r["path"] for r in rows]
    assert len(set(paths)) == 8 and all(p.is_file() and inside(out, p) for p in paths)
    assert all(p.parent.parent == out for p in paths)  # exactly <out>/<frame>/<source>.png
    assert (out / "plain" / "0.png").is_file()
    assert not list(tmp_path.glob("escape*")) and not Path("/abs/path").exists()


@pytest.mark.parametrize("name", ["..", ".", "", "CON", "con.txt", "a/b", "a\\b", "x\x00y", "trailing. ", "x" * 500])
def test_safe_name_is_a_plain_distinct_file_name(name):
    safe = safe_name(name)
    assert "/" not in safe and "\\" not in safe and "\x00" not in safe and safe not in (".", "..", "")
    assert len(safe.encode()) < 140 and safe != safe_name(name + "1")
    assert safe_name("frame_0001") == "frame_0001"


def test_manifest_rows_and_rerun_skips_finished_files(tmp_path, seg_version):
    out = tmp_path / "out"
    first = seg_version.export(out, query='id == "plain"', jobs=1)
    row = json.loads((out / "manifest.jsonl").read_text())
    assert row == {"frame_id": "plain", "source_id": "0", "mask_id": "00", "mode": "segmentation",
                   "path": "plain/0.png", "status": "written", "width": 8, "height": 6}
    again = seg_version.export(out, jobs=1)
    assert (first.written, again.written, again.skipped) == (1, 7, 1)
    assert not list(out.rglob("*.tmp"))


def test_exported_pixels_equal_render_and_jobs_do_not_change_them(tmp_path, seg_version):
    one = seg_version.export(tmp_path / "one", mode="segmentation", jobs=1, opacity=0.3)
    two = seg_version.export(tmp_path / "two", mode="segmentation", jobs=2, opacity=0.3)
    assert one.written == two.written == 8
    expected = render(seg_version.get_frame("plain"), seg_version, opacity=0.3)
    for folder in ("one", "two"):
        assert np.array_equal(np.asarray(Image.open(tmp_path / folder / "plain" / "0.png")), expected)


def test_legend_is_a_png_with_each_label_colour(tmp_path, seg_version):
    report = seg_version.export(tmp_path / "out", query='id == "plain"', jobs=1)
    legend = np.asarray(Image.open(report.legend).convert("RGB")).reshape(-1, 3)
    colours = {tuple(c) for c in np.unique(legend, axis=0)}
    assert (255, 0, 0) in colours and (0, 0, 255) in colours
    assert (np.asarray(Image.open(report.legend).convert("L"))[:, 50:] < 100).sum() > 50  # label text


def test_missing_mask_is_reported_with_frame_and_file(tmp_path, seg_version):
    mask = Path(seg_version.get_frame("plain").mask_source)
    mask.unlink()
    report = seg_version.export(tmp_path / "out", query='id == "plain"', jobs=1)
    assert report.written == 0 and report.errors[0][0] == "plain" and "mask.png" in report.errors[0][1]


def test_index_and_alpha_exports(tmp_path, seg_version):
    seg_version.export(tmp_path / "idx", query='id == "plain"', mode="index", enumeration={"road": 0, "car": 1},
                       jobs=1)
    index = np.asarray(Image.open(tmp_path / "idx" / "plain" / "0.png"))
    assert index[3, 3] == 1 and index[5, 0] == 0 and index[0, 0] == 255
    seg_version.export(tmp_path / "alpha", query='id == "plain"', mode="alpha", jobs=1)
    assert Image.open(tmp_path / "alpha" / "plain" / "0.png").mode == "RGBA"


def test_cli_render_writes_the_api_pixels(tmp_path, seg_version):
    path = str(seg_version.archive.path)
    expected = render(seg_version.get_frame("plain"), seg_version, opacity=0.7)
    alpha = render(seg_version.get_frame("plain"), seg_version, mode="alpha", background=(0, 255, 0))
    seg_version.archive.close()
    runner = CliRunner()
    result = runner.invoke(main, ["render", path, "plain", "-o", str(tmp_path / "r.png"), "--opacity", "0.7"])
    assert result.exit_code == 0, result.output
    assert np.array_equal(np.asarray(Image.open(tmp_path / "r.png")), expected)
    result = runner.invoke(main, ["render", path, "plain", "-o", str(tmp_path / "a.png"), "--mode", "alpha",
                                  "--background", "#00ff00"])
    assert result.exit_code == 0 and np.array_equal(np.asarray(Image.open(tmp_path / "a.png")), alpha)
    result = runner.invoke(main, ["render", path, "nope", "-o", str(tmp_path / "n.png")])
    assert result.exit_code == 1 and "nope" in result.stderr


def test_cli_export(tmp_path, seg_version):
    path = str(seg_version.archive.path)
    seg_version.archive.close()
    result = CliRunner().invoke(main, ["export", path, str(tmp_path / "out"), "--query", 'id == "plain"',
                                       "--jobs", "1"])
    assert result.exit_code == 0, result.output
    assert "wrote 1 images" in result.stderr and (tmp_path / "out" / "plain" / "0.png").is_file()


def test_demo_builds_queries_and_exports(tmp_path):
    result = CliRunner().invoke(main, ["demo", str(tmp_path / "demo"), "--jobs", "1"])
    assert result.exit_code == 0, result.output
    assert "voc_1, voc_114" in result.stdout and "lemur, car-1" in result.stdout
    for name in ("segmentation/voc_1/0.png", "segmentation/legend.png", "alpha/lemur/0.png", "stats.png"):
        assert (tmp_path / "demo" / name).is_file(), name
    with Archive(tmp_path / "demo" / "demo.maskstore", readonly=True) as ar:
        voc = ar.get_version("voc-samples", "v1")
        assert voc.ids('label == "aeroplane"') == ["voc_1"]
        assert all(s.uri.startswith("blob:sha256:") for f in voc for s in f.sources)
