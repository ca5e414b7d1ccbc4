"""Mask statistics for a batch of frame dicts: decode each mask once, in a process pool when it pays.

PNG decoding is the cost of ingest, so it runs on every core; everything else stays in the caller.
"""

from __future__ import annotations

import os
import threading
import time
import warnings
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any


from .errors import MaskError
from .media import BLOB_PREFIX, MAX_CATEGORICAL_VALUES, BlobReader, image_size, mask_statistics

# Below this many masks a pool costs more to start than it saves.
POOL_MIN_MASKS = 16
# How often a worker looks whether the process that made its pool is still there.
PARENT_POLL_SECONDS = 0.2


@dataclass(frozen=True)
class _Job:
    frame: int
    source: int
    mask: int  # -1: only the source size is wanted
    uri: str
    frame_id: str
    kind: str | None = None  # "alpha": the mask dict says it is a matte, so no value count
    timestamp: int = 0  # which frame, when the file is a video
    content_type: str | None = None


def _run(job: _Job, blobs: BlobReader | None = None) -> tuple[_Job, Any]:
    try:
        if job.mask < 0:
            return job, image_size(job.uri, blobs, job.content_type)
        return job, mask_statistics(job.uri, blobs, job.kind, job.timestamp, job.content_type)
    except MaskError as exc:
        return job, type(exc)(f"frame {job.frame_id!r}: {exc}")


def _jobs(frames: list[dict[str, Any]], resolve: Callable[[str], str]) -> list[_Job]:
    """Masks without statistics (values, or an alpha mask's coverage), each after its source's size
    when that is missing too. One plain loop: a metadata-only import runs it over every mask of every
    frame and finds nothing."""
    jobs = []
    for fi, frame in enumerate(frames):
        for si, source in enumerate(frame["sources"]):
            size_wanted = source.get("width") is None
            for mi, mask in enumerate(source["masks"]):
                if mask.get("values") is None and mask.get("coverage") is None:
                    if size_wanted:
                        jobs.append(_Job(fi, si, -1, resolve(source["uri"]), frame["id"],
                                         content_type=source.get("content_type")))
                        size_wanted = False
                    jobs.append(_Job(fi, si, mi, resolve(mask["uri"]), frame["id"], mask.get("kind"),
                                     mask.get("timestamp") or 0, mask.get("content_type")))
    return jobs


def process_pool(jobs: int) -> Executor:
    """Worker processes that callers never have to plan for (decoding at ingest, export).

    loky starts each worker as a fresh interpreter (fork + exec), so none inherits the parent's LMDB
    environment, locks or threads, and, unlike multiprocessing's spawn and forkserver, it does not
    re-run the caller's ``__main__`` there: scripts need no ``if __name__ == "__main__":`` guard and
    may come from stdin. Every worker also exits when the process that made the pool dies. loky is
    imported here, not at the top: it costs a fresh process ~30 ms that a query never needs.
    """
    from loky import ProcessPoolExecutor
    from loky.backend.context import get_context
    return ProcessPoolExecutor(jobs, context=get_context("loky"), initializer=_exit_with_parent,
                               initargs=(os.getpid(),))


def _exit_with_parent(parent: int) -> None:
    """Worker initializer: end this worker as soon as ``parent`` is gone.

    A SIGKILLed parent cannot shut its pool down, and its idle workers would wait for tasks for ever,
    keeping the archive, an LMDB reader slot and the parent's stdout open (``maskstore ingest | tee``
    would never end). Not prctl(PR_SET_PDEATHSIG): that fires when the *thread* that started the
    worker ends, and loky starts workers from whichever thread submits work or from its own thread.
    """
    threading.Thread(target=_watch_parent, args=(parent,), name="maskstore-parent-watch", daemon=True).start()


def _watch_parent(parent: int) -> None:
    # A worker is its pool's child; when the pool's process dies the worker is re-parented (POSIX).
    while os.getppid() == parent:
        time.sleep(PARENT_POLL_SECONDS)
    os._exit(1)


def _warn_alpha(jobs: list[_Job], decoded: int) -> None:
    """Masks found to be alpha only by their number of values: a label mask with anti-aliased or lossy
    colours lands there too, and its owner should hear that it will match no label."""
    if jobs:
        warnings.warn(f"{len(jobs)} of {decoded} decoded masks have more than {MAX_CATEGORICAL_VALUES} distinct "
                      f"values and no alpha band that varies, so they are stored as alpha masks, without label "
                      f"statistics (FORMAT.md, "
                      f'"Mask statistics"); the first: frame {jobs[0].frame_id!r} mask {jobs[0].uri}', stacklevel=3)


class MaskDecoder:
    """Fills the statistics of masks that lack them, in place: ``values`` (or an alpha mask's ``kind``
    and ``coverage``), ``width`` and ``height``."""

    def __init__(self, jobs: int | None = None) -> None:
        self.jobs = max(1, jobs if jobs is not None else (os.cpu_count() or 1))
        self._pool: Executor | None = None
        self._pool_pid = 0
        self.decoded = 0

    def _executor(self) -> Executor:
        # A forked child inherits the pool object but not its threads: it would wait for ever on it.
        if self._pool is None or self._pool_pid != os.getpid():
            self._pool, self._pool_pid = process_pool(self.jobs), os.getpid()
        return self._pool

    def fill(self, frames: list[dict[str, Any]], blobs: BlobReader | None = None,
             resolve: Callable[[str], str] = str) -> None:
        """``resolve`` turns a stored URI into the one to read (relative paths: the archive's folder)."""
        jobs = _jobs(frames, resolve)
        local = [j for j in jobs if j.uri.startswith(BLOB_PREFIX)]
        shipped = [j for j in jobs if not j.uri.startswith(BLOB_PREFIX)]
        if self.jobs > 1 and len(shipped) >= POOL_MIN_MASKS:
            chunk = max(1, len(shipped) // (self.jobs * 4))
            results = list(self._executor().map(_run, shipped, chunksize=chunk))
        else:
            results = [_run(j) for j in shipped]
        results += [_run(j, blobs) for j in local]
        for job, result in results:
            if isinstance(result, Exception):
                raise result
        judged_alpha = []
        for job, result in results:
            source = frames[job.frame]["sources"][job.source]
            if job.mask < 0:
                source["width"], source["height"] = result
                continue
            source["masks"][job.mask].update(result.fields())
            self.decoded += 1
            if result.doubtful:
                judged_alpha.append(job)
        _warn_alpha(judged_alpha, sum(job.mask >= 0 for job in jobs))

    def close(self) -> None:
        if self._pool is not None and self._pool_pid == os.getpid():  # a forked child's copy is not its own
            self._pool.shutdown()
        self._pool = None
