"""Text classifiers users bring: the tokenizer's ``text`` section made from a vocabulary file or the model's own
``TextVectorization`` layer, instead of the ``run.json`` that ``edgecnn train`` writes.

Two ways in:

- a model on int32 token ids ``[batch, L]`` and ``--vocabulary FILE`` (``get_vocabulary()`` order, see
  :func:`read_vocabulary`), ``--standardize`` as the user's TextVectorization had it, ``--sequence-length`` checked
  against ``L``;
- a model whose first layer is ``TextVectorization`` (taking strings): vocabulary and settings are read from the
  layer and the string part is cut off (:mod:`edgecnn.keras_text`). Before anything is converted, the runtime
  tokenizer built from the section must give the layer's own ids on every calibration text, else the export is
  refused: the section is only as good as that equality.

``--calibration`` is a text dataset: a registered name, a CSV with ``text`` and ``label`` columns (``text-csv``) or
a folder with one sub-folder of ``.txt`` files per class (``text-folder``). Labels are checked against the model's
output width by the same :func:`~edgecnn.export.tasks.classifier_head` image models use.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import ExportRefusedError, InputError, ModelError
from ..runtime.text import OOV_ID, OOV_TOKEN, PAD_ID, Tokenizer

#: ``--standardize`` choices, TextVectorization's names; ``none`` is ``standardize=None``.
STANDARDIZE_CHOICES = ("lower_and_strip_punctuation", "lower", "strip_punctuation", "none")
#: At most this many calibration texts are tokenized by the layer to prove the runtime tokenizer equal to it.
CHECKED_TEXTS = 2000


def read_vocabulary(path: str | Path) -> list[str]:
    """The vocabulary in ``TextVectorization.get_vocabulary()`` order: padding ``""``, ``[UNK]``, then the tokens.

    A JSON list of strings, or UTF-8 text with one token per line (lines end at ``\\n`` only: a token may hold
    any character but ASCII whitespace). The padding token is the empty FIRST line, as
    ``"\\n".join(layer.get_vocabulary())`` writes it; a file that starts at ``[UNK]`` (the empty line lost), or
    holds only the tokens (Keras' own vocabulary-file format, ``TextVectorization(vocabulary=FILE)``) gets the
    missing special tokens put back in front. Any other empty line, a ``[UNK]`` elsewhere or a repeated token is
    refused: the ids would shift silently.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"--vocabulary {path}: no such file; give one token per line in get_vocabulary() order "
                         "or a JSON list")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"--vocabulary {path} is not UTF-8 text (byte {exc.start}); write it with "
                         "encoding='utf-8'") from None
    tokens = _json_list(text, path)
    if tokens is None:
        tokens = [line.removesuffix("\r") for line in text.split("\n")]
        if tokens and tokens[-1] == "" and len(tokens) > 1:
            tokens.pop()  # the final newline
    if tokens[:2] == ["", OOV_TOKEN]:
        tokens = tokens[2:]
    elif tokens[:1] == [OOV_TOKEN]:
        tokens = tokens[1:]
    for number, token in enumerate(tokens, start=1):
        if token in ("", OOV_TOKEN) or any(c in token for c in " \t\n\v\f\r"):
            what = "an empty token" if token == "" else repr(token)
            raise InputError(f"--vocabulary {path} has {what} after its start; only the first line may be empty "
                             f"(padding) and only the first token after it may be {OOV_TOKEN}, and no token may "
                             "hold whitespace")
    if len(set(tokens)) != len(tokens):
        seen: set[str] = set()
        repeated = next(t for t in tokens if t in seen or seen.add(t))
        raise InputError(f"--vocabulary {path} lists {repeated!r} twice; every token must appear once")
    if not tokens:
        raise InputError(f"--vocabulary {path} holds no tokens")
    return ["", OOV_TOKEN, *tokens]


def _json_list(text: str, path: Path) -> list[str] | None:
    if not (path.suffix.lower() == ".json" or text.lstrip().startswith("[")):
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        if path.suffix.lower() == ".json":
            raise InputError(f"--vocabulary {path} is not valid JSON; give a JSON list of strings") from None
        return None  # a text file whose first token starts with "[" (e.g. [UNK])
    if not isinstance(data, list) or not all(isinstance(t, str) for t in data):
        raise InputError(f"--vocabulary {path}: expected a JSON list of strings")
    return data


