"""Files a frame names: relative paths resolve against the archive's folder, embedded files must be in
the archive that holds the frame, and ``--embed`` copies every file a frame names."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from maskstore import Archive, ArchiveError, FrameError, MaskError, render
from maskstore.cli import main
from click.testing import CliRunner


def write_pair(folder: Path, name: str, value: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((6, 8, 3), 100, np.uint8)).save(folder / f"{name}.png")
    Image.fromarray(np.full((6, 8), value, np.uint8)).save(folder / f"{name}_m.png")


def test_relative_uris_resolve_against_the_archive_folder_wherever_it_moves(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "project"
    write_pair(home / "media", "a", 1)
    monkeypatch.chdir(tmp_path)  # not the archive's folder
    with Archive(home / "a.maskstore", jobs=1) as ar:
        v = ar.create_version(dataset_name="d", version_name="v")
        v.add_frames([{"id": "a", "sources": [{"uri": "media/a.png", "masks": [{"uri": "media/a_m.png"}]}]}])
        assert v.get_frame_dict("a")["sources"][0]["uri"] == "media/a.png"  # stored as given
        v.set_masks_labels({(1, 1, 1): ["thing"]})
    moved = tmp_path / "elsewhere" / "project"
    shutil.move(str(home), str(moved))
    monkeypatch.chdir(moved / "media")
    with Archive(moved / "a.maskstore", readonly=True) as ar:
        v = ar.get_version("d", "v")
        assert v.count('label == "thing"') == 1
        assert render(v.get_frame("a"), v).shape == (6, 8, 3)


def test_a_relative_uri_missing_from_the_archive_folder_names_the_resolved_file(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    write_pair(tmp_path / "cwd", "a", 1)
    monkeypatch.chdir(tmp_path / "cwd")
    (tmp_path / "arc").mkdir()
    with Archive(tmp_path / "arc" / "a.maskstore", jobs=1) as ar:
        v = ar.create_version(dataset_name="d", version_name="v")
        with pytest.raises(MaskError, match=re.escape(str(tmp_path / "arc" / "a")) + r"(_m)?\.png"):
            v.add_frames([{"id": "a", "sources": [{"uri": "a.png", "masks": [{"uri": "a_m.png"}]}]}])


def embedded_frames(tmp_path: Path) -> tuple[Path, list[dict]]:
    write_pair(tmp_path / "media", "a", 1)
    src = tmp_path / "src.maskstore"
    with Archive(src, jobs=1) as ar:
        v = ar.create_version(dataset_name="d", version_name="v")
        v.add_frames([{"id": "a", "sources": [{"uri": str(tmp_path / "media/a.png"),
                                               "masks": [{"uri": str(tmp_path / "media/a_m.png")}]}]}],
                     embed=True)
        return src, list(v.frame_dicts())


def test_frames_naming_blobs_another_archive_holds_are_refused_at_ingest(tmp_path: Path) -> None:
    _, frames = embedded_frames(tmp_path)
    lines = tmp_path / "frames.jsonl"
    lines.write_text("".join(json.dumps(f) + "\n" for f in frames))
    result = CliRunner().invoke(main, ["ingest", str(tmp_path / "dst.maskstore"), "-d", "d", "-V", "v",
                                       "--frames", str(lines)])
    assert result.exit_code == 1, result.output
    assert "frame 'a'" in result.output and "blob:sha256:" in result.output and "not embedded" in result.output
    with Archive(tmp_path / "dst.maskstore", readonly=True) as ar:
        assert sum(len(v) for v in ar.versions()) == 0
    # the same frames go into the archive that holds their files
    src, frames = embedded_frames(tmp_path / "again")
    with Archive(src, jobs=1) as ar:
        v2 = ar.create_version(dataset_name="d", version_name="v2")
        assert v2.add_frames(frames) == 1
    with Archive(tmp_path / "other.maskstore", jobs=1) as ar:
        with pytest.raises(FrameError, match="not embedded"):
            ar.create_version(dataset_name="d", version_name="v").add_frames(frames)


def test_embed_copies_the_instance_file_of_a_mask(tmp_path: Path) -> None:
    write_pair(tmp_path / "media", "a", 1)
    instance = tmp_path / "media" / "a_inst.png"
    Image.fromarray(np.full((6, 8), 1001, np.uint16)).save(instance)
    with Archive(tmp_path / "a.maskstore", jobs=1) as ar:
        v = ar.create_version(dataset_name="d", version_name="v")
        v.add_frames([{"id": "a", "sources": [{"uri": str(tmp_path / "media/a.png"), "masks": [
            {"uri": str(tmp_path / "media/a_m.png"), "instance_uri": str(instance)}]}]}], embed=True)
        mask = v.get_frame_dict("a")["sources"][0]["masks"][0]
        assert mask["instance_uri"].startswith("blob:sha256:")
        assert mask["original_instance_uri"] == str(instance)
        os.remove(instance)
        assert np.asarray(v.open_image(mask["instance_uri"])).max() == 1001


def test_a_frame_dict_in_single_frame_keywords_is_refused_not_stored_without_files(tmp_path: Path) -> None:
    with Archive(tmp_path / "a.maskstore", jobs=1) as ar:
        v = ar.create_version(dataset_name="d", version_name="v")
        with pytest.raises(FrameError, match=r"SingleFrame's keywords.*\"sources\""):
            v.add_frames([{"id": "a", "source": "img.png", "mask_source": "mask.png"}])
        assert len(v) == 0


def nested(levels: int) -> dict:
    out: dict = {}
    for _ in range(levels):
        out = {"k": out}
    return out


@pytest.mark.parametrize("frame", [
    {"id": "deep", "meta": {"x": nested(95)}},
    {"id": "wide", "sources": [{"id": "0", "uri": "/x.png", "width": 2**40, "height": 4, "masks": []}]},
    {"id": "many", "sources": [{"id": "0", "uri": "/x.png", "width": 4, "height": 4, "masks": [
        {"id": "m", "uri": "/m.png", "values": [[1, 1, 1, 2**49], [2, 2, 2, 2**49], [3, 3, 3, 2**49]]}]}]},
], ids=["meta-nested-95", "width-2**40", "pixels-beyond-2**50"])
def test_ingest_refuses_what_readers_would_refuse(tmp_path: Path, frame: dict) -> None:
    """Found by the hostile-archive work: these were accepted, then every read of the frame failed."""
    with Archive(tmp_path / "a.maskstore", jobs=1) as ar:
        v = ar.create_version(dataset_name="d", version_name="v")
        with pytest.raises(FrameError):
            v.add_frames([frame])
        v.add_frames([{"id": "ok", "meta": {"x": nested(85)}}])
        assert v.get_frame_dict("ok")["meta"]["x"] == nested(85)


@pytest.mark.parametrize("digest", ["", "ab", "zz" * 32, "00" * 33])
def test_a_blob_uri_without_a_64_digit_digest_is_a_frame_error(tmp_path, digest):
    """Found by the format reader's hypothesis round trip: an empty digest reached LMDB as a key of
    invalid size (MDB_BAD_VALSIZE) instead of a FrameError naming the frame."""
    with Archive(tmp_path / "a.maskstore") as ar:
        v = ar.create_version(dataset_name="D", version_name="v1")
        with pytest.raises(FrameError, match="'f0'.*not a valid blob URI"):
            v.add_frames([{"id": "f0", "sources": [{"uri": f"blob:sha256:{digest}"}]}])
        with pytest.raises(ArchiveError, match="not a valid blob URI"):
            ar.read_blob(digest)
