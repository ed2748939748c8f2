"""Text classifiers users bring (issue 15, item 5): a model on token ids with its vocabulary file, and a model whose
first layer is ``TextVectorization`` taking strings. Both export to every format and ``edgecnn infer --text`` gives
what Keras gives on the same text; settings edgecnn's tokenizer cannot reproduce are refused in one line.

The user's side is built here with Keras alone, as a user would (the seed's Embedding-Conv1D(128,5)-GlobalMaxPool-
Dense64-softmax, trained a few steps on a small CSV): no edgecnn code makes the expected answers.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from edgecnn.errors import EdgecnnError, InputError, ModelError

from .conftest import error_lines, run_cli
from .keras_builders import readme_export, runtime_only_cli

CLASSES = ["business", "sport", "tech"]
#: Tokens per text, as in the README's worked example (--sequence-length 200).
LENGTH = 200
WORDS = {
    "business": "shares market profit bank Economy INVESTORS rally stock trade deal growth",
    "sport": "match goal team coach League PLAYERS win season final cup striker",
    "tech": "software phone chip network Internet USERS data cloud app robot code",
}
FILLER = "the a of and to in on Said: it's (Monday) — “quoted” café 2024 e-mail U.S. naïve İstanbul"
#: Texts to classify with edgecnn infer: punctuation, case, unicode, out-of-vocabulary words, a long one.
PROBES = ["Shares RALLY as the bank's profit grows!", "The striker's goal won the cup final.",
          "New phone chip: faster cloud apps...", "zzz unknown words only", "team " * 60 + "software"]


def _keras():
    from edgecnn.keras_io import import_tensorflow

    import_tensorflow()
    import keras

    return keras


def write_corpus(path: Path, per_class: int = 30, seed: int = 0) -> Path:
    """A CSV (text,label) of short seeded texts, each mostly words of its class."""
    rng = np.random.default_rng(seed)
    filler = FILLER.split()
    rows = []
    for label in CLASSES:
        own = WORDS[label].split()
        for _ in range(per_class):
            words = list(rng.choice(own, 8)) + list(rng.choice(filler, 6))
            rng.shuffle(words)
            rows.append({"text": " ".join(words) + rng.choice([".", "!", "?", ""]), "label": label})
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, ["text", "label"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def read_corpus(path: Path) -> tuple[list[str], np.ndarray]:
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [r["text"] for r in rows], np.asarray([CLASSES.index(r["label"]) for r in rows])


def seed_text_cnn(keras, vocab_size: int, inputs=None, x=None):
    """The seed's text CNN on token ids ``x`` (or a fresh int32 input)."""
    if inputs is None:
        inputs = x = keras.Input((LENGTH,), dtype="int32")
    x = keras.layers.Embedding(vocab_size, 16)(x)
    x = keras.layers.Conv1D(128, 5, activation="relu")(x)
    x = keras.layers.GlobalMaxPooling1D()(x)
    x = keras.layers.Dense(64, activation="relu")(x)
    return keras.Model(inputs, keras.layers.Dense(len(CLASSES), activation="softmax")(x))


@pytest.fixture(scope="module")
def user_models(tmp_path_factory):
    """The user's files: corpus.csv, labels.txt, vocab.txt + ids.keras (model on ids), strings.keras (layer inside)."""
    keras = _keras()
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    root = tmp_path_factory.mktemp("user_text")
    corpus = write_corpus(root / "corpus.csv")
    texts, y = read_corpus(corpus)
    vectorizer = keras.layers.TextVectorization(max_tokens=120, output_sequence_length=LENGTH, name="vectorizer")
    vectorizer.adapt(texts)
    vocabulary = vectorizer.get_vocabulary()
    model = seed_text_cnn(keras, 120)
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(np.asarray(vectorizer(tf.constant(texts))), y, epochs=4, batch_size=16, verbose=0)
    model.save(root / "ids.keras")
    (root / "vocab.txt").write_text("\n".join(vocabulary) + "\n", encoding="utf-8")
    (root / "labels.txt").write_text("\n".join(CLASSES) + "\n")
    strings = keras.Input((1,), dtype="string", name="text")
    full = keras.Model(strings, model(vectorizer(strings)))
    full.save(root / "strings.keras")
    expected = np.asarray(full.predict(tf.constant([[t] for t in PROBES]), verbose=0), np.float64)
    return {"root": root, "corpus": corpus, "vocabulary": vocabulary, "expected": expected}


