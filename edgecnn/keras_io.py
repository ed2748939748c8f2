"""The Keras side of the house: import TensorFlow quietly, load a Keras model, run it as the reference.

Export (the model to convert), ``edgecnn eval`` and ``edgecnn bench`` (Keras as a reference row) all need these;
keeping them here, below all three, means none of those wings imports another to reach Keras. Needs the ``train``
extra; nothing in ``runtime/`` imports this module.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

from .errors import InputError, ModelError, require
from .quiet import quiet_stderr

#: Set (unless the user set them) before TensorFlow loads: its C++ logging and glog's, errors only.
QUIET_ENVIRONMENT = {"TF_CPP_MIN_LOG_LEVEL": "3", "GLOG_minloglevel": "2"}


def import_tensorflow():
    """Import TensorFlow quietly (its C++ log spam is not for our users), or name the extra that brings it.

    The environment settles the logging TensorFlow does once running; the oneDNN and absl lines it prints while
    loading ignore it (twice: two libraries), so the import itself runs with stderr captured (``quiet_stderr``).
    edgecnn calls this before any ``import keras`` (Keras imports TensorFlow), so every import is a quiet one.
    """
    for key, value in QUIET_ENVIRONMENT.items():
        os.environ.setdefault(key, value)
    if "tensorflow" not in sys.modules:
        with quiet_stderr():
            require("tensorflow", "train", "Training and export")
            import tensorflow  # noqa: F401
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    return tf


#: What ``edgecnn export`` (and eval/bench as a reference) can load, for the one-line refusal of anything else.
SUPPORTED_MODELS = ("a Keras 3 .keras file, a legacy Keras 2 / tf.keras .h5 file, or a TensorFlow SavedModel "
                    "folder (with saved_model.pb and a serving_default signature)")
KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")


def is_saved_model(path: str | Path) -> bool:
    """A folder holding a TensorFlow SavedModel."""
    return Path(path).is_dir() and (Path(path) / "saved_model.pb").is_file()


def load_keras_model(path: str | Path):
    """Load a ``.keras`` or legacy ``.h5`` file (``safe_mode`` on) or a SavedModel folder as a Keras model.

    Every failure is a one-line error: a Lambda layer (safe mode refuses to run its code), a file Keras cannot
    read, a path of another kind (saying what is supported).
    """
    import_tensorflow()
    import keras

    from .train import text_layers  # noqa: F401 - registers edgecnn's custom layers for deserialization

    path = Path(path)
    if is_saved_model(path):
        return _load_saved_model(path)
    if path.is_dir():
        raise InputError(f"{path} is a folder without saved_model.pb; edgecnn loads {SUPPORTED_MODELS}")
    if not path.is_file():
        raise InputError(f"{path}: no such file; pass the model.keras written by 'edgecnn train' or "
                         f"{SUPPORTED_MODELS}")
    if path.suffix.lower() not in KERAS_SUFFIXES:
        raise InputError(f"{path} is not a model edgecnn can load; it loads {SUPPORTED_MODELS}")
    try:
        with quiet_stderr():
            model = keras.saving.load_model(path, safe_mode=True, compile=False)
    except ValueError as exc:
        text = str(exc)
        if "Lambda" in text or "safe_mode" in text or "lambda" in text:
            raise ModelError(f"{path} contains a Lambda layer, which safe_mode refuses to deserialize (it would run "
                             "arbitrary code); replace it with a registered custom layer") from None
        raise ModelError(f"{path} is not a Keras model file Keras can load ({text.splitlines()[0][:160]})") from None
    except Exception as exc:  # noqa: BLE001 - zip, h5 and JSON errors all mean the same thing to the user
        raise ModelError(f"{path} is not a Keras model file Keras can load ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0][:160] if str(exc) else ''})") from None
    _check_built(model, path)
    return model


def _check_built(model, path: Path) -> None:
    """A model saved before it knew its input (a Sequential never built or called) loads, but has no input shape
    to export: refused here, in one line, rather than failing wherever ``model.inputs`` is first read."""
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        inputs = None
    if not inputs:
        raise ModelError(f"{path} has no input shape (a Sequential model saved before it was built); start it with "
                         "keras.Input((height, width, channels)), or call model.build(...), and save it again")


def _load_saved_model(path: Path):
    """A SavedModel's ``serving_default`` signature as a one-input, one-output Keras model (``TFSMLayer``)."""
    tf = import_tensorflow()
    import keras

    try:
        with quiet_stderr():
            loaded = tf.saved_model.load(str(path))
    except Exception as exc:  # noqa: BLE001 - a damaged SavedModel: TensorFlow raises many kinds
        raise ModelError(f"{path} is not a SavedModel TensorFlow can load ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0][:160] if str(exc) else ''})") from None
    signature = getattr(loaded, "signatures", {}).get("serving_default")
    if signature is None:
        raise ModelError(f"{path} has no serving_default signature; edgecnn loads {SUPPORTED_MODELS}")
    _, inputs = signature.structured_input_signature
    outputs = signature.structured_outputs
    if len(inputs) != 1 or len(outputs) != 1:
        raise ModelError(f"{path}: its serving signature has {len(inputs)} input(s) and {len(outputs)} output(s); "
                         "edgecnn exports models with one image input and one output of class scores")
    (input_name, spec), = inputs.items()
    if spec.shape.rank is None or any(d is None for d in spec.shape[1:]):
        raise ModelError(f"{path}: the serving input {input_name!r} has shape {spec.shape}, not a fixed size; "
                         "re-save it with a fixed input size (e.g. [None, 96, 96, 3])")
    (output_name,) = outputs
    layer = keras.layers.TFSMLayer(str(path), call_endpoint="serving_default")
    image = keras.Input(tuple(spec.shape[1:]), name=input_name, dtype=spec.dtype.name)
    result = layer(image)
    result = result[output_name] if isinstance(result, dict) else result
    return keras.Model(image, result, name=path.name)


