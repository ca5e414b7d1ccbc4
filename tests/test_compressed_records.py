"""Frame records compressed with zstd and the archive's own dictionary (records kind Z, FORMAT.md
"Compressed frame records"): round trips, what writes them, compact, and damaged records, which are
ArchiveErrors naming the frame, never a traceback, a hang or a wrong answer."""

from __future__ import annotations

import multiprocessing
import shutil
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import lmdb
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings

from maskstore import Archive, compact, compression, frame_groups, records
from maskstore.check import check_archive
from maskstore.errors import ArchiveError
from maskstore.layout import CURRENT_DICTIONARY_KEY, DICTIONARY_PREFIX, FORMAT_KEY, u64
from maskstore.model import normalize_frame_dict

import format_reader
from strategies import frame_dicts

HERE = Path(__file__).resolve().parent
FIXTURE = HERE / "fixtures" / "archive-format1.maskstore"
MANY = compression.TRAIN_MIN_RECORDS + 76  # one batch this large trains the dictionary


def frame(i: int) -> dict:
    """Frames alike in shape and unlike in values, as a real dataset's are."""
    drive = f"drive_{i // 50:03d}"
    return {"id": f"{drive}_{i:06d}", "timestamp": 1_600_000_000_000 + i * 100, "context_id": drive,
            "meta": {"city": ["aachen", "bochum", "bremen"][i % 3], "speed": (i * 37) % 101 / 3},
            "sources": [{"id": "front", "uri": f"/data/{drive}/front/{i:06d}.png", "width": 2048, "height": 1024,
                         "masks": [{"id": "00", "uri": f"/data/{drive}/masks/{i:06d}.png",
                                    "values": [[v, v, v, 1000 + (i * v) % 977]
                                               for v in (7, 11 + i % 5, *([24] if i % 4 == 0 else []))]}]}],
            "rois": [{"label": ["person"], "poly": [1, 2, 3, 4]}] if i % 7 == 0 else []}


FRAMES = [frame(i) for i in range(MANY)]


@pytest.fixture(scope="module")
def dictionary() -> bytes:
    trained = compression.train(records.encode_frames([normalize_frame_dict(f) for f in FRAMES]))
    assert trained is not None
    return compression.register(trained)


def stored(path: Path, db: str = "frames") -> list[tuple[bytes, bytes]]:
    env = lmdb.open(str(path), subdir=False, max_dbs=64, readonly=True, lock=False)
    with env.begin() as txn:
        items = [(bytes(k), bytes(v)) for k, v in txn.cursor(db=env.open_db(db.encode(), txn=txn, create=False))]
    env.close()
    return items


def dictionaries_used(path: Path) -> set[bytes]:
    """The dictionary id of every frame group (``frame_groups.NO_DICTIONARY``: none)."""
    groups = stored(path)
    assert all(value[:2] == frame_groups.GROUP_HEAD for _, value in groups)
    return {value[2:frame_groups.BODY_START] for _, value in groups}


def put(path: Path, key: bytes, value: bytes | None, db: str = "frames") -> None:
    env = lmdb.open(str(path), subdir=False, max_dbs=64)
    with env.begin(write=True) as txn:
        handle = env.open_db(db.encode(), txn=txn)
        if value is None:
            txn.delete(key, db=handle)
        else:
            txn.put(key, value, db=handle)
    env.close()


@pytest.fixture
def compressed(tmp_path: Path) -> Path:
    path = tmp_path / "big.maskstore"
    with Archive(path, jobs=1) as ar:
        v = ar.create_version(dataset_name="d", version_name="v1")
        v.set_masks_labels([{"value": [24, 24, 24], "labels": ["person"]}])
        v.add_frames(FRAMES)
    return path


# ------------------------------------------------------------------------------------ round trips

@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frame_dicts)
def test_a_compressed_record_decodes_to_what_its_plain_record_does(dictionary, given_frame):
    plain = records.encode_frame(normalize_frame_dict(given_frame))
    (packed,) = records.compress_frames([plain], dictionary)
    assert packed[:2] == records.ZSTD_HEAD and packed[2:records.ZSTD_BODY] == dictionary
    assert records.plain_frame(packed) == plain
    assert records.decode_frame(packed) == records.decode_frame(plain)


