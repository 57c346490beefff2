"""The seed's own Keras program against tinyfm's default recipe, on the same machine in the same run.

Keras side: the seed's CNN (Conv32-Pool-Conv64-Pool-Conv64-Flatten-Dense64-Dense10 softmax), adam, sparse
categorical cross-entropy, `model.fit(x_train, y_train, epochs=5)` (Keras' default batch 32) on all 60,000
Fashion-MNIST training images read from the IDX files with numpy, x / 255; then test accuracy on the 10,000 test
images. It runs in its own virtualenv (benchmarks/out/keras-venv, tensorflow-cpu from PyPI), created on first use.

tinyfm side: `tinyfm train --recipe fashion-mnist` (the same network, 5 epochs, 55,000 training images with
5,000 held out for validation, batch 64, Adam with a one-cycle schedule, channels_last), test accuracy on the
same 10,000; `--nchw-too` also trains it with `--no-channels-last`.

    python benchmarks/keras_seed.py                # installs tensorflow-cpu into the venv if needed
    python benchmarks/keras_seed.py --epochs 1     # a quicker look

Writes benchmarks/out/keras_seed.json and the keras_seed section of BENCHMARKS.md. Goal: tinyfm >= 2x faster
per epoch at the same or better test accuracy.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import OUT, machine, machine_line, save_json, table, update_section  # noqa: E402

VENV = OUT / "keras-venv"
DATA = Path("/usr/share/datasets/fashion-mnist")

KERAS_PROGRAM = r'''
import gzip, json, sys, time
import numpy as np
import tensorflow as tf

def idx(path, offset):
    with gzip.open(path, "rb") as f:
        return np.frombuffer(f.read(), np.uint8, offset=offset)

d, epochs = sys.argv[1], int(sys.argv[2])
x_train = idx(f"{d}/train-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28, 1) / 255.0
y_train = idx(f"{d}/train-labels-idx1-ubyte.gz", 8)
x_test = idx(f"{d}/t10k-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28, 1) / 255.0
y_test = idx(f"{d}/t10k-labels-idx1-ubyte.gz", 8)

# The seed's program, unchanged.
model = tf.keras.Sequential([
    tf.keras.layers.Conv2D(32, (3, 3), activation='relu', input_shape=(28, 28, 1)),
    tf.keras.layers.MaxPooling2D((2, 2)),
    tf.keras.layers.Conv2D(64, (3, 3), activation='relu'),
    tf.keras.layers.MaxPooling2D((2, 2)),
    tf.keras.layers.Conv2D(64, (3, 3), activation='relu'),
    tf.keras.layers.Flatten(),
    tf.keras.layers.Dense(64, activation='relu'),
    tf.keras.layers.Dense(10, activation='softmax')
])
model.compile(optimizer='adam', loss='sparse_categorical_crossentropy', metrics=['accuracy'])

class EpochTimer(tf.keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.t0 = time.perf_counter()
    def on_epoch_end(self, epoch, logs=None):
        seconds.append(time.perf_counter() - self.t0)

seconds = []
model.fit(x_train, y_train, epochs=epochs, callbacks=[EpochTimer()], verbose=2)
_, acc = model.evaluate(x_test, y_test, verbose=0)
print("RESULT " + json.dumps({"epoch_seconds": seconds, "test_accuracy": float(acc), "train_images": len(y_train),
                              "tensorflow": tf.__version__, "params": int(model.count_params())}))
'''


def ensure_venv(venv: Path = VENV) -> Path | None:
    """The venv's python with tensorflow importable, installing tensorflow-cpu on first use; None if that fails."""
    py = venv / "bin" / "python"
    if py.exists() and subprocess.run([py, "-c", "import tensorflow"], capture_output=True).returncode == 0:
        return py
    print(f"creating {venv} and installing tensorflow-cpu (about 1.5 GB) ...", flush=True)
    steps = [[sys.executable, "-m", "venv", str(venv)], [py, "-m", "pip", "install", "-q", "tensorflow-cpu"]]
    for cmd in steps:
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"SKIPPED: `{' '.join(map(str, cmd))}` failed, so the Keras side cannot run here:\n"
                  f"{proc.stderr[-1500:]}", file=sys.stderr)
            return None
    return py


