"""Input adapters of `tinyfm serve`: every payload either becomes a model batch or an InputError naming the field."""

from __future__ import annotations

import io
import sys
import types
import wave

import numpy as np
import pytest

from tinyfm.deploy.adapters import ImageAdapter, InputError, TextAdapter, WavAdapter, create_adapter, read_wav
from tinyfm.errors import TinyfmError


def wav_bytes(samples: np.ndarray, rate: int = 8000, width: int = 2, channels: int = 1) -> bytes:
    """A PCM WAV file of int samples (already scaled to the sample width)."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        if width == 3:
            v = samples.astype(np.int32) & 0xFFFFFF
            raw = np.stack([v & 0xFF, (v >> 8) & 0xFF, (v >> 16) & 0xFF], axis=1).astype(np.uint8).tobytes()
        else:
            raw = samples.astype({1: np.uint8, 2: np.int16, 4: np.int32}[width]).tobytes()
        w.writeframes(raw)
    return buf.getvalue()


def raises_input_error(fn, field: str, status: int = 422, match: str | None = None) -> InputError:
    with pytest.raises(InputError, match=match) as e:
        fn()
    assert (e.value.field, e.value.status) == (field, status), e.value.to_dict()
    assert e.value.message.startswith(field) and e.value.expected
    return e.value


# ---- images ----------------------------------------------------------------------------------------------------

IMG = ImageAdapter((1, 28, 28), max_items=4)


@pytest.mark.parametrize("inputs", [
    np.zeros((28, 28), int).tolist(),            # one H x W image of ints
    np.zeros((1, 28, 28)).tolist(),              # one C x H x W image of floats
    np.zeros((3, 28, 28), int).tolist(),         # a list of H x W images
    np.zeros((2, 1, 28, 28)).tolist(),           # a list of C x H x W images
])
def test_image_json_shapes(inputs):
    x = IMG.from_json(inputs, {})
    n = 1 if np.ndim(inputs) == 2 or np.shape(inputs)[0] == 1 else np.shape(inputs)[0]
    assert x.shape == (n, 1, 28, 28) and x.dtype == np.float32


def test_image_json_ints_are_uint8_and_floats_stay():
    a = np.arange(784).reshape(28, 28) % 256
    np.testing.assert_allclose(IMG.from_json(a.tolist(), {})[0, 0], a / 255.0, rtol=1e-6)
    np.testing.assert_allclose(IMG.from_json((a / 255.0).tolist(), {"invert": True})[0, 0], 1 - a / 255.0, rtol=1e-6)


@pytest.mark.parametrize(("inputs", "field", "status", "match"), [
    (np.zeros((27, 28), int).tolist(), "inputs", 422, r"shape \(1, 27, 28\)"),
    ([np.zeros((28, 28)).tolist(), np.zeros((28, 27)).tolist()], "inputs", 422, "ragged"),
    (np.zeros((2, 27, 28)).tolist(), "inputs[0]", 422, "shape"),
    ([["a"] * 28] * 28, "inputs", 422, "type string"),
    ([[True] * 28] * 28, "inputs", 422, "type boolean"),
    ([[256] * 28] * 28, "inputs", 422, "0-255"),
    ([[1.5] * 28] * 28, "inputs", 422, r"\[0, 1\]"),
    ([[float("nan")] * 28] * 28, "inputs", 422, "finite"),
    ("an image", "inputs", 422, "JSON string"),
    ({"a": 1}, "inputs", 422, "JSON object"),
    (None, "inputs", 422, "missing"),
    ([], "inputs", 422, "shape"),
    (np.zeros((5, 28, 28), int).tolist(), "inputs", 413, "at most 4"),
])
def test_image_json_errors(inputs, field, status, match):
    raises_input_error(lambda: IMG.from_json(inputs, {}), field, status, match)


def test_image_upload():
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full((28, 28), 255, np.uint8)).save(buf, format="JPEG")
    x = IMG.from_upload(buf.getvalue(), "shoe.jpg", {})
    assert x.shape == (1, 1, 28, 28) and x.min() > 0.95
    raises_input_error(lambda: IMG.from_upload(b"GIF89a broken", "x.gif", {}), "file", 415, "not an image")
    raises_input_error(lambda: IMG.from_upload(wav_bytes(np.zeros(100)), "a.wav", {}), "file", 415)
    buf = io.BytesIO()
    Image.fromarray(np.zeros((10, 12), np.uint8)).save(buf, format="PNG")
    raises_input_error(lambda: IMG.from_upload(buf.getvalue(), "small.png", {}), "file", 422, r"\(1, 10, 12\)")


# ---- text ------------------------------------------------------------------------------------------------------

def _encode(texts: list[str]) -> np.ndarray:
    """A stand-in tokenizer: one id per word (its length), padded with 0 to the longest text."""
    ids = [[len(w) for w in t.split()] for t in texts]
    out = np.zeros((len(ids), max(map(len, ids))), np.int64)
    for i, row in enumerate(ids):
        out[i, : len(row)] = row
    return out


TXT = TextAdapter(_encode, max_items=3, max_chars=50)


def test_text_json():
    np.testing.assert_array_equal(TXT.from_json("a bb ccc", {}), [[1, 2, 3]])
    assert TXT.from_json(["one", "two words"], {}).shape == (2, 2)


@pytest.mark.parametrize(("inputs", "field", "status", "match"), [
    ("", "inputs", 422, "empty text"),
    ("   \n", "inputs", 422, "empty text"),
    (["fine", ""], "inputs[1]", 422, "empty text"),
    (["fine", 3], "inputs[1]", 422, "expected a string"),
    ([], "inputs", 422, "empty list"),
    (None, "inputs", 422, "string or a list"),
    (7, "inputs", 422, "string or a list"),
    (["a", "b", "c", "d"], "inputs", 413, "at most 3"),
    ("x" * 51, "inputs", 413, "51 characters"),
])
def test_text_errors(inputs, field, status, match):
    raises_input_error(lambda: TXT.from_json(inputs, {}), field, status, match)


def test_text_refuses_uploads_and_collate_pads():
    raises_input_error(lambda: TXT.from_upload(b"hello", "a.txt", {}), "file", 415)
    batch = TXT.collate([np.ones((1, 2), np.int64), np.ones((2, 4), np.int64)])
    np.testing.assert_array_equal(batch, [[1, 1, 0, 0], [1, 1, 1, 1], [1, 1, 1, 1]])


# ---- WAV -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("width", "scale", "offset"), [(1, 127, 128), (2, 32767, 0), (3, 2 ** 23 - 1, 0),
                                                       (4, 2 ** 31 - 1, 0)])
def test_read_wav_widths(width, scale, offset):
    t = np.linspace(0, 1, 800, endpoint=False)
    ref = 0.5 * np.sin(2 * np.pi * 5 * t)
    samples, rate = read_wav(wav_bytes(np.round(ref * scale) + offset, rate=800, width=width))
    assert rate == 800 and samples.dtype == np.float32 and samples.shape == (800,)
    np.testing.assert_allclose(samples, ref, atol=2 / scale + 1e-6)


def test_read_wav_mixes_channels_to_mono():
    stereo = np.stack([np.full(10, 1000), np.full(10, -1000)], axis=1).reshape(-1)
    samples, _ = read_wav(wav_bytes(stereo, channels=2))
    np.testing.assert_allclose(samples, 0.0)


@pytest.mark.parametrize(("data", "status", "match"), [
    (b"\x89PNG\r\n\x1a\n" + b"\0" * 40, 415, "not a WAV"),
    (b"RIFF\0\0\0\0WAVEfmt ", 415, "unreadable WAV"),
    (b"", 415, "not a WAV"),
    (wav_bytes(np.zeros(0)), 422, "empty"),
])
def test_read_wav_refuses(data, status, match):
    raises_input_error(lambda: read_wav(data), "file", status, match)


def test_wav_adapter():
    wav = WavAdapter(lambda s, r: np.full((1, 4), len(s) / r, np.float32), max_seconds=2)
    np.testing.assert_allclose(wav.from_upload(wav_bytes(np.zeros(8000)), "a.wav", {}), [[1.0] * 4])
    raises_input_error(lambda: wav.from_upload(wav_bytes(np.zeros(8000 * 3)), "a.wav", {}), "file", 413, "3.0 s")
    raises_input_error(lambda: wav.from_upload(b"hello", "a.wav", {}), "file", 415)
    raises_input_error(lambda: wav.from_json([0.0, 0.1], {}), "inputs", 415, "WAV uploads")


# ---- choosing the adapter of a run -----------------------------------------------------------------------------

def test_create_adapter(tmp_path, monkeypatch):
    a = create_adapter("image-classification", tmp_path, {"input_shape": [3, 32, 32]})
    assert isinstance(a, ImageAdapter) and a.shape == (3, 32, 32)
    with pytest.raises(TinyfmError, match="'speech-classification' cannot be served yet"):
        create_adapter("speech-classification", tmp_path, {})
    monkeypatch.setitem(sys.modules, "tinyfm.data.text", types.ModuleType("tinyfm.data.text"))
    with pytest.raises(TinyfmError, match="load_tokenizer"):
        create_adapter("text-classification", tmp_path, {})
    fake = types.ModuleType("tinyfm.data.text")
    fake.load_tokenizer = lambda run_dir: types.SimpleNamespace(encode=_encode)
    monkeypatch.setitem(sys.modules, "tinyfm.data.text", fake)
    text = create_adapter("text-classification", tmp_path, {})
    np.testing.assert_array_equal(text.from_json("hi there", {}), [[2, 5]])


def test_text_adapter_with_the_saved_word_tokenizer(tmp_path):
    text = pytest.importorskip("tinyfm.data.text")
    if not hasattr(text, "WordTokenizer"):
        pytest.skip("tinyfm.data.text has no WordTokenizer")
    text.WordTokenizer.fit(["a good film", "a bad film", "good good"], vocab_size=10, max_length=6).save(tmp_path)
    adapter = create_adapter("text-classification", tmp_path, {})
    ids = adapter.from_json(["good film", "an unknown word"], {})
    assert ids.shape == (2, 6) and ids.dtype == np.int64 and 0 <= ids.min() and ids.max() < 10
    raises_input_error(lambda: adapter.from_json("", {}), "inputs", 422, "empty text")
    with pytest.raises(TinyfmError, match="tokenizer.json"):
        create_adapter("text-classification", tmp_path / "elsewhere", {})
