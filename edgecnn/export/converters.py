"""Each export format's converter, by name: the registry :func:`edgecnn.export.export_model` walks.

A converter makes its format's file in the staging folder from one :class:`Conversion` (what every converter shares:
the served function, the Keras model, the calibration examples, the targets' hooks, the int8 recipes) and returns
what the manifest's ``files`` entry says of it (precision, runtime, quantization). Export runs the chosen formats'
converters in the manifest's order, so a new format is one registered function here (and its file name in
:data:`edgecnn.manifest.FORMAT_FILES`), not another branch in ``export_model``.

The int8 converters make their file through :meth:`Conversion.make_int8`, which the float fallback
(:mod:`edgecnn.export.fallback`) calls again with layers to keep in float: one recipe for the first file and every
retry, so a retry cannot drift from it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import EdgecnnError, ExportRefusedError
from ..manifest import FORMAT_FILES, FORMATS
from . import targets as export_targets

#: The weight-only TFLite formats: format -> (export_tflite's ``weights``, the manifest's method)
WEIGHT_ONLY_TFLITE = {
    "tflite-fp16": ("float16", "float16 weights, float32 compute (no calibration)"),
    "tflite-dynamic": ("int8", "dynamic range: int8 weights, float activations quantized per batch (no calibration)"),
}
#: The full-integer formats: made by :meth:`Conversion.make_int8`, and re-made by the float fallback
INT8_FORMATS = ("onnx-int8", "tflite-int8")


@dataclass
class Conversion:
    """What the converters of one export share."""

    staging: Path
    serve: object  # the tf.function every converter converts (adapter.serving_fn, as the targets adapted it)
    model: object  # the Keras model (the TFLite converter reads its signature)
    task: str
    labels: list[str]
    input_name: str
    calib: object  # calibration examples, as the served function takes them
    contexts: list  # the --target contexts, whose hooks see each file made
    int8_io: str = "int8"  # the tflite-int8 file's input and output dtype
    metadata: dict | None = None  # TFLite Model Metadata to write into each .tflite file (None: none)
    per_channel: bool = True  # int8 weights per output channel (both int8 formats) or per tensor
    calibration_method: str = "minmax"  # onnx-int8's activation ranges
    onnx_exclude_op_types: tuple[str, ...] = ()  # op types onnx-int8 leaves in float (the run's onnx_int8_exclude)
    say: Callable[[str], None] = lambda message: None

    def path(self, fmt: str) -> Path:
        return self.staging / FORMAT_FILES[fmt]

    def make_int8(self, fmt: str, float_nodes: tuple[str, ...] = ()) -> None:
        """Make (or re-make) the staged ``fmt`` file, the layers ``float_nodes`` kept in float."""
        if fmt == "onnx-int8":
            from .onnx import quantize_onnx

            quantize_onnx(self.path("onnx"), self.path("onnx-int8"), self.input_name, self.calib,
                          exclude_op_types=self.onnx_exclude_op_types, nodes_to_exclude=float_nodes,
                          calibration_method=self.calibration_method, per_channel=self.per_channel)
        elif fmt == "tflite-int8":
            from .tflite import export_tflite

            export_tflite(self.serve, self.model, self.path(fmt), calibration=self.calib, int8=True,
                          float_nodes=float_nodes, int8_io=self.int8_io, metadata=self.metadata,
                          per_channel=self.per_channel)
            export_targets.call(self.contexts, "after_tflite", self.path(fmt), True)
        else:
            raise ValueError(f"{fmt} is not an int8 format ({', '.join(INT8_FORMATS)})")


Converter = Callable[[Conversion], dict]
CONVERTERS: dict[str, Converter] = {}


def converts(fmt: str) -> Callable[[Converter], Converter]:
    """Register the converter of ``fmt`` (a key of :data:`edgecnn.manifest.FORMAT_FILES`)."""
    def register(function: Converter) -> Converter:
        CONVERTERS[fmt] = function
        return function
    return register


def convert(job: Conversion, formats: list[str]) -> dict[str, dict]:
    """Make every chosen format's file in ``job.staging``, in the manifest's order; format -> its ``files`` entry.

    The fp32 ONNX file is made for onnx-int8 too (it is what onnxruntime quantizes); ``export_model`` drops it from
    the manifest, and then the folder, when it was not asked for. A converter's failure is a one-line refusal that
    names the format (:func:`converting`).
    """
    files: dict[str, dict] = {}
    for fmt in FORMATS:
        if fmt in formats or (fmt == "onnx" and "onnx-int8" in formats):
            with converting(fmt, formats):
                files[fmt] = CONVERTERS[fmt](job)
    return files


@contextlib.contextmanager
def converting(fmt: str, formats: list[str]):
    """A converter's own failure (tf2onnx, the TFLite converter, onnxruntime's quantizer) on a model Keras runs is
    a refusal naming the format, in one line, not an internal error: the other formats may still export."""
    try:
        yield
    except EdgecnnError:
        raise
    except Exception as exc:  # converters raise anything, from ValueError to ConverterError
        text = " ".join(str(exc).split())[:200] or type(exc).__name__
        others = [f for f in formats if f != fmt and not (fmt == "onnx" and f == "onnx-int8")]
        hint = f"export the others with --formats {','.join(others)}" if others else "this model cannot be exported"
        raise ExportRefusedError(f"export refused, {fmt}: the converter failed on this model "
                                 f"({type(exc).__name__}: {text}); {hint}") from exc


@converts("onnx")
def onnx_fp32(job: Conversion) -> dict:
    from .onnx import export_onnx, onnx_metadata

    job.say("ONNX fp32 (tf2onnx)")
    export_onnx(job.serve, job.path("onnx"), onnx_metadata(job.task, job.labels))
    export_targets.call(job.contexts, "after_onnx", job.path("onnx"))
    return {"precision": "fp32", "runtime": "onnxruntime"}


@converts("onnx-int8")
def onnx_int8(job: Conversion) -> dict:
    from .onnx import onnx_int8_recipe

    job.say(f"ONNX int8 (onnxruntime static QDQ, {len(job.calib)} calibration examples)")
    job.make_int8("onnx-int8")
    recipe = onnx_int8_recipe(job.calibration_method, job.per_channel)
    return {"precision": "int8", "runtime": "onnxruntime",
            "quantization": {**recipe, "calibration_examples": len(job.calib)}}


def _float_tflite(job: Conversion, fmt: str, weights: str | None = None) -> None:
    """A TFLite file with float compute (fp32, or weights stored as ``weights``), and the targets' hook on it."""
    from .tflite import export_tflite

    export_tflite(job.serve, job.model, job.path(fmt), weights=weights, metadata=job.metadata)
    export_targets.call(job.contexts, "after_tflite", job.path(fmt), False)


