"""``edgecnn export --target mediapipe``: MediaPipe Tasks' ImageClassifier loads the .tflite files as they are and
gives edgecnn's top-1 on every sample.

MediaPipe lives in its own venv (``make mediapipe-venv``: it pulls opencv-contrib-python, which would shadow the
video extra's OpenCV in .venv), so it runs here in a subprocess, through the same
:func:`edgecnn.export.mediapipe.classify` the export's verification calls. Without that venv these tests skip,
except in CI (``CI`` set), where they fail: CI installs it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from edgecnn.manifest import FORMAT_FILES

from .conftest import EXPORTED, ROOT, run_cli

MP_PYTHON = ROOT / ".venv-mediapipe" / "bin" / "python"


@pytest.fixture(scope="module")
def mediapipe_python() -> Path:
    if not MP_PYTHON.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{MP_PYTHON} is missing in CI: run 'make mediapipe-venv' before the tests")
        pytest.skip(f"{MP_PYTHON} is missing: run 'make mediapipe-venv' to test the MediaPipe target")
    return MP_PYTHON


def run_mediapipe(python: Path, code: str, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GLOG_minloglevel": "2"}
    return subprocess.run([str(python), "-c", code, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300, check=False)


CLASSIFY = """
import json, sys
from edgecnn.export.mediapipe import classify
print(json.dumps(classify(sys.argv[1], sys.argv[2:])))
"""


def mediapipe_results(python: Path, model_file: Path, images: list[Path]) -> list[dict]:
    result = run_mediapipe(python, CLASSIFY, str(model_file), *map(str, images))
    assert result.returncode == 0, result.stderr[-3000:]
    return [r[0] for r in json.loads(result.stdout.strip().splitlines()[-1])]


@pytest.fixture(scope="module")
def mediapipe_export(tmp_path_factory, digits_keras) -> Path:
    """A digits model (1 channel, like the reference one) trained briefly and exported with --target mediapipe."""
    out = tmp_path_factory.mktemp("mediapipe") / "digits-mp"
    result = run_cli("export", str(digits_keras), "--out", str(out), "--target", "mediapipe")
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def same_top1_as_edgecnn(python: Path, export: Path) -> None:
    """MediaPipe's top-1 is edgecnn's on every sample, with every .tflite file of ``export``."""
    from edgecnn.runtime.tasks import ImageClassifier

    samples = sorted((export / "samples").glob("*.png"))
    assert len(samples) >= 20
    formats = [f for f in json.loads((export / "edgecnn.json").read_text())["files"] if "tflite" in f]
    assert {"tflite", "tflite-int8"} <= set(formats)
    for fmt in formats:
        ours = ImageClassifier(export, format=fmt).classify_batch(samples, top_k=1)
        theirs = mediapipe_results(python, export / FORMAT_FILES[fmt], samples)
        assert [r.label for r in ours] == [r["label"] for r in theirs], fmt
        difference = np.abs(np.array([r.top.score for r in ours]) - np.array([r["score"] for r in theirs])).max()
        assert difference <= 1e-4, (fmt, difference)  # the same file on the same pixels


@pytest.mark.slow
def test_mediapipe_image_classifier_gives_edgecnns_top1_on_every_sample(mediapipe_python, mediapipe_export):
    same_top1_as_edgecnn(mediapipe_python, mediapipe_export)


COMMITTED_FOR_MEDIAPIPE = sorted(p.parent for p in EXPORTED.glob("*/edgecnn.json")
                                 if "mediapipe" in json.loads(p.read_text()).get("targets", {}))


@pytest.mark.parametrize("export", COMMITTED_FOR_MEDIAPIPE, ids=lambda p: p.name)
def test_committed_mediapipe_exports_give_edgecnns_top1_on_every_sample(mediapipe_python, export):
    same_top1_as_edgecnn(mediapipe_python, export)


def test_the_committed_digits_export_is_made_for_mediapipe_and_opencv(digits_export):
    """``make export-digits`` exports with --target mediapipe --target opencv: RGB in, the gray made in the graph by
    channel slices times scalar weights, summed (a weighted ReduceSum of opset 13 is what OpenCV 4.6, Debian's C++
    library, cannot parse; a 1x1 convolution's weights would count as the model's parameters in edgecnn explain)."""
    import onnx

    from edgecnn.export.mediapipe import GRAY_WEIGHTS

    assert digits_export in COMMITTED_FOR_MEDIAPIPE
    data = json.loads((digits_export / "edgecnn.json").read_text())
    assert {"mediapipe", "opencv"} <= set(data["targets"])
    assert data["input"]["shape"][-1] == 3 and data["preprocessing"]["color_mode"] == "RGB"
    assert data["preprocessing"]["gray_in_graph"] == list(GRAY_WEIGHTS)
    assert "opencv" in data["files"]["onnx"]["verified_in"]
    assert data["files"]["tflite-int8"]["quantization"]["inputs"]["image"]["dtype"] == "float32"
    nodes = onnx.load(str(digits_export / "model.onnx")).graph.node
    ops = {node.op_type for node in nodes}
    assert "Conv" in ops and not ops & {"ReduceSum", "Shape"}, ops
    # the model's op names keep their Keras layer scopes (explain and quantize-report read them), not nested
    # under the RGB wrapper's StatefulPartitionedCall
    assert not [node.name for node in nodes if "StatefulPartitionedCall" in node.name]


@pytest.mark.slow
def test_mediapipe_export_takes_rgb_and_says_so(mediapipe_export):
    """The gray model takes RGB (gray made in the graph), every file validated, the int8 file with float I/O."""
    data = json.loads((mediapipe_export / "edgecnn.json").read_text())
    assert data["input"]["shape"][-1] == 3
    assert data["preprocessing"]["color_mode"] == "RGB" and data["preprocessing"]["channels"] == 3
    assert set(data["validation"]["results"]) >= {"onnx", "onnx-int8", "tflite", "tflite-int8"}
    io = data["files"]["tflite-int8"]["quantization"]
    assert io["inputs"]["image"]["dtype"] == "float32" and io["outputs"]["probabilities"]["dtype"] == "float32"
    assert "mediapipe" in data["targets"]
    result = run_cli("infer", str(mediapipe_export / "samples" / "7-1.png"), "--model", str(mediapipe_export),
                     "--format", "tflite-int8", "--json")
    assert result.returncode == 0 and json.loads(result.stdout.splitlines()[0])["predictions"][0]["label"] == "7"


def test_readme_mediapipe_snippet_runs_as_written(mediapipe_python):
    """The README's MediaPipe block (the one that imports mediapipe), run as written on the committed export."""
    blocks = [b for b in re.findall(r"^```python\n(.*?)^```", (ROOT / "README.md").read_text(),
                                    re.DOTALL | re.MULTILINE) if "import mediapipe" in b]
    assert len(blocks) == 1 and "exported/digits-cnn/" in blocks[0]
    result = run_mediapipe(mediapipe_python, blocks[0], cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(r"^7 [01]\.\d+", result.stdout, re.MULTILINE), result.stdout


class _Context:
    def __init__(self, task: str, **preprocessing):
        self.sections = {"task": task, "preprocessing": {"channels": 3, **preprocessing}}
        self.formats = ["onnx", "tflite", "tflite-int8"]
        self.notes: dict = {}


@pytest.mark.parametrize("task,words", [("object-detection", "anchor-free"), ("text-classification", "tokeniz")])
def test_detector_and_text_models_are_refused_with_the_reason(task, words):
    from edgecnn.export.mediapipe import check

    reason = check(_Context(task))
    assert reason and words in reason and "\n" not in reason


def test_bgr_models_and_no_tflite_are_refused():
    from edgecnn.export.mediapipe import check

    assert "BGR" in check(_Context("image-classification", channels_order="bgr"))
    ctx = _Context("image-classification")
    ctx.formats = ["onnx"]
    assert "tflite" in check(ctx)
    assert check(_Context("image-classification")) is None



def test_verify_records_mediapipe_where_it_agrees_and_refuses_where_it_does_not(monkeypatch, digits_export):
    """The export-time check where mediapipe is importable, with MediaPipe's answers stood in for."""
    import sys
    import types

    from edgecnn import manifest as manifest_io
    from edgecnn.errors import ExportRefusedError
    from edgecnn.export import mediapipe as target
    from edgecnn.runtime.tasks import ImageClassifier

    manifest = manifest_io.read(digits_export)
    samples = sorted((digits_export / "samples").glob("*.png"))
    ours = {fmt: [r.label for r in ImageClassifier(manifest, format=fmt).classify_batch(samples, top_k=1)]
            for fmt in manifest.formats if fmt.startswith("tflite")}
    answers = {manifest.file_path(fmt).name: labels for fmt, labels in ours.items()}
    monkeypatch.setitem(sys.modules, "mediapipe", types.SimpleNamespace(__version__="9.9.9"))
    monkeypatch.setattr(target, "classify", lambda path, images: [[{"label": label, "score": 1.0}]
                                                                  for label in answers[Path(path).name]])
    ctx = _Context("image-classification")
    assert target.verify(ctx, manifest) == {fmt: {"mediapipe": "9.9.9"} for fmt in ours}
    answers["model.int8.tflite"] = answers["model.int8.tflite"][1:] + answers["model.int8.tflite"][:1]
    with pytest.raises(ExportRefusedError, match="tflite-int8"):
        target.verify(ctx, manifest)


def test_verify_without_mediapipe_records_why_and_verifies_nothing(monkeypatch, digits_export):
    import sys

    from edgecnn import manifest as manifest_io
    from edgecnn.export import mediapipe as target

    monkeypatch.setitem(sys.modules, "mediapipe", None)  # import mediapipe -> ImportError
    ctx = _Context("image-classification")
    assert target.verify(ctx, manifest_io.read(digits_export)) == {}
    assert "mediapipe-venv" in ctx.notes["verified"]


@pytest.mark.parametrize("scale,zero_point,refused", [(1 / 255, 0, False), (2 / 255, 0, True), (1 / 255, 3, True)])
def test_a_uint8_input_must_be_the_preprocessing_map(monkeypatch, scale, zero_point, refused):
    """MediaPipe feeds uint8 models raw pixels: the file's input quantization has to be x / 255 here."""
    from edgecnn.errors import ExportRefusedError
    from edgecnn.export import mediapipe as target
    from edgecnn.export import tflite

    monkeypatch.setattr(tflite, "tensor_quantization", lambda path: {
        "inputs": {"image": {"dtype": "uint8", "scale": scale, "zero_point": zero_point}}, "outputs": {}})
    ctx = _Context("image-classification", scale=1 / 255, offset=0.0)
    if refused:
        with pytest.raises(ExportRefusedError, match="--int8-io float"):
            target.after_tflite(ctx, Path("model.int8.tflite"), True)
    else:
        target.after_tflite(ctx, Path("model.int8.tflite"), True)
    target.after_tflite(ctx, Path("model.tflite"), False)  # fp32 files: nothing to check


GRAY_FRAMED = {"type": "image", "height": 28, "width": 28, "color_mode": "L", "channels": 1, "scale": 1 / 255,
               "offset": 0.0, "resize": "bilinear", "background": 0, "polarity": "auto", "fit": "ink",
               "fit_size": 20, "fit_threshold": 0.5}


def test_a_gray_model_exported_rgb_sees_the_gray_its_gray_export_sees():
    """Why the RGB export of the digits model read 3 drawn digits fewer (0.895 against 0.900): only colour images
    flipped, as the runtime framed their ink (contrast stretch and clipping) channel by channel, so the graph's gray
    of the framed RGB was up to 134 levels away from the framed gray that training used. Every pixel must now
    reach the model as the same gray, colour images included."""
    from edgecnn.export.mediapipe import GRAY_WEIGHTS
    from edgecnn.runtime import image as image_io
    from edgecnn.train.drawn_digits import drawn_digits

    images, _ = drawn_digits(0, 10)
    colour = [image for image in images if image.ndim == 3]
    assert len(colour) >= 10
    rgb_prep = {**GRAY_FRAMED, "color_mode": "RGB", "channels": 3, "gray_in_graph": list(GRAY_WEIGHTS)}
    for image in colour + images[:10]:
        gray = image_io.load_pixels(image, GRAY_FRAMED)[0]
        rgb = image_io.load_pixels(image, rgb_prep)[0]
        assert rgb.shape == (28, 28, 3)
        in_graph = image_io.pixels_to_input(rgb, rgb_prep) @ np.asarray(GRAY_WEIGHTS, np.float32)
        np.testing.assert_allclose(in_graph, image_io.pixels_to_input(gray, GRAY_FRAMED)[..., 0], atol=1e-5)


def test_held_out_gray_pixels_feed_a_model_that_takes_rgb():
    """A gray dataset's pixels (N x H x W x 1) meet an export whose input is RGB (a gray model exported with
    --target mediapipe): eval and bench repeat the gray, as decoding a gray image as RGB does."""
    from edgecnn.evaluate import INPUT_BUILDERS
    from edgecnn.runtime import image as image_io

    prep = {"type": "image", "height": 2, "width": 2, "color_mode": "RGB", "channels": 3, "scale": 1 / 255,
            "offset": 0.0}
    gray = np.arange(8, dtype=np.uint8).reshape(2, 2, 2, 1)
    inputs = INPUT_BUILDERS["image-classification"]({"preprocessing": prep}, gray)
    assert inputs.shape == (2, 2, 2, 3)
    decoded = image_io.pixels_to_input(np.asarray(image_io.open_image(gray[1, :, :, 0]).convert("RGB"))[None], prep)
    np.testing.assert_allclose(inputs[1:], decoded)


@pytest.mark.slow
def test_eval_runs_on_a_mediapipe_export(mediapipe_export):
    result = run_cli("eval", str(mediapipe_export), "--json")
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert {"tflite", "tflite-int8", "onnx"} <= set(report["results"])
    assert all(row["accuracy"] > 0.5 for row in report["results"].values() if "accuracy" in row)


@pytest.mark.slow
def test_the_keras_reference_of_an_rgb_export_gets_the_gray_its_graph_makes(mediapipe_export):
    """bench's keras row and eval's Keras reference feed the source model, which takes gray, the export's RGB
    inputs: both go through keras_io.keras_inputs, which makes the graph's gray (bench's row was an error)."""
    import edgecnn
    from edgecnn.bench import _open_keras

    onnx = edgecnn.load(mediapipe_export, format="onnx")
    x = np.concatenate([onnx.preprocess(p) for p in sorted((mediapipe_export / "samples").glob("*.png"))])
    assert x.shape[-1] == 3
    step, _ = _open_keras(str(mediapipe_export), None)
    np.testing.assert_allclose(step(x), onnx.predict(x), atol=1e-4)
