"""Shared pieces of the reliability suite: recognisable frames, a consistency oracle, child processes.

Imported both by the tests (as ``reliability.helpers``) and by ``worker.py`` running as a plain script
in a child process, so it depends on nothing but maskstore and the standard library.

Frame ``b{batch:04d}-{i:03d}`` is frame ``i`` of batch ``batch``; every batch a writer adds, updates or
deletes is one library call, so after any crash the frames present must be whole batches.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from maskstore import Archive, DatasetVersion, frame_groups, postings
from maskstore.check import check_archive
from maskstore.layout import CHUNK_BITS, u64

HERE = Path(__file__).resolve().parent
WORKER = HERE / "worker.py"
MASKSTORE_CLI = Path(sys.executable).with_name("maskstore")

DATASET = "d"
VERSION = "v1"
CONTEXTS = 5           # frame i of a batch has context ctx-((i + gen) % 5)
LABEL_VALUES = (1, 2, 3, 4)  # mask value (v, v, v) of frame i of batch b: 1 + (b + i + gen) % 4
TEMPLATE_BATCHES = 20   # the session's template archive: 20 whole batches of 50 frames
TEMPLATE_BATCH_SIZE = 50
ID_RE = re.compile(r"^b(\d{4})-(\d{3})$")


# ------------------------------------------------------------------------------------------ frames

def frame_id(batch: int, i: int) -> str:
    return f"b{batch:04d}-{i:03d}"


def parse_id(fid: str) -> tuple[int, int]:
    m = ID_RE.match(fid)
    assert m, f"unexpected frame id {fid!r}"
    return int(m.group(1)), int(m.group(2))


def value_of(batch: int, i: int, gen: int = 0) -> int:
    return LABEL_VALUES[(batch + i + gen) % len(LABEL_VALUES)]


def make_frame(batch: int, i: int, gen: int = 0) -> dict[str, Any]:
    """A frame dict with precomputed mask statistics and source size: ingest never opens a file."""
    fid = frame_id(batch, i)
    v = value_of(batch, i, gen)
    return {
        "id": fid,
        "timestamp": batch * 1000 + i,
        "context_id": f"ctx-{(i + gen) % CONTEXTS}",
        "meta": {"batch": batch, "i": i, "gen": gen},
        "sources": [{"id": "0", "uri": f"/data/{fid}.png", "width": 64, "height": 48,
                     "masks": [{"id": "00", "uri": f"/data/{fid}_mask.png",
                                "values": [[0, 0, 0, 2000], [v, v, v, 1072]]}]}],
        "rois": [{"label": [f"roi{i % 3}"]}],
    }


def make_batch(batch: int, size: int, gen: int = 0) -> list[dict[str, Any]]:
    return [make_frame(batch, i, gen) for i in range(size)]


def label_table(tag: str = "L") -> dict[tuple[int, int, int], list[str]]:
    """Labels of the mask values; ``tag`` changes every name so a half-written table would show."""
    return {(v, v, v): [f"{tag}{v}", f"{tag}-any"] for v in LABEL_VALUES}


def build_archive(path: Path, batches: int, batch_size: int, *, labels: bool = True) -> None:
    """An archive with ``batches`` whole batches in d/v1 (generation 0)."""
    with Archive(path, jobs=1) as ar:
        v = ar.create_version(dataset_name=DATASET, version_name=VERSION)
        if labels:
            v.set_masks_labels(label_table())
        for b in range(batches):
            v.add_frames(make_batch(b, batch_size))


# ------------------------------------------------------------------------------------------ oracle

def quote(text: str) -> str:
    """A query string literal for any text (control characters as \\u escapes)."""
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


@dataclass
class Snapshot:
    """What one consistency check found in a version."""

    ids: list[str]
    records: dict[str, dict[str, Any]]
    batches: dict[int, set[int]] = field(default_factory=dict)

    @property
    def batch_numbers(self) -> set[int]:
        return set(self.batches)


def whole_batches(ids: Iterable[str], batch_size: int) -> dict[int, set[int]]:
    """Group ids by batch and assert every batch is complete."""
    batches: dict[int, set[int]] = defaultdict(set)
    for fid in ids:
        b, i = parse_id(fid)
        batches[b].add(i)
    torn = {b: len(members) for b, members in batches.items() if members != set(range(batch_size))}
    assert not torn, f"half-written batches (batch: frames present of {batch_size}): {torn}"
    return dict(batches)


def whole_batches_subset(ids: Iterable[str], keep: Any, batch_size: int) -> set[int]:
    """For a filtered query: per batch, exactly the frames ``keep(batch, i)`` selects are present."""
    batches: dict[int, set[int]] = defaultdict(set)
    for fid in ids:
        b, i = parse_id(fid)
        batches[b].add(i)
    for b, members in batches.items():
        want = {i for i in range(batch_size) if keep(b, i)}
        assert members == want, f"batch {b}: lookup returned {sorted(members)}, records say {sorted(want)}"
    return set(batches)


def expected_labels(rec: dict[str, Any], table: dict[tuple[int, ...], list[str]]) -> set[str]:
    out = {name for r in rec["rois"] for name in r["label"]}
    for s in rec["sources"]:
        for m in s["masks"]:
            for v in m.get("values") or ():
                out.update(table.get(tuple(v[:3]), ()))
    return out


def assert_version_consistent(v: DatasetVersion, batch_size: int | None) -> Snapshot:
    """Queries, indexes, counts and records of one version agree with each other.

    Expected results are computed naively from the records (``frame_dicts``), never from an index.
    """
    ids = v.ids("")
    assert len(ids) == len(set(ids)), "v.ids('') returned duplicates"
    records = {d["id"]: d for d in v.frame_dicts()}
    assert set(ids) == set(records), "v.ids('') and the frame records disagree"
    assert len(v) == len(ids) == v.count(""), f"len(v)={len(v)}, ids={len(ids)}, count={v.count('')}"
    for ctx in sorted({r["context_id"] for r in records.values()} | {"ctx-none"}):
        want = {fid for fid, r in records.items() if r["context_id"] == ctx}
        assert set(v.ids(f"context_id == {quote(ctx)}")) == want, f"context index disagrees for {ctx}"
    table = v.get_masks_labels()
    names = {n for labels in table.values() for n in labels} | {f"roi{k}" for k in range(3)} | {"nobody"}
    for name in sorted(names):
        want = {fid for fid, r in records.items() if name in expected_labels(r, table)}
        assert set(v.ids(f"label == {quote(name)}")) == want, f"label query disagrees for {name!r}"
    for value in LABEL_VALUES:
        want = {fid for fid, r in records.items()
                if any(list(x[:3]) == [value] * 3 for s in r["sources"] for m in s["masks"] for x in m["values"])}
        assert set(v.ids(f"mask.value == [{value}, {value}, {value}]")) == want
    if records:
        middle = sorted(r["timestamp"] for r in records.values())[len(records) // 2]
        want = {fid for fid, r in records.items() if r["timestamp"] >= middle}
        assert set(v.ids(f"timestamp >= {middle}")) == want, "timestamp index disagrees"
    gens = {r["meta"].get("gen") for r in records.values()}
    for gen in sorted(g for g in gens if g is not None):
        want = {fid for fid, r in records.items() if r["meta"].get("gen") == gen}
        assert set(v.ids(f"meta.gen == {gen}")) == want, "column scan disagrees with records"
    for fid in ids:
        assert v.get_frame(fid).id == fid
        assert fid in v
    snap = Snapshot(ids, records)
    if batch_size is not None:
        snap.batches = whole_batches(ids, batch_size)
    return snap


def assert_archive_consistent(path: Path, batch_size: int | None = None) -> dict[str, Snapshot]:
    """Reopen the archive the way a user would after a crash; ``check`` finds no error and every
    version is consistent. Returns a snapshot per ``dataset/version``."""
    with Archive(path, jobs=1) as ar:
        errors = [p for p in check_archive(ar) if p.severity == "error"]
        assert not errors, "check found errors:\n" + "\n".join(map(str, errors))
        return {f"{v.dataset_name}/{v.version_name}": assert_version_consistent(v, batch_size)
                for v in ar.versions()}


# ------------------------------------------------------------------------------------------ processes

class Child:
    """A subprocess whose stdout lines are collected by a thread (so reading never blocks the test)."""

    def __init__(self, args: Sequence[str], env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=env)
        self.lines: list[str] = []
        self.stderr = ""
        self._out = threading.Thread(target=self._read_out, daemon=True)
        self._err = threading.Thread(target=self._read_err, daemon=True)
        self._out.start()
        self._err.start()

    def _read_out(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        self.stderr = self.proc.stderr.read()

    def wait_for(self, prefix: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not any(line.startswith(prefix) for line in self.lines):
            if self.proc.poll() is not None:
                self.finish(5)
                raise AssertionError(f"child exited ({self.proc.returncode}) before {prefix!r}:\n{self.stderr}")
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"child did not print {prefix!r} within {timeout}s")
            time.sleep(0.005)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.finish(30)

    def finish(self, timeout: float = 60.0) -> int:
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self._out.join(10)
        self._err.join(10)
        return self.proc.returncode

    def done(self) -> list[tuple[str, ...]]:
        """The ``done ...`` lines: work the child reported committed before it died."""
        return [tuple(line.split()[1:]) for line in self.lines if line.startswith("done ")]

    def began_unfinished(self) -> bool:
        """True when the last thing the child reported was the start of a call (killed mid-call)."""
        work = [line for line in self.lines if line.startswith(("begin ", "done "))]
        return bool(work) and work[-1].startswith("begin ")


def worker(mode: str, *args: object, env: dict[str, str] | None = None) -> Child:
    return Child([sys.executable, str(WORKER), mode, *map(str, args)], env=env)


def cli(*args: object, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run the installed ``maskstore`` command (a real process: no shared state with the test)."""
    kwargs.setdefault("timeout", 120)
    return subprocess.run([str(MASKSTORE_CLI), *map(str, args)], capture_output=True, text=True, **kwargs)


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(extra)
    return env


