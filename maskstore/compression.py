"""zstd for frame records: dictionaries trained on an archive's own records, and per-thread codecs.

A frame record is a few hundred bytes of msgpack that mostly repeats its neighbours' keys, ids and
URIs; plain zstd cannot compress that, a dictionary trained on the archive's records cuts it about
three-fold and decompresses it in a few microseconds (FORMAT.md, "Compressed frame records").

A dictionary is known by its id, the first 8 bytes of its sha256, so one process-wide table serves
every archive a process opens: an id names the same bytes wherever it is found. Archives add the
dictionaries they hold when they open (``add_source``); a record naming an id not yet known (a
dictionary another process stored since) makes every open archive look again. zstd contexts are not
thread-safe, so each thread keeps its own, and a forked child (DataLoader workers) starts with none.
"""

from __future__ import annotations

import hashlib
import os
import threading
import weakref
from collections.abc import Iterable
from typing import Any

import zstandard

from .errors import ArchiveError

ID_BYTES = 8
LEVEL = 3  # level 9 saves 5 % more and compresses 5x slower; decompression costs the same
DICTIONARY_BYTES = 16 * 1024
TRAIN_MIN_RECORDS = 1024  # fewer records train a dictionary that does not pay for its own bytes
TRAIN_MAX_RECORDS = 20_000  # more samples barely change the dictionary and slow training down
_FORMAT = zstandard.FORMAT_ZSTD1_MAGICLESS  # the 4-byte magic would be 4 % of a compressed record
_frame_parameters = zstandard.get_frame_parameters

_dictionaries: dict[bytes, zstandard.ZstdCompressionDict] = {}
_sources: weakref.WeakSet[Any] = weakref.WeakSet()  # objects with load_dictionaries(): open archives
_lock = threading.Lock()


def dictionary_id(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()[:ID_BYTES]


def register(data: bytes, expected_id: bytes | None = None) -> bytes:
    """Make a dictionary known to this process; its id. ArchiveError when ``data`` is not the
    dictionary ``expected_id`` names (a damaged meta entry)."""
    found = dictionary_id(data)
    if expected_id is not None and found != expected_id:
        raise ArchiveError(f"compression dictionary {expected_id.hex()} is damaged: its bytes hash to {found.hex()}")
    if found not in _dictionaries:
        try:
            loaded = zstandard.ZstdCompressionDict(data)
            loaded.precompute_compress(level=LEVEL)
        except zstandard.ZstdError as exc:
            raise ArchiveError(f"compression dictionary {found.hex()} is damaged: {exc}") from None
        with _lock:
            _dictionaries.setdefault(found, loaded)
    return found


def add_source(source: Any) -> None:
    """``source.load_dictionaries()`` registers what it holds; called again when an id is unknown."""
    _sources.add(source)


def remove_source(source: Any) -> None:
    _sources.discard(source)


def _dictionary(dictionary: bytes, what: str) -> zstandard.ZstdCompressionDict:
    found = _dictionaries.get(dictionary)
    if found is None:
        for source in list(_sources):
            source.load_dictionaries()
        found = _dictionaries.get(dictionary)
    if found is None:
        raise ArchiveError(f"{what} record is compressed with dictionary {dictionary.hex()}, which the archive "
                           "does not hold; the archive is damaged (restore it from a copy)")
    return found


class _Codecs(threading.local):
    """This thread's zstd contexts, by dictionary id (a forked child starts with none)."""

    def __init__(self) -> None:
        self.compressors: dict[bytes, zstandard.ZstdCompressor] = {}
        self.decompressors: dict[bytes, zstandard.ZstdDecompressor] = {}


_codecs = _Codecs()


def compressor(dictionary: bytes) -> zstandard.ZstdCompressor:
    """This thread's compressor for a known dictionary: content size and checksum in every frame,
    the dictionary's id left out (the record names it)."""
    found = _codecs.compressors.get(dictionary)
    if found is None:
        params = zstandard.ZstdCompressionParameters.from_level(
            LEVEL, format=_FORMAT, write_content_size=True, write_checksum=True, write_dict_id=False)
        found = _codecs.compressors[dictionary] = zstandard.ZstdCompressor(
            dict_data=_dictionary(dictionary, "a new"), compression_params=params)
    return found


def decompress(dictionary: bytes, frame: bytes, max_bytes: int, what: str) -> bytes:
    """One zstd frame, refused (ArchiveError naming ``what``) unless it declares a content size of
    at most ``max_bytes`` and decodes to exactly that with a matching checksum and nothing after it.
    Every frame record a query streams comes through here: kept to one dict lookup and two calls."""
    found = _codecs.decompressors.get(dictionary)
    if found is None:
        found = _codecs.decompressors[dictionary] = zstandard.ZstdDecompressor(
            dict_data=_dictionary(dictionary, what), format=_FORMAT)
    try:
        size = _frame_parameters(frame, format=_FORMAT).content_size
        if size > max_bytes:  # CONTENTSIZE_UNKNOWN is 2**64 - 1: refused here too
            raise ArchiveError(f"{what} record is damaged: its compressed body declares "
                               f"{'no' if size == zstandard.CONTENTSIZE_UNKNOWN else size} bytes "
                               f"(at most {max_bytes})")
        return found.decompress(frame, allow_extra_data=False)
    except zstandard.ZstdError as exc:
        raise ArchiveError(f"{what} record is damaged: its compressed body does not decode ({exc})") from None


def compress_plain(data: bytes) -> bytes:
    """One zstd frame of ``data`` without a dictionary (columns whose own bytes repeat: a chunk's ids),
    content size and checksum included."""
    found = _codecs.compressors.get(b"")
    if found is None:
        found = _codecs.compressors[b""] = zstandard.ZstdCompressor(level=LEVEL, write_content_size=True,
                                                                    write_checksum=True)
    return found.compress(data)


def decompress_plain(frame: bytes, max_bytes: int) -> bytes:
    """What ``compress_plain`` made; ValueError unless the frame declares at most ``max_bytes``,
    decodes to exactly that with a matching checksum and has nothing after it (callers name the value)."""
    found = _codecs.decompressors.get(b"")
    if found is None:
        found = _codecs.decompressors[b""] = zstandard.ZstdDecompressor()
    try:
        size = zstandard.get_frame_parameters(frame).content_size
        if size > max_bytes:
            raise ValueError(f"its zstd frame declares {size} bytes, more than {max_bytes}")
        return found.decompress(frame, allow_extra_data=False)
    except zstandard.ZstdError as exc:
        raise ValueError(f"its zstd frame does not decode ({exc})") from None


def train(samples: Iterable[bytes]) -> bytes | None:
    """A dictionary trained on ``samples`` (frame records), or None when they are too few or too alike
    for zstd to train one."""
    samples = list(samples)
    if len(samples) < TRAIN_MIN_RECORDS:
        return None
    size = min(DICTIONARY_BYTES, sum(map(len, samples)) // 20)
    try:
        return zstandard.train_dictionary(size, samples, level=LEVEL).as_bytes()
    except zstandard.ZstdError:
        return None


def sample(items: list[bytes], limit: int = TRAIN_MAX_RECORDS) -> list[bytes]:
    """At most ``limit`` of ``items``, spread evenly: what training sees of a large batch."""
    step = max(1, -(-len(items) // limit))
    return items[::step]


def _forget_codecs() -> None:
    global _codecs
    _codecs = _Codecs()


os.register_at_fork(after_in_child=_forget_codecs)
