"""Damaged manifests: every field the runtime uses is checked when an export is opened.

Each damaged copy of a committed export must be refused by ``edgecnn.load`` with a one-line ModelError naming the
field, and by ``edgecnn infer`` with exit 2 and exactly one stderr line ``error: ...``; never a KeyError,
ZeroDivisionError, MemoryError or RecursionError, never an answer computed from NaN or another model's labels.
A hypothesis fuzz test mutates the committed manifests at random (fixed seed, bounded budget) and asserts that
loading, one inference and ``edgecnn info`` either work or raise an EdgecnnError.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

import edgecnn
from edgecnn import manifest as manifest_io
from edgecnn.errors import EdgecnnError, ModelError
from edgecnn.runtime.text import TextFile

from .conftest import reference_export, run_cli

MAKE_TARGETS = {"digits-cnn": "export-digits", "bbc-news": "export-text", "digit-detector": "export-detector"}


def _set(path: str, value):
    """A mutation setting ``path`` (dotted; list indices as numbers) to ``value``; ``DELETE`` removes it."""
    def mutate(data: dict) -> None:
        *parents, last = path.split(".")
        node = data
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        if isinstance(node, list):
            last = int(last)
        if value is DELETE:
            del node[last]
        else:
            node[last] = value
    return mutate


DELETE = object()


def _both(*mutations):
    def mutate(data: dict) -> None:
        for mutation in mutations:
            mutation(data)
    return mutate


def _raw(edit):
    """A mutation of the manifest's text itself (what json.dumps cannot write)."""
    edit.raw = True
    return edit


def _nest_dataset(depth: int):
    return _raw(lambda text: text.replace('"dataset": {', '"dataset": ' + "[" * depth + "]" * depth + ', "x": {', 1))


