"""`tinyfm serve` over real HTTP on loopback: every endpoint, every bad input (4xx, then still serving),
predictions equal to `tinyfm predict`, micro-batching, `--workers`, the text/WAV paths and the page in Chromium."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import FASHION_DIR

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from tinyfm.deploy.adapters import TextAdapter, WavAdapter  # noqa: E402
from tinyfm.deploy.serve import ServeConfig, Service, create_app, load_service  # noqa: E402
from tinyfm.errors import TinyfmError  # noqa: E402

MAX_BODY = 256 * 1024
CHROMIUM = Path("/usr/bin/chromium")


@contextlib.contextmanager
def live_server(app) -> Iterator[str]:
    """Run `app` under a real uvicorn on 127.0.0.1 (a free port) in a thread; yields the base URL."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A small real run: seed-cnn, 1 epoch on 1,500 Fashion-MNIST images, fp32 ONNX + an int8 variant, measured."""
    from tinyfm.config import load_recipe
    from tinyfm.pipeline import run

    if not (FASHION_DIR / "train-images-idx3-ubyte.gz").exists():
        pytest.skip("Fashion-MNIST not installed (run scripts/setup.sh)")
    cfg = load_recipe("fashion-mnist", {
        "data.train_subset": 1500, "data.val_size": 300, "data.test_subset": 300, "train.epochs": 1,
        "train.threads": 2, "measure.threads": 1, "measure.repeats": 1, "measure.latency_iters": 5,
        "measure.throughput_iters": 1, "measure.throughput_batch": 32, "measure.warmup": 1,
        "compress.variants": [{"name": "int8-static", "passes": [{"pass": "quantize", "mode": "static"}]}]})
    cfg.name = "serve-test"
    out, _ = run(cfg, tmp_path_factory.mktemp("serve") / "run", quiet=True)
    return out


@pytest.fixture(scope="module")
def images(run_dir, tmp_path_factory) -> list[tuple[Path, int]]:
    """Eight Fashion-MNIST test images as PNG files (the last one as .npy) with their true labels."""
    from PIL import Image

    from tinyfm.data.idx import read_idx

    x = read_idx(FASHION_DIR / "t10k-images-idx3-ubyte.gz")[:8]
    y = read_idx(FASHION_DIR / "t10k-labels-idx1-ubyte.gz")[:8]
    d = tmp_path_factory.mktemp("images")
    paths = []
    for i, a in enumerate(x[:-1]):
        Image.fromarray(a).save(d / f"test{i}.png")
        paths.append(d / f"test{i}.png")
    np.save(d / "test7.npy", x[-1])
    return list(zip([*paths, d / "test7.npy"], y.tolist(), strict=True))


@pytest.fixture(scope="module")
def url(run_dir) -> Iterator[str]:
    cfg = ServeConfig(max_batch=16, max_wait_ms=20, max_body_bytes=MAX_BODY, threads=1)
    with live_server(create_app(load_service(run_dir, cfg), cfg)) as base:
        yield base


def post_file(url: str, path: Path, **params) -> httpx.Response:
    return httpx.post(f"{url}/v1/predict", params=params, files={"file": (path.name, path.read_bytes())})


def post_json(url: str, doc, **params) -> httpx.Response:
    return httpx.post(f"{url}/v1/predict", params=params, json=doc)


# ---- endpoints -------------------------------------------------------------------------------------------------

def test_health(url):
    r = httpx.get(f"{url}/health")
    assert r.status_code == 200
    assert r.json() | {"uptime_s": 0, "pid": 0} == {"status": "ok", "run": "serve-test", "variant": "fp32-onnx",
                                                    "task": "image-classification", "uptime_s": 0, "pid": 0}


def test_models_lists_variants_with_measured_figures(url, run_dir):
    info = httpx.get(f"{url}/v1/models").json()
    results = json.loads((run_dir / "results.json").read_text())
    assert info["served"] == "fp32-onnx" and info["task"] == "image-classification"
    assert info["input_shape"] == [1, 28, 28] and len(info["class_names"]) == 10
    by_name = {v["name"]: v for v in info["variants"]}
    assert set(by_name) == {"fp32-torch", "fp32-onnx", "int8-static"}
    for r in results["variants"]:
        for key in ("test_accuracy", "size_bytes", "latency_ms_p50", "throughput_per_s"):
            assert by_name[r["name"]][key] == r[key]
    assert by_name["fp32-onnx"]["served"] and not by_name["int8-static"]["served"]
    assert by_name["int8-static"]["servable"] and not by_name["fp32-torch"]["servable"]


