"""stats: per-label frame counts and pixel shares from stored statistics, and the bar chart."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
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


values_st = st.lists(st.tuples(st.integers(0, 5), st.integers(1, 50)), max_size=4, unique_by=lambda v: v[0])
frames_st = st.lists(st.tuples(values_st, st.lists(st.sampled_from(["car", "sky", "kite"]), max_size=2)), max_size=12)
tables_st = st.dictionaries(st.integers(0, 6), st.lists(st.sampled_from(["road", "car", "sky", "bus"]), max_size=2,
                                                        unique=True), max_size=5)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frames_st, tables_st)
def test_label_stats_equal_a_brute_force_count(archive, frames, table):
    """Any frames (values 0..5, ROI labels) under any table (values with 0..2 labels, unused values):
    every row equals counting the frame dicts directly."""
    v = archive.create_version(dataset_name="d", version_name=f"v{len(archive.versions())}")
    v.add_frames([frame(f"f{i}", [[k, k, k, n] for k, n in values]) | {"rois": [{"label": [r]} for r in rois]}
                  for i, (values, rois) in enumerate(frames)])
    v.set_masks_labels({(k, k, k): names for k, names in table.items()})
    n, rows = label_stats(v)
    total = sum(n for values, _ in frames for _, n in values)
    expected = {}
    for name in dict.fromkeys([*(x for names in table.values() for x in names),
                               *sorted({r for _, rois in frames for r in rois} - {x for ns in table.values() for x in ns})]):
        mask = [sum(n for k, n in values if name in table.get(k, [])) for values, _ in frames]
        rois = [name in r for _, r in frames]
        pixels = sum(mask)
        expected[name] = (sum(bool(m) or r for m, r in zip(mask, rois)), pixels, sum(rois))
    rest = [sum(n for k, n in values if not table.get(k)) for values, _ in frames]
    expected[UNLABELLED] = (sum(map(bool, rest)), sum(rest), 0)
    assert n == len(frames)
    assert {r.label: (r.frames, r.pixels, r.roi_frames) for r in rows} == expected
    assert [r.label for r in rows] == list(expected)
    assert all(r.share == (r.pixels / total if total else 0.0) for r in rows)
