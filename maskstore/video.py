"""Video sources and masks through PyAV (spec section 10): which URIs are videos, the frame a
timestamp names, and sequential decoding for ingest.

A frame that points into a video names its position by ``timestamp`` in milliseconds; the picture
shown is the one whose presentation time is nearest (ties to the earlier one), compared exactly on
the stream's time base. Readers stay open per process and decode forward from where they are, so
rendering consecutive frames of one video never goes back to its start; a jump backwards or far ahead
seeks to the keyframe before the target first.
"""

from __future__ import annotations

import io
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from .errors import MaskError, MediaError

VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".mov", ".avi")
INSTALL_HINT = "pip install 'maskstore[video]'"
OPEN_READERS = 8  # videos kept open per process (each holds a decoder and its file)
FORWARD_SECONDS = 2  # a target further ahead than this seeks instead of decoding every frame between


def is_video(uri: str, content_type: str | None = None) -> bool:
    """A ``video/*`` content type, or a URI ending in a video suffix (spec section 10)."""
    if content_type:
        return content_type.lower().startswith("video/")
    return uri.lower().split("?", 1)[0].endswith(VIDEO_SUFFIXES)


def pyav() -> Any:
    """The ``av`` module, or a MediaError that says how to install it."""
    try:
        import av
    except ImportError:
        raise MediaError(f"reading video needs PyAV, which is not installed: {INSTALL_HINT}") from None
    return av


def milliseconds(pts: int, time_base: Fraction) -> int:
    """A presentation time in whole milliseconds, rounded half up (how ingest names a video frame)."""
    exact = pts * time_base * 1000
    return int((exact + Fraction(1, 2)) // 1)


class VideoReader:
    """One open video stream, decoding forward; ``frame_at`` gives the picture nearest a timestamp."""

    def __init__(self, source: str | Path | io.BytesIO, name: str) -> None:
        av = pyav()
        self.name = name
        try:
            self.container = av.open(source if isinstance(source, io.BytesIO) else str(source))
            self.stream = self.container.streams.video[0]
        except (av.FFmpegError, IndexError, ValueError, OSError) as exc:
            raise MaskError(f"video {name} is not a readable video: {_reason(exc)}") from None
        self.stream.thread_type = "AUTO"
        self.time_base: Fraction = self.stream.time_base or Fraction(1, 1000)
        self.lock = threading.Lock()
        self._frames: Iterator[Any] | None = None
        self._window: list[Any] = []  # the last two frames decoded, in presentation order

    def close(self) -> None:
        self.container.close()

    def _restart(self, target: Fraction) -> None:
        """Seek to the keyframe at or before ``target`` (in stream time-base units)."""
        self.container.seek(max(0, int(target)), stream=self.stream, backward=True, any_frame=False)
        self._frames = self._decode()
        self._window = []

    def _decode(self) -> Iterator[Any]:
        av = pyav()
        try:
            for frame in self.container.decode(self.stream):
                if frame.pts is not None:
                    yield frame
        except av.FFmpegError as exc:
            raise MaskError(f"video {self.name} is damaged: {_reason(exc)}") from None

    def _advance(self, target: Fraction) -> None:
        assert self._frames is not None
        while not self._window or self._window[-1].pts < target:
            frame = next(self._frames, None)
            if frame is None:
                return
            self._window = (self._window + [frame])[-2:]

    def frame_at(self, timestamp_ms: int) -> np.ndarray:
        """RGB uint8 (H, W, 3) of the frame whose presentation time is nearest ``timestamp_ms``."""
        target = Fraction(timestamp_ms, 1000) / self.time_base
        with self.lock:
            window = self._window
            ahead = Fraction(FORWARD_SECONDS) / self.time_base
            if self._frames is None or not window or target < window[0].pts or target > window[-1].pts + ahead:
                self._restart(target)
                self._advance(target)
                if self._window and self._window[0].pts > target and self._window[0].pts > self._first_pts():
                    self._restart(Fraction(0))  # the seek landed past the target: decode from the start
                    self._advance(target)
            else:
                self._advance(target)
            if not self._window:
                raise MaskError(f"video {self.name} has no frames")
            best = min(self._window, key=lambda f: (abs(f.pts - target), f.pts))
            return best.to_ndarray(format="rgb24")

    def _first_pts(self) -> int:
        start = self.stream.start_time
        return int(start) if start is not None else 0


def _reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


_readers: OrderedDict[tuple[int, str], VideoReader] = OrderedDict()
_readers_lock = threading.Lock()


def _open_source(uri: str, read_bytes: Any, local: Path | None) -> str | Path | io.BytesIO:
    """A local regular file is opened in place (videos may be large); anything else is read whole."""
    if local is not None:
        try:
            info = os.stat(local)
        except FileNotFoundError:
            raise MediaError(f"file not found: {local}") from None
        except OSError as exc:
            raise MediaError(f"cannot read {local}: {exc.strerror or exc}") from None
        if not os.path.isfile(local) or info.st_size == 0:
            raise MediaError(f"{local} is not a video file")
        return local
    return io.BytesIO(read_bytes(uri))


def reader(uri: str, read_bytes: Any, local: Path | None) -> VideoReader:
    """This process's open reader of a video, opened on first use (a few stay open, least recent
    closed first). A forked child opens its own: decoders do not survive a fork."""
    key = (os.getpid(), uri)
    with _readers_lock:
        found = _readers.get(key)
        if found is not None:
            _readers.move_to_end(key)
            return found
    opened = VideoReader(_open_source(uri, read_bytes, local), uri)
    with _readers_lock:
        _readers[key] = opened
        while len(_readers) > OPEN_READERS:
            (pid, _), old = _readers.popitem(last=False)
            if pid == os.getpid():
                old.close()
    return opened


def encode_video(file: Any, pictures: Iterator[np.ndarray], rate: Fraction) -> tuple[int, int]:
    """Write RGB pictures as an H.264 MP4 into ``file`` (a seekable binary file) at ``rate`` frames
    per second; (width, height). Odd sizes are padded by repeating the last row or column: H.264's
    4:2:0 sampling needs even ones."""
    av = pyav()
    container = av.open(file, "w", format="mp4")
    stream = None
    size = (0, 0)
    try:
        for picture in pictures:
            if stream is None:
                size = (picture.shape[1], picture.shape[0])
                stream = container.add_stream("libx264", rate=rate)
                stream.width, stream.height = size[0] + size[0] % 2, size[1] + size[1] % 2
                stream.pix_fmt = "yuv420p"
            elif (picture.shape[1], picture.shape[0]) != size:
                raise MaskError(f"frames of one video must share a size: {picture.shape[1]}x{picture.shape[0]} "
                                f"after {size[0]}x{size[1]}")
            even = np.pad(picture, ((0, size[1] % 2), (0, size[0] % 2), (0, 0)), mode="edge")
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(even), format="rgb24")))
        if stream is not None:
            container.mux(stream.encode())
    finally:
        container.close()
    return size


def size_of(file: Any) -> tuple[int, int] | None:
    """(width, height) of a complete, readable video file, else None."""
    av = pyav()
    try:
        with av.open(file) as container:
            stream = container.streams.video[0]
            if not stream.frames and stream.duration is None:
                return None
            return stream.codec_context.width, stream.codec_context.height
    except (av.FFmpegError, IndexError, ValueError, OSError):
        return None
