"""diff, copy and compact (maskstore.lifecycle): through the CLI (CliRunner), then the library's state."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import lmdb
import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings, strategies as st
from PIL import Image

from maskstore import Archive, MaskstoreError, ReadOnlyError, compact
from maskstore.check import check_archive
from maskstore.cli import main
from maskstore.lifecycle import same_value, temp_path


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def frame(fid: str, value: int = 7, **meta: object) -> dict:
    """A frame with its mask statistics given, so nothing is opened."""
    mask = {"id": "m", "uri": f"/data/{fid}_m.png", "values": [[value, value, value, 16]]}
    return {"id": fid, "meta": dict(meta),
            "sources": [{"id": "cam", "uri": f"/data/{fid}.png", "width": 4, "height": 4, "masks": [mask]}]}


def write_images(folder: Path, n: int, size: int = 8, seed: int = 0) -> list[tuple[Path, Path]]:
    """n distinct (image, mask) PNG pairs; noise images, so each embeds as its own blob."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    pairs = []
    for i in range(n):
        image, mask = folder / f"img{i}.png", folder / f"mask{i}.png"
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(image)
        Image.fromarray(np.full((size, size), 1 + i % 3, np.uint8)).save(mask)
        pairs.append((image, mask))
    return pairs


def embedded_frames(pairs: list[tuple[Path, Path]], prefix: str = "e") -> list[dict]:
    return [{"id": f"{prefix}{i}",
             "sources": [{"id": "cam", "uri": str(image), "masks": [{"id": "m", "uri": str(mask)}]}]}
            for i, (image, mask) in enumerate(pairs)]


def blob_digests(arc: Archive) -> set[bytes]:
    return arc.read(lambda t: {bytes(k) for k, _ in t.cursor(db=arc.db("blobs"))})


def all_frames(arc: Archive) -> dict[str, list[dict]]:
    return {v.label: sorted(v.frame_dicts(), key=lambda d: d["id"]) for v in arc.versions()}


def errors_of(arc: Archive) -> list[str]:
    return [str(p) for p in check_archive(arc) if p.severity == "error"]


# ---------------------------------------------------------------------------------------- diff