def test_a_large_batch_trains_the_dictionary_and_is_stored_compressed(compressed):
    frames = stored(compressed)
    meta = dict(stored(compressed, "meta"))
    current = meta[CURRENT_DICTIONARY_KEY]
    assert dictionaries_used(compressed) == {current}
    assert {k for k in meta if k.startswith(DICTIONARY_PREFIX)} == {DICTIONARY_PREFIX + current}
    fmt = records.decode_format(meta[FORMAT_KEY])
    assert fmt["version"] == records.ZSTD_FORMAT
    assert fmt["required_features"] == sorted([records.COLUMN_FIELDS, records.PACKED_POSTINGS, records.ZSTD_FEATURE,
                                               records.FRAME_GROUPS, records.COLUMN_ZONES])
    plain = sum(len(r) for r in records.encode_frames([normalize_frame_dict(f) for f in FRAMES]))
    assert sum(len(v) for _, v in frames) * 2 < plain  # the point of it
    with Archive(compressed, readonly=True) as ar:
        v = ar.get_version("d", "v1")
        assert list(v.frame_dicts()) == [normalize_frame_dict(f) for f in FRAMES]
        assert v.get_frame_dict(FRAMES[7]["id"]) == normalize_frame_dict(FRAMES[7])
        assert v.ids('label == "person"') == [f["id"] for i, f in enumerate(FRAMES) if i % 4 == 0 or i % 7 == 0]
        assert check_archive(ar) == []
    # The independent reader, written from FORMAT.md, reads the same frames.
    (read,) = format_reader.read_archive(compressed)["versions"]
    assert read["frames"] == [normalize_frame_dict(f) for f in FRAMES]


def test_small_batches_stay_plain_and_later_batches_use_the_dictionary(compressed, tmp_path):
    with Archive(compressed) as ar:
        v = ar.create_version(dataset_name="d", version_name="v2")
        v.add_frames(FRAMES[:5])
        changed = dict(FRAMES[3], meta={"city": "köln"})
        ar.get_version("d", "v1").update_frames([changed])
        assert ar.get_version("d", "v1").get_frame_dict(changed["id"])["meta"] == {"city": "köln"}
    assert dictionaries_used(compressed) == {dict(stored(compressed, "meta"))[CURRENT_DICTIONARY_KEY]}
    small = tmp_path / "small.maskstore"
    with Archive(small, jobs=1) as ar:
        ar.create_version(dataset_name="d", version_name="v1").add_frames(FRAMES[:100])
    assert dictionaries_used(small) == {frame_groups.NO_DICTIONARY}
    assert records.ZSTD_FEATURE not in records.decode_format(dict(stored(small, "meta"))[FORMAT_KEY])["required_features"]


def test_the_format_1_fixture_reads_and_takes_compressed_frames_beside_its_plain_ones(tmp_path):
    path = tmp_path / "old.maskstore"
    shutil.copy(FIXTURE, path)
    with Archive(path) as ar:
        before = {v.label: list(v.frame_dicts()) for v in ar.versions()}
        ar.create_version(dataset_name="new", version_name="v1").add_frames(FRAMES)
    with Archive(path, readonly=True) as ar:
        assert {v.label: list(v.frame_dicts()) for v in ar.versions() if v.label != "new/v1"} == before
        assert check_archive(ar) == []
    # Its plain records became groups without a dictionary when it was opened writable; the new
    # version's batch trained one.
    assert dictionaries_used(path) == {frame_groups.NO_DICTIONARY, dict(stored(path, "meta"))[CURRENT_DICTIONARY_KEY]}


def test_older_releases_refuse_a_compressed_archive(compressed, monkeypatch):
    """0.1.0 reads format 1 only; a release without the feature refuses it by name."""
    fmt = dict(stored(compressed, "meta"))[FORMAT_KEY]
    monkeypatch.setattr(records, "FORMAT_VERSION", records.PLAIN_FORMAT)
    with pytest.raises(ArchiveError, match="written by maskstore archive format 2"):
        records.decode_format(fmt)
    monkeypatch.undo()
    monkeypatch.setattr(records, "KNOWN_FEATURES", frozenset())
    with pytest.raises(ArchiveError, match="does not implement: .*zstd-records"):
        records.decode_format(fmt)


