"""Pretrained backbones by name: keras.applications' MobileNetV2, MobileNetV3Small and EfficientNetB0 under a
pooling -> dropout -> dense head, registered beside the zoo (``edgecnn models`` lists them).

Why these three: they are the edge-sized ImageNet networks Keras ships, so ``--weights imagenet`` gives a user with
60 images a base that already knows edges, textures and shapes. Each expects its own input scaling (a *preset*,
``edgecnn/presets.py``); the trainer records it in the run's preprocessing, so export and the runtime feed the
exported model what it was trained on. 1-channel data is repeated to 3 channels inside the graph (the base was
trained on RGB). ``--weights imagenet`` uses Keras' own download-and-cache (``~/.keras/models/``); offline, the
error names the exact file to place there.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from ..presets import preprocessing_fields
from .models import BN_MOMENTUM, _keras, register_model

#: name -> (keras.applications constructor, preset, what it is)
BACKBONES = {
    "mobilenetv2": ("MobileNetV2", "tf", "keras.applications MobileNetV2 (3.4M parameters at alpha=1)"),
    "mobilenetv3small": ("MobileNetV3Small", "raw", "keras.applications MobileNetV3Small (1.5M at alpha=1)"),
    "efficientnetb0": ("EfficientNetB0", "raw", "keras.applications EfficientNetB0 (4.0M; alpha does not apply)"),
}


def preprocessing_for(model_name: str, prep: dict) -> dict:
    """The preprocessing fields (scale, offset, preset, ...) the backbone ``model_name`` expects, for the run's
    preprocessing; ``{}`` for a model of the zoo (x / 255, already there)."""
    if model_name not in BACKBONES:
        return {}
    return preprocessing_fields(BACKBONES[model_name][1], channels=int(prep.get("channels", 3)))


class _CacheHint:
    """Wraps Keras' ``get_file`` while a backbone is built with ``weights="imagenet"``: a download that fails
    (offline, as on many edge build machines) becomes one line naming the exact file Keras looked for and where."""

    def __init__(self, name: str):
        self.name = name

    def __enter__(self):
        from keras.src.utils import file_utils

        self.module, self.original = file_utils, file_utils.get_file
        hint = self

        def get_file(fname=None, origin=None, *args, cache_subdir="datasets", cache_dir=None, **kwargs):
            try:
                return hint.original(fname, origin, *args, cache_subdir=cache_subdir, cache_dir=cache_dir, **kwargs)
            except Exception as exc:  # noqa: BLE001 - URL, HTTP and socket errors all mean "could not download"
                from keras.src.backend.config import keras_home

                folder = str(Path(cache_dir or keras_home()).expanduser() / cache_subdir)
                home = str(Path.home())
                folder = "~" + folder[len(home):] if folder.startswith(home + "/") else folder
                raise InputError(f"could not download the ImageNet weights of {hint.name} ({type(exc).__name__}); "
                                 f"offline, place {fname or Path(origin).name} (from {origin}) in {folder}/ and run "
                                 "again, or train without --weights imagenet") from None

        file_utils.get_file = get_file
        return self

    def __exit__(self, *exc):
        self.module.get_file = self.original
        return False


def build_backbone(name: str, input_shape, num_classes: int, alpha: float, dropout: float, weights=None):
    """The backbone ``name`` (``weights``: None, ``"imagenet"`` or a weights file of the base) under the head."""
    keras = _keras()
    layers = keras.layers
    constructor, _, _ = BACKBONES[name]
    height, width, channels = input_shape
    if min(height, width) < 32:
        raise InputError(f"{name} needs inputs of at least 32x32, got {height}x{width}; use -d size=32 or more")
    inputs = keras.Input(input_shape, name="image")
    x = layers.Concatenate(name="gray_to_rgb")([inputs] * 3) if channels == 1 else inputs
    kwargs = {"include_top": False, "input_shape": (height, width, 3), "weights": weights}
    if name != "efficientnetb0":
        kwargs["alpha"] = alpha
    elif alpha != 1.0:
        raise InputError(f"-o alpha={alpha} does not apply to efficientnetb0 (its width is fixed); drop it")
    try:
        if weights == "imagenet":
            with _CacheHint(name):
                base = getattr(keras.applications, constructor)(**kwargs)
        else:
            base = getattr(keras.applications, constructor)(**kwargs)
    except ValueError as exc:  # keras.applications' own checks (alpha values with ImageNet weights, ...)
        raise InputError(f"{name}: {str(exc).strip().splitlines()[0][:200]}") from None
    for layer in base.layers:  # Keras' 0.99 lags far behind on small datasets (see models.BN_MOMENTUM)
        if isinstance(layer, layers.BatchNormalization):
            layer.momentum = BN_MOMENTUM
    x = base(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    if dropout:
        x = layers.Dropout(dropout, name="dropout")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name=f"{name}_classifier")


def _register(name: str) -> None:
    def builder(input_shape, num_classes, alpha: float = 1.0, dropout: float = 0.2, weights=None):
        return build_backbone(name, input_shape, num_classes, alpha, dropout, weights)

    builder.__name__ = name
    register_model(name, "image-classification",
                   BACKBONES[name][2] + "; --weights imagenet (cached in ~/.keras/models/) or a file; "
                   "-d size=N sets the input (96-224 typical)")(builder)


for _name in BACKBONES:
    _register(_name)
