"""Per-task export adapters: what the graph's input and outputs are, how to calibrate, what samples to ship.

The export pipeline (``edgecnn.export.export_model``) is the same for every task; an adapter supplies the parts
that differ. Register new ones in ``ADAPTERS``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import InputError, ModelError
from ..evaluate import INPUT_BUILDERS
from ..train.datasets import Splits, sample_name


class ExportAdapter:
    """Base adapter; subclasses set ``task`` and implement the hooks."""

    task = ""
    input_name = "image"

    def __init__(self, model, splits: Splits, run: dict):
        self.model, self.splits, self.run = model, splits, run

    # --- the graph ---------------------------------------------------------------------------------------------
    def input_spec(self) -> dict:
        shape = [None] + [int(d) for d in self.model.inputs[0].shape[1:]]
        return {"name": self.input_name, "shape": shape, "dtype": "float32", "layout": "NHWC"}

    def outputs(self) -> list[dict]:
        raise NotImplementedError

    def serving_fn(self, tf):
        """A ``tf.function`` with a named input signature and a dict of named outputs: what both converters take."""
        from ..keras_io import ordered_outputs

        spec = self.input_spec()
        signature = [tf.TensorSpec(spec["shape"], tf.as_dtype(spec["dtype"]), name=spec["name"])]
        names = [o["name"] for o in self.outputs()]
        model = self.model

        @tf.function(input_signature=signature)
        def serve(inputs):
            return dict(zip(names, ordered_outputs(model(inputs, training=False), names)))

        return serve

    # --- data --------------------------------------------------------------------------------------------------
    def model_inputs(self, examples) -> np.ndarray:
        return INPUT_BUILDERS[self.task](self.manifest_sections(), examples)

    def calibration_inputs(self, size: int, seed: int) -> np.ndarray:
        """Model inputs of ``size`` training examples picked with ``seed`` (the representative dataset)."""
        x = self.splits.x_train
        rng = np.random.default_rng(seed)
        pick = np.sort(rng.choice(len(x), size=min(size, len(x)), replace=False))
        return self.model_inputs([x[i] for i in pick] if isinstance(x, list) else x[pick])

    def manifest_sections(self) -> dict:
        """The task-specific part of the manifest: input, outputs, preprocessing, labels (+ vocabulary, anchors)."""
        return {"task": self.task, "labels": self.splits.labels, "input": self.input_spec(),
                "outputs": self.outputs(), "preprocessing": self.splits.preprocessing}

    def write_samples(self, folder: Path, reference: list[np.ndarray], per_class: int) -> dict:
        raise NotImplementedError

    def failures(self, fmt: str, measured: dict, keras_metric: dict, thresholds: dict) -> list[str]:
        """Why ``fmt`` must be refused: fp32 files by their largest output difference from Keras (the same rule for
        every task), int8 files by the task's own rule (:meth:`int8_failures`).

        The weight-only TFLite files: ``tflite-dynamic`` rounds activations to int8 on the fly, so it errs like an
        int8 file and meets the int8 rule. ``tflite-fp16`` rounds each weight to 11 significant bits (relative error
        up to 4.9e-4), which compounds over layers to 1e-3..1e-2 of the outputs' scale: far above fp32's
        ``max_diff``, below int8's error. It must keep the int8 rule's predictions AND a bound of its own on
        ``max_rel_diff`` (max |Δ| over the largest |output| Keras gives, at least 1, so a detector's raw box
        distances count like probabilities): ``max_diff_fp16``, 5e-2 by default, ~5x the worst float16 rounding
        measured (1.1e-2 on a barely trained detector, 1.1e-3 on digits), while a broken conversion errs by ~1."""
        if fmt.endswith("int8") or fmt in ("tflite-dynamic", "tflite-fp16"):
            failures = self.int8_failures(fmt, measured, keras_metric, thresholds)
            if fmt != "tflite-fp16" or measured["max_rel_diff"] <= thresholds["max_diff_fp16"]:
                return failures
            return failures + [(f"{fmt}: max |Δ| of the outputs vs Keras, relative to their largest value, "
                                f"{measured['max_rel_diff']:.2e} exceeds {thresholds['max_diff_fp16']:.0e}")]
        if measured["max_abs_diff"] > thresholds["max_diff"]:
            return [(f"{fmt}: max |Δ| of the outputs vs Keras {measured['max_abs_diff']:.2e} exceeds "
                     f"{thresholds['max_diff']:.0e}")]
        return []

    def int8_failures(self, fmt: str, measured: dict, keras_metric: dict, thresholds: dict) -> list[str]:
        raise NotImplementedError


class ImageClassificationAdapter(ExportAdapter):
    task = "image-classification"

    def outputs(self) -> list[dict]:
        kind = self.run.get("output_kind") or ("probabilities" if last_activation(self.model) == "softmax"
                                               else "logits")
        width = 1 if kind == "sigmoid" else len(self.splits.labels)
        return [{"name": "probabilities", "kind": kind, "shape": [None, width]}]

    def write_samples(self, folder: Path, reference: list[np.ndarray], per_class: int) -> dict:
        """The first ``per_class`` test images of each class that the source model classifies correctly: the
        user's own files as they were (``folder`` dataset), else PNGs of the dataset's pixels (generated ones)."""
        folder.mkdir(parents=True, exist_ok=True)
        predicted = reference[0].argmax(axis=1)
        originals = self.splits.test_files or [None] * len(self.splits.y_test)
        counts: dict[int, int] = {}
        for i, (pixels, label) in enumerate(zip(self.splits.x_test, self.splits.y_test)):
            label = int(label)
            if counts.get(label, 0) >= per_class or predicted[i] != label:
                continue
            counts[label] = counts.get(label, 0) + 1
            save_sample(folder, sample_name(self.splits.labels[label], counts[label], ""), pixels, originals[i])
        return {"folder": "samples", "count": sum(counts.values()),
                "selection": f"first {per_class} test-split images per class that the source model gets right"
                             + (", the original files" if self.splits.test_files else "")}

    def int8_failures(self, fmt: str, measured: dict, keras_metric: dict, thresholds: dict) -> list[str]:
        if measured["agreement"] < thresholds["min_agreement"]:
            return [(f"{fmt}: top-1 agreement with Keras {measured['agreement']:.2%} is below "
                     f"{thresholds['min_agreement']:.2%}")]
        return []


def last_activation(model) -> str | None:
    """The name of the activation the model ends in (``softmax``, ``sigmoid``, ``linear``...), looking into a
    nested model and past layers that change no values (Dropout, Reshape...); None when it cannot be read (a
    SavedModel's ``TFSMLayer``, a custom layer)."""
    layer = model.layers[-1] if getattr(model, "layers", None) else None
    while layer is not None:
        if getattr(layer, "layers", None):  # a nested Model: its own last layer
            layer = layer.layers[-1]
            continue
        if type(layer).__name__ == "Softmax":
            return "softmax"
        activation = getattr(layer, "activation", None)
        if activation is not None:
            return getattr(activation, "__name__", None)
        if type(layer).__name__ in ("Dropout", "Reshape", "Flatten", "Identity", "ActivityRegularization"):
            index = model.layers.index(layer) if layer in model.layers else 0
            layer = model.layers[index - 1] if index > 0 else None
            continue
        return None
    return None


def image_model_shape(model, model_path) -> tuple[int, int, int]:
    """(height, width, channels) of a one-input, one-output image model, or a one-line refusal saying why not."""
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ModelError(f"{model_path} has {len(model.inputs)} inputs and {len(model.outputs)} outputs; edgecnn "
                         "exports classifiers with one image input and one output of class scores")
    shape = tuple(model.inputs[0].shape)
    if len(shape) != 4 or None in shape[1:] or shape[3] not in (1, 3):
        raise ModelError(f"{model_path} takes input of shape {list(shape)}; edgecnn exports image classifiers "
                         "taking [batch, height, width, 1 or 3] with a fixed height and width (re-build the model "
                         "with e.g. keras.Input((96, 96, 3)))")
    out = tuple(model.outputs[0].shape)
    if len(out) != 2 or out[1] is None:
        raise ModelError(f"{model_path} gives output of shape {list(out)}; edgecnn exports classifiers giving "
                         "[batch, classes]")
    return int(shape[1]), int(shape[2]), int(shape[3])


def classifier_head(model, model_path, splits: Splits, outputs: str | None = None,
                    multi_label: bool = False, probe_inputs: np.ndarray | None = None) -> tuple[str, str]:
    """(manifest ``outputs[0].kind``, why) for a user's classifier, with its labels checked against the width.

    Read from the last layer's activation: softmax -> ``probabilities``; one sigmoid unit -> ``sigmoid`` (binary,
    2 labels, negative first); N sigmoid units -> ``multi-label``; linear -> ``logits``. A model whose activation
    cannot be read (a SavedModel) is probed on held-out inputs: rows of [0, 1] summing to 1 are probabilities.
    ``outputs="logits"`` and ``multi_label`` say it when the model cannot.
    """
    width = int(model.outputs[0].shape[-1])
    activation = last_activation(model)
    how = f"last layer's activation {activation}"
    if activation is None:
        activation, how = _probe_activation(model, splits, width, probe_inputs), "outputs on held-out examples"
    detected = {"softmax": "probabilities", "sigmoid": "sigmoid" if width == 1 else "multi-label"}.get(
        activation, "logits")
    kind, reason = detected, f"{detected}, from the {how}"
    if outputs == "logits":
        if detected != "logits":
            raise InputError(f"--outputs logits: {model_path} ends in {activation}, so its outputs are already "
                             f"{detected}; leave --outputs out")
        kind, reason = "logits", "logits, given with --outputs logits"
    if multi_label:
        if detected != "multi-label" and not (activation == "sigmoid" and width > 1):
            raise InputError(f"--multi-label: {model_path} ends in {width} {activation} unit(s); a multi-label "
                             "head has one sigmoid unit per label (for one sigmoid unit, a binary model, give 2 "
                             "labels and leave --multi-label out)")
        kind, reason = "multi-label", "multi-label, given with --multi-label"
    labels = splits.labels
    if width == 1 and detected == "logits":
        raise ModelError(f"{model_path} ends in one output unit without a sigmoid ({activation}); edgecnn exports "
                         "one unit only as a binary head ending in sigmoid: give that Dense layer "
                         "activation='sigmoid' (or one unit per class with softmax) and save it again")
    if kind == "sigmoid" and len(labels) != 2:
        raise InputError(f"{model_path} ends in one sigmoid unit (binary), which needs exactly 2 labels, negative "
                         f"first, but {len(labels)} were given ({', '.join(labels[:5])})")
    if kind != "sigmoid" and len(labels) != width:
        raise InputError(f"{model_path} gives {width} class scores but {len(labels)} labels were given; pass "
                         f"--labels with {width} names (or calibrate with {width} class folders)")
    return kind, reason


def _probe_activation(model, splits: Splits, width: int, x: np.ndarray | None = None) -> str:
    """``softmax``, ``sigmoid`` or ``linear``, judged from the model's outputs on a few held-out images."""
    if x is None:  # text models pass their token ids
        x = INPUT_BUILDERS["image-classification"]({"preprocessing": splits.preprocessing}, splits.x_test[:16])
    y = np.asarray(model.predict(x, verbose=0), dtype=np.float64).reshape(len(x), -1)
    if y.size and y.min() >= 0 and y.max() <= 1:
        if width > 1 and np.allclose(y.sum(axis=1), 1.0, atol=1e-3):
            return "softmax"
        return "sigmoid"
    return "linear"


def save_sample(folder: Path, stem: str, pixels: np.ndarray, original: str | None) -> str:
    """Ship one sample image as ``stem`` + suffix in ``folder``; returns the file name.

    The user's original file is copied byte for byte when there is one (its size, format and metadata are what a
    user would feed the model: squashing it to the model's input size would show the model an easier image than
    the one it will meet); generated examples, which have no file, are saved as PNG of their pixels.
    """
    import shutil

    from ..runtime.image import IMAGE_SUFFIXES

    suffix = Path(original).suffix.lower() if original else ""
    if original and suffix in IMAGE_SUFFIXES and Path(original).is_file():
        shutil.copyfile(original, folder / f"{stem}{suffix}")
        return f"{stem}{suffix}"
    from PIL import Image

    Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).save(folder / f"{stem}.png", optimize=True)
    return f"{stem}.png"


ADAPTERS: dict[str, type[ExportAdapter]] = {ImageClassificationAdapter.task: ImageClassificationAdapter}


def adapter_for(task: str) -> type[ExportAdapter]:
    from . import detection, text  # noqa: F401  (importing them registers their adapters)

    if task not in ADAPTERS:
        raise ModelError(f"exporting {task} models is not supported yet")
    return ADAPTERS[task]


def read_labels(path: str | Path) -> list[str]:
    """Labels from a file: a JSON list, or one label per line."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"--labels {path}: no such file; give a JSON list or one label per line")
    text = path.read_text(encoding="utf-8")
    try:
        labels = json.loads(text)
    except json.JSONDecodeError:
        labels = [line.strip() for line in text.splitlines() if line.strip()]
    if not isinstance(labels, list) or not labels:
        raise InputError(f"--labels {path}: expected a JSON list or one label per line")
    return [str(label) for label in labels]
