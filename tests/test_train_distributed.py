"""Data-parallel training under torchrun (gloo, CPU): the same results as one process, each sample counted once.

The two torchrun tests start real process groups (`python -m torch.distributed.run --standalone`), so they take
tens of seconds; everything else here is instant.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from tinyfm.errors import ConfigError
from tinyfm.io import read_json, read_jsonl
from tinyfm.train.launch import launch_torchrun, strip_nproc, torchrun_command

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
RECIPE = """\
name: ddp-equivalence
data: {dataset: fashion-mnist, train_subset: 2000, val_size: 501, test_subset: 1000}
model: {name: seed-cnn}
train: {epochs: 2, batch_size: 64, lr: 0.002, threads: 1, eval_batch_size: 250}
measure: {threads: 1}
"""


def _env() -> dict[str, str]:
    # Child processes must not inherit a torchrun environment from an outer launcher.
    drop = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
    return {k: v for k, v in os.environ.items() if k not in drop} | {"OMP_NUM_THREADS": "1"}


def _popen(cmd: list[str], cwd: Path) -> subprocess.Popen:
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(cmd, cwd=cwd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait(proc: subprocess.Popen, timeout: float = 240) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-3000:]
    return out


@pytest.mark.slow
def test_two_processes_train_like_one_and_the_checkpoint_loads_in_one(tmp_path):
    if not (FASHION_DIR / "train-images-idx3-ubyte.gz").exists():
        pytest.skip("Fashion-MNIST not installed (run scripts/setup.sh)")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE)
    runs = tmp_path / "runs"
    args = ["--recipe", str(recipe), "--quiet"]
    # Both runs at once (1 thread each): the 2-process run has the same global batch 64 (32 per process).
    ddp = _popen(torchrun_command(2, [*args, "--out", str(runs / "ddp"), "--nproc", "2"]), tmp_path / "cwd-ddp")
    one = _popen([sys.executable, "-m", "tinyfm", "train", *args, "--out", str(runs / "one")], tmp_path / "cwd-one")
    _wait(ddp), _wait(one)

    r2, r1 = read_json(runs / "ddp" / "results.json"), read_json(runs / "one" / "results.json")
    assert r2["train"]["world_size"] == 2 and r1["train"]["world_size"] == 1
    assert abs(r2["variants"][0]["test_accuracy"] - r1["variants"][0]["test_accuracy"]) <= 0.005
    m2, m1 = read_jsonl(runs / "ddp" / "metrics.jsonl"), read_jsonl(runs / "one" / "metrics.jsonl")
    assert [r["epoch"] for r in m2] == [1, 2]
    for a, b in zip(m2, m1, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=0.02)
        # Validation has 501 images, split 250/251 over the ranks: accuracy k/501 is the same metric in both.
        assert round(a["val_accuracy"] * 501) == pytest.approx(a["val_accuracy"] * 501, abs=1e-6)
        assert a["val_accuracy"] == pytest.approx(b["val_accuracy"], abs=0.005)
    # Only rank 0 wrote, and only the run directory: no staging leftovers, nothing in the working directories.
    assert sorted(p.name for p in runs.iterdir()) == ["ddp", "one"]
    assert not any((tmp_path / "cwd-ddp").iterdir())
    # The 2-process run's model loads in a plain one-process `tinyfm eval` on CPU and scores the same.
    out = _wait(_popen([sys.executable, "-m", "tinyfm", "eval", str(runs / "ddp")], tmp_path / "cwd-eval"))
    assert f"{r2['variants'][0]['test_accuracy']:.2%}" in out


CHECKS = '''
import json, sys
from pathlib import Path
import torch, torch.distributed as dist
from torch import nn
from tinyfm.config import TrainConfig
from tinyfm.data.dataset import Split
from tinyfm.models import create_model
from tinyfm.train import evaluate_split, fit
from tinyfm.train import distributed as D
from tinyfm.train.device import default_threads

out = Path(sys.argv[1])
g = torch.Generator().manual_seed(0)
x, y = torch.rand(501, 1, 28, 28, generator=g), torch.randint(0, 10, (501,), generator=g)
res = {}

# Uneven data: 301 samples over 2 ranks (the sampler pads one), last step smaller, 2 micro-batches: no hang.
torch.manual_seed(0)
fit(create_model("tiny-seed-cnn"), Split(x[:301], y[:301]), None, TrainConfig(epochs=1, batch_size=64, grad_accum=2),
    progress=False)
ctx = D.init_distributed(torch.device("cpu"))
res["threads"] = torch.get_num_threads()
res["default_threads"] = default_threads(ctx.local_world_size)

# Gradient accumulation under DDP (no_sync on the first micro-batch) on 300 samples, weights gathered.
torch.manual_seed(0)
m = create_model("tiny-seed-cnn")
run_dir = out / f"run-rank{ctx.rank}"  # rank 1 gets a directory too: it must never be created
fit(m, Split(x[:300], y[:300]), Split(x[300:], y[300:]), TrainConfig(epochs=1, batch_size=64, grad_accum=2,
    schedule="none", threads=1), run_dir=run_dir, spec={"name": "tiny-seed-cnn", "kwargs": {}}, progress=False)
flat = torch.cat([p.detach().flatten() for p in m.parameters()])
gathered = [torch.zeros_like(flat) for _ in range(ctx.world_size)]
dist.all_gather(gathered, flat)
res["replicas_equal"] = bool(torch.equal(gathered[0], gathered[1]))

# Evaluation over an odd count: contiguous shards 250 / 251, summed once.
whole = evaluate_split(m, x, y, 64, torch.device("cpu"))
shard = evaluate_split(m, x, y, 64, torch.device("cpu"), ctx)
res["eval"] = {"count": shard["count"], "loss_diff": abs(whole["loss"] - shard["loss"]),
               "acc_diff": abs(whole["accuracy"] - shard["accuracy"])}

# A non-finite loss on rank 1 only: both ranks must skip that step (else rank 0 steps on NaN gradients).
class NaNOnce(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin, self.calls = nn.Linear(784, 10), 0

    def forward(self, t):
        self.calls += 1
        z = self.lin(t.flatten(1))
        return z * float("nan") if (self.calls == 1 and dist.get_rank() == 1) else z

torch.manual_seed(0)
nm = NaNOnce()
fit(nm, Split(x[:128], y[:128]), None, TrainConfig(epochs=1, batch_size=64, threads=1), progress=False)
res["finite_after_nan"] = all(bool(torch.isfinite(p).all()) for p in nm.parameters())
# Adversarial training: the clean forward goes through DDP, the adversarial one through the module; one backward of
# their sum, one all-reduce per weight. The per-text perturbation does not depend on how the batch is split.
ids, labels = torch.randint(2, 200, (128, 10), generator=g), torch.randint(0, 2, (128,), generator=g)
torch.manual_seed(0)
am = create_model("tiny-seed-text", vocab_size=200)
fit(am, Split(ids, labels), None, TrainConfig(epochs=1, batch_size=64, schedule="none", threads=1,
    adversarial_eps=0.5), progress=False)
if ctx.is_main:
    torch.save(torch.cat([p.detach().flatten() for p in am.parameters()]), out / "adv_params.pt")
all_res = [None] * ctx.world_size
dist.all_gather_object(all_res, res)
if ctx.is_main:
    torch.save(flat, out / "ddp_params.pt")
    (out / "checks.json").write_text(json.dumps(all_res))
D.shutdown(ctx)
'''


def test_torchrun_sharding_accumulation_and_nan_skips_agree_across_ranks(tmp_path):
    from tinyfm.config import TrainConfig
    from tinyfm.data.dataset import Split
    from tinyfm.models import create_model
    from tinyfm.train import fit

    script = tmp_path / "checks.py"
    script.write_text(textwrap.dedent(CHECKS))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone", str(script),
           str(tmp_path)]
    proc = _popen(cmd, tmp_path / "cwd")
    # Meanwhile, the 1-process reference: the same 300 samples, the same global batch, no accumulation.
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(501, 1, 28, 28, generator=g), torch.randint(0, 10, (501,), generator=g)
    threads = torch.get_num_threads()
    torch.manual_seed(0)
    ref = create_model("tiny-seed-cnn")
    fit(ref, Split(x[:300], y[:300]), None, TrainConfig(epochs=1, batch_size=64, schedule="none", threads=1),
        progress=False)
    ids, labels = torch.randint(2, 200, (128, 10), generator=g), torch.randint(0, 2, (128,), generator=g)
    torch.manual_seed(0)
    adv = create_model("tiny-seed-text", vocab_size=200)
    fit(adv, Split(ids, labels), None, TrainConfig(epochs=1, batch_size=64, schedule="none", threads=1,
        adversarial_eps=0.5), progress=False)
    torch.set_num_threads(threads)
    out, _ = proc.communicate(timeout=240)
    if proc.returncode != 0 and "terminate called without an active exception" in out:
        # A rare abort inside torch's gloo teardown (once in CI, never in ~40 local runs): not a wrong result.
        # Once more, alone; a second failure of any kind fails the test.
        _wait(_popen(cmd, tmp_path / "cwd"))
    else:
        assert proc.returncode == 0, out[-3000:]

    checks = json.loads((tmp_path / "checks.json").read_text())
    for rank, c in enumerate(checks):
        assert c["eval"]["count"] == 501, rank
        assert c["eval"]["loss_diff"] < 1e-6 and c["eval"]["acc_diff"] == 0  # float32 batch sums differ
        assert c["replicas_equal"] and c["finite_after_nan"]
        assert c["threads"] == c["default_threads"] == max(1, len(os.sched_getaffinity(0)) // 2)
    assert (tmp_path / "run-rank0" / "model.safetensors").is_file()
    assert not (tmp_path / "run-rank1").exists()
    flat = torch.load(tmp_path / "ddp_params.pt", weights_only=True)
    torch.testing.assert_close(flat, torch.cat([p.detach().flatten() for p in ref.parameters()]),
                               rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(torch.load(tmp_path / "adv_params.pt", weights_only=True),
                               torch.cat([p.detach().flatten() for p in adv.parameters()]), rtol=1e-4, atol=1e-5)


def test_strip_nproc_and_torchrun_command():
    assert strip_nproc(["--nproc", "2", "-q", "--nproc=4", "--out", "x"]) == ["-q", "--out", "x"]
    cmd = torchrun_command(3, ["--recipe", "r.yaml", "--nproc", "3"])
    assert cmd[0] == sys.executable
    assert cmd[1:] == ["-m", "torch.distributed.run", "--nproc-per-node", "3", "--standalone", "-m", "tinyfm",
                       "train", "--recipe", "r.yaml"]
    with pytest.raises(ConfigError, match="--nproc"):
        torchrun_command(0, [])


def test_launch_refuses_to_nest_inside_torchrun(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="already running under torchrun"):
        launch_torchrun(2, [])


def test_launch_returns_the_exit_code(monkeypatch):
    import tinyfm.train.launch as L

    seen = {}

    def fake_run(cmd, env, check):
        seen.update(cmd=cmd, env=env)
        return subprocess.CompletedProcess(cmd, 3)

    for var in ("WORLD_SIZE", "TORCHELASTIC_RUN_ID", "OMP_NUM_THREADS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(L.subprocess, "run", fake_run)
    assert launch_torchrun(2, ["--nproc", "2", "-q"]) == 3
    assert seen["cmd"][-3:] == ["tinyfm", "train", "-q"]
    assert seen["env"]["OMP_NUM_THREADS"] == str(max(1, len(os.sched_getaffinity(0)) // 2))
