"""The key vocabulary of an archive: sub-databases, their flags, how keys are packed (FORMAT.md).

One LMDB environment, one file, named sub-databases; keys big-endian so they sort numerically:

=============  ===================================  ==========================================
sub-db         key                                  value
=============  ===================================  ==========================================
meta           b"format", b"next_version"           format record / counter
               b"zstd_dictionary" + id (8)          a frame-record compression dictionary
               b"zstd_current"                      id (8) of the dictionary writers compress with
versions       version id (8)                       version record
frames         version id (8) + seq (8)             frame record (the normalized frame dict)
frame_ids      version id (8) + frame id (utf-8)    seq (8)
ix_context     version id (8) + len (2) + context id    block: the key's seqs of one chunk (postings)
               + chunk (8)
ix_value       version id (8) + 3 (2) + r g b (3)   block
               + chunk (8)
ix_source      version id (8) + len (2) + source id     block
               + chunk (8)
ix_mask        version id (8) + len (2) + mask id       block
               + chunk (8)
ix_roi         version id (8) + len (2) + ROI label     block
               + chunk (8)
dirty          version id (8) + chunk (8)           empty: column chunks to rebuild (older writers)
columns        version id (8) + chunk (8) + field   one field of the scan columns of 4096 seqs (query.columns)
blobs          sha256 (32)                          embedded image or mask bytes
=============  ===================================  ==========================================

Archives from before the ``packed-postings`` feature hold one dupsort entry ``key -> seq`` per posting
in the ``ix_*`` sub-databases instead (``postings`` reads both; a writable open converts them).

Every module that reads or writes keys (the archive façade, the query planner and its columns,
check and repair, summaries, Dask) takes them from here, so this module and FORMAT.md are the one
place the layout is spelt out.
"""

from __future__ import annotations

import bisect
import hashlib
import struct
from collections.abc import Iterator, Sequence
from typing import Any

import lmdb

from . import compression, records
from .errors import ArchiveError

U64 = struct.Struct(">Q")
INDEX_DBS = ("ix_context", "ix_value", "ix_source", "ix_mask", "ix_roi")
VERSION_DBS = ("frames", "frame_ids", "dirty", "columns") + INDEX_DBS  # keys start with the version id
SUB_DATABASES = ("meta", "versions", "blobs") + VERSION_DBS
FORMAT_KEY = b"format"  # in meta: the format record
NEXT_VERSION_KEY = b"next_version"  # in meta: the next version id, u64
DICTIONARY_PREFIX = b"zstd_dictionary"  # in meta, + dictionary id: a compression dictionary (records)
CURRENT_DICTIONARY_KEY = b"zstd_current"  # in meta: id of the dictionary new frame records use
MAX_KEY_TEXT = 400  # LMDB keys stop at 511 bytes; longer texts are indexed by their hash
HASHED_KEY_MARK = b"\xff"  # starts a hashed text key; 0xff never starts UTF-8
CHUNK_BITS = 12  # scan columns are rebuilt in chunks of 4096 frame seqs


def u64(n: int) -> bytes:
    """A version id, seq or chunk number as a key part: 8 bytes big-endian."""
    return U64.pack(n)


def chunk_of(seq: int) -> int:
    """The scan-column chunk (``dirty`` and ``columns`` key) that holds frame ``seq``."""
    return seq >> CHUNK_BITS


def text_key(text: str) -> bytes:
    """Index key bytes of a string; 0xff never starts UTF-8, so hashed keys cannot collide with text."""
    raw = text.encode("utf-8")
    return raw if len(raw) <= MAX_KEY_TEXT else HASHED_KEY_MARK + hashlib.sha256(raw).digest()


def value_key(rgb: Sequence[int]) -> bytes:
    """Index key of a mask value: its r, g, b bytes (a ``[r, g, b, count]`` entry works too)."""
    return bytes(rgb[:3])


def entries(txn: lmdb.Transaction, db: Any, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) of every entry whose key starts with ``prefix``, in key order, duplicates included
    (MDB_NEXT visits each): how every per-version scan walks its sub-database."""
    cursor = txn.cursor(db=db)
    if cursor.set_range(prefix):
        for key, value in cursor:
            if not key.startswith(prefix):
                return
            yield key, value


def id_entry_seq(raw: bytes | memoryview, frame_id: str) -> int:
    """The seq a ``frame_ids`` value holds; ArchiveError naming the frame when it is not 8 bytes."""
    if len(raw) != 8:
        raise ArchiveError(f"the id table entry of frame {frame_id!r} is damaged ({len(raw)} bytes; a seq "
                           "takes 8); run maskstore check --repair")
    return U64.unpack(raw)[0]


def put_sorted(txn: lmdb.Transaction, db: Any, items: Sequence[tuple[bytes, bytes]]) -> None:
    """Write (key, value) pairs sorted by key. Those after the sub-database's last key are appended
    (``MDB_APPEND``): LMDB then starts a new page instead of splitting the last one in half, so an
    ingest leaves its pages full (frame groups at 55 % of a page without it)."""
    cursor = txn.cursor(db=db)
    last = bytes(cursor.key()) if cursor.last() else None
    split = 0 if last is None else bisect.bisect_right([key for key, _ in items], last)
    if split:
        cursor.putmulti(items[:split])
    if split < len(items):
        cursor.putmulti(items[split:], append=True)


def delete_prefix(txn: lmdb.Transaction, db: Any, prefix: bytes) -> None:
    """Delete every entry whose key starts with ``prefix`` (a version's, or one of its index keys')."""
    cursor = txn.cursor(db=db)
    while cursor.set_range(prefix) and cursor.key().startswith(prefix):
        cursor.delete(dupdata=True)


def load_dictionaries(txn: lmdb.Transaction, meta_db: Any) -> list[bytes]:
    """Register the archive's compression dictionaries with this process (``compression``); their
    ids. A damaged one is skipped: records naming it fail to decode, and ``maskstore check`` says why."""
    ids = []
    for key, value in entries(txn, meta_db, DICTIONARY_PREFIX):
        try:
            records.decode_dictionary(bytes(key[len(DICTIONARY_PREFIX):]), value)
        except ArchiveError:
            continue
        ids.append(bytes(key[len(DICTIONARY_PREFIX):]))
    return ids


def install_dictionary(txn: lmdb.Transaction, meta_db: Any, data: bytes) -> bytes:
    """Store a dictionary and make it the one new frame records use; the format record gains the
    feature that makes older releases refuse the archive (FORMAT.md, "Compressed frame records").
    Its id."""
    dictionary = compression.register(data)
    txn.put(DICTIONARY_PREFIX + dictionary, records.encode_dictionary(data), db=meta_db)
    txn.put(CURRENT_DICTIONARY_KEY, dictionary, db=meta_db)
    require_feature(txn, meta_db, records.ZSTD_FEATURE)
    return dictionary


def require_feature(txn: lmdb.Transaction, meta_db: Any, feature: str) -> None:
    """List ``feature`` among the format record's required features (its format number at least
    ``records.FEATURES_FORMAT``), so releases that cannot read what the feature names refuse the archive."""
    fmt = records.decode_format(txn.get(FORMAT_KEY, db=meta_db))
    version = max(fmt["version"], records.FEATURES_FORMAT)
    if feature not in fmt["required_features"] or fmt["version"] != version:
        txn.put(FORMAT_KEY, records.encode_format(version, (*fmt["required_features"], feature),
                                                  tuple(fmt["optional_features"])), db=meta_db)
