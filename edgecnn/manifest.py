"""The ``edgecnn.json`` contract between export and runtime: read, validate, write (stdlib only).

A manifest describes everything the runtime needs to turn user input into the model's input tensor and the model's
outputs into labels or boxes, plus what produced the export and how well it was measured to agree with the source
model. A reader of the manifest alone should be able to reimplement inference; see DESIGN.md for the field list.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import os
from pathlib import Path
from typing import Any

from .errors import ModelError
from .folders import recover_swapped

MANIFEST_NAME = "edgecnn.json"
SCHEMA_VERSION = 1
TASKS = ("image-classification", "text-classification", "object-detection")
#: Format name -> default file name inside an export folder. The order is the order tables list them in.
FORMAT_FILES = {
    "onnx": "model.onnx",
    "onnx-int8": "model.int8.onnx",
    "tflite": "model.tflite",
    "tflite-int8": "model.int8.tflite",
    "tflite-fp16": "model.fp16.tflite",  # float16 weights, float32 compute
    "tflite-dynamic": "model.dynamic.tflite",  # int8 weights, float activations (dynamic range, no calibration)
}
FORMATS = tuple(FORMAT_FILES)
#: Files an export has only when a --target asks (export/targets.py): key -> file name. Not exported by default.
TARGET_FORMAT_FILES = {
    "onnx-mobile": "model.ort",  # --target mobile: batch 1, onnxruntime's ORT format
    "onnx-mobile-int8": "model.int8.ort",
}

# Limits of the contract. A value beyond them is damage to refuse, not a size to attempt: a text sequence length of
# 1e12 would ask numpy for terabytes, an NMS over 10^5 candidates for a 10^10-element IoU matrix.
MAX_IMAGE_SIDE = 4096  #: model input width and height, pixels
MAX_SEQUENCE_LENGTH = 100_000  #: tokens per text
MAX_DETECTIONS = 4096  #: max_detections and pre_nms_top_k (NMS compares every pair of candidates)
MAX_DEPTH = 32  #: nesting of JSON objects and lists (the manifest needs 5)
MAX_JSON_BYTES = 64 << 20  #: edgecnn.json or a vocabulary file (an inline 1M-token vocabulary is ~15 MB)
MAX_SCALE = 1e6  #: |preprocessing.scale| and |offset|: pixels * scale + offset must stay a finite float32
COLOR_MODES = {"L": 1, "RGB": 3}  #: colour mode -> channels
RESIZE_FILTERS = ("nearest", "bilinear", "bicubic", "lanczos", "box")  #: Pillow's, as runtime/image.py maps them
INPUT_DTYPES = {"image-classification": "float32", "text-classification": "int32", "object-detection": "float32"}
#: What a classifier's first output holds: softmax probabilities, logits (the runtime applies softmax), one sigmoid
#: unit (binary: labels [negative, positive]) or one sigmoid per label (multi-label: every label its own score).
CLASSIFIER_OUTPUT_KINDS = ("probabilities", "logits", "sigmoid", "multi-label")
CHANNEL_ORDERS = ("rgb", "bgr")  #: preprocessing.channels_order: bgr = the pixels' channels reversed (caffe)
DETECTOR_OUTPUTS = ("boxes", "scores")


def sha256_of(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_entry(folder: Path, relative: str, **extra: Any) -> dict:
    """The manifest's record of one file: relative path, size and sha256 (plus anything in ``extra``)."""
    path = folder / relative
    return {"path": relative, "size": path.stat().st_size, "sha256": sha256_of(path), **extra}


