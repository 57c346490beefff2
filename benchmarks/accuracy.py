"""Accuracy ceiling: train a shipped recipe with `tinyfm train` and record its test accuracy and time.

The stronger model family (resnet-small, recipe fashion-mnist-resnet) is measured here; its time is reported,
not bounded. Reads an existing run with --run instead of training again.

    python benchmarks/accuracy.py                                  # tinyfm train --recipe fashion-mnist-resnet
    python benchmarks/accuracy.py --run runs/fashion-mnist-resnet  # only rewrite the section from that run

Writes benchmarks/out/accuracy-<recipe>.json and the `accuracy` section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, machine_line, save_json, table, update_section  # noqa: E402

from tinyfm.io import read_json, read_jsonl  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default="fashion-mnist-resnet")
    ap.add_argument("--run", type=Path, help="an existing `tinyfm train` run directory (default: train now)")
    args = ap.parse_args()
    start = machine()
    run_dir = args.run or Path("runs") / args.recipe
    if args.run is None:
        subprocess.run([sys.executable, "-m", "tinyfm", "train", "--recipe", args.recipe, "--out", str(run_dir)],
                       check=True)
    results, epochs = read_json(run_dir / "results.json"), read_jsonl(run_dir / "metrics.jsonl")
    row = results["variants"][0]
    train = results["train"]
    record = {"recipe": args.recipe, "run": str(run_dir), "model": results["model"], "params": row["params"],
              "macs": row["macs"], "test_accuracy": row["test_accuracy"],
              "best_val_accuracy": train["best_val_accuracy"], "best_epoch": train["best_epoch"],
              "epochs": train["epochs"], "train_seconds": train["seconds"],
              "epoch_seconds": [e["seconds"] for e in epochs], "machine": start}
    save_json(f"accuracy-{args.recipe}", record)
    cols = [("model", "model", ""), ("params", "params", ","), ("MACs", "macs", ",.0f"),
            ("epochs", "epochs", ""), ("best epoch", "best_epoch", ""), ("val accuracy", "best_val_accuracy", ".2%"),
            ("test accuracy", "test_accuracy", ".2%"), ("training time, min", "train_min", ".1f")]
    body = (f"## Accuracy ceiling: recipe `{args.recipe}`\n\n"
            f"{table([{**record, 'train_min': record['train_seconds'] / 60}], cols)}\n\n"
            f"Test accuracy on the 10,000 Fashion-MNIST test images (the seed CNN of the main job: see the "
            f"compression table). Training time is reported, not bounded.\n\n"
            f"Command: `python benchmarks/accuracy.py{' --run ' + str(args.run) if args.run else ''}` "
            f"(`tinyfm train --recipe {args.recipe}`)  \nMachine: {machine_line(start)}\n")
    update_section("accuracy", body)
    print(body)


if __name__ == "__main__":
    main()
