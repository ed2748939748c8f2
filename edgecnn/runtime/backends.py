"""One small interface over onnxruntime and the LiteRT interpreter.

A backend takes float32 (or int32 token) arrays in the layout the manifest names and gives float32 outputs back in
the manifest's output order. Quantized inputs and outputs (int8, or uint8 from ``--int8-io uint8``) are
(de)quantized here with the file's own scale and zero point, read from the model file itself, so tasks never see
integer tensors; float32 ones (``--int8-io float``, and the weight-only tflite-fp16 and tflite-dynamic files, whose
float16 or int8 weights LiteRT handles inside) pass through as they are.
"""

from __future__ import annotations

import importlib
import os
import queue
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from ..errors import MissingDependencyError, ModelError
from ..quiet import quiet_stderr
from .platform_info import _version, available_runtimes  # noqa: F401 - re-exported for tasks

ONNX = "onnxruntime"
LITERT = "litert"


class Backend(Protocol):
    """What tasks need from a runtime. ``run`` may be called from several threads at once (see LiteRTBackend)."""

    name: str
    input_name: str
    #: The model file's own input and output shapes (outputs in the order given at construction); None marks a
    #: free (batch) dimension. Tasks check the manifest against them when they open the file.
    input_shape: tuple[int | None, ...]
    output_shapes: list[tuple[int | None, ...]]

    def run(self, inputs: np.ndarray) -> list[np.ndarray]:
        """Run one batch; return the outputs as float32 arrays in the order given at construction."""


def import_litert_interpreter():
    """The LiteRT ``Interpreter`` class: ai-edge-litert's, else tflite-runtime's (32-bit ARM), else a
    MissingDependencyError naming the extra to install."""
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
    """An onnxruntime CPU session, created once per model and reused for every call.

    ``InferenceSession.run`` is thread-safe and runs overlapping calls concurrently, so threads share the session.
    """

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
        # The session option below only quiets a session that loads; a file it refuses is reported by the default
        # logger, several lines on stderr, before our one-line ModelError.
        ort.set_default_logger_severity(3)
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
        inputs = {item.name: item for item in self.session.get_inputs()}
        if input_name not in inputs:
            raise ModelError(f"{path} has no input named {input_name!r} (the manifest's input.name); "
                             f"its inputs are {sorted(inputs)}: re-export or fix the manifest")
        self.input_name = input_name
        self.output_names = list(output_names)
        self.input_type = inputs[input_name].type
        self.input_shape = _onnx_shape(inputs[input_name].shape)
        found = {out.name: out.shape for out in self.session.get_outputs()}
        missing = [name for name in self.output_names if name not in found]
        if missing:
            raise ModelError(f"{path} has no output named {missing[0]!r}; its outputs are {sorted(found)}")
        self.output_shapes = [_onnx_shape(found[name]) for name in self.output_names]

    def run(self, inputs: np.ndarray) -> list[np.ndarray]:
        if self.input_shape[:1] == (1,) and len(inputs) > 1:  # a batch-1 file (--target mobile's .ort)
            runs = [self.session.run(self.output_names, {self.input_name: inputs[i:i + 1]})
                    for i in range(len(inputs))]
            return [np.concatenate(parts) for parts in zip(*runs)]
        return self.session.run(self.output_names, {self.input_name: inputs})


