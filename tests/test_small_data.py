"""Small image datasets: the summary printed before training, the batch size that keeps an epoch >= 10 steps, the
refused split, the epoch whose weights were kept, and folder datasets that say where their size and colour came from.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image


def make_folder(root, classes=("a", "b"), per_class=20, size=(40, 30), rgb_files=0, seed=0):
    """Two learnable classes (a bright left half vs a bright right half), grayscale PNGs of ``size`` (w, h); the
    first ``rgb_files`` of class 'b' saved as colour JPEGs."""
    rng = np.random.default_rng(seed)
    width, height = size
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for k in range(per_class):
            pixels = rng.integers(0, 60, (height, width)).astype(np.uint8)
            half = slice(0, width // 2) if c % 2 == 0 else slice(width // 2, width)
            pixels[:, half] += 150
            if name == classes[-1] and k < rgb_files:
                Image.fromarray(np.stack([pixels] * 3, axis=-1)).save(root / name / f"{k}.jpg")
            else:
                Image.fromarray(pixels).save(root / name / f"{k}.png")
    return root


def test_folder_default_size_is_the_images_median_capped_at_224(tmp_path):
    from edgecnn.train.datasets import load_dataset

    small = load_dataset("folder", data=str(make_folder(tmp_path / "small", size=(40, 30))))
    assert small.x_train.shape[1:3] == (30, 40)
    assert "median" in small.origin["size"]
    big = load_dataset("folder", data=str(make_folder(tmp_path / "big", per_class=10, size=(300, 300))))
    assert big.x_train.shape[1:3] == (224, 224)
    assert "224" in big.origin["size"]
    given = load_dataset("folder", data=str(tmp_path / "small"), size=16)
    assert given.x_train.shape[1:3] == (16, 16) and "-d size=16" in given.origin["size"]


def test_folder_color_auto_takes_the_majority_and_names_converted_images(tmp_path):
    from edgecnn.train.datasets import load_dataset

    root = make_folder(tmp_path / "f", rgb_files=1)
    splits = load_dataset("folder", data=str(root))
    assert splits.x_train.shape[-1] == 1 and splits.preprocessing["color_mode"] == "L"
    assert "b/0.jpg" in splits.origin["color"]
    rgb = load_dataset("folder", data=str(root), color="rgb")
    assert rgb.x_train.shape[-1] == 3
    legacy = load_dataset("folder", data=str(root), color_mode="RGB")  # the old spelling still works
    assert legacy.x_train.shape[-1] == 3


def test_folder_color_refuses_an_unknown_mode_in_one_line(tmp_path):
    from edgecnn.errors import InputError
    from edgecnn.train.datasets import load_dataset

    with pytest.raises(InputError, match="gray, rgb or auto"):
        load_dataset("folder", data=str(make_folder(tmp_path / "f", per_class=10)), color="blue")


def test_datasets_listing_shows_the_folder_options():
    from click.testing import CliRunner

    from edgecnn.cli import cli

    out = CliRunner().invoke(cli, ["datasets"]).output
    section = out[out.index("\nfolder"):]
    line = next(line for line in section.splitlines() if line.strip().startswith("-d "))
    assert "color=auto" in line and "size=auto" in line
    assert "gray|rgb|auto" in section and "median" in section


def test_default_batch_size_shrinks_to_ten_steps_and_an_explicit_one_is_warned_about():
    from edgecnn.train.fit import choose_batch_size

    batch, note = choose_batch_size(84, None)
    assert batch == 8 and -(-84 // batch) >= 10 and "at least 10 steps" in note
    assert choose_batch_size(5000, None)[0] == 32
    batch, note = choose_batch_size(84, 32)
    assert batch == 32 and "warning" in note and "3 steps" in note


def test_summary_names_classes_counts_size_colour_and_steps(tmp_path):
    from edgecnn.train.datasets import load_dataset
    from edgecnn.train.fit import choose_batch_size, dataset_summary

    splits = load_dataset("folder", data=str(make_folder(tmp_path / "f", per_class=30, rgb_files=1)))
    batch, note = choose_batch_size(len(splits.y_train), None)
    text = dataset_summary(splits, batch, note)
    for label in splits.labels:
        counts = [int(np.sum(y == splits.labels.index(label))) for y in (splits.y_train, splits.y_val, splits.y_test)]
        assert any(line.split() == [label, *map(str, counts)] for line in text.splitlines()), text
    assert "30x40" in text and "gray" in text and "median" in text and "b/0.jpg" in text
    steps = -(-len(splits.y_train) // batch)
    assert f"{steps} steps per epoch" in text and f"batch size {batch}" in text


def test_a_class_missing_from_validation_is_refused_with_advice(tmp_path):
    from edgecnn.errors import InputError
    from edgecnn.train.datasets import load_dataset
    from edgecnn.train.fit import check_splits

    splits = load_dataset("folder", data=str(make_folder(tmp_path / "f", per_class=10)))
    check_splits(splits)  # a fine split passes
    splits.y_val = np.zeros_like(splits.y_val)
    with pytest.raises(InputError, match="'b' has no image in the validation split") as caught:
        check_splits(splits)
    assert "add images" in str(caught.value) and "\n" not in str(caught.value)
    # A class too small to split at all is the same one-line advice, not scikit-learn's ValueError.
    make_folder(tmp_path / "tiny", per_class=10)
    for f in sorted((tmp_path / "tiny" / "b").iterdir())[2:]:
        f.unlink()
    with pytest.raises(InputError, match="'b'.*add images"):
        load_dataset("folder", data=str(tmp_path / "tiny"))


def test_history_plot_counts_epochs_from_one_and_marks_the_kept_one():
    from edgecnn.train.fit import history_figure

    data = {"loss": [1.0, 0.5, 0.4, 0.45], "val_loss": [1.1, 0.6, 0.5, 0.7],
            "accuracy": [0.5, 0.7, 0.8, 0.85], "val_accuracy": [0.5, 0.6, 0.7, 0.65]}
    fig = history_figure(data, kept_epoch=3, stage_starts=[3])
    for ax in fig.axes:
        assert list(ax.lines[0].get_xdata()) == [1, 2, 3, 4]
        assert "kept epoch 3" in ax.get_title()
        marks = [line for line in ax.lines if line.get_label() == "kept epoch 3"]
        assert marks and list(marks[0].get_xdata()) == [3, 3]
        assert any(line.get_label() == "stage 2" for line in ax.lines)
    import matplotlib.pyplot as plt

    plt.close(fig)


@pytest.mark.slow
def test_a_run_prints_the_summary_and_records_the_kept_epoch(tmp_path, capsys):
    from edgecnn.train.fit import train

    root = make_folder(tmp_path / "f", per_class=30)
    metrics = train("folder", "seed-cnn", tmp_path / "run", epochs=3, patience=3, augment=False, verbose=0,
                    data=str(root), dataset_options={"size": 28})
    err = capsys.readouterr().err
    assert "2 classes" in err and "steps per epoch" in err and "kept the weights of epoch" in err
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    best = int(np.argmin(history["val_loss"])) + 1
    assert metrics["kept_epoch"] == run["kept_epoch"] == best
    assert run["batch_size"] == 4  # 42 training images: 32 shrunk to 4 so that an epoch has >= 10 steps
    assert f"epoch {best} " in err or f"epoch {best}:" in err or f"epoch {best} of" in err


def test_few_shot_subset_keeps_the_named_classes_and_caps_the_training_images():
    from edgecnn.errors import InputError
    from edgecnn.train.datasets import load_dataset

    full = load_dataset("digits", seed=1)
    few = load_dataset("digits", seed=1, classes="5,6,7,8,9", per_class=10)
    assert few.labels == ["5", "6", "7", "8", "9"]
    assert np.bincount(few.y_train).tolist() == [10] * 5
    # Validation and test keep every image of those classes, relabelled 0..4 in the order given.
    assert len(few.y_test) == int(np.isin(full.y_test, [5, 6, 7, 8, 9]).sum())
    np.testing.assert_array_equal(few.x_test, full.x_test[np.isin(full.y_test, [5, 6, 7, 8, 9])])
    np.testing.assert_array_equal(few.y_test, full.y_test[np.isin(full.y_test, [5, 6, 7, 8, 9])] - 5)
    assert few.describe()["options"] == {"classes": "5,6,7,8,9", "per_class": 10}
    with pytest.raises(InputError, match="it has no 12"):
        load_dataset("digits", classes="1,12")
    with pytest.raises(InputError, match="per_class"):
        load_dataset("digits", per_class=0)


def test_drawn_digits_takes_the_few_shot_options_and_a_larger_training_set():
    """drawn-digits' images keep their own sizes (a list, not an array): the few-shot subset must still pick them,
    and ``-d train_per_class`` draws as many training images as a pretraining run needs."""
    from edgecnn.errors import InputError
    from edgecnn.train.datasets import load_dataset

    full = load_dataset("drawn-digits", seed=1)
    few = load_dataset("drawn-digits", seed=1, classes="5,6,7,8,9", per_class=3)
    assert few.labels == ["5", "6", "7", "8", "9"]
    assert np.bincount(few.y_train).tolist() == [3] * 5 and len(few.x_train) == 15
    wanted = np.isin(full.y_test, [5, 6, 7, 8, 9])
    assert len(few.x_test) == int(wanted.sum())
    assert all(np.array_equal(a, b) for a, b in zip(few.x_test, [x for x, k in zip(full.x_test, wanted) if k]))
    np.testing.assert_array_equal(few.y_test, full.y_test[wanted] - 5)
    big = load_dataset("drawn-digits", seed=1, classes="0,1", train_per_class=45)
    assert np.bincount(big.y_train).tolist() == [45, 45]
    assert big.describe()["options"] == {"train_per_class": 45, "classes": "0,1"}
    with pytest.raises(InputError, match="train_per_class"):
        load_dataset("drawn-digits", train_per_class=0)


def test_drawn_digits_can_go_unframed_like_any_folder_of_images():
    """-d fit=none -d polarity=none: the drawn images resized as they are (digit anywhere, either polarity), as
    the digits dataset's same options do; the default frames them as the digits-cnn runtime does."""
    from edgecnn.errors import InputError
    from edgecnn.runtime import image as image_io
    from edgecnn.train.datasets import load_dataset, model_pixels

    framed = load_dataset("drawn-digits", seed=2, test_per_class=1)
    raw = load_dataset("drawn-digits", seed=2, test_per_class=1, fit="none", polarity="none")
    assert framed.preprocessing["fit"] == "ink" and framed.preprocessing["polarity"] == "auto"
    assert raw.preprocessing["fit"] == "none" and raw.preprocessing["polarity"] == "none"
    assert "fit_size" not in raw.preprocessing
    pixels = model_pixels(raw.x_test, raw.preprocessing)
    light = [i for i, image in enumerate(raw.x_test) if np.median(image) > 170]
    assert light and all(np.median(pixels[i]) > 170 for i in light)  # not inverted
    plain = np.asarray(image_io.to_mode(image_io.open_image(raw.x_test[0]), "L").resize((28, 28), image_io.RESAMPLE["bilinear"]))
    np.testing.assert_array_equal(pixels[0, :, :, 0], plain)  # a plain resize of the whole image
    with pytest.raises(InputError, match="fit"):
        load_dataset("drawn-digits", fit="crop")


