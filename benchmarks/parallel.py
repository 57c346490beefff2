"""Training throughput of the seed CNN under the CPU acceleration options, as ratios measured in one run.

Variants (all through tinyfm's `fit`, global batch 64, Adam, seed-cnn on Fashion-MNIST):
  1 process x 2 threads (the baseline) | 2 processes x 1 thread (torchrun, DDP over gloo) |
  AMP bf16 autocast | torch.compile | channels_last | channels_last with the seed's layer order (ReLU before
  max-pool; tinyfm pools first, the same function) | the baseline with OpenMP's default (spinning) wait policy
Each variant runs in a fresh process (so compile caches and thread pools do not leak between them), trains
2 epochs, and reports the second epoch's images/s (the first includes compilation and warm-up). The variants
alternate within each round and the order rotates between rounds.

    python benchmarks/parallel.py                       # 2 rounds, 10k images per epoch
    python benchmarks/parallel.py --rounds 1 --images 4000 --variants baseline,ddp-2x1

Writes benchmarks/out/parallel.json and the parallel section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, machine_line, median, save_json, table, update_section  # noqa: E402

VARIANTS: dict[str, dict[str, Any]] = {
    "baseline": {"label": "1 process x 2 threads, fp32", "nproc": 1, "threads": 2},
    "ddp-2x1": {"label": "2 processes x 1 thread (torchrun, gloo)", "nproc": 2, "threads": 1},
    "bf16": {"label": "AMP bf16 autocast (1 x 2)", "nproc": 1, "threads": 2, "amp": "bf16"},
    "compile": {"label": "torch.compile (1 x 2)", "nproc": 1, "threads": 2, "compile": True},
    "channels_last": {"label": "channels_last (1 x 2)", "nproc": 1, "threads": 2, "channels_last": True},
    "seed-order": {"label": "channels_last, ReLU before pool as in the seed (1 x 2)", "nproc": 1, "threads": 2,
                   "channels_last": True, "relu_before_pool": True},
    # The baseline with OpenMP's default wait policy even when --omp-wait-policy is given: on a busy machine
    # spinning worker threads are what makes 2 threads slower than 1.
    "omp-default": {"label": "1 x 2, OMP_WAIT_POLICY unset", "nproc": 1, "threads": 2, "omp_default": True},
}


def worker(a: argparse.Namespace) -> None:
    """Train seed-cnn for a.epochs epochs with the variant's settings; rank 0 writes the history as JSON."""
    import torch

    from tinyfm.config import DataConfig, TrainConfig
    from tinyfm.data import load_data
    from tinyfm.models import create_model
    from tinyfm.train import distributed as D
    from tinyfm.train import fit

    data = load_data(DataConfig(train_subset=a.images, val_size=0, test_subset=1000)).train
    cfg = TrainConfig(epochs=a.epochs, batch_size=a.batch_size, lr=2e-3, threads=a.threads, device="cpu",
                      amp=a.amp, compile=a.compile, channels_last=a.channels_last)
    torch.manual_seed(0)
    result = fit(create_model("seed-cnn", relu_before_pool=a.relu_before_pool), data, None, cfg, progress=False)
    if int(os.environ.get("RANK", 0)) == 0:
        Path(a.out).write_text(json.dumps(result.history))
    D.shutdown(D.init_distributed(torch.device("cpu")))


def _command(v: dict[str, Any], a: argparse.Namespace, out: Path) -> list[str]:
    args = [str(Path(__file__).resolve()), "--worker", "--images", str(a.images), "--epochs", "2",
            "--batch-size", str(a.batch_size), "--threads", str(v["threads"]), "--amp", v.get("amp", "off"),
            "--out", str(out)]
    args += ["--compile"] * v.get("compile", False) + ["--channels-last"] * v.get("channels_last", False)
    args += ["--relu-before-pool"] * v.get("relu_before_pool", False)
    if v["nproc"] > 1:
        return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(v["nproc"]), "--standalone",
                *args]
    return [sys.executable, *args]


