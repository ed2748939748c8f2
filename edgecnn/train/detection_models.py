"""The ``detector`` architecture and the object-detection trainer.

``detector`` is a single-shot, anchor-free detector in the manner of CenterNet/TTFNet: the ``mobilenet-s`` blocks
(shared, not copied; see ``DETECTOR_BLOCKS``) give features at strides 4, 8 and 16; a light top-down path (1x1 laterals, nearest upsampling,
one separable block per level) brings them to one grid of stride 4 (or 8); two heads of one separable block and a
1x1 conv each end the graph:

* ``scores`` (sigmoid): N x H x W x classes, trained towards a Gaussian peak at each object's centre cell;
* ``boxes`` (linear): N x H x W x 4 raw (left, top, right, bottom) distances, decoded as ``softplus(raw) * stride``.

They are two tensors because int8 quantization gives each tensor one scale: probabilities in 0..1 and distances of
several pixels would ruin each other's resolution in one. Decoding, threshold and NMS are not in the graph: they
live in :mod:`edgecnn.runtime.detection`, identical for every format.

Training targets (TTFNet, which converges in few epochs): the heatmap is an elliptical Gaussian per object
(sigma = 0.54 * size / 6) with a peak of exactly 1 at the centre cell, learnt with CenterNet's penalty-reduced focal
loss; box distances are learnt with a GIoU loss on every cell under the object's Gaussian, weighted by it.
"""

from __future__ import annotations

import time

import numpy as np

from ..errors import InputError
from ..runtime.detection import BOX_ENCODING, DEFAULTS
from .detection_metrics import METRIC_SCORE_THRESHOLD, map_of_outputs
from .fit import fit_model, register_trainer, save_history
from .models import _keras, mobilenet_backbone, register_model, separable_block

GAUSSIAN_ALPHA = 0.54
#: Cells whose Gaussian weight is below this learn no box (too far from the centre to be reliable).
REGRESSION_MIN_WEIGHT = 0.05
BOX_LOSS_WEIGHT = 5.0
#: mobilenet-s' blocks with each downsampling moved one block earlier (strides 4, 4, 8, 8, 16, 16 after the
#: stride-2 stem): a third of the training time of the classifier's layout at 128x128, where full-resolution
#: depthwise convolutions dominate, and a receptive field (~90 px) that still spans the largest digits.
DETECTOR_BLOCKS = ((32, 2), (64, 1), (64, 2), (128, 1), (128, 2), (256, 1))
#: Output names, in the manifest's order.
OUTPUT_NAMES = ("boxes", "scores")


def _conv_bn_relu(x, filters, layers, name):
    x = layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.ReLU(6.0, name=f"{name}_relu")(x)


@register_model("detector", "object-detection",
                "anchor-free single-shot detector (CenterNet-style heatmap + box distances) on mobilenet-s blocks; "
                "--alpha width, stride 4 or 8, head_width")
def detector(input_shape, num_classes, alpha: float = 1.0, stride: int = 4, head_width: int = 64):
    keras = _keras()
    layers = keras.layers
    height, width = input_shape[:2]
    if stride not in (4, 8):
        raise InputError(f"detector: stride must be 4 or 8, got {stride}")
    if height % 16 or width % 16:
        raise InputError(f"detector: input height and width must be multiples of 16, got {height}x{width}")
    inputs = keras.Input(input_shape, name="image")
    features = mobilenet_backbone(inputs, alpha, layers, blocks=DETECTOR_BLOCKS, stem_stride=2)
    c4, c8, c16 = features[1], features[3], features[5]
    x = _conv_bn_relu(c16, head_width, layers, "lat16")
    x = layers.UpSampling2D(2, name="up16")(x)
    x = layers.Add(name="merge8")([x, _conv_bn_relu(c8, head_width, layers, "lat8")])
    x = separable_block(x, head_width, 1, layers, name="neck8")
    if stride == 4:
        x = layers.UpSampling2D(2, name="up8")(x)
        x = layers.Add(name="merge4")([x, _conv_bn_relu(c4, head_width, layers, "lat4")])
        x = separable_block(x, head_width, 1, layers, name="neck4")
    prior = float(np.log(0.01 / 0.99))  # start every cell at 1 % "object": stable focal-loss training
    cls = separable_block(x, head_width, 1, layers, name="cls_head")
    scores = layers.Conv2D(num_classes, 1, activation="sigmoid", name="scores",
                           bias_initializer=keras.initializers.Constant(prior))(cls)
    reg = separable_block(x, head_width, 1, layers, name="box_head")
    boxes = layers.Conv2D(4, 1, name="boxes", bias_initializer=keras.initializers.Constant(1.0))(reg)
    return keras.Model(inputs, {"boxes": boxes, "scores": scores}, name="detector")