# ------------------------------------------------------------------------------------------ real masks

def write_mask_frames(folder: Path, count: int, *, distinct: int = 24, side: int = 64) -> list[dict[str, Any]]:
    """``count`` frame dicts over ``distinct`` real image/mask PNG pairs (reused round-robin), with no
    statistics and no source size: ingest has to decode every mask. Mask k is 0 with a band of value
    1 + k % 4, so each decodes to two values."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for k in range(distinct):
        rgb = np.zeros((side, side, 3), np.uint8)
        rgb[..., k % 3] = 40 + k
        Image.fromarray(rgb).save(folder / f"img{k:03d}.png")
        mask = np.zeros((side, side), np.uint8)
        mask[: side // 4] = 1 + k % 4
        Image.fromarray(mask).save(folder / f"mask{k:03d}.png")
    return [{"id": f"f{i:06d}", "sources": [{"id": "0", "uri": str(folder / f"img{i % distinct:03d}.png"),
                                             "masks": [{"id": "m", "uri": str(folder / f"mask{i % distinct:03d}.png")}]}]}
            for i in range(count)]


def write_jsonl(path: Path, frames: Iterable[dict[str, Any]]) -> Path:
    import json

    with path.open("w", encoding="utf-8") as f:
        for frame in frames:
            f.write(json.dumps(frame) + "\n")
    return path


# ------------------------------------------------------------------------------------------ sessions

def session_processes(sid: int) -> list[str]:
    """The live processes of session ``sid`` as "pid cmdline" (Linux /proc). Zombies are left out:
    they hold no files, and PID 1 of a container may never reap the orphans it inherits."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # exited while we looked
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ": state ppid pgrp session ...
        if int(fields[3]) == sid and fields[0] != "Z":
            found.append(f"{entry.name} {cmdline.strip()}")
    return found