def takes_token_ids(model) -> bool:
    """A model on [batch, L] integer ids, or whose first layer is an Embedding: a text model, not an image one."""
    if len(getattr(model, "inputs", []) or []) != 1:
        return False
    spec = model.inputs[0]
    first = next((layer for layer in model.layers if type(layer).__name__ != "InputLayer"), None)
    return len(spec.shape) == 2 and ("int" in str(spec.dtype) or type(first).__name__ == "Embedding")


def user_text_model(model, model_path: Path, text: dict | None):
    """(the model to export, the text options or None): a model starting at TextVectorization is cut there.

    ``text`` holds the CLI's ``vocabulary``, ``sequence_length`` and ``standardize`` (any may be None).
    """
    from ..keras_text import text_vectorization, token_id_model

    text = {k: v for k, v in (text or {}).items() if v is not None}
    if text_vectorization(model) is None:
        if any("string" in str(spec.dtype) for spec in getattr(model, "inputs", None) or []):
            raise ModelError(f"{model_path} takes strings but does not start with a TextVectorization layer edgecnn "
                             "can read (a SavedModel hides it); export the .keras model whose first layer is "
                             "TextVectorization, or the model on token ids with --vocabulary FILE")
        if text and "vocabulary" not in text:
            raise InputError(f"--{next(iter(text)).replace('_', '-')} is for text models on token ids and needs "
                             "--vocabulary FILE, the TextVectorization vocabulary the model was trained with")
        return model, (text or None)
    given = [f"--{k.replace('_', '-')}" for k in ("vocabulary", "standardize") if k in text]
    if given:
        raise InputError(f"{model_path} starts with its own TextVectorization layer, whose vocabulary and settings "
                         f"edgecnn reads; leave out {' and '.join(given)}")
    cut, settings = token_id_model(model, text.get("sequence_length"))
    if text.get("sequence_length") and text["sequence_length"] != settings["sequence_length"]:
        raise InputError(f"--sequence-length {text['sequence_length']}: the TextVectorization layer of {model_path} "
                         f"pads to {settings['sequence_length']} tokens; leave --sequence-length out")
    return cut, settings


def text_section(model, model_path: Path, text: dict) -> tuple[dict, object]:
    """(the manifest's ``text`` section, the TextVectorization layer or None), checked against the model."""
    layer = text.get("layer")
    if layer is not None:
        section = {k: v for k, v in text.items() if k != "layer"}
        section["source"] = f"TextVectorization layer {layer.name!r} of {model_path.name}"
    else:
        section = {"vocabulary": read_vocabulary(text["vocabulary"]),
                   "sequence_length": _model_length(model, model_path, text.get("sequence_length")),
                   "standardize": _standardize(text.get("standardize")), "split": "whitespace",
                   "source": f"--vocabulary {Path(text['vocabulary']).name}"}
    section.update(pad_id=PAD_ID, oov_id=OOV_ID)
    _check_embedding(model, model_path, len(section["vocabulary"]))
    return section, layer


def _standardize(value: str | None) -> str | None:
    value = value or "lower_and_strip_punctuation"
    if value not in STANDARDIZE_CHOICES:
        raise InputError(f"--standardize {value!r}: choose one of {', '.join(STANDARDIZE_CHOICES)}")
    return None if value == "none" else value


def _model_length(model, model_path: Path, given: int | None) -> int:
    shape = tuple(model.inputs[0].shape)
    if len(model.inputs) != 1 or len(shape) != 2:
        raise ModelError(f"{model_path} takes input of shape {list(shape)}; a text model given with --vocabulary "
                         "takes token ids [batch, sequence_length] (int32)")
    length = shape[1]
    if given is not None and length is not None and int(given) != int(length):
        raise InputError(f"--sequence-length {given}: {model_path} takes {length} token ids; pass "
                         f"--sequence-length {length} (or leave it out)")
    if length is None and not given:
        raise InputError(f"{model_path} takes token ids of any length; give the length its TextVectorization "
                         "padded to with --sequence-length N")
    return int(given or length)


def _check_embedding(model, model_path: Path, size: int) -> None:
    """A vocabulary larger than the first Embedding's table would index past it: refused."""
    embedding = next((layer for layer in model.layers if type(layer).__name__ == "Embedding"), None)
    if embedding is not None and int(embedding.input_dim) < size:
        raise InputError(f"the vocabulary has {size} tokens but the Embedding of {model_path} has "
                         f"{embedding.input_dim} rows; give the vocabulary the model was trained with")


