"""Models users bring, built outside edgecnn: each exports (or is refused in one line) and ``edgecnn infer`` on an
image gives what Keras gives on the same image with the model's own preprocessing.

Every model is built locally (``weights=None``) with seeded random weights so that classes differ; inputs are small.
The Keras side of each comparison preprocesses with ``keras.applications.<family>.preprocess_input`` (or the
model's in-graph layers), never with edgecnn's code, so a wrong preset fails here. Every row exports to all four
formats and is checked with ``edgecnn infer`` in a process that cannot import TensorFlow, Keras or ONNX. Two rows
run the README's worked examples as written; the user text rows are in tests/test_user_text_models.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from .conftest import error_lines, run_cli
from .keras_builders import (
    image_folder,
    image_pixels,
    labels_file,
    randomise,
    readme_export,
    readme_output,
    runtime_only_cli,
)

CLASSES = ["cat", "dog", "fox"]
#: Every row of the matrix exports to all four (not manifest.FORMATS, which grows with other TFLite variants).
ALL_FORMATS = ("onnx", "onnx-int8", "tflite", "tflite-int8")
#: int8 scores differ from Keras' by up to ~0.2 on deep random-weight models: the top label is compared only where
#: Keras' top two scores are further apart than this.
INT8_CLEAR_MARGIN = 0.25


def _keras():
    from edgecnn.keras_io import import_tensorflow

    import_tensorflow()
    import keras

    return keras


def keras_preprocess(family: str | None, pixels: np.ndarray) -> np.ndarray:
    """Keras' preprocessing for a keras.applications family (None: x / 255; "raw": none, in-graph layers)."""
    keras = _keras()
    if family is None:
        return pixels / 255.0
    if family == "raw":
        return pixels
    return np.asarray(getattr(keras.applications, family).preprocess_input(pixels.copy()))


