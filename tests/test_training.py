"""Short training runs that catch models which cannot learn (a few epochs, digits)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


def test_mobilenet_s_validates_above_chance_within_a_few_epochs(tmp_path):
    """With Keras' default batch-norm momentum the moving statistics lag far behind on small datasets, validation
    stays at chance and early stopping keeps a useless model: this guards the momentum choice."""
    from edgecnn.train.fit import train

    metrics = train("digits", "mobilenet-s", tmp_path, epochs=4, seed=0, augment=False, patience=4,
                    model_options={"alpha": 0.5}, verbose=0)
    assert metrics["test_accuracy"] > 0.6


def test_weights_start_a_run_from_an_earlier_one(tmp_path):
    """``weights=`` loads the earlier run's model: with a learning rate too small to move anything, the second run
    measures what the first did (a random start would be near chance), and run.json says where it started."""
    import json

    from edgecnn.train.fit import train

    first = train("digits", "seed-cnn", tmp_path / "first", epochs=2, seed=0, augment=False, verbose=0)
    assert first["test_accuracy"] > 0.5
    second = train("digits", "seed-cnn", tmp_path / "second", epochs=1, seed=0, augment=False, verbose=0,
                   learning_rate=1e-12, weights=tmp_path / "first" / "model.keras")
    assert abs(second["test_accuracy"] - first["test_accuracy"]) < 0.01
    run = json.loads((tmp_path / "second" / "run.json").read_text())
    assert run["weights"] == str(tmp_path / "first" / "model.keras")


def test_weights_of_another_architecture_are_refused_in_one_line(tmp_path):
    from edgecnn.errors import InputError
    from edgecnn.train.fit import train

    train("digits", "seed-cnn", tmp_path / "first", epochs=1, seed=0, augment=False, verbose=0)
    with pytest.raises(InputError, match="does not fit model") as caught:
        train("digits", "lenet5", tmp_path / "second", epochs=1, seed=0, verbose=0,
              weights=tmp_path / "first" / "model.keras")
    assert "\n" not in str(caught.value)
    with pytest.raises(InputError, match="no such file"):
        train("digits", "seed-cnn", tmp_path / "third", epochs=1, seed=0, verbose=0, weights=tmp_path / "none.keras")
    assert not (tmp_path / "third").exists()  # refused before any data is loaded or folder written


def test_precise_batch_norm_sets_the_mean_of_the_batch_statistics():
    """Moving statistics become the plain mean of each batch's statistics (not an exponential average that
    favours the last batches), the layers' momentum is put back, and no weight changes."""
    import keras
    import numpy as np

    from edgecnn.train.fit import precise_batch_norm

    inputs = keras.Input((3,))
    outputs = keras.layers.Dense(2)(keras.layers.BatchNormalization(momentum=0.9, name="bn")(inputs))
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(0)
    # Batches with very different means: an exponential average would land near the last one's.
    x = np.concatenate([rng.normal(k * 10.0, 1.0 + k, (8, 3)) for k in range(5)]).astype(np.float32)
    dense_before = model.layers[-1].get_weights()
    used = precise_batch_norm(model, x, batch_size=8, batches=4)
    assert used == 4
    bn = model.get_layer("bn")
    batches = x[:32].reshape(4, 8, 3)
    np.testing.assert_allclose(bn.moving_mean.numpy(), batches.mean(axis=1).mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(bn.moving_variance.numpy(), batches.var(axis=1).mean(axis=0), rtol=1e-4)
    assert bn.momentum == 0.9
    for before, after in zip(dense_before, model.layers[-1].get_weights()):
        np.testing.assert_array_equal(before, after)


def test_trainer_options_reach_the_trainer_and_are_recorded(tmp_path):
    """``objectness`` is read by the detection trainer, not the architecture: a run with it trains, and run.json
    keeps the options as given (what ``--weights`` asks a later run to repeat)."""
    import json

    from edgecnn.train.fit import train

    options = {"objectness": "iou", "alpha": 0.25, "head_width": 8}
    metrics = train("digit-scenes", "detector", tmp_path, epochs=1, seed=0, batch_size=8, verbose=0,
                    dataset_options={"train": 8, "val": 4, "test": 4}, model_options=options)
    assert 0.0 <= metrics["test_map50"] <= 1.0
    assert json.loads((tmp_path / "run.json").read_text())["model_options"] == options


def test_weights_onto_another_label_set_keep_what_fits_and_train_a_new_head_in_two_stages(tmp_path, capsys):
    """A model.keras trained on 3 classes starts a 2-class run: every layer but the head is kept (said in one
    line, recorded in run.json), stage 1 trains the head on the frozen base, stage 2 the top of the base; the same
    class count with other labels gets a new head too (the old one would answer the old labels)."""
    import json

    from edgecnn.train.fit import train

    from .test_small_data import make_folder

    three = make_folder(tmp_path / "three", classes=("a", "b", "c"), per_class=12)
    two = make_folder(tmp_path / "two", classes=("cat", "dog"), per_class=15)
    train("folder", "seed-cnn", tmp_path / "first", epochs=1, augment=False, verbose=0, data=str(three),
          dataset_options={"size": 28})
    capsys.readouterr()
    train("folder", "seed-cnn", tmp_path / "second", epochs=3, augment=False, verbose=0, data=str(two),
          dataset_options={"size": 28}, weights=tmp_path / "first" / "model.keras",
          model_options={"stage1_epochs": 2, "unfreeze": 1})
    err = capsys.readouterr().err
    line = next(line for line in err.splitlines() if "layers' weights" in line)
    assert line.endswith("kept 4 of 5 layers' weights; new head for 2 classes (it was trained on 3: a, b, c)")
    assert "could not be loaded" not in err
    run = json.loads((tmp_path / "second" / "run.json").read_text())
    assert run["transfer"]["layers_kept"] == 4 and run["transfer"]["new_head"] is True
    assert run["transfer"]["replaced"] == ["probabilities"]
    assert [s["stage"] for s in run["stages"]] == [1, 2]
    assert run["stages"][0]["frozen_layers"] == 3 and run["stages"][1]["frozen_layers"] == 2  # the convolutions
    assert run["stages"][1]["learning_rate"] < run["stages"][0]["learning_rate"]
    history = json.loads((tmp_path / "second" / "history.json").read_text())
    assert len(history["loss"]) == sum(s["epochs_run"] for s in run["stages"])

    renamed = make_folder(tmp_path / "renamed", classes=("x", "y"), per_class=15)
    train("folder", "seed-cnn", tmp_path / "third", epochs=1, augment=False, verbose=0, data=str(renamed),
          dataset_options={"size": 28}, weights=tmp_path / "second" / "model.keras")
    assert "kept 4 of 5 layers' weights; new head for 2 classes" in capsys.readouterr().err


def test_stage_one_freezes_only_the_feature_extractor_and_trains_the_kept_dense_layers(tmp_path, capsys):
    """The frozen base of stage 1 is the part that computes image features (the layers before Flatten or global
    pooling); a kept hidden Dense after it (seed-cnn's Dense64) is classifier, trained with the new head from the
    start. Frozen, it made stage 1 a linear probe of features tuned to the old classes (a third of its units dead
    on the new ones): digits 0-4 -> 5-9 with 10 images per class, seed 0, reached 66 % where scratch reached 91 %."""
    import json

    import keras
    import numpy as np

    from edgecnn.train.fit import train

    from .test_small_data import make_folder

    three = make_folder(tmp_path / "three", classes=("a", "b", "c"), per_class=12)
    two = make_folder(tmp_path / "two", classes=("cat", "dog"), per_class=15)
    train("folder", "seed-cnn", tmp_path / "first", epochs=1, augment=False, verbose=0, data=str(three),
          dataset_options={"size": 28})
    train("folder", "seed-cnn", tmp_path / "second", epochs=2, augment=False, verbose=0, data=str(two),
          dataset_options={"size": 28}, weights=tmp_path / "first" / "model.keras",
          model_options={"stage1_epochs": 2})
    err = capsys.readouterr().err
    before, after = (keras.saving.load_model(tmp_path / run / "model.keras") for run in ("first", "second"))
    moved = {layer.__class__.__name__ + str(i): not all(np.array_equal(a, b) for a, b in
                                                        zip(old.get_weights(), layer.get_weights()))
             for i, (old, layer) in enumerate(zip(before.layers[:-1], after.layers[:-1])) if layer.weights}
    assert moved == {"Conv2D1": False, "Conv2D3": False, "Conv2D5": False, "Dense7": True}
    run = json.loads((tmp_path / "second" / "run.json").read_text())
    assert [(s["stage"], s["frozen_layers"]) for s in run["stages"]] == [(1, 3)]
    assert "stage 1: training the head (the new output layer and 1 kept layer after the base) on the frozen " \
           "base (3 layers) for 2 epochs" in err


def test_a_weights_file_that_does_not_fit_says_which_layer_and_which_shapes_in_one_line(tmp_path):
    """The issue's "A total of 1 objects could not be loaded. Example error message for object <Dense ...>:" was
    Keras' first line, cut off before it said anything: the refusal names the layer and both shapes."""
    from edgecnn.errors import InputError
    from edgecnn.train.fit import start_from
    from edgecnn.train.models import create_model

    create_model("seed-cnn", (28, 28, 1), 3).save_weights(tmp_path / "three.weights.h5")
    with pytest.raises(InputError) as caught:
        start_from(create_model("seed-cnn", (28, 28, 1), 2), tmp_path / "three.weights.h5")
    message = str(caught.value)
    assert "\n" not in message and "could not be loaded" not in message and not message.endswith(":")
    assert "'probabilities'" in message and "(64, 2)" in message and "(64, 3)" in message, message
    assert "model.keras" in message  # what to do instead