def _run_variant(name: str, a: argparse.Namespace, tmp: Path) -> dict[str, float]:
    v, out = VARIANTS[name], tmp / f"{name}.json"
    env = {**os.environ, "OMP_NUM_THREADS": str(v["threads"])}
    if v.get("omp_default"):
        env.pop("OMP_WAIT_POLICY", None)
    elif a.omp_wait_policy:  # PASSIVE: idle OpenMP threads sleep instead of spinning (matters on a busy machine)
        env["OMP_WAIT_POLICY"] = a.omp_wait_policy
    proc = subprocess.run(_command(v, a, out), env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"variant {name} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    hist = json.loads(out.read_text())
    return {"images_per_s": hist[-1]["images_per_s"], "first_epoch_s": hist[0]["seconds"],
            "epoch_s": hist[-1]["seconds"]}


def run(a: argparse.Namespace) -> dict[str, Any]:
    names = a.variants.split(",")
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        raise SystemExit(f"--variants: unknown {unknown}; choose from {', '.join(VARIANTS)}")
    per: dict[str, list[dict[str, float]]] = {n: [] for n in names}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(a.rounds):
            for n in names[r % len(names):] + names[:r % len(names)]:
                per[n].append(_run_variant(n, a, Path(tmp)))
                print(f"round {r + 1}: {n:14s} {per[n][-1]['images_per_s']:8.0f} images/s", flush=True)
    base = median(x["images_per_s"] for x in per[names[0]])
    rows = []
    for n in names:
        ips = median(x["images_per_s"] for x in per[n])
        warm = median(x["first_epoch_s"] - x["epoch_s"] for x in per[n])
        rows.append({"variant": n, "label": VARIANTS[n]["label"], "images_per_s": ips, "vs_baseline": ips / base,
                     "first_epoch_extra_s": warm, "rounds": per[n]})
    return {"benchmark": "parallel", "model": "seed-cnn", "images_per_epoch": a.images, "batch_size": a.batch_size,
            "rounds": a.rounds, "baseline": names[0], "omp_wait_policy": a.omp_wait_policy, "rows": rows}


def markdown(res: dict[str, Any], cmd: str) -> str:
    t = table(res["rows"], [("variant", "label", ""), ("images/s (epoch 2, median)", "images_per_s", ",.0f"),
                            (f"× {res['baseline']}", "vs_baseline", ".2f"),
                            ("extra s in epoch 1 (compile, warm-up)", "first_epoch_extra_s", ".1f")])
    return (f"## CPU acceleration options (training)\n\n"
            f"seed-cnn, {res['images_per_epoch']:,} Fashion-MNIST images per epoch, global batch "
            f"{res['batch_size']}, Adam; each variant in a fresh process, epoch 2 timed, {res['rounds']} interleaved "
            f"rounds (median); OMP_WAIT_POLICY={res['omp_wait_policy'] or 'unset'}.\n\n{t}\n\n"
            f"Command: `{cmd}`  \nMachine: {machine_line(res['machine'])}  \n"
            "GPU: not run here (no GPU lent to this session); see scripts/gpu_check.sh.\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--images", type=int, default=10000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--omp-wait-policy", choices=["PASSIVE", "ACTIVE"], help="Set OMP_WAIT_POLICY for the workers.")
    # worker mode (one variant, possibly one rank of a torchrun group)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--epochs", type=int, default=2, help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=2, help=argparse.SUPPRESS)
    p.add_argument("--amp", default="off", help=argparse.SUPPRESS)
    p.add_argument("--compile", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--channels-last", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--relu-before-pool", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        return worker(a)
    m = machine()
    res = run(a)
    res["machine"], res["loadavg_end"] = m, machine()["loadavg"]
    print(save_json("parallel", res))
    update_section("parallel", markdown(res, "python " + " ".join(["benchmarks/parallel.py", *sys.argv[1:]])))


if __name__ == "__main__":
    main()