def check_infer(out: Path, expected: np.ndarray, formats) -> None:
    """``edgecnn infer --text`` per format (a fresh process that cannot import TensorFlow, Keras or ONNX: the runtime
    only) against Keras' scores."""
    args = [a for text in PROBES for a in ("--text", text)]
    for fmt in formats:
        result = runtime_only_cli("infer", "--model", str(out), "--format", fmt, "--json", "--top-k", "3", *args)
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert len(lines) == len(PROBES)
        for line, row in zip(lines, expected):
            scores = {p["label"]: p["score"] for p in json.loads(line)["predictions"]}
            got = np.asarray([scores[c] for c in CLASSES])
            if fmt.endswith("int8"):
                np.testing.assert_allclose(got, row, atol=0.08, err_msg=fmt)
                if np.sort(row)[-1] - np.sort(row)[-2] > 0.16:
                    assert got.argmax() == row.argmax(), fmt
            else:
                np.testing.assert_allclose(got, row, atol=2e-5, err_msg=fmt)
                assert got.argmax() == row.argmax(), fmt


ALL_FORMATS = ("onnx", "onnx-int8", "tflite", "tflite-int8")


def readme_files(user_models, folder: Path, args: list[str], model: str) -> None:
    """The files a README text example names, in ``folder``: the model, vocabulary, labels, calibration."""
    import shutil

    root, option = user_models["root"], dict(zip(args, args[1:]))
    shutil.copy(root / model, folder / args[1])
    shutil.copy(root / "labels.txt", folder / option["--labels"])
    if "--vocabulary" in option:
        shutil.copy(root / "vocab.txt", folder / option["--vocabulary"])
    calibration = folder / option["--calibration"]
    if option["--calibration"].endswith(".csv"):
        shutil.copy(user_models["corpus"], calibration)
        return
    texts, y = read_corpus(user_models["corpus"])
    for i, (text, label) in enumerate(zip(texts, y)):
        (calibration / CLASSES[label]).mkdir(parents=True, exist_ok=True)
        (calibration / CLASSES[label] / f"{i}.txt").write_text(text, encoding="utf-8")


@pytest.mark.slow
def test_a_model_on_token_ids_exports_with_its_vocabulary_file_as_the_readme_shows(user_models, tmp_path):
    """The README's third worked example, run as written: a model on token ids, its vocabulary, a CSV."""
    args = readme_export("reviews_cnn.keras")
    readme_files(user_models, tmp_path, args, "ids.keras")
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = tmp_path / dict(zip(args, args[1:]))["--out"]
    manifest = json.loads((out / "edgecnn.json").read_text())
    assert manifest["task"] == "text-classification" and set(ALL_FORMATS) <= set(manifest["files"])
    assert manifest["text"]["vocabulary"] == user_models["vocabulary"]
    assert manifest["input"]["shape"] == [None, LENGTH] and manifest["input"]["dtype"] == "int32"
    check_infer(out, user_models["expected"], ALL_FORMATS)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["h5", "saved_model"])
