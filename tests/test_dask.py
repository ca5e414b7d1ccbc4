"""maskstore.dask on a real two-process LocalCluster: the answers of one process, over shards."""

from __future__ import annotations

import functools
import json
import os
import random
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

distributed = pytest.importorskip("distributed", reason="maskstore[dask] is not installed")
pytest.importorskip("dask.dataframe", reason="maskstore[dask] is not installed")

import pandas as pd  # noqa: E402

import maskstore.dask as mdask  # noqa: E402
from maskstore import Archive, MaskstoreError, QueryError, SingleFrame  # noqa: E402
from maskstore.cli import main  # noqa: E402
from maskstore.layout import MAX_KEY_TEXT  # noqa: E402
from maskstore.query import columns  # noqa: E402
from maskstore.summary import label_stats  # noqa: E402

NAMES = {1: "road", 2: "car", 3: "person", 4: "sky"}
MASK_LABELS = [{"value": [v, v, v], "labels": [name]} for v, name in NAMES.items()] + \
              [{"value": [9, 9, 9], "labels": ["car", "vehicle"]}]
LABELS = ["road", "car", "person", "sky", "vehicle", "sign"]  # "sign": ROI labels only
CITIES = ["aachen", "bonn", "cologne"]


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None,
                                  memory_limit=0) as cluster:
        yield cluster


@pytest.fixture
def client(cluster):
    with distributed.Client(cluster) as client:
        yield client


