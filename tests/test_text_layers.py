"""The wide TF-IDF path of text-cnn-multi: logistic regression on scikit-learn's binary TF-IDF, inside the graph."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("sklearn")

VOCAB, LENGTH = 60, 40


@pytest.fixture(scope="module")
def model_and_ids():
    from edgecnn.train.models import create_model
    from edgecnn.train.text_layers import TfIdfWeights

    rng = np.random.default_rng(0)
    ids = rng.integers(0, VOCAB, (24, LENGTH)).astype(np.int32)
    ids[:, 30:] = 0  # padding
    ids[3, :] = 0  # an all-padding text
    ids[4, :20] = 1  # [UNK] only
    ids[4, 20:] = 0
    model = create_model("text-cnn-multi", (LENGTH,), 3, vocab_size=VOCAB, wide="tfidf")
    layer = next(layer for layer in model.layers if isinstance(layer, TfIdfWeights))
    layer.set_idf(ids)
    return model, layer, ids


def _weights(model, layer, ids):
    import keras

    return keras.Model(model.inputs, layer.output).predict(ids, verbose=0)


def test_wide_path_equals_the_dot_product_with_sklearn_binary_tfidf(model_and_ids):
    from sklearn.feature_extraction.text import TfidfVectorizer

    model, layer, ids = model_and_ids
    scores = model.get_layer("wide_scores").get_weights()[0]
    ours = np.einsum("bl,blc->bc", _weights(model, layer, ids), scores[ids])
    docs = [" ".join(f"w{t}" for t in row if t > 1) for row in ids]
    vectorizer = TfidfVectorizer(binary=True, token_pattern=r"\S+", vocabulary=[f"w{i}" for i in range(2, VOCAB)])
    features = vectorizer.fit(docs).transform(docs).toarray()
    np.testing.assert_allclose(ours, features @ scores[2:], atol=1e-5)
    assert np.abs(ours).max() > 1e-3  # not trivially zero


def test_padding_unknown_words_and_empty_texts_weigh_nothing(model_and_ids):
    model, layer, ids = model_and_ids
    weights = _weights(model, layer, ids)
    assert np.all(weights[ids <= 1] == 0)
    assert np.all(weights[3] == 0) and np.all(weights[4] == 0) and np.all(np.isfinite(weights))


def test_counts_are_capped_so_a_frequent_word_weighs_more_than_once():
    from edgecnn.train.models import create_model
    from edgecnn.train.text_layers import MAX_COUNT, TfIdfWeights

    ids = np.zeros((1, LENGTH), np.int32)
    ids[0, :32] = 5  # one word 32 times (2 x MAX_COUNT) ...
    ids[0, 32] = 6  # ... and another once
    model = create_model("text-cnn-multi", (LENGTH,), 3, vocab_size=VOCAB, wide="tfidf")
    layer = next(layer for layer in model.layers if isinstance(layer, TfIdfWeights))
    weights = _weights(model, layer, ids)[0]
    assert weights[:32].sum() == pytest.approx(32 / MAX_COUNT * weights[32], rel=1e-5)


def test_idf_is_smooth_idf_of_the_training_ids_and_survives_save_and_load(model_and_ids, tmp_path):
    from edgecnn.keras_io import load_keras_model

    model, layer, ids = model_and_ids
    df = np.array([(ids == v).any(axis=1).sum() for v in range(VOCAB)])
    np.testing.assert_allclose(layer.idf.numpy(), np.log((1 + len(ids)) / (1 + df)) + 1, rtol=1e-6)
    model.save(tmp_path / "model.keras")
    again = load_keras_model(tmp_path / "model.keras")
    np.testing.assert_allclose(again.predict(ids, verbose=0), model.predict(ids, verbose=0), atol=1e-6)
