"""Importers turn a dataset layout into frame dicts; ``ingest`` writes them in atomic batches."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from ..archive import DatasetVersion
from ..errors import MaskstoreError


@dataclass
class IngestReport:
    """What an ingest did; ``skipped`` holds (path, reason) of files that were not used."""

    frames: int = 0
    batches: int = 0
    masks_decoded: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)


class IngestInterrupted(MaskstoreError):
    """A batch failed; the batches before it are committed (``report`` says how many)."""

    def __init__(self, cause: MaskstoreError, report: IngestReport) -> None:
        self.cause = cause
        self.report = report
        super().__init__(f"{cause}\n{report.frames} frames in {report.batches} batches were committed before "
                         "this error; the failing batch left nothing behind. Fix the input and run again: "
                         "frames already added are updated, not duplicated.")


def batched(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    it = iter(items)
    while batch := list(islice(it, size)):
        yield batch


def ingest(version: DatasetVersion, frames: Iterable[Mapping[str, Any]], *, batch_size: int = 1000,
           embed: bool = False, report: IngestReport | None = None,
           progress: Callable[[int], None] | None = None) -> IngestReport:
    """Add frames in batches of ``batch_size``, each batch one all-or-nothing transaction."""
    report = report or IngestReport()
    decoder = version.archive._decoder
    try:
        for batch in batched(frames, batch_size):
            before = decoder.decoded
            version.add_frames(batch, embed=embed)
            report.frames += len(batch)
            report.batches += 1
            report.masks_decoded += decoder.decoded - before
            if progress is not None:
                progress(len(batch))
    except MaskstoreError as exc:
        raise IngestInterrupted(exc, report) from None
    return report
