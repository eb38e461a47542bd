"""Integration test support: a recording reverse proxy, a recording transport adapter, scenario context.

The proxy is a threaded ``http.server`` on 127.0.0.1 (ephemeral port): it forwards every request to the upstream base,
records method, path and the Authorization header, and rewrites the upstream base URL in response
bodies (Bundle links, fullUrl) to its own, so paging stays on the proxy's origin.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import requests

from cds_service.fixtures import read_drafts, selections_for

HOOKS_UNDER_TEST = ("patient-view", "order-sign")


@dataclass(frozen=True)
class Seen:
    method: str
    path: str  # path + query, as received
    authorization: str | None


class RecordingProxy:
    def __init__(self, upstream_base: str):
        self.upstream_base = upstream_base.rstrip("/")
        up = urlsplit(self.upstream_base)
        self.upstream_origin = f"{up.scheme}://{up.netloc}"
        self.prefix = up.path  # e.g. /fhir
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        self._session = requests.Session()
        self._session.trust_env = False
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}{self.prefix}"
        self._thread = threading.Thread(target=self.server.serve_forever, name="fhir-recording-proxy", daemon=True)

    def __enter__(self) -> RecordingProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)

    def clear(self) -> None:
        with self._lock:
            self.seen.clear()

    def requests(self) -> list[Seen]:
        with self._lock:
            return list(self.seen)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # quiet
                pass

            def _forward(self) -> None:
                with proxy._lock:
                    proxy.seen.append(Seen(self.command, self.path, self.headers.get("Authorization")))
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() in ("accept", "content-type", "authorization", "prefer")}
                try:
                    resp = proxy._session.request(self.command, proxy.upstream_origin + self.path, data=body,
                                                  headers=headers, timeout=30, allow_redirects=False)
                except requests.RequestException as exc:
                    payload = f"upstream unreachable: {type(exc).__name__}".encode()
                    self.send_response(502)
                    self.send_header("Content-Type", "text/plain")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                content = resp.content.replace(proxy.upstream_base.encode(), proxy.base.encode())
                self.send_response(resp.status_code)
                self.send_header("Content-Type", resp.headers.get("Content-Type", "application/fhir+json"))
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            do_GET = do_POST = do_PUT = do_DELETE = _forward

        return Handler


class RecordingAdapter(requests.adapters.BaseAdapter):
    """Wraps the gateway's real (retrying) adapter and records every URL the service tries to reach."""

    def __init__(self, inner: requests.adapters.BaseAdapter, log: list[str]):
        super().__init__()
        self.inner, self.log = inner, log

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        self.log.append(request.url or "")
        return self.inner.send(request, **kwargs)

    def close(self) -> None:
        self.inner.close()


def scenario_context(scenario, hook: str) -> dict[str, Any]:
    """draft_orders / selections for the stand-in, as the fixture index declares them."""
    if hook == "patient-view":
        return {}
    drafts = read_drafts(scenario)
    out: dict[str, Any] = {"draft_orders": drafts}
    if hook == "order-select":
        out["selections"] = selections_for(scenario, drafts)
    return out
