"""``maskstore upgrade``: rewrite an archive of an earlier format in this release's format.

A format change that old archives cannot simply be read in adds one ``Step`` to ``STEPS``: a name
(printed), when an archive needs it (from its format record) and the work, done on a copy. The
machinery stays the same for every step, and it is what makes the upgrade safe (FORMAT.md,
"Compatibility"): the archive is copied record by record into a new file beside it, the steps run
on the copy, the copy gets its new format record, is flushed to disk, and only then renamed over the
original. A crash at any moment before the rename leaves the original as it was (and a stale copy
that the next upgrade removes); the rename itself is atomic.

The upgrade reads the original with LMDB only, never through ``Archive``, so it can read formats the
rest of this release no longer opens directly.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import lmdb

from . import records
from .errors import ArchiveError
from .store import DEFAULT_MAP_SIZE


class Step(NamedTuple):
    """One format change. ``apply`` works on the closed copy (open it with ``lmdb`` or ``Archive``)
    and updates the format record it is given (``version``, feature lists); ``needed`` sees that
    record as the steps before it left it, so steps chain (1 -> 2 -> 3)."""

    name: str
    needed: Callable[[dict[str, Any]], bool]
    apply: Callable[[Path, dict[str, Any]], None]


STEPS: tuple[Step, ...] = ()
"""Every format change since format 1 (maskstore 0.1.0), oldest first. None yet: archives of 0.1.0
are current."""

COPY_BATCH = 10_000  # entries per write transaction of the copy: bounded memory on any archive size
MAX_DBS = 64


@dataclass
class UpgradeReport:
    path: Path
    before: dict[str, Any]
    after: dict[str, Any]
    steps: list[str] = field(default_factory=list)  # names of the steps that ran; empty: already current

    def __str__(self) -> str:
        if not self.steps:
            return f"{self.path} is already in the current format ({_describe(self.after)}); nothing to do"
        return (f"upgraded {self.path} from {_describe(self.before)} to {_describe(self.after)}: "
                + "; ".join(self.steps))


def _describe(fmt: dict[str, Any]) -> str:
    features = fmt["required_features"] + fmt["optional_features"]
    return f"format {fmt['version']}" + (f" with {', '.join(sorted(features))}" if features else "")


def upgrade(path: str | os.PathLike[str], steps: Sequence[Step] = STEPS) -> UpgradeReport:
    """Bring the archive at ``path`` to this release's format in place, atomically; a no-op (nothing
    written) when it is current. Refuses newer formats and unknown required features (ArchiveError),
    and an archive another process has open (it would go on using the replaced file)."""
    path = Path(path)
    if not path.is_file():
        raise ArchiveError(f"no archive file at {path}")
    with _writer_flock(path):
        _refuse_if_open_elsewhere(path)
        before = _read_format(path)
        report = UpgradeReport(path, before, before)
        if not any(step.needed(before) for step in steps):  # steps chain: the first must be needed now
            return report
        copy = path.with_name(path.name + ".upgrade")
        _remove(copy)
        try:
            try:
                _copy_records(path, copy)
                after = {**before, "required_features": list(before["required_features"]),
                         "optional_features": list(before["optional_features"])}
                for step in steps:
                    if step.needed(after):
                        step.apply(copy, after)
                        report.steps.append(step.name)
                report.after = _write_format(copy, after)
                _fsync(copy)
            except (lmdb.Error, OSError) as exc:  # e.g. a full disk: the copy goes, the original stays
                raise ArchiveError(f"cannot upgrade {path}: {exc}; the archive is unchanged") from None
            _refuse_if_open_elsewhere(path)  # opened while the copy was made: it would miss the new file
            os.replace(copy, path)
        finally:
            _remove(copy)
        _fsync(path.parent)
        return report


@contextmanager
def _writer_flock(path: Path) -> Iterator[None]:
    """The flock every maskstore writer takes on the data file before writing (``store.Store``):
    held for the whole upgrade, so no write lands in the original after it was copied."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ArchiveError(f"another process is writing {path}; upgrade it when that is done") from None
        yield
    finally:
        os.close(fd)  # releases the flock


