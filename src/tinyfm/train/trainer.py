"""The training loop: one readable function, the same in one process and under torchrun/DDP.

Per epoch: shuffle (DistributedSampler, seeded by seed + epoch), step with optional AMP and gradient
accumulation, clip, schedule, validate, keep the best weights, checkpoint, log a metrics.jsonl line.
Only rank 0 writes; metrics are summed across ranks before they are logged.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DistributedSampler

from tinyfm.config import TrainConfig
from tinyfm.errors import ConfigError, TinyfmError
from tinyfm.io import append_jsonl, atomic_path, read_jsonl, write_jsonl
from tinyfm.measure.latency import set_threads
from tinyfm.models.serialize import save_model, unwrap
from tinyfm.train import distributed as D
from tinyfm.train.device import amp_dtype, default_threads, select_device
from tinyfm.train.tasks import AdversarialTask, ClassificationTask, RDropTask, has_dropout

Task = Callable[[nn.Module, torch.Tensor, torch.Tensor], dict[str, torch.Tensor]]
PROGRESS_EVERY = 16  # steps between progress-bar updates
MAX_BAD_STEPS = 20  # consecutive non-finite losses before the run stops instead of skipping


@dataclass
class TrainResult:
    best_val_accuracy: float
    best_epoch: int
    seconds: float
    device: str
    amp: str
    world_size: int
    history: list[dict[str, Any]] = field(default_factory=list)


def _sampler(n: int, ctx: D.DistContext, seed: int, shuffle: bool) -> DistributedSampler:
    # DistributedSampler over range(n): rank r takes perm[r::W]; with per-rank batch B/W the union of the
    # ranks' k-th batches is exactly the k-th batch of a 1-process run with batch B (same seed).
    return DistributedSampler(range(n), num_replicas=ctx.world_size, rank=ctx.rank, shuffle=shuffle, seed=seed)


def shift_and_flip(x: torch.Tensor, gen: torch.Generator, pad: int = 2) -> torch.Tensor:
    """Light augmentation, vectorised over the batch: random shifts of up to `pad` pixels, random h-flips."""
    b, c, h, w = x.shape  # (B, C, H, W)
    xp = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
    rows = (dy[:, None] + torch.arange(h))[:, None, :, None]  # (B, 1, H, 1)
    cols = (dx[:, None] + torch.arange(w))[:, None, None, :]  # (B, 1, 1, W)
    out = xp[torch.arange(b)[:, None, None, None], torch.arange(c)[None, :, None, None], rows, cols]
    flip = torch.rand(b, generator=gen) < 0.5
    return torch.where(flip[:, None, None, None], out.flip(-1), out)


def drop_tokens(ids: torch.Tensor, gen: torch.Generator, p: float, width: int | None = None) -> torch.Tensor:
    """Word dropout on a batch of token ids (B, L): each non-padding id is removed with probability `p`, the rest
    move left in order and the row is padded again (PAD_ID 0), so the model sees a shorter text, not holes.

    Only the first `width` columns are changed (a distillation row carries the teacher's ids after them).

    Example:
        drop_tokens(torch.tensor([[5, 6, 7, 0]]), torch.Generator().manual_seed(0), 0.5)  # e.g. [[5, 7, 0, 0]]
    """
    from tinyfm.models.seed_text import PAD_ID

    head, tail = (ids, None) if width is None else (ids[:, :width], ids[:, width:])
    keep = (torch.rand(head.shape, generator=gen) >= p) & (head != PAD_ID)
    order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)  # kept ids first, in their order
    out = torch.where(torch.gather(keep, 1, order), torch.gather(head, 1, order), torch.full_like(head, PAD_ID))
    return out if tail is None else torch.cat([out, tail], dim=1)


def _lr_lambda(cfg: TrainConfig, total_steps: int) -> Callable[[int], float]:
    warm = max(1, int(cfg.warmup_frac * total_steps)) if cfg.schedule == "onecycle" else 0

    def f(step: int) -> float:
        if cfg.schedule == "none":
            return 1.0
        if step < warm:
            return (step + 1) / warm
        progress = min(1.0, (step - warm) / max(1, total_steps - warm))
        return 0.5 * (1 + math.cos(math.pi * progress))

    return f


_BLOCK = re.compile(r"(?:^|\.)layer\.(\d+)\.")  # Hugging Face encoders: encoder.layer.<i>.attention...


def layer_depths(model: nn.Module) -> dict[str, int]:
    """Depth of every parameter from the input: embeddings 0, transformer block i (`layer.<i>.`) i + 1, the rest
    (pooling, head) one above the top block. Raises ConfigError for a model without numbered blocks."""
    names = [n for n, _ in model.named_parameters()]
    blocks = {n: int(m.group(1)) + 1 for n in names if (m := _BLOCK.search(n))}
    if not blocks:
        raise ConfigError(f"train.layer_lr_decay: {type(unwrap(model)).__name__} has no numbered transformer blocks "
                          "(layer.<i>.); use 1 for this model")
    top = max(blocks.values()) + 1
    return {n: 0 if "embeddings." in n else blocks.get(n, top) for n in names}


def parameter_groups(model: nn.Module, cfg: TrainConfig) -> list[dict[str, Any]]:
    """The optimizer's parameter groups: one, or one per depth with lr·decay^(top - depth) (layer_lr_decay < 1)."""
    if cfg.layer_lr_decay == 1:
        return [{"params": list(model.parameters()), "lr": cfg.lr}]
    depths = layer_depths(model)
    top, params = max(depths.values()), dict(model.named_parameters())
    return [{"params": [params[n] for n, d in depths.items() if d == depth],
             "lr": cfg.lr * cfg.layer_lr_decay ** (top - depth)} for depth in sorted(set(depths.values()))]


def create_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer of `cfg` over `model`'s parameter groups (see :func:`parameter_groups`)."""
    params = parameter_groups(model, cfg)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, nesterov=True, weight_decay=cfg.weight_decay)


