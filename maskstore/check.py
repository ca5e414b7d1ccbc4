"""Verify an archive: records decode, indexes and scan columns agree with records both ways, blobs match
their hashes and every embedded blob a frame names is there.

Expected index entries come from the same ``index_entries`` the writer uses, so "what should be
indexed" has one definition. ``repair`` rebuilds the secondary indexes from the records.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import lmdb

from . import records
from .archive import (CHUNK_BITS, DUP_DBS, INDEX_DBS, U64, VERSION_DBS, Archive, DatasetVersion, entries,
                      index_entries, meta_types, text_key, u64)
from .errors import ArchiveError
from .media import BLOB_PREFIX
from .query import columns


@dataclass(frozen=True)
class Problem:
    """``severity`` is "error" (the archive is inconsistent) or "warning" (the data is suspect)."""

    severity: str
    message: str

    def __str__(self) -> str:
        return f"{self.severity}: {self.message}"


def _expected(frames: dict[bytes, dict[str, Any]], prefix: bytes) -> dict[str, set[tuple[bytes, bytes]]]:
    expected: dict[str, set[tuple[bytes, bytes]]] = {name: set() for name in INDEX_DBS}
    for seq, rec in frames.items():
        for name, keys in index_entries(rec).items():
            expected[name].update((prefix + key, seq) for key in keys)
    return expected


def _size_warnings(label: str, rec: dict[str, Any]) -> list[Problem]:
    out = []
    for source in rec["sources"]:
        for mask in source["masks"]:
            src_size = (source.get("width"), source.get("height"))
            mask_size = (mask.get("width"), mask.get("height"))
            if None not in src_size and None not in mask_size and src_size != mask_size:
                out.append(Problem("warning", f"{label} frame {rec['id']!r} source {source['id']!r}: mask "
                                              f"{mask['id']!r} ({mask['uri']}) is {mask_size[0]}x{mask_size[1]} "
                                              f"but the source is {src_size[0]}x{src_size[1]}"))
    return out


def _seq(raw: bytes) -> str:
    """A stored seq for a message, whatever its length (a damaged entry may not be 8 bytes)."""
    return str(U64.unpack(raw)[0]) if len(raw) == 8 else f"{bytes(raw)!r} (not 8 bytes)"


def _read_frames(arc: Archive, txn: lmdb.Transaction, vrec: dict[str, Any], label: str,
                 problems: list[Problem]) -> dict[bytes, dict[str, Any]]:
    """The decodable frame records by seq bytes; the others, and seqs the version never handed out,
    become problems."""
    frames: dict[bytes, dict[str, Any]] = {}
    for key, data in entries(txn, arc.db("frames"), u64(vrec["id"])):
        if len(key) != 16:
            problems.append(Problem("error", f"{label}: frame record key {bytes(key)!r} is not a version id and a seq"))
            continue
        seq = U64.unpack(key[8:])[0]
        if seq >= vrec["next_seq"]:
            problems.append(Problem("error", f"{label} frame seq {seq}: beyond the version's next_seq "
                                             f"{vrec['next_seq']} (no write hands out such a seq)"))
        try:
            frames[key[8:]] = records.decode_frame(data, f"frame seq {seq}")
        except ArchiveError as exc:
            problems.append(Problem("error", f"{label} {exc}"))
    return frames


def _check_version(arc: Archive, txn: lmdb.Transaction, vrec: dict[str, Any]) -> tuple[list[Problem], dict]:
    prefix = u64(vrec["id"])
    label = f"{vrec['dataset']}/{vrec['name']}"
    problems: list[Problem] = []
    frames = _read_frames(arc, txn, vrec, label, problems)
    for rec in frames.values():
        problems += _size_warnings(label, rec)
    problems += _check_meta_types(label, vrec["meta_types"], frames)[:20]
    ids = dict(entries(txn, arc.db("frame_ids"), prefix))
    want_ids = {prefix + text_key(rec["id"]): seq for seq, rec in frames.items()}
    for key in want_ids.keys() - ids.keys():
        problems.append(Problem("error", f"{label}: frame {key[8:].decode(errors='replace')!r} has no id entry"))
    for key, seq in ids.items():
        if want_ids.get(key) != seq:
            problems.append(Problem("error", f"{label}: id entry {key[8:].decode(errors='replace')!r} points at "
                                             f"seq {_seq(seq)}, which has no frame with that id"))
    if vrec["count"] != len(frames):
        problems.append(Problem("error", f"{label}: version record counts {vrec['count']} frames, "
                                         f"the archive holds {len(frames)}"))
    expected = _expected(frames, prefix)
    for name, want in expected.items():
        have = set(entries(txn, arc.db(name), prefix))
        for key, seq in sorted(have - want)[:20]:
            problems.append(Problem("error", f"{label}: {name} entry {key[8:]!r} -> seq "
                                             f"{_seq(seq)} matches no record"))
        for key, seq in sorted(want - have)[:20]:
            problems.append(Problem("error", f"{label}: {name} is missing {key[8:]!r} for frame "
                                             f"{frames[seq]['id']!r}"))
    problems += _check_columns(arc, txn, prefix, label, frames)
    problems += _check_blob_refs(arc, txn, label, frames)
    return problems, expected


def _check_meta_types(label: str, known: dict[str, str], frames: dict[bytes, dict[str, Any]]) -> list[Problem]:
    """The version's meta types must cover every record's meta (queries type-check against them)."""
    problems = []
    for rec in frames.values():
        for path, kind in meta_types(rec["meta"]):
            stored = known.get(path)
            if stored != kind and not (stored == "float" and kind == "int"):
                problems.append(Problem("error", f"{label} frame {rec['id']!r}: meta.{path} is {kind}, but the "
                                                 f"version's meta types say {stored or 'nothing'}"))
    return problems


def _check_columns(arc: Archive, txn: lmdb.Transaction, prefix: bytes, label: str,
                   frames: dict[bytes, dict[str, Any]]) -> list[Problem]:
    """Every stored column chunk that is not marked for rebuild must decode (the checks queries make
    when they load it) and equal what its records give; frames must have columns or a rebuild mark."""
    dirty = {key for key, _ in entries(txn, arc.db("dirty"), prefix)}
    problems = [Problem("error", f"{label}: rebuild mark {bytes(key)!r} is not a version id and a chunk")
                for key in dirty if len(key) != 16]
    by_chunk: dict[int, list[tuple[int, dict[str, Any]]]] = {}
    for seq, rec in frames.items():  # frames are in seq order, so each chunk's rows are too
        n = U64.unpack(seq)[0]
        by_chunk.setdefault(n >> CHUNK_BITS, []).append((n, rec))
    stored = set()
    for key, data in entries(txn, arc.db("columns"), prefix):
        if len(key) != 16:
            problems.append(Problem("error", f"{label}: column chunk key {bytes(key)!r} is not a version id and a chunk"))
            continue
        chunk = U64.unpack(key[8:])[0]
        stored.add(chunk)
        if key in dirty:
            continue
        base = chunk << CHUNK_BITS
        where = f"{label}: the scan columns of frames {base}..{base + columns.CHUNK - 1}"
        try:
            stored_chunk = columns.decode_chunk(base, data)
        except ArchiveError as exc:
            problems.append(Problem("error", f"{label}: {exc}"))
            continue
        # Re-encoded: archives written before meta columns were sorted by path hold them in first-use order.
        built = columns.encode_chunk(columns.build_chunk(base, iter(by_chunk.get(chunk, []))))
        if built != columns.encode_chunk(stored_chunk):
            problems.append(Problem("error", f"{where} do not match their records"))
    for chunk in sorted(by_chunk.keys() - stored - {U64.unpack(k[8:])[0] for k in dirty if len(k) == 16}):
        base = chunk << CHUNK_BITS
        problems.append(Problem("error", f"{label}: frames {base}..{base + columns.CHUNK - 1} have no scan columns "
                                         "and no rebuild mark, so queries miss them"))
    return problems


def _check_blob_refs(arc: Archive, txn: lmdb.Transaction, label: str,
                     frames: dict[bytes, dict[str, Any]]) -> list[Problem]:
    """Embedded images and masks (``blob:sha256:`` URIs) the frames name must be in the archive."""
    cursor = txn.cursor(db=arc.db("blobs"))
    problems = []
    for rec in frames.values():
        for uri in _uris(rec):
            if not uri.startswith(BLOB_PREFIX):
                continue
            digest = uri[len(BLOB_PREFIX):]
            if not HEX_DIGEST.fullmatch(digest):
                problems.append(Problem("error", f"{label} frame {rec['id']!r}: {uri!r} is not a valid blob URI"))
            elif not cursor.set_key(bytes.fromhex(digest)):
                problems.append(Problem("error", f"{label} frame {rec['id']!r}: embedded blob {uri} is missing "
                                                 "from the archive"))
    return problems


HEX_DIGEST = re.compile(r"[0-9a-f]{64}")


def _uris(rec: dict[str, Any]) -> Iterator[str]:
    for source in rec["sources"]:
        yield source["uri"]
        for mask in source["masks"]:
            yield mask["uri"]


def check_archive(archive: Archive, repair: bool = False) -> list[Problem]:
    """Every problem found; with ``repair`` the indexes are rebuilt first and then checked again.
    Never raises for what it finds: a damaged record is a problem in the list."""
    if repair:
        for version in archive.versions():
            rebuild_indexes(version)
    problems: list[Problem] = []

    def work(txn: lmdb.Transaction) -> None:
        version_keys = set()
        for key, data in txn.cursor(db=archive.db("versions")):
            version_keys.add(bytes(key))
            try:
                vrec = records.decode_version(data)
            except ArchiveError as exc:
                problems.append(Problem("error", f"version id {_seq(key)}: {exc}"))
                continue
            if bytes(key) != u64(vrec["id"]):
                problems.append(Problem("error", f"version id {_seq(key)}: its record says id {vrec['id']}"))
                continue
            problems.extend(_check_version(archive, txn, vrec)[0])
        problems.extend(_orphans(archive, txn, version_keys))
        for digest, data in txn.cursor(db=archive.db("blobs")):
            if hashlib.sha256(data).digest() != digest:
                problems.append(Problem("error", f"embedded blob sha256:{bytes(digest).hex()} does not match its bytes"))
    archive.read(work)
    return problems


def _orphans(arc: Archive, txn: lmdb.Transaction, version_keys: set[bytes]) -> list[Problem]:
    """Entries of versions that have no version record: one cursor jump per version prefix."""
    problems = []
    for name in VERSION_DBS:
        cursor = txn.cursor(db=arc.db(name))
        found = cursor.first()
        while found:
            prefix = bytes(cursor.key()[:8])
            if prefix not in version_keys:
                problems.append(Problem("error", f"{name} holds entries of version id {_seq(prefix)}, which has "
                                                 "no version record"))
            if len(prefix) < 8 or prefix == b"\xff" * 8:
                break
            found = cursor.set_range(u64(U64.unpack(prefix)[0] + 1))
    return problems


def rebuild_indexes(version: DatasetVersion) -> None:
    """Rewrite every secondary index entry and the id table of a version from its records."""
    arc = version.archive
    prefix = version.prefix

    def work(txn: lmdb.Transaction) -> None:
        vrec = version.record(txn)
        frames = {}
        for key, data in entries(txn, arc.db("frames"), prefix):
            try:
                frames[key[8:]] = records.decode_frame(data)
            except ArchiveError:
                continue  # an undecodable record cannot be indexed; check reports it
        for name in INDEX_DBS + ("frame_ids",):
            cursor = txn.cursor(db=arc.db(name))
            while cursor.set_range(prefix) and cursor.key().startswith(prefix):
                cursor.delete(dupdata=True)
        for name, items in _expected(frames, prefix).items():
            txn.cursor(db=arc.db(name)).putmulti(sorted(items), dupdata=name in DUP_DBS)
        txn.cursor(db=arc.db("frame_ids")).putmulti(
            sorted((prefix + text_key(rec["id"]), seq) for seq, rec in frames.items()))
        dirty = {(prefix + u64(U64.unpack(seq)[0] >> CHUNK_BITS), b"") for seq in frames}
        txn.cursor(db=arc.db("dirty")).putmulti(sorted(dirty))
        vrec["count"] = len(frames)
        vrec["generation"] += 1
        txn.put(prefix, records.encode_version(vrec), db=arc.db("versions"))
    arc.write(work)
