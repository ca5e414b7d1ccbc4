"""Export under hostile conditions: a writer changing colours meanwhile, symbolic links planted in the
output folder, two exports into one folder, and writes that fail (a file-size limit set with
``RLIMIT_FSIZE`` makes the kernel refuse them, as a full disk would)."""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from maskstore import Archive, MaskstoreError

from .helpers import Child, cli

RED, BLUE = (255, 0, 0), (0, 0, 255)
FLIPPER = """
import sys
from maskstore import Archive
with Archive(sys.argv[1], jobs=1) as ar:
    v = ar.versions()[0]
    n = 0
    while True:
        v.set_label_colors({"car": (255, 0, 0) if n % 2 else (0, 0, 255)})
        n += 1
        print("flip", n, flush=True)
"""


def small_archive(tmp_path: Path, n: int, size: tuple[int, int] = (4, 4)) -> Path:
    """``n`` frames of one small image whose mask is all ``car``, coloured red."""
    h, w = size
    Image.fromarray(np.full((h, w, 3), 90, np.uint8)).save(tmp_path / "img.png")
    Image.fromarray(np.ones((h, w), np.uint8)).save(tmp_path / "mask.png")
    path = tmp_path / "a.maskstore"
    with Archive(path, jobs=1) as ar:
        v = ar.create_version(dataset_name="d", version_name="v1")
        v.set_masks_labels({(1, 1, 1): ["car"]})
        v.set_label_colors({"car": RED})
        v.add_frames([{"id": f"f{i:04d}", "sources": [{"id": "0", "uri": str(tmp_path / "img.png"), "masks": [
            {"id": "00", "uri": str(tmp_path / "mask.png")}]}]} for i in range(n)])
    return path


def colours_of(out: Path) -> set[tuple[int, ...]]:
    """The colour of every exported image (each is one colour: opacity 1 over an all-car mask)."""
    found = set()
    for row in map(json.loads, (out / "manifest.jsonl").read_text().splitlines()):
        pixels = np.asarray(Image.open(out / row["path"])).reshape(-1, 3)
        found |= {tuple(int(c) for c in p) for p in np.unique(pixels, axis=0)}
    return found


def flips(child: Child) -> int:
    return max((int(line.split()[1]) for line in child.lines if line.startswith("flip ")), default=0)


@pytest.mark.slow
@pytest.mark.parametrize("jobs", [1, 2])
def test_export_is_one_snapshot_while_another_process_flips_colours(tmp_path, jobs):
    path = small_archive(tmp_path, 300)
    flipper = Child([sys.executable, "-c", FLIPPER, str(path)])
    try:
        flipper.wait_for("flip 3")
        before = flips(flipper)
        with Archive(path, readonly=True) as ar:
            report = ar.versions()[0].export(tmp_path / "out", jobs=jobs, opacity=1.0)
        during = flips(flipper) - before
    finally:
        flipper.kill()
    assert report.written == 300 and not report.errors
    assert during >= 2, f"the colours changed only {during} times during the export: the test proves nothing"
    colours = colours_of(tmp_path / "out")
    assert len(colours) == 1 and colours <= {RED, BLUE}, colours
    legend = np.asarray(Image.open(tmp_path / "out" / "legend.png").convert("RGB")).reshape(-1, 3)
    assert colours <= {tuple(int(c) for c in p) for p in np.unique(legend, axis=0)}


# ----------------------------------------------------------------------------- symbolic links

@pytest.fixture
def exported(tmp_path):
    """An archive of 3 frames, exported once into ``out``, and a folder outside it."""
    path = small_archive(tmp_path, 3)
    out = tmp_path / "out"
    assert cli("export", path, out, "--jobs", "1").returncode == 0
    outside = tmp_path / "outside"
    outside.mkdir()
    return path, out, outside


