"""Shared fixtures: temp archives and the real images under ../shared/data."""

from __future__ import annotations

from pathlib import Path

import pytest

from maskstore import Archive

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real-image fixtures not found at {SHARED_DATA} (the shared/ folder beside the repo)")
    return SHARED_DATA


@pytest.fixture
def archive(tmp_path: Path):
    with Archive(tmp_path / "test.maskstore", jobs=1) as ar:
        yield ar


@pytest.fixture
def version(archive: Archive):
    return archive.create_version(dataset_name="Example", version_name="v1")