def test_compact_compresses_a_plain_archive_and_keeps_the_blobs_its_records_name(tmp_path):
    image = tmp_path / "img.png"
    from PIL import Image
    Image.new("RGB", (4, 4), (1, 2, 3)).save(image)
    path = tmp_path / "plain.maskstore"
    frames = [dict(f, sources=[{"id": "front", "uri": str(image)}]) for f in FRAMES]
    with Archive(path, jobs=1) as ar:
        v = ar.create_version(dataset_name="d", version_name="v1")
        for start in range(0, len(frames), 200):  # batches too small to train a dictionary
            v.add_frames(frames[start:start + 200], embed=True)
        expected = list(v.frame_dicts())
        answer = v.ids('meta.city == "bremen"')
    assert dictionaries_used(path) == {frame_groups.NO_DICTIONARY}
    report = compact(path)
    assert report.blobs_kept == 1 and report.blobs_dropped == 0 and report.after < report.before
    assert dictionaries_used(path) == {dict(stored(path, "meta"))[CURRENT_DICTIONARY_KEY]}
    compact(path)  # compressed records name their blobs too
    with Archive(path, readonly=True) as ar:
        v = ar.get_version("d", "v1")
        assert list(v.frame_dicts()) == expected and v.ids('meta.city == "bremen"') == answer
        assert ar.read_blob(expected[0]["sources"][0]["uri"].removeprefix("blob:sha256:")) == image.read_bytes()
        assert check_archive(ar) == []
    meta = dict(stored(path, "meta"))
    assert [k for k in meta if k.startswith(DICTIONARY_PREFIX)] == [DICTIONARY_PREFIX + meta[CURRENT_DICTIONARY_KEY]]


# ------------------------------------------------------------------------------------ processes, threads

def _frame_in_child(path: str, fid: str) -> dict:
    with Archive(path, readonly=True) as ar:
        return ar.get_version("d", "v1").get_frame_dict(fid)


def test_forked_children_and_threads_decode(compressed):
    with Archive(compressed, readonly=True) as ar:
        v = ar.get_version("d", "v1")
        v.get_frame_dict(FRAMES[0]["id"])  # the parent's codecs exist before the fork
        ids = [f["id"] for f in FRAMES[::97]]
        with multiprocessing.get_context("fork").Pool(2) as pool:
            assert pool.starmap(_frame_in_child, [(str(compressed), i) for i in ids]) == \
                [normalize_frame_dict(f) for f in FRAMES[::97]]
        with ThreadPoolExecutor(4) as pool:
            assert list(pool.map(v.get_frame_dict, ids * 4)) == [normalize_frame_dict(f) for f in FRAMES[::97]] * 4


def test_a_dictionary_another_process_stored_after_this_one_opened_is_found(tmp_path):
    path = tmp_path / "shared.maskstore"
    with Archive(path) as ar:
        ar.create_version(dataset_name="d", version_name="v1")
        script = textwrap.dedent(f"""
            import sys; sys.path.insert(0, {str(HERE)!r})
            from test_compressed_records import FRAMES
            from maskstore import Archive
            with Archive({str(path)!r}) as ar:
                ar.get_version("d", "v1").add_frames(FRAMES)
        """)
        subprocess.run([sys.executable, "-c", script], check=True)
        assert ar.get_version("d", "v1").get_frame_dict(FRAMES[5]["id"]) == normalize_frame_dict(FRAMES[5])


# ------------------------------------------------------------------------------------ damage

def _run_query(path: Path) -> subprocess.CompletedProcess:
    """A fresh process, so no dictionary is known before the archive is opened."""
    return subprocess.run([str(Path(sys.executable).with_name("maskstore")), "query", str(path), "", "-d", "d",
                           "-V", "v1", "--format", "jsonl"], capture_output=True, text=True, timeout=120)


