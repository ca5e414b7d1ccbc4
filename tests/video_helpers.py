"""Small videos made with PyAV for the video tests: a source whose colour changes every frame, and label
masks (lossless FFV1 or lossy H.264) whose road grows one column per frame."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

H, W, N, RATE = 48, 64, 30, 25  # 25 fps: frame n is at 40 n ms


def write_video(path: Path, pictures: list[np.ndarray], codec: str, pix_fmt: str, rate: int = RATE) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = W, H, pix_fmt
        for picture in pictures:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")))
        container.mux(stream.encode())
    return path


def source_picture(n: int) -> np.ndarray:
    picture = np.zeros((H, W, 3), np.uint8)
    picture[...] = (n * 8, 255 - n * 8, (n * 37) % 256)
    return picture


def mask_picture(n: int, road: int = 1, car: int = 2) -> np.ndarray:
    """Frame n: road in the first n + 2 columns, a car in a 5x5 corner from frame 10 on."""
    picture = np.zeros((H, W, 3), np.uint8)
    picture[:, : n + 2] = road
    if n >= 10:
        picture[:5, :5] = car
    return picture




def make_videos(folder: Path) -> dict[str, Path]:
    return {
        "clip": write_video(folder / "clip.mkv", [source_picture(n) for n in range(N)], "ffv1", "bgr0"),
        "seg": write_video(folder / "seg.mkv", [mask_picture(n) for n in range(N)], "ffv1", "bgr0"),
        "lossy": write_video(folder / "lossy.mp4", [mask_picture(n, 60, 200) for n in range(N)], "libx264", "yuv420p"),
    }
