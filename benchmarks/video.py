"""Does rendering the frames of a video cost little more than decoding the video?

Question: for 300 consecutive 1280x720 frames of an H.264 source video with a lossless (FFV1) mask
video, ingested with ``maskstore ingest --video --mask-video``, how does rendering every frame in
timestamp order with ``maskstore.render`` compare with the decode-only floor, a sequential PyAV decode
of both videos to RGB arrays (goal: render / floor <= 1.5)? Readers decode forward, so rendering frame
n+1 after frame n decodes one more frame of each video, never from the start.

Run: ``python benchmarks/video.py [--frames 300] [--repeats 3]``; prints a markdown report and writes
it to ``benchmarks/results/video.md``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
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
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        log(f"writing {args.frames} frames of {WIDTH}x{HEIGHT} video")
        paths = make_videos(folder, args.frames)
        archive = folder / "drive.maskstore"
        start = time.perf_counter()
        subprocess.run([str(Path(sys.executable).parent / "maskstore"), "ingest", str(archive), "-d", "drive",
                        "-V", "v1", "--video", str(paths[0]), "--mask-video", f"seg={paths[1]}"], check=True)
        ingest_seconds = time.perf_counter() - start
        with Archive(archive) as ar:
            ar.versions()[0].set_masks_labels({(7, 7, 7): ["road"], (26, 26, 26): ["car"], (23, 23, 23): ["sky"]})
        rows = []
        for _ in range(args.repeats):  # interleaved, so both see the same machine load
            floor = decode_floor(paths)
            seconds, count = render_all(archive)
            rows.append((floor, seconds, count))
    floor = min(r[0] for r in rows)
    seconds = min(r[1] for r in rows)
    count = rows[0][2]
    ratio = seconds / floor
    lines = [
        "# Video: render of consecutive frames vs the decode floor", "",
        *machine_lines(), "",
        f"{count} frames of {WIDTH}x{HEIGHT}: H.264 source, FFV1 mask, ingested with `ingest --video "
        f"--mask-video` in {ingest_seconds:.1f} s (one demux of the source, one decode of the mask video). "
        f"Best of {args.repeats}, floor and render interleaved in the same run.", "",
        table(["what", "seconds", "frames/s", "vs floor"], [
            ["decode floor: both videos decoded to RGB arrays", f"{floor:.2f}", f"{count / floor:.1f}", "1.00"],
            ["maskstore.render of every frame, timestamp order", f"{seconds:.2f}", f"{count / seconds:.1f}",
             f"{ratio:.2f}"],
        ]), "",
        f"Goal render / floor <= 1.5: **{'met' if ratio <= 1.5 else 'not met'}** ({ratio:.2f}).",
        "", f"Command: `python benchmarks/video.py --frames {args.frames} --repeats {args.repeats}`",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    write_result("video", text)


if __name__ == "__main__":
    main()
