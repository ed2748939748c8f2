"""Keras -> ONNX fp32 (tf2onnx) and ONNX int8 (onnxruntime.quantization, static QDQ, calibrated, U8S8).

``tf2onnx.convert.from_keras`` is broken on Keras 3 (tf2onnx issue #2448), so the model is wrapped in a
``tf.function`` whose input signature names the input and whose dict output names the outputs, and converted with
``tf2onnx.convert.from_function``.
"""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ..errors import require
from ..quiet import quiet_stderr

OPSET = 17


def export_onnx(serving_fn, path: Path, metadata: dict[str, str] | None = None, opset: int = OPSET) -> Path:
    """Convert a ``tf.function`` with an input signature to an ONNX file with a dynamic batch axis.

    Args:
        serving_fn: a ``tf.function`` taking one named tensor and returning a dict of named outputs.
        path: the ``.onnx`` file to write.
        metadata: string key/values stored in the model's ``metadata_props`` (task, labels, ...).
        opset: ONNX opset to target.

    Example::

        export_onnx(serve, Path("model.onnx"), {"edgecnn.task": "image-classification"})
    """
    tf2onnx = require("tf2onnx", "train", "ONNX export")
    onnx = require("onnx", "train", "ONNX export")
    with quiet_stderr():  # TensorFlow's graph optimizer and tf2onnx print from C++ and through logging
        graph_def, input_names, output_names, renames = _frozen_graph(serving_fn)
        proto, _ = tf2onnx.convert.from_graph_def(graph_def, input_names=input_names, output_names=output_names,
                                                  opset=opset, tensors_to_rename=renames)
    for value in list(proto.graph.input) + list(proto.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_param = "batch"
    for key, text in (metadata or {}).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, text
    proto.producer_name = "edgecnn (tf2onnx)"
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    return path


def _frozen_graph(serving_fn):
    """The serving function's graph with every captured value made a constant: (graph_def, input tensor names,
    output tensor names, {tensor name: our input/output name}).

    Why not ``tf2onnx.convert.from_function``: it lists every non-resource input of the concrete function as a
    graph input, and a Keras 3 ``Normalization`` layer's mean and variance are captured eager *tensors*, not
    variables, so the ONNX file asked for ``.../normalization/Sub/y:0`` beside the image. Freezing with
    ``convert_variables_to_constants_v2`` first folds variables and captured tensors alike into the graph.
    """
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    concrete = serving_fn.get_concrete_function()
    frozen = convert_variables_to_constants_v2(concrete)
    specs = [spec for spec in serving_fn.input_signature]
    inputs = [t.name for t in frozen.inputs][:len(specs)]
    outputs = [t.name for t in frozen.outputs]
    renames = {name: spec.name for name, spec in zip(inputs, specs)}
    structured = concrete.structured_outputs
    if isinstance(structured, dict):
        renames.update({tensor.name: key for key, tensor in structured.items()})
    return frozen.graph.as_graph_def(), inputs, outputs, renames


class _Calibration:
    """onnxruntime's CalibrationDataReader over a list of batches (a class is what quantize_static expects)."""

    def __init__(self, input_name: str, batches: Iterable[np.ndarray]):
        self._feeds = iter([{input_name: batch} for batch in batches])

    def get_next(self):
        return next(self._feeds, None)


#: ``--calibration-method`` -> onnxruntime's CalibrationMethod member
CALIBRATION_METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}


def onnx_int8_recipe(calibration_method: str = "minmax", per_channel: bool = True) -> dict:
    """The manifest's ``quantization`` entry for an int8 ONNX file made by :func:`quantize_onnx` with these
    choices: the recipe in one line (``method``) and each choice by name, so a reader need not parse the line."""
    weights = "per-channel" if per_channel else "per-tensor"
    return {"method": (f"static QDQ, uint8 activations, {weights} int8 weights, "
                       f"{CALIBRATION_METHODS[calibration_method]} calibration"),
            "calibration_method": calibration_method, "weights": weights}


