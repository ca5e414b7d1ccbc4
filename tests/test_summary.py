"""stats: per-label frame counts and pixel shares from stored statistics, and the bar chart."""

from __future__ import annotations

import numpy as np
from click.testing import CliRunner
from PIL import Image

from maskstore.cli import main
from maskstore.summary import UNLABELLED, UNLABELLED_COLOR, bar_chart, label_stats, stats_colors


def frame(fid, values):
    return {"id": fid, "sources": [{"uri": f"/x/{fid}.png", "masks": [{"uri": f"/m/{fid}.png", "values": values}]}]}


def test_label_stats_count_frames_and_pixels(version):
    version.add_frames([frame("a", [[0, 0, 0, 60], [1, 1, 1, 40]]),
                        frame("b", [[0, 0, 0, 90], [2, 2, 2, 5], [3, 3, 3, 5]]),
                        frame("c", [[9, 9, 9, 100]])])
    version.set_masks_labels({(0, 0, 0): ["road"], (1, 1, 1): ["car", "vehicle"], (2, 2, 2): ["vehicle"],
                              (3, 3, 3): ["car"]})
    n, stats = label_stats(version)
    got = {s.label: (s.frames, s.pixels, round(s.share, 6)) for s in stats}
    assert n == 3
    assert got == {"road": (2, 150, 0.5), "car": (2, 45, 0.15), "vehicle": (2, 45, 0.15),
                   UNLABELLED: (1, 100, 0.333333)}
    assert [s.unlabelled for s in stats] == [False, False, False, True]


def test_bar_chart_is_a_png_with_one_coloured_bar_per_label(tmp_path, version):
    version.add_frames([frame("a", [[0, 0, 0, 75], [1, 1, 1, 25]])])
    version.set_masks_labels({(0, 0, 0): ["road"], (1, 1, 1): ["car"]})
    _, stats = label_stats(version)
    path = bar_chart(stats, tmp_path / "chart.png", {"road": (128, 64, 128), "car": (0, 0, 142)})
    image = Image.open(path)
    assert image.format == "PNG"
    pixels = np.asarray(image.convert("RGB")).reshape(-1, 3)
    colours = {tuple(p) for p in np.unique(pixels, axis=0)}
    assert (128, 64, 128) in colours and (0, 0, 142) in colours
    # labels are drawn as text: dark pixels left of the bars
    assert (np.asarray(image.convert("L"))[:, :200] < 100).sum() > 50


def test_stats_command(tmp_path, version):
    version.add_frames([frame("a", [[0, 0, 0, 75], [1, 1, 1, 25]])])
    version.set_masks_labels({(0, 0, 0): ["road"], (1, 1, 1): ["car"]})
    path = str(version.archive.path)
    version.archive.close()
    result = CliRunner().invoke(main, ["stats", path, "--chart", str(tmp_path / "s.png")])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "1 frames in Example/v1"
    assert lines[1].split() == ["label", "frames", "pixels", "share", "roi", "frames"]
    assert lines[2].split() == ["road", "1", "75", "75.00%", "0"] and lines[3].split() == ["car", "1", "25", "25.00%", "0"]
    assert len(lines) == 4  # no unlabelled pixels: the row is hidden
    assert Image.open(tmp_path / "s.png").format == "PNG"


def test_chart_colours_are_the_render_colours_and_grey_for_unlabelled(tmp_path, version):
    version.add_frames([frame("a", [[0, 0, 0, 50], [1, 1, 1, 25], [7, 7, 7, 25]])])
    version.set_masks_labels({(0, 0, 0): ["road"], (1, 1, 1): ["car"]})
    version.set_label_colors({"car": (0, 0, 142)})
    _, stats = label_stats(version)
    colors = stats_colors(version, stats)
    assert colors["car"] == (0, 0, 142) and colors[UNLABELLED] == UNLABELLED_COLOR
    assert colors["road"] == (0, 0, 255)  # the palette's first colour: road is the first label
    pixels = np.asarray(Image.open(bar_chart(stats, tmp_path / "c.png", colors)).convert("RGB")).reshape(-1, 3)
    found = {tuple(p) for p in np.unique(pixels, axis=0)}
    assert {(0, 0, 142), (0, 0, 255), UNLABELLED_COLOR} <= found