# --- targets ----------------------------------------------------------------------------------------------------

def pad_annotations(annotations: list[dict], max_objects: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-image annotations -> (N x K x 4 float32 boxes, N x K int32 labels padded with -1)."""
    k = max_objects or max([len(a["labels"]) for a in annotations] + [1])
    boxes = np.zeros((len(annotations), k, 4), np.float32)
    labels = np.full((len(annotations), k), -1, np.int32)
    for i, a in enumerate(annotations):
        n = min(len(a["labels"]), k)
        boxes[i, :n] = np.asarray(a["boxes"], np.float32)[:n]
        labels[i, :n] = np.asarray(a["labels"])[:n]
    return boxes, labels


def encode_targets(tf, boxes, labels, grid: tuple[int, int], stride: int, num_classes: int):
    """TF ops: padded boxes/labels of a batch -> ({"boxes": B x H x W x 5, "scores": B x H x W x C}).

    ``scores`` target: per class, the maximum over its objects of a Gaussian centred on the cell holding the
    object's centre (exactly 1 there). ``boxes`` target: the pixel box (x0, y0, x1, y1) of the smallest object whose
    Gaussian covers the cell, and in the 5th channel a weight (that Gaussian, normalised to sum 1 per object).
    """
    rows, cols = grid
    valid = tf.cast(labels >= 0, tf.float32)  # B x K
    x0, y0, x1, y1 = tf.unstack(boxes, axis=-1)
    w, h = tf.maximum(x1 - x0, 1.0), tf.maximum(y1 - y0, 1.0)
    col = tf.clip_by_value(tf.floor((x0 + x1) / 2 / stride), 0, cols - 1)
    row = tf.clip_by_value(tf.floor((y0 + y1) / 2 / stride), 0, rows - 1)
    sx = GAUSSIAN_ALPHA * w / 6 / stride
    sy = GAUSSIAN_ALPHA * h / 6 / stride
    gx = tf.range(cols, dtype=tf.float32)
    gy = tf.range(rows, dtype=tf.float32)
    dx = tf.square(gx[None, None, :] - col[..., None]) / (2 * tf.square(sx)[..., None])  # B x K x W
    dy = tf.square(gy[None, None, :] - row[..., None]) / (2 * tf.square(sy)[..., None])  # B x K x H
    gauss = tf.exp(-(dy[..., :, None] + dx[..., None, :])) * valid[..., None, None]  # B x K x H x W
    onehot = tf.one_hot(tf.maximum(labels, 0), num_classes) * valid[..., None]  # B x K x C
    heatmap = tf.reduce_max(gauss[..., None] * onehot[:, :, None, None, :], axis=1)  # B x H x W x C

    covered = gauss >= REGRESSION_MIN_WEIGHT
    area = (w * h)[..., None, None] + tf.zeros_like(gauss)
    owner = tf.argmin(tf.where(covered, area, tf.fill(tf.shape(area), np.float32(1e12))), axis=1)  # B x H x W
    mask = tf.transpose(tf.one_hot(owner, tf.shape(gauss)[1]), [0, 3, 1, 2]) * tf.cast(covered, tf.float32)
    weight = gauss * mask
    weight = weight / tf.maximum(tf.reduce_sum(weight, axis=[2, 3], keepdims=True), 1e-9)
    target_boxes = tf.einsum("bkhw,bkc->bhwc", mask, boxes)
    box_target = tf.concat([target_boxes, tf.reduce_sum(weight, axis=1)[..., None]], axis=-1)
    return {"boxes": box_target, "scores": heatmap}


def make_losses(tf, grid: tuple[int, int], stride: int):
    """(box GIoU loss, heatmap focal loss) as Keras loss functions of (y_true, y_pred) returning batch scalars."""
    rows, cols = grid
    ys, xs = np.meshgrid((np.arange(rows) + 0.5) * stride, (np.arange(cols) + 0.5) * stride, indexing="ij")
    centres = tf.constant(np.stack([xs, ys, xs, ys], axis=-1)[None], tf.float32)  # 1 x H x W x 4
    signs = tf.constant([-1.0, -1.0, 1.0, 1.0])

    def box_loss(y_true, y_pred):
        weight = y_true[..., 4]
        target = y_true[..., :4]
        pred = centres + signs * tf.nn.softplus(y_pred) * stride
        px0, py0, px1, py1 = tf.unstack(pred, axis=-1)
        tx0, ty0, tx1, ty1 = tf.unstack(target, axis=-1)
        inter = tf.nn.relu(tf.minimum(px1, tx1) - tf.maximum(px0, tx0)) * \
            tf.nn.relu(tf.minimum(py1, ty1) - tf.maximum(py0, ty0))
        union = (px1 - px0) * (py1 - py0) + (tx1 - tx0) * (ty1 - ty0) - inter
        iou = inter / tf.maximum(union, 1e-6)
        hull = (tf.maximum(px1, tx1) - tf.minimum(px0, tx0)) * (tf.maximum(py1, ty1) - tf.minimum(py0, ty0))
        giou = iou - (hull - union) / tf.maximum(hull, 1e-6)
        return tf.reduce_sum(weight * (1.0 - giou)) / tf.maximum(tf.reduce_sum(weight), 1.0)

    def heatmap_loss(y_true, y_pred):
        p = tf.clip_by_value(y_pred, 1e-4, 1.0 - 1e-4)
        positive = tf.cast(y_true >= 1.0, tf.float32)
        pos = -tf.math.log(p) * tf.square(1.0 - p) * positive
        neg = -tf.math.log(1.0 - p) * tf.square(p) * tf.pow(1.0 - y_true, 4.0) * (1.0 - positive)
        return (tf.reduce_sum(pos) + tf.reduce_sum(neg)) / tf.maximum(tf.reduce_sum(positive), 1.0)

    return box_loss, heatmap_loss


def _augment(tf, images):
    """Photometric jitter only (boxes unchanged): brightness, contrast and a random RGB channel order.

    The random ops draw from TensorFlow's global seed, which ``train`` sets from the run's seed.
    """
    batch = tf.shape(images)[0]
    brightness = tf.random.uniform([batch, 1, 1, 1], -0.1, 0.1)
    contrast = tf.random.uniform([batch, 1, 1, 1], 0.75, 1.25)
    mean = tf.reduce_mean(images, axis=[1, 2, 3], keepdims=True)
    images = tf.clip_by_value((images - mean) * contrast + mean + brightness, 0.0, 1.0)
    perm = tf.random.shuffle(tf.range(3))
    return tf.gather(images, perm, axis=-1)


# --- the trainer ------------------------------------------------------------------------------------------------

def detection_section(model, splits, score_threshold: float = DEFAULTS["score_threshold"]) -> dict:
    """The manifest's ``detection`` section: everything :mod:`edgecnn.runtime.detection` needs to decode."""
    height, width = (int(d) for d in model.inputs[0].shape[1:3])
    rows, cols = (int(d) for d in model.get_layer("scores").output.shape[1:3])
    stride = height // rows
    return {
        "head": "anchor-free centre heatmap (CenterNet/TTFNet style), one grid",
        "stride": stride, "grid": [rows, cols], "input_size": [width, height], "anchors": None,
        "box_encoding": BOX_ENCODING,
        "box_decoding": "cell centre c = ((col + 0.5) * stride, (row + 0.5) * stride); d = softplus(boxes) * stride; "
                        "box = (cx - d0, cy - d1, cx + d2, cy + d3) in model-input pixels, then scaled by "
                        "original size / input size",
        "score_threshold": float(score_threshold), "nms_iou": DEFAULTS["nms_iou"], "nms": "class-wise greedy",
        "max_detections": DEFAULTS["max_detections"], "pre_nms_top_k": DEFAULTS["pre_nms_top_k"],
        "metric_score_threshold": METRIC_SCORE_THRESHOLD,
        "outputs": {
            "boxes": f"N x {rows} x {cols} x 4 raw left/top/right/bottom distances from the cell centre "
                     "(decoded as softplus(raw) * stride pixels)",
            "scores": f"N x {rows} x {cols} x {len(splits.labels)} per-class centre probabilities (sigmoid applied)",
        },
    }


def _tf_dataset(tf, images, annotations, batch_size, grid, stride, num_classes, shuffle_seed=None, augment=False,
                max_objects=None):
    boxes, labels = pad_annotations(annotations, max_objects)
    ds = tf.data.Dataset.from_tensor_slices((images, boxes, labels))
    if shuffle_seed is not None:
        ds = ds.shuffle(len(images), seed=shuffle_seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)

    def prepare(x, b, lab):
        x = tf.cast(x, tf.float32) / 255.0
        if augment:
            x = _augment(tf, x)
        return x, encode_targets(tf, b, lab, grid, stride, num_classes)

    return ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


@register_trainer("object-detection")
def _train_detector(tf, keras, splits, model_name, out, epochs, seed, batch_size, patience, learning_rate,
                    augment, model_options, verbose):
    from ..runtime.image import pixels_to_input

    prep = splits.preprocessing
    if abs(prep.get("scale", 1 / 255) - 1 / 255) > 1e-9 or prep.get("offset", 0.0):
        raise InputError("the detector trainer expects pixels / 255 preprocessing")
    model = _build(model_name, splits, model_options)
    rows, cols = (int(d) for d in model.get_layer("scores").output.shape[1:3])
    stride = int(model.inputs[0].shape[1]) // rows
    num_classes = len(splits.labels)
    max_objects = max(len(a["labels"]) for a in list(splits.y_train) + list(splits.y_val) + [{"labels": [0]}])
    box_loss, heatmap_loss = make_losses(tf, (rows, cols), stride)
    steps = epochs * int(np.ceil(len(splits.x_train) / batch_size))
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=max(steps, 1), alpha=0.02)
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss={"boxes": box_loss, "scores": heatmap_loss},
                  loss_weights={"boxes": BOX_LOSS_WEIGHT, "scores": 1.0})
    train_ds = _tf_dataset(tf, splits.x_train, splits.y_train, batch_size, (rows, cols), stride, num_classes,
                           shuffle_seed=seed, augment=augment, max_objects=max_objects)
    val_ds = _tf_dataset(tf, splits.x_val, splits.y_val, 64, (rows, cols), stride, num_classes,
                         max_objects=max_objects)
    started = time.time()
    history = fit_model(tf, keras, model, train_ds, val_ds, epochs, patience, verbose)
    train_seconds = time.time() - started
    # Save a fresh, uncompiled copy: the custom losses are for training only and must not be needed to load it.
    clean = _build(model_name, splits, model_options)
    clean.set_weights(model.get_weights())
    clean.save(out / "model.keras")
    save_history(history, out)
    section = detection_section(clean, splits)
    raw = clean.predict(pixels_to_input(splits.x_test, prep), batch_size=64, verbose=0)
    scores = map_of_outputs(raw["boxes"], raw["scores"], splits.y_test, splits.labels, section)
    val_raw = clean.predict(pixels_to_input(splits.x_val, prep), batch_size=64, verbose=0)
    val_scores = map_of_outputs(val_raw["boxes"], val_raw["scores"], splits.y_val, splits.labels, section)
    metrics = {"test_map50": scores["map50"], "test_map": scores["map"], "val_map50": val_scores["map50"],
               "val_map": val_scores["map"], "test_size": len(splits.y_test),
               "test_objects": int(sum(len(a["labels"]) for a in splits.y_test)),
               "epochs_run": len(history.epoch), "train_seconds": round(train_seconds, 1),
               "parameters": int(clean.count_params())}
    return metrics, {"detection": section, "outputs": list(OUTPUT_NAMES)}


def _build(model_name, splits, model_options):
    from .models import create_model

    return create_model(model_name, splits.x_train.shape[1:], len(splits.labels), **model_options)

