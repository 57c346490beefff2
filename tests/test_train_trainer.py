import math

import pytest
import torch

from tinyfm.config import TrainConfig
from tinyfm.errors import ConfigError, TinyfmError
from tinyfm.io import read_jsonl
from tinyfm.models import create_model, load_model
from tinyfm.train import evaluate_split, fit, shift_and_flip
from tinyfm.train.device import amp_dtype, select_device
from tinyfm.train.trainer import _lr_lambda

FAST = dict(threads=2, eval_batch_size=500)


def test_short_training_on_real_subset_beats_75_percent(fashion_small, tmp_path):
    model = create_model("seed-cnn")
    cfg = TrainConfig(epochs=5, batch_size=32, lr=2e-3, **FAST)
    result = fit(model, fashion_small.train, fashion_small.val, cfg, run_dir=tmp_path,
                 spec={"name": "seed-cnn", "kwargs": {}}, progress=False)
    test = evaluate_split(model, fashion_small.test.x, fashion_small.test.y, 500, torch.device("cpu"))
    assert test["accuracy"] > 0.75 and test["count"] == 1000
    log = read_jsonl(tmp_path / "metrics.jsonl")
    assert [r["epoch"] for r in log] == [1, 2, 3, 4, 5]
    assert log[-1]["train_loss"] < log[0]["train_loss"]
    assert result.best_val_accuracy == max(r["val_accuracy"] for r in log)
    # The saved weights are the best epoch's, and they rebuild from model.json + model.safetensors.
    best = load_model(tmp_path)
    again = evaluate_split(best, fashion_small.test.x, fashion_small.test.y, 500, torch.device("cpu"))
    assert again["accuracy"] == pytest.approx(test["accuracy"])


def test_resume_continues_from_the_checkpoint(fashion_small, tmp_path):
    sub = type(fashion_small.train)(fashion_small.train.x[:512], fashion_small.train.y[:512])
    spec = {"name": "tiny-seed-cnn", "kwargs": {}}
    cfg2 = TrainConfig(epochs=2, batch_size=64, **FAST)
    full = create_model("tiny-seed-cnn")
    fit(full, sub, fashion_small.val, cfg2, progress=False)
    torch.manual_seed(0)
    part = create_model("tiny-seed-cnn")
    fit(part, sub, fashion_small.val, TrainConfig(**{**cfg2.__dict__, "epochs": 1}), run_dir=tmp_path, spec=spec,
        progress=False)
    # Same total schedule: resuming epoch 2 of a 2-epoch run from epoch 1's checkpoint.
    torch.manual_seed(0)
    resumed = create_model("tiny-seed-cnn")
    cfg_resume = cfg2
    from tinyfm.train import trainer as T

    state = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert state["epoch"] == 1
    # The one-epoch run's scheduler had another horizon, so compare the mechanics, not equality of weights.
    fit(resumed, sub, fashion_small.val, cfg_resume, run_dir=tmp_path, spec=spec, progress=False, resume=True)
    assert [r["epoch"] for r in read_jsonl(tmp_path / "metrics.jsonl")] == [1, 2]
    assert T.MAX_BAD_STEPS > 0


def test_resume_without_checkpoint_is_a_clear_error(fashion_small, tmp_path):
    with pytest.raises(TinyfmError, match="last.ckpt not found"):
        fit(create_model("tiny-seed-cnn"), fashion_small.train, None, TrainConfig(epochs=1, **FAST),
            run_dir=tmp_path, resume=True, progress=False)