def _micro_batches(idx: list[int], per_rank: int, accum: int) -> Iterator[list[list[int]]]:
    """Yield, per optimizer step, the rank's micro-batches (index lists)."""
    micro = math.ceil(per_rank / accum)
    for start in range(0, len(idx), per_rank):
        chunk = idx[start:start + per_rank]
        yield [chunk[i:i + micro] for i in range(0, len(chunk), micro)]


@torch.no_grad()
def evaluate_split(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int, device: torch.device,
                   ctx: D.DistContext | None = None, channels_last: bool = False) -> dict[str, float]:
    """Loss and accuracy over (x, y), each sample counted exactly once across ranks (contiguous shards, no padding)."""
    ctx = ctx or D.DistContext()
    model.eval()
    n = len(y)
    lo, hi = n * ctx.rank // ctx.world_size, n * (ctx.rank + 1) // ctx.world_size
    totals = torch.zeros(3, dtype=torch.float64, device=device)  # loss sum, correct, count
    for s in range(lo, hi, batch_size):
        xb = _to_device(x[s:min(s + batch_size, hi)], device, channels_last)
        yb = _to_device(y[s:min(s + batch_size, hi)], device)
        logits = model(xb).float()
        totals += torch.stack([F.cross_entropy(logits, yb, reduction="sum").double(),
                               (logits.argmax(1) == yb).sum().double(), torch.tensor(float(len(yb)), device=device)])
    loss_sum, correct, count = D.all_reduce_sum(totals, ctx).tolist()
    return {"loss": loss_sum / max(count, 1), "accuracy": correct / max(count, 1), "count": int(count)}


def _to_device(x: torch.Tensor, device: torch.device, channels_last: bool = False) -> torch.Tensor:
    if device.type == "cuda":
        # Only a copy from pinned (page-locked) memory is asynchronous with non_blocking=True; from pageable
        # memory it blocks (PyTorch CUDA semantics notes, "Use pinned memory buffers").
        x = x.pin_memory()
    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.dim() == 4 else x


