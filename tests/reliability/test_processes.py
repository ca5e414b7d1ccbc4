"""Worker processes (mask decoding at ingest, export with jobs > 1) are an implementation detail:

* a user's script needs no ``if __name__ == "__main__":`` guard, and may even come from stdin — the
  workers never run the user's main module;
* when the process that started them dies, even by SIGKILL, every helper process exits too: none
  keeps the archive, an LMDB reader slot or the dead parent's stdout (``maskstore ingest | tee log``
  must end).

Everything here runs real interpreters and real signals; the kill tests poll /proc for the processes
of the killed command's own session.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from maskstore import Archive
from maskstore.stats import MaskDecoder

from .helpers import MASKSTORE_CLI, session_processes, wait_until, write_jsonl, write_mask_frames

pytestmark = pytest.mark.slow

on_linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds a session's processes in /proc")
MASKS = 24  # above the pool threshold (POOL_MIN_MASKS), so jobs=2 really starts workers

# No __main__ guard on purpose: every line runs whenever this module is executed as a main module.
UNGUARDED = """\
import json, os, sys
from maskstore import Archive

with open(os.environ["RUNS_LOG"], "a") as log:
    log.write(f"{os.getpid()}\\n")
frames = json.load(open(os.environ["FRAMES"]))
with Archive(os.environ["ARCHIVE"], jobs=2) as ar:
    v = ar.create_version("d", "v1")
    v.add_frames(frames)
    report = v.export(os.environ["OUT"], jobs=2)
    decoded = sum(1 for d in v.frame_dicts() if d["sources"][0]["masks"][0]["values"])
print(json.dumps({"frames": len(frames), "decoded": decoded, "written": report.written,
                  "errors": report.errors}))
"""


@pytest.mark.parametrize("how", ["file", "stdin"])
def test_script_without_main_guard_ingests_and_exports_with_two_jobs(tmp_path: Path, how: str) -> None:
    """``python script.py`` and ``python - < script.py``: the pools work and the script's body runs
    exactly once (workers that re-import ``__main__`` would run it again, or crash the pool)."""
    frames = write_mask_frames(tmp_path / "media", MASKS)
    script = tmp_path / "unguarded.py"
    script.write_text(UNGUARDED)
    (tmp_path / "frames.json").write_text(json.dumps(frames))
    env = dict(os.environ, RUNS_LOG=str(tmp_path / "runs.log"), FRAMES=str(tmp_path / "frames.json"),
               ARCHIVE=str(tmp_path / "a.maskstore"), OUT=str(tmp_path / "out"))
    if how == "file":
        args, stdin = [sys.executable, str(script)], None
    else:
        args, stdin = [sys.executable, "-"], script.open()
    try:
        done = subprocess.run(args, stdin=stdin, capture_output=True, text=True, env=env, cwd=tmp_path,
                              timeout=120)
    finally:
        if stdin is not None:
            stdin.close()
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"frames": MASKS, "decoded": MASKS, "written": MASKS, "errors": []}
    runs = (tmp_path / "runs.log").read_text().split()
    assert len(runs) == 1, f"the script's body ran in {len(runs)} processes: {runs}"
    assert len(list((tmp_path / "out").glob("*/*.png"))) == MASKS


def test_workers_outlive_the_thread_that_started_them(tmp_path: Path) -> None:
    """Workers follow the process, not the thread that started their pool (PR_SET_PDEATHSIG would
    kill them when that thread ends, and the next batch would meet a broken pool)."""
    frames = write_mask_frames(tmp_path / "media", MASKS)
    decoder = MaskDecoder(jobs=2)
    try:
        starter = threading.Thread(target=decoder.fill, args=(copy.deepcopy(frames),))
        starter.start()
        starter.join()
        decoder.fill(copy.deepcopy(frames))
        assert decoder.decoded == 2 * MASKS
    finally:
        decoder.close()


FORKED = """\
import copy, json, os, sys
from maskstore.stats import MaskDecoder

frames = json.load(open(sys.argv[1]))
decoder = MaskDecoder(jobs=2)
decoder.fill(copy.deepcopy(frames))
pid = os.fork()
if pid == 0:
    decoder.fill(copy.deepcopy(frames))
    decoder.close()
    os._exit(0 if decoder.decoded == 2 * len(frames) else 2)
