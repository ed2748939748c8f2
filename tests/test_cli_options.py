"""A new user's first hour: -o/-d options are checked and listed, --model has a default that works anywhere,
listing commands are instant, and stderr carries edgecnn's own words only."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgecnn.errors import InputError

from .conftest import EXPORTED, ROOT, error_lines, run_cli

#: What TensorFlow, its converter and LiteRT print from C++ when nobody stops them.
CHATTER = ("oneDNN", "absl", "cpu_feature_guard", "fully_quantize", "XNNPACK", "TensorFlow")


def assert_one_line_exit_2(result, *needles: str) -> str:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr, result.stderr
    lines = error_lines(result)
    assert len(lines) == 1 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def run_quiet_env(args: list[str], cwd: Path = ROOT, timeout: float = 600) -> subprocess.CompletedProcess:
    """The CLI as a user runs it: none of TensorFlow's logging variables set (run_cli sets one)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TF_", "GLOG_", "ABSL_"))}
    return subprocess.run([sys.executable, "-m", "edgecnn.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)


# --- -o and -d options -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("args, needles", [
    (["--model", "seed-cnn", "-o", "alpha=0.5"], ["'alpha'", "seed-cnn", "dropout=0.0"]),
    (["--model", "mobilenet-s", "-o", "alfa=0.5"], ["'alfa'", "did you mean alpha", "alpha=1.0", "dropout=0.2"]),
    (["-d", "sise=64"], ["'sise'", "did you mean size", "size=28"]),
    (["--model", "lenet5", "-o", "dropout=0.1"], ["'dropout'", "lenet5", "stage1_epochs=auto, unfreeze=auto"]),
    (["--model", "mobilenet-s", "-o", "alpha=wide"], ["alpha", "number", "'wide'"]),
    (["-d", "data=x"], ["'data'", "size=28"]),
])
def test_unknown_or_ill_typed_options_are_one_line_listing_the_valid_ones(tmp_path, args, needles):
    result = run_cli("train", "--dataset", "digits", *args, "--epochs", "1", "--out", str(tmp_path / "run"))
    assert_one_line_exit_2(result, *needles)
    assert not (tmp_path / "run").exists()  # refused before any work


def test_trainer_options_are_options_too_and_are_checked(tmp_path):
    """-o keys a trainer reads itself (not the architecture) are accepted, listed and refused like the others."""
    from edgecnn.train.fit import check_training

    trainer, builder = check_training("digit-scenes", "detector", 2, model_options={"objectness": "iou", "alpha": 0.5})
    assert trainer == {"objectness": "iou"} and builder == {"alpha": 0.5}
    trainer, builder = check_training("bbc-news", "text-cnn-multi", 24,
                                      model_options={"average_from": 8, "wide": "tfidf", "vocab_size": 2000})
    assert (trainer["average_from"], trainer["vocab_size"], trainer["embedding_init"]) == (8, 2000, "random")
    assert builder == {"wide": "tfidf"}
    with pytest.raises(InputError, match="objectness"):
        check_training("digit-scenes", "detector", 2, model_options={"objectness": "maybe"})
    with pytest.raises(InputError, match="'objectness'"):  # the detector's trainer option is not seed-cnn's
        check_training("digits", "seed-cnn", 2, model_options={"objectness": "iou"})


def test_average_from_beyond_the_epochs_is_refused(tmp_path):
    result = run_cli("train", "--dataset", "bbc-news", "--model", "text-cnn", "--epochs", "24",
                     "-o", "average_from=30", "--out", str(tmp_path / "run"))
    assert_one_line_exit_2(result, "average_from=30", "24")
    assert not (tmp_path / "run").exists()


def test_a_text_dataset_without_model_names_the_models_that_fit(tmp_path):
    result = run_cli("train", "--dataset", "bbc-news", "--out", str(tmp_path / "run"))
    assert_one_line_exit_2(result, "seed-cnn", "text-classification", "text-cnn", "text-cnn-multi")


def test_data_for_a_dataset_that_reads_no_files_is_refused(tmp_path):
    result = run_cli("train", "--dataset", "digits", "--data", str(tmp_path), "--out", str(tmp_path / "run"))
    assert_one_line_exit_2(result, "--data", "digits")


def test_the_python_api_checks_options_too():
    from edgecnn.train.datasets import load_dataset
    from edgecnn.train.models import create_model

    with pytest.raises(InputError, match="dropout=0.0"):
        create_model("seed-cnn", (28, 28, 1), 10, alpha=0.5)
    with pytest.raises(InputError, match="size=28"):
        load_dataset("digits", sise=64)


def _builder_defaults(function) -> dict:
    """Keyword parameters with defaults, read here with inspect (not through edgecnn's own helper)."""
    return {name: p.default for name, p in inspect.signature(function).parameters.items()
            if p.default is not inspect.Parameter.empty}


