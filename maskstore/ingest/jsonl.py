"""Frames from a JSON-lines file in the frame-dict shape (what ClearML's SDK and ``query --format
jsonl`` write)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import FrameError
from ..media import local_path

MAX_LINE_BYTES = 64 * 1024 * 1024


def _resolve_uris(frame: dict[str, Any], base: Path) -> None:
    """Relative local paths are relative to the frames file, not to wherever ingest runs."""
    for source in frame.get("sources") or []:
        if not isinstance(source, dict):
            continue
        for item in [source] + [m for m in source.get("masks") or [] if isinstance(m, dict)]:
            uri = item.get("uri")
            path = local_path(uri) if isinstance(uri, str) else None
            if path is not None and not uri.startswith("file://") and not path.is_absolute():
                item["uri"] = str(base / path)


def read_frames_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    """Yield one frame dict per non-blank line; a bad line raises FrameError naming its number."""
    path = Path(path)
    base = path.resolve().parent
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise FrameError(f"cannot read frames file {path}: {exc.strerror or exc}") from None
    with handle:
        # readline with a limit: a file without newlines is refused after MAX_LINE_BYTES, not read whole
        for number, raw in enumerate(iter(lambda: handle.readline(MAX_LINE_BYTES + 1), b""), start=1):
            if len(raw) > MAX_LINE_BYTES:
                raise FrameError(f"{path}:{number}: line is longer than {MAX_LINE_BYTES} bytes")
            if not raw.strip():
                continue
            try:
                frame = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise FrameError(f"{path}:{number}: not valid JSON ({exc})") from None
            if not isinstance(frame, dict):
                raise FrameError(f"{path}:{number}: expected a frame object {{...}}, got {type(frame).__name__}")
            _resolve_uris(frame, base)
            yield frame
