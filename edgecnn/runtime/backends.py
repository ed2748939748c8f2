"""One small interface over onnxruntime and the LiteRT interpreter.

A backend takes float32 (or int32 token) arrays in the layout the manifest names and gives float32 outputs back in
the manifest's output order. Quantized int8 inputs and outputs are (de)quantized here with the file's own scale and
zero point, read from the model file itself, so tasks never see integer tensors.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from ..errors import MissingDependencyError, ModelError
from .platform_info import _version, available_runtimes  # noqa: F401 - re-exported for tasks

ONNX = "onnxruntime"
LITERT = "litert"


class Backend(Protocol):
    """What tasks need from a runtime."""

    name: str
    input_name: str

    def run(self, inputs: np.ndarray) -> list[np.ndarray]:
        """Run one batch; return the outputs as float32 arrays in the order given at construction."""


def _import_litert_interpreter():
    for module in ("ai_edge_litert.interpreter", "tflite_runtime.interpreter"):
        try:
            interpreter = importlib.import_module(module).Interpreter
        except ImportError:
            continue
        if module.startswith("tflite_runtime"):
            _check_tflite_runtime_numpy()
        return interpreter
    raise MissingDependencyError(
        "running .tflite files needs the LiteRT interpreter; install it with: pip install 'edgecnn[tflite]' "
        "(ai-edge-litert), or 'pip install tflite-runtime' on 32-bit ARM"
    )


def _check_tflite_runtime_numpy() -> None:
    """tflite-runtime (last release 2.14) is built against NumPy 1.x: with NumPy 2 it imports, then its first
    interpreter dies with a SystemError ("_ARRAY_API not found"). Say so before that happens."""
    version = _version("tflite-runtime") or "0"
    release = tuple(int(part) for part in version.split(".")[:2] if part.isdigit())
    if int(np.__version__.split(".")[0]) >= 2 and release < (2, 15):
        raise MissingDependencyError(
            f"tflite-runtime {version} only works with NumPy 1.x, but NumPy {np.__version__} is installed; "
            "install it with: pip install 'numpy<2' (or use ai-edge-litert where it has wheels)"
        )


def _check_file(path: Path, kind: str) -> None:
    if not path.is_file():
        raise ModelError(f"{path}: no such {kind} file")
    if path.stat().st_size == 0:
        raise ModelError(f"{path} is empty; copy the export folder again or re-run 'edgecnn export'")


class OnnxRuntimeBackend:
    """An onnxruntime CPU session, created once per model and reused for every call."""

    name = ONNX

    def __init__(self, path: str | os.PathLike, input_name: str, output_names: Sequence[str],
                 threads: int | None = None):
        try:
            import onnxruntime as ort
        except ImportError:
            raise MissingDependencyError(
                "running .onnx files needs onnxruntime; install it with: pip install onnxruntime "
                "(on 32-bit ARM, where it has no wheels, use the .tflite files instead)"
            ) from None
        path = Path(path)
        _check_file(path, "ONNX model")
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own Fail/InvalidProtobuf types
            raise ModelError(f"{path} could not be loaded by onnxruntime ({str(exc).splitlines()[0]}); "
                             "the file is probably truncated: copy or export it again") from None
        self.input_name = input_name
        self.output_names = list(output_names)
        self.input_type = self.session.get_inputs()[0].type

    def run(self, inputs: np.ndarray) -> list[np.ndarray]:
        return self.session.run(self.output_names, {self.input_name: inputs})


class LiteRTBackend:
    """A LiteRT (TFLite) interpreter; resizes its input for each new batch size and (de)quantizes int8 tensors."""

    name = LITERT

    def __init__(self, path: str | os.PathLike, input_name: str, output_names: Sequence[str],
                 threads: int | None = None):
        interpreter_class = _import_litert_interpreter()
        path = Path(path)
        _check_file(path, "TFLite model")
        try:
            self.interpreter = interpreter_class(model_path=str(path), num_threads=threads)
            runner = self.interpreter.get_signature_runner()
            inputs, outputs = runner.get_input_details(), runner.get_output_details()
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"{path} could not be loaded by LiteRT ({str(exc).splitlines()[0]}); "
                             "the file is probably truncated: copy or export it again") from None
        if input_name not in inputs:
            input_name = next(iter(inputs))
        missing = [name for name in output_names if name not in outputs]
        if missing:
            raise ModelError(f"{path} has no output named {missing[0]!r}; its outputs are {sorted(outputs)}")
        self.input_name = input_name
        self._input = inputs[input_name]
        self._outputs = [outputs[name] for name in output_names]
        self._shape: tuple[int, ...] | None = None
        # (de)quantization parameters read once: looked up per call they cost ~10 % of a small model's latency
        self._input_index, self._quantize = self._input["index"], _quantizer(self._input)
        self._output_steps = [(out["index"], _dequantizer(out)) for out in self._outputs]

    def run(self, inputs: np.ndarray) -> list[np.ndarray]:
        if inputs.shape != self._shape:
            self.interpreter.resize_tensor_input(self._input_index, list(inputs.shape))
            self.interpreter.allocate_tensors()
            self._shape = inputs.shape
        self.interpreter.set_tensor(self._input_index, self._quantize(inputs))
        self.interpreter.invoke()
        return [dequantize_(self.interpreter.get_tensor(index)) for index, dequantize_ in self._output_steps]


def _scale_zero_point(detail: dict) -> tuple[float, int]:
    params = detail.get("quantization_parameters") or {}
    scales = params.get("scales")
    if scales is not None and len(scales):
        return float(scales[0]), int(params["zero_points"][0])
    scale, zero_point = detail.get("quantization", (0.0, 0))
    return float(scale), int(zero_point)


def _quantizer(detail: dict):
    """A function float values -> this tensor's dtype, its scale, zero point and range bound in advance."""
    dtype = np.dtype(detail["dtype"])
    if dtype not in (np.int8, np.uint8):
        return lambda values: values.astype(dtype, copy=False)
    scale, zero_point = _scale_zero_point(detail)
    info = np.iinfo(dtype)
    low, high = info.min - zero_point, info.max - zero_point  # clipping before the shift: one temporary less

    def quantize_(values: np.ndarray) -> np.ndarray:
        scaled = np.rint(values / scale)
        return (np.clip(scaled, low, high, out=scaled) + zero_point).astype(dtype)

    return quantize_


