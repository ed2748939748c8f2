"""Custom Keras layers of the text models, registered so ``model.keras`` files load without extra arguments.

Only ops that ONNX and TFLite have (equal, cast, sum, minimum, gather, multiply, rsqrt) are used, so the exported
graphs need no custom operators; :func:`edgecnn.keras_io.load_keras_model` imports this module before loading a model.
"""

from __future__ import annotations

import numpy as np

from ..errors import require
from ..keras_io import import_tensorflow
from ..runtime import text as text_rt

import_tensorflow()  # before Keras, which imports TensorFlow: quietly
keras = require("keras", "train", "The text models' layers")

#: Occurrence counts are capped here: a word seen c > MAX_COUNT times in one text weighs c / MAX_COUNT, not 1
#: (only frequent words - "the", "said" - get there, and their idf is near its minimum). The cap keeps the table
#: of reciprocals small.
MAX_COUNT = 16
#: 1 / count for count 0..MAX_COUNT, with 0 for count 0 (padding and [UNK] positions).
RECIPROCALS = np.array([0.0] + [1.0 / k for k in range(1, MAX_COUNT + 1)], np.float32)


@keras.saving.register_keras_serializable(package="edgecnn")
class TfIdfWeights(keras.layers.Layer):
    """Token ids -> one weight per position such that summing a per-word vector with them gives the TF-IDF dot.

    For position ``t`` holding word ``v`` that occurs ``c_v`` times in the text, the weight is
    ``idf_v / min(c_v, MAX_COUNT) / sqrt(sum over distinct words u of idf_u^2)``; padding and ``[UNK]`` get 0. Summing
    ``weight_t * s[token_t]`` over positions therefore equals ``x . s`` where ``x`` is the text's binary TF-IDF
    vector with L2 norm - scikit-learn's ``TfidfVectorizer(binary=True)`` -, so a per-word score table on top is
    logistic regression on TF-IDF features, learnt inside the network. Why binary: on BBC News, logistic regression
    on raw term counts (what a mean of per-word scores computes) reaches 96.6 %, on binary TF-IDF 98.9 %.

    ``idf`` is a non-trainable table (smooth idf, as scikit-learn) that the trainer fills from the training split
    with :meth:`set_idf`. Occurrences are counted with an L x L equality of the ids (0.5 M comparisons at L = 736).
    """

    def __init__(self, vocab_size: int, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size = int(vocab_size)
        self.idf = self.add_weight(name="idf", shape=(self.vocab_size,), initializer="ones", trainable=False)

    def call(self, tokens):
        ops = keras.ops
        tokens = ops.cast(tokens, "int32")
        word = ops.cast(ops.greater(tokens, text_rt.OOV_ID), "int32")  # B x L: 0 for padding and [UNK]
        same = ops.cast(ops.equal(ops.expand_dims(tokens, 2), ops.expand_dims(tokens, 1)), "int32")
        # Occurrences of each position's word among the words, counted in int32 (0 at padding and [UNK]) and
        # turned into 1 / count by a table lookup: an int8 graph has no integer counts to round and no division
        # (the 32-bit Pi's tflite-runtime 2.14 has no int8 DIV kernel).
        counts = ops.minimum(ops.sum(same * ops.expand_dims(word, 1), axis=2), MAX_COUNT)
        reciprocal = ops.take(ops.convert_to_tensor(RECIPROCALS), counts, axis=0)  # 0 where count is 0
        idf = ops.take(self.idf, tokens, axis=0)
        share = idf * reciprocal  # sums to idf_v over the positions of word v (c_v / MAX_COUNT past MAX_COUNT)
        # Multiply by rsqrt rather than divide by the norm: an int8 TFLite refuses to divide by a quantized zero,
        # which the norm of a text without known words is. Such a text gets weights 0 (its share is 0 everywhere).
        return share * ops.rsqrt(ops.sum(share * idf, axis=1, keepdims=True) + 1e-6)

    def set_idf(self, token_ids: np.ndarray) -> None:
        """Smooth idf ``ln((1 + n) / (1 + df)) + 1`` of every id from the training texts' ids ``[N, L]``."""
        present = np.zeros((len(token_ids), self.vocab_size), bool)
        present[np.arange(len(token_ids))[:, None], token_ids] = True
        df = present.sum(axis=0)
        self.idf.assign((np.log((1.0 + len(token_ids)) / (1.0 + df)) + 1.0).astype(np.float32))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "vocab_size": self.vocab_size}
