"""A user's Keras text model whose first layer is ``TextVectorization``: its settings read, the string part cut off.

edgecnn's exported graphs start at int32 token ids (the tokenizer stays outside, reproduced by
``runtime/text.py``), so a model that takes strings is exported as the rest of itself: a new Keras model on an int32
``tokens`` input holding every layer after the ``TextVectorization``, with the very same weights. The layer's
vocabulary and settings become the manifest's ``text`` section. Settings the runtime tokenizer cannot reproduce
(n-grams, an output mode other than ``int``, a custom standardize callable, a split other than whitespace) are
refused in one line. Export and ``edgecnn eval`` (the Keras reference of such an export) both call
:func:`token_id_model`, so both run the same graph. Needs the ``train`` extra, like ``keras_io``.
"""

from __future__ import annotations

from .errors import ModelError

#: The TextVectorization settings edgecnn reproduces, for the refusal of anything else.
SUPPORTED_SETTINGS = ("output_mode='int', ngrams=None, split='whitespace', standardize one of "
                      "'lower_and_strip_punctuation', 'lower', 'strip_punctuation' or None, encoding utf-8")
_STANDARDIZE = ("lower_and_strip_punctuation", "lower", "strip_punctuation", None)


def text_vectorization(model):
    """The ``TextVectorization`` layer the model's input feeds, or None; one fed by anything else is refused."""
    found = [layer for layer in getattr(model, "layers", []) if type(layer).__name__ == "TextVectorization"]
    if not found:
        return None
    first = next(layer for layer in model.layers if type(layer).__name__ != "InputLayer")
    if len(found) > 1 or found[0] is not first:
        raise ModelError(f"model {model.name!r} holds a TextVectorization layer that is not its first layer (or "
                         "several); edgecnn exports text models whose first layer is the one TextVectorization, "
                         "or models on token ids given with --vocabulary")
    return first


def layer_settings(layer) -> dict:
    """The layer's vocabulary and settings as the manifest's ``text`` fields, or a one-line refusal.

    ``sequence_length`` is None when the layer does not pad (``output_sequence_length=None``).
    """
    config = layer.get_config()
    problems = []
    if config.get("output_mode", "int") != "int":
        problems.append(f"output_mode={config['output_mode']!r}")
    if config.get("ngrams") is not None:
        problems.append(f"ngrams={config['ngrams']!r}")
    if config.get("split", "whitespace") != "whitespace":
        problems.append(f"split={_name(config['split'])}")
    if config.get("standardize") not in _STANDARDIZE:  # a callable (or its serialized dict) is never among them
        problems.append(f"standardize={_name(config['standardize'])}")
    if str(config.get("encoding", "utf-8")).lower().replace("_", "-") not in ("utf-8", "utf8"):
        problems.append(f"encoding={config['encoding']!r}")
    if config.get("ragged"):
        problems.append("ragged=True")
    if problems:
        raise ModelError(f"the TextVectorization layer {layer.name!r} has {', '.join(problems)}, which edgecnn's "
                         f"tokenizer cannot reproduce; it supports {SUPPORTED_SETTINGS}")
    vocabulary = [_token(token) for token in layer.get_vocabulary()]
    length = config.get("output_sequence_length")
    return {"vocabulary": vocabulary, "sequence_length": int(length) if length else None,
            "standardize": config.get("standardize"), "split": "whitespace",
            "max_tokens": config.get("max_tokens")}


def cut_text_vectorization(model, layer, sequence_length: int):
    """A new Keras model on int32 ``tokens`` [batch, sequence_length]: every layer after ``layer``, same weights.

    A Sequential is rebuilt layer by layer; a functional model becomes the sub-graph from the layer's output to the
    model's outputs (refused when something else reads the string input too).
    """
    import keras

    tokens = keras.Input((sequence_length,), dtype="int32", name="tokens")
    try:
        if isinstance(model, keras.Sequential):
            x = tokens
            for later in model.layers[model.layers.index(layer) + 1:]:
                x = later(x)
            return keras.Model(tokens, x, name=model.name)
        rest = keras.Model(layer.output, model.outputs, name=f"{model.name}_after_tokens")
        outputs = rest(tokens)
    except Exception as exc:  # noqa: BLE001 - Keras raises ValueError, TypeError, KeyError for a graph it cannot cut
        raise ModelError(f"model {model.name!r} cannot be cut after its TextVectorization layer ({type(exc).__name__}:"
                         f" {str(exc).splitlines()[0][:120] if str(exc) else ''}); edgecnn exports text models "
                         "whose only use of the string input is that layer") from None
    return keras.Model(tokens, outputs, name=model.name)


def token_id_model(model, sequence_length: int | None = None):
    """(model on token ids, the layer's settings or None): ``model`` itself unless it starts at TextVectorization."""
    layer = text_vectorization(model)
    if layer is None:
        return model, None
    settings = layer_settings(layer)
    length = settings["sequence_length"] or sequence_length
    if not length:
        raise ModelError(f"the TextVectorization layer {layer.name!r} has no output_sequence_length, so the "
                         "model takes texts of any length; give the length to export with --sequence-length N")
    return cut_text_vectorization(model, layer, int(length)), {**settings, "sequence_length": int(length),
                                                               "layer": layer}


def _token(token) -> str:
    return token.decode("utf-8") if isinstance(token, bytes) else str(token)


def _name(value) -> str:
    """A setting as the refusal shows it: a string quoted, a callable by its name."""
    if isinstance(value, str) or value is None:
        return repr(value)
    if isinstance(value, dict):  # a serialized callable
        return f"a custom callable ({value.get('config') or value.get('class_name')})"
    return f"a custom callable ({getattr(value, '__name__', type(value).__name__)})"