def run_keras(py: Path, epochs: int) -> dict[str, Any]:
    script = OUT / "keras_seed_program.py"
    script.write_text(KERAS_PROGRAM)
    proc = subprocess.run([py, str(script), str(DATA), str(epochs)], capture_output=True, text=True)
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"the Keras program failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1].removeprefix("RESULT "))


def run_tinyfm(epochs: int, omp_wait_policy: str | None, *flags: str) -> dict[str, Any]:
    from tinyfm.io import read_json, read_jsonl

    out = OUT / ("keras-seed-tinyfm" + "".join(flags).replace("--", "-"))
    cmd = [sys.executable, "-m", "tinyfm", "train", "--recipe", "fashion-mnist", "--epochs", str(epochs),
           *flags, "--out", str(out), "--quiet"]
    env = {**os.environ, **({"OMP_WAIT_POLICY": omp_wait_policy} if omp_wait_policy else {})}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"tinyfm train failed:\n{proc.stderr[-3000:]}")
    log, results = read_jsonl(out / "metrics.jsonl"), read_json(out / "results.json")
    return {"epoch_seconds": [r["seconds"] for r in log], "test_accuracy": results["variants"][0]["test_accuracy"],
            "train_images": results["data"]["train"],
            "command": " ".join(["tinyfm", *cmd[3:]]).replace(str(OUT), "benchmarks/out")}


def _row(name: str, r: dict[str, Any]) -> dict[str, Any]:
    s = r["epoch_seconds"]
    steady = s[1:] or s  # epoch 1 includes tracing (Keras) and warm-up
    return {"system": name, "epoch_s_mean": sum(s) / len(s), "epoch_s_steady": sum(steady) / len(steady),
            "epoch_s_min": min(s),  # the least disturbed epoch: the steadiest figure on a shared machine
            "images_per_s": r["train_images"] / (sum(steady) / len(steady)), "test_accuracy": r["test_accuracy"],
            "train_images": r["train_images"]}


def _best(rows: list[dict[str, Any]]) -> str:
    """The fastest tinyfm row, when it is not the default one."""
    best = max(rows[1:], key=lambda r: r["speedup_vs_keras"])
    if best is rows[1]:
        return ""
    return (f" Fastest: **{best['system']}**, **{best['speedup_vs_keras']:.2f}×** per epoch at "
            f"{best['test_accuracy']:.2%} test accuracy.")


