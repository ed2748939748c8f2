"""Every bad input of issue 2 gives one line on stderr and exit code 2, never a traceback, and loses nothing."""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from edgecnn import manifest as manifest_io

from .conftest import error_lines, run_cli


def assert_one_line_exit_2(result, *needles: str) -> str:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = error_lines(result)
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def test_missing_path(digits_export):
    assert_one_line_exit_2(run_cli("infer", "no/such/file.png", "--model", str(digits_export)), "no such file")


def test_folder_without_images(digits_export, tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    assert_one_line_exit_2(run_cli("infer", str(tmp_path), "--model", str(digits_export)), "no image files")


def test_empty_file(digits_export, tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    assert_one_line_exit_2(run_cli("infer", str(tmp_path / "empty.png"), "--model", str(digits_export)), "empty")


def test_text_file_named_png(digits_export, tmp_path):
    (tmp_path / "fake.png").write_text("not a picture")
    assert_one_line_exit_2(run_cli("infer", str(tmp_path / "fake.png"), "--model", str(digits_export)),
                           "not an image")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_image(digits_export, tmp_path, fmt):
    buffer = io.BytesIO()
    Image.effect_noise((256, 256), 60).save(buffer, format=fmt)
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 3])
    assert_one_line_exit_2(run_cli("infer", str(path), "--model", str(digits_export)), "cut.")


def test_image_over_pillow_pixel_limit(digits_export, tmp_path):
    path = tmp_path / "huge.png"
    Image.new("1", (10_000, 10_000)).save(path)  # 100 Mpx > Pillow's 89.5 Mpx limit; a few KB on disk
    assert_one_line_exit_2(run_cli("infer", str(path), "--model", str(digits_export)), "safety limit")


def test_model_folder_without_manifest(tmp_path, digits_export):
    sample = next((digits_export / "samples").glob("*.png"))
    assert_one_line_exit_2(run_cli("infer", str(sample), "--model", str(tmp_path)), "edgecnn.json")


def test_manifest_from_newer_schema(export_copy):
    data = json.loads((export_copy / "edgecnn.json").read_text())
    data["schema"] = manifest_io.SCHEMA_VERSION + 1
    (export_copy / "edgecnn.json").write_text(json.dumps(data))
    sample = next((export_copy / "samples").glob("*.png"))
    assert_one_line_exit_2(run_cli("infer", str(sample), "--model", str(export_copy)), "upgrade edgecnn")


def test_model_file_with_wrong_sha256(export_copy):
    path = export_copy / "model.onnx"
    path.write_bytes(path.read_bytes()[:-1] + b"\x00")
    sample = next((export_copy / "samples").glob("*.png"))
    assert_one_line_exit_2(run_cli("infer", str(sample), "--model", str(export_copy), "--format", "onnx"),
                           "sha256")


@pytest.mark.parametrize("fmt", ["onnx", "tflite-int8"])
def test_truncated_model_file(export_copy, fmt):
    data = json.loads((export_copy / "edgecnn.json").read_text())
    path = export_copy / data["files"][fmt]["path"]
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    data["files"][fmt]["sha256"] = manifest_io.sha256_of(path)  # a manifest that agrees: the runtime must notice
    (export_copy / "edgecnn.json").write_text(json.dumps(data))
    sample = next((export_copy / "samples").glob("*.png"))
    assert_one_line_exit_2(run_cli("infer", str(sample), "--model", str(export_copy), "--format", fmt),
                           "truncated")


def test_format_whose_runtime_is_missing_names_the_pip_extra(digits_export, tmp_path):
    blocker = tmp_path / "sitecustomize.py"
    blocker.write_text("import sys\nsys.modules['ai_edge_litert'] = None\nsys.modules['tflite_runtime'] = None\n")
    sample = next((digits_export / "samples").glob("*.png"))
    result = run_cli("infer", str(sample), "--model", str(digits_export), "--format", "tflite-int8",
                     env={"PYTHONPATH": str(tmp_path)})
    assert_one_line_exit_2(result, "edgecnn[tflite]")


def test_good_inputs_still_get_results_when_others_fail(digits_export, tmp_path):
    (tmp_path / "fake.png").write_text("nope")
    samples = sorted((digits_export / "samples").glob("*.png"))[:3]
    result = run_cli("infer", str(samples[0]), str(tmp_path / "fake.png"), str(samples[1]), "no-such.png",
                     str(samples[2]), "--model", str(digits_export), "--json")
    assert result.returncode == 2
    outputs = [json.loads(line) for line in result.stdout.splitlines()]
    assert [o["input"] for o in outputs] == [str(s) for s in samples]
    assert len(error_lines(result)) == 2


def test_export_of_a_file_that_is_not_a_keras_model(tmp_path):
    bogus = tmp_path / "model.keras"
    bogus.write_text("not a zip")
    assert_one_line_exit_2(run_cli("export", str(bogus), "--out", str(tmp_path / "out"), "--calibration",
                                   "digits"), "not a Keras model")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_export_of_a_model_with_a_lambda_layer(tmp_path):
    script = (
        "import keras\n"
        "inputs = keras.Input((28, 28, 1))\n"
        "x = keras.layers.Lambda(lambda t: t * 2.0)(inputs)\n"
        "x = keras.layers.Flatten()(x)\n"
        "model = keras.Model(inputs, keras.layers.Dense(10, activation='softmax')(x))\n"
        f"model.save(r'{tmp_path / 'lambda.keras'}')\n"
    )
    import subprocess
    import sys

    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True,
                   env={"TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin"})
    result = run_cli("export", str(tmp_path / "lambda.keras"), "--out", str(tmp_path / "out"), "--calibration",
                     "digits")
    assert_one_line_exit_2(result, "Lambda")


# --- Issue 14: options that do not apply to the model's task are refused, not silently ignored.

@pytest.mark.parametrize("option", [["--threshold", "0.4"], ["--save", "out.png"]], ids=["threshold", "save"])
def test_detection_options_on_a_classifier_are_refused(digits_export, tmp_path, option):
    sample = next((digits_export / "samples").glob("*.png"))
    result = run_cli("infer", str(sample), "--model", str(digits_export), *option, cwd=tmp_path)
    assert_one_line_exit_2(result, option[0], "object-detection", "image-classification")
    assert result.stdout == "" and not (tmp_path / "out.png").exists()


def test_top_k_on_a_detector_is_refused_only_when_given(tmp_path):
    from .conftest import reference_export

    detector = reference_export("digit-detector", "export-detector")
    scene = next((detector / "samples").glob("scene-*.png"))
    assert_one_line_exit_2(run_cli("infer", str(scene), "--model", str(detector), "--top-k", "3"),
                           "--top-k", "classification", "object-detection")
    default = run_cli("infer", str(scene), "--model", str(detector), "--json")
    assert default.returncode == 0, default.stderr
    assert "detections" in json.loads(default.stdout)


def test_settle_without_watch_is_refused(digits_export):
    sample = next((digits_export / "samples").glob("*.png"))
    assert_one_line_exit_2(run_cli("infer", str(sample), "--model", str(digits_export), "--settle", "2"),
                           "--settle", "--watch")