def test_diff_cli_table_and_jsonl(runner, tmp_path):
    path = tmp_path / "a.maskstore"
    with Archive(path) as ar:
        v1 = ar.create_version(dataset_name="streets", version_name="v1")
        v1.set_masks_labels({(7, 7, 7): ["car"], (8, 8, 8): ["road"]})
        v1.add_frames([frame(f"f{i}", city="ulm") for i in range(5)])
        v2 = ar.create_version(dataset_name="streets", version_name="v2", parent=v1)
        v2.delete_frames(["f0"])
        v2.add_frames([frame("f2", city="bonn"), frame("new")])
        v2.set_masks_labels({(7, 7, 7): ["vehicle"], (8, 8, 8): ["road"]})
    result = runner.invoke(main, ["diff", str(path), "-d", "streets", "--from", "v1", "--to", "v2",
                                  "--format", "jsonl"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert rows[:3] == [{"id": "f0", "change": "removed"}, {"id": "f2", "change": "changed"},
                        {"id": "new", "change": "added"}]
    assert rows[3] == {"change": "mask_labels",
                       "before": [{"value": [7, 7, 7], "labels": ["car"]}, {"value": [8, 8, 8], "labels": ["road"]}],
                       "after": [{"value": [7, 7, 7], "labels": ["vehicle"]}, {"value": [8, 8, 8], "labels": ["road"]}]}
    assert len(rows) == 4
    assert "1 added, 1 removed, 1 changed, mask_labels changed" in result.stderr
    table = runner.invoke(main, ["diff", str(path), "--from", "v1", "--to", "v2"])
    assert table.exit_code == 0, table.output
    assert table.stdout.splitlines() == ["change\tid", "removed\tf0", "changed\tf2", "added\tnew",
                                         "mask_labels\t[7, 7, 7]: car -> vehicle"]
    with Archive(path, readonly=True) as ar:  # the library says the same
        d = ar.get_version("streets", "v2").diff(ar.get_version("streets", "v1"))
        assert (d.added, d.removed, d.changed) == (["new"], ["f0"], ["f2"])
        assert [t.table for t in d.tables] == ["mask_labels"]
        assert not ar.get_version("streets", "v1").diff(ar.get_version("streets", "v1"))


def test_diff_bad_input(runner, tmp_path):
    path = tmp_path / "a.maskstore"
    with Archive(path) as ar:
        ar.create_version(dataset_name="a", version_name="v1")
        ar.create_version(dataset_name="b", version_name="v1")
        ar.create_version(dataset_name="b", version_name="v2")
        with pytest.raises(MaskstoreError, match="one dataset"):
            ar.get_version("a", "v1").diff(ar.get_version("b", "v1"))
    unknown = runner.invoke(main, ["diff", str(path), "-d", "b", "--from", "v1", "--to", "v9"])
    assert unknown.exit_code == 1 and "Traceback" not in unknown.output
    assert "no version b/v9" in unknown.stderr and "b/v2" in unknown.stderr  # says what exists


def test_equal_dicts_are_unchanged_whatever_their_key_order(archive):
    """Meta keys keep their given order in the record bytes, so bytes differ; the dicts do not."""
    v1 = archive.create_version(dataset_name="d", version_name="v1")
    v1.add_frames([{**frame("a"), "meta": {"x": 1, "y": "s"}}, {**frame("b"), "meta": {"n": 1}}])
    v2 = archive.create_version(dataset_name="d", version_name="v2", parent=v1)
    v2.add_frames([{**frame("a"), "meta": {"y": "s", "x": 1}}, {**frame("b"), "meta": {"n": 1.0}}])
    ids = v2.prefix + b"a", v1.prefix + b"a"
    stored = archive.read(lambda t: [t.get(v.prefix + t.get(k, db=archive.db("frame_ids")), db=archive.db("frames"))
                                     for v, k in zip((v2, v1), ids)])
    assert stored[0] != stored[1]  # the fallback is really exercised
    assert v2.diff(v1).changed == ["b"]  # 1 -> 1.0 is a change of meta type
    assert same_value({"a": [1, {"b": 2}]}, {"a": [1, {"b": 2}]}) and not same_value(True, 1)


edits = st.lists(st.tuples(st.sampled_from(["add", "remove", "change", "touch", "reorder"]),
                           st.integers(0, 11)), max_size=25)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=edits, relabel=st.booleans(), recolor=st.booleans())
def test_diff_reports_exactly_the_edits(tmp_path_factory, edits, relabel, recolor):
    """Random edits of a child version: diff lists exactly the ids whose frame dicts differ at the end,
    however they got there (touching a frame, or giving its meta in another order, is no change)."""
    with Archive(tmp_path_factory.mktemp("diff") / "a.maskstore", jobs=1) as ar:
        v1 = ar.create_version(dataset_name="d", version_name="v1")
        v1.set_masks_labels({(7, 7, 7): ["car"]})
        v1.add_frames([frame(f"f{i}", p=i, q="x") for i in range(8)])
        v2 = ar.create_version(dataset_name="d", version_name="v2", parent=v1)
        for op, i in edits:
            fid = f"f{i}"
            present = fid in v2
            if op == "add" and not present:
                v2.add_frames([frame(fid, p=i, q="x")])
            elif op == "remove" and present:
                v2.delete_frames([fid])
            elif op == "change" and present:
                d = v2.get_frame_dict(fid)
                d["meta"]["p"] += 100
                v2.add_frames([d])
            elif op == "touch" and present:
                v2.add_frames([v2.get_frame_dict(fid)])
            elif op == "reorder" and present:
                d = v2.get_frame_dict(fid)
                d["meta"] = dict(reversed(list(d["meta"].items())))
                v2.add_frames([d])
        if relabel:
            v2.set_masks_labels({(7, 7, 7): ["vehicle"]})
        if recolor:
            v2.set_label_colors({"car": "#010203"})
        old = {d["id"]: d for d in v1.frame_dicts()}
        new = {d["id"]: d for d in v2.frame_dicts()}
        d = v2.diff(v1)
        assert d.added == sorted(new.keys() - old.keys())
        assert d.removed == sorted(old.keys() - new.keys())
        assert d.changed == sorted(i for i in old.keys() & new.keys() if old[i] != new[i])
        assert [t.table for t in d.tables] == ["mask_labels"] * relabel + ["label_colors"] * recolor


# ---------------------------------------------------------------------------------------- copy


@pytest.fixture
def embedded_archive(tmp_path: Path) -> Path:
    """src/a.maskstore: streets/v1 with 3 embedded frames and 2 frames of relative external paths."""
    src = tmp_path / "src"
    pairs = write_images(src / "media", 3)
    path = src / "a.maskstore"
    with Archive(path, jobs=1) as ar:
        v = ar.create_version(dataset_name="streets", version_name="v1")
        v.set_masks_labels({(1, 1, 1): ["car"], (2, 2, 2): ["road"], (3, 3, 3): ["sky"]})
        v.set_label_colors({"car": "#ff0000"})
        v.add_frames(embedded_frames(pairs), embed=True)
        v.add_frames([{"id": f"rel{i}", "meta": {"n": i}, "sources": [
            {"id": "cam", "uri": f"media/img{i}.png", "masks": [{"id": "m", "uri": f"media/mask{i}.png"}]}]}
            for i in range(2)])
    return path


def test_copy_cli_brings_embedded_files_and_statistics(runner, tmp_path, embedded_archive):
    dst = tmp_path / "elsewhere" / "b.maskstore"
    dst.parent.mkdir()
    result = runner.invoke(main, ["copy", str(embedded_archive), str(dst)])
    assert result.exit_code == 0, result.output
    assert "copied 5 frames" in result.stderr and "6 embedded files" in result.stderr
    assert "4 relative file paths now name absolute paths" in result.stderr  # rel0, rel1: image and mask
    for f in (embedded_archive.parent / "media").iterdir():
        f.unlink()  # a copy reads no external file: statistics come with the frames
    with Archive(embedded_archive, readonly=True) as a, Archive(dst, readonly=True) as b:
        src, out = a.get_version("streets", "v1"), b.get_version("streets", "v1")
        assert out.mask_labels == src.mask_labels and out.get_label_colors() == src.get_label_colors()
        theirs, ours = all_frames(a)["streets/v1"], all_frames(b)["streets/v1"]
        assert [d for d in ours if d["id"].startswith("e")] == [d for d in theirs if d["id"].startswith("e")]
        rel = {d["id"]: d for d in ours if d["id"].startswith("rel")}
        media = embedded_archive.parent.absolute() / "media"
        assert rel["rel1"]["sources"][0]["uri"] == str(media / "img1.png")
        assert rel["rel1"]["sources"][0]["masks"][0]["uri"] == str(media / "mask1.png")
        assert rel["rel1"]["sources"][0]["masks"][0]["values"] == theirs[-1]["sources"][0]["masks"][0]["values"]
        assert blob_digests(b) == blob_digests(a)
        assert out.count('label == "car"') == src.count('label == "car"') > 0
        assert not errors_of(b)
        np.testing.assert_array_equal(np.asarray(out.open_image(ours[0]["sources"][0]["uri"])),
                                      np.asarray(src.open_image(theirs[0]["sources"][0]["uri"])))


def test_copy_query_into_named_version_replaces_same_ids(runner, tmp_path, embedded_archive):
    dst = embedded_archive.parent / "b.maskstore"  # same folder: relative paths stay relative
    with Archive(dst) as b:
        v = b.create_version(dataset_name="merged", version_name="all")
        v.add_frames([{**frame("e1"), "sources": []}, frame("mine")])
    result = runner.invoke(main, ["copy", str(embedded_archive), str(dst), "--query", 'id == "e1" or id == "rel0"',
                                  "--to-dataset", "merged", "--to-version", "all"])
    assert result.exit_code == 0, result.output
    assert "relative" not in result.stderr
    with Archive(embedded_archive, readonly=True) as a, Archive(dst, readonly=True) as b:
        v = b.get_version("merged", "all")
        assert sorted(v.ids()) == ["e1", "mine", "rel0"]
        assert v.get_frame_dict("e1") == a.get_version("streets", "v1").get_frame_dict("e1")
        assert v.get_frame_dict("rel0")["sources"][0]["uri"] == "media/img0.png"
        assert len(blob_digests(b)) == 2
        assert not errors_of(b)


def test_copy_library_into_version_and_merge_two_archives(tmp_path, embedded_archive):
    other = tmp_path / "other.maskstore"
    pairs = write_images(tmp_path / "m2", 2, seed=1)
    with Archive(other, jobs=1) as ar:
        v = ar.create_version(dataset_name="streets", version_name="v1")
        v.add_frames(embedded_frames(pairs, prefix="o"), embed=True)
    merged = embedded_archive.parent / "merged.maskstore"
    with Archive(merged) as m, Archive(embedded_archive, readonly=True) as a, Archive(other, readonly=True) as o:
        target = m.create_version(dataset_name="all", version_name="v1")
        r1 = a.get_version("streets", "v1").copy_to(target)
        r2 = o.get_version("streets", "v1").copy_to(target)
        # the second archive's masks are byte for byte the first's: only its 2 images are new
        assert (r1.frames, r2.frames, r1.blobs, r2.blobs) == (5, 2, 6, 2)
        assert len(target) == 7 and target.mask_labels == a.get_version("streets", "v1").mask_labels
        assert not errors_of(m)


def test_copy_bad_input(runner, tmp_path, embedded_archive):
    not_archive = tmp_path / "notes.txt"
    not_archive.write_text("hello, I am not an archive\n" * 100)
    result = runner.invoke(main, ["copy", str(embedded_archive), str(not_archive)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "not a maskstore archive" in result.stderr
    published = tmp_path / "pub.maskstore"
    with Archive(published) as p:
        p.create_version(dataset_name="streets", version_name="v1").publish()
    result = runner.invoke(main, ["copy", str(embedded_archive), str(published)])
    assert result.exit_code == 1 and "published" in result.stderr and "Traceback" not in result.output
    with Archive(published, readonly=True) as p:
        assert len(p.get_version("streets", "v1")) == 0 and not blob_digests(p)
    conflicting = tmp_path / "labels.maskstore"
    with Archive(conflicting) as c:
        c.create_version(dataset_name="streets", version_name="v1").set_masks_labels({(1, 1, 1): ["bike"]})
    result = runner.invoke(main, ["copy", str(embedded_archive), str(conflicting)])
    assert result.exit_code == 1 and "[1, 1, 1]" in result.stderr and "bike" in result.stderr


def test_copy_refuses_a_frame_whose_embedded_file_is_missing(runner, tmp_path, embedded_archive):
    with Archive(embedded_archive) as a:
        d = a.get_version("streets", "v1").get_frame_dict("e2")
        uri = d["sources"][0]["uri"]
        a.write(lambda t: t.delete(bytes.fromhex(uri.split(":")[-1]), db=a.db("blobs")))
    dst = tmp_path / "b.maskstore"
    result = runner.invoke(main, ["copy", str(embedded_archive), str(dst), "--batch-size", "1"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "frame 'e2'" in result.stderr and uri in result.stderr
    with Archive(dst, readonly=True) as b:  # the batches before it are in, each with its files
        assert b.get_version("streets", "v1").ids() == ["e0", "e1"]
        assert not errors_of(b)


def test_copy_within_one_archive(runner, embedded_archive):
    result = runner.invoke(main, ["copy", str(embedded_archive), str(embedded_archive), "--to-version", "v2"])
    assert result.exit_code == 0, result.output
    with Archive(embedded_archive, readonly=True) as a:
        v1, v2 = a.get_version("streets", "v1"), a.get_version("streets", "v2")
        assert not v2.diff(v1)
        with pytest.raises(MaskstoreError, match="into itself"):
            v1.copy_to(v1)


# ---------------------------------------------------------------------------------------- compact


def build_with_garbage(path: Path, media: Path, n: int = 6, size: int = 8) -> None:
    """n embedded frames in v1 and v2 (a child); v2 drops half its frames and v1 is deleted, so the
    files of those frames are referenced by no frame any more."""
    pairs = write_images(media, n, size=size)
    with Archive(path, jobs=1) as ar:
        v1 = ar.create_version(dataset_name="d", version_name="v1")
        v1.add_frames(embedded_frames(pairs), embed=True)
        v2 = ar.create_version(dataset_name="d", version_name="v2", parent=v1)
        v2.delete_frames([f"e{i}" for i in range(n // 2)])
        ar.delete_version("d", "v1", force=True)


def test_compact_cli_drops_unreferenced_blobs(runner, tmp_path):
    path = tmp_path / "a.maskstore"
    build_with_garbage(path, tmp_path / "media", n=6, size=64)
    with Archive(path, readonly=True) as ar:
        before_frames, before_blobs = all_frames(ar), blob_digests(ar)
        unused = [str(p) for p in check_archive(ar) if "used by no frame" in str(p)]
        assert len(unused) == 3, unused  # what check reports is what compact drops
    size = path.stat().st_size
    result = runner.invoke(main, ["compact", str(path)])
    assert result.exit_code == 0, result.output
    assert f"{size / 1e6:.1f} MB -> " in result.stdout and "dropped 3 embedded files" in result.stdout
    assert path.stat().st_size < size
    assert not temp_path(path).exists()
    with Archive(path) as ar:
        assert all_frames(ar) == before_frames
        # 6 images and 3 distinct masks before; the 3 images of the deleted frames are gone
        assert len(blob_digests(ar)) == 6 and len(before_blobs) == 9
        assert not check_archive(ar)
        v = ar.get_version("d", "v2")
        v.add_frames([frame("after")])  # writable as before
        assert len(v) == 4 and v.count('id == "after"') == 1


def test_compact_to_output_leaves_the_original(runner, tmp_path):
    path, out = tmp_path / "a.maskstore", tmp_path / "small.maskstore"
    build_with_garbage(path, tmp_path / "media")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    result = runner.invoke(main, ["compact", str(path), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    with Archive(path, readonly=True) as a, Archive(out, readonly=True) as b:
        assert all_frames(a) == all_frames(b) and not check_archive(b)
    again = runner.invoke(main, ["compact", str(path), "-o", str(out)])
    assert again.exit_code == 1 and "exists" in again.stderr


def test_compact_refuses_a_read_only_file(runner, tmp_path):
    path = tmp_path / "a.maskstore"
    build_with_garbage(path, tmp_path / "media")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    path.chmod(0o444)
    result = runner.invoke(main, ["compact", str(path)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "read-only" in result.stderr and "-o OUT" in result.stderr
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    with pytest.raises(ReadOnlyError):
        compact(path)


def test_compact_refuses_while_another_process_has_the_archive_open(tmp_path):
    path = tmp_path / "a.maskstore"
    build_with_garbage(path, tmp_path / "media")
    code = textwrap.dedent(f"""
        import sys
        from maskstore import Archive
        ar = Archive({str(path)!r}, readonly=True)
        print("open", flush=True)
        sys.stdin.read()
    """)
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "open"
        with pytest.raises(MaskstoreError, match="another process has .* open"):
            compact(path)
    finally:
        child.stdin.close()
        child.wait(timeout=30)
    with Archive(path, readonly=True):
        with pytest.raises(MaskstoreError, match="this process has it open"):
            compact(path)
    assert compact(path).blobs_dropped == 3  # closed everywhere: now it works


def test_compact_overwrites_what_a_killed_run_left(tmp_path):
    path = tmp_path / "a.maskstore"
    build_with_garbage(path, tmp_path / "media")
    temp_path(path).write_bytes(b"half a file from a run that was killed")
    report = compact(path)
    assert report.blobs_dropped == 3 and not temp_path(path).exists()
    with Archive(path, readonly=True) as ar:
        assert not check_archive(ar)


def test_copy_with_a_bad_query_leaves_no_version_behind(runner, tmp_path, embedded_archive):
    dst = tmp_path / "b.maskstore"
    result = runner.invoke(main, ["copy", str(embedded_archive), str(dst), "--query", "id ==", "--to-version", "v9"])
    assert result.exit_code == 1 and "Traceback" not in result.output and "line 1" in result.stderr
    with Archive(dst, readonly=True) as b:
        assert b.versions() == []
    itself = runner.invoke(main, ["copy", str(embedded_archive), str(embedded_archive)])
    assert itself.exit_code == 1 and "into itself" in itself.stderr
