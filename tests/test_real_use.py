"""Real use: the CLI and API workflows users met, each reproduced the way they met it.

Numbers in the section titles are the points of the "Real use" issue.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, example, given, settings, strategies as st
from PIL import Image

import maskstore
from maskstore import Archive, DatasetVersion, FrameError, MaskstoreError, MediaError, SingleFrame
from maskstore.cli import main
from maskstore.ingest import IngestReport, ingest, load_label_table
from maskstore.ingest.jsonl import read_frames_jsonl

CLEARML_SNIPPET = '''\
from maskstore import DatasetVersion, SingleFrame
version = DatasetVersion.create_version(dataset_name="Example", version_name="v1")
frame = SingleFrame(source="img.png", mask_source="mask.png")
version.add_frames([frame])
version.set_masks_labels({(0, 0, 0): ["background"], (1, 1, 1): ["person", "sitting"]})
'''


@pytest.fixture
def runner():
    return CliRunner()


@pytest.fixture
def lemur(tmp_path, shared_data):
    """The real photo and its alpha matte side by side (lemur.png + lemur_alpha.png)."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("lemur.png", "lemur_alpha.png"):
        shutil.copy(shared_data / "pymatting_lemur" / name, folder / name)
    return folder


@pytest.fixture
def city(tmp_path, shared_data):
    """The real Cityscapes frame as img.png and its labelIds mask as mask.png, in tmp_path."""
    root = shared_data / "mmsegmentation_cityscapes"
    shutil.copy(root / "frankfurt_000000_000294_leftImg8bit.png", tmp_path / "img.png")
    shutil.copy(root / "frankfurt_000000_000294_gtFine_labelIds.png", tmp_path / "mask.png")
    return tmp_path


@pytest.fixture(autouse=True)
def no_default_archive(monkeypatch):
    monkeypatch.delenv("MASKSTORE_ARCHIVE", raising=False)
    maskstore.use(None)
    yield
    maskstore.use(None)


def invoke(runner, *args, **kwargs):
    return runner.invoke(main, [str(a) for a in args], **kwargs)