#: (export, mutation, words the error must contain). The first group is the issue's list.
DAMAGED = {
    "missing preprocessing width": ("digits-cnn", _set("preprocessing.width", DELETE), "preprocessing.width"),
    "labels as a number": ("digits-cnn", _set("labels", 10), "labels"),
    "text sequence length 1e12": ("bbc-news", _set("text.sequence_length", 1e12), "text.sequence_length"),
    "text sequence length 10**12": ("bbc-news", _set("text.sequence_length", 10**12), "text.sequence_length"),
    "detection input size [0, 0]": ("digit-detector", _set("detection.input_size", [0, 0]), "detection.input_size"),
    "detection stride 0": ("digit-detector", _set("detection.stride", 0), "detection.stride"),
    "NaN preprocessing scale": ("digits-cnn", _set("preprocessing.scale", math.nan), "preprocessing.scale"),
    "NaN detection threshold": ("digit-detector", _set("detection.score_threshold", math.nan),
                                "detection.score_threshold"),
    "JSON nested 200,000 deep": ("digits-cnn", _nest_dataset(200_000), "nested too deeply"),
    "3 labels for 10 outputs": ("digits-cnn", _set("labels", list("abc")), "3 labels"),
    "0 labels for 10 outputs": ("digits-cnn", _set("labels", []), "labels"),
    "100 labels for 10 outputs": ("digits-cnn", _set("labels", [str(i) for i in range(100)]), "100 labels"),
    # the same, with the manifest's own output shape edited to agree: only the model file can tell
    "3 labels, outputs.shape edited": ("digits-cnn", _both(_set("labels", list("abc")),
                                                           _set("outputs.0.shape", [None, 3])), "3 labels"),
    "100 labels, outputs.shape edited": ("digits-cnn", _both(_set("labels", [str(i) for i in range(100)]),
                                                             _set("outputs.0.shape", [None, 100])), "100 labels"),
    "detector: 3 labels, scores shape edited": ("digit-detector", _both(_set("labels", list("abc")),
                                                                        _set("outputs.1.shape", [None, 32, 32, 3])),
                                                "3 labels"),
    # and more of the same kinds
    "JSON nested 40 deep": ("digits-cnn", _nest_dataset(40), "nested more than"),
    "a 5000-digit number": ("digits-cnn", _raw(lambda t: t.replace('"width": 28', '"width": ' + "9" * 5000, 1)),
                            "not valid JSON"),
    "not UTF-8": ("digits-cnn", _raw(lambda t: t.replace('"digits-cnn"', '"digits-\udcff"', 1)), "not valid JSON"),
    "a list, not an object": ("digits-cnn", _raw(lambda t: "[" + t + "]"), "JSON object"),
    "schema true": ("digits-cnn", _set("schema", True), "schema"),
    "labels with a number": ("digits-cnn", _set("labels.3", 3), "labels"),
    "width a string": ("digits-cnn", _set("preprocessing.width", "28"), "preprocessing.width"),
    "width 1e9": ("digits-cnn", _set("preprocessing.width", 10**9), "preprocessing.width"),
    "height 0": ("digits-cnn", _set("preprocessing.height", 0), "preprocessing.height"),
    "colour mode CMYK": ("digits-cnn", _set("preprocessing.color_mode", "CMYK"), "preprocessing.color_mode"),
    "channels against colour mode": ("digits-cnn", _set("preprocessing.channels", 1), "preprocessing.channels"),
    "infinite offset": ("digits-cnn", _set("preprocessing.offset", math.inf), "preprocessing.offset"),
    "scale 0": ("digits-cnn", _set("preprocessing.scale", 0), "preprocessing.scale"),
    "unknown resize filter": ("digits-cnn", _set("preprocessing.resize", "cubic"), "preprocessing.resize"),
    "background 300": ("digits-cnn", _set("preprocessing.background", 300), "preprocessing.background"),
    "input shape against preprocessing": ("digits-cnn", _set("input.shape", [None, 32, 32, 1]), "input.shape"),
    "input size of another model": ("digits-cnn", _both(_set("preprocessing.width", 32), _set("preprocessing.height",
                                                                                             32),
                                                        _set("input.shape", [None, 32, 32, 3])), "input shape"),
    "input name of another model": ("digits-cnn", _set("input.name", "pixels"), "no input named"),
    "input dtype int32": ("digits-cnn", _set("input.dtype", "int32"), "input.dtype"),
    "input missing": ("digits-cnn", _set("input", DELETE), "'input'"),
    "outputs missing": ("digits-cnn", _set("outputs", DELETE), "outputs"),
    "output kind unknown": ("digits-cnn", _set("outputs.0.kind", "softmax"), "outputs[0].kind"),
    "detector without scores": ("digit-detector", _set("outputs.1.name", "classes"), "outputs"),
    "stride a string": ("digit-detector", _set("detection.stride", "4"), "detection.stride"),
    "grid of one number": ("digit-detector", _set("detection.grid", [32]), "detection.grid"),
    "nms_iou 2": ("digit-detector", _set("detection.nms_iou", 2.0), "detection.nms_iou"),
    "max_detections 0": ("digit-detector", _set("detection.max_detections", 0), "detection.max_detections"),
    "pre_nms_top_k 1e12": ("digit-detector", _set("detection.pre_nms_top_k", 10**12), "detection.pre_nms_top_k"),
    "stride against grid and input size": ("digit-detector", _set("detection.stride", 3), "detection.stride"),
    "grid against the model file": ("digit-detector", _both(_set("detection.grid", [16, 16]),
                                                            _set("detection.stride", 8)), "detection.grid"),
    "fixed batch size": ("digits-cnn", _set("input.shape.0", 3), "input.shape"),
    "input_size against preprocessing": ("digit-detector", _set("detection.input_size", [130, 130]),
                                         "detection.input_size"),
    "detection section missing": ("digit-detector", _set("detection", DELETE), "detection"),
    "vocabulary with a number": ("bbc-news", _set("text.vocabulary.5", 5), "vocabulary"),
    "vocabulary missing": ("bbc-news", _set("text.vocabulary", DELETE), "text.vocabulary"),
    "sequence length against input": ("bbc-news", _set("text.sequence_length", 100), "sequence_length"),
    "unknown standardization": ("bbc-news", _set("text.standardize", "lower_and_strip_accents"), "text.standardize"),
    "pad id a string": ("bbc-news", _set("text.pad_id", "0"), "text.pad_id"),
    "file path a number": ("digits-cnn", _set("files.onnx.path", 5), "files.onnx"),
    "file sha256 a number": ("digits-cnn", _set("files.onnx.sha256", 5), "files.onnx.sha256"),
    "validation results a list": ("digits-cnn", _set("validation.results", []), "validation.results"),
}

