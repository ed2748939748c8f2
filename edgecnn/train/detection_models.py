"""The ``detector`` architecture and the object-detection trainer.

``detector`` is a single-shot, anchor-free detector in the manner of FCOS/YOLOX on one grid: the ``mobilenet-s``
blocks (shared, not copied; see ``DETECTOR_BLOCKS``) give features at strides 4, 8 and 16; a light top-down path
(1x1 laterals, nearest upsampling, one separable block per level) brings them to one grid of stride 8 (or 4); two
heads of one separable block and a 1x1 conv each end the graph:

* ``scores``: N x H x W x classes, objectness (sigmoid) x class probabilities (softmax): the probability that
  an object of that class is centred at the cell;
* ``boxes`` (linear): N x H x W x 4 raw (left, top, right, bottom) distances, decoded as ``softplus(raw) * stride``.

They are two tensors because int8 quantization gives each tensor one scale: probabilities in 0..1 and distances of
several pixels would ruin each other's resolution in one. Decoding, threshold and NMS are not in the graph: they
live in :mod:`edgecnn.runtime.detection`, identical for every format.

Training targets (FCOS-style centre sampling): the cells whose centres fall in an object's central region are its
positives - objectness 1 (or, with ``-o objectness=iou``, the IoU of the box the cell predicts), class
cross-entropy and box GIoU, each object counted once -; the rest of its box is ignored by objectness, everything
else is background. Several cells fire per object; NMS keeps one. The NMS IoU threshold is picked on validation.
A first attempt with CenterNet's single-peak Gaussian targets reached only 0.23 mAP@0.5 in the CPU budget: one
positive per object, and an ambiguous one for small digits at stride 4, learns too slowly.
"""

from __future__ import annotations

import itertools
import time

import numpy as np

from ..errors import InputError
from ..runtime.detection import BOX_ENCODING, DEFAULTS
from .detection_metrics import METRIC_SCORE_THRESHOLD, map_of_outputs
from .fit import PRECISE_BN_BATCHES, precise_batch_norm, register_trainer, save_history, start_from
from .models import MOBILENET_S_BLOCKS, _keras, mobilenet_backbone, register_model, separable_block

#: A cell is a positive of an object when its centre lies within this fraction of the object's size (or half a
#: stride) of the box centre, in x and in y.
CENTRE_FRACTION = 0.25
FOCAL_ALPHA = 0.25
BOX_LOSS_WEIGHT = 2.0
#: Digit identity is the slowest thing to learn (localisation comes first): its loss counts double.
CLASS_LOSS_WEIGHT = 2.0
#: mobilenet-s' blocks with each downsampling moved one block earlier (strides 4, 4, 8, 8, 16, 16 after the
#: stride-2 stem), the first layout: a receptive field (~90 px) that spans the largest digits, but small digits
#: reach the first block already at stride 4 (see ``BACKBONE_LAYOUTS``). At 128x128 and batch 16 both layouts train
#: at the same speed on this 2-core machine (0.16 s a step).
DETECTOR_BLOCKS = ((32, 2), (64, 1), (64, 2), (128, 1), (128, 2), (256, 1))
#: ``layout`` option: "fast" (above) or "mobilenet-s", the classifier's own blocks (strides 2, 4, 4, 8, 8, 16 after
#: the stem): the first block keeps the stem's resolution, which small digits need - a classifier of 48x48 digit
#: crops on this backbone learnt 68 % in 3 epochs with it against 21 % with "fast" (12-20 px digits: 50 % vs 12 %).
BACKBONE_LAYOUTS = {"fast": DETECTOR_BLOCKS, "mobilenet-s": MOBILENET_S_BLOCKS}
BN_MOMENTUM = 0.9
#: The two factors of ``scores``, trained separately (outputs of the training graph only).
OBJECT_OUTPUT, CLASS_OUTPUT = "objectness", "class_probabilities"
#: What the objectness factor learns (trainer option ``-o objectness=...``, the first the default; see
#: :func:`make_losses`).
OBJECTNESS_TARGETS = ("centre", "iou")
#: Output names, in the manifest's order.
OUTPUT_NAMES = ("boxes", "scores")


