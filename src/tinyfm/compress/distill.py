"""Knowledge distillation: a loss (``DistillTask``) any pass can train with, and the "distill" pass.

The loss is Hinton et al. 2015, "Distilling the Knowledge in a Neural Network" (arXiv:1503.02531):

    loss = alpha * T² * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * CE(student, y)

Soft targets at temperature T carry the teacher's "dark knowledge" (which wrong classes look alike); their
gradients scale as 1/T², so the T² factor keeps the two terms' balance independent of T (paper, section 2).

The pass trains a small registry model (``--student``) against the trained original and, by default, the
same student from the same initial weights without the teacher, so the report can state the distillation
gain in percentage points rather than an accuracy with nothing to compare it to.

Example:
    from tinyfm.compress import apply_pass
    res = apply_pass("distill", teacher, {"student": "seed-cnn", "student_kwargs": {"width": 0.5}}, ctx)
    res.changes["gain_pp"], res.changes["spec"]  # accuracy gained from the teacher; model.json spec
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tinyfm.compress.base import PassContext, PassResult, clone, finetune, size_record, val_accuracy
from tinyfm.config import _check_range
from tinyfm.errors import ConfigError


def check_distill_settings(temperature: float, alpha: float) -> None:
    """Raise ConfigError naming the flag when the temperature is not positive or alpha is outside [0, 1]."""
    if not temperature > 0:  # `not >` also rejects NaN
        raise ConfigError(f"--temperature: got {temperature!r}, expected a value > 0")
    _check_range("--alpha", alpha, 0, 1)


class DistillTask:
    """Training task: distil `teacher` into the model being trained (same signature as ClassificationTask).

    The teacher runs in eval mode under torch.no_grad on the device of the batch, i.e. the student's device
    (it is moved there on first use). The trainer may pass a DDP- or torch.compile-wrapped student: only the
    student is called through that wrapper; the teacher stays a plain module, so DDP never sees its weights.

    Teacher logits are recomputed every step rather than cached: the task only sees (x, y), with no sample
    index to key a cache by, and augmented batches differ every epoch anyway.

    Args:
        teacher: the trained model whose logits are the soft targets; it is not trained (no gradients).
        temperature: softmax temperature T (> 0); higher T gives softer targets.
        alpha: weight of the distillation term in [0, 1]; 0 is plain cross-entropy, 1 ignores the labels.
        label_smoothing: label smoothing of the cross-entropy term.

    Returns (per call):
        {"loss", "logits" (the student's), "kd" and "ce" (the two terms, detached)}.

    Example:
        task = DistillTask(teacher, temperature=4.0, alpha=0.7)
        fit(student, train, val, TrainConfig(epochs=3), task=task)
    """

    def __init__(self, teacher: nn.Module, temperature: float = 4.0, alpha: float = 0.7,
                 label_smoothing: float = 0.0) -> None:
        check_distill_settings(temperature, alpha)
        self.teacher, self.temperature, self.alpha = teacher, float(temperature), float(alpha)
        self.label_smoothing = label_smoothing

    @torch.no_grad()
    def teacher_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The teacher's logits for batch `x` (eval mode, no gradients, on x's device)."""
        weight = next(self.teacher.parameters(), None)
        if weight is not None and weight.device != x.device:
            self.teacher.to(x.device)
        self.teacher.eval()  # every call: BatchNorm/Dropout must not switch to training behaviour
        return self.teacher(x).float()

    def loss(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor,
             y: torch.Tensor) -> dict[str, torch.Tensor]:
        """The distillation loss from logits: {"loss", "kd", "ce"}."""
        t = self.temperature
        s = student_logits.float()
        # KL(p_teacher || p_student) with both sides as log-probabilities (log_target=True is the stable form);
        # "batchmean" divides the summed KL by the batch size, which is the mathematical KL per sample.
        kd = F.kl_div(F.log_softmax(s / t, dim=1), F.log_softmax(teacher_logits.float() / t, dim=1),
                      reduction="batchmean", log_target=True) * (t * t)
        ce = F.cross_entropy(s, y, label_smoothing=self.label_smoothing)
        loss = self.alpha * kd + (1.0 - self.alpha) * ce
        return {"loss": loss, "kd": kd.detach(), "ce": ce.detach()}

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = model(x)
        return {**self.loss(logits, self.teacher_logits(x), y), "logits": logits}


def distill_finetune(student: nn.Module, teacher: nn.Module | None, ctx: PassContext, epochs: int = 3,
                     temperature: float = 4.0, alpha: float = 0.7, lr_scale: float = 0.3) -> nn.Module:
    """Fine-tune `student` in place against `teacher` with :func:`tinyfm.compress.base.finetune`; returns it.

    What structural passes (dsconv, pruning, low-rank) use to recover accuracy: the original model's soft
    targets carry more signal per image than the labels alone. The teacher is copied, so the caller's model
    keeps its device and mode. teacher=None fine-tunes with plain cross-entropy.

    Args:
        student: the model to train (modified in place, returned on CPU in eval mode).
        teacher: the trained original, or None.
        ctx: the pass context (training data and the run's TrainConfig).
        epochs: fine-tuning epochs; 0 returns the student unchanged.
        temperature, alpha: see :class:`DistillTask`.
        lr_scale: learning rate as a multiple of the run's.

    Returns:
        `student`, holding the best validation epoch's weights.

    Example:
        distill_finetune(small, original, ctx, epochs=3, temperature=4.0, alpha=0.7, lr_scale=0.3)
    """
    check_distill_settings(temperature, alpha)
    task = None
    if teacher is not None:
        task = DistillTask(clone(teacher), temperature, alpha, ctx.train_cfg.label_smoothing)
    return finetune(student, ctx, epochs, lr_scale, task=task)


# ---- the pass -----------------------------------------------------------------------------------------------------

@dataclass
class Config:
    student: str = "tiny-seed-cnn"
    """Registry name of the student model (see `tinyfm models`)."""
    student_kwargs: dict[str, Any] = field(default_factory=dict)
    """Constructor arguments of the student beyond num_classes, e.g. {"width": 0.5}."""
    temperature: float = 4.0
    """Softmax temperature T of the soft targets (> 0; Hinton et al. use 1-20)."""
    alpha: float = 0.7
    """Weight of the distillation term in [0, 1]; the labels' cross-entropy gets 1 - alpha."""
    epochs: int | None = None
    """Training epochs of the student; None = the run's --epochs."""
    lr: float | None = None
    """Peak learning rate of the student; None = the run's --lr (the student trains from scratch)."""
    compare_scratch: bool = True
    """Also train the same student from the same weights without the teacher and record the gain."""

    def __post_init__(self) -> None:
        check_distill_settings(self.temperature, self.alpha)
        if self.epochs is not None:
            _check_range("--epochs", self.epochs, 1)
        if self.lr is not None and not self.lr > 0:
            raise ConfigError(f"--lr: got {self.lr!r}, expected a value > 0")
        if not isinstance(self.student_kwargs, dict):
            raise ConfigError(f"--student-kwargs: got {self.student_kwargs!r}, expected a mapping")
        _check_student(self.student)


def _check_student(name: str) -> None:
    from tinyfm.models import list_models

    known = list_models()
    if name not in known:
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.4)
        hint = f"did you mean {', '.join(close)}?" if close else f"known: {', '.join(known)}"
        raise ConfigError(f"--student: unknown model {name!r} ({hint})")


@torch.no_grad()
def _num_classes(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    # From the output, not the last Linear: a model may end in a conv head or a pooling layer.
    model.eval()
    return int(model(torch.zeros(1, *input_shape)).shape[-1])


def _train(student: nn.Module, ctx: PassContext, cfg: Config, task: Any) -> nn.Module:
    from tinyfm.train import fit

    epochs = cfg.epochs if cfg.epochs is not None else ctx.train_cfg.epochs
    lr = cfg.lr if cfg.lr is not None else ctx.train_cfg.lr
    fit(student, ctx.train, ctx.val, dataclasses.replace(ctx.train_cfg, epochs=epochs, lr=lr), task=task,
        progress=ctx.progress)
    return student.cpu().eval()


def apply(model: nn.Module, config: Config, ctx: PassContext) -> PassResult:
    """Train `config.student` against the teacher (ctx.teacher, else `model`); `model` is left unchanged.

    Returns:
        PassResult "distill-<student>" whose model is the trained student. transform is None (the student is a
        plain registry model): save it with ``changes["spec"]`` as model.json. changes also holds
        with_teacher_val_accuracy, scratch_val_accuracy and gain_pp (both None without compare_scratch).
    """
    from tinyfm.models import create_model

    teacher = clone(ctx.teacher if ctx.teacher is not None else model)
    before = size_record(teacher, ctx)
    kwargs = {"num_classes": _num_classes(teacher, ctx.input_shape), **config.student_kwargs}
    torch.manual_seed(ctx.train_cfg.seed)  # the student's initial weights, shared with the scratch baseline
    student = create_model(config.student, **kwargs)
    init = copy.deepcopy(student.state_dict())
    task = DistillTask(teacher, config.temperature, config.alpha, ctx.train_cfg.label_smoothing)
    with_teacher = val_accuracy(_train(student, ctx, config, task), ctx)
    scratch = _scratch_accuracy(config, kwargs, init, ctx) if config.compare_scratch else None
    changes = {"spec": {"name": config.student, "kwargs": kwargs}, "teacher_val_accuracy": before["val_accuracy"],
               "with_teacher_val_accuracy": with_teacher, "scratch_val_accuracy": scratch,
               "gain_pp": None if scratch is None else 100.0 * (with_teacher - scratch)}
    return PassResult(name=f"distill-{config.student}", model=student, config=config, transform=None,
                      changes=changes, before=before, after=size_record(student, ctx))


def _scratch_accuracy(config: Config, kwargs: dict[str, Any], init: dict[str, torch.Tensor],
                      ctx: PassContext) -> float:
    """Validation accuracy of the student trained from the same weights, epochs and data with labels only."""
    from tinyfm.models import create_model
    from tinyfm.train import ClassificationTask

    scratch = create_model(config.student, **kwargs)
    scratch.load_state_dict(init)
    return val_accuracy(_train(scratch, ctx, config, ClassificationTask(ctx.train_cfg.label_smoothing)), ctx)
