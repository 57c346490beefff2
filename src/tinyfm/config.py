"""Typed configs, one dataclass per concern, with recipe (YAML/JSON) loading and a JSON round trip.

Precedence: dataclass defaults < recipe file (``--recipe``) < command-line flags. The resolved
:class:`RunConfig` is written as ``config.json`` in every run directory and loads back unchanged.

Example:
    cfg = load_recipe("fashion-mnist", overrides={"train.epochs": 1})
    cfg2 = RunConfig.from_dict(cfg.to_dict())
    assert cfg == cfg2
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, get_type_hints

import yaml

from tinyfm.errors import ConfigError


def _check_choice(flag: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise ConfigError(f"{flag}: got {value!r}, expected one of {', '.join(map(str, allowed))}")


def _check_range(flag: str, value: float, lo: float | None = None, hi: float | None = None) -> None:
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        bounds = f"[{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]"
        raise ConfigError(f"{flag}: got {value!r}, expected a value in {bounds}")


def _check_label_map(label_map: Any) -> None:
    """A label map sends raw labels to the ids 0..K-1, each used (K >= 2)."""
    if not isinstance(label_map, dict) or not all(isinstance(v, int) and not isinstance(v, bool)
                                                  for v in label_map.values()):
        raise ConfigError(f"data.label_map: got {label_map!r}, expected a mapping of raw label -> class id")
    ids = sorted(set(label_map.values()))
    if len(ids) < 2 or ids != list(range(len(ids))):
        raise ConfigError(f"data.label_map: class ids must be 0..K-1 with K >= 2, got {ids}")


@dataclass
class DataConfig:
    dataset: str = "fashion-mnist"
    """Registered data source (see tinyfm.data.list_datasets)."""
    data_dir: str | None = None
    """Directory of the dataset files; default: $TINYFM_DATA, then the source's system directory."""
    download: bool = False
    """Download (checksummed) into the cache directory when the files are not found."""
    val_size: int = 5000
    """Images carved from the training split (deterministically, stratified) for validation."""
    train_subset: int | None = None
    """Use only this many training images (stratified); None = all."""
    test_subset: int | None = None
    """Evaluate on only this many test images (stratified); None = the whole test split."""
    augment: bool = False
    """Light augmentation on the training split: random shifts of up to 2 pixels and horizontal flips."""
    split_seed: int = 0
    """Seed of the validation/subset split (independent of the training seed)."""
    # ---- text data (task: text-classification); see docs/nlp.md ----
    text_column: str = "text"
    """Text data from CSV/TSV/JSONL (dataset text-file): the column or key holding the text."""
    label_column: str = "label"
    """Text data from CSV/TSV/JSONL: the column or key holding the label."""
    label_map: dict[str, int] | None = None
    """Text data: raw label (as written in the file) -> class id 0..K-1; None = the sorted distinct labels."""
    encoding_errors: str = "strict"
    """Text files are UTF-8: strict (a bad byte is an error naming file and offset) | replace (U+FFFD)."""
    max_length: int = 64
    """Tokens per text: longer texts are truncated (at the end), shorter ones padded with id 0."""
    vocab_size: int = 10000
    """Word-level vocabulary, padding (0) and out-of-vocabulary (1) ids included: the embedding table's rows."""
    segmenter: str = "auto"
    """Word-level splitting: auto (CJK runs: jieba if installed, else characters) | words | jieba | chars."""

    def __post_init__(self) -> None:
        _check_range("--val-size", self.val_size, 0)
        for flag, v in (("--train-subset", self.train_subset), ("--test-subset", self.test_subset)):
            if v is not None:
                _check_range(flag, v, 1)
        _check_choice("--encoding-errors", self.encoding_errors, ("strict", "replace"))
        _check_choice("--segmenter", self.segmenter, ("auto", "words", "jieba", "chars"))
        _check_range("--max-length", self.max_length, 1)
        _check_range("--vocab-size", self.vocab_size, 3)  # padding, out-of-vocabulary and one word
        if self.label_map is not None:
            _check_label_map(self.label_map)


