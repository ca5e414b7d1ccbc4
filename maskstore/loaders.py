"""Training loaders: the frames of a query as numpy arrays, in storage or seeded random order.

``iter_arrays`` is the framework-free core; ``maskstore.torch.MaskDataset`` wraps the same steps as a
PyTorch dataset. Masks go through ``maskstore.render.render`` so a class map here is exactly what
``render(mode="index")`` and ``export`` give.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import FrameError
from . import labels
from .model import Frame
from .render import pick_mask, render, source_rgb

if TYPE_CHECKING:
    from .archive import DatasetVersion

ORDERS = ("storage", "random")


def default_enumeration(version: DatasetVersion) -> dict[str, int]:
    """Every label of the version's ``mask_labels`` numbered by its table position, except the labels
    that mean "ignore" (``void``, ``ignore``, ``unlabeled``: ``labels.IGNORE_LABELS``), which are left
    out so their pixels get the ``ignore`` id (255 by default) as the usual training setups expect.

    For a Cityscapes labelIds version that is the label id itself (ego vehicle 1 ... bicycle 33;
    unlabeled ignored); for a labelTrainIds version the train id (road 0 ... bicycle 18; ignore
    ignored); for VOC the class index (background 0 ... tvmonitor 20; void ignored).
    """
    return labels.default_enumeration(version.mask_labels)


def ordered_ids(version: DatasetVersion, query: str = "", order: str = "storage", seed: int = 0) -> list[str]:
    """The ids a loader visits: the query's result order, or that list shuffled by ``random.Random(seed)``
    (the same seed gives the same order on every machine and run)."""
    if order not in ORDERS:
        raise FrameError(f"order must be one of {', '.join(ORDERS)}, got {order!r}")
    ids = version.ids(query)
    if order == "random":
        random.Random(seed).shuffle(ids)
    return ids


def frame_arrays(frame: Frame, version: DatasetVersion, mode: str = "index",
                 enumeration: Mapping[str, int] | None = None, ignore: int = 255, source_id: str | None = None,
                 mask_id: str | None = None, resize: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(image uint8 H x W x 3, mask array) of one frame; the mask as ``render`` gives it for ``mode``."""
    options: dict[str, Any] = {"mode": mode, "source_id": source_id, "mask_id": mask_id, "resize": resize}
    if mode == "index":
        options.update(enumeration=enumeration if enumeration is not None else default_enumeration(version),
                       ignore=ignore)
    elif enumeration is not None:
        raise FrameError('an enumeration applies to mode="index" only')
    source, _ = pick_mask(frame, source_id, mask_id)
    image = source_rgb(version.open_image(source.uri, "image", source.timestamp or 0, source.content_type))
    return image, render(frame, version, **options)


def iter_arrays(version: DatasetVersion, query: str = "", mode: str = "index",
                enumeration: Mapping[str, int] | None = None, ignore: int = 255, order: str = "storage",
                seed: int = 0, source_id: str | None = None, mask_id: str | None = None,
                resize: str | None = None) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """Yield ``(frame_id, image, mask)`` for the frames of a query.

    ``image`` is the source as uint8 (H, W, 3); ``mask`` is ``render(frame, version, mode=...)``: with
    ``mode="index"`` an (H, W) map of class ids under ``enumeration`` (default: every label of the
    version numbered in table order, see ``default_enumeration``) with ``ignore`` for unlabelled
    values. ``order="random"`` visits the ids shuffled with ``random.Random(seed)``. The ids are
    taken when iteration starts; frames are read and decoded one at a time.

    >>> for fid, image, classes in iter_arrays(v, 'label == "car"', enumeration={"road": 0, "car": 1}):  # doctest: +SKIP
    ...     ...
    """
    if mode == "index" and enumeration is None:
        enumeration = default_enumeration(version)
    for fid in ordered_ids(version, query, order, seed):
        frame = version.get_frame(fid)
        image, mask = frame_arrays(frame, version, mode, enumeration, ignore, source_id, mask_id, resize)
        yield fid, image, mask
