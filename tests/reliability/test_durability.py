"""The durability switch: ``ingest --fast`` (no fsync per batch, one sync at the end) gives the same
archive as a durable ingest, and its help states the trade-off. What ``--fast`` risks on a power loss
cannot be tested here; ``test_crash.py`` shows a killed ``--fast`` ingest loses nothing committed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from maskstore import Archive

from .helpers import DATASET, VERSION, assert_archive_consistent, cli, make_batch, make_frame


@pytest.fixture
def frames_file(tmp_path: Path) -> Path:
    path = tmp_path / "frames.jsonl"
    path.write_text("".join(json.dumps(make_frame(k // 100, k % 100)) + "\n" for k in range(2000)))
    return path


def test_fast_ingest_gives_the_same_clean_archive(tmp_path: Path, frames_file: Path) -> None:
    snaps = {}
    for mode in ("durable", "fast"):
        path = tmp_path / f"{mode}.maskstore"
        result = cli("ingest", path, "-d", DATASET, "-V", VERSION, "--frames", frames_file, "--batch-size", 100,
                     *(["--fast"] if mode == "fast" else []))
        assert result.returncode == 0, result.stderr
        assert "added 2000 frames in 20 batches" in result.stderr
        checked = cli("check", path)
        assert checked.returncode == 0 and "0 errors" in checked.stderr, checked.stdout
        snaps[mode] = assert_archive_consistent(path, batch_size=100)[f"{DATASET}/{VERSION}"]
    assert snaps["fast"].records == snaps["durable"].records


def test_fast_help_states_the_trade_off() -> None:
    result = cli("ingest", "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    assert "--fast" in text
    for words in ("fsync", "power loss", "killed process loses nothing committed", "durable"):
        assert words in text, f"ingest --help does not mention {words!r}"


def test_library_sync_false_then_sync(tmp_path: Path) -> None:
    """``Archive(sync=False)`` is the library form of ``--fast``; ``sync()`` makes it durable."""
    path = tmp_path / "nosync.maskstore"
    with Archive(path, sync=False, jobs=1) as ar:
        v = ar.create_version(DATASET, VERSION)
        for b in range(5):
            v.add_frames(make_batch(b, 40))
        ar.sync()
    assert assert_archive_consistent(path, batch_size=40)[f"{DATASET}/{VERSION}"].batch_numbers == set(range(5))