@pytest.mark.slow
def test_readme_your_own_images_runs_as_written_offline(tmp_path):
    """The README's "Your own images" section from a fresh folder, with no network: its Python block makes the
    256x256 two-class folder, its commands train (``--epochs`` cut to 1 here: the commands, flags, paths and the
    --weights hand-over are what is checked, not the accuracy), export and infer, and the lines it quotes (the
    transfer line, the dataset summary) are what the run prints."""
    import os
    import re
    import subprocess
    import sys
    from pathlib import Path

    from .conftest import ROOT

    text = (ROOT / "README.md").read_text()
    section = text[text.index("\n## Your own images"):]
    section = section[:section.index("\n## ", 1)]
    blocks = re.findall(r"^```(\w*)\n(.*?)^```", section, re.DOTALL | re.MULTILINE)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TF_", "GLOG_", "ABSL_"))}
    env.update(HOME=str(tmp_path / "home"), PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
               HTTPS_PROXY="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9", NO_PROXY="")  # offline
    (tmp_path / "home").mkdir()
    for block in (body for lang, body in blocks if lang == "python"):
        subprocess.run([sys.executable, "-c", block], cwd=tmp_path, env=env, check=True, timeout=300)
    commands = [re.sub(r"\s+", " ", re.sub(r"(^|\s+)#.*$", "", line)).strip()
                for body in (body for lang, body in blocks if lang == "bash")
                for line in body.replace("\\\n", " ").splitlines()]
    commands = [c for c in commands if c]
    assert [c.split()[1] for c in commands] == ["train", "train", "export", "infer"], commands
    quoted = dict(re.findall(r'^# (your folder), from those weights: "(.*?)"', "\n".join(
        body for lang, body in blocks if lang == "bash"), re.MULTILINE))
    outputs = []
    for command in commands:
        command = re.sub(r"--epochs \d+", "--epochs 1", command)
        result = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True,
                                timeout=900, check=False)
        assert result.returncode == 0 and "Traceback" not in result.stderr, (command, result.stderr[-3000:])
        outputs.append(result)
    assert quoted["your folder"] in outputs[1].stderr
    summary = next(body for lang, body in blocks if lang == "text").strip().splitlines()
    printed = outputs[1].stderr.splitlines()
    assert printed[printed.index(summary[0]):printed.index(summary[0]) + len(summary)] == summary
    assert len(outputs[3].stdout.splitlines()) == 2, outputs[3].stdout  # one answer per image