def _blocks(stdout: str) -> dict[str, str]:
    """'name  task' header lines and the indented lines below them, by name."""
    blocks, name = {}, None
    for line in stdout.splitlines():
        if line and not line.startswith(" "):
            name, _, rest = line.partition(" ")
            blocks[name] = rest.strip()
        elif name:
            blocks[name] += " " + line.strip()
    return blocks


def test_models_lists_every_option_with_its_default():
    from edgecnn.train.models import MODELS

    result = run_cli("models")
    assert result.returncode == 0 and result.stderr == "", result.stderr
    blocks = _blocks(result.stdout)
    assert set(blocks) == set(MODELS)
    for name, info in MODELS.items():
        for key in _builder_defaults(info.builder):
            if key not in ("input_shape", "num_classes", "weights"):  # a backbone's weights: the --weights flag
                assert f"{key}=" in blocks[name], (name, key)
    # Spelled as the command line takes them, trainer options included.
    assert "dropout=0.0" in blocks["seed-cnn"] and "alpha=1.0" in blocks["mobilenet-s"]
    assert "stride=8" in blocks["detector"] and "objectness=centre" in blocks["detector"]
    for option in ("average_from=0", "sequence_length=auto", "wide=false", "kernel_sizes=3,4,5"):
        assert option in blocks["text-cnn-multi"], option
    assert "average_from=0" in blocks["text-cnn"] and "wide=" not in blocks["text-cnn"]


def test_datasets_lists_every_option_with_its_default():
    from edgecnn.train.datasets import DATASETS

    result = run_cli("datasets")
    assert result.returncode == 0 and result.stderr == "", result.stderr
    blocks = _blocks(result.stdout)
    assert set(blocks) == set(DATASETS)
    for name, info in DATASETS.items():
        for key in _builder_defaults(info.loader):
            if key not in ("seed", "data"):
                assert f"{key}=" in blocks[name], (name, key)
    assert "size=28" in blocks["digits"] and "heights=uniform" in blocks["digit-scenes"]
    assert "reads --data" in blocks["folder"] and "reads --data" not in blocks["digits"]


# --- the default model --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("args", [["infer", "x.png"], ["eval"], ["bench"]])
def test_without_model_outside_the_repository_the_error_names_the_reference_exports(tmp_path, args):
    result = run_cli(*args, cwd=tmp_path)
    assert_one_line_exit_2(result, "no model given", "exported/digits-cnn", "exported/bbc-news",
                           "exported/digit-detector")