def lateral_blocks(blocks, stem_stride: int) -> tuple[int, int, int]:
    """Indices of the blocks that feed the stride-4, -8 and -16 laterals: the *last* block at each stride.

    The last block of a stage has seen the most layers at that resolution, as FPN takes C3..C5 from the end of their
    stages; it costs nothing more, since every block is computed anyway. (The first detectors on the "mobilenet-s"
    layout were fed the first block at strides 4 and 8, whose receptive fields are 11 and 27 px, not 19 and 43.)
    """
    last, stride = {}, stem_stride
    for i, (_filters, block_stride) in enumerate(blocks):
        stride *= block_stride
        last[stride] = i
    missing = [s for s in (4, 8, 16) if s not in last]
    if missing:
        raise InputError(f"detector: the backbone has no block at stride {missing[0]}")
    return last[4], last[8], last[16]


def _conv_bn_relu(x, filters, layers, name):
    x = layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.ReLU(6.0, name=f"{name}_relu")(x)


@register_model("detector", "object-detection",
                "anchor-free single-shot detector (FCOS-style centre cells + box distances) on mobilenet-s blocks; "
                "stride 8 or 4, layout fast or mobilenet-s, objectness centre or iou")
def detector(input_shape, num_classes, alpha: float = 1.0, stride: int = 8, head_width: int = 64,
             layout: str = "fast"):
    keras = _keras()
    layers = keras.layers
    height, width = input_shape[:2]
    if stride not in (4, 8):
        raise InputError(f"detector: stride must be 4 or 8, got {stride}")
    if height % 16 or width % 16:
        raise InputError(f"detector: input height and width must be multiples of 16, got {height}x{width}")
    if layout not in BACKBONE_LAYOUTS:
        raise InputError(f"detector: layout must be one of {', '.join(BACKBONE_LAYOUTS)}, got {layout!r}")
    inputs = keras.Input(input_shape, name="image")
    blocks = BACKBONE_LAYOUTS[layout]
    features = mobilenet_backbone(inputs, alpha, layers, blocks=blocks, stem_stride=2)
    c4, c8, c16 = (features[i] for i in lateral_blocks(blocks, stem_stride=2))
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
    classes = layers.Conv2D(num_classes, 1, activation="softmax", name=CLASS_OUTPUT)(cls)
    reg = separable_block(x, head_width, 1, layers, name="box_head")
    boxes = layers.Conv2D(4, 1, name="boxes", bias_initializer=keras.initializers.Constant(1.0))(reg)
    objectness = layers.Conv2D(1, 1, activation="sigmoid", name=OBJECT_OUTPUT,
                               bias_initializer=keras.initializers.Constant(prior))(reg)
    # One score per class, P(object) x P(class | object): what the runtime thresholds, one int8 scale for it.
    scores = layers.Multiply(name="scores")([objectness, classes])
    model = keras.Model(inputs, {"boxes": boxes, "scores": scores}, name="detector")
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            # Keras' 0.99 lags a few hundred steps behind weights that move fast in a short run, and the
            # inference-mode (moving-statistics) loss then trails the training loss by epochs; 0.9 tracks them.
            layer.momentum = BN_MOMENTUM
    return model


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
    """TF ops: padded boxes/labels of a batch -> the training graph's targets.

    A cell is a *positive* of an object when its centre lies within the object's central region: half-extent
    ``max(CENTRE_FRACTION * size, stride / 2)`` around the box centre (so the cell holding the centre always is).

    * ``objectness`` (B x H x W x 6): 1 at positives, and a loss weight: 0 (ignored) where a cell lies inside a box
      without being one of its positives - neither clearly object nor clearly background -, else 1; then the pixel
      box the cell is positive for, as in ``boxes`` (what IoU-aware objectness compares the predicted box with);
    * ``class_probabilities`` (B x H x W x C): at positives, the cell's *object weight* on the classes of the
      objects the cell is positive for (the loss normalises each row to a distribution and weighs the cell by it);
    * ``boxes`` (B x H x W x 5): the pixel box (x0, y0, x1, y1) of the smallest object the cell is positive for,
      and in the 5th channel the cell's object weight (0 elsewhere).

    The object weight of a positive cell is 1 / (the number of positive cells of the object that owns it): every
    object counts once in the class and box losses, whatever its size. Unweighted, a 48 px digit has ~36 positive
    cells at stride 4 and a 12 px digit 1 to 4, so small digits got ~5 % of the class gradient though they are a
    third of the objects - and with 66 % class accuracy at 12-23 px (94 % and more above) they were most of the
    detector's gap.
    """
    rows, cols = grid
    valid = labels >= 0  # B x K
    x0, y0, x1, y1 = (v[..., None, None] for v in tf.unstack(boxes, axis=-1))  # B x K x 1 x 1 each
    gx = ((tf.range(cols, dtype=tf.float32) + 0.5) * stride)[None, None, None, :]
    gy = ((tf.range(rows, dtype=tf.float32) + 0.5) * stride)[None, None, :, None]
    rx = tf.maximum(CENTRE_FRACTION * (x1 - x0), stride / 2)
    ry = tf.maximum(CENTRE_FRACTION * (y1 - y0), stride / 2)
    positive = (tf.abs(gx - (x0 + x1) / 2) <= rx) & (tf.abs(gy - (y0 + y1) / 2) <= ry) & valid[..., None, None]
    inside = (gx >= x0) & (gx <= x1) & (gy >= y0) & (gy <= y1) & valid[..., None, None]  # B x K x H x W
    onehot = tf.one_hot(tf.maximum(labels, 0), num_classes)[:, :, None, None, :]  # B x K x 1 x 1 x C
    heat = tf.reduce_max(tf.cast(positive, tf.float32)[..., None] * onehot, axis=1)  # B x H x W x C
    near = tf.reduce_max(tf.cast(inside, tf.float32)[..., None] * onehot, axis=1)

    area = (x1 - x0) * (y1 - y0) + tf.zeros_like(gx * gy)  # B x K x H x W
    owner = tf.argmin(tf.where(positive, area, tf.fill(tf.shape(area), np.float32(1e12))), axis=1)  # B x H x W
    mask = tf.transpose(tf.one_hot(owner, tf.shape(area)[1]), [0, 3, 1, 2]) * tf.cast(positive, tf.float32)
    target_boxes = tf.einsum("bkhw,bkc->bhwc", mask, boxes)
    positives_per_object = tf.reduce_sum(tf.cast(positive, tf.float32), axis=[2, 3])  # B x K
    cell_weight = tf.einsum("bkhw,bk->bhw", mask, tf.math.divide_no_nan(1.0, positives_per_object))[..., None]
    box_target = tf.concat([target_boxes, cell_weight], axis=-1)
    is_object = tf.reduce_max(heat, axis=-1, keepdims=True)
    ignore_weight = 1.0 - tf.reduce_max(near, axis=-1, keepdims=True) * (1.0 - is_object)
    return {"boxes": box_target, OBJECT_OUTPUT: tf.concat([is_object, ignore_weight, target_boxes], axis=-1),
            CLASS_OUTPUT: heat * cell_weight}