def one_line_error(result) -> str:
    """The CLI's failure shape: exit 1, no traceback, the message on stderr after "Error: "."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert result.stderr.startswith("Error: "), result.stderr
    return result.stderr


def write_lines(path: Path, *frames) -> Path:
    path.write_text("".join(json.dumps(f) + "\n" for f in frames))
    return path


# ---------------------------------------------------------------------------------------- 5: the boundary

def test_nul_in_a_frames_file_uri_is_a_one_line_error(runner, tmp_path, city):
    frames = write_lines(tmp_path / "f.jsonl", {"id": "a", "sources": [{"uri": "img\x00.png",
                                                                          "masks": [{"uri": "mask.png"}]}]})
    message = one_line_error(invoke(runner, "ingest", tmp_path / "a.maskstore", "--frames", frames))
    assert "NUL" in message and "frame 'a'" in message


def test_nul_in_a_uri_is_a_media_error_from_the_library(version, city):
    with pytest.raises(MediaError, match="NUL"):
        version.add_frames([SingleFrame(source=str(city / "img.png"), mask_source=str(city / "ma\x00sk.png"))])
    assert len(version) == 0


def test_an_unexpected_exception_still_gives_one_line_and_exit_1(runner, tmp_path, monkeypatch):
    """The boundary holds for failures the library does not name (here a stand-in bug)."""
    Archive(tmp_path / "x.maskstore").close()

    def bug(*_args, **_kwargs):
        raise ZeroDivisionError("division by zero")
    monkeypatch.setattr("maskstore.cli.check_archive", bug)
    message = one_line_error(invoke(runner, "check", tmp_path / "x.maskstore"))
    assert message.count("\n") == 1 and "ZeroDivisionError: division by zero" in message and "report" in message


leaf = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(), st.text(max_size=4),
                 st.sampled_from(["x\x00.png", "s3://b/x.png", "file://%00", "file:///x%00y", "http://[x", "",
                                  "blob:sha256:zz", "/dev/null", "/", ".", "ftp://x/y.png", "file://", "\ud800.png"]))
anything = st.recursive(leaf, lambda kids: st.one_of(st.lists(kids, max_size=2),
                                                     st.dictionaries(st.text(max_size=3), kids, max_size=2)),
                        max_leaves=4)


def maybe(strategy):
    return st.one_of(strategy, anything)


hostile_masks = st.fixed_dictionaries({}, optional={"id": maybe(st.text(max_size=3)), "uri": leaf, "values": maybe(
    st.lists(st.lists(st.integers(-1, 300), max_size=5), max_size=2)), "timestamp": leaf})
hostile_sources = st.fixed_dictionaries({}, optional={"id": leaf, "uri": leaf, "width": leaf, "masks": maybe(
    st.lists(maybe(hostile_masks), max_size=2))})
hostile_rois = st.fixed_dictionaries({}, optional={"label": maybe(st.lists(leaf)), "sources": anything,
                                                   "confidence": leaf, "poly": maybe(st.lists(leaf, max_size=4)),
                                                   "meta": anything})
hostile_frames = st.fixed_dictionaries({}, optional={
    "id": leaf, "timestamp": leaf, "context_id": leaf, "meta": anything,
    "sources": maybe(st.lists(maybe(hostile_sources), max_size=2)), "rois": maybe(st.lists(maybe(hostile_rois), max_size=2))})


@pytest.mark.slow
@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(frames=st.lists(hostile_frames, min_size=1, max_size=2), how=st.sampled_from(["add", "embed", "merge"]))
@example(frames=[{"id": "r", "rois": [{"label": ["car"], "sources": 162}]}], how="add")
@example(frames=[{"id": "r", "rois": [{"meta": [[], []]}]}], how="add")
@example(frames=[{"id": "\ud800.png"}], how="merge")
@example(frames=[{"id": "r", "meta": "."}], how="merge")
@example(frames=[{"id": "n", "sources": [{"uri": "x\x00.png", "masks": [{"uri": "m\x00.png"}]}]}], how="embed")
def test_hostile_frame_dicts_raise_only_maskstore_errors(tmp_path_factory, frames, how):
    """Whatever JSON a frames file holds, the library answers with a MaskstoreError or stores it
    (found this way: ROI sources/meta of the wrong type, NUL in paths, ids with lone surrogates in
    update_frames(merge=True), non-dict meta in a merge)."""
    path = tmp_path_factory.getbasetemp() / "hostile.maskstore"
    with Archive(path, jobs=1) as ar:
        v = ar.create_version("D", "v1", exist_ok=True)
        v.add_frames([{"id": "r"}])  # something for merges to find
        try:
            if how == "merge":
                v.update_frames(frames, merge=True)
            else:
                v.add_frames(frames, embed=how == "embed")
        except MaskstoreError:
            pass


# ---------------------------------------------------------------------------------------- 7: new versions

def test_ingest_with_a_new_version_or_dataset_creates_it(runner, tmp_path, lemur):
    path = tmp_path / "a.maskstore"
    layout = ["--images", lemur, "--masks", lemur, "--mask-suffix", "_alpha"]
    assert invoke(runner, "ingest", path, *layout).exit_code == 0
    v2 = invoke(runner, "ingest", path, "-V", "v2", *layout)
    assert v2.exit_code == 0, v2.output
    assert "to a/v2" in v2.stderr
    assert invoke(runner, "ingest", path, "-d", "other", *layout).exit_code == 0
    with Archive(path, readonly=True) as ar:
        assert sorted(v.label for v in ar.versions()) == ["a/v1", "a/v2", "other/v1"]
        assert [len(v) for v in ar.versions()] == [1, 1, 1]
    # two datasets now: a version name alone is ambiguous unless one dataset has it
    assert invoke(runner, "ingest", path, "-V", "v2", *layout).exit_code == 0
    message = one_line_error(invoke(runner, "ingest", path, "-V", "v9", *layout))
    assert "several datasets (a, other)" in message and "-d DATASET" in message
    message = one_line_error(invoke(runner, "ingest", path, "-d", "a", *layout))
    assert "several versions (v1, v2)" in message and "-V VERSION" in message


# ---------------------------------------------------------------------------------------- 10: SingleFrame's words

def test_frames_file_in_single_frame_keywords_is_converted(runner, tmp_path, city):
    frames = write_lines(tmp_path / "f.jsonl",
                         {"source": "img.png", "mask_source": "mask.png", "id": "one", "context_id": "frankfurt",
                          "metadata": {"city": "frankfurt"}},
                         {"source": "img.png", "masks_source": {"sem": "mask.png"}, "id": "two",
                          "rois": [{"label": ["car"], "poly": [0, 0, 4, 0, 4, 4]}]})
    result = invoke(runner, "ingest", tmp_path / "k.maskstore", "--frames", frames)
    assert result.exit_code == 0, result.output
    with Archive(tmp_path / "k.maskstore", readonly=True) as ar:
        (v,) = ar.versions()
        one, two = v.get_frame("one"), v.get_frame("two")
    assert one.sources[0].uri == str(city / "img.png") and one.meta == {"city": "frankfurt"}
    assert one.sources[0].masks[0].id == "00" and one.sources[0].masks[0].values
    assert two.sources[0].masks[0].id == "sem" and two.rois[0].label == ["car"]


def test_frames_file_with_keys_single_frame_does_not_take_shows_the_frame_dict_shape(tmp_path):
    frames = write_lines(tmp_path / "f.jsonl", {"source": "img.png", "mask": "mask.png"})
    with pytest.raises(FrameError) as info:
        list(read_frames_jsonl(frames))
    assert "f.jsonl:1:" in str(info.value) and "'mask'" in str(info.value)
    assert '"sources": [{"uri": "img.png", "masks": [{"uri": "mask.png"}]}]' in str(info.value)


# ---------------------------------------------------------------------------------------- 11: messages

def test_same_folder_without_suffix_names_the_option(runner, tmp_path, lemur):
    message = one_line_error(invoke(runner, "ingest", tmp_path / "a.maskstore", "--images", lemur, "--masks", lemur))
    assert "--mask-suffix _alpha" in message and "mask_suffix=" not in message
    assert not (tmp_path / "a.maskstore").exists()


def test_render_size_mismatch_names_the_option_and_export_names_the_frame_once(runner, tmp_path, shared_data):
    path = tmp_path / "m.maskstore"
    with Archive(path) as ar:  # a 480x360 photo with a 680x440 matte
        ar.create_version("D", "v1").add_frames([SingleFrame(
            source=str(shared_data / "rembg_examples" / "car-1.jpg"),
            mask_source=str(shared_data / "pymatting_lemur" / "lemur_alpha.png"), id="x")])
    message = one_line_error(invoke(runner, "render", path, "x", "-o", tmp_path / "o.png"))
    assert "--resize nearest" in message and 'resize="' not in message
    message = one_line_error(invoke(runner, "render", path, "x", "-o", tmp_path / "o.png", "--mode", "alpha",
                                    "--layer-only", "--resize", "nearest"))
    assert "--layer-only applies to --mode segmentation only" in message
    result = invoke(runner, "export", path, tmp_path / "out", "--jobs", 1)
    assert result.exit_code == 1
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert line.count("frame 'x'") == 1 and "--resize nearest" in line


def test_missing_frame_names_the_version_not_python_internals(runner, tmp_path, city):
    path = tmp_path / "c.maskstore"
    with Archive(path) as ar:
        ar.create_version("voc", "v1").add_frames([{"id": "a", "sources": [{"uri": str(city / "img.png")}]}])
    message = one_line_error(invoke(runner, "render", path, "nope", "-o", tmp_path / "o.png"))
    assert "no frame 'nope' in voc/v1" in message and "DatasetVersion(" not in message


def test_unreadable_image_message_names_the_file_not_a_python_object(runner, tmp_path):
    (tmp_path / "bad.png").write_bytes(b"hello")
    frames = write_lines(tmp_path / "f.jsonl", {"id": "bad", "sources": [{"uri": "bad.png", "masks": [{"uri": "bad.png"}]}]})
    message = one_line_error(invoke(runner, "ingest", tmp_path / "b.maskstore", "--frames", frames))
    assert f"{tmp_path / 'bad.png'} is not a readable image" in message and "<_io." not in message


def test_other_schemes_are_kept_as_uris_and_refused_when_read(runner, tmp_path):
    frames = write_lines(tmp_path / "f.jsonl", {"id": "meta-only", "sources": [{"uri": "s3://bucket/a.png"}]},
                         {"id": "needs-stats", "sources": [{"uri": "s3://bucket/b.png", "width": 4, "height": 4,
                                                            "masks": [{"uri": "gs://bucket/b_mask.png"}]}]})
    message = one_line_error(invoke(runner, "ingest", tmp_path / "s.maskstore", "--frames", frames, "--batch-size", 1))
    assert "gs://bucket/b_mask.png: gs:// URIs are not supported" in message and "1 frames in 1 batches" in message
    with Archive(tmp_path / "s.maskstore", readonly=True) as ar:
        assert ar.versions()[0].get_frame("meta-only").sources[0].uri == "s3://bucket/a.png"  # not s3:/bucket/...


def test_a_mistyped_builtin_label_table_gets_a_suggestion(runner, tmp_path, lemur):
    message = one_line_error(invoke(runner, "ingest", tmp_path / "a.maskstore", "--images", lemur, "--masks", lemur,
                                    "--mask-suffix", "_alpha", "--labels", "citiscapes"))
    assert "did you mean 'cityscapes'?" in message
    with pytest.raises(FrameError, match="did you mean 'voc'"):
        load_label_table("vocc")


def test_frames_from_stdin(runner, tmp_path, city, monkeypatch):
    monkeypatch.chdir(city)  # relative paths on stdin are relative to the working folder
    line = json.dumps({"id": "s", "sources": [{"uri": "img.png", "masks": [{"uri": "mask.png"}]}]})
    result = invoke(runner, "ingest", tmp_path / "in.maskstore", "--frames", "-", input=line + "\n")
    assert result.exit_code == 0, result.output
    with Archive(tmp_path / "in.maskstore", readonly=True) as ar:
        assert ar.versions()[0].get_frame("s").sources[0].uri == str(city / "img.png")


def test_a_rerun_reports_updated_frames_not_added_ones(runner, tmp_path, lemur):
    args = ["ingest", tmp_path / "a.maskstore", "--images", lemur, "--masks", lemur, "--mask-suffix", "_alpha"]
    assert "added 1 frames in 1 batches" in invoke(runner, *args).stderr
    again = invoke(runner, *args).stderr
    assert "added 0 frames and updated 1 in 1 batches" in again


def test_ingest_report_counts_added_and_updated(version):
    frames = [{"id": f"f{i}"} for i in range(5)]
    report = ingest(version, frames[:3], batch_size=2)
    assert (report.frames, report.added, report.updated) == (3, 3, 0)
    report = ingest(version, frames, batch_size=2, report=IngestReport())
    assert (report.frames, report.added, report.updated, report.batches) == (5, 2, 3, 3)


@pytest.mark.parametrize("flags", [["--count", "--format", "jsonl"], ["--count", "--explain"],
                                   ["--explain", "--format", "table"]])
def test_output_choices_that_contradict_are_usage_errors(runner, tmp_path, flags):
    with Archive(tmp_path / "q.maskstore") as ar:
        ar.create_version("D", "v1")
    result = invoke(runner, "query", tmp_path / "q.maskstore", "", *flags)
    assert result.exit_code == 2 and "give one of them" in result.stderr


def test_unknown_mask_lists_the_frames_masks(runner, tmp_path, city):
    path = tmp_path / "c.maskstore"
    with Archive(path) as ar:
        ar.create_version("D", "v1").add_frames([SingleFrame(source=str(city / "img.png"), id="f",
                                                             masks_source={"sem": str(city / "mask.png")})])
    message = one_line_error(invoke(runner, "render", path, "f", "--mask", "zz", "-o", tmp_path / "o.png"))
    assert "no mask 'zz'" in message and "its masks: 'sem' (source '0')" in message


# ---------------------------------------------------------------------------------------- 12: re-runs

def test_create_version_exist_ok_returns_the_existing_version(archive):
    first = archive.create_version("Example", "v1")
    first.add_frames([{"id": "a"}])
    again = archive.create_version(dataset_name="Example", version_name="v1", exist_ok=True)
    assert again == first and len(again) == 1
    with pytest.raises(FrameError, match="exists already.*exist_ok=True"):
        archive.create_version("Example", "v1")


def test_a_failed_first_cli_ingest_leaves_no_empty_version(runner, tmp_path, city):
    path = tmp_path / "c.maskstore"
    frames = write_lines(tmp_path / "f.jsonl", {"id": "a", "sources": [{"uri": "img.png", "masks": [{"uri": "missing.png"}]}]})
    message = one_line_error(invoke(runner, "ingest", path, "-d", "city", "-V", "v1", "--frames", frames))
    assert "file not found" in message and "0 frames in 0 batches" in message
    with Archive(path, readonly=True) as ar:
        assert ar.versions() == []
    write_lines(frames, {"id": "a", "sources": [{"uri": "img.png", "masks": [{"uri": "mask.png"}]}]})
    assert invoke(runner, "ingest", path, "-d", "city", "-V", "v1", "--frames", frames).exit_code == 0
    with Archive(path, readonly=True) as ar:
        assert [(v.label, len(v)) for v in ar.versions()] == [("city/v1", 1)]


def test_a_failed_ingest_into_an_existing_version_keeps_it(runner, tmp_path):
    path = tmp_path / "c.maskstore"
    with Archive(path) as ar:
        ar.create_version("city", "v1")
    frames = write_lines(tmp_path / "f.jsonl", {"id": "a", "sources": [{"uri": "/nowhere/x.png", "masks": [{"uri": "/nowhere/m.png"}]}]})
    one_line_error(invoke(runner, "ingest", path, "--frames", frames))
    with Archive(path, readonly=True) as ar:
        assert [v.label for v in ar.versions()] == ["city/v1"]


# ---------------------------------------------------------------------------------------- 17: ClearML entry points

def test_clearml_snippet_runs_verbatim_on_the_archive_the_environment_names(tmp_path, city):
    """The snippet exactly as written for ClearML, import changed, in a fresh process."""
    archive = tmp_path / "city.maskstore"
    env = {**os.environ, "MASKSTORE_ARCHIVE": str(archive)}
    done = subprocess.run([sys.executable, "-c", CLEARML_SNIPPET], cwd=city, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    with Archive(archive, readonly=True) as ar:
        v = ar.get_version("Example", "v1")
        (frame,) = list(v)
        assert v.get_masks_labels() == {(0, 0, 0): ["background"], (1, 1, 1): ["person", "sitting"]}
    mask = frame.sources[0].masks[0]
    expected = Image.open(city / "mask.png")
    assert sum(count for *_, count in mask.values) == expected.width * expected.height
    assert frame.sources[0].uri == "img.png"  # as given: relative to where the script ran


def test_use_names_the_default_archive_and_wins_over_the_environment(tmp_path, city, monkeypatch):
    monkeypatch.setenv("MASKSTORE_ARCHIVE", str(tmp_path / "env.maskstore"))
    maskstore.use(tmp_path / "chosen.maskstore")
    version = DatasetVersion.create_version(dataset_name="Example", version_name="v1")
    version.add_frames([SingleFrame(source=str(city / "img.png"), mask_source=str(city / "mask.png"))])
    again = DatasetVersion.get_version(dataset_name="Example", version_name="v1")
    assert again == version and len(again) == 1 and again.archive.path == tmp_path / "chosen.maskstore"
    maskstore.use(None)  # back to the environment variable
    assert DatasetVersion.create_version(dataset_name="Example", version_name="v1").archive.path == \
        tmp_path / "env.maskstore"


def test_without_a_default_archive_the_error_names_both_ways(tmp_path):
    with pytest.raises(MaskstoreError) as info:
        DatasetVersion.create_version(dataset_name="Example", version_name="v1")
    assert "maskstore.use" in str(info.value) and "MASKSTORE_ARCHIVE" in str(info.value)
    with pytest.raises(MaskstoreError, match="MASKSTORE_ARCHIVE"):
        DatasetVersion.get_version(dataset_name="Example", version_name="v1")


def test_on_a_version_the_entry_points_use_its_own_archive(tmp_path, archive, version):
    maskstore.use(tmp_path / "other.maskstore")
    child = version.create_version(dataset_name="Example", version_name="v2", parent=version)
    assert child.archive is archive and version.get_version("Example", "v2") == child
    with pytest.raises(KeyError):
        DatasetVersion.get_version(dataset_name="Example", version_name="v2")  # not in the default archive
