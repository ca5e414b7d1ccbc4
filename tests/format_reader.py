"""An independent reader (and a minimal writer) of maskstore archives, written from FORMAT.md alone.

It imports only ``lmdb``, ``msgpack``, ``zstandard`` and the standard library, never maskstore: ``tests/test_format.py``
compares what it reads with what the library reads, so FORMAT.md is shown complete enough to read
every version, frame, label table, colour, mask statistic, embedded file, index entry and scan column.
Section names in comments are FORMAT.md's.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from itertools import accumulate
from pathlib import Path
from typing import Any

import lmdb
import msgpack
import zstandard

READS_VERSION = 2                          # "Compatibility": the highest format number this reader knows
KNOWN_REQUIRED_FEATURES: frozenset[str] = frozenset({"zstd-records", "column-fields", "packed-postings", "frame-groups",
                                                     "column-zones"})
KINDS = {"format": b"M", "version": b"V", "frame": b"F"}
DICTIONARY_PREFIX = b"zstd_dictionary"    # "Compressed frame records"
MAX_RECORD = 256 * 1024 * 1024
INDEX_DBS = ("ix_context", "ix_value", "ix_source", "ix_mask", "ix_roi")
MAX_KEY_TEXT = 400
CHUNK = 4096
BLOB_PREFIX = "blob:sha256:"
ZONE_MARK = b"\xff" * 8                  # "Zone maps": where a chunk number would be
MAX_ZONE_TEXT = 64


class FormatError(Exception):
    """The file is not an archive this reader may read."""


def u64(data: bytes) -> int:
    return struct.unpack(">Q", data)[0]


def open_archive(path: str | Path) -> lmdb.Environment:
    """"The file": one LMDB file (no sub-directory); read here without the lock file."""
    return lmdb.open(str(path), subdir=False, readonly=True, lock=False, max_dbs=64)


def record(data: bytes, kind: str) -> Any:
    """"Records": a format byte, a kind byte, then one msgpack value."""
    data = bytes(data)
    if data[0] > READS_VERSION:
        raise FormatError(f"record written by format {data[0]}")
    if data[1:2] != KINDS[kind]:
        raise FormatError(f"a {kind} record has kind {data[1:2]!r}")
    return msgpack.unpackb(data[2:], raw=False)


def dictionaries(txn: lmdb.Transaction, env: lmdb.Environment) -> dict[bytes, zstandard.ZstdDecompressor]:
    """"Compressed frame records": meta/zstd_dictionary ‖ id -> 2 ‖ "D" ‖ dictionary, id = sha256[:8]."""
    out = {}
    for key, value in _entries(txn, _db(env, txn, "meta"), DICTIONARY_PREFIX):
        ident, data = key[len(DICTIONARY_PREFIX):], value[2:]
        if value[:2] != b"\x02D" or hashlib.sha256(data).digest()[:8] != ident:
            raise FormatError(f"dictionary {ident.hex()} is damaged")
        out[ident] = zstandard.ZstdDecompressor(dict_data=zstandard.ZstdCompressionDict(data),
                                                format=zstandard.FORMAT_ZSTD1_MAGICLESS)
    return out


def frame_record(data: bytes, known: dict[bytes, zstandard.ZstdDecompressor]) -> Any:
    """A frame record: kind F as it is; kind Z (2 ‖ "Z" ‖ dictionary id (8) ‖ magicless zstd frame)
    decompressed, with its declared size capped, to the kind F record it holds."""
    data = bytes(data)
    if data[1:2] == b"Z":
        if data[0] > READS_VERSION:
            raise FormatError(f"record written by format {data[0]}")
        body = data[10:]
        size = zstandard.get_frame_parameters(body, format=zstandard.FORMAT_ZSTD1_MAGICLESS).content_size
        if size > MAX_RECORD:
            raise FormatError(f"a compressed record declares {size} bytes")
        data = known[data[2:10]].decompress(body, max_output_size=MAX_RECORD, allow_extra_data=False)
    return record(data, "frame")


def frames(txn: lmdb.Transaction, env: lmdb.Environment, known: dict[bytes, zstandard.ZstdDecompressor],
           prefix: bytes = b"") -> list[tuple[int, int, Any]]:
    """(version id, seq, frame) of every frame record under ``prefix``, in key order. "Frame groups":
    with the required feature frame-groups, the entry ``version ‖ u64(base)`` (base a multiple of 16)
    holds 2 ‖ "G" ‖ dictionary id (8, zeros: none) ‖ zstd(count (u8) ‖ offsets (u8 each) ‖ lengths
    (u32 LE each) ‖ frame records); before it, one record per ``version ‖ u64(seq)``."""
    grouped = "frame-groups" in read_format(txn, env).get("required_features", [])
    out = []
    for key, value in _entries(txn, _db(env, txn, "frames"), prefix):
        version, number = u64(key[:8]), u64(key[8:])
        if not grouped:
            out.append((version, number, frame_record(value, known)))
            continue
        if value[:2] != b"\x02G" or number % 16:
            raise FormatError(f"frame group at seq {number} is damaged")
        ident, body = value[2:10], value[10:]
        data = (zstandard.ZstdDecompressor() if ident == bytes(8) else known[ident]).decompress(
            body, max_output_size=MAX_RECORD, allow_extra_data=False)
        count = data[0]
        lengths = struct.unpack_from(f"<{count}I", data, 1 + count)
        at = 1 + 5 * count
        for offset, length in zip(data[1:1 + count], lengths):
            out.append((version, number + offset, frame_record(data[at:at + length], known)))
            at += length
    return out


def _db(env: lmdb.Environment, txn: lmdb.Transaction, name: str) -> Any:
    return env.open_db(name.encode(), txn=txn, create=False)


def _entries(txn: lmdb.Transaction, db: Any, prefix: bytes = b"") -> list[tuple[bytes, bytes]]:
    cursor = txn.cursor(db=db)
    out = []
    if cursor.set_range(prefix):
        for key, value in cursor:
            if not key.startswith(prefix):
                break
            out.append((bytes(key), bytes(value)))
    return out


def read_format(txn: lmdb.Transaction, env: lmdb.Environment) -> dict[str, Any]:
    """"The format record", with the refusals "Compatibility" asks of a reader."""
    fmt = record(txn.get(b"format", db=_db(env, txn, "meta")), "format")
    if fmt.get("name") != "maskstore":
        raise FormatError("not a maskstore archive")
    if fmt["version"] > READS_VERSION:
        raise FormatError(f"format {fmt['version']} is newer than {READS_VERSION}")
    unknown = set(fmt.get("required_features", [])) - KNOWN_REQUIRED_FEATURES
    if unknown:
        raise FormatError(f"unknown required features {sorted(unknown)}")
    return fmt


def read_archive(path: str | Path) -> dict[str, Any]:
    """Every version (record, label table, colours, frames in seq order) and every embedded file
    a frame names (digest -> size, each checked against its sha256)."""
    env = open_archive(path)
    try:
        with env.begin() as txn:
            fmt = read_format(txn, env)
            versions, blobs = [], {}
            blobs_db = _db(env, txn, "blobs")
            known = dictionaries(txn, env)
            for key, data in _entries(txn, _db(env, txn, "versions")):
                rec = record(data, "version")
                assert rec["id"] == u64(key)
                held = [frame for _, _, frame in frames(txn, env, known, key)]
                versions.append({
                    "record": rec,
                    "masks_labels": [[entry["value"], entry["labels"]] for entry in rec["mask_labels"]],
                    "label_colors": rec["label_colors"],
                    "frames": held,
                })
                for uri in _file_uris(held):
                    if uri.startswith(BLOB_PREFIX):
                        digest = bytes.fromhex(uri[len(BLOB_PREFIX):])
                        data = txn.get(digest, db=blobs_db)
                        if data is None or hashlib.sha256(data).digest() != digest:
                            raise FormatError(f"{uri} is missing or damaged")
                        blobs[digest.hex()] = len(data)
    finally:
        env.close()
    return {"format": fmt, "versions": versions, "blobs": dict(sorted(blobs.items()))}


def _file_uris(frames: list[dict[str, Any]]) -> list[str]:
    """"Embedded files": source and mask ``uri`` and a mask's ``instance_uri``."""
    uris = []
    for frame in frames:
        for source in frame["sources"]:
            uris.append(source["uri"])
            for mask in source["masks"]:
                uris.append(mask["uri"])
                if isinstance(mask.get("instance_uri"), str):
                    uris.append(mask["instance_uri"])
    return uris