@pytest.mark.slow
def test_drawn_digits_trains_exports_evaluates_and_infers_from_the_cli(tmp_path):
    """The user path on a dataset whose splits are lists of images of their own sizes: export validates,
    calibrates and picks samples from that list, eval rebuilds it from the manifest, and the shipped samples (the
    drawn images as they were, not framed) are read back by infer as export scored them. A barely trained model:
    ``--min-agreement 0`` because the path is checked here, not int8's accuracy."""
    from .conftest import error_lines, run_cli

    run, out = tmp_path / "R", tmp_path / "E"
    steps = [("train", "--dataset", "drawn-digits", "-d", "train_per_class=10", "-d", "test_per_class=3",
              "--epochs", "2", "--out", str(run)),
             ("export", str(run / "model.keras"), "--out", str(out), "--formats", "onnx,tflite-int8",
              "--min-agreement", "0"),
             ("eval", str(out))]
    results = [run_cli(*step, timeout=900) for step in steps]
    for step, result in zip(steps, results):
        assert result.returncode == 0 and not error_lines(result), (step[0], result.stderr[-2000:])
    manifest = json.loads((out / "edgecnn.json").read_text())
    assert manifest["dataset"]["options"] == {"train_per_class": 10, "test_per_class": 3}
    assert "drawn-digits test split (n=30)" in results[2].stdout, results[2].stdout
    onnx_row = next(line.split() for line in results[2].stdout.splitlines() if line.startswith("onnx "))
    assert float(onnx_row[2]) == 1.0  # fp32 ONNX agrees with Keras on the rebuilt list of images
    samples = sorted((out / "samples").iterdir())
    assert samples and manifest["samples"]["count"] == len(samples)
    infer = run_cli("infer", "--model", str(out), "--format", "onnx", "--json", *map(str, samples))
    assert infer.returncode == 0, infer.stderr[-2000:]
    answers = {a["input"]: a["predictions"][0]["label"] for a in map(json.loads, infer.stdout.splitlines())}
    # Samples are test images the source model got right: fp32 ONNX must give each its own digit back.
    assert answers == {str(p): p.name.split("-")[0] for p in samples}
