"""``maskstore compact`` at a few hundred MB, killed with SIGKILL at any moment, and on a full disk.

py-lmdb 3.0's ``env.copy(compact=True)`` crashed the process on a 134 MB archive of ~300 embedded
442 kB files; compact is a logical copy, tested here at that shape and larger. After a kill the
archive at the path is whole (the original, or the finished copy once the rename happened), and the
next run is not confused by what the killed one left.
"""

from __future__ import annotations

import hashlib
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from maskstore import Archive, MaskstoreError, compact
from maskstore.check import check_archive
from maskstore.lifecycle import temp_path

from .helpers import MASKSTORE_CLI
from .test_disk_full import fill, small_disk  # noqa: F401  (the tmpfs fixture)

pytestmark = pytest.mark.slow

SIDE = 384  # a 384x384 RGB noise PNG is ~442 kB, the size of the files that crashed env.copy


def build(path: Path, media: Path, frames: int, side: int = SIDE) -> None:
    """``frames`` embedded noise images, then half the frames deleted: their files are garbage."""
    media.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    mask = np.zeros((side, side), np.uint8)
    mask[: side // 2] = 1
    Image.fromarray(mask).save(media / "mask.png")
    with Archive(path, jobs=1, sync=False) as ar:
        v = ar.create_version(dataset_name="d", version_name="v1")
        for start in range(0, frames, 50):
            batch = []
            for i in range(start, min(frames, start + 50)):
                image = media / f"img{i}.png"
                Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(image, compress_level=0)
                batch.append({"id": f"f{i:04d}", "sources": [{"id": "cam", "uri": str(image),
                                                              "masks": [{"id": "m", "uri": str(media / "mask.png")}]}]})
            v.add_frames(batch, embed=True)
            for item in batch:
                Path(item["sources"][0]["uri"]).unlink()
        v.delete_frames([f"f{i:04d}" for i in range(0, frames, 2)])
        ar.sync()


def state(path: Path) -> tuple[dict, int]:
    """(frame dicts by id, number of embedded files), after a clean check."""
    with Archive(path, readonly=True) as ar:
        assert not [p for p in check_archive(ar) if p.severity == "error"]
        frames = {d["id"]: d for d in ar.get_version("d", "v1").frame_dicts()}
        return frames, ar.read(lambda t: t.stat(ar.db("blobs"))["entries"])


@pytest.fixture(scope="module")
def big_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("big")
    path = folder / "big.maskstore"
    build(path, folder / "media", 700)
    return path


def test_compact_a_few_hundred_megabytes(big_archive: Path, tmp_path: Path) -> None:
    path = tmp_path / "a.maskstore"
    shutil.copyfile(big_archive, path)
    size = path.stat().st_size
    assert size > 300e6
    frames, blobs = state(path)
    report = compact(path)
    assert (report.before, report.blobs_dropped, report.blobs_kept) == (size, 350, blobs - 350)
    assert report.after == path.stat().st_size < size * 0.55
    assert state(path) == (frames, blobs - 350)


def test_sigkill_during_compact_leaves_a_whole_archive(big_archive: Path, tmp_path: Path) -> None:
    path = tmp_path / "a.maskstore"
    shutil.copyfile(big_archive, path)
    frames, blobs = state(path)
    original = hashlib.sha256(path.read_bytes()).hexdigest()
    killed_before_rename = 0
    for delay in (0.0, 0.05, 0.2, 0.5, 1.0, 2.0):
        child = subprocess.Popen([str(MASKSTORE_CLI), "compact", str(path)], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while not temp_path(path).exists() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(delay)
        child.send_signal(signal.SIGKILL)
        child.wait()
        after, count = state(path)
        assert after == frames  # the same frames, whichever file is there now
        if count == blobs:  # not yet replaced: the original, byte for byte
            assert hashlib.sha256(path.read_bytes()).hexdigest() == original
            killed_before_rename += 1
        else:
            assert count == blobs - 350
            shutil.copyfile(big_archive, path)  # start again from the uncompacted file
    assert killed_before_rename >= 3  # the kills really hit the copy
    done = subprocess.run([str(MASKSTORE_CLI), "compact", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert not temp_path(path).exists()
    assert not [p.name for p in path.parent.iterdir() if "compacting" in p.name]
    assert state(path) == (frames, blobs - 350)


def test_compact_on_a_full_disk_leaves_the_original(small_disk: Path, tmp_path: Path) -> None:  # noqa: F811
    source = tmp_path / "a.maskstore"
    build(source, tmp_path / "media", 24, side=96)  # ~0.7 MB of files, half of them garbage
    path = small_disk / "a.maskstore"
    shutil.copyfile(source, path)
    frames, blobs = state(path)
    fill(small_disk)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    done = subprocess.run([str(MASKSTORE_CLI), "compact", str(path)], capture_output=True, text=True)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith("Error: ") and "full" in done.stderr and "untouched" in done.stderr, done.stderr
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    assert not temp_path(path).exists()
    assert state(path) == (frames, blobs)
    with pytest.raises(MaskstoreError, match="full"):
        compact(path, small_disk / "b.maskstore")
    (small_disk / "filler").unlink()
    assert compact(path).blobs_dropped == 12
    assert state(path) == (frames, blobs - 12)


def test_a_process_opening_the_archive_during_compact_waits_and_sees_the_new_file(big_archive: Path,
                                                                                  tmp_path: Path) -> None:
    """compact holds LMDB's exclusive open lock, so an opener blocks until the new file is in place and
    the lock file is re-initialised from it; that opener then reads and writes the compacted archive."""
    path = tmp_path / "a.maskstore"
    shutil.copyfile(big_archive, path)
    frames, blobs = state(path)
    opener = (
        "import sys\n"
        "from maskstore import Archive\n"
        f"with Archive({str(path)!r}) as ar:\n"
        "    n = ar.read(lambda t: t.stat(ar.db('blobs'))['entries'])\n"
        "    ar.get_version('d', 'v1').add_frames([{'id': 'late', 'sources': []}])\n"
        "print(n)\n")
    child = subprocess.Popen([str(MASKSTORE_CLI), "compact", str(path)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not temp_path(path).exists() and time.monotonic() < deadline:
        assert child.poll() is None, child.communicate()
        time.sleep(0.005)
    seen = subprocess.run([str(Path(MASKSTORE_CLI).with_name("python")), "-c", opener], capture_output=True,
                          text=True, timeout=600)
    assert child.wait(timeout=600) == 0, child.communicate()
    assert seen.returncode == 0, seen.stderr
    assert int(seen.stdout) == blobs - 350  # opened only once the compacted file was in place
    after, count = state(path)
    assert count == blobs - 350 and after.keys() == frames.keys() | {"late"}
