"""URIs, safe image loading, and mask decoding into value keys and statistics.

Everything that touches image bytes lives here so the archive, the renderer and the importers
share one idea of what a mask's pixel values are (spec section 1: single-channel ``v`` is
``(v, v, v)``, a palette index is its palette colour, RGB is itself).
"""

from __future__ import annotations

import functools
import hashlib
import http.client
import io
import mimetypes
import os
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .errors import MaskError, MediaError

BLOB_PREFIX = "blob:sha256:"
HTTP_TIMEOUT = 30.0
HTTP_MAX_BYTES = 512 * 1024 * 1024
# Pillow's own default (about 89 Mpx) stays; its warning threshold is treated as an error so a
# decompression bomb never gets half-decoded.
MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS

BlobReader = Callable[[str], bytes]


def is_remote(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def local_path(uri: str) -> Path | None:
    """The file a URI names on this machine, or None for remote and embedded URIs."""
    if uri.startswith(BLOB_PREFIX) or is_remote(uri):
        return None
    if uri.startswith("file://"):
        return Path(urllib.parse.unquote(urllib.parse.urlparse(uri).path))
    return Path(uri)


def content_type_of(uri: str) -> str | None:
    """Content type from the file name, the way a browser would guess it."""
    try:
        path = urllib.parse.urlparse(uri).path if "://" in uri else uri
    except ValueError:  # e.g. "http://[x.png": not a URL anyone can fetch, and no type to guess
        return None
    _, dot, suffix = path.rpartition(".")
    if not dot or "/" in suffix:
        return None
    return _content_type_of_suffix(suffix.lower())


@functools.lru_cache(maxsize=256)
def _content_type_of_suffix(suffix: str) -> str | None:
    return mimetypes.guess_type("x." + suffix)[0]


def blob_uri(data: bytes) -> str:
    return BLOB_PREFIX + hashlib.sha256(data).hexdigest()


def cache_dir() -> Path:
    root = os.environ.get("MASKSTORE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "maskstore")
    return Path(root)


def _fetch_http(uri: str, timeout: float | None = None, max_bytes: int | None = None) -> bytes:
    """Download once into the cache folder; later reads come from the cache.

    ``timeout`` bounds the whole download, not each socket read, so a server trickling bytes cannot
    hold ingest; a body larger than ``max_bytes`` or shorter than its Content-Length is refused.
    """
    timeout = HTTP_TIMEOUT if timeout is None else timeout
    max_bytes = HTTP_MAX_BYTES if max_bytes is None else max_bytes
    cached = cache_dir() / hashlib.sha256(uri.encode()).hexdigest()
    if cached.exists():
        return cached.read_bytes()
    deadline = time.monotonic() + timeout
    chunks: list[bytes] = []
    received = 0
    try:
        with urllib.request.urlopen(uri, timeout=timeout) as response:  # noqa: S310 (http(s) only)
            declared = response.headers.get("Content-Length")
            while chunk := response.read1(65536):
                chunks.append(chunk)
                received += len(chunk)
                if received > max_bytes:
                    raise MediaError(f"{uri} is larger than the {max_bytes} byte limit")
                if time.monotonic() > deadline:
                    raise MediaError(f"{uri} took longer than {timeout} s to download")
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
        raise MediaError(f"cannot fetch {uri}: {exc}") from None
    if declared is not None and declared.isdigit() and int(declared) != received:
        raise MediaError(f"cannot fetch {uri}: got {received} of {declared} bytes (connection closed early)")
    data = b"".join(chunks)
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(f".{os.getpid()}.part")
    tmp.write_bytes(data)
    tmp.replace(cached)
    return data


def read_bytes(uri: str, blobs: BlobReader | None = None) -> bytes:
    """The bytes a URI names: an embedded blob, a local file, or an http(s) download."""
    if uri.startswith(BLOB_PREFIX):
        if blobs is None:
            raise MediaError(f"{uri} is embedded in an archive; open it through that archive")
        return blobs(uri[len(BLOB_PREFIX):])
    if is_remote(uri):
        return _fetch_http(uri)
    path = local_path(uri)
    assert path is not None
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise MediaError(f"file not found: {path}") from None
    except OSError as exc:
        raise MediaError(f"cannot read {path}: {exc.strerror or exc}") from None


def _open(uri: str, blobs: BlobReader | None, what: str, decode: bool) -> Image.Image:
    """Open (and with ``decode`` fully load) an image, turning every Pillow failure into a MaskError;
    Pillow's decompression-bomb warning counts as a failure too."""
    data = read_bytes(uri, blobs)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
            if decode:
                image.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise MaskError(f"{what} {uri} is too large to decode safely: {exc}") from None
        except (Image.UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise MaskError(f"{what} {uri} is not a readable image: {exc}") from None
    return image


def open_image(uri: str, blobs: BlobReader | None = None, *, what: str = "image") -> Image.Image:
    """Open and fully decode an image."""
    return _open(uri, blobs, what, decode=True)


def image_size(uri: str, blobs: BlobReader | None = None) -> tuple[int, int]:
    """(width, height) from the header only, without decoding the pixels."""
    with _open(uri, blobs, "image", decode=False) as image:
        return image.size


@dataclass(frozen=True)
class MaskPixels:
    """A mask as pixel value keys.

    Index masks (L, P, small I;16) keep ``index`` (uint8, H x W) plus ``table``: the packed RGB key
    of each of the 256 indices, so every per-value operation is a 256-entry lookup. RGB masks keep
    ``keys`` (uint32, H x W) of packed RGB values.
    """

    index: np.ndarray | None
    table: np.ndarray | None
    keys: np.ndarray | None

    @property
    def shape(self) -> tuple[int, int]:
        arr = self.index if self.index is not None else self.keys
        assert arr is not None
        return arr.shape  # type: ignore[return-value]

    def packed(self) -> np.ndarray:
        """Packed RGB key of every pixel (uint32, H x W)."""
        if self.keys is not None:
            return self.keys
        assert self.index is not None and self.table is not None
        return self.table[self.index]


GREY_TABLE = (np.arange(256, dtype=np.uint32) * 0x010101).astype(np.uint32)


def palette_table(image: Image.Image) -> np.ndarray:
    """Packed RGB key of each palette index of a P image (missing entries are black)."""
    raw = image.getpalette("RGB") or []
    pal = np.zeros((256, 3), dtype=np.uint32)
    colors = np.asarray(raw, dtype=np.uint32).reshape(-1, 3)[:256]
    pal[: len(colors)] = colors
    return (pal[:, 0] << 16) | (pal[:, 1] << 8) | pal[:, 2]


def mask_pixels(image: Image.Image, uri: str = "") -> MaskPixels:
    """Decode a mask image to value keys (spec section 1)."""
    mode = image.mode
    if mode == "P":
        return MaskPixels(np.asarray(image, dtype=np.uint8), palette_table(image), None)
    if mode in ("L", "LA", "1"):
        band = image.getchannel(0) if mode == "LA" else image.convert("L") if mode == "1" else image
        return MaskPixels(np.asarray(band, dtype=np.uint8), GREY_TABLE, None)
    if mode in ("RGB", "RGBA", "RGBX", "RGBa"):
        # R, G, B, X bytes read as one big-endian uint32 are r<<24 | g<<16 | b<<8 | x: one shift packs them
        rgbx = np.asarray(image.convert("RGBX"))
        keys = (rgbx.view(">u4")[..., 0] >> 8).astype(np.uint32)
        return MaskPixels(None, None, keys)
    if mode.startswith("I") or mode == "F":
        values = np.asarray(image)
        largest = values.max() if values.size else 0
        if largest > 255 or (values.size and values.min() < 0):
            raise MaskError(
                f"mask {uri} has pixel value {int(largest)}, above 255: a {mode} mask value has no RGB "
                "value; convert it first (e.g. Cityscapes instance ids: value // 1000)")
        return MaskPixels(values.astype(np.uint8), GREY_TABLE, None)
    raise MaskError(f"mask {uri} has image mode {mode}, which maskstore cannot read as mask values")


def value_counts(pixels: MaskPixels) -> list[list[int]]:
    """Distinct RGB values and their pixel counts: ``[[r, g, b, count], ...]`` sorted by value."""
    if pixels.index is not None:
        assert pixels.table is not None
        counts = np.bincount(pixels.index.ravel(), minlength=256)
        used = np.nonzero(counts)[0]
        keys, inverse = np.unique(pixels.table[used], return_inverse=True)
        totals = np.bincount(inverse, weights=counts[used]).astype(np.int64)
    else:
        assert pixels.keys is not None
        keys, totals = np.unique(pixels.keys.ravel(), return_counts=True)
    return [[int(k) >> 16, (int(k) >> 8) & 255, int(k) & 255, int(c)] for k, c in zip(keys, totals)]


@dataclass(frozen=True)
class MaskStats:
    values: list[list[int]]
    width: int
    height: int


def mask_statistics(uri: str, blobs: BlobReader | None = None) -> MaskStats:
    image = open_image(uri, blobs, what="mask")
    pixels = mask_pixels(image, uri)
    return MaskStats(value_counts(pixels), image.width, image.height)