def export_and_infer(tmp_path: Path, model, *, classes=CLASSES, family=None, formats=ALL_FORMATS, suffix=".keras",
                     preprocessing=None, head=None, expect_kind="probabilities", infer_args=(), readme=None):
    """Save ``model``, export it with --labels and --calibration, then check edgecnn infer (a fresh process that
    cannot import TensorFlow, Keras or ONNX: the runtime only) on two images against Keras on the same images, for
    every format: fp32 within 2e-5 and the same top label; int8 the same top label where Keras' margin is clear.

    ``readme`` names the model file of a worked example in the README: the model is saved under that name, its
    labels and image folder where the command says, and the command is run as written (``edgecnn`` in a fresh
    process, in ``tmp_path``). Returns (manifest, progress messages)."""
    from edgecnn.export import export_model

    height, width, channels = (int(d) for d in model.inputs[0].shape[1:4])
    if readme:
        args = readme_export(readme)
        option = dict(zip(args, args[1:]))
        model_path, out = tmp_path / readme, tmp_path / option["--out"]
        folder = image_folder(tmp_path / option["--calibration"], classes, (width, height), channels)
        labels_file(tmp_path / option["--labels"], classes)
    else:
        model_path, out = tmp_path / f"model{suffix}", tmp_path / "out"
        folder = image_folder(tmp_path / "calibration", classes, (width, height), channels)
    if model_path.suffix not in (".keras", ".h5"):
        model.export(str(model_path), verbose=False)
    else:
        model.save(model_path)
    messages: list[str] = []
    if readme:
        result = run_cli(*args, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        manifest = json.loads((out / "edgecnn.json").read_text())
        messages = [line.strip() for line in result.stderr.splitlines()]
        # given relative to where export ran: recorded absolute, so edgecnn eval finds it from anywhere
        assert manifest["dataset"]["options"]["data"] == str(folder.resolve())
    else:
        manifest = export_model(model_path, out, formats=list(formats), calibration=str(folder),
                                labels=str(labels_file(tmp_path / "labels.txt", classes)), calibration_size=16,
                                preprocessing=preprocessing, head=head, progress=messages.append)
    assert manifest["outputs"][0]["kind"] == expect_kind
    assert set(formats) <= set(manifest["files"])  # the README's commands export the default formats
    images = [folder / classes[0] / "0.png", folder / classes[-1] / "1.png"]
    expected = model.predict(keras_preprocess(family, np.concatenate([image_pixels(p, channels) for p in images])),
                             verbose=0)
    expected = np.asarray(expected, np.float64).reshape(len(images), -1)
    if expect_kind == "sigmoid":
        expected = np.concatenate([1 - expected, expected], axis=1)
    elif expect_kind == "logits":
        expected = np.exp(expected - expected.max(axis=1, keepdims=True))
        expected /= expected.sum(axis=1, keepdims=True)
    for fmt in formats:
        result = runtime_only_cli("infer", *map(str, images), "--model", str(out), "--format", fmt,
                                  "--json", *(infer_args or ("--top-k", str(len(classes)))))
        assert result.returncode == 0, (fmt, result.stderr)
        lines = result.stdout.splitlines()
        assert len(lines) == len(images), (fmt, result.stdout)
        for line, row in zip(lines, expected):
            scores = {p["label"]: p["score"] for p in json.loads(line)["predictions"]}
            got = np.asarray([scores[c] for c in classes])
            if not fmt.endswith("int8"):
                np.testing.assert_allclose(got, row, atol=2e-5, err_msg=fmt)
            margin = np.sort(row)[-1] - np.sort(row)[-2]
            if not fmt.endswith("int8") or margin > INT8_CLEAR_MARGIN:
                assert got.argmax() == row.argmax(), (fmt, got, row)
    return manifest, messages


@pytest.mark.slow
def test_a_mobilenet_v2_backbone_gets_the_tf_preset_as_the_readme_shows(tmp_path):
    """The README's first worked example, run as written: a MobileNetV2 backbone under the user's own head."""
    keras = _keras()
    keras.utils.set_random_seed(0)
    backbone = keras.applications.MobileNetV2(input_shape=(96, 96, 3), weights=None, include_top=False,
                                              pooling="avg")
    inputs = keras.Input((96, 96, 3))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(backbone(inputs)))
    randomise(model, seed=1)
    manifest, messages = export_and_infer(tmp_path, model, classes=["daisy", "rose", "tulip"],
                                          family="mobilenet_v2", readme="my_mobilenet.keras")
    prep = manifest["preprocessing"]
    assert prep["preset"] == "tf" and "MobileNetV2" in prep["preset_reason"]
    assert any(m.startswith("Keras on the held-out split") for m in messages)
    info = run_cli("info", str(tmp_path / "exported" / "flowers"))
    assert info.returncode == 0, info.stderr
    for line in readme_output("edgecnn info exported/flowers"):
        assert line in info.stdout.splitlines(), (line, info.stdout)


@pytest.mark.slow
def test_a_mobilenet_v3_small_backbone_nested_in_a_user_model_gets_raw_pixels(tmp_path):
    keras = _keras()
    keras.utils.set_random_seed(0)
    backbone = keras.applications.MobileNetV3Small(input_shape=(32, 32, 3), weights=None, include_top=False,
                                                   pooling="avg")
    inputs = keras.Input((32, 32, 3))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(backbone(inputs)))
    randomise(model, seed=2)
    manifest, _ = export_and_infer(tmp_path, model, family="mobilenet_v3")
    assert manifest["preprocessing"]["preset"] == "raw"
    assert "layer" in manifest["preprocessing"]["preset_reason"]


@pytest.mark.slow
def test_efficientnet_b0_with_its_normalization_layer_exports(tmp_path):
    """Its Normalization constants used to become extra ONNX graph inputs; int8 used to be refused on ties."""
    keras = _keras()
    keras.utils.set_random_seed(0)
    model = randomise(keras.applications.EfficientNetB0(input_shape=(32, 32, 3), weights=None, classes=3), seed=3)
    manifest, _ = export_and_infer(tmp_path, model, family="efficientnet")
    assert manifest["preprocessing"]["preset"] == "raw"


