"""The ``maskstore`` command: argument parsing and output formatting over the public API only.

This is the one module that prints. Library errors become a one-line message on stderr and exit
status 1 here, in ``MaskstoreGroup.invoke``; click's own usage errors exit with status 2.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
import warnings
from itertools import islice
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource
from tqdm import tqdm

from .archive import Archive, DatasetVersion
from .check import check_archive, repair_archive
from .errors import MaskstoreError
from .ingest import (BUILTIN_TABLES, IngestReport, apply_label_table, dry_run, ingest, load_label_table,
                     read_json as load_json, set_labels)
from .ingest.cityscapes import KINDS, cityscapes_labels, frames_from_cityscapes
from .ingest.folders import pair_folders
from .ingest.jsonl import read_frames_jsonl
from .ingest.video import frames_from_video, mask_video_ids
from .ingest.voc import frames_from_voc, voc_labels
from .labels import pack_rgb, packed_key
from .labels import parse_color as parse_label_color
from . import summary
from .demo import run_demo
from .export import check_format, image_format, write_image
from .layouts import LABEL_TABLE, LAYOUTS
from .render import render as maskstore_render
from .records import FORMAT_VERSION
from .store import NO_LOCK_ENV
from .upgrade import upgrade as upgrade_archive
from .query import columns
from .query.engine import snapshot


_UNPRINTABLE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: object) -> str:
    """``text`` with control characters as ``\\u00XX``: names, ids and paths come from archives and
    files, and raw escapes in them would drive the terminal. Tabs and newlines stay; JSON stays valid
    JSON (it escapes the other C0 characters itself, and these escapes are JSON's own)."""
    return _UNPRINTABLE.sub(lambda m: f"\\u{ord(m.group()):04x}", str(text))


def echo(text: object = "", err: bool = False) -> None:
    """Every line the command prints goes through here."""
    click.echo(printable(text), err=err)


class MaskstoreGroup(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MaskstoreError as exc:
            fail(self, ctx, str(exc))
        except BrokenPipeError:  # `maskstore query ... | head`
            sys.stderr.close()
            sys.exit(0)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:  # a bug, or a failure the library did not name: still one line
            if os.environ.get("MASKSTORE_TRACEBACK"):
                raise
            fail(self, ctx, f"{type(exc).__name__}: {exc} (unexpected; please report it, with the traceback "
                            "that MASKSTORE_TRACEBACK=1 shows)")


def fail(group: click.Group, ctx: click.Context, message: str) -> None:
    """Print a library error as the command line's one line, then exit 1."""
    command = group.get_command(ctx, ctx.invoked_subcommand) if ctx.invoked_subcommand else None
    echo(f"Error: {cli_words(command, message)}", err=True)
    sys.exit(1)


def cli_words(command: click.Command | None, message: str) -> str:
    """Library messages advise in Python (``pass resize="nearest"``, ``layer_only``); at the command
    line the same advice names the option (``--resize nearest``, ``--layer-only``). Only the running
    command's own options are rewritten: as ``name="value"``, as ``name=True`` (a flag: ``force=True`` is
    ``--force``), or bare when the name has an underscore (plain words such as "mode" stay prose), never
    inside a path or a quoted name."""
    options = {p.name: max(p.opts, key=len) for p in command.params if isinstance(p, click.Option)} if command else {}

    def option(match: re.Match[str]) -> str:
        name, value, flag = match.group(1), match.group(2), match.group(3)
        if name not in options or (value is None and not flag and "_" not in name):
            return match.group(0)
        return options[name] if value is None else f"{options[name]} {shlex.quote(value)}"
    return re.sub(r'(?<![\w/.\'"-])([a-z][a-z0-9_]*)(?:="([^"]*)"|(=True))?(?![\w/.\'"-])', option, message)


@click.group(cls=MaskstoreGroup)
@click.version_option(package_name="maskstore")
@click.option("--no-lock", is_flag=True, help="Read without LMDB's lock: only for archives no process writes "
              "(read-only media, published snapshots); same as MASKSTORE_NO_LOCK=1.")
def main(no_lock: bool) -> None:
    """Keep frames and segmentation masks in one archive file, query them, export masked images."""
    if no_lock:
        os.environ[NO_LOCK_ENV] = "1"  # read by every Archive this command (and its workers) opens
    warnings.formatwarning = lambda message, *_args, **_kwargs: f"Warning: {printable(message)}\n"


def version_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option("-V", "--version", "version_name", help="Version name (optional when the archive has one).")(fn)
    return click.option("-d", "--dataset", help="Dataset name (optional when the archive has one version).")(fn)


def open_version(archive: Archive, dataset: str | None, version: str | None) -> DatasetVersion:
    return archive.pick_version(dataset, version, how="-d DATASET -V VERSION")


def scheduler_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--scheduler", metavar="ADDRESS",
                        help="Run on this Dask scheduler's workers (needs maskstore[dask]; the workers must "
                             "reach the archive and OUTDIR at the same paths).")(fn)


def on_scheduler(address: str, name: str, *args: Any, **kwargs: Any) -> Any:
    """``maskstore.dask.<name>(*args, **kwargs)`` on the Dask scheduler at ``address``."""
    try:
        from . import dask as on_dask
    except ImportError as exc:
        raise MaskstoreError(f"--scheduler needs Dask ({exc}): pip install 'maskstore[dask]'") from None
    with on_dask.connect(address):
        return getattr(on_dask, name)(*args, **kwargs)


def progress_bar(total: int | None, unit: str) -> tqdm:
    return tqdm(total=total, unit=unit, file=sys.stderr, disable=None, dynamic_ncols=True)


# ---------------------------------------------------------------------------------------- archive

@main.command()
@click.argument("archive", type=click.Path(dir_okay=False))
def init(archive: str) -> None:
    """Create an empty archive file."""
    with Archive(archive):
        pass
    echo(f"created {archive}", err=True)


@main.command()
@click.argument("archive", type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print it as one JSON object.")
def info(archive: str, as_json: bool) -> None:
    """Show the archive's format, size and versions."""
    with Archive(archive, readonly=True) as ar:
        about = ar.info()
    if as_json:
        echo(json.dumps(about, ensure_ascii=False))
        return
    echo(f"archive: {archive}\nformat:  maskstore {about['format']}\nsize:    {about['size'] / 1e6:.1f} MB")
    for row in about["versions"]:
        parent = row["parent"]
        if parent is not None:  # a parent of the same dataset is named by its version alone
            same = parent.startswith(row["dataset"] + "/")
            parent = f", parent {parent[len(row['dataset']) + 1:] if same else parent}"
        echo(f"- {row['dataset']}/{row['version']}: {row['frames']} frames, {row['labelled_values']} mask values "
             f"labelled, {row['state']}{parent or ''}")


@main.command()
@click.argument("archive", type=click.Path(exists=True, dir_okay=False))
@click.option("--repair", is_flag=True, help="Rebuild the secondary indexes from the frame records first.")
@click.option("--media", is_flag=True, help="Also open and decode every external image and mask the frames name.")
def check(archive: str, repair: bool, media: bool) -> None:
    """Verify records, indexes, embedded files (all there, all used) and, with --media, external files.
    Exit 1 when anything is inconsistent; warnings alone exit 0."""
    with Archive(archive, readonly=not repair) as ar:
        if repair:
            for rebuilt in repair_archive(ar):
                echo(rebuilt, err=True)
        problems = check_archive(ar, media=media)
    for problem in problems:
        echo(str(problem))
    errors = sum(p.severity == "error" for p in problems)
    echo(f"{errors} errors, {len(problems) - errors} warnings", err=True)
    if errors:
        sys.exit(1)


@main.command()
@click.argument("archive", type=click.Path(exists=True, dir_okay=False))
def upgrade(archive: str) -> None:
    """Rewrite an archive of an earlier format in this release's format (atomically; see FORMAT.md)."""
    echo(upgrade_archive(archive))


# ---------------------------------------------------------------------------------------- versions

@main.command()
@click.argument("archive", type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True,
              help="One JSON array of {dataset, version, frames, state, parent, created, description}.")
def versions(archive: str, as_json: bool) -> None:
    """List every version: frames, state (draft or published), parent, when created, description."""
    with Archive(archive, readonly=True) as ar:
        rows = ar.versions_info()
    if as_json:
        echo(json.dumps(rows, ensure_ascii=False))
        return
    if not rows:
        echo(f"no versions in {archive}; make one with: maskstore create-version {archive} -d DATASET -V VERSION",
             err=True)
        return
    table = [["version", "frames", "state", "parent", "created", "description"]] + \
        [[f"{r['dataset']}/{r['version']}", str(r["frames"]), r["state"], r["parent"] or "-", r["created"] or "-",
          r["description"]] for r in rows]
    widths = [max(len(printable(line[i])) for line in table) for i in range(len(table[0]) - 1)]
    for line in table:
        echo("  ".join([cell.rjust(w) if i == 1 else cell.ljust(w) for i, (cell, w) in enumerate(zip(line, widths))]
                       + [line[-1]]).rstrip())


@main.command(name="create-version")
@click.argument("archive", type=click.Path(exists=True, dir_okay=False))
@click.option("-d", "--dataset", help="Dataset name (optional when the archive has one dataset).")
@click.option("-V", "--version", "version_name", required=True, help="Name of the new version.")
@click.option("--parent", metavar="P", help="Start from this version's frames and labels: a version of the same "
                                            "dataset (V) or any version (D/V).")
@click.option("--description", default="", help="What the version is.")
def create_version(archive: str, dataset: str | None, version_name: str, parent: str | None,
                   description: str) -> None:
    """Make a new draft version, empty or as a child of another."""
    with Archive(archive) as ar:
        if dataset is None:
            datasets = ar.datasets()
            if len(datasets) != 1:
                held = f"several datasets ({', '.join(datasets)})" if datasets else "no datasets yet"
                raise MaskstoreError(f"{archive} holds {held}; name one with -d DATASET")
            dataset = datasets[0]
        version = ar.create_version(dataset, version_name, parent=parent, description=description)
        made_from = f" from {version.parent.label}" if parent is not None else ""
        echo(f"created {version.label}{made_from}: draft, {len(version)} frames", err=True)


@main.command()
@click.argument("archive", type=click.Path(exists=True, dir_okay=False))
@version_options
def publish(archive: str, dataset: str | None, version_name: str | None) -> None:
    """Make a version read-only for ever (change it through a child: create-version --parent)."""
    with Archive(archive) as ar:
        version = open_version(ar, dataset, version_name)
        version.publish()
        echo(f"published {version.label}", err=True)


@main.command(name="delete-version")
@click.argument("archive", type=click.Path(exists=True, dir_okay=False))
@version_options
@click.option("--force", is_flag=True, help="Also delete a published version or one with children (they keep "
                                            "their frames and take its parent).")
def delete_version(archive: str, dataset: str | None, version_name: str | None, force: bool) -> None:
    """Delete a version and its frames; its embedded files stay until maskstore compact."""
    with Archive(archive) as ar:
        version = open_version(ar, dataset, version_name)
        label, parent = version.label, version.parent
        children = ar.delete_version(version.dataset_name, version.version_name, force=force)
        echo(f"deleted {label}", err=True)
        for child in children:
            echo(f"{child.label} now has {'parent ' + parent.label if parent else 'no parent'}", err=True)


@main.command(name="rename-version")
@click.argument("archive", type=click.Path(exists=True, dir_okay=False))
@version_options
@click.option("--to", "new_name", required=True, help="The new version name (within the same dataset).")
def rename_version(archive: str, dataset: str | None, version_name: str | None, new_name: str) -> None:
    """Rename a version; its children keep pointing at it."""
    with Archive(archive) as ar:
        version = open_version(ar, dataset, version_name)
        old = version.label
        version.rename(new_name)
        echo(f"renamed {old} to {version.label}", err=True)


# ---------------------------------------------------------------------------------------- ingest

INGEST_EPILOG = """\b
Examples, one per layout:
  maskstore ingest city.maskstore -d city -V v1 --frames frames.jsonl --embed
      (a line: {"id": "a", "sources": [{"uri": "img.png", "masks": [{"uri": "mask.png"}]}]}
       or {"source": "img.png", "mask_source": "mask.png"}; --frames - reads stdin)
  maskstore ingest city.maskstore -V v2 --frames more.jsonl      (a new version of the only dataset)
  maskstore ingest city.maskstore -d city -V v1 --cityscapes ~/cityscapes --split val
  maskstore ingest voc.maskstore -d voc -V v1 --voc ~/VOCdevkit/VOC2012 --split train
  maskstore ingest pets.maskstore -d pets -V v1 --images photos/ --masks masks/ --labels table.json
  maskstore ingest voc.maskstore --images samples/ --masks samples/ --image-suffix _image \\
      --mask-suffix _target --labels voc          (RGB colour-coded masks, built-in VOC table)
  maskstore ingest matte.maskstore --images photos/ --masks mattes/ --mask-suffix _alpha
      (alpha mattes need no labels)
"""


@main.command(epilog=INGEST_EPILOG)
@click.argument("archive", type=click.Path(dir_okay=False))
@version_options
@click.option("--frames", "frames_file", type=click.Path(exists=True, dir_okay=False, allow_dash=True),
              help="Frames as JSON lines in the frame-dict shape (ClearML's frames import as they are), "
                   "or with SingleFrame's keywords source/mask_source; - reads stdin.")
@click.option("--images", type=click.Path(exists=True, file_okay=False), help="Folder of images (with --masks).")
@click.option("--masks", type=click.Path(exists=True, file_okay=False),
              help="Folder of masks, paired with images by relative path without extension.")
@click.option("--cityscapes", "cityscapes_root", type=click.Path(exists=True, file_okay=False),
              help="Cityscapes root (leftImg8bit/, gtFine/); sets the official labels and colours.")
@click.option("--voc", "voc_root", type=click.Path(exists=True, file_okay=False),
              help="Pascal VOC root (JPEGImages/, SegmentationClass/); sets the VOC labels and colours.")
@click.option("--video", "video_file", type=click.Path(exists=True, dir_okay=False),
              help="A video: one frame per video frame (context_id = its file stem, timestamp = ms).")
@click.option("--mask-video", "mask_videos", multiple=True, metavar="[ID=]FILE",
              help='With --video: a mask video (repeatable); without ID= the ids are "00", "01", ...')
@click.option("--every", type=click.IntRange(1), default=1, show_default=True,
              help="With --video: take every Nth frame.")
@click.option("--split", help="Cityscapes split (default val); VOC: ImageSets/Segmentation/<split>.txt "
                              "(default: every mask).")
@click.option("--kind", type=click.Choice(KINDS), default="labelIds", show_default=True,
              help="Cityscapes mask kind (instanceIds keeps labelIds as the mask and records the instance file).")
@click.option("--voc-objects", is_flag=True,
              help='Attach SegmentationObject masks as mask "object" (their palette colours coincide with '
                   "class colours, so label queries would match them too).")
@click.option("--image-suffix", default="", help="With --images: strip this from image names before pairing.")
@click.option("--mask-suffix", default="", help="With --masks: strip this from mask names before pairing "
                                                "(e.g. _alpha, .out, _target).")
@click.option("--labels", "labels_table", metavar="FILE|NAME",
              help='Label table file [{"value": [r,g,b], "labels": [...], "color": [r,g,b]}] or a built-in '
                   f"table: {', '.join(BUILTIN_TABLES)}.")
@click.option("--replace-labels", is_flag=True,
              help="Replace the version's mask labels and colours when --labels (or the layout's table) differs "
                   "from them (default: refuse, and keep the version's colours).")
@click.option("--embed", is_flag=True, help="Copy every image and mask into the archive (self-contained).")
@click.option("--batch-size", default=1000, show_default=True, type=click.IntRange(1),
              help="Frames per transaction; each batch is all or nothing.")
@click.option("--jobs", type=click.IntRange(1), help="Processes for mask statistics (default: all cores).")
@click.option("--fast", is_flag=True,
              help="Skip the fsync after each batch and sync once at the end: faster, but a power loss or "
                   "OS crash mid-ingest may lose the batches since the last sync (a killed process loses "
                   "nothing committed). Default: every batch is durable on disk when it is reported.")
@click.option("--dry-run", "dry", is_flag=True, help="Show what would be added; write nothing.")
def ingest_cmd(archive: str, dataset: str | None, version_name: str | None, frames_file: str | None,
               images: str | None, masks: str | None, cityscapes_root: str | None, voc_root: str | None,
               video_file: str | None, mask_videos: tuple[str, ...], every: int, split: str | None, kind: str, voc_objects: bool, image_suffix: str, mask_suffix: str,
               labels_table: str | None, replace_labels: bool, embed: bool, batch_size: int, jobs: int | None,
               fast: bool, dry: bool) -> None:
    """Add frames to a version, creating the archive and the version when missing.

    Re-running the same ingest updates the same frames (ids are stable) instead of duplicating them.
    """
    if bool(images) != bool(masks):
        raise click.UsageError("--images and --masks go together")
    if sum(map(bool, (frames_file, images, cityscapes_root, voc_root, video_file))) != 1:
        raise click.UsageError("give one of --frames FILE, --images DIR --masks DIR, --cityscapes ROOT, --voc ROOT, "
                               "--video FILE")
    if (mask_videos or every != 1) and not video_file:
        raise click.UsageError("--mask-video and --every go with --video")
    report = IngestReport()
    layout_labels = None
    if cityscapes_root:
        frames = frames_from_cityscapes(cityscapes_root, split or "val", kind, report.skipped)
        layout_labels = cityscapes_labels(kind)
    elif voc_root:
        frames = frames_from_voc(voc_root, split, report.skipped, object_masks=voc_objects)
        layout_labels = voc_labels()
    elif video_file:
        frames = frames_from_video(video_file, mask_video_ids(mask_videos), every)
    elif images:
        frames = pair_folders(images, masks, report.skipped, image_suffix=image_suffix, mask_suffix=mask_suffix)
    else:
        frames = read_frames_jsonl(click.open_file("-", "rb") if frames_file == "-" else frames_file)
    table = load_label_table(labels_table) if labels_table else None
    if dry:  # before the archive is opened, so nothing is created
        for line in dry_run(frames).lines():
            echo(line)
        report_skipped(report)
        return
    with Archive(archive, jobs=jobs, sync=not fast) as ar, \
            version_for_ingest(ar, dataset, version_name, Path(archive).stem) as version:
        if table is not None:
            apply_label_table(version, table, replace=replace_labels)
        elif layout_labels:
            set_labels(version, *layout_labels, replace=replace_labels)
        try:
            with progress_bar(None, "frames") as bar:
                ingest(version, frames, batch_size=batch_size, embed=embed, report=report, progress=bar.update)
            columns.refresh(version)  # scan columns stored now, so no later query rebuilds them
        finally:
            if fast:
                ar.sync()
        updated = f" and updated {report.updated}" if report.updated else ""
        echo(f"added {report.added} frames{updated} in {report.batches} batches to "
             f"{version.label}; {report.masks_decoded} masks decoded", err=True)
    report_skipped(report)


ingest_cmd.name = "ingest"


def report_skipped(report: IngestReport) -> None:
    for path, reason in report.skipped:
        echo(f"skipped {path}: {reason}", err=True)


def ingest_names(ar: Archive, dataset: str | None, version: str | None, default_dataset: str) -> tuple[str, str]:
    """``-d``/``-V`` of ingest as given; a missing ``-d`` is the archive's only dataset (the one with
    that ``-V``, if one has it; the file's stem in a new archive), a missing ``-V`` that dataset's only
    version (``v1`` in a new dataset)."""
    have = [(v.dataset_name, v.version_name) for v in ar.versions()]
    if dataset is None:
        datasets = (list(dict.fromkeys(d for d, n in have if n == version)) or list(dict.fromkeys(d for d, _ in have))
                    or [default_dataset])
        if len(datasets) > 1:
            raise MaskstoreError(f"{ar.path} holds several datasets ({', '.join(datasets)}); choose one with -d DATASET")
        dataset = datasets[0]
    if version is None:
        versions = [n for d, n in have if d == dataset] or ["v1"]
        if len(versions) > 1:
            raise MaskstoreError(f"dataset {dataset} in {ar.path} has several versions ({', '.join(versions)}); "
                                 "choose one with -V VERSION")
        version = versions[0]
    return dataset, version


@contextmanager
def version_for_ingest(ar: Archive, dataset: str | None, version: str | None,
                       default_dataset: str) -> Iterator[DatasetVersion]:
    """The version to ingest into, created when missing. One created here is removed again when
    the ingest fails before any frame is committed, so a failed first run leaves no empty version."""
    dataset, version = ingest_names(ar, dataset, version, default_dataset)
    created = all((v.dataset_name, v.version_name) != (dataset, version) for v in ar.versions())
    target = ar.create_version(dataset_name=dataset, version_name=version, exist_ok=True)
    try:
        yield target
    except BaseException:
        if created and len(target) == 0:
            ar.delete_version(dataset, version)
        raise


# ---------------------------------------------------------------------------------------- labels

@main.command()
@click.argument("archive", type=click.Path(exists=True, dir_okay=False))
@version_options
@click.option("--set", "set_file", type=click.Path(exists=True, dir_okay=False),
              help='mask_labels.json: [{"value": [r, g, b], "labels": [...]}, ...], each entry with an optional '
                   '"color" for its first label (the --labels file of ingest)')
@click.option("--colors", "colors_file", type=click.Path(exists=True, dir_okay=False),
              help='colors.json: {"label": [r, g, b] or "#rrggbb"}')
@click.option("--tolerance", type=click.IntRange(0, 255),
              help="Mask tolerance: pixels within T (largest per-channel difference) of a labelled value carry "
                   "its labels, for lossy (video) masks; 0 is exact.")
def labels(archive: str, dataset: str | None, version_name: str | None, set_file: str | None,
           colors_file: str | None, tolerance: int | None) -> None:
    """Show or set the version's mask labels, label colours and mask tolerance."""
    with Archive(archive, readonly=not (set_file or colors_file or tolerance is not None)) as ar:
        version = open_version(ar, dataset, version_name)
        if set_file:
            apply_label_table(version, load_json(set_file))
        if colors_file:
            colors = load_json(colors_file)
            if not isinstance(colors, dict):
                raise MaskstoreError(f'{colors_file} must map a label to a colour: {{"car": [0, 0, 142]}}')
            version.set_label_colors(colors)
        if tolerance is not None:
            version.set_mask_tolerance(tolerance)
        if version.get_mask_tolerance():
            echo(f"mask tolerance {version.get_mask_tolerance()}", err=True)
        colors = version.get_label_colors()
        for value, names in version.get_masks_labels().items():
            swatch = ", ".join(f"{n} {'#%02x%02x%02x' % colors[n] if n in colors else ''}".strip() for n in names)
            echo(f"{list(value)}\t{swatch}")



# ---------------------------------------------------------------------------------------- query

def _table_row(frame: dict[str, Any], labels: dict[int, list[str]]) -> str:
    names = sorted({n for s in frame["sources"] for m in s["masks"] for v in m.get("values") or ()
                    for n in labels.get(packed_key(v), ())} | {n for r in frame["rois"] for n in r["label"]})
    sources = ",".join(s["id"] for s in frame["sources"])
    return f"{frame['id']}\t{frame['context_id']}\t{frame['timestamp']}\t{sources}\t{', '.join(names)}"


@main.command()
@click.argument("archive", type=click.Path(exists=True, dir_okay=False))
@click.argument("query_text", metavar="QUERY", default="")
@version_options
@click.option("--format", "fmt", type=click.Choice(["ids", "jsonl", "table"]), default="ids", show_default=True,
              help="ids: one frame id per line; jsonl: frame dicts (re-importable with ingest --frames).")
@click.option("--count", "count_only", is_flag=True, help="Print the number of frames selected, nothing else.")
@click.option("--explain", is_flag=True, help="Print the plan (index lookups, scans, filters) instead of running.")
@click.option("--limit", type=click.IntRange(0), help="At most this many frames (with 'limit N' in the query too, "
                                                     "the smaller one wins).")
def query(archive: str, query_text: str, dataset: str | None, version_name: str | None, fmt: str,
          count_only: bool, explain: bool, limit: int | None) -> None:
    """Select frames with a query, e.g. 'label == "person" and meta.city == "frankfurt"'."""
    format_given = click.get_current_context().get_parameter_source("fmt") != ParameterSource.DEFAULT
    if count_only + explain + format_given > 1:
        raise click.UsageError("--count, --explain and --format each choose what is printed; give one of them")
    with Archive(archive, readonly=True) as ar:
        version = open_version(ar, dataset, version_name)
        if explain:
            echo(version.explain(query_text))
        elif count_only:
            count = version.count(query_text)
            echo(count if limit is None else min(count, limit))
        elif fmt == "ids":
            for frame_id in islice(version.ids(query_text), limit):
                echo(frame_id)
        elif fmt == "jsonl":
            for frame in islice(version.query_dicts(query_text), limit):
                echo(json.dumps(frame, ensure_ascii=False))
        else:
            with snapshot(version, query_text) as (record, frames):  # labels of the same moment as the frames
                labels = {pack_rgb(e["value"]): e["labels"] for e in record["mask_labels"]}
                echo("id\tcontext_id\ttimestamp\tsources\tlabels")
                for frame in islice(frames, limit):
                    echo(_table_row(frame, labels))


# ---------------------------------------------------------------------------------------- stats

@main.command()
@click.argument("archive", type=click.Path(exists=True, dir_okay=False))
@version_options
@click.option("--chart", type=click.Path(dir_okay=False), help="Also draw a bar chart PNG here.")
@click.option("--all", "show_all", is_flag=True, help="Also show labels no frame holds.")
@scheduler_option
def stats(archive: str, dataset: str | None, version_name: str | None, chart: str | None, show_all: bool,
          scheduler: str | None) -> None:
    """Frames and share of mask pixels per label (mask and ROI labels), and the unlabelled pixels,
    from stored statistics (no image is decoded)."""
    with Archive(archive, readonly=True) as ar:
        version = open_version(ar, dataset, version_name)
        n_frames, label_stats = summary.label_stats(version) if scheduler is None else \
            on_scheduler(scheduler, "stats", ar, dataset=version.dataset_name, version=version.version_name)
        echo(f"{n_frames} frames in {version.label}")
        if len(label_stats) == 1:  # the unlabelled row alone
            echo(f"no labels: {version.label} has no mask_labels and no ROI labels, so every one of "
                 f"its {label_stats[0].pixels} mask pixels is unlabelled. Set labels with: maskstore labels "
                 f"{archive} --set mask_labels.json")
            return
        shown = [s for s in label_stats if show_all or s.frames]
        echo(f"{'label':<28}{'frames':>10}{'pixels':>16}{'share':>9}{'roi frames':>12}")
        for s in shown:
            echo(f"{s.label:<28}{s.frames:>10}{s.pixels:>16}{s.share:>9.2%}{s.roi_frames:>12}")
        hidden = sum(not (s.frames or s.unlabelled) for s in label_stats) if not show_all else 0
        if hidden:
            echo(f"{hidden} label{'s' * (hidden != 1)} without frames not shown (--all shows them)", err=True)
        if sum(s.share for s in label_stats) > 1 + 1e-9:
            echo("shares add up to more than 100%: some mask values carry several labels", err=True)
        if chart:
            summary.bar_chart(shown, chart, summary.stats_colors(version, label_stats),
                              title=f"{version.label}: share of mask pixels per label")
            echo(f"chart written to {chart}", err=True)


# ---------------------------------------------------------------------------------------- render, export

def render_options(opacity: float, background: str | None, layer_only: bool, resize: str | None,
                   enumeration: str | None = None, ignore: int = 255) -> dict[str, Any]:
    options: dict[str, Any] = {"opacity": opacity, "resize": resize}
    if background is not None:
        options["background"] = parse_color(background)
    if layer_only:
        options["layer_only"] = True
    if enumeration is not None:
        options["enumeration"] = load_json(enumeration)
    if ignore != 255:
        options["ignore"] = ignore
    return options


def render_flags(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option("--ignore", default=255, show_default=True, type=click.IntRange(0),
                      help="Index: the class id of pixels whose labels the enumeration does not name.")(fn)
    fn = click.option("--enumeration", type=click.Path(exists=True, dir_okay=False), metavar="ENUM.JSON",
                      help='Index: label -> class id, e.g. {"road": 0, "car": 1} (ids above 255 give '
                           "16-bit PNGs).")(fn)
    fn = click.option("--resize", type=click.Choice(["nearest"]),
                      help="Scale a mask whose size differs from its source (default: refuse).")(fn)
    fn = click.option("--layer-only", is_flag=True, help="Segmentation: the colour layer alone, as RGBA.")(fn)
    fn = click.option("--background", metavar="COLOR",
                      help='Alpha: composite over this colour ("#rrggbb" or r,g,b); segmentation: colour '
                           "for pixels without a label.")(fn)
    fn = click.option("--opacity", default=0.5, show_default=True, type=click.FloatRange(0, 1),
                      help="Segmentation overlay opacity.")(fn)
    return click.option("--mode", type=click.Choice(["segmentation", "alpha", "index"]), default="segmentation",
                        show_default=True, help="index: class-id PNGs for training (needs --enumeration).")(fn)


def parse_color(text: str) -> tuple[int, int, int]:
    """``#rrggbb`` or ``r,g,b`` from the command line."""
    return parse_label_color(text.split(",") if "," in text else text)


@main.command()
@click.argument("archive", type=click.Path(exists=True, dir_okay=False))
@click.argument("frame_id")
@version_options
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Image to write: PNG, or JPEG for .jpg/.jpeg (or as --format says).")
@click.option("--format", "fmt", type=click.Choice(["png", "jpeg"]), help="Image format (default: from -o).")
@click.option("--source", "source_id", help="Source id (default: the first source with a mask).")
@click.option("--mask", "mask_id", help="Mask id (default: the source's first mask).")
@render_flags
def render(archive: str, frame_id: str, dataset: str | None, version_name: str | None, output: str,
           fmt: str | None, source_id: str | None, mask_id: str | None, mode: str, opacity: float,
           background: str | None, layer_only: bool, resize: str | None, enumeration: str | None,
           ignore: int) -> None:
    """Render one frame's mask over its image into a PNG or JPEG."""
    ext = image_format(output, fmt)
    options = render_options(opacity, background, layer_only, resize, enumeration, ignore)
    check_format(ext, mode, options)
    with Archive(archive, readonly=True) as ar:
        version = open_version(ar, dataset, version_name)
        array = maskstore_render(version.get_frame(frame_id), version, mode=mode, source_id=source_id,
                                 mask_id=mask_id, **options)
    write_image(array, output, ext)
    echo(f"wrote {output} ({array.shape[1]}x{array.shape[0]})", err=True)


@main.command(name="export")
@click.argument("archive", type=click.Path(exists=True, dir_okay=False))
@click.argument("outdir", type=click.Path(file_okay=False))
@version_options
@click.option("--query", "-q", "query_text", default="", help="Which frames (default: all).")
@click.option("--jobs", type=click.IntRange(1), help="Processes (default: all cores).")
@click.option("--format", "fmt", type=click.Choice(["png", "jpeg"]), default="png", show_default=True)
@click.option("--mask", "mask_id", help="Mask id to render (default: each source's first mask).")
@click.option("--overwrite", is_flag=True,
              help="Replace an export made in OUTDIR with other settings (default: refuse).")
@click.option("--layout", type=click.Choice(LAYOUTS),
              help="Write the images and masks themselves in this dataset layout, with its labels.json, "
                   "for the matching ingest (--voc, --cityscapes, --images/--masks).")
@click.option("--split", help="With --layout: Cityscapes split folder (default val); VOC "
                              "ImageSets/Segmentation/<split>.txt (default: none).")
@click.option("--video", is_flag=True,
              help="One overlay video per context instead: OUTDIR/<context>.mp4, frames in timestamp order at "
                   "the source's frame rate (needs maskstore[video]).")
@render_flags
@scheduler_option
def export_cmd(archive: str, outdir: str, dataset: str | None, version_name: str | None, query_text: str,
               jobs: int | None, fmt: str, mask_id: str | None, overwrite: bool, layout: str | None,
               split: str | None, video: bool, mode: str, opacity: float, background: str | None, layer_only: bool,
               resize: str | None, enumeration: str | None, ignore: int, scheduler: str | None) -> None:
    """Export masked images of the selected frames to OUTDIR/<frame_id>/<source_id>.png, with a
    manifest.jsonl and a legend.png; or class-index PNGs (--mode index); or the images and masks in a
    dataset layout (--layout). A re-run with the same settings resumes (complete files are skipped);
    other settings need --overwrite."""
    ctx = click.get_current_context()
    if layout is not None:
        given = [f"--{n.replace('_', '-')}" for n in ("mode", "opacity", "background", "layer_only", "resize",
                                                      "enumeration", "ignore", "fmt")
                 if ctx.get_parameter_source(n) is ParameterSource.COMMANDLINE]
        if given:
            raise click.UsageError(f"--layout writes the images and masks themselves; "
                                   f"{', '.join(g.replace('--fmt', '--format') for g in given)} do not apply")
        if scheduler is not None:
            raise click.UsageError("--layout runs here, not on a --scheduler")
        options: dict[str, Any] = {"layout": layout, "split": split}
    else:
        if split is not None:
            raise click.UsageError("--split goes with --layout")
        options = render_options(opacity, background, layer_only, resize, enumeration, ignore)
    if video:
        if layout is not None or scheduler is not None:
            raise click.UsageError("--video runs here, and not with --layout or --scheduler")
        options["video"] = True
    with Archive(archive, readonly=True) as ar:
        version = open_version(ar, dataset, version_name)
        with progress_bar(version.count(query_text), "frames") as bar:
            report = version.export(outdir, query_text, mode=mode, jobs=jobs, format=fmt, mask_id=mask_id,
                                    progress=bar.update, overwrite=overwrite, **options) \
                if scheduler is None else \
                on_scheduler(scheduler, "export", ar, outdir, query_text, mode=mode, dataset=version.dataset_name,
                             version=version.version_name, format=fmt, mask_id=mask_id, progress=bar.update,
                             overwrite=overwrite, **options)
    if layout is not None:
        echo(f"wrote the {layout} layout with its label table {Path(outdir) / LABEL_TABLE}", err=True)
    echo(f"wrote {report.written} {'videos' if video else 'images'}, skipped {report.skipped} already there; manifest "
               f"{report.manifest}", err=True)
    for frame_id, message in report.errors:  # render's own messages mostly name the frame already
        text = message if message.startswith(f"frame {frame_id!r}") else f"frame {frame_id!r}: {message}"
        echo(f"Error: {cli_words(click.get_current_context().command, text)}", err=True)
    if report.errors:
        sys.exit(1)


@main.command()
@click.argument("outdir", default="maskstore-demo", type=click.Path(file_okay=False))
@click.option("--jobs", type=click.IntRange(1), help="Processes (default: all cores).")
def demo(outdir: str, jobs: int | None) -> None:
    """Build a sample archive from bundled real images, query it, export masked images."""
    result = run_demo(outdir, jobs=jobs)
    echo(f"archive:  {result.archive}  (self-contained: images embedded)")
    for dataset, query, ids in result.queries:
        echo(f"query:    {dataset}: {query}\n          -> {', '.join(ids)}")
    for mode, report in result.exports:
        echo(f"export:   {mode}: {report.written + report.skipped} images in {report.manifest.parent}/")
    echo(f"chart:    {result.chart}")
    echo(f"next:     maskstore query {result.archive} -d voc-samples 'coverage(\"background\") > 0.5' "
         "--format table")
    echo(f"view:     maskstore view {result.archive} -d voc-samples   (opens the frame viewer in a browser)")


@main.command()
@click.argument("archive", type=click.Path(exists=True, dir_okay=False))
@version_options
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; another than 127.0.0.1 lets other machines read the archive.")
@click.option("--port", default=8765, show_default=True, type=click.IntRange(0, 65535),
              help="Port to listen on (0: a free one).")
@click.option("--no-browser", is_flag=True, help="Do not open a browser; just print the URL.")
@click.option("--readonly", is_flag=True, help="Refuse every change (label colours stay in the page).")
def view(archive: str, dataset: str | None, version_name: str | None, host: str, port: int, no_browser: bool,
         readonly: bool) -> None:
    """Browse a version's frames and masks in a local web page. The first line printed is the URL to
    open, with this run's access token (changes need it); Ctrl-C stops the server."""
    from .viewer import serve  # web server dependencies load only for this command
    with Archive(archive, readonly=readonly) as ar:
        serve(open_version(ar, dataset, version_name), host, port, readonly=readonly,
              open_browser=not no_browser, announce=click.echo)
