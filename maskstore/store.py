"""The LMDB environment of one archive file: lock policy, reader table, map size, transactions, forks.

LMDB's promises hold only when its rules are kept, so this module keeps them in one place:

- **Locking is never dropped silently.** Readers register in the lock file's reader table; reading
  without it (``lock=False``) is only for archives no process writes (read-only media, published
  snapshots), like SQLite's ``immutable=1``, and only when the caller asks.
- **Stale readers are cleared** (``reader_check``) on open and before every write: a reader killed
  with SIGKILL otherwise pins its snapshot's pages for ever, so the file grows without bound, and its
  slot stays taken until writers are locked out with ``MDB_READERS_FULL``.
- **The map never moves under a reader.** The map is reserved large (virtual address space only; the
  file grows as pages are used), so it practically never needs growing; when it must, it grows only
  while this process holds no transaction, else the write fails with a clear error.
- **Readers never wait for writers.** Opening reads the sub-database handles in a read transaction;
  a cache write (``try_write``) gives up at once when another maskstore writer holds the archive
  (an ``flock`` on the data file taken by every maskstore writer before LMDB's own writer lock).
- **A forked child reopens.** An environment must not be used across ``fork``; a child's first use
  reopens the file. py-lmdb keeps no spare read transaction here (``max_spare_txns=0``), so closing the
  inherited handle in the child cannot touch the parent's reader slots.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import sys
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import lmdb

from .errors import ArchiveError, ReadOnlyError

T = TypeVar("T")

# Address space reserved for the map on 64-bit systems: LMDB grows the file only as pages are used.
DEFAULT_MAP_SIZE = (1 << 40) if sys.maxsize > 2**32 else (1 << 30)
DEFAULT_MAX_READERS = 126  # LMDB's default size of a new lock file's reader table
NO_LOCK_ENV = "MASKSTORE_NO_LOCK"


def lock_default() -> bool:
    """Readers lock unless ``MASKSTORE_NO_LOCK=1`` (what ``maskstore --no-lock`` sets) says otherwise."""
    return os.environ.get(NO_LOCK_ENV, "") not in ("1", "true", "yes")


NETWORK_FILESYSTEMS = frozenset({"nfs", "nfs4", "cifs", "smb3", "smbfs", "fuse.sshfs", "9p", "afs", "glusterfs",
                                 "fuse.glusterfs", "lustre", "fuse.s3fs", "fuse.rclone", "davfs", "fuse.davfs2"})


def mounts() -> list[tuple[str, str]]:
    """(mount point, file system type) of this machine's mounts (Linux); empty where unknown."""
    try:
        lines = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return []
    return [(fields[1].replace("\\040", " "), fields[2]) for fields in (line.split() for line in lines)
            if len(fields) >= 3]


def network_filesystem(path: Path) -> str | None:
    """The file system type when ``path`` lives on a network mount (where LMDB cannot lock or map a
    file safely for writing), else None."""
    folder = str(path.resolve().parent)
    best = ("", "")
    for point, fstype in mounts():
        inside = folder == point or folder.startswith(point.rstrip("/") + "/")
        if inside and len(point) > len(best[0]):
            best = (point, fstype)
    return best[1] if best[1] in NETWORK_FILESYSTEMS else None


def _unlocked_hint(path: Path) -> str:
    return (f"if no process writes {path} (read-only media, a published snapshot), read it without "
            "locking: Archive(path, readonly=True, lock=False), or maskstore --no-lock")


