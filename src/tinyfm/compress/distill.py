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
from tinyfm.config import TrainConfig, _check_choice, _check_range
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

    Teacher logits are recomputed every step by default (augmented image batches differ every epoch); with
    `cache` they are kept per teacher input row (keyed by its bytes), so a fixed text corpus costs one teacher
    pass, even when the student's half of each row is changed by word dropout (TrainConfig.token_dropout).

    A teacher that reads another input than the student (MiniLM's WordPiece ids vs the student's word ids) gets
    its own: each training row is the student's ids followed by the teacher's, and `student_width` says where
    they split (see :func:`paired_split`).

    Args:
        teacher: the trained model whose logits are the soft targets; it is not trained (no gradients).
        temperature: softmax temperature T (> 0); higher T gives softer targets.
        alpha: weight of the distillation term in [0, 1]; 0 is plain cross-entropy, 1 ignores the labels.
        label_smoothing: label smoothing of the cross-entropy term.
        student_width: columns of each input row that are the student's (the rest are the teacher's); None =
            both read the whole row.
        cache: keep the teacher's logits per teacher input row (the teacher's inputs must not be augmented); a dict
            is used as the cache itself (shared by the students of one run).

    Returns (per call):
        {"loss", "logits" (the student's), "kd" and "ce" (the two terms, detached)}.

    Example:
        task = DistillTask(teacher, temperature=4.0, alpha=0.7)
        fit(student, train, val, TrainConfig(epochs=3), task=task)
    """

    def __init__(self, teacher: nn.Module, temperature: float = 4.0, alpha: float = 0.7,
                 label_smoothing: float = 0.0, student_width: int | None = None,
                 cache: bool | dict[bytes, torch.Tensor] = False) -> None:
        check_distill_settings(temperature, alpha)
        self.teacher, self.temperature, self.alpha = teacher, float(temperature), float(alpha)
        self.label_smoothing, self.student_width = label_smoothing, student_width
        self._cache: dict[bytes, torch.Tensor] | None = cache if isinstance(cache, dict) else ({} if cache else None)

    def split_input(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the student's input, the teacher's input) of a batch."""
        w = self.student_width
        return (x, x) if w is None else (x[:, :w], x[:, w:])

    @torch.no_grad()
    def _run_teacher(self, x: torch.Tensor) -> torch.Tensor:
        weight = next(self.teacher.parameters(), None)
        if weight is not None and weight.device != x.device:
            self.teacher.to(x.device)
        self.teacher.eval()  # every call: BatchNorm/Dropout must not switch to training behaviour
        return self.teacher(x).float()

    @torch.no_grad()
    def teacher_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The teacher's logits for the teacher's input `x` (eval mode, no gradients, on x's device)."""
        if self._cache is None:
            return self._run_teacher(x)
        keys = [row.tobytes() for row in x.cpu().numpy()]
        todo = [i for i, k in enumerate(keys) if k not in self._cache]
        if todo:
            fresh = self._run_teacher(x[todo]).cpu()
            self._cache.update(zip((keys[i] for i in todo), fresh, strict=True))
        return torch.stack([self._cache[k] for k in keys]).to(x.device)

    @torch.no_grad()
    def fill_cache(self, x: torch.Tensor, batch_size: int = 256, device: str | torch.device = "cpu") -> int:
        """Compute the teacher's logits for every row of its input `x` not cached yet; returns how many.

        Rows go through the teacher shortest first, and when the teacher `ignores_trailing_padding` (MiniLM) each
        batch is cut to its longest text: a corpus of short reviews padded to 64 ids costs about half the time.
        The teacher runs on `device`; the cache is kept on the CPU.
        """
        if self._cache is None:
            raise ValueError("fill_cache: this DistillTask was made without cache=True")
        from tinyfm.models.seed_text import PAD_ID, trim_padding

        keys = [row.tobytes() for row in x.cpu().numpy()]
        first: dict[bytes, int] = {}  # one row per distinct input
        for i, k in enumerate(keys):
            if k not in self._cache:
                first.setdefault(k, i)
        todo = list(first.values())
        lengths = (x[todo] != PAD_ID).sum(1)
        order = [todo[j] for j in torch.argsort(lengths, stable=True).tolist()]
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            xb = trim_padding(self.teacher, x[idx].to(device))
            self._cache.update(zip((keys[j] for j in idx), self._run_teacher(xb).cpu(), strict=True))
        return len(order)

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
        xs, xt = self.split_input(x)
        logits = model(xs)
        return {**self.loss(logits, self.teacher_logits(xt), y), "logits": logits}


def paired_split(student: Any, teacher: Any) -> Any:
    """One training split whose rows are the student's ids followed by the teacher's (same samples, same order).

    Example:
        train = paired_split(student_data.train, teacher_data.train)  # x: (N, Ls + Lt)
        task = DistillTask(teacher, student_width=student_data.train.x.shape[1])
    """
    from tinyfm.data.dataset import Split

    if not torch.equal(student.y, teacher.y):
        raise ValueError("paired_split: the two splits hold different samples")
    return Split(torch.cat([student.x, teacher.x], dim=1), student.y)


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


def recover(model: nn.Module, original: nn.Module, cfg: Any, ctx: PassContext) -> nn.Module:
    """Fine-tune a structurally changed `model` (pruned, factorised) for cfg.finetune_epochs at cfg.lr_scale,
    distilling from the unchanged `original` when cfg.distill (NNCF/Torch-Pruning practice: the original's soft
    targets recover more accuracy per epoch than the labels alone)."""
    return distill_finetune(model, original if cfg.distill else None, ctx, cfg.finetune_epochs,
                            lr_scale=cfg.lr_scale)


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
    train: dict[str, Any] = field(default_factory=dict)
    """Other training settings of the student (TrainConfig fields, e.g. {batch_size: 64, weight_decay: 0.0});
    the rest are the run's."""
    transfer_copies: int = 0
    """Text: add this many copies of every training text with words removed at random (transfer_drop), labelled
    by the teacher's soft targets, to the student's training set (the augmented transfer set of Tang et al. 2019,
    "Distilling Task-Specific Knowledge from BERT into Simple Neural Networks", arXiv:1903.12136). The scratch
    twin trains on the original texts. 0 = the training texts only."""
    transfer_drop: float = 0.2
    """Probability that a word is removed from a transfer copy."""
    init_embeddings: str | bool = "off"
    """Text: start the student's word embeddings from a foundation model (see :func:`teacher_word_vectors`): every
    word of the student's vocabulary is read alone and the features before the last Linear layer are reduced by PCA
    to the student's embedding width. "teacher" (or true) reads the fine-tuned teacher; "pretrained" reads the
    teacher's architecture with its pretrained weights, before fine-tuning (MiniLM as shipped: pretrained word
    vectors, no task knowledge, so it also suits alpha 0); "off" (false) keeps the random start. The scratch twin
    always keeps the random start, so the reported gain covers every use of the teacher."""

    def __post_init__(self) -> None:
        check_distill_settings(self.temperature, self.alpha)
        if self.epochs is not None:
            _check_range("--epochs", self.epochs, 1)
        if self.lr is not None and not self.lr > 0:
            raise ConfigError(f"--lr: got {self.lr!r}, expected a value > 0")
        if not isinstance(self.student_kwargs, dict):
            raise ConfigError(f"--student-kwargs: got {self.student_kwargs!r}, expected a mapping")
        _check_student(self.student)
        _check_train(self.train)
        _check_range("--transfer-copies", self.transfer_copies, 0)
        if not 0 <= self.transfer_drop < 1:  # also rejects NaN
            raise ConfigError(f"--transfer-drop: got {self.transfer_drop!r}, expected a value in [0, 1)")
        self.init_embeddings = {True: "teacher", False: "off"}.get(self.init_embeddings, self.init_embeddings)
        _check_choice("--init-embeddings", self.init_embeddings, ("off", "teacher", "pretrained"))
        if self.transfer_copies and self.alpha == 0:
            raise ConfigError("--transfer-copies: the copies are labelled by the teacher, which alpha 0 never runs "
                              "(set --alpha > 0 or --transfer-copies 0)")


def _check_train(settings: Any) -> None:
    """The student's training settings must be TrainConfig fields with valid values."""
    from tinyfm.config import _from_dict

    if not isinstance(settings, dict):
        raise ConfigError(f"compress.distill.train: got {settings!r}, expected a mapping of TrainConfig settings")
    _from_dict(TrainConfig, settings, "compress.distill.train.")


def check_for_data(config: Config, text: bool) -> None:
    """The student must read what the run's data are (texts or images), and the text-only settings need texts;
    checked before any training (compress.runner.validate_specs) and again when the pass runs."""
    from tinyfm.models.registry import model_tokenizer

    reads_text, kind = model_tokenizer(config.student) is not None, "texts" if text else "images"
    if reads_text != text:
        raise ConfigError(f"--student {config.student}: a model of {'texts' if reads_text else 'images'}, but this "
                          f"run's data are {kind}; choose a student of {kind} (see `tinyfm models`)")
    if not text and config.init_embeddings != "off":
        raise ConfigError(f"--init-embeddings {config.init_embeddings}: word embeddings need a text run, this one's "
                          "data are images (use off)")
    if not text and config.transfer_copies:
        raise ConfigError("--transfer-copies: copies with words removed need a text run, this one's data are images "
                          "(use 0)")


def _check_student(name: str) -> None:
    from tinyfm.models import list_models

    known = list_models()
    if name not in known:
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.4)
        hint = f"did you mean {', '.join(close)}?" if close else f"known: {', '.join(known)}"
        raise ConfigError(f"--student: unknown model {name!r} ({hint})")


@torch.no_grad()
def _num_classes(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    from tinyfm.models.registry import example_input

    # From the output, not the last Linear: a model may end in a conv head or a pooling layer.
    model.eval()
    return int(model(example_input(model, input_shape)).shape[-1])


def _student_train_cfg(ctx: PassContext, cfg: Config) -> TrainConfig:
    epochs = cfg.epochs if cfg.epochs is not None else ctx.train_cfg.epochs
    lr = cfg.lr if cfg.lr is not None else ctx.train_cfg.lr
    return dataclasses.replace(ctx.train_cfg, **{**cfg.train, "epochs": epochs, "lr": lr})


def _train(student: nn.Module, ctx: PassContext, cfg: Config, task: Any, train: Any = None) -> nn.Module:
    from tinyfm.train import fit

    fit(student, ctx.train if train is None else train, ctx.val, _student_train_cfg(ctx, cfg), task=task,
        progress=ctx.progress)
    return student.cpu().eval()


def _student_context(ctx: PassContext, student: str) -> PassContext:
    """Where the student trains and is measured: for text, the same splits encoded with its own tokenizer."""
    if ctx.data is None:
        return ctx
    data = ctx.data.for_model(student)
    if data is ctx.data:
        return ctx
    return dataclasses.replace(ctx, train=data.train, val=data.val, data=data, input_shape=tuple(data.input_shape))


def _transfer_set(ctx: PassContext, sctx: PassContext, cfg: Config) -> tuple[Any, Any]:
    """(the student's, the teacher's) training splits: the training texts, then cfg.transfer_copies word-dropped
    copies of them (text only), each encoded by each model's tokenizer."""
    from tinyfm.data.dataset import Split
    from tinyfm.data.text import drop_words

    if not cfg.transfer_copies or ctx.data is None:
        return sctx.train, ctx.train
    texts = ctx.data.train.texts
    extra = [t for k in range(cfg.transfer_copies) for t in drop_words(texts, cfg.transfer_drop, seed=k)]
    y = ctx.train.y.repeat(cfg.transfer_copies + 1)
    teacher = Split(torch.cat([ctx.train.x, ctx.data.tokenizer.encode(extra)]), y)
    if sctx is ctx:
        return teacher, teacher
    return Split(torch.cat([sctx.train.x, sctx.data.tokenizer.encode(extra)]), y), teacher


@torch.no_grad()
def teacher_word_vectors(teacher: nn.Module, encode: Any, words: list[str], dim: int, batch_size: int = 256,
                         device: str | torch.device = "cpu") -> torch.Tensor:
    """(len(words), dim) word vectors from a trained text model: each word alone goes through `teacher` (ids from
    its own tokenizer, `encode`), the input of its last nn.Linear (MiniLM: the mean-pooled sentence vector the
    head reads) is recorded, centred, and projected on its `dim` principal components; the result is scaled to
    unit standard deviation overall (nn.Embedding's N(0, 1) start), keeping the components' relative spread.

    A fine-tuned teacher's features are organised by what it learned to tell apart, so the first components
    carry the word's polarity: the student starts knowing every vocabulary word, including the ones its few
    thousand training texts use twice.
    """
    from tinyfm.models.seed_text import trim_padding

    heads = [m for m in teacher.modules() if isinstance(m, nn.Linear)]
    if not heads:
        raise ConfigError("--init-embeddings: the teacher has no Linear layer whose input could be read")
    feats: list[torch.Tensor] = []
    hook = heads[-1].register_forward_pre_hook(lambda _m, args: feats.append(args[0].detach().float().cpu()))
    teacher.to(device).eval()
    try:
        for i in range(0, len(words), batch_size):
            teacher(trim_padding(teacher, encode(words[i:i + batch_size]).to(device)))
    finally:
        hook.remove()
    f = torch.cat(feats).flatten(1)
    if dim > min(f.shape):
        raise ConfigError(f"--init-embeddings: the student's {dim}-wide embeddings need at least {dim} words and "
                          f"teacher features; got {f.shape[0]} words of {f.shape[1]} features")
    f = f - f.mean(0)
    _, _, v = torch.linalg.svd(f, full_matrices=False)  # rows of v: principal directions, largest first
    z = f @ v[:dim].T
    return z / z.std().clamp_min(1e-12)


def _init_embeddings(student: nn.Module, teacher: nn.Module, ctx: PassContext, sctx: PassContext,
                     source: str) -> int:
    """Overwrite the rows of the student's vocabulary words with :func:`teacher_word_vectors` of the teacher
    (source "teacher") or of its pretrained copy ("pretrained"); returns how many rows."""
    from tinyfm.train import select_device

    table = getattr(student, "embedding", None)
    words = getattr(getattr(sctx.data, "tokenizer", None), "words", None)
    if ctx.data is None or not isinstance(table, nn.Embedding) or words is None:
        raise ConfigError("--init-embeddings: needs a text run and a student with a word-level embedding table "
                          "(seed-text, text-cnn, text-bigru)")
    reader = teacher if source == "teacher" else _pretrained(teacher)
    vectors = teacher_word_vectors(reader, ctx.data.tokenizer.encode, list(words), table.embedding_dim,
                                   ctx.train_cfg.eval_batch_size, select_device(ctx.train_cfg.device))
    with torch.no_grad():  # word i has id i + 2 (0 is padding, 1 out-of-vocabulary: the mean word, 0 once centred)
        table.weight[2:2 + len(words)] = vectors.to(table.weight)
        table.weight[1] = 0.0
    reader.cpu()
    return len(words)


def _pretrained(teacher: nn.Module) -> nn.Module:
    """The teacher's architecture at its pretrained weights (a model with `pretrained_copy()`, e.g. MiniLM)."""
    copy_of = getattr(teacher, "pretrained_copy", None)
    if copy_of is None:
        raise ConfigError(f"--init-embeddings pretrained: the teacher ({type(teacher).__name__}) has no pretrained "
                          "weights to read; use a foundation-model teacher (minilm-classifier) or 'teacher'")
    try:
        return copy_of()
    except ConfigError as e:
        raise ConfigError(f"--init-embeddings pretrained: {e}") from None


def _shared_cache(ctx: PassContext, source: nn.Module) -> dict[bytes, torch.Tensor]:
    """The run's cache of `source`'s logits per input row (ctx.memo), so students of one teacher share it."""
    caches = ctx.memo.setdefault("teacher_logits", [])  # [(teacher model, cache)]; `is`, not id(): no reuse
    for model, cache in caches:
        if model is source:
            return cache
    caches.append((source, {}))
    return caches[-1][1]


def _task(teacher: nn.Module, cfg: Config, ctx: PassContext, sctx: PassContext,
          source: nn.Module) -> tuple[Any, Any]:
    """(the training task, the training split it reads). alpha 0 trains on the labels alone: no teacher pass."""
    from tinyfm.train import ClassificationTask, select_device

    if cfg.alpha == 0:
        return ClassificationTask(ctx.train_cfg.label_smoothing), None
    student_train, teacher_train = _transfer_set(ctx, sctx, cfg)
    paired = sctx is not ctx  # the teacher reads another tokenizer's ids: each row carries both
    train = paired_split(student_train, teacher_train) if paired else student_train
    width = int(student_train.x.shape[1]) if paired else None
    if ctx.data is None:  # images: augmented batches differ every step, the teacher runs on each
        return DistillTask(teacher, cfg.temperature, cfg.alpha, ctx.train_cfg.label_smoothing), train
    # Text: the teacher's ids are never augmented (word dropout changes the student's half of each row only), so
    # one teacher pass over the corpus, done up front and shared with the run's other students, serves every epoch.
    task = DistillTask(teacher, cfg.temperature, cfg.alpha, ctx.train_cfg.label_smoothing, student_width=width,
                       cache=_shared_cache(ctx, source))
    task.fill_cache(teacher_train.x, ctx.train_cfg.eval_batch_size, select_device(ctx.train_cfg.device))
    return task, train


def apply(model: nn.Module, config: Config, ctx: PassContext) -> PassResult:
    """Train `config.student` against the teacher (ctx.teacher, else `model`); `model` is left unchanged.

    Returns:
        PassResult "distill-<student>" whose model is the trained student. transform is None (the student is a
        plain registry model): save it with ``changes["spec"]`` as model.json. changes also holds
        with_teacher_val_accuracy, scratch_val_accuracy and gain_pp (both None without compare_scratch). For text
        (ctx.data set) the student reads its own tokenizer's ids: PassResult.ctx then holds its encoding.
    """
    from tinyfm.models import create_model

    source = ctx.teacher if ctx.teacher is not None else model
    teacher = clone(source)
    before = size_record(teacher, ctx)
    check_for_data(config, text=ctx.data is not None)
    sctx = _student_context(ctx, config.student)
    data_kwargs = sctx.data.model_kwargs() if sctx.data is not None else {}
    kwargs = {"num_classes": _num_classes(teacher, ctx.input_shape), **data_kwargs, **config.student_kwargs}
    torch.manual_seed(ctx.train_cfg.seed)  # the student's initial weights, shared with the scratch baseline
    student = create_model(config.student, **kwargs)
    init = copy.deepcopy(student.state_dict())  # the scratch twin's start: before the teacher's embeddings
    initialised = 0
    if config.init_embeddings != "off":
        initialised = _init_embeddings(student, teacher, ctx, sctx, config.init_embeddings)
    task, train = _task(teacher, config, ctx, sctx, source)
    with_teacher = val_accuracy(_train(student, sctx, config, task, train), sctx)
    scratch = _scratch_accuracy(config, kwargs, init, sctx) if config.compare_scratch else None
    changes = {"spec": {"name": config.student, "kwargs": kwargs}, "teacher_val_accuracy": before["val_accuracy"],
               "with_teacher_val_accuracy": with_teacher, "scratch_val_accuracy": scratch,
               "gain_pp": None if scratch is None else 100.0 * (with_teacher - scratch),
               "train_samples": len((train if train is not None else sctx.train).y),
               "transfer_copies": config.transfer_copies if ctx.data is not None else 0,
               "embeddings_from_teacher": initialised,
               "embeddings_source": config.init_embeddings}
    return PassResult(name=f"distill-{config.student}", model=student, config=config, transform=None,
                      changes=changes, before=before, after=size_record(student, sctx),
                      ctx=sctx if sctx is not ctx else None)


def _scratch_accuracy(config: Config, kwargs: dict[str, Any], init: dict[str, torch.Tensor],
                      ctx: PassContext) -> float:
    """Validation accuracy of the student trained from the same weights, epochs and data with labels only."""
    from tinyfm.models import create_model
    from tinyfm.train import ClassificationTask

    scratch = create_model(config.student, **kwargs)
    scratch.load_state_dict(init)
    return val_accuracy(_train(scratch, ctx, config, ClassificationTask(ctx.train_cfg.label_smoothing)), ctx)
