"""Frame records sixteen to an LMDB entry, compressed together (FORMAT.md, "Frame groups").

A frame record is a few hundred bytes of msgpack that repeats its neighbours' ids, URIs and
timestamps. Compressed alone, even with the archive's dictionary, it kept about 100 bytes, and its
own LMDB entry added 26 more (key, node header, pointer): 149 bytes a frame at 1M frames, 60 % of
the file. The records of 16 consecutive seqs compressed as one zstd frame keep about 65 bytes each,
and reading one of them decompresses about 6 KB (5 µs, a quarter of decoding one record's msgpack);
readers keep the group they read last, so seqs read in order decompress each group once.

Every reader (``Records``) and writer (``write``) of the ``frames`` sub-database goes through this
module. Archives from before the ``frame-groups`` feature hold one record per seq: a read-only open
reads them through the same ``Records`` (``arc.frame_groups`` says which layout), a writable open
converts them once (``convert``).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator, Mapping
from itertools import accumulate
from typing import Any, NamedTuple

import lmdb

from . import compression, records
from .errors import ArchiveError, MaskstoreError
from .layout import U64, put_sorted, u64

GROUP_BITS = 4
GROUP_SEQS = 1 << GROUP_BITS
LOW_BITS = GROUP_SEQS - 1
KIND_GROUP = b"G"
GROUP_HEAD = bytes((records.ZSTD_FORMAT,)) + KIND_GROUP
NO_DICTIONARY = bytes(compression.ID_BYTES)  # the group is compressed without a dictionary
BODY_START = len(GROUP_HEAD) + compression.ID_BYTES
MAX_GROUP_BYTES = records.MAX_RECORD_BYTES  # what a group's body may decompress to

Member = bytes | memoryview


def group_base(seq: int) -> int:
    return seq & ~LOW_BITS


def group_name(base: int) -> str:
    """How messages name the group at ``base``."""
    return f"frame group of seqs {base}..{base + LOW_BITS}"


def key_seq(key: bytes, hint: str = "") -> int:
    """The seq a ``frames`` key names (a group's base, or in the layout before groups a frame's);
    ArchiveError unless the key is a version id and a seq."""
    if len(key) != 16:
        raise ArchiveError(f"frame record key {bytes(key)!r} is not a version id and a seq{hint}")
    return U64.unpack(key[8:])[0]


def check_base(number: int) -> None:
    """ArchiveError unless ``number``, a group key's seq, is a multiple of GROUP_SEQS."""
    if number & LOW_BITS:
        raise ArchiveError(f"a frame group has the key of seq {number}, which is not a multiple of {GROUP_SEQS}")


# ------------------------------------------------------------------------------ group bytes

def encode_group(members: Iterable[tuple[int, Member]], dictionary: bytes | None) -> bytes:
    """``02 'G' ‖ dictionary id (8; zeros: none) ‖ zstd(count (u8) ‖ offsets (u8 each, increasing)
    ‖ lengths (u32 LE each) ‖ records)`` of (offset 0..15 within the group, frame record) pairs."""
    members = sorted(members, key=lambda m: m[0])
    offsets = bytes(offset for offset, _ in members)
    lengths = struct.pack(f"<{len(members)}I", *(len(record) for _, record in members))
    body = b"".join((bytes((len(members),)), offsets, lengths, *(record for _, record in members)))
    if len(body) > MAX_GROUP_BYTES:
        raise MaskstoreError(f"frame records of {len(members)} consecutive frames take {len(body)} bytes; "
                             f"at most {MAX_GROUP_BYTES} fit in one archive entry")
    if dictionary is None:
        return GROUP_HEAD + NO_DICTIONARY + compression.compress_plain(body)
    return GROUP_HEAD + dictionary + compression.compressor(dictionary).compress(body)


class Group(NamedTuple):
    """A decompressed group: member ``i`` is at offset ``offsets[i]`` from the group's base, its
    record ``body[starts[i]:starts[i + 1]]``. A read of one frame slices one member out, no more."""

    offsets: bytes
    starts: list[int]
    body: memoryview

    def member(self, offset: int) -> memoryview | None:
        i = self.offsets.find(offset)
        return None if i < 0 else self.record(i)

    def record(self, i: int) -> memoryview:
        return self.body[self.starts[i]:self.starts[i + 1]]


