"""Hostile images and URIs: decompression bombs, truncated PNGs, http servers that hang or never stop,
local paths that name devices, pipes and folders instead of files.

Every failure is a ``MaskError`` (``MediaError`` for fetching) naming the file, raised before the
write transaction, so the batch it was in leaves nothing behind. HTTP tests use only a server on
127.0.0.1 run in a thread of this process, with bounded responses.
"""

from __future__ import annotations

import http.server
import io
import json
import os
import struct
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import maskstore.media as media
from maskstore import Archive, MaskError, MediaError

from .helpers import assert_archive_consistent, build_archive, cli

# ------------------------------------------------------------------------------------- images


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A 60-byte PNG whose header claims ``width`` x ``height`` 8-bit grey pixels."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + png_chunk(b"IEND", b""))


def mask_png(seed: int, size: int = 96) -> bytes:
    values = np.random.default_rng(seed).integers(0, 5, (size, size), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(values).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture
def images(tmp_path: Path) -> dict[str, Path]:
    files = {"good": mask_png(1), "good2": mask_png(2), "bomb": bomb_png()}
    data = mask_png(3)
    files["truncated"] = data[: len(data) // 2]
    out = {}
    for name, content in files.items():
        out[name] = tmp_path / f"{name}.png"
        out[name].write_bytes(content)
    Image.fromarray(np.zeros((96, 96, 3), np.uint8)).save(tmp_path / "source.png")
    out["source"] = tmp_path / "source.png"
    return out


def frame(fid: str, source: Path, mask: Path, size: int | None = None) -> dict:
    """A frame whose mask statistics ingest must decode; with ``size`` the source is not opened."""
    return {"id": fid, "sources": [{"id": "0", "uri": str(source), "width": size, "height": size,
                                    "masks": [{"id": "00", "uri": str(mask)}]}]}


@pytest.fixture
def version(tmp_path: Path, images: dict[str, Path]):
    with Archive(tmp_path / "media.maskstore", jobs=1) as ar:
        v = ar.create_version("d", "v1")
        v.add_frames([frame("before", images["source"], images["good"])])
        yield v


def assert_refused_whole(v, frames: list[dict], culprit: Path, *words: str) -> MaskError:
    with pytest.raises(MaskError) as info:
        v.add_frames(frames)
    message = str(info.value)
    assert str(culprit) in message, message
    for word in words:
        assert word in message, message
    assert v.ids("") == ["before"], "part of a refused batch was written"
    return info.value


def test_mask_decompression_bomb_is_refused_naming_the_file(version, images) -> None:
    assert images["bomb"].stat().st_size < 200
    assert_refused_whole(version, [frame("ok", images["source"], images["good2"]),
                                   frame("bomb", images["source"], images["bomb"])],
                         images["bomb"], "too large to decode safely")


def test_source_decompression_bomb_is_refused_naming_the_file(version, images) -> None:
    assert_refused_whole(version, [frame("ok", images["source"], images["good2"]),
                                   frame("bomb", images["bomb"], images["good"])], images["bomb"])


@pytest.mark.parametrize("limit", [600, 100], ids=["warning-zone", "error-zone"])
def test_max_image_pixels_is_honoured(version, images, monkeypatch, limit: int) -> None:
    """96 x 96 = 9216 pixels: above 600 Pillow only warns (maskstore makes that an error), above 2 x 100
    it raises. Both are a MaskError naming the mask (the source size is given, so only the mask is read)."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit * 9216 // 1000)
    assert_refused_whole(version, [frame("small", images["source"], images["good2"], 96)], images["good2"],
                         "too large to decode safely")


def test_truncated_png_mask_is_refused_naming_the_file(version, images) -> None:
    assert_refused_whole(version, [frame("ok", images["source"], images["good2"]),
                                   frame("cut", images["source"], images["truncated"])],
                         images["truncated"], "not a readable image")


def test_bomb_in_a_process_pool_batch_is_refused(tmp_path: Path, images) -> None:
    """With jobs=2 and 20 masks the statistics are decoded in worker processes; the error still
    names the file and the batch leaves nothing behind."""
    with Archive(tmp_path / "pool.maskstore", jobs=2) as ar:
        v = ar.create_version("d", "v1")
        frames = [frame(f"f{n}", images["source"], images["good"]) for n in range(19)]
        frames.insert(7, frame("bomb", images["source"], images["bomb"]))
        with pytest.raises(MaskError, match="bomb.png"):
            v.add_frames(frames)
        assert len(v) == 0
        v.add_frames(frames[:7] + frames[8:])  # the pool is still usable
        assert len(v) == 19


def test_cli_ingest_stops_at_the_bad_mask_and_keeps_earlier_batches(tmp_path: Path, images) -> None:
    lines = [frame(f"f{n}", images["source"], images["good"]) for n in range(4)]
    lines.insert(3, frame("cut", images["source"], images["truncated"]))
    frames_file = tmp_path / "frames.jsonl"
    frames_file.write_text("".join(json.dumps(f) + "\n" for f in lines))
    path = tmp_path / "cli.maskstore"
    build_archive(path, 0, 1, labels=False)
    result = cli("ingest", path, "-d", "d", "-V", "v1", "--frames", frames_file, "--batch-size", 2, "--jobs", 1)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert str(images["truncated"]) in result.stderr
    assert "2 frames in 1 batches were committed" in result.stderr
    snap = assert_archive_consistent(path)["d/v1"]
    assert sorted(snap.ids) == ["f0", "f1"]


# ------------------------------------------------------------------------------------- local files

def ingest_frames_cli(tmp_path: Path, frames: list[dict], *extra: object):
    frames_file = tmp_path / "frames.jsonl"
    frames_file.write_text("".join(json.dumps(f) + "\n" for f in frames))
    # a real process with a timeout: a regression that blocks fails here instead of hanging the suite
    return cli("ingest", tmp_path / "cli.maskstore", "-d", "d", "-V", "v1", "--frames", frames_file,
               "--jobs", 1, *extra, timeout=60)


def assert_one_line_error(result, *words: str) -> None:
    assert result.returncode == 1, (result.returncode, result.stderr)
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    for word in words:
        assert word in errors[0], errors[0]


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
@pytest.mark.parametrize("embed", [False, True], ids=["statistics", "embed"])
def test_dev_zero_mask_is_refused_not_read(tmp_path: Path, images, embed: bool) -> None:
    """Reported: a /dev/zero mask read 4.7 GiB before failing. A device is not an image file."""
    extra = ("--embed",) if embed else ()
    result = ingest_frames_cli(tmp_path, [frame("zero", images["source"], Path("/dev/zero"), 96)], *extra)
    assert_one_line_error(result, "/dev/zero", "not a regular file", "character device")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
@pytest.mark.parametrize("role", ["source", "mask"])
def test_fifo_is_refused_without_blocking(tmp_path: Path, images, role: str) -> None:
    """Reported: a FIFO source hung ingest (no writer ever opens it)."""
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    f = frame("fifo", fifo, images["good"]) if role == "source" else frame("fifo", images["source"], fifo)
    result = ingest_frames_cli(tmp_path, [f])
    assert_one_line_error(result, str(fifo), "not a regular file", "named pipe")


def test_folder_and_symlinked_device_are_refused(tmp_path: Path) -> None:
    with pytest.raises(MediaError, match=r"not a regular file \(a directory\)"):
        media.read_bytes(str(tmp_path))
    if os.path.exists("/dev/zero"):
        (tmp_path / "zero.png").symlink_to("/dev/zero")
        with pytest.raises(MediaError, match="zero.png is not a regular file"):
            media.read_bytes(str(tmp_path / "zero.png"))


def test_local_size_limit_boundary(tmp_path: Path, monkeypatch) -> None:
    """The largest file that is read has exactly LOCAL_MAX_BYTES bytes; one byte more is refused."""
    monkeypatch.setattr(media, "LOCAL_MAX_BYTES", 100)
    (tmp_path / "ok.png").write_bytes(b"x" * 100)
    (tmp_path / "big.png").write_bytes(b"x" * 101)
    assert media.read_bytes(str(tmp_path / "ok.png")) == b"x" * 100
    with pytest.raises(MediaError, match=r"big\.png is larger than the 100 byte limit"):
        media.read_bytes(str(tmp_path / "big.png"))


def test_local_size_limit_applies_to_ingest(version, images, monkeypatch) -> None:
    monkeypatch.setattr(media, "LOCAL_MAX_BYTES", images["good2"].stat().st_size - 1)
    assert_refused_whole(version, [frame("big", images["source"], images["good2"], 96)], images["good2"],
                         "byte limit")


# ------------------------------------------------------------------------------------- http

BIG_BODY = 16 * 1024 * 1024
SERVER_MAX_SECONDS = 2.5  # no handler runs longer than this, whatever the client does


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        try:
            if self.path == "/mask.png":
                self._send(mask_png(4))
            elif self.path == "/short":  # promises 1000 bytes, sends 10, closes
                self.send_response(200)
                self.send_header("Content-Length", "1000")
                self.end_headers()
                self.wfile.write(b"0123456789")
            elif self.path == "/hang":
                time.sleep(SERVER_MAX_SECONDS)  # says nothing at all, then gives up
            elif self.path == "/trickle":
                self.send_response(200)
                self.send_header("Content-Length", "1000")
                self.end_headers()
                deadline = time.monotonic() + SERVER_MAX_SECONDS
                while time.monotonic() < deadline:  # one byte every 0.1 s: each read is "quick"
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(0.1)
            elif self.path == "/big.png":
                self.send_response(200)
                self.send_header("Content-Length", str(BIG_BODY))
                self.end_headers()
                chunk = b"\0" * 65536
                for _ in range(BIG_BODY // len(chunk)):
                    self.wfile.write(chunk)
            else:
                self.send_error(404)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up, as it should

    def _send(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def server(monkeypatch, tmp_path: Path):
    """http://127.0.0.1:<port> in a thread; no proxy; the download cache in tmp."""
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("MASKSTORE_CACHE", str(tmp_path / "cache"))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


def timed(fn, *args, **kwargs) -> tuple[BaseException | None, float]:
    start = time.monotonic()
    try:
        fn(*args, **kwargs)
    except BaseException as exc:  # noqa: BLE001 (returned to the test)
        return exc, time.monotonic() - start
    return None, time.monotonic() - start


def test_http_mask_is_fetched_and_cached(server, version, images, tmp_path: Path) -> None:
    """The control case: the server works, and a fetched mask is decoded and cached."""
    version.add_frames([{"id": "web", "sources": [{"uri": str(images["source"]),
                                                   "masks": [{"uri": f"{server}/mask.png"}]}]}])
    assert version.get_frame_dict("web")["sources"][0]["masks"][0]["values"]
    assert len(list((tmp_path / "cache").iterdir())) == 1


def test_hanging_server_is_bounded_by_the_timeout(server) -> None:
    exc, seconds = timed(media._fetch_http, f"{server}/hang", timeout=0.5, max_bytes=1000)
    assert isinstance(exc, MediaError) and f"{server}/hang" in str(exc), exc
    assert seconds < 2.0


def test_huge_body_is_bounded_by_the_size_limit(server) -> None:
    exc, seconds = timed(media._fetch_http, f"{server}/big.png", timeout=2, max_bytes=100_000)
    assert isinstance(exc, MediaError) and "larger than the 100000 byte limit" in str(exc), exc
    assert seconds < 2.0


@pytest.mark.parametrize("path", ["/hang", "/big.png"])
def test_module_limits_apply_to_ingest(server, version, images, monkeypatch, path: str) -> None:
    monkeypatch.setattr(media, "HTTP_TIMEOUT", 0.5)
    monkeypatch.setattr(media, "HTTP_MAX_BYTES", 100_000)
    exc, seconds = timed(version.add_frames, [{"id": "web", "sources": [
        {"uri": str(images["source"]), "masks": [{"uri": f"{server}{path}"}]}]}])
    assert isinstance(exc, MaskError) and seconds < 2.0, (exc, seconds)
    assert path == "/hang" or "byte limit" in str(exc)
    assert version.ids("") == ["before"]


def test_fetch_failures_stay_media_errors_through_add_frames(version, images, tmp_path: Path) -> None:
    with pytest.raises(MediaError, match="missing.png"):
        version.add_frames([frame("gone", images["source"], tmp_path / "missing.png", 96)])


def test_truncated_http_body_is_refused_and_not_cached(server, tmp_path: Path) -> None:
    exc, _ = timed(media._fetch_http, f"{server}/short", timeout=2, max_bytes=100_000)
    assert isinstance(exc, MediaError), exc
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").iterdir())


def test_trickling_server_is_bounded_by_the_timeout(server) -> None:
    exc, seconds = timed(media._fetch_http, f"{server}/trickle", timeout=0.5, max_bytes=100_000)
    assert isinstance(exc, MediaError) and seconds < 2.0, (exc, seconds)
