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
        spec = self.input_spec()
        signature = [tf.TensorSpec(spec["shape"], tf.as_dtype(spec["dtype"]), name=spec["name"])]
        names = [o["name"] for o in self.outputs()]
        model = self.model

        @tf.function(input_signature=signature)
        def serve(inputs):
            raw = model(inputs, training=False)
            if isinstance(raw, dict):
                return {name: raw[name] for name in names}
            raw = raw if isinstance(raw, (list, tuple)) else [raw]
            return dict(zip(names, raw))

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
        every task), int8 files by the task's own rule (:meth:`int8_failures`)."""
        if fmt.endswith("int8"):
            return self.int8_failures(fmt, measured, keras_metric, thresholds)
        if measured["max_abs_diff"] > thresholds["max_diff"]:
            return [(f"{fmt}: max |Δ| of the outputs vs Keras {measured['max_abs_diff']:.2e} exceeds "
                     f"{thresholds['max_diff']:.0e}")]
        return []

    def int8_failures(self, fmt: str, measured: dict, keras_metric: dict, thresholds: dict) -> list[str]:
        raise NotImplementedError


class ImageClassificationAdapter(ExportAdapter):
    task = "image-classification"

    def outputs(self) -> list[dict]:
        last = self.model.layers[-1]
        activation = getattr(getattr(last, "activation", None), "__name__", "")
        kind = "probabilities" if activation == "softmax" else "logits"
        return [{"name": "probabilities", "kind": kind, "shape": [None, len(self.splits.labels)]}]

    def write_samples(self, folder: Path, reference: list[np.ndarray], per_class: int) -> dict:
        """The first ``per_class`` test images of each class that the source model classifies correctly."""
        from PIL import Image

        folder.mkdir(parents=True, exist_ok=True)
        predicted = reference[0].argmax(axis=1)
        counts: dict[int, int] = {}
        for i, (pixels, label) in enumerate(zip(self.splits.x_test, self.splits.y_test)):
            label = int(label)
            if counts.get(label, 0) >= per_class or predicted[i] != label:
                continue
            counts[label] = counts.get(label, 0) + 1
            name = sample_name(self.splits.labels[label], counts[label], ".png")
            Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).save(folder / name)
        return {"folder": "samples", "count": sum(counts.values()),
                "selection": f"first {per_class} test-split images per class that the source model gets right"}

    def int8_failures(self, fmt: str, measured: dict, keras_metric: dict, thresholds: dict) -> list[str]:
        if measured["agreement"] < thresholds["min_agreement"]:
            return [(f"{fmt}: top-1 agreement with Keras {measured['agreement']:.2%} is below "
                     f"{thresholds['min_agreement']:.2%}")]
        return []


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
