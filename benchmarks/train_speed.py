"""Training throughput of tinyfm's `fit` against a minimal hand-written PyTorch loop (the Trainer's overhead).

Same model (seed-cnn), same images in memory, same batch, Adam, same threads; the variants alternate within
each round and the order rotates, so load drift on a shared machine hits both. Overhead = 1 - fit / hand.

    python benchmarks/train_speed.py                 # 3 rounds x 1 epoch on 20k images, 2 threads
    python benchmarks/train_speed.py --rounds 1 --images 5000

Writes benchmarks/out/train_speed.json and the train_speed section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, machine_line, median, save_json, table, update_section  # noqa: E402

from tinyfm.config import DataConfig, TrainConfig  # noqa: E402
from tinyfm.data import load_data  # noqa: E402
from tinyfm.models import create_model  # noqa: E402
from tinyfm.train import fit  # noqa: E402


def hand_loop(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int, lr: float) -> None:
    """One epoch of the loop everybody writes first: shuffle, slice, forward, cross-entropy, backward, Adam step."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    perm = torch.randperm(len(y))
    for s in range(0, len(y), batch):
        idx = perm[s:s + batch]
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()


def _time_variant(name: str, data, cfg: TrainConfig) -> tuple[float, float]:
    """(wall, CPU) seconds for one epoch of variant `name` on a freshly built seed-cnn (construction not timed).

    CPU time (all threads of this process) is the steadier figure on a shared machine: time spent descheduled
    while other jobs run does not count.
    """
    torch.manual_seed(0)
    model = create_model("seed-cnn")
    t0, c0 = time.perf_counter(), time.process_time()
    if name == "hand":
        torch.set_num_threads(cfg.threads)
        hand_loop(model, data.x, data.y, cfg.batch_size, cfg.lr)
    else:
        fit(model, data, None, cfg, progress=name == "fit+progress")
    return time.perf_counter() - t0, time.process_time() - c0


def run(rounds: int, images: int, threads: int, batch: int, progress_bar: bool) -> dict[str, Any]:
    data = load_data(DataConfig(train_subset=images, val_size=0, test_subset=1000)).train
    cfg = TrainConfig(epochs=1, batch_size=batch, lr=2e-3, threads=threads, device="cpu", amp="off")
    names = ["fit", "hand"] + (["fit+progress"] if progress_bar else [])
    _time_variant("hand", data, cfg)  # warm-up: first-call allocations, oneDNN primitive caches
    wall: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for n in names[r % len(names):] + names[:r % len(names)]:
            w, c = _time_variant(n, data, cfg)
            wall[n].append(w)
            cpu[n].append(c)
            print(f"round {r + 1}: {n:13s} {len(data) / w:8.0f} images/s  ({len(data) / c:8.0f} per CPU-s)", flush=True)
    rows = []
    for n in names:
        rows.append({"variant": n, "images_per_s": len(data) / median(wall[n]), "seconds_median": median(wall[n]),
                     # paired within each round: the variants of one round saw the same machine load
                     "overhead_vs_hand": median(1 - h / w for h, w in zip(wall["hand"], wall[n], strict=True)),
                     "cpu_overhead_vs_hand": median(1 - h / c for h, c in zip(cpu["hand"], cpu[n], strict=True)),
                     "seconds_rounds": wall[n], "cpu_seconds_rounds": cpu[n]})
    return {"benchmark": "train_speed", "model": "seed-cnn", "images": len(data), "batch_size": batch,
            "threads": threads, "rounds": rounds, "optimizer": "adam", "rows": rows}


def markdown(res: dict[str, Any], cmd: str) -> str:
    t = table(res["rows"], [("variant", "variant", ""), ("images/s (median)", "images_per_s", ",.0f"),
                            ("s / epoch", "seconds_median", ".2f"),
                            ("overhead vs hand (wall, paired)", "overhead_vs_hand", "+.1%"),
                            ("overhead vs hand (CPU time, paired)", "cpu_overhead_vs_hand", "+.1%")])
    fit = next(r for r in res["rows"] if r["variant"] == "fit")
    return (f"## Training speed: `fit` vs a hand-written loop\n\n"
            f"seed-cnn, {res['images']:,} Fashion-MNIST images in memory, batch {res['batch_size']}, Adam, "
            f"{res['threads']} threads, {res['rounds']} interleaved rounds of 1 epoch (median), OMP_WAIT_POLICY="
            f"{res.get('omp_wait_policy') or 'unset'}.\n\n{t}\n\n"
            f"Trainer overhead (fit without progress bar, median of per-round paired ratios): **"
            f"{fit['overhead_vs_hand']:+.1%}** wall-clock, **{fit['cpu_overhead_vs_hand']:+.1%}** CPU time "
            f"(target ≤ 10%; overhead = 1 - hand seconds / fit seconds). "
            f"`fit` also runs a one-cycle LR schedule, the non-finite-loss guard and per-step metrics the hand loop "
            f"lacks.\n\nCommand: `{cmd}`  \nMachine: {machine_line(res['machine'])}\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--images", type=int, default=20000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--no-progress-variant", action="store_true", help="Skip timing fit with the rich progress bar.")
    a = p.parse_args()
    m = machine()
    res = run(a.rounds, a.images, a.threads, a.batch_size, not a.no_progress_variant)
    res["machine"], res["omp_wait_policy"] = m, os.environ.get("OMP_WAIT_POLICY")
    res["loadavg_end"] = machine()["loadavg"]
    print(save_json("train_speed", res))
    update_section("train_speed", markdown(res, "python " + " ".join(["benchmarks/train_speed.py", *sys.argv[1:]])))


if __name__ == "__main__":
    main()