def decode_group(data: Member, base: int) -> list[tuple[int, memoryview]]:
    """(seq, frame record as stored in the group: plain, or as conversion found it when it did not
    decompress) of every member; ArchiveError naming the group when its bytes are not what
    ``encode_group`` writes. A damaged member spoils only itself; a damaged group all sixteen."""
    group = read_group(data, base)
    return [(base + offset, group.record(i)) for i, offset in enumerate(group.offsets)]


def read_group(data: Member, base: int) -> Group:
    """``decode_group``'s work but the slicing: the checked header and body of a group."""
    what = group_name(base)
    if data[:2] != GROUP_HEAD:
        if data[:1] and data[0] > records.FORMAT_VERSION:
            raise ArchiveError(f"{what} is {records.newer_format_message(data[0])}")
        raise ArchiveError(f"{what} is damaged: it starts {bytes(data[:2])!r}, not {GROUP_HEAD!r}")
    if len(data) <= BODY_START:
        raise ArchiveError(f"{what} is damaged: only {len(data)} bytes")
    dictionary, frame = bytes(data[len(GROUP_HEAD):BODY_START]), bytes(data[BODY_START:])
    if dictionary == NO_DICTIONARY:
        try:
            body = compression.decompress_plain(frame, MAX_GROUP_BYTES)
        except ValueError as exc:
            raise ArchiveError(f"{what} is damaged: {exc}") from None
    else:
        body = compression.decompress(dictionary, frame, MAX_GROUP_BYTES, what)
    count = body[0] if body else 0
    head = 1 + 5 * count
    if not 1 <= count <= GROUP_SEQS or len(body) < head:
        raise ArchiveError(f"{what} is damaged: it says it holds {count} records")
    offsets = body[1:1 + count]
    if offsets != bytes(sorted(set(offsets))) or offsets[-1] > LOW_BITS:
        raise ArchiveError(f"{what} is damaged: its offsets {list(offsets)} are not increasing within 0..{LOW_BITS}")
    starts = list(accumulate(struct.unpack_from(f"<{count}I", body, 1 + count), initial=head))
    if starts[-1] != len(body):
        raise ArchiveError(f"{what} is damaged: its records take {starts[-1] - head} bytes, its body holds "
                           f"{len(body) - head}")
    return Group(offsets, starts, memoryview(body))  # each member is checked when it is decoded (records)


# ------------------------------------------------------------------------------ reading

class Records:
    """The frame records of one version as one transaction sees them: by seq, or in seq order."""

    def __init__(self, txn: lmdb.Transaction, arc: Any, prefix: bytes) -> None:
        self._txn, self._db, self._prefix = txn, arc.db("frames"), prefix
        self._grouped: bool = arc.frame_groups
        self._base = -1
        self._group: Group | None = None

    def plain(self, seq: int) -> Member | None:
        """The plain record (kind ``F``, not yet checked) of frame ``seq``, or None when it has none."""
        if not self._grouped:
            return records.plain_frame(self._txn.get(self._prefix + u64(seq), db=self._db), f"frame seq {seq}")
        base = seq & ~LOW_BITS
        if base != self._base:
            data = self._txn.get(self._prefix + u64(base), db=self._db)
            self._group = None if data is None else read_group(data, base)
            self._base = base
        found = None if self._group is None else self._group.member(seq - base)
        return None if found is None else records.plain_frame(found, f"frame seq {seq}")

    def frame(self, seq: int) -> dict[str, Any]:
        """Frame ``seq``'s dict; ArchiveError when it has no record (an index pointed at it) or a damaged one."""
        return records.decode_frame(self.plain(seq), f"frame seq {seq}")

    def items(self, start: int = 0, stop: int | None = None) -> Iterator[tuple[int, Member]]:
        """(seq, plain record) of every frame with ``start <= seq < stop``, in seq order."""
        for seq, stored in self.stored(start, stop):
            yield seq, records.plain_frame(stored, f"frame seq {seq}")

    def stored(self, start: int = 0, stop: int | None = None) -> Iterator[tuple[int, Member]]:
        """(seq, record as stored: plain, or compressed alone) of the frames in ``[start, stop)``, in seq order."""
        if start >= 2**64:
            return
        cursor = self._txn.cursor(db=self._db)
        if not cursor.set_range(self._prefix + u64(start & ~LOW_BITS if self._grouped else start)):
            return
        for key, data in cursor:
            if not key.startswith(self._prefix):
                return
            number = key_seq(key)
            if stop is not None and number >= stop:
                return
            if not self._grouped:
                yield number, data
                continue
            check_base(number)
            for seq, member in decode_group(data, number):
                if seq >= start and (stop is None or seq < stop):
                    yield seq, member

    def next_present(self, seq: int) -> int | None:
        """The first seq at or after ``seq`` that has a record, or None."""
        return next((found for found, _ in self.stored(seq)), None)


