"""Keras -> TFLite fp32 and full-integer int8 (TFLiteConverter with a representative dataset).

The int8 file has int8 internals and, for float inputs, int8 input and output tensors too: the runtime quantizes
inputs and dequantizes outputs with the scale and zero point stored in the file. Integer inputs (token ids) stay
int32.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from ..quiet import quiet_stderr


def export_tflite(serving_fn, model, path: Path, calibration: np.ndarray | None = None, int8: bool = False,
                  int8_io: bool = True) -> Path:
    """Convert a ``tf.function`` with an input signature to a ``.tflite`` file.

    Args:
        serving_fn: a ``tf.function`` taking one named tensor and returning a dict of named outputs (these names
            become the file's signature output names, which the runtime matches on).
        model: the Keras model the function calls (its variables must be tracked to be saved).
        path: the file to write.
        calibration: model inputs for the representative dataset (required when ``int8``).
        int8: full-integer quantization (TFLITE_BUILTINS_INT8 only: the file fails to convert rather than silently
            keeping float ops).
        int8_io: make float inputs and outputs int8 as well (``inference_input_type``/``inference_output_type``).
    """
    from ..keras_io import import_tensorflow

    tf = import_tensorflow()
    with tempfile.TemporaryDirectory() as scratch:
        # Through a SavedModel written by Keras' ExportArchive (Keras 3's own TFLite path), because only a
        # SavedModel gives the file a signature whose input and output names are ours (from_concrete_functions
        # writes none), and the runtime matches outputs by those names.
        import keras

        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint("serving_default", serving_fn)
        # The converter's C++ prints ("fully_quantize: 0, inference_type: 6, ...") are not for our users.
        with quiet_stderr():
            archive.write_out(scratch, verbose=False)
            converter = tf.lite.TFLiteConverter.from_saved_model(scratch)
            _configure(tf, converter, calibration, int8, int8_io)
            path.write_bytes(converter.convert())
    return path


def _configure(tf, converter, calibration, int8: bool, int8_io: bool) -> None:
    if int8:
        if calibration is None or not len(calibration):
            raise ValueError("int8 TFLite export needs calibration inputs")

        def representative():
            for i in range(len(calibration)):
                yield [calibration[i:i + 1]]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if int8_io:
            if calibration.dtype.kind == "f":
                converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8


def tensor_quantization(path: Path) -> dict:
    """Scale and zero point of the file's input and outputs, as the manifest records them."""
    from ..runtime.backends import import_litert_interpreter

    interpreter = import_litert_interpreter()(model_path=str(path))
    runner = interpreter.get_signature_runner()

    def describe(detail):
        scale, zero_point = detail["quantization"]
        return {"dtype": np.dtype(detail["dtype"]).name, "scale": float(scale), "zero_point": int(zero_point)}

    return {"inputs": {k: describe(v) for k, v in runner.get_input_details().items()},
            "outputs": {k: describe(v) for k, v in runner.get_output_details().items()}}
