"""The archive: versions, labels, atomic frame writes, indexes, embedding, growth, reopening."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import lmdb
import numpy as np
import pytest
from PIL import Image

from maskstore import (Archive, ArchiveError, FrameError, FrameNotFoundError, MaskError, ReadOnlyError,
                       SingleFrame, VersionNotFoundError)
from maskstore.check import check_archive
from maskstore.query import columns
from maskstore import postings, records
from maskstore.records import encode_format

CITY = "mmsegmentation_cityscapes/frankfurt_000000_000294"


def write_png(path: Path, array: np.ndarray) -> str:
    Image.fromarray(array).save(path)
    return str(path)


@pytest.fixture
def pair(tmp_path):
    img = write_png(tmp_path / "img.png", np.zeros((4, 6, 3), np.uint8))
    mask = write_png(tmp_path / "mask.png", np.array([[0] * 6, [1] * 6, [1] * 6, [2] * 6], np.uint8))
    return img, mask


def test_seed_example_runs_and_reopens_in_another_process(tmp_path, pair):
    img, mask = pair
    path = tmp_path / "city.maskstore"
    ar = Archive(path)
    v = ar.create_version(dataset_name="Example", version_name="v1", parent=None)
    v.add_frames([SingleFrame(source=img, mask_source=mask, context_id="car_1", timestamp=1)])
    v.set_masks_labels({(0, 0, 0): ["background"], (1, 1, 1): ["person", "sitting"], (2, 2, 2): ["cat"]})
    ar.close()
    code = textwrap.dedent(f"""
        from maskstore import Archive
        with Archive({str(path)!r}, readonly=True) as ar:
            v = ar.get_version("Example", "v1")
            f = next(iter(v))
            print(len(v), f.context_id, f.timestamp, f.sources[0].masks[0].values, v.get_masks_labels())
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == ("1 car_1 1 [[0, 0, 0, 6], [1, 1, 1, 12], [2, 2, 2, 6]] {(0, 0, 0): ['background'], "
                           "(1, 1, 1): ['person', 'sitting'], (2, 2, 2): ['cat']}")


def test_versions_get_list_and_missing(archive):
    a = archive.create_version("A", "v1")
    archive.create_version("B", "v1")
    assert archive.get_version("A", "v1") == a
    assert [(v.dataset_name, v.version_name) for v in archive.versions()] == [("A", "v1"), ("B", "v1")]
    with pytest.raises(VersionNotFoundError, match="A/v2") as err:
        archive.get_version("A", "v2")
    assert isinstance(err.value, KeyError)
    with pytest.raises(FrameError, match="exists already"):
        archive.create_version("A", "v1")


def test_child_version_copies_parent_and_never_touches_it(archive, pair):
    img, mask = pair
    parent = archive.create_version("A", "v1")
    parent.add_frames([SingleFrame(source=img, mask_source=mask, id="f1"), SingleFrame(source=img, id="f2")])
    parent.set_masks_labels({(1, 1, 1): ["person"]})
    child = archive.create_version("A", "v2", parent=parent)
    assert [f.id for f in child] == ["f1", "f2"] and child.get_masks_labels() == {(1, 1, 1): ["person"]}
    assert child.parent == parent
    child.delete_frames(["f1"])
    child.add_frames([SingleFrame(source=img, id="f3")])
    child.set_masks_labels({(2, 2, 2): ["cat"]})
    assert [f.id for f in parent] == ["f1", "f2"] and parent.get_masks_labels() == {(1, 1, 1): ["person"]}
    assert [f.id for f in child] == ["f2", "f3"]
    assert check_archive(archive) == []


def test_publish_makes_version_read_only(version, pair):
    version.publish()
    for write in (lambda: version.add_frames([SingleFrame(source=pair[0])]),
                  lambda: version.set_masks_labels({}), lambda: version.delete_frames([])):
        with pytest.raises(ReadOnlyError, match="published"):
            write()


def test_read_only_archive_refuses_writes(tmp_path):
    path = tmp_path / "a.maskstore"
    Archive(path).close()
    with Archive(path, readonly=True) as ar, pytest.raises(ReadOnlyError, match="read-only"):
        ar.create_version("A", "v1")


def test_labels_and_colors(version):
    version.set_masks_labels({(0, 0, 0): ["background"], 7: ["road"]})
    assert version.get_masks_labels() == {(0, 0, 0): ["background"], (7, 7, 7): ["road"]}
    assert version.mask_labels[1] == {"value": [7, 7, 7], "labels": ["road"]}
    version.set_label_colors({"road": "#804080", "car": (0, 0, 142)})
    assert version.get_label_colors() == {"road": (128, 64, 128), "car": (0, 0, 142)}
    with pytest.raises(FrameError, match="0..255"):
        version.set_masks_labels({(0, 0, 300): ["x"]})


