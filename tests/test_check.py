"""``check`` completeness (spec section 8): embedded files missing or unused, external files missing or
not images (``--media``), problems in words, ``--repair`` saying what it rebuilt. Archives are damaged
with lmdb directly, as another program or a bad copy would."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import lmdb
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from maskstore import Archive, SingleFrame
from maskstore.layout import text_key, u64, value_key
from maskstore.check import check_archive, check_media, repair_archive
from maskstore.cli import main
from reliability.helpers import edit_postings

RAW_BYTES = re.compile(r"b'|b\"|\\x[0-9a-f]{2}")


@pytest.fixture
def runner():
    return CliRunner()


def raw_write(path: Path, db: str, puts=(), deletes=()) -> None:
    env = lmdb.open(str(path), subdir=False, max_dbs=32)
    with env.begin(write=True) as txn:
        handle = env.open_db(db.encode(), txn=txn, create=False)
        if db.startswith("ix_"):  # postings (version prefix + index key, seq), edited block by block
            edit_postings(txn, handle, add=puts, remove=deletes)
        else:
            for key, value in deletes:
                assert txn.delete(key, value or b"", db=handle)
            for key, value in puts:
                txn.put(key, value, db=handle)
    env.close()


def check(runner: CliRunner, path: Path, *options: str):
    result = runner.invoke(main, ["check", str(path), *options])
    assert "Traceback" not in result.output and not RAW_BYTES.search(result.output), result.output
    return result


@pytest.fixture
def files(tmp_path):
    img, mask = tmp_path / "img.png", tmp_path / "mask.png"
    Image.fromarray(np.zeros((4, 6, 3), np.uint8)).save(img)
    Image.fromarray(np.array([[0] * 6, [1] * 6, [1] * 6, [2] * 6], np.uint8)).save(mask)
    return img, mask


@pytest.fixture
def embedded(tmp_path, files):
    """streets/v1: f1 with external files, f2 and f3 with the same files embedded."""
    path = tmp_path / "e.maskstore"
    img, mask = map(str, files)
    with Archive(path, jobs=1) as ar:
        v = ar.create_version("streets", "v1")
        v.add_frames([SingleFrame(source=img, mask_source=mask, id="f1")])
        v.add_frames([SingleFrame(source=img, mask_source=mask, id=f) for f in ("f2", "f3")], embed=True)
    return path


def test_a_clean_archive_checks_clean_with_and_without_media(runner, embedded):
    for options in ((), ("--media",)):
        result = check(runner, embedded, *options)
        assert result.exit_code == 0 and result.stdout == "" and "0 errors, 0 warnings" in result.stderr
    with Archive(embedded, readonly=True) as ar:
        assert check_archive(ar, media=True) == []


def test_a_frame_naming_an_embedded_file_the_archive_lacks_is_an_error(runner, embedded, files):
    digest = hashlib.sha256(files[1].read_bytes()).digest()
    raw_write(embedded, "blobs", deletes=[(digest, None)])
    result = check(runner, embedded)
    assert result.exit_code == 1 and "2 errors, 0 warnings" in result.stderr
    uri = f"blob:sha256:{digest.hex()}"
    assert result.stdout.splitlines() == [
        f"error: version streets/v1, frame {fid}: mask 00 of source 0 is the embedded file {uri}, which is missing "
        "from the archive" for fid in ("f2", "f3")]
    with Archive(embedded, readonly=True) as ar:
        assert [p.severity for p in check_archive(ar)] == ["error", "error"]


def test_an_embedded_file_no_frame_uses_is_a_warning_that_exits_0(runner, embedded, tmp_path):
    orphan = b"not referenced by any frame"
    digest = hashlib.sha256(orphan).digest()
    raw_write(embedded, "blobs", puts=[(digest, orphan)])
    result = check(runner, embedded)
    assert result.exit_code == 0 and "0 errors, 1 warnings" in result.stderr
    assert result.stdout == (f"warning: embedded file blob:sha256:{digest.hex()} is used by no frame of any "
                             "version; maskstore compact drops it\n")


def test_embedded_files_of_a_deleted_version_are_unused_but_those_of_another_are_not(tmp_path, files):
    img, mask = map(str, files)
    with Archive(tmp_path / "two.maskstore", jobs=1) as ar:
        a = ar.create_version("a", "v1")
        a.add_frames([SingleFrame(source=img, mask_source=mask, id="f")], embed=True)
        ar.create_version("b", "v1", parent="a/v1")
        ar.delete_version("a", "v1", force=True)
        assert check_archive(ar) == []  # b/v1 still names both files
        ar.delete_version("b", "v1")
        assert [p.severity for p in check_archive(ar)] == ["warning", "warning"]


def test_many_unused_embedded_files_are_summed_up(tmp_path):
    path = tmp_path / "many.maskstore"
    with Archive(path):
        pass
    blobs = [bytes([n]) * 10 for n in range(25)]
    raw_write(path, "blobs", puts=[(hashlib.sha256(b).digest(), b) for b in blobs])
    with Archive(path, readonly=True) as ar:
        problems = check_archive(ar)
    assert [p.severity for p in problems] == ["warning"] * 21
    assert problems[-1].message == ("5 more embedded files are used by no frame (25 in all, 0.0 MB); "
                                    "maskstore compact drops them")


def test_media_reports_a_missing_external_file_and_one_that_is_not_an_image(runner, embedded, files, tmp_path):
    img, mask = files
    with Archive(embedded, jobs=1) as ar:
        ar.get_version("streets", "v1").add_frames([SingleFrame(source=str(img), mask_source=str(mask), id="f4")])
    mask.write_text("this is not a PNG")
    img.unlink()
    assert check(runner, embedded).exit_code == 0  # without --media external files are not opened
    result = check(runner, embedded, "--media")
    assert result.exit_code == 1 and "2 errors, 0 warnings" in result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == (f"error: version streets/v1, frame f1: the image of source 0: file not found: {img} "
                        "(and 1 more frame names it)")
    assert lines[1].startswith(f"error: version streets/v1, frame f1: mask 00 of source 0: mask {mask} is not a "
                               "readable image")
    with Archive(embedded, readonly=True) as ar:
        assert [p.message for p in check_media(ar, jobs=1)] == [line[len("error: "):] for line in lines]


def test_problems_are_words_not_key_bytes(runner, embedded):
    """The spec's example line, and every index's key as what it is."""
    long_context = "c" * 500
    with Archive(embedded, jobs=1) as ar:
        v = ar.get_version("streets", "v1")
        v.update_frames([{"id": "f3", "context_id": long_context}], merge=True)
        v.add_frames([{"id": "r", "sources": [], "rois": [{"label": ["car"]}]}])
        prefix, seq_f3, seq_r = v.prefix, u64(2), u64(3)
    raw_write(embedded, "ix_value", deletes=[(prefix + value_key((1, 1, 1)), seq_f3)])
    raw_write(embedded, "ix_context", deletes=[(prefix + text_key(long_context), seq_f3)])
    raw_write(embedded, "ix_roi", deletes=[(prefix + text_key("car"), seq_r)])
    raw_write(embedded, "ix_mask", puts=[(prefix + "\u00e9t\u00e9".encode(), seq_r)])
    raw_write(embedded, "ix_source", puts=[(prefix + b"\xff\xfe", u64(99))])
    result = check(runner, embedded)
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        "error: version streets/v1, frame f3: a context id longer than 400 bytes (indexed by its hash "
        f"{text_key(long_context)[1:5].hex()}...) is not in the context index",
        "error: version streets/v1, frame f3: mask value (1, 1, 1) is not in the value index",
        "error: version streets/v1: the source index lists source id '\ufffd\ufffd' for frame seq 99, which holds "
        "no frame",
        "error: version streets/v1, frame r: the mask index lists the frame under mask id '\u00e9t\u00e9', which the "
        "frame does not have",
        "error: version streets/v1, frame r: ROI label 'car' is not in the ROI label index"]


def test_repair_says_what_it_rebuilt(runner, embedded):
    with Archive(embedded, jobs=1) as ar:
        prefix = ar.get_version("streets", "v1").prefix
    raw_write(embedded, "ix_value", deletes=[(prefix + value_key((1, 1, 1)), u64(0))],
              puts=[(prefix + value_key((9, 9, 9)), u64(1)), (prefix + value_key((8, 8, 8)), u64(1))])
    result = check(runner, embedded, "--repair")
    assert result.exit_code == 0 and result.stdout == ""
    assert result.stderr.splitlines() == [
        "rebuilt the indexes and id table of streets/v1 from its 3 frame records: 1 missing entries added, "
        "2 stale entries removed; scan columns marked for rebuild", "0 errors, 0 warnings"]
    with Archive(embedded, jobs=1) as ar:
        v = ar.get_version("streets", "v1")
        assert v.ids("mask.value == [1, 1, 1]") == ["f1", "f2", "f3"] and v.ids("mask.value == [9, 9, 9]") == []
        assert [str(r) for r in repair_archive(ar)] == [
            "rebuilt the indexes and id table of streets/v1 from its 3 frame records: they were right already"]
    result = check(runner, embedded)
    assert result.exit_code == 0 and result.stdout == ""


def test_repair_cannot_bring_back_a_missing_embedded_file(runner, embedded, files):
    digest = hashlib.sha256(files[0].read_bytes()).digest()
    raw_write(embedded, "blobs", deletes=[(digest, None)])
    result = check(runner, embedded, "--repair")
    assert result.exit_code == 1 and "they were right already" in result.stderr
    assert "the image of source 0 is the embedded file" in result.stdout


def test_a_parent_that_no_longer_exists_is_a_warning(tmp_path):
    """Archives whose versions were deleted before children took the deleted version's parent."""
    from maskstore import records
    with Archive(tmp_path / "old.maskstore", jobs=1) as ar:
        child = ar.create_version("d", "v2")
        rec = child.record()
        rec["parent"] = 77
        ar.write(lambda t: t.put(child.prefix, records.encode_version(rec), db=ar.db("versions")))
        assert [str(p) for p in check_archive(ar)] == [
            "warning: version d/v2: its parent, version id 77, no longer exists"]
        assert child.parent is not None and ar.versions_info()[0]["parent"] is None


def test_media_decodes_real_images_and_finds_a_truncated_copy(runner, tmp_path, shared_data):
    city = shared_data / "mmsegmentation_cityscapes" / "frankfurt_000000_000294"
    image, mask = Path(f"{city}_leftImg8bit.png"), Path(f"{city}_gtFine_labelIds.png")
    cut = tmp_path / "cut.png"
    cut.write_bytes(image.read_bytes()[: image.stat().st_size // 2])
    path = tmp_path / "city.maskstore"
    with Archive(path, jobs=1) as ar:
        v = ar.create_version("city", "v1")
        v.add_frames([SingleFrame(source=str(image), mask_source=str(mask), id="whole")])
    assert check(runner, path, "--media").exit_code == 0
    with Archive(path, jobs=1) as ar:  # the mask's statistics are known: the cut image is not opened at ingest
        ar.get_version("city", "v1").add_frames([{"id": "cut", "sources": [{"uri": str(cut), "width": 2048,
                                                  "height": 1024, "masks": []}]}])
    result = check(runner, path, "--media")
    assert result.exit_code == 1 and result.stdout.startswith(
        f"error: version city/v1, frame cut: the image of source 0: image {cut} is not a readable image"), result.stdout
    assert len(result.stdout.splitlines()) == 1
