"""Version commands (spec section 8): each through click's CliRunner, then the library state after it."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, strategies as st
from PIL import Image

from maskstore import (Archive, DatasetVersion, ReadOnlyError, SingleFrame, VersionError, VersionNotFoundError,
                       records)
from maskstore.check import check_archive
from maskstore.cli import main

ROW_KEYS = ["dataset", "version", "frames", "state", "parent", "created", "description"]


@pytest.fixture
def runner():
    return CliRunner()


def run(runner: CliRunner, *args: object):
    result = runner.invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


def one_line_error(result) -> str:
    """The CLI's failure shape: exit 1, one ``Error:`` line on stderr, no traceback."""
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output and result.stderr.startswith("Error: "), result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    return result.stderr


@pytest.fixture
def images(tmp_path):
    img, mask = tmp_path / "img.png", tmp_path / "mask.png"
    Image.fromarray(np.zeros((4, 6, 3), np.uint8)).save(img)
    Image.fromarray(np.array([[0] * 6, [1] * 6, [1] * 6, [2] * 6], np.uint8)).save(mask)
    return str(img), str(mask)


@pytest.fixture
def streets(tmp_path, images):
    """streets/v1 with two frames (one embedded), labelled; no other version."""
    path = tmp_path / "s.maskstore"
    img, mask = images
    with Archive(path, jobs=1) as ar:
        v1 = ar.create_version("streets", "v1", description="first cut")
        v1.add_frames([SingleFrame(source=img, mask_source=mask, id="f1"), SingleFrame(source=img, id="f2")])
        v1.set_masks_labels({(1, 1, 1): ["person"]})
        v1.update_frames([SingleFrame(source=img, mask_source=mask, id="f2")], embed=True)
    return path


def test_versions_json_has_exactly_the_spec_keys(runner, streets):
    before = datetime.now(timezone.utc)
    run(runner, "create-version", streets, "-d", "streets", "-V", "v2", "--parent", "v1", "--description", "more")
    run(runner, "publish", streets, "-d", "streets", "-V", "v1")
    rows = json.loads(run(runner, "versions", streets, "--json").stdout)
    assert [list(row) for row in rows] == [ROW_KEYS, ROW_KEYS]
    assert [{k: v for k, v in row.items() if k != "created"} for row in rows] == [
        {"dataset": "streets", "version": "v1", "frames": 2, "state": "published", "parent": None,
         "description": "first cut"},
        {"dataset": "streets", "version": "v2", "frames": 2, "state": "draft", "parent": "streets/v1",
         "description": "more"}]
    created = datetime.fromisoformat(rows[1]["created"])
    assert created.utcoffset() == timedelta(0)
    assert before - timedelta(seconds=1) <= created <= datetime.now(timezone.utc)
    with Archive(streets, readonly=True) as ar:
        assert ar.versions_info() == rows
        assert ar.get_version("streets", "v2").created == rows[1]["created"]


def test_versions_table_lists_every_version(runner, streets):
    run(runner, "create-version", streets, "-V", "v2", "--parent", "v1")  # -d: the archive's only dataset
    lines = run(runner, "versions", streets).stdout.splitlines()
    assert lines[0].split() == ["version", "frames", "state", "parent", "created", "description"]
    assert lines[1].split()[:4] == ["streets/v1", "2", "draft", "-"] and lines[1].endswith("first cut")
    assert lines[2].split()[:4] == ["streets/v2", "2", "draft", "streets/v1"]
    assert len(lines) == 3


def test_versions_of_an_empty_archive(runner, tmp_path):
    path = tmp_path / "e.maskstore"
    run(runner, "init", path)
    assert json.loads(run(runner, "versions", path, "--json").stdout) == []
    result = run(runner, "versions", path)
    assert result.stdout == "" and "create-version" in result.stderr


def test_create_version_with_parent_in_the_same_dataset_or_as_d_slash_v(runner, streets):
    run(runner, "create-version", streets, "-d", "streets", "-V", "v2", "--parent", "v1")
    run(runner, "create-version", streets, "-d", "night", "-V", "v1", "--parent", "streets/v2",
        "--description", "night shots")
    run(runner, "create-version", streets, "-d", "night", "-V", "empty")
    with Archive(streets, readonly=True) as ar:
        v2, night = ar.get_version("streets", "v2"), ar.get_version("night", "v1")
        empty = ar.get_version("night", "empty")
        assert v2.parent == ar.get_version("streets", "v1") and night.parent == v2 and empty.parent is None
        assert sorted(night.ids()) == ["f1", "f2"] and night.get_masks_labels() == {(1, 1, 1): ["person"]}
        assert night.description == "night shots" and empty.description == "" and len(empty) == 0
        assert not night.is_published


def test_create_version_refuses_an_unknown_parent_and_a_taken_name(runner, streets):
    message = one_line_error(runner.invoke(main, ["create-version", str(streets), "-d", "streets", "-V", "v2",
                                                  "--parent", "v9"]))
    assert "streets/v9" in message and "it has: streets/v1" in message
    message = one_line_error(runner.invoke(main, ["create-version", str(streets), "-d", "streets", "-V", "v1"]))
    assert "streets/v1 exists already" in message
    with Archive(streets, readonly=True) as ar:
        assert [v.label for v in ar.versions()] == ["streets/v1"]


