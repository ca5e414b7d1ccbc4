"""Importers turn a dataset layout into frame dicts; ``ingest`` writes them in atomic batches.

Each importer (``folders.pair_folders``, ``jsonl.read_frames_jsonl``, ``cityscapes.frames_from_cityscapes``,
``voc.frames_from_voc``) yields frame dicts with absolute URIs and ids derived from file names, so
running it again updates the same frames. ``dry_run`` summarises such a stream without writing.
"""

from __future__ import annotations

import difflib
import json
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import FrameError, MaskstoreError, MediaError
from ..labels import label_table_change, normalize_mask_labels, split_label_table
from ..media import local_path
from ..model import normalize_frame_dict

if TYPE_CHECKING:
    from ..archive import DatasetVersion


@dataclass
class IngestReport:
    """What an ingest did; ``skipped`` holds (path, reason) of files that were not used.

    ``frames`` = ``added`` (new ids) + ``updated`` (ids the version had, replaced). The split comes
    from the version's frame count around each batch, so another process adding to the same version
    at the same moment can shift it; ``frames`` is exact.
    """

    frames: int = 0
    added: int = 0
    updated: int = 0
    batches: int = 0
    masks_decoded: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)


class IngestInterrupted(MaskstoreError):
    """A batch failed; the batches before it are committed (``report`` says how many)."""

    def __init__(self, cause: MaskstoreError, report: IngestReport) -> None:
        self.cause = cause
        self.report = report
        super().__init__(f"{cause} -- {report.frames} frames in {report.batches} batches were committed before "
                         "this error; the failing batch left nothing behind. Fix the cause and run again: "
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
    decoder = version.archive._preparer
    try:
        for batch in batched(frames, batch_size):
            before, count = decoder.decoded, len(version)
            version.add_frames(batch, embed=embed)
            added = max(0, min(len(version) - count, len(batch)))
            report.frames += len(batch)
            report.added += added
            report.updated += len(batch) - added
            report.batches += 1
            report.masks_decoded += decoder.decoded - before
            if progress is not None:
                progress(len(batch))
    except MaskstoreError as exc:
        raise IngestInterrupted(exc, report) from None
    return report


# ---------------------------------------------------------------------------------------- label tables

def with_colors(mask_labels: list[dict[str, Any]], colors: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The label-table file form ``[{"value", "labels", "color"}]``: each entry takes the colour of
    its first label, so ``apply_label_table`` (CLI ``--labels``) restores both tables."""
    return [{**e, "color": list(colors[e["labels"][0]])} if e["labels"] and e["labels"][0] in colors else dict(e)
            for e in mask_labels]


BUILTIN_TABLES = ("cityscapes", "cityscapes-labelIds", "cityscapes-labelTrainIds", "voc")


def builtin_label_table(name: str) -> list[dict[str, Any]]:
    """A bundled label table in the ``--labels`` file form, by name: ``voc`` (palette colours, for VOC
    palette masks and RGB colour-coded VOC targets alike), ``cityscapes`` / ``cityscapes-labelIds``,
    ``cityscapes-labelTrainIds``.

    >>> builtin_label_table("voc")[15]
    {'value': [192, 128, 128], 'labels': ['person'], 'color': [192, 128, 128]}
    """
    from . import cityscapes, voc  # the importers sit beside this module; import on use
    if name == "voc":
        return with_colors(*voc.voc_labels())
    if name in ("cityscapes", "cityscapes-labelIds"):
        return with_colors(*cityscapes.cityscapes_labels("labelIds"))
    if name == "cityscapes-labelTrainIds":
        return with_colors(*cityscapes.cityscapes_labels("labelTrainIds"))
    raise FrameError(f"no bundled label table {name!r}; bundled: {', '.join(BUILTIN_TABLES)}")


def read_json(path: str | Path) -> Any:
    """A JSON file's value; an unreadable or malformed file is a FrameError naming it."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FrameError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None


def load_label_table(name_or_path: str) -> list[dict[str, Any]]:
    """A bundled table by name, else a table file; a name that is neither is refused with the
    nearest bundled name (``citiscapes`` -> did you mean ``cityscapes``)."""
    if name_or_path in BUILTIN_TABLES:
        return builtin_label_table(name_or_path)
    if not Path(name_or_path).is_file():
        close = difflib.get_close_matches(name_or_path, BUILTIN_TABLES, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise FrameError(f"no label table {name_or_path!r}: no such file and no bundled table of that name; "
                         f"{hint}bundled tables: {', '.join(BUILTIN_TABLES)}")
    return read_json(name_or_path)


def apply_label_table(version: DatasetVersion, table: Any, *, replace: bool = True) -> None:
    """A table file ``[{"value", "labels", "color"}]`` sets mask_labels and, where given, colours
    (``labels --set`` and ``ingest --labels`` alike); ``replace`` as for ``set_labels``."""
    set_labels(version, *split_label_table(table), replace=replace)


def set_labels(version: DatasetVersion, mask_labels: list[dict[str, Any]], colors: Mapping[str, Any], *,
               replace: bool = True) -> None:
    """Give a version an importer's labels: ``set_labels(v, *voc_labels())``.

    ``replace=False`` (``ingest`` without ``--replace-labels``) refuses mask_labels that differ from the
    version's, rather than silently remapping its frames, and keeps the colours the version has."""
    mask_labels = normalize_mask_labels(mask_labels)
    if not replace:
        change = label_table_change(version.mask_labels, mask_labels)
        if change:
            raise FrameError(f"{version.dataset_name}/{version.version_name} already has other mask labels: "
                             f"{change}; to replace them, pass --replace-labels (replace=True)")
        colors = {label: c for label, c in colors.items() if label not in version.get_label_colors()}
    version.set_masks_labels(mask_labels)
    version.set_label_colors(colors)


# ---------------------------------------------------------------------------------------- dry run

@dataclass
class DryRunSummary:
    """What ``ingest`` would add, found without writing or decoding anything.

    ``problems`` holds (frame id or ``#n``, message) for frames that would fail ingest: malformed
    frames, ids given twice, local files that do not exist.
    """

    frames: int = 0
    sources: int = 0
    masks: int = 0
    contexts: int = 0
    sample_ids: list[str] = field(default_factory=list)
    mask_ids: dict[str, int] = field(default_factory=dict)
    problems: list[tuple[str, str]] = field(default_factory=list)

    def lines(self) -> list[str]:
        """A short human summary (the CLI prints it)."""
        ids = ", ".join(self.sample_ids) + (", ..." if self.frames > len(self.sample_ids) else "")
        per_id = ", ".join(f'"{k}" x{n}' for k, n in self.mask_ids.items())
        out = [f"would add {self.frames} frames ({self.contexts} contexts), {self.sources} sources, "
               f"{self.masks} masks" + (f" ({per_id})" if per_id else ""),
               f"first ids: {ids or '-'}"]
        out += [f"problem in {where}: {message}" for where, message in self.problems]
        return out


def dry_run(frames: Iterable[Mapping[str, Any]], *, sample: int = 5, check_files: bool = True,
            max_problems: int = 100) -> DryRunSummary:
    """Validate and count frames the way ``ingest`` would take them, writing nothing.

    Frames are normalized (the checks ``add_frames`` makes before writing) and, with ``check_files``,
    every local source and mask path is checked to exist; masks are not decoded.
    """
    summary = DryRunSummary()
    seen: set[str] = set()
    contexts: set[str] = set()
    mask_ids: Counter[str] = Counter()

    def problem(where: str, message: str) -> None:
        if len(summary.problems) < max_problems:
            summary.problems.append((where, message))

    for number, given in enumerate(frames, start=1):
        summary.frames += 1
        try:
            frame = normalize_frame_dict(given)
        except FrameError as exc:
            problem(f"#{number}", str(exc))
            continue
        fid = frame["id"]
        if fid in seen:
            problem(fid, "this id is given twice: ingest refuses it within one batch, across batches the later "
                          "frame replaces the earlier")
        seen.add(fid)
        contexts.add(frame["context_id"])
        if len(summary.sample_ids) < sample:
            summary.sample_ids.append(fid)
        for source in frame["sources"]:
            summary.sources += 1
            items = [source] + source["masks"]
            summary.masks += len(source["masks"])
            mask_ids.update(m["id"] for m in source["masks"])
            if check_files:
                for item in items:
                    try:
                        path = local_path(item["uri"])
                    except MediaError as exc:
                        problem(fid, str(exc))
                        continue
                    if path is not None and not path.is_file():
                        problem(fid, f"file not found: {path}")
    summary.contexts = len(contexts)
    summary.mask_ids = dict(mask_ids)
    return summary