def meta_frame(shard: int, i: int, rng: random.Random) -> dict:
    """Metadata-only frame: mask values with pixel counts, sometimes ROIs and missing meta keys."""
    values = rng.sample([1, 2, 3, 4, 7, 9], rng.randint(0, 3))  # 7: a value without a label
    meta = {"city": CITIES[i // 3000 % 3], "speed": round(rng.uniform(0, 100), 2)}
    if rng.random() < 0.5:
        meta["lane"] = {"n": rng.randint(1, 4)}
    if rng.random() < 0.3:
        meta["night"] = rng.random() < 0.5
    rois = [{"label": [rng.choice(["sign", "person"])], "poly": [0, 0, 5, 0, 5, 5]}] if rng.random() < 0.05 else []
    return {"id": f"s{shard}_{i:06d}", "timestamp": shard * 10**9 + i, "context_id": f"drive_{shard}_{i // 3000}",
            "meta": meta, "rois": rois,
            "sources": [{"id": "cam", "uri": f"/data/{i}.png", "width": 64, "height": 32,
                         "masks": [{"id": "m", "uri": f"/masks/{i}.png",
                                    "values": [[v, v, v, rng.randint(1, 500)] for v in sorted(values)]}]}]}


def build(path: Path, frames: list[dict], publish: bool = False) -> None:
    with Archive(path, jobs=1) as ar:
        v = ar.create_version(dataset_name="city", version_name="v1")
        v.set_masks_labels(MASK_LABELS)
        v.add_frames(frames)
        columns.refresh(v)  # as ingest does at its end, so no reader has to rebuild the columns
        if publish:
            v.publish()


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """Two shards of 9,000 frames (3 chunks each; one published, one not) and one archive holding all."""
    root = tmp_path_factory.mktemp("shards")
    rng = random.Random(7)
    parts = [[meta_frame(s, i, rng) for i in range(9000)] for s in range(2)]
    for s, frames in enumerate(parts):
        build(root / f"shard{s}.maskstore", frames, publish=s == 0)
    build(root / "whole.maskstore", parts[0] + parts[1])
    return root


def glob_of(root: Path) -> str:
    return str(root / "shard*.maskstore")


@functools.lru_cache(maxsize=16)
def single_process(root: Path, query: str) -> dict[str, dict]:
    """The expected rows, from one process and the query engine only: labels by ``label == X``."""
    with Archive(root / "whole.maskstore", readonly=True) as ar:
        v = ar.get_version("city", "v1")
        holders = {name: set(v.ids(f'label == "{name}"')) for name in LABELS}
        return {d["id"]: {"context_id": d["context_id"], "timestamp": d["timestamp"], "meta": d["meta"],
                          "labels": {n for n in LABELS if d["id"] in holders[n]}} for d in v.query_dicts(query)}


def test_read_frames_equals_the_single_process_answer(client, shards):
    ddf = mdask.read_frames(glob_of(shards))
    assert ddf.npartitions == 6  # 3 chunks of 4096 seqs per 9,000-frame shard
    assert list(ddf.columns) == ["archive", "id", "context_id", "timestamp", "labels", "meta.city",
                                 "meta.lane.n", "meta.night", "meta.speed"]
    df = ddf.compute()
    assert str(df["labels"].dtype).startswith("list<item: string>")
    expected = single_process(shards, "")
    assert sorted(df["id"]) == sorted(expected)
    for row in df.to_dict("records"):
        want = expected[row["id"]]
        assert (row["context_id"], row["timestamp"]) == (want["context_id"], want["timestamp"])
        assert sorted(row["labels"]) == sorted(want["labels"])  # each label once
        meta = {"meta.city": want["meta"]["city"], "meta.speed": want["meta"]["speed"],
                "meta.lane.n": want["meta"].get("lane", {}).get("n"), "meta.night": want["meta"].get("night")}
        assert {k: None if row[k] is pd.NA else row[k] for k in meta} == meta
    assert set(df["archive"]) == {str(shards / "shard0.maskstore"), str(shards / "shard1.maskstore")}


@pytest.mark.parametrize("query", ['label == "person"', 'label == "vehicle" and meta.city == "bonn"',
                                   'label == "sign"', "meta.speed > 90 or meta.night == true", 'label ~ "s*"'])
def test_queries_select_the_frames_one_process_selects(client, shards, query):
    got = mdask.read_frames(glob_of(shards), query, columns=["id", "labels"]).compute()
    expected = single_process(shards, query)
    assert sorted(got["id"]) == sorted(expected)
    assert all(set(labels) == expected[i]["labels"] for i, labels in zip(got["id"], got["labels"]))


def test_a_selective_query_reads_only_the_chunks_that_can_match(client, shards):
    everything = mdask.read_frames(glob_of(shards))
    selective = mdask.read_frames(glob_of(shards), 'context_id == "drive_1_1"')  # frames 3000..5999 of shard 1
    assert selective.npartitions == 2 < everything.npartitions
    assert sorted(selective["id"].compute()) == sorted(single_process(shards, 'context_id == "drive_1_1"'))
    nothing = mdask.read_frames(glob_of(shards), 'context_id == "nowhere"')
    assert len(nothing.compute()) == 0 and list(nothing.columns) == list(everything.columns)


def test_columns_are_pushed_into_the_read(client, shards):
    ddf = mdask.read_frames(glob_of(shards), columns=["id", "meta.night"])
    assert list(ddf.columns) == ["id", "meta.night"] and list(ddf.compute().columns) == ["id", "meta.night"]
    # A later selection reaches the read too: Dask's optimizer hands it to the partition function.
    reads = [e for e in mdask.read_frames(glob_of(shards))["timestamp"].optimize(fuse=False).expr.walk()
             if type(e).__name__ == "FromMapProjectable"]
    assert [e.columns for e in reads] == [["timestamp"]]
    assert len(mdask.read_frames(glob_of(shards))) == 18000
    with pytest.raises(QueryError, match="no column 'meta.nope'"):
        mdask.read_frames(glob_of(shards), columns=["meta.nope"])


def test_frames_bag_holds_the_frame_dicts(client, shards):
    got = mdask.frames([shards / "shard1.maskstore", shards / "shard0.maskstore"], 'label == "sign"').compute()
    with Archive(shards / "whole.maskstore", readonly=True) as ar:
        expected = list(ar.get_version("city", "v1").query_dicts('label == "sign"'))
    assert sorted(got, key=lambda d: d["id"]) == sorted(expected, key=lambda d: d["id"]) and got


def test_stats_sum_the_shards_to_the_whole_archive_numbers(client, shards):
    frames, rows = mdask.stats(glob_of(shards))
    with Archive(shards / "whole.maskstore", readonly=True) as ar:
        want_frames, want_rows = label_stats(ar.get_version("city", "v1"))
    assert frames == want_frames == 18000
    assert [(r.label, r.frames, r.pixels, r.roi_frames, r.unlabelled) for r in rows] == \
        [(r.label, r.frames, r.pixels, r.roi_frames, r.unlabelled) for r in want_rows]
    assert [r.share for r in rows] == pytest.approx([r.share for r in want_rows], rel=1e-12)


def test_without_a_client_the_local_scheduler_gives_the_same_answers(shards):
    try:
        assert mdask.stats(glob_of(shards))[0] == 18000
        got = mdask.read_frames(glob_of(shards), 'label == "sign"', columns=["id"]).compute(scheduler="threads")
        assert sorted(got["id"]) == sorted(single_process(shards, 'label == "sign"'))
    finally:
        mdask.close_archives()


def test_refusals_name_what_to_do(shards, tmp_path):
    with pytest.raises(QueryError, match="order by and limit"):
        mdask.read_frames(glob_of(shards), "order by timestamp limit 3")
    with pytest.raises(MaskstoreError, match="no archive matches"):
        mdask.read_frames(str(tmp_path / "*.maskstore"))
    with Archive(tmp_path / "two.maskstore", jobs=1) as ar:
        ar.create_version(dataset_name="a", version_name="v1")
        ar.create_version(dataset_name="b", version_name="v1")
    with pytest.raises(MaskstoreError, match="several versions"):
        mdask.read_frames(tmp_path / "two.maskstore")
    assert mdask.read_frames(tmp_path / "two.maskstore", dataset="b").npartitions == 1


def test_roi_labels_too_long_for_an_index_key_are_read_from_the_records(client, tmp_path):
    long = "a traffic sign " + "x" * MAX_KEY_TEXT
    rng = random.Random(2)
    frames = [meta_frame(0, i, rng) for i in range(30)]
    for f in frames[::7]:
        f["rois"] = [{"label": [long, "sign"], "poly": [0, 0, 5, 0, 5, 5]}, {"label": [long], "poly": [1, 1, 2, 2, 3, 1]}]
    build(tmp_path / "s.maskstore", frames)
    df = mdask.read_frames(tmp_path / "s.maskstore", columns=["id", "labels"]).compute()
    mdask.close_archives()
    with Archive(tmp_path / "s.maskstore", readonly=True) as ar:
        v = ar.get_version("city", "v1")
        for name in (long, "sign", "person"):
            assert sorted(df["id"][[name in labels for labels in df["labels"]]]) == sorted(v.ids(f"label == {json.dumps(name)}"))
    assert all(len(set(labels)) == len(labels) for labels in df["labels"])


def test_a_shard_changed_after_planning_is_refused_not_mixed(client, tmp_path):
    rng = random.Random(1)
    build(tmp_path / "s.maskstore", [meta_frame(0, i, rng) for i in range(10)])
    ddf = mdask.read_frames(tmp_path / "s.maskstore")
    mdask.close_archives()  # the plan's handle: this process opens the file once (LMDB)
    with Archive(tmp_path / "s.maskstore", jobs=1) as ar:
        ar.get_version("city", "v1").add_frames([meta_frame(0, 10, rng)])
    with pytest.raises(MaskstoreError, match="changed after the query was planned"):
        ddf.compute()


# ------------------------------------------------------------------------------------------ export

def image_shards(root: Path, n: int, size: tuple[int, int] = (48, 32)) -> None:
    """Two shards and one whole archive of real image files (distinct pixels per frame)."""
    rng = np.random.default_rng(3)
    frames = []
    for i in range(n):
        img, mask = root / f"img{i}.png", root / f"mask{i}.png"
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), np.uint8)).save(img)
        Image.fromarray(rng.choice(np.array([0, 1, 2, 3, 9], np.uint8), (size[1], size[0]))).save(mask)
        frames.append(SingleFrame(source=str(img), mask_source=str(mask), id=f"f{i:03d}", timestamp=i))
    for name, chosen in (("shard0", frames[::2]), ("shard1", frames[1::2]), ("whole", frames)):
        with Archive(root / f"{name}.maskstore", jobs=1) as ar:
            v = ar.create_version(dataset_name="city", version_name="v1")
            v.set_masks_labels(MASK_LABELS)
            v.set_label_colors({"road": "#804080", "car": "#0000ff"})
            v.add_frames(chosen)


