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

import hashlib
import sys
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
            file (:func:`edgecnn.export.metadata.add_metadata`); None: none. Either way the file is written
            smaller than the converter writes it, with the same numbers (:func:`compact`).
        float_nodes: with ``int8``, layers (op output tensor names, as :func:`edgecnn.export.quantize.worst_layers`
            gives them) kept in float: the float fallback of :mod:`edgecnn.export.fallback`.
        per_channel: int8 weights with one scale per output channel (the converter's default), or one per tensor
            (``False``): one float32 scale per tensor instead of per output channel, twice (weights and bias),
            which the detector needs for an int8 file 3.5x smaller than its ONNX one (BENCHMARKS.md, "Sizes");
            also for tflite-dynamic.
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
            path.write_bytes(compact(_quantize_keeping_float(converter, float_nodes) if int8 and float_nodes
                                     else converter.convert()))
    if metadata:
        from .metadata import add_metadata, describe

        if int8 and float_nodes:  # the float fallback's file: say so where an app's developer reads about it
            from .fallback import kept_in_float

            metadata = {**metadata, "description": f"{describe(metadata['sections'])[:-1]}; "
                                                   f"{kept_in_float(len(float_nodes))}."}
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
                                 denylisted_nodes=_full_names(calibrated, float_nodes))


def _full_names(data: bytes, names: tuple[str, ...]) -> list[str]:
    """``names`` as the converter's own file spells them: the layers come from a written file, whose tensor names
    :func:`short_name` shortened, while the denylist is matched against the unshortened names of ``data``."""
    spelled: dict[str, list[str]] = {}
    for graph in _read(data).subgraphs:
        for tensor in graph.tensors:
            full = (tensor.name or b"").decode()
            for key in {full, short_name(full)}:
                spelled.setdefault(key, []).append(full)
    return [full for name in names for full in spelled.get(name, [name])]


# --- the written file: the converter's, smaller, with the same numbers ----------------------------------------------

def short_name(name: str) -> str:
    """A tensor's name as edgecnn writes it: the converter names a fused op's output by every TensorFlow op in it
    (``a/Relu6;a/bn/add_1;a/conv/convolution;...``, up to 240 bytes each, 5 % of the committed detector's int8
    file); the first op says which layer it is, and a hash of the whole name keeps names unique and the same in
    every file converted from the same model, so the fp32 and int8 files still match tensor by tensor
    (``edgecnn quantize-report``) and a denylist can be mapped back (:func:`_full_names`). Idempotent."""
    if ";" not in name:
        return name
    return f"{name.split(';')[0]}#{hashlib.sha1(name.encode()).hexdigest()[:6]}"


def compact(data: bytes) -> bytes:
    """The converter's ``.tflite`` bytes written again smaller, every number the same: short tensor names
    (:func:`short_name`; the graph's input and output tensors keep theirs) and shared quantization arrays
    (:func:`pack_model`). A file with buffers outside the flatbuffer (over 2 GB) comes back as it is."""
    model = _read(data)
    if any(buffer.offset > 1 for buffer in model.buffers):
        return data
    for graph in model.subgraphs:
        kept = set(graph.inputs) | set(graph.outputs)
        for index, tensor in enumerate(graph.tensors):
            if index not in kept and tensor.name:
                tensor.name = short_name(tensor.name.decode()).encode()
    return pack_model(model)


def pack_model(model, alignment: int = 16) -> bytes:
    """A ``ModelT`` (the TFLite schema's object API) as file bytes, like ``model.Pack`` but smaller and aligned.

    Why: every per-channel int8 weight and its int32 bias carry one float32 scale and one int64 zero point per
    output channel, and the object API writes each array again for each tensor, although the zero points are all
    0: 34 kB of the detector's 250 kB int8 file (BENCHMARKS.md, "Sizes"). A flatbuffer may point many tables at one
    vector, and LiteRT needs as many zero points as scales (so they cannot be dropped), so each distinct array and
    each distinct quantization table is written once. Buffers (weights) start on ``alignment`` bytes, as the
    converter writes them and the schema asks (``force_align: 16``); the object API aligns them to 1 byte.
    Consumes ``model`` (its buffers and quantization entries are replaced by packing wrappers).
    """
    import flatbuffers

    fb = sys.modules[type(model).__module__]
    vectors: dict[tuple, int] = {}
    tables: dict[tuple, int] = {}

    def vector(builder, values, dtype) -> int:
        array = np.ascontiguousarray(values, dtype=dtype).reshape(-1)
        key = (array.dtype.str, array.tobytes())
        if key not in vectors:
            vectors[key] = builder.CreateNumpyVector(array)
        return vectors[key]

    class Quantization:
        def __init__(self, q):
            self.q = q

        def Pack(self, builder):  # the object API calls it by this name
            q = self.q
            if q.details is not None:  # custom quantization: as the object API writes it
                return q.Pack(builder)
            arrays = [(field, values, dtype) for field, values, dtype in
                      (("Min", q.min, "<f4"), ("Max", q.max, "<f4"), ("Scale", q.scale, "<f4"),
                       ("ZeroPoint", q.zeroPoint, "<i8")) if values is not None]
            key = tuple((field, np.asarray(values, dtype).tobytes()) for field, values, dtype in arrays)
            key += (q.quantizedDimension,)
            if key not in tables:
                offsets = [(field, vector(builder, values, dtype)) for field, values, dtype in arrays]
                fb.QuantizationParametersStart(builder)
                for field, offset in offsets:
                    getattr(fb, f"QuantizationParametersAdd{field}")(builder, offset)
                fb.QuantizationParametersAddQuantizedDimension(builder, q.quantizedDimension)
                tables[key] = fb.QuantizationParametersEnd(builder)
            return tables[key]

    class Buffer:
        def __init__(self, buffer):
            self.buffer = buffer

        def Pack(self, builder):
            buffer = self.buffer
            data = None
            if buffer.data is not None:
                payload = (bytes(buffer.data) if isinstance(buffer.data, (bytes, bytearray))  # metadata's
                           else np.asarray(buffer.data, np.uint8).tobytes())
                builder.StartVector(1, len(payload), alignment)
                builder.head -= len(payload)
                builder.Bytes[builder.head:builder.head + len(payload)] = payload
                builder.vectorNumElems = len(payload)
                data = builder.EndVector()
            fb.BufferStart(builder)
            if data is not None:
                fb.BufferAddData(builder, data)
            fb.BufferAddOffset(builder, buffer.offset)
            fb.BufferAddSize(builder, buffer.size)
            return fb.BufferEnd(builder)

    for graph in model.subgraphs:
        for tensor in graph.tensors:
            if tensor.quantization is not None:
                tensor.quantization = Quantization(tensor.quantization)
    model.buffers = [Buffer(buffer) for buffer in model.buffers]
    builder = flatbuffers.Builder(1 << 16)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _read(data: bytes):
    """The file as the schema's object API (``ModelT``), with the schema TensorFlow ships, else LiteRT's."""
    try:
        from tensorflow.lite.python import schema_py_generated as fb
    except ImportError:
        from ai_edge_litert import schema_py_generated as fb
    return fb.ModelT.InitFromObj(fb.Model.GetRootAsModel(data, 0))


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