def wait_until(condition: Any, timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll ``condition()`` until it is true; fail naming ``what`` after ``timeout`` seconds (a bound
    for a broken build, not a speed assertion)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(interval)


def edit_postings(txn: Any, db: Any, add: Iterable[tuple[bytes, bytes]] = (),
                  remove: Iterable[tuple[bytes, bytes]] = ()) -> None:
    """Add or remove postings ``(u64(version) + index key, u64(seq))`` of an index sub-database in a write
    transaction, block by block, as a buggy writer would leave them; a removed posting must be there."""
    for (full_key, raw_seq), adding in [(pair, True) for pair in add] + [(pair, False) for pair in remove]:
        seq = int.from_bytes(raw_seq, "big")
        key = postings.block_key(full_key[:8], full_key[8:], seq >> CHUNK_BITS)
        data = txn.get(key, db=db)
        offsets = set() if data is None else set(postings.decode_block(bytes(data)).tolist())
        offset = seq % postings.BLOCK_SEQS
        if adding:
            offsets.add(offset)
        else:
            assert offset in offsets, f"no posting of seq {seq} under {full_key!r}"
            offsets.discard(offset)
        if offsets:
            txn.put(key, postings.encode_block(np.array(sorted(offsets), np.uint16)), db=db)
        else:
            txn.delete(key, db=db)


def frame_records(txn: Any, db: Any) -> list[tuple[bytes, bytes]]:
    """Every frame record of a ``frames`` sub-database as ``(u64(version) + u64(seq), stored bytes)``,
    out of their groups: what tampering tests change one record at a time."""
    out = []
    for key, data in txn.cursor(db=db):
        base = int.from_bytes(key[8:], "big")
        out += [(bytes(key[:8]) + u64(seq), bytes(member)) for seq, member in frame_groups.decode_group(data, base)]
    return out


def put_frame_records(txn: Any, db: Any, puts: Iterable[tuple[bytes, bytes]] = (),
                      deletes: Iterable[bytes] = ()) -> None:
    """Store ``(u64(version) + u64(seq), record)`` pairs in their groups and drop the records of
    ``deletes`` (same keys), the other members as they were, bypassing every check: what a damaged or
    hostile file holds. Groups are compressed without a dictionary."""
    changes: dict[bytes, dict[int, bytes | None]] = defaultdict(dict)
    for key, record in [(k, r) for k, r in puts] + [(k, None) for k in deletes]:
        seq = int.from_bytes(key[8:], "big")
        changes[bytes(key[:8]) + u64(frame_groups.group_base(seq))][seq] = record
    for group_key, changed in changes.items():
        base = int.from_bytes(group_key[8:], "big")
        data = txn.get(group_key, db=db)
        members = {} if data is None else {seq: bytes(m) for seq, m in frame_groups.decode_group(data, base)}
        members.update(changed)
        kept = [(seq - base, record) for seq, record in members.items() if record is not None]
        if kept:
            txn.put(group_key, frame_groups.encode_group(kept, None), db=db)
        else:
            txn.delete(group_key, db=db)