def test_a_model_on_token_ids_exports_from_h5_and_a_saved_model_folder(user_models, tmp_path, kind):
    """The other two inputs edgecnn accepts, for text: a legacy .h5 file and a SavedModel folder on token ids. A
    SavedModel taking strings hides its TextVectorization: refused in one line."""
    keras = _keras()
    root = user_models["root"]
    model = keras.saving.load_model(root / "ids.keras")
    path = tmp_path / ("ids.h5" if kind == "h5" else "ids_saved_model")
    if kind == "h5":
        model.save(path)
    else:
        model.export(str(path), verbose=False)
    result = run_cli("export", str(path), "--out", str(tmp_path / "out"), "--vocabulary", str(root / "vocab.txt"),
                     "--labels", str(root / "labels.txt"), "--calibration", str(user_models["corpus"]),
                     "--calibration-size", "40", "--formats", ",".join(ALL_FORMATS))
    assert result.returncode == 0, result.stderr
    manifest = json.loads((tmp_path / "out" / "edgecnn.json").read_text())
    assert manifest["task"] == "text-classification" and set(manifest["files"]) == set(ALL_FORMATS)
    assert manifest["input"]["shape"] == [None, LENGTH] and manifest["outputs"][0]["kind"] == "probabilities"
    check_infer(tmp_path / "out", user_models["expected"], ALL_FORMATS)
    if kind == "saved_model":
        keras.saving.load_model(root / "strings.keras").export(str(tmp_path / "strings_sm"), verbose=False)
        refused = run_cli("export", str(tmp_path / "strings_sm"), "--out", str(tmp_path / "out2"), "--labels",
                          str(root / "labels.txt"), "--calibration", str(user_models["corpus"]))
        assert refused.returncode == 2, refused.stderr
        (line,) = error_lines(refused)
        assert "takes strings" in line and "SavedModel" in line


@pytest.mark.slow
def test_a_string_model_exports_with_its_text_vectorization_cut_off_as_the_readme_shows(user_models, tmp_path):
    """The README's model with its TextVectorization inside, run as written: calibrated on a text folder."""
    args = readme_export("reviews_with_vectorizer.keras")
    readme_files(user_models, tmp_path, args, "strings.keras")
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = tmp_path / dict(zip(args, args[1:]))["--out"]
    manifest = json.loads((out / "edgecnn.json").read_text())
    assert set(ALL_FORMATS) <= set(manifest["files"]) and manifest["dataset"]["name"] == "text-folder"
    assert manifest["text"]["vocabulary"] == user_models["vocabulary"]
    assert manifest["text"]["sequence_length"] == LENGTH and "vectorizer" in manifest["text"]["source"]
    assert manifest["input"] == {"name": "tokens", "shape": [None, LENGTH], "dtype": "int32",
                                 "layout": "NT (batch, token ids)"}
    check_infer(out, user_models["expected"], ALL_FORMATS)
    evaluated = run_cli("eval", str(out), "--json")  # Keras reference: the same cut graph
    assert evaluated.returncode == 0, evaluated.stderr


@pytest.mark.slow
def test_a_text_folder_calibrates_and_a_sequential_string_model_is_cut(user_models, tmp_path):
    keras = _keras()
    import tensorflow as tf

    from edgecnn.export import export_model

    texts, y = read_corpus(user_models["corpus"])
    folder = tmp_path / "texts"
    for i, (text, label) in enumerate(zip(texts, y)):
        (folder / CLASSES[label]).mkdir(parents=True, exist_ok=True)
        (folder / CLASSES[label] / f"{i}.txt").write_text(text, encoding="utf-8")
    vectorizer = keras.layers.TextVectorization(max_tokens=80, standardize="lower", output_sequence_length=24)
    vectorizer.adapt(texts)
    model = keras.Sequential([keras.Input((), dtype="string"), vectorizer, keras.layers.Embedding(80, 8),
                              keras.layers.GlobalAveragePooling1D(), keras.layers.Dense(3, activation="softmax")])
    model.save(tmp_path / "seq.keras")
    manifest = export_model(tmp_path / "seq.keras", tmp_path / "out", formats=["onnx"], calibration=str(folder),
                            calibration_size=20)
    assert manifest["labels"] == CLASSES and manifest["text"]["standardize"] == "lower"
    check_infer(tmp_path / "out", np.asarray(model.predict(tf.constant(PROBES), verbose=0), np.float64), ["onnx"])


