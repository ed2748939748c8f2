"""Text CNNs over word embeddings: the seed's single-width net and Kim's (2014) multi-width net.

Both take int32 token ids named ``tokens`` (shape ``[batch, sequence_length]``, 0 = padding, 1 = out of
vocabulary) and end in a softmax named ``probabilities``. The tokenizer is *not* in the graph: training runs Keras'
``TextVectorization`` outside the model and the runtime reproduces it (``edgecnn/runtime/text.py``), so the exported
files hold only ops every runtime has (an int8 TFLite keeps its int32 input; the embedding becomes an int8 gather).

Size matters because exports are committed: the embedding table dominates (vocabulary x embedding dim floats), so
the defaults keep it near 250k weights, about 1 MB as fp32 and 0.25 MB as int8 per file.
"""

from __future__ import annotations

from ..errors import InputError
from . import text_fit  # noqa: F401  (registers the text-classification trainer)
from .models import _classifier_head, _keras, register_model

TASK = "text-classification"


def _embedded(input_shape, vocab_size: int, embedding_dim: int, layers, keras):
    inputs = keras.Input(input_shape, dtype="int32", name="tokens")
    x = layers.Embedding(int(vocab_size), int(embedding_dim), name="embedding")(inputs)
    return inputs, x


@register_model("text-cnn", TASK,
                "the seed's Embedding-Conv1D(128,5)-GlobalMaxPool-Dense64-softmax")
def text_cnn(input_shape, num_classes, vocab_size: int = 8000, embedding_dim: int = 32, filters: int = 128,
             kernel_size: int = 5, hidden: int = 64, dropout: float = 0.0):
    """The seed: one convolution width, max-pooled over time, a small dense layer."""
    keras = _keras()
    layers = keras.layers
    inputs, x = _embedded(input_shape, vocab_size, embedding_dim, layers, keras)
    x = layers.Conv1D(int(filters), int(kernel_size), activation="relu", name="conv")(x)
    x = layers.GlobalMaxPooling1D(name="max_over_time")(x)
    x = layers.Dense(int(hidden), activation="relu", name="hidden")(x)
    if dropout:
        x = layers.Dropout(float(dropout))(x)
    return keras.Model(inputs, _classifier_head(x, num_classes, layers), name="text_cnn")


@register_model("text-cnn-multi", TASK,
                "Kim (2014): parallel Conv1D widths 3,4,5, max-over-time, dropout; wide is false, true or tfidf")
def text_cnn_multi(input_shape, num_classes, vocab_size: int = 8000, embedding_dim: int = 32, filters: int = 64,
                   kernel_sizes=(3, 4, 5), dropout: float = 0.5, embedding_dropout: float = 0.2,
                   pooling: str = "max", bag: bool = False, members: int = 1, wide: bool = False,
                   wide_scale: float = 16.0):
    """Several n-gram detectors side by side; dropout on whole embedding channels and on the pooled features.

    ``SpatialDropout1D`` drops entire embedding dimensions during training (a word-independent regularizer that
    helps on a corpus of 1.5k documents); both dropouts are identities in the exported graph. ``pooling="max+mean"``
    adds the mean over time of each branch to its max: "how much of the text is about this" besides "does this
    phrase occur", which suits topic classification of long documents. ``bag=True`` adds the mean of the word
    embeddings themselves (a fastText-style bag of words) beside the convolution features. ``members=K`` builds K
    independent towers (own embedding, convolutions and softmax) and averages their probabilities: an ensemble in
    one graph, K times the weights. ``wide=True`` adds a linear bag-of-words path beside the CNN (Wide & Deep,
    Cheng et al. 2016): a per-word score for each class, averaged over the text and added to the CNN's logits
    before the softmax - what TF-IDF + logistic regression does well, learnt jointly. ``wide="tfidf"`` makes that
    path exactly logistic regression on binary, L2-normalized TF-IDF features (see ``TfIdfWeights``) instead of on
    raw word counts.
    """
    keras = _keras()
    layers = keras.layers
    if isinstance(kernel_sizes, (int, str)):
        kernel_sizes = [int(k) for k in str(kernel_sizes).split(",")]
    if pooling not in ("max", "max+mean"):
        raise InputError(f"pooling {pooling!r} is not known; use max or max+mean")
    if wide not in (False, True, "mean", "tfidf"):
        raise InputError(f"wide {wide!r} is not known; use false, true (= mean) or tfidf")
    wide = "mean" if wide is True else wide
    inputs = keras.Input(input_shape, dtype="int32", name="tokens")
    members = int(members)
    towers = [_kim_tower(inputs, num_classes, layers, "" if members == 1 else f"member{m + 1}_", int(vocab_size),
                         int(embedding_dim), int(filters), kernel_sizes, float(dropout), float(embedding_dropout),
                         pooling, bag, wide, int(input_shape[0]), float(wide_scale))
              for m in range(members)]
    name = "text_cnn_multi" + ("_wide" if wide else "") + ("_ensemble" if members > 1 else "")
    outputs = towers[0] if members == 1 else layers.Average(name="probabilities")(towers)
    return keras.Model(inputs, outputs, name=name)