class Manifest(dict):
    """A validated ``edgecnn.json`` and the folder it lives in.

    It is a plain dict (what json gave) with a few helpers; ``folder`` is the export folder that relative paths in
    it resolve against.
    """

    folder: Path

    @property
    def task(self) -> str:
        return self["task"]

    @property
    def labels(self) -> list[str]:
        return list(self.get("labels", []))

    @property
    def formats(self) -> list[str]:
        """Formats present in this export, in the canonical order."""
        files = self.get("files", {})
        return [f for f in FORMATS if f in files] + [f for f in files if f not in FORMATS]

    def file_path(self, key: str) -> Path:
        """Absolute path of the file recorded under ``files[key]``; refuses paths that leave the folder."""
        try:
            relative = self["files"][key]["path"]
        except KeyError:
            raise ModelError(
                f"{self.folder}: this export has no '{key}' file; it has {', '.join(self.formats) or 'none'}"
            ) from None
        return resolve_inside(self.folder, relative)

    def verify_file(self, key: str) -> Path:
        """Path of ``files[key]`` after checking that it exists and that its sha256 matches the manifest."""
        path = self.file_path(key)
        entry = self["files"][key]
        if not path.is_file():
            raise ModelError(f"{path} is listed in {MANIFEST_NAME} but missing; re-export or copy the whole folder")
        expected = entry.get("sha256")
        if expected and sha256_of(path) != expected:
            raise ModelError(
                f"{path} does not match the sha256 in {MANIFEST_NAME} (changed or truncated); "
                "copy it again or re-run 'edgecnn export'"
            )
        return path


def resolve_inside(folder: Path, relative: str) -> Path:
    """Resolve ``relative`` against ``folder``, refusing absolute paths and paths that climb out of it."""
    candidate = (folder / relative).resolve()
    root = folder.resolve()
    if Path(relative).is_absolute() or (candidate != root and root not in candidate.parents):
        raise ModelError(f"{folder / MANIFEST_NAME}: path '{relative}' leaves the export folder; refusing to use it")
    return candidate


def export_folder_of(path: str | os.PathLike, levels: int = 3) -> Path | None:
    """The export folder ``path`` lies in (itself or one of its ``levels`` nearest parents holds ``edgecnn.json``).

    Why: ``edgecnn infer exported/X/samples/...`` without ``--model`` should run export X, not the default model.
    """
    folder = Path(path).absolute()
    folder = folder if folder.is_dir() else folder.parent
    for candidate in [folder, *folder.parents][: levels + 1]:
        if (candidate / MANIFEST_NAME).is_file():
            return candidate
    return None


def read(folder: str | os.PathLike) -> Manifest:
    """Read and validate ``folder/edgecnn.json``.

    Raises ModelError with advice when the folder or manifest is missing, unreadable, not JSON, from a newer schema,
    or when any field the runtime uses is missing, of the wrong type or out of range (see :func:`validate`).
    """
    folder = Path(folder)
    if folder.is_file() and folder.name == MANIFEST_NAME:
        folder = folder.parent
    recover_swapped(folder)  # an export killed between its two renames: put the previous export back
    path = folder / MANIFEST_NAME
    if not folder.exists():
        raise ModelError(f"model folder {folder} does not exist; pass --model DIR with an export from 'edgecnn export'")
    if not path.is_file():
        raise ModelError(f"{folder} has no {MANIFEST_NAME}; is it an export folder written by 'edgecnn export'?")
    data = load_json(path, "re-run 'edgecnn export'")
    validate(data, path)
    manifest = Manifest(data)
    manifest.folder = folder
    return manifest


def load_json(path: Path, advice: str) -> Any:
    """The JSON in ``path``, or a one-line ModelError whatever is wrong with it.

    Beyond malformed text that covers what ``json.loads`` raises besides JSONDecodeError on hostile input: a
    RecursionError for arrays nested 200,000 deep, a ValueError for an integer of more than 4,300 digits, a
    MemoryError; and a file too big to be a manifest is not read at all.
    """
    try:
        if path.stat().st_size > MAX_JSON_BYTES:
            raise ModelError(f"{path} is larger than {MAX_JSON_BYTES >> 20} MiB, too large to be edgecnn's; {advice}")
        return json.loads(path.read_text(encoding="utf-8"))
    except RecursionError:
        raise ModelError(f"{path} is not valid JSON (nested too deeply); {advice}") from None
    except MemoryError:
        raise ModelError(f"{path} is too large to read (out of memory); {advice}") from None
    except OSError as exc:
        raise ModelError(f"{path} cannot be read ({exc.strerror or exc}); {advice}") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, an integer too long to convert
        raise ModelError(f"{path} is not valid JSON ({_first_line(exc)}); {advice}") from None