@pytest.mark.slow
def test_resnet50_gets_caffe_bgr_mean_subtraction(tmp_path):
    keras = _keras()
    keras.utils.set_random_seed(0)
    model = randomise(keras.applications.ResNet50(input_shape=(32, 32, 3), weights=None, classes=3), seed=4)
    manifest, _ = export_and_infer(tmp_path, model, family="resnet50")
    prep = manifest["preprocessing"]
    assert prep["preset"] == "caffe" and prep["channels_order"] == "bgr" and isinstance(prep["offset"], list)


def _medical_cnn(keras):
    """After the seed's medical-image CNN: 256x256 grayscale in, one sigmoid unit out (binary)."""
    inputs = keras.Input((256, 256, 1))
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(inputs)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(16, 3, activation="relu")(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(32, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(16, activation="relu")(x)
    x = keras.layers.Dropout(0.3)(x)
    return keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(x), name="medical_cnn")


@pytest.mark.slow
def test_the_seeds_binary_medical_cnn_reports_both_classes_as_the_readme_shows(tmp_path):
    """The README's second worked example, run as written: a legacy .h5 file ending in one sigmoid unit."""
    keras = _keras()
    keras.utils.set_random_seed(0)
    model = randomise(_medical_cnn(keras), seed=5, bias_scale=0.3)
    manifest, _ = export_and_infer(tmp_path, model, classes=["normal", "pneumonia"], expect_kind="sigmoid",
                                   readme="xray_cnn.h5")
    assert manifest["outputs"][0]["shape"] == [None, 1]
    info = run_cli("info", str(tmp_path / "exported" / "xray"))
    for line in readme_output("edgecnn info exported/xray"):
        assert line in info.stdout.splitlines(), (line, info.stdout)


def test_one_sigmoid_unit_with_three_labels_is_refused_in_one_line(tmp_path):
    keras = _keras()
    inputs = keras.Input((8, 8, 1))
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(keras.layers.Flatten()(inputs)))
    model.save(tmp_path / "binary.keras")
    folder = image_folder(tmp_path / "calibration", CLASSES, (8, 8), channels=1)
    result = run_cli("export", str(tmp_path / "binary.keras"), "--out", str(tmp_path / "out"), "--calibration",
                     str(folder))
    assert result.returncode == 2, result.stderr
    (line,) = error_lines(result)
    assert "one sigmoid unit" in line and "exactly 2 labels" in line


@pytest.mark.slow
def test_in_graph_preprocessing_and_augmentation_layers_export_to_every_format(tmp_path):
    """Rescaling, an adapted Normalization, a given-mean/variance Normalization, Resizing, and augmentation layers
    (inactive at inference, absent from the exported graph) ahead of a sigmoid head."""
    keras = _keras()
    keras.utils.set_random_seed(0)
    adapted = keras.layers.Normalization()
    adapted.adapt(np.random.default_rng(0).uniform(0, 1, (16, 24, 24, 3)).astype("float32"))
    inputs = keras.Input((40, 40, 3))
    x = keras.layers.RandomFlip()(inputs)
    x = keras.layers.RandomRotation(0.1)(x)
    x = keras.layers.Resizing(24, 24)(x)
    x = keras.layers.Rescaling(1 / 255)(x)
    x = adapted(x)
    x = keras.layers.Normalization(mean=[0.1, 0.2, 0.3], variance=[1.5, 2.0, 0.5])(x)
    x = keras.layers.Conv2D(4, 3, strides=2, activation="relu")(x)
    x = keras.layers.Flatten()(x)  # not pooled: random images then differ enough for int8 to tell them apart
    model = randomise(keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(x)), seed=6, bias_scale=0.2)
    export_and_infer(tmp_path, model, family="raw", classes=["no", "yes"], expect_kind="sigmoid",
                     preprocessing={"preset": "raw"})
    import onnx

    graph = onnx.load(str(tmp_path / "out" / "model.onnx")).graph
    assert [i.name for i in graph.input] == ["image"]
    assert not [n.op_type for n in graph.node if "Random" in n.op_type]


