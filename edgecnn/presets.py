"""Input preprocessing presets: what a model expects its pixels to look like, by name (stdlib only).

A model trained on ``x / 255`` and one trained on ImageNet's ``caffe`` inputs (BGR, mean subtracted, 0-255) take
the same photograph as two different tensors. Feed one the other's and every parity test still passes - the
exported files agree with Keras - while every prediction is wrong. So the preprocessing is part of the contract: it
is named here, recorded in the manifest, and applied by the runtime exactly as recorded.

Every preset is one affine map per channel after an optional channel reorder::

    x[..., c] = pixels[..., order[c]] * scale[c] + offset[c]

which is all the runtime (``runtime/image.py``) has to implement. The names follow ``keras.applications``'
``preprocess_input`` modes:

========  ===========================================================  ==========================================
preset    input                                                        used by
========  ===========================================================  ==========================================
unit      ``x / 255`` in [0, 1]                                        edgecnn's own models
raw       ``x`` in [0, 255] as float (the model preprocesses inside)   EfficientNet(V2), MobileNetV3, ConvNeXt
tf        ``x / 127.5 - 1`` in [-1, 1]                                 MobileNet(V2), Inception, Xception, NASNet
torch     ``(x / 255 - mean) / std``, ImageNet mean and std            DenseNet
caffe     RGB -> BGR, ``x - mean`` (ImageNet BGR mean) on 0-255        ResNet(V1), VGG
========  ===========================================================  ==========================================
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from .errors import InputError

IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)  # on x / 255
IMAGENET_STD_RGB = (0.229, 0.224, 0.225)
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)  # on 0..255, in BGR order

#: preset -> (scale per channel or scalar, offset per channel or scalar, channel order) on 0..255 pixels, RGB
#: models. Grayscale (1-channel) models take the first value of per-channel lists only for ``unit``/``raw``/``tf``.
PRESETS: dict[str, dict] = {
    "unit": {"scale": 1.0 / 255.0, "offset": 0.0, "channels_order": "rgb",
             "description": "x / 255, in [0, 1]"},
    "raw": {"scale": 1.0, "offset": 0.0, "channels_order": "rgb",
            "description": "x in [0, 255] as float; the model preprocesses inside"},
    "tf": {"scale": 1.0 / 127.5, "offset": -1.0, "channels_order": "rgb",
           "description": "x / 127.5 - 1, in [-1, 1]"},
    "torch": {"scale": [1.0 / (255.0 * s) for s in IMAGENET_STD_RGB],
              "offset": [-m / s for m, s in zip(IMAGENET_MEAN_RGB, IMAGENET_STD_RGB)], "channels_order": "rgb",
              "description": "(x / 255 - ImageNet mean) / ImageNet std, RGB"},
    "caffe": {"scale": 1.0, "offset": [-m for m in CAFFE_MEAN_BGR], "channels_order": "bgr",
              "description": "RGB -> BGR, minus the ImageNet BGR mean, on 0..255"},
}

#: keras.applications architecture families -> their preset, matched against a model's (or a nested backbone
#: layer's) name, lower-cased, longest prefix first. MobileNetV3 and EfficientNet(V2) carry their own
#: Rescaling/Normalization layers (include_preprocessing=True by default) and so take raw 0..255 pixels.
KERAS_APPLICATION_PRESETS: dict[str, str] = {
    "mobilenetv3": "raw",
    "mobilenet_v3": "raw",
    "mobilenetv2": "tf",
    "mobilenet_v2": "tf",
    "mobilenet": "tf",
    "efficientnetv2": "raw",
    "efficientnet": "raw",
    "convnext": "raw",
    "resnet50v2": "tf",
    "resnet101v2": "tf",
    "resnet152v2": "tf",
    "resnet": "caffe",
    "vgg16": "caffe",
    "vgg19": "caffe",
    "densenet": "torch",
    "inception_resnet_v2": "tf",
    "inception_v3": "tf",
    "xception": "tf",
    "nasnet": "tf",
}


def preset_for_name(model_name: str) -> tuple[str, str] | None:
    """``(preset, family)`` for a keras.applications model name (``"mobilenetv2_1.00_224"``,
    ``"resnet50"``, ``"MobilenetV3small"``, ``"efficientnetb0"``), or None for a name no family starts."""
    name = model_name.lower()
    for family in sorted(KERAS_APPLICATION_PRESETS, key=len, reverse=True):
        if name.startswith(family):
            return KERAS_APPLICATION_PRESETS[family], family
    return None


def recognise_model(model) -> tuple[str, str] | None:
    """``(preset, reason)`` for a Keras model that is, or holds as a layer, a keras.applications architecture.

    The model's own name is tried first, then each nested model layer's (a backbone under the user's head, e.g.
    ``mobilenetv2_1.00_96`` inside ``functional``). Duck-typed (``.name``, ``.layers``), so this module stays stdlib.
    """
    found = preset_for_name(getattr(model, "name", "") or "")
    if found:
        return found[0], f"recognised keras.applications {_FAMILY_NAMES.get(found[1], found[1])} ({model.name!r})"
    for layer in getattr(model, "layers", []):
        if hasattr(layer, "layers"):  # a nested Model (Functional or Sequential)
            found = preset_for_name(getattr(layer, "name", "") or "")
            if found:
                return found[0], (f"recognised keras.applications {_FAMILY_NAMES.get(found[1], found[1])} "
                                  f"(layer {layer.name!r})")
    return None


_FAMILY_NAMES = {"mobilenetv3": "MobileNetV3", "mobilenet_v3": "MobileNetV3", "mobilenetv2": "MobileNetV2",
                 "mobilenet_v2": "MobileNetV2", "mobilenet": "MobileNet", "efficientnetv2": "EfficientNetV2",
                 "efficientnet": "EfficientNet", "convnext": "ConvNeXt", "resnet50v2": "ResNet50V2",
                 "resnet101v2": "ResNet101V2", "resnet152v2": "ResNet152V2", "resnet": "ResNet", "vgg16": "VGG16",
                 "vgg19": "VGG19", "densenet": "DenseNet", "inception_resnet_v2": "InceptionResNetV2",
                 "inception_v3": "InceptionV3", "xception": "Xception", "nasnet": "NASNet"}


def choose_preprocessing(model, channels: int, preset: str | None = None, **explicit) -> dict:
    """The manifest's preprocessing fields for a model brought by the user, with ``preset_reason`` saying why.

    Given ``preset`` or explicit values (``mean``, ``std``, ``scale``, ``offset``, ``channels_order``: the CLI's
    options) win; else a recognised keras.applications architecture gets its family's preset; else ``unit``
    (x / 255), edgecnn's own convention, said so in the reason so that ``edgecnn info`` shows the guess.
    """
    given = {k: v for k, v in explicit.items() if v is not None and v != ()}
    integer = _integer_input(model)
    if integer and ((preset or "raw") != "raw" or {"mean", "std", "scale", "offset"} & set(given)):
        raise InputError(f"model {model.name!r} takes {integer} pixels (0-255 as they are), which any scaling would "
                         "round away; leave out --preprocess (raw) and --mean/--std/--scale/--offset")
    if integer and preset is None:
        return {**preprocessing_fields("raw", channels=channels, **given),
                "preset_reason": f"the model's input is {integer}: pixels 0-255 as they are"}
    if preset is not None or given:
        options = " ".join(f"--{k.replace('_', '-')}" for k in given)
        reason = "given with " + " ".join(filter(None, ["--preprocess" if preset else "", options]))
        return {**preprocessing_fields(preset, channels=channels, **given), "preset_reason": reason}
    found = recognise_model(model)
    if found:
        return {**preprocessing_fields(found[0], channels=channels), "preset_reason": found[1]}
    return {**preprocessing_fields("unit", channels=channels),
            "preset_reason": "default for a model edgecnn does not recognise (x / 255); pass --preprocess PRESET "
                             "if it was trained on other inputs"}


def _integer_input(model) -> str | None:
    """The dtype name of an integer image input (``uint8``, ``int32``...), or None for float inputs."""
    dtype = str(getattr((getattr(model, "inputs", None) or [None])[0], "dtype", "float32"))
    name = dtype.rsplit(".", 1)[-1].strip("'>")
    return name if "int" in name else None


def preprocessing_fields(preset: str | None = "unit", *, channels: int = 3, mean: Sequence[float] | None = None,
                         std: Sequence[float] | None = None, scale: float | Sequence[float] | None = None,
                         offset: float | Sequence[float] | None = None,
                         channels_order: str | None = None) -> dict:
    """The manifest's ``scale``, ``offset``, ``channels_order`` and ``preset`` for a preset and explicit overrides.

    ``mean``/``std`` (on 0..255 pixels, one per channel or one for all) describe ``(x - mean) / std``; they replace
    the preset's map. ``scale``/``offset`` then apply on top as given (``x * scale + offset``) when no mean/std is
    given. Per-channel values must have one entry per channel.

    Example::

        preprocessing_fields("caffe")           # {"scale": 1.0, "offset": [-103.939, ...], "channels_order": "bgr"}
        preprocessing_fields(None, mean=[127.5], std=[127.5], channels=1)
    """
    if preset is not None and preset not in PRESETS:
        raise InputError(f"unknown preprocessing preset {preset!r}; choose from {', '.join(PRESETS)}")
    base = dict(PRESETS[preset or "unit"])
    fields = {"preset": preset if preset is not None else "custom", "scale": base["scale"],
              "offset": base["offset"], "channels_order": base["channels_order"]}
    if mean is not None or std is not None:
        means = _per_channel("mean", mean if mean is not None else [0.0], channels)
        stds = _per_channel("std", std if std is not None else [1.0], channels)
        if any(s == 0 for s in stds):
            raise InputError("--std must not be 0 (it divides the pixels)")
        fields.update(preset="custom", scale=[1.0 / s for s in stds], offset=[-m / s for m, s in zip(means, stds)])
    else:
        if scale is not None:
            fields.update(preset="custom", scale=scale)
        if offset is not None:
            fields.update(preset="custom", offset=offset)
    if channels_order is not None:
        if channels_order not in ("rgb", "bgr"):
            raise InputError(f"--channels-order {channels_order!r}: choose rgb or bgr")
        if channels_order != fields["channels_order"]:
            fields.update(preset="custom" if preset is None or fields["preset"] == "custom" else fields["preset"],
                          channels_order=channels_order)
    for key in ("scale", "offset"):
        fields[key] = _fit_channels(key, fields[key], channels)
    if channels == 1:
        fields["channels_order"] = "rgb"  # one channel has no order; 'rgb' means "as given"
    return fields


def _per_channel(name: str, values, channels: int) -> list[float]:
    values = [float(v) for v in (values if isinstance(values, (list, tuple)) else [values])]
    if len(values) == 1:
        values = values * channels
    if len(values) != channels or not all(math.isfinite(v) for v in values):
        raise InputError(f"--{name} needs 1 or {channels} finite numbers, got {values}")
    return values


def _fit_channels(name: str, value, channels: int):
    """A scalar stays a scalar; a list keeps one entry per channel (a 3-list on a gray model is refused)."""
    if isinstance(value, (list, tuple)):
        values = [float(v) for v in value]
        if not all(math.isfinite(v) for v in values):
            raise InputError(f"--{name} {values}: give finite numbers")
        if len(set(values)) == 1:
            return values[0]
        if len(values) != channels:
            raise InputError(f"preprocessing {name} has {len(values)} per-channel values but the model takes "
                             f"{channels} channel(s); for a grayscale model choose --preprocess unit, raw or tf, or "
                             "give --mean/--std with one value")
        return values
    if not math.isfinite(float(value)):
        raise InputError(f"--{name} {value}: give a finite number")
    return float(value)


__all__ = ["CAFFE_MEAN_BGR", "IMAGENET_MEAN_RGB", "IMAGENET_STD_RGB", "KERAS_APPLICATION_PRESETS", "PRESETS",
           "choose_preprocessing", "preprocessing_fields", "preset_for_name", "recognise_model"]