def make_losses(tf, grid: tuple[int, int], stride: int, objectness: str = "centre") -> dict:
    """The training graph's losses, Keras functions of (y_true, y_pred) returning batch scalars.

    Box GIoU and class cross-entropy at the positive cells, each cell weighed by its object weight (see
    :func:`encode_targets`) and normalised by the batch's total weight - the number of objects -, so they average
    over objects. The softmax class factor gets the full, undamped gradient of a classifier: with per-class
    sigmoid focal scores, digit identity was barely learnt.

    Objectness, over all cells and normalised by the number of positive cells, is one of ``OBJECTNESS_TARGETS``:

    * ``"centre"``: sigmoid focal loss (RetinaNet/FCOS) towards 1 at every positive cell;
    * ``"iou"``: quality focal loss (GFL, Li et al. 2020) towards the IoU of the box the cell predicts with its
      object's box (a constant target: no gradient flows into the box through it). The score then ranks a cell by
      how well it boxes its object - a poorly-placed box from a cell near an object's edge no longer outscores, in
      mAP's ranking, a well-placed one elsewhere. Its ``y_pred`` is the objectness and the 4 raw box channels.
    """
    if objectness not in OBJECTNESS_TARGETS:
        raise InputError(f"detector: objectness must be one of {', '.join(OBJECTNESS_TARGETS)}, got {objectness!r}")
    rows, cols = grid
    ys, xs = np.meshgrid((np.arange(rows) + 0.5) * stride, (np.arange(cols) + 0.5) * stride, indexing="ij")
    centres = tf.constant(np.stack([xs, ys, xs, ys], axis=-1)[None], tf.float32)  # 1 x H x W x 4
    signs = tf.constant([-1.0, -1.0, 1.0, 1.0])

    def iou_and_giou(raw, target):
        pred = centres + signs * tf.nn.softplus(raw) * stride
        px0, py0, px1, py1 = tf.unstack(pred, axis=-1)
        tx0, ty0, tx1, ty1 = tf.unstack(target, axis=-1)
        inter = tf.nn.relu(tf.minimum(px1, tx1) - tf.maximum(px0, tx0)) * \
            tf.nn.relu(tf.minimum(py1, ty1) - tf.maximum(py0, ty0))
        union = (px1 - px0) * (py1 - py0) + (tx1 - tx0) * (ty1 - ty0) - inter
        iou = inter / tf.maximum(union, 1e-6)
        hull = (tf.maximum(px1, tx1) - tf.minimum(px0, tx0)) * (tf.maximum(py1, ty1) - tf.minimum(py0, ty0))
        return iou, iou - (hull - union) / tf.maximum(hull, 1e-6)

    def box_loss(y_true, y_pred):
        weight = y_true[..., 4]
        _, giou = iou_and_giou(y_pred, y_true[..., :4])
        return tf.reduce_sum(weight * (1.0 - giou)) / tf.maximum(tf.reduce_sum(weight), 1.0)

    def object_loss(y_true, y_pred):
        positive, weight = y_true[..., :1], y_true[..., 1:2]
        p = tf.clip_by_value(y_pred[..., :1], 1e-6, 1.0 - 1e-6)
        if objectness == "iou":
            iou, _ = iou_and_giou(tf.stop_gradient(y_pred[..., 1:5]), y_true[..., 2:6])
            target = positive * iou[..., None]
            cross_entropy = -(target * tf.math.log(p) + (1.0 - target) * tf.math.log(1.0 - p))
            loss = tf.square(target - p) * cross_entropy
        else:
            pos = -FOCAL_ALPHA * tf.square(1.0 - p) * tf.math.log(p) * positive
            neg = -(1.0 - FOCAL_ALPHA) * tf.square(p) * tf.math.log(1.0 - p) * (1.0 - positive)
            loss = pos + neg
        return tf.reduce_sum(loss * weight) / tf.maximum(tf.reduce_sum(positive), 1.0)

    def class_loss(y_true, y_pred):
        positive = tf.reduce_max(y_true, axis=-1)  # the cell's object weight
        target = tf.math.divide_no_nan(y_true, tf.reduce_sum(y_true, axis=-1, keepdims=True))
        cross_entropy = -tf.reduce_sum(target * tf.math.log(tf.clip_by_value(y_pred, 1e-7, 1.0)), axis=-1)
        return tf.reduce_sum(cross_entropy * positive) / tf.maximum(tf.reduce_sum(positive), 1.0)

    return {"boxes": box_loss, OBJECT_OUTPUT: object_loss, CLASS_OUTPUT: class_loss}


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
        "head": "anchor-free, one grid, FCOS-style centre cells (several cells fire per object; NMS keeps one)",
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
            "scores": f"N x {rows} x {cols} x {len(splits.labels)} per-class scores in 0..1: P(an object is centred "
                      "here) x P(its class), both applied in the graph",
        },
    }


