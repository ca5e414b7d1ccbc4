"""URIs, safe image loading, and mask decoding into value keys, opacity and statistics.

Everything that touches image bytes lives here so the archive, the renderer and the importers
share one idea of what a mask's pixel values are (spec section 1: single-channel ``v`` is
``(v, v, v)``, a palette index is its palette colour, RGB is itself), of a mask's opacity (spec
section 6), and of which masks hold categories at all (FORMAT.md, "Mask statistics").
"""

from __future__ import annotations

import functools
import hashlib
import io
import mimetypes
import contextlib
import os
import re
import stat
import struct
import time
import urllib.parse
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from . import video
from .errors import MaskError, MediaError

BLOB_PREFIX = "blob:sha256:"
HTTP_TIMEOUT = 30.0
HTTP_MAX_BYTES = 512 * 1024 * 1024
LOCAL_MAX_BYTES = HTTP_MAX_BYTES
# Pillow's own default (about 89 Mpx) stays; its warning threshold is treated as an error so a
# decompression bomb never gets half-decoded.
MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS

# A mask with more distinct values than this holds no categories (a photo cut-out, a lossy
# re-save): ingest stores it as an alpha mask. Label tables have tens to a few hundred values.
MAX_CATEGORICAL_VALUES = 1024
LOSSY_VALUE_SHARE = 10_000  # a lossy video mask keeps the values covering 0.01% of its pixels or more
ALPHA = "alpha"  # the "kind" of a mask that is an opacity matte, not categories
# Formats whose compression changes pixel values, so no count of a value in them is right.
LOSSY_FORMATS = frozenset({"JPEG", "MPO"})
# Modes whose last band is opacity; "P with transparency" is handled through its palette.
ALPHA_BAND_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
ORIENTATION_TAG = 0x0112
# Each EXIF orientation and the transposition that shows the image upright (ImageOps.exif_transpose's).
UPRIGHT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
           5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
           8: Image.Transpose.ROTATE_90}

BlobReader = Callable[[str], bytes]
SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")


def is_remote(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def scheme_of(uri: str) -> str | None:
    """The ``scheme`` of a ``scheme://...`` URI (``s3``, ``gs``, ``file``), or None for a plain path."""
    match = SCHEME.match(uri)
    return match.group(1).lower() if match else None


def local_path(uri: str) -> Path | None:
    """The file a URI names on this machine, or None for remote, embedded and other-scheme URIs
    (``s3://b/x.png`` is not the local path ``s3:/b/x.png``)."""
    scheme = scheme_of(uri)
    if scheme == "file":
        try:
            return Path(urllib.parse.unquote(urllib.parse.urlparse(uri).path))
        except ValueError:
            raise MediaError(f"{uri} is not a valid file:// URI") from None
    if uri.startswith(BLOB_PREFIX) or scheme is not None:
        return None
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


def blob_digest(hexdigest: str) -> bytes | None:
    """The 32-byte key a ``blob:sha256:<hex>`` URI names, or None when ``hexdigest`` is not 64 hex
    digits (an empty or short key would reach LMDB as an invalid key size)."""
    if len(hexdigest) != 64:
        return None
    try:
        return bytes.fromhex(hexdigest)
    except ValueError:
        return None


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
    import http.client  # here, not at the top: ~25 ms of every fresh process that never downloads
    import urllib.error
    import urllib.request
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
    if path is None:
        raise MediaError(f"{uri}: {scheme_of(uri)}:// URIs are not supported; maskstore reads local paths, "
                         "file://, http(s):// and embedded files (download it first)")
    return _read_local(path)


_NOT_FILES = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a named pipe"), (stat.S_ISCHR, "a character device"),
              (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))
_OPEN_FLAGS = (os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
               | getattr(os, "O_BINARY", 0))


def _regular_size(path: Path, info: os.stat_result, max_bytes: int) -> int:
    if not stat.S_ISREG(info.st_mode):
        kind = next((name for test, name in _NOT_FILES if test(info.st_mode)), "not a file")
        raise MediaError(f"{path} is not a regular file ({kind}); name an image file")
    if info.st_size > max_bytes:
        raise MediaError(f"{path} is larger than the {max_bytes} byte limit")
    return info.st_size


