"""Frame groups (``maskstore.frame_groups``): the group bytes round-trip, any other bytes are refused
as a damaged group, writes and deletes across group boundaries agree with a dict model, and damage
to one group costs its sixteen frames and no others."""

from __future__ import annotations

from pathlib import Path

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from maskstore import Archive, ArchiveError, compression, frame_groups, records
from maskstore.check import check_archive
from maskstore.layout import u64

members = st.dictionaries(st.integers(0, frame_groups.LOW_BITS), st.binary(max_size=300), min_size=1)


@settings(max_examples=200, deadline=None)
@given(members, st.sampled_from([0, 16, 2**64 - 16]))
def test_a_group_round_trips(given, base):
    data = frame_groups.encode_group(given.items(), None)
    assert data[:frame_groups.BODY_START] == frame_groups.GROUP_HEAD + frame_groups.NO_DICTIONARY
    assert [(seq, bytes(record)) for seq, record in frame_groups.decode_group(data, base)] == \
        [(base + offset, record) for offset, record in sorted(given.items())]


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200), st.booleans())
def test_any_body_decodes_to_members_in_order_or_a_damaged_group(body, compressed):
    """Bytes a hostile file could hold: as a whole value, or as the body of a well-formed zstd frame."""
    data = (frame_groups.GROUP_HEAD + frame_groups.NO_DICTIONARY + compression.compress_plain(body)
            if compressed else body)
    try:
        found = frame_groups.decode_group(data, 32)
    except ArchiveError as exc:
        assert "frame group of seqs 32..47" in str(exc)
        return
    seqs = [seq for seq, _ in found]
    assert seqs == sorted(set(seqs)) and all(32 <= seq < 48 for seq in seqs) and found


def frame(fid: str, n: int) -> dict:
    return {"id": fid, "timestamp": n, "context_id": f"c{n % 3}", "meta": {"n": n},
            "sources": [{"id": "s", "uri": f"/img/{fid}.png", "masks": []}]}


operations = st.lists(st.tuples(st.sampled_from(["add", "delete"]), st.lists(st.integers(0, 60), max_size=40)),
                      min_size=1, max_size=8)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(operations, st.integers(0, 3))
def test_adds_replaces_and_deletes_agree_with_a_model(tmp_path_factory, ops, generation):
    """Batches that start, fill, replace into and empty groups; after each, the records read back
    by id, in seq order and through a query are the model's, and check finds nothing."""
    path = tmp_path_factory.mktemp("groups") / "a.maskstore"
    model: dict[str, dict] = {}
    with Archive(path, jobs=1) as ar:
        v = ar.create_version(dataset_name="d", version_name="v")
        for kind, numbers in ops:
            ids = list(dict.fromkeys(f"f{n:02d}" for n in numbers))
            if kind == "add":
                batch = [frame(fid, int(fid[1:]) + 100 * generation) for fid in ids]
                v.add_frames(batch)
                model.update((f["id"], f) for f in batch)
            elif ids := [fid for fid in ids if fid in model]:
                v.delete_frames(ids)
                for fid in ids:
                    del model[fid]
            stored = {f["id"]: f for f in v.frame_dicts()}
            assert {fid: f["timestamp"] for fid, f in stored.items()} == \
                {fid: f["timestamp"] for fid, f in model.items()}
            assert sorted(v.ids("")) == sorted(model)
            assert all(v.get_frame_dict(fid)["meta"] == f["meta"] for fid, f in model.items())
            assert check_archive(ar) == []
        groups = ar.read(lambda t: [(bytes(k), bytes(d)) for k, d in t.cursor(db=ar.db("frames"))])
    seqs = [seq for key, data in groups
            for seq, _ in frame_groups.decode_group(data, int.from_bytes(key[8:], "big"))]
    assert len(seqs) == len(model) and all(int.from_bytes(k[8:], "big") % 16 == 0 for k, _ in groups)


