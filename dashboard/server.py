"""The dashboard's HTTP server: the page, its JSON endpoints, and the images proxied from CouchDB.

    GET /                  the page (static/index.html; static/* beside it)
    GET /api/stats         throughput, stored count, p50/p95 latency, lag, dead letters
    GET /api/latest        the latest stored images with their labels
    GET /api/accuracy      accuracy per model version
    GET /images/<id>       the image attachment of one document (the browser needs no CouchDB login)

Loopback only, standard library only: ``ThreadingHTTPServer``, one thread per request. A request
whose Host header names another address is refused (a DNS-rebinding page would otherwise read
CouchDB through the dashboard); every answer carries a Content-Security-Policy.
"""

from __future__ import annotations

import contextlib
import json
import logging
import mimetypes
import re
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

from dashboard.readings import Readings
from iotpipe.config import Config
from iotpipe.couch import CouchError
from iotpipe.image_types import CONTENT_TYPES, NAMES

log = logging.getLogger("iotpipe.dashboard")

STATIC = Path(__file__).parent / "static"
HOST = "127.0.0.1"
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
# The page loads its own script, style, data and images and nothing else; every other answer
# (JSON, images) is inert even when opened as a document.
PAGE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
INERT_POLICY = "default-src 'none'; sandbox"


class Dashboard:
    """``Dashboard(config).serve()`` serves until ``close()`` (or Ctrl-C); the port is bound at once."""

    def __init__(self, config: Config, port: int | None = None) -> None:
        self.config = config
        self.readings = Readings(config)
        port = config.dashboard_port if port is None else port
        handler = type("Handler", (_Handler,), {"readings": self.readings})
        try:
            self._server = ThreadingHTTPServer((HOST, port), handler)
        except OSError as error:
            raise RuntimeError(
                f"cannot listen on {HOST}:{port} ({error.strerror}); is a dashboard already running there? "
                "Set IOTPIPE_DASHBOARD_PORT to another port"
            ) from error
        handler.hosts = own_hosts(*self._server.server_address[:2])
        self._server.daemon_threads = True
        self._serving = threading.Event()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/"

    def serve(self) -> None:
        self._serving.set()
        try:
            self._server.serve_forever(poll_interval=0.2)
        finally:
            self._server.server_close()

    def close(self) -> None:
        """Stop serving (from another thread) and free the port."""
        if self._serving.is_set():
            self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> Dashboard:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def own_hosts(bound: str, port: int) -> frozenset[str]:
    """The Host headers that name this dashboard: a loopback name or the bound address, with the port."""
    return frozenset(f"{name}:{port}" for name in (*LOOPBACK_NAMES, bound))


IMAGE_PATH = re.compile(r"^/images/([^/]+)$")
API = {"/api/stats": Readings.stats, "/api/latest": Readings.latest, "/api/accuracy": Readings.accuracy}


class _Handler(BaseHTTPRequestHandler):
    readings: Readings
    hosts: frozenset[str]
    server_version = "iotpipe-dashboard"

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if (self.headers.get("Host") or "").lower() not in self.hosts:
            self._send(HTTPStatus.MISDIRECTED_REQUEST, b"not this dashboard's address\n", "text/plain; charset=utf-8")
        elif path in ("/", "/index.html"):
            self._file(STATIC / "index.html", policy=PAGE_POLICY)
        elif path.startswith("/static/"):
            self._static(path.removeprefix("/static/"))
        elif path in API:
            self._api(path)
        elif match := IMAGE_PATH.match(path):
            self._image(unquote(match.group(1)))
        else:
            self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8")

    def _static(self, name: str) -> None:
        files = {file.name: file for file in STATIC.iterdir() if file.is_file()}
        if name in files:
            self._file(files[name])
        else:
            self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8")

    def _file(self, file: Path, policy: str = INERT_POLICY) -> None:
        content_type = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
        if content_type.startswith("text/") or content_type.endswith("javascript"):
            content_type += "; charset=utf-8"
        self._send(HTTPStatus.OK, file.read_bytes(), content_type, cache="no-cache", policy=policy)

    def _api(self, path: str) -> None:
        try:
            payload = API[path](self.readings)
        except Exception as error:  # the page shows n/a and keeps polling; the log has the traceback
            log.exception("%s failed", path)
            self._json({"error": f"{type(error).__name__}: {error}"}, HTTPStatus.INTERNAL_SERVER_ERROR)
            return
        self._json(payload)

    def _json(self, payload: dict, status: HTTPStatus = HTTPStatus.OK) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json", cache="no-store")

    def _image(self, image_id: str) -> None:
        try:
            image = self.readings.image(image_id)
        except ValueError:  # an id that could address something else than one image
            image = None
        except CouchError as error:
            self._send(HTTPStatus.BAD_GATEWAY, f"{error}\n".encode(), "text/plain; charset=utf-8")
            return
        if image is None:
            self._send(HTTPStatus.NOT_FOUND, b"no such image\n", "text/plain; charset=utf-8")
            return
        data, stored_type = image
        content_type = image_type(stored_type)
        if content_type is None:
            self._send(
                HTTPStatus.UNSUPPORTED_MEDIA_TYPE, f"not a {NAMES} image\n".encode(), "text/plain; charset=utf-8"
            )
            return
        # A document's image never changes (one document per image id): the browser may keep it.
        self._send(HTTPStatus.OK, data, content_type, cache="max-age=86400, immutable")

    def _send(
        self, status: HTTPStatus, body: bytes, content_type: str, cache: str = "no-store", policy: str = INERT_POLICY
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", cache)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", policy)
        self.end_headers()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the page moved on (a refresh)
            self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:
        log.debug("%s %s", self.address_string(), format % args)


def image_type(content_type: str) -> str | None:
    """The allowed image type that CouchDB's Content-Type header names, or None if it names another."""
    media_type = content_type.partition(";")[0].strip().lower()
    return media_type if media_type in CONTENT_TYPES else None
