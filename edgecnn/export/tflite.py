"""Keras -> TFLite: fp32, full-integer int8, float16 weights and dynamic-range int8 weights.

The int8 file has int8 internals and, by default, int8 input and output tensors too (``int8_io``: uint8, as
Android's and MediaPipe's image pipelines want, or float32, the converter's own quantize/dequantize ops at the
edges): the runtime quantizes inputs and dequantizes outputs with the scale and zero point stored in the file.
Integer inputs (token ids) stay int32.

The two weight-only recipes need no calibration and keep float32 inputs, outputs and activations:

- ``weights="float16"`` (format ``tflite-fp16``): weights stored as float16 and dequantized to float32 when the
  interpreter is built, so it computes in float32 what a float16 rounding of the weights gives: half the size, the
  same speed on a CPU (GPU delegates may run it in float16).
- ``weights="int8"`` (format ``tflite-dynamic``): weights stored as int8, activations quantized on
  the fly per batch by the "hybrid" kernels: about a quarter of the size with no representative dataset.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from ..quiet import quiet_stderr

#: ``int8_io`` choices: the dtype of the full-integer file's float inputs and outputs
INT8_IO = ("int8", "uint8", "float")
#: ``weights`` choices: weight-only quantization (the rest of the file stays float32)
WEIGHT_TYPES = ("float16", "int8")


def export_tflite(serving_fn, model, path: Path, calibration: np.ndarray | None = None, int8: bool = False,
                  int8_io: str = "int8", weights: str | None = None, metadata: dict | None = None,
                  float_nodes: tuple[str, ...] = (), per_channel: bool = True) -> Path:
    """Convert a ``tf.function`` with an input signature to a ``.tflite`` file.

    Args:
        serving_fn: a ``tf.function`` taking one named tensor and returning a dict of named outputs (these names
            become the file's signature output names, which the runtime matches on).
        model: the Keras model the function calls (its variables must be tracked to be saved).
        path: the file to write.
        calibration: model inputs for the representative dataset (required when ``int8``).
        int8: full-integer quantization (TFLITE_BUILTINS_INT8 only: the file fails to convert rather than silently
            keeping float ops).
        int8_io: the dtype of the int8 file's float inputs and outputs (``inference_input_type`` and
            ``inference_output_type``): ``int8``, ``uint8`` or ``float`` (float32, quantized inside the file).
        weights: weight-only quantization, no calibration: ``float16`` (tflite-fp16) or ``int8`` (dynamic range,
            tflite-dynamic); not together with ``int8``.
        metadata: ``{"sections": manifest sections, "name": model name}``: write TFLite Model Metadata into the
            file (:func:`edgecnn.export.metadata.add_metadata`); None writes the converter's file as it is.
        float_nodes: with ``int8``, layers (op output tensor names, as :func:`edgecnn.export.quantize.worst_layers`
            gives them) kept in float: the float fallback of :mod:`edgecnn.export.fallback`.
        per_channel: int8 weights with one scale per output channel (the converter's default), or one per tensor
            (``False``): 12 bytes less per output channel, twice (weights and bias), which is 21 % of the committed
            detector's int8 file (BENCHMARKS.md, "Sizes"); also for tflite-dynamic.
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
            _configure(tf, converter, calibration, int8, int8_io, weights)
            converter._experimental_disable_per_channel = not per_channel  # the converter's one switch for it
            path.write_bytes(_quantize_keeping_float(converter, float_nodes) if int8 and float_nodes
                             else converter.convert())
    if metadata:
        from .metadata import add_metadata

        add_metadata(path, **metadata)
    return path


def _configure(tf, converter, calibration, int8: bool, int8_io: str, weights: str | None) -> None:
    if int8_io not in INT8_IO:
        raise ValueError(f"int8_io must be one of {INT8_IO}, not {int8_io!r}")
    if weights is not None:
        if weights not in WEIGHT_TYPES or int8:
            raise ValueError(f"weights must be one of {WEIGHT_TYPES} (and int8 False), not {weights!r}")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]  # without a representative dataset: weights only
        if weights == "float16":
            converter.target_spec.supported_types = [tf.float16]
        else:
            # Per-channel hybrid dense layers are FULLY_CONNECTED version 12 (TF 2.15+): tflite-runtime 2.14, the
            # only LiteRT for 32-bit Raspberry Pi OS, refuses the file. Per-tensor dense weights (version 9) run
            # there; convolutions keep per-channel weights (CONV_2D version 5 runs on 2.14).
            converter._experimental_disable_per_channel_quantization_for_dense_layers = True
        return
    if int8:
        if calibration is None or not len(calibration):
            raise ValueError("int8 TFLite export needs calibration inputs")

        def representative():
            for i in range(len(calibration)):
                yield [calibration[i:i + 1]]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if int8_io != "float":
            io_type = tf.int8 if int8_io == "int8" else tf.uint8
            if calibration.dtype.kind == "f":
                converter.inference_input_type = io_type
            converter.inference_output_type = io_type


def _quantize_keeping_float(converter, float_nodes: tuple[str, ...]) -> bytes:
    """Full-integer quantization with ``float_nodes`` left in float, the route TFLite's QuantizationDebugger takes
    for its ``denylisted_nodes`` (tensorflow/lite/tools/optimize/debugging/python/debugger.py, TF 2.21): calibrate
    only, then ``mlir_quantize`` with a denylist. Called directly because the debugger's
    ``get_nondebug_quantized_model`` always makes float32 inputs and outputs and first builds a NumericVerify debug
    model we do not need; here the file keeps the converter's ``inference_input_type``/``inference_output_type``.
    Denylisted ops run as float kernels between DEQUANTIZE and QUANTIZE ops, so TFLITE_BUILTINS_INT8 no longer
    holds for this one file (LiteRT runs both kinds)."""
    from tensorflow.lite.python import convert

    converter._experimental_calibrate_only = True  # the debugger's own switch (debugger.py)
    calibrated = converter.convert()
    dense = converter._experimental_disable_per_channel_quantization_for_dense_layers
    return convert.mlir_quantize(calibrated, disable_per_channel=converter._experimental_disable_per_channel,
                                 disable_per_channel_for_dense_layers=dense,
                                 input_data_type=converter.inference_input_type,
                                 output_data_type=converter.inference_output_type,
                                 denylisted_nodes=list(float_nodes))


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
