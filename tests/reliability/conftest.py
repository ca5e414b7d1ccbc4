"""Fixtures of the reliability suite: template archives built once per session and copied per test."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from .helpers import TEMPLATE_BATCH_SIZE, TEMPLATE_BATCHES, build_archive


@pytest.fixture(scope="session")
def template_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """d/v1 with 20 whole batches of 50 frames and the label table L1..L4 (built once, never written)."""
    path = tmp_path_factory.mktemp("template") / "template.maskstore"
    build_archive(path, TEMPLATE_BATCHES, TEMPLATE_BATCH_SIZE)
    return path


@pytest.fixture
def fresh_copy(template_archive: Path, tmp_path: Path):
    """``fresh_copy(name)``: a private copy of the template archive (the file only, no lock file)."""
    def make(name: str = "copy.maskstore") -> Path:
        path = tmp_path / name
        shutil.copyfile(template_archive, path)
        return path
    return make
