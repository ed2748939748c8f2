"""Export targets: ``edgecnn export --target NAME``, what an export changes so that another runtime runs it.

The four usual files are made for edgecnn's own runtime. A target adapts the export to an app's runtime (OpenCV
DNN, onnxruntime mobile, MediaPipe Tasks) without a second exporter: it hooks into the steps ``export_model``
already takes, and every hook is optional:

- ``check(ctx)`` before any conversion: a reason (one sentence) to refuse this model, or None. Cheap only.
- ``serving(ctx, serve)`` before conversion: the ``tf.function`` to convert instead of ``serve`` (graph or
  serving options, e.g. a 3-channel input); it must still compute the same outputs, validation proves it.
- ``model_inputs(ctx, x)`` when ``serving`` changed the input: edgecnn's model inputs (validation's and the int8
  calibration's) as the new function takes them (e.g. a gray channel repeated three times).
- ``int8_io(ctx, asked)``: the tflite-int8 file's input/output dtype the target's runtime needs, given the asked one.
- ``after_onnx(ctx, path)`` right after the fp32 ONNX file is written and BEFORE int8 quantization reads it, so
  a graph rewrite reaches the int8 file too.
- ``after_tflite(ctx, path, int8)`` after each ``.tflite`` file is written (e.g. metadata).
- ``extra_files(ctx)`` after the usual files were validated (an int8 file re-made by the float fallback is final
  by then): write more files into ``ctx.staging`` and return ``{key: entry}`` for the manifest's ``files``
  (entry: ``path`` plus ``precision``/``runtime``); they are then validated like the others.
- ``verify(ctx, manifest)`` after validation passed: run the files in the target's runtime when it is importable
  here; returns ``{file key: {runtime: version}}`` (merged into each file's ``verified_in``) and may record notes
  (e.g. a file the runtime cannot run) in ``ctx.notes``, which becomes ``manifest["targets"][name]``. A file the
  runtime runs wrongly is a refusal (raise ExportRefusedError) unless the target records it as skipped.

To add a target: write a module with its hooks and add one ``Target(...)`` line to :data:`TARGETS` (imports stay
inside the hooks, so listing targets loads nothing heavy).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..errors import InputError


@dataclass
class TargetContext:
    """What a target's hooks see and share: one per target per export."""

    name: str
    staging: Path  #: the folder the export is written into (renamed into place at the end)
    run: dict  #: the run record: task, model, preprocessing, ...
    sections: dict  #: the manifest sections the adapter wrote (task, labels, input, outputs, preprocessing)
    formats: list[str]  #: the formats asked for
    files: dict = field(default_factory=dict)  #: file key -> manifest entry so far (precision, runtime, ...)
    notes: dict = field(default_factory=dict)  #: what the target records in manifest["targets"][name]
    say: Callable[[str], None] = lambda message: None
    inputs: Any = None  #: held-out model inputs (validation's), for verification
    reference: Any = None  #: the Keras outputs on ``inputs``


@dataclass(frozen=True)
class Target:
    name: str
    summary: str  #: one line for --help and the README
    module: str  #: the module (inside edgecnn.export) holding the hooks, imported only when used
    hooks: tuple[str, ...] = ()  #: the hooks (see the module docstring) its module defines

    def hook(self, name: str) -> Callable | None:
        if name not in self.hooks:
            return None
        return getattr(importlib.import_module(f"edgecnn.export.{self.module}"), name)


#: The targets by name. Another runtime = one more line here and a module with its hooks.
TARGETS: dict[str, Target] = {t.name: t for t in (
    Target("opencv", "ONNX files OpenCV DNN (cv2.dnn.readNetFromONNX, 4.10+ and 5.x) loads and runs",
           "opencv", ("check", "after_onnx", "verify")),
    Target("mobile", "onnxruntime mobile: batch fixed at 1, ORT-format files (.ort) and the mobile usability check",
           "mobile", ("check", "extra_files", "verify")),
    Target("mediapipe", "MediaPipe Tasks' ImageClassifier: 3-channel input, float I/O for the int8 file, metadata",
           "mediapipe", ("check", "serving", "model_inputs", "int8_io", "after_tflite", "verify")),
)}


def check_names(names: list[str] | None) -> list[str]:
    """The requested target names, deduplicated in order; an unknown one is an InputError (before anything slow)."""
    chosen: list[str] = []
    for name in names or []:
        name = name.strip().lower()
        if name not in TARGETS:
            raise InputError(f"unknown --target {name!r}; choose from {', '.join(TARGETS)} (or leave it out for "
                             "edgecnn's own files)")
        if name not in chosen:
            chosen.append(name)
    return chosen


def call(contexts: list[TargetContext], hook: str, *args) -> list[Any]:
    """Call ``hook`` of every chosen target that has it, in order; the results in a list."""
    results = []
    for ctx in contexts:
        function = TARGETS[ctx.name].hook(hook)
        if function is not None:
            results.append(function(ctx, *args))
    return results


def _chained(contexts: list[TargetContext], hook: str, value):
    """``value`` passed through ``hook`` of every chosen target that has it, in order (each sees the last one's)."""
    for ctx in contexts:
        function = TARGETS[ctx.name].hook(hook)
        if function is not None:
            value = function(ctx, value)
    return value


def model_inputs(contexts: list[TargetContext], x):
    """edgecnn's model inputs as the served function takes them, after every target that changed its input."""
    return _chained(contexts, "model_inputs", x)


def int8_io(contexts: list[TargetContext], asked: str) -> str:
    """The tflite-int8 file's I/O dtype: the asked one, unless a target's runtime cannot take it."""
    return _chained(contexts, "int8_io", asked)


def serving(contexts: list[TargetContext], serve):
    """The serving function after every target that changes it had its say."""
    return _chained(contexts, "serving", serve)
