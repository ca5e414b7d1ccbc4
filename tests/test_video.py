"""Video sources and masks (spec section 10), on videos these tests make with PyAV: lossless FFV1
(exact values, adjacent labels 1 and 2) and lossy H.264 (well-separated values)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from maskstore import Archive, MaskError, MaskstoreError, MediaError, render
from maskstore import video as video_module
from maskstore.cli import main

pytest.importorskip("av", reason="the video tests need PyAV (pip install -e '.[test]' brings it)")
from video_helpers import RATE, H, N, W, make_videos, mask_picture, source_picture  # noqa: E402  (needs av)

LABELS = [{"value": [1, 1, 1], "labels": ["road"]}, {"value": [2, 2, 2], "labels": ["car"]}]


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_videos(tmp_path_factory.mktemp("videos"))


def expected_values(n: int) -> list[list[int]]:
    road = H * (n + 2) - (25 if n >= 10 else 0)
    values = [[0, 0, 0, H * W - road - (25 if n >= 10 else 0)], [1, 1, 1, road]]
    return values + ([[2, 2, 2, 25]] if n >= 10 else [])


def ingest_video(path: Path, videos: dict[str, Path], *args: str) -> None:
    result = CliRunner().invoke(main, ["ingest", str(path), "-d", "D", "-V", "v1", "--video", str(videos["clip"]),
                                       "--mask-video", f"seg={videos['seg']}", *args])
    assert result.exit_code == 0, result.output


def test_the_frame_shown_is_the_nearest_presentation_time_ties_to_the_earlier(videos: dict[str, Path]) -> None:
    reader = video_module.VideoReader(videos["seg"], "seg")
    try:
        columns_of = lambda ms: int((reader.frame_at(ms)[20] == 1).all(axis=1).sum())  # noqa: E731  (n + 2)
        assert [columns_of(ms) for ms in (0, 19, 20, 21, 40, 59, 60, 61, 1000, 10_000)] == \
            [2, 2, 2, 3, 3, 3, 3, 4, 27, N + 1]
        assert columns_of(0) == 2  # backwards: a seek, same rule
    finally:
        reader.close()


def test_ingest_video_gives_one_frame_per_video_frame_with_exact_statistics(tmp_path: Path,
                                                                            videos: dict[str, Path]) -> None:
    path = tmp_path / "v.maskstore"
    ingest_video(path, videos)
    with Archive(path, readonly=True) as ar:
        v = ar.get_version("D", "v1")
        assert len(v) == N
        frames = {f.id: f.to_dict() for f in v}
    for n in range(N):
        d = frames[f"clip_{n:06d}"]
        assert (d["context_id"], d["timestamp"]) == ("clip", 40 * n)
        source = d["sources"][0]
        assert (source["width"], source["height"], source["content_type"]) == (W, H, "video/x-matroska")
        (mask,) = source["masks"]
        assert mask["id"] == "seg" and mask["timestamp"] == 40 * n
        assert mask["values"] == expected_values(n)


def test_every_takes_every_nth_frame_and_unnamed_mask_videos_are_numbered(tmp_path: Path,
                                                                         videos: dict[str, Path]) -> None:
    path = tmp_path / "v.maskstore"
    result = CliRunner().invoke(main, ["ingest", str(path), "--video", str(videos["clip"]), "--mask-video",
                                       str(videos["seg"]), "--mask-video", str(videos["seg"]), "--every", "7"])
    assert result.exit_code == 0, result.output
    with Archive(path, readonly=True) as ar:
        (v,) = ar.versions()
        frames = sorted((f.to_dict() for f in v), key=lambda d: d["timestamp"])
    assert [d["timestamp"] for d in frames] == [0, 280, 560, 840, 1120]
    assert [m["id"] for m in frames[0]["sources"][0]["masks"]] == ["00", "01"]


def test_mask_video_statistics_come_from_one_sequential_decode(tmp_path: Path, videos: dict[str, Path],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    seeks: list[object] = []
    restart = video_module.VideoReader._restart
    monkeypatch.setattr(video_module.VideoReader, "_restart", lambda self, t: (seeks.append(t), restart(self, t))[1])
    ingest_video(tmp_path / "v.maskstore", videos)
    assert len(seeks) == 1  # the mask video, once, at its start; the source is only demuxed


def test_video_frames_render_exactly_and_in_order_without_going_back(tmp_path: Path, videos: dict[str, Path],
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "v.maskstore"
    ingest_video(path, videos)
    seeks: list[object] = []
    restart = video_module.VideoReader._restart
    monkeypatch.setattr(video_module.VideoReader, "_restart", lambda self, t: (seeks.append(t), restart(self, t))[1])
    with Archive(path) as ar:
        v = ar.get_version("D", "v1")
        v.set_masks_labels(LABELS)
        v.set_label_colors({"road": (200, 0, 0), "car": (0, 0, 250)})
        for n in range(N):
            got = render(v.get_frame(f"clip_{n:06d}"), v, opacity=0.5)
            src, mask = source_picture(n).astype(np.int32), mask_picture(n)
            colour = np.select([mask == 1, mask == 2], [np.array([200, 0, 0]), np.array([0, 0, 250])], 0)
            want = np.where(mask > 0, (src * (255 - 128) + colour * 128 + 127) // 255, src).astype(np.uint8)
            assert np.array_equal(got, want), n
    assert len(seeks) <= 2  # one per video (source and mask), at the start: later frames decode forward


def test_clearml_shaped_frame_dicts_point_into_videos(tmp_path: Path, videos: dict[str, Path]) -> None:
    """Frames as ClearML writes them: a video source and mask, ``timestamp`` the position in ms;
    ingest decodes the mask frame at that time for its statistics."""
    frames = [{"id": f"f{n}", "timestamp": 40 * n, "context_id": "clip",
               "sources": [{"id": "front", "content_type": "video/mp4", "uri": str(videos["clip"]), "timestamp": 40 * n,
                            "masks": [{"id": "seg", "content_type": "video/mp4", "uri": str(videos["seg"]),
                                       "timestamp": 40 * n}]}]}
              for n in (12, 3, 20)]
    with Archive(tmp_path / "v.maskstore") as ar:
        v = ar.create_version(dataset_name="D", version_name="v1")
        v.add_frames(frames)
        v.set_masks_labels(LABELS)
        assert sorted(v.ids('label == "car"')) == ["f12", "f20"]
        d = v.get_frame_dict("f3")
        assert d["sources"][0]["masks"][0]["values"] == expected_values(3)
        assert (d["sources"][0]["width"], d["sources"][0]["height"]) == (W, H)
        out = tmp_path / "out"
        v.export(out, query='label == "car"', jobs=2)
        rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
        assert sorted(r["frame_id"] for r in rows if r["status"] == "written") == ["f12", "f20"]


def test_embedded_videos_render_without_the_original_files(tmp_path: Path, videos: dict[str, Path]) -> None:
    folder = tmp_path / "media"
    folder.mkdir()
    copies = {name: folder / p.name for name, p in videos.items()}
    for name, p in videos.items():
        copies[name].write_bytes(p.read_bytes())
    path = tmp_path / "v.maskstore"
    ingest_video(path, copies, "--embed")
    for p in copies.values():
        p.unlink()
    with Archive(path) as ar:
        v = ar.get_version("D", "v1")
        v.set_masks_labels(LABELS)
        frame = v.get_frame("clip_000012")
        assert frame.sources[0].uri.startswith("blob:sha256:")
        layer = render(frame, v, layer_only=True)
        assert int((layer[..., 3] > 0).sum()) == H * 14


def test_lossy_mask_videos_keep_few_values(tmp_path: Path, videos: dict[str, Path]) -> None:
    with Archive(tmp_path / "v.maskstore") as ar:
        v = ar.create_version(dataset_name="D", version_name="v1")
        v.add_frames([{"id": "f", "sources": [{"uri": str(videos["clip"]), "timestamp": 480,
                                                "masks": [{"uri": str(videos["lossy"]), "timestamp": 480}]}]}])
        values = v.get_frame_dict("f")["sources"][0]["masks"][0]["values"]
    assert 0 < len(values) <= 1024
    assert sum(c for *_, c in values) >= 0.95 * H * W


def test_without_pyav_a_video_is_a_media_error_that_says_how_to_install(tmp_path: Path, videos: dict[str, Path],
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "av", None)
    monkeypatch.setattr(video_module, "_readers", type(video_module._readers)())
    with pytest.raises(MediaError, match=r"pip install 'maskstore\[video\]'"):
        with Archive(tmp_path / "v.maskstore") as ar:
            v = ar.create_version(dataset_name="D", version_name="v1")
            v.add_frames([{"id": "f", "sources": [{"uri": str(videos["clip"]),
                                                    "masks": [{"uri": str(videos["seg"])}]}]}])
    result = CliRunner().invoke(main, ["ingest", str(tmp_path / "w.maskstore"), "--video", str(videos["clip"])])
    assert result.exit_code == 1 and "maskstore[video]" in result.stderr and "Traceback" not in result.output


def test_a_file_that_is_no_video_names_itself(tmp_path: Path) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all")
    Image.new("RGB", (4, 4)).save(tmp_path / "img.png")
    with Archive(tmp_path / "v.maskstore") as ar:
        v = ar.create_version(dataset_name="D", version_name="v1")
        with pytest.raises(MaskError, match="bad.mp4"):
            v.add_frames([{"id": "f", "sources": [{"uri": str(tmp_path / "img.png"), "masks": [{"uri": str(bad)}]}]}])


# ------------------------------------------------------------------------------------------ tolerance

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from maskstore.labels import pack_rgb, within_tolerance  # noqa: E402

rgb = st.tuples(st.integers(0, 255), st.integers(0, 255), st.integers(0, 255))


@settings(max_examples=200, deadline=None)
@given(labelled=st.lists(rgb, min_size=1, max_size=6, unique=True), found=st.lists(rgb, max_size=30),
       tolerance=st.integers(0, 40))
def test_tolerance_gives_each_value_the_labels_of_the_nearest_labelled_value(labelled, found, tolerance) -> None:
    labels = [{"value": list(v), "labels": [f"l{i}"]} for i, v in enumerate(labelled)]
    got = {tuple(e["value"]): e["labels"] for e in
           within_tolerance(labels, np.array([pack_rgb(v) for v in found], dtype=np.int64), tolerance)}
    for value in set(found) | set(labelled):
        distances = sorted((max(abs(a - b) for a, b in zip(value, v)), v, i) for i, v in enumerate(labelled))
        d, _, i = distances[0]  # nearest; ties to the lower (r, g, b)
        assert got.get(value) == ([f"l{i}"] if d <= tolerance else None), (value, distances)


def test_lossy_h264_masks_get_the_right_classes_with_a_tolerance(tmp_path: Path, videos: dict[str, Path]) -> None:
    """Values 60 (road) and 200 (car) through H.264: exact labels miss pixels, a tolerance of 40 gives
    >= 99% of pixels their class in renders, and label queries and coverage follow it."""
    frames = [{"id": f"f{n}", "timestamp": 40 * n,
               "sources": [{"uri": str(videos["clip"]), "masks": [{"uri": str(videos["lossy"])}]}]}
              for n in (5, 12, 20)]
    path = tmp_path / "v.maskstore"
    enumeration = {"road": 1, "car": 2}

    def classes(n: int) -> np.ndarray:
        grey = mask_picture(n, 60, 200)[..., 0]
        return np.select([grey == 60, grey == 200], [1, 2], 0)

    with Archive(path) as ar:
        v = ar.create_version(dataset_name="D", version_name="v1")
        v.add_frames(frames)
        v.set_masks_labels({(60, 60, 60): ["road"], (200, 200, 200): ["car"]})
        exact = render(v.get_frame("f12"), v, mode="index", enumeration=enumeration, ignore=0)
        assert (exact == classes(12)).mean() < 0.99  # the codec moved values: exact labels miss
        exact_value = v.ids("mask.value == [59, 59, 59]")
        exact_road = set(v.ids('coverage("road") > 0.2'))
        assert exact_road < {"f12", "f20"}
    result = CliRunner().invoke(main, ["labels", str(path), "--tolerance", "40"])
    assert result.exit_code == 0, result.output
    with Archive(path) as ar:
        v = ar.get_version("D", "v1")
        assert v.get_mask_tolerance() == 40
        for n in (5, 12, 20):
            got = render(v.get_frame(f"f{n}"), v, mode="index", enumeration=enumeration, ignore=0)
            assert (got == classes(n)).mean() >= 0.99, n
        assert sorted(v.ids('label == "car"')) == ["f12", "f20"]
        assert sorted(v.ids('coverage("road") > 0.2')) == ["f12", "f20"]  # 14 and 22 of 64 columns
        assert v.ids("mask.value == [59, 59, 59]") == exact_value  # mask.value stays exact
        v.set_mask_tolerance(0)
        assert set(v.ids('coverage("road") > 0.2')) == exact_road  # nothing was rebuilt either way
        with pytest.raises(MaskstoreError, match="0..255"):
            v.set_mask_tolerance(300)


# ------------------------------------------------------------------------------------------ export --video

def decoded(path: Path) -> tuple[list[np.ndarray], object]:
    import av
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return [f.to_ndarray(format="rgb24") for f in container.decode(stream)], stream.average_rate


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_export_video_writes_one_overlay_video_per_context_in_timestamp_order(tmp_path: Path, videos: dict[str, Path],
                                                                              jobs: str) -> None:
    path = tmp_path / "v.maskstore"
    ingest_video(path, videos, "--every", "3")
    with Archive(path) as ar:
        v = ar.get_version("D", "v1")
        v.set_masks_labels(LABELS)
        v.set_label_colors({"road": (250, 250, 250), "car": (0, 0, 0)})
        # a second context of image frames, stored out of timestamp order, 10 fps by their timestamps;
        # their first source has no mask, so the video shows the second (as render and image exports do)
        for n in (2, 0, 1):
            Image.fromarray(source_picture(n)).save(tmp_path / f"img{n}.png")
            Image.fromarray(mask_picture(n)).save(tmp_path / f"mask{n}.png")
        v.add_frames([{"id": f"still{n}", "context_id": "stills", "timestamp": 100 * n,
                       "sources": [{"id": "thumb", "uri": str(tmp_path / f"img{n}.png"), "masks": []},
                                   {"id": "cam", "uri": str(tmp_path / f"img{n}.png"),
                                    "masks": [{"uri": str(tmp_path / f"mask{n}.png")}]}]}
                      for n in (2, 0, 1)])
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["export", str(path), str(out), "--video", "--jobs", jobs, "--opacity", "1"])
    assert result.exit_code == 0, result.output
    rows = sorted((json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()),
                  key=lambda r: r["context_id"])
    assert [(r["context_id"], r["path"], r["frames"], r["status"]) for r in rows] == \
        [("clip", "clip.mp4", 10, "written"), ("stills", "stills.mp4", 3, "written")]
    pictures, rate = decoded(out / "clip.mp4")
    assert len(pictures) == 10 and rate == RATE
    for k, picture in enumerate(pictures):  # frame 3k: road (white at opacity 1) is n + 2 columns wide
        n = 3 * k
        white = (picture[20].astype(int).min(axis=1) > 200).sum()
        assert abs(white - (n + 2)) <= 1, (k, white)
    stills, rate = decoded(out / "stills.mp4")
    widths = [int((p[20].astype(int).min(axis=1) > 200).sum()) for p in stills]  # H.264 may blur one column
    assert rate == 10 and len(widths) == 3 and all(abs(w - want) <= 1 for w, want in zip(widths, [2, 3, 4]))
    again = CliRunner().invoke(main, ["export", str(path), str(out), "--video", "--opacity", "1"])
    assert again.exit_code == 0 and "skipped 2" in again.stderr
