"""TFLite Model Metadata (edgecnn/export/metadata.py): written into every .tflite, read back with the schema, and
invisible to LiteRT (the same outputs, bit for bit).

The expected values come from the manifests (labels, scale/offset), from the metadata schema's rules
(metadata_version.cc) and from MediaPipe's ImageClassifier requirements, never from the writer itself.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from edgecnn.manifest import FORMAT_FILES
from edgecnn.runtime.backends import import_litert_interpreter

from .conftest import reference_export, run_cli

metadata = pytest.importorskip("edgecnn.export.metadata")
fb = pytest.importorskip("edgecnn.export.tflite_metadata_schema")


def _sections(export: Path) -> dict:
    return json.loads((export / "edgecnn.json").read_text())


def _outputs(path: Path, inputs: dict) -> dict:
    runner = import_litert_interpreter()(model_path=str(path)).get_signature_runner()
    return runner(**inputs)


def _random_inputs(path: Path) -> dict:
    """Inputs of the file's own dtypes and shapes (batch 1), from a fixed seed."""
    runner = import_litert_interpreter()(model_path=str(path)).get_signature_runner()
    rng = np.random.default_rng(0)
    inputs = {}
    for name, detail in runner.get_input_details().items():
        shape = [1 if d < 1 else int(d) for d in detail["shape_signature"]]
        shape[0] = 1
        dtype = np.dtype(detail["dtype"])
        if dtype.kind == "f":
            inputs[name] = rng.random(shape, dtype=np.float32)
        else:
            info = np.iinfo(dtype)
            inputs[name] = rng.integers(max(info.min, 0), min(info.max, 100), size=shape).astype(dtype)
    return inputs


@pytest.mark.parametrize("name,make_target", [("digits-cnn", "export-digits"), ("bbc-news", "export-text"),
                                              ("digit-detector", "export-detector")])
@pytest.mark.parametrize("fmt", ["tflite", "tflite-int8"])
def test_metadata_goes_in_and_litert_computes_the_same(tmp_path, name, make_target, fmt):
    export = reference_export(name, make_target)
    path = tmp_path / FORMAT_FILES[fmt]
    shutil.copy(export / FORMAT_FILES[fmt], path)
    sections = _sections(export)
    inputs = _random_inputs(path)
    before = _outputs(path, inputs)
    metadata.add_metadata(path, sections, name)
    after = _outputs(path, inputs)
    assert before.keys() == after.keys()
    for key in before:
        np.testing.assert_array_equal(before[key], after[key])

    meta, files = metadata.read_metadata(path)
    assert meta is not None and meta.name.decode() == name
    assert meta.description and str(len(sections["labels"])) in meta.description.decode()
    assert files == {"labels.txt": ("\n".join(sections["labels"]) + "\n").encode()}
    graph = meta.subgraphMetadata[0]
    runner = import_litert_interpreter()(model_path=str(path)).get_signature_runner()
    assert len(graph.inputTensorMetadata) == len(runner.get_input_details())
    assert len(graph.outputTensorMetadata) == len(runner.get_output_details())
    # the labels file hangs on the output whose last axis has one score per label
    labelled = [t.name.decode() for t in graph.outputTensorMetadata
                if any(f.type == fb.AssociatedFileType.TENSOR_AXIS_LABELS and f.name == b"labels.txt"
                       for f in t.associatedFiles or [])]
    per_label = [o["name"] for o in sections["outputs"] if o["shape"][-1] == len(sections["labels"])]
    assert labelled == per_label and labelled
    assert meta.minParserVersion == b"1.0.0"  # nothing this writes is newer than the schema's first version


def test_image_normalization_matches_the_manifest(tmp_path):
    """mean/std on 0..255 pixels such that (x - mean) / std == x * scale + offset, from the manifest's values."""
    export = reference_export("digits-cnn", "export-digits")
    path = tmp_path / "model.tflite"
    shutil.copy(export / "model.tflite", path)
    pre = _sections(export)["preprocessing"]
    metadata.add_metadata(path, _sections(export), "digits-cnn")
    meta, _ = metadata.read_metadata(path)
    tensor = meta.subgraphMetadata[0].inputTensorMetadata[0]
    assert tensor.content.contentPropertiesType == fb.ContentProperties.ImageProperties
    assert tensor.content.contentProperties.colorSpace == (fb.ColorSpaceType.GRAYSCALE if pre["channels"] == 1
                                                          else fb.ColorSpaceType.RGB)
    unit = tensor.processUnits[0]
    assert unit.optionsType == fb.ProcessUnitOptions.NormalizationOptions
    pixels = np.array([0.0, 37.0, 255.0])
    mean, std = unit.options.mean[0], unit.options.std[0]
    np.testing.assert_allclose((pixels - mean) / std, pixels * pre["scale"] + pre["offset"], rtol=1e-6)
    np.testing.assert_allclose([tensor.stats.min[0], tensor.stats.max[0]], [pre["offset"], 255 * pre["scale"]])