def test_nan_loss_stops_the_run_instead_of_training_on_it(fashion_small):
    class Exploding(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(784, 10)

        def forward(self, x):
            return self.lin(x.flatten(1)) * float("nan")

    sub = type(fashion_small.train)(fashion_small.train.x[:2048], fashion_small.train.y[:2048])
    with pytest.raises(TinyfmError, match="inf/NaN"):
        fit(Exploding(), sub, None, TrainConfig(epochs=1, batch_size=32, **FAST), progress=False)


def test_batch_must_split_into_accumulation_steps(fashion_small):
    with pytest.raises(ConfigError, match="--batch-size"):
        fit(create_model("tiny-seed-cnn"), fashion_small.train, None,
            TrainConfig(epochs=1, batch_size=2, grad_accum=4, **FAST), progress=False)


def test_gradient_accumulation_matches_one_big_batch(fashion_small):
    sub = type(fashion_small.train)(fashion_small.train.x[:256], fashion_small.train.y[:256])
    results = []
    for accum in (1, 4):
        torch.manual_seed(0)
        m = create_model("tiny-seed-cnn")
        fit(m, sub, None, TrainConfig(epochs=1, batch_size=64, grad_accum=accum, schedule="none", **FAST),
            progress=False)
        results.append(torch.cat([p.detach().flatten() for p in m.parameters()]))
    torch.testing.assert_close(results[0], results[1], rtol=1e-4, atol=1e-5)


def test_augmentation_keeps_shape_and_content():
    x = torch.rand(16, 1, 28, 28)
    out = shift_and_flip(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and not torch.equal(out, x)
    # A shift moves pixels, it does not invent them: the total mass can only shrink (pixels leave the frame).
    assert (out.sum((1, 2, 3)) <= x.sum((1, 2, 3)) + 1e-4).all()


def test_onecycle_warms_up_then_decays_to_zero():
    f = _lr_lambda(TrainConfig(schedule="onecycle", warmup_frac=0.1), total_steps=100)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(50) < 1.0 and f(100) == pytest.approx(0.0, abs=1e-9)
    assert _lr_lambda(TrainConfig(schedule="none"), 100)(57) == 1.0
    assert math.isclose(_lr_lambda(TrainConfig(schedule="cosine"), 100)(0), 1.0)


def test_device_and_amp_choices():
    assert select_device("cpu").type == "cpu"
    assert select_device("auto").type in ("cuda", "mps", "cpu")
    assert amp_dtype(torch.device("cpu"), "auto") is None
    assert amp_dtype(torch.device("cpu"), "bf16") is torch.bfloat16
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            select_device("cuda")


def test_bf16_autocast_trains_on_cpu(fashion_small):
    sub = type(fashion_small.train)(fashion_small.train.x[:256], fashion_small.train.y[:256])
    r = fit(create_model("tiny-seed-cnn"), sub, None, TrainConfig(epochs=1, amp="bf16", **FAST), progress=False)
    assert r.amp == "bfloat16" and math.isfinite(r.history[0]["train_loss"])


def test_token_dropout_removes_words_and_keeps_the_rest_in_order():
    from tinyfm.train import drop_tokens

    ids = torch.tensor([[5, 6, 7, 8, 9, 10, 0, 0]] * 64)
    out = drop_tokens(ids, torch.Generator().manual_seed(0), 0.5)
    assert out.shape == ids.shape and not torch.equal(out, ids)
    for row in out.tolist():
        kept = [i for i in row if i]
        assert kept == sorted(kept) and set(kept) <= {5, 6, 7, 8, 9, 10}  # a subsequence, in order
        assert row[len(kept):] == [0] * (len(row) - len(kept))  # the padding is at the end, no holes
    assert 0.3 < (out != 0).sum().item() / (ids != 0).sum().item() < 0.7
    paired = torch.cat([ids, ids + 100], dim=1)  # a distillation row: the teacher's ids after column 8
    out = drop_tokens(paired, torch.Generator().manual_seed(0), 0.5, width=8)
    assert torch.equal(out[:, 8:], ids + 100)
    assert torch.equal(drop_tokens(ids, torch.Generator(), 0.0), ids)


@pytest.mark.parametrize("value", [1.0, -0.1, float("nan")])
def test_token_dropout_outside_0_1_is_refused(value):
    with pytest.raises(ConfigError, match="train.token_dropout: got"):
        TrainConfig(token_dropout=value)


def test_layer_lr_decay_gives_each_block_its_rate():
    from tinyfm.train.trainer import layer_depths, parameter_groups

    model = create_model("tiny-minilm", num_classes=2)  # 2 blocks: embeddings 0, blocks 1-2, head 3
    depths = layer_depths(model)
    assert depths["encoder.embeddings.word_embeddings.weight"] == 0
    assert depths["encoder.encoder.layer.1.output.dense.weight"] == 2 and depths["head.weight"] == 3
    groups = parameter_groups(model, TrainConfig(lr=1e-3, layer_lr_decay=0.5))
    assert [g["lr"] for g in groups] == pytest.approx([1.25e-4, 2.5e-4, 5e-4, 1e-3])
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    assert len(parameter_groups(model, TrainConfig(lr=1e-3))) == 1


def test_layer_lr_decay_needs_transformer_blocks_and_a_value_in_0_1():
    from tinyfm.train.trainer import create_optimizer

    with pytest.raises(ConfigError, match="train.layer_lr_decay: SeedCNN has no numbered transformer blocks"):
        create_optimizer(create_model("tiny-seed-cnn"), TrainConfig(layer_lr_decay=0.8))
    for bad in (0.0, 1.5, float("nan")):
        with pytest.raises(ConfigError, match="train.layer_lr_decay: got"):
            TrainConfig(layer_lr_decay=bad)


def _flat(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_ema_keeps_the_average_of_the_weights_and_resumes_it(fashion_small, tmp_path):
    sub = type(fashion_small.train)(fashion_small.train.x[:256], fashion_small.train.y[:256])
    base = dict(batch_size=256, schedule="none", threads=1)  # one step per epoch, the same lr every step

    def run(epochs: int, ema: float, **kw) -> torch.nn.Module:
        torch.manual_seed(0)
        m = create_model("tiny-seed-cnn")
        fit(m, sub, None, TrainConfig(epochs=epochs, ema_decay=ema, **base), progress=False, **kw)
        return m

    one, three, avg = run(1, 0.0), run(3, 0.0), run(3, 0.999999)
    # The average starts at the weights after the first step; with a decay this close to 1 it barely moves.
    torch.testing.assert_close(_flat(avg), _flat(one), atol=1e-5, rtol=0)
    assert (_flat(avg) - _flat(three)).abs().max() > 1e-3  # ... while the raw weights went on
    # A run interrupted after one epoch resumes with its average (its checkpoint holds it).
    spec = {"name": "tiny-seed-cnn", "kwargs": {}}
    run(1, 0.999999, run_dir=tmp_path, spec=spec)
    assert torch.load(tmp_path / "last.ckpt", weights_only=True)["ema"]["n_averaged"] == 1
    resumed = run(3, 0.999999, run_dir=tmp_path, spec=spec, resume=True)
    torch.testing.assert_close(_flat(resumed), _flat(one), atol=1e-5, rtol=0)
    run(1, 0.0, run_dir=tmp_path / "plain", spec=spec)
    for ckpt, decay in ((tmp_path / "plain", 0.99), (tmp_path, 0.0), (tmp_path, 0.9)):  # on, off, another decay
        with pytest.raises(TinyfmError, match=r"was written with train.ema_decay=.*, this run has"):
            run(3, decay, run_dir=ckpt, spec=spec, resume=True)


@pytest.mark.parametrize("value", [1.0, -0.1, float("nan")])
def test_ema_decay_outside_0_1_is_refused(value):
    with pytest.raises(ConfigError, match="train.ema_decay: got"):
        TrainConfig(ema_decay=value)


def test_adversarial_loss_is_the_clean_loss_plus_the_loss_at_the_worst_nearby_embeddings():
    from tinyfm.train.tasks import AdversarialTask, ClassificationTask

    torch.manual_seed(0)
    model = create_model("tiny-seed-text", vocab_size=200).eval()  # no dropout: two forwards see the same net
    x = torch.randint(2, 200, (6, 9))
    x[:2, 5:] = 0  # padding
    y = torch.tensor([0, 1, 0, 1, 1, 0])
    eps = 0.7
    out = AdversarialTask(ClassificationTask(), model, eps)(model, x, y)
    # By hand: the gradient of the clean loss at each text's embeddings, scaled to norm eps per text.
    emb = model.embedding(x).detach().requires_grad_(True)
    pooled = (emb * (x != 0).unsqueeze(-1)).sum(1) / (x != 0).sum(1, keepdim=True)
    clean = torch.nn.functional.cross_entropy(model.head(model.hidden(pooled)), y)
    (g,) = torch.autograd.grad(clean, emb)
    r = eps * g / g.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1)  # a text with no gradient stays put
    pooled_adv = ((emb + r) * (x != 0).unsqueeze(-1)).sum(1) / (x != 0).sum(1, keepdim=True)
    adv = torch.nn.functional.cross_entropy(model.head(model.hidden(pooled_adv)), y)
    assert out["loss"].item() == pytest.approx((clean + adv).item(), rel=1e-5)
    assert adv > clean  # the push is uphill
    torch.testing.assert_close(out["logits"], model(x))  # the logits reported are the clean ones
    assert not model.embedding._forward_hooks  # nothing left on the model for export or later runs
    # Without a gradient (evaluation) it is the plain task.
    with torch.no_grad():
        plain = AdversarialTask(ClassificationTask(), model, eps)(model, x, y)["loss"]
    assert plain.item() == pytest.approx(clean.item(), rel=1e-5)


def test_adversarial_training_changes_the_steps_of_text_models_only(fashion_small):
    from tinyfm.data.dataset import Split
    from tinyfm.train.tasks import input_embeddings

    g = torch.Generator().manual_seed(0)
    ids, labels = torch.randint(2, 200, (128, 10), generator=g), torch.randint(0, 2, (128,), generator=g)
    base = dict(epochs=1, batch_size=64, schedule="none", threads=1)

    def run(name: str, eps: float, **kw) -> torch.Tensor:
        torch.manual_seed(0)
        m = create_model(name, vocab_size=200, **kw)
        fit(m, Split(ids, labels), Split(ids[:32], labels[:32]), TrainConfig(adversarial_eps=eps, **base),
            progress=False)
        assert not input_embeddings(m)._forward_hooks
        return _flat(m)

    for name, kw in (("tiny-seed-text", {}), ("tiny-text-bigru", {}), ("tiny-minilm", {"dropout": 0.0})):
        assert (run(name, 0.5, **kw) - run(name, 0.0, **kw)).abs().max() > 1e-6, name
    with pytest.raises(ConfigError, match="train.adversarial_eps: SeedCNN has no word-embedding table"):
        fit(create_model("tiny-seed-cnn"), fashion_small.train, None, TrainConfig(adversarial_eps=1.0, **base),
            progress=False)


@pytest.mark.parametrize("value", [-0.1, float("nan"), float("inf")])
def test_adversarial_eps_outside_0_inf_is_refused(value):
    with pytest.raises(ConfigError, match="train.adversarial_eps: got"):
        TrainConfig(adversarial_eps=value)


def test_rdrop_adds_the_symmetric_kl_of_two_dropout_samples_to_the_loss():
    import torch.nn.functional as F

    from tinyfm.train.tasks import ClassificationTask, RDropTask

    model = create_model("tiny-text-bigru", vocab_size=200, dropout=0.5)
    x, y = torch.randint(2, 200, (5, 8)), torch.tensor([0, 1, 1, 0, 1])
    task = RDropTask(ClassificationTask(), alpha=2.0)
    torch.manual_seed(3)
    out = task(model, x, y)
    torch.manual_seed(3)  # the same dropout masks, by hand
    a, b = model(torch.cat([x, x])).log_softmax(-1).chunk(2)
    ce = 0.5 * (F.nll_loss(a, y) + F.nll_loss(b, y))
    kl = 0.5 * ((b.exp() * (b - a)).sum(1).mean() + (a.exp() * (a - b)).sum(1).mean())
    assert kl > 1e-4  # two dropout samples disagree
    assert out["loss"].item() == pytest.approx((ce + 2.0 * kl).item(), rel=1e-5)
    assert out["logits"].shape == (5, 2)
    model.eval()  # no dropout: the two copies agree and the loss is the task's
    assert task(model, x, y)["loss"].item() == pytest.approx(ClassificationTask()(model, x, y)["loss"].item())


def test_rdrop_is_skipped_with_a_note_for_a_model_without_dropout(capsys):
    from tinyfm.data.dataset import Split
    from tinyfm.train.tasks import has_dropout

    ids, labels = torch.randint(2, 200, (64, 10)), torch.randint(0, 2, (64,))
    base = dict(epochs=1, schedule="none", threads=1)

    def run(rdrop: float, **kw) -> torch.Tensor:
        torch.manual_seed(0)
        m = create_model("tiny-seed-text", vocab_size=200, **kw)
        fit(m, Split(ids, labels), None, TrainConfig(rdrop_alpha=rdrop, **base), progress=False)
        return _flat(m)

    assert not has_dropout(create_model("tiny-seed-text")) and has_dropout(create_model("tiny-text-bigru"))
    assert not has_dropout(create_model("tiny-text-bigru", dropout=0.0))  # p = 0 is no dropout
    capsys.readouterr()
    torch.testing.assert_close(run(1.0), run(0.0))  # the same steps as without it, at the cost of one
    assert "train.rdrop_alpha 1 ignored: SeedText has no active dropout layer" in capsys.readouterr().err
    torch.manual_seed(0)
    r = fit(create_model("tiny-text-bigru", vocab_size=200), Split(ids, labels), None,
            TrainConfig(rdrop_alpha=1.0, **base), progress=False)
    assert math.isfinite(r.history[0]["train_loss"]) and "ignored" not in capsys.readouterr().err


def test_a_diverging_loss_names_the_settings_that_add_to_it():
    from tinyfm.data.dataset import Split
    from tinyfm.errors import TinyfmError

    ids, labels = torch.randint(2, 200, (64, 10)), torch.randint(0, 2, (64,))
    with pytest.raises(TinyfmError, match=r"lower --lr or train.adversarial_eps, use --amp"):
        fit(create_model("seed-text", vocab_size=200), Split(ids, labels), None,
            TrainConfig(epochs=3, batch_size=8, adversarial_eps=1e300, threads=1), progress=False)


@pytest.mark.parametrize("value", [-1.0, float("nan"), float("inf")])
def test_rdrop_alpha_outside_0_inf_is_refused(value):
    with pytest.raises(ConfigError, match="train.rdrop_alpha: got"):
        TrainConfig(rdrop_alpha=value)


def test_wrapped_tasks_still_tell_word_dropout_where_the_students_ids_end():
    """rdrop/adversarial around a distillation task: the trainer reads `student_width` through the wrappers, so
    word dropout still spares the teacher's half of each row."""
    from tinyfm.compress.distill import DistillTask
    from tinyfm.train.tasks import AdversarialTask, RDropTask

    model = create_model("tiny-seed-text", vocab_size=50)
    inner = DistillTask(create_model("tiny-seed-text", vocab_size=50), student_width=6)
    for task in (RDropTask(inner, 1.0), AdversarialTask(inner, model, 0.5),
                 AdversarialTask(RDropTask(inner, 1.0), model, 0.5)):
        assert task.student_width == 6
    with pytest.raises(AttributeError):
        _ = RDropTask(inner, 1.0).no_such_setting