def _read_local(path: Path) -> bytes:
    """A regular file of at most LOCAL_MAX_BYTES, else a MediaError naming it.

    A device such as /dev/zero would be read until memory runs out, and a FIFO blocks until some
    writer opens it. The path is checked before opening (opening a device can itself do things),
    opened non-blocking (a FIFO swapped in meanwhile cannot block) and checked again on the open file.
    """
    max_bytes = LOCAL_MAX_BYTES
    try:
        _regular_size(path, os.stat(path), max_bytes)
        with open(os.open(path, _OPEN_FLAGS), "rb") as file:
            size = _regular_size(path, os.fstat(file.fileno()), max_bytes)
            data = file.read(size + 1)
    except FileNotFoundError:
        raise MediaError(f"file not found: {path}") from None
    except OSError as exc:
        raise MediaError(f"cannot read {path}: {exc.strerror or exc}") from None
    except ValueError:  # a NUL character: no file system has such a name
        raise MediaError(f"cannot read {str(path)!r}: a path cannot contain a NUL character") from None
    if len(data) != size:
        raise MediaError(f"{path} changed size while it was read; try again when it is complete")
    return data


@contextlib.contextmanager
def _decoding(uri: str, what: str) -> Iterator[None]:
    """Every Pillow failure as a MaskError naming the file; the decompression-bomb warning counts too,
    so a bomb never gets half-decoded."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            yield
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise MaskError(f"{what} {uri} is too large to decode safely: {exc}") from None
        except Image.UnidentifiedImageError:  # its text names Pillow's BytesIO object, not the file
            raise MaskError(f"{what} {uri} is not a readable image: not an image format Pillow knows, "
                            "or damaged") from None
        except (OSError, SyntaxError, ValueError, struct.error) as exc:
            raise MaskError(f"{what} {uri} is not a readable image: {exc}") from None


def _open(uri: str, blobs: BlobReader | None, what: str) -> Image.Image:
    """An image with its header read. A mask must be one still image: of an animation, which frame
    holds the mask is a guess, and a silent one would give the wrong statistics."""
    data = read_bytes(uri, blobs)
    with _decoding(uri, what):
        image = Image.open(io.BytesIO(data))
        if what == "mask" and getattr(image, "is_animated", False):
            raise MaskError(f"mask {uri} has {image.n_frames} frames; a mask is one still image: save the "
                            "frame that is the mask on its own (e.g. as PNG)")
    return image


def _orientation(image: Image.Image) -> int:
    """EXIF orientation (1-8) from the header, so ``image_size`` and ``open_image`` agree without
    decoding; a PNG's eXIf counts only before the image data, where the PNG spec puts it (Pillow
    would decode the whole image to look further)."""
    if (image.format == "PNG" and "exif" not in image.info) or (image.format == "TIFF" and _pillow_turns_tiffs()):
        return 1
    with warnings.catch_warnings():  # damaged EXIF: Pillow skips what it cannot read, and so do we
        warnings.simplefilter("ignore", UserWarning)
        orientation = image.getexif().get(ORIENTATION_TAG, 1)
    return orientation if orientation in UPRIGHT else 1


@functools.cache
def _pillow_turns_tiffs() -> bool:
    """Whether this Pillow turns TIFFs upright itself (header size and pixels, as Pillow 13 does);
    turning them again would undo it. Asked once, of a 2x1 TIFF tagged "rotate 90"."""
    exif = Image.Exif()
    exif[ORIENTATION_TAG] = 6
    probe = io.BytesIO()
    Image.new("L", (2, 1)).save(probe, format="TIFF", exif=exif)
    return Image.open(probe).size == (1, 2)


def _decode(image: Image.Image, uri: str, what: str) -> Image.Image:
    """Decode the pixels and turn them upright, as every viewer shows a camera image: a mask drawn
    on the shown image then matches its source."""
    with _decoding(uri, what):
        orientation = _orientation(image)
        image.load()
    return image.transpose(UPRIGHT[orientation]) if orientation in UPRIGHT else image


def _video(uri: str, blobs: BlobReader | None) -> video.VideoReader:
    local = None if uri.startswith(BLOB_PREFIX) or is_remote(uri) else local_path(uri)
    return video.reader(uri, lambda u: read_bytes(u, blobs), local)


def open_image(uri: str, blobs: BlobReader | None = None, *, what: str = "image", timestamp: int = 0,
               content_type: str | None = None) -> Image.Image:
    """Open and fully decode an image, upright (EXIF orientation applied); ``what="mask"`` refuses
    animations. A video (spec section 10) gives its frame nearest ``timestamp`` milliseconds."""
    if video.is_video(uri, content_type):
        return Image.fromarray(_video(uri, blobs).frame_at(timestamp), "RGB")
    return _decode(_open(uri, blobs, what), uri, what)


def video_frame_rate(uri: str, blobs: BlobReader | None = None) -> Fraction:
    """A video's average frame rate (what an overlay video of its frames is written at)."""
    stream = _video(uri, blobs).stream
    rate = stream.average_rate or stream.guessed_rate
    return Fraction(rate) if rate else Fraction(25)


