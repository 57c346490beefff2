"""ASGI middleware of `tinyfm serve`: the body limit answers 413 (declared or streamed), metrics count responses."""

from __future__ import annotations

import asyncio
import json

from tinyfm.deploy.metrics import ServeMetrics
from tinyfm.deploy.middleware import BodyLimit, RequestMetrics


async def _echo_length(scope, receive, send) -> None:
    """An app that reads the whole body and answers its length."""
    size, more = 0, True
    while more:
        message = await receive()
        size += len(message.get("body", b""))
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": str(size).encode()})


def _call(app, chunks: list[bytes], headers: list[tuple[bytes, bytes]] = (), path: str = "/v1/predict"):
    scope = {"type": "http", "method": "POST", "path": path, "headers": list(headers)}
    queue = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
    sent = []

    async def receive():
        return queue.pop(0)

    async def send(message):
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent[0]["status"], sent[1]["body"]


def test_body_limit():
    app = BodyLimit(_echo_length, max_bytes=10)
    assert _call(app, [b"12345", b"12345"]) == (200, b"10")
    status, body = _call(app, [b"123456", b"123456"])  # streamed, no content-length
    assert status == 413 and json.loads(body)["field"] == "body"
    status, body = _call(app, [b"x"], headers=[(b"content-length", b"11")])  # refused before reading
    assert status == 413 and "at most 10" in json.loads(body)["error"]
    assert _call(app, [b"x"], headers=[(b"content-length", b"nonsense")])[0] == 413


def test_request_metrics_counts_by_endpoint_and_status():
    m = ServeMetrics()
    app = RequestMetrics(BodyLimit(_echo_length, max_bytes=4), metrics=m, endpoints=("/v1/predict",))
    _call(app, [b"ok"])
    _call(app, [b"too long"])
    _call(app, [b"ok"], path="/unknown")
    assert m.requests.value(endpoint="/v1/predict", method="POST", status="200") == 1
    assert m.requests.value(endpoint="/v1/predict", method="POST", status="413") == 1
    assert m.requests.value(endpoint="other", method="POST", status="200") == 1
    assert m.latency.count == 3 and m.predict_latency.count == 2
