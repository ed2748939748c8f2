"""A registry of named Keras architectures, created by name like timm's ``create_model``.

Every builder takes the input shape and the number of classes of the dataset it is trained on, and returns an
uncompiled ``keras.Model`` whose graph is exactly what gets exported: augmentation lives in the training input
pipeline (see ``fit.py``), never in the model.

Adding a model::

    @register_model("my-net", task="image-classification", help="what it is")
    def my_net(input_shape, num_classes, width: int = 32) -> keras.Model: ...

Its keyword parameters with defaults are its ``-o`` options: ``edgecnn models`` lists them and unknown keys are
refused (see ``options.py``). Build Keras inside the function (``_keras()``): listing models needs no TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..errors import InputError, require
from .options import check_options, keyword_defaults


@dataclass(frozen=True)
class ModelInfo:
    name: str
    task: str
    help: str
    builder: Callable


MODELS: dict[str, ModelInfo] = {}


def register_model(name: str, task: str, help: str):
    def wrap(builder: Callable) -> Callable:
        MODELS[name] = ModelInfo(name, task, help, builder)
        return builder

    return wrap


def _keras():
    from ..keras_io import import_tensorflow

    import_tensorflow()  # first, so that Keras' import of TensorFlow is a quiet one
    return require("keras", "train", "Building a model")


def list_models() -> list[ModelInfo]:
    return [MODELS[name] for name in sorted(MODELS)]


def model_info(name: str) -> ModelInfo:
    """The registered architecture ``name``, or a one-line error listing them all."""
    if name not in MODELS:
        raise InputError(f"unknown model {name!r}; 'edgecnn models' lists: {', '.join(sorted(MODELS))}")
    return MODELS[name]


def models_for(task: str) -> list[str]:
    """Names of the registered architectures for ``task``."""
    return [m.name for m in list_models() if m.task == task]


def builder_options(name: str) -> dict:
    """``{option: default}`` the architecture's builder takes (its keyword parameters after shape and classes;
    ``weights``, which a backbone's builder takes, is the --weights flag)."""
    return keyword_defaults(model_info(name).builder, skip=("input_shape", "num_classes", "weights"))


def model_options(name: str) -> dict:
    """Every ``-o`` key ``name`` accepts with its default: its builder's, then those its task's trainer reads."""
    from .fit import trainer_for

    return {**builder_options(name), **trainer_for(model_info(name).task).options}


def split_model_options(name: str, options: dict) -> tuple[dict, dict]:
    """Check ``-o`` options for model ``name``; return (trainer options with defaults filled in, builder options).

    A key both take (the text trainer's ``vocab_size``) goes to the trainer, which passes the builder its own.
    """
    from .fit import trainer_for

    check_options(options, model_options(name), f"model {name!r}")
    trainer_defaults = trainer_for(model_info(name).task).options
    trainer = {**trainer_defaults, **{k: v for k, v in options.items() if k in trainer_defaults}}
    return trainer, {k: v for k, v in options.items() if k not in trainer_defaults}


def create_model(name: str, input_shape: tuple, num_classes: int, weights: str | None = None, **options):
    """Build the registered architecture ``name`` for this input shape and class count; ``weights``
    (``"imagenet"``) only for a builder that takes it (a backbone, ``backbones.py``)."""
    options = {k: v for k, v in options.items() if v is not None}
    check_options(options, builder_options(name), f"model {name!r}")
    if weights is not None:
        if "weights" not in keyword_defaults(MODELS[name].builder):
            raise InputError(f"--weights {weights} is for a pretrained backbone; model {name!r} has none - use "
                             "mobilenetv2, mobilenetv3small or efficientnetb0, or give a model.keras")
        options["weights"] = weights
    return MODELS[name].builder(tuple(input_shape), num_classes, **options)



def _classifier_head(x, num_classes: int, layers):
    """Softmax over ``num_classes`` (2 included: sparse categorical cross-entropy is the right loss for it)."""
    return layers.Dense(num_classes, activation="softmax", name="probabilities")(x)


@register_model("seed-cnn", "image-classification",
                "the seed's Conv32-Pool-Conv64-Pool-Conv64-Dense64-softmax (about 93k parameters at 28x28)")
