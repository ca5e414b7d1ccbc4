"""The viewer's HTTP side: one static page and a small API over one dataset version.

What reaches the file system is decided by the archive, never by a URL: media are looked up as
(frame id, source id, mask id) in the version's own frame records and opened through
``version.open_image``; the page's own files are read from the package once, at start, into a
fixed table. Pixels go out uncompressed and lossless (RGB bytes, label indexes, alpha levels), so
the page can blend them with the renderer's integer arithmetic and nothing decodes them on the way.

Writes (label colours) need the run's token in ``X-Maskstore-Token`` *and* an ``Origin`` equal to
the address the page was loaded from; every request needs a ``Host`` the server answers to (a DNS
rebinding page names its own host). ``--readonly`` refuses every write; a published version refuses
them itself (``ReadOnlyError``).
"""

from __future__ import annotations

import hmac
import json
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from itertools import islice
from importlib import resources
from typing import Any

import numpy as np
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.routing import Route

from ..archive import DatasetVersion
from ..errors import FrameError, FrameNotFoundError, MaskError, MaskstoreError, QueryError, ReadOnlyError
from ..model import Frame, Mask, Source
from ..render import legend_entries, render, source_rgb

STATIC_FILES = {"/": "index.html", "/static/viewer.js": "viewer.js", "/static/viewer.css": "viewer.css"}
MEDIA_TYPES = {"html": "text/html; charset=utf-8", "js": "text/javascript; charset=utf-8",
               "css": "text/css; charset=utf-8"}
MAX_PAGE = 1000          # ids per list request: a version's ids never go out all at once
EARLY_PAGES = 2_000      # unfiltered pages before this are read from the first records, not from a query
MAX_BODY = 64 * 1024     # a colour change is a few bytes
CACHED_QUERIES = 8
TOKEN_HEADER = "x-maskstore-token"
NO_STORE = {"Cache-Control": "no-store"}


@dataclass(frozen=True)
class Settings:
    """How one run of the viewer guards itself."""

    token: str
    readonly: bool = False
    hosts: tuple[str, ...] = ("127.0.0.1", "localhost", "::1")  # ("*",) when bound to every interface


class Selection:
    """The ids a query selects, kept server-side so the page can ask for one page at a time."""

    def __init__(self, ids: list[str], warnings: list[str]) -> None:
        self.ids = ids
        self.warnings = warnings
        self._positions: dict[str, int] | None = None

    def position(self, frame_id: str) -> int:
        """Index of a frame in the selection, -1 when it is not selected (built once, on first use)."""
        if self._positions is None:
            self._positions = {fid: i for i, fid in enumerate(self.ids)}
        return self._positions.get(frame_id, -1)


class Viewer:
    """The API's state: one version, its recent query results, one lock around the query engine."""

    def __init__(self, version: DatasetVersion, settings: Settings) -> None:
        self.version = version
        self.settings = settings
        self.lock = threading.Lock()  # the query engine's column caches are per process, not per thread
        self._selections: OrderedDict[tuple[str, Any], Selection] = OrderedDict()

    def selection(self, query: str) -> Selection:
        """``version.ids(query)``, cached per query text and version generation (a write elsewhere
        gives new results)."""
        with self.lock:
            record = self.version.record()
            key = (query, record.get("generation"), record.get("count"))
            if key not in self._selections:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    ids = self.version.ids(query)
                self._selections[key] = Selection(ids, [str(w.message) for w in caught])
                while len(self._selections) > CACHED_QUERIES:
                    self._selections.popitem(last=False)
            self._selections.move_to_end(key)
            return self._selections[key]

    def early_page(self, offset: int, limit: int) -> tuple[int, list[str]]:
        """(count, ids) of an early page of every frame: the version's own count and its first records
        (insertion order, the order of ``ids("")``), so a million-frame version opens without the query
        engine loading its scan columns or listing all its ids."""
        records = islice(self.version.frame_dicts(), offset, offset + limit)
        return len(self.version), [record["id"] for record in records]

    def warm_up(self) -> None:
        """Select every frame once as the server starts (loads the scan columns, lists the ids), so the
        first query or far page finds them ready; an error shows on the request that needs them."""
        try:
            self.selection("")
        except MaskstoreError:
            pass

    def labels(self) -> list[tuple[str, tuple[int, int, int]]]:
        """(label, colour) of every label that colours pixels; label k is index k + 1 in label planes."""
        return [(name, tuple(rgb)) for name, rgb in legend_entries(self.version.mask_labels,
                                                                  self.version.get_label_colors())]

    def frame(self, frame_id: str) -> Frame:
        return self.version.get_frame(frame_id)


