"""``ingest --video``: one frame per video frame (or every Nth), masks from mask videos.

A frame's ``context_id`` is the video's file stem and its ``timestamp`` the frame's presentation time
in milliseconds (spec section 10); its id is ``<stem>_<frame number>``, stable across re-runs so a
second ingest updates the same frames. The source video is only demuxed (packet times, no decoding);
each mask video is decoded once, front to back, and its statistics travel in the frame dicts so the
archive never opens the videos again at ingest.
"""

from __future__ import annotations

import mimetypes
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from ..errors import FrameError, MaskError
from ..media import video_mask_statistics
from ..video import VideoReader, milliseconds, pyav


def mask_video_ids(specs: Sequence[str]) -> list[tuple[str, str]]:
    """``[ID=]path`` arguments as (mask id, path); unnamed ones get "00", "01", ... in order."""
    named: list[tuple[str, str]] = []
    unnamed = 0
    for spec in specs:
        mask_id, sep, path = spec.partition("=")
        if sep and mask_id and not Path(spec).exists():
            named.append((mask_id, path))
        else:
            named.append((f"{unnamed:02d}", spec))
            unnamed += 1
    ids = [mask_id for mask_id, _ in named]
    if len(set(ids)) != len(ids):
        raise FrameError(f"mask video ids must differ: {', '.join(ids)}")
    return named


def content_type(path: Path) -> str:
    guessed = mimetypes.guess_type(path.name)[0]
    return guessed if guessed and guessed.startswith("video/") else f"video/{path.suffix.lstrip('.').lower()}"


def presentation_times(path: Path) -> tuple[list[int], tuple[int, int]]:
    """Each frame's presentation time in ms, in presentation order, and the frame size, from the
    container's packets alone (no decoding)."""
    av = pyav()
    reader = VideoReader(path, str(path))
    try:
        stream = reader.stream
        pts = sorted(p.pts for p in reader.container.demux(stream) if p.pts is not None and p.size)
        size = (stream.codec_context.width, stream.codec_context.height)
    except av.FFmpegError as exc:
        raise MaskError(f"video {path} is damaged: {exc}") from None
    finally:
        reader.close()
    return [milliseconds(t, reader.time_base) for t in pts], size


def frames_from_video(video: str | Path, mask_videos: Sequence[tuple[str, str]] = (), every: int = 1
                      ) -> Iterator[dict[str, Any]]:
    """Frame dicts of every ``every``-th frame of ``video``, each with the masks of ``mask_videos``
    (id, path) at its timestamp and their statistics."""
    path = Path(video).absolute()
    if every < 1:
        raise FrameError(f"every must be 1 or more, not {every}")
    times, (width, height) = presentation_times(path)
    masks = [(mask_id, Path(p).absolute()) for mask_id, p in mask_videos]
    readers = [VideoReader(p, str(p)) for _, p in masks]
    try:
        for number in range(0, len(times), every):
            ms = times[number]
            mask_dicts = []
            for (mask_id, mask_path), reader in zip(masks, readers):
                picture = Image.fromarray(reader.frame_at(ms), "RGB")
                stats = video_mask_statistics(picture, str(mask_path))
                mask_dicts.append({"id": mask_id, "uri": str(mask_path), "content_type": content_type(mask_path),
                                   "timestamp": ms, **stats.fields()})
            yield {"id": f"{path.stem}_{number:06d}", "context_id": path.stem, "timestamp": ms,
                   "sources": [{"id": "0", "uri": str(path), "content_type": content_type(path), "timestamp": ms,
                                "width": width, "height": height, "masks": mask_dicts}]}
    finally:
        for reader in readers:
            reader.close()