@dataclass
class ModelConfig:
    name: str = "seed-cnn"
    """Registry name (see `tinyfm models`)."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """Constructor arguments beyond num_classes / in_channels."""


@dataclass
class TrainConfig:
    epochs: int = 5
    """Passes over the training split."""
    batch_size: int = 64
    """Global batch size (split across processes under DDP)."""
    lr: float = 1e-3
    """Peak learning rate (Adam 1e-3 is the seed's optimizer setting)."""
    optimizer: str = "adam"
    """adam | adamw | sgd."""
    weight_decay: float = 0.0
    """Decoupled for adamw, L2 for adam/sgd."""
    layer_lr_decay: float = 1.0
    """Transformers: layer-wise learning-rate decay (ELECTRA, Clark et al. 2020): the head learns at --lr, the top
    block at lr·d, the one below at lr·d², ..., the embeddings at lr·d^(blocks+1); 1 = one rate for all."""
    schedule: str = "onecycle"
    """none | cosine | onecycle (warm-up then cosine decay, per step)."""
    warmup_frac: float = 0.1
    """Fraction of steps spent warming up (onecycle/cosine)."""
    label_smoothing: float = 0.0
    """Cross-entropy label smoothing."""
    token_dropout: float = 0.0
    """Text models: the probability that each training token is removed from its text, drawn afresh every step
    (word dropout, Iyyer et al. 2015); 0 = off. Validation and test texts are never changed."""
    ema_decay: float = 0.0
    """Keep an exponential moving average of the weights (decay per optimizer step, e.g. 0.995 averages over the
    last ~200 steps) and validate, keep and save the average instead of the raw weights; 0 = off. The average
    starts at the weights after the first step: a decay whose horizon (1 / (1 - decay) steps) is longer than the
    run keeps mostly those."""
    adversarial_eps: float = 0.0
    """Text models: adversarial training on the word embeddings (Miyato et al. 2017): each step also trains on the
    batch with every text's embeddings moved by this L2 norm in the direction that raises its loss most; 0 = off.
    About twice the cost of a step; the logged train_loss is the sum of the two losses."""
    rdrop_alpha: float = 0.0
    """R-Drop (Liang et al. 2021): each batch goes through the model twice (two dropout samples) and this weight
    times the symmetric KL divergence of the two predictions joins the loss (and the logged train_loss); 0 = off.
    About twice the cost of a step; a model without dropout trains without it (a note says so)."""
    grad_accum: int = 1
    """Micro-batches accumulated per optimizer step."""
    clip_grad: float | None = None
    """Clip the global gradient norm to this value; None = no clipping."""
    device: str = "auto"
    """auto (cuda > mps > cpu) | cpu | cuda | cuda:N | mps."""
    amp: str = "auto"
    """auto (bf16 on CUDA if supported, else fp16; off on CPU) | off | bf16 | fp16."""
    channels_last: bool = False
    """Use the channels_last memory format for 4-D inputs (helps convolutions on GPU)."""
    compile: bool = False
    """Wrap the model in torch.compile."""
    threads: int | None = None
    """torch intra-op threads per process; None = cores / processes."""
    seed: int = 0
    """Seed for weights, shuffling and augmentation."""
    eval_batch_size: int = 1000
    """Batch size for validation and test evaluation."""

    def __post_init__(self) -> None:
        _check_range("--epochs", self.epochs, 0)
        _check_range("--batch-size", self.batch_size, 1)
        _check_range("--lr", self.lr, 0)
        _check_range("--grad-accum", self.grad_accum, 1)
        _check_range("--warmup-frac", self.warmup_frac, 0, 1)
        if not 0 < self.layer_lr_decay <= 1:  # also rejects NaN
            raise ConfigError(f"train.layer_lr_decay: got {self.layer_lr_decay!r}, expected a value in (0, 1]")
        if not 0 <= self.ema_decay < 1:  # also rejects NaN
            raise ConfigError(f"train.ema_decay: got {self.ema_decay!r}, expected a value in [0, 1) (0 = off)")
        if not 0 <= self.adversarial_eps < math.inf:  # also rejects NaN
            raise ConfigError(f"train.adversarial_eps: got {self.adversarial_eps!r}, expected a finite value >= 0 "
                              "(0 = off)")
        if not 0 <= self.rdrop_alpha < math.inf:  # also rejects NaN
            raise ConfigError(f"train.rdrop_alpha: got {self.rdrop_alpha!r}, expected a finite value >= 0 (0 = off)")
        if not 0 <= self.token_dropout < 1:  # also rejects NaN
            raise ConfigError(f"train.token_dropout: got {self.token_dropout!r}, expected a value in [0, 1)")
        _check_choice("--optimizer", self.optimizer, ("adam", "adamw", "sgd"))
        _check_choice("--schedule", self.schedule, ("none", "cosine", "onecycle"))
        _check_choice("--amp", self.amp, ("auto", "off", "bf16", "fp16"))
        if not (self.device in ("auto", "cpu", "cuda", "mps") or self.device.startswith("cuda:")):
            raise ConfigError(f"--device: got {self.device!r}, expected auto, cpu, cuda, cuda:N or mps")


@dataclass
class ExportConfig:
    opset: int = 18
    """ONNX opset version."""
    parity_samples: int = 1000
    """Test images compared between PyTorch and ONNX Runtime."""
    atol: float = 1e-4
    """Largest |Δlogit| accepted between PyTorch and ONNX Runtime."""


@dataclass
class MeasureConfig:
    threads: int = 2
    """Intra-op threads for PyTorch and ONNX Runtime while timing (set explicitly: timings swing otherwise)."""
    latency_iters: int = 200
    """Batch-1 calls timed per repeat."""
    throughput_batch: int = 256
    """Batch size for the throughput measurement."""
    throughput_iters: int = 10
    """Large-batch calls timed per repeat."""
    repeats: int = 3
    """Interleaved rounds over all variants; the reported figure is the median over rounds."""
    warmup: int = 20
    """Untimed calls before each timed block."""

    def __post_init__(self) -> None:
        for flag, v in (("--threads", self.threads), ("--repeats", self.repeats), ("--latency-iters",
                        self.latency_iters), ("--throughput-batch", self.throughput_batch)):
            _check_range(flag, v, 1)


@dataclass
class CompressConfig:
    variants: list[dict[str, Any]] = field(default_factory=list)
    """Compressed variants built from the trained model, each {"name": ..., "passes": [{"pass": NAME, ...}]};
    passes run in order (e.g. prune then quantize), settings are the pass's Config fields."""
    max_drop: float | None = None
    """Accuracy control: allowed validation-accuracy drop (pp) vs fp32 ONNX; `tinyfm compress` picks the
    smallest variant within it. None = keep every variant that passes its own gates."""

    def __post_init__(self) -> None:
        for i, v in enumerate(self.variants):
            if not isinstance(v, dict) or not isinstance(v.get("passes"), list) or not v["passes"]:
                raise ConfigError(f"compress.variants[{i}]: expected {{name: ..., passes: [{{pass: NAME, ...}}]}}")
            for j, p in enumerate(v["passes"]):
                if not isinstance(p, dict) or "pass" not in p:
                    raise ConfigError(f"compress.variants[{i}].passes[{j}]: expected a mapping with a 'pass' key")
        if self.max_drop is not None:
            _check_range("--max-drop", self.max_drop, 0)


@dataclass
class RunConfig:
    name: str = "fashion-mnist"
    """Run name; the run directory defaults to runs/<name>."""
    task: str = "image-classification"
    """What the pipeline does with the data: image-classification | text-classification (recorded in results)."""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    measure: MeasureConfig = field(default_factory=MeasureConfig)
    compress: CompressConfig = field(default_factory=CompressConfig)

    def __post_init__(self) -> None:
        _check_choice("task", self.task, ("image-classification", "text-classification"))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        return _from_dict(cls, d, "")


def _from_dict(cls: type, d: dict[str, Any], prefix: str) -> Any:
    """Build dataclass `cls` from a dict, recursing into nested dataclasses; unknown keys are errors."""
    if not isinstance(d, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {type(d).__name__}")
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in d.items():
        if key not in names:
            close = difflib.get_close_matches(key, names, n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else f" (allowed: {', '.join(sorted(names))})"
            raise ConfigError(f"unknown setting {prefix}{key}{hint}")
        sub = hints[key]
        if dataclasses.is_dataclass(sub):
            kwargs[key] = _from_dict(sub, value, f"{prefix}{key}.")
        else:
            if isinstance(value, bool) and not _type_ok(value, sub) and _type_ok("off", sub):
                value = "on" if value else "off"  # YAML 1.1 reads `amp: off` as false; the user meant the word
            _check_type(f"{prefix}{key}", value, sub)
            kwargs[key] = value
    return cls(**kwargs)


def _type_ok(value: Any, hint: Any) -> bool:
    """Whether `value` (read from YAML/JSON/--set) fits the annotation `hint` (int is not bool; float takes int)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if hint is dict or origin is dict:
        return isinstance(value, dict)
    if hint in (list, tuple) or origin in (list, tuple):
        return isinstance(value, list | tuple)
    return True  # Any and other annotations: the dataclass's own checks decide


def _describe(hint: Any) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_describe(h) for h in typing.get_args(hint))
    names = {bool: "true/false", int: "an integer", float: "a number", str: "a string", type(None): "null"}
    if hint in names:
        return names[hint]
    origin = typing.get_origin(hint) or hint
    return {dict: "a mapping", list: "a list", tuple: "a list"}.get(origin, str(hint))


def _check_type(name: str, value: Any, hint: Any) -> None:
    if not _type_ok(value, hint):
        raise ConfigError(f"{name}: got {value!r}, expected {_describe(hint)}")


def list_recipes() -> list[str]:
    """Names of the built-in recipes (files in tinyfm/recipes)."""
    return sorted(p.name.removesuffix(".yaml") for p in resources.files("tinyfm.recipes").iterdir()
                  if p.name.endswith(".yaml"))


def _read_recipe(recipe: str | Path) -> dict[str, Any]:
    path = Path(recipe)
    if path.suffix in (".yaml", ".yml", ".json") or path.exists():
        if not path.is_file():
            raise ConfigError(f"--recipe: {path} not found")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise ConfigError(f"--recipe: {path} is not UTF-8 text (bad byte at offset {e.start})") from None
        except OSError as e:
            raise ConfigError(f"--recipe: {path}: {e.strerror}") from None
        where = str(path)
    elif recipe in list_recipes():
        text = resources.files("tinyfm.recipes").joinpath(f"{recipe}.yaml").read_text(encoding="utf-8")
        where = f"built-in recipe {recipe}"
    else:
        close = difflib.get_close_matches(str(recipe), list_recipes(), n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise ConfigError(f"--recipe: {recipe!r} is neither a file nor a built-in recipe "
                          f"(built-in: {', '.join(list_recipes())}{hint})")
    try:
        d = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"{where}: not valid YAML{at}: {getattr(e, 'problem', None) or e}") from None
    if not isinstance(d, dict):
        raise ConfigError(f"{where}: expected a mapping of settings, got {type(d).__name__}")
    return d


def set_dotted(d: dict[str, Any], key: str, value: Any, flag: str = "--set") -> None:
    """d[a][b][c] = value for key "a.b.c", creating the sections on the way (a section that is a value: error)."""
    *parents, leaf = key.split(".")
    for i, p in enumerate(parents):
        d = d.setdefault(p, {})
        if not isinstance(d, dict):
            raise ConfigError(f"{flag} {key}: {'.'.join(parents[:i + 1])} is a value, not a section")
    d[leaf] = value


def parse_set(items: list[str] | None, flag: str = "--set", example: str = "train.epochs=3") -> dict[str, Any]:
    """``["train.epochs=3", "compress.variants=[]"]`` -> dotted overrides; values are read as YAML.

    `flag` and `example` name the option in errors (``--passes`` reads its pass settings with this too); a key
    given twice is an error, not a silent override.

    Example:
        >>> parse_set(["train.lr=1e-3", "train.channels_last=true"])
        {'train.lr': 0.001, 'train.channels_last': True}
    """
    import yaml

    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(f"{flag} {item!r}: expected KEY=VALUE with a dotted key, e.g. {example}")
        if key in out:
            raise ConfigError(f"{flag}: {key} is given twice ({key}={out[key]!r} and {item!r}); give it once")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as e:
            raise ConfigError(f"{flag} {item!r}: the value is not valid YAML ({e.problem})") from None
        out[key] = _number_or_str(value)
    return out


def _number_or_str(value: Any) -> Any:
    """YAML 1.1 reads ``1e-3`` (no dot) as a string; a user writing it means the number."""
    import re

    if isinstance(value, str) and re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+", value.strip()):
        return float(value)
    return value


def load_recipe(recipe: str | Path | None = "fashion-mnist", overrides: dict[str, Any] | None = None) -> RunConfig:
    """Resolve a RunConfig: defaults < recipe < overrides (dotted keys, e.g. ``{"train.epochs": 1}``).

    Overrides whose value is None are ignored, so unset CLI flags do not clobber the recipe. Values are copied:
    a later dotted key (``model.kwargs.init``) never writes into a dict the caller passed (``model.kwargs``).
    """
    d = _read_recipe(recipe) if recipe else {}
    for key, value in (overrides or {}).items():
        if value is not None:
            set_dotted(d, key, copy.deepcopy(value))
    try:
        return RunConfig.from_dict(d)
    except TypeError as e:  # a wrong value type for a field (e.g. a list where a number belongs)
        raise ConfigError(f"recipe: {e}") from None