def markdown(res: dict[str, Any], cmd: str) -> str:
    if res.get("skipped"):
        return f"## The seed's Keras program vs tinyfm\n\nSkipped: {res['skipped']}\n\nCommand: `{cmd}`\n"
    for r in res["rows"]:
        r["speedup_vs_keras"] = res["rows"][0]["epoch_s_mean"] / r["epoch_s_mean"]
    t = table(res["rows"], [("system", "system", ""), ("s / epoch (mean)", "epoch_s_mean", ".1f"),
                            ("s / epoch (epochs 2+)", "epoch_s_steady", ".1f"),
                            ("fastest epoch s", "epoch_s_min", ".1f"),
                            ("train images/s", "images_per_s", ",.0f"),
                            ("× Keras per epoch", "speedup_vs_keras", ".2f"),
                            ("test accuracy", "test_accuracy", ".2%"), ("train images", "train_images", ",")])
    return (f"## The seed's Keras program vs tinyfm\n\n{res['epochs']} epochs each, run one after the other. "
            f"Keras: the seed's code, TensorFlow {res['tensorflow']}, batch 32 (its default), all 60k training "
            f"images. tinyfm: `{res['tinyfm_command']}` (55k training + 5k validation images per epoch, the "
            f"validation pass is inside its epoch time), OMP_WAIT_POLICY={res['omp_wait_policy'] or 'unset'}."
            f"\n\n{t}\n\n"
            f"tinyfm (default recipe) per epoch, mean over all epochs: **{res['speedup_per_epoch']:.2f}×** the speed "
            f"of Keras (goal ≥ 2×); test accuracy {res['accuracy_delta_pp']:+.2f} pp.{_best(res['rows'])} "
            f"The runs are one after the "
            f"other, so a change in the machine's load between them moves the ratio: compare the fastest epochs "
            f"too.\n\nCommand: `{cmd}`  \n"
            f"Machine: {machine_line(res['machine'])}\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--nproc-too", action="store_true",
                   help="Also train tinyfm data-parallel: --nproc 2 (torchrun, 2 processes x 1 thread, same batch).")
    p.add_argument("--nchw-too", action="store_true",
                   help="Also train tinyfm with --no-channels-last (NCHW; the recipe trains channels_last).")
    p.add_argument("--omp-wait-policy", choices=["PASSIVE", "ACTIVE"],
                   help="OMP_WAIT_POLICY for the tinyfm run (read by PyTorch's OpenMP threads).")
    p.add_argument("--render", action="store_true", help="Only rewrite the BENCHMARKS.md section from the JSON.")
    a = p.parse_args()
    if a.render:
        from tinyfm.io import read_json

        res = read_json(OUT / "keras_seed.json")
        for key, name in (("keras", "Keras (seed program)"), ("tinyfm", "tinyfm seed-cnn"),
                          ("tinyfm_nproc2", "tinyfm seed-cnn, --nproc 2"),
                          ("tinyfm_nchw", "tinyfm seed-cnn, --no-channels-last")):
            if key in res:
                next(r for r in res["rows"] if r["system"] == name).update(_row(name, res[key]))
        update_section("keras_seed", markdown(res, res.get("command", "python benchmarks/keras_seed.py")))
        return
    cmd = "python " + " ".join(["benchmarks/keras_seed.py", *sys.argv[1:]])
    res: dict[str, Any] = {"benchmark": "keras_seed", "epochs": a.epochs, "machine": machine(), "command": cmd,
                           "omp_wait_policy": a.omp_wait_policy}
    py = ensure_venv()
    if py is None:
        res["skipped"] = "tensorflow-cpu could not be installed into benchmarks/out/keras-venv"
    else:
        keras = run_keras(py, a.epochs)
        tiny = run_tinyfm(a.epochs, a.omp_wait_policy)
        res.update(keras=keras, tinyfm=tiny, tensorflow=keras["tensorflow"], tinyfm_command=tiny["command"],
                   rows=[_row("Keras (seed program)", keras), _row("tinyfm seed-cnn", tiny)])
        if a.nproc_too:
            res["tinyfm_nproc2"] = run_tinyfm(a.epochs, a.omp_wait_policy, "--nproc", "2")
            res["rows"].append(_row("tinyfm seed-cnn, --nproc 2", res["tinyfm_nproc2"]))
        if a.nchw_too:
            res["tinyfm_nchw"] = run_tinyfm(a.epochs, a.omp_wait_policy, "--no-channels-last")
            res["rows"].append(_row("tinyfm seed-cnn, --no-channels-last", res["tinyfm_nchw"]))
        k, t = res["rows"][:2]
        res["speedup_per_epoch"] = k["epoch_s_mean"] / t["epoch_s_mean"]
        res["accuracy_delta_pp"] = 100 * (t["test_accuracy"] - k["test_accuracy"])
        print(f"Keras {k['epoch_s_mean']:.1f} s/epoch, {k['test_accuracy']:.2%}; tinyfm {t['epoch_s_mean']:.1f} "
              f"s/epoch, {t['test_accuracy']:.2%}: {res['speedup_per_epoch']:.2f}x per epoch")
    res["loadavg_end"] = machine()["loadavg"]
    print(save_json("keras_seed", res))
    update_section("keras_seed", markdown(res, cmd))


if __name__ == "__main__":
    main()