def quantize_onnx(fp32_path: Path, path: Path, input_name: str, calibration: np.ndarray,
                  batch_size: int = 16, exclude_op_types: tuple[str, ...] = (), *,
                  activations: str = "uint8", per_channel: bool = True, reduce_range: bool = False,
                  quant_format: str = "qdq", nodes_to_exclude: tuple[str, ...] = (),
                  calibration_method: str = "minmax") -> Path:
    """Static int8 quantization, per-channel weights, calibrated on ``calibration`` (model inputs).

    The model is first shape-inferred and optimized with ``quant_pre_process`` (needs sympy), as onnxruntime
    recommends: without it MobileNetV2 int8 ran at 0.80x fp32 instead of 0.61x. Inputs and outputs stay float32;
    the int8 work happens inside.

    Args:
        fp32_path, path: the float model to read and the int8 file to write.
        input_name: the graph input the calibration arrays feed.
        calibration: representative model inputs, fed ``batch_size`` at a time.
        exclude_op_types: op types left in float (everything else onnxruntime can quantize is).
        activations: ``"uint8"`` (default) or ``"int8"``. Activations are asymmetric, so both give the same grid
            (a uint8 zero point is the int8 one + 128) and identical outputs; what differs is speed. onnxruntime
            (1.32) fuses Q/DQ pairs around int8 activations into integer kernels only on ARM: on x86-64 part of
            an S8S8 graph stays float between QuantizeLinear/DequantizeLinear, and int8 ran at 0.94x
            (MobileNetV2 96x96) to 1.21x (digit detector) the fp32 time, against 0.61x and 0.58x with uint8
            (U8S8: every Conv and Add fused; BENCHMARKS.md, section 5).
        per_channel: one weight scale per output channel (default). Per-tensor weights were ~8 % faster on
            MobileNetV2 but cost the digit detector 2.4 pts of int8 agreement.
        reduce_range: 7-bit weights, for x86-64 CPUs without VNNI, where U8S8 products may saturate; off by
            default (it cost the detector 0.16 pt mAP@0.5 here).
        quant_format: ``"qdq"`` (default: portable, runs on every execution provider) or ``"qoperator"``
            (QLinearConv & co. written out; measured no faster than QDQ once onnxruntime fuses it).
        nodes_to_exclude: node names kept in float, e.g. the worst layers of
            :func:`edgecnn.export.quantize.worst_layers`.
        calibration_method: how activation ranges are chosen from the calibration outputs (onnxruntime's
            CalibrationMethod): ``minmax`` (default: the observed range), ``entropy`` (the range that keeps the
            histogram's KL divergence lowest) or ``percentile`` (99.999th percentile of |x|, clipping outliers).
            Entropy and percentile keep a histogram of every tensor, so they calibrate more slowly.
    """
    require("sympy", "train", "ONNX int8 quantization (quant_pre_process)")
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    activation_type = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}[activations]
    method = getattr(CalibrationMethod, CALIBRATION_METHODS[calibration_method])
    fmt = {"qdq": QuantFormat.QDQ, "qoperator": QuantFormat.QOperator}[quant_format]
    with tempfile.TemporaryDirectory() as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=False)
        if calibration_method != "minmax":
            batch_size = 1  # the histogram calibrators stack every batch's outputs: a short last batch broke them
        batches = [calibration[i:i + batch_size] for i in range(0, len(calibration), batch_size)]
        op_types = None
        if exclude_op_types:
            onnx = require("onnx", "train", "ONNX export")
            op_types = sorted({n.op_type for n in onnx.load(str(prepared)).graph.node} - set(exclude_op_types))
        cache = None
        # onnxruntime's histogram calibrators print their progress to stdout, where `--json` output goes
        with contextlib.redirect_stdout(io.StringIO()):
            if calibration_method == "entropy":
                cache = Path(scratch) / "ranges.json"
                _entropy_ranges(prepared, cache, _Calibration(input_name, batches), op_types)
            quantize_static(str(prepared), str(path), _Calibration(input_name, batches), quant_format=fmt,
                            per_channel=per_channel, reduce_range=reduce_range, activation_type=activation_type,
                            weight_type=QuantType.QInt8, calibrate_method=method,
                            op_types_to_quantize=op_types, nodes_to_exclude=list(nodes_to_exclude) or None,
                            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
                            calibration_cache_path=cache)
    return path


def _entropy_ranges(model: Path, cache: Path, reader: _Calibration, op_types: list[str] | None) -> None:
    """Entropy (KL) ranges written as the calibration cache ``quantize_static`` reads instead of calibrating.

    Why not ``quantize_static(calibrate_method=Entropy)`` alone: it builds the calibrator with 128 histogram bins
    and 128 quantized bins (onnxruntime 1.32, and no option reaches them), so the KL search has a single candidate,
    the full range, and the file came out identical to MinMax. Here the histogram has 2048 bins, as TensorRT's
    entropy calibration does, for 128 quantized ones.
    """
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator, save_tensors_data
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    everything = sorted(set(QLinearOpsRegistry) | set(QDQRegistry))  # quantize_static's own default
    calibrator = create_calibrator(model, op_types or everything,
                                   augmented_model_path=str(cache.with_name("augmented.onnx")),
                                   calibrate_method=CalibrationMethod.Entropy,
                                   extra_options={"num_bins": 2048, "num_quantized_bins": 128})
    calibrator.collect_data(reader)
    save_tensors_data(calibrator.compute_data(), cache)


def onnx_metadata(task: str, labels: list[str]) -> dict[str, str]:
    """The metadata_props every edgecnn ONNX file carries, so the file alone says what it is."""
    return {"edgecnn.task": task, "edgecnn.labels": json.dumps(labels)}
