"""Per-modality input adapters for `tinyfm serve`: request payloads -> validated model input batches.

An adapter turns what a client sends (a JSON ``inputs`` value, or an uploaded file) into a numpy batch the ONNX
model takes, and raises :class:`InputError` naming the field and what was expected when it cannot. Adding a
modality means writing one adapter and one branch in :func:`create_adapter`:

| task | JSON ``inputs`` | upload (multipart field ``file``) |
|---|---|---|
| image-classification | an H×W or C×H×W image (ints 0-255 or floats in [0, 1]), or a list | PNG/JPEG/.npy |
| text-classification | a string or a list of strings | — |
| speech (WAV) | — | a RIFF/WAVE PCM file |

Image decoding and checks are :mod:`tinyfm.data.images` (the same code as `tinyfm predict`).

Example:
    adapter = create_adapter("image-classification", run_dir, spec)
    x = adapter.from_json([[0] * 28] * 28, {})  # (1, 1, 28, 28) float32
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tinyfm.errors import DataError, TinyfmError

SUPPORTED_TASKS = ("image-classification", "text-classification")


class InputError(Exception):
    """A request the model cannot take: answered with HTTP `status` and a JSON body naming `field`.

    Args:
        field: the request field at fault, e.g. "inputs", "inputs[2]", "file", "top_k", "body".
        message: what is wrong, starting with the field name.
        expected: what the server accepts there.
        status: 422 for a wrong value, 415 for a wrong kind of payload, 413 for too large, 400 unparseable.
    """

    def __init__(self, field: str, message: str, expected: str, status: int = 422) -> None:
        super().__init__(message)
        self.field, self.message, self.expected, self.status = field, message, expected, status

    def to_dict(self) -> dict[str, Any]:
        """The JSON error body."""
        return {"error": self.message, "field": self.field, "expected": self.expected}


class InputAdapter:
    """Base adapter: refuses both payload kinds; subclasses override the ones their modality takes.

    Attributes:
        task: the run's task, e.g. "image-classification".
        modality: "image" | "text" | "audio" (what the web page shows an input for).
        json_expected / upload_expected: one-line descriptions used in errors and the OpenAPI text.
    """

    task = "none"
    modality = "none"
    json_expected = "no JSON inputs for this run"
    upload_expected = "no file uploads for this run"

    def from_json(self, inputs: Any, options: Mapping[str, Any]) -> np.ndarray:
        """Batch for a JSON ``inputs`` value; `options` holds request flags such as ``invert``."""
        raise InputError("inputs", f"inputs: this {self.task} run takes no JSON inputs; {self.upload_expected}",
                         self.upload_expected, status=415)

    def from_upload(self, data: bytes, filename: str, options: Mapping[str, Any]) -> np.ndarray:
        """Batch (of one sample) for an uploaded file's bytes."""
        raise InputError("file", f"file: this {self.task} run takes no file uploads; send JSON {self.json_expected}",
                         self.json_expected, status=415)

    def collate(self, batches: Sequence[np.ndarray]) -> np.ndarray:
        """One model batch from the batches of several requests (micro-batching)."""
        return np.concatenate(batches, axis=0)

    def describe(self) -> dict[str, Any]:
        """What the /v1/models endpoint and the web page say about accepted inputs."""
        return {"modality": self.modality, "json": self.json_expected, "upload": self.upload_expected}


class ImageAdapter(InputAdapter):
    """Images of the model's input shape (C, H, W): uploads or JSON arrays, checked like `tinyfm predict`."""

    task = "image-classification"
    modality = "image"

    def __init__(self, shape: Sequence[int], max_items: int = 256) -> None:
        self.shape = tuple(int(s) for s in shape)
        self.max_items = max_items
        _images()  # import the decoder now (tinyfm.data brings torch), not during the first request
        c, h, w = self.shape[0], self.shape[-2], self.shape[-1]
        self.json_expected = (f'{{"inputs": a {h}x{w} image ({c} channel(s)) as nested lists of integers 0-255 or '
                              f"floats in [0, 1], or a list of up to {max_items} such images}}")
        self.upload_expected = f"a PNG or JPEG image (or .npy array) of {h}x{w} pixels"

    def from_json(self, inputs: Any, options: Mapping[str, Any]) -> np.ndarray:
        a = _json_array(inputs, self.json_expected)
        samples = self._split_samples(a)
        if len(samples) > self.max_items:
            raise InputError("inputs", f"inputs: {len(samples)} images, at most {self.max_items} per request",
                             self.json_expected, status=413)
        invert = bool(options.get("invert", False))
        out = []
        for i, s in enumerate(samples):
            name = f"inputs[{i}]" if len(samples) > 1 or a.ndim > len(self.shape) else "inputs"
            try:
                out.append(_images().to_model_input(s, self.shape, name, invert))
            except DataError as e:
                raise InputError(name, str(e), self.json_expected) from None
        return np.stack(out)

    def _split_samples(self, a: np.ndarray) -> list[np.ndarray]:
        """One sample (H, W) / (C, H, W), or a list of them (N, H, W) for 1-channel models / (N, C, H, W)."""
        rank = len(self.shape)
        if a.ndim == rank + 1 or (a.ndim == rank and tuple(a.shape) != self.shape and self.shape[0] == 1):
            return list(a)
        if a.ndim in (rank - 1, rank):
            return [a]
        raise InputError("inputs", f"inputs: array of shape {tuple(a.shape)}, expected {self.shape} per image "
                         f"or a list of them", self.json_expected)

    def from_upload(self, data: bytes, filename: str, options: Mapping[str, Any]) -> np.ndarray:
        try:
            x = _images().decode_image(data, "file", self.shape, bool(options.get("invert", False)))
        except DataError as e:
            unreadable = "not an image" in str(e) or "not a readable" in str(e)
            raise InputError("file", f"{e} [{filename}]", self.upload_expected,
                             status=415 if unreadable else 422) from None
        return x[None]


