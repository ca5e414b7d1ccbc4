"""Binding the viewer: a socket we open ourselves (so ``--port 0`` knows its port before the URL is
announced), a fresh token per run, uvicorn for HTTP."""

from __future__ import annotations

import ipaddress
import secrets
import socket
import threading
import webbrowser
from collections.abc import Callable

import uvicorn

from ..archive import DatasetVersion
from ..errors import MaskstoreError
from .app import Settings, create_app

LOCAL_NAMES = ("127.0.0.1", "localhost", "::1")


def listen(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: a free one); a clear error when it cannot be had."""
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        raise MaskstoreError(f"cannot listen on {host} port {port}: {exc.strerror or exc}; "
                             "choose another with --port (0 picks a free one)") from None
    return sock


def _is_wildcard(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def url_host(host: str) -> str:
    """How a URL names the host: a wildcard bind is reached through the loopback address."""
    if _is_wildcard(host):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def settings_for(host: str, readonly: bool) -> Settings:
    """A fresh token; the Host names the server answers to (any, when bound to every interface)."""
    hosts = ("*",) if _is_wildcard(host) else tuple(dict.fromkeys((*LOCAL_NAMES, host)))
    return Settings(token=secrets.token_urlsafe(24), readonly=readonly, hosts=hosts)


def serve(version: DatasetVersion, host: str = "127.0.0.1", port: int = 8765, *, readonly: bool = False,
          open_browser: bool = True, announce: Callable[[str], None] = print) -> None:
    """Serve the viewer until interrupted; ``announce`` gets the URL (with its token) first of all."""
    sock = listen(host, port)
    settings = settings_for(host, readonly)
    url = f"http://{url_host(host)}:{sock.getsockname()[1]}/?token={settings.token}"
    app = create_app(version, settings)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                            timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    announce(url)
    warm_up = threading.Thread(target=app.state.viewer.warm_up, name="maskstore-view-warm-up", daemon=True)
    warm_up.start()
    if open_browser:
        threading.Timer(0.5, webbrowser.open, args=(url,)).start()
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        warm_up.join()  # its read transaction ends before the caller closes the archive
