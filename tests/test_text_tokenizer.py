"""The TensorFlow-free tokenizer must give the very token ids Keras' TextVectorization gives.

The pure-Python tests pin the rules (ASCII-only lowercasing, exactly ``string.punctuation`` stripped, exactly the
six ASCII whitespace characters splitting); the TensorFlow tests compare ids with a real TextVectorization on every
text of both corpora and on the hard cases.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgecnn.errors import InputError, ModelError
from edgecnn.runtime import text as text_rt
from edgecnn.runtime.text import Tokenizer

HARD_CASES = [
    "",
    " ",
    "   \t\n  \r\n ",
    "\x0b\x0c",
    "!!! ... ???",
    "Plain ASCII sentence.",
    "ÉCOLE École ÀBC Ünïcode naïve façade Straße STRASSE İstanbul ǅ ﬁne",
    "ПРИВЕТ мир Привет",
    "ΑΒΓ αβγ Σίσυφος ΣΊΣΥΦΟΣ",
    "東京 タワー 한국어 中文，标点。",
    "مرحبا بالعالم עברית",
    "ＦＵＬＬＷＩＤＴＨ ｌｅｔｔｅｒｓ！",
    "emoji 😀 😀😀 👍🏽 family👨‍👩‍👧 flag🇬🇧 x😀y",
    "e-mail U.S.A. 3.14 C++ rock'n'roll don't it's #hashtag @user http://t.co/AbC_12 a/b a\\b (x) [y] {z}",
    "curly ‘quotes’ “double” don’t — en–dash … ellipsis «guillemets» ¿qué? ¡sí!",
    "tab\tseparated\tvalues\nnew line\r\ncarriage\rreturn\x0bvtab\x0cformfeed",
    "runs     of      spaces   and\t\t\ttabs",
    "no\u00a0break\u2003em\u2009thin\u200bzero\u3000ideographic\u2028line\u2029para\x85nel",
    "info\x1cseparators\x1dand\x1eunits\x1f!",
    "combining e\u0301 vs é, ANGSTRÖM Å",
    "nul\x00inside and DEL\x7f char",
    "[UNK] unk UNK",
    "under_score hy-phen dot.ted col:on semi;colon quote\"d back`tick tilde~ caret^ pipe| at@",
    "MiXeD CaSe WoRdS AND 123 numbers 4th 1,000,000",
    " ".join(f"word{i % 97} Filler, text." for i in range(3000)),
]


def _tokens(text):
    return text_rt.split(text, "lower_and_strip_punctuation")


def test_lowercasing_is_ascii_only():
    assert _tokens("ÉCOLE ПРИВЕТ ΣΊΣΥΦΟΣ İ ＡＢＣ") == ["École", "ПРИВЕТ", "ΣΊΣΥΦΟΣ", "İ", "ＡＢＣ"]


def test_strips_exactly_ascii_punctuation():
    assert _tokens("don't e-mail U.S.A. a_b #tag @me 3.14") == ["dont", "email", "usa", "ab", "tag", "me", "314"]
    assert _tokens("don’t “hi” — … ¿qué?") == ["don’t", "“hi”", "—", "…", "¿qué"]
    assert text_rt.PUNCTUATION == b"""!"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"""


def test_splits_on_ascii_whitespace_only():
    assert _tokens("a\tb\nc\rd\x0be\x0cf  g") == list("abcdefg")
    assert _tokens("a\u00a0b c\u2003d e\x85f g\x1ch") == ["a\u00a0b", "c\u2003d", "e\x85f", "g\x1ch"]


def test_empty_and_whitespace_only_give_padding():
    tokenizer = Tokenizer(["", "[UNK]", "a"], sequence_length=4)
    assert tokenizer.encode(["", "  \t\n", "?!"]).tolist() == [[0, 0, 0, 0]] * 3


def test_ids_pad_oov_and_truncation():
    tokenizer = Tokenizer(["", "[UNK]", "the", "said"], sequence_length=4)
    ids = tokenizer.encode(["He SAID: the end.", "the the the the the the"])
    assert ids.dtype == np.int32 and ids.shape == (2, 4)
    assert ids.tolist() == [[1, 3, 2, 1], [2, 2, 2, 2]]
    assert tokenizer.encode("said").tolist() == [[3, 0, 0, 0]]