def _images():
    from tinyfm.data import images

    return images


def _json_array(inputs: Any, expected: str) -> np.ndarray:
    """A JSON value as a numeric array: integers must be 0-255 (-> uint8), floats stay float; else InputError."""
    if inputs is None:
        raise InputError("inputs", "inputs: missing", expected)
    if isinstance(inputs, str | bool | dict) or not isinstance(inputs, list):
        raise InputError("inputs", f"inputs: got a JSON {_json_type(inputs)}, expected nested lists of numbers",
                         expected)
    try:
        a = np.array(inputs)
    except (ValueError, TypeError):  # ragged nesting
        raise InputError("inputs", "inputs: ragged nested lists (rows of different lengths)", expected) from None
    if a.dtype == np.bool_ or not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise InputError("inputs", f"inputs: values of type {_dtype_name(a)}, expected numbers", expected)
    if np.issubdtype(a.dtype, np.integer):
        if a.size and (a.min() < 0 or a.max() > 255):
            raise InputError("inputs", f"inputs: integer values in [{a.min()}, {a.max()}], expected 0-255", expected)
        return a.astype(np.uint8)
    return a


def _json_type(v: Any) -> str:
    return {str: "string", bool: "boolean", dict: "object", int: "number", float: "number"}.get(type(v), "value")


def _dtype_name(a: np.ndarray) -> str:
    return {"b": "boolean", "U": "string", "S": "string", "O": "mixed/object"}.get(a.dtype.kind, str(a.dtype))


class TextAdapter(InputAdapter):
    """Texts -> token ids through the run's tokenizer (`encode`: list[str] -> int array (N, L))."""

    task = "text-classification"
    modality = "text"

    def __init__(self, encode: Callable[[list[str]], np.ndarray], max_items: int = 256, max_chars: int = 10_000,
                 pad_id: int = 0) -> None:
        self.encode, self.max_items, self.max_chars, self.pad_id = encode, max_items, max_chars, pad_id
        self.json_expected = f'{{"inputs": a non-empty text, or a list of up to {max_items} texts}}'

    def from_json(self, inputs: Any, options: Mapping[str, Any]) -> np.ndarray:
        texts = [inputs] if isinstance(inputs, str) else inputs
        if not isinstance(texts, list) or not texts:
            raise InputError("inputs", f"inputs: got {_json_type(inputs) if inputs != [] else 'an empty list'}, "
                             "expected a string or a list of strings", self.json_expected)
        if len(texts) > self.max_items:
            raise InputError("inputs", f"inputs: {len(texts)} texts, at most {self.max_items} per request",
                             self.json_expected, status=413)
        for i, t in enumerate(texts):
            name = "inputs" if isinstance(inputs, str) else f"inputs[{i}]"
            if not isinstance(t, str):
                raise InputError(name, f"{name}: got a JSON {_json_type(t)}, expected a string", self.json_expected)
            if not t.strip():
                raise InputError(name, f"{name}: empty text, expected at least one non-space character",
                                 self.json_expected)
            if len(t) > self.max_chars:
                raise InputError(name, f"{name}: {len(t)} characters, at most {self.max_chars}", self.json_expected,
                                 status=413)
        return np.asarray(self.encode(texts))

    def collate(self, batches: Sequence[np.ndarray]) -> np.ndarray:
        """Right-pad every request's ids to the longest sequence, then stack."""
        length = max(b.shape[1] for b in batches)
        padded = [np.pad(b, ((0, 0), (0, length - b.shape[1])), constant_values=self.pad_id) for b in batches]
        return np.concatenate(padded, axis=0)