#: The cases the issue names, also run through the CLI (a process each, so not all of them).
CLI_CASES = ["missing preprocessing width", "labels as a number", "text sequence length 1e12",
             "detection input size [0, 0]", "detection stride 0", "NaN preprocessing scale", "NaN detection threshold",
             "JSON nested 200,000 deep", "3 labels for 10 outputs", "0 labels for 10 outputs",
             "100 labels for 10 outputs", "3 labels, outputs.shape edited", "a 5000-digit number"]


def damaged_copy(name: str, mutation, target: Path) -> Path:
    """A copy of the committed export ``name`` in ``target`` with its manifest damaged by ``mutation``."""
    source = reference_export(name, MAKE_TARGETS[name])
    shutil.copytree(source, target)
    manifest = target / manifest_io.MANIFEST_NAME
    if getattr(mutation, "raw", False):
        text = mutation(manifest.read_text(encoding="utf-8"))
        manifest.write_bytes(text.encode("utf-8", "surrogateescape"))
    else:
        data = json.loads(manifest.read_text(encoding="utf-8"))
        mutation(data)
        manifest.write_text(json.dumps(data, indent=1), encoding="utf-8")
    return target


def infer_args(name: str, folder: Path) -> list[str]:
    if name == "bbc-news":
        return ["infer", "--text", "Shares fell sharply after the results", "--model", str(folder)]
    sample = min((reference_export(name, MAKE_TARGETS[name]) / "samples").glob("*.png"))
    return ["infer", str(sample), "--model", str(folder)]


@pytest.mark.parametrize("case", list(DAMAGED))
def test_damaged_manifest_is_a_one_line_model_error(case, tmp_path):
    name, mutation, words = DAMAGED[case]
    folder = damaged_copy(name, mutation, tmp_path / name)
    with pytest.raises(ModelError) as caught:
        edgecnn.load(folder)
    message = str(caught.value)
    assert words in message and "\n" not in message and len(message) < 400, message


@pytest.mark.parametrize("case", CLI_CASES)
def test_damaged_manifest_exits_2_with_one_error_line(case, tmp_path):
    name, mutation, words = DAMAGED[case]
    folder = damaged_copy(name, mutation, tmp_path / name)
    result = run_cli(*infer_args(name, folder))
    lines = result.stderr.splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and lines[0].startswith("error:") and words in lines[0], result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize("fmt", manifest_io.FORMATS)
def test_label_count_is_checked_against_every_model_file(fmt, tmp_path):
    """The manifest's labels and output shape agree with each other (3), but not with the model file (10)."""
    folder = damaged_copy("digits-cnn", DAMAGED["3 labels, outputs.shape edited"][1], tmp_path / "digits-cnn")
    with pytest.raises(ModelError, match="lists 3 labels but .* gives 10 class scores"):
        edgecnn.load(folder, format=fmt)


def test_committed_exports_load_unchanged():
    for name, target in MAKE_TARGETS.items():
        task = edgecnn.load(reference_export(name, target))
        assert len(task.labels) == task.backend.output_shapes[-1][-1]


def test_resize_filters_are_the_ones_the_runtime_knows():
    from edgecnn.runtime.image import RESAMPLE

    assert set(manifest_io.RESIZE_FILTERS) == set(RESAMPLE)


def test_a_refused_onnx_file_prints_nothing_but_the_error(tmp_path):
    folder = damaged_copy("digits-cnn", _set("name", "damaged"), tmp_path / "digits-cnn")
    model = folder / "model.onnx"
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
    data = json.loads((folder / "edgecnn.json").read_text())
    data["files"]["onnx"]["sha256"] = manifest_io.sha256_of(model)  # the manifest agrees: onnxruntime must refuse
    (folder / "edgecnn.json").write_text(json.dumps(data))
    result = run_cli(*infer_args("digits-cnn", folder), "--format", "onnx")
    assert result.returncode == 2 and result.stderr.startswith("error:") and len(result.stderr.splitlines()) == 1, \
        result.stderr


# --- fuzzing -------------------------------------------------------------------------------------------------

hypothesis = pytest.importorskip("hypothesis")
st = hypothesis.strategies

