"""Tokenizers for text models: a word-level one like the seed's Keras ``Tokenizer``, and MiniLM's WordPiece.

Word level (:class:`WordTokenizer`), as ``keras.preprocessing.text.Tokenizer(num_words=10000, oov_token=...)``
followed by ``pad_sequences(..., padding="post", truncating="post")``:

- lower-case, then punctuation and symbols become spaces (Keras' ``filters``, widened to all of Unicode;
  the apostrophe is kept, as in Keras: "don't" is one word), then split on whitespace;
- runs of CJK characters (no spaces between words) are segmented with jieba when it is installed, else one
  token per character (``segmenter``);
- ids: 0 = padding, 1 = out of vocabulary, 2.. = words by falling frequency (ties: first seen first), keeping
  ``vocab_size - 2`` words, so every id is < ``vocab_size``, the embedding table's size, by construction;
- ``max_length`` ids per text: longer texts lose their end, shorter ones are padded with 0 at the end.

Sub-word (:class:`HFTokenizer`): a Hugging Face tokenizer read from local files (MiniLM's WordPiece; its
[PAD] id is 0 too), padded and truncated to the same ``max_length``.

Both save themselves into a run directory (``tokenizer.json``; the HF files under ``tokenizer/``) and come back
with :func:`load_tokenizer`.

Example:
    tok = WordTokenizer.fit(["A fine film.", "A dull one"], vocab_size=10000, max_length=8)
    tok.encode(["a fine one!"])  # tensor([[2, 3, 5, 0, 0, 0, 0, 0]])
"""

from __future__ import annotations

import collections
import importlib.util
import logging
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tinyfm.errors import DataError
from tinyfm.io import read_json, write_json

if TYPE_CHECKING:
    import torch

PAD_ID, OOV_ID = 0, 1
SEGMENTERS = ("words", "jieba", "chars")
TOKENIZER_FILE = "tokenizer.json"
HF_DIR = "tokenizer"
# Punctuation and symbols (anything neither a word character, whitespace nor the apostrophe) and the underscore.
_PUNCT = re.compile(r"[^\w\s']|_")
# Scripts written without spaces between words: CJK ideographs (+ extension A, compatibility), kana.
_CJK = re.compile(r"([\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3040-\u30ff]+)")


def resolve_segmenter(segmenter: str) -> str:
    """The segmenter `auto` stands for here: jieba when it is installed, else characters."""
    if segmenter != "auto":
        return segmenter
    return "jieba" if importlib.util.find_spec("jieba") is not None else "chars"


def _jieba_cut(run: str) -> list[str]:
    try:
        import jieba
    except ImportError:
        raise DataError("segmenter jieba: the jieba package is not installed (pip install jieba, or use "
                        "--set data.segmenter=chars)") from None
    jieba.setLogLevel(logging.WARNING)  # it logs the dictionary build on first use
    return [w for w in jieba.lcut(run) if w.strip()]


def split_words(text: str, segmenter: str = "words", lowercase: bool = True) -> list[str]:
    """The words of `text`: lower-cased, punctuation removed, CJK runs segmented (see the module docstring).

    Example:
        split_words("Hello, World!")                 # ['hello', 'world']
        split_words("我爱北京天安门", segmenter="chars")  # ['我', '爱', '北', '京', '天', '安', '门']
    """
    text = _PUNCT.sub(" ", text.lower() if lowercase else text)
    if segmenter == "words" or not _CJK.search(text):
        return text.split()
    words: list[str] = []
    for token in text.split():
        for part in _CJK.split(token):  # odd positions are the CJK runs (the pattern has one group)
            if not part:
                continue
            if _CJK.fullmatch(part):
                words += _jieba_cut(part) if segmenter == "jieba" else list(part)
            else:
                words.append(part)
    return words


def drop_words(texts: Sequence[str], p: float, seed: int = 0) -> list[str]:
    """Each text with every whitespace-separated token removed with probability `p` (at least one is kept).

    Text-level word dropout, so that every tokenizer (word ids, MiniLM's WordPiece) encodes the same shortened
    text: the augmented transfer set of the distill pass. Text without spaces (Chinese) is one token, kept whole.

    Example:
        drop_words(["a fine and moving film"], 0.4, seed=1)  # e.g. ['a fine moving']
    """
    import random

    rng = random.Random(seed)
    out = []
    for text in texts:
        tokens = text.split()
        kept = [t for t in tokens if rng.random() >= p]
        out.append(" ".join(kept) if kept else (rng.choice(tokens) if tokens else text))
    return out