def _dequantizer(detail: dict):
    """A function integer tensor -> float32 for this tensor (float tensors pass through)."""
    dtype = np.dtype(detail["dtype"])
    if dtype not in (np.int8, np.uint8):
        return lambda values: values.astype(np.float32, copy=False)
    scale, zero_point = _scale_zero_point(detail)
    scale, zero_point = np.float32(scale), np.float32(zero_point)
    return lambda values: (values.astype(np.float32) - zero_point) * scale


def quantize(values: np.ndarray, detail: dict) -> np.ndarray:
    """Float values -> the tensor's integer dtype with its scale and zero point (a no-op for float/int32 inputs)."""
    return _quantizer(detail)(values)


def dequantize(values: np.ndarray, detail: dict) -> np.ndarray:
    """Integer tensor -> float32 with its scale and zero point (float tensors pass through)."""
    if values.dtype not in (np.int8, np.uint8):
        return values.astype(np.float32, copy=False)
    return _dequantizer({**detail, "dtype": values.dtype})(values)


def open_backend(path: str | os.PathLike, input_name: str, output_names: Sequence[str],
                 threads: int | None = None) -> Backend:
    """Open a model file with the runtime its suffix calls for (.onnx -> onnxruntime, .tflite -> LiteRT)."""
    suffix = Path(path).suffix.lower()
    if suffix == ".onnx":
        return OnnxRuntimeBackend(path, input_name, output_names, threads)
    if suffix == ".tflite":
        return LiteRTBackend(path, input_name, output_names, threads)
    raise ModelError(f"{path}: unknown model file type '{suffix}'; expected .onnx or .tflite")