@pytest.mark.slow
def test_a_legacy_h5_file_exports(tmp_path):
    keras = _keras()
    keras.utils.set_random_seed(0)
    model = randomise(keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Conv2D(4, 3, activation="relu"),
                                        keras.layers.Flatten(), keras.layers.Dense(3, activation="softmax")]), seed=7)
    manifest, _ = export_and_infer(tmp_path, model, suffix=".h5")
    assert manifest["preprocessing"]["preset"] == "unit"


@pytest.mark.slow
def test_a_saved_model_folder_exports_through_its_serving_signature(tmp_path):
    keras = _keras()
    keras.utils.set_random_seed(0)
    model = randomise(keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Conv2D(4, 3, activation="relu"),
                                        keras.layers.Flatten(), keras.layers.Dense(3)]), seed=8)
    manifest, _ = export_and_infer(tmp_path, model, suffix="saved_model", expect_kind="logits")
    assert manifest["source"]["model"].endswith("saved_model")


@pytest.mark.slow
def test_a_multi_label_head_scores_every_label_and_reports_f1_and_map(tmp_path):
    keras = _keras()
    keras.utils.set_random_seed(0)
    labels = ["cloud", "grass", "road", "water"]
    model = randomise(keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Conv2D(4, 3, activation="relu"),
                                        keras.layers.Flatten(), keras.layers.Dense(4, activation="sigmoid")]),
                      seed=9, bias_scale=0.5)
    manifest, _ = export_and_infer(tmp_path, model, classes=labels, head={"multi_label": True},
                                   expect_kind="multi-label",
                                   infer_args=("--threshold", "0"))
    results = manifest["validation"]["results"]
    assert {"f1", "map", "f1:cloud"} <= set(results["onnx"])
    some = run_cli("infer", str(tmp_path / "calibration" / "road" / "0.png"), "--model", str(tmp_path / "out"),
                   "--json", "--threshold", "0.999")
    assert json.loads(some.stdout)["multi_label"] is True


@pytest.mark.parametrize("labels_text", ['["cat", "dog"]', "cat\ndog\n", '["cat", "dog", "fox", "owl"]'])
def test_labels_that_do_not_match_the_output_width_are_refused_in_one_line(tmp_path, labels_text):
    """--labels as a JSON list or one per line: checked against the model's 3 class scores before any conversion."""
    from edgecnn.errors import InputError
    from edgecnn.export import export_model

    keras = _keras()
    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(), keras.layers.Dense(3, "softmax")])
    model.save(tmp_path / "m.keras")
    (tmp_path / "labels.json").write_text(labels_text)
    folder = image_folder(tmp_path / "calibration", CLASSES, (8, 8))
    with pytest.raises(InputError) as caught:
        export_model(tmp_path / "m.keras", tmp_path / "out", labels=str(tmp_path / "labels.json"),
                     calibration=str(folder))
    assert "gives 3 class scores but" in str(caught.value) and "--labels with 3 names" in str(caught.value)
    assert "\n" not in str(caught.value) and not (tmp_path / "out").exists()


def test_a_lambda_model_is_refused_in_one_line(tmp_path):
    keras = _keras()
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Lambda(lambda t: t * 2.0)(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(keras.layers.Flatten()(x)))
    model.save(tmp_path / "lambda.keras")
    folder = image_folder(tmp_path / "calibration", ["a", "b"], (8, 8))
    result = run_cli("export", str(tmp_path / "lambda.keras"), "--out", str(tmp_path / "out"), "--calibration",
                     str(folder))
    assert result.returncode == 2, result.stderr
    (line,) = error_lines(result)
    assert "Lambda" in line and "safe_mode" in line


def test_an_unsupported_model_file_is_refused_saying_what_is_supported(tmp_path):
    (tmp_path / "model.pt").write_bytes(b"not keras")
    result = run_cli("export", str(tmp_path / "model.pt"), "--out", str(tmp_path / "out"), "--calibration", "x")
    assert result.returncode == 2
    (line,) = error_lines(result)
    assert ".keras" in line and ".h5" in line and "SavedModel" in line


