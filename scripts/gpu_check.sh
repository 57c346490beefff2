#!/usr/bin/env bash
# GPU smoke test and throughput check of tinyfm's accelerator paths (about 2-5 minutes on one GPU).
#
#   bash scripts/gpu_check.sh            # synthetic Fashion-MNIST-shaped data
#   TINYFM_GPU_IMAGES=50000 bash scripts/gpu_check.sh
#
# Exercises: CUDA device auto-selection, pinned-memory copies, AMP bf16 and fp16 (GradScaler), channels_last,
# torch.compile, and DDP over NCCL (torchrun --nproc-per-node 1; and 2 processes through `tinyfm train` when the
# machine has 2+ GPUs). Prints images/s per configuration. Fails loudly (exit 1) without CUDA.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
IMAGES="${TINYFM_GPU_IMAGES:-20000}"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

python - <<'EOF'
import sys
import torch
if not torch.cuda.is_available():
    sys.exit("gpu_check: FAILED: CUDA is not available (torch %s, built for CUDA %s)" % (torch.__version__, torch.version.cuda))
print(f"gpu_check: {torch.cuda.get_device_name(0)}, {torch.cuda.device_count()} GPU(s), torch {torch.__version__}, "
      f"CUDA {torch.version.cuda}, bf16 supported: {torch.cuda.is_bf16_supported()}")
EOF

echo "== single-GPU configurations (fit, 2 epochs of $IMAGES images, epoch 2 timed)"
python - "$IMAGES" <<'EOF'
import math, sys, time
import torch
from tinyfm.config import TrainConfig
from tinyfm.data.dataset import Split
from tinyfm.models import create_model
from tinyfm.train import fit, select_device
from tinyfm.train.trainer import _to_device

n = int(sys.argv[1])
dev = select_device("auto")
assert dev.type == "cuda", f"device auto-selection picked {dev}, expected cuda"
x = _to_device(torch.rand(8, 1, 28, 28), dev)
assert x.is_cuda, "pinned copy failed"
g = torch.Generator().manual_seed(0)
data = Split(torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g))
configs = {
    "fp32": dict(amp="off"),
    "bf16": dict(amp="bf16"),
    "fp16 + GradScaler": dict(amp="fp16"),
    "auto (amp=auto)": dict(amp="auto"),
    "bf16 + channels_last": dict(amp="bf16", channels_last=True),
    "bf16 + torch.compile": dict(amp="bf16", compile=True),
}
base = None
for name, kw in configs.items():
    for batch in (64, 512):
        torch.manual_seed(0)
        t0 = time.perf_counter()
        r = fit(create_model("seed-cnn"), data, data, TrainConfig(epochs=2, batch_size=batch, lr=2e-3, **kw),
                progress=False)
        loss = r.history[-1]["train_loss"]
        assert math.isfinite(loss), f"{name}: non-finite loss {loss}"
        ips = r.history[-1]["images_per_s"]
        base = base or ips
        print(f"{name:24s} batch {batch:4d}: {ips:10,.0f} images/s  ({ips / base:4.2f}x fp32 b64)  amp={r.amp:9s} "
              f"loss {loss:.3f}  val acc {r.best_val_accuracy:.3f}  wall {time.perf_counter() - t0:5.1f} s")
EOF

echo "== DDP over NCCL, 1 process (torchrun --nproc-per-node 1)"
cat > "$TMP/ddp1.py" <<'EOF'
import time
import torch, torch.distributed as dist
import torch.nn.functional as F
from tinyfm.models import create_model
from tinyfm.train import distributed as D

dist.init_process_group("nccl")
ctx = D.DistContext(rank=dist.get_rank(), world_size=dist.get_world_size())
dev = torch.device("cuda", 0)
torch.cuda.set_device(dev)
model = torch.nn.parallel.DistributedDataParallel(create_model("seed-cnn").to(dev), device_ids=[0])
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
x, y = torch.rand(512, 1, 28, 28, device=dev), torch.randint(0, 10, (512,), device=dev)
for i in range(60):
    if i == 10:
        torch.cuda.synchronize(); t0 = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = F.cross_entropy(model(x).float(), y)
    loss.backward()
    opt.step()
torch.cuda.synchronize()
ips = 50 * 512 / (time.perf_counter() - t0)
# tinyfm's collectives on CUDA tensors (NCCL reduces device tensors only); a context that claims 2 ranks makes
# them run on this 1-rank group instead of short-circuiting
forced = D.DistContext(rank=0, world_size=2)
total = D.all_reduce_sum(torch.ones(3, dtype=torch.float64, device=dev), forced)
assert D.all_true(True, forced, dev) and not D.all_true(False, forced, dev) and total.tolist() == [1.0, 1.0, 1.0]
print(f"DDP nccl world {ctx.world_size}: {ips:10,.0f} images/s (bf16, batch 512, in-GPU data), loss {loss.item():.3f}")
dist.destroy_process_group()
EOF
python -m torch.distributed.run --nproc-per-node 1 --standalone "$TMP/ddp1.py"

if [ "$(python -c 'import torch; print(torch.cuda.device_count())')" -ge 2 ]; then
  echo "== DDP over NCCL, 2 GPUs through tinyfm train (needs Fashion-MNIST installed)"
  python -m torch.distributed.run --nproc-per-node 2 --standalone -m tinyfm train --quick --epochs 1 \
    --out "$TMP/ddp2" --quiet && python -m tinyfm eval "$TMP/ddp2"
else
  echo "== 2-GPU DDP skipped: one GPU on this machine"
fi
echo "gpu_check: OK"