def test_publish_makes_the_version_read_only_and_can_be_repeated(runner, streets, images):
    result = run(runner, "publish", streets, "-d", "streets", "-V", "v1")
    assert "published streets/v1" in result.stderr
    run(runner, "publish", streets)  # the only version; publishing again changes nothing
    with Archive(streets, jobs=1) as ar:
        v1 = ar.get_version("streets", "v1")
        assert v1.is_published and v1.state == "published"
        with pytest.raises(ReadOnlyError, match="create a child version"):
            v1.add_frames([SingleFrame(source=images[0], id="f3")])
    run(runner, "create-version", streets, "-V", "v2", "--parent", "v1")  # the way to change it
    with Archive(streets, jobs=1) as ar:
        v2 = ar.get_version("streets", "v2")
        v2.add_frames([SingleFrame(source=images[0], id="f3")])
        assert sorted(v2.ids()) == ["f1", "f2", "f3"] and len(ar.get_version("streets", "v1")) == 2


def test_delete_version_of_a_leaf_draft(runner, streets):
    run(runner, "create-version", streets, "-d", "streets", "-V", "v2", "--parent", "v1")
    result = run(runner, "delete-version", streets, "-d", "streets", "-V", "v2")
    assert "deleted streets/v2" in result.stderr
    with Archive(streets, readonly=True) as ar:
        assert [v.label for v in ar.versions()] == ["streets/v1"] and len(ar.get_version("streets", "v1")) == 2
        assert check_archive(ar) == []  # v1 still names the embedded mask


def test_delete_version_needs_force_when_published_or_with_children(runner, streets):
    run(runner, "create-version", streets, "-d", "streets", "-V", "v2", "--parent", "v1")
    run(runner, "create-version", streets, "-d", "streets", "-V", "v3", "--parent", "v2")
    run(runner, "publish", streets, "-d", "streets", "-V", "v3")
    message = one_line_error(runner.invoke(main, ["delete-version", str(streets), "-d", "streets", "-V", "v2"]))
    assert "has children (streets/v3)" in message and "--force" in message and "force=True" not in message
    message = one_line_error(runner.invoke(main, ["delete-version", str(streets), "-d", "streets", "-V", "v3"]))
    assert "is published" in message and "--force" in message
    with Archive(streets, readonly=True) as ar:
        assert [v.label for v in ar.versions()] == ["streets/v1", "streets/v2", "streets/v3"]

    result = run(runner, "delete-version", streets, "-d", "streets", "-V", "v2", "--force")
    assert "streets/v3 now has parent streets/v1" in result.stderr
    with Archive(streets, readonly=True) as ar:
        v1, v3 = ar.get_version("streets", "v1"), ar.get_version("streets", "v3")
        assert [v.label for v in ar.versions()] == ["streets/v1", "streets/v3"]
        assert v3.parent == v1 and v1.children == [v3] and v3.is_published
        assert sorted(v3.ids()) == ["f1", "f2"] and v3.ids('label == "person"') == ["f1", "f2"]
        assert check_archive(ar) == []
    result = run(runner, "delete-version", streets, "-d", "streets", "-V", "v1", "--force")
    assert "streets/v3 now has no parent" in result.stderr
    with Archive(streets, readonly=True) as ar:
        assert ar.get_version("streets", "v3").parent is None


def test_deleting_every_user_of_an_embedded_file_keeps_it_until_compact(runner, streets):
    with Archive(streets, readonly=True) as ar:
        blobs = ar.read(lambda t: t.stat(ar.db("blobs"))["entries"])
    assert blobs == 2  # f2's image and mask
    run(runner, "delete-version", streets, "-d", "streets", "-V", "v1")
    with Archive(streets, readonly=True) as ar:
        assert ar.read(lambda t: t.stat(ar.db("blobs"))["entries"]) == blobs
        problems = check_archive(ar)
    assert [p.severity for p in problems] == ["warning", "warning"]
    assert all("is used by no frame of any version" in p.message for p in problems)


def test_delete_version_in_the_library(streets):
    with Archive(streets, jobs=1) as ar:
        child = ar.create_version("streets", "v2", parent="v1")
        with pytest.raises(VersionError, match="has children"):
            ar.delete_version("streets", "v1")
        assert ar.delete_version("streets", "v1", force=True) == [child]
        assert child.parent is None and len(child) == 2
        with pytest.raises(VersionNotFoundError, match="it has: streets/v2"):
            ar.delete_version("streets", "v1")


def test_rename_version_keeps_children_pointing_at_it(runner, streets):
    run(runner, "create-version", streets, "-d", "streets", "-V", "v2", "--parent", "v1")
    run(runner, "publish", streets, "-d", "streets", "-V", "v1")
    result = run(runner, "rename-version", streets, "-d", "streets", "-V", "v1", "--to", "base")
    assert "renamed streets/v1 to streets/base" in result.stderr
    rows = json.loads(run(runner, "versions", streets, "--json").stdout)
    assert [(r["version"], r["parent"], r["state"]) for r in rows] == [("base", None, "published"),
                                                                      ("v2", "streets/base", "draft")]
    with Archive(streets, readonly=True) as ar:
        base = ar.get_version("streets", "base")
        assert ar.get_version("streets", "v2").parent == base and len(base) == 2
        with pytest.raises(VersionNotFoundError, match="it has: streets/base, streets/v2"):
            ar.get_version("streets", "v1")


