"""Packed posting blocks (``maskstore.postings``): the block bytes round-trip, merges and deletes agree
with a set model, damaged blocks are refused by name, and archives in the dupsort layout from before
``packed-postings`` are read as they are and converted by a writable open."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import lmdb
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import format_reader
from maskstore import Archive, ArchiveError, postings, records
from maskstore.check import check_archive
from maskstore.layout import u64

offset_sets = st.sets(st.integers(0, postings.BLOCK_SEQS - 1), min_size=1, max_size=postings.BLOCK_SEQS)


@settings(max_examples=300, deadline=None)
@given(offset_sets)
def test_a_block_round_trips_in_the_smaller_container(offsets):
    data = postings.encode_block(np.array(sorted(offsets), np.uint16))
    assert postings.decode_block(data).tolist() == sorted(offsets)
    assert len(data) == (2 * len(offsets) if len(offsets) <= postings.MAX_ARRAY else postings.BITMAP_BYTES)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_any_bytes_decode_to_offsets_in_order_or_a_block_error(data):
    try:
        offsets = postings.decode_block(data)
    except postings.BlockError:
        return
    assert len(offsets) and (np.diff(offsets.astype(int)) > 0).all() and offsets[-1] < postings.BLOCK_SEQS


class ScratchIndex:
    """What ``postings`` needs of an archive, over a plain LMDB file: the index sub-databases, packed."""

    packed_indexes = True

    def __init__(self, path: Path) -> None:
        self.env = lmdb.open(str(path), subdir=False, max_dbs=8, map_size=1 << 28)
        self.dbs = {name: self.env.open_db(name.encode()) for name in format_reader.INDEX_DBS}

    def db(self, name: str) -> object:
        return self.dbs[name]


KEYS = [b"a", b"ab", b"\x00", b"\xff" * 33, bytes([1, 2, 3])]  # one key the start of another; NUL; hashed
seq_lists = st.lists(st.integers(0, 5 * postings.BLOCK_SEQS), max_size=300)
operations = st.lists(st.tuples(st.sampled_from(["add", "remove"]), st.sampled_from(KEYS), seq_lists,
                                st.sampled_from([1, 2])), min_size=1, max_size=12)


@settings(max_examples=120, deadline=None)
@given(operations)
def test_merges_and_deletes_agree_with_a_set_model(ops):
    """Batches of adds and removes (two versions side by side) leave exactly the model's seqs, whole
    and in seq windows, and every stored block is in its smallest container and never empty."""
    model: dict[tuple[int, bytes], set[int]] = {}
    with tempfile.TemporaryDirectory() as folder:
        index = ScratchIndex(Path(folder) / "ix.lmdb")
        for op, key, seqs, version in ops:
            arrays = {key: postings.sorted_unique([np.array(seqs, np.uint64)])}
            with index.env.begin(write=True) as txn:
                if op == "add":
                    postings.update(txn, index, u64(version), added={"ix_roi": arrays})
                else:
                    postings.update(txn, index, u64(version), removed={"ix_roi": arrays})
            found = model.setdefault((version, key), set())
            found |= set(seqs) if op == "add" else set()
            found -= set(seqs) if op == "remove" else set()
        with index.env.begin() as txn:
            for (version, key), want in model.items():
                assert postings.read(txn, index, "ix_roi", u64(version), key).tolist() == sorted(want)
                window = [(100, 5000), (9000, 9001), (12000, 30000)]
                inside = [s for s in sorted(want) if any(a <= s < b for a, b in window)]
                assert postings.read(txn, index, "ix_roi", u64(version), key, window).tolist() == inside
            for version in (1, 2):
                assert postings.keys(txn, index, "ix_roi", u64(version)) == \
                    sorted((k for (v, k), want in model.items() if v == version and want),
                           key=lambda k: (len(k), k))
            for raw, data in txn.cursor(db=index.db("ix_roi")):
                n = len(postings.decode_block(bytes(data)))
                assert n and len(data) == (2 * n if n <= postings.MAX_ARRAY else postings.BITMAP_BYTES)
        index.env.close()


# ------------------------------------------------------------------------------ archives

def frames(n: int) -> list[dict]:
    return [{"id": f"f{i}", "timestamp": i, "context_id": f"c{i % 3}", "rois": [{"label": ["car"]}] if i % 4 else [],
             "sources": [{"uri": "a.png", "masks": [{"uri": "m.png", "values": [[i % 5, 0, 0, 10], [9, 9, 9, 1]]}]}]}
            for i in range(n)]


QUERIES = ['context_id == "c1"', "mask.value == [2, 0, 0]", 'roi.label == "car"', "mask.value == [9, 9, 9]"]


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("postings") / "t.maskstore"
    with Archive(path, jobs=1) as ar:
        v = ar.create_version(dataset_name="d", version_name="v")
        v.add_frames(frames(5000))  # two chunks: 4096 + 904 seqs; (9, 9, 9) a bitmap, the rest arrays
    return path


def answers(path: Path, readonly: bool = True) -> dict[str, list[str]]:
    with Archive(path, readonly=readonly) as ar:
        v = ar.get_version("d", "v")
        return {q: v.ids(q) for q in QUERIES}


def test_queries_answer_as_the_records_say(template):
    got = answers(template)
    assert got['context_id == "c1"'] == [f"f{i}" for i in range(5000) if i % 3 == 1]
    assert got["mask.value == [2, 0, 0]"] == [f"f{i}" for i in range(5000) if i % 5 == 2]
    assert got['roi.label == "car"'] == [f"f{i}" for i in range(5000) if i % 4]
    assert len(got["mask.value == [9, 9, 9]"]) == 5000


def blocks(path: Path, name: str) -> list[tuple[bytes, bytes]]:
    env = format_reader.open_archive(path)
    with env.begin() as txn:
        found = [(bytes(k), bytes(v)) for k, v in txn.cursor(db=env.open_db(name.encode(), txn=txn, create=False))]
    env.close()
    return found


def put_raw(path: Path, name: str, key: bytes, value: bytes) -> None:
    env = lmdb.open(str(path), subdir=False, max_dbs=32)
    with env.begin(write=True) as txn:
        txn.put(key, value, db=env.open_db(name.encode(), txn=txn, create=False))
    env.close()


damage = st.tuples(st.sampled_from(["ix_value", "ix_context", "ix_roi"]), st.integers(0, 10**6),
                   st.sampled_from(["truncate", "flip", "extend", "empty"]), st.integers(0, 10**6), st.integers(1, 255))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(damage)
def test_a_damaged_block_is_refused_by_name_or_found_by_check_never_a_traceback(template, tmp_path, case):
    """Truncated, flipped, extended or emptied block bytes: a query either answers or raises an
    ArchiveError naming the index; check always reports the index; repair restores every answer."""
    name, pick, how, where, xor = case
    path = tmp_path / f"damaged-{name}-{pick}-{how}-{where}-{xor}.maskstore"
    shutil.copyfile(template, path)
    key, value = blocks(path, name)[pick % len(blocks(path, name))]
    at = where % len(value)
    new = {"truncate": value[:at], "flip": value[:at] + bytes([value[at] ^ xor]) + value[at + 1:],
           "extend": value + bytes([xor, 0]), "empty": b""}[how]
    put_raw(path, name, key, new)
    for query in QUERIES:
        try:
            with Archive(path, readonly=True) as ar:
                ar.get_version("d", "v").ids(query)
        except ArchiveError as exc:
            assert f"index {name}" in str(exc) and "check --repair" in str(exc), str(exc)
    with Archive(path) as ar:
        problems = [p.message for p in check_archive(ar)]
        words = {"ix_value": "value index", "ix_context": "context index", "ix_roi": "ROI label index"}[name]
        assert problems and all(words in p for p in problems), problems
        assert check_archive(ar, repair=True) == []
    assert answers(path) == answers(template)


def test_an_index_whose_flags_disagree_with_the_format_record_is_refused(template, tmp_path):
    path = tmp_path / "a.maskstore"
    shutil.copyfile(template, path)
    env = lmdb.open(str(path), subdir=False, max_dbs=32)
    with env.begin(write=True) as txn:
        txn.drop(env.open_db(b"ix_mask", txn=txn), delete=True)
        env.open_db(b"ix_mask", txn=txn, dupsort=True, dupfixed=True)
    env.close()
    with pytest.raises(ArchiveError, match="index ix_mask is stored with one entry per posting"):
        Archive(path, readonly=True)


def test_a_dupsort_archive_is_read_as_it_is_and_converted_by_a_writable_open(template, tmp_path):
    """A format 2 archive from before packed-postings (FORMAT.md's dupsort layout, written by the
    independent writer) answers read-only without a change to the file; a writable open converts
    every index in place, lists the feature, and the answers stay the same."""
    path = tmp_path / "old.maskstore"
    with Archive(template, readonly=True) as ar:
        stored = list(ar.get_version("d", "v").frame_dicts())
    version = {"dataset": "d", "name": "v", "parent": None, "description": "", "meta": {}, "state": "draft",
               "mask_labels": [], "label_colors": {}, "meta_types": {}, "generation": 0}
    format_reader.write_archive(path, [(version, stored)], required_features=["column-fields"])
    before = path.read_bytes()
    assert answers(path) == answers(template)
    assert path.read_bytes() == before
    assert len(blocks(path, "ix_value")) == sum(len(f["sources"][0]["masks"][0]["values"]) for f in stored)
    with Archive(path) as ar:
        assert ar.packed_indexes and check_archive(ar) == []
        fmt = records.decode_format(ar.read(lambda t: t.get(b"format", db=ar.db("meta"))))
    assert records.PACKED_POSTINGS in fmt["required_features"] and records.FRAME_GROUPS in fmt["required_features"]
    assert blocks(path, "ix_value") == blocks(template, "ix_value")
    assert answers(path) == answers(template)
    assert format_reader.index_check(path)[0] == format_reader.index_check(path)[1]
