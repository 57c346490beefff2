"""Word-level tokenizer: Keras-like splitting, frequency vocabulary, OOV, padding, truncation, Chinese, bounded ids."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from tinyfm.data.text import OOV_ID, PAD_ID, WordTokenizer, load_tokenizer, split_words
from tinyfm.errors import DataError

CORPUS = ["The film is good.", "The film is bad!", "Good, good acting; the plot: bad.", "A GOOD film"]


def test_split_lowercases_and_drops_punctuation_but_keeps_apostrophes() -> None:
    assert split_words("Hello, World! It's 3:15 -- e-mail_me") == ["hello", "world", "it's", "3", "15", "e", "mail",
                                                                    "me"]
    assert split_words("  \t\n ") == []


def test_vocabulary_is_ranked_by_frequency_ties_by_first_seen() -> None:
    tok = WordTokenizer.fit(CORPUS, vocab_size=100, max_length=8)
    # counts: good 4, the 3, film 3, is 2, bad 2, acting 1, plot 1, a 1 ("the" was seen before "film")
    assert tok.words == ["good", "the", "film", "is", "bad", "acting", "plot", "a"]
    assert tok.ids("the good film") == [3, 2, 4]


def test_oov_padding_and_truncation() -> None:
    tok = WordTokenizer.fit(CORPUS, vocab_size=100, max_length=4)
    x = tok.encode(["good unknownword", "the film is good and long", ""])
    assert x.dtype == torch.int64 and x.shape == (3, 4)
    assert x[0].tolist() == [2, OOV_ID, PAD_ID, PAD_ID]  # post padding
    assert x[1].tolist() == [3, 4, 5, 2]  # truncated at the end
    assert x[2].tolist() == [PAD_ID] * 4


def test_ids_never_reach_past_the_table() -> None:
    texts = [f"word{i} " * (i % 3 + 1) for i in range(500)]
    tok = WordTokenizer.fit(texts, vocab_size=50, max_length=6)
    assert len(tok.words) == 48  # 50 rows: padding, OOV and 48 words
    x = tok.encode(texts + ["never seen before"])
    assert int(x.max()) < 50 and int(x.min()) >= 0
    with pytest.raises(DataError, match="do not fit"):
        WordTokenizer(["a", "b", "c"], vocab_size=4)


def test_chinese_is_segmented_per_character_without_jieba(tmp_path) -> None:
    sample = tmp_path / "zh.txt"
    sample.write_text("这部电影很好看。\n这部电影很无聊！\n", encoding="utf-8")
    lines = sample.read_text(encoding="utf-8").splitlines()
    assert split_words(lines[0], "chars") == ["这", "部", "电", "影", "很", "好", "看"]
    assert split_words("iPhone手机", "chars") == ["iphone", "手", "机"]
    tok = WordTokenizer.fit(lines, vocab_size=100, max_length=10, segmenter="chars")
    x = tok.encode(lines)
    assert (x[0] > OOV_ID).sum() == 7 and x[0, :5].tolist() == x[1, :5].tolist()  # 这部电影很 shared


@pytest.mark.skipif(importlib.util.find_spec("jieba") is None, reason="jieba not installed")
def test_chinese_words_with_jieba() -> None:
    words = split_words("我爱北京天安门", "jieba")
    assert "北京" in words and "天安门" in words
    tok = WordTokenizer.fit(["我爱北京天安门", "我爱电影"], vocab_size=100, max_length=5, segmenter="auto")
    assert tok.segmenter == "jieba" and tok.ids("我爱北京")[:1] == [tok.index["我"]]


def test_save_and_load_give_the_same_ids(tmp_path) -> None:
    tok = WordTokenizer.fit(CORPUS, vocab_size=100, max_length=6, segmenter="chars")
    tok.save(tmp_path)
    again = load_tokenizer(tmp_path)
    assert again.to_dict() == tok.to_dict()
    torch.testing.assert_close(again.encode(CORPUS), tok.encode(CORPUS))
    with pytest.raises(DataError, match="tokenizer.json"):
        load_tokenizer(tmp_path / "missing")


def test_drop_words_removes_words_in_order_and_keeps_one():
    from tinyfm.data.text import drop_words

    texts = ["a fine and moving film about two brothers", "short", ""]
    out = drop_words(texts, 0.5, seed=3)
    assert out == drop_words(texts, 0.5, seed=3) and out != drop_words(texts, 0.5, seed=4)  # seeded
    words = texts[0].split()
    kept = out[0].split()
    assert 0 < len(kept) < len(words) and kept == [w for w in words if w in kept]  # a subsequence, in order
    assert out[1] == "short" and out[2] == ""  # one word is never removed; an empty text stays empty
    assert drop_words(texts, 0.0) == texts
    assert all(drop_words(["x y z"], 0.99, seed=s)[0] for s in range(20))  # never empty
