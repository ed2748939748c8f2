"""The text-classification export adapter: an int32 ``tokens`` input, calibration with token ids, .txt samples.

The graph starts at token ids (the tokenizer stays outside it, reproduced by ``runtime/text.py``), so the int8
TFLite file keeps its int32 input - ids are indices, not values to quantize - and only the embedding table and what
follows become int8. Model inputs for validation and calibration are made by the runtime tokenizer from the
manifest's ``text`` section, i.e. by exactly the code users run. That section is ``run.json``'s for a model
``edgecnn train`` made, and made by ``user_text.py`` (from ``--vocabulary`` or the model's own TextVectorization
layer) for any other.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ModelError
from ..runtime.text import Tokenizer
from ..train.datasets import sample_name
from .tasks import ADAPTERS, ImageClassificationAdapter


class TextClassificationAdapter(ImageClassificationAdapter):
    """Outputs and failure rules are those of image classification (softmax ``probabilities``)."""

    task = "text-classification"
    input_name = "tokens"

    def __init__(self, model, splits, run: dict):
        super().__init__(model, splits, run)
        if not isinstance(run.get("text"), dict):
            raise ModelError("this text model has no 'text' section (vocabulary, sequence length) in its run.json; "
                             "train it with 'edgecnn train' so the tokenizer can be exported with it")
        self.tokenizer = Tokenizer.from_manifest_section(run["text"])
        length = model.inputs[0].shape[-1]  # None: a user's model on ids of any length (export/user_text.py)
        if length is not None and int(length) != self.tokenizer.sequence_length:
            raise ModelError(f"the model takes {length} tokens but run.json says sequence_length "
                             f"{self.tokenizer.sequence_length}; export the model.keras of that run")

    def input_spec(self) -> dict:
        return {"name": self.input_name, "shape": [None, self.tokenizer.sequence_length], "dtype": "int32",
                "layout": "NT (batch, token ids)"}

    def outputs(self) -> list[dict]:
        """Softmax probabilities, also from a Softmax layer (wide path) or an average of members' softmaxes."""
        spec = super().outputs()
        last = self.model.layers[-1]
        if type(last).__name__ == "Softmax":
            spec[0]["kind"] = "probabilities"
        if type(last).__name__ == "Average" and all(
                getattr(getattr(layer, "activation", None), "__name__", "") == "softmax" for layer in _producers(last)):
            spec[0]["kind"] = "probabilities"
        return spec

    def model_inputs(self, examples) -> np.ndarray:
        return self.tokenizer.encode(list(examples))

    def manifest_sections(self) -> dict:
        sections = super().manifest_sections()
        sections["text"] = self.run["text"]
        return sections

    def write_samples(self, folder: Path, reference: list[np.ndarray], per_class: int) -> dict:
        """The first ``per_class`` test texts of each class that the source model classifies correctly."""
        folder.mkdir(parents=True, exist_ok=True)
        predicted = reference[0].argmax(axis=1)
        counts: dict[int, int] = {}
        for i, (text, label) in enumerate(zip(self.splits.x_test, self.splits.y_test)):
            label = int(label)
            if counts.get(label, 0) >= per_class or predicted[i] != label:
                continue
            counts[label] = counts.get(label, 0) + 1
            name = sample_name(self.splits.labels[label], counts[label], ".txt")
            (folder / name).write_text(text, encoding="utf-8")
        return {"folder": "samples", "count": sum(counts.values()),
                "selection": f"first {per_class} test-split texts per class that the source model gets right"}


def _producers(layer) -> list:
    """The layers whose outputs feed ``layer`` in a functional model."""
    return [tensor._keras_history.operation for tensor in layer.input]


ADAPTERS[TextClassificationAdapter.task] = TextClassificationAdapter
