"""Compile and fit a registered model on a registered dataset; write the run folder.

A run folder holds ``model.keras``, ``run.json`` (dataset, seed, labels, preprocessing: what export needs to build
the manifest and the held-out split), ``history.json``/``history.png``, ``confusion.png`` and ``metrics.json``.
Each task has a trainer in ``TRAINERS``; image classification lives here, the others register their own.
"""

from __future__ import annotations

import json
import math
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
          batch_size: int | None = None, patience: int = 8, learning_rate: float = 1e-3, augment: bool = True,
          data: str | None = None, model_options: dict | None = None, dataset_options: dict | None = None,
          verbose: int | None = None, weights: str | os.PathLike | None = None,
          strategy: str | None = None) -> dict:
    """Train ``model`` on ``dataset`` and write the run folder ``out``; returns the metrics.

    Early stopping watches the validation loss and restores the best weights. The same seed gives the same split
    and (on one machine) the same weights. ``weights`` (a ``model.keras`` of the same architecture) starts from
    trained weights instead of random ones: fine-tuning, or a second schedule after a first (see ``start_from``);
    ``"imagenet"`` for a backbone (``backbones.py``). ``batch_size`` None is ``DEFAULT_BATCH_SIZE``, shrunk for
    image classifiers so that an epoch has at least ``MIN_STEPS`` steps (``choose_batch_size``). ``strategy``
    (``none``, ``mirrored``, ``multi-worker``) trains on tf.distribute (``distribute.py``; the batch size is global).
    """
    from . import distribute

    strategy_name = distribute.check_strategy(strategy)
    if weights is not None and str(weights) != "imagenet" and not Path(weights).is_file():
        raise InputError(f"--weights {weights}: no such file; give the model.keras of an earlier run")
    trainer_options, builder_options = check_training(dataset, model, epochs, data, model_options,
                                                      dataset_options)
    tf = import_tensorflow()
    distributed = distribute.make_strategy(tf, strategy_name)  # before any other TensorFlow op
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
    if batch_size is None and splits.task != "image-classification":
        batch_size = DEFAULT_BATCH_SIZE  # the image trainer chooses its own (choose_batch_size)
    with distribute.scope(distributed), distribute.run_folder(out, distributed) as folder:
        metrics, run_info = trainer.run(tf=tf, keras=keras, splits=splits, model_name=model, out=folder,
                                        epochs=epochs, seed=seed, batch_size=batch_size, patience=patience,
                                        learning_rate=learning_rate, augment=augment, model_options=builder_options,
                                        trainer_options=trainer_options, verbose=verbose, weights=weights)
    if distributed is not None:
        run_info["distribute"] = distribute.describe(distributed, strategy_name)
        if not distribute.is_chief(distributed):
            return metrics  # the chief writes the run folder
    run = {"task": splits.task, "model": model, "model_options": model_options or {}, "labels": splits.labels,
           "preprocessing": splits.preprocessing, "dataset": splits.describe(), "epochs": epochs,
           "batch_size": batch_size, "learning_rate": learning_rate, **run_info}
    if weights is not None:
        run["weights"] = str(weights)
    (out / RUN_FILE).write_text(json.dumps(run, indent=2) + "\n")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def start_from(model, weights, labels: list[str] | None = None) -> dict | None:
    """Load ``weights`` into the freshly built ``model``, if given; every trainer calls this. Returns what was
    transferred (run.json's ``transfer``), or None without weights.

    Why: a run can go on from an earlier one with a new learning-rate schedule (a warm restart) without paying for
    the first schedule again, and a user can fine-tune a model of ours on their own data - with other classes too:
    from a ``model.keras`` every layer whose weights fit is kept, and the head is new when the class count or the
    labels (the earlier run's run.json) differ; one line on stderr says which. A ``.weights.h5`` holds no layer
    structure to match, so it must fit the whole model. Another architecture is refused in one line.
    """
    if weights is None:
        return None
    from ..errors import ModelError
    from ..keras_io import load_keras_model

    path = Path(weights)
    if not path.name.lower().endswith(".weights.h5"):
        try:
            source = load_keras_model(path)
        except ModelError:
            if path.suffix.lower() != ".h5":
                raise
        else:
            return transfer_weights(source, model, path, labels, _run_labels(path))
    return _load_weights_file(model, path)