# --- heads and validation, without TensorFlow ------------------------------------------------------------------------

def test_an_argmax_tie_within_the_fp32_tolerance_counts_as_agreement():
    from edgecnn.evaluate import top1_agreement

    reference = np.full((4, 3), 1 / 3, np.float32)
    reference[:, 0] += 4.5e-8  # random-weight models tie on every class
    int8 = np.array([[0.2, 0.5, 0.3]] * 4, np.float32)  # picks class 1
    assert top1_agreement(int8, reference) == 1.0
    clear = np.array([[0.9, 0.05, 0.05]] * 4, np.float32)
    assert top1_agreement(int8, clear) == 0.0


def test_one_sigmoid_unit_scores_both_labels_negative_first():
    from edgecnn.runtime.tasks import as_probabilities

    scores = as_probabilities(np.array([[0.8], [0.1]], np.float32), {"outputs": [{"kind": "sigmoid"}]})
    np.testing.assert_allclose(scores, [[0.2, 0.8], [0.9, 0.1]], atol=1e-7)


def test_multi_label_f1_and_map_match_scikit_learn():
    from sklearn.metrics import average_precision_score, f1_score

    from edgecnn.evaluate import multi_label_scores

    rng = np.random.default_rng(0)
    truth = rng.integers(0, 2, (40, 3))
    scores = np.clip(truth * 0.4 + rng.uniform(0, 0.6, truth.shape), 0, 1)
    manifest = {"labels": ["a", "b", "c"], "outputs": [{"kind": "multi-label", "threshold": 0.5}]}
    result = multi_label_scores(manifest, scores, truth)
    expected_f1 = f1_score(truth, scores >= 0.5, average=None)
    assert [result[f"f1:{label}"] for label in "abc"] == pytest.approx(expected_f1)
    assert result["map"] == pytest.approx(average_precision_score(truth, scores, average="macro"))


def test_export_warns_when_the_keras_model_is_at_chance_level():
    from edgecnn.export import _chance_warning

    targets = np.array([0, 0, 1, 1, 2, 2, 2, 2])
    assert "chance level" in _chance_warning({}, {"accuracy": 0.5}, targets)
    assert _chance_warning({}, {"accuracy": 1.0}, targets) is None


def test_exports_made_before_presets_and_head_kinds_still_load(digits_export):
    import edgecnn

    classifier = edgecnn.load(digits_export)
    assert "preset" not in classifier.manifest["preprocessing"]
    assert classifier.classify(np.zeros((28, 28), np.uint8)).label in classifier.labels


def test_a_converter_failure_is_a_one_line_refusal_naming_the_format(tmp_path, monkeypatch):
    from edgecnn.errors import ExportRefusedError
    from edgecnn.export import export_model, onnx

    keras = _keras()
    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(), keras.layers.Dense(2, "softmax")])
    model.save(tmp_path / "m.keras")

    def broken(*args, **kwargs):
        raise RuntimeError("Unsupported ops: MagicOp\nmore detail")

    monkeypatch.setattr(onnx, "export_onnx", broken)
    folder = image_folder(tmp_path / "calibration", ["a", "b"], (8, 8))
    with pytest.raises(ExportRefusedError) as caught:
        export_model(tmp_path / "m.keras", tmp_path / "out", formats=["onnx", "tflite"], calibration=str(folder))
    message = str(caught.value)
    assert "onnx: the converter failed" in message and "--formats tflite" in message and "\n" not in message
    assert not (tmp_path / "out").exists()


def test_a_model_with_two_outputs_is_refused_saying_what_is_supported(tmp_path):
    from edgecnn.errors import ModelError
    from edgecnn.export import export_model

    keras = _keras()
    inputs = keras.Input((8, 8, 3))
    flat = keras.layers.Flatten()(inputs)
    model = keras.Model(inputs, [keras.layers.Dense(2, "softmax")(flat), keras.layers.Dense(4)(flat)])
    model.save(tmp_path / "two.keras")
    folder = image_folder(tmp_path / "calibration", ["a", "b"], (8, 8))
    with pytest.raises(ModelError, match="1 inputs and 2 outputs; edgecnn exports classifiers with one image input"):
        export_model(tmp_path / "two.keras", tmp_path / "out", formats=["onnx"], calibration=str(folder))


