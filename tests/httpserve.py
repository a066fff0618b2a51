"""Small HTTP servers that tests start on a free loopback port: model and node downloads, input URLs, a
fake RunPod endpoint, the Drive server."""

from __future__ import annotations

import contextlib
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@contextlib.contextmanager
def serve_http(handler: type[BaseHTTPRequestHandler], *,
               tls: ssl.SSLContext | None = None) -> Iterator[ThreadingHTTPServer]:
    """`handler` served from a background thread (over TLS with `tls`); stopped and closed on exit."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
