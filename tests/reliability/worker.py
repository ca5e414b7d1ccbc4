"""Child process of the reliability tests: ``python worker.py MODE ARCHIVE ...``.

Writers print ``ready`` once the archive is open, then ``begin <work>`` before and ``done <work>``
after every library call, flushed, so the parent knows what was committed when it kills the child.
Readers print one JSON summary line at the end and exit 1 with a message on any inconsistency.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time

import helpers as h
from maskstore import Archive, FrameError, MaskstoreError


def say(*words: object) -> None:
    sys.stdout.write(" ".join(map(str, words)) + "\n")
    sys.stdout.flush()


def open_version(path: str, **kwargs: object):
    ar = Archive(path, jobs=1, **kwargs)
    return ar, ar.get_version(h.DATASET, h.VERSION)


def options(args: tuple[str, ...]) -> dict[str, str]:
    return dict(a.split("=", 1) for a in args)


def wait_for_file(path: str | None, timeout: float = 30.0) -> None:
    """A start barrier: several children begin their work at the same moment."""
    deadline = time.monotonic() + timeout
    while path and not os.path.exists(path):
        if time.monotonic() > deadline:
            raise SystemExit(f"no {path} after {timeout}s")
        time.sleep(0.002)


def add(path: str, start: str, count: str, size: str, *opts: str) -> None:
    """Batches start .. start+count-1, each one add_frames call. Options: map_size=N (start small, so
    the map must grow), seconds=S (stop after S seconds), pause=S (between batches), go=FILE."""
    o = options(opts)
    ar, v = open_version(path, map_size=int(o.get("map_size", 0)) or None)
    say("ready")
    wait_for_file(o.get("go"))
    deadline = time.monotonic() + float(o.get("seconds", 1e9))
    for b in range(int(start), int(start) + int(count)):
        if time.monotonic() > deadline:
            break
        say("begin", b, time.time())
        v.add_frames(h.make_batch(b, int(size)))
        say("done", b, time.time())
        time.sleep(float(o.get("pause", 0)))
    say("map_size", ar.env.info()["map_size"])
    ar.close()


def hold(path: str, release: str) -> None:
    """Own LMDB's writer lock: a write transaction that stays open until ``release`` exists."""
    ar = Archive(path, jobs=1)
    say("ready")

    def work(txn) -> None:
        say("holding", time.time())
        wait_for_file(release)
    ar.write(work)
    say("released", time.time())
    ar.close()


def update(path: str, batches: str, size: str, gens: str) -> None:
    """Generation after generation, batch after batch: one update_frames call per batch. Odd
    generations replace whole frames; even ones merge a partial frame (meta.gen and context_id)."""
    ar, v = open_version(path)
    say("ready")
    for gen in range(1, int(gens) + 1):
        for b in range(int(batches)):
            say("begin", gen, b)
            if gen % 2:
                v.update_frames(h.make_batch(b, int(size), gen))
            else:
                v.update_frames([{"id": h.frame_id(b, i), "context_id": f"ctx-{(i + gen) % h.CONTEXTS}",
                                  "meta": {"gen": gen}} for i in range(int(size))], merge=True)
            say("done", gen, b)
    ar.close()


def delete(path: str, batches: str, size: str) -> None:
    ar, v = open_version(path)
    say("ready")
    for b in range(int(batches)):
        say("begin", b)
        v.delete_frames([h.frame_id(b, i) for i in range(int(size))])
        say("done", b)
    ar.close()


def copy(path: str, count: str) -> None:
    """Child versions c000, c001, ... of d/v1, each a full copy made in one transaction."""
    ar, v = open_version(path)
    say("ready")
    for k in range(int(count)):
        say("begin", k)
        ar.create_version(h.DATASET, f"c{k:03d}", parent=v)
        say("done", k)
    ar.close()


def labels(path: str, count: str) -> None:
    ar, v = open_version(path)
    say("ready")
    for k in range(1, int(count) + 1):
        say("begin", k)
        v.set_masks_labels(h.label_table(f"g{k}-"))
        say("done", k)
    ar.close()


def create(path: str, name: str, go: str) -> None:
    """Race: several processes create the same version; exactly one may succeed."""
    ar = Archive(path, jobs=1)
    say("ready")
    wait_for_file(go)
    try:
        ar.create_version(h.DATASET, name)
        say("created")
    except FrameError as exc:
        say("refused", str(exc).replace("\n", " "))
    ar.close()


def read(path: str, seconds: str, size: str, seed: str, map_size: str = "0") -> None:
    """Check snapshots over and over while a writer adds whole batches of ``size`` frames."""
    size_n, rng = int(size), random.Random(int(seed))
    ar, v = open_version(path, readonly=True, map_size=int(map_size) or None)
    frames_db, ids_db = ar.db("frames"), ar.db("frame_ids")
    say("ready")
    deadline = time.monotonic() + float(seconds)
    iterations, counts, last = 0, set(), 0
    while time.monotonic() < deadline:
        # 1. One read transaction: the version record's count, the id table and the records agree.
        def snapshot(txn):
            rec = v.record(txn)
            ids = [bytes(k[8:]).decode() for k, _ in txn.cursor(db=ids_db) if bytes(k[:8]) == v.prefix]
            n_records = sum(1 for k, _ in h.frame_records(txn, frames_db) if k[:8] == v.prefix)
            return rec["count"], ids, n_records
        count, ids, n_records = ar.read(snapshot)
        assert count == len(ids) == n_records, f"one snapshot: count {count}, ids {len(ids)}, records {n_records}"
        h.whole_batches(ids, size_n)
        assert count >= last, f"count went back from {last} to {count}"
        # 2. Each query call is one snapshot: whole batches, and every id can be fetched afterwards.
        ids = v.ids("")
        batches = h.whole_batches(ids, size_n)
        assert len(ids) >= count, "a later snapshot has fewer frames"
        for fid in rng.sample(ids, min(40, len(ids))) + ids[-size_n:]:
            assert v.get_frame(fid).id == fid
        n = v.count("")
        assert n >= len(ids) and n % size_n == 0, f"count('') = {n} is not whole batches of {size_n}"
        # 3. Index lookups inside one call: per batch exactly the frames the generator put there.
        ctx = rng.randrange(h.CONTEXTS)
        got = h.whole_batches_subset(v.ids(f'context_id == "ctx-{ctx}"'),
                                     lambda b, i: i % h.CONTEXTS == ctx, size_n)
        value = rng.choice(h.LABEL_VALUES)
        got_label = h.whole_batches_subset(v.ids(f'label == "L{value}"'),
                                           lambda b, i: h.value_of(b, i) == value, size_n)
        assert got and got_label or not batches, "index lookups found nothing in a non-empty version"
        counts.add(len(ids))
        last = max(last, count)
        iterations += 1
    say(json.dumps({"iterations": iterations, "counts": sorted(counts), "map_size": ar.env.info()["map_size"]}))
    ar.close()


MODES = {"add": add, "hold": hold, "update": update, "delete": delete, "copy": copy, "labels": labels, "create": create,
         "read": read}

if __name__ == "__main__":
    try:
        MODES[sys.argv[1]](*sys.argv[2:])
    except MaskstoreError as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        sys.exit(3)
