"""CI runs the core tests both ways: the default run uses the compiled ``_speedups``, and this test
runs the core modules again in a child pytest with ``MASKSTORE_PUREPYTHON=1``, failing when any of
them fails there, skips for another reason than absent real-image fixtures, or ``_speedups`` got
imported after all (then some import site bypasses ``maskstore._accel``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
CORE = ["test_archive.py", "test_model.py", "test_records.py", "test_query.py", "test_render.py", "test_stats.py",
        "test_export.py", "test_format.py", "test_check.py"]

# The child: pytest in-process, so its sys.modules can be read once the tests are done.
CHILD = r"""
import json, sys
import pytest

class Outcomes:
    def __init__(self):
        self.passed, self.failed, self.skipped = 0, [], []

    def pytest_runtest_logreport(self, report):
        if report.failed:
            self.failed.append(report.nodeid)
        elif report.skipped:
            reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else str(report.longrepr)
            self.skipped.append([report.nodeid, reason])
        elif report.when == "call":
            self.passed += 1

outcomes = Outcomes()
code = pytest.main(sys.argv[2:], plugins=[outcomes])
import maskstore._accel
with open(sys.argv[1], "w") as out:
    json.dump({"exit": int(code), "passed": outcomes.passed, "failed": outcomes.failed, "skipped": outcomes.skipped,
               "implementation": maskstore._accel.IMPLEMENTATION,
               "speedups_imported": "maskstore._speedups" in sys.modules}, out)
"""


@pytest.mark.slow
def test_core_tests_pass_on_the_pure_python_path(tmp_path: Path) -> None:
    report_path = tmp_path / "report.json"
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(report_path), *(str(TESTS / name) for name in CORE), "-m", "not slow",
         "-p", "no:cacheprovider", "-W", "ignore::DeprecationWarning"],
        cwd=TESTS.parent, env={**os.environ, "MASKSTORE_PUREPYTHON": "1"}, capture_output=True, text=True,
        timeout=900)
    assert report_path.is_file(), f"the child pytest did not finish:\n{result.stdout[-5000:]}\n{result.stderr[-3000:]}"
    report = json.loads(report_path.read_text())
    assert report["exit"] == 0 and not report["failed"], \
        f"failed with MASKSTORE_PUREPYTHON=1: {report['failed']}\n{result.stdout[-8000:]}"
    assert report["implementation"] == "python" and not report["speedups_imported"], report
    assert report["passed"] > 300, report["passed"]  # the modules' tests ran, not an empty selection
    assert all("real-image fixtures not found" in reason for _, reason in report["skipped"]), report["skipped"]