def image_size(uri: str, blobs: BlobReader | None = None, content_type: str | None = None) -> tuple[int, int]:
    """(width, height) of what ``open_image`` gives, from the header only."""
    if video.is_video(uri, content_type):
        stream = _video(uri, blobs).stream
        return stream.codec_context.width, stream.codec_context.height
    image = _open(uri, blobs, "image")
    with _decoding(uri, "image"):
        turned = _orientation(image) >= 5  # 5-8 swap width and height
    return image.size[::-1] if turned else image.size


def unit_to_uint8(values: np.ndarray) -> np.ndarray:
    """Float samples 0..1 as 0..255, ``floor(v * 255 + 0.5)``; outside 0..1 clipped, NaN is 0."""
    unit = np.nan_to_num(np.clip(values.astype(np.float64), 0.0, 1.0), nan=0.0)
    return np.floor(unit * 255 + 0.5).astype(np.uint8)


def eight_bit(image: Image.Image) -> Image.Image:
    """A single-band image of more than 8 bits as 8-bit (L): 16- and 32-bit integers keep their top
    byte of 0..65535, floats scale 0..1. Pillow's own ``convert`` clips at 255 instead, which shows
    a 16-bit photo white and a float one black."""
    mode = image.mode
    if mode == "F":
        return Image.fromarray(unit_to_uint8(np.asarray(image)))
    if mode == "I" or mode.startswith("I;16"):
        return Image.fromarray((np.clip(np.asarray(image), 0, 65535) >> 8).astype(np.uint8))
    return image


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

    def distinct(self) -> np.ndarray:
        """The packed RGB keys present, sorted."""
        if self.keys is not None:
            return np.unique(self.keys)
        assert self.index is not None and self.table is not None
        return np.unique(self.table[np.unique(self.index)])

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
    if mode == "F":  # a float matte: its values are opacity 0..1
        return MaskPixels(unit_to_uint8(np.asarray(image)), GREY_TABLE, None)
    if mode.startswith("I"):
        values = np.asarray(image)
        largest = values.max() if values.size else 0
        if largest > 255 or (values.size and values.min() < 0):
            raise MaskError(
                f"mask {uri} has pixel value {int(largest)}, above 255: a {mode} mask value has no RGB "
                "value; convert it first (e.g. Cityscapes instance ids: value // 1000)")
        return MaskPixels(values.astype(np.uint8), GREY_TABLE, None)
    raise MaskError(f"mask {uri} has image mode {mode}, which maskstore cannot read as mask values")


def value_counts(pixels: MaskPixels, limit: int | None = None) -> list[list[int]] | None:
    """Distinct RGB values and their pixel counts: ``[[r, g, b, count], ...]`` sorted by value; None
    when there are more than ``limit`` of them."""
    if pixels.index is not None:
        assert pixels.table is not None
        counts = np.bincount(pixels.index.ravel(), minlength=256)
        used = np.nonzero(counts)[0]
        keys, inverse = np.unique(pixels.table[used], return_inverse=True)
        totals = np.bincount(inverse, weights=counts[used]).astype(np.int64)
    else:
        assert pixels.keys is not None
        keys, totals = np.unique(pixels.keys.ravel(), return_counts=True)
    if limit is not None and len(keys) > limit:
        return None
    return [[int(k) >> 16, (int(k) >> 8) & 255, int(k) & 255, int(c)] for k, c in zip(keys, totals)]


def mask_alpha(image: Image.Image, uri: str = "") -> np.ndarray:
    """A mask's opacity per pixel (uint8 H x W), spec section 6.

    The alpha band of RGBA/LA/PA masks; the palette entry's alpha for P masks with transparency;
    Pillow's ``convert("L")`` luma for RGB masks and (of the palette colour) other P masks; float
    mattes scaled from 0..1; else the single-channel value (16-bit masks only up to 255).
    """
    mode = image.mode
    if mode in ALPHA_BAND_MODES:
        return np.asarray(image.getchannel("A"))
    if mode == "P":
        return np.asarray(image.point(_palette_alpha(image).tolist(), "L"))  # a 256-entry lookup, in C
    if mode in ("RGB", "RGBX"):
        return np.asarray(image.convert("L"))
    pixels = mask_pixels(image, uri)  # L, 1, I;16, F, ...: refuses values above 255 and unknown modes
    assert pixels.index is not None
    return pixels.index


