"""`tinyfm serve` under a bounded load on loopback: requests/s and p50/p99 latency, with and without micro-batching.

The server runs in its own process (`tinyfm serve RUN --port P`), this script is the client: `--concurrency`
connections send `--requests` predictions (one Fashion-MNIST test image each) and stop at `--time-cap` seconds
whatever happens. The two modes alternate within each round; every answer is checked (count sent = count
answered with HTTP 200, or the script exits 1). Batch sizes come from the server's /metrics.

    python benchmarks/serve.py                                   # runs/fashion-mnist (or -quick), 2 rounds
    python benchmarks/serve.py --run runs/a --run runs/b --requests 1000 --concurrency 16 --rounds 1

Writes benchmarks/out/serve.json and the serve section of BENCHMARKS.md. Only 127.0.0.1 is ever contacted.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import OUT, REPO, machine, machine_line, median, save_json, table, update_section  # noqa: E402

HOST = "127.0.0.1"
MODES = {"no batching": {"max_batch": 1}, "micro-batching": {}}  # micro-batching takes --max-batch/--max-wait-ms


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _payloads(n: int) -> list[bytes]:
    """n Fashion-MNIST test images as PNG bytes (the upload a client sends)."""
    from PIL import Image

    from tinyfm.data.idx import read_idx

    images = read_idx(Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz"))[:n]
    out = []
    for a in images:
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def _start_server(run: Path, a: argparse.Namespace, mode: dict[str, Any]) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    cmd = [sys.executable, "-m", "tinyfm", "serve", str(run), "--host", HOST, "--port", str(port),
           "--threads", str(a.threads), "--max-batch", str(mode.get("max_batch", a.max_batch)),
           "--max-wait-ms", str(mode.get("max_wait_ms", a.max_wait_ms))]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://{HOST}:{port}"
    _wait_healthy(proc, url)
    return proc, url


def _wait_healthy(proc: subprocess.Popen, url: str, timeout: float = 60) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"tinyfm serve exited with {proc.returncode}: {proc.stderr.read()[-2000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"tinyfm serve did not answer /health within {timeout} s")


def _batch_stats(url: str) -> tuple[float, float]:
    """(samples, ORT calls) so far, from the server's tinyfm_batch_size histogram."""
    import httpx

    values = {}
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        name, _, value = line.partition(" ")
        if name in ("tinyfm_batch_size_sum", "tinyfm_batch_size_count"):
            values[name] = float(value)
    return values.get("tinyfm_batch_size_sum", 0.0), values.get("tinyfm_batch_size_count", 0.0)


async def _load(url: str, payloads: list[bytes], requests: int, concurrency: int, cap_s: float) -> dict[str, Any]:
    """Send `requests` predictions over `concurrency` connections, stopping at `cap_s` seconds."""
    import httpx

    latencies: list[float] = []
    counts = {"sent": 0, "answered": 0, "failed": 0}
    stop_at = time.perf_counter() + cap_s
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def client_loop(client: httpx.AsyncClient) -> None:
        while counts["sent"] < requests and time.perf_counter() < stop_at:
            body = payloads[counts["sent"] % len(payloads)]
            counts["sent"] += 1
            t0 = time.perf_counter()
            try:
                r = await client.post("/v1/predict", content=body, headers={"content-type": "image/png"})
                ok = r.status_code == 200 and bool(r.json()["predictions"][0])
            except httpx.HTTPError:
                ok = False
            latencies.append(time.perf_counter() - t0)
            counts["answered" if ok else "failed"] += 1

    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*(client_loop(client) for _ in range(concurrency)))
        seconds = time.perf_counter() - t0
    ms = sorted(x * 1000 for x in latencies)
    q = statistics.quantiles(ms, n=100, method="inclusive") if len(ms) > 1 else ms * 99
    return {**counts, "seconds": seconds, "requests_per_s": counts["answered"] / seconds, "p50_ms": q[49],
            "p99_ms": q[98], "mean_ms": statistics.fmean(ms) if ms else None}


def _one(run: Path, a: argparse.Namespace, name: str, payloads: list[bytes]) -> dict[str, Any]:
    proc, url = _start_server(run, a, MODES[name])
    try:
        asyncio.run(_load(url, payloads, a.warmup, a.concurrency, a.time_cap))  # warm-up, not recorded
        samples0, calls0 = _batch_stats(url)
        rec = asyncio.run(_load(url, payloads, a.requests, a.concurrency, a.time_cap))
        samples, calls = _batch_stats(url)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    rec["mean_batch"] = (samples - samples0) / max(calls - calls0, 1)
    rec["ort_calls"] = int(calls - calls0)
    return {"mode": name, **rec}


