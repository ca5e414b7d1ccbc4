"""The README's promises point at tests that exist: every ``file.py::test_name`` it cites (and the
``::name`` shorthands that follow a file on the same line) names a test function in that file."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CITATION = re.compile(r"`(?:(test_\w+\.py))?::(test_\w+)")


def cited_tests() -> list[tuple[str, str]]:
    cited = []
    for line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines():
        current = None
        for match in CITATION.finditer(line):
            current = match.group(1) or current
            if current is not None:
                cited.append((current, match.group(2)))
    return cited


def test_every_test_the_readme_cites_exists() -> None:
    files = {path.name: path.read_text(encoding="utf-8") for path in (ROOT / "tests").rglob("test_*.py")}
    cited = cited_tests()
    assert len(cited) > 100, "the README's Guarantees cite their tests"
    missing = [f"{name}::{test}" for name, test in cited
               if name not in files or not re.search(rf"^\s*(async )?def {test}\(", files[name], re.M)]
    assert not missing, f"the README cites tests that do not exist: {missing}"