def test_preprocessing_options_on_an_edgecnn_trained_model_are_refused_not_ignored(tmp_path):
    from edgecnn.errors import InputError
    from edgecnn.export import export_model

    keras = _keras()
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(10, "softmax")])
    model.save(tmp_path / "model.keras")
    (tmp_path / "run.json").write_text(json.dumps({"task": "image-classification",
                                                   "dataset": {"name": "digits", "options": {"size": 8}}}))
    with pytest.raises(InputError, match="--preprocess would be ignored"):
        export_model(tmp_path / "model.keras", tmp_path / "out", formats=["onnx"], preprocessing={"preset": "tf"})


# --- odd models Keras loads and runs: each exports or is refused in one line, never an internal error ------------

def _odd_model(keras, kind: str):
    """A small model Keras saves, loads and runs, of a shape users bring."""
    if kind == "unbuilt-sequential":  # saved before it ever saw an input: no input shape at all
        return keras.Sequential([keras.layers.Flatten(), keras.layers.Dense(2, activation="softmax")])
    if kind == "conv1d":
        inputs = keras.Input((8, 24))
        x = keras.layers.GlobalAveragePooling1D()(keras.layers.Conv1D(4, 3)(inputs))
        return keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x))
    if kind == "uint8-input":  # the model scales its 0-255 pixels itself: edgecnn must feed them as they are
        inputs = keras.Input((8, 8, 3), dtype="uint8")
        flat = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(inputs))
        return keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(flat))
    inputs = keras.Input((8, 8, 3))
    flat = keras.layers.Flatten()(inputs)
    if kind == "one-linear-unit":
        return keras.Model(inputs, keras.layers.Dense(1)(flat))
    head = keras.layers.Dense(2, activation="softmax")(flat)
    if kind == "dict-output":
        return keras.Model(inputs, {"scores": head})
    return keras.Model(inputs, head)


@pytest.mark.slow
@pytest.mark.parametrize("kind, refusal", [
    ("dict-output", None),
    ("uint8-input", None),
    ("unbuilt-sequential", "has no input shape"),
    ("conv1d", "takes input of shape [None, 8, 24]"),
    ("one-linear-unit", "one output unit without a sigmoid"),
])
def test_an_odd_model_keras_runs_exports_or_is_refused_in_one_line(tmp_path, kind, refusal):
    from edgecnn.errors import EdgecnnError
    from edgecnn.export import export_model

    keras = _keras()
    keras.utils.set_random_seed(0)
    model = _odd_model(keras, kind)
    model.save(tmp_path / "odd.keras")
    folder = image_folder(tmp_path / "calibration", ["a", "b"], (8, 8))
    try:
        manifest = export_model(tmp_path / "odd.keras", tmp_path / "out", formats=["onnx", "tflite"],
                                calibration=str(folder), calibration_size=4)
    except EdgecnnError as exc:
        assert refusal is not None, f"{kind} refused: {exc}"
        assert refusal in str(exc) and "\n" not in str(exc), str(exc)
        return
    assert refusal is None, f"{kind} exported but should be refused ({refusal})"
    assert set(manifest["files"]) == {"onnx", "tflite"}
    pixels = image_pixels(folder / "a" / "0.png", 3)
    expected = model.predict(pixels.astype("uint8") if kind == "uint8-input" else pixels / 255, verbose=0)
    expected = np.asarray(expected["scores"] if kind == "dict-output" else expected)[0]
    result = runtime_only_cli("infer", str(folder / "a" / "0.png"), "--model", str(tmp_path / "out"), "--json")
    assert result.returncode == 0, result.stderr
    scores = {p["label"]: p["score"] for p in json.loads(result.stdout)["predictions"]}
    np.testing.assert_allclose([scores["a"], scores["b"]], expected, atol=2e-5)
