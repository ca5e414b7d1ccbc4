"""Mask statistics: which masks of a batch get decoded, and what a decoded mask's dict gets."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from maskstore.stats import MaskDecoder, _jobs


def test_jobs_are_the_masks_without_values_after_their_sources_missing_size():
    frames = [
        {"id": "a", "sources": [
            {"uri": "s.png", "masks": [{"uri": "m0.png", "values": [[0, 0, 0, 1]]}, {"uri": "m1.png"},
                                       {"uri": "m2.png", "values": None}]},
            {"uri": "t.png", "width": 4, "height": 4, "masks": [{"uri": "m3.png"}]},
            {"uri": "u.png", "masks": [{"uri": "m4.png", "values": []}]}]},
        {"id": "b", "sources": [{"uri": "v.png", "masks": []}, {"uri": "w.png", "masks": [{"uri": "m5.png"}]}]},
    ]
    assert [(j.frame, j.source, j.mask, j.uri, j.frame_id) for j in _jobs(frames, str)] == [
        (0, 0, -1, "s.png", "a"), (0, 0, 1, "m1.png", "a"), (0, 0, 2, "m2.png", "a"), (0, 1, 0, "m3.png", "a"),
        (1, 1, -1, "w.png", "b"), (1, 1, 0, "m5.png", "b")]


def test_alpha_masks_with_coverage_are_not_decoded_again_and_declared_ones_are():
    """A stored alpha mask (copied, merged, re-ingested) has its statistics; one declared alpha by its
    owner still needs its coverage, and must not be judged categorical."""
    frames = [{"id": "a", "sources": [{"uri": "s.png", "width": 2, "height": 2, "masks": [
        {"uri": "stored.png", "kind": "alpha", "coverage": 3},
        {"uri": "declared.png", "kind": "alpha"}]}]}]
    assert [(j.uri, j.kind) for j in _jobs(frames, str)] == [("declared.png", "alpha")]


def mattes(folder: Path, n: int) -> list[dict]:
    """``n`` frames, each with a categorical mask, an RGBA cut-out and an RGB mask of more than 1024 colours."""
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (40, 40, 4), dtype=np.uint8)
    rgba[:20, :, 3] = 0
    Image.fromarray(rgba).save(folder / "cut.png")
    Image.fromarray(rgba[..., :3]).save(folder / "noisy.png")
    Image.fromarray(np.arange(1600, dtype=np.uint8).reshape(40, 40) % 3).save(folder / "labels.png")
    Image.new("RGB", (40, 40)).save(folder / "src.png")
    return [{"id": str(i), "sources": [{"uri": str(folder / "src.png"), "masks": [
        {"uri": str(folder / name)} for name in ("labels.png", "cut.png", "noisy.png")]}]} for i in range(n)]


@pytest.mark.slow
@pytest.mark.parametrize("jobs", [1, 2], ids=["in-process", "pool"])
def test_fill_writes_values_or_alpha_fields(tmp_path, jobs):
    frames = mattes(tmp_path, 10)  # 30 masks: with 2 jobs they go to worker processes
    decoder = MaskDecoder(jobs)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            decoder.fill(frames)
    finally:
        decoder.close()
    assert decoder.decoded == 30
    assert [str(w.message) for w in caught] == [  # the cut-out's alpha varies: a matte, said nothing of
        f"10 of 30 decoded masks have more than 1024 distinct values and no alpha band that varies, so they are "
        f"stored as alpha masks, without label statistics (FORMAT.md, \"Mask statistics\"); the first: frame '0' "
        f"mask {tmp_path / 'noisy.png'}"]
    for f in frames:
        source = f["sources"][0]
        labels, cut, noisy = source["masks"]
        assert (source["width"], source["height"]) == (40, 40)
        levels, counts = np.unique(np.asarray(Image.open(labels["uri"])), return_counts=True)
        assert labels == {"uri": labels["uri"], "values": [[int(v)] * 3 + [int(c)] for v, c in zip(levels, counts)],
                          "width": 40, "height": 40}
        assert cut == {"uri": cut["uri"], "kind": "alpha", "coverage": int(np.count_nonzero(
            np.asarray(Image.open(cut["uri"]).getchannel("A")))), "width": 40, "height": 40}
        assert noisy == {"uri": noisy["uri"], "kind": "alpha", "coverage": int(np.count_nonzero(
            np.asarray(Image.open(noisy["uri"]).convert("L")))), "width": 40, "height": 40}
