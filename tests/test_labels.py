"""Labels as users meet them (issue "Real use" 8, 9, 13, 14, 15, 16): a misspelt label in a query, a
label table given again at ingest, default colours, class ids for training, ``stats``, and the NFC and
NFD spellings of one label or meta key."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import unicodedata
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from click.testing import CliRunner, Result

from maskstore import Archive, FrameError
from maskstore.cli import main
from maskstore.errors import UnknownLabelWarning
from maskstore.ingest import apply_label_table, builtin_label_table
from maskstore.labels import PALETTE, cielab, default_colors, default_enumeration
from maskstore.loaders import iter_arrays
from maskstore.summary import UNLABELLED, label_stats

MASKSTORE = Path(sys.executable).with_name("maskstore")
LIP = ["Background", "Hat", "Hair", "Glove", "Sunglasses", "UpperClothes", "Dress", "Coat", "Socks", "Pants",
       "Jumpsuits", "Scarf", "Skirt", "Face", "Left-arm", "Right-arm", "Left-leg", "Right-leg", "Left-shoe",
       "Right-shoe"]
CAFE_NFC = unicodedata.normalize("NFC", "café")
CAFE_NFD = unicodedata.normalize("NFD", "café")


def run_process(*args: object) -> subprocess.CompletedProcess:
    """The installed ``maskstore`` command in its own process, as a user runs it: warnings reach its
    stderr there (inside pytest they are captured as records instead)."""
    return subprocess.run([str(MASKSTORE), *map(str, args)], capture_output=True, text=True, timeout=120)


def run(*args: object) -> Result:
    """The ``maskstore`` command in this process (its code, exit status, stdout and stderr)."""
    return CliRunner().invoke(main, [str(a) for a in args])


def frame(fid: str, values: list[list[int]], rois: list[dict] | None = None, meta: dict | None = None) -> dict:
    return {"id": fid, "meta": meta or {}, "rois": rois or [],
            "sources": [{"uri": f"/x/{fid}.png", "masks": [{"uri": f"/m/{fid}.png", "values": values}]}]}


@pytest.fixture
def people(tmp_path: Path) -> Path:
    """An archive file: Example/v1 with person, bird and background mask labels and a ROI label car."""
    path = tmp_path / "people.maskstore"
    with Archive(path, jobs=1) as ar:
        v = ar.create_version(dataset_name="Example", version_name="v1")
        v.add_frames([frame("a", [[0, 0, 0, 50], [1, 1, 1, 50]]),
                      frame("b", [[0, 0, 0, 90], [2, 2, 2, 10]], rois=[{"label": ["car"]}])])
        v.set_masks_labels({(0, 0, 0): ["background"], (1, 1, 1): ["person"], (2, 2, 2): ["bird"]})
    return path


def rgb_distance(a, b) -> float:
    return float(np.linalg.norm(np.subtract(a, b, dtype=float)))


# ---------------------------------------------------------------------------------------- 8: misspelt labels

def test_cli_query_warns_once_about_a_misspelt_label_and_suggests_the_closest(people):
    result = run_process("query", people, 'label == "persn"')
    assert result.returncode == 0 and result.stdout == ""
    assert result.stderr.splitlines() == [
        "Warning: Example/v1 has no label 'persn', so nothing matches it; did you mean 'person'?"]


def test_cli_coverage_of_a_misspelt_label_warns_and_still_counts_zero(people):
    result = run_process("query", people, 'coverage("brid") > 0.05', "--count")
    assert result.returncode == 0 and result.stdout == "0\n"
    assert result.stderr.splitlines() == [
        "Warning: Example/v1 has no mask label 'brid', so nothing matches it; did you mean 'bird'?"]
    assert run("query", people, 'coverage("bird") > 0.05', "--count").stdout == "1\n"


def test_library_warns_with_a_warning_class_and_the_results_stay_empty(people):
    with Archive(people) as ar:
        v = ar.get_version("Example", "v1")
        for query, words in [('label == "persn"', "no label 'persn'"), ('coverage("brid") > 0', "did you mean 'bird'"),
                             ('mask.label == "car"', "no mask label 'car'"), ('roi.label == "person"', "no ROI label"),
                             ('label in ["person", "cta"]', "no label 'cta'"), ('not label == "persn"', "'persn'")]:
            with pytest.warns(UnknownLabelWarning, match=words):
                ids = v.ids(query)
            assert ids == (["a", "b"] if query.startswith("not") else ["a"] if "in [" in query else [])
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # labels the version has, from masks or ROIs: no warning
            assert v.ids('label == "person" or label == "car" or roi.label == "car"') == ["a", "b"]
            assert v.count('coverage("bird") > 0 and label ~ "pers*"') == 0
            assert isinstance(UnknownLabelWarning("x"), UserWarning)


# ---------------------------------------------------------------------------------------- 9: label tables

def write_json(path: Path, value: object) -> Path:
    path.write_text(json.dumps(value), encoding="utf-8")
    return path


def test_cli_ingest_refuses_a_different_label_table_unless_replace_labels(tmp_path):
    frames = tmp_path / "frames.jsonl"
    frames.write_text(json.dumps(frame("a", [[1, 1, 1, 10]])) + "\n", encoding="utf-8")
    first = write_json(tmp_path / "t1.json", [{"value": [1, 1, 1], "labels": ["person"], "color": [220, 20, 60]}])
    second = write_json(tmp_path / "t2.json", [{"value": [1, 1, 1], "labels": ["human"], "color": [0, 0, 255]}])
    archive = tmp_path / "a.maskstore"
    ingest = ("ingest", archive, "-d", "D", "-V", "v1", "--frames", frames, "--labels")
    assert run(*ingest, first).exit_code == 0
    refused = run(*ingest, second)
    assert refused.exit_code == 1
    assert refused.stderr.splitlines() == [
        "Error: D/v1 already has other mask labels: value [1, 1, 1] is 'person' in the version but 'human' in "
        "the new table; to replace them, pass --replace-labels (replace=True)"]
    assert run("labels", archive).stdout == "[1, 1, 1]\tperson #dc143c\n"
    # the same table again is no change: a re-run ingest works, and keeps colours set since
    assert run("labels", archive, "--colors", write_json(tmp_path / "c.json", {"person": "#00ff00"})).exit_code == 0
    assert run(*ingest, first).exit_code == 0
    assert run("labels", archive).stdout == "[1, 1, 1]\tperson #00ff00\n"
    assert run(*ingest, second, "--replace-labels").exit_code == 0
    assert run("labels", archive).stdout == "[1, 1, 1]\thuman #0000ff\n"


def test_labels_set_applies_the_tables_colours_as_ingest_does(tmp_path):
    table = write_json(tmp_path / "table.json", [{"value": [0, 0, 0], "labels": ["background"]},
                                                  {"value": [1, 1, 1], "labels": ["person", "sitting"],
                                                   "color": "#dc143c"}])
    frames = write_json(tmp_path / "frames.jsonl", frame("a", [[1, 1, 1, 10]]))
    by_ingest, by_set = tmp_path / "i.maskstore", tmp_path / "s.maskstore"
    assert run("ingest", by_ingest, "--frames", frames, "--labels", table).exit_code == 0
    assert run("ingest", by_set, "--frames", frames).exit_code == 0
    assert run("labels", by_set, "--set", table).exit_code == 0
    shown = run("labels", by_ingest).stdout
    assert shown == run("labels", by_set).stdout
    assert "[1, 1, 1]\tperson #dc143c, sitting" in shown


# ---------------------------------------------------------------------------------------- 13: default colours

label_names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=8)


@settings(max_examples=200, deadline=None)
@given(st.lists(label_names, unique=True, min_size=2, max_size=len(PALETTE)), st.integers(1, 3))
def test_any_labels_get_distinct_default_colours_far_apart(names, per_value):
    """Any N <= 64 labels, grouped on values in any way: pairwise >= 22 CIELAB units and >= 33 RGB
    units apart, and the same table gives the same colours again."""
    table = [names[i:i + per_value] for i in range(0, len(names), per_value)]
    colors = default_colors(table)
    assert sorted(colors) == sorted(names)
    lab = cielab(np.array(list(colors.values())))
    for i, j in itertools.combinations(range(len(names)), 2):
        assert np.linalg.norm(lab[i] - lab[j]) >= 22
        assert rgb_distance(list(colors.values())[i], list(colors.values())[j]) >= 33
    assert default_colors(table) == colors


def test_lip_labels_reported_to_collide_are_far_apart_now():
    colors = default_colors([[name] for name in LIP])
    assert rgb_distance(colors["Hair"], colors["Sunglasses"]) >= 75
    assert min(rgb_distance(colors[a], colors[b]) for a, b in itertools.combinations(LIP, 2)) >= 75
    greens = [n for n, (r, g, b) in colors.items() if g > 1.5 * max(r, b)]
    assert len(greens) <= 4  # was 7 of 20


@pytest.mark.slow
def test_default_colours_are_the_same_in_every_process():
    code = ("import json; from maskstore.labels import default_colors; "
            f"print(json.dumps(default_colors([[n] for n in {LIP + [f'x{i}' for i in range(100)]!r}])))")
    outputs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                              env={**os.environ, "PYTHONHASHSEED": seed}).stdout for seed in ("1", "2")}
    assert len(outputs) == 1
    here = default_colors([[n] for n in LIP + [f"x{i}" for i in range(100)]])
    assert {k: tuple(v) for k, v in json.loads(outputs.pop()).items()} == here


def test_more_labels_than_the_palette_still_get_distinct_colours():
    names = [f"class {i}" for i in range(400)]  # e.g. ADE20K's 150, LVIS' 1203 would go on
    colors = default_colors([[n] for n in names])
    assert len(set(colors.values())) == 400
    assert [colors[n] for n in names[:len(PALETTE)]] == list(PALETTE)


def test_cli_render_gives_hair_and_sunglasses_distinct_colours_and_keeps_overrides(tmp_path):
    mask = np.zeros((4, 8), np.uint8)
    mask[:, :4], mask[:, 4:] = 2, 4  # LIP values: 2 Hair, 4 Sunglasses
    Image.fromarray(mask).save(tmp_path / "m.png")
    Image.new("RGB", (8, 4), (128, 128, 128)).save(tmp_path / "s.png")
    archive = tmp_path / "lip.maskstore"
    with Archive(archive, jobs=1) as ar:
        v = ar.create_version(dataset_name="lip", version_name="v1")
        v.add_frames([{"id": "f", "sources": [{"uri": str(tmp_path / "s.png"), "masks": [{"uri": str(tmp_path / "m.png")}]}]}])
        v.set_masks_labels({(i, i, i): [name] for i, name in enumerate(LIP)})
    expected = default_colors([[n] for n in LIP])
    assert run("render", archive, "f", "-o", tmp_path / "out.png", "--layer-only").exit_code == 0
    layer = np.asarray(Image.open(tmp_path / "out.png"))
    assert tuple(layer[0, 0, :3]) == expected["Hair"] and tuple(layer[0, 7, :3]) == expected["Sunglasses"]
    assert rgb_distance(layer[0, 0, :3], layer[0, 7, :3]) >= 75
    assert run("labels", archive, "--colors", write_json(tmp_path / "c.json", {"Hair": "#ff00ff"})).exit_code == 0
    assert run("render", archive, "f", "-o", tmp_path / "out2.png", "--layer-only").exit_code == 0
    layer = np.asarray(Image.open(tmp_path / "out2.png"))
    assert tuple(layer[0, 0, :3]) == (255, 0, 255) and tuple(layer[0, 7, :3]) == expected["Sunglasses"]


# ---------------------------------------------------------------------------------------- 14: class ids

def test_default_training_enumeration_maps_void_to_the_ignore_id(tmp_path):
    mask = np.zeros((2, 3, 3), np.uint8)  # an RGB colour-coded VOC target: background, person, void
    mask[:, 1], mask[:, 2] = (192, 128, 128), (224, 224, 192)
    Image.fromarray(mask).save(tmp_path / "m.png")
    Image.new("RGB", (3, 2)).save(tmp_path / "s.png")
    with Archive(tmp_path / "voc.maskstore", jobs=1) as ar:
        v = ar.create_version(dataset_name="voc", version_name="v1")
        v.add_frames([{"id": "f", "sources": [{"uri": str(tmp_path / "s.png"), "masks": [{"uri": str(tmp_path / "m.png")}]}]}])
        apply_label_table(v, builtin_label_table("voc"))
        (_, _, classes), = iter_arrays(v)
        assert classes.tolist() == [[0, 15, 255]] * 2  # void was class 21
        (_, _, classes), = iter_arrays(v, ignore=254)
        assert classes.tolist() == [[0, 15, 254]] * 2


def test_ignore_labels_are_left_out_of_the_default_enumeration_in_any_case():
    table = [{"value": [i] * 3, "labels": [name]} for i, name in
             enumerate(["Unlabeled", "road", "VOID", "car", "ignore", "unlabelled"])]
    assert default_enumeration(table) == {"road": 1, "car": 3}


# ---------------------------------------------------------------------------------------- 15: stats

@pytest.fixture
def streets(tmp_path: Path) -> Path:
    path = tmp_path / "streets.maskstore"
    with Archive(path, jobs=1) as ar:
        v = ar.create_version(dataset_name="streets", version_name="v1")
        v.add_frames([frame("a", [[0, 0, 0, 60], [1, 1, 1, 20], [9, 9, 9, 20]]),
                      frame("b", [[0, 0, 0, 100]], rois=[{"label": ["pedestrian"]}, {"label": ["pedestrian", "car"]}])])
        v.set_masks_labels({(0, 0, 0): ["road"], (1, 1, 1): ["car"], (5, 5, 5): ["bus"]})
    return path


def test_cli_stats_has_an_unlabelled_row_roi_labels_and_hides_empty_rows(streets):
    result = run("stats", streets)
    assert result.exit_code == 0
    rows = [line.rsplit(None, 4) for line in result.stdout.splitlines()[2:]]
    assert rows == [["road", "2", "160", "80.00%", "0"], ["car", "2", "20", "10.00%", "1"],
                    ["pedestrian", "1", "0", "0.00%", "1"], [UNLABELLED, "1", "20", "10.00%", "0"]]
    assert sum(float(r[3].rstrip("%")) for r in rows) == 100
    assert "1 label without frames not shown (--all shows them)" in result.stderr
    everything = run("stats", streets, "--all").stdout.splitlines()
    assert everything[2:][2].split() == ["bus", "0", "0", "0.00%", "0"]


def test_cli_stats_of_a_version_without_labels_says_so(tmp_path):
    path = tmp_path / "plain.maskstore"
    with Archive(path, jobs=1) as ar:
        ar.create_version(dataset_name="plain", version_name="v1").add_frames([frame("a", [[3, 3, 3, 7]])])
    result = run("stats", path)
    assert result.exit_code == 0
    assert result.stdout.splitlines() == [
        "1 frames in plain/v1",
        f"no labels: plain/v1 has no mask_labels and no ROI labels, so every one of its 7 mask pixels is "
        f"unlabelled. Set labels with: maskstore labels {path} --set mask_labels.json"]


def test_label_stats_frames_agree_with_label_queries(streets):
    with Archive(streets) as ar:
        v = ar.get_version("streets", "v1")
        _, rows = label_stats(v)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UnknownLabelWarning)  # bus
            for row in rows[:-1]:
                assert row.frames == v.count(f'label == "{row.label}"')
                assert row.roi_frames == v.count(f'roi.label == "{row.label}"')


# ---------------------------------------------------------------------------------------- 16: Unicode

def test_nfc_and_nfd_spellings_of_a_label_are_one_label(people):
    with Archive(people) as ar:
        v = ar.get_version("Example", "v1")
        v.set_masks_labels({(1, 1, 1): [CAFE_NFD], (2, 2, 2): [CAFE_NFC, "bird"]})
        assert v.get_masks_labels() == {(1, 1, 1): [CAFE_NFC], (2, 2, 2): [CAFE_NFC, "bird"]}
        v.set_label_colors({CAFE_NFD: "#123456"})
        assert v.get_label_colors() == {CAFE_NFC: (0x12, 0x34, 0x56)}
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            for spelling in (CAFE_NFC, CAFE_NFD):
                assert v.ids(f'label == "{spelling}"') == ["a", "b"]
                assert v.ids(f'coverage("{spelling}") > 0.4') == ["a"]
                assert v.ids(f'label in ["{spelling}"] and label ~ "caf*"') == ["a", "b"]
        with pytest.raises(FrameError, match="two Unicode forms"):
            v.set_label_colors({CAFE_NFD: "#000000", CAFE_NFC: "#ffffff"})


def test_nfc_and_nfd_spellings_of_a_roi_label_are_one(archive):
    v = archive.create_version(dataset_name="u", version_name="v1")
    v.add_frames([frame("a", [], rois=[{"label": [CAFE_NFD]}])])
    assert v.get_frame_dict("a")["rois"][0]["label"] == [CAFE_NFC]
    for spelling in (CAFE_NFC, CAFE_NFD):
        assert v.ids(f'roi.label == "{spelling}"') == v.ids(f'label == "{spelling}"') == ["a"]


@pytest.mark.parametrize("rois", [[], [{"label": ["x"]}]], ids=["compiled path", "Python path"])
def test_nfc_and_nfd_spellings_of_a_meta_key_are_one(archive, rois):
    v = archive.create_version(dataset_name="u", version_name="v1")
    v.add_frames([frame("a", [[1, 1, 1, 1]], rois=rois, meta={CAFE_NFD: 1, "n": {CAFE_NFD: "x"}})])
    stored = v.get_frame_dict("a")
    assert list(stored["meta"]) == [CAFE_NFC, "n"] and list(stored["meta"]["n"]) == [CAFE_NFC]
    for spelling in (CAFE_NFC, CAFE_NFD):
        assert v.ids(f'meta."{spelling}" == 1 and meta.n."{spelling}" == "x"') == ["a"]
        assert v.ids(f'has(meta."{spelling}") order by meta."{spelling}"') == ["a"]


def test_tolerance_answers_follow_label_tolerance_and_frame_writes_in_a_long_lived_handle(tmp_path: Path) -> None:
    """The labels a tolerance resolves are kept with the cached columns: every write that changes them
    (labels, tolerance, frames bringing new values) must show in the next query of the same handle,
    as with nothing cached."""
    path = tmp_path / "t.maskstore"

    def answers(v) -> tuple[list[str], list[str]]:
        return sorted(v.ids('label == "road"')), sorted(v.ids('label == "car"'))

    with Archive(path) as ar:
        v = ar.create_version("D", "v1")
        v.add_frames([frame("a", [[100, 100, 100, 10]]), frame("b", [[50, 50, 50, 10]])])
        v.set_masks_labels({(102, 102, 102): ["road"], (52, 52, 52): ["car"]})
        steps = [lambda: v.set_mask_tolerance(2),
                 lambda: v.set_mask_tolerance(1),
                 lambda: v.set_masks_labels({(102, 102, 102): ["car"], (51, 51, 51): ["road"]}),
                 lambda: v.add_frames([frame("c", [[101, 101, 101, 10]]), frame("d", [[53, 53, 53, 10]])]),
                 lambda: v.set_mask_tolerance(3)]
        seen = [answers(v)]
        for step in steps:
            step()
            seen.append(answers(v))
            ar.column_cache.clear()  # what a fresh handle would answer
            assert seen[-1] == answers(v)
    assert seen == [([], []), (["a"], ["b"]), ([], []), (["b"], []), (["b"], ["c"]), (["b", "d"], ["a", "c"])]
