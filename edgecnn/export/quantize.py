"""Per-layer quantization error of an export's int8 files against their fp32 siblings (``edgecnn quantize-report``).

The export's gates say *that* an int8 file disagrees with Keras; this says *where*. Each int8 file (onnx-int8,
tflite-int8, and tflite-dynamic, whose weights are int8) is run beside its fp32 sibling on held-out examples and
every tensor the two share is compared:

- ``sqnr_db``, the tensor's own quantization (what ranks it): the fp32 file's value at that tensor against itself
  put through the int8 file's scale and zero point for it, i.e. how much of the real signal survives this one
  grid. (The QDQ graph's own value before its QuantizeLinear, qdq_loss_debug's ``qdq_err``, would count a ReLU
  fused into the quantization as error; it is used only for ONNX tensors without an fp32 twin.) Weights and
  biases: float against dequantized.
- ``fp32_sqnr_db`` and ``max_abs_error``: the int8 file's dequantized value against the fp32 file's at the same
  tensor, i.e. every error accumulated up to there (qdq_loss_debug's ``xmodel_err``).

Rows are ranked by their own error, worst first, because accumulated error grows towards the outputs for every
layer alike: a bad scale early on shows up downstream everywhere, but only its own layer has a bad grid. Each row
names its ``layer``: the ONNX node (a ``nodes_to_exclude`` entry for onnxruntime's quantizer) or the TFLite op's
output tensor (a ``denylisted_nodes`` entry for ``tf.lite.experimental.QuantizationDebugOptions``); a weight's
layer is the op that uses it. :func:`worst_layers` turns rows into that list.

TFLite is measured from the two ``.tflite`` files alone (interpreters that keep every tensor, matched by name,
dequantized with each tensor's own parameters), never with ``tf.lite.experimental.QuantizationDebugger``: the
debugger re-converts and re-calibrates the model from Keras, so it describes a new int8 model rather than the file
that ships, and it needs the source ``.keras`` file, which a copied export does not have.

SQNR = 20 log10(||reference|| / ||reference - quantized||), qdq_loss_debug's formula, accumulated over batches.
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from .. import manifest as manifest_io
from ..errors import EdgecnnError, InputError, ModelError, require

DEFAULT_EXAMPLES = 64
#: int8 format -> the fp32 format it is measured against
FP32_SIBLING = {"onnx-int8": "onnx", "tflite-int8": "tflite", "tflite-dynamic": "tflite"}
#: the SQNR of a tensor quantized without any error at all (all zeros, or values exactly on the grid)
EXACT_SQNR_DB = 200.0
_QUANT_INPUT = "_QuantizeLinear_Input"  # onnxruntime's name for a graph output's tensor before its QuantizeLinear
_QUANT_WEIGHT = "_quantized"  # and for a quantized initializer
METHODS = {
    "onnx-int8": ("onnxruntime.quantization.qdq_loss_debug: the QDQ graph, unfused, beside the fp32 graph, every "
                  "float tensor saved and matched by name"),
    "tflite-int8": ("two LiteRT interpreters keeping every tensor (fp32 and int8 files), tensors matched by name, "
                    "int8 values dequantized with their own scale and zero point"),
    "tflite-dynamic": ("two LiteRT interpreters keeping every tensor (fp32 and dynamic-range files), tensors matched "
                       "by name: int8 weights dequantized with their own scales; activations are float32 (quantized "
                       "on the fly inside each op, no stored grid), so their own error is the error vs fp32"),
}


def quantization_report(model_dir: str | os.PathLike, formats: list[str] | None = None,
                        examples: int = DEFAULT_EXAMPLES, progress: Callable[[str], None] | None = None) -> dict:
    """The ``edgecnn quantize-report`` data: per int8 file, its layers' errors against fp32, worst first.

    Args:
        model_dir: an export folder.
        formats: int8 formats to report (default: every int8 file of the export).
        examples: how many held-out examples (the manifest's split, first ones) to run.
        progress: called with a short message before each file.

    Returns ``{"model", "task", "split", "examples", "files": {fmt: {"file", "reference", "method", "layers"}}}``;
    a file that cannot be measured has ``{"error": ...}`` instead of layers.

    Example::

        report = quantization_report("exported/digits-cnn", examples=32)
        print(worst_layers(report["files"]["onnx-int8"]["layers"], 3))
    """
    from ..evaluate import heldout

    if examples < 1:
        raise InputError(f"--examples {examples}: give at least 1 held-out example")
    manifest = manifest_io.read(model_dir)
    int8 = [f for f in manifest.formats if f in FP32_SIBLING]
    formats = formats or int8
    unknown = [f for f in formats if f not in FP32_SIBLING]
    if unknown:
        raise InputError(f"{unknown[0]!r} is not an int8 format; choose from {', '.join(FP32_SIBLING)}")
    missing = [f for f in formats if f not in int8]
    if missing:
        raise ModelError(f"{manifest.folder} has no {missing[0]} file; it has {', '.join(manifest.formats)}")
    inputs, _ = heldout(manifest)
    inputs = inputs[:examples]
    files = {}
    for fmt in formats:
        sibling = FP32_SIBLING[fmt]
        if progress:
            progress(f"{fmt} against {sibling} on {len(inputs)} held-out examples")
        if sibling not in manifest.formats:
            files[fmt] = {"error": f"the export has no {sibling} file to compare {fmt} with; re-export with both"}
            continue
        int8_path, fp32_path = manifest.verify_file(fmt), manifest.verify_file(sibling)
        files[fmt] = {"file": int8_path.name, "reference": fp32_path.name, "method": METHODS[fmt],
                      "layers": layer_errors(int8_path, fp32_path, inputs)}
    dataset = manifest.get("dataset") or {}
    return {"model": str(manifest.folder), "task": manifest.task, "split": dataset.get("split", "test"),
            "examples": len(inputs), "files": files}


def layer_errors(int8_path: str | os.PathLike, fp32_path: str | os.PathLike, inputs: np.ndarray,
                 batch_size: int = 8) -> list[dict]:
    """Every shared tensor's error, worst own SQNR first, for one int8 file (``.onnx`` or ``.tflite``) and its
    fp32 sibling, on ``inputs`` (float model inputs, or int32 token ids), ``batch_size`` at a time.

    Needs no manifest, so export can call it on staged files. Each row: ``layer``, ``op``, ``tensor``, ``kind``
    (activation, weight, bias or input), ``sqnr_db``, ``fp32_sqnr_db``, ``max_abs_error`` (None where the fp32
    file has no such tensor).
    """
    int8_path, fp32_path = Path(int8_path), Path(fp32_path)
    batches = [inputs[i:i + batch_size] for i in range(0, len(inputs), batch_size)]
    if not batches:
        raise InputError("no examples to measure the quantization error on")
    measure = _onnx_errors if int8_path.suffix == ".onnx" else _tflite_errors
    rows = [error.row() for error in measure(int8_path, fp32_path, batches)]
    return sorted(rows, key=lambda row: (row["sqnr_db"], row["fp32_sqnr_db"] if row["fp32_sqnr_db"] is not None
                                         else math.inf))


def worst_layers(rows: list[dict], count: int | None = None) -> list[str]:
    """Layer names, worst first, each once: onnxruntime ``nodes_to_exclude`` for ONNX rows, TFLite
    ``denylisted_nodes`` for TFLite rows. Inputs are left out (the model input cannot stay float)."""
    names: list[str] = []
    for row in rows:
        if row["kind"] != "input" and row["layer"] not in names:
            names.append(row["layer"])
    return names[:count] if count is not None else names


def feeding_layers(int8_path: str | os.PathLike) -> dict[str, list[str]]:
    """Each layer of an int8 file -> the layers whose outputs it reads (past Quantize/Dequantize ops), named as
    :func:`worst_layers` names them.

    Why: keeping one layer in float does not keep its *input* in float. The layer that produces that input still
    writes it on its own int8 grid, so a grid ruined by extreme-range activations (seen as the reading layer's bad
    bias, whose scale is input scale x weight scale) survives until the producer is kept in float too.
    """
    path = Path(int8_path)
    return _onnx_feeders(path) if path.suffix == ".onnx" else _tflite_feeders(path)


def _onnx_feeders(path: Path) -> dict[str, list[str]]:
    require("onnx", "train", "the ONNX quantization report")
    import onnx

    graph = onnx.load(str(path)).graph
    producers = {out: node for node in graph.node for out in node.output}
    feeders: dict[str, list[str]] = {}
    for node in graph.node:
        if node.op_type in _QDQ_OPS:
            continue
        for name in node.input:
            source = producers.get(name)
            while source is not None and source.op_type in _QDQ_OPS:
                source = producers.get(source.input[0])
            if source is not None and source.name not in feeders.setdefault(node.name, []):
                feeders[node.name].append(source.name)
    return feeders


def _tflite_feeders(path: Path) -> dict[str, list[str]]:
    from ..runtime.backends import import_litert_interpreter

    interpreter = import_litert_interpreter()(model_path=str(path))
    ops = interpreter._get_ops_details()  # private, but what TFLite's own QuantizationDebugger reads too
    names = {t["index"]: t["name"] for t in interpreter.get_tensor_details()}
    producer = {int(out): op for op in ops for out in op["outputs"]}
    feeders: dict[str, list[str]] = {}
    for op in ops:
        if op["op_name"] in _QDQ_OPS or not len(op["outputs"]):
            continue
        layer = feeders.setdefault(names[int(op["outputs"][0])], [])
        for index in op["inputs"]:
            source = producer.get(int(index))
            while source is not None and source["op_name"] in _QDQ_OPS:
                source = producer.get(int(source["inputs"][0]))
            if source is not None and names[int(source["outputs"][0])] not in layer:
                layer.append(names[int(source["outputs"][0])])
    return feeders


_QDQ_OPS = ("QuantizeLinear", "DequantizeLinear", "QUANTIZE", "DEQUANTIZE")


# --- one tensor's error, accumulated over batches ------------------------------------------------------------------

class _TensorError:
    """Signal and noise energies of one tensor, summed over batches, so SQNR needs no stored activations."""

    def __init__(self, layer: str, op: str, tensor: str, kind: str):
        self.layer, self.op, self.tensor, self.kind = layer, op, tensor, kind
        self.own = [0.0, 0.0]  # signal, noise of the tensor's own quantization
        self.fp32: list[float] | None = None  # signal, noise against the fp32 file
        self.max_abs: float | None = None

    def add_own(self, before: np.ndarray, after: np.ndarray) -> None:
        _accumulate(self.own, before, after)

    def add_fp32(self, reference: np.ndarray, value: np.ndarray) -> None:
        self.fp32 = self.fp32 or [0.0, 0.0]
        _accumulate(self.fp32, reference, value)
        worst = float(np.max(np.abs(reference.astype(np.float64) - value))) if reference.size else 0.0
        self.max_abs = max(self.max_abs or 0.0, worst)

    def row(self) -> dict:
        return {"layer": self.layer, "op": self.op, "tensor": self.tensor, "kind": self.kind,
                "sqnr_db": sqnr_db(*self.own), "fp32_sqnr_db": sqnr_db(*self.fp32) if self.fp32 else None,
                "max_abs_error": self.max_abs}


def _accumulate(energies: list[float], reference: np.ndarray, value: np.ndarray) -> None:
    reference = np.asarray(reference, dtype=np.float64).ravel()
    energies[0] += float(reference @ reference)
    noise = reference - np.asarray(value, dtype=np.float64).ravel()
    energies[1] += float(noise @ noise)


def sqnr_db(signal: float, noise: float) -> float:
    """20 log10(||x|| / ||x - y||) from the two squared norms, floored at float epsilon as qdq_loss_debug does;
    a tensor quantized without error reads ``EXACT_SQNR_DB`` (not infinity, and not 0 dB for an all-zero one)."""
    if noise == 0.0:
        return EXACT_SQNR_DB
    epsilon = np.finfo(float).eps
    return min(EXACT_SQNR_DB, 20 * math.log10(max(math.sqrt(signal), epsilon) / max(math.sqrt(noise), epsilon)))


# --- ONNX: onnxruntime.quantization.qdq_loss_debug ----------------------------------------------------------------

def _onnx_errors(int8_path: Path, fp32_path: Path, batches: list[np.ndarray]) -> Iterable[_TensorError]:
    require("onnx", "train", "the ONNX quantization report")
    import logging

    import onnx
    from onnx import numpy_helper
    from onnxruntime.quantization import qdq_loss_debug as qdq

    graph = onnx.load(str(int8_path)).graph
    input_name = graph.input[0].name
    constants = {init.name: init for init in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    grids = {}  # activation name (as qdq_loss_debug matches it) -> (scale, zero point, layer node or None)
    for node in graph.node:
        if node.op_type == "QuantizeLinear" and node.input[1] in constants and node.input[2] in constants:
            name = node.input[0].removesuffix(_QUANT_INPUT)
            grids[name] = (numpy_helper.to_array(constants[node.input[1]]),
                           numpy_helper.to_array(constants[node.input[2]]), producers.get(node.input[0]))
    errors: dict[str, _TensorError] = {}
    with tempfile.TemporaryDirectory() as scratch:
        saving = {}
        for key, path in (("int8", int8_path), ("fp32", fp32_path)):
            saving[key] = str(Path(scratch) / f"{key}.onnx")
            qdq.modify_model_output_intermediate_tensors(str(path), saving[key])
        for batch in batches:
            feeds = [{input_name: batch}]
            collected = {key: qdq.collect_activations(path, iter(feeds)) for key, path in saving.items()}
            for name, match in qdq.create_activation_matching(collected["int8"], collected["fp32"]).items():
                scale, zero_point, node = grids.get(name, (None, None, producers.get(name)))
                if name not in errors:
                    errors[name] = _TensorError(node.name if node is not None else name,
                                                node.op_type if node is not None else "input", name,
                                                "activation" if node is not None else "input")
                references = match.get("float")
                if references and scale is not None:  # the fp32 value on this tensor's own grid
                    for reference in references:
                        errors[name].add_own(reference, _fake_quantize(reference, scale, zero_point))
                else:  # no fp32 twin: the QDQ graph's own value before and after its Q/DQ pair (qdq_err)
                    for before, after in zip(match["pre_qdq"], match["post_qdq"]):
                        errors[name].add_own(before, after)
                for reference, value in zip(references or (), match["post_qdq"]):
                    errors[name].add_fp32(reference, value)
    root = logging.getLogger()
    level, root.level = root.level, logging.CRITICAL  # a weight the fp32 file lacks is logged, not raised
    try:
        weights = qdq.create_weight_matching(str(fp32_path), str(int8_path))
    finally:
        root.setLevel(level)
    for name, match in weights.items():
        dequantize = next((n for n in consumers.get(name + _QUANT_WEIGHT, ()) if n.op_type == "DequantizeLinear"),
                          None)
        if dequantize is None:
            continue
        user = next(iter(consumers.get(dequantize.output[0], ())), None)
        reference = np.asarray(match["float"])
        kind = "bias" if reference.ndim == 1 else "weight"
        error = _TensorError(user.name if user is not None else name, user.op_type if user is not None else "-",
                             name, kind)
        # Dequantized here rather than taken from match["dequantized"]: qdq_loss_debug subtracts the zero point in
        # the integer type (onnxruntime 1.32), which wraps around for every constant with a non-zero zero point.
        value = _dequantize_node(dequantize, constants, numpy_helper)
        error.add_own(reference, value)
        error.add_fp32(reference, value)
        errors["weight:" + name] = error
    return errors.values()


def _dequantize_node(node, constants: dict, numpy_helper) -> np.ndarray:
    """What a DequantizeLinear node of constants computes, in float64: (q - zero point) * scale, per axis."""
    arrays = [numpy_helper.to_array(constants[name]).astype(np.float64) for name in node.input]
    values, scale = arrays[0], arrays[1]
    zero_point = arrays[2] if len(arrays) > 2 else np.zeros_like(scale)
    if scale.size > 1:
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1) % values.ndim
        shape = [1] * values.ndim
        shape[axis] = scale.size
        scale, zero_point = scale.reshape(shape), zero_point.reshape(shape)
    return (values - zero_point) * scale


def _fake_quantize(values: np.ndarray, scale: np.ndarray, zero_point: np.ndarray) -> np.ndarray:
    """``values`` through QuantizeLinear and DequantizeLinear with one (per-tensor) scale and zero point."""
    info = np.iinfo(zero_point.dtype)
    scale, zero_point = float(scale.reshape(-1)[0]), float(zero_point.reshape(-1)[0])
    return (np.clip(np.rint(values / scale) + zero_point, info.min, info.max) - zero_point) * scale


# --- TFLite: the two files, every tensor kept ---------------------------------------------------------------------

def _tflite_errors(int8_path: Path, fp32_path: Path, batches: list[np.ndarray]) -> Iterable[_TensorError]:
    from ..runtime.backends import import_litert_interpreter

    interpreter_class = import_litert_interpreter()
    # Without delegates: XNNPACK would run whole subgraphs as one DELEGATE op and never write their intermediate
    # tensors back, so there would be nothing to compare but the outputs.
    builtin = sys.modules[interpreter_class.__module__].OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES

    def open_(path: Path) -> _Graph:
        return _Graph(interpreter_class(model_path=str(path), experimental_preserve_all_tensors=True,
                                        experimental_op_resolver_type=builtin))

    with warnings.catch_warnings():  # "experimental_preserve_all_tensors ... for debugging purposes only": we are
        warnings.simplefilter("ignore")
        try:
            fp32, int8 = open_(fp32_path), open_(int8_path)
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"{int8_path} or {fp32_path} could not be loaded by LiteRT "
                             f"({str(exc).splitlines()[0]}); copy or export them again") from None
    # A dynamic-range file (tflite-dynamic) stores no activation grid: its float activations are compared as they
    # are, their own error being the error against fp32, beside its int8 weights.
    weight_only = not any(int8.kind(index) == "activation" and detail["quantization_parameters"]["scales"].size
                          for index, detail in int8.details.items())
    pairs = [(detail, fp32.by_key.get(key)) for key, detail in int8.by_key.items()
             if detail["quantization_parameters"]["scales"].size
             or (weight_only and int8.kind(detail["index"]) == "activation")]
    pairs = [(q, f) for q, f in pairs if f is not None and np.dtype(f["dtype"]).kind == "f"]
    errors = {q["index"]: _TensorError(*int8.describe(q), q["name"], int8.kind(q["index"])) for q, _ in pairs}
    for number, batch in enumerate(batches):
        fp32.run(batch)
        int8.run(batch)
        for q, f in pairs:
            if number and int8.kind(q["index"]) in ("weight", "bias"):
                continue  # constants: once is enough
            reference = fp32.interpreter.get_tensor(f["index"])
            params = q["quantization_parameters"]
            if params["scales"].size:
                value = _dequantize(int8.interpreter.get_tensor(q["index"]), params)
                errors[q["index"]].add_own(reference, _dequantize(_quantize(reference, params, q["dtype"]), params))
            else:  # a float activation of a dynamic-range file
                value = int8.interpreter.get_tensor(q["index"])
                errors[q["index"]].add_own(reference, value)
            errors[q["index"]].add_fp32(reference, value)
    return errors.values()


class _Graph:
    """A LiteRT interpreter with its tensors keyed by (name, constant or not, shape without batch) and each op's
    output names. Names are keyed as edgecnn writes them (:func:`edgecnn.export.tflite.short_name`), so a file
    written with the converter's long names still matches one written with short ones."""

    def __init__(self, interpreter):
        self.interpreter = interpreter
        interpreter.allocate_tensors()
        self.input = interpreter.get_input_details()[0]
        self.shape: tuple[int, ...] | None = None
        ops = interpreter._get_ops_details()  # private, but what TFLite's own QuantizationDebugger reads too
        self.producer = {int(out): op for op in ops for out in op["outputs"]}
        self.user = {}
        for op in ops:
            for index in op["inputs"]:
                self.user.setdefault(int(index), op)
        self.details = {t["index"]: t for t in interpreter.get_tensor_details()}
        self.by_key = {}
        from .tflite import short_name

        for detail in self.details.values():
            shape = tuple(int(d) for d in detail["shape"])
            flowing = self.kind(detail["index"]) in ("activation", "input")
            key = (short_name(detail["name"]), flowing, shape[1:] if flowing else shape)
            self.by_key.setdefault(key, detail)

    def kind(self, index: int) -> str:
        if index == self.input["index"]:
            return "input"
        if index in self.producer:
            return "activation"
        return "bias" if np.dtype(self.details[index]["dtype"]) == np.int32 else "weight"

    def describe(self, detail: dict) -> tuple[str, str]:
        """(layer, op): the op's output tensor name for denylists; a constant belongs to the op that uses it."""
        index = detail["index"]
        if index == self.input["index"]:
            return detail["name"], "input"
        op = self.producer.get(index) or self.user.get(index)
        if op is None:
            return detail["name"], "-"
        return self.details[int(op["outputs"][0])]["name"], op["op_name"]

    def run(self, batch: np.ndarray) -> None:
        if batch.shape != self.shape:
            self.interpreter.resize_tensor_input(self.input["index"], list(batch.shape))
            self.interpreter.allocate_tensors()
            self.shape = batch.shape
        params = self.input["quantization_parameters"]
        dtype = np.dtype(self.input["dtype"])
        feed = _quantize(batch, params, dtype) if params["scales"].size and dtype.kind == "i" else batch
        self.interpreter.set_tensor(self.input["index"], feed.astype(dtype, copy=False))
        self.interpreter.invoke()


def _broadcast(params: dict, ndim: int) -> tuple[np.ndarray, np.ndarray]:
    """Scale and zero point shaped to broadcast against a tensor of ``ndim`` (per-channel along its axis)."""
    scales = np.asarray(params["scales"], dtype=np.float64)
    zero_points = np.asarray(params["zero_points"], dtype=np.float64)
    if scales.size == 1:
        return scales.reshape(()), zero_points.reshape(())
    shape = [1] * ndim
    shape[int(params.get("quantized_dimension", 0))] = scales.size
    return scales.reshape(shape), zero_points.reshape(shape)


def _dequantize(values: np.ndarray, params: dict) -> np.ndarray:
    scale, zero_point = _broadcast(params, values.ndim)
    return (values.astype(np.float64) - zero_point) * scale


def _quantize(values: np.ndarray, params: dict, dtype) -> np.ndarray:
    info = np.iinfo(np.dtype(dtype))
    scale, zero_point = _broadcast(params, values.ndim)
    return np.clip(np.rint(values / scale) + zero_point, info.min, info.max).astype(dtype)


# --- presentation -------------------------------------------------------------------------------------------------

def report_text(report: dict, top: int = 10) -> str:
    """The terminal form: per file, a line saying what was compared and how, then its ``top`` worst rows."""
    from ..report import table

    lines = [(f"{report['model']}: {report['task']}, {report['examples']} {report['split']}-split examples; "
              "layers ranked by their own quantization error (SQNR dB, lower is worse)")]
    for fmt, data in report["files"].items():
        lines.append("")
        if "error" in data:
            lines.append(f"{fmt}: {data['error']}")
            continue
        rows = data["layers"][:top] if top else data["layers"]
        lines.append(f"{data['file']} vs {data['reference']} ({len(data['layers'])} tensors; {data['method']})")
        lines.append(table(["#", "layer", "op", "kind", "SQNR dB", "vs fp32 dB", "max |err| vs fp32"],
                           [[i + 1, _short(r["layer"]), r["op"], r["kind"], r["sqnr_db"], r["fp32_sqnr_db"],
                             r["max_abs_error"]] for i, r in enumerate(rows)]))
    return "\n".join(lines)


def _short(name: str, width: int = 60) -> str:
    """TFLite names fused ops by every TensorFlow op in them, joined by ';': the first says which layer it is."""
    name = name.split(";")[0].split("#")[0]  # and edgecnn's short names: "first op#hash"
    return name if len(name) <= width else "…" + name[-(width - 1):]


def plot(report: dict, path: str | os.PathLike, top: int = 12) -> Path:
    """A PNG with one horizontal bar chart per int8 file: the ``top`` worst layers' own SQNR and SQNR vs fp32."""
    require("matplotlib", "train", "--plot")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = {fmt: data for fmt, data in report["files"].items() if data.get("layers")}
    if not files:
        raise EdgecnnError("no int8 file could be measured, so there is nothing to plot")
    fig, axes = plt.subplots(1, len(files), figsize=(6.4 * len(files), 0.3 * top + 1.9), squeeze=False)
    for axis, (fmt, data) in zip(axes[0], files.items()):
        rows = data["layers"][:top][::-1]
        positions = np.arange(len(rows))
        own = [r["sqnr_db"] for r in rows]
        axis.barh(positions + 0.2, own, height=0.4, color="#c44e52", label="own grid")
        axis.barh(positions - 0.2, [r["fp32_sqnr_db"] or 0.0 for r in rows], height=0.4, color="#a0a0a0",
                  label="vs fp32 (accumulated)")
        for y, value in zip(positions, own):
            axis.annotate(f"{value:.1f}", (value, y + 0.2), xytext=(2, 0), textcoords="offset points",
                          va="center", fontsize=6)
        axis.set_yticks(positions, [f"{_short(r['layer'], 40)} ({r['kind'][0]})" for r in rows], fontsize=7)
        axis.set_xlabel("SQNR, dB (lower is worse)")
        axis.set_xlim(0, max(own + [r["fp32_sqnr_db"] or 0.0 for r in rows]) * 1.12)
        axis.set_title(f"{data['file']}: worst {len(rows)} of {len(data['layers'])} tensors", fontsize=9)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper right", ncol=2, fontsize=7, frameon=False)
    fig.suptitle(f"{Path(report['model']).name}: quantization error per layer on {report['examples']} held-out "
                 "examples; (a) activation, (w) weight, (b) bias", fontsize=9, x=0.01, ha="left")
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    from ..figures import save_figure

    return save_figure(fig, path, dpi=96)