def every_record(txn: lmdb.Transaction, arc: Any) -> Iterator[Member]:
    """The plain record of every frame of every version, in key order: for walks over the whole
    archive (embedded files still named, compaction's training sample)."""
    for key, data in txn.cursor(db=arc.db("frames")):
        number, version = key_seq(key, "; run maskstore check"), U64.unpack(key[:8])[0]
        for seq, stored in decode_group(data, number) if arc.frame_groups else [(number, data)]:
            yield records.plain_frame(stored, f"frame seq {seq} of version {version}")


# ------------------------------------------------------------------------------ writing

def write(txn: lmdb.Transaction, db: Any, prefix: bytes, added: Mapping[int, Member],
          deleted: Iterable[int] = (), dictionary: bytes | None = None) -> None:
    """Store plain records at their seqs and remove the records of ``deleted``, reading and rewriting
    each touched group once (a group left empty is deleted)."""
    touched: dict[int, dict[int, Member | None]] = {}
    for seq in deleted:
        touched.setdefault(seq & ~LOW_BITS, {})[seq] = None
    for seq, record in added.items():
        touched.setdefault(seq & ~LOW_BITS, {})[seq] = record
    puts = []
    for base in sorted(touched):
        key = prefix + u64(base)
        old = txn.get(key, db=db)
        members: dict[int, Member | None] = {} if old is None else dict(decode_group(old, base))
        members.update(touched[base])
        kept = [(seq - base, record) for seq, record in members.items() if record is not None]
        if kept:
            puts.append((key, encode_group(kept, dictionary)))
        elif old is not None:
            txn.delete(key, db=db)
    put_sorted(txn, db, puts)


def recompressed(key: bytes, value: Member, dictionary: bytes) -> bytes:
    """A stored ``frames`` value compressed with ``dictionary`` (compaction), in its own layout."""
    if value[1:2] != KIND_GROUP:
        return records.compress_frames([bytes(records.plain_frame(value, f"frame {bytes(key).hex()}"))],
                                       dictionary)[0]
    base = U64.unpack(key[8:])[0]
    return encode_group([(seq - base, records.plain_frame(stored, f"frame seq {seq}"))
                         for seq, stored in decode_group(value, base)], dictionary)


def convert(txn: lmdb.Transaction, db: Any, dictionary: bytes | None) -> None:
    """Turn the one-record-per-seq ``frames`` of an archive from before ``frame-groups`` into groups,
    in the writable open's transaction. A record that does not decompress is kept as it was stored
    (readers and ``maskstore check`` still name it), so nothing is lost."""
    by_group: dict[bytes, list[tuple[int, Member]]] = {}
    for key, data in txn.cursor(db=db):
        seq = key_seq(key, "; open the archive read-only and run maskstore check")
        try:
            data = records.plain_frame(data, f"frame seq {seq}")
        except ArchiveError:
            data = bytes(data)
        by_group.setdefault(key[:8] + u64(seq & ~LOW_BITS), []).append((seq & LOW_BITS, bytes(data)))
    txn.drop(db, delete=False)
    txn.cursor(db=db).putmulti([(key, encode_group(members, dictionary)) for key, members in by_group.items()])
