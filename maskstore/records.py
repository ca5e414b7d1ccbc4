"""msgpack encoding of every stored record, with the format version in front.

Each record is ``<format version byte><kind byte><msgpack body>``. Encoding and decoding of a kind
sit side by side so they cannot drift apart; decoding refuses a newer format instead of guessing.
A compressed frame record (kind ``Z``, format 2) wraps a plain one (kind ``F``) in zstd with a
dictionary of the archive (``compression``); ``decode_frame`` reads both, so archives of 0.1.0 read
as they are.
"""

from __future__ import annotations

from typing import Any

import msgpack

from . import compression
from ._accel import MAX_FRAME_PIXELS, frame_ok, frame_problem  # compiled, or its pure-Python twin
from .errors import ArchiveError

FORMAT_NAME = "maskstore"
FORMAT_VERSION = 2  # the newest format this release reads
PLAIN_FORMAT = 1  # byte 0 of the record kinds format 1 defined (M, V, F): 0.1.0 reads them
ZSTD_FORMAT = 2  # byte 0 of a compressed frame record and of a dictionary; the format of archives holding them
ZSTD_FEATURE = "zstd-records"

KIND_FORMAT = b"M"
KIND_VERSION = b"V"
KIND_FRAME = b"F"
KIND_FRAME_ZSTD = b"Z"
KIND_DICTIONARY = b"D"
FRAME_HEAD = bytes((PLAIN_FORMAT,)) + KIND_FRAME  # what every plain frame record starts with
ZSTD_HEAD = bytes((ZSTD_FORMAT,)) + KIND_FRAME_ZSTD
DICTIONARY_HEAD = bytes((ZSTD_FORMAT,)) + KIND_DICTIONARY

MAX_RECORD_BYTES = 256 * 1024 * 1024


def newer_format_message(found: int) -> str:
    return (f"written by maskstore archive format {found}, but this maskstore reads formats up to "
            f"{FORMAT_VERSION}; upgrade maskstore (pip install -U maskstore) to open it")


def _pack(kind: bytes, body: Any) -> bytes:
    return bytes((PLAIN_FORMAT,)) + kind + msgpack.packb(body, use_bin_type=True)