# ---------------------------------------------------------------------------------------- helpers

def _param(request: Request, name: str, default: str | None = None) -> str:
    value = request.query_params.get(name, default)
    if value is None:
        raise FrameError(f"the request needs the parameter {name!r}")
    return value


def _int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    text = request.query_params.get(name, str(default))
    try:
        value = int(text)
    except ValueError:
        raise FrameError(f"{name} must be an integer, got {text!r}") from None
    return min(max(value, low), high)


def _source(frame: Frame, source_id: str) -> Source:
    for source in frame.sources:
        if source.id == source_id:
            return source
    raise MaskError(f"frame {frame.id!r} has no source {source_id!r}; it has {[s.id for s in frame.sources]}")


def _mask(frame: Frame, source: Source, mask_id: str) -> Mask:
    for mask in source.masks:
        if mask.id == mask_id:
            return mask
    raise MaskError(f"source {source.id!r} of frame {frame.id!r} has no mask {mask_id!r}")


def _pixels(array: np.ndarray) -> Response:
    """Raw little-endian pixels; the shape and type travel in headers."""
    array = np.ascontiguousarray(array)
    channels = 1 if array.ndim == 2 else array.shape[2]
    return Response(array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes(),
                    media_type="application/octet-stream",
                    headers={**NO_STORE, "X-Width": str(array.shape[1]), "X-Height": str(array.shape[0]),
                             "X-Channels": str(channels), "X-Dtype": array.dtype.name})


def _error(message: str, status: int) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=NO_STORE)


ERROR_STATUS: tuple[tuple[type[MaskstoreError], int], ...] = (
    (FrameNotFoundError, 404), (QueryError, 400), (ReadOnlyError, 409), (FrameError, 400), (MaskError, 422))


def _maskstore_error(request: Request, exc: Exception) -> JSONResponse:
    status = next((code for kind, code in ERROR_STATUS if isinstance(exc, kind)), 500)
    message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
    return _error(str(message), status)


def write_refusal(request: Request, settings: Settings) -> str | None:
    """Why a write must be refused, or None: read-only run, wrong token, or not from the page's origin."""
    if settings.readonly:
        return "this viewer runs with --readonly: nothing is written"
    given = request.headers.get(TOKEN_HEADER, "")
    if not hmac.compare_digest(given.encode(), settings.token.encode()):
        return "a write needs the token of this run (the URL `maskstore view` printed)"
    origin = request.headers.get("origin")
    if origin != f"{request.url.scheme}://{request.headers.get('host', '')}":
        return f"cross-origin write refused (Origin {origin!r})"
    if request.headers.get("sec-fetch-site", "same-origin") != "same-origin":
        return "cross-site write refused"
    return None


# ---------------------------------------------------------------------------------------- endpoints