def _pad(rows: Sequence[Sequence[int]], max_length: int) -> torch.Tensor:
    """(N, max_length) int64: each row truncated at the end or padded with PAD_ID at the end."""
    import torch

    out = torch.full((len(rows), max_length), PAD_ID, dtype=torch.int64)
    for i, ids in enumerate(rows):
        ids = list(ids)[:max_length]
        if ids:
            out[i, :len(ids)] = torch.tensor(ids, dtype=torch.int64)
    return out


class WordTokenizer:
    """Word-level tokenizer with a frequency-ranked vocabulary (the seed's Keras Tokenizer); see the module doc.

    Args:
        words: the vocabulary, most frequent first; word i gets id i + 2.
        vocab_size: the embedding table's rows (padding and OOV included); at most vocab_size - 2 words.
        max_length: ids per encoded text.
        segmenter: words | jieba | chars (already resolved, not auto).
        lowercase: lower-case before splitting.
    """

    kind = "word"

    def __init__(self, words: Sequence[str], vocab_size: int = 10000, max_length: int = 64,
                 segmenter: str = "words", lowercase: bool = True) -> None:
        if segmenter not in SEGMENTERS:
            raise DataError(f"tokenizer: unknown segmenter {segmenter!r} (known: {', '.join(SEGMENTERS)})")
        if len(words) > vocab_size - 2:
            raise DataError(f"tokenizer: {len(words)} words do not fit a vocabulary of {vocab_size} "
                            "(2 ids are padding and out-of-vocabulary)")
        self.words, self.vocab_size, self.max_length = list(words), int(vocab_size), int(max_length)
        self.segmenter, self.lowercase = segmenter, lowercase
        self.index = {w: i + 2 for i, w in enumerate(self.words)}

    @classmethod
    def fit(cls, texts: Iterable[str], vocab_size: int = 10000, max_length: int = 64, segmenter: str = "auto",
            lowercase: bool = True) -> WordTokenizer:
        """Build the vocabulary from `texts` (the training split only): the vocab_size - 2 most frequent words."""
        seg = resolve_segmenter(segmenter)
        counts: collections.Counter[str] = collections.Counter()
        for t in texts:
            counts.update(split_words(t, seg, lowercase))
        # Counter keeps first-seen order and sorted() is stable: equal counts stay in first-seen order (as Keras).
        ranked = sorted(counts, key=lambda w: -counts[w])[: vocab_size - 2]
        return cls(ranked, vocab_size, max_length, seg, lowercase)

    def ids(self, text: str) -> list[int]:
        """Token ids of one text, unpadded and untruncated; unknown words get OOV_ID."""
        return [self.index.get(w, OOV_ID) for w in split_words(text, self.segmenter, self.lowercase)]

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """(N, max_length) int64 ids, every one in [0, vocab_size)."""
        return _pad([self.ids(t) for t in texts], self.max_length)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "vocab_size": self.vocab_size, "max_length": self.max_length,
                "segmenter": self.segmenter, "lowercase": self.lowercase, "words": self.words}

    def save(self, directory: str | Path) -> Path:
        """Write `directory`/tokenizer.json; returns its path."""
        return write_json(Path(directory) / TOKENIZER_FILE, self.to_dict())

    def __repr__(self) -> str:
        return (f"WordTokenizer({len(self.words)} words, vocab_size={self.vocab_size}, max_length={self.max_length}, "
                f"segmenter={self.segmenter!r})")