def _kim_tower(inputs, num_classes, layers, prefix, vocab_size, embedding_dim, filters, kernel_sizes, dropout,
               embedding_dropout, pooling, bag, wide, sequence_length, wide_scale):
    """One member of ``text-cnn-multi``: its own embedding, convolutions, optional wide path and softmax."""
    x = layers.Embedding(vocab_size, embedding_dim, name=f"{prefix}embedding")(inputs)
    if embedding_dropout:
        x = layers.SpatialDropout1D(embedding_dropout, name=f"{prefix}embedding_dropout")(x)
    pooled = []
    for k in kernel_sizes:
        branch = layers.Conv1D(filters, int(k), activation="relu", name=f"{prefix}conv{k}")(x)
        pooled.append(layers.GlobalMaxPooling1D(name=f"{prefix}max_over_time{k}")(branch))
        if pooling == "max+mean":
            pooled.append(layers.GlobalAveragePooling1D(name=f"{prefix}mean_over_time{k}")(branch))
    if bag:
        pooled.append(layers.GlobalAveragePooling1D(name=f"{prefix}mean_embedding")(x))
    x = layers.Concatenate(name=f"{prefix}features")(pooled) if len(pooled) > 1 else pooled[0]
    if dropout:
        x = layers.Dropout(dropout, name=f"{prefix}dropout")(x)
    if not wide:
        return layers.Dense(num_classes, activation="softmax", name=f"{prefix}probabilities")(x)
    logits = layers.Dense(num_classes, name=f"{prefix}cnn_logits")(x)
    scores = layers.Embedding(vocab_size, num_classes, name=f"{prefix}wide_scores")(inputs)
    if wide == "tfidf":
        # Binary TF-IDF features with L2 norm, dotted with the per-word scores: logistic regression in the graph.
        # Its features have unit norm, so the scores need large values (logistic regression's weights reach tens):
        # ``wide_scale`` multiplies them, i.e. the path learns that much faster than the CNN beside it.
        from .text_layers import TfIdfWeights  # here: it is a Keras layer, and listing models needs no Keras

        weights = TfIdfWeights(vocab_size, name=f"{prefix}tfidf_weights")(inputs)
        bag_logits = layers.Rescaling(wide_scale, name=f"{prefix}wide_logits")(
            layers.Dot(axes=1, name=f"{prefix}wide_dot")([weights, scores]))
    else:
        # x sequence length: a mean over the text, scaled so the path learns at the CNN's pace.
        bag_logits = layers.Rescaling(float(sequence_length) ** 0.5, name=f"{prefix}wide_logits")(
            layers.GlobalAveragePooling1D(name=f"{prefix}wide_mean")(scores))
    return layers.Softmax(name=f"{prefix}probabilities")(layers.Add(name=f"{prefix}logits")([logits, bag_logits]))