def snapshot_of(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


@pytest.mark.parametrize("name", ["legend.png", "manifest.jsonl", "f0000/0.png"])
@pytest.mark.parametrize("target_exists", [True, False], ids=["to-a-file", "dangling"])
def test_links_to_files_are_replaced_never_written_through(exported, name, target_exists):
    path, out, outside = exported
    target = outside / "victim"
    if target_exists:
        target.write_bytes(b"precious")
    (out / name).unlink()
    (out / name).symlink_to(target)
    before = snapshot_of(outside)
    result = cli("export", path, out, "--jobs", "1")
    assert result.returncode == 0, result.stderr
    assert snapshot_of(outside) == before
    assert (out / name).is_file() and not (out / name).is_symlink()
    if name.endswith(".png") and "/" in name:
        assert "wrote 1 images, skipped 2" in result.stderr


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_a_linked_frame_folder_is_an_error_for_that_frame_only(exported, jobs):
    path, out, outside = exported
    for p in (out / "f0001").iterdir():
        p.unlink()
    (out / "f0001").rmdir()
    (out / "f0001").symlink_to(outside, target_is_directory=True)
    result = cli("export", path, out, "--jobs", jobs)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "f0001" in result.stderr and "link" in result.stderr
    assert list(outside.iterdir()) == []
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert {r["frame_id"]: r["status"] for r in rows} == {"f0000": "skipped", "f0001": "error", "f0002": "skipped"}


def test_a_linked_output_folder_inside_a_fresh_export_is_refused_too(tmp_path):
    path = small_archive(tmp_path, 2)
    out, outside = tmp_path / "out", tmp_path / "outside"
    out.mkdir()
    outside.mkdir()
    (out / "f0000").symlink_to(outside, target_is_directory=True)
    (out / "legend.png").symlink_to(outside / "legend.png")
    result = cli("export", path, out, "--jobs", "1")
    assert result.returncode == 1 and "f0000" in result.stderr and "Traceback" not in result.stderr
    assert list(outside.iterdir()) == []


# ----------------------------------------------------------------------------- two exports at once

@pytest.mark.slow
def test_two_exports_into_one_folder_at_the_same_time(tmp_path):
    path = small_archive(tmp_path, 200)
    out = tmp_path / "out"
    command = [str(Path(sys.executable).with_name("maskstore")), "export", str(path), str(out), "--jobs", "1"]
    children = [Child(command), Child(command)]
    codes = [c.finish(300) for c in children]
    assert codes == [0, 0], [c.stderr for c in children]
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert len(rows) == 200 and {r["status"] for r in rows} <= {"written", "skipped"}
    assert colours_of(out) == {tuple((90 * 127 + c * 128 + 127) // 255 for c in RED)}  # opacity 0.5
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == [".maskstore-export.json", "legend.png",
                                                                    "manifest.jsonl"]
    assert not [p for p in out.rglob("*") if p.name.startswith(".maskstore-tmp")]


# ----------------------------------------------------------------------------- writes that fail

def limited(max_bytes: int):
    """preexec_fn: the kernel refuses to grow any file past ``max_bytes`` (EFBIG), in the child and
    every process it starts."""
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))


def mixed_archive(tmp_path: Path) -> Path:
    """5 frames whose images compress well, then 5 of noise that cannot fit under 20 kB."""
    path = small_archive(tmp_path, 0)
    noise = np.random.default_rng(0).integers(0, 256, (96, 96, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "noise.png")
    Image.fromarray(np.ones((96, 96), np.uint8)).save(tmp_path / "noise_mask.png")
    with Archive(path, jobs=1) as ar:
        ar.versions()[0].add_frames([
            {"id": f"{kind}{i}", "sources": [{"id": "0", "uri": str(tmp_path / img), "masks": [
                {"id": "00", "uri": str(tmp_path / mask)}]}]}
            for kind, img, mask in (("a", "img.png", "mask.png"), ("b", "noise.png", "noise_mask.png"))
            for i in range(5)])
    return path


@pytest.mark.slow
@pytest.mark.parametrize("jobs", ["1", "2"])
def test_failed_writes_stop_with_one_line_and_leave_no_temp_files(tmp_path, jobs):
    path = mixed_archive(tmp_path)
    out = tmp_path / "out"
    result = cli("export", path, out, "--jobs", jobs, "--opacity", "0", preexec_fn=limited(20_000))
    assert result.returncode == 1, result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("Error")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert str(out) in lines[0] and "5 images written" in lines[0] and "File too large" in lines[0], lines[0]
    leftovers = [p for p in out.rglob("*") if p.is_file() and p.suffix != ".png" and p.name != ".maskstore-export.json"]
    assert leftovers == [] and sorted(p.parent.name for p in out.rglob("*.png")) == [f"a{i}" for i in range(5)]
    # with room again, the same command finishes the export and skips what was written
    again = cli("export", path, out, "--jobs", jobs, "--opacity", "0")
    assert again.returncode == 0 and "wrote 5 images, skipped 5" in again.stderr, again.stderr


def test_export_below_a_file_is_one_error(tmp_path):
    path = small_archive(tmp_path, 1)
    (tmp_path / "file").write_text("x")
    result = cli("export", path, tmp_path / "file" / "below", "--jobs", "1")  # OUTDIR itself a file: click's exit 2
    assert result.returncode == 1 and result.stderr.startswith("Error: ") and "Traceback" not in result.stderr
    assert str(tmp_path / "file") in result.stderr


def test_library_errors_are_maskstore_errors(tmp_path):
    path = small_archive(tmp_path, 1)
    (tmp_path / "file").write_text("x")
    with Archive(path, readonly=True) as ar, pytest.raises(MaskstoreError, match="file"):
        ar.versions()[0].export(tmp_path / "file", jobs=1)


@pytest.mark.slow
def test_an_export_killed_midway_resumes_with_every_image_right(tmp_path):
    path = small_archive(tmp_path, 300, size=(64, 64))
    out = tmp_path / "out"
    child = Child([str(Path(sys.executable).with_name("maskstore")), "export", str(path), str(out), "--jobs", "2"])
    deadline = time.monotonic() + 120
    while len(list(out.glob("*/0.png"))) < 20 and child.proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    child.kill()
    kept = len(list(out.glob("*/0.png")))
    assert 20 <= kept < 300, "the export finished before it could be killed: the test proves nothing"
    result = cli("export", path, out, "--jobs", "2")
    assert result.returncode == 0, result.stderr
    assert f"wrote {300 - kept} images, skipped {kept}" in result.stderr
    assert colours_of(out) == {tuple((90 * 127 + c * 128 + 127) // 255 for c in RED)}