def blob(path: str | Path, hexdigest: str) -> bytes:
    env = open_archive(path)
    try:
        with env.begin() as txn:
            return bytes(txn.get(bytes.fromhex(hexdigest), db=_db(env, txn, "blobs")))
    finally:
        env.close()


# ------------------------------------------------------------------------------ "Index keys"

def text_key(text: str) -> bytes:
    raw = text.encode("utf-8")
    return raw if len(raw) <= MAX_KEY_TEXT else b"\xff" + hashlib.sha256(raw).digest()


def expected_index_entries(version_id: int, seq: int, frame: dict[str, Any]) -> set[tuple[str, bytes, bytes]]:
    """(sub-database, key, value) of every index entry a frame record has, by FORMAT.md's rules."""
    prefix, value = struct.pack(">Q", version_id), struct.pack(">Q", seq)
    out = {("ix_context", prefix + text_key(frame["context_id"]), value)}
    for source in frame["sources"]:
        out.add(("ix_source", prefix + text_key(source["id"]), value))
        for mask in source["masks"]:
            out.add(("ix_mask", prefix + text_key(mask["id"]), value))
            for r, g, b, _count in mask.get("values") or ():
                out.add(("ix_value", prefix + bytes((r, g, b)), value))
    for roi in frame["rois"]:
        for label in roi["label"]:
            out.add(("ix_roi", prefix + text_key(label), value))
    return out


