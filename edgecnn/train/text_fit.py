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

from ..errors import InputError
from ..runtime import text as text_rt
from . import models as models_mod
from .fit import fit_model, register_trainer, save_confusion, save_history, start_from
from .text_reference import tfidf_reference

DEFAULT_VOCAB_SIZE = 8000
DEFAULT_TOKEN_DROPOUT = 0.1
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


def _init_embedding_with_lsa(model, token_ids: np.ndarray, vocab_size: int, seed: int) -> None:
    """Start the embedding from LSA word vectors of the training split instead of noise.

    The term-document TF-IDF matrix of the training texts (built from the very token ids the model trains on) is
    factorized by truncated SVD; each word's row, scaled to Keras' usual initial magnitude, becomes its embedding.
    Words that share documents start close together, which a from-scratch embedding on 1.5k documents has to learn
    from the labels alone. Unsupervised and from the training split only: no label or test text leaks in.
    """
    from scipy import sparse
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfTransformer

    layers = [layer for layer in model.layers if layer.name.endswith("embedding") and hasattr(layer, "output_dim")]
    dim = int(layers[0].output_dim)
    rows, cols = np.nonzero(token_ids > text_rt.OOV_ID)  # padding and [UNK] carry no topic
    counts = sparse.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, token_ids[rows, cols])),
                               shape=(len(token_ids), vocab_size))
    tfidf = TfidfTransformer(sublinear_tf=True).fit_transform(counts)
    vectors = TruncatedSVD(dim, random_state=seed).fit_transform(tfidf.T.tocsr()).astype(np.float32)
    vectors *= 0.05 / max(float(vectors.std()), 1e-12)
    for layer in layers:
        layer.set_weights([vectors])