@pytest.mark.slow
def test_the_runtime_tokenizer_gives_the_layers_ids_on_a_corpus():
    """Every standardize mode: the layer's own settings -> the runtime tokenizer -> the same ids as the layer."""
    keras = _keras()
    import tensorflow as tf

    from edgecnn.keras_text import layer_settings
    from edgecnn.runtime.text import Tokenizer
    from edgecnn.train.datasets import load_dataset

    texts = load_dataset("bbc-news").x_test + PROBES + [FILLER, "A\xa0B\u2003C  \t\nd\x85e", ""]
    for mode in ("lower_and_strip_punctuation", "lower", "strip_punctuation", None):
        layer = keras.layers.TextVectorization(max_tokens=3000, standardize=mode, output_sequence_length=200)
        layer.adapt(texts)
        section = layer_settings(layer)
        tokenizer = Tokenizer.from_manifest_section({**section, "max_tokens": None})
        np.testing.assert_array_equal(tokenizer.encode(texts), np.asarray(layer(tf.constant(texts))),
                                      err_msg=str(mode))


@pytest.mark.parametrize("settings, refused", [
    ({"ngrams": 2}, "ngrams=2"),
    ({"output_mode": "multi_hot"}, "output_mode='multi_hot'"),
    ({"split": "character"}, "split='character'"),
    ({"split": "custom"}, "split=a custom callable"),
    ({"standardize": "custom"}, "standardize=a custom callable"),
])
def test_settings_the_tokenizer_cannot_reproduce_are_refused_in_one_line(settings, refused):
    keras = _keras()
    import tensorflow as tf

    from edgecnn.keras_text import token_id_model

    custom = {"split": lambda x: tf.strings.split(x, sep="-"), "standardize": lambda x: tf.strings.upper(x)}
    settings = {key: custom[key] if value == "custom" else value for key, value in settings.items()}
    if settings.get("output_mode", "int") == "int":
        settings["output_sequence_length"] = 8
    layer = keras.layers.TextVectorization(max_tokens=20, **settings)
    layer.adapt(["one two three", "four five six"])
    if settings.get("output_mode", "int") == "int":
        inputs = keras.Input((1,), dtype="string")
        model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Embedding(20, 4)(layer(inputs))))
    else:
        model = keras.Sequential([keras.Input((1,), dtype="string"), layer, keras.layers.Dense(2)])
    with pytest.raises(ModelError) as caught:
        token_id_model(model)
    message = str(caught.value)
    assert refused in message and "supports output_mode='int'" in message and "\n" not in message


def test_vocabulary_files_in_every_accepted_shape_give_the_same_vocabulary(tmp_path):
    from edgecnn.export.user_text import read_vocabulary

    full = ["", "[UNK]", "the", "[cls]", "café", "a\x85b"]
    shapes = {"full.txt": "\n".join(full) + "\n", "crlf.txt": "\r\n".join(full), "no_pad.txt": "\n".join(full[1:]),
              "keras.txt": "\n".join(full[2:]) + "\n", "list.json": json.dumps(full),
              "tokens.json": json.dumps(full[2:])}
    for name, text in shapes.items():
        (tmp_path / name).write_text(text, encoding="utf-8", newline="")
        assert read_vocabulary(tmp_path / name) == full, name
    for name, text in {"blank.txt": "\n[UNK]\nthe\n\nsaid\n", "twice.txt": "the\nsaid\nthe\n",
                       "unk.txt": "the\n[UNK]\n", "bad.json": "{\"the\": 2}"}.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
        with pytest.raises(InputError):
            read_vocabulary(tmp_path / name)