def test_add_replace_update_merge_delete(version, pair):
    img, mask = pair
    version.add_frames([SingleFrame(source=img, id="a", meta={"city": "x", "n": 1}, timestamp=5),
                        SingleFrame(source=img, id="b")])
    version.add_frames([SingleFrame(source=img, id="a", meta={"city": "y"})])  # replace
    assert version.get_frame("a").meta == {"city": "y"} and version.get_frame("a").timestamp == 0
    assert [f.id for f in version] == ["a", "b"] and len(version) == 2
    version.update_frames([{"id": "a", "meta": {"weather": "rain"}}], merge=True)
    assert version.get_frame("a").meta == {"city": "y", "weather": "rain"}
    version.update_frames([SingleFrame(source=img, id="b", context_id="drive")], merge=False)
    assert version.get_frame("b").context_id == "drive"
    with pytest.raises(FrameNotFoundError):
        version.update_frames([SingleFrame(source=img, id="zzz")])
    version.delete_frames(["a"])
    assert len(version) == 1 and "a" not in version and "b" in version
    with pytest.raises(FrameNotFoundError) as err:
        version.get_frame("a")
    assert isinstance(err.value, KeyError)


def test_same_image_again_updates_instead_of_duplicating(version, pair):
    version.add_frames([SingleFrame(source=pair[0], mask_source=pair[1])])
    version.add_frames([SingleFrame(source=pair[0], mask_source=pair[1], timestamp=9)])
    assert len(version) == 1 and next(iter(version)).timestamp == 9


def snapshot(version):
    return [f.to_dict() for f in version], version.record()


@pytest.mark.parametrize("bad, error", [
    (lambda img, d: SingleFrame(source=img, mask_source=str(d / "missing.png"), id="bad"), MaskError),
    (lambda img, d: SingleFrame(source=img, id="dup"), FrameError),
    (lambda img, d: SingleFrame(source=img, id="bad", meta={"n": "a string"}), FrameError),
    (lambda img, d: {"id": "bad", "timestamp": "noon"}, FrameError),
])
def test_a_bad_frame_leaves_nothing_of_its_batch(version, pair, tmp_path, bad, error):
    img, mask = pair
    version.add_frames([SingleFrame(source=img, id="keep", meta={"n": 1})])
    before = snapshot(version)
    batch = [SingleFrame(source=img, mask_source=mask, id="dup"), SingleFrame(source=img, id="new", meta={"n": 2}),
             bad(img, tmp_path)]
    with pytest.raises(error):
        version.add_frames(batch)
    assert snapshot(version) == before
    assert check_archive(version.archive) == []


def test_missing_mask_error_names_frame_and_path(version, pair, tmp_path):
    missing = tmp_path / "nope.png"
    with pytest.raises(MaskError, match=rf"frame 'f9'.*{missing.name}"):
        version.add_frames([SingleFrame(source=pair[0], mask_source=str(missing), id="f9")])


def test_missing_source_of_a_masked_frame_is_an_error(version, pair, tmp_path):
    with pytest.raises(MaskError, match=r"frame 'f9'.*gone\.png"):
        version.add_frames([SingleFrame(source=str(tmp_path / "gone.png"), mask_source=pair[1], id="f9")])


def test_conflicting_meta_types_across_batches(version, pair):
    version.add_frames([SingleFrame(source=pair[0], id="a", meta={"n": 1, "w": {"x": "s"}})])
    version.add_frames([SingleFrame(source=pair[0], id="b", meta={"n": 2.5})])  # int widens to float
    with pytest.raises(FrameError, match=r"meta\.w\.x is a int here but a str"):
        version.add_frames([SingleFrame(source=pair[0], id="c", meta={"w": {"x": 3}})])


def test_size_mismatch_is_stored_and_flagged_by_check(version, tmp_path):
    img = write_png(tmp_path / "big.png", np.zeros((8, 8, 3), np.uint8))
    mask = write_png(tmp_path / "small.png", np.zeros((4, 4), np.uint8))
    version.add_frames([SingleFrame(source=img, mask_source=mask, id="f")])
    problems = check_archive(version.archive)
    assert [p.severity for p in problems] == ["warning"] and "4x4 but the source is 8x8" in problems[0].message