def _summary(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (run, mode): medians over rounds; sent/answered/failed summed; speed-up vs no batching."""
    rows = []
    for run in dict.fromkeys(r["run"] for r in records):
        group = []
        for name in MODES:
            rs = [r for r in records if r["mode"] == name and r["run"] == run]
            group.append({"run": run, "model": rs[0]["model"], "mode": name,
                          "requests_per_s": median(r["requests_per_s"] for r in rs),
                          "p50_ms": median(r["p50_ms"] for r in rs), "p99_ms": median(r["p99_ms"] for r in rs),
                          "mean_batch": median(r["mean_batch"] for r in rs), "sent": sum(r["sent"] for r in rs),
                          "answered": sum(r["answered"] for r in rs), "failed": sum(r["failed"] for r in rs)})
        base = group[0]["requests_per_s"]
        for r in group:
            r["speedup"] = r["requests_per_s"] / base if base else None
        rows += group
    return rows


def _markdown(res: dict[str, Any]) -> str:
    a = res["args"]
    cols = [("model", "model", ""), ("mode", "mode", ""), ("requests/s (median)", "requests_per_s", ",.0f"),
            ("× no batching", "speedup", ".2f"), ("p50 ms", "p50_ms", ".2f"), ("p99 ms", "p99_ms", ".2f"),
            ("mean batch", "mean_batch", ".1f"), ("sent", "sent", ","), ("answered", "answered", ","),
            ("failed", "failed", ",")]
    runs = ", ".join(f"`{r}`" for r in res["runs"])
    return "\n".join([
        "## Serving: `tinyfm serve` with and without micro-batching", "",
        f"Runs {runs}, variant fp32-onnx, 1 server process with {a['threads']} ORT thread(s); the client is a "
        f"second process on the same machine (httpx, {a['concurrency']} connections, PNG uploads of Fashion-MNIST "
        f"test images), {a['requests']:,} requests per measurement after {a['warmup']} warm-up ones, time cap "
        f"{a['time_cap']} s, {a['rounds']} interleaved round(s) (median). Micro-batching: up to {a['max_batch']} "
        f"samples or {a['max_wait_ms']} ms per ORT call; no batching: `--max-batch 1`.", "",
        table(res["rows"], cols), "",
        "Every request sent was answered with HTTP 200 (sent = answered, failed = 0) or the script fails. Client "
        "and server share the 2 cores, so the absolute numbers include the client's own cost; the ratio between "
        "the modes is the claim.", *_busy_note(res["machine"]), "",
        f"Command: `{res['command']}`  ", f"Machine: {machine_line(res['machine'])}",
    ])


def _busy_note(m: dict[str, Any]) -> list[str]:
    """A warning paragraph when other processes kept the cores busy (then the ratios are mostly noise)."""
    load, cores = (m.get("loadavg") or [0.0])[0], m.get("cores_usable") or 1
    if load <= cores:
        return []
    return ["", f"**The machine was busy during this measurement** (load average {load:.1f} on {cores} cores, "
            "from other jobs): the server and the client got a fraction of a core, so these numbers and their "
            "ratios are dominated by that load. Rerun the command on an idle machine for numbers to claim."]


def _model_name(run: Path) -> str:
    return json.loads((run / "model.json").read_text())["name"]


def _default_run() -> Path:
    for name in ("fashion-mnist", "fashion-mnist-quick"):
        if (REPO / "runs" / name / "model.onnx").is_file():
            return REPO / "runs" / name
    raise SystemExit("no run with a model.onnx under runs/: give --run RUN (e.g. after `tinyfm run --quick`)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, action="append", help="run directory, repeatable (default "
                    "runs/fashion-mnist, else runs/fashion-mnist-quick)")
    ap.add_argument("--requests", type=int, default=2000, help="requests per measurement")
    ap.add_argument("--warmup", type=int, default=100, help="warm-up requests per server")
    ap.add_argument("--concurrency", type=int, default=32, help="client connections in flight")
    ap.add_argument("--time-cap", type=float, default=60.0, help="seconds at most per measurement")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds")
    ap.add_argument("--threads", type=int, default=1, help="ORT threads of the server")
    ap.add_argument("--max-batch", type=int, default=32, help="micro-batching: samples per ORT call")
    ap.add_argument("--max-wait-ms", type=float, default=2.0, help="micro-batching: wait for a batch")
    ap.add_argument("--no-markdown", action="store_true", help="write only the JSON")
    ap.add_argument("--from-json", action="store_true", help="rewrite the BENCHMARKS.md section from "
                    "benchmarks/out/serve.json without measuring")
    a = ap.parse_args()
    if a.from_json:
        update_section("serve", _markdown(json.loads((OUT / "serve.json").read_text())))
        return
    runs = a.run or [_default_run()]
    payloads = _payloads(100)
    m = machine()
    records = []
    for rnd in range(a.rounds):
        for run in runs:
            for name in (list(MODES) if rnd % 2 == 0 else list(MODES)[::-1]):
                rec = {"run": _rel(run), "model": _model_name(run), **_one(run, a, name, payloads)}
                print(f"round {rnd + 1} {rec['model']} {name}: {rec['requests_per_s']:.0f} req/s, p50 "
                      f"{rec['p50_ms']:.2f} ms, p99 {rec['p99_ms']:.2f} ms, mean batch {rec['mean_batch']:.1f}, "
                      f"{rec['answered']}/{rec['sent']} answered", flush=True)
                records.append({"round": rnd + 1, **rec})
    cmd = "python benchmarks/serve.py" + (" " + " ".join(sys.argv[1:]) if sys.argv[1:] else "")
    args = {k: ([str(x) for x in v] if isinstance(v, list) else v) for k, v in vars(a).items()}
    res = {"command": cmd, "runs": [_rel(r) for r in runs], "args": args, "machine": m, "records": records,
           "rows": _summary(records)}
    print(save_json("serve", res))
    if not a.no_markdown:
        update_section("serve", _markdown(res))
    lost = [r for r in records if r["answered"] != r["sent"]]
    if lost:
        raise SystemExit(f"{len(lost)} measurement(s) lost answers: " +
                         ", ".join(f"{r['model']} {r['mode']} {r['answered']}/{r['sent']}" for r in lost))


def _rel(run: Path) -> str:
    run = run.resolve()
    return os.path.relpath(run, REPO) if run.is_relative_to(REPO) else str(run)


if __name__ == "__main__":
    main()
