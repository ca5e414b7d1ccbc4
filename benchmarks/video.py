"""Does rendering the frames of a video cost little more than decoding the video, and does
``export --video`` cost little more than decoding and re-encoding it?

Question: for 300 consecutive 1280x720 frames of an H.264 source video with a lossless (FFV1) mask
video, ingested with ``maskstore ingest --video --mask-video``, how does rendering every frame in
timestamp order with ``maskstore.render`` compare with the decode-only floor, a sequential PyAV decode
of both videos to RGB arrays (goal: render / floor <= 1.5)? Readers decode forward, so rendering frame
n+1 after frame n decodes one more frame of each video, never from the start.

And how does ``export --video`` (one overlay MP4 per context) compare with a decode+encode-only
pipeline, PyAV decoding the source video and encoding its frames with ``maskstore.video.encode_video``
(the export's own encoder settings), no rendering (goal: export time <= 1.25x the pipeline's, i.e.
>= 0.8 of its speed)? Measured with ``--jobs 1`` on the one-video archive, and with ``--jobs 1`` and
``--jobs 2`` on an archive holding the video twice (two contexts, one task each) against the pipeline
run on both videos one after the other.

Run: ``python benchmarks/video.py [--frames 300] [--repeats 3]``; prints a markdown report and writes
it to ``benchmarks/results/video.md``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from maskstore import Archive, render
from maskstore import video as video_module

from common import log, machine_lines, table, write_result

WIDTH, HEIGHT, RATE = 1280, 720, 30


def make_videos(folder: Path, frames: int) -> tuple[Path, Path]:
    """A moving gradient source (H.264) and a mask of three moving label regions (FFV1, lossless)."""
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    paths = folder / "drive.mp4", folder / "drive_seg.mkv"
    specs = ((paths[0], "libx264", "yuv420p"), (paths[1], "ffv1", "bgr0"))
    containers = [av.open(str(p), "w") for p, _, _ in specs]
    streams = []
    for container, (_, codec, pix_fmt) in zip(containers, specs):
        stream = container.add_stream(codec, rate=RATE)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, pix_fmt
        streams.append(stream)
    for n in range(frames):
        source = np.stack([(xx + 4 * n) % 256, (yy + 2 * n) % 256, (xx + yy) % 256], axis=-1).astype(np.uint8)
        mask = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
        mask[HEIGHT // 2:] = 7  # road
        mask[200:400, (100 + 3 * n) % 900:(100 + 3 * n) % 900 + 300] = 26  # a car moving right
        mask[:150, : 200 + n] = 23  # sky
        for container, stream, picture in zip(containers, streams, (source, mask)):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")))
    for container, stream in zip(containers, streams):
        container.mux(stream.encode())
        container.close()
    return paths


def decode_floor(paths: tuple[Path, Path]) -> float:
    """Seconds to decode both videos front to back into RGB arrays."""
    start = time.perf_counter()
    for path in paths:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                frame.to_ndarray(format="rgb24")
    return time.perf_counter() - start


def encode_floor(sources: list[Path], out: Path) -> float:
    """Seconds to decode each source video to RGB arrays and encode them again as MP4 with the
    export's encoder (``encode_video``) at the source's rate: the pipeline without rendering."""
    start = time.perf_counter()
    for n, path in enumerate(sources):
        with av.open(str(path)) as container, open(out / f"pipeline{n}.mp4", "wb") as f:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            pictures = (frame.to_ndarray(format="rgb24") for frame in container.decode(stream))
            video_module.encode_video(f, pictures, Fraction(stream.average_rate))
    return time.perf_counter() - start


def export_all(archive: Path, out: Path, jobs: int) -> float:
    """Seconds for ``export --video`` (through the library) of every context, in a fresh set of readers."""
    video_module._readers.clear()
    shutil.rmtree(out, ignore_errors=True)
    with Archive(archive, readonly=True) as ar:
        v = ar.versions()[0]
        start = time.perf_counter()
        report = v.export(out, video=True, jobs=jobs)
        seconds = time.perf_counter() - start
    if report.errors or not list(out.glob("*.mp4")):
        raise SystemExit(f"export --video failed: {report}")
    return seconds


def render_all(archive: Path) -> tuple[float, int]:
    """Seconds to render every frame in timestamp order, in a fresh set of readers; frames rendered."""
    video_module._readers.clear()
    with Archive(archive, readonly=True) as ar:
        v = ar.versions()[0]
        frames = [v.get_frame(i) for i in v.ids("order by timestamp")]
        start = time.perf_counter()
        for frame in frames:
            render(frame, v)
        return time.perf_counter() - start, len(frames)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    maskstore = str(Path(sys.executable).parent / "maskstore")
    labels = {(7, 7, 7): ["road"], (26, 26, 26): ["car"], (23, 23, 23): ["sky"]}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        log(f"writing {args.frames} frames of {WIDTH}x{HEIGHT} video")
        paths = make_videos(folder, args.frames)
        second = folder / "second"
        second.mkdir()
        copies = shutil.copy(paths[0], second / "drive2.mp4"), shutil.copy(paths[1], second / "drive2_seg.mkv")
        archive, archive2 = folder / "drive.maskstore", folder / "two.maskstore"
        start = time.perf_counter()
        subprocess.run([maskstore, "ingest", str(archive), "-d", "drive", "-V", "v1", "--video", str(paths[0]),
                        "--mask-video", f"seg={paths[1]}"], check=True)
        ingest_seconds = time.perf_counter() - start
        for video, mask in (paths, copies):  # two contexts in one version: drive and drive2
            subprocess.run([maskstore, "ingest", str(archive2), "-d", "drive", "-V", "v1", "--video", str(video),
                            "--mask-video", f"seg={mask}"], check=True)
        for path in (archive, archive2):
            with Archive(path) as ar:
                ar.versions()[0].set_masks_labels(labels)
        rows = []
        for n in range(args.repeats):  # interleaved, so all see the same machine load
            log(f"repeat {n + 1} of {args.repeats}")
            floor = decode_floor(paths)
            seconds, count = render_all(archive)
            pipeline = encode_floor([paths[0]], folder)
            export1 = export_all(archive, folder / "export1", 1)
            pipeline2 = encode_floor([paths[0], Path(copies[0])], folder)
            export2_jobs1 = export_all(archive2, folder / "export2", 1)
            export2_jobs2 = export_all(archive2, folder / "export2", 2)
            rows.append((floor, seconds, count, pipeline, export1, pipeline2, export2_jobs1, export2_jobs2))
    best = [min(r[i] for r in rows) for i in range(len(rows[0]))]
    floor, seconds, count, pipeline, export1, pipeline2, export2_jobs1, export2_jobs2 = best
    count = rows[0][2]
    ratio = seconds / floor
    export_ratio = export1 / pipeline
    speed = pipeline / export1
    lines = [
        "# Video: render of consecutive frames vs the decode floor, export --video vs decode+encode", "",
        *machine_lines(), "",
        f"{count} frames of {WIDTH}x{HEIGHT}: H.264 source, FFV1 mask, ingested with `ingest --video "
        f"--mask-video` in {ingest_seconds:.1f} s (one demux of the source, one decode of the mask video). "
        f"Best of {args.repeats}, all rows interleaved in the same run.", "",
        "## Render", "",
        table(["what", "seconds", "frames/s", "vs floor"], [
            ["decode floor: both videos decoded to RGB arrays", f"{floor:.2f}", f"{count / floor:.1f}", "1.00"],
            ["maskstore.render of every frame, timestamp order", f"{seconds:.2f}", f"{count / seconds:.1f}",
             f"{ratio:.2f}"],
        ]), "",
        f"Goal render / floor <= 1.5: **{'met' if ratio <= 1.5 else 'not met'}** ({ratio:.2f}).", "",
        "## Export --video", "",
        "The pipeline decodes the source video to RGB arrays and encodes them with `encode_video` (the "
        "export's encoder settings) at the source rate: what an overlay export costs without rendering "
        "and without the mask video. Export (`version.export(out, video=True, jobs=N)`, what `maskstore export "
        "--video --jobs N` runs) decodes the source and the mask video, renders and encodes.", "",
        table(["what", "contexts", "seconds", "frames/s", "vs pipeline"], [
            ["decode+encode pipeline", 1, f"{pipeline:.2f}", f"{count / pipeline:.1f}", "1.00"],
            ["`export --video --jobs 1`", 1, f"{export1:.2f}", f"{count / export1:.1f}", f"{export_ratio:.2f}"],
            ["decode+encode pipeline, one video after the other", 2, f"{pipeline2:.2f}",
             f"{2 * count / pipeline2:.1f}", "1.00"],
            ["`export --video --jobs 1`", 2, f"{export2_jobs1:.2f}", f"{2 * count / export2_jobs1:.1f}",
             f"{export2_jobs1 / pipeline2:.2f}"],
            ["`export --video --jobs 2`", 2, f"{export2_jobs2:.2f}", f"{2 * count / export2_jobs2:.1f}",
             f"{export2_jobs2 / pipeline2:.2f}"],
        ]), "",
        f"Goal export >= 0.8 of the pipeline's speed (time <= 1.25x), `--jobs 1`, one context: "
        f"**{'met' if export_ratio <= 1.25 else 'not met'}** ({speed:.2f} of its speed, {export_ratio:.2f}x its time). "
        f"Two contexts: `--jobs 2` takes {export2_jobs2 / export2_jobs1:.2f}x the time of `--jobs 1` "
        f"(one context per task; the encoder and decoders already use threads, so two processes on "
        f"{os.cpu_count()} cores share them).",
        "", f"Command: `python benchmarks/video.py --frames {args.frames} --repeats {args.repeats}`",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    write_result("video", text)


if __name__ == "__main__":
    main()