def _unpack(kind: bytes, data: bytes | memoryview | None, what: str) -> Any:
    if data is None:
        raise ArchiveError(f"{what} record is missing (an index points at it); run maskstore check --repair")
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
    # one byte), so a few bytes claiming gigabytes allocate nothing. Records hold no bytes (writers pack
    # str as str), and map keys must be text: what JSON export and the meta walk rely on.
    n = len(body)
    try:
        value = msgpack.unpackb(body, raw=False, strict_map_key=True, max_str_len=n, max_bin_len=0,
                                max_array_len=n, max_map_len=n // 2, max_ext_len=0)
    except (ValueError, msgpack.UnpackException, TypeError) as exc:
        raise ArchiveError(f"{what} record is damaged: {exc or type(exc).__name__}") from None
    if _maybe_deep_or_binary(body) and not _plain(value):
        raise ArchiveError(f"{what} record is damaged: nested more than {MAX_DEPTH} levels, or holds bytes")
    return value


MAX_DEPTH = 100
"""Deepest nesting a record may have: the JSON export and the meta walks recurse, so a record nested
1,000 deep (msgpack allows 1,024) would be a RecursionError far from here."""
# Bytes that can start a map or an array. A record nested MAX_DEPTH deep holds at least that many of
# them, and an (empty) bytes value starts with 0xc4 0x00, so records without either skip the walk.
_CONTAINER_BYTES = bytes(1 if 0x80 <= b <= 0x9F or 0xDC <= b <= 0xDF else 0 for b in range(256))


def _maybe_deep_or_binary(body: bytes) -> bool:
    return b"\xc4\x00" in body or body.translate(_CONTAINER_BYTES).count(1) >= MAX_DEPTH


def _plain(value: Any) -> bool:
    """No bytes anywhere, text map keys only, at most MAX_DEPTH levels (iterative: no recursion)."""
    stack = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH or type(node) is bytes:
            return False
        if type(node) is dict:
            if not all(type(k) is str for k in node):
                return False
            stack += ((v, depth + 1) for v in node.values() if type(v) in _NESTED)
        elif type(node) is list:
            stack += ((v, depth + 1) for v in node if type(v) in _NESTED)
    return True


_NESTED = (dict, list, bytes)


COLUMN_FIELDS = "column-fields"
"""Required feature: each field of a scan-column chunk is its own ``columns`` entry (FORMAT.md)."""
PACKED_POSTINGS = "packed-postings"
"""Required feature: the ``ix_*`` sub-databases hold packed posting blocks, not dupsort entries (FORMAT.md)."""
FRAME_GROUPS = "frame-groups"
"""Required feature: the ``frames`` sub-database holds the records of 16 consecutive seqs per entry,
compressed together (FORMAT.md, "Frame groups")."""
COLUMN_ZONES = "column-zones"
"""Required feature: writers keep each version's zone maps of its scan columns (FORMAT.md, "Zone
maps"), which readers trust to skip chunks: a writer that stored chunks without them would make
queries miss frames."""
FEATURES_FORMAT = 2
"""0.1.0 reads no feature lists, only the format number: an archive listing a required feature is at
least format 2, which 0.1.0 refuses as newer."""
KNOWN_FEATURES: frozenset[str] = frozenset({ZSTD_FEATURE, COLUMN_FIELDS, PACKED_POSTINGS, FRAME_GROUPS,
                                            COLUMN_ZONES})
"""Format features this release implements (FORMAT.md, "Compatibility"): an archive whose format
record lists a required feature outside this set is refused; unknown optional features are ignored."""
FEATURE_LISTS = ("required_features", "optional_features")


def encode_format(version: int = PLAIN_FORMAT, required: tuple[str, ...] = (),
                  optional: tuple[str, ...] = ()) -> bytes:
    """The format record; empty feature lists are left out, so it stays byte for byte what 0.1.0 wrote."""
    body: dict[str, Any] = {"name": FORMAT_NAME, "version": version}
    for name, features in zip(FEATURE_LISTS, (required, optional)):
        if features:
            body[name] = sorted(set(features))
    return _pack(KIND_FORMAT, body)


def decode_format(data: bytes) -> dict[str, Any]:
    """The archive's format record, with both feature lists filled in (absent means none); refuses
    other kinds of file, newer formats and required features this release does not implement."""
    body = _unpack(KIND_FORMAT, data, "format")
    if not isinstance(body, dict) or body.get("name") != FORMAT_NAME:
        raise ArchiveError("not a maskstore archive (format marker missing)")
    version = body.get("version")
    if type(version) is not int or version < 1:
        raise ArchiveError(f"format record is damaged: version {str(version)[:40]} is not a positive integer")
    if version > FORMAT_VERSION:
        raise ArchiveError(f"archive is {newer_format_message(version)}")
    for name in FEATURE_LISTS:
        features = body.setdefault(name, [])
        if type(features) is not list or not all(type(f) is str for f in features):
            raise ArchiveError(f"format record is damaged: {name} is {str(features)[:60]}, not a list of names")
    if unknown := sorted(set(body["required_features"]) - KNOWN_FEATURES):
        raise ArchiveError(f"archive needs format features this maskstore does not implement: {', '.join(unknown)}; "
                           "upgrade maskstore (pip install -U maskstore) to open it")
    return body


def encode_version(record: dict[str, Any]) -> bytes:
    return _pack(KIND_VERSION, record)


_VERSION_FIELDS = {"id": int, "dataset": str, "name": str, "state": str, "mask_labels": list, "label_colors": dict,
                   "meta_types": dict, "next_seq": int, "count": int, "generation": int}
META_TYPES = frozenset({"str", "int", "float", "bool", "list", "dict"})
_U64_MAX = 2**64 - 1


def _rgb_ok(value: Any) -> bool:
    return type(value) is list and len(value) == 3 and all(type(c) is int and 0 <= c <= 255 for c in value)


def _version_problem(body: Any) -> str | None:
    """The first field of a version record that readers could not use, or None."""
    if type(body) is not dict:
        return "not a map"
    for name, kind in _VERSION_FIELDS.items():
        if type(body.get(name)) is not kind:
            return f"field {name!r} is missing or not {kind.__name__}"
    for name in ("id", "next_seq", "count", "generation"):
        if not 0 <= body[name] <= _U64_MAX:
            return f"field {name!r} is {body[name]}, outside 0..2**64-1"
    tolerance = body.get("mask_tolerance", 0)
    if type(tolerance) is not int or not 0 <= tolerance <= 255:
        return f"mask_tolerance {str(tolerance)[:20]} is not an integer 0..255"
    parent = body.get("parent")
    if parent is not None and (type(parent) is not int or not 0 <= parent <= _U64_MAX):
        return f"parent {parent!r} is not a version id"
    for entry in body["mask_labels"]:
        if not (type(entry) is dict and _rgb_ok(entry.get("value")) and type(entry.get("labels")) is list
                and all(type(n) is str for n in entry["labels"])):
            return f"mask_labels entry {str(entry)[:60]} is not {{value: [r, g, b], labels: [text]}}"
    for name, color in body["label_colors"].items():
        if not _rgb_ok(color):
            return f"label_colors[{name!r}] is {str(color)[:40]}, not [r, g, b]"
    for path, kind in body["meta_types"].items():
        if type(kind) is not str or kind not in META_TYPES:
            return f"meta_types[{path!r}] is {str(kind)[:40]}, not a meta type"
    return None


def decode_version(data: bytes | memoryview | None) -> dict[str, Any]:
    body = _unpack(KIND_VERSION, data, "version")
    problem = _version_problem(body)
    if problem is not None:
        raise ArchiveError(f"version record is damaged: {problem}")
    return body


def encode_frame(frame: dict[str, Any]) -> bytes:
    return encode_frames([frame])[0]


def encode_frames(frames: list[dict[str, Any]]) -> list[bytes]:
    """Frame records of a batch, through one packer: making a packer per record costs a quarter of
    the packing."""
    pack = msgpack.Packer(use_bin_type=True).pack
    return [FRAME_HEAD + pack(frame) for frame in frames]


def compress_frames(plain: list[bytes], dictionary: bytes) -> list[bytes]:
    """Plain frame records as compressed ones (kind ``Z``) with a dictionary this process knows."""
    head = ZSTD_HEAD + dictionary
    compress = compression.compressor(dictionary).compress
    return [head + compress(record) for record in plain]


ZSTD_BODY = len(ZSTD_HEAD) + compression.ID_BYTES  # where a compressed record's zstd frame starts


def plain_frame(data: bytes | memoryview | None, what: str = "frame") -> bytes | memoryview | None:
    """A frame record as the plain one (kind ``F``) it holds: decompressed when compressed, else as
    it is (checked by ``decode_frame``)."""
    if data is None or data[1:2] != KIND_FRAME_ZSTD:
        return data
    if data[0] > FORMAT_VERSION:
        raise ArchiveError(f"{what} record is {newer_format_message(data[0])}")
    if len(data) <= ZSTD_BODY:
        raise ArchiveError(f"{what} record is damaged: only {len(data)} bytes")
    return compression.decompress(bytes(data[len(ZSTD_HEAD):ZSTD_BODY]), bytes(data[ZSTD_BODY:]),
                                  MAX_RECORD_BYTES, what)


def encode_dictionary(data: bytes) -> bytes:
    return DICTIONARY_HEAD + data


def decode_dictionary(key_id: bytes, data: bytes | memoryview) -> bytes:
    """A dictionary entry's zstd dictionary bytes; ArchiveError unless it is one whose id is ``key_id``."""
    data = bytes(data)
    if data[:2] != DICTIONARY_HEAD:
        raise ArchiveError(f"compression dictionary {key_id.hex()} is damaged: it starts {data[:2]!r}, "
                           f"not {DICTIONARY_HEAD!r}")
    body = data[2:]
    compression.register(body, key_id)
    return body


def decode_frame(data: bytes | memoryview | None, what: str = "frame") -> dict[str, Any]:
    """A frame record, plain or compressed; ``what`` names it in errors (e.g. "frame seq 12")."""
    body = _unpack(KIND_FRAME, plain_frame(data, what), what)
    if not frame_ok(body):  # the walk that names the field runs only now, on the refused record
        raise ArchiveError(f"{what} record is damaged: {frame_problem(body)}")
    return body