class Store:
    """One LMDB environment (a single file plus its ``-lock`` file), its transactions and its writer lock."""

    def __init__(self, path: Path, *, readonly: bool, lock: bool, map_size: int | None, sync: bool,
                 max_readers: int = DEFAULT_MAX_READERS) -> None:
        if not lock and not readonly:
            raise ArchiveError("lock=False is for reading only: a writer must take LMDB's lock")
        self.path = path
        self.readonly = readonly
        self.lock = lock
        self._options = dict(subdir=False, max_dbs=32, readonly=readonly, sync=sync, metasync=sync,
                             readahead=False, lock=lock, max_readers=max_readers, max_spare_txns=0)
        self._map_size = max(map_size or DEFAULT_MAP_SIZE, path.stat().st_size if path.exists() else 0)
        self._live = 0                     # transactions of this process open now
        self._writing = threading.Lock()   # one writer thread of this process at a time
        self._pid = os.getpid()
        self._flock_fd: int | None = None
        self.on_reopen: Callable[[], None] = lambda: None  # handles tied to the old environment go stale
        self.env: lmdb.Environment | None = self._open()
        _STORES.add(self)

    # ------------------------------------------------------------------ opening

    def _open(self) -> lmdb.Environment:
        try:
            try:
                env = lmdb.open(str(self.path), map_size=self._map_size, **self._options)
            except lmdb.Error as exc:
                if "already open in this process" not in str(exc) or not _release_inherited(self.path):
                    raise
                env = lmdb.open(str(self.path), map_size=self._map_size, **self._options)
        except lmdb.InvalidError:
            raise ArchiveError(f"{self.path} is not a maskstore archive (not an LMDB file)") from None
        except lmdb.VersionMismatchError as exc:
            raise ArchiveError(f"{self.path} was written by an incompatible LMDB: {exc}") from None
        except lmdb.Error as exc:
            raise ArchiveError(self._open_failure(exc)) from None
        if self.lock:
            env.reader_check()
        return env

    def _open_failure(self, exc: lmdb.Error) -> str:
        lock_file = self.path.with_name(self.path.name + "-lock")
        lock_writable = os.access(lock_file if lock_file.exists() else self.path.parent, os.W_OK)
        if self.readonly and self.lock and not lock_writable:
            return (f"cannot open the lock file {lock_file} to register as a reader ({exc}); "
                    f"{_unlocked_hint(self.path)}")
        return f"cannot open {self.path}: {exc}"

    def _release_inherited(self) -> bool:
        """Close the handle a forked child inherited, which LMDB forbids using here. False when the
        parent was inside a transaction at the fork: closing the copy would end that transaction in
        the shared reader table, so the copy is kept, untouched, for ever."""
        if self._live:
            _keep_forever(self.env)
            return False
        if self.env is not None:
            self.env.close()
            self.env = None
        if self._flock_fd is not None:  # shares the parent's flock: never lock through it
            os.close(self._flock_fd)
            self._flock_fd = None
        return True

    def _check_process(self) -> None:
        """First use in a forked child: a fresh handle (and writer-lock descriptor) of this process."""
        if self._pid == os.getpid():
            return
        if not self._release_inherited():
            raise ArchiveError(f"a forked child cannot use {self.path} while its parent was reading it at the "
                               "fork (an unfinished query iterator); fork outside queries")
        self._pid = os.getpid()
        self._live = 0
        self._writing = threading.Lock()
        self.env = self._open()
        self.on_reopen()

    # ------------------------------------------------------------------ transactions

    @contextmanager
    def begin(self, write: bool = False) -> Iterator[lmdb.Transaction]:
        """A transaction of this process; committed when the block ends normally, else aborted."""
        self._check_process()
        txn = self._begin_txn(write)
        owner = os.getpid()
        self._live += 1
        try:
            yield txn
        except BaseException:
            if os.getpid() == owner:  # a forked child never ends its parent's transaction
                txn.abort()
            raise
        else:
            if os.getpid() == owner:
                txn.commit()
        finally:
            if os.getpid() == owner:
                self._live -= 1

    def _begin_txn(self, write: bool) -> lmdb.Transaction:
        for attempt in range(2):
            try:
                return self.env.begin(write=write)
            except lmdb.MapResizedError:
                self._adopt_map_size()
            except lmdb.ReadersFullError:
                if attempt or not self.lock or not self.env.reader_check():
                    raise ArchiveError(
                        f"all reader slots of {self.path} are in use ({self.env.max_readers()} readers of live "
                        "processes); close some readers, or open the archive with a larger max_readers "
                        "when the lock file is first created") from None
        return self.env.begin(write=write)

    def _adopt_map_size(self) -> None:
        """Another process grew the map: follow it, which LMDB allows only with no transaction open here."""
        if self._live:
            raise ArchiveError(f"another process grew the map of {self.path} while this process is reading "
                               "it (an unfinished query iterator?); finish or close it and retry")
        self.env.set_mapsize(0)

    def read(self, fn: Callable[[lmdb.Transaction], T]) -> T:
        """Run ``fn`` in one read transaction: a consistent snapshot."""
        with self.begin() as txn:
            return fn(txn)

    def write(self, fn: Callable[[lmdb.Transaction], T]) -> T:
        """Run ``fn`` in one write transaction, all or nothing; grow the map and retry when full."""
        if self.readonly:
            raise ReadOnlyError(f"{self.path} is open read-only")
        with self._writer_lock(blocking=True):
            return self._write_locked(fn)

    def try_write(self, fn: Callable[[lmdb.Transaction], T]) -> bool:
        """Run ``fn`` in a write transaction only if no other writer holds the archive now, never
        waiting; for caches a reader may store. False when skipped or when the write failed (a full
        disk, a read-only file): a cache write never fails the read that offered it."""
        if self.readonly:
            return False
        try:
            with self._writer_lock(blocking=False) as locked:
                if not locked:
                    return False
                self._write_locked(fn)
                return True
        except (lmdb.Error, ArchiveError, OSError):
            return False

    def _write_locked(self, fn: Callable[[lmdb.Transaction], T]) -> T:
        self.env.reader_check()
        while True:
            try:
                with self.begin(write=True) as txn:
                    return fn(txn)
            except lmdb.MapFullError:
                self._grow_map()
            except lmdb.Error as exc:
                raise ArchiveError(_write_failure(self.path, exc)) from None

    def _grow_map(self) -> None:
        size = self.env.info()["map_size"]
        if self._live:
            raise ArchiveError(f"the map of {self.path} ({size >> 20} MiB) is full and this process holds an open "
                               "read transaction (an unfinished query iterator?); finish it first, or open the "
                               "archive with a larger map_size")
        self.env.set_mapsize(size * 2)

    @contextmanager
    def _writer_lock(self, blocking: bool) -> Iterator[bool]:
        """This process's writer thread lock, then the cross-process flock every maskstore writer takes
        before LMDB's writer mutex (so a non-blocking attempt can tell a busy archive at once)."""
        self._check_process()
        if not self._writing.acquire(blocking=blocking):
            yield False
            return
        try:
            fd = self._flock_descriptor()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            self._writing.release()

    def _flock_descriptor(self) -> int:
        if self._flock_fd is None:
            self._flock_fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        return self._flock_fd

    # ------------------------------------------------------------------ the rest

    def sync(self) -> None:
        self.env.sync(True)

    def close(self) -> None:
        if self._pid != os.getpid():  # a handle inherited through fork: see _release_inherited
            self._release_inherited()
            _STORES.discard(self)
            return
        self.env.close()
        if self._flock_fd is not None:
            os.close(self._flock_fd)
            self._flock_fd = None
        _STORES.discard(self)


