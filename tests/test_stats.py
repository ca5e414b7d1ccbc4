"""Mask statistics: which masks of a batch get decoded."""

from __future__ import annotations

from maskstore.stats import _jobs


def test_jobs_are_the_masks_without_values_after_their_sources_missing_size():
    frames = [
        {"id": "a", "sources": [
            {"uri": "s.png", "masks": [{"uri": "m0.png", "values": [[0, 0, 0, 1]]}, {"uri": "m1.png"},
                                       {"uri": "m2.png", "values": None}]},
            {"uri": "t.png", "width": 4, "height": 4, "masks": [{"uri": "m3.png"}]},
            {"uri": "u.png", "masks": [{"uri": "m4.png", "values": []}]}]},
        {"id": "b", "sources": [{"uri": "v.png", "masks": []}, {"uri": "w.png", "masks": [{"uri": "m5.png"}]}]},
    ]
    assert [(j.frame, j.source, j.mask, j.uri, j.frame_id) for j in _jobs(frames)] == [
        (0, 0, -1, "s.png", "a"), (0, 0, 1, "m1.png", "a"), (0, 0, 2, "m2.png", "a"), (0, 1, 0, "m3.png", "a"),
        (1, 1, -1, "w.png", "b"), (1, 1, 0, "m5.png", "b")]
