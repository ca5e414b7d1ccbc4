"""msgpack encoding of every stored record, with the format version in front.

Each record is ``<format version byte><kind byte><msgpack body>``. Encoding and decoding of a kind
sit side by side so they cannot drift apart; decoding refuses a newer format instead of guessing.
"""

from __future__ import annotations

from typing import Any

import msgpack

from .errors import ArchiveError

FORMAT_NAME = "maskstore"
FORMAT_VERSION = 1

KIND_FORMAT = b"M"
KIND_VERSION = b"V"
KIND_FRAME = b"F"

# Untrusted archives: a record may not make msgpack allocate more than this, whatever its headers claim.
MAX_RECORD_BYTES = 256 * 1024 * 1024
_LIMITS = dict(max_str_len=64 * 1024 * 1024, max_bin_len=64 * 1024 * 1024,
               max_array_len=64 * 1024 * 1024, max_map_len=4 * 1024 * 1024, max_ext_len=0)


def newer_format_message(found: int) -> str:
    return (f"written by maskstore archive format {found}, but this maskstore reads formats up to "
            f"{FORMAT_VERSION}; upgrade maskstore (pip install -U maskstore) to open it")


def _pack(kind: bytes, body: Any) -> bytes:
    return bytes((FORMAT_VERSION,)) + kind + msgpack.packb(body, use_bin_type=True)


def _unpack(kind: bytes, data: bytes | memoryview, what: str) -> Any:
    data = bytes(data)
    if len(data) < 2:
        raise ArchiveError(f"{what} record is damaged: only {len(data)} bytes")
    if data[0] > FORMAT_VERSION:
        raise ArchiveError(f"{what} record is {newer_format_message(data[0])}")
    if data[1:2] != kind:
        raise ArchiveError(f"{what} record is damaged: kind {data[1:2]!r}, expected {kind!r}")
    if len(data) > MAX_RECORD_BYTES:
        raise ArchiveError(f"{what} record is larger than {MAX_RECORD_BYTES} bytes")
    try:
        return msgpack.unpackb(data[2:], raw=False, strict_map_key=False, **_LIMITS)
    except (ValueError, msgpack.UnpackException, TypeError) as exc:
        raise ArchiveError(f"{what} record is damaged: {exc}") from None


def encode_format() -> bytes:
    return _pack(KIND_FORMAT, {"name": FORMAT_NAME, "version": FORMAT_VERSION})


def decode_format(data: bytes) -> dict[str, Any]:
    """The archive's format marker; refuses other kinds of file and newer formats."""
    body = _unpack(KIND_FORMAT, data, "format")
    if not isinstance(body, dict) or body.get("name") != FORMAT_NAME:
        raise ArchiveError("not a maskstore archive (format marker missing)")
    if int(body.get("version", 0)) > FORMAT_VERSION:
        raise ArchiveError(f"archive is {newer_format_message(int(body['version']))}")
    return body


def encode_version(record: dict[str, Any]) -> bytes:
    return _pack(KIND_VERSION, record)


def decode_version(data: bytes) -> dict[str, Any]:
    body = _unpack(KIND_VERSION, data, "version")
    if not isinstance(body, dict):
        raise ArchiveError("version record is damaged: not a map")
    return body


def encode_frame(frame: dict[str, Any]) -> bytes:
    return _pack(KIND_FRAME, frame)


def decode_frame(data: bytes | memoryview) -> dict[str, Any]:
    body = _unpack(KIND_FRAME, data, "frame")
    if not isinstance(body, dict):
        raise ArchiveError("frame record is damaged: not a map")
    return body