class WavAdapter(InputAdapter):
    """WAV uploads -> features (`features(samples, rate)` -> (1, ...) array) for speech models."""

    task = "speech-classification"
    modality = "audio"
    upload_expected = "a WAV file (RIFF/WAVE, PCM 8/16/24/32-bit)"

    def __init__(self, features: Callable[[np.ndarray, int], np.ndarray], task: str = "speech-classification",
                 max_seconds: float = 30.0) -> None:
        self.features, self.task, self.max_seconds = features, task, max_seconds

    def from_upload(self, data: bytes, filename: str, options: Mapping[str, Any]) -> np.ndarray:
        samples, rate = read_wav(data, "file")
        if len(samples) > self.max_seconds * rate:
            raise InputError("file", f"file: {len(samples) / rate:.1f} s of audio, at most {self.max_seconds} s",
                             self.upload_expected, status=413)
        return np.asarray(self.features(samples, rate))

    def from_json(self, inputs: Any, options: Mapping[str, Any]) -> np.ndarray:
        raise InputError("inputs", f"inputs: this {self.task} run takes WAV uploads (multipart field 'file')",
                         self.upload_expected, status=415)


def read_wav(data: bytes, name: str = "file") -> tuple[np.ndarray, int]:
    """Decode a PCM WAV file to mono float32 samples in [-1, 1] and its sample rate; anything else: InputError."""
    import wave

    expected = WavAdapter.upload_expected
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise InputError(name, f"{name}: not a WAV file (no RIFF/WAVE header)", expected, status=415)
    try:
        with wave.open(io.BytesIO(data)) as w:
            width, channels, rate = w.getsampwidth(), w.getnchannels(), w.getframerate()
            frames = w.readframes(w.getnframes())
    except (wave.Error, EOFError) as e:
        raise InputError(name, f"{name}: unreadable WAV ({e})", expected, status=415) from None
    if width not in (1, 2, 3, 4) or not frames:
        raise InputError(name, f"{name}: empty or {8 * width}-bit WAV", expected)
    return _pcm_to_float(frames, width, channels), rate


def _pcm_to_float(frames: bytes, width: int, channels: int) -> np.ndarray:
    if width == 1:  # 8-bit WAV is unsigned
        x = (np.frombuffer(frames, np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 3:  # 24-bit little-endian: widen to int32
        b = np.frombuffer(frames, np.uint8).reshape(-1, 3)
        v = (b[:, 0].astype(np.int32) | (b[:, 1].astype(np.int32) << 8) | (b[:, 2].astype(np.int32) << 16))
        x = (np.where(v >= 1 << 23, v - (1 << 24), v) / float(1 << 23)).astype(np.float32)
    else:
        dtype = np.int16 if width == 2 else np.int32
        x = np.frombuffer(frames, dtype).astype(np.float32) / float(np.iinfo(dtype).max + 1)
    return x.reshape(-1, channels).mean(axis=1)  # (frames,) mono


def create_adapter(task: str, run_dir: str | Path, spec: Mapping[str, Any], max_items: int = 256,
                   model_dir: str | Path | None = None) -> InputAdapter:
    """The adapter for a run's task; an unsupported task is a TinyfmError at startup (never a 5xx later).

    Args:
        task: results.json / config.json "task".
        run_dir: the run directory.
        spec: model.json (input_shape, class_names).
        max_items: most samples per request.
        model_dir: where a text model's tokenizer.json is (a variant's folder when it has its own; default run_dir).
    """
    if task == "image-classification":
        return ImageAdapter(spec.get("input_shape") or (1, 28, 28), max_items=max_items)
    if task == "text-classification":
        return TextAdapter(_load_text_encoder(Path(model_dir or run_dir)), max_items=max_items)
    raise TinyfmError(f"{run_dir}: task {task!r} cannot be served yet (supported: {', '.join(SUPPORTED_TASKS)})")


def _load_text_encoder(directory: Path) -> Callable[[list[str]], np.ndarray]:
    """The tokenizer saved in `directory` (tokenizer.json, issue 5) as texts -> int64 ids (N, L)."""
    try:
        from tinyfm.data.text import load_tokenizer
    except ImportError:
        raise TinyfmError(f"{directory}: a text-classification run needs tinyfm.data.text.load_tokenizer, "
                          "which this tinyfm does not have") from None
    try:
        tok = load_tokenizer(directory)
    except DataError as e:
        raise TinyfmError(f"cannot serve this text run: {e}") from None
    encode = getattr(tok, "encode", None)
    if not callable(encode):
        raise TinyfmError(f"{directory}: the saved tokenizer has no encode(texts) method")

    def encode_numpy(texts: list[str]) -> np.ndarray:
        ids = encode(texts)  # a torch tensor (N, max_length)
        return np.asarray(ids.numpy() if hasattr(ids, "numpy") else ids, dtype=np.int64)

    return encode_numpy
