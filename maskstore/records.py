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
FRAME_HEAD = bytes((FORMAT_VERSION,)) + KIND_FRAME  # what every frame record starts with

MAX_RECORD_BYTES = 256 * 1024 * 1024


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
    body = data[2:]
    # Untrusted archives: no declared length may exceed the record itself (every item takes at least
    # one byte), so a few bytes claiming gigabytes allocate nothing.
    n = len(body)
    try:
        return msgpack.unpackb(body, raw=False, strict_map_key=False, max_str_len=n, max_bin_len=n,
                               max_array_len=n, max_map_len=n // 2, max_ext_len=0)
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


_VERSION_FIELDS = {"id": int, "dataset": str, "name": str, "state": str, "mask_labels": list, "label_colors": dict,
                   "meta_types": dict, "next_seq": int, "count": int, "generation": int}


def decode_version(data: bytes) -> dict[str, Any]:
    body = _unpack(KIND_VERSION, data, "version")
    if not isinstance(body, dict) or not all(type(body.get(k)) is t for k, t in _VERSION_FIELDS.items()):
        raise ArchiveError("version record is damaged: fields missing or of the wrong type")
    return body


def encode_frame(frame: dict[str, Any]) -> bytes:
    return encode_frames([frame])[0]


def encode_frames(frames: list[dict[str, Any]]) -> list[bytes]:
    """Frame records of a batch, through one packer: making a packer per record costs a quarter of
    the packing."""
    pack = msgpack.Packer(use_bin_type=True).pack
    return [FRAME_HEAD + pack(frame) for frame in frames]


def _values_ok(values: Any) -> bool:
    if values is None:
        return True
    try:
        bytes([c for v in values for c in v[:3]])  # C-level: every channel an int in 0..255
    except (TypeError, ValueError):
        return False
    return all(type(v) is list and len(v) == 4 and type(v[3]) is int for v in values)


def _frame_ok(body: Any) -> bool:
    """The shape every reader relies on; a record that lacks it is damaged, not a crash."""
    return (type(body) is dict and type(body.get("id")) is str and type(body.get("context_id")) is str
            and type(body.get("timestamp")) is int and -(2**63) <= body["timestamp"] < 2**63
            and type(body.get("meta")) is dict and type(body.get("rois")) is list
            and type(body.get("sources")) is list
            and all(type(r) is dict and type(r.get("label")) is list for r in body["rois"])
            and all(type(s) is dict and type(s.get("id")) is str and type(s.get("uri")) is str
                    and type(s.get("masks")) is list
                    and all(type(m) is dict and type(m.get("id")) is str and type(m.get("uri")) is str
                            and _values_ok(m.get("values")) for m in s["masks"])
                    for s in body["sources"]))


def decode_frame(data: bytes | memoryview) -> dict[str, Any]:
    body = _unpack(KIND_FRAME, data, "frame")
    if not _frame_ok(body):
        raise ArchiveError("frame record is damaged: fields missing or of the wrong type")
    return body