class _AheadOfTime:
    """``resample(epoch)`` for each pass, the next pass's drawn in a background thread while this one trains.

    Drawing 4,000 scenes takes ~10 s of Python and Pillow: drawn between epochs, they stall the training loop;
    drawn beside it, they overlap with it. ``resample`` is seeded by the epoch, so the scenes are the ones drawn in
    line would be. Nothing is drawn beyond ``last_pass``.
    """

    def __init__(self, resample, last_pass: int | None):
        from concurrent.futures import ThreadPoolExecutor

        self.resample, self.last_pass = resample, last_pass
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fresh-scenes")
        self.pending = {}

    def prefetch(self, epoch: int) -> None:
        """Start drawing pass ``epoch`` (1 .. ``last_pass``) unless it is already being drawn."""
        if 1 <= epoch and (self.last_pass is None or epoch <= self.last_pass) and epoch not in self.pending:
            self.pending[epoch] = self.executor.submit(self.resample, epoch)

    def __call__(self, epoch: int):
        future = self.pending.pop(epoch, None)
        drawn = future.result() if future is not None else self.resample(epoch)
        self.prefetch(epoch + 1)
        return drawn


def _tf_dataset(tf, images, annotations, batch_size, grid, stride, num_classes, shuffle_seed=None, augment=False,
                max_objects=None, resample=None, epochs=None):
    """Batches of (pixels / 255, targets). With ``resample`` (a dataset's ``resample_train``), each pass over the
    dataset - each epoch of ``fit`` - after the first draws new examples from it, the next pass's drawn while this
    one trains (passes 1 .. ``epochs`` - 1 when given)."""
    boxes, labels = pad_annotations(annotations, max_objects)
    if resample is None:
        ds = tf.data.Dataset.from_tensor_slices((images, boxes, labels))
        if shuffle_seed is not None:
            ds = ds.shuffle(len(images), seed=shuffle_seed, reshuffle_each_iteration=True)
        ds = ds.batch(batch_size)
    else:
        passes = itertools.count()
        draw = _AheadOfTime(resample, None if epochs is None else epochs - 1)

        def batches():
            epoch = next(passes)
            if epoch == 0:
                x, b, lab = images, boxes, labels
                draw.prefetch(1)
            else:
                x, fresh = draw(epoch)
                b, lab = pad_annotations(fresh, boxes.shape[1])
            for start in range(0, len(x), batch_size):
                yield x[start:start + batch_size], b[start:start + batch_size], lab[start:start + batch_size]

        spec = (tf.TensorSpec((None, *images.shape[1:]), tf.uint8), tf.TensorSpec((None, boxes.shape[1], 4)),
                tf.TensorSpec((None, boxes.shape[1]), tf.int32))
        # Every pass has as many batches as the first: saying so lets Keras count steps (and not warn).
        ds = tf.data.Dataset.from_generator(batches, output_signature=spec).apply(
            tf.data.experimental.assert_cardinality(-(-len(images) // batch_size)))

    def prepare(x, b, lab):
        x = tf.cast(x, tf.float32) / 255.0
        if augment:
            x = _augment(tf, x)
        return x, encode_targets(tf, b, lab, grid, stride, num_classes)

    return ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def _check_detector_options(options: dict, epochs: int) -> None:
    if options["objectness"] not in OBJECTNESS_TARGETS:
        raise InputError(f"-o objectness={options['objectness']} is not known; use "
                         f"{' or '.join(OBJECTNESS_TARGETS)}")


#: ``objectness``: what the objectness factor learns (see :func:`make_losses`); a training choice, not a layer.
@register_trainer("object-detection", options={"objectness": OBJECTNESS_TARGETS[0]}, check=_check_detector_options)
def _train_detector(tf, keras, splits, model_name, out, epochs, seed, batch_size, patience, learning_rate,
                    augment, model_options, trainer_options, verbose, weights=None):
    from ..runtime.image import pixels_to_input

    prep = splits.preprocessing
    if abs(prep.get("scale", 1 / 255) - 1 / 255) > 1e-9 or prep.get("offset", 0.0):
        raise InputError("the detector trainer expects pixels / 255 preprocessing")
    objectness = str(trainer_options["objectness"])
    model = _build(model_name, splits, model_options)
    start_from(model, weights)  # the training graph below shares its layers
    rows, cols = (int(d) for d in model.get_layer("scores").output.shape[1:3])
    stride = int(model.inputs[0].shape[1]) // rows
    num_classes = len(splits.labels)
    max_objects = max(len(a["labels"]) for a in list(splits.y_train) + list(splits.y_val) + [{"labels": [0]}])
    steps = epochs * int(np.ceil(len(splits.x_train) / batch_size))
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=max(steps, 1), alpha=0.02)
    # The training graph shares every layer with ``model`` but ends at the two factors of ``scores``.
    outputs = {name: model.get_layer(name).output for name in ("boxes", OBJECT_OUTPUT, CLASS_OUTPUT)}
    if objectness == "iou":  # the objectness loss needs the cell's predicted box
        outputs[OBJECT_OUTPUT] = keras.layers.Concatenate(name="objectness_and_boxes")(
            [outputs[OBJECT_OUTPUT], outputs["boxes"]])
    losses = make_losses(tf, (rows, cols), stride, objectness)
    trainer = keras.Model(model.inputs, outputs)
    trainer.compile(optimizer=keras.optimizers.Adam(schedule), loss=losses,
                    loss_weights={"boxes": BOX_LOSS_WEIGHT, OBJECT_OUTPUT: 1.0, CLASS_OUTPUT: CLASS_LOSS_WEIGHT})
    train_ds = _tf_dataset(tf, splits.x_train, splits.y_train, batch_size, (rows, cols), stride, num_classes,
                           shuffle_seed=seed, augment=augment, max_objects=max_objects,
                           resample=splits.resample_train, epochs=epochs)
    val_ds = _tf_dataset(tf, splits.x_val, splits.y_val, 64, (rows, cols), stride, num_classes,
                         max_objects=max_objects)
    val_map = _validation_map_callback(keras, model, pixels_to_input(splits.x_val, prep), splits.y_val,
                                       splits.labels, detection_section(model, splits))
    stop = keras.callbacks.EarlyStopping(monitor="val_map50", mode="max", patience=patience,
                                         restore_best_weights=True)
    started = time.time()
    history = trainer.fit(train_ds, validation_data=val_ds, epochs=epochs, callbacks=[val_map, stop],
                          verbose=verbose, shuffle=False)  # the pipeline shuffles (see ``fit_model``)
    # Population statistics for the weights early stopping kept, from un-augmented training scenes (see
    # ``precise_batch_norm``): the moving averages trail the weights of the last steps.
    bn_batches = precise_batch_norm(model, pixels_to_input(splits.x_train[:PRECISE_BN_BATCHES * batch_size], prep),
                                    batch_size)
    train_seconds = time.time() - started
    # Save a fresh, uncompiled copy: the custom losses are for training only and must not be needed to load it.
    clean = _build(model_name, splits, model_options)
    clean.set_weights(model.get_weights())
    clean.save(out / "model.keras")
    save_history(history, out)
    section = detection_section(clean, splits)
    val_raw = clean.predict(pixels_to_input(splits.x_val, prep), batch_size=64, verbose=0)
    section["nms_iou"], val_scores = calibrate_nms_iou(val_raw, splits.y_val, splits.labels, section)
    raw = clean.predict(pixels_to_input(splits.x_test, prep), batch_size=64, verbose=0)
    scores = map_of_outputs(raw["boxes"], raw["scores"], splits.y_test, splits.labels, section)
    metrics = {"test_map50": scores["map50"], "test_map": scores["map"], "val_map50": val_scores["map50"],
               "val_map": val_scores["map"], "test_size": len(splits.y_test),
               "test_objects": int(sum(len(a["labels"]) for a in splits.y_test)),
               "epochs_run": len(history.epoch), "train_seconds": round(train_seconds, 1),
               "parameters": int(clean.count_params())}
    return metrics, {"detection": section, "outputs": list(OUTPUT_NAMES),
                     "batch_norm": f"precise: moving statistics = mean over {bn_batches} training batches"}


#: The NMS IoU thresholds :func:`calibrate_nms_iou` tries (the runtime's default among them).
NMS_IOU_CHOICES = (0.3, 0.4, 0.5, 0.6)


def calibrate_nms_iou(raw: dict, annotations, labels, section: dict) -> tuple[float, dict]:
    """The NMS IoU threshold with the best validation mAP@0.5 (ties: the runtime's default, then the higher),
    and that mAP.

    How much objects of a class may overlap is the data's business: digit scenes keep digits apart (IoU <= 0.1),
    so two same-class boxes overlapping by 0.35 are one digit found twice, while crowded photographs need 0.5 or
    more. The choice is made on the validation split - never the test split that reports the result.
    """
    def val_map(iou):
        return map_of_outputs(raw["boxes"], raw["scores"], annotations, labels, {**section, "nms_iou": iou})

    results = {iou: val_map(iou) for iou in NMS_IOU_CHOICES}
    best = max(results, key=lambda iou: (round(results[iou]["map50"], 4), iou == DEFAULTS["nms_iou"], iou))
    return best, results[best]


def _validation_map_callback(keras, detector, x_val, y_val, labels, section):
    """Adds ``val_map50``/``val_map`` (pycocotools, runtime decoding) to each epoch's logs: what early stopping
    watches, since the losses say little about detections that pass a threshold and survive NMS."""

    class ValidationMap(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            raw = detector.predict(x_val, batch_size=64, verbose=0)
            scores = map_of_outputs(raw["boxes"], raw["scores"], y_val, labels, section)
            if logs is not None:
                logs["val_map50"], logs["val_map"] = scores["map50"], scores["map"]

    return ValidationMap()


def _build(model_name, splits, model_options):
    from .models import create_model

    return create_model(model_name, splits.x_train.shape[1:], len(splits.labels), **model_options)