def validate(data: Any, where: str | os.PathLike = MANIFEST_NAME) -> None:
    """Check every field the runtime reads from ``data``; raise a ModelError naming the first problem.

    Types, ranges and finiteness of the shared sections: schema, task, labels, input, outputs, preprocessing and
    files (plus the informative ones ``edgecnn info`` shows). The task sections are checked by the code that reads
    them, with the same :class:`Fields`: ``text`` by :meth:`edgecnn.runtime.text.Tokenizer.from_manifest_section`,
    ``detection`` by :meth:`edgecnn.runtime.detection.DecodeSpec.from_section`; the label count against the model
    file's outputs when the file is opened (:class:`edgecnn.runtime.tasks.Task`).
    """
    if not isinstance(data, dict):
        raise ModelError(f"{where}: expected a JSON object, found {describe_value(data)}; re-run 'edgecnn export'")
    _check_depth(data, where)
    schema = data.get("schema")
    if not isinstance(schema, int) or isinstance(schema, bool) or schema < 1:
        raise ModelError(f"{where}: no integer 'schema' field (found {describe_value(schema)}); re-run 'edgecnn export'")
    if schema > SCHEMA_VERSION:
        raise ModelError(
            f"{where} uses manifest schema {schema} but this edgecnn reads up to {SCHEMA_VERSION}; "
            "upgrade edgecnn (pip install -U edgecnn)"
        )
    task = data.get("task")
    if task not in TASKS:
        raise ModelError(f"{where}: unknown task {describe_value(task)}; expected one of {', '.join(TASKS)}")
    top = Fields(data, where)
    labels = top.get("labels", _MISSING)
    if (not isinstance(labels, list) or not labels
            or not all(isinstance(label, str) and _encodable(label) for label in labels)):
        raise top.error("labels", "a non-empty list of strings (one per class)", labels)
    _check_input(top, task)
    outputs = _check_outputs(top, task)
    _check_preprocessing(top, task, data["input"])
    _check_label_count(top, task, labels, outputs)
    _check_files(top)
    _check_informative(top)


_MISSING = object()
_ADVICE = "fix it or re-run 'edgecnn export'"


class Fields:
    """Typed reads of one manifest section, each failure a one-line ModelError naming file, field and value.

    ``Fields(section, where, "detection").integer("stride", 1, 4096)`` returns the stride or raises
    ``edgecnn.json: detection.stride is 0 but must be a whole number from 1 to 4096; ...``. A key that is absent
    returns ``default`` when one is given and is an error otherwise.
    """

    def __init__(self, section: Any, where: str | os.PathLike, name: str = ""):
        if not isinstance(section, dict):
            raise ModelError(f"{where}: the '{name}' section is {describe_value(section)} but must be a JSON object; "
                             f"{_ADVICE}")
        self.section, self.where, self.name = section, where, name

    def path(self, key: str) -> str:
        return f"{self.name}.{key}" if self.name else key

    def error(self, key: str, expected: str, value: Any = _MISSING) -> ModelError:
        """The ModelError for ``key`` (whose value is ``value``, by default the section's) not being ``expected``."""
        if value is _MISSING:
            value = self.section.get(key, _MISSING)
        found = "is missing" if value is _MISSING else f"is {describe_value(value)}"
        return ModelError(f"{self.where}: {self.path(key)} {found} but must be {expected}; {_ADVICE}")

    def get(self, key: str, default: Any = None) -> Any:
        return self.section.get(key, default)

    def _value(self, key: str, default: Any) -> Any:
        value = self.section.get(key, _MISSING)
        return default if value is _MISSING and default is not _MISSING else value

    def section_of(self, key: str) -> Fields:
        return Fields(self.section.get(key, _MISSING), self.where, self.path(key))

    def integer(self, key: str, low: int = 1, high: int | None = None, default: Any = _MISSING) -> int:
        value = self._value(key, default)
        if not _is_integer(value) or value < low or (high is not None and value > high):
            raise self.error(key, _range_text("a whole number", low, high), value)
        return int(value)

    def number(self, key: str, low: float | None = None, high: float | None = None, default: Any = _MISSING,
               nonzero: bool = False) -> float:
        value = self._value(key, default)
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
        if not ok or (low is not None and value < low) or (high is not None and value > high) or (nonzero and
                                                                                                   value == 0):
            raise self.error(key, _range_text("a finite" + (" non-zero" if nonzero else "") + " number", low, high),
                             value)
        return float(value)

    def string(self, key: str, choices: tuple | list | dict | None = None, default: Any = _MISSING) -> str:
        value = self._value(key, default)
        if not isinstance(value, str) or not value or (choices is not None and value not in choices):
            raise self.error(key, f"one of {', '.join(map(repr, choices))}" if choices else "a non-empty string",
                             value)
        return value

    def boolean(self, key: str, default: Any = _MISSING) -> bool:
        value = self._value(key, default)
        if not isinstance(value, bool):
            raise self.error(key, "true or false", value)
        return value

    def integers(self, key: str, count: int, low: int = 1, high: int | None = None) -> tuple[int, ...]:
        value = self.section.get(key, _MISSING)
        if (not isinstance(value, list) or len(value) != count
                or not all(_is_integer(v) and v >= low and (high is None or v <= high) for v in value)):
            raise self.error(key, f"a list of {count} " + _range_text("whole numbers", low, high), value)
        return tuple(int(v) for v in value)


