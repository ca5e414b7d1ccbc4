"""The compiled query parser kept in the user's cache directory: fresh processes load it instead of
compiling the grammar, and a damaged, stale or unwritable cache never changes an answer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from lark import Lark

QUERIES = ['label == "car" and not meta.city == "bonn" order by timestamp desc limit 3',
           'coverage("person") > 0.1 or context_id in ["a", "b"]', 'meta.x.y != 2.5']
ERRONEOUS = 'label == "car" and or'


def _parse_in_fresh_process(cache: Path) -> dict:
    """Parse results (reprs) and error messages from a new process using ``cache`` as XDG_CACHE_HOME."""
    code = f"""
import json
from maskstore.errors import QueryError
from maskstore.query.parse import parse_query
out = {{"parsed": [repr(parse_query(q)) for q in {QUERIES!r}]}}
try:
    parse_query({ERRONEOUS!r})
except QueryError as e:
    out["error"] = str(e)
print(json.dumps(out))
"""
    env = {**os.environ, "XDG_CACHE_HOME": str(cache)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def _cache_files(cache: Path) -> list[Path]:
    return sorted((cache / "maskstore").glob("query-parser-*.pickle"))


def test_second_process_loads_the_cached_parser_and_parses_the_same(tmp_path: Path) -> None:
    first = _parse_in_fresh_process(tmp_path)
    [cached] = _cache_files(tmp_path)
    written = cached.stat().st_mtime_ns
    assert _parse_in_fresh_process(tmp_path) == first
    assert cached.stat().st_mtime_ns == written  # loaded, not rebuilt
    assert "error" in first and "expected" in first["error"]
    assert not list((tmp_path / "maskstore").glob(".query-parser-*"))  # no temporary file left behind


@pytest.mark.parametrize("damage", [b"", b"garbage", None])
def test_damaged_cache_is_rebuilt(tmp_path: Path, damage: bytes | None) -> None:
    clean = _parse_in_fresh_process(tmp_path)
    [cached] = _cache_files(tmp_path)
    whole = cached.read_bytes()
    damaged = whole[: len(whole) // 2] if damage is None else damage
    cached.write_bytes(damaged)
    assert _parse_in_fresh_process(tmp_path) == clean
    with cached.open("rb") as fh:  # replaced by a whole compiled parser again
        assert isinstance(Lark.load(fh), Lark)


def test_unwritable_cache_directory_still_parses(tmp_path: Path) -> None:
    clean = _parse_in_fresh_process(tmp_path / "writable")
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the cache directory would be")
    assert _parse_in_fresh_process(blocked) == clean