def test_openapi_schema_documents_predict(url):
    schema = httpx.get(f"{url}/openapi.json").json()
    assert {"/health", "/v1/models", "/v1/predict", "/metrics"} <= set(schema["paths"])
    body = schema["paths"]["/v1/predict"]["post"]["requestBody"]["content"]
    assert {"application/json", "multipart/form-data"} <= set(body)
    assert httpx.get(f"{url}/docs").status_code == 200


def test_page_is_served(url):
    r = httpx.get(f"{url}/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "v1/predict" in r.text and "v1/models" in r.text


# ---- predictions ---------------------------------------------------------------------------------------------

def _parse_predict_output(stdout: str) -> dict[str, list[tuple[str, str]]]:
    """`tinyfm predict` lines 'PATH: label p%, label p%, ...' -> {file name: [(label, 'p%'), ...]}."""
    out = {}
    for line in stdout.strip().splitlines():
        path, _, rest = line.partition(": ")
        out[Path(path).name] = [tuple(item.rsplit(" ", 1)) for item in rest.split(", ")]
    return out


def test_predictions_equal_tinyfm_predict(url, run_dir, images):
    from tinyfm.pipeline import predict_files

    paths = [p for p, _ in images]
    cli = subprocess.run([sys.executable, "-m", "tinyfm", "predict", str(run_dir), *map(str, paths), "--onnx",
                          "-k", "3"], capture_output=True, text=True, timeout=120)
    assert cli.returncode == 0, cli.stderr
    printed = _parse_predict_output(cli.stdout)
    expected = dict(predict_files(run_dir, paths, top_k=3, onnx=True))
    for path in paths:
        preds = post_file(url, path).json()["predictions"][0]
        assert [(p["label"], f"{p['probability']:.1%}") for p in preds] == printed[path.name]
        assert [p["label"] for p in preds] == [name for name, _ in expected[path]]
        np.testing.assert_allclose([p["probability"] for p in preds], [v for _, v in expected[path]], atol=1e-5)
    torch_preds = dict(predict_files(run_dir, paths, top_k=1))  # the CLI's default (PyTorch) agrees too
    assert all(post_file(url, p).json()["predictions"][0][0]["label"] == torch_preds[p][0][0] for p in paths)


def test_json_inputs_and_uploads_agree(url, images):
    from tinyfm.data.images import load_image

    paths = [p for p, _ in images]
    arrays = [np.rint(load_image(p)[0] * 255).astype(int).tolist() for p in paths]
    batch = post_json(url, {"inputs": arrays, "top_k": 2}).json()["predictions"]
    assert len(batch) == len(paths)
    for path, from_json in zip(paths, batch, strict=True):
        from_upload = post_file(url, path, top_k=2).json()["predictions"][0]
        assert [p["label"] for p in from_json] == [p["label"] for p in from_upload]
        np.testing.assert_allclose([p["probability"] for p in from_json], [p["probability"] for p in from_upload],
                                   atol=1e-5)
    raw = httpx.post(f"{url}/v1/predict", content=paths[0].read_bytes(), headers={"content-type": "image/png"})
    assert raw.json()["predictions"][0][0]["label"] == batch[0][0]["label"]


def test_concurrent_requests_are_batched_and_all_answered(url, images):
    path = images[0][0]
    single = post_file(url, path, top_k=10).json()["predictions"][0]
    before = _metric(url, "tinyfm_batch_size_count")

    async def fire(n: int) -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            data = path.read_bytes()
            return await asyncio.gather(*(client.post("/v1/predict", params={"top_k": 10},
                                                      files={"file": (path.name, data)}) for _ in range(n)))

    responses = asyncio.run(fire(24))
    assert [r.status_code for r in responses] == [200] * 24
    for r in responses:
        np.testing.assert_allclose([p["probability"] for p in r.json()["predictions"][0]],
                                   [p["probability"] for p in single], atol=1e-5)
    calls = _metric(url, "tinyfm_batch_size_count") - before
    assert calls < 24, f"24 concurrent requests took {calls} ORT calls: no micro-batching happened"


def _metric(url: str, name: str) -> float:
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics(url, images):
    post_file(url, images[0][0])
    r = httpx.get(f"{url}/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    assert 'tinyfm_requests_total{endpoint="/v1/predict",method="POST",status="200"}' in r.text
    assert "tinyfm_request_duration_seconds_bucket" in r.text and "tinyfm_batch_size_bucket" in r.text
    assert _metric(url, "tinyfm_predicted_samples_total") >= 1


# ---- bad input: 4xx with a JSON error naming the field, and the server keeps serving ---------------------------

def _png_of(shape: tuple[int, ...]) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.zeros(shape, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _wav() -> bytes:
    from tests.test_deploy_adapters import wav_bytes

    return wav_bytes(np.zeros(800, np.int16))


BAD_REQUESTS = {
    "wrong shape": (dict(json={"inputs": np.zeros((27, 28), int).tolist()}), 422, "inputs"),
    "wrong shape in a list": (dict(json={"inputs": [np.zeros((28, 28)).tolist()] * 2 + [[[0.0]]]}), 422, "inputs"),
    "wrong dtype (strings)": (dict(json={"inputs": [["x"] * 28] * 28}), 422, "inputs"),
    "wrong dtype (booleans)": (dict(json={"inputs": [[False] * 28] * 28}), 422, "inputs"),
    "ints out of range": (dict(json={"inputs": [[-1] * 28] * 28}), 422, "inputs"),
    "floats out of range": (dict(json={"inputs": [[2.0] * 28] * 28}), 422, "inputs"),
    "text to an image run": (dict(json={"inputs": "a red dress"}), 422, "inputs"),
    "missing inputs": (dict(json={"images": []}), 422, "inputs"),
    "bad top_k in body": (dict(json={"inputs": [[0] * 28] * 28, "top_k": "three"}), 422, "top_k"),
    "bad top_k in query": (dict(json={"inputs": [[0] * 28] * 28}, params={"top_k": 0}), 422, "top_k"),
    "malformed JSON": (dict(content=b'{"inputs": [', headers={"content-type": "application/json"}), 400, "body"),
    "JSON nested too deeply": (dict(content=b'{"inputs": ' + b"[" * 100000 + b"]" * 100000 + b"}",
                                    headers={"content-type": "application/json"}), 400, "body"),
    "non-image bytes": (dict(files={"file": ("notes.png", b"these are not pixels")}), 415, "file"),
    "WAV to an image run": (dict(files={"file": ("a.wav", _wav())}), 415, "file"),
    "image of the wrong size": (dict(files={"file": ("big.png", _png_of((32, 32)))}), 422, "file"),
    "missing file field": (dict(files={"upload": ("a.png", _png_of((28, 28)))}), 422, "file"),
    "raw non-image body": (dict(content=b"\x00" * 100, headers={"content-type": "image/png"}), 415, "file"),
    "unsupported content type": (dict(content=b"hello", headers={"content-type": "text/plain"}), 415,
                                 "content-type"),
    "oversized body": (dict(content=b"0" * (MAX_BODY + 1), headers={"content-type": "application/json"}), 413,
                       "body"),
    "oversized streamed body": (dict(content=iter([b"0" * 65536] * 8), headers={"content-type": "application/json"}),
                                413, "body"),
    "too many images": (dict(json={"inputs": np.zeros((257, 1, 1), np.uint8).tolist()}), 413, "inputs"),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_input_is_a_4xx_naming_the_field_then_serving_goes_on(url, images, case):
    kwargs, status, field = BAD_REQUESTS[case]
    r = httpx.post(f"{url}/v1/predict", **kwargs)
    assert r.status_code == status, r.text
    body = r.json()
    assert body["field"] == field and body["expected"] and body["error"].startswith(field), body
    assert "Traceback" not in r.text and "File \"" not in r.text
    assert post_file(url, images[0][0]).status_code == 200


def test_unknown_path_and_method(url):
    r = httpx.get(f"{url}/v2/nothing")
    assert r.status_code == 404 and r.json()["field"] == "path"
    assert httpx.get(f"{url}/v1/predict").status_code == 405


# ---- runs, variants, CLI -------------------------------------------------------------------------------------

def test_load_service_variants_and_errors(run_dir, tmp_path):
    service = load_service(run_dir, ServeConfig(variant="int8-static", threads=1))
    assert service.variant == "int8-static" and service.model.path.parent.name == "int8-static"
    assert [v["name"] for v in service.variants if v["served"]] == ["int8-static"]
    with pytest.raises(TinyfmError, match=r"--variant: 'int9' .*available: fp32-onnx, int8-static"):
        load_service(run_dir, ServeConfig(variant="int9"))
    with pytest.raises(TinyfmError, match="run directory not found"):
        load_service(tmp_path / "missing", ServeConfig())
    with pytest.raises(TinyfmError, match="no model.onnx"):
        load_service(tmp_path, ServeConfig())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cli_serve_with_two_workers(run_dir, images):
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tinyfm", "serve", str(run_dir), "--port", str(port),
                             "--workers", "2", "--threads", "1", "--variant", "int8-static"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stdout.read()
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            assert time.monotonic() < deadline, "tinyfm serve did not come up"
            time.sleep(0.2)
        r = post_file(base, images[0][0])
        assert r.status_code == 200 and r.json()["variant"] == "int8-static"
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert "Traceback" not in out


def test_cli_refuses_an_unsupported_task_at_startup(run_dir, tmp_path):
    run = tmp_path / "speech-run"
    run.mkdir()
    for name in ("model.onnx", "model.json"):
        shutil.copy(run_dir / name, run / name)
    (run / "results.json").write_text(json.dumps({"run": "speech", "task": "speech-classification"}))
    proc = subprocess.run([sys.executable, "-m", "tinyfm", "serve", str(run), "--port", str(_free_port())],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "task 'speech-classification' cannot be served yet" in proc.stderr


# ---- the text and WAV paths over HTTP (a stand-in model: text and speech runs come with issues 5 and later) ----

class _StubModel:
    """Logits that depend on the input, for any batch: class 1 when the row sums high, else class 0."""

    def __call__(self, x: np.ndarray) -> np.ndarray:
        s = x.reshape(len(x), -1).astype(np.float32).sum(axis=1)
        return np.stack([-s, s], axis=1)


def _stub_service(adapter, task: str) -> Service:
    return Service(run_dir=Path("."), run="stub", task=task, variant="stub", model=_StubModel(), adapter=adapter,
                   class_names=["negative", "positive"], input_shape=[])


def test_text_requests_over_http():
    encode = (lambda texts: np.array([[len(t)] for t in texts], np.int64))  # noqa: E731
    cfg = ServeConfig(max_wait_ms=1)
    with live_server(create_app(_stub_service(TextAdapter(encode), "text-classification"), cfg)) as base:
        r = post_json(base, {"inputs": ["a fine film", "x"], "top_k": 1})
        assert r.status_code == 200
        assert [p[0]["label"] for p in r.json()["predictions"]] == ["positive", "positive"]
        for doc, field in (({"inputs": ""}, "inputs"), ({"inputs": ["ok", "  "]}, "inputs[1]"),
                           ({"inputs": [1, 2]}, "inputs[0]")):
            bad = post_json(base, doc)
            assert bad.status_code == 422 and bad.json()["field"] == field, bad.text
        up = httpx.post(f"{base}/v1/predict", files={"file": ("a.txt", b"text")})
        assert up.status_code == 415 and up.json()["field"] == "file"
        assert post_json(base, {"inputs": "still serving"}).status_code == 200


def test_wav_requests_over_http():
    from tests.test_deploy_adapters import wav_bytes

    adapter = WavAdapter(lambda s, rate: np.abs(s).reshape(1, -1)[:, :100])
    with live_server(create_app(_stub_service(adapter, "speech-classification"), ServeConfig(max_wait_ms=1))) as base:
        loud = wav_bytes(np.full(800, 20000, np.int16))
        r = httpx.post(f"{base}/v1/predict", files={"file": ("loud.wav", loud)})
        assert r.status_code == 200 and r.json()["predictions"][0][0]["label"] == "positive"
        for name, data in (("a.png", _png_of((28, 28))), ("a.wav", b"RIFF....WAVEjunk"), ("a.wav", b"")):
            bad = httpx.post(f"{base}/v1/predict", files={"file": (name, data)})
            assert bad.status_code in (415, 422) and bad.json()["field"] == "file", bad.text
        assert post_json(base, {"inputs": [0.1, 0.2]}).status_code == 415
        assert httpx.post(f"{base}/v1/predict", files={"file": ("loud.wav", loud)}).status_code == 200


# ---- the page in a real browser ------------------------------------------------------------------------------

def test_page_in_headless_chromium(url, run_dir, images, tmp_path):
    if not CHROMIUM.exists():
        pytest.skip("no /usr/bin/chromium (scripts/setup.sh installs Debian's chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip package playwright not installed")
    from tinyfm.pipeline import predict_files

    # a test image the model classifies correctly, so "the right class" is both the truth and the prediction
    names = json.loads((run_dir / "model.json").read_text())["class_names"]
    preds = dict(predict_files(run_dir, [p for p, _ in images], top_k=1, onnx=True))
    path, label = next((p, names[y]) for p, y in images if p.suffix == ".png" and preds[p][0][0] == names[y])
    shot = tmp_path / "serve-page.png"
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 900})
            page.goto(url + "/")
            page.wait_for_selector("#variants tbody tr")
            assert page.locator("#variants tr.served td").first.inner_text() == "fp32-onnx"
            page.set_input_files("#file", str(path))
            page.wait_for_selector("#predictions .pred")
            assert page.locator("#predictions .pred .label").first.inner_text() == label
            assert page.locator("#error").inner_text() == ""
            page.screenshot(path=str(shot), full_page=True)
            page.set_input_files("#file", {"name": "junk.png", "mimeType": "image/png", "buffer": b"junk"})
            page.wait_for_function("document.getElementById('error').textContent.includes('415')")
        finally:
            browser.close()
    keep = Path(tempfile.gettempdir()) / "tinyfm-test-artefacts" / "serve-page.png"
    keep.parent.mkdir(exist_ok=True)
    shutil.copy(shot, keep)
    print(f"screenshot of the served page: {keep}")