def _weight_averager(keras, start: int):
    """A callback that sets the model to the mean of its weights at the end of epochs ``start``, ``start + 1``, ...

    Stochastic weight averaging (Izmailov et al. 2018): once the training set is fit, the weights wander along a
    flat valley; their mean sits nearer its centre than any single epoch and generalizes better. The exported
    model is an ordinary model with the averaged weights.
    """

    class WeightAverage(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.total, self.count = None, 0

        def on_epoch_end(self, epoch, logs=None):
            if epoch + 1 < start:
                return
            weights = self.model.get_weights()
            self.total = weights if self.total is None else [t + w for t, w in zip(self.total, weights)]
            self.count += 1

        def on_train_end(self, logs=None):
            if self.count:
                self.model.set_weights([t / self.count for t in self.total])

    return WeightAverage()


def _token_dropout(tf, rate: float, seed: int):
    """Word dropout as augmentation: each real token of a training batch becomes ``[UNK]`` with probability ``rate``.

    The model then cannot lean on any single word, which is what a CNN that fits 1.5k documents perfectly in a few
    epochs otherwise does. It runs in the input pipeline only; the exported graph never sees it.
    """
    def apply(ids, labels):
        drop = tf.random.uniform(tf.shape(ids), seed=seed) < rate
        return tf.where(drop & (ids > text_rt.OOV_ID), tf.constant(text_rt.OOV_ID, ids.dtype), ids), labels

    return apply


def _optimizer(keras, learning_rate: float, weight_decay: float, ema: float, steps_per_epoch: int):
    """Adam, or AdamW with ``weight_decay``; with ``ema`` the weights are replaced by their moving average after
    every epoch, so validation, early stopping and the saved model all see the averaged weights.

    Averaging damps the epoch-to-epoch wobble of a net that fits 1.5k documents perfectly within a few epochs.
    """
    averaging = {"use_ema": True, "ema_momentum": ema, "ema_overwrite_frequency": steps_per_epoch} if ema else {}
    if weight_decay:
        return keras.optimizers.AdamW(learning_rate, weight_decay=weight_decay, **averaging)
    return keras.optimizers.Adam(learning_rate, **averaging)


#: The options the text trainer reads itself (the rest go to the architecture), with their defaults:
#: ``vocab_size`` (most frequent training words kept, including the padding and ``[UNK]`` entries),
#: ``sequence_length`` (None: automatic, see ``auto_sequence_length``), ``weight_decay`` (AdamW's decoupled decay),
#: ``ema`` (momentum of an exponential moving average of the weights, 0 = off), ``token_dropout`` (see
#: ``_token_dropout``; the trainer's ``augment`` switch turns it off), ``embedding_init`` (``random`` or ``lsa``)
#: and ``average_from`` (the epoch from which weights are averaged instead of early stopping, 0 = off).
TRAINER_OPTIONS = {"vocab_size": DEFAULT_VOCAB_SIZE, "sequence_length": None, "weight_decay": 0.0, "ema": 0.0,
                   "token_dropout": DEFAULT_TOKEN_DROPOUT, "embedding_init": "random", "average_from": 0}
EMBEDDING_INITS = ("random", "lsa")


def check_text_options(options: dict, epochs: int) -> None:
    """Refuse, before any work, settings the trainer would otherwise ignore or fail on late."""
    average_from = options["average_from"]
    if not isinstance(average_from, int) or not 0 <= average_from <= epochs:
        raise InputError(f"-o average_from={average_from} averages the weights from that epoch on, but --epochs is "
                         f"{epochs}: use an epoch from 1 to {epochs}, or 0 for early stopping instead")
    if options["embedding_init"] not in EMBEDDING_INITS:
        raise InputError(f"-o embedding_init={options['embedding_init']} is not known; use "
                         f"{' or '.join(EMBEDDING_INITS)}")
    length = options["sequence_length"]
    if length is not None and (isinstance(length, bool) or not isinstance(length, int) or length < 1):
        raise InputError(f"-o sequence_length={length} is not a number of tokens; give a whole number >= 1, or "
                         "leave it out for the automatic length")


@register_trainer("text-classification", options=TRAINER_OPTIONS, check=check_text_options)
def train_text_classifier(tf, keras, splits, model_name, out, epochs, seed, batch_size, patience, learning_rate,
                          augment, model_options, trainer_options, verbose, weights=None):
    """Adapt the vectorizer, fit the CNN on token ids, measure it and the TF-IDF line; ``augment`` does not apply.

    ``trainer_options`` are ``TRAINER_OPTIONS`` (defaults filled in), ``model_options`` the architecture's.
    """
    from .text_layers import TfIdfWeights  # a Keras layer: imported with Keras, not with the registry

    options = dict(model_options)
    vocab_size = int(trainer_options["vocab_size"])
    standardize = splits.preprocessing.get("standardize", "lower_and_strip_punctuation")
    split = splits.preprocessing.get("split", "whitespace")
    weight_decay = float(trainer_options["weight_decay"])
    ema = float(trainer_options["ema"])
    token_dropout = float(trainer_options["token_dropout"])
    embedding_init = str(trainer_options["embedding_init"])
    average_from = int(trainer_options["average_from"])
    sequence_length = trainer_options["sequence_length"]
    sequence_length = int(sequence_length) if sequence_length else auto_sequence_length(splits.x_train, standardize)

    vectorizer = keras.layers.TextVectorization(max_tokens=vocab_size, standardize=standardize, split=split,
                                                output_mode="int", output_sequence_length=sequence_length)
    vectorizer.adapt(tf.data.Dataset.from_tensor_slices(list(splits.x_train)).batch(512))
    vocabulary = [str(token) for token in vectorizer.get_vocabulary()]
    x_train, x_val, x_test = (vectorize(tf, vectorizer, x) for x in (splits.x_train, splits.x_val, splits.x_test))

    model = models_mod.create_model(model_name, (sequence_length,), len(splits.labels),
                                    vocab_size=len(vocabulary), **options)
    for layer in model.layers:
        if isinstance(layer, TfIdfWeights):
            layer.set_idf(x_train)  # document frequencies of the training split only
    if embedding_init == "lsa":
        _init_embedding_with_lsa(model, x_train, len(vocabulary), seed)
    start_from(model, weights)  # last: loaded weights replace every initialisation above
    steps_per_epoch = math.ceil(len(x_train) / batch_size)
    model.compile(optimizer=_optimizer(keras, learning_rate, weight_decay, ema, steps_per_epoch),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    train_ds = tf.data.Dataset.from_tensor_slices((x_train, splits.y_train)).shuffle(len(x_train), seed=seed)
    train_ds = train_ds.batch(batch_size)
    if augment and token_dropout:
        train_ds = train_ds.map(_token_dropout(tf, token_dropout, seed), num_parallel_calls=tf.data.AUTOTUNE)
    train_ds = train_ds.prefetch(tf.data.AUTOTUNE)
    val_ds = tf.data.Dataset.from_tensor_slices((x_val, splits.y_val)).batch(256)
    if average_from:
        # Weight averaging replaces early stopping: train all epochs, average the weights from ``average_from`` on.
        history = model.fit(train_ds, validation_data=val_ds, epochs=epochs, verbose=verbose, shuffle=False,
                            callbacks=[_weight_averager(keras, int(average_from))])
    else:
        history = fit_model(tf, keras, model, train_ds, val_ds, epochs, patience, verbose)
    model.save(out / "model.keras")
    save_history(history, out)

    val_accuracy = float(np.mean(model.predict(x_val, batch_size=256, verbose=0).argmax(axis=1) == splits.y_val))
    y_pred = model.predict(x_test, batch_size=256, verbose=0).argmax(axis=1)
    accuracy = float(np.mean(y_pred == splits.y_test))
    save_confusion(splits.y_test, y_pred, splits.labels, out / "confusion.png",
                   f"{model_name} on {splits.name} test: {accuracy:.2%}")
    section = {"vocabulary": vocabulary, "sequence_length": sequence_length, "standardize": standardize,
               "split": split, "pad_id": text_rt.PAD_ID, "oov_id": text_rt.OOV_ID}
    tokenizer = text_rt.Tokenizer.from_manifest_section(section)
    parity = float(np.mean(np.all(tokenizer.encode(splits.x_test) == x_test, axis=1)))
    reference = tfidf_reference(splits.x_train, splits.y_train, splits.x_test, splits.y_test)
    metrics = {"test_accuracy": accuracy, "test_size": len(y_pred), "val_accuracy": val_accuracy,
               "epochs_run": len(history.epoch),
               "parameters": int(model.count_params()), "vocabulary_size": len(vocabulary),
               "sequence_length": sequence_length, "tokenizer_parity": parity, "tfidf_reference": reference}
    return metrics, {"text": section}
