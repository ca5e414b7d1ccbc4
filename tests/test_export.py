"""Export, the render/export/demo commands: safe paths, manifest, legend, resumable runs, same pixels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from click.testing import CliRunner
from PIL import Image

from maskstore import Archive, MaskstoreError, SingleFrame, render
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
    assert f"maskstore view {tmp_path / 'demo' / 'demo.maskstore'} -d voc-samples" in result.stdout
    for name in ("segmentation/voc_1/0.png", "segmentation/legend.png", "alpha/lemur/0.png", "stats.png"):
        assert (tmp_path / "demo" / name).is_file(), name
    with Archive(tmp_path / "demo" / "demo.maskstore", readonly=True) as ar:
        voc = ar.get_version("voc-samples", "v1")
        assert voc.ids('label == "aeroplane"') == ["voc_1"]
        assert all(s.uri.startswith("blob:sha256:") for f in voc for s in f.sources)


# ----------------------------------------------------------------------------- reported defects

def write_png(path: Path, array: np.ndarray) -> str:
    Image.fromarray(array).save(path)
    return str(path)


def rows_of(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def cli(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_one_line_error(result, *words: str) -> None:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and not isinstance(result.exception, Exception) or \
        isinstance(result.exception, SystemExit)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for word in words:
        assert word in lines[0], lines[0]


def test_frame_ids_named_like_the_exports_own_files(tmp_path, seg_version):
    """Frame ids legend.png and manifest.jsonl used to become folders where the legend and the
    manifest go (IsADirectoryError)."""
    frame = seg_version.get_frame("plain").to_dict()
    seg_version.add_frames([{**frame, "id": fid} for fid in ("legend.png", "manifest.jsonl", "Legend.PNG")])
    out = tmp_path / "out"
    report = seg_version.export(out, query='id in ["legend.png", "manifest.jsonl", "Legend.PNG"]', jobs=1)
    assert report.written == 3 and not report.errors
    assert (out / "legend.png").is_file() and (out / "manifest.jsonl").is_file()
    rows = rows_of(out)
    assert {r["frame_id"] for r in rows} == {"legend.png", "manifest.jsonl", "Legend.PNG"}
    expected = render(seg_version.get_frame("plain"), seg_version)
    for r in rows:
        assert np.array_equal(np.asarray(Image.open(out / r["path"])), expected)


def two_source_frame(tmp_path: Path, ids: tuple[str, str]) -> dict:
    """A frame whose two sources have different images, so a wrong file shows."""
    mask = write_png(tmp_path / "m.png", np.ones((4, 4), np.uint8))
    return {"id": "f", "sources": [
        {"id": ids[0], "uri": write_png(tmp_path / "s0.png", np.full((4, 4, 3), 10, np.uint8)), "masks": [{"uri": mask}]},
        {"id": ids[1], "uri": write_png(tmp_path / "s1.png", np.full((4, 4, 3), 200, np.uint8)), "masks": [{"uri": mask}]},
    ]}


@pytest.mark.parametrize("ids", [("a/b", safe_name("a/b")), ("0", ""), ("front", "Front")],
                         ids=["sanitised-alike", "empty-beside-0", "case-alike"])
def test_sources_whose_names_collide_get_their_own_files(tmp_path, version, ids):
    version.set_masks_labels({(1, 1, 1): ["car"]})
    version.add_frames([two_source_frame(tmp_path, ids)])
    out = tmp_path / "out"
    for run in range(2):  # the re-run must find each file its own, too
        report = version.export(out, jobs=1, opacity=0)
        assert not report.errors
        assert (report.written, report.skipped) == ((2, 0) if run == 0 else (0, 2))
        rows = rows_of(out)
        assert sorted(r["source_id"] for r in rows) == sorted(ids)
        assert len({r["path"].casefold() for r in rows}) == 2
        for r in rows:  # opacity 0: each image is its own source's (10 for the first, 200 for the second)
            expected = np.full((4, 4, 3), 10 if r["source_id"] == ids[0] else 200, np.uint8)
            assert np.array_equal(np.asarray(Image.open(out / r["path"])), expected), r


def test_safe_name_never_returns_a_hashed_name_for_another_id():
    crafted = safe_name("a/b")
    assert "~" in crafted and safe_name(crafted) != crafted
    for own in ("manifest.jsonl", "legend.png", "LEGEND.png", ".maskstore-export.json"):
        assert safe_name(own) != own


@pytest.mark.parametrize("damage", ["empty", "truncated", "garbage"])
def test_damaged_output_files_are_rendered_again(tmp_path, seg_version, damage):
    out = tmp_path / "out"
    seg_version.export(out, jobs=1)
    target = out / "plain" / "0.png"
    data = target.read_bytes()
    target.write_bytes({"empty": b"", "truncated": data[: len(data) // 2], "garbage": b"x" * len(data)}[damage])
    report = seg_version.export(out, jobs=1)
    assert (report.written, report.skipped) == (1, 7)
    assert np.array_equal(np.asarray(Image.open(target)), render(seg_version.get_frame("plain"), seg_version))
    assert next(r for r in rows_of(out) if r["frame_id"] == "plain")["status"] == "written"


@pytest.mark.parametrize("first, second", [
    (["--mode", "segmentation"], ["--mode", "alpha"]),
    (["--opacity", "0.5"], ["--opacity", "0.9"]),
    (["--format", "png"], ["--format", "jpeg"]),
    (["--background", "#000000"], ["--background", "#ffffff"]),
])
def test_re_export_with_other_settings_is_refused_until_overwrite(tmp_path, seg_version, first, second):
    path = str(seg_version.archive.path)
    seg_version.archive.close()
    out = tmp_path / "out"
    assert cli("export", path, out, "--jobs", "1", *first).exit_code == 0
    before = sorted((p, p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file())
    refused = cli("export", path, out, "--jobs", "1", *second)
    assert_one_line_error(refused, "--overwrite", str(out))
    assert sorted((p, p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file()) == before
    done = cli("export", path, out, "--jobs", "1", "--overwrite", *second)
    assert done.exit_code == 0, done.output
    assert "wrote 8 images, skipped 0" in done.stderr
    ext = "jpg" if "jpeg" in second else "png"
    assert sorted(p.name for p in (out / "plain").iterdir()) == [f"0.{ext}"]
    again = cli("export", path, out, "--jobs", "1", *second)
    assert again.exit_code == 0 and "wrote 0 images, skipped 8" in again.stderr


def test_overwrite_replaces_the_whole_earlier_export(tmp_path, seg_version):
    """Images of frames the new export does not select must not survive to be 'skipped' later."""
    out = tmp_path / "out"
    seg_version.export(out, jobs=1, opacity=0.2)
    seg_version.export(out, query='id == "plain"', jobs=1, opacity=0.9, overwrite=True)
    assert [p.relative_to(out).as_posix() for p in out.rglob("*.png") if p.name != "legend.png"] == ["plain/0.png"]
    report = seg_version.export(out, jobs=1, opacity=0.9)
    assert (report.written, report.skipped) == (7, 1)
    frame = seg_version.get_frame("../escape")
    path = out / next(r["path"] for r in rows_of(out) if r["frame_id"] == frame.id)
    assert np.array_equal(np.asarray(Image.open(path)), render(frame, seg_version, opacity=0.9))


def test_changed_version_colours_count_as_other_settings(tmp_path, seg_version):
    out = tmp_path / "out"
    seg_version.export(out, jobs=1)
    seg_version.set_label_colors({"car": (0, 255, 0)})
    with pytest.raises(MaskstoreError, match="overwrite"):
        seg_version.export(out, jobs=1)
    assert seg_version.export(out, jobs=1, overwrite=True).written == 8


def test_legend_lists_only_labels_present_in_the_exported_frames(tmp_path, seg_version):
    seg_version.set_masks_labels({(1, 1, 1): ["car"], (2, 2, 2): ["road"], (3, 3, 3): ["sky"]})
    seg_version.set_label_colors({"sky": (0, 255, 0)})
    only_car = np.zeros((6, 8), np.uint8)
    only_car[1, 1] = 1
    frame = seg_version.get_frame("plain").to_dict()
    frame["sources"][0]["masks"][0] = {"id": "00", "uri": write_png(tmp_path / "car.png", only_car)}
    seg_version.add_frames([{**frame, "id": "car-only"}])

    def legend_colours(report) -> set:
        legend = np.asarray(Image.open(report.legend).convert("RGB")).reshape(-1, 3)
        return {tuple(int(x) for x in c) for c in np.unique(legend, axis=0)}
    both = legend_colours(seg_version.export(tmp_path / "both", query='id == "plain"', jobs=1))
    assert {(255, 0, 0), (0, 0, 255)} <= both and (0, 255, 0) not in both
    car = legend_colours(seg_version.export(tmp_path / "car", query='id == "car-only"', jobs=2))
    assert (255, 0, 0) in car and (0, 0, 255) not in car and (0, 255, 0) not in car


# ----------------------------------------------------------------------------- maskstore render -o

@pytest.fixture
def closed_archive(seg_version) -> str:
    path = str(seg_version.archive.path)
    seg_version.archive.close()
    return path


def test_cli_render_into_a_missing_folder_is_one_line(tmp_path, closed_archive):
    result = cli("render", closed_archive, "plain", "-o", tmp_path / "nodir" / "x.png")
    assert_one_line_error(result, "nodir")
    assert not (tmp_path / "nodir").exists()


@pytest.mark.parametrize("name, args, magic", [
    ("x.jpg", [], b"\xff\xd8"), ("x.JPEG", [], b"\xff\xd8"), ("x.png", [], b"\x89PNG"),
    ("x.out", ["--format", "jpeg"], b"\xff\xd8"), ("x.jpg", ["--format", "png"], b"\x89PNG"),
])
def test_cli_render_format_follows_the_extension(tmp_path, closed_archive, name, args, magic):
    result = cli("render", closed_archive, "plain", "-o", tmp_path / name, *args)
    assert result.exit_code == 0, result.output
    assert (tmp_path / name).read_bytes().startswith(magic)


@pytest.mark.parametrize("name, args, words", [
    ("x.bmp", [], ["x.bmp", "--format"]),
    ("x.jpg", ["--mode", "alpha"], ["JPEG", "alpha"]),
    ("x.jpg", ["--layer-only"], ["JPEG"]),
])
def test_cli_render_refuses_formats_it_cannot_write(tmp_path, closed_archive, name, args, words):
    result = cli("render", closed_archive, "plain", "-o", tmp_path / name, *args)
    assert_one_line_error(result, *words)
    assert not (tmp_path / name).exists()


def test_export_refuses_layer_only_to_jpeg(tmp_path, seg_version):
    with pytest.raises(MaskstoreError, match="JPEG"):
        seg_version.export(tmp_path / "out", jobs=1, format="jpeg", layer_only=True)


@given(data=st.data(), first=st.text(max_size=200))
@settings(max_examples=300, deadline=None)
def test_safe_names_are_plain_file_names_that_never_collide(data, first):
    """Any two ids get two names, even an id crafted to equal another's safe name (or its case)."""
    second = data.draw(st.one_of(st.text(max_size=200), st.just(safe_name(first)), st.just(first.upper()),
                                 st.sampled_from(["manifest.jsonl", "legend.png", ".maskstore-export.json", ""])))
    for name in (safe_name(first), safe_name(second)):
        assert name not in ("", ".", "..") and not set(name) & set('/\\\x00') and len(name.encode()) <= 140
        assert name.casefold() not in ("manifest.jsonl", "legend.png") and not name.startswith(".maskstore-")
    assert (safe_name(first) == safe_name(second)) == (first == second)
    assert safe_name(first, hashed=True) != first and (first == second or safe_name(first, hashed=True) != safe_name(second))