def _load_weights_file(model, path: Path) -> dict:
    """A weights-only file (``.weights.h5``, or an ``.h5`` of weights such as keras.applications' ``*_notop.h5``):
    the whole model's, or else its backbone's (the head then trains from scratch, in two stages)."""
    layers = weighted_layers(model)
    try:
        _load_whole(model, path)
        return {"from": str(path), "layers": len(layers), "layers_kept": len(layers), "new_head": False}
    except InputError:
        base = next((layer for layer in model.layers if getattr(layer, "layers", None)), None)
        if base is None:
            raise
    try:
        _load_whole(base, path)
    except InputError:
        raise InputError(f"--weights {path} fits neither model {model.name!r} nor its backbone {base.name!r}; give "
                         "weights saved from the same --model and -o options (or the backbone's own file)") from None
    kept = [layer.name for layer in weighted_layers(base)]
    print(f"--weights {path}: kept {len(kept)} of {len(layers)} layers' weights (the backbone's); new head for "
          f"{model.outputs[0].shape[-1]} classes", file=sys.stderr)
    return {"from": str(path), "layers": len(layers), "layers_kept": len(kept), "kept": kept, "new_head": True}


def _load_whole(model, path: Path) -> None:
    """``model.load_weights`` that refuses a file which does not fit all of it (Keras only *warns* when it skips
    part of a file; a half-loaded model would train on silently)."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model.load_weights(str(path))
            problem = next((str(w.message) for w in caught if "Skipping" in str(w.message)), None)
        except ValueError as exc:
            problem = weights_mismatch(str(exc)) or (str(exc).strip() or type(exc).__name__).splitlines()[0][:160]
    if problem:
        raise InputError(f"--weights {path} does not fit model {model.name!r} with these options "
                         f"({problem.splitlines()[0]}); a .weights.h5 must come from the same --model and -o "
                         "options - give that run's model.keras to keep only the layers that fit")


def weights_mismatch(keras_message: str) -> str | None:
    """Keras' refusal of a weights file in a few words: how many layers do not fit, the first one and both shapes.
    Why: its first line ("A total of 1 objects could not be loaded. Example error message for object <Dense
    name=probabilities, built=True>:") stops before saying anything, and the rest prints the variable's values."""
    import re

    count = re.search(r"A total of (\d+) objects? could not be loaded", keras_message)
    layer = re.search(r"object <(\w+) name=([^,>]+)", keras_message)
    shapes = re.search(r"variable\.shape=(\([^)]*\)), Received: value\.shape=(\([^)]*\))", keras_message)
    if not (count and layer):
        return None
    many = int(count.group(1))
    text = f"{many} layer{'s' if many > 1 else ''} do{'' if many > 1 else 'es'} not fit"
    text += f"{', the first' if many > 1 else ''} {layer.group(1)} {layer.group(2)!r}"
    if shapes:
        text += f": its weights here are {shapes.group(1)}, in the file {shapes.group(2)}"
    return text


def _run_labels(weights: Path) -> list[str] | None:
    """The labels of the run that wrote ``weights`` (its run.json beside it), if there is one."""
    run = weights.parent / RUN_FILE
    try:
        return list(json.loads(run.read_text())["labels"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def weighted_layers(model) -> list:
    """The layers that hold weights, nested models (a keras.applications backbone) walked into, in graph order."""
    found = []
    for layer in model.layers:
        if getattr(layer, "layers", None):
            found.extend(weighted_layers(layer))
        elif layer.weights:
            found.append(layer)
    return found


def transfer_weights(source, model, path, labels: list[str] | None, source_labels: list[str] | None) -> dict:
    """Copy each of ``source``'s weighted layers into the same-position layer of ``model`` where the shapes agree;
    the last one (the head) only when the labels are the same too. Prints one line saying what was kept."""
    src, dst = weighted_layers(source), weighted_layers(model)
    if source.name != model.name or len(src) != len(dst):
        raise InputError(f"--weights {path} does not fit model {model.name!r}: it holds a {source.name!r} with "
                         f"{len(src)} weighted layers, not {len(dst)}; start from a run of the same --model, or "
                         "train without --weights")
    relabel = labels is not None and source_labels is not None and list(labels) != list(source_labels)
    kept, replaced = [], []
    for i, (old, new) in enumerate(zip(src, dst)):
        values = old.get_weights()
        fits = [v.shape for v in values] == [tuple(v.shape) for v in new.get_weights()]
        if fits and not (relabel and i == len(dst) - 1):
            new.set_weights(values)
            kept.append(new.name)
        else:
            replaced.append(new.name)
    if not kept:
        raise InputError(f"--weights {path}: no layer of it fits model {model.name!r} with these options; train "
                         "with the same -o options as that run, or without --weights")
    new_head = dst[-1].name in replaced
    classes = int(dst[-1].get_weights()[-1].shape[-1]) if dst[-1].get_weights() else 0
    line = f"--weights {path}: kept {len(kept)} of {len(dst)} layers' weights"
    if new_head:
        line += f"; new head for {classes} classes" + (f" (it was trained on {len(source_labels)}: "
                                                       f"{', '.join(source_labels[:6])}"
                                                       f"{', ...' if len(source_labels) > 6 else ''})"
                                                       if source_labels else "")
    others = [name for name in replaced if name != dst[-1].name]
    if others:
        line += f"; not kept (shapes differ): {', '.join(others)}"
    print(line, file=sys.stderr)
    return {"from": str(path), "layers": len(dst), "layers_kept": len(kept), "kept": kept, "replaced": replaced,
            "new_head": new_head, "source_labels": source_labels}


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


def save_history(history, out: Path, kept_epoch: int | None = None, stage_starts=()) -> None:
    """history.json and history.png (loss and accuracy curves, train vs validation; ``history`` a Keras History
    or its ``.history`` dict), the kept epoch and the start of each later training stage marked."""
    data = getattr(history, "history", history)
    data = {k: [float(v) for v in values] for k, values in data.items()}
    (out / "history.json").write_text(json.dumps(data, indent=2) + "\n")
    fig = history_figure(data, kept_epoch, stage_starts)
    fig.savefig(out / "history.png", dpi=100)
    _pyplot().close(fig)


def history_figure(data: dict, kept_epoch: int | None = None, stage_starts=()):
    """The history plot as a matplotlib figure: epochs counted from 1 (as Keras' log counts them), a vertical line
    at ``kept_epoch`` (the weights early stopping kept) and at each stage start (``stage_starts``: epoch numbers)."""
    plt = _pyplot()
    metrics = [k for k in data if not k.startswith("val_")]
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.6), squeeze=False)
    for ax, key in zip(axes[0], metrics):
        epochs = list(range(1, len(data[key]) + 1))
        ax.plot(epochs, data[key], label="train")
        if f"val_{key}" in data:
            ax.plot(epochs, data[f"val_{key}"], label="validation")
        for number, start in enumerate(stage_starts, start=2):
            ax.axvline(start - 0.5, color="gray", linestyle=":", label=f"stage {number}")
        if kept_epoch is not None:
            ax.axvline(kept_epoch, color="green", linestyle="--", alpha=0.7, label=f"kept epoch {kept_epoch}")
        ax.set_title(key if kept_epoch is None else f"{key} (kept epoch {kept_epoch})")
        ax.set_xlabel("epoch")
        if len(epochs) < 12:
            ax.set_xticks(epochs)
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


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


#: The batch size when none is given, before ``choose_batch_size`` shrinks it for a small dataset.
DEFAULT_BATCH_SIZE = 32
#: The fewest steps an epoch should have: with 3 steps an epoch, batch norm's moving statistics and early stopping
#: see too little (the issue's 2-class folder: validation stuck at 0.50 at batch 32, 1.00 at batch 8).
MIN_STEPS = 10
#: The image trainer's own -o options (None: automatic; see ``_stages``).
IMAGE_TRAINER_OPTIONS = {"stage1_epochs": None, "unfreeze": None}
#: Stage 2 of fine-tuning trains at this fraction of --lr (Model Maker and the Keras transfer-learning guide: a
#: pretrained base moved at the full rate forgets what it knew in a few steps).
STAGE2_LR_FACTOR = 0.1


def choose_batch_size(train_size: int, requested: int | None) -> tuple[int, str]:
    """``(batch size, why)``: ``requested`` as given (with a warning when an epoch would have fewer than
    ``MIN_STEPS`` steps), else ``DEFAULT_BATCH_SIZE`` shrunk so that an epoch has at least ``MIN_STEPS``."""
    if requested is None:
        batch = max(1, min(DEFAULT_BATCH_SIZE, train_size // MIN_STEPS))
        if batch < DEFAULT_BATCH_SIZE:
            return batch, (f"the default {DEFAULT_BATCH_SIZE} shrunk so that an epoch has at least {MIN_STEPS} "
                           "steps")
        return batch, "the default"
    batch = int(requested)
    steps = math.ceil(train_size / batch)
    if steps < MIN_STEPS:
        auto = choose_batch_size(train_size, None)[0]
        return batch, (f"--batch-size {batch}; warning: only {steps} steps per epoch, too few for batch norm and "
                       f"early stopping to settle on a dataset this small - leave --batch-size out (it would be "
                       f"{auto})")
    return batch, f"--batch-size {batch}"


def check_splits(splits) -> None:
    """Refuse a split in which a class has no training or no validation example, in one line with advice: early
    stopping judges a model on the validation split, and a class absent there is never judged."""
    for which, name in (("train", "training"), ("val", "validation")):
        y = np.asarray(splits.split(which)[1])
        for index, label in enumerate(splits.labels):
            if not np.any(y == index):
                total = sum(int(np.sum(np.asarray(splits.split(s)[1]) == index)) for s in ("train", "val", "test"))
                raise InputError(f"class {label!r} has no image in the {name} split ({total} in all); add images "
                                 "to it (at least 10 per class, ideally 50 or more) or drop that class, so that "
                                 "training and early stopping see every class")


def dataset_summary(splits, batch_size: int, batch_note: str) -> str:
    """What a run is about to train on, printed before training: the classes and their images per split, the
    input size and colour mode and where each came from, the batch size and the steps per epoch."""
    ys = [np.asarray(splits.split(s)[1]) for s in ("train", "val", "test")]
    total = sum(len(y) for y in ys)
    lines = [(f"dataset {splits.name}: {len(splits.labels)} classes, {total} images (train {len(ys[0])}, "
              f"validation {len(ys[1])}, test {len(ys[2])})")]
    width = max(5, *(len(label) for label in splits.labels))
    lines.append(f"  {'class':<{width}}  train    val   test")
    shown = splits.labels if len(splits.labels) <= 20 else splits.labels[:20]
    for index, label in enumerate(shown):
        counts = [int(np.sum(y == index)) for y in ys]
        lines.append(f"  {label:<{width}}  {counts[0]:>5}  {counts[1]:>5}  {counts[2]:>5}")
    if len(shown) < len(splits.labels):
        lines.append(f"  ... and {len(splits.labels) - len(shown)} more classes")
    prep = splits.preprocessing
    colour = "gray" if prep.get("channels", 1) == 1 else "rgb"
    size_from = splits.origin.get("size") or (f"-d size={splits.options['size']}" if "size" in splits.options
                                             else "the dataset's own")
    colour_from = splits.origin.get("color") or "the dataset's own"
    lines.append(f"input {prep['height']}x{prep['width']}x{prep.get('channels', 1)} {colour} "
                 f"(size: {size_from}; colour: {colour_from})")
    lines.append(f"batch size {batch_size} ({batch_note}): {math.ceil(len(ys[0]) / batch_size)} steps per epoch")
    return "\n".join(lines)


def check_image_options(options: dict, epochs: int) -> None:
    """``-o stage1_epochs`` and ``-o unfreeze`` are whole numbers >= 0 (or left out: automatic)."""
    for key in IMAGE_TRAINER_OPTIONS:
        value = options.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise InputError(f"-o {key}={value} is not a whole number >= 0; leave it out for the automatic choice")


def _stages(options: dict, epochs: int, pretrained: list) -> tuple[int, int | None]:
    """``(stage-1 epochs, layers to unfreeze in stage 2)``. Without a pretrained base there is one stage. With one
    (weights kept under a new head), stage 1 trains the head on the frozen base for ``-o stage1_epochs`` (default:
    half the epochs), then stage 2 unfreezes the top ``-o unfreeze`` weighted layers of the base (default: all)."""
    if not pretrained:
        return epochs, None
    stage1 = options.get("stage1_epochs")
    stage1 = max(1, epochs // 2) if stage1 is None else min(int(stage1), epochs)
    unfreeze = options.get("unfreeze")
    return stage1, (len(pretrained) if unfreeze is None else int(unfreeze))


def feature_layers(model) -> list[str]:
    """Names of the weighted layers that compute the image's features: those before the first layer that flattens
    or pools the spatial grid away (Flatten, global pooling), a nested backbone walked into; without such a layer,
    all but the last. Fine-tuning freezes only these in stage 1.

    Why: the dense layers after the features are classifier, tuned to the old classes. Frozen under a new output
    layer they made stage 1 a linear probe of seed-cnn's Dense64 trained on the digits 0-4, a third of whose units
    never fire on 5-9: transfer to 5-9 with 10 images per class reached 66 % (seed 0) where scratch reached 91 %. Kept
    (they fit) but trained from stage 1, they start from what they knew and adapt to the new classes.
    """
    import keras

    flatten = (keras.layers.Flatten, keras.layers.GlobalAveragePooling2D, keras.layers.GlobalMaxPooling2D)
    names = []
    for layer in model.layers:
        if isinstance(layer, flatten):
            return names
        names.extend(inner.name for inner in (weighted_layers(layer) if getattr(layer, "layers", None)
                                              else [layer] if layer.weights else []))
    return names[:-1]


def _set_trainable(model, frozen: set) -> None:
    """Freeze the layers named in ``frozen`` (a frozen BatchNormalization layer also runs in inference mode, so the
    base keeps the statistics it was trained with), unfreeze the others."""
    for layer in model.layers:  # first: making a nested backbone trainable makes all its layers trainable
        if getattr(layer, "layers", None):
            layer.trainable = True
    for layer in weighted_layers(model):
        layer.trainable = layer.name not in frozen


@register_trainer("image-classification", options=IMAGE_TRAINER_OPTIONS, check=check_image_options)
def _train_image_classifier(tf, keras, splits, model_name, out, epochs, seed, batch_size, patience,
                            learning_rate, augment, model_options, trainer_options, verbose, weights=None):
    from ..runtime.image import pixels_to_input
    from . import backbones, datasets
    from .models import create_model

    check_splits(splits)
    batch_size, batch_note = choose_batch_size(len(splits.y_train), batch_size)
    splits.preprocessing.update(backbones.preprocessing_for(model_name, splits.preprocessing))
    prep = splits.preprocessing
    print(dataset_summary(splits, batch_size, batch_note), file=sys.stderr)
    x_train, x_val, x_test = (pixels_to_input(datasets.model_pixels(x, prep), prep)  # a list: drawn-digits
                              for x in (splits.x_train, splits.x_val, splits.x_test))

    imagenet = str(weights) == "imagenet"
    model = create_model(model_name, x_train.shape[1:], len(splits.labels), **model_options,
                         **({"weights": "imagenet"} if imagenet else {}))
    if imagenet:
        pretrained = [layer.name for layer in weighted_layers(model)[:-1]]
        transfer = {"from": "imagenet", "layers": len(pretrained) + 1, "layers_kept": len(pretrained),
                    "new_head": True}
        weights = None
    else:
        transfer = start_from(model, weights, splits.labels)
        pretrained = transfer["kept"] if transfer and transfer.get("new_head") else []
    features = set(feature_layers(model))
    head_kept = [name for name in pretrained if name not in features]  # trained with the new head from stage 1
    pretrained = [name for name in pretrained if name in features]  # the base: frozen in stage 1
    stage1, unfreeze = _stages(trainer_options, epochs, pretrained)

    train_ds = tf.data.Dataset.from_tensor_slices((x_train, splits.y_train)).shuffle(len(x_train), seed=seed)
    train_ds = train_ds.batch(batch_size)
    if augment:
        augmenter = image_augmenter(keras, seed)
        train_ds = train_ds.map(lambda x, y: (augmenter(x, training=True), y), num_parallel_calls=tf.data.AUTOTUNE)
    train_ds = train_ds.prefetch(tf.data.AUTOTUNE)
    val_ds = tf.data.Dataset.from_tensor_slices((x_val, splits.y_val)).batch(256)

    plan = [(1, stage1, learning_rate, set(pretrained))]  # (stage, epochs, learning rate, frozen layers)
    if pretrained and epochs > stage1 and unfreeze:
        base = [layer for layer in weighted_layers(model) if layer.name in set(pretrained)]
        movable = [layer.name for layer in base if not isinstance(layer, keras.layers.BatchNormalization)]
        plan.append((2, epochs - stage1, learning_rate * STAGE2_LR_FACTOR,
                     set(pretrained) - set(movable[-unfreeze:])))
    elif pretrained:
        plan[0] = (1, epochs, learning_rate, set(pretrained))
    plan = [stage for stage in plan if stage[1] > 0]  # -o stage1_epochs=0: straight to stage 2
    history: dict[str, list] = {}
    stage_starts, stages, best = [], [], None
    for number, stage_epochs, rate, frozen in plan:
        _set_trainable(model, frozen)
        model.compile(optimizer=keras.optimizers.Adam(rate), loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])
        if number == 2:
            if history:
                stage_starts.append(len(history["loss"]) + 1)
            print(f"stage 2: {len(pretrained) - len(frozen)} base layers unfrozen, learning rate {rate:g}",
                  file=sys.stderr)
        elif pretrained:
            kept_head = (f" and {len(head_kept)} kept layer{'s' if len(head_kept) > 1 else ''} after the base"
                         if head_kept else "")
            print(f"stage 1: training the head (the new output layer{kept_head}) on the frozen base "
                  f"({len(frozen)} layers) for {stage_epochs} epochs", file=sys.stderr)
        done = len(history.get("loss", []))
        stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience, restore_best_weights=True)
        fitted = model.fit(train_ds, validation_data=val_ds, epochs=stage_epochs, callbacks=[stop],
                           verbose=verbose, shuffle=False)
        for key, values in fitted.history.items():
            history.setdefault(key, []).extend(values)
        stage_best = (float(stop.best), done + stop.best_epoch + 1)
        if best is None or stage_best[0] <= best[0]:
            best, kept_weights = stage_best, model.get_weights()
        else:
            model.set_weights(kept_weights)  # this stage never beat the previous one's best
        stages.append({"stage": number, "epochs_run": len(fitted.epoch), "learning_rate": rate,
                       "frozen_layers": len(frozen)})
    _set_trainable(model, set())
    kept_epoch = best[1]
    print(f"kept the weights of epoch {kept_epoch} of {len(history['loss'])} (lowest validation loss, "
          f"{best[0]:.4f})", file=sys.stderr)
    model.save(out / "model.keras")
    save_history(history, out, kept_epoch, stage_starts)
    probabilities = model.predict(x_test, batch_size=256, verbose=0)
    y_pred = probabilities.argmax(axis=1)
    accuracy = float(np.mean(y_pred == splits.y_test))
    save_confusion(splits.y_test, y_pred, splits.labels, out / "confusion.png",
                   f"{model_name} on {splits.name} test: {accuracy:.2%}")
    metrics = {"test_accuracy": accuracy, "test_size": len(y_pred), "epochs_run": len(history["loss"]),
               "kept_epoch": kept_epoch, "parameters": int(model.count_params())}
    run_info = {"batch_size": batch_size, "kept_epoch": kept_epoch}
    if len(stages) > 1 or pretrained:
        run_info["stages"] = stages
    if transfer:
        run_info["transfer"] = transfer
    return metrics, run_info


def files_written(out: str | os.PathLike, since_ns: int) -> list[str]:
    """Names of the files in the run folder ``out`` written at or after ``since_ns`` (``time.time_ns()``).

    What a run actually wrote differs by task (a detector draws no confusion matrix), and a folder reused from
    an earlier run may still hold that run's files: the listing reports this run's only.
    """
    return sorted(p.name for p in Path(out).iterdir() if p.is_file() and p.stat().st_mtime_ns >= since_ns)
