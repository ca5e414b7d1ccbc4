"""Verify an archive: records decode, indexes and scan columns agree with records both ways, blobs match
their hashes, every embedded file a frame names is there and every one is used; with ``media``, every
external file a frame names opens and decodes.

Expected index postings come from the same ``postings.of_records`` the writer uses, so "what should be
indexed" has one definition. ``repair_archive`` rebuilds the secondary indexes from the records and
says what it changed. Problems are sentences about versions, frames and values, never stored bytes.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import lmdb
import numpy as np

from . import compression, frame_groups, postings, records
from .errors import ArchiveError, MaskstoreError
from .ingest.prepare import file_references
from .lifecycle import referenced_blobs
from .layout import (CHUNK_BITS, CURRENT_DICTIONARY_KEY, DICTIONARY_PREFIX, FORMAT_KEY, INDEX_DBS, MAX_KEY_TEXT,
                     U64, VERSION_DBS, delete_prefix, entries, load_dictionaries, text_key, u64)
from .media import BLOB_PREFIX, blob_digest
from .model import meta_types
from .query import columns, zones

if TYPE_CHECKING:
    from .archive import Archive, DatasetVersion

MAX_LISTED = 20  # problems of one kind listed per version (or archive); a summary line counts the rest

# What each sub-database is, in the words problems use: (the index, what one of its keys is).
INDEX_WORDS = {"ix_context": ("the context index", "context id"), "ix_value": ("the value index", "mask value"),
               "ix_source": ("the source index", "source id"), "ix_mask": ("the mask index", "mask id"),
               "ix_roi": ("the ROI label index", "ROI label")}
VERSION_DB_WORDS = {"frames": "frame records", "frame_ids": "id table entries", "dirty": "scan column rebuild marks",
                    "columns": "scan columns",
                    **{name: f"{index[len('the '):]} entries" for name, (index, _) in INDEX_WORDS.items()}}


@dataclass(frozen=True)
class Problem:
    """``severity`` is "error" (the archive is inconsistent) or "warning" (the data is suspect)."""

    severity: str
    message: str

    def __str__(self) -> str:
        return f"{self.severity}: {self.message}"


def _where(label: str, frame_id: str | None = None) -> str:
    """How a problem names its place: ``version streets/v1, frame f3``."""
    return f"version {label}" if frame_id is None else f"version {label}, frame {frame_id}"


def key_words(name: str, key: bytes) -> str:
    """An index key (without the version prefix) as words: ``mask value (1, 1, 1)``, ``context id 'c1'``."""
    what = INDEX_WORDS[name][1]
    key = bytes(key)
    if name == "ix_value":
        return f"{what} {tuple(key)}" if len(key) == 3 else f"a {what} of {len(key)} bytes (3 expected)"
    if key[:1] == b"\xff" and len(key) == 33:
        return f"a {what} longer than {MAX_KEY_TEXT} bytes (indexed by its hash {key[1:5].hex()}...)"
    return f"{what} {key.decode('utf-8', errors='replace')!r}"


def _seq(raw: bytes) -> str:
    """A stored seq for a message, whatever its length (a damaged entry may not be 8 bytes)."""
    return str(U64.unpack(raw)[0]) if len(raw) == 8 else f"? (a damaged number of {len(raw)} bytes)"


def _wanted(frames: dict[bytes, dict[str, Any]]) -> dict[str, postings.Postings]:
    """The postings the records give (by seq bytes, as ``_read_frames`` keeps them)."""
    return postings.of_records({U64.unpack(seq)[0]: rec for seq, rec in frames.items()})


def _pairs(by_key: postings.Postings, prefix: bytes) -> set[tuple[bytes, bytes]]:
    """(version prefix + key, seq bytes) of some postings: what problems are listed by."""
    return {(prefix + key, u64(seq)) for key, seqs in by_key.items() for seq in seqs.tolist()}


def _stored_pairs(arc: Archive, txn: lmdb.Transaction, name: str, prefix: bytes, label: str,
                  problems: list[Problem]) -> set[tuple[bytes, bytes]]:
    """The postings an index holds for a version, as pairs; each damaged block becomes a problem."""
    have, damaged = set(), []
    for key, chunk, seqs in postings.stored(txn, arc, name, prefix):
        if isinstance(seqs, str):
            base = chunk << CHUNK_BITS
            damaged.append(Problem("error", f"{_where(label)}: {INDEX_WORDS[name][0]} holds a damaged block for "
                                            f"{key_words(name, key)} (seqs {base}...{base + postings.BLOCK_SEQS - 1}): "
                                            f"{seqs}"))
        else:
            have.update((prefix + key, u64(seq)) for seq in seqs.tolist())
    problems += damaged[:MAX_LISTED]
    return have


def _size_warnings(label: str, rec: dict[str, Any]) -> list[Problem]:
    out = []
    for source in rec["sources"]:
        for mask in source["masks"]:
            src_size = (source.get("width"), source.get("height"))
            mask_size = (mask.get("width"), mask.get("height"))
            if None not in src_size and None not in mask_size and src_size != mask_size:
                out.append(Problem("warning", f"{_where(label, rec['id'])}, source {source['id']}: mask "
                                              f"{mask['id']} ({mask['uri']}) is {mask_size[0]}x{mask_size[1]} "
                                              f"but the source is {src_size[0]}x{src_size[1]}"))
    return out


def _read_frames(arc: Archive, txn: lmdb.Transaction, vrec: dict[str, Any], label: str,
                 problems: list[Problem]) -> dict[bytes, dict[str, Any]]:
    """The decodable frame records by seq bytes; the others, and seqs the version never handed out,
    become problems."""
    frames: dict[bytes, dict[str, Any]] = {}
    held = set(load_dictionaries(txn, arc.db("meta")))  # another archive's dictionary decodes, but is not this one's
    for key, data in entries(txn, arc.db("frames"), u64(vrec["id"])):
        if len(key) != 16:
            problems.append(Problem("error", f"{_where(label)}: a frame record has a damaged key ({len(key)} bytes; "
                                             "a version id and a seq take 16)"))
            continue
        number = U64.unpack(key[8:])[0]
        try:
            members = _members(arc, data, number, held)
        except ArchiveError as exc:
            problems.append(Problem("error", f"{_where(label)}: {exc}"))
            continue
        for seq, stored in members:
            if seq >= vrec["next_seq"]:
                problems.append(Problem("error", f"{_where(label)}: frame seq {seq} is beyond the version's next_seq "
                                                 f"{vrec['next_seq']} (no write hands out such a seq)"))
            try:
                _check_dictionary(stored, f"frame seq {seq} record", records.ZSTD_HEAD, held)
                frames[u64(seq)] = records.decode_frame(stored, f"frame seq {seq}")
            except ArchiveError as exc:
                problems.append(Problem("error", f"{_where(label)}: {exc}"))
    return frames


def _members(arc: Archive, data: bytes, number: int, held: set[bytes]) -> list[tuple[int, Any]]:
    """(seq, record as stored) of one ``frames`` entry: a group's members, or the record of one seq
    (the layout from before frame groups)."""
    if not arc.frame_groups:
        return [(number, data)]
    frame_groups.check_base(number)
    if bytes(data[len(frame_groups.GROUP_HEAD):frame_groups.BODY_START]) != frame_groups.NO_DICTIONARY:
        _check_dictionary(data, frame_groups.group_name(number), frame_groups.GROUP_HEAD, held)
    return frame_groups.decode_group(data, number)


def _check_dictionary(data: Any, what: str, head: bytes, held: set[bytes]) -> None:
    """ArchiveError when a compressed value (``head``, dictionary id, body) names a dictionary the
    archive does not hold (another archive's, known to this process, would still decode it)."""
    dictionary = bytes(data[len(head):len(head) + compression.ID_BYTES])
    if data[:len(head)] == head and len(data) > len(head) + compression.ID_BYTES and dictionary not in held:
        raise ArchiveError(f"{what} is compressed with dictionary {dictionary.hex()}, which the archive does not hold")


def _check_version(arc: Archive, txn: lmdb.Transaction, vrec: dict[str, Any]) -> list[Problem]:
    prefix = u64(vrec["id"])
    label = f"{vrec['dataset']}/{vrec['name']}"
    problems: list[Problem] = []
    frames = _read_frames(arc, txn, vrec, label, problems)
    for rec in frames.values():
        problems += _size_warnings(label, rec)
    problems += _check_meta_types(label, vrec["meta_types"], frames)[:MAX_LISTED]
    problems += _check_ids(arc, txn, prefix, label, frames)
    if vrec["count"] != len(frames):
        problems.append(Problem("error", f"{_where(label)}: the version record counts {vrec['count']} frames, "
                                         f"the archive holds {len(frames)}"))
    wanted = _wanted(frames)
    for name in INDEX_DBS:
        index, _ = INDEX_WORDS[name]
        want = _pairs(wanted[name], prefix)
        have = _stored_pairs(arc, txn, name, prefix, label, problems)
        for key, seq in sorted(want - have)[:MAX_LISTED]:
            problems.append(Problem("error", f"{_where(label, frames[seq]['id'])}: {key_words(name, key[8:])} "
                                             f"is not in {index}"))
        for key, seq in sorted(have - want)[:MAX_LISTED]:
            words = key_words(name, key[8:])
            if seq in frames:
                problems.append(Problem("error", f"{_where(label, frames[seq]['id'])}: {index} lists the frame "
                                                 f"under {words}, which the frame does not have"))
            else:
                problems.append(Problem("error", f"{_where(label)}: {index} lists {words} for frame seq "
                                                 f"{_seq(seq)}, which holds no frame"))
    problems += _check_columns(arc, txn, prefix, label, frames)
    return problems + _check_blob_refs(arc, txn, label, frames)


def _check_ids(arc: Archive, txn: lmdb.Transaction, prefix: bytes, label: str,
               frames: dict[bytes, dict[str, Any]]) -> list[Problem]:
    """The id table (frame id -> seq) must hold exactly the records' ids."""
    problems = []
    ids = dict(entries(txn, arc.db("frame_ids"), prefix))
    want_ids = {prefix + text_key(rec["id"]): (seq, rec["id"]) for seq, rec in frames.items()}
    for key in sorted(want_ids.keys() - ids.keys())[:MAX_LISTED]:
        problems.append(Problem("error", f"{_where(label, want_ids[key][1])}: it has no entry in the id table, "
                                         "so it cannot be found by id"))
    wrong = [(key, seq) for key, seq in ids.items() if want_ids.get(key, (None,))[0] != seq]
    for key, seq in sorted(wrong)[:MAX_LISTED]:
        text = bytes(key[8:]).decode("utf-8", errors="replace")
        problems.append(Problem("error", f"{_where(label)}: the id table sends frame id {text!r} to frame seq "
                                         f"{_seq(seq)}, which holds no frame with that id"))
    return problems


def _check_meta_types(label: str, known: dict[str, str], frames: dict[bytes, dict[str, Any]]) -> list[Problem]:
    """The version's meta types must cover every record's meta (queries type-check against them)."""
    problems = []
    for rec in frames.values():
        for path, kind in meta_types(rec["meta"]):
            stored = known.get(path)
            if stored != kind and not (stored == "float" and kind == "int"):
                problems.append(Problem("error", f"{_where(label, rec['id'])}: meta.{path} is {kind}, but the "
                                                 f"version's meta types say {stored or 'nothing'}"))
    return problems


def _check_columns(arc: Archive, txn: lmdb.Transaction, prefix: bytes, label: str,
                   frames: dict[bytes, dict[str, Any]]) -> list[Problem]:
    """Every stored column chunk that is not marked for rebuild (nor stored as 0.1.0 did: rebuilt too)
    must decode, every field (the checks queries make when they touch it), and equal what its records
    give; frames must have columns or a rebuild mark."""
    dirty = {key for key, _ in entries(txn, arc.db("dirty"), prefix)}
    problems = [Problem("error", f"{_where(label)}: a scan column rebuild mark has a damaged key ({len(key)} "
                                 "bytes; a version id and a chunk number take 16)")
                for key in dirty if len(key) != 16]
    by_chunk: dict[int, list[tuple[int, dict[str, Any]]]] = {}
    for seq, rec in frames.items():  # frames are in seq order, so each chunk's rows are too
        n = U64.unpack(seq)[0]
        by_chunk.setdefault(n >> CHUNK_BITS, []).append((n, rec))
    fields: dict[bytes, dict[bytes, bytes]] = {}
    summary = None
    zone_maps: dict[bytes, bytes] = {}  # u64(block) + field name -> rows of a zone map; b"": the version keeps them
    for key, data in entries(txn, arc.db("columns"), prefix):
        if len(key) == len(prefix):
            summary = data
            continue
        if key[8:16] == zones.MARK:
            zone_maps[bytes(key[16:])] = data
            continue
        if len(key) < 16:
            problems.append(Problem("error", f"{_where(label)}: a scan column field has a damaged key ({len(key)} "
                                             "bytes; a version id and a chunk number take 16, then the field name)"))
            continue
        fields.setdefault(bytes(key[:16]), {})[bytes(key[16:])] = data
    stored = set()
    spans: dict[int, tuple[int, int, int] | None] = {}  # None: a chunk the summary need not describe
    zone_rows: dict[bytes, dict[int, zones.Zone]] = {}  # of the chunks that decode, as their columns give them
    for key, chunk_fields in fields.items():
        chunk = U64.unpack(key[8:])[0]
        stored.add(chunk)
        spans[chunk] = None
        if key in dirty or columns.OLD_LAYOUT in chunk_fields:  # both rebuilt from the records when read
            continue
        base = chunk << CHUNK_BITS
        try:
            stored_chunk = columns.decode_fields(base, chunk_fields)
        except ArchiveError as exc:
            problems.append(Problem("error", f"{_where(label)}: {exc}"))
            continue
        spans[chunk] = stored_chunk.span()
        for name, row in columns.zone_rows(stored_chunk).items():
            zone_rows.setdefault(name, {})[chunk] = row
        built = columns.encode_fields(columns.build_chunk(
            base, [(n, records.encode_frame(rec)) for n, rec in by_chunk.get(chunk, [])]))
        if built != columns.encode_fields(stored_chunk):
            problems.append(Problem("error", f"{_where(label)}: the scan columns of frame seqs "
                                             f"{base}..{base + columns.CHUNK - 1} do not match their records"))
    problems += _check_summary(label, summary, spans)
    problems += _check_zones(label, zone_maps, zone_rows, [n for n, span in spans.items() if span is None])
    for chunk in sorted(by_chunk.keys() - stored - {U64.unpack(k[8:])[0] for k in dirty if len(k) == 16}):
        base = chunk << CHUNK_BITS
        problems.append(Problem("error", f"{_where(label)}: frame seqs {base}..{base + columns.CHUNK - 1} have no "
                                         "scan columns and no rebuild mark, so queries miss them"))
    return problems


def _check_summary(label: str, data: bytes | None, spans: dict[int, tuple[int, int, int] | None]) -> list[Problem]:
    """The version's summary (optional: rebuilt when missing) must list exactly the stored chunks, each
    with the frames, first and last row of its ``_present``."""
    if data is None:
        return []
    try:
        rows = {number: (count, first, last) for number, count, first, last in columns.summary_rows(data)}
    except ArchiveError as exc:
        return [Problem("error", f"{_where(label)}: {exc}")]
    wrong = sorted(number for number in rows.keys() | spans.keys()
                   if number not in rows or number not in spans or spans[number] not in (None, rows[number]))
    return [Problem("error", f"{_where(label)}: the scan column summary does not match the chunks of frame seqs "
                             f"{number << CHUNK_BITS}..{(number << CHUNK_BITS) + columns.CHUNK - 1}")
            for number in wrong[:MAX_LISTED]]


def _check_zones(label: str, stored: dict[bytes, bytes], rows: dict[bytes, dict[int, zones.Zone]],
                 unread: list[int]) -> list[Problem]:
    """Each field's zone map (kept once the version has its marker) must hold exactly the rows its
    chunks' columns give; rows of chunks rebuilt from their records (``unread``) are not compared."""
    if b"" not in stored:
        return [Problem("error", f"{_where(label)}: scan column zone maps are stored without their marker")] \
            if stored else []
    problems, have = [], {}
    for key in sorted(stored.keys() - {b""}):
        if len(key) < 8:
            problems.append(Problem("error", f"{_where(label)}: a scan column zone map has a damaged key"))
            continue
        block, name = U64.unpack(key[:8])[0], key[8:]
        try:
            have.setdefault(name, []).append(zones.decode(stored[key], columns.field_label(name), block))
        except ArchiveError as exc:
            problems.append(Problem("error", f"{_where(label)}: {exc}"))
            have.setdefault(name, []).append(None)
    skip = np.array(unread, np.uint64)
    for name in sorted(have.keys() | rows.keys()):
        tables = have.get(name, [])
        if None in tables:
            continue  # reported above
        want = zones.Table.of(rows.get(name, {}))
        if zones.Table.joined(tables).replaced(skip, {}).encode() != want.replaced(skip, {}).encode():
            problems.append(Problem("error", f"{_where(label)}: the scan column zone map of "
                                             f"{columns.field_label(name)} does not match the chunks' columns"))
    return problems[:MAX_LISTED]


class NamedFile(NamedTuple):
    """One file a frame names: its URI, and where in the frame (for messages)."""

    uri: str
    item: dict[str, Any]
    field: str
    source: dict[str, Any]

    @property
    def kind(self) -> str:
        return "image" if self.item is self.source else "mask"

    def __str__(self) -> str:
        """Which file of the frame it is: ``the image of source 0``, ``mask 00 of source 0``."""
        if self.item is self.source:
            return f"the image of source {self.source['id']}"
        kind = "instance file of mask" if self.field == "instance_uri" else "mask"
        return f"{kind} {self.item['id']} of source {self.source['id']}"


def _named_files(rec: dict[str, Any]) -> Iterator[NamedFile]:
    """Every file a frame record names (``ingest.prepare.file_references``: what ``--embed`` copies in)."""
    source: dict[str, Any] = {}
    for item, field in file_references(rec):
        if "masks" in item:  # sources come before their masks
            source = item
        yield NamedFile(item[field], item, field, source)


def _check_blob_refs(arc: Archive, txn: lmdb.Transaction, label: str,
                     frames: dict[bytes, dict[str, Any]]) -> list[Problem]:
    """Embedded images and masks (``blob:sha256:`` URIs) the frames name must be in the archive."""
    cursor = txn.cursor(db=arc.db("blobs"))
    problems = []
    for rec in frames.values():
        for which in _named_files(rec):
            uri = which.uri
            if not uri.startswith(BLOB_PREFIX):
                continue
            digest = uri[len(BLOB_PREFIX):]
            key = blob_digest(digest)
            if key is None:
                problems.append(Problem("error", f"{_where(label, rec['id'])}: {which} is {uri!r}, which is not "
                                                 "a valid embedded file URI (blob:sha256: and 64 hex digits)"))
                continue
            if not cursor.set_key(key):
                problems.append(Problem("error", f"{_where(label, rec['id'])}: {which} is the embedded file {uri}, "
                                                 "which is missing from the archive"))
    return problems


def check_archive(archive: Archive, repair: bool = False, media: bool = False) -> list[Problem]:
    """Every problem found; with ``repair`` the indexes are rebuilt first (``repair_archive``) and then
    checked again; with ``media`` every external image and mask is opened and decoded too.
    Never raises for what it finds: a damaged record is a problem in the list."""
    if repair:
        repair_archive(archive)
    problems: list[Problem] = []

    def work(txn: lmdb.Transaction) -> None:
        version_keys = set()
        vrecs = []
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
            vrecs.append(vrec)
            problems.extend(_check_version(archive, txn, vrec))
        ids = {vrec["id"] for vrec in vrecs}
        for vrec in vrecs:
            if vrec["parent"] is not None and vrec["parent"] not in ids:
                problems.append(Problem("warning", f"{_where(vrec['dataset'] + '/' + vrec['name'])}: its parent, "
                                                   f"version id {vrec['parent']}, no longer exists"))
        problems.extend(_orphans(archive, txn, version_keys))
        problems.extend(_check_dictionaries(archive, txn))
        problems.extend(_check_blobs(archive, txn))
    archive.read(work)
    if media:
        problems.extend(check_media(archive))
    return problems


def _check_dictionaries(arc: Archive, txn: lmdb.Transaction) -> list[Problem]:
    """Compression dictionaries must match their ids, the current one must be held, and an archive
    holding one must say so in its format record (older releases would misread it otherwise)."""
    meta = arc.db("meta")
    problems, held = [], []
    for key, value in entries(txn, meta, DICTIONARY_PREFIX):
        try:
            held.append(records.decode_dictionary(bytes(key[len(DICTIONARY_PREFIX):]), value))
        except ArchiveError as exc:
            problems.append(Problem("error", str(exc)))
    current = txn.get(CURRENT_DICTIONARY_KEY, db=meta)
    if current is not None and txn.get(DICTIONARY_PREFIX + bytes(current), db=meta) is None:
        problems.append(Problem("error", f"the current compression dictionary {bytes(current).hex()} is missing"))
    fmt = records.decode_format(txn.get(FORMAT_KEY, db=meta))
    if (held or current is not None) and records.ZSTD_FEATURE not in fmt["required_features"]:
        problems.append(Problem("error", f"the archive holds compression dictionaries, but its format record does "
                                         f"not require {records.ZSTD_FEATURE!r}: older releases would misread it"))
    return problems


def _check_blobs(arc: Archive, txn: lmdb.Transaction) -> list[Problem]:
    """Every embedded file must match its hash; one that no frame of any version names is a warning:
    exactly the files ``maskstore compact`` drops (one definition of "named", ``referenced_blobs``)."""
    try:
        referenced: set[bytes] | None = referenced_blobs(txn, arc)
    except ArchiveError:  # a record that does not decompress: reported with its version
        referenced = None
    problems, unused, unused_bytes = [], [], 0
    for digest, data in txn.cursor(db=arc.db("blobs")):
        uri = f"{BLOB_PREFIX}{bytes(digest).hex()}"
        if hashlib.sha256(data).digest() != digest:
            problems.append(Problem("error", f"embedded file {uri} does not match its sha256: its bytes are damaged"))
        elif referenced is not None and bytes(digest) not in referenced:
            unused.append(uri)
            unused_bytes += len(data)
    for uri in unused[:MAX_LISTED]:
        problems.append(Problem("warning", f"embedded file {uri} is used by no frame of any version; "
                                           "maskstore compact drops it"))
    if len(unused) > MAX_LISTED:
        problems.append(Problem("warning", f"{len(unused) - MAX_LISTED} more embedded files are used by no frame "
                                           f"({len(unused)} in all, {unused_bytes / 1e6:.1f} MB); maskstore "
                                           "compact drops them"))
    return problems


def check_media(archive: Archive, jobs: int | None = None) -> list[Problem]:
    """Every external image and mask the frames name (local paths, http(s)) must exist and decode; each
    file is opened once, however many frames name it. Embedded files are checked by hash instead."""
    users: dict[tuple[str, str], list[tuple[str, str, NamedFile]]] = {}  # (uri, kind) -> (version, frame, file)
    for version in archive.versions():
        label = version.label
        for _, rec in version.iter_records():
            for named in _named_files(rec):
                if not named.uri.startswith(BLOB_PREFIX):
                    users.setdefault((named.uri, named.kind), []).append((label, rec["id"], named))

    def failure(item: tuple[str, str]) -> str | None:
        try:
            archive.open_image(*item).close()
        except MaskstoreError as exc:
            return str(exc)
        return None

    problems = []
    with ThreadPoolExecutor(jobs or os.cpu_count() or 1) as pool:  # Pillow decodes without the GIL
        for item, message in zip(users, pool.map(failure, users)):
            if message is None:
                continue
            (label, frame_id, which), *others = users[item]
            more = "" if not others else \
                f" (and {len(others)} more {'frame names' if len(others) == 1 else 'frames name'} it)"
            problems.append(Problem("error", f"{_where(label, frame_id)}: {which}: {message}{more}"))
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
                problems.append(Problem("error", f"the archive holds {VERSION_DB_WORDS[name]} of version id "
                                                 f"{_seq(prefix)}, which has no version record"))
            if len(prefix) < 8 or prefix == b"\xff" * 8:
                break
            found = cursor.set_range(u64(U64.unpack(prefix)[0] + 1))
    return problems


@dataclass(frozen=True)
class Rebuilt:
    """What ``rebuild_indexes`` changed in one version: index and id-table entries it added (missing
    before) and removed (stale), and the version's frame count before and after."""

    label: str
    frames: int
    added: int
    removed: int
    count_before: int

    def __str__(self) -> str:
        what = f"rebuilt the indexes and id table of {self.label} from its {self.frames} frame records"
        if not (self.added or self.removed or self.count_before != self.frames):
            return f"{what}: they were right already"
        changes = [f"{n} {kind} entries {verb}" for n, kind, verb in
                   ((self.added, "missing", "added"), (self.removed, "stale", "removed")) if n]
        if self.count_before != self.frames:
            changes.append(f"frame count {self.count_before} corrected to {self.frames}")
        return f"{what}: {', '.join(changes)}; scan columns marked for rebuild"


def repair_archive(archive: Archive) -> list[Rebuilt]:
    """Rebuild every version's indexes from its records; what each rebuild changed."""
    return [rebuild_indexes(version) for version in archive.versions()]


def rebuild_indexes(version: DatasetVersion) -> Rebuilt:
    """Rewrite every secondary index entry and the id table of a version from its records."""
    arc = version.archive
    prefix = version.prefix

    def work(txn: lmdb.Transaction) -> Rebuilt:
        vrec = version.record(txn)
        frames = _read_frames(arc, txn, vrec, "", [])  # an undecodable record cannot be indexed; check reports it
        wanted = _wanted(frames)
        added = removed = 0
        for name in INDEX_DBS:
            want, damaged = _pairs(wanted[name], prefix), []
            have = _stored_pairs(arc, txn, name, prefix, "", damaged)
            added += len(want - have)
            removed += len(have - want) + len(damaged)
        postings.rewrite(txn, arc, prefix, wanted)
        ids = sorted((prefix + text_key(rec["id"]), seq) for seq, rec in frames.items())
        have_ids = {(bytes(k), bytes(v)) for k, v in entries(txn, arc.db("frame_ids"), prefix)}
        added += len(set(ids) - have_ids)
        removed += len(have_ids - set(ids))
        delete_prefix(txn, arc.db("frame_ids"), prefix)
        txn.cursor(db=arc.db("frame_ids")).putmulti(ids)
        dirty = {(prefix + u64(U64.unpack(seq)[0] >> CHUNK_BITS), b"") for seq in frames}
        txn.cursor(db=arc.db("dirty")).putmulti(sorted(dirty))
        txn.delete(prefix, db=arc.db("columns"))  # the summary: rebuilt with the marked chunks
        delete_prefix(txn, arc.db("columns"), prefix + zones.MARK)  # the zone maps too
        rebuilt = Rebuilt(f"{vrec['dataset']}/{vrec['name']}", len(frames), added, removed, vrec["count"])
        vrec["count"] = len(frames)
        vrec["generation"] += 1
        txn.put(prefix, records.encode_version(vrec), db=arc.db("versions"))
        return rebuilt
    return arc.write(work)