def _damage(path: Path, seq: int, change) -> None:
    """Change the stored group of ``seq`` (its layout starts as a compressed record's: head, id, zstd)."""
    key = u64(1) + u64(frame_groups.group_base(seq))
    put(path, key, change(dict(stored(path))[key]))


HUGE_FRAME = bytes([0xE0]) + (2**40).to_bytes(8, "little") + b"\x01\x00\x00"  # declares 1 TiB, holds nothing


@pytest.mark.parametrize("change", [
    pytest.param(lambda r: r[:len(r) // 2], id="truncated"),
    pytest.param(lambda r: r[:11], id="only-the-head"),
    pytest.param(lambda r: r[:2] + bytes(8) + r[10:], id="wrong-dictionary-id"),
    pytest.param(lambda r: r[:-9] + bytes([r[-9] ^ 0x10]) + r[-8:], id="byte-flipped"),
    pytest.param(lambda r: r[:30] + bytes([r[30] ^ 0x01]) + r[31:], id="bit-flipped"),
    pytest.param(lambda r: r[:10] + HUGE_FRAME, id="declares-a-huge-size"),
    pytest.param(lambda r: r + r[10:], id="two-frames"),
    pytest.param(lambda r: r[:10] + records.ZSTD_HEAD + r, id="compressed-twice"),
    pytest.param(lambda r: bytes([records.FORMAT_VERSION + 1]) + r[1:], id="newer-format"),
])
def test_a_damaged_compressed_group_is_an_archive_error_naming_its_frames(compressed, change):
    _damage(compressed, 40, change)
    with Archive(compressed, readonly=True) as ar:
        v = ar.get_version("d", "v1")
        with pytest.raises(ArchiveError, match=r"frame group of seqs 32\.\.47"):
            list(v.query_dicts(f'context_id == "{FRAMES[40]["context_id"]}"'))
        assert v.get_frame_dict(FRAMES[48]["id"]) == normalize_frame_dict(FRAMES[48])  # the other groups read on
        problems = check_archive(ar)  # the group, then what no longer agrees with its frames
        assert {p.severity for p in problems} == {"error"} and "frame group of seqs 32..47" in problems[0].message
    done = _run_query(compressed)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "frame group" in done.stderr


def test_a_missing_dictionary_is_an_archive_error(compressed):
    current = dict(stored(compressed, "meta"))[CURRENT_DICTIONARY_KEY]
    put(compressed, DICTIONARY_PREFIX + current, None, "meta")
    done = _run_query(compressed)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert f"dictionary {current.hex()}, which the archive does not hold" in done.stderr
    with Archive(compressed, readonly=True) as ar:
        messages = [p.message for p in check_archive(ar)]
    assert any(f"current compression dictionary {current.hex()} is missing" in m for m in messages)
    assert any("frame group of seqs 0..15 is compressed with dictionary" in m for m in messages)


def test_a_damaged_dictionary_is_an_archive_error(compressed):
    meta = dict(stored(compressed, "meta"))
    key = DICTIONARY_PREFIX + meta[CURRENT_DICTIONARY_KEY]
    data = bytearray(meta[key])
    data[100] ^= 0xFF
    put(compressed, key, bytes(data), "meta")
    done = _run_query(compressed)
    assert done.returncode == 1 and "Traceback" not in done.stderr and "does not hold" in done.stderr
    with Archive(compressed, readonly=True) as ar:
        assert any("is damaged: its bytes hash to" in p.message for p in check_archive(ar))


def test_a_huge_declared_size_is_refused_before_anything_is_allocated(dictionary):
    with pytest.raises(ArchiveError, match="declares 1099511627776 bytes"):
        records.decode_frame(records.ZSTD_HEAD + dictionary + HUGE_FRAME, "frame seq 3")
    no_size = zstandard.ZstdCompressor(write_content_size=False).compress(b"x")[4:]  # magicless, no size
    with pytest.raises(ArchiveError, match="frame seq 3 record is damaged: its compressed body declares no bytes"):
        records.decode_frame(records.ZSTD_HEAD + dictionary + no_size, "frame seq 3")
