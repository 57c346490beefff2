"""`tinyfm serve RUN`: a run's ONNX model over HTTP (FastAPI + uvicorn), with micro-batching and a web page.

Endpoints: ``GET /`` (the page), ``GET /health``, ``GET /v1/models`` (the run's variants and their measured
figures from results.json), ``POST /v1/predict`` (JSON ``{"inputs": ...}`` or a multipart upload in field
``file``; top-k labels with probabilities), ``GET /metrics`` (Prometheus text), ``GET /docs`` and
``GET /openapi.json`` (FastAPI's own). Bad requests get a 4xx JSON body ``{"error", "field", "expected"}``;
no traceback ever reaches a client.

One ONNX Runtime session per process, with explicit intra-op threads; ``--workers N`` starts N processes
(uvicorn's multiprocess mode), each with its own session and its share of the cores.

Example:
    cfg = ServeConfig(variant="int8-static", port=8000)
    app = create_app(load_service("runs/fashion-mnist", cfg), cfg)   # or: serve("runs/fashion-mnist", cfg)
"""

# No `from __future__ import annotations` here: FastAPI reads the endpoints' annotations (Request, Query) at
# runtime, and those are imported inside the functions that define the routes.
import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tinyfm.deploy.adapters import InputAdapter, InputError, create_adapter
from tinyfm.deploy.metrics import ServeMetrics
from tinyfm.deploy.middleware import BodyLimit, RequestMetrics
from tinyfm.errors import ConfigError, TinyfmError

log = logging.getLogger("tinyfm.serve")
BASELINE = "fp32-onnx"  # results.json's name for the run's own model.onnx
CONFIG_ENV = "TINYFM_SERVE_CONFIG"  # how `--workers N` hands the settings to each worker process
ENDPOINTS = ("/", "/health", "/v1/models", "/v1/predict", "/metrics", "/docs", "/openapi.json")


