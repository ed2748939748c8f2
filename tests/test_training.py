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
