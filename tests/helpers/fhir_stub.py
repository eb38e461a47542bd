"""A threaded FHIR stub server on 127.0.0.1 that records every request (headers included).

By default it answers reads (``Type/id``) and searches (``Type?...``) from the resources it was
given, as searchset Bundles. ``stub.on(resource_type, handler)`` replaces the answer for one
resource type with a fault (slow, 401, non-JSON, paging forever, ...).
"""
from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.helpers.fhir import bundle, operation_outcome


@dataclass
class Recorded:
    method: str
    path: str  # path below the FHIR base, e.g. "Observation" or "Patient/p1"
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names
    url: str  # full URL as requested

    @property
    def resource_type(self) -> str:
        return self.path.split("/", 1)[0]


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # dict/list -> JSON; str/bytes -> sent as is
    content_type: str = "application/fhir+json"
    delay: float = 0.0  # seconds before the answer is sent
    trickle: float = 0.0  # seconds between 16-byte pieces of the body (a server that sends, slowly)
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[Recorded], Reply]


class FhirStub:
    def __init__(self, resources: list[dict] | None = None, base_path: str = "/fhir"):
        self.base_path = base_path.rstrip("/")
        self.resources: list[dict] = list(resources or [])
        self.handlers: dict[str, Handler] = {}
        self.requests: list[Recorded] = []
        self.disconnects: list[float] = []  # time.monotonic() when a client went away mid-answer
        self._lock = threading.Lock()
        stub = self

        class _RequestHandler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # no 40 ms Nagle/delayed-ACK stalls in measured times

            def do_GET(self) -> None:  # noqa: N802
                stub._serve(self)

            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _RequestHandler)
        self._server.daemon_threads = True
        self._server.block_on_close = False
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    # ------------------------------------------------------------------ lifecycle
    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return self.origin + self.base_path

    def start(self) -> FhirStub:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FhirStub:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # ------------------------------------------------------------------ configuration
    def on(self, resource_type: str, handler: Handler | Reply) -> FhirStub:
        self.handlers[resource_type] = handler if callable(handler) else (lambda _req, r=handler: r)
        return self

    def calls(self, resource_type: str | None = None) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if resource_type is None or r.resource_type == resource_type]

    # ------------------------------------------------------------------ serving
    def default_reply(self, req: Recorded) -> Reply:
        rtype, _, rid = req.path.partition("/")
        if rid:
            for r in self.resources:
                if r.get("resourceType") == rtype and r.get("id") == rid:
                    return Reply(body=r)
            return Reply(404, operation_outcome(f"{rtype}/{rid} not found"))
        return Reply(body=bundle(*(r for r in self.resources if r.get("resourceType") == rtype)))

    def _serve(self, h: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(h.path)
        path = parts.path
        if path.startswith(self.base_path + "/"):
            path = path[len(self.base_path) + 1:]
        req = Recorded("GET", path, parse_qs(parts.query), {k.lower(): v for k, v in h.headers.items()},
                       self.origin + h.path)
        with self._lock:
            self.requests.append(req)
        handler = self.handlers.get(req.resource_type, self.default_reply)
        reply = handler(req)
        if reply.delay:
            time.sleep(reply.delay)
        if isinstance(reply.body, (dict, list)):
            payload = json.dumps(reply.body).encode()
        elif isinstance(reply.body, str):
            payload = reply.body.encode()
        else:
            payload = reply.body or b""
        try:
            h.send_response(reply.status)
            h.send_header("Content-Type", reply.content_type)
            h.send_header("Content-Length", str(len(payload)))
            for k, v in reply.headers.items():
                h.send_header(k, v)
            h.end_headers()
            if reply.trickle:
                for i in range(0, len(payload), 16):
                    h.wfile.write(payload[i:i + 16])
                    h.wfile.flush()
                    time.sleep(reply.trickle)
            else:
                h.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (deadline)
            with self._lock:
                self.disconnects.append(time.monotonic())


def paging_forever(base_url: str, resources_per_page: Callable[[int], list[dict]] | None = None) -> Handler:
    """A search handler whose every page links to one more page on the same origin."""

    def handler(req: Recorded) -> Reply:
        page = int(req.query.get("_page", ["1"])[0])
        items = resources_per_page(page) if resources_per_page else []
        return Reply(body=bundle(*items, next_url=f"{base_url}/{req.resource_type}?patient=p1&_page={page + 1}"))

    return handler


def closed_port_url() -> str:
    """A loopback URL where nothing listens (connection refused)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}/fhir"


@pytest.fixture
def fhir_stub():
    """A started FhirStub; import this fixture into a test module to use it."""
    with FhirStub() as stub:
        yield stub
