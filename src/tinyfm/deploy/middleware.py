"""Pure ASGI middleware of `tinyfm serve`: a request-body limit (HTTP 413) and per-request metrics.

Pure ASGI rather than Starlette's BaseHTTPMiddleware: no extra task and body copy per request.
"""

from __future__ import annotations

import json
import time

from tinyfm.deploy.metrics import ServeMetrics


class _TooLarge(Exception):
    """Raised from `receive` once a streamed body passes the limit; BodyLimit turns it into a 413."""


class BodyLimit:
    """Refuse request bodies over `max_bytes` with 413: by Content-Length up front, or while streaming."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers", [])).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            return await self._refuse(send, length.decode("latin-1"))
        seen, started = 0, False

        async def limited_receive():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise _TooLarge
            return message

        async def tracking_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await self._refuse(send, f"more than {self.max_bytes}")

    async def _refuse(self, send, got: str) -> None:
        body = json.dumps({"error": f"body: {got} bytes, at most {self.max_bytes} accepted", "field": "body",
                           "expected": f"a request body of at most {self.max_bytes} bytes"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


class RequestMetrics:
    """Count every response by endpoint, method and status, and time it."""

    def __init__(self, app, metrics: ServeMetrics, endpoints: tuple[str, ...]) -> None:
        self.app, self.metrics, self.endpoints = app, metrics, endpoints

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0, status = time.perf_counter(), 500

        async def tracking_send(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        finally:
            seconds = time.perf_counter() - t0
            path = scope["path"] if scope["path"] in self.endpoints else "other"
            self.metrics.requests.inc(endpoint=path, method=scope["method"], status=str(status))
            self.metrics.latency.observe(seconds)
            if path == "/v1/predict":
                self.metrics.predict_latency.observe(seconds)