def seed_cnn(input_shape, num_classes, dropout: float = 0.0):
    keras = _keras()
    layers = keras.layers
    inputs = keras.Input(input_shape, name="image")
    x = layers.Conv2D(32, 3, activation="relu")(inputs)
    x = layers.MaxPooling2D()(x)
    x = layers.Conv2D(64, 3, activation="relu")(x)
    x = layers.MaxPooling2D()(x)
    x = layers.Conv2D(64, 3, activation="relu")(x)
    x = layers.Flatten()(x)
    x = layers.Dense(64, activation="relu")(x)
    if dropout:
        x = layers.Dropout(dropout)(x)
    return keras.Model(inputs, _classifier_head(x, num_classes, layers), name="seed_cnn")


@register_model("lenet5", "image-classification",
                "the seed's LeNet-5 with average pooling on a 32x32 input (28x28 digits are zero-padded)")
def lenet5(input_shape, num_classes):
    keras = _keras()
    layers = keras.layers
    inputs = keras.Input(input_shape, name="image")
    height, width = input_shape[:2]
    if (height, width) == (28, 28):
        x = layers.ZeroPadding2D(2)(inputs)
    elif (height, width) != (32, 32):
        x = layers.Resizing(32, 32)(inputs)
    else:
        x = inputs
    x = layers.Conv2D(6, 5, activation="tanh")(x)
    x = layers.AveragePooling2D(2)(x)
    x = layers.Conv2D(16, 5, activation="tanh")(x)
    x = layers.AveragePooling2D(2)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(120, activation="tanh")(x)
    x = layers.Dense(84, activation="tanh")(x)
    return keras.Model(inputs, _classifier_head(x, num_classes, layers), name="lenet5")


#: Batch-norm momentum: Keras' 0.99 needs hundreds of steps before the moving statistics are usable, and our small
#: datasets give ~40 steps an epoch, so validation (inference mode) would look broken for many epochs and early
#: stopping would end training on a good model. 0.9 settles in a few dozen steps.
BN_MOMENTUM = 0.9


def separable_block(x, filters: int, stride: int, layers, name: str):
    """MobileNet's depthwise-separable block: depthwise 3x3 -> BN -> ReLU6 -> pointwise 1x1 -> BN -> ReLU6."""
    x = layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False, name=f"{name}_dw")(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_dw_bn")(x)
    x = layers.ReLU(6.0, name=f"{name}_dw_relu")(x)
    x = layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_pw")(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_pw_bn")(x)
    return layers.ReLU(6.0, name=f"{name}_pw_relu")(x)


#: (filters, stride) of each separable block; the detector's backbone reuses these blocks.
MOBILENET_S_BLOCKS = ((32, 1), (64, 2), (64, 1), (128, 2), (128, 1), (256, 2))


def mobilenet_backbone(inputs, alpha: float, layers, blocks=MOBILENET_S_BLOCKS, stem_stride: int = 1):
    """Stem conv + separable blocks scaled by the width multiplier ``alpha``; returns every block's output."""
    width = lambda f: max(8, int(f * alpha + 4) // 8 * 8)
    x = layers.Conv2D(width(16), 3, strides=stem_stride, padding="same", use_bias=False, name="stem")(inputs)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name="stem_bn")(x)
    x = layers.ReLU(6.0, name="stem_relu")(x)
    features = []
    for i, (filters, stride) in enumerate(blocks):
        x = separable_block(x, width(filters), stride, layers, name=f"block{i + 1}")
        features.append(x)
    return features


@register_model("mobilenet-s", "image-classification",
                "an edge-grade net of depthwise-separable blocks; -o alpha is the width multiplier")
def mobilenet_s(input_shape, num_classes, alpha: float = 1.0, dropout: float = 0.2):
    keras = _keras()
    layers = keras.layers
    inputs = keras.Input(input_shape, name="image")
    x = mobilenet_backbone(inputs, alpha, layers)[-1]
    x = layers.GlobalAveragePooling2D()(x)
    if dropout:
        x = layers.Dropout(dropout)(x)
    return keras.Model(inputs, _classifier_head(x, num_classes, layers), name="mobilenet_s")


# The text and detection architectures live in their own modules; importing them registers them.
from . import backbones, detection_models, text_models  # noqa: F401