class LiteRTBackend:
    """LiteRT (TFLite) interpreters; each resizes its input for a new batch size and (de)quantizes int8 tensors.

    A LiteRT interpreter is not thread-safe: two threads between ``set_tensor`` and ``get_tensor`` on one
    interpreter raise "There is at least 1 reference to internal data" or, worse, return each other's outputs. So
    every call borrows an interpreter of its own from a small pool for the whole resize -> set -> invoke -> get
    sequence. The pool holds one interpreter until calls overlap, then grows on demand up to ``max_interpreters``
    (default: one per CPU core); a call beyond that waits for one to come back. ``invoke`` releases the GIL, so
    overlapping calls really run in parallel. One thread pays only an uncontended queue get/put per call.
    """

    name = LITERT

    def __init__(self, path: str | os.PathLike, input_name: str, output_names: Sequence[str],
                 threads: int | None = None, max_interpreters: int | None = None):
        interpreter_class = import_litert_interpreter()
        path = Path(path)
        _check_file(path, "TFLite model")
        try:
            with quiet_stderr():  # LiteRT's C++ "Created TensorFlow Lite XNNPACK delegate", on the first allocation
                first = interpreter_class(model_path=str(path), num_threads=threads)
                first.allocate_tensors()
            runner = first.get_signature_runner()
            inputs, outputs = runner.get_input_details(), runner.get_output_details()
        except (ValueError, RuntimeError) as exc:
            first_line = str(exc).splitlines()[0]
            if "Didn't find op for builtin opcode" in first_line:  # "... version '12'. An older version of ..."
                raise ModelError(f"{path} needs a newer LiteRT than the one installed here ({first_line}); "
                                 "install a newer ai-edge-litert, or run another format of this export (tflite or "
                                 "tflite-int8 run on tflite-runtime 2.14)") from None
            raise ModelError(f"{path} could not be loaded by LiteRT ({first_line}); "
                             "the file is probably truncated: copy or export it again") from None
        if input_name not in inputs:
            input_name = next(iter(inputs))
        missing = [name for name in output_names if name not in outputs]
        if missing:
            raise ModelError(f"{path} has no output named {missing[0]!r}; its outputs are {sorted(outputs)}")
        self.input_name = input_name
        self._input = inputs[input_name]
        self._outputs = [outputs[name] for name in output_names]
        self.input_shape = _litert_shape(self._input)
        self.output_shapes = [_litert_shape(out) for out in self._outputs]
        # (de)quantization parameters read once: looked up per call they cost ~10 % of a small model's latency
        self._input_index, self._quantize = self._input["index"], _quantizer(self._input)
        self._output_steps = [(out["index"], _dequantizer(out)) for out in self._outputs]
        self._new_interpreter = lambda: _opened_quietly(interpreter_class, path, threads)
        self.max_interpreters = max(1, max_interpreters or os.cpu_count() or 1)
        self._idle: queue.SimpleQueue[_Interpreter] = queue.SimpleQueue()
        self._idle.put(_Interpreter(first))
        self._opened = 1
        self._opening = threading.Lock()

    def run(self, inputs: np.ndarray) -> list[np.ndarray]:
        slot = self._borrow()
        try:
            if inputs.shape != slot.shape:
                slot.shape = None  # until the resize has worked: a failed one must not leave a stale shape
                slot.interpreter.resize_tensor_input(self._input_index, list(inputs.shape))
                slot.interpreter.allocate_tensors()
                slot.shape = inputs.shape
            slot.interpreter.set_tensor(self._input_index, self._quantize(inputs))
            slot.interpreter.invoke()
            # get_tensor returns a copy, so nothing handed back refers to memory the next call overwrites
            return [dequantize_(slot.interpreter.get_tensor(index)) for index, dequantize_ in self._output_steps]
        finally:
            self._idle.put(slot)

    def _borrow(self) -> _Interpreter:
        """An idle interpreter; a new one while fewer than ``max_interpreters`` exist; else wait for one."""
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            pass
        with self._opening:
            grow = self._opened < self.max_interpreters
            self._opened += grow
        if not grow:
            return self._idle.get()
        try:
            return _Interpreter(self._new_interpreter())
        except BaseException:
            with self._opening:
                self._opened -= 1
            raise


def _opened_quietly(interpreter_class, path: Path, threads: int | None):
    """One more interpreter for the pool, allocated at once so that its XNNPACK line goes nowhere (it is printed
    on an interpreter's first allocation only; the redirection is brief and happens at most once per core)."""
    with quiet_stderr():
        interpreter = interpreter_class(model_path=str(path), num_threads=threads)
        interpreter.allocate_tensors()
    return interpreter


class _Interpreter:
    """One LiteRT interpreter and the input shape its tensors are allocated for (None: not yet)."""

    __slots__ = ("interpreter", "shape")

    def __init__(self, interpreter):
        self.interpreter = interpreter
        self.shape: tuple[int, ...] | None = None


def _onnx_shape(shape) -> tuple[int | None, ...]:
    """onnxruntime's shape (ints, and names or None for free dimensions) with None for every free dimension."""
    return tuple(d if isinstance(d, int) and d >= 0 else None for d in shape or ())


def _litert_shape(detail: dict) -> tuple[int | None, ...]:
    """A tensor's shape with unknown (batch) dimensions as None, like onnxruntime's."""
    shape = detail.get("shape_signature")
    if shape is None or len(shape) == 0:
        shape = detail.get("shape", ())
    return tuple(int(d) if d >= 0 else None for d in shape)


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
    """Open a model file with the runtime its suffix calls for (.onnx, .ort -> onnxruntime, .tflite -> LiteRT)."""
    suffix = Path(path).suffix.lower()
    if suffix in (".onnx", ".ort"):  # .ort: onnxruntime's own format (--target mobile), loaded natively
        return OnnxRuntimeBackend(path, input_name, output_names, threads)
    if suffix == ".tflite":
        return LiteRTBackend(path, input_name, output_names, threads)
    raise ModelError(f"{path}: unknown model file type '{suffix}'; expected .onnx, .ort or .tflite")