def test_rename_onto_an_existing_name_is_refused(runner, streets):
    run(runner, "create-version", streets, "-d", "streets", "-V", "v2")
    message = one_line_error(runner.invoke(main, ["rename-version", str(streets), "-d", "streets", "-V", "v2",
                                                  "--to", "v1"]))
    assert "streets/v1 exists already" in message
    with Archive(streets, jobs=1) as ar:
        assert [v.label for v in ar.versions()] == ["streets/v1", "streets/v2"]
        v2 = ar.get_version("streets", "v2")
        v2.rename("v2")  # its own name: nothing changes
        with pytest.raises(VersionError, match="exists already"):
            v2.rename("v1")
        ar.create_version("other", "v3").rename("v1")  # another dataset's name is free
        assert [v.label for v in ar.versions()] == ["streets/v1", "streets/v2", "other/v1"]


@pytest.mark.parametrize("command", [["publish"], ["delete-version"], ["delete-version", "--force"],
                                     ["rename-version", "--to", "x"]])
def test_an_unknown_version_lists_what_exists(runner, streets, command):
    for names in (["-d", "streets", "-V", "v9"], ["-d", "nope", "-V", "v1"]):
        message = one_line_error(runner.invoke(main, [command[0], str(streets), *names, *command[1:]]))
        assert "streets/v1" in message, message
    with Archive(streets, readonly=True) as ar:
        assert [(v.label, v.state) for v in ar.versions()] == [("streets/v1", "draft")]


def test_info_json_is_what_info_prints(runner, streets):
    run(runner, "create-version", streets, "-d", "streets", "-V", "v2", "--parent", "v1")
    about = json.loads(run(runner, "info", streets, "--json").stdout)
    assert list(about) == ["archive", "format", "size", "versions"]
    assert about["format"] == records.FEATURES_FORMAT and about["size"] == streets.stat().st_size
    assert [list(row) for row in about["versions"]] == [ROW_KEYS + ["labelled_values"]] * 2
    assert [(r["version"], r["frames"], r["labelled_values"], r["parent"]) for r in about["versions"]] == [
        ("v1", 2, 1, None), ("v2", 2, 1, "streets/v1")]
    lines = run(runner, "info", streets).stdout.splitlines()
    assert lines[1:] == [f"format:  maskstore {records.FEATURES_FORMAT}", f"size:    {about['size'] / 1e6:.1f} MB",
                         "- streets/v1: 2 frames, 1 mask values labelled, draft",
                         "- streets/v2: 2 frames, 1 mask values labelled, draft, parent v1"]


@pytest.mark.parametrize("stored, shown", [(1_700_000_000.5, "2023-11-14T22:13:20+00:00"), (None, None)])
def test_version_records_from_before_created_was_text_still_read(runner, streets, stored, shown):
    """Older archives stored Unix seconds, or nothing."""
    with Archive(streets, jobs=1) as ar:
        v1 = ar.get_version("streets", "v1")
        rec = v1.record()
        if stored is None:
            del rec["created"]
        else:
            rec["created"] = stored
        ar.write(lambda t: t.put(v1.prefix, records.encode_version(rec), db=ar.db("versions")))
    rows = json.loads(run(runner, "versions", streets, "--json").stdout)
    assert rows[0]["created"] == shown and list(rows[0]) == ROW_KEYS
    with Archive(streets, readonly=True) as ar:
        assert ar.get_version("streets", "v1").created == shown


def test_parent_names_with_a_slash_are_resolved_or_refused_as_ambiguous(tmp_path):
    with Archive(tmp_path / "p.maskstore", jobs=1) as ar:
        a = ar.create_version("a", "b/c")
        assert ar.create_version("x", "child", parent="a/b/c").parent == a
        ab = ar.create_version("a/b", "c")
        with pytest.raises(VersionError, match="names several versions"):
            ar.create_version("x", "other", parent="a/b/c")
        assert ar.create_version("a/b", "d", parent="c").parent == ab  # the same dataset's comes first


@given(st.floats(min_value=0, max_value=253402300799))  # Unix seconds up to 9999-12-31
def test_created_seconds_of_older_records_read_as_the_same_utc_second(seconds):
    text = DatasetVersion.created_text(seconds)
    parsed = datetime.fromisoformat(text)
    assert parsed.utcoffset() == timedelta(0) and int(parsed.timestamp()) == int(seconds)
    assert DatasetVersion.created_text(text) == text


@pytest.mark.parametrize("stored", [True, float("nan"), 1e300, -1e300, [1], {"a": 1}, b"x"])
def test_created_values_no_writer_stores_read_as_unknown(stored):
    assert DatasetVersion.created_text(stored) is None
