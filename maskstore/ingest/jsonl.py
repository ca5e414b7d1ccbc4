"""Frames from a JSON-lines file in the frame-dict shape (what ClearML's SDK and ``query --format
jsonl`` write), one frame per line:

    {"id": "a", "context_id": "car_1", "sources": [{"uri": "img.png", "masks": [{"uri": "mask.png"}]}]}

A line may also use ``SingleFrame``'s keywords, ``{"source": "img.png", "mask_source": "mask.png"}``
(or ``masks_source``) and no ``"sources"``; it is converted to that shape, as
``SingleFrame(**line).to_dict()`` would. (A line with ``"sources"`` is a frame dict, whose unknown
keys are kept as they are.)
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from ..errors import FrameError
from ..media import local_path, scheme_of
from ..model import EXAMPLE_FRAME_DICT, SingleFrame, uses_constructor_words

MAX_LINE_BYTES = 64 * 1024 * 1024


def _resolved(uri: Any, base: Path) -> Any:
    """Relative local paths are relative to the frames file, not to wherever ingest runs; URIs with a
    scheme (``file://``, ``https://``, ``s3://``) and non-strings stay as they are."""
    if not isinstance(uri, str) or scheme_of(uri) is not None:
        return uri
    path = local_path(uri)
    return str(base / path) if path is not None and not path.is_absolute() else uri


def _resolve_uris(frame: dict[str, Any], base: Path) -> None:
    for source in frame.get("sources") or []:
        if not isinstance(source, dict):
            continue
        for item in [source] + [m for m in source.get("masks") or [] if isinstance(m, dict)]:
            if "uri" in item:
                item["uri"] = _resolved(item["uri"], base)


def _from_constructor_words(line: dict[str, Any], base: Path, where: str) -> dict[str, Any]:
    """The frame dict of a line written with SingleFrame's keywords; a key SingleFrame does not
    take is refused with the frame-dict shape as an example."""
    kwargs = dict(line)
    for key in ("source", "mask_source"):
        if key in kwargs:
            kwargs[key] = _resolved(kwargs[key], base)
    masks = kwargs.get("masks_source")
    if isinstance(masks, dict):
        kwargs["masks_source"] = {mid: _resolved(uri, base) for mid, uri in masks.items()}
    elif isinstance(masks, list):
        kwargs["masks_source"] = [_resolved(uri, base) for uri in masks]
    rois = kwargs.pop("rois", None)  # dicts here; the frame dict takes them as they are
    try:
        frame = SingleFrame(**kwargs).to_dict()
    except TypeError as exc:
        raise FrameError(f"{where}: {str(exc).replace('__init__()', 'SingleFrame')}; or write the frame-dict "
                         f"shape: {EXAMPLE_FRAME_DICT}") from None
    except FrameError as exc:
        raise FrameError(f"{where}: {exc}") from None
    if rois is not None:
        frame["rois"] = rois
    return frame


def read_frames_jsonl(source: str | Path | IO[bytes]) -> Iterator[dict[str, Any]]:
    """Yield one frame dict per non-blank line of a file, or of a binary stream such as stdin (its
    relative paths are then relative to the working folder); a bad line raises FrameError naming
    its number."""
    if not isinstance(source, (str, Path)):
        yield from _frames(source, str(getattr(source, "name", "") or "<stdin>"), Path.cwd())
        return
    path = Path(source)
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise FrameError(f"cannot read frames file {path}: {exc.strerror or exc}") from None
    with handle:
        yield from _frames(handle, str(path), path.resolve().parent)


def _frames(handle: IO[bytes], name: str, base: Path) -> Iterator[dict[str, Any]]:
    # readline with a limit: a file without newlines is refused after MAX_LINE_BYTES, not read whole
    for number, raw in enumerate(iter(lambda: handle.readline(MAX_LINE_BYTES + 1), b""), start=1):
        if len(raw) > MAX_LINE_BYTES:
            raise FrameError(f"{name}:{number}: line is longer than {MAX_LINE_BYTES} bytes")
        if not raw.strip():
            continue
        try:
            frame = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise FrameError(f"{name}:{number}: not valid JSON ({exc})") from None
        if not isinstance(frame, dict):
            raise FrameError(f"{name}:{number}: expected a frame object {{...}}, got {type(frame).__name__}; "
                             f"a frame-dict line: {EXAMPLE_FRAME_DICT}")
        if uses_constructor_words(frame):
            frame = _from_constructor_words(frame, base, f"{name}:{number}")
        else:
            _resolve_uris(frame, base)
        yield frame