def _is_integer(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _range_text(kind: str, low, high) -> str:
    if low is not None and high is not None:
        return f"{kind} from {low:g} to {high:g}"
    if low is not None:
        return f"{kind} >= {low:g}"
    return f"{kind} <= {high:g}" if high is not None else kind


def describe_value(value: Any) -> str:
    """A JSON value in a few words for an error message: never the whole of a long list or string."""
    if value is _MISSING:
        return "missing"
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if _is_integer(value):
        value = int(value)
        return str(value) if value.bit_length() < 64 else f"a number of {len(hex(value)) * 6 // 5} or so digits"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return repr(value[:40] + "...") if len(value) > 40 else repr(value)
    if isinstance(value, list):
        return f"a list of {len(value)} item{'s' if len(value) != 1 else ''}"
    if isinstance(value, dict):
        return "a JSON object"
    return type(value).__name__


def _first_line(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def _encodable(text: str) -> bool:
    """False for strings with lone surrogates (JSON allows "\\ud800"), which cannot be printed or written."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_depth(data: Any, where) -> None:
    """Refuse lists and objects nested deeper than MAX_DEPTH: whatever walks them later (json.dumps for
    ``edgecnn info --json``, repr) would hit the recursion limit. Iterative, so it cannot itself."""
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ModelError(f"{where}: JSON nested more than {MAX_DEPTH} levels deep; {_ADVICE}")
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values() if isinstance(v, (dict, list)))
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value if isinstance(v, (dict, list)))


def _shape(fields: Fields, key: str, rank: int | None = None) -> list:
    """A tensor shape: null (any batch size: the runtime batches as it likes), then positive whole numbers, or
    null for a dimension the model leaves free."""
    value = fields.get(key, _MISSING)
    if (not isinstance(value, list) or not 2 <= len(value) <= 8 or (rank is not None and len(value) != rank)
            or value[0] is not None or not all(v is None or (_is_integer(v) and 1 <= v <= 1 << 31) for v in value)):
        ranked = f"{rank} " if rank else ""
        raise fields.error(key, f"a tensor shape: a list of {ranked}dimensions, null (the batch) then positive "
                                "whole numbers", value)
    return value


def _check_input(top: Fields, task: str) -> None:
    section = top.section_of("input")
    section.string("name")
    section.string("dtype", (INPUT_DTYPES[task],))
    if "layout" in section.section:
        section.string("layout", ("NHWC",) if task != "text-classification" else None)
    shape = _shape(section, "shape", 2 if task == "text-classification" else 4)
    if task == "text-classification" and (shape[1] is None or shape[1] > MAX_SEQUENCE_LENGTH):
        raise section.error("shape", f"[null, L] with L the text sequence length, at most {MAX_SEQUENCE_LENGTH:,}")


def _check_outputs(top: Fields, task: str) -> list[dict]:
    outputs = top.get("outputs", _MISSING)
    if not isinstance(outputs, list) or not outputs:
        raise top.error("outputs", "a non-empty list of the model's outputs ({name, kind, shape})", outputs)
    names = []
    for i, output in enumerate(outputs):
        fields = Fields(output, top.where, f"outputs[{i}]")
        names.append(fields.string("name"))
        if "kind" in output:
            fields.string("kind", CLASSIFIER_OUTPUT_KINDS if task != "object-detection" and i == 0 else None)
        if "threshold" in output:
            fields.number("threshold", 0.0, 1.0)
        if "shape" in output:
            _shape(fields, "shape")
    if len(set(names)) != len(names):
        raise top.error("outputs", "a list of outputs with different names", outputs)
    if task == "object-detection" and not set(DETECTOR_OUTPUTS) <= set(names):
        raise top.error("outputs", "the detector's outputs, named 'boxes' and 'scores'", outputs)
    return outputs


def _check_preprocessing(top: Fields, task: str, input_section: dict) -> None:
    prep = top.section_of("preprocessing")
    if task == "text-classification":
        prep.string("type", ("text",), default="text")
        return
    prep.string("type", ("image",), default="image")
    width = prep.integer("width", 1, MAX_IMAGE_SIDE)
    height = prep.integer("height", 1, MAX_IMAGE_SIDE)
    mode = prep.string("color_mode", COLOR_MODES)
    channels = prep.integer("channels", 1, 4, default=COLOR_MODES[mode])
    if channels != COLOR_MODES[mode]:
        raise prep.error("channels", f"{COLOR_MODES[mode]}, as color_mode {mode!r} gives")
    for key, default, nonzero in (("scale", 1 / 255, True), ("offset", 0.0, False)):
        if isinstance(prep.get(key), list):  # one per channel (torch, caffe, --mean/--std)
            _per_channel_numbers(prep, key, channels, nonzero)
        else:
            prep.number(key, -MAX_SCALE, MAX_SCALE, default=default, nonzero=nonzero)
    prep.string("channels_order", CHANNEL_ORDERS, default="rgb")
    for key in ("preset", "preset_reason"):
        if key in prep.section:
            prep.string(key)
    prep.string("resize", RESIZE_FILTERS, default="bilinear")
    prep.integer("background", 0, 255, default=0)
    prep.string("polarity", ("none", "auto"), default="none")  # runtime.image.match_polarity
    if prep.string("fit", ("none", "ink"), default="none") == "ink":  # runtime.image.fit_ink
        prep.integer("fit_size", 1, min(width, height), default=min(width, height))
        prep.number("fit_threshold", 0.0, 1.0, default=0.5)
    prep.string("layout", ("NHWC",), default="NHWC")
    if input_section["shape"][1:] != [height, width, channels]:
        raise Fields(input_section, top.where, "input").error(
            "shape", f"[null, {height}, {width}, {channels}] as preprocessing says (height, width, channels)")


def _per_channel_numbers(prep: Fields, key: str, channels: int, nonzero: bool) -> None:
    values = prep.get(key)
    if len(values) != channels or not all(
            isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) and abs(v) <= MAX_SCALE
            and not (nonzero and v == 0) for v in values):
        raise prep.error(key, f"a finite{' non-zero' if nonzero else ''} number or a list of {channels} (one per "
                              f"channel), each from {-MAX_SCALE:g} to {MAX_SCALE:g}", values)


def scores_width(output: dict, labels: list) -> int:
    """How many scores a classifier output with ``labels`` gives: one per label, except one sigmoid unit for the
    two labels [negative, positive] of a binary head."""
    return 1 if output.get("kind") == "sigmoid" else len(labels)


def _check_label_count(top: Fields, task: str, labels: list, outputs: list[dict]) -> None:
    """The manifest's own class-score width (when it records one) must match its labels."""
    scores = outputs[0] if task != "object-detection" else next(o for o in outputs if o["name"] == "scores")
    shape = scores.get("shape")
    if scores.get("kind") == "sigmoid" and len(labels) != 2:
        raise ModelError(f"{top.where}: a one-sigmoid (binary) output needs exactly 2 labels, negative first, but "
                         f"{len(labels)} are listed; {_ADVICE}")
    if shape and shape[-1] is not None and shape[-1] != scores_width(scores, labels):
        raise ModelError(f"{top.where}: lists {len(labels)} labels but its output {scores['name']!r} gives "
                         f"{shape[-1]} class scores; restore the labels of this model or re-run 'edgecnn export'")


def _check_files(top: Fields) -> None:
    files = top.section_of("files")
    if not files.section:
        raise ModelError(f"{top.where}: lists no model files; re-run 'edgecnn export'")
    for key in files.section:
        entry = files.section_of(key)
        path = entry.get("path", _MISSING)
        if not isinstance(path, str) or not path or "\x00" in path:
            raise ModelError(f"{top.where}: files.{key} needs a 'path' (a file name inside the export folder), "
                             f"not {describe_value(path)}; {_ADVICE}")
        if "size" in entry.section:
            entry.integer("size", 0)
        if "sha256" in entry.section:
            sha = entry.get("sha256")
            if not isinstance(sha, str) or len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
                raise entry.error("sha256", "64 lowercase hex digits")
        for text_key in ("precision", "format", "runtime"):
            if text_key in entry.section:
                entry.string(text_key)
        if "verified_in" in entry.section:  # {runtime: version} that ran it at export time; older exports lack it
            verified = entry.section_of("verified_in")
            for runtime in verified.section:
                verified.string(runtime)
        if "float_fallback" in entry.section:  # layers an int8 file keeps in float (export/fallback.py)
            _check_float_fallback(entry.section_of("float_fallback"))


def _check_float_fallback(fallback: Fields) -> None:
    """What ``edgecnn info`` prints of it: the layers (each a name, its SQNR a number or null) and the gate's
    numbers before and after."""
    nodes = fallback.get("nodes", _MISSING)
    if not isinstance(nodes, list) or not nodes or not all(isinstance(node, dict) for node in nodes):
        raise fallback.error("nodes", "a non-empty list of objects (one per layer kept in float)", nodes)
    for index, node in enumerate(nodes):
        layer = Fields(node, fallback.where, fallback.path(f"nodes[{index}]"))
        layer.string("name")
        if layer.get("sqnr_db") is not None:
            layer.number("sqnr_db")
    gate = fallback.section_of("gate") if "gate" in fallback.section else None
    for when in ("before", "after") if gate else ():
        numbers = gate.section_of(when)
        for key, value in numbers.section.items():
            if value is not None:
                numbers.number(key)


def _check_informative(top: Fields) -> None:
    """What ``edgecnn info`` prints besides the runtime fields: a wrong type here must not crash it either."""
    if "name" in top.section:
        top.string("name")
    for key in ("dataset", "versions", "source", "samples", "targets"):
        if key in top.section:
            top.section_of(key)
    for name in top.get("targets", {}):  # per --target notes (export/targets.py): an object each
        top.section_of("targets").section_of(name)
    if "validation" in top.section:
        results = top.section_of("validation").section_of("results")
        for fmt, values in results.section.items():
            measured = results.section_of(fmt)
            for metric, value in values.items():
                if not (value is None or isinstance(value, str) or
                        (isinstance(value, numbers.Real) and not isinstance(value, bool))):
                    raise measured.error(metric, "a number", value)


def write(folder: str | os.PathLike, data: dict) -> Path:
    """Validate ``data`` and write it as ``folder/edgecnn.json`` (sorted keys, stable diffs)."""
    validate(data, Path(folder) / MANIFEST_NAME)
    path = Path(folder) / MANIFEST_NAME
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return path
