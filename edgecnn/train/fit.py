"""Compile and fit a registered model on a registered dataset; write the run folder.

A run folder holds ``model.keras``, ``run.json`` (dataset, seed, labels, preprocessing: what export needs to build
the manifest and the held-out split), ``history.json``/``history.png``, ``confusion.png`` and ``metrics.json``.
Each task has a trainer in ``TRAINERS``; image classification lives here, the others register their own.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import InputError, require
from ..keras_io import import_tensorflow

RUN_FILE = "run.json"


@dataclass(frozen=True)
class TrainerInfo:
    """A task's trainer: ``run`` fits and measures; ``options`` are the ``-o`` keys it reads itself, with their
    defaults (the rest go to the architecture); ``check(options, epochs)`` refuses combinations before any work."""

    task: str
    run: Callable
    options: dict
    check: Callable[[dict, int], None] | None = None


TRAINERS: dict[str, TrainerInfo] = {}


def register_trainer(task: str, options: dict | None = None, check: Callable[[dict, int], None] | None = None):
    """Decorator: ``run(tf, keras, splits, model_name, out, ..., model_options, trainer_options, ...)`` trains
    models of ``task``; ``options`` are the trainer options it reads, with defaults (listed by 'edgecnn models')."""

    def wrap(fn):
        TRAINERS[task] = TrainerInfo(task, fn, dict(options or {}), check)
        return fn

    return wrap


def trainer_for(task: str) -> TrainerInfo:
    from . import models  # noqa: F401 - importing the registries registers every task's trainer

    if task not in TRAINERS:
        raise InputError(f"no trainer for task {task!r}; trainable tasks: {', '.join(sorted(TRAINERS))}")
    return TRAINERS[task]


def check_training(dataset: str, model: str, epochs: int, data: str | None = None,
                   model_options: dict | None = None, dataset_options: dict | None = None) -> tuple[dict, dict]:
    """Refuse a run that cannot work - unknown names or options, a model for another task, nonsense settings -
    in one line and before TensorFlow is even imported; return (trainer options, builder options)."""
    from . import datasets as datasets_mod
    from . import models as models_mod

    dataset_info = datasets_mod.dataset_info(dataset)
    info = models_mod.model_info(model)
    if info.task != dataset_info.task:
        fitting = ", ".join(models_mod.models_for(dataset_info.task)) or "none is registered"
        raise InputError(f"model {model!r} is for {info.task} but dataset {dataset!r} is {dataset_info.task}; "
                         f"pick a {dataset_info.task} model with --model: {fitting}")
    if int(epochs) < 1:
        raise InputError(f"--epochs {epochs}: train for at least 1 epoch")
    datasets_mod.check_dataset_options(dataset, dataset_options or {}, data)
    trainer_options, builder_options = models_mod.split_model_options(model, dict(model_options or {}))
    trainer = trainer_for(info.task)
    if trainer.check is not None:
        trainer.check(trainer_options, int(epochs))
    return trainer_options, builder_options


def train(dataset: str, model: str, out: str | os.PathLike, epochs: int = 30, seed: int = 0,
          batch_size: int = 32, patience: int = 8, learning_rate: float = 1e-3, augment: bool = True,
          data: str | None = None, model_options: dict | None = None, dataset_options: dict | None = None,
          verbose: int | None = None, weights: str | os.PathLike | None = None) -> dict:
    """Train ``model`` on ``dataset`` and write the run folder ``out``; returns the metrics.

    Early stopping watches the validation loss and restores the best weights. The same seed gives the same split
    and (on one machine) the same weights. ``weights`` (a ``model.keras`` of the same architecture) starts from
    trained weights instead of random ones: fine-tuning, or a second schedule after a first (see ``start_from``).
    """
    if weights is not None and not Path(weights).is_file():
        raise InputError(f"--weights {weights}: no such file; give the model.keras of an earlier run")
    trainer_options, builder_options = check_training(dataset, model, epochs, data, model_options,
                                                      dataset_options)
    tf = import_tensorflow()
    import keras

    # Imported here, not at the top: the task modules these registries import register trainers in this module.
    from . import datasets as datasets_mod

    keras.utils.set_random_seed(seed)
    splits = datasets_mod.load_dataset(dataset, seed=seed, data=data, **(dataset_options or {}))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if verbose is None:
        verbose = 1 if sys.stdout.isatty() else 2
    trainer = trainer_for(splits.task)
    metrics, run_info = trainer.run(tf=tf, keras=keras, splits=splits, model_name=model, out=out, epochs=epochs,
                                    seed=seed, batch_size=batch_size, patience=patience,
                                    learning_rate=learning_rate, augment=augment, model_options=builder_options,
                                    trainer_options=trainer_options, verbose=verbose, weights=weights)
    run = {"task": splits.task, "model": model, "model_options": model_options or {}, "labels": splits.labels,
           "preprocessing": splits.preprocessing, "dataset": splits.describe(), "epochs": epochs,
           "batch_size": batch_size, "learning_rate": learning_rate, **run_info}
    if weights is not None:
        run["weights"] = str(weights)
    (out / RUN_FILE).write_text(json.dumps(run, indent=2) + "\n")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def start_from(model, weights) -> None:
    """Load ``weights`` (a ``model.keras``) into the freshly built ``model``, if given; every trainer calls this.

    Why: a run can go on from an earlier one with a new learning-rate schedule (a warm restart) without paying for
    the first schedule again, and a user can fine-tune a model of ours on their own data. Keras only *warns* when
    it skips part of a file that does not match; a half-loaded model would train on silently, so that is an error.
    """
    if weights is None:
        return
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model.load_weights(str(weights))
            problem = next((str(w.message) for w in caught if "Skipping" in str(w.message)), None)
        except ValueError as exc:
            problem = (str(exc).strip() or type(exc).__name__).splitlines()[0]
    if problem:
        raise InputError(f"--weights {weights} does not fit model {model.name!r} with these options "
                         f"(train with the same --model and -o options as that run): {problem}")


#: How many training batches ``precise_batch_norm`` averages (200 x 16 = 3,200 scenes for the detector, ~15 s).
PRECISE_BN_BATCHES = 200


def precise_batch_norm(model, images: np.ndarray, batch_size: int, batches: int = PRECISE_BN_BATCHES) -> int:
    """Set every BatchNormalization layer's moving statistics to the *mean* of its batch statistics over up to
    ``batches`` batches of ``images`` (model inputs, un-augmented); returns the number of batches used.

    Why ("precise BN", Wu & Johnson, *Rethinking "Batch" in BatchNorm*, 2021): the moving averages Keras keeps
    during training are an exponential average of the last few dozen batches (momentum 0.9 in the detector), taken
    while the weights still moved, so inference normalises with statistics of a slightly different, earlier
    network. Averaged afresh with the final weights the digit-detector gained ~1 pt mAP@0.5 (0.927 -> 0.937)
    and no weight changed. Each batch runs the model in training mode, so layers that behave differently there
    (dropout) would shift the statistics: for models without them.
    """
    import keras

    def walk(layer):
        yield layer
        for inner in getattr(layer, "layers", []):
            yield from walk(inner)

    norms = [layer for layer in walk(model) if isinstance(layer, keras.layers.BatchNormalization)]
    if not norms or len(images) == 0:
        return 0
    saved = [layer.momentum for layer in norms]
    used = 0
    try:
        for used, start in enumerate(range(0, min(len(images), batches * batch_size), batch_size), start=1):
            for layer in norms:  # moving = moving * k/(k+1) + batch/(k+1): the running mean of k + 1 batches
                layer.momentum = (used - 1) / used
            model(images[start:start + batch_size], training=True)
    finally:
        for layer, momentum in zip(norms, saved):
            layer.momentum = momentum
    return used


def image_augmenter(keras, seed: int):
    """Rotation, translation and zoom (no flips: a flipped 2 is no digit), used in the input pipeline only."""
    layers = keras.layers
    return keras.Sequential([
        layers.RandomRotation(0.06, fill_mode="constant", seed=seed),
        layers.RandomTranslation(0.1, 0.1, fill_mode="constant", seed=seed + 1),
        layers.RandomZoom(0.1, fill_mode="constant", seed=seed + 2),
    ], name="augment")


def fit_model(tf, keras, model, train_ds, val_ds, epochs: int, patience: int, verbose: int):
    """``model.fit`` with early stopping on validation loss (best weights restored).

    ``shuffle=False`` because the tf.data pipelines shuffle (or draw fresh examples) themselves; Keras ignores its
    own ``shuffle`` for a dataset and warns on every run when it is left at ``True``.
    """
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience, restore_best_weights=True)
    return model.fit(train_ds, validation_data=val_ds, epochs=epochs, callbacks=[stop], verbose=verbose,
                     shuffle=False)


def save_history(history, out: Path) -> None:
    """history.json and history.png (loss and accuracy curves, train vs validation)."""
    data = {k: [float(v) for v in values] for k, values in history.history.items()}
    (out / "history.json").write_text(json.dumps(data, indent=2) + "\n")
    plt = _pyplot()
    metrics = [k for k in data if not k.startswith("val_")]
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.6), squeeze=False)
    for ax, key in zip(axes[0], metrics):
        ax.plot(data[key], label="train")
        if f"val_{key}" in data:
            ax.plot(data[f"val_{key}"], label="validation")
        ax.set_title(key)
        ax.set_xlabel("epoch")
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "history.png", dpi=100)
    plt.close(fig)


def save_confusion(y_true, y_pred, labels: list[str], path: Path, title: str) -> None:
    """A confusion-matrix plot of the test split (scikit-learn's display)."""
    plt = _pyplot()
    from sklearn.metrics import ConfusionMatrixDisplay

    size = max(4.5, 0.5 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ConfusionMatrixDisplay.from_predictions(y_true, y_pred, labels=list(range(len(labels))), display_labels=labels,
                                            ax=ax, colorbar=False,
                                            xticks_rotation=45 if len(labels) > 10 or max(map(len, labels)) > 5 else 0)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _pyplot():
    matplotlib = require("matplotlib", "train", "Plotting")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


@register_trainer("image-classification")
def _train_image_classifier(tf, keras, splits, model_name, out, epochs, seed, batch_size, patience,
                            learning_rate, augment, model_options, trainer_options, verbose, weights=None):
    from ..runtime.image import pixels_to_input

    prep = splits.preprocessing
    x_train, x_val, x_test = (pixels_to_input(x, prep) for x in (splits.x_train, splits.x_val, splits.x_test))
    from .models import create_model

    model = create_model(model_name, x_train.shape[1:], len(splits.labels), **model_options)
    start_from(model, weights)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    train_ds = tf.data.Dataset.from_tensor_slices((x_train, splits.y_train)).shuffle(len(x_train), seed=seed)
    train_ds = train_ds.batch(batch_size)
    if augment:
        augmenter = image_augmenter(keras, seed)
        train_ds = train_ds.map(lambda x, y: (augmenter(x, training=True), y), num_parallel_calls=tf.data.AUTOTUNE)
    train_ds = train_ds.prefetch(tf.data.AUTOTUNE)
    val_ds = tf.data.Dataset.from_tensor_slices((x_val, splits.y_val)).batch(256)
    history = fit_model(tf, keras, model, train_ds, val_ds, epochs, patience, verbose)
    model.save(out / "model.keras")
    save_history(history, out)
    probabilities = model.predict(x_test, batch_size=256, verbose=0)
    y_pred = probabilities.argmax(axis=1)
    accuracy = float(np.mean(y_pred == splits.y_test))
    save_confusion(splits.y_test, y_pred, splits.labels, out / "confusion.png",
                   f"{model_name} on {splits.name} test: {accuracy:.2%}")
    metrics = {"test_accuracy": accuracy, "test_size": len(y_pred), "epochs_run": len(history.epoch),
               "parameters": int(model.count_params())}
    return metrics, {}


def files_written(out: str | os.PathLike, since_ns: int) -> list[str]:
    """Names of the files in the run folder ``out`` written at or after ``since_ns`` (``time.time_ns()``).

    What a run actually wrote differs by task (a detector draws no confusion matrix), and a folder reused from
    an earlier run may still hold that run's files: the listing reports this run's only.
    """
    return sorted(p.name for p in Path(out).iterdir() if p.is_file() and p.stat().st_mtime_ns >= since_ns)