def export_files(out: Path) -> dict[str, np.ndarray]:
    return {str(p.relative_to(out)): np.asarray(Image.open(p)) for p in sorted(out.rglob("*.png"))}


def manifest(out: Path) -> list[tuple]:
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    return sorted((r["frame_id"], r["path"], r["width"], r["height"]) for r in rows)


@pytest.fixture(scope="module")
def image_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    image_shards(root, 24)
    return root


def test_export_writes_the_files_v_export_writes(client, image_root, tmp_path):
    report = mdask.export(str(image_root / "shard*.maskstore"), tmp_path / "dask", 'label == "car"', opacity=0.7)
    with Archive(image_root / "whole.maskstore", readonly=True) as ar:
        ar.get_version("city", "v1").export(tmp_path / "local", 'label == "car"', jobs=1, opacity=0.7)
    got, want = export_files(tmp_path / "dask"), export_files(tmp_path / "local")
    assert got.keys() == want.keys() and report.written == len(want) - 1  # legend.png is not an image row
    assert all(np.array_equal(got[k], want[k]) for k in want)
    assert manifest(tmp_path / "dask") == manifest(tmp_path / "local")
    assert (tmp_path / "dask" / ".maskstore-export.json").read_text() == \
        (tmp_path / "local" / ".maskstore-export.json").read_text()
    again = mdask.export(str(image_root / "shard*.maskstore"), tmp_path / "dask", 'label == "car"', opacity=0.7)
    assert (again.written, again.skipped) == (0, report.written)
    with pytest.raises(MaskstoreError, match="other settings"):
        mdask.export(str(image_root / "shard*.maskstore"), tmp_path / "dask", 'label == "car"', opacity=0.2)