_, status = os.waitpid(pid, 0)
decoder.fill(copy.deepcopy(frames))
decoder.close()
print(os.waitstatus_to_exitcode(status), decoder.decoded)
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX only")
def test_a_forked_child_decodes_with_a_pool_of_its_own(tmp_path: Path) -> None:
    """A child forked from a process whose pool is running inherits the pool object but none of its
    threads; using it would wait for ever, so the child starts its own (and the parent keeps its)."""
    (tmp_path / "frames.json").write_text(json.dumps(write_mask_frames(tmp_path / "media", MASKS)))
    child = subprocess.Popen([sys.executable, "-c", FORKED, str(tmp_path / "frames.json")], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = child.communicate(timeout=120)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
    assert (child.returncode, out.split()) == (0, ["0", str(2 * MASKS)]), err


# ------------------------------------------------------------------------------------------ SIGKILL


class Session:
    """A command started in a session of its own, stdout and stderr on pipes read to EOF by threads
    (as ``| tee`` would): EOF comes only when every process holding the pipes has exited."""

    def __init__(self, args: list[str]) -> None:
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     start_new_session=True)
        self.sid = self.proc.pid  # a session leader's id is its pid
        self.output: dict[str, bytes] = {}
        self.readers = [threading.Thread(target=self._drain, args=(name, pipe), daemon=True)
                        for name, pipe in (("stdout", self.proc.stdout), ("stderr", self.proc.stderr))]
        for reader in self.readers:
            reader.start()

    def _drain(self, name: str, pipe) -> None:
        self.output[name] = pipe.read()

    def others(self) -> list[str]:
        return [p for p in session_processes(self.sid) if not p.startswith(f"{self.proc.pid} ")]

    def kill_leader(self) -> None:
        assert self.proc.poll() is None, f"the command ended before the kill:\n{self.output}"
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)

    def cleanup(self) -> None:
        """Whatever the test found, leave no process of this session behind."""
        try:
            os.killpg(self.sid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def assert_session_ends(session: Session) -> None:
    wait_until(lambda: not session.others(), 30,
               f"processes of the killed command still alive: {session.others()}")
    for reader in session.readers:
        reader.join(30)
        assert not reader.is_alive(), "a pipe reader (like `| tee`) never saw EOF"


def archive_count(path: Path) -> int:
    if not path.exists():
        return 0
    with Archive(path, readonly=True) as ar:
        return sum(len(v) for v in ar.versions())


@on_linux
def test_sigkilled_ingest_leaves_no_process_behind(tmp_path: Path) -> None:
    """``maskstore ingest --jobs 2`` is killed once its first batch is committed (so its workers
    are running): its workers, and any server or tracker process, exit and the pipes reach EOF."""
    frames = write_jsonl(tmp_path / "frames.jsonl", write_mask_frames(tmp_path / "media", 40_000, side=192))
    archive = tmp_path / "a.maskstore"
    session = Session([str(MASKSTORE_CLI), "ingest", str(archive), "-d", "d", "-V", "v1", "--frames", str(frames),
                       "--jobs", "2", "--batch-size", "200", "--fast"])
    try:
        wait_until(lambda: archive_count(archive) > 0 or session.proc.poll() is not None, 120,
                   "the ingest to commit its first batch")
        assert session.others(), "no worker process was started"
        session.kill_leader()
        assert_session_ends(session)
    finally:
        session.cleanup()
    assert 0 < archive_count(archive) < 40_000


@on_linux
def test_sigkilled_export_leaves_no_process_behind(tmp_path: Path) -> None:
    frames = write_mask_frames(tmp_path / "media", 3000, side=256)
    archive = tmp_path / "a.maskstore"
    with Archive(archive, jobs=1) as ar:
        ar.create_version("d", "v1").add_frames(frames)
    out = tmp_path / "out"
    session = Session([str(MASKSTORE_CLI), "export", str(archive), str(out), "--jobs", "2"])
    try:
        wait_until(lambda: any(out.glob("*/*.png")) or session.proc.poll() is not None, 120,
                   "the export to write its first image")
        session.kill_leader()
        assert_session_ends(session)
    finally:
        session.cleanup()
    assert 0 < len(list(out.glob("*/*.png"))) < 3000