def test_long_text_is_tokenized_from_a_prefix(monkeypatch):
    seen = []
    real = text_rt.standardize
    monkeypatch.setattr(text_rt, "standardize", lambda text, mode: seen.append(len(text)) or real(text, mode))
    tokenizer = Tokenizer(["", "[UNK]", "alpha"], sequence_length=400)
    huge = "alpha beta, " * 900_000  # ~10.8 MB
    ids, count = tokenizer.encode_with_count(huge)
    assert count == 401 and len(ids) == 400 and ids[:4] == [2, 1, 2, 1]
    assert sum(seen) < 100_000, "the whole 10 MB text went through standardization"


def test_prefix_growth_never_splits_a_token():
    # A 5,000-character token straddles every early prefix boundary; the result must match the one-shot split.
    text = "a " * 10 + "x" * 5000 + " b c"
    tokenizer = Tokenizer(["", "[UNK]", "a", "b", "c", "x" * 5000], sequence_length=12)
    assert tokenizer.encode_one(text) == [2] * 10 + [5, 3]


def test_tokenizer_rejects_bad_vocabulary_and_inputs():
    with pytest.raises(ModelError):
        Tokenizer(["the", "a"], sequence_length=4)
    with pytest.raises(ModelError):
        Tokenizer(["", "[UNK]"], sequence_length=0)
    with pytest.raises(ModelError):
        Tokenizer(["", "[UNK]"], sequence_length=4, standardize="lower_and_strip_accents")
    with pytest.raises(InputError):
        Tokenizer(["", "[UNK]"], sequence_length=4).encode([b"bytes"])


# --- against TensorFlow ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tf():
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return pytest.importorskip("tensorflow")


def _vectorizer(tf, texts, max_tokens, sequence_length):
    import keras

    layer = keras.layers.TextVectorization(max_tokens=max_tokens, standardize="lower_and_strip_punctuation",
                                           split="whitespace", output_mode="int",
                                           output_sequence_length=sequence_length)
    layer.adapt(tf.data.Dataset.from_tensor_slices(texts).batch(1024))
    return layer


def _assert_same_ids(tf, texts, max_tokens, sequence_length):
    layer = _vectorizer(tf, texts, max_tokens, sequence_length)
    vocabulary = [str(t) for t in layer.get_vocabulary()]
    tokenizer = Tokenizer(vocabulary, sequence_length)
    mismatches = []
    for start in range(0, len(texts), 1024):
        chunk = texts[start:start + 1024]
        expected = layer(tf.constant(chunk, dtype=tf.string)).numpy()
        got = tokenizer.encode(chunk)
        for i in np.flatnonzero(np.any(expected != got, axis=1)):
            mismatches.append(repr(chunk[i][:60]))
    assert not mismatches, f"{len(mismatches)} texts differ from TextVectorization, e.g. {mismatches[:3]}"
    assert len(vocabulary) > 2


def test_standardize_and_split_match_tensorflow_on_hard_cases(tf):
    regex = r'[!"#$%&()\*\+,-\./:;<=>?@\[\\\]^_`{|}~\']'
    standardized = tf.strings.regex_replace(tf.strings.lower(tf.constant(HARD_CASES)), regex, "").numpy()
    for text, expected in zip(HARD_CASES, standardized):
        assert text_rt.standardize(text, "lower_and_strip_punctuation") == expected, repr(text[:40])
    for text, expected in zip(HARD_CASES, tf.strings.split(tf.constant(standardized)).to_list()):
        assert text_rt.split(text) == [t.decode("utf-8") for t in expected], repr(text[:40])


@pytest.mark.parametrize("max_tokens, sequence_length", [(None, 5000), (12, 7)])
def test_ids_match_textvectorization_on_hard_cases(tf, max_tokens, sequence_length):
    _assert_same_ids(tf, HARD_CASES, max_tokens, sequence_length)


def _all_texts(name):
    from edgecnn.train.datasets import load_dataset

    splits = load_dataset(name, seed=0)
    return list(splits.x_train) + list(splits.x_val) + list(splits.x_test)


@pytest.mark.slow
@pytest.mark.parametrize("name, max_tokens, sequence_length", [
    ("bbc-news", 6000, 400),     # truncation and OOV on long articles
    ("bbc-news", None, 5000),    # every token of every article, nothing out of vocabulary
    ("tweets", 3000, 48),        # padding and OOV on short, noisy (mojibake, emoji, URLs) texts
])
def test_ids_match_textvectorization_on_every_text_of_the_corpora(tf, name, max_tokens, sequence_length):
    texts = _all_texts(name)
    assert len(texts) in (2225, 38158)
    _assert_same_ids(tf, texts + HARD_CASES, max_tokens, sequence_length)