def test_without_model_in_the_repository_root_the_digits_export_is_used(digits_export):
    sample = min((digits_export / "samples").glob("*.png"))
    result = run_cli("infer", str(sample), "--json", cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["predictions"][0]["label"] == sample.name.split("-")[0]


def test_without_model_an_export_folders_own_samples_go_to_that_export():
    """A detector's sample scene given without --model was classified by the digits model ("9" at 0.76): a silent
    wrong answer. Inputs inside an export folder go to that export, and stderr says so in one line."""
    scene = EXPORTED / "digit-detector" / "samples" / "scene-01.png"
    result = run_cli("infer", str(scene.relative_to(ROOT)), "--json", cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert "detections" in json.loads(result.stdout)
    assert "exported/digit-detector" in result.stderr and "--model" in result.stderr
    text = min((EXPORTED / "bbc-news" / "samples").glob("*.txt"))
    result = run_cli("infer", "--text-file", str(text.relative_to(ROOT)), "--json", cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["predictions"][0]["label"] == text.name.split("-")[0]


def test_without_model_inputs_of_two_exports_are_refused():
    scene = EXPORTED / "digit-detector" / "samples" / "scene-01.png"
    digit = min((EXPORTED / "digits-cnn" / "samples").glob("*.png"))
    result = run_cli("infer", str(scene.relative_to(ROOT)), str(digit.relative_to(ROOT)), cwd=ROOT)
    assert_one_line_exit_2(result, "lie in 2 export folders", "exported/digit-detector", "exported/digits-cnn",
                           "--model")


# --- quiet and fast -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("args", [["models"], ["datasets"], ["info"], ["info", "exported/digits-cnn"],
                                  ["info", "exported/bbc-news"], ["info", "exported/digit-detector"]])
def test_listing_commands_load_no_training_stack(args):
    script = ("import sys\nfrom edgecnn.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n"
              "    assert not e.code, e.code\nheavy = sorted({m.split('.')[0] for m in sys.modules} & "
              "{'tensorflow', 'keras', 'tf2onnx', 'onnx', 'sklearn', 'matplotlib'})\n"
              "print('HEAVY', heavy, file=sys.stderr)\n")
    result = subprocess.run([sys.executable, "-c", script, *args], cwd=ROOT, capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip().splitlines()[-1] == "HEAVY []", result.stderr


@pytest.mark.parametrize("fmt", ["tflite", "tflite-int8", "onnx"])
def test_infer_leaves_stderr_empty(digits_export, fmt):
    sample = min((digits_export / "samples").glob("*.png"))
    result = run_quiet_env(["infer", str(sample), "--model", str(digits_export), "--format", fmt])
    assert result.returncode == 0 and result.stdout.startswith(str(sample))
    assert result.stderr == "", result.stderr


def test_importing_tensorflow_through_edgecnn_is_silent():
    result = subprocess.run([sys.executable, "-c", ("from edgecnn.keras_io import import_tensorflow\n"
                             "import_tensorflow()\nimport keras\nprint('imported')")],
                            env={k: v for k, v in os.environ.items() if not k.startswith(("TF_", "GLOG_"))},
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0 and result.stdout.strip() == "imported", result.stderr
    assert result.stderr == "", result.stderr


@pytest.mark.slow
def test_export_prints_only_edgecnn_progress_on_stderr(tmp_path):
    script = ("import keras, sys\ninputs = keras.Input((28, 28, 1))\n"
              "x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3, activation='relu')(inputs))\n"
              "keras.Model(inputs, keras.layers.Dense(10, activation='softmax')(x)).save(sys.argv[1])\n")
    subprocess.run([sys.executable, "-c", script, str(tmp_path / "tiny.keras")], check=True, capture_output=True,
                   timeout=300)
    (tmp_path / "labels.txt").write_text("\n".join(str(i) for i in range(10)))
    result = run_quiet_env(["export", str(tmp_path / "tiny.keras"), "--out", str(tmp_path / "out"), "--labels",
                            str(tmp_path / "labels.txt"), "--calibration", "digits", "--calibration-size", "16",
                            "--min-agreement", "0"])
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert lines and all(line.startswith("  ") and not line.startswith("   ") for line in lines), result.stderr
    assert not [line for line in lines if any(word in line for word in CHATTER)], result.stderr


# --- quiet_stderr itself ------------------------------------------------------------------------------------------

def _run_child(body: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "import os, sys\nfrom edgecnn.quiet import quiet_stderr\n" + body],
                          capture_output=True, text=True, timeout=60, check=False)


def test_quiet_stderr_drops_what_a_successful_call_prints_at_the_descriptor():
    result = _run_child("print('before', file=sys.stderr, flush=True)\n"
                        "with quiet_stderr() as captured:\n"
                        "    os.write(2, b'C++ chatter\\n')\n"
                        "    with quiet_stderr():\n"
                        "        os.write(2, b'nested chatter\\n')\n"
                        "    print('python chatter', file=sys.stderr)\n"
                        "print('after', file=sys.stderr)\n"
                        "print(repr(captured.text))\n")
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == ["before", "after"]
    assert "C++ chatter" in result.stdout and "nested chatter" in result.stdout


def test_quiet_stderr_keeps_what_a_failed_call_printed_with_the_exception():
    result = _run_child("try:\n"
                        "    with quiet_stderr():\n"
                        "        os.write(2, b'converter: op FOO is not supported\\n')\n"
                        "        raise RuntimeError('conversion failed')\n"
                        "except RuntimeError as exc:\n"
                        "    print(getattr(exc, '__notes__', ['(no notes: Python < 3.11)']))\n"
                        "print('after', file=sys.stderr)\n")
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == ["after"]
    if sys.version_info >= (3, 11):
        assert "op FOO is not supported" in result.stdout


def test_files_written_lists_this_runs_files_only(tmp_path):
    import time

    from edgecnn.train.fit import files_written

    (tmp_path / "confusion.png").write_bytes(b"old")
    old = time.time_ns() - 10**10
    os.utime(tmp_path / "confusion.png", ns=(old, old))
    started = time.time_ns()
    for name in ("model.keras", "metrics.json"):
        (tmp_path / name).write_bytes(b"new")
    assert files_written(tmp_path, started) == ["metrics.json", "model.keras"]


@pytest.mark.slow
def test_a_detection_run_reports_the_files_it_wrote(tmp_path):
    result = run_cli("train", "--dataset", "digit-scenes", "--model", "detector", "--epochs", "1", "--batch-size",
                     "8", "-d", "train=8", "-d", "val=4", "-d", "test=4", "-o", "alpha=0.25", "-o", "head_width=8",
                     "--out", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr
    wrote = result.stdout.strip().splitlines()[-1]
    assert wrote.startswith("wrote ") and "model.keras" in wrote and "confusion.png" not in wrote
    named = {name.strip() for name in wrote.split(":", 1)[1].split(",")}
    assert named == {p.name for p in (tmp_path / "run").iterdir()}
    assert np.all([(tmp_path / "run" / name).is_file() for name in named])
