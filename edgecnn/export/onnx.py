"""Keras -> ONNX fp32 (tf2onnx) and ONNX int8 (onnxruntime.quantization, static QDQ, calibrated).

``tf2onnx.convert.from_keras`` is broken on Keras 3 (tf2onnx issue #2448), so the model is wrapped in a
``tf.function`` whose input signature names the input and whose dict output names the outputs, and converted with
``tf2onnx.convert.from_function``.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ..errors import require

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
    proto, _ = tf2onnx.convert.from_function(serving_fn, input_signature=serving_fn.input_signature, opset=opset)
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


class _Calibration:
    """onnxruntime's CalibrationDataReader over a list of batches (a class is what quantize_static expects)."""

    def __init__(self, input_name: str, batches: Iterable[np.ndarray]):
        self._feeds = iter([{input_name: batch} for batch in batches])

    def get_next(self):
        return next(self._feeds, None)


def quantize_onnx(fp32_path: Path, path: Path, input_name: str, calibration: np.ndarray,
                  batch_size: int = 16, exclude_op_types: tuple[str, ...] = ()) -> Path:
    """Static int8 quantization in QDQ format, per-channel weights, calibrated on ``calibration`` (model inputs).

    The model is first shape-inferred and optimized with ``quant_pre_process`` (needs sympy), as onnxruntime
    recommends. Inputs and outputs stay float32; the int8 work happens inside.
    """
    require("sympy", "train", "ONNX int8 quantization (quant_pre_process)")
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=False)
        batches = [calibration[i:i + batch_size] for i in range(0, len(calibration), batch_size)]
        op_types = None
        if exclude_op_types:
            onnx = require("onnx", "train", "ONNX export")
            op_types = sorted({n.op_type for n in onnx.load(str(prepared)).graph.node} - set(exclude_op_types))
        quantize_static(str(prepared), str(path), _Calibration(input_name, batches), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax, op_types_to_quantize=op_types,
                        extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})
    return path


def onnx_metadata(task: str, labels: list[str]) -> dict[str, str]:
    """The metadata_props every edgecnn ONNX file carries, so the file alone says what it is."""
    return {"edgecnn.task": task, "edgecnn.labels": json.dumps(labels)}