#: Values a damaged manifest may hold in place of any field: wrong types, extremes, non-finite numbers, nesting.
ODD_VALUES = [None, True, False, 0, -1, 1, 3, 255, 256, 4097, 10**12, 10**30, -(10**30), 0.5, -0.0, 1e12, 1e308,
              math.nan, math.inf, -math.inf, "", "x", "NHWC", "RGB", "L", "bilinear", "boxes", "scores", "model.onnx",
              "../outside.onnx", "\x00", [], [0], [0, 0], [None, 28, 28, 1], [28, 28], ["a"], [1.5, 2], {}, {"a": 1},
              {"path": "model.onnx"}, [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]


def _paths(value, prefix=()):
    """Paths to every key and list item of a manifest (only the first items of long lists: the vocabulary)."""
    items = value.items() if isinstance(value, dict) else enumerate(value[:4]) if isinstance(value, list) else ()
    for key, child in items:
        path = prefix + (key,)
        yield path
        yield from _paths(child, path)


def _mutate(data: dict, path: tuple, action: str, value) -> None:
    node = data
    for key in path[:-1]:
        try:
            node = node[key]
        except (KeyError, IndexError, TypeError):
            return  # an earlier mutation removed this path
    key = path[-1]
    if not isinstance(node, (dict, list)) or (isinstance(node, list) and not isinstance(key, int)):
        return
    if isinstance(node, list) and key >= len(node) or isinstance(node, dict) and key not in node:
        return
    if action == "delete":
        del node[key]
    elif action == "wrap":
        node[key] = [node[key]]
    elif action == "stringify":
        node[key] = json.dumps(node[key])
    else:
        node[key] = value


@pytest.fixture(scope="module")
def fuzz_folders(tmp_path_factory) -> dict[str, tuple[Path, dict, list]]:
    folders = {}
    for name, target in MAKE_TARGETS.items():
        folder = tmp_path_factory.mktemp("fuzz") / name
        shutil.copytree(reference_export(name, target), folder)
        data = json.loads((folder / manifest_io.MANIFEST_NAME).read_text(encoding="utf-8"))
        folders[name] = (folder, data, list(_paths(data)))
    return folders


def _exercise(name: str, folder: Path, fmt: str) -> None:
    """Load, run one input, describe: what a user of a damaged export would do."""
    from edgecnn.report import info_text
    from edgecnn.runtime.describe import describe_export

    info_text(describe_export(str(folder)))
    task = edgecnn.load(folder, format=fmt)
    if name == "bbc-news":
        sample = min((folder / "samples").glob("*.txt"))
        task.classify(TextFile(str(sample)).read())
    elif name == "digits-cnn":
        task.classify(str(min((folder / "samples").glob("*.png"))))
    else:
        task.detect(str(min((folder / "samples").glob("*.png"))))


@pytest.mark.parametrize("name", list(MAKE_TARGETS))
def test_fuzzed_manifests_load_or_raise_an_edgecnn_error(name, fuzz_folders):
    folder, original, paths = fuzz_folders[name]
    mutation = st.tuples(st.sampled_from(paths), st.sampled_from(["set", "set", "set", "delete", "wrap", "stringify"]),
                         st.one_of(st.sampled_from(ODD_VALUES), st.integers(), st.floats(), st.text(max_size=8)))

    @hypothesis.settings(max_examples=150, derandomize=True, deadline=None, database=None,
                         suppress_health_check=list(hypothesis.HealthCheck))
    @hypothesis.given(mutations=st.lists(mutation, min_size=1, max_size=3),
                      fmt=st.sampled_from(["onnx", "tflite-int8"]), nest=st.sampled_from([0, 0, 0, 0, 1, 50, 100_000]))
    def check(mutations, fmt, nest):
        data = json.loads(json.dumps(original))
        for path, action, value in mutations:
            _mutate(data, path, action, value)
        text = json.dumps(data)
        (folder / manifest_io.MANIFEST_NAME).write_text("[" * nest + text + "]" * nest, encoding="utf-8")
        try:
            _exercise(name, folder, fmt)
        except EdgecnnError as exc:
            assert "\n" not in str(exc), str(exc)

    try:
        check()
    finally:
        (folder / manifest_io.MANIFEST_NAME).write_text(json.dumps(original), encoding="utf-8")