@pytest.mark.slow
def test_mismatches_are_one_line_refusals_before_any_conversion(user_models, tmp_path):
    from edgecnn.export import export_model

    root = user_models["root"]
    (tmp_path / "two.txt").write_text("business\nsport\n")
    (tmp_path / "four.json").write_text(json.dumps(CLASSES + ["health"]))
    (tmp_path / "big.txt").write_text("\n".join(f"w{i}" for i in range(200)))
    common = {"calibration": str(user_models["corpus"])}
    cases = [
        (root / "ids.keras", {"labels": str(tmp_path / "two.txt"), "text": {"vocabulary": str(root / "vocab.txt")}},
         "gives 3 class scores but 2 labels"),
        (root / "strings.keras", {"labels": str(tmp_path / "four.json")}, "gives 3 class scores but 4 labels"),
        (root / "ids.keras", {"text": {"vocabulary": str(root / "vocab.txt"), "sequence_length": 64}},
         "--sequence-length 64"),
        (root / "ids.keras", {"text": {"vocabulary": str(tmp_path / "big.txt")}}, "has 120 rows"),
        (root / "ids.keras", {"text": {"sequence_length": LENGTH}}, "needs --vocabulary"),
        (root / "strings.keras", {"text": {"vocabulary": str(root / "vocab.txt")}}, "leave out --vocabulary"),
    ]
    for model, options, refused in cases:
        with pytest.raises(EdgecnnError) as caught:
            export_model(model, tmp_path / "out", **common, **options)
        assert refused in str(caught.value) and "\n" not in str(caught.value)
        assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_a_model_on_token_ids_without_its_vocabulary_is_a_one_line_refusal(user_models, tmp_path):
    """Was 'internal error: not enough values to unpack' (issue 15)."""
    root = user_models["root"]
    result = run_cli("export", str(root / "ids.keras"), "--out", str(tmp_path / "out"), "--labels",
                     str(root / "labels.txt"), "--calibration", str(user_models["corpus"]))
    assert result.returncode == 2, result.stderr
    (line,) = error_lines(result)
    assert line.startswith("error: ") and "--vocabulary" in line and "get_vocabulary()" in line


@pytest.mark.slow
def test_labels_in_the_models_order_are_matched_to_the_csv_classes_by_name(user_models, tmp_path):
    """The CSV's classes come sorted; a model whose outputs are in another order is scored by class name, at
    export and by edgecnn eval alike."""
    keras = _keras()

    from edgecnn.export import export_model

    root = user_models["root"]
    order = [2, 0, 1]
    model = keras.saving.load_model(root / "ids.keras")
    kernel, bias = model.layers[-1].get_weights()
    model.layers[-1].set_weights([kernel[:, order], bias[order]])
    model.save(tmp_path / "permuted.keras")
    (tmp_path / "labels.txt").write_text("\n".join(CLASSES[i] for i in order))
    manifest = export_model(tmp_path / "permuted.keras", tmp_path / "out", formats=["onnx"],
                            labels=str(tmp_path / "labels.txt"), calibration=str(user_models["corpus"]),
                            text={"vocabulary": str(root / "vocab.txt")})
    results = manifest["validation"]["results"]
    assert manifest["labels"] == [CLASSES[i] for i in order]
    assert results["keras"]["accuracy"] >= 0.9 and "warnings" not in manifest["validation"]
    evaluated = run_cli("eval", str(tmp_path / "out"), "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["results"]["onnx"]["accuracy"] == pytest.approx(results["onnx"]["accuracy"])


def test_a_string_model_without_a_readable_text_vectorization_is_refused(tmp_path):
    keras = _keras()

    from edgecnn.export.user_text import user_text_model

    inputs = keras.Input((1,), dtype="string")
    lookup = keras.layers.StringLookup(vocabulary=["a", "b"])(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(keras.layers.Embedding(4, 2)(lookup)))
    with pytest.raises(ModelError, match="takes strings but does not start with a TextVectorization"):
        user_text_model(model, tmp_path / "m.keras", None)
