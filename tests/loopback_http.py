"""A real HTTP server on 127.0.0.1 for download tests: serves files from a
directory, honours single ``Range: bytes=N-`` requests, and can be told to cut
the connection after some bytes of a file or to ignore Range."""

from __future__ import annotations

import re
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

_RANGE = re.compile(r"bytes=(\d+)-$")


@dataclass
class Behaviour:
    drop_after: dict[str, int] = field(default_factory=dict)  # path -> bytes of body sent before cutting
    drops_left: dict[str, int] = field(default_factory=dict)  # path -> how many requests still get cut
    ignore_range: bool = False
    unavailable: int = 0  # answer this many requests with 503 first
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range header)


class _Handler(BaseHTTPRequestHandler):
    server_version = "loopback-test"

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:
        behaviour: Behaviour = self.server.behaviour
        root: Path = self.server.root
        name = self.path.lstrip("/")
        behaviour.requests.append((self.path, self.headers.get("Range")))
        path = root / name
        if behaviour.unavailable > 0:
            behaviour.unavailable -= 1
            self.send_error(503, "try again")
            return
        if not name or not path.is_file():
            self.send_error(404, "not found")
            return
        data = path.read_bytes()
        start = 0
        match = _RANGE.match(self.headers.get("Range", ""))
        if match and not behaviour.ignore_range:
            start = int(match.group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if behaviour.drops_left.get(self.path, 0) > 0:
            behaviour.drops_left[self.path] -= 1
            self.wfile.write(body[: behaviour.drop_after[self.path]])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        self.wfile.write(body)


class LoopbackServer:
    def __init__(self, root: Path) -> None:
        self.behaviour = Behaviour()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.root = root
        self._server.behaviour = self.behaviour
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    def url(self, name: str) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/{name}"

    def drop(self, name: str, after: int, times: int = 1) -> None:
        self.behaviour.drop_after[f"/{name}"] = after
        self.behaviour.drops_left[f"/{name}"] = times

    def __enter__(self) -> "LoopbackServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def closed_port() -> int:
    """A port on 127.0.0.1 on which nothing listens (connections are refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