def text_run_and_splits(model, model_path: Path, labels: str | None, calibration: str, seed: int,
                        text: dict | None, head: dict | None):
    """The run (``text`` section, head kind) and the calibration splits of a user's text model."""
    from ..train.datasets import DATASETS, load_dataset
    from .tasks import classifier_head, read_labels

    if not text:
        raise InputError(f"{model_path} takes token ids [batch, {model.inputs[0].shape[1]}]: give the vocabulary it "
                         "was trained with, --vocabulary FILE (one token per line in "
                         "TextVectorization.get_vocabulary() order), or export the model with its "
                         "TextVectorization layer inside")
    section, layer = text_section(model, model_path, text)
    data = str(Path(calibration).resolve())  # absolute: `edgecnn eval` rebuilds the split from any folder
    if calibration in DATASETS:
        splits = load_dataset(calibration, seed=seed)
    elif Path(calibration).is_file():
        splits = load_dataset("text-csv", seed=seed, data=data)
    elif Path(calibration).is_dir():
        splits = load_dataset("text-folder", seed=seed, data=data)
    else:
        raise InputError(f"--calibration {calibration}: no such file, folder or dataset; give a CSV with text and "
                         "label columns or a folder with one sub-folder of .txt files per class")
    if splits.task != "text-classification":
        raise InputError(f"--calibration {calibration} is a {splits.task} dataset; {model_path} is a text "
                         "classifier: give a CSV (text,label) or a folder of .txt files per class")
    data_labels = list(splits.labels)
    if labels:
        splits.labels = read_labels(labels)
    splits.preprocessing = {"type": "text", "standardize": section["standardize"], "split": section["split"]}
    tokenizer = Tokenizer.from_manifest_section(section, where=str(model_path))
    if layer is not None:
        check_tokenizer(layer, tokenizer, [*splits.x_test, *splits.x_val, *splits.x_train][:CHECKED_TEXTS])
    probe = tokenizer.encode(splits.x_test[:16])
    kind, reason = classifier_head(model, model_path, splits, probe_inputs=probe, **(head or {}))
    if labels:
        _relabel(splits, data_labels, labels)
    run = {"task": "text-classification", "model": model.name, "output_kind": kind, "output_reason": reason,
           "text": section}
    return run, splits


def _relabel(splits, old: list[str], path: str) -> None:
    """``splits.labels`` (``--labels``) are in the model's output order; the data's class names ``old`` are mapped
    to them by name when they are all among them (a CSV's classes come sorted), else taken in order."""
    labels = splits.labels
    if set(old) <= set(labels) and old != labels:
        index = np.asarray([labels.index(name) for name in old], dtype=np.int64)
        for split in ("y_train", "y_val", "y_test"):
            setattr(splits, split, index[getattr(splits, split)])
    elif len(old) > len(labels):
        raise InputError(f"--labels {path} names {len(labels)} classes but the calibration data has {len(old)} "
                         f"({', '.join(old[:5])}), not all among them; give the model's labels, with the data's "
                         "class names")


def check_tokenizer(layer, tokenizer: Tokenizer, texts: list[str]) -> None:
    """Refuse the export unless the runtime tokenizer gives the layer's own ids on every one of ``texts``."""
    from ..keras_io import import_tensorflow

    tf = import_tensorflow()
    for start in range(0, len(texts), 256):
        batch = texts[start:start + 256]
        expected = np.asarray(layer(tf.constant(batch, dtype=tf.string)))
        got = tokenizer.encode(batch)
        if expected.shape[1] < got.shape[1]:  # no output_sequence_length: the layer pads to the longest text only
            expected = np.pad(expected, ((0, 0), (0, got.shape[1] - expected.shape[1])))
        expected = expected[:, :got.shape[1]]
        wrong = np.flatnonzero((expected != got).any(axis=1))
        if wrong.size:
            text = batch[int(wrong[0])]
            raise ExportRefusedError(f"edgecnn's tokenizer gives other token ids than the TextVectorization layer "
                                     f"{layer.name!r} on the calibration text {text[:60]!r}; please report it "
                                     "(the export would classify such texts differently from Keras)")
