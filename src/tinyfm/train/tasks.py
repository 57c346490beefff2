"""Losses as task objects: ``task(model, x, y) -> {"loss", "logits"}``.

The training loop only knows this signature, so distillation and multimodal objectives plug into the
same loop by passing another task.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tinyfm.errors import ConfigError
from tinyfm.models.serialize import unwrap


class ClassificationTask:
    """Cross-entropy on logits (the seed's sparse_categorical_crossentropy), optional label smoothing."""

    def __init__(self, label_smoothing: float = 0.0) -> None:
        self.label_smoothing = label_smoothing

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = model(x)
        return {"loss": F.cross_entropy(logits.float(), y, label_smoothing=self.label_smoothing), "logits": logits}


def input_embeddings(model: nn.Module) -> nn.Embedding | None:
    """The word-embedding table a text model reads its ids through (None for a model without one)."""
    model = unwrap(model)  # DDP / torch.compile wrappers
    if hasattr(model, "encoder") and hasattr(model.encoder, "get_input_embeddings"):  # a transformers encoder
        return model.encoder.get_input_embeddings()
    table = getattr(model, "embedding", None)
    return table if isinstance(table, nn.Embedding) else None


def has_dropout(model: nn.Module) -> bool:
    """Whether `model` holds a dropout layer with p > 0 (what R-Drop needs to sample two sub-networks)."""
    return any(isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0 for m in model.modules())


class _TaskWrapper:
    """A task around another (`self.task`): what it does not define itself is the inner task's, e.g.
    `DistillTask.student_width`, which tells the trainer's word dropout where the student's ids end."""

    def __getattr__(self, name: str):
        if name == "task":  # not set yet: no inner task to ask
            raise AttributeError(name)
        return getattr(self.task, name)


class AdversarialTask(_TaskWrapper):
    """Adversarial training on word embeddings (Miyato, Dai & Goodfellow 2017, "Adversarial Training Methods for
    Semi-Supervised Text Classification", arXiv:1605.07725), around another task.

    Each step adds a second loss: the same task on the same batch with every text's embedded words pushed by
    `r = eps * g / ||g||`, where g is the gradient of the clean loss with respect to that text's embeddings (the
    L2 norm over all its positions and dimensions). Ids cannot be perturbed; their embeddings can, so this is the
    text form of the fast-gradient method. The loss is `clean + adversarial`; the logits reported are the clean
    ones. It costs one extra backward to the embeddings and one extra forward and backward per step.

    `model` is the module being trained (not its DDP or torch.compile wrapper): the adversarial forward goes
    through it directly, so one backward of the summed loss gives each weight one gradient, which DDP
    all-reduces once.
    """

    def __init__(self, task, model: nn.Module, eps: float) -> None:
        self.task, self.model, self.eps = task, model, eps
        self.embedding = input_embeddings(model)
        if self.embedding is None:
            raise ConfigError(f"train.adversarial_eps: {type(model).__name__} has no word-embedding table to perturb "
                             "(adversarial training is for text models)")
        self._delta: torch.Tensor | None = None
        self._seen: torch.Tensor | None = None

    def _hook(self, module: nn.Module, args, output: torch.Tensor) -> torch.Tensor | None:
        if self._delta is not None:
            return output + self._delta.to(output.dtype)
        if output.requires_grad:
            self._seen = output
        return None

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        self._seen = None
        hook = self.embedding.register_forward_hook(self._hook)  # only while this task runs: never left on the model
        try:
            out = self.task(model, x, y)
            seen, self._seen = self._seen, None
            if seen is None:  # no gradient: evaluation, or a frozen table
                return out
            (g,) = torch.autograd.grad(out["loss"], seen, retain_graph=True)
            norm = g.float().flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (g.dim() - 1)))
            self._delta = (self.eps * g.float() / norm).detach()
            adv = self.task(self.model, x, y)
        finally:
            self._delta, self._seen = None, None
            hook.remove()
        return {"loss": out["loss"] + adv["loss"], "logits": out["logits"]}


class RDropTask(_TaskWrapper):
    """R-Drop (Liang et al. 2021, "R-Drop: Regularized Dropout for Neural Networks", arXiv:2106.14448), around
    another task: every batch goes through the model twice in one forward (the batch stacked on itself), so dropout
    samples two sub-networks; the loss is the task's on both copies plus `alpha` times the symmetric KL divergence
    between their predicted distributions. The logits reported are the first copy's. About twice the cost of a
    step (one forward and backward of a doubled batch: DDP sees one ordinary step). A model without dropout (see
    :func:`has_dropout`) gains nothing from it: its two passes agree.
    """

    def __init__(self, task, alpha: float) -> None:
        self.task, self.alpha = task, alpha

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        if not torch.is_grad_enabled():
            return self.task(model, x, y)
        out = self.task(model, torch.cat([x, x]), torch.cat([y, y]))
        a, b = out["logits"].float().log_softmax(-1).chunk(2)
        kl = 0.5 * (F.kl_div(a, b, log_target=True, reduction="batchmean")
                    + F.kl_div(b, a, log_target=True, reduction="batchmean"))
        return {"loss": out["loss"] + self.alpha * kl, "logits": out["logits"][: len(x)]}
