"""Zone maps (``query/zones.py``, FORMAT.md "Zone maps"): a scan reads one entry per field and skips
the chunks whose bounds rule its value out (or in, for every frame), never giving another answer than
reading every column would; writers keep them, check compares them, repair rebuilds them."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from maskstore import Archive, ArchiveError, records
from maskstore.check import check_archive
from maskstore.cli import main
from maskstore.layout import u64
from maskstore.query import columns, zones
from maskstore.query.columns import CHUNK
from test_query import assert_same_answer, make_version

CHUNKS = 5
LONG = "x" * 70  # beyond zones.MAX_TEXT: a chunk holding it has no text bounds
BIG = 2**63 + 5  # beyond int64: chunk 3 of meta.n is of kind "o", without bounds


def zone_frame(i: int) -> dict[str, Any]:
    """Frame ``i``: each chunk's fields in ranges of their own, with the cases bounds must survive
    (a chunk of one text, missing values, a long text, infinities, -0.0, ints beside floats,
    an int beyond int64)."""
    chunk, row = divmod(i, CHUNK)
    city = [["aachen", "bochum"][i % 2], "bochum", ["koln", "zurich"][i % 2], "koln" if i % 2 else None,
            LONG if row == 7 else "ulm"][chunk]
    n = BIG if (chunk, row) == (3, 5) else chunk * 100 + i % 51
    x = [i * 0.5, 1e300 if row == 9 else float(i), [math.inf, -0.0, 1.5][i % 3], i if i % 2 else i + 0.25,
         None][chunk]
    meta = {"city": city, "n": n, "x": x, "flag": i % 3 == 0 if chunk < 3 else None}
    return {"id": f"z{i:06d}", "context_id": f"c{chunk}", "timestamp": chunk * 1_000_000 + row * 10,
            "meta": {k: v for k, v in meta.items() if v is not None},
            "sources": [{"id": "s", "uri": f"{i}.png", "masks": []}]}


FRAMES = [zone_frame(i) for i in range(CHUNKS * CHUNK)]


@pytest.fixture(scope="module")
def zoned(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("zones") / "z.maskstore"
    with Archive(path, jobs=1) as ar:
        make_version(ar, [], FRAMES, "v")
    return path


def stored_map(ar: Archive, name: bytes) -> zones.Table | None:
    """Every block's rows of the field's zone map (the test versions fit in block 0)."""
    v = ar.get_version("test", "v")
    data = ar.read(lambda t: t.get(zones.key(v.prefix, 0, name), db=ar.db("columns")))
    return None if data is None else zones.decode(bytes(data), name.decode(), 0)


# ----------------------------------------------------------------------------------- the entries

rows_strategy = st.dictionaries(
    st.integers(0, 255), st.one_of(
        st.builds(lambda c, a, b: zones.Zone("s", c, min(a, b), max(a, b)), st.integers(1, CHUNK), st.text(), st.text()),
        st.builds(lambda c, a, b: zones.Zone("i", c, min(a, b), max(a, b)), st.integers(1, CHUNK),
                  st.integers(-2**63, 2**63 - 1), st.integers(-2**63, 2**63 - 1)),
        st.builds(lambda c, a, b: zones.Zone("f", c, min(a, b), max(a, b)), st.integers(1, CHUNK),
                  st.floats(allow_nan=False), st.floats(allow_nan=False)),
        st.builds(lambda c, k: zones.Zone(k, c, None, None), st.integers(1, CHUNK), st.sampled_from("sop"))),
    max_size=20)


@given(rows_strategy)
def test_a_zone_map_reads_back_as_written(rows: dict[int, zones.Zone]) -> None:
    table = zones.decode(zones.Table.of(rows).encode(), "meta.f", 0)
    assert dict(zip(table.numbers.tolist(), zip(table.kinds.tolist(), table.counts.tolist(), table.low, table.high))) \
        == {n: (z.kind.encode(), z.count, z.low, z.high) for n, z in rows.items()}


@given(rows_strategy.filter(bool), st.data())
def test_any_changed_byte_or_cut_is_a_damaged_zone_map(rows: dict[int, zones.Zone], data: st.DataObject) -> None:
    encoded = zones.Table.of(rows).encode()
    at = data.draw(st.integers(0, len(encoded) - 1))
    changed = encoded[:at] + bytes([encoded[at] ^ data.draw(st.integers(1, 255))]) + encoded[at + 1:]
    for damaged in (changed, encoded[:at]):
        with pytest.raises(ArchiveError, match="zone map of meta.f is damaged"):
            zones.decode(damaged, "meta.f", 0)


def test_rows_follow_the_columns_kinds_and_bounds(zoned: Path) -> None:
    with Archive(zoned, readonly=True) as ar:
        city, n, x, ts = (stored_map(ar, name) for name in (b"m:city", b"m:n", b"m:x", b"ts"))
        assert stored_map(ar, b"m:nowhere") is None
    assert city is not None and n is not None and x is not None and ts is not None
    assert city.kinds.tolist() == [b"s"] * 5 and city.low.tolist() == ["aachen", "bochum", "koln", "koln", None]
    assert city.counts.tolist() == [CHUNK, CHUNK, CHUNK, CHUNK // 2, CHUNK]  # chunk 3: every other frame
    assert n.kinds.tolist() == [b"i", b"i", b"i", b"o", b"i"] and n.low[3] is None
    assert x.numbers.tolist() == [0, 1, 2, 3] and x.high[1] == 1e300 and x.high[2] == math.inf
    assert ts.low.tolist() == [c * 1_000_000 for c in range(5)]


# ----------------------------------------------------------------------------------- the answers

def literal(field: str) -> st.SearchStrategy[Any]:
    near = {"timestamp": st.sampled_from([c * 1_000_000 + d for c in range(6) for d in (-10, -1, 0, 1, 40950, 40960)]),
            "meta.city": st.sampled_from(["", "a", "aachen", "bochum", "bochumm", "koln", "ulm", "zurich", "zz", LONG]),
            "meta.n": st.sampled_from([-1, 0, 50, 100, 150, 151, 300, 350, 400, 450, BIG, 2**53 + 1, 0.5, 100.0]),
            "meta.x": st.sampled_from([-0.0, 0.0, 0.25, 2047.5, 4096.0, 1.5, math.inf, -math.inf, 16385, 16384.25, 1e300]),
            "meta.flag": st.booleans()}[field]
    other = st.one_of(st.integers(-2, 10**6), st.text("abkuz", max_size=3))
    return st.one_of(near, other) if field != "meta.flag" else near


def render(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and math.isinf(value):
        return "1e999" if value > 0 else "-1e999"
    return f'"{value}"' if isinstance(value, str) else repr(value)


@st.composite
def comparisons(draw: st.DrawFn) -> str:
    field = draw(st.sampled_from(["timestamp", "meta.city", "meta.n", "meta.x", "meta.flag"]))
    if draw(st.booleans()):
        values = draw(st.lists(literal(field), min_size=1, max_size=3))
        return f"{field} in [{', '.join(map(render, values))}]"
    return f"{field} {draw(st.sampled_from(['==', '!=', '<', '<=', '>', '>=']))} {render(draw(literal(field)))}"


@st.composite
def zone_queries(draw: st.DrawFn) -> str:
    has = st.sampled_from(["has(meta.city)", "has(meta.x)", "has(meta.flag)", "has(meta.nowhere)"])
    parts = draw(st.lists(st.one_of(comparisons(), comparisons(), has), min_size=1, max_size=2))
    text = f" {draw(st.sampled_from(['and', 'or']))} ".join(parts)
    return f"not ({text})" if draw(st.integers(0, 4)) == 0 else text


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(zone_queries())
def test_scans_with_zone_maps_answer_as_the_reference(zoned: Path, text: str) -> None:
    """Each query in a fresh read-only open (the stored zone maps) and on chunks built in memory from
    their columns (the same rows computed), against the records evaluated one by one."""
    with Archive(zoned, readonly=True) as ar:
        assert_same_answer(ar.get_version("test", "v"), text, FRAMES)
    with Archive(zoned, readonly=True) as ar:
        v = ar.get_version("test", "v")
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(columns.Cached, "stored_zones", lambda self, name, blocks: None)
            assert_same_answer(v, text, FRAMES)


def test_a_scan_reads_only_the_chunks_its_bounds_do_not_decide(zoned: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fetched: list[tuple[int, bytes]] = []
    fetch = columns.FieldReader.fetch

    def counted(self: columns.FieldReader, key: bytes) -> bytes | None:
        fetched.append((int.from_bytes(key[8:16], "big"), key[16:]))
        return fetch(self, key)
    monkeypatch.setattr(columns.FieldReader, "fetch", counted)
    with Archive(zoned, readonly=True) as ar:
        v = ar.get_version("test", "v")
        assert v.count('meta.city == "zurich"') == CHUNK // 2
        # chunk 2 holds koln and zurich; chunk 4's long text leaves it without bounds; 0, 1, 3 cannot hold it
        assert {number for number, name in fetched if name == b"m:city" and number < 2**52} == {2, 4}
        fetched.clear()
        assert v.count('meta.city == "bochum"') == CHUNK + CHUNK // 2  # chunk 1 is all bochum: counted, not read
        assert {number for number, name in fetched if name == b"m:city"} == {0}  # chunk 4's was read above
        fetched.clear()
        assert v.count("timestamp >= 2000000 and timestamp < 4000000") == 2 * CHUNK
        assert fetched == [(2**64 - 1, bytes(8) + b"ts")]  # its zone map (block 0) decides every chunk
        fetched.clear()
        assert v.count("has(meta.x) and not has(meta.flag)") == CHUNK  # chunk 3: every frame has x, none flag
        assert fetched == [(2**64 - 1, bytes(8) + b"m:x"), (2**64 - 1, bytes(8) + b"m:flag")]


# ----------------------------------------------------------------------------------- writes

WRITE_QUERIES = ['meta.city == "aaa"', 'meta.city < "b"', "meta.n >= 150", "meta.n < 0", "timestamp > 5000000",
                 'meta.new == "here"', "not meta.x > 1"]


def write_and_check(path: Path, write: Any, frames: dict[str, dict[str, Any]]) -> None:
    """``write`` the version; the writer's answers (its chunks in memory), check (which compares every
    zone map with the chunks' columns) and then a fresh reader's answers agree with ``frames``."""
    expected = list(frames.values())
    with Archive(path, jobs=1) as ar:
        v = ar.get_version("test", "v")
        v.count()  # the writer's columns cached before the write, carried across it
        write(v)
        for text in WRITE_QUERIES:
            assert_same_answer(v, text, expected)
        assert check_archive(ar) == []
    with Archive(path, readonly=True) as fresh:
        for text in WRITE_QUERIES:
            assert_same_answer(fresh.get_version("test", "v"), text, expected)


def test_writes_keep_every_zone_map(tmp_path: Path) -> None:
    """Replaces that widen and narrow bounds, a field that appears and leaves, a chunk emptied."""
    path, start = tmp_path / "w.maskstore", FRAMES[:3 * CHUNK]
    frames = {f["id"]: f for f in start}
    with Archive(path, jobs=1) as ar:
        make_version(ar, [], start, "v")
    widened = [dict(f, meta=dict(f["meta"], city="aaa", n=-5), timestamp=9_000_000) for f in start[CHUNK:CHUNK + 3]]
    frames.update((f["id"], f) for f in widened)
    write_and_check(path, lambda v: v.add_frames(widened), frames)
    moved = [dict(f, meta={"new": "here"}) for f in start[:2]]  # city, n, x, flag leave two frames
    frames.update((f["id"], f) for f in moved)
    write_and_check(path, lambda v: v.add_frames(moved), frames)
    gone = [f["id"] for f in start[CHUNK:2 * CHUNK] + start[:2]]  # chunk 1 empties, and "new" leaves
    for fid in gone:
        del frames[fid]
    write_and_check(path, lambda v: v.delete_frames(gone), frames)
    with Archive(path, readonly=True) as ar:
        assert stored_map(ar, b"m:new") is None
        assert stored_map(ar, b"m:city").numbers.tolist() == [0, 2]


def drop_zone_maps(ar: Archive) -> None:
    v = ar.get_version("test", "v")
    keys = ar.read(lambda t: [bytes(k) for k, _ in t.cursor(db=ar.db("columns")) if k[8:16] == zones.MARK])
    ar.write(lambda t: [t.delete(k, db=ar.db("columns")) for k in keys])
    assert keys[0] == v.prefix + zones.MARK


def test_a_version_stored_before_zone_maps_is_read_from_its_columns_and_gets_them_at_the_next_write(tmp_path: Path) -> None:
    frames = FRAMES[:2 * CHUNK + 10]
    with Archive(tmp_path / "old.maskstore", jobs=1) as ar:
        make_version(ar, [], frames, "v")
        drop_zone_maps(ar)
    with Archive(tmp_path / "old.maskstore", readonly=True) as ar:
        v = ar.get_version("test", "v")
        for text in ('meta.city == "bochum"', "timestamp < 1000000", "meta.n in [0, 101]"):
            assert_same_answer(v, text, frames)
        assert stored_map(ar, b"m:city") is None
    with Archive(tmp_path / "old.maskstore", jobs=1) as ar:
        ar.get_version("test", "v").delete_frames([frames[-1]["id"]])  # touches chunk 2 only
        assert stored_map(ar, b"m:city").numbers.tolist() == [0, 1, 2]  # every chunk's rows, from its columns
        assert check_archive(ar) == []
        fmt = records.decode_format(ar.read(lambda t: bytes(t.get(b"format", db=ar.db("meta")))))
        assert records.COLUMN_ZONES in fmt["required_features"]


# ----------------------------------------------------------------------------------- damage

def copy_zoned(zoned: Path, tmp_path: Path) -> Path:
    path = tmp_path / "copy.maskstore"
    path.write_bytes(zoned.read_bytes())
    return path


def put_map(path: Path, name: bytes, value: bytes) -> None:
    with Archive(path) as ar:
        v = ar.get_version("test", "v")
        ar.write(lambda t: t.put(zones.key(v.prefix, 0, name), value, db=ar.db("columns")))


def cli(*args: str) -> tuple[int, str]:
    from click.testing import CliRunner
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def test_a_damaged_zone_map_is_an_archive_error_a_check_finding_and_repaired(zoned: Path, tmp_path: Path) -> None:
    path = copy_zoned(zoned, tmp_path)
    with Archive(path, readonly=True) as ar:
        good = ar.read(lambda t: bytes(t.get(zones.key(ar.get_version("test", "v").prefix, 0, b"m:city"),
                                             db=ar.db("columns"))))
    put_map(path, b"m:city", good[:20] + bytes([good[20] ^ 1]) + good[21:])
    with Archive(path, readonly=True) as ar:
        v = ar.get_version("test", "v")
        assert v.count("meta.n == 3") == sum(f["meta"]["n"] == 3 for f in FRAMES)  # other fields still answer
        with pytest.raises(ArchiveError, match="zone map of meta.city is damaged: its checksum does not match"):
            v.ids('meta.city == "ulm"')
    code, out = cli("check", str(path))
    assert code == 1 and "zone map of meta.city is damaged" in out
    assert cli("check", "--repair", str(path))[0] == 0  # marks every chunk for rebuild, deletes the zone maps
    with Archive(path) as ar:  # a writable query stores the rebuilt chunks, and their zone maps
        assert_same_answer(ar.get_version("test", "v"), 'meta.city == "ulm"', FRAMES)
    with Archive(path, readonly=True) as ar:
        assert stored_map(ar, b"m:city") is not None
    assert cli("check", str(path))[0] == 0


def test_a_zone_map_that_lies_is_a_check_finding(zoned: Path, tmp_path: Path) -> None:
    """What a query cannot see without reading the columns it skips, check compares with them."""
    path = copy_zoned(zoned, tmp_path)
    with Archive(path, readonly=True) as ar:
        table = stored_map(ar, b"m:city")
    assert table is not None
    high = table.high.copy()
    high[2] = "l"  # chunk 2 claims koln..l: zurich would be missed
    put_map(path, b"m:city", zones.Table(table.numbers, table.kinds, table.counts, table.low, high).encode())
    code, out = cli("check", str(path))
    assert code == 1 and "the scan column zone map of meta.city does not match the chunks' columns" in out
    assert cli("check", "--repair", str(path))[0] == 0
    with Archive(path, readonly=True) as ar:
        assert_same_answer(ar.get_version("test", "v"), 'meta.city == "zurich"', FRAMES)


def test_a_dirty_chunk_s_zone_rows_are_not_trusted(zoned: Path, tmp_path: Path) -> None:
    """An older writer's dirty mark: the chunk is rebuilt from its records, and so is its zone row."""
    path = copy_zoned(zoned, tmp_path)
    frames = list(FRAMES)
    with Archive(path, jobs=1) as ar:
        v = ar.get_version("test", "v")
        stale = ar.read(lambda t: columns.chunk_fields(t, v, 2))
        table = stored_map(ar, b"m:city")
        frames[2 * CHUNK] = dict(frames[2 * CHUNK], meta={"city": "aaa"})
        v.add_frames([frames[2 * CHUNK]])

        def as_an_older_writer(txn: Any) -> None:  # stale columns and zone rows, and a dirty mark
            key = v.prefix + u64(2)
            for name, value in stale.items():
                txn.put(key + name, value, db=ar.db("columns"))
            txn.put(zones.key(v.prefix, 0, b"m:city"), table.encode(), db=ar.db("columns"))
            txn.put(key, b"", db=ar.db("dirty"))
        ar.write(as_an_older_writer)
    with Archive(path, readonly=True) as ar:
        assert_same_answer(ar.get_version("test", "v"), 'meta.city == "aaa"', frames)
    assert np.array_equal(table.numbers, np.arange(5, dtype=np.uint64))


def test_a_dirty_mark_beyond_any_chunk_is_an_archive_error(zoned: Path, tmp_path: Path) -> None:
    """Marking every ``columns`` key dirty also marks the zone maps' marker (chunk 2**64 - 1): the
    compiled chunk builder failed with an OverflowError on it; it is damage, said as such."""
    path = copy_zoned(zoned, tmp_path)
    with Archive(path) as ar:
        v = ar.get_version("test", "v")
        ar.write(lambda t: t.put(v.prefix + zones.MARK, b"", db=ar.db("dirty")))
    with Archive(path, readonly=True) as ar:
        with pytest.raises(ArchiveError, match="dirty entry .* is damaged: its key is not a version id and a chunk number"):
            ar.get_version("test", "v").count('meta.city == "ulm"')