class HFTokenizer:
    """A Hugging Face tokenizer from local files (no hub access), padded/truncated to `max_length`.

    Args:
        path: a folder with the tokenizer files (vocab.txt, tokenizer.json, tokenizer_config.json, ...).
        max_length: ids per encoded text ([CLS] and [SEP] included).
        name: what the tokenizer is (recorded in tokenizer.json), e.g. "minilm".

    Example:
        tok = HFTokenizer(minilm_dir(), max_length=64)
        tok.encode(["a fine film"])[0, :5]  # tensor([ 101, 1037, 2986, 2143,  102])
    """

    kind = "hf"

    def __init__(self, path: str | Path, max_length: int = 64, name: str = "minilm") -> None:
        from tinyfm.models.minilm import offline_transformers

        offline_transformers()
        from transformers import AutoTokenizer

        self.path, self.max_length, self.name = Path(path), int(max_length), name
        if not self.path.is_dir():
            raise DataError(f"{self.path}: tokenizer folder not found")
        self.hf = AutoTokenizer.from_pretrained(str(self.path), local_files_only=True)
        if self.hf.pad_token_id != PAD_ID:  # the models mask padding as id 0
            raise DataError(f"{self.path}: the tokenizer pads with id {self.hf.pad_token_id}, expected {PAD_ID}")
        self.vocab_size = int(len(self.hf))

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """(N, max_length) int64 ids ([CLS] ... [SEP], then padding 0)."""
        import torch

        if not len(texts):
            return torch.zeros((0, self.max_length), dtype=torch.int64)
        enc = self.hf(list(texts), padding="max_length", truncation=True, max_length=self.max_length,
                      return_attention_mask=False, return_token_type_ids=False)
        return torch.tensor(enc["input_ids"], dtype=torch.int64)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "vocab_size": self.vocab_size, "max_length": self.max_length,
                "files": HF_DIR}

    def save(self, directory: str | Path) -> Path:
        """Write `directory`/tokenizer.json and the tokenizer's own files under `directory`/tokenizer/."""
        directory = Path(directory)
        self.hf.save_pretrained(str(directory / HF_DIR))
        write_json(directory / TOKENIZER_FILE, self.to_dict())
        return directory / TOKENIZER_FILE

    def __repr__(self) -> str:
        return f"HFTokenizer({self.name!r}, vocab_size={self.vocab_size}, max_length={self.max_length})"


Tokenizer = WordTokenizer | HFTokenizer


def create_tokenizer(kind: str, texts: Sequence[str], cfg: Any) -> Tokenizer:
    """A tokenizer of `kind` for the settings of `cfg` (a DataConfig): "word" is fitted on `texts`.

    Args:
        kind: "word" (fitted on the training texts) or "minilm" (the files shipped with MiniLM).
        texts: the training texts.
        cfg: max_length, vocab_size and segmenter are used.

    Example:
        tok = create_tokenizer("word", data.train.texts, cfg.data)
    """
    if kind == "word":
        return WordTokenizer.fit(texts, cfg.vocab_size, cfg.max_length, cfg.segmenter)
    if kind == "minilm":
        from tinyfm.models.minilm import minilm_dir

        return HFTokenizer(minilm_dir(), cfg.max_length, name="minilm")
    raise DataError(f"tokenizer: unknown kind {kind!r} (known: word, minilm)")


def tokenizer_from_dict(d: dict[str, Any], directory: str | Path | None = None) -> Tokenizer:
    """Rebuild a tokenizer from its to_dict() record (an HF one from `directory`/tokenizer/)."""
    kind = d.get("kind")
    if kind == "word":
        return WordTokenizer(d["words"], d["vocab_size"], d["max_length"], d["segmenter"], d.get("lowercase", True))
    if kind == "hf":
        if directory is None:
            raise DataError("tokenizer: an HF tokenizer record needs the folder holding its files")
        return HFTokenizer(Path(directory) / d.get("files", HF_DIR), d["max_length"], name=d.get("name", "hf"))
    raise DataError(f"tokenizer: unknown kind {kind!r} in the record (known: word, hf)")


def load_tokenizer(directory: str | Path) -> Tokenizer:
    """The tokenizer saved in a run (or variant) directory."""
    path = Path(directory) / TOKENIZER_FILE
    if not path.is_file():
        raise DataError(f"{path}: file not found (a text run saves its tokenizer there)")
    return tokenizer_from_dict(read_json(path), directory)


def tokenizer_for(model_name: str, word_tokenizer: WordTokenizer) -> Tokenizer:
    """The tokenizer registry model `model_name` reads: `word_tokenizer` itself, or MiniLM's at its max_length.

    Raises:
        DataError: the model is not a text model (it has no tokenizer).
    """
    from tinyfm.models.registry import model_tokenizer

    kind = model_tokenizer(model_name)
    if kind is None:
        raise DataError(f"--model {model_name}: not a text model (text models: seed-text, text-cnn, text-bigru, "
                        "minilm-classifier and their tiny-* variants; see `tinyfm models`)")
    if kind == "word":
        return word_tokenizer
    if kind == "minilm":
        from tinyfm.models.minilm import minilm_dir

        return HFTokenizer(minilm_dir(), word_tokenizer.max_length, name="minilm")
    raise DataError(f"--model {model_name}: unknown tokenizer kind {kind!r}")
