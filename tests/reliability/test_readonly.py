"""Read-only use: an archive on media the user cannot write (a read-only folder, a 444 file).

Tests run as root in CI, and root ignores file permissions. The child processes here therefore drop
CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from their capability bounding set before exec (root then
obeys permissions like any user); a sanity check proves the drop worked, else the test is skipped.
As a non-root user no drop is needed.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from maskstore import Archive

from .helpers import DATASET, MASKSTORE_CLI, VERSION

PR_CAPBSET_DROP = 24
CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 1, 2


def drop_permission_override() -> None:  # runs in the child between fork and exec
    if os.geteuid() != 0:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
        if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def run_unprivileged(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=120,
                          preexec_fn=drop_permission_override)


def lock_path(path: Path) -> Path:
    return path.with_name(path.name + "-lock")


@pytest.fixture(params=["no-lock-file", "stale-lock-file"])
def readonly_archive(request, template_archive: Path) -> Iterator[Path]:
    """The template archive in a 555 folder, file 444; with or without a (444) lock file left by
    whoever wrote it. Made under a world-traversable temporary folder."""
    base = Path(tempfile.mkdtemp(prefix="maskstore-ro-"))
    folder = base / "media"
    folder.mkdir()
    path = folder / "archive.maskstore"
    shutil.copyfile(template_archive, path)
    if request.param == "stale-lock-file":
        with Archive(path, readonly=True):  # creates the lock file while the folder is writable
            pass
        lock_path(path).chmod(0o444)
    path.chmod(0o444)
    folder.chmod(0o555)
    base.chmod(0o755)
    try:
        probe = run_unprivileged("sh", "-c", f"touch {folder}/probe")
        if probe.returncode == 0:
            pytest.skip("cannot make a folder read-only for the tests' processes (root without CAP_SETPCAP?)")
        yield path
    finally:
        folder.chmod(0o755)
        shutil.rmtree(base)


def test_every_read_command_works_on_read_only_media(readonly_archive: Path) -> None:
    had_lock = lock_path(readonly_archive).exists()
    for args, expect in [
        (["info"], "d/v1: 1000 frames"),
        (["query", "--count"], "1000"),
        (["query", 'label == "L1"', "--count"], "250"),
        (["query", "meta.gen == 0 and meta.i < 2", "--count"], "40"),  # a column scan over dirty chunks
        (["query", 'context_id == "ctx-2"', "--format", "jsonl", "--limit", "1"], '"context_id": "ctx-2"'),
        (["check"], ""),
        (["labels"], "L1"),
    ]:
        result = run_unprivileged(MASKSTORE_CLI, "--no-lock", args[0], readonly_archive, *args[1:])
        assert result.returncode == 0, f"maskstore {' '.join(args)}: {result.stderr}"
        assert expect in result.stdout, (args, result.stdout)
    assert "0 errors" in run_unprivileged(MASKSTORE_CLI, "--no-lock", "check", readonly_archive).stderr
    assert lock_path(readonly_archive).exists() == had_lock, "a lock file appeared on read-only media"
    assert sorted(os.listdir(readonly_archive.parent)) == sorted(
        ["archive.maskstore"] + (["archive.maskstore-lock"] if had_lock else []))


def test_reads_without_a_usable_lock_file_refuse_unless_asked(readonly_archive: Path) -> None:
    """No silent unlocked reading: a reader that cannot register in the lock file says so in one line
    and names the opt-in; with it (or MASKSTORE_NO_LOCK=1) the read works."""
    result = run_unprivileged(MASKSTORE_CLI, "query", readonly_archive, "--count")
    assert result.returncode == 1 and result.stdout == "", result
    assert result.stderr.startswith("Error: cannot open the lock file") and "--no-lock" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    script = ("import sys\nfrom maskstore import Archive, ArchiveError\n"
              "try:\n    Archive(sys.argv[1], readonly=True)\nexcept ArchiveError as exc:\n    print('refused')\n"
              "with Archive(sys.argv[1], readonly=True, lock=False) as ar:\n    print(len(ar.versions()))\n")
    result = run_unprivileged(sys.executable, "-c", script, readonly_archive)
    assert result.stdout.split() == ["refused", "1"], result.stderr


def test_writes_on_read_only_media_fail_cleanly(readonly_archive: Path, tmp_path: Path) -> None:
    labels = tmp_path / "labels.json"
    labels.write_text('[{"value": [1, 1, 1], "labels": ["x"]}]')
    for args in (["labels", readonly_archive, "--set", labels], ["check", "--repair", readonly_archive],
                 ["init", readonly_archive.parent / "new.maskstore"]):
        result = run_unprivileged(MASKSTORE_CLI, *args)
        assert result.returncode == 1, (args, result.stderr)
        assert result.stderr.startswith("Error: ") and "Traceback" not in result.stderr, result.stderr
        assert "Permission denied" in result.stderr or "read-only" in result.stderr, result.stderr
    assert not (readonly_archive.parent / "new.maskstore").exists()
    assert stat.S_IMODE(readonly_archive.stat().st_mode) == 0o444


def test_library_read_only_open_on_read_only_media(readonly_archive: Path) -> None:
    script = (
        "import sys\nfrom maskstore import Archive, ArchiveError, ReadOnlyError\n"
        "with Archive(sys.argv[1], readonly=True, lock=False) as ar:\n"
        f"    v = ar.get_version({DATASET!r}, {VERSION!r})\n"
        "    assert len(v) == 1000 and v.get_frame('b0003-007').id == 'b0003-007'\n"
        "    assert len(v.ids('label == \"L2\"')) == 250\n"
        "    try:\n        v.set_description('x')\n    except ReadOnlyError:\n        print('refused')\n"
        "try:\n    Archive(sys.argv[1])\nexcept ArchiveError as exc:\n    print('writable open refused:', exc)\n")
    result = run_unprivileged(sys.executable, "-c", script, readonly_archive)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "refused"
    assert "writable open refused:" in result.stdout and str(readonly_archive) in result.stdout


def test_readonly_open_without_lock_file_in_a_writable_folder(fresh_copy) -> None:
    """With no lock file and a writable folder, ``readonly=True`` works; LMDB then creates the lock
    file (it is how readers register), which is harmless and documented."""
    path = fresh_copy()
    assert not lock_path(path).exists()
    with Archive(path, readonly=True) as ar:
        assert len(ar.get_version(DATASET, VERSION)) == 1000
    before = path.read_bytes()
    with Archive(path, readonly=True) as ar:
        ar.get_version(DATASET, VERSION).ids("meta.gen == 0")
    assert path.read_bytes() == before, "a read-only open changed the archive file"