def _palette_alpha(image: Image.Image) -> np.ndarray:
    """Alpha (or, without transparency, luma) of each of the 256 palette indices."""
    transparency = image.info.get("transparency")
    palette_mode = image.palette.mode if image.palette is not None else "RGB"
    if transparency is None and palette_mode != "RGBA":
        # Pillow's own P -> L conversion on one row of every index: its luma rounding, exactly.
        strip = image.crop((0, 0, 256, 1))  # keeps the palette
        strip.putdata(list(range(256)))
        return np.asarray(strip.convert("L")).ravel()
    alpha = np.full(256, 255, dtype=np.uint8)
    if palette_mode == "RGBA":
        entries = np.asarray(image.getpalette("RGBA") or [], dtype=np.uint8).reshape(-1, 4)[:256]
        alpha[: len(entries)] = entries[:, 3]
    if isinstance(transparency, int):
        alpha[transparency] = 0
    elif isinstance(transparency, (bytes, bytearray)):
        given = np.frombuffer(bytes(transparency), dtype=np.uint8)[:256]
        alpha[: len(given)] = given
    return alpha


@dataclass(frozen=True)
class MaskStats:
    """What ingest stores for one mask (FORMAT.md, "Mask statistics"): the values of a categorical
    mask, or the coverage (pixels whose opacity is above 0) of an alpha mask."""

    values: list[list[int]] | None
    width: int
    height: int
    coverage: int | None = None
    # An alpha mask found so only by its number of values (no float matte, no alpha band that varies):
    # a label mask with anti-aliased or lossy colours looks like this too, so ingest warns.
    doubtful: bool = False

    @property
    def kind(self) -> str | None:
        return None if self.values is not None else ALPHA

    def fields(self) -> dict[str, Any]:
        """The mask-dict fields these statistics set."""
        if self.values is not None:
            return {"values": self.values, "width": self.width, "height": self.height}
        return {"kind": ALPHA, "coverage": self.coverage, "width": self.width, "height": self.height}


def mask_statistics(uri: str, blobs: BlobReader | None = None, kind: str | None = None, timestamp: int = 0,
                    content_type: str | None = None) -> MaskStats:
    """Decode a mask once and describe it; ``kind="alpha"`` (the owner says it is a matte) skips the
    value count. A lossy image file is refused unless declared a matte: its values are compression
    noise. A video mask is the frame at ``timestamp``: lossy or not, the version's mask tolerance
    decides what its values mean (spec section 10)."""
    if video.is_video(uri, content_type):
        image = open_image(uri, blobs, what="mask", timestamp=timestamp, content_type=content_type)
        return video_mask_statistics(image, uri, kind)
    header = _open(uri, blobs, "mask")
    if kind is None and header.format in LOSSY_FORMATS:
        raise MaskError(f"mask {uri} is a {header.format} file, whose lossy compression changes pixel values, "
                        f"so its value counts would be wrong; save label masks as PNG, or give an opacity "
                        f'matte "kind": "{ALPHA}" in its mask dict')
    image = _decode(header, uri, "mask")
    values = None
    if kind is None and image.mode != "F":
        values = value_counts(mask_pixels(image, uri), MAX_CATEGORICAL_VALUES)
    if values is not None:
        return MaskStats(values, image.width, image.height)
    alpha = mask_alpha(image, uri)
    cutout = image.mode in ALPHA_BAND_MODES and alpha.min() != alpha.max()
    doubtful = kind is None and image.mode != "F" and not cutout
    return MaskStats(None, image.width, image.height, int(np.count_nonzero(alpha)), doubtful)


def video_mask_statistics(image: Image.Image, uri: str, kind: str | None = None) -> MaskStats:
    """A video mask frame is categorical unless declared a matte. A lossless one lists every value; a
    lossy one (more than MAX_CATEGORICAL_VALUES values: codec noise) lists only the values that cover at
    least 1/LOSSY_VALUE_SHARE of its pixels, at most MAX_CATEGORICAL_VALUES of them, so its record and
    index entries stay small; the mask tolerance maps them to labels at query time (FORMAT.md)."""
    if kind is not None:
        alpha = mask_alpha(image, uri)
        return MaskStats(None, image.width, image.height, int(np.count_nonzero(alpha)))
    values = value_counts(mask_pixels(image, uri))
    assert values is not None
    if len(values) > MAX_CATEGORICAL_VALUES:
        floor = image.width * image.height / LOSSY_VALUE_SHARE
        common = sorted((v for v in values if v[3] >= floor), key=lambda v: -v[3])[:MAX_CATEGORICAL_VALUES]
        values = sorted(common)
    return MaskStats(values, image.width, image.height)
