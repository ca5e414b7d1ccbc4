"""Every docstring example in the package runs, and every one counts: a module whose examples the
finder does not see (an example in a comment, a module that no longer imports) fails here instead of
passing with nothing run. ``# doctest: +SKIP`` marks examples that need files (an archive path)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil
import re

import pytest

import maskstore

OPTIONAL = {"maskstore.torch": "torch", "maskstore.dask": "dask"}  # modules of optional extras
EXAMPLE = re.compile(r"^\s*>>> (?!.*doctest: \+SKIP)", re.MULTILINE)


def _modules() -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages(maskstore.__path__, "maskstore.")
                  if not m.name.startswith("maskstore._"))


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples_run_and_count(name: str) -> None:
    if name in OPTIONAL:
        pytest.importorskip(OPTIONAL[name], reason=f"{name} needs the optional package {OPTIONAL[name]}")
    module = importlib.import_module(name)
    source = importlib.util.find_spec(name).loader.get_source(name) or ""  # type: ignore[union-attr]
    written = len(EXAMPLE.findall(source))
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in doctest.DocTestFinder(exclude_empty=True).find(module, name):
        runner.run(test)
    results = runner.summarize(verbose=False)
    assert results.failed == 0
    assert results.attempted == written, f"{name}: {written} examples written, {results.attempted} ran"