def _endpoints(viewer: Viewer) -> list[Route]:
    page = resources.files(__package__) / "static"
    static = {path: (page / name).read_bytes() for path, name in STATIC_FILES.items()}

    def static_file(request: Request) -> Response:
        name = STATIC_FILES[request.url.path]
        return Response(static[request.url.path], media_type=MEDIA_TYPES[name.rsplit(".", 1)[1]],
                        headers=NO_STORE)

    def version_info(request: Request) -> JSONResponse:
        record = viewer.version.record()
        published = record["state"] == "published"
        return JSONResponse({
            "dataset": record["dataset"], "version": record["name"], "state": record["state"],
            "readonly": viewer.settings.readonly, "writable": not (viewer.settings.readonly or published),
            "labels": [{"name": name, "color": list(rgb)} for name, rgb in viewer.labels()],
        }, headers=NO_STORE)

    def frames(request: Request) -> JSONResponse:
        query, frame_id = _param(request, "q", ""), request.query_params.get("frame")
        offset = _int_param(request, "offset", 0, 0, 2**62)
        limit = _int_param(request, "limit", 100, 1, MAX_PAGE)
        if not query.strip() and frame_id is None and offset + limit <= EARLY_PAGES:
            count, ids = viewer.early_page(offset, limit)
            return JSONResponse({"count": count, "offset": offset, "ids": ids, "warnings": []}, headers=NO_STORE)
        selection = viewer.selection(query)
        offset = min(offset, max(len(selection.ids) - 1, 0))
        body: dict[str, Any] = {"count": len(selection.ids), "offset": offset,
                                "ids": selection.ids[offset:offset + limit], "warnings": selection.warnings}
        if frame_id is not None:
            body["position"] = selection.position(frame_id)
        return JSONResponse(body, headers=NO_STORE)

    def frame(request: Request) -> JSONResponse:
        return JSONResponse(viewer.frame(_param(request, "id")).to_dict(), headers=NO_STORE)

    def pixels(request: Request) -> Response:
        kind = _param(request, "kind")
        frame_ = viewer.frame(_param(request, "frame"))
        source = _source(frame_, _param(request, "source"))
        if kind == "source":
            return _pixels(source_rgb(viewer.version.open_image(source.uri, "image", source.timestamp or 0,
                                                                source.content_type)))
        mask = _mask(frame_, source, _param(request, "mask"))
        if kind == "alpha":  # render's own alpha: the mask's channel, luma or value, size-checked
            return _pixels(render(frame_, viewer.version, mode="alpha", source_id=source.id,
                                  mask_id=mask.id)[..., 3])
        if kind == "labels":
            return _pixels(label_plane(viewer, frame_, source, mask))
        raise FrameError(f"kind must be source, labels or alpha, got {kind!r}")

    async def colors(request: Request) -> JSONResponse:
        refusal = write_refusal(request, viewer.settings)
        if refusal is not None:
            return _error(refusal, 403)
        body = await request.body()
        if len(body) > MAX_BODY:
            return _error("request too large", 413)
        try:
            wanted = json.loads(body)["colors"]
        except (ValueError, KeyError, TypeError):
            return _error('send {"colors": {"label": "#rrggbb"}}', 400)
        if not isinstance(wanted, dict):
            return _error('send {"colors": {"label": "#rrggbb"}}', 400)
        await run_in_threadpool(viewer.version.set_label_colors, wanted)  # a write waits for other writers
        return version_info(request)

    return [*(Route(path, static_file) for path in STATIC_FILES),
            Route("/api/version", version_info), Route("/api/frames", frames), Route("/api/frame", frame),
            Route("/api/pixels", pixels), Route("/api/colors", colors, methods=["POST"])]


def label_plane(viewer: Viewer, frame: Frame, source: Source, mask: Mask) -> np.ndarray:
    """Each mask pixel's label as index k + 1 into ``Viewer.labels`` (0: no label): render's class-index
    map under an enumeration of the colouring labels, so tolerance and size rules are render's own."""
    names = [name for name, _ in viewer.labels()]
    # An enumeration may not be empty; a name no table can hold maps every pixel to 0 then.
    enumeration = {name: k + 1 for k, name in enumerate(names)} or {"\0": 1}
    return render(frame, viewer.version, mode="index", enumeration=enumeration, ignore=0,
                  source_id=source.id, mask_id=mask.id)


def create_app(version: DatasetVersion, settings: Settings) -> Starlette:
    """The viewer's ASGI app over one version."""
    viewer = Viewer(version, settings)
    app = Starlette(routes=_endpoints(viewer),
                    middleware=[Middleware(TrustedHostMiddleware, allowed_hosts=list(settings.hosts))],
                    exception_handlers={MaskstoreError: _maskstore_error})
    app.state.viewer = viewer  # serve() warms its selection up
    return app