def _write_failure(path: Path, exc: lmdb.Error) -> str:
    """One line for a failed write: which disk, and that the transaction left nothing behind."""
    text = str(exc)
    full = isinstance(exc, lmdb.DiskError) or "No space" in text or "Input/output" in text
    if full:
        try:
            st = os.statvfs(path.parent)
            free = f"{st.f_bavail * st.f_frsize} bytes free"
        except OSError:
            free = "free space unknown"
        return (f"cannot write {path}: the disk holding {path.parent} is full or failing ({text}; {free}); "
                "this transaction was not committed, everything committed before it is intact")
    return f"cannot write {path}: {text}; this transaction was not committed"


def _keep_forever(obj: Any) -> None:
    """Never free ``obj``: its destructor would end the parent's transactions from this child."""
    ctypes.pythonapi.Py_IncRef(ctypes.py_object(obj))


def _release_inherited(path: Path) -> bool:
    """In a forked child, free the inherited handles of ``path`` so it can be opened again."""
    inherited = [s for s in list(_STORES) if s._pid != os.getpid() and s.env is not None
                 and os.path.samefile(s.path, path)]
    return bool(inherited) and all(s._release_inherited() for s in inherited)


def lock_out_others(path: Path, action: str) -> int:
    """Take LMDB's own liveness lock on the archive's lock file exclusively (an fcntl lock on byte 0,
    which every process that has the environment open holds shared) and return its descriptor; closing
    it releases the lock. While it is held no other process can open the archive (LMDB's open waits
    for it); an ArchiveError when another process has it open now. Tools that replace the file
    (``compact``, ``upgrade``) need this: a process that had the old file open would go on using it,
    and its later writes would be lost."""
    lock_file = path.with_name(path.name + "-lock")
    try:
        fd = os.open(lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise ArchiveError(f"cannot {action} {path}: cannot open its lock file {lock_file}: {exc.strerror}") from None
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 0)
    except OSError:
        os.close(fd)
        raise ArchiveError(f"another process has {path} open (a viewer, an ingest, a notebook, a worker?); "
                           f"{action} replaces the file, so close them and {action} it again") from None
    return fd