def _console():
    from rich.console import Console

    return Console(stderr=True)  # stderr: stdout holds only results (tables, predictions) for pipes and scripts


def _loss_terms(cfg: TrainConfig) -> str:
    """The settings that add terms to the loss, as a hint of what else to lower when it diverges."""
    terms = [f"train.{k}" for k in ("adversarial_eps", "rdrop_alpha") if getattr(cfg, k) > 0]
    return "".join(f" or {t}" for t in terms)


def _progress(enabled: bool):
    if not enabled:
        return nullcontext(None)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    # Off a terminal the bars are disabled (they would print their last frame): fit logs a plain line per epoch.
    console = _console()
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[info]}"), TimeRemainingColumn(), transient=False,
                    console=console, disable=not console.is_terminal)


def fit(model: nn.Module, train: Any, val: Any | None, cfg: TrainConfig, run_dir: str | Path | None = None,
        spec: dict[str, Any] | None = None, task: Task | None = None, resume: bool = False,
        progress: bool = True, stem: str = "model", augment: bool = False) -> TrainResult:
    """Train `model` on `train` (an object with .x, .y tensors), validating on `val` every epoch.

    Args:
        run_dir: where metrics.jsonl, the best weights (`<stem>.safetensors` + `<stem>.json`) and
            `last.ckpt` go; None keeps everything in memory.
        spec: {"name": registry name, "kwargs": constructor kwargs, ...} written to `<stem>.json` so the model
            can be rebuilt (see :func:`tinyfm.models.save_model`).
        task: the loss; default cross-entropy with cfg.label_smoothing.
        resume: continue from run_dir/last.ckpt (same config) instead of starting over.
        augment: apply :func:`shift_and_flip` to every training batch.

    Returns:
        TrainResult; `model` holds the best validation weights (or the last ones without `val`).
    """
    device = select_device(cfg.device)
    ctx = D.init_distributed(device)
    set_threads(cfg.threads or default_threads(ctx.local_world_size))
    torch.manual_seed(cfg.seed)
    task = task or ClassificationTask(cfg.label_smoothing)
    if cfg.rdrop_alpha > 0 and has_dropout(model):
        task = RDropTask(task, cfg.rdrop_alpha)
    elif cfg.rdrop_alpha > 0 and ctx.is_main:  # e.g. a recipe's setting meant for its own model
        _console().print(f"note: train.rdrop_alpha {cfg.rdrop_alpha:g} ignored: {type(model).__name__} has no "
                         "active dropout layer, so R-Drop's two passes would agree", soft_wrap=True)
    if cfg.adversarial_eps > 0:
        task = AdversarialTask(task, model, cfg.adversarial_eps)
    dtype = amp_dtype(device, cfg.amp)
    scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None
    model = model.to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    net: nn.Module = model
    ddp = None  # kept apart from `net`: torch.compile's wrapper does not expose DDP's no_sync
    if ctx.enabled:
        net = ddp = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        net = torch.compile(net)  # compiling the DDP module is the documented order (DDPOptimizer splits at buckets)

    per_rank, rem = divmod(cfg.batch_size, ctx.world_size)
    if rem or per_rank < cfg.grad_accum:
        raise ConfigError(f"--batch-size {cfg.batch_size}: must be a multiple of processes ({ctx.world_size}) "
                          f"with at least --grad-accum ({cfg.grad_accum}) samples per process")
    n = len(train.y)
    sampler = _sampler(n, ctx, cfg.seed, shuffle=True)
    steps_per_epoch = math.ceil(len(sampler) / per_rank)
    optimizer = create_optimizer(model, cfg)
    # The average is of the module itself (not the DDP wrapper): every rank holds the same weights after a step.
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True) \
        if cfg.ema_decay > 0 else None
    averaged = ema.module if ema is not None else model  # the weights validated, kept as best and saved
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(cfg, steps_per_epoch * cfg.epochs))
    aug_gen = torch.Generator().manual_seed(cfg.seed * 1000 + ctx.rank)

    run_dir = Path(run_dir) if run_dir is not None else None
    write = run_dir is not None and ctx.is_main
    metrics_path = run_dir / "metrics.jsonl" if run_dir else None
    start_epoch, best_acc, best_epoch, best_state = 1, -1.0, 0, None
    if resume:
        start_epoch, best_acc, best_epoch, best_state = _load_checkpoint(run_dir, model, optimizer, scheduler, scaler,
                                                                         ema, cfg.ema_decay)
        if write:  # drop log lines of epochs after the checkpoint: they are about to be redone
            old = read_jsonl(metrics_path) if metrics_path.exists() else []
            kept = [r for r in old if r.get("epoch", 0) < start_epoch]
            write_jsonl(metrics_path, kept)
    elif write and metrics_path.exists():
        metrics_path.unlink()

    history, t_start, bad_steps = [], time.perf_counter(), 0
    with _progress(progress and ctx.is_main) as bar:
        for epoch in range(start_epoch, cfg.epochs + 1):
            net.train()
            sampler.set_epoch(epoch)
            t0 = time.perf_counter()
            totals = torch.zeros(3, dtype=torch.float64, device=device)  # loss sum, correct, count
            job = bar.add_task(f"epoch {epoch}/{cfg.epochs}", total=steps_per_epoch, info="") if bar else None
            for step, step_batches in enumerate(_micro_batches(list(sampler), per_rank, cfg.grad_accum), 1):
                optimizer.zero_grad(set_to_none=True)
                step_ok = True
                for i, ib in enumerate(step_batches):
                    xb = train.x[ib]
                    if augment:
                        xb = shift_and_flip(xb, aug_gen)
                    if cfg.token_dropout > 0 and not xb.is_floating_point():
                        xb = drop_tokens(xb, aug_gen, cfg.token_dropout, getattr(task, "student_width", None))
                    xb, yb = _to_device(xb, device, cfg.channels_last), _to_device(train.y[ib], device)
                    # DDP all-reduces gradients during backward; on all but the last micro-batch it must not. Forward
                    # and backward both belong inside no_sync (torch DistributedDataParallel.no_sync docs).
                    accumulate = ddp is not None and i < len(step_batches) - 1
                    with ddp.no_sync() if accumulate else nullcontext():
                        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                            out = task(net, xb, yb)
                        loss = out["loss"]
                        step_ok &= bool(torch.isfinite(loss.detach()))
                        scaled = loss * (len(ib) / sum(len(b) for b in step_batches))
                        (scaler.scale(scaled) if scaler else scaled).backward()
                    totals += torch.stack([loss.detach().double() * len(ib),
                                           (out["logits"].detach().argmax(1) == yb).sum().double(),
                                           torch.tensor(float(len(ib)), device=device)])
                # Under DDP every rank must skip the same steps, or the replicas' weights drift apart.
                step_ok = D.all_true(step_ok, ctx, device)
                if step_ok:  # a skipped step leaves the weights as they were
                    _optimizer_step(optimizer, model, scaler, cfg.clip_grad)
                    if ema is not None:
                        ema.update_parameters(model)
                bad_steps = 0 if step_ok else bad_steps + 1
                if bad_steps >= MAX_BAD_STEPS:
                    raise TinyfmError(f"training stopped at epoch {epoch}: the loss was inf/NaN for {bad_steps} steps "
                                      f"in a row (lower --lr{_loss_terms(cfg)}, use --amp bf16 or off, or set "
                                      "--clip-grad)")
                scheduler.step()
                if job is not None and (step % PROGRESS_EVERY == 0 or step == steps_per_epoch):
                    bar.update(job, completed=step)  # every few steps: rich's bookkeeping is not free
            loss_sum, correct, count = D.all_reduce_sum(totals, ctx).tolist()
            record = {"epoch": epoch, "train_loss": loss_sum / count, "train_accuracy": correct / count,
                      "lr": scheduler.get_last_lr()[-1]}
            if val is not None and len(val.y):
                v = evaluate_split(averaged, val.x, val.y, cfg.eval_batch_size, device, ctx, cfg.channels_last)
                record.update(val_loss=v["loss"], val_accuracy=v["accuracy"])
            seconds = time.perf_counter() - t0
            record.update(seconds=seconds, images_per_s=count / seconds)
            history.append(record)
            score = record.get("val_accuracy", epoch)  # without validation: the last epoch is the best
            if score > best_acc:
                best_acc, best_epoch = score, epoch
                best_state = {k: v.detach().clone() for k, v in averaged.state_dict().items()}
                if write and spec is not None:
                    save_model(averaged, run_dir, spec, stem=stem)
            if job is not None:
                bar.update(job, info=_epoch_info(record))
                if not bar.console.is_terminal:  # logs and pipes get one plain line per epoch as it ends
                    bar.console.print(f"epoch {epoch}/{cfg.epochs}: {_epoch_info(record)}", soft_wrap=True)
            if write:
                append_jsonl(metrics_path, record)
                _save_checkpoint(run_dir, model, optimizer, scheduler, scaler, epoch, best_acc, best_epoch, best_state,
                                 ema, cfg.ema_decay)
    if best_state is not None:
        model.load_state_dict(best_state)
    D.barrier(ctx)
    return TrainResult(best_val_accuracy=best_acc if val is not None else float("nan"), best_epoch=best_epoch,
                       seconds=time.perf_counter() - t_start, device=str(device),
                       amp=str(dtype).removeprefix("torch.") if dtype else "off", world_size=ctx.world_size,
                       history=history)


