"""The Keras side of the house: import TensorFlow quietly, load a Keras model, run it as the reference.

Export (the model to convert), ``edgecnn eval`` and ``edgecnn bench`` (Keras as a reference row) all need these;
keeping them here, below all three, means none of those wings imports another to reach Keras. Needs the ``train``
extra; nothing in ``runtime/`` imports this module.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .errors import InputError, ModelError, require


def import_tensorflow():
    """Import TensorFlow quietly (its C++ log spam is not for our users), or name the extra that brings it."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    require("tensorflow", "train", "Training and export")
    import tensorflow as tf

    return tf


def load_keras_model(path: str | Path):
    """Load a ``.keras`` file with ``safe_mode`` on; a file that is not a Keras model is a one-line error."""
    import_tensorflow()
    import keras

    from .train import text_layers  # noqa: F401 - registers edgecnn's custom layers for deserialization

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file; pass the model.keras written by 'edgecnn train'")
    try:
        return keras.saving.load_model(path, safe_mode=True, compile=False)
    except ValueError as exc:
        text = str(exc)
        if "Lambda" in text or "safe_mode" in text:
            raise ModelError(f"{path} contains a Lambda layer, which safe_mode refuses to deserialize (it would run "
                             "arbitrary code); replace it with a registered custom layer") from None
        raise ModelError(f"{path} is not a Keras model file Keras can load ({text.splitlines()[0][:160]})") from None
    except Exception as exc:  # noqa: BLE001 - zip, h5 and JSON errors all mean the same thing to the user
        raise ModelError(f"{path} is not a Keras model file Keras can load ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0][:160] if str(exc) else ''})") from None


def keras_outputs(model, manifest: dict, inputs: np.ndarray, batch_size: int = 256) -> list[np.ndarray]:
    """The Keras model's outputs for ``inputs`` in the manifest's output order (the reference for parity)."""
    from .runtime.tasks import as_probabilities

    raw = model.predict(inputs, batch_size=batch_size, verbose=0)
    names = [o["name"] for o in manifest["outputs"]]
    if isinstance(raw, dict):
        outputs = [np.asarray(raw[name], dtype=np.float32) for name in names]
    elif isinstance(raw, (list, tuple)):
        outputs = [np.asarray(r, dtype=np.float32) for r in raw]
    else:
        outputs = [np.asarray(raw, dtype=np.float32)]
    if manifest["task"] != "object-detection":  # classifiers are compared as probabilities, as the runtime gives
        outputs[0] = as_probabilities(outputs[0], manifest)
    return outputs