@pytest.fixture
def archive_of_40(tmp_path: Path) -> Path:
    path = tmp_path / "forty.maskstore"
    with Archive(path, jobs=1) as ar:
        ar.create_version(dataset_name="d", version_name="v").add_frames([frame(f"f{n:02d}", n) for n in range(40)])
    return path


def test_a_damaged_group_costs_its_sixteen_frames_and_no_others(archive_of_40: Path):
    with Archive(archive_of_40, jobs=1) as ar:
        v = ar.get_version("d", "v")
        key = v.prefix + u64(16)

        def damage(txn):
            data = bytearray(txn.get(key, db=ar.db("frames")))
            data[-3] ^= 0xFF  # inside the zstd frame: its checksum fails
            txn.put(key, bytes(data), db=ar.db("frames"))
        ar.write(damage)
        with pytest.raises(ArchiveError, match=r"frame group of seqs 16\.\.31 .*damaged"):
            v.get_frame("f20")
        assert v.get_frame("f15").id == "f15" and v.get_frame("f32").id == "f32"
        assert any("frame group of seqs 16..31" in p.message for p in check_archive(ar))


def test_a_damaged_record_inside_an_intact_group_is_that_frame_only(archive_of_40: Path):
    with Archive(archive_of_40, jobs=1) as ar:
        v = ar.get_version("d", "v")
        key = v.prefix + u64(0)

        def plant(txn):
            found = {seq: bytes(m) for seq, m in frame_groups.decode_group(txn.get(key, db=ar.db("frames")), 0)}
            found[3] = records.FRAME_HEAD + msgpack.packb([1, 2, 3])  # a record that is not a map
            txn.put(key, frame_groups.encode_group(found.items(), None), db=ar.db("frames"))
        ar.write(plant)
        with pytest.raises(ArchiveError, match="frame 'f03' record is damaged"):
            v.get_frame("f03")
        assert [v.get_frame(f"f{n:02d}").id for n in (2, 4)] == ["f02", "f04"]
        assert any("frame seq 3 record is damaged" in p.message for p in check_archive(ar))


def test_a_group_key_off_the_sixteen_grid_is_damage(archive_of_40: Path):
    with Archive(archive_of_40, jobs=1) as ar:
        v = ar.get_version("d", "v")
        ar.write(lambda txn: txn.put(v.prefix + u64(41), txn.get(v.prefix + u64(32), db=ar.db("frames")),
                                     db=ar.db("frames")))
        assert any("seq 41, which is not a multiple of 16" in p.message for p in check_archive(ar))
        with pytest.raises(ArchiveError, match="not a multiple of 16"):
            list(v.frame_dicts())


def test_groups_are_compressed_with_the_archive_dictionary_once_it_has_one(tmp_path: Path):
    path = tmp_path / "big.maskstore"
    with Archive(path, jobs=1) as ar:
        v = ar.create_version(dataset_name="d", version_name="v")
        v.add_frames([frame(f"f{n:05d}", n) for n in range(compression.TRAIN_MIN_RECORDS)])
        values = ar.read(lambda t: [bytes(d) for _, d in t.cursor(db=ar.db("frames"))])
        current = ar.read(lambda t: bytes(t.get(b"zstd_current", db=ar.db("meta"))))
    assert len(values) == compression.TRAIN_MIN_RECORDS // frame_groups.GROUP_SEQS
    assert {d[2:frame_groups.BODY_START] for d in values} == {current}


def test_a_truncated_id_entry_is_an_archive_error_naming_the_frame(archive_of_40: Path):
    """Found by the tampering fuzz: a ``frame_ids`` value shorter than a seq was a struct.error."""
    with Archive(archive_of_40, jobs=1) as ar:
        v = ar.get_version("d", "v")
        ar.write(lambda txn: txn.put(v.prefix + b"f05", b"\x00\x01", db=ar.db("frame_ids")))
        for attempt in (lambda: v.get_frame("f05"), lambda: v.delete_frames(["f05"]),
                        lambda: v.add_frames([frame("f05", 5)]), lambda: v.ids('id == "f05"')):
            with pytest.raises(ArchiveError, match="id table entry of frame 'f05' is damaged"):
                attempt()