@pytest.mark.parametrize("preset", ["tf", "torch", "caffe"])
def test_normalization_of_each_preset_inverts_the_affine_map(preset):
    from edgecnn.presets import preprocessing_fields

    pre = {"type": "image", **preprocessing_fields(preset, channels=3)}
    mean, std = metadata.normalization(pre)
    assert len(mean) == len(std) in (1, 3)
    scale = np.broadcast_to(np.asarray(pre["scale"], dtype=np.float64), (3,))
    offset = np.broadcast_to(np.asarray(pre["offset"], dtype=np.float64), (3,))
    pixels = np.array([[0.0] * 3, [128.0] * 3, [255.0] * 3])
    np.testing.assert_allclose((pixels - np.asarray(mean)) / np.asarray(std), pixels * scale + offset, atol=1e-9)


def _meta_with(**graph_fields):
    meta = fb.ModelMetadataT()
    graph = fb.SubGraphMetadataT()
    for key, value in graph_fields.items():
        setattr(graph, key, value)
    meta.subgraphMetadata = [graph]
    return meta


def _unit(options_type, options):
    unit = fb.ProcessUnitT()
    unit.optionsType, unit.options = options_type, options
    return unit


def _file(file_type, version=None):
    f = fb.AssociatedFileT()
    f.name, f.type, f.version = "f.txt", file_type, version
    return f


@pytest.mark.parametrize("build,expected", [
    (lambda: _meta_with(), "1.0.0"),
    (lambda: _meta_with(associatedFiles=[_file(fb.AssociatedFileType.VOCABULARY)]), "1.0.1"),
    (lambda: _meta_with(inputProcessUnits=[]), "1.1.0"),
    (lambda: _meta_with(inputProcessUnits=[_unit(fb.ProcessUnitOptions.RegexTokenizerOptions,
                                                 fb.RegexTokenizerOptionsT())]), "1.2.1"),
    (lambda: _meta_with(outputTensorGroups=[]), "1.2.0"),
    (lambda: _meta_with(associatedFiles=[_file(fb.AssociatedFileType.TENSOR_AXIS_LABELS, "2")]), "1.4.1"),
    (lambda: _meta_with(customMetadata=[]), "1.5.0"),
])
def test_min_parser_version_follows_the_schema_rules(build, expected):
    """Versions from mediapipe/tasks/cc/metadata/metadata_version.cc, the check the writers' compiled module does."""
    assert metadata.min_parser_version(build()) == expected


@pytest.mark.slow
def test_export_writes_metadata_into_every_tflite_file(tmp_path):
    from edgecnn.train.fit import train

    run = tmp_path / "run"
    train("digits", "seed-cnn", run, epochs=1, seed=0, verbose=0)
    out = tmp_path / "export"
    result = run_cli("export", str(run / "model.keras"), "--out", str(out), "--formats", "tflite,tflite-int8")
    assert result.returncode == 0, result.stderr[-2000:]
    labels = json.loads((out / "edgecnn.json").read_text())["labels"]
    for fmt in ("tflite", "tflite-int8"):
        meta, files = metadata.read_metadata(out / FORMAT_FILES[fmt])
        assert meta is not None and meta.name == b"export", fmt
        assert files["labels.txt"].decode().split() == labels


@pytest.mark.parametrize("flags,expected", [([], True), (["--no-metadata"], False)])
def test_no_metadata_flag_reaches_the_export(monkeypatch, tmp_path, flags, expected):
    from click.testing import CliRunner

    import edgecnn.export
    from edgecnn.cli import cli
    from edgecnn.errors import InputError

    seen = {}

    def fake_export(model, out, **options):
        seen.update(options)
        raise InputError("stop here")

    monkeypatch.setattr(edgecnn.export, "export_model", fake_export)
    result = CliRunner().invoke(cli, ["export", str(tmp_path / "model.keras"), "--out", str(tmp_path / "x"), *flags])
    assert isinstance(result.exception, InputError) and str(result.exception) == "stop here"
    assert seen["metadata"] is expected