def keras_outputs(model, manifest: dict, inputs: np.ndarray, batch_size: int = 256) -> list[np.ndarray]:
    """The Keras model's outputs for ``inputs`` in the manifest's output order (the reference for parity)."""
    from .runtime.tasks import as_probabilities

    raw = model.predict(keras_inputs(model, manifest, inputs), batch_size=batch_size, verbose=0)
    outputs = [np.asarray(r, dtype=np.float32) for r in ordered_outputs(raw, [o["name"] for o in manifest["outputs"]])]
    if manifest["task"] != "object-detection":  # classifiers are compared as probabilities, as the runtime gives
        outputs[0] = as_probabilities(outputs[0], manifest)
    return outputs


def keras_inputs(model, manifest: dict, inputs: np.ndarray) -> np.ndarray:
    """An export's model inputs as its source Keras model takes them: a gray model exported with an RGB input
    (``preprocessing.gray_in_graph``, ``--target mediapipe``) gets the gray the export's graph makes of them.
    Everything else is returned as it is."""
    gray = (manifest.get("preprocessing") or {}).get("gray_in_graph")
    takes = getattr(model, "inputs", None)  # a subclassed model may not know its inputs: it was gray, then
    if gray and inputs.shape[-1] == 3 and (not takes or takes[0].shape[-1] == 1):
        return (inputs @ np.asarray(gray, dtype=inputs.dtype))[..., None]
    return inputs


def ordered_outputs(raw, names: list[str]) -> list:
    """A model's outputs (one tensor, a list, or a dict) as a list in the order of the manifest's output ``names``.

    A dict keyed by those names is read by name (edgecnn's detectors); any other dict, e.g. a user's classifier
    returning ``{"scores": ...}``, in its own order, like a list: its keys are the user's, ours are the manifest's.
    Export's serving function and the Keras reference both call this, so the files and the reference agree.
    """
    if isinstance(raw, dict):
        return [raw[name] for name in names] if set(names) <= set(raw) else list(raw.values())
    return list(raw) if isinstance(raw, (list, tuple)) else [raw]