def test_shards_with_different_labels_cannot_share_an_export(client, image_root, tmp_path):
    other = tmp_path / "other.maskstore"
    with Archive(other, jobs=1) as ar:
        ar.create_version(dataset_name="city", version_name="v1").set_masks_labels({(1, 1, 1): ["road"]})
    with pytest.raises(MaskstoreError, match="cannot join the export.*mask_labels differ"):
        mdask.export([image_root / "shard0.maskstore", other], tmp_path / "out")
    assert not (tmp_path / "out" / "manifest.jsonl").exists()


def worker_pids(client) -> list[int]:
    return list(client.run(os.getpid).values())


@pytest.mark.slow
def test_a_worker_killed_mid_export_loses_nothing(client, tmp_path):
    """SIGKILL one worker process while it renders: the export finishes (Dask reruns the lost tasks
    on the other worker or the nanny's new one; a re-run resumes otherwise) and every file is whole."""
    root = tmp_path / "big"
    root.mkdir()
    image_shards(root, 60, size=(640, 480))
    out = tmp_path / "out"
    result: dict = {}

    def run() -> None:
        try:
            result["report"] = mdask.export(str(root / "shard*.maskstore"), out)
        except MaskstoreError as exc:  # the scheduler gave up on a task: the re-run below finishes
            result["error"] = exc

    thread = threading.Thread(target=run)
    victim = worker_pids(client)[0]
    thread.start()
    deadline = time.monotonic() + 120
    while len(list(out.glob("*/*.png"))) < 6 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert thread.is_alive() and len(list(out.glob("*/*.png"))) < 60  # killed mid-export
    os.kill(victim, signal.SIGKILL)
    thread.join(300)
    assert not thread.is_alive()
    if "error" in result:
        mdask.export(str(root / "shard*.maskstore"), out)
    print("killed mid-export:", "re-run finished it" if "error" in result else "the export finished it")
    assert not [p for p in out.rglob("*") if p.name.startswith(".maskstore-tmp")]
    with Archive(root / "whole.maskstore", readonly=True) as ar:
        ar.get_version("city", "v1").export(tmp_path / "local", jobs=1)
    got, want = export_files(out), export_files(tmp_path / "local")
    assert got.keys() == want.keys() and all(np.array_equal(got[k], want[k]) for k in want)
    assert manifest(out) == manifest(tmp_path / "local")


# ------------------------------------------------------------------------------------------ CLI

def test_cli_stats_and_export_on_a_scheduler(cluster, image_root, tmp_path):
    runner = CliRunner()
    archive = str(image_root / "whole.maskstore")
    here = runner.invoke(main, ["stats", archive])
    there = runner.invoke(main, ["stats", archive, "--scheduler", cluster.scheduler_address])
    assert there.exit_code == 0 and there.stdout == here.stdout and "frames in city/v1" in here.stdout
    result = runner.invoke(main, ["export", archive, str(tmp_path / "out"), "-q", 'label == "person"',
                                  "--scheduler", cluster.scheduler_address])
    assert result.exit_code == 0, result.output
    with Archive(image_root / "whole.maskstore", readonly=True) as ar:
        ar.get_version("city", "v1").export(tmp_path / "local", 'label == "person"', jobs=1)
    got, want = export_files(tmp_path / "out"), export_files(tmp_path / "local")
    assert got.keys() == want.keys() and all(np.array_equal(got[k], want[k]) for k in want)


@pytest.mark.slow
def test_cli_names_an_unreachable_scheduler_in_one_line(image_root):
    result = CliRunner().invoke(main, ["stats", str(image_root / "whole.maskstore"), "--scheduler",
                                       "tcp://127.0.0.1:9"])
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert "Error: cannot reach the Dask scheduler at tcp://127.0.0.1:9" in result.output