def index_pairs(key: bytes, value: bytes, packed: bool) -> list[tuple[bytes, bytes]]:
    """"Index blocks": (u64(version) ‖ index key, u64(seq)) of each seq a stored entry holds. Without
    packed-postings an entry is one (key, seq) duplicate; with it, the key is u64(version) ‖ u16 length
    ‖ index key ‖ u64(chunk) and the value the chunk's seqs: 512 bytes are a bitmap (bit i of byte
    i // 8, least significant first, is offset i), fewer an array of little-endian uint16 offsets."""
    if not packed:
        return [(key, value)]
    length = struct.unpack(">H", key[8:10])[0]
    assert len(key) == 18 + length, "block key length"
    index_key, base = key[:8] + key[10:10 + length], u64(key[-8:]) * CHUNK
    if len(value) == CHUNK // 8:
        offsets = [i for i in range(CHUNK) if value[i // 8] >> (i % 8) & 1]
    else:
        offsets = [struct.unpack("<H", value[i:i + 2])[0] for i in range(0, len(value), 2)]
    return [(index_key, struct.pack(">Q", base + offset)) for offset in offsets]


def index_check(path: str | Path) -> tuple[set, set, set, set]:
    """(stored index entries, entries derived from the frame records, stored frame_ids entries,
    derived frame_ids entries): equal pairs show the key layout as FORMAT.md describes it."""
    env = open_archive(path)
    stored, derived, ids_stored, ids_derived = set(), set(), set(), set()
    try:
        with env.begin() as txn:
            packed = "packed-postings" in read_format(txn, env).get("required_features", [])
            for name in INDEX_DBS:
                for key, value in _entries(txn, _db(env, txn, name)):
                    stored |= {(name, *pair) for pair in index_pairs(key, value, packed)}
            known = dictionaries(txn, env)
            for version, seq, frame in frames(txn, env, known):
                derived |= expected_index_entries(version, seq, frame)
                ids_derived.add((struct.pack(">Q", version) + text_key(frame["id"]), struct.pack(">Q", seq)))
            ids_stored = set(_entries(txn, _db(env, txn, "frame_ids")))
    finally:
        env.close()
    return stored, derived, ids_stored, ids_derived


# ------------------------------------------------------------------------------ "Scan columns"

def _array(data: bytes, code: str) -> list:
    """Little-endian numbers of struct format ``code`` (q int64, i int32, I uint32, d float64)."""
    size = struct.calcsize("<" + code)
    return list(struct.unpack(f"<{len(data) // size}{code}", data))


def _strings(item: list) -> list[str | None]:
    texts, codes = item
    return [None if c < 0 else texts[c] for c in _array(codes, "i")]


def _meta_column(item: list) -> list[Any]:
    """One value per row (None where the frame lacks the path); dicts and lists read as True."""
    kind = item[0]
    if kind == "s":
        return _strings(item[1:])
    values, present = item[1], [bool(b) for b in item[2]]
    if kind == "int":
        values = _array(values, "q")
    elif kind == "float":
        values = _array(values, "d")
    elif kind in ("bool", "present"):
        values = [bool(b) for b in values]
    return [v if has else None for v, has in zip(values, present)]


def _chunk_from(body: dict[str, Any], strings: Any, meta: dict[str, list[Any]], ids: list[str | None]) -> dict[str, Any]:
    offsets = _array(body["vo"], "q")
    keys, counts = _array(body["vk"], "I"), _array(body["vc"], "q")
    return {
        "present": [bool(b) for b in body["present"]],
        "timestamp": _array(body["ts"], "q"),
        "id": ids,
        "context_id": strings(body["ctx"]),
        "n_masks": _array(body["nm"], "i"),
        "n_rois": _array(body["nr"], "i"),
        "values": [dict(zip(keys[offsets[i]:offsets[i + 1]], counts[offsets[i]:offsets[i + 1]]))
                   for i in range(CHUNK)],
        "meta": meta,
    }


def decode_chunk(data: bytes) -> dict[str, Any]:
    """A chunk stored as one msgpack map (0.1.0) as per-row lists: present, timestamp, id, context_id,
    n_masks, n_rois, values ({packed rgb: pixel count} per row) and meta ({dotted path: per-row values})."""
    body = msgpack.unpackb(data, raw=False)
    return _chunk_from(body, _strings, {path: _meta_column(item) for path, item in body["meta"].items()},
                       _strings(body["ids"]))


def _packed_ints(data: bytes, at: int) -> tuple[list[int], int]:
    """"Packed arrays", integers: (the values, the offset after them)."""
    tag, width, count, number = struct.unpack_from("<BB6xQq", data, at)
    at += 24
    if tag == ord("T"):  # a table of `number` int64 values, then `count` codes into it
        table = list(struct.unpack_from(f"<{number}q", data, at))
        at += 8 * number
        values = [table[int.from_bytes(data[at + i * width:at + (i + 1) * width], "little")] for i in range(count)]
    else:
        assert tag == ord("R"), tag  # the base `number`, then `count` offsets from it
        values = [(number + int.from_bytes(data[at + i * width:at + (i + 1) * width], "little") + 2**63) % 2**64 - 2**63
                  for i in range(count)]
    return values, at + count * width


def _packed_floats(data: bytes, at: int) -> tuple[list[float], int]:
    tag, width, count = struct.unpack_from("<BB6xQ", data, at)
    at += 16
    if tag == ord("D"):  # integers, each divided by 10**width
        whole, at = _packed_ints(data, at)
        return [float(n) / 10.0**width for n in whole], at
    code = {ord("F"): "d", ord("S"): "f"}[tag]
    return list(struct.unpack_from(f"<{count}{code}", data, at)), at + count * width


def _bits(data: bytes, at: int, n: int = CHUNK) -> tuple[list[bool], int]:
    return [bool(data[at + i // 8] >> (i % 8) & 1) for i in range(n)], at + (n + 7) // 8


def _field_strings(data: bytes, at: int = 0) -> list[str | None]:
    """"Chunk encoding", a string column: packed codes, then a msgpack array of the texts."""
    codes, at = _packed_ints(data, at)
    texts = msgpack.unpackb(data[at:], raw=False)
    return [None if c < 0 else texts[c] for c in codes]


def _field_ids(data: bytes, present: Any) -> list[str | None]:
    """"Chunk encoding", the ids field: the present rows' ids in row order, after their sizes."""
    method, width, shuffled, count = data[0], data[1], data[2], struct.unpack_from("<I", data, 4)[0]
    body = data[8:] if method == 0 else zstandard.ZstdDecompressor().decompress(data[8:])
    sizes = struct.unpack_from(f"<{count}{'BHI'[width // 2]}", body)
    if shuffled:  # byte j of id i at j * count + i: back to one id after another
        text = body[width * count:]
        body = body[:width * count] + bytes(text[j * count + i] for i in range(count) for j in range(sizes[0]))
    texts, at = [], width * count
    for size in sizes:
        texts.append(msgpack.unpackb(body[at:at + size], raw=False))
        at += size
    assert at == len(body) and len(texts) == sum(present)
    found = iter(texts)
    return [next(found) if has else None for has in present]


def _field_meta(data: bytes) -> tuple[str, list[Any]]:
    """"Chunk fields", a meta column: (its path, one value per row, None where absent)."""
    kind, size = data[:1], struct.unpack_from("<I", data, 4)[0]
    path = data[8:8 + size].decode("utf-8")
    start = 8 + size + -size % 8
    if kind == b"s":
        return path, _field_strings(data, start)
    present, at = _bits(data, start)
    values: list[Any] = {b"i": lambda: _packed_ints(data, at)[0], b"f": lambda: _packed_floats(data, at)[0],
                         b"b": lambda: _bits(data, at)[0], b"p": lambda: [True] * CHUNK,
                         b"o": lambda: msgpack.unpackb(data[at:])}[kind]()
    return path, [v if has else None for v, has in zip(values, present)]


def decode_fields(fields: dict[bytes, bytes]) -> dict[str, Any]:
    """A chunk stored field by field (feature ``column-fields``), as ``decode_chunk`` gives it."""
    sizes = _packed_ints(fields[b"vo"], 0)[0]  # values per row: the offsets are their running sums
    offsets = list(accumulate(sizes, initial=0))
    keys, counts = _packed_ints(fields[b"vk"], 0)[0], _packed_ints(fields[b"vc"], 0)[0]
    present = _bits(fields[b"_present"], 0)[0]

    def per_row(name: bytes) -> list[int]:  # rows where no frame lives read as 0, whatever is stored
        return [value if here else 0 for value, here in zip(_packed_ints(fields[name], 0)[0], present)]
    return {
        "present": present,
        "timestamp": per_row(b"ts"),
        "id": _field_ids(fields[b"ids"], present),
        "context_id": _field_strings(fields[b"ctx"]),
        "n_masks": per_row(b"nm"),
        "n_rois": per_row(b"nr"),
        "values": [dict(zip(keys[offsets[i]:offsets[i + 1]], counts[offsets[i]:offsets[i + 1]])) for i in range(CHUNK)],
        "meta": dict(_field_meta(value) for name, value in fields.items() if name.startswith(b"m:")),
        "meta_fields": {_field_meta(value)[0]: (name, chr(value[0])) for name, value in fields.items()
                        if name.startswith(b"m:")},  # path -> (field name, column kind)
    }


def read_columns(path: str | Path) -> dict[int, dict[str, Any]]:
    """Per version id: its stored chunks (chunk number -> decoded chunk), its dirty chunk numbers, and
    its frames by seq, to compare the two."""
    env = open_archive(path)
    out: dict[int, dict[str, Any]] = {}
    try:
        with env.begin() as txn:
            known = dictionaries(txn, env)
            for key, _ in _entries(txn, _db(env, txn, "versions")):
                fields: dict[int, dict[bytes, bytes]] = {}
                summary = None
                zone_maps: dict[bytes, bytes] = {}
                for k, v in _entries(txn, _db(env, txn, "columns"), key):  # key: version, chunk, field name
                    if len(k) == 8:  # "Column summary": chunk u64, frames u32, first and last row u16 each
                        summary = {row[0]: row[1:] for row in struct.iter_unpack("<QIHH", v)}
                        continue
                    if k[8:16] == ZONE_MARK:  # "Zone maps": the marker, then u64 block and field name
                        zone_maps[k[16:]] = v
                        continue
                    fields.setdefault(u64(k[8:16]), {})[k[16:]] = v
                out[u64(key)] = {
                    "chunks": {number: decode_chunk(f[b""]) if b"" in f else decode_fields(f)
                               for number, f in fields.items()},
                    "dirty": {u64(k[8:]) for k, _ in _entries(txn, _db(env, txn, "dirty"), key)},
                    "summary": summary,
                    "zones": _zone_maps(zone_maps) if b"" in zone_maps else None,
                    "frames": {seq: frame for _, seq, frame in frames(txn, env, known, key)},
                }
    finally:
        env.close()
    return out


def read_zone_map(data: bytes) -> dict[int, tuple[str, int, Any, Any]]:
    """"Zone maps": chunk number -> (kind, frames holding a value, lowest, highest)."""
    head, crc = struct.unpack_from("<4sI", data)
    if head != b"Z\0\0\0" or zlib.crc32(data[8:]) != crc:
        raise FormatError("a zone map has a wrong header or checksum")
    numbers, kinds, counts, lows, highs = msgpack.unpackb(data[8:], raw=False)
    return {number: (chr(kind), count, low, high) for (number,), kind, (count,), low, high in
            zip(struct.iter_unpack("<Q", numbers), kinds, struct.iter_unpack("<H", counts), lows, highs)}


def _zone_maps(entries: dict[bytes, bytes]) -> dict[bytes, dict[int, tuple[str, int, Any, Any]]]:
    """Field name -> its zone map's rows of every block."""
    out: dict[bytes, dict[int, tuple[str, int, Any, Any]]] = {}
    for key, value in entries.items():
        if key:
            rows = read_zone_map(value)
            assert all(number >> 8 == u64(key[:8]) for number in rows)  # a block holds 256 chunks
            out.setdefault(key[8:], {}).update(rows)
    return out


def zone_row(kind: str, values: list[Any]) -> tuple[str, int, Any, Any]:
    """A chunk's row of a zone map, by FORMAT.md's rules, for the values its frames hold (at least one)."""
    if kind in "op":
        return kind, len(values), None, None
    if kind == "f" and any(v != v for v in values):
        return kind, len(values), float("nan"), float("nan")
    low, high = min(values), max(values)
    if kind == "s" and max(len(low.encode()), len(high.encode())) > MAX_ZONE_TEXT:
        return kind, len(values), None, None
    return kind, len(values), low, high


def meta_paths(meta: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """(dotted path, value) of every meta entry, nested dicts walked."""
    out = []
    for key, value in meta.items():
        out.append((prefix + key, value))
        if isinstance(value, dict):
            out += meta_paths(value, prefix + key + ".")
    return out


def chunk_row_from_frame(frame: dict[str, Any]) -> dict[str, Any]:
    """What a chunk's row holds for a frame, by FORMAT.md's rules."""
    masks = [m for s in frame["sources"] for m in s["masks"]]
    values: dict[int, int] = {}
    for m in masks:
        for r, g, b, count in m.get("values") or ():
            key = (r << 16) | (g << 8) | b
            values[key] = values.get(key, 0) + count
    meta = {}
    for path, value in meta_paths(frame["meta"]):
        if value is not None:
            meta[path] = True if isinstance(value, (dict, list)) else value
    return {"timestamp": frame["timestamp"], "id": frame["id"], "context_id": frame["context_id"],
            "n_masks": len(masks), "n_rois": len(frame["rois"]), "values": values, "meta": meta}


def chunk_row(chunk: dict[str, Any], row: int) -> dict[str, Any]:
    return {"timestamp": chunk["timestamp"][row], "id": chunk["id"][row], "context_id": chunk["context_id"][row],
            "n_masks": chunk["n_masks"][row], "n_rois": chunk["n_rois"][row], "values": chunk["values"][row],
            "meta": {path: column[row] for path, column in chunk["meta"].items() if column[row] is not None}}


# ------------------------------------------------------------------------------ writing, from FORMAT.md

def _pack(kind: str, body: Any) -> bytes:
    return bytes((READS_VERSION,)) + KINDS[kind] + msgpack.packb(body, use_bin_type=True)


def write_archive(path: str | Path, versions: list[tuple[dict[str, Any], list[dict[str, Any]]]],
                  required_features: list[str] | None = None) -> None:
    """A new archive holding ``versions``: (version record, complete frame records) each, with
    frame_ids, index entries and a dirty mark per chunk (no stored scan columns)."""
    env = lmdb.open(str(path), subdir=False, max_dbs=64)
    dbs = {name: env.open_db(name.encode(), dupsort=name in INDEX_DBS, dupfixed=name in INDEX_DBS)
           for name in ("meta", "versions", "frames", "frame_ids", "dirty", "columns", "blobs", *INDEX_DBS)}
    fmt: dict[str, Any] = {"name": "maskstore", "version": READS_VERSION}
    if required_features:
        fmt["required_features"] = required_features
    with env.begin(write=True) as txn:
        txn.put(b"format", _pack("format", fmt), db=dbs["meta"])
        txn.put(b"next_version", struct.pack(">Q", len(versions) + 1), db=dbs["meta"])
        for vid, (rec, frames) in enumerate(versions, start=1):
            prefix = struct.pack(">Q", vid)
            txn.put(prefix, _pack("version", {**rec, "id": vid, "next_seq": len(frames), "count": len(frames)}),
                    db=dbs["versions"])
            for seq, frame in enumerate(frames):
                txn.put(prefix + struct.pack(">Q", seq), _pack("frame", frame), db=dbs["frames"])
                txn.put(prefix + text_key(frame["id"]), struct.pack(">Q", seq), db=dbs["frame_ids"])
                txn.put(prefix + struct.pack(">Q", seq >> 12), b"", db=dbs["dirty"])
                for name, key, value in expected_index_entries(vid, seq, frame):
                    txn.put(key, value, db=dbs[name])
    env.close()


if __name__ == "__main__":  # python tests/format_reader.py ARCHIVE: what it holds, as JSON
    import json
    import sys

    print(json.dumps(read_archive(sys.argv[1]), indent=1, ensure_ascii=False))