@converts("tflite")
def tflite_fp32(job: Conversion) -> dict:
    job.say("TFLite fp32")
    _float_tflite(job, "tflite")
    return {"precision": "fp32", "runtime": "litert"}


@converts("tflite-int8")
def tflite_int8(job: Conversion) -> dict:
    from .tflite import tensor_quantization

    job.say(f"TFLite int8 (full integer, {len(job.calib)} calibration examples)")
    job.make_int8("tflite-int8")
    return {"precision": "int8", "runtime": "litert",
            "quantization": {"method": "full integer (TFLITE_BUILTINS_INT8)",
                             "calibration_examples": len(job.calib), "io": job.int8_io,
                             "weights": "per-channel" if job.per_channel else "per-tensor",
                             **tensor_quantization(job.path("tflite-int8"))}}


def _weight_only(fmt: str) -> Converter:
    weights, method = WEIGHT_ONLY_TFLITE[fmt]

    def tflite_weight_only(job: Conversion) -> dict:
        job.say(f"TFLite {method}")
        _float_tflite(job, fmt, weights)
        return {"precision": "fp16" if weights == "float16" else "dynamic-int8", "runtime": "litert",
                "quantization": {"method": method}}
    return tflite_weight_only


for _fmt in WEIGHT_ONLY_TFLITE:
    converts(_fmt)(_weight_only(_fmt))

__all__ = ["CONVERTERS", "INT8_FORMATS", "WEIGHT_ONLY_TFLITE", "Conversion", "convert", "converting", "converts"]