def test_check_catches_a_broken_index_entry_and_repair_fixes_it(version, pair):
    img, mask = pair
    version.add_frames([SingleFrame(source=img, mask_source=mask, id="f1", context_id="c1")])
    arc = version.archive
    arc.write(lambda t: t.delete(postings.block_key(version.prefix, b"c1", 0), db=arc.db("ix_context")))
    arc.write(lambda t: t.put(postings.block_key(version.prefix, bytes([9, 9, 9]), 0),
                              postings.encode_block(np.array([0], np.uint16)), db=arc.db("ix_value")))
    messages = [str(p) for p in check_archive(arc)]
    assert messages == ["error: version Example/v1, frame f1: context id 'c1' is not in the context index",
                        "error: version Example/v1, frame f1: the value index lists the frame under mask value "
                        "(9, 9, 9), which the frame does not have"]
    assert check_archive(arc, repair=True) == []


def test_real_images_ingest_with_right_statistics(version, shared_data):
    frames = [SingleFrame(source=str(shared_data / f"{CITY}_leftImg8bit.png"),
                          mask_source=str(shared_data / f"{CITY}_gtFine_labelIds.png"), id="city"),
              SingleFrame(source=str(shared_data / "labelme_voc/JPEGImages/2011_000003.jpg"),
                          mask_source=str(shared_data / "labelme_voc/SegmentationClass/2011_000003.png"), id="voc")]
    version.add_frames(frames)
    for frame in version:
        mask = frame.sources[0].masks[0]
        rgb = np.asarray(Image.open(mask.uri).convert("RGB")).reshape(-1, 3)
        uniq, counts = np.unique(rgb, axis=0, return_counts=True)
        assert mask.values == [[*map(int, u), int(c)] for u, c in zip(uniq, counts)]
        assert (frame.sources[0].width, frame.sources[0].height) == (mask.extra["width"], mask.extra["height"])


def test_process_pool_gives_the_same_statistics(tmp_path, shared_data):
    masks = sorted((shared_data / "labelme_voc/SegmentationClass").glob("*.png")) * 10
    frames = [{"id": f"f{i}", "sources": [{"uri": str(m), "width": 1, "height": 1, "masks": [{"uri": str(m)}]}]}
              for i, m in enumerate(masks)]
    results = []
    for jobs in (1, 2):
        with Archive(tmp_path / f"j{jobs}.maskstore", jobs=jobs) as ar:
            v = ar.create_version("A", "v1")
            v.add_frames(frames)
            results.append([f["sources"][0]["masks"][0]["values"] for f in v.frame_dicts()])
    assert results[0] == results[1]


def test_embed_makes_the_archive_self_contained(tmp_path, pair):
    img, mask = pair
    path = tmp_path / "e.maskstore"
    with Archive(path) as ar:
        v = ar.create_version("A", "v1")
        v.add_frames([SingleFrame(source=img, mask_source=mask, id="a"),
                      SingleFrame(source=img, mask_source=mask, id="b")], embed=True)
    Path(img).unlink()
    Path(mask).unlink()
    with Archive(path, readonly=True) as ar:
        v = ar.get_version("A", "v1")
        src = v.get_frame("a").sources[0]
        assert src.uri.startswith("blob:sha256:") and src.extra["original_uri"] == img
        assert v.open_image(src.masks[0].uri).size == (6, 4)
        assert ar.read(lambda t: t.stat(ar.db("blobs"))["entries"]) == 2  # deduplicated by hash
        assert check_archive(ar) == []


def test_map_grows_by_itself(tmp_path):
    with Archive(tmp_path / "g.maskstore", map_size=64 * 1024) as ar:
        v = ar.create_version("A", "v1")
        v.add_frames([{"id": f"f{i}", "meta": {"pad": "x" * 500}} for i in range(2000)])
        assert len(v) == 2000 and ar.env.info()["map_size"] > 64 * 1024


def test_not_an_archive(tmp_path):
    junk = tmp_path / "junk.maskstore"
    junk.write_bytes(b"hello world" * 1000)
    with pytest.raises(ArchiveError, match="not a maskstore archive"):
        Archive(junk)
    other = tmp_path / "other.lmdb"
    env = lmdb.open(str(other), subdir=False)
    with env.begin(write=True) as txn:
        txn.put(b"k", b"v")
    env.close()
    with pytest.raises(ArchiveError, match="not a maskstore archive"):
        Archive(other)
    with pytest.raises(ArchiveError, match="folder"):
        Archive(tmp_path)


