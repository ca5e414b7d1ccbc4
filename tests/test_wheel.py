"""The built wheel works on its own: the grammar ships inside it (STYLE.md 3), the console script runs.

Builds the wheel from a copy of the source tree (so the checkout gets no build/ or egg-info
changes), installs it with its dependencies into a fresh virtual environment, and runs a query there
from a folder outside the checkout, with no PYTHONPATH: only the installed files can answer.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = textwrap.dedent("""
    import importlib.resources, sys
    from pathlib import Path
    import maskstore
    from maskstore import Archive

    installed = Path(maskstore.__file__).resolve()
    assert Path(sys.prefix).resolve() in installed.parents, installed
    grammar = importlib.resources.files("maskstore.grammar") / "query.lark"
    assert Path(str(grammar)).resolve().is_relative_to(Path(sys.prefix).resolve()), grammar

    with Archive("w.maskstore") as ar:
        v = ar.create_version(dataset_name="D", version_name="v1")
        v.set_masks_labels({(1, 1, 1): ["x"]})
        v.add_frames([
            {"id": "hit", "sources": [{"uri": "/a.png", "masks": [{"uri": "/am.png", "values": [[1, 1, 1, 4]]}]}]},
            {"id": "miss", "sources": [{"uri": "/b.png", "masks": [{"uri": "/bm.png", "values": [[2, 2, 2, 4]]}]}]},
        ])
        print(v.ids('label == "x"'))
""")


def _run(args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(args)}\n{result.stdout}\n{result.stderr}"
    return result


def _skip_unless_index_reachable(tmp_path: Path) -> None:
    """The fresh venv installs the wheel's dependencies: without a package index that cannot work, and
    the failure would say nothing about the wheel."""
    probe = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--disable-pip-version-check",
                            "--dest", str(tmp_path / "probe"), "msgpack"], capture_output=True, text=True, timeout=300)
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["pip download failed"])[-1]
        pytest.skip(f"no package index reachable to install the wheel's dependencies: {last}")


@pytest.mark.slow
def test_wheel_ships_the_grammar_and_answers_queries(tmp_path: Path) -> None:
    pytest.importorskip("build", reason="the wheel test needs the 'build' package (pip install -e '.[test]')")
    _skip_unless_index_reachable(tmp_path)
    src = tmp_path / "src"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".hypothesis", ".pytest_cache", "tests",
        "benchmarks", "*.maskstore*"))
    _run([sys.executable, "-m", "build", "--wheel", "--outdir", str(tmp_path / "dist"), str(src)], cwd=tmp_path)
    (wheel,) = (tmp_path / "dist").glob("maskstore-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "maskstore/grammar/query.lark" in names
    assert "maskstore/query/parse.py" in names and not any(n.startswith("tests/") for n in names)
    for compiled in ("maskstore/_speedups", "maskstore/_blend"):  # built, not left to the numpy fallback
        assert any(n.startswith(compiled) and n.endswith((".so", ".pyd")) for n in names), compiled

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], cwd=tmp_path)
    bindir = venv / ("Scripts" if os.name == "nt" else "bin")
    python = bindir / ("python.exe" if os.name == "nt" else "python")
    _run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(wheel)], cwd=tmp_path)

    work = tmp_path / "elsewhere"
    work.mkdir()
    assert _run([str(python), "-c", SCRIPT], cwd=work).stdout.strip() == "['hit']"
    cli = _run([str(bindir / "maskstore"), "query", "w.maskstore", 'label == "x" or mask.value == 2', "--count"], cwd=work)
    assert cli.stdout == "2\n"
