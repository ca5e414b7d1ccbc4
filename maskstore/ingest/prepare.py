"""Batch preparation: frames in, a ``Prepared`` batch out, before any write transaction opens.

Normalizing, merging, decoding mask statistics (in the ``MaskDecoder`` pool), reading the files
``--embed`` copies in and encoding the records all happen here, so a bad frame fails the call before
anything is written, and the archive's write transaction only puts bytes.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, NamedTuple

from .. import _accel, records
from ..errors import FrameError, MaskError, MaskstoreError
from ..layout import MAX_KEY_TEXT, text_key
from ..media import BLOB_PREFIX, blob_digest, blob_uri, content_type_of, read_bytes
from ..model import Frame, merge_meta_type, normalize_frame, normalize_frame_dict, refuse_constructor_words
from ..stats import MaskDecoder

# Content types that ``content_type_of`` gave per file suffix, for the compiled encoder.
SUFFIX_TYPES: dict[str, str | None] = {}
_BLOB_MARK = BLOB_PREFIX.encode()


class Prepared(NamedTuple):
    """A batch ready to write, in columns: per frame its id, its record and the (dotted path, type)
    of its meta values; the index keys of the batch; and its embedded files by digest."""

    ids: list[str]
    records: list[bytes]
    types: list[tuple[tuple[str, str], ...]]
    postings: _accel.Postings
    blobs: dict[bytes, bytes]


class Preparer:
    """Prepares the batches of one archive and owns its mask-decoding pool (closed with the archive)."""

    def __init__(self, jobs: int | None = None) -> None:
        self.decoder = MaskDecoder(jobs)

    @property
    def decoded(self) -> int:
        """Masks decoded so far, for ingest reports."""
        return self.decoder.decoded

    def prepare(self, given: list[Frame | Mapping[str, Any]], embed: bool, read_blob: Callable[[str], bytes],
                resolve: Callable[[str], str]) -> Prepared:
        """The batch of ``given`` frames; ``read_blob`` and ``resolve`` are the archive's (embedded
        files, and URIs relative to its folder)."""
        if set(map(type, given)) - {dict}:
            given = [f.to_dict() if isinstance(f, Frame) else f for f in given]
        refuse_constructor_words(given)
        postings = _accel.Postings(text_key, MAX_KEY_TEXT)
        if embed:  # every frame the Python way: embedding rewrites URIs in the normalized dicts
            n = len(given)
            encoded, ids, types = [None] * n, [None] * n, [None] * n
        else:
            encoded, ids, types = _accel.encode_common(given, records.FRAME_HEAD, content_type_of,
                                                          SUFFIX_TYPES, postings)
        declined = [pos for pos, record in enumerate(encoded) if record is None]
        normalized = [normalize_frame(given[pos]) for pos in declined]
        dicts = [d for d, _ in normalized]
        for pos, (d, frame_types) in zip(declined, normalized):
            ids[pos], types[pos] = d["id"], tuple(frame_types)
        if len(set(ids)) != len(ids) or max(map(len, ids), default=0) * 4 > MAX_KEY_TEXT:
            check_ids(ids)
        self.decoder.fill(dicts, read_blob, resolve)
        blobs = embed_files(dicts, resolve) if embed else {}
        for pos, d, record in zip(declined, dicts, encode_records(dicts)):
            encoded[pos] = record
            postings.add_record(pos, d)
        return Prepared(ids, encoded, types, postings, blobs)

    def close(self) -> None:
        self.decoder.close()


def embed_files(dicts: list[dict[str, Any]], resolve: Callable[[str], str]) -> dict[bytes, bytes]:
    """Read every file the frames name into blobs (by sha256), rewriting their URIs to ``blob:``
    and keeping the old ones as ``original_uri``."""
    blobs: dict[bytes, bytes] = {}
    for d in dicts:
        for item, key in file_references(d):
            if item[key].startswith(BLOB_PREFIX):
                continue
            try:
                data = read_bytes(resolve(item[key]))
            except MaskstoreError as exc:
                raise MaskError(f"frame {d['id']!r}: {exc}") from None
            uri = blob_uri(data)
            blobs[bytes.fromhex(uri[len(BLOB_PREFIX):])] = data
            item["original_" + key], item[key] = item[key], uri
    return blobs


def encode_records(frames: list[dict[str, Any]]) -> list[bytes]:
    """The frame records, or a FrameError naming the first frame that JSON can carry but the archive
    cannot store."""
    try:
        return records.encode_frames(frames)
    except (UnicodeEncodeError, OverflowError, ValueError, TypeError):
        for frame in frames:
            try:
                records.encode_frame(frame)
            except (UnicodeEncodeError, OverflowError, ValueError, TypeError) as exc:
                raise FrameError(f"frame {frame['id']!r} cannot be stored: {exc} (strings must be valid "
                                 "Unicode without lone surrogates, integers within 64 bits)") from None
        raise


def file_references(frame: Mapping[str, Any]) -> Iterator[tuple[dict[str, Any], str]]:
    """(dict, key) of every file a frame dict names: source and mask ``uri``s and a mask's
    ``instance_uri`` (Cityscapes instanceIds), the files ``--embed`` copies in."""
    for source in frame["sources"]:
        yield source, "uri"
        for mask in source["masks"]:
            yield mask, "uri"
            if isinstance(mask.get("instance_uri"), str):
                yield mask, "instance_uri"


def check_blobs_present(batch: Prepared, has_blob: Callable[[bytes], bool], where: str) -> None:
    """Frames may name embedded files (``blob:sha256:...``) only when the archive (``where``) holds
    them: a frame moved from another archive without its files would pass ingest and fail at render.
    Records are scanned as bytes first, so batches without blob URIs cost one substring search per
    record. ``has_blob`` looks a digest up in the writer's transaction (the batch's own are in)."""
    for frame_id, record in zip(batch.ids, batch.records):
        if _BLOB_MARK not in record:
            continue
        for item, field in file_references(records.decode_frame(record)):
            uri = item[field]
            if not uri.startswith(BLOB_PREFIX):
                continue
            key = blob_digest(uri[len(BLOB_PREFIX):])
            if key is None:
                raise FrameError(f"frame {frame_id!r}: {uri} is not a valid blob URI (blob:sha256: and 64 hex digits)")
            if not has_blob(key):
                raise FrameError(f"frame {frame_id!r}: {uri} is not embedded in {where}; copy frames "
                                 "between archives with their files (ingest the original files with --embed)")


def check_ids(ids: list[str]) -> None:
    """Frame ids of one call are unique and short enough to be keys (4 UTF-8 bytes a character at most,
    so the caller checks only batches with a long id, or a repeated one)."""
    seen: set[str] = set()
    for frame_id in ids:
        if frame_id in seen:
            raise FrameError(f"frame id {frame_id!r} appears twice in one call; ids must be unique")
        if len(frame_id.encode("utf-8", errors="surrogatepass")) > MAX_KEY_TEXT:
            raise FrameError(f"frame id {frame_id[:40]!r}... is longer than {MAX_KEY_TEXT} bytes")
        seen.add(frame_id)


def merge_meta_types(known: dict[str, str], batch: Prepared) -> None:
    """The version's meta types, with the batch's merged in. Frames of a batch mostly share one
    list of types, so each distinct list is merged once, in order of first use: a conflict then
    names the first frame that has it, as a frame-by-frame merge would."""
    for types in dict.fromkeys(batch.types):
        for path, kind in types:
            if known.get(path) != kind:
                merge_meta_type(known, path, kind, batch.ids[batch.types.index(types)])


def partial_frame_dict(frame: Frame | Mapping[str, Any]) -> dict[str, Any]:
    """The fields a caller really gave, for merging: defaults must not overwrite stored values."""
    if isinstance(frame, Mapping):
        return dict(frame)
    d = frame.to_dict()
    if frame._timestamp is None:
        d.pop("timestamp")
    if frame._context_id is None:
        d.pop("context_id")
    return d


def _merge_by_id(old: list[dict], new: list[dict]) -> list[dict]:
    out = {item["id"]: item for item in old}
    out.update({item["id"]: item for item in new})
    return list(out.values())


def merge_frame(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """update_frames(merge=True): meta merges key by key, sources and ROIs by id, the rest replaces."""
    merged = {**old, **{k: v for k, v in new.items() if k not in ("meta", "sources", "rois")}}
    merged["meta"] = {**old.get("meta", {}), **normalize_frame_dict({"id": old["id"], "meta": new.get("meta")})["meta"]}
    merged["sources"] = _merge_by_id(old["sources"], normalize_frame_dict({"id": old["id"], "sources": new.get("sources") or []})["sources"])
    merged["rois"] = _merge_by_id(old["rois"], normalize_frame_dict({"id": old["id"], "rois": new.get("rois") or []})["rois"])
    return merged


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector around a batch: a batch allocates many small containers
    that all live until it ends, so generational collections would only rescan them (a quarter of
    ingest time when measured)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
