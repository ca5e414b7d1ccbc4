"""PyTorch adapter: the frames of a query as a ``torch.utils.data.Dataset`` (``pip install "maskstore[torch]"``).

>>> from maskstore.torch import MaskDataset                                       # doctest: +SKIP
>>> ds = MaskDataset(v, 'label == "car"', enumeration={"road": 0, "car": 1})       # doctest: +SKIP
>>> image, classes = ds[0]   # uint8 (3, H, W), int64 (H, W)                      # doctest: +SKIP
>>> loader = torch.utils.data.DataLoader(ds, batch_size=8, shuffle=True, num_workers=2)  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

try:
    import torch
    from torch.utils.data import Dataset
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError('maskstore.torch needs PyTorch: pip install "maskstore[torch]"') from exc

import numpy as np

from .archive import Archive, DatasetVersion
from .loaders import default_enumeration, frame_arrays


class MaskDataset(Dataset):
    """Item ``i`` is ``(image, mask)`` of the i-th frame of the query (its result order).

    ``image`` is a uint8 tensor (3, H, W); ``mask`` an int64 tensor (H, W) of class ids under
    ``enumeration`` (default: every label of the version in table order, see
    ``maskstore.loaders.default_enumeration``), ``ignore`` where a value has no enumerated label.
    ``transform(image, mask)`` may return new tensors (augmentation). The ids are fixed when the
    dataset is made; shuffling is the DataLoader's job.

    DataLoader worker processes reopen the archive read-only on first use: an LMDB environment must
    not be used across ``fork``.
    """

    def __init__(self, version: DatasetVersion, query: str = "", enumeration: Mapping[str, int] | None = None,
                 transform: Callable[[Any, Any], tuple[Any, Any]] | None = None, *, ignore: int = 255,
                 source_id: str | None = None, mask_id: str | None = None, resize: str | None = None) -> None:
        self.ids = version.ids(query)
        self.enumeration = dict(enumeration) if enumeration is not None else default_enumeration(version)
        self.transform = transform
        self.ignore = ignore
        self.source_id, self.mask_id, self.resize = source_id, mask_id, resize
        self._path, self._version_id = version.archive.path, version.id
        self._version: DatasetVersion | None = version
        self._pid = os.getpid()

    def __len__(self) -> int:
        return len(self.ids)

    def version(self) -> DatasetVersion:
        """The version, reopened read-only in a process other than the one that made the dataset."""
        if self._version is None or self._pid != os.getpid():
            self._version = DatasetVersion(Archive(self._path, readonly=True), self._version_id)
            self._pid = os.getpid()
        return self._version

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_version"] = None  # spawned workers open their own
        return state

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        version = self.version()
        frame = version.get_frame(self.ids[index])
        image, mask = frame_arrays(frame, version, "index", self.enumeration, self.ignore, self.source_id,
                                   self.mask_id, self.resize)
        image_t = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        mask_t = torch.from_numpy(mask.astype(np.int64))
        if self.transform is not None:
            return self.transform(image_t, mask_t)
        return image_t, mask_t