_DB_FLAGS = ("reverse_key", "dupsort", "integerkey", "integerdup", "dupfixed")
COPY_TXN_BYTES = 256 << 20  # bytes per write transaction of a copy: LMDB caps a transaction's dirty pages


def copy_databases(source: lmdb.Environment, txn: lmdb.Transaction, target: lmdb.Environment,
                   keep: dict[bytes, Callable[[bytes, bytes], bool]] | None = None,
                   rewrite: dict[bytes, Callable[[bytes, bytes], bytes]] | None = None) -> dict[str, int]:
    """Every named sub-database of ``source`` as ``txn`` sees it into the new environment ``target``,
    each with its own flags, entries appended in key order (full pages: the copy is compact) in
    transactions of at most COPY_TXN_BYTES; ``keep[name](key, value)`` false leaves an entry out, and
    ``rewrite[name](key, value)`` is the value written in its place. Entries copied, by sub-database name."""
    counts = {}
    for name in [bytes(key) for key, _ in txn.cursor()]:
        src_db = source.open_db(name, txn=txn, create=False)
        flags = src_db.flags(txn)
        dst_db = target.open_db(name, create=True, **{f: flags[f] for f in _DB_FLAGS})
        wanted = keep.get(name) if keep else None
        changed = rewrite.get(name) if rewrite else None
        items = iter(txn.cursor(db=src_db))
        count = 0
        while True:
            batch, held = [], 0
            for key, value in items:
                if wanted is None or wanted(key, value):
                    if changed is not None:
                        value = changed(key, value)
                    batch.append((key, value))
                    held += len(key) + len(value)
                    if held >= COPY_TXN_BYTES:
                        break
            if not batch:
                break
            with target.begin(write=True) as wtxn:
                _, added = wtxn.cursor(db=dst_db).putmulti(batch, dupdata=flags["dupsort"], append=True)
            if added != len(batch):  # append refuses keys out of order
                raise ArchiveError(f"sub-database {name.decode(errors='replace')} is out of key order ({added} of "
                                   f"{len(batch)} entries appended); run maskstore check")
            count += added
        counts[name.decode(errors="replace")] = count
    return counts


def fsync_path(path: Path) -> None:
    """Flush a file, or a folder's entries (after a rename), to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_file(path: Path) -> None:
    """Remove a (temporary) archive file and its lock file, when they exist."""
    for stale in (path, path.with_name(path.name + "-lock")):
        stale.unlink(missing_ok=True)


def open_here(path: Path) -> bool:
    """Whether this process has ``path`` open as an archive now (a handle not yet closed)."""
    return any(s.env is not None and s._pid == os.getpid() and s.path.exists() and os.path.samefile(s.path, path)
               for s in list(_STORES))


def _after_fork_in_child() -> None:
    """A child must never end the transactions its parent had open at the fork, not even at exit."""
    for store in list(_STORES):
        if store._live and store.env is not None:
            _keep_forever(store.env)


_STORES: weakref.WeakSet[Store] = weakref.WeakSet()
os.register_at_fork(after_in_child=_after_fork_in_child)