def _optimizer_step(optimizer: torch.optim.Optimizer, model: nn.Module, scaler: torch.amp.GradScaler | None,
                    clip: float | None) -> None:
    """One optimizer step, clipping first; with a GradScaler (fp16) unscale first: it skips overflowing steps itself."""
    if scaler is not None:
        if clip:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), clip)
        scaler.step(optimizer)
        scaler.update()
        return
    if clip:
        nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()


def _epoch_info(r: dict[str, Any]) -> str:
    s = f"loss {r['train_loss']:.4f} acc {r['train_accuracy']:.2%}"
    if "val_accuracy" in r:
        s += f" | val loss {r['val_loss']:.4f} acc {r['val_accuracy']:.2%}"
    return s + f" | {r['images_per_s']:.0f} samples/s"


def _save_checkpoint(run_dir: Path, model, optimizer, scheduler, scaler, epoch, best_acc, best_epoch, best_state,
                     ema=None, ema_decay: float = 0.0):
    state = {"model": unwrap(model).state_dict(), "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict() if scaler else None,
             "epoch": epoch, "best_acc": best_acc, "best_epoch": best_epoch, "best_state": best_state,
             "ema": ema.state_dict() if ema is not None else None, "ema_decay": ema_decay}
    with atomic_path(run_dir / "last.ckpt") as tmp:
        torch.save(state, tmp)


def _load_checkpoint(run_dir: Path | None, model, optimizer, scheduler, scaler, ema=None, ema_decay: float = 0.0):
    path = (run_dir or Path(".")) / "last.ckpt"
    if not path.is_file():
        raise TinyfmError(f"--resume: {path} not found (nothing to resume; train without --resume)")
    state = torch.load(path, map_location="cpu", weights_only=True)  # tensors and plain containers only
    saved = state.get("ema_decay", 0.0)
    if saved != ema_decay:  # best_acc would compare averaged with raw weights, or averages of another horizon
        raise TinyfmError(f"--resume: {path} was written with train.ema_decay={saved}, this run has {ema_decay}; "
                          "resume with the setting it was written with")
    unwrap(model).load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    if ema is not None:
        ema.load_state_dict(state["ema"])
    return state["epoch"] + 1, state["best_acc"], state["best_epoch"], state["best_state"]
