"""The command line, driven through click's CliRunner, then checked through the library."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from maskstore import Archive, postings
from maskstore.cli import main


@pytest.fixture
def runner():
    return CliRunner()


@pytest.fixture
def folders(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    (images / "sub").mkdir(parents=True)
    (masks / "sub").mkdir(parents=True)
    for stem in ("a", "sub/b"):
        Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(images / f"{stem}.jpg")
        Image.fromarray(np.full((4, 4), 7, np.uint8)).save(masks / f"{stem}.png")
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(images / "lonely.png")
    return images, masks


def test_ingest_folders_creates_archive_and_version(runner, tmp_path, folders):
    images, masks = folders
    path = tmp_path / "x.maskstore"
    result = runner.invoke(main, ["ingest", str(path), "-d", "D", "-V", "v1", "--images", str(images),
                                  "--masks", str(masks)])
    assert result.exit_code == 0, result.output
    assert "added 2 frames" in result.stderr and "lonely.png: no mask" in result.stderr
    with Archive(path, readonly=True) as ar:
        v = ar.get_version("D", "v1")
        assert sorted(f.id for f in v) == ["a", "sub/b"]
        assert v.get_frame("sub/b").sources[0].masks[0].values == [[7, 7, 7, 16]]
    # re-running updates the same frames instead of duplicating them
    assert runner.invoke(main, ["ingest", str(path), "--images", str(images), "--masks", str(masks)]).exit_code == 0
    with Archive(path, readonly=True) as ar:
        assert len(ar.get_version("D", "v1")) == 2


def test_ingest_frames_jsonl_with_relative_uris(runner, tmp_path, folders):
    images, masks = folders
    lines = [json.dumps({"id": "f1", "context_id": "car_1", "sources": [
        {"uri": "images/a.jpg", "masks": [{"uri": "masks/a.png"}]}]}), "",
             json.dumps({"id": "f2", "sources": [{"uri": "images/sub/b.jpg"}]})]
    (tmp_path / "frames.jsonl").write_text("\n".join(lines))
    path = tmp_path / "f.maskstore"
    result = runner.invoke(main, ["ingest", str(path), "--frames", str(tmp_path / "frames.jsonl")])
    assert result.exit_code == 0, result.output
    with Archive(path, readonly=True) as ar:
        (v,) = ar.versions()
        assert (v.dataset_name, v.version_name) == ("f", "v1")
        assert v.get_frame("f1").sources[0].masks[0].values == [[7, 7, 7, 16]]
        assert v.get_frame("f1").sources[0].uri == str(images / "a.jpg")


def test_bad_frames_file_names_the_line_and_commits_earlier_batches(runner, tmp_path):
    (tmp_path / "frames.jsonl").write_text(
        "\n".join([json.dumps({"id": f"f{i}"}) for i in range(3)] + ["{not json"] + [json.dumps({"id": "z"})]))
    path = tmp_path / "b.maskstore"
    result = runner.invoke(main, ["ingest", str(path), "--frames", str(tmp_path / "frames.jsonl"),
                                  "--batch-size", "2"])
    assert result.exit_code == 1
    assert "frames.jsonl:4: not valid JSON" in result.stderr and "Traceback" not in result.output
    assert "2 frames in 1 batches were committed" in result.stderr
    with Archive(path, readonly=True) as ar:
        assert [f.id for f in ar.versions()[0]] == ["f0", "f1"]


def test_wrong_shape_frames_file(runner, tmp_path):
    (tmp_path / "frames.jsonl").write_text('[1, 2]\n')
    result = runner.invoke(main, ["ingest", str(tmp_path / "w.maskstore"), "--frames", str(tmp_path / "frames.jsonl")])
    assert result.exit_code == 1 and "frames.jsonl:1: expected a frame object" in result.stderr


def test_labels_set_show_and_colors(runner, tmp_path, folders):
    path = tmp_path / "l.maskstore"
    runner.invoke(main, ["ingest", str(path), "--images", str(folders[0]), "--masks", str(folders[1])])
    (tmp_path / "ml.json").write_text(json.dumps([{"value": [7, 7, 7], "labels": ["road", "flat"]}]))
    (tmp_path / "c.json").write_text(json.dumps({"road": "#804080"}))
    result = runner.invoke(main, ["labels", str(path), "--set", str(tmp_path / "ml.json"),
                                  "--colors", str(tmp_path / "c.json")])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "[7, 7, 7]\troad #804080, flat"
    with Archive(path, readonly=True) as ar:
        assert ar.versions()[0].get_masks_labels() == {(7, 7, 7): ["road", "flat"]}


def test_info_check_and_init(runner, tmp_path, folders):
    path = tmp_path / "i.maskstore"
    assert runner.invoke(main, ["init", str(path)]).exit_code == 0
    runner.invoke(main, ["ingest", str(path), "-d", "D", "-V", "v1", "--images", str(folders[0]),
                         "--masks", str(folders[1])])
    result = runner.invoke(main, ["info", str(path)])
    assert "D/v1: 2 frames" in result.stdout
    result = runner.invoke(main, ["check", str(path)])
    assert result.exit_code == 0 and "0 errors" in result.stderr
    with Archive(path) as ar:
        v = ar.get_version("D", "v1")
        ar.write(lambda t: t.delete(postings.block_key(v.prefix, b"0", 0), db=ar.db("ix_source")))
    result = runner.invoke(main, ["check", str(path)])
    assert result.exit_code == 1 and "version D/v1, frame a: source id '0' is not in the source index" in result.stdout
    assert runner.invoke(main, ["check", str(path), "--repair"]).exit_code == 0


def test_user_errors_exit_1_without_traceback(runner, tmp_path):
    junk = tmp_path / "junk.maskstore"
    junk.write_text("not an archive")
    result = runner.invoke(main, ["info", str(junk)])
    assert result.exit_code == 1 and "not a maskstore archive" in result.stderr and "Traceback" not in result.output


def test_bad_arguments_exit_2(runner, tmp_path):
    assert runner.invoke(main, ["ingest", str(tmp_path / "a.maskstore")]).exit_code == 2
    assert runner.invoke(main, ["nonsense"]).exit_code == 2


def test_several_versions_need_a_choice(runner, tmp_path):
    path = tmp_path / "m.maskstore"
    with Archive(path) as ar:
        ar.create_version("A", "v1")
        ar.create_version("A", "v2")
    result = runner.invoke(main, ["labels", str(path)])
    assert result.exit_code == 1 and "-d DATASET -V VERSION" in result.stderr
    assert runner.invoke(main, ["labels", str(path), "-V", "v2"]).exit_code == 0


def test_query_formats_count_and_explain(runner, tmp_path):
    path = tmp_path / "q.maskstore"
    with Archive(path) as ar:
        v = ar.create_version("D", "v1")
        v.add_frames([{"id": f"f{i}", "context_id": f"car_{i % 2}", "timestamp": i,
                       "sources": [{"uri": f"/x/{i}.png", "masks": [{"uri": "/m.png", "values": [[i, i, i, 10]]}]}]}
                      for i in range(4)])
        v.set_masks_labels({(1, 1, 1): ["person"], (3, 3, 3): ["person"]})
    ids = runner.invoke(main, ["query", str(path), 'label == "person"'])
    assert ids.exit_code == 0 and ids.stdout == "f1\nf3\n"
    count = runner.invoke(main, ["query", str(path), 'context_id == "car_0"', "--count"])
    assert count.stdout == "2\n"
    jsonl = runner.invoke(main, ["query", str(path), "order by timestamp desc", "--format", "jsonl", "--limit", "2"])
    assert [json.loads(line)["id"] for line in jsonl.stdout.splitlines()] == ["f3", "f2"]
    table = runner.invoke(main, ["query", str(path), 'id == "f1"', "--format", "table"])
    assert table.stdout.splitlines()[1].split("\t") == ["f1", "car_1", "1", "0", "person"]
    explain = runner.invoke(main, ["query", str(path), 'label == "person"', "--explain"])
    assert "index ix_value" in explain.stdout
    bad = runner.invoke(main, ["query", str(path), 'timestamp == "x"'])
    assert bad.exit_code == 1 and "^" in bad.stderr and "Traceback" not in bad.output


def test_jsonl_export_round_trips_through_ingest(runner, tmp_path):
    src = tmp_path / "src.maskstore"
    frames = [{"id": "a", "context_id": "c", "timestamp": 5, "meta": {"city": "x"}, "annotator": "bob",
               "sources": [{"id": "front", "uri": "/x/a.png", "masks": [{"id": "00", "uri": "/m/a.png",
                                                                         "values": [[1, 1, 1, 4]]}]}],
               "rois": [{"label": ["car"], "confidence": 0.5, "poly": [0, 0, 1, 1]}]}]
    with Archive(src) as ar:
        ar.create_version("D", "v1").add_frames(frames)
    out = runner.invoke(main, ["query", str(src), "", "--format", "jsonl"])
    (tmp_path / "frames.jsonl").write_text(out.stdout)
    dst = tmp_path / "dst.maskstore"
    assert runner.invoke(main, ["ingest", str(dst), "--frames", str(tmp_path / "frames.jsonl")]).exit_code == 0
    with Archive(src, readonly=True) as a, Archive(dst, readonly=True) as b:
        assert list(a.versions()[0].frame_dicts()) == list(b.versions()[0].frame_dicts())


def test_limit_option_and_query_limit_take_the_smaller(runner, tmp_path):
    path = tmp_path / "l.maskstore"
    with Archive(path) as ar:
        ar.create_version("D", "v1").add_frames([{"id": f"f{i}", "timestamp": i} for i in range(5)])
    ids = runner.invoke(main, ["query", str(path), "order by timestamp limit 3", "--limit", "2"])
    assert ids.exit_code == 0 and ids.stdout == "f0\nf1\n"
    ids = runner.invoke(main, ["query", str(path), "order by timestamp desc limit 1", "--limit", "4"])
    assert ids.stdout == "f4\n"
    count = runner.invoke(main, ["query", str(path), "", "--count", "--limit", "3"])
    assert count.stdout == "3\n"