def test_newer_archive_format_is_refused(tmp_path):
    path = tmp_path / "new.maskstore"
    with Archive(path) as ar:
        newer = bytearray(encode_format())
        newer[0] = 99
        ar.write(lambda t: t.put(b"format", bytes(newer), db=ar.db("meta")))
    with pytest.raises(ArchiveError, match="upgrade maskstore"):
        Archive(path)


def test_index_postings_cover_every_indexed_field():
    rec = {"context_id": "c", "rois": [{"label": ["car", "occluded"]}],
           "sources": [{"id": "front", "masks": [{"id": "00", "values": [[1, 2, 3, 10]]}]}]}
    found = {name: {key: seqs.tolist() for key, seqs in by_key.items()}
             for name, by_key in postings.of_records({7: rec}).items()}
    assert found == {"ix_context": {b"c": [7]}, "ix_value": {b"\x01\x02\x03": [7]}, "ix_source": {b"front": [7]},
                     "ix_mask": {b"00": [7]}, "ix_roi": {b"car": [7], b"occluded": [7]}}


def test_a_key_twice_in_one_frame_is_one_index_entry(version):
    # The batch passes index keys on without removing repeats; a block holds each seq once.
    frame = {"id": "f", "context_id": "c", "rois": [{"label": ["car", "car"]}, {"label": ["car"]}],
             "sources": [{"id": "front", "uri": "a.png", "masks": [
                             {"id": "00", "uri": "m0.png", "values": [[1, 1, 1, 5], [2, 2, 2, 5]]},
                             {"id": "01", "uri": "m1.png", "values": [[1, 1, 1, 7]]}]},
                         {"id": "rear", "uri": "b.png", "masks": [
                             {"id": "00", "uri": "m2.png", "values": [[1, 1, 1, 9]]}]}]}
    arc = version.archive

    def duplicates(name: str, key: bytes) -> int:
        return arc.read(lambda txn: len(postings.read(txn, arc, name, version.prefix, key)))

    repeated = [("ix_value", b"\x01\x01\x01"), ("ix_mask", b"00"), ("ix_roi", b"car")]
    version.add_frames([frame])
    assert [duplicates(name, key) for name, key in repeated] == [1, 1, 1]
    assert check_archive(arc) == []
    version.add_frames([frame])  # replaces it: unindexed, then indexed again
    assert [duplicates(name, key) for name, key in repeated] == [1, 1, 1]
    assert len(version) == 1 and check_archive(arc) == []
    version.delete_frames(["f"])
    assert [duplicates(name, key) for name, key in repeated] == [0, 0, 0]
    assert check_archive(arc) == []


def test_copy_keeps_working_after_file_copy(tmp_path, pair):
    path = tmp_path / "a.maskstore"
    with Archive(path) as ar:
        ar.create_version("A", "v1").add_frames([SingleFrame(source=pair[0], id="x")])
    shutil.copy(path, tmp_path / "b.maskstore")
    with Archive(tmp_path / "b.maskstore", readonly=True) as ar:
        assert [f.id for f in ar.get_version("A", "v1")] == ["x"]


def test_check_catches_stale_scan_columns_and_repair_rebuilds_them(version, pair):
    version.add_frames([SingleFrame(source=pair[0], id=f"f{i}", meta={"n": i}) for i in range(3)])
    assert version.ids("meta.n >= 1") == ["f1", "f2"]  # builds and stores the columns
    arc = version.archive
    assert check_archive(arc) == []
    # Store columns built from a record that says something else than the real one.
    key = version.prefix + (0).to_bytes(8, "big")
    stale = columns.build_chunk(0, [(0, records.encode_frame({**version.get_frame_dict("f0"), "meta": {"n": 99}}))])
    arc.write(lambda t: [t.put(key + name, value, db=arc.db("columns"))
                         for name, value in columns.encode_fields(stale).items()])
    assert any("scan columns" in p.message for p in check_archive(arc))
    assert check_archive(arc, repair=True) == []
    assert version.ids("meta.n >= 1") == ["f1", "f2"]


def test_writable_open_on_a_network_file_system_warns(tmp_path, monkeypatch):
    from maskstore import NetworkFilesystemWarning, store as store_module
    monkeypatch.setattr(store_module, "mounts", lambda: [("/", "ext4"), (str(tmp_path), "nfs4")])
    with pytest.warns(NetworkFilesystemWarning, match="nfs4 network file system"):
        Archive(tmp_path / "n.maskstore").close()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Archive(tmp_path / "n.maskstore", readonly=True).close()  # reading from one machine is fine
    monkeypatch.setattr(store_module, "mounts", lambda: [("/", "ext4")])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Archive(tmp_path / "local.maskstore").close()