def _refuse_if_open_elsewhere(path: Path) -> None:
    """Every process that has an LMDB environment open holds a shared ``fcntl`` lock on byte 0 of its
    lock file (LMDB's own liveness lock); an exclusive attempt tells whether any other process does. A
    process that had the archive open across the rename would go on using the replaced file, and
    its later writes would be lost. (This process holds no environment of ``path`` here.)"""
    lock_file = path.with_name(path.name + "-lock")
    try:
        fd = os.open(lock_file, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 0)
    except OSError:
        raise ArchiveError(f"another process has {path} open; close it (viewers, notebooks, workers) "
                           "and upgrade again") from None
    finally:
        os.close(fd)  # releases the lock taken, if any


def _open(path: Path, readonly: bool) -> lmdb.Environment:
    try:
        return lmdb.open(str(path), subdir=False, readonly=readonly, max_dbs=MAX_DBS, map_size=DEFAULT_MAP_SIZE,
                         sync=False, metasync=False, readahead=False, max_spare_txns=0)
    except lmdb.InvalidError:
        raise ArchiveError(f"{path} is not a maskstore archive (not an LMDB file)") from None
    except lmdb.Error as exc:
        raise ArchiveError(f"cannot open {path}: {exc}") from None


def _read_format(path: Path) -> dict[str, Any]:
    env = _open(path, readonly=True)
    try:
        with env.begin() as txn:
            names = {bytes(key) for key, _ in txn.cursor()}
            data = txn.get(b"format", db=env.open_db(b"meta", txn=txn, create=False)) if b"meta" in names else None
    finally:
        env.close()
    if data is None:
        raise ArchiveError(f"{path} is not a maskstore archive (no format marker)")
    try:
        return records.decode_format(data)
    except ArchiveError as exc:
        raise ArchiveError(f"{path}: {exc}") from None


_FLAGS = ("reverse_key", "dupsort", "integerkey", "integerdup", "dupfixed")


def _copy_records(source: Path, target: Path) -> None:
    """Every entry of every sub-database, from one snapshot of ``source`` into a new file, each
    sub-database with its own flags (so sub-databases of any layout are copied as they are)."""
    src, dst = _open(source, readonly=True), _open(target, readonly=False)
    try:
        with src.begin() as rtxn:
            for name in [bytes(key) for key, _ in rtxn.cursor()]:
                src_db = src.open_db(name, txn=rtxn, create=False)
                flags = src_db.flags(rtxn)
                dst_db = dst.open_db(name, create=True, **{f: flags[f] for f in _FLAGS})
                batch: list[tuple[bytes, bytes]] = []
                for item in rtxn.cursor(db=src_db):
                    batch.append(item)
                    if len(batch) == COPY_BATCH:
                        _put(dst, dst_db, batch, flags["dupsort"])
                _put(dst, dst_db, batch, flags["dupsort"])
        dst.sync(True)
    finally:
        src.close()
        dst.close()


def _put(env: lmdb.Environment, db: Any, batch: list[tuple[bytes, bytes]], dupsort: bool) -> None:
    with env.begin(write=True) as txn:
        txn.cursor(db=db).putmulti(batch, dupdata=dupsort)
    batch.clear()


def _write_format(path: Path, fmt: dict[str, Any]) -> dict[str, Any]:
    data = records.encode_format(fmt["version"], tuple(fmt["required_features"]), tuple(fmt["optional_features"]))
    env = _open(path, readonly=False)
    try:
        with env.begin(write=True) as txn:
            txn.put(b"format", data, db=env.open_db(b"meta", txn=txn, create=True))
        env.sync(True)
    finally:
        env.close()
    return records.decode_format(data)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove(copy: Path) -> None:
    for stale in (copy, copy.with_name(copy.name + "-lock")):
        stale.unlink(missing_ok=True)
