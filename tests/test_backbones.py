"""Backbones by name (keras.applications under a pooling -> dropout -> dense head): options, the preset they
record, the offline message of ``--weights imagenet``, and a short run that trains and exports. Nothing here
downloads anything: the download function is replaced by one that fails, as it does offline."""

from __future__ import annotations

import json

import pytest


def test_backbones_are_listed_with_their_options():
    from edgecnn.train.models import model_options, models_for

    for name in ("mobilenetv2", "mobilenetv3small", "efficientnetb0"):
        assert name in models_for("image-classification")
        options = model_options(name)
        assert options["alpha"] == 1.0 and options["dropout"] == 0.2 and "weights" not in options
        assert "stage1_epochs" in options and "unfreeze" in options


def test_backbone_preprocessing_is_the_preset_of_its_family():
    """The run records the preset keras.applications' preprocess_input of that family uses (presets.py's table)."""
    from edgecnn.presets import preset_for_name
    from edgecnn.train.backbones import preprocessing_for

    for name in ("mobilenetv2", "mobilenetv3small", "efficientnetb0"):
        fields = preprocessing_for(name, {"channels": 1})
        assert fields["preset"] == preset_for_name(name)[0]
    assert preprocessing_for("seed-cnn", {"channels": 1}) == {}


def test_imagenet_weights_offline_name_the_file_to_place_and_where(tmp_path, monkeypatch):
    import urllib.error

    from keras.src.backend import config
    from keras.src.utils import file_utils

    from edgecnn.errors import InputError
    from edgecnn.train.models import create_model

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network (test)")

    monkeypatch.setattr(file_utils, "urlretrieve", offline)
    monkeypatch.setattr(config, "_KERAS_DIR", str(tmp_path))  # an empty cache, whatever this machine holds
    with pytest.raises(InputError) as caught:
        create_model("mobilenetv2", (96, 96, 1), 2, weights="imagenet", alpha=0.35)
    message = str(caught.value)
    # The exact file name keras.applications asks its cache for, and the cache's folder.
    assert "place mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_96_no_top.h5 " in message
    assert f"in {tmp_path / 'models'}/" in message and "\n" not in message
    assert file_utils.get_file.__module__ == "keras.src.utils.file_utils"  # put back after the build


def test_imagenet_weights_are_refused_for_a_model_without_a_backbone():
    from edgecnn.errors import InputError
    from edgecnn.train.models import create_model

    with pytest.raises(InputError, match="pretrained backbone"):
        create_model("seed-cnn", (28, 28, 1), 2, weights="imagenet")


def test_gray_input_is_fed_as_three_channels_inside_the_graph():
    from edgecnn.train.models import create_model

    model = create_model("mobilenetv3small", (32, 32, 1), 3, alpha=0.75)
    assert model.input_shape == (None, 32, 32, 1) and model.output_shape == (None, 3)
    assert model.get_layer("gray_to_rgb").output.shape[-1] == 3
    assert [layer.name for layer in model.layers[-3:]] == ["pool", "dropout", "probabilities"]


@pytest.mark.slow
def test_a_backbone_trains_on_a_tiny_folder_and_exports(tmp_path):
    from click.testing import CliRunner

    from edgecnn.cli import cli
    from edgecnn.export import export_model
    from edgecnn.train.fit import train

    from .test_small_data import make_folder

    root = make_folder(tmp_path / "f", per_class=12, size=(48, 48))
    train("folder", "mobilenetv2", tmp_path / "run", epochs=1, augment=False, verbose=0, data=str(root),
          dataset_options={"size": 32}, model_options={"alpha": 0.35})
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["preprocessing"]["preset"] == "tf" and run["preprocessing"]["offset"] == -1.0
    manifest = export_model(tmp_path / "run" / "model.keras", tmp_path / "export", formats=["onnx"])
    assert manifest["preprocessing"]["preset"] == "tf"
    image = str(next((root / "a").iterdir()))
    result = CliRunner().invoke(cli, ["infer", image, "--model", str(tmp_path / "export"), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output.splitlines()[0])["predictions"][0]["label"] in ("a", "b")


def test_a_backbone_weights_file_loads_into_the_backbone_under_a_new_head(tmp_path, capsys):
    """``--weights FILE.weights.h5`` saved from a backbone alone (as keras.applications' ``*_notop.h5`` are) fills
    the backbone and leaves the head new; a file that fits neither is refused in one line."""
    import numpy as np

    from edgecnn.errors import InputError
    from edgecnn.train.fit import start_from, weighted_layers
    from edgecnn.train.models import create_model

    donor = create_model("mobilenetv3small", (32, 32, 3), 4, alpha=0.75)
    base = next(layer for layer in donor.layers if getattr(layer, "layers", None))
    base.save_weights(tmp_path / "base.weights.h5")
    model = create_model("mobilenetv3small", (32, 32, 1), 2, alpha=0.75)
    record = start_from(model, tmp_path / "base.weights.h5")
    assert record["new_head"] is True and record["layers_kept"] == len(weighted_layers(base))
    assert record["layers"] == record["layers_kept"] + 1
    first = weighted_layers(base)[0]
    np.testing.assert_array_equal(model.get_layer(base.name).get_layer(first.name).get_weights()[0],
                                  first.get_weights()[0])
    assert "new head for 2 classes" in capsys.readouterr().err
    other = create_model("seed-cnn", (28, 28, 1), 2)
    other.save_weights(tmp_path / "other.weights.h5")
    with pytest.raises(InputError, match="fits neither") as caught:
        start_from(model, tmp_path / "other.weights.h5")
    assert "\n" not in str(caught.value)
