"""The text-classification trainer: TextVectorization outside the graph, a CNN on int32 token ids inside it.

The vectorizer is adapted on the training split only (validation and test words the model never saw map to
``[UNK]``, as they will for users). The saved ``model.keras`` takes token ids, so export never has to convert
string ops; the vocabulary, sequence length and standardization travel in ``run.json``'s ``text`` section and from
there into the manifest, where ``edgecnn/runtime/text.py`` rebuilds the same ids without TensorFlow. As a guard, the
trainer re-tokenizes the test split with that runtime tokenizer and records the share of texts whose ids are
identical (``tokenizer_parity`` in metrics.json; anything below 1.0 is a bug).
"""

from __future__ import annotations

import math

import numpy as np

from ..runtime import text as text_rt
from . import models as models_mod
from .fit import fit_model, register_trainer, save_confusion, save_history
from .text_reference import tfidf_reference

DEFAULT_VOCAB_SIZE = 8000
#: Automatic sequence length: this percentile of the training texts' token counts, rounded up to a multiple of 16.
LENGTH_PERCENTILE = 95
MAX_AUTO_LENGTH = 1024


def auto_sequence_length(texts, standardize: str) -> int:
    """Long enough for ``LENGTH_PERCENTILE`` % of ``texts`` unchanged, short enough to keep inference cheap."""
    counts = [len(text_rt.split(t, standardize)) for t in texts]
    length = math.ceil(float(np.percentile(counts, LENGTH_PERCENTILE)) / 16.0) * 16
    return max(16, min(MAX_AUTO_LENGTH, length))


def vectorize(tf, layer, texts, batch_size: int = 512) -> np.ndarray:
    """int32 token ids ``[N, sequence_length]`` from a TextVectorization layer, in batches."""
    parts = [layer(tf.constant(list(texts[i:i + batch_size]), dtype=tf.string)).numpy()
             for i in range(0, len(texts), batch_size)]
    return np.concatenate(parts).astype(np.int32)


@register_trainer("text-classification")
def train_text_classifier(tf, keras, splits, model_name, out, epochs, seed, batch_size, patience, learning_rate,
                          augment, model_options, verbose):
    """Adapt the vectorizer, fit the CNN on token ids, measure it and the TF-IDF line; ``augment`` does not apply.

    Model options read here: ``vocab_size`` (most frequent training words kept, default 8000, including the
    padding and ``[UNK]`` entries) and ``sequence_length`` (default: automatic, see ``auto_sequence_length``);
    the rest go to the architecture.
    """
    options = dict(model_options)
    vocab_size = int(options.pop("vocab_size", DEFAULT_VOCAB_SIZE))
    standardize = splits.preprocessing.get("standardize", "lower_and_strip_punctuation")
    split = splits.preprocessing.get("split", "whitespace")
    sequence_length = options.pop("sequence_length", None)
    sequence_length = int(sequence_length) if sequence_length else auto_sequence_length(splits.x_train, standardize)

    vectorizer = keras.layers.TextVectorization(max_tokens=vocab_size, standardize=standardize, split=split,
                                                output_mode="int", output_sequence_length=sequence_length)
    vectorizer.adapt(tf.data.Dataset.from_tensor_slices(list(splits.x_train)).batch(512))
    vocabulary = [str(token) for token in vectorizer.get_vocabulary()]
    x_train, x_val, x_test = (vectorize(tf, vectorizer, x) for x in (splits.x_train, splits.x_val, splits.x_test))

    model = models_mod.create_model(model_name, (sequence_length,), len(splits.labels),
                                    vocab_size=len(vocabulary), **options)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    train_ds = tf.data.Dataset.from_tensor_slices((x_train, splits.y_train)).shuffle(len(x_train), seed=seed)
    train_ds = train_ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)
    val_ds = tf.data.Dataset.from_tensor_slices((x_val, splits.y_val)).batch(256)
    history = fit_model(tf, keras, model, train_ds, val_ds, epochs, patience, verbose)
    model.save(out / "model.keras")
    save_history(history, out)

    y_pred = model.predict(x_test, batch_size=256, verbose=0).argmax(axis=1)
    accuracy = float(np.mean(y_pred == splits.y_test))
    save_confusion(splits.y_test, y_pred, splits.labels, out / "confusion.png",
                   f"{model_name} on {splits.name} test: {accuracy:.2%}")
    section = {"vocabulary": vocabulary, "sequence_length": sequence_length, "standardize": standardize,
               "split": split, "pad_id": text_rt.PAD_ID, "oov_id": text_rt.OOV_ID}
    tokenizer = text_rt.Tokenizer.from_manifest_section(section)
    parity = float(np.mean(np.all(tokenizer.encode(splits.x_test) == x_test, axis=1)))
    reference = tfidf_reference(splits.x_train, splits.y_train, splits.x_test, splits.y_test)
    metrics = {"test_accuracy": accuracy, "test_size": len(y_pred), "epochs_run": len(history.epoch),
               "parameters": int(model.count_params()), "vocabulary_size": len(vocabulary),
               "sequence_length": sequence_length, "tokenizer_parity": parity, "tfidf_reference": reference}
    return metrics, {"text": section}