@dataclass
class ServeConfig:
    """Settings of `tinyfm serve` (each field is a CLI flag of the same name)."""

    variant: str = BASELINE
    """Variant to serve: fp32-onnx (the run's model.onnx) or a name under variants/ (see GET /v1/models)."""
    host: str = "127.0.0.1"
    """Address to bind; the loopback default keeps the server private to this machine."""
    port: int = 8000
    """TCP port (0 = any free port)."""
    workers: int = 1
    """Server processes, each with its own ONNX Runtime session."""
    threads: int | None = None
    """ORT intra-op threads per process (default: usable cores / workers, at least 1)."""
    max_batch: int = 32
    """Most samples per ONNX Runtime call when micro-batching; 1 turns micro-batching off."""
    max_wait_ms: float = 2.0
    """How long the first request of a batch waits for others to join it."""
    max_body_bytes: int = 4 * 1024 * 1024
    """Largest request body accepted (larger: HTTP 413)."""
    max_items: int = 256
    """Most samples (images, texts) in one request."""
    top_k: int = 3
    """Classes returned per sample unless the request asks for another number."""
    access_log: bool = False
    """Log every request (uvicorn's access log); off by default since it costs throughput."""

    def __post_init__(self) -> None:
        for flag, value, lo in (("--port", self.port, 0), ("--workers", self.workers, 1), ("--max-batch",
                                self.max_batch, 1), ("--max-wait-ms", self.max_wait_ms, 0), ("--max-body-bytes",
                                self.max_body_bytes, 1), ("--max-items", self.max_items, 1), ("--top-k",
                                self.top_k, 1), ("--threads", self.threads if self.threads is not None else 1, 1)):
            if value < lo:
                raise ConfigError(f"{flag}: got {value}, expected a value >= {lo}")
        if self.port > 65535:
            raise ConfigError(f"--port: got {self.port}, expected 0-65535")

    def resolved_threads(self) -> int:
        """ORT threads for one worker process."""
        if self.threads is not None:
            return self.threads
        try:  # the affinity mask is what a container or taskset lets this process use
            cores = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            cores = os.cpu_count() or 1
        return max(1, cores // self.workers)


@dataclass
class Service:
    """Everything a server process needs: the model, its input adapter and what /v1/models reports."""

    run_dir: Path
    run: str
    task: str
    variant: str
    model: Callable[[np.ndarray], np.ndarray]
    adapter: InputAdapter
    class_names: list[str]
    input_shape: list[int]
    variants: list[dict[str, Any]] = field(default_factory=list)
    threads: int = 1

    def models_info(self) -> dict[str, Any]:
        """The body of GET /v1/models."""
        return {"run": self.run, "task": self.task, "served": self.variant, "threads": self.threads,
                "input_shape": self.input_shape, "class_names": self.class_names,
                "inputs": self.adapter.describe(), "variants": self.variants}


def _read_optional_json(path: Path) -> dict[str, Any]:
    from tinyfm.io import read_json

    return read_json(path) if path.is_file() else {}


def list_variants(run_dir: str | Path) -> dict[str, Path]:
    """Servable ONNX files of a run by variant name: fp32-onnx -> model.onnx, NAME -> variants/NAME/model.onnx."""
    run_dir = Path(run_dir)
    found = {BASELINE: run_dir / "model.onnx"} if (run_dir / "model.onnx").is_file() else {}
    for p in sorted((run_dir / "variants").glob("*/model.onnx")):
        found[p.parent.name] = p
    return found


def _variant_rows(results: dict[str, Any], files: dict[str, Path], served: str) -> list[dict[str, Any]]:
    """results.json's measured figures for every variant, flagged servable (has an ONNX file) and served."""
    keys = ("name", "runtime", "test_accuracy", "params", "macs", "size_bytes", "latency_ms_p50", "latency_ms_p95",
            "throughput_per_s", "threads")
    rows, seen = [], set()
    for r in results.get("variants", []):
        rows.append({**{k: r.get(k) for k in keys}, "servable": r["name"] in files, "served": r["name"] == served})
        seen.add(r["name"])
    for name in files.keys() - seen:  # exported but never measured
        rows.append({**dict.fromkeys(keys), "name": name, "runtime": "onnxruntime", "servable": True,
                     "served": name == served})
    return rows


def load_service(run_dir: str | Path, cfg: ServeConfig) -> Service:
    """Open the chosen variant of a run in one ONNX Runtime session; every problem is a TinyfmError naming it."""
    from tinyfm.deploy.runtime import OrtModel

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise TinyfmError(f"{run_dir}: run directory not found")
    files = list_variants(run_dir)
    if not files:
        raise TinyfmError(f"{run_dir}: no model.onnx in this run (write one with `tinyfm export {run_dir}`)")
    if cfg.variant not in files:
        raise TinyfmError(f"--variant: {cfg.variant!r} is not a servable variant of {run_dir} "
                          f"(available: {', '.join(files)})")
    results = _read_optional_json(run_dir / "results.json")
    spec = _read_optional_json(run_dir / "model.json")
    task = results.get("task") or _read_optional_json(run_dir / "config.json").get("task") or "image-classification"
    own = files[cfg.variant].parent
    adapter = create_adapter(task, run_dir, spec, max_items=cfg.max_items,  # an unsupported task: refuse to start
                             model_dir=own if (own / "tokenizer.json").is_file() else run_dir)
    threads = cfg.resolved_threads()
    model = OrtModel(files[cfg.variant], threads=threads)
    names = list(results.get("class_names") or spec.get("class_names") or [])
    return Service(run_dir=run_dir, run=results.get("run") or run_dir.name, task=task, variant=cfg.variant,
                   model=model, adapter=adapter, class_names=names, input_shape=list(spec.get("input_shape", [])),
                   variants=_variant_rows(results, files, cfg.variant), threads=threads)


def top_k(logits: np.ndarray, names: list[str], k: int) -> list[list[dict[str, Any]]]:
    """Softmax top-k per row as [{"label", "index", "probability"}], best first (as `tinyfm predict` prints)."""
    z = logits.astype(np.float64)
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    k = min(k, p.shape[1])
    order = np.argsort(-p, axis=1, kind="stable")[:, :k]
    return [[{"label": names[i] if i < len(names) else str(i), "index": int(i), "probability": float(row[i])}
             for i in idx] for row, idx in zip(p, order, strict=True)]


# ---- the HTTP application -------------------------------------------------------------------------------------

def create_app(service: Service, cfg: ServeConfig):
    """The FastAPI application serving `service` (see the module docstring for its endpoints)."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI

    from tinyfm.deploy.batching import MicroBatcher

    metrics = ServeMetrics({"run": service.run, "variant": service.variant, "task": service.task})

    def on_batch(n: int, seconds: float) -> None:
        metrics.batch_size.observe(n)
        metrics.inference.observe(seconds)
        metrics.samples.inc(n)

    batcher = MicroBatcher(service.model, max_batch=cfg.max_batch, max_wait_ms=cfg.max_wait_ms,
                           collate=service.adapter.collate, on_batch=on_batch)

    @asynccontextmanager
    async def lifespan(app):
        await batcher.start()
        yield
        await batcher.stop()

    from tinyfm import __version__

    app = FastAPI(title=f"tinyfm serve: {service.run}", version=__version__, lifespan=lifespan,
                  description=f"{service.task} with variant {service.variant} of run {service.run}.")
    app.state.service, app.state.metrics, app.state.batcher, app.state.config = service, metrics, batcher, cfg
    _add_error_handlers(app)
    _add_routes(app, service, cfg, metrics, batcher)
    app.add_middleware(BodyLimit, max_bytes=cfg.max_body_bytes)
    app.add_middleware(RequestMetrics, metrics=metrics, endpoints=ENDPOINTS)  # outermost: counts the 413s too
    return app


def _error(status: int, field_: str, message: str, expected: str):
    from fastapi.responses import JSONResponse

    return JSONResponse({"error": message, "field": field_, "expected": expected}, status_code=status)


def _add_error_handlers(app) -> None:
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException

    @app.exception_handler(InputError)
    async def _input_error(request, exc: InputError):
        return _error(exc.status, exc.field, exc.message, exc.expected)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request, exc: RequestValidationError):
        err = (exc.errors() or [{}])[0]
        name = ".".join(str(p) for p in err.get("loc", ())[1:]) or "request"
        return _error(422, name, f"{name}: {err.get('msg', 'invalid value')}", _expected_for(name))

    @app.exception_handler(HTTPException)
    async def _http_error(request, exc: HTTPException):
        return _error(exc.status_code, "path", f"{request.url.path}: {exc.detail}",
                      f"one of {', '.join(ENDPOINTS)}")

    @app.exception_handler(Exception)
    async def _internal_error(request, exc: Exception):
        log.exception("error answering %s %s", request.method, request.url.path)
        return _error(500, "server", "internal server error (logged on the server)", "a retry or a bug report")


def _expected_for(name: str) -> str:
    return {"top_k": "an integer >= 1", "invert": "true or false"}.get(name, "see GET /openapi.json")


PREDICT_BODY = {
    "content": {
        "application/json": {"schema": {"type": "object", "required": ["inputs"], "properties": {
            "inputs": {"description": "one sample or a list: an image as nested lists (uint8 0-255 or floats in "
                                      "[0, 1]), or a text / list of texts"},
            "top_k": {"type": "integer", "minimum": 1}, "invert": {"type": "boolean"}}}},
        "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
            "file": {"type": "string", "format": "binary", "description": "PNG/JPEG/.npy image or WAV"}}}},
    },
    "required": True,
}


ERROR_SCHEMA = {"type": "object", "required": ["error", "field", "expected"], "properties": {
    "error": {"type": "string"}, "field": {"type": "string"}, "expected": {"type": "string"}}}
PREDICT_SCHEMA = {"type": "object", "properties": {
    "run": {"type": "string"}, "variant": {"type": "string"}, "task": {"type": "string"},
    "predictions": {"type": "array", "description": "one ranking per input", "items": {"type": "array", "items": {
        "type": "object", "properties": {"label": {"type": "string"}, "index": {"type": "integer"},
                                         "probability": {"type": "number"}}}}}}}


def _add_routes(app, service: Service, cfg: ServeConfig, metrics: ServeMetrics, batcher) -> None:
    from fastapi import Query, Request
    from fastapi.responses import HTMLResponse, JSONResponse, Response

    started = time.time()
    page = _index_html()
    errors = {s: {"description": d, "content": {"application/json": {"schema": ERROR_SCHEMA}}} for s, d in (
        (400, "unparseable body"), (413, "body or batch too large"), (415, "wrong kind of payload"),
        (422, "invalid inputs"))}
    errors[200] = {"description": "top-k classes per input, best first",
                   "content": {"application/json": {"schema": PREDICT_SCHEMA}}}

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/health", summary="Liveness: the model is loaded and answering")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "run": service.run, "variant": service.variant, "task": service.task,
                "uptime_s": round(time.time() - started, 3), "pid": os.getpid()}

    @app.get("/v1/models", summary="The run's variants with their measured accuracy, size and latency")
    async def models() -> dict[str, Any]:
        return service.models_info()

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def prometheus() -> Response:
        from tinyfm.deploy.metrics import CONTENT_TYPE

        return Response(metrics.render(), media_type=CONTENT_TYPE)

    @app.post("/v1/predict", summary="Top-k classes for one or more inputs", responses=errors,
              openapi_extra={"requestBody": PREDICT_BODY})
    async def predict(request: Request, top_k_: int = Query(cfg.top_k, alias="top_k", ge=1, le=1000),
                      invert: bool = Query(False, description="1 - pixel (dark object on light background)"),
                      filename: str = Query("body", description="name of a raw (non-multipart) upload")
                      ) -> JSONResponse:
        options: dict[str, Any] = {"invert": invert, "top_k": top_k_, "filename": filename}
        x = await _read_inputs(request, service.adapter, options)
        logits = await batcher.submit(x)
        return JSONResponse({"run": service.run, "variant": service.variant, "task": service.task,  # as is: no
                             "predictions": top_k(logits, service.class_names, options["top_k"])})  # re-encoding


def _index_html() -> str:
    from importlib.resources import files

    return files("tinyfm.deploy").joinpath("static/index.html").read_text(encoding="utf-8")


async def _read_inputs(request, adapter: InputAdapter, options: dict[str, Any]) -> np.ndarray:
    """The request's model batch: JSON ``inputs``, a multipart ``file``, or a raw image/audio body."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype in ("application/json", ""):
        return adapter.from_json(_json_inputs(await request.body(), options), options)
    if ctype == "multipart/form-data":
        data, name = await _multipart_file(request)
        return adapter.from_upload(data, name, options)
    if ctype.startswith(("image/", "audio/")) or ctype == "application/octet-stream":
        return adapter.from_upload(await request.body(), options["filename"], options)
    raise InputError("content-type", f"content-type: {ctype!r} is not accepted",
                     "application/json, multipart/form-data, image/*, audio/* or application/octet-stream", 415)


def _json_inputs(body: bytes, options: dict[str, Any]) -> Any:
    """Parse the JSON body; its optional top_k / invert override the query parameters."""
    expected = 'a JSON object {"inputs": ...}'
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        msg = e.msg if isinstance(e, json.JSONDecodeError) else "not UTF-8"
        raise InputError("body", f"body: not valid JSON ({msg})", expected, status=400) from None
    except RecursionError:  # [[[[...]]]] thousands deep: Python's parser gives up before any shape check
        raise InputError("body", "body: JSON nested too deeply", expected, status=400) from None
    if not isinstance(doc, dict) or "inputs" not in doc:
        raise InputError("inputs", "inputs: missing from the JSON body", expected)
    _json_options(doc, options)
    return doc["inputs"]


def _json_options(doc: Mapping[str, Any], options: dict[str, Any]) -> None:
    if "top_k" in doc:
        k = doc["top_k"]
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= 1000:
            raise InputError("top_k", f"top_k: got {k!r}", "an integer from 1 to 1000")
        options["top_k"] = k
    if "invert" in doc:
        if not isinstance(doc["invert"], bool):
            raise InputError("invert", f"invert: got {doc['invert']!r}", "true or false")
        options["invert"] = doc["invert"]


async def _multipart_file(request) -> tuple[bytes, str]:
    """The bytes and file name of the multipart field ``file``."""
    expected = "a multipart/form-data body with the file in field 'file'"
    try:
        form = await request.form()
    except Exception as e:  # python-multipart's parse errors (MultiPartException and kin)
        raise InputError("body", f"body: malformed multipart data ({e})", expected, status=400) from None
    try:
        upload = form.get("file")
        if upload is None or not hasattr(upload, "read"):
            raise InputError("file", "file: missing (no upload in multipart field 'file')", expected)
        return await upload.read(), upload.filename or "upload"
    finally:
        await form.close()


# ---- running it ------------------------------------------------------------------------------------------------

def serve(run_dir: str | Path, cfg: ServeConfig) -> None:
    """Run the server until Ctrl-C / SIGTERM (blocking). Loads the model first, so a bad run fails before binding."""
    _check_installed()
    import uvicorn

    service = load_service(run_dir, cfg)  # here first, so every error surfaces before a port is bound
    common = {"host": cfg.host, "port": cfg.port, "access_log": cfg.access_log, "log_level": "info"}
    if cfg.workers == 1:
        uvicorn.run(create_app(service, cfg), **common)
        return
    del service  # each worker process opens its own session
    os.environ[CONFIG_ENV] = json.dumps({"run_dir": str(Path(run_dir).resolve()), **asdict(cfg)})
    uvicorn.run("tinyfm.deploy.serve:app_from_env", factory=True, workers=cfg.workers, **common)


def _check_installed() -> None:
    from importlib.util import find_spec

    needed = {"fastapi": ["fastapi"], "uvicorn": ["uvicorn"], "python-multipart": ["python_multipart", "multipart"]}
    missing = [pkg for pkg, mods in needed.items() if not any(find_spec(m) for m in mods)]
    if missing:
        raise TinyfmError(f"tinyfm serve needs {', '.join(missing)}: pip install 'tinyfm[serve]'")


def app_from_env():
    """uvicorn factory for worker processes: the app for the run and settings in $TINYFM_SERVE_CONFIG."""
    settings = json.loads(os.environ[CONFIG_ENV])
    run_dir = settings.pop("run_dir")
    cfg = ServeConfig(**settings)
    return create_app(load_service(run_dir, cfg), cfg)
