"""The digit-scenes and coco datasets, the mAP helper and the target encoding (no model training)."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from PIL import Image

from edgecnn.errors import InputError
from edgecnn.runtime.detection import iou_matrix
from edgecnn.train import detection_datasets as dd
from edgecnn.train.datasets import load_dataset

pytest.importorskip("sklearn")

SMALL = {"train": 12, "val": 4, "test": 6}


@pytest.fixture(scope="module")
def scenes():
    return load_dataset("digit-scenes", seed=3, **SMALL)


def test_same_seed_gives_the_same_scenes(scenes):
    again = load_dataset("digit-scenes", seed=3, **SMALL)
    for split in ("train", "val", "test"):
        x1, y1 = scenes.split(split)
        x2, y2 = again.split(split)
        np.testing.assert_array_equal(x1, x2)
        for a, b in zip(y1, y2):
            np.testing.assert_array_equal(a["boxes"], b["boxes"])
            np.testing.assert_array_equal(a["labels"], b["labels"])


def test_another_seed_gives_other_scenes(scenes):
    other = load_dataset("digit-scenes", seed=4, **SMALL)
    assert not np.array_equal(scenes.x_train, other.x_train)


def test_scenes_have_the_documented_shape_and_annotations(scenes):
    assert scenes.task == "object-detection" and scenes.labels == [str(i) for i in range(10)]
    assert scenes.x_train.shape == (12, 128, 128, 3) and scenes.x_train.dtype == np.uint8
    assert len(scenes.y_test) == 6
    for annotation in scenes.y_train + scenes.y_test:
        boxes, labels = annotation["boxes"], annotation["labels"]
        assert 1 <= len(labels) <= 5 and boxes.shape == (len(labels), 4)
        assert np.all(boxes[:, :2] >= 0) and np.all(boxes[:, 2:] <= 128)
        heights = boxes[:, 3] - boxes[:, 1]
        assert np.all(heights <= 48) and np.all(heights >= 4)
        assert set(labels.tolist()) <= set(range(10))
    assert scenes.preprocessing["color_mode"] == "RGB" and scenes.preprocessing["width"] == 128


def test_only_training_scenes_are_distorted(scenes):
    distorted = load_dataset("digit-scenes", seed=3, distort=True, **SMALL)
    np.testing.assert_array_equal(distorted.x_test, scenes.x_test)
    np.testing.assert_array_equal(distorted.x_val, scenes.x_val)
    assert not np.array_equal(distorted.x_train, scenes.x_train)


def test_log_uniform_heights_draw_as_many_small_digits_as_large_ones_in_training_scenes_only(scenes):
    balanced = load_dataset("digit-scenes", seed=3, heights="log-uniform", **SMALL)
    np.testing.assert_array_equal(balanced.x_test, scenes.x_test)
    np.testing.assert_array_equal(balanced.x_val, scenes.x_val)
    assert not np.array_equal(balanced.x_train, scenes.x_train)
    rng = np.random.default_rng(0)
    for law, small_share in (("uniform", 12 / 37), ("log-uniform", 0.5)):
        drawn = np.array([dd._draw_height(rng, 12, 48, law) for _ in range(20000)])
        assert drawn.min() == 12 and drawn.max() == 48
        assert abs(np.mean(drawn < 24) - small_share) < 0.02, law
    with pytest.raises(InputError, match="heights must be one of"):
        load_dataset("digit-scenes", seed=3, heights="gaussian", **SMALL)


def test_train_scenes_use_train_digits_and_test_scenes_test_digits(scenes):
    _, _, train_idx, val_idx, test_idx = dd.digit_split_indices(3)
    used_train = np.concatenate([a["digit_ids"] for a in scenes.y_train])
    used_test = np.concatenate([a["digit_ids"] for a in scenes.y_test])
    used_val = np.concatenate([a["digit_ids"] for a in scenes.y_val])
    assert np.isin(used_train, train_idx).all() and not np.isin(used_train, test_idx).any()
    assert np.isin(used_test, test_idx).all() and not np.isin(used_test, train_idx).any()
    assert np.isin(used_val, val_idx).all()


def test_fresh_scenes_are_new_each_epoch_reproducible_and_from_training_digits(scenes):
    assert scenes.resample_train is None  # off by default: the training split is the whole training data
    fresh = load_dataset("digit-scenes", seed=3, fresh=True, **SMALL)
    np.testing.assert_array_equal(fresh.x_train, scenes.x_train)  # epoch 0 is the ordinary training split
    x1, y1 = fresh.resample_train(1)
    x2, _ = fresh.resample_train(2)
    assert x1.shape == scenes.x_train.shape and len(y1) == len(scenes.y_train)
    assert not np.array_equal(x1, scenes.x_train) and not np.array_equal(x1, x2)
    np.testing.assert_array_equal(fresh.resample_train(1)[0], x1)
    _, _, train_idx, val_idx, test_idx = dd.digit_split_indices(3)
    used = np.concatenate([a["digit_ids"] for a in y1])
    assert np.isin(used, train_idx).all() and not np.isin(used, np.concatenate([val_idx, test_idx])).any()
    np.testing.assert_array_equal(fresh.x_test, scenes.x_test)


def test_training_pipeline_draws_fresh_scenes_on_every_pass_after_the_first(scenes):
    tf = pytest.importorskip("tensorflow")
    from edgecnn.train.detection_models import _tf_dataset

    fresh = load_dataset("digit-scenes", seed=3, fresh=True, **SMALL)
    ds = _tf_dataset(tf, fresh.x_train, fresh.y_train, 5, (16, 16), 8, 10, max_objects=5,
                     resample=fresh.resample_train)
    assert int(ds.cardinality()) == 3  # 12 scenes in batches of 5: Keras can count the steps
    passes = [np.concatenate([x.numpy() for x, _ in ds]) for _ in range(3)]
    for epoch, pixels in enumerate(passes):
        expected = fresh.x_train if epoch == 0 else fresh.resample_train(epoch)[0]
        np.testing.assert_allclose(pixels, expected / 255.0, atol=1e-6)


def test_fresh_scenes_are_drawn_one_pass_ahead_and_never_beyond_the_last_epoch(scenes):
    tf = pytest.importorskip("tensorflow")
    from edgecnn.train.detection_models import _tf_dataset

    fresh = load_dataset("digit-scenes", seed=3, fresh=True, **SMALL)
    drawn = []

    def resample(epoch):
        drawn.append(epoch)
        return fresh.resample_train(epoch)

    ds = _tf_dataset(tf, fresh.x_train, fresh.y_train, 5, (16, 16), 8, 10, max_objects=5, resample=resample,
                     epochs=3)
    passes = [np.concatenate([x.numpy() for x, _ in ds])]
    deadline = time.monotonic() + 30
    while 1 not in drawn and time.monotonic() < deadline:  # pass 0 has started drawing pass 1 beside it
        time.sleep(0.05)
    assert drawn == [1]
    passes += [np.concatenate([x.numpy() for x, _ in ds]) for _ in range(2)]
    for epoch in (1, 2):
        np.testing.assert_allclose(passes[epoch], fresh.resample_train(epoch)[0] / 255.0, atol=1e-6)
    assert sorted(drawn) == [1, 2]  # epochs 1 and 2 once each; nothing for an epoch 3 that fit() never runs


@pytest.mark.parametrize("distort", [False, True])
def test_boxes_are_tight_to_the_ink(distort):
    """Paste one digit on a flat background: the box must be the bounding box of the changed pixels."""
    flat = [np.full((200, 200, 3), 128, np.uint8)]
    digits, classes, *_ = dd.digit_split_indices(0)
    rng = np.random.default_rng(1)
    for _ in range(8):
        image, annotation = dd.make_scene(flat, digits, classes, rng, min_digits=1, max_digits=1, distort=distort)
        assert annotation["boxes"][0, 3] - annotation["boxes"][0, 1] <= 48
        changed = np.argwhere(np.abs(image.astype(int) - 128).max(axis=2) > 0.2 * 80)
        (r0, c0), (r1, c1) = changed.min(axis=0), changed.max(axis=0) + 1
        x0, y0, x1, y1 = annotation["boxes"][0]
        assert abs(x0 - c0) <= 1 and abs(y0 - r0) <= 1 and abs(x1 - c1) <= 1 and abs(y1 - r1) <= 1


def test_pasted_digits_overlap_a_little_at_most(scenes):
    for annotation in scenes.y_train:
        boxes = annotation["boxes"]
        for i in range(len(boxes)):
            assert dd.box_iou(boxes[i], np.delete(boxes, i, axis=0)).max(initial=0) <= dd.MAX_OVERLAP_IOU + 1e-6


def test_bad_split_sizes_are_refused():
    with pytest.raises(InputError, match="at least 1"):
        load_dataset("digit-scenes", train=0)


# --- coco -----------------------------------------------------------------------------------------------------

def write_coco(folder, n=5):
    images, annotations = [], []
    for k in range(n):
        Image.new("RGB", (200, 100), (k * 20, 0, 0)).save(folder / f"im{k}.jpg")
        images.append({"id": 10 + k, "file_name": f"im{k}.jpg", "width": 200, "height": 100})
        annotations.append({"id": k + 1, "image_id": 10 + k, "category_id": 7, "bbox": [20, 10, 100, 50],
                            "area": 5000, "iscrowd": 0})
    annotations.append({"id": 99, "image_id": 10, "category_id": 3, "bbox": [0, 0, 10, 10], "iscrowd": 1})
    coco = {"images": images, "annotations": annotations,
            "categories": [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}]}
    path = folder / "annotations.json"
    path.write_text(json.dumps(coco))
    return path


def test_coco_dataset_scales_boxes_to_the_model_size(tmp_path):
    path = write_coco(tmp_path)
    splits = load_dataset("coco", seed=0, data=str(path), size=64)
    assert splits.labels == ["cat", "dog"]
    assert len(splits.y_train) + len(splits.y_val) + len(splits.y_test) == 5
    assert splits.x_train.shape[1:] == (64, 64, 3)
    annotation = splits.y_test[0]
    np.testing.assert_allclose(annotation["boxes"], [[20 * 64 / 200, 10 * 64 / 100, 120 * 64 / 200, 60 * 64 / 100]])
    assert annotation["labels"].tolist() == [1]  # "dog"; the crowd annotation is left out


def test_coco_dataset_errors_are_one_line(tmp_path):
    with pytest.raises(InputError, match="needs --data"):
        load_dataset("coco")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        load_dataset("coco", data=str(bad))
    (tmp_path / "wrong.json").write_text(json.dumps({"images": [{"id": 1, "file_name": "nowhere.png"}],
                                                     "categories": [{"id": 1, "name": "x"}]}))
    with pytest.raises(InputError, match="cannot find"):
        load_dataset("coco", data=str(tmp_path / "wrong.json"))


# --- mAP by pycocotools -----------------------------------------------------------------------------------------

def test_map_is_one_for_perfect_predictions_and_drops_for_wrong_ones():
    pytest.importorskip("pycocotools")
    from edgecnn.train.detection_metrics import mean_average_precision

    truth = [{"boxes": np.array([[10, 10, 40, 50], [60, 60, 90, 100]], np.float32), "labels": np.array([1, 2])},
             {"boxes": np.array([[0, 0, 30, 30]], np.float32), "labels": np.array([0])}]
    perfect = [(a["boxes"], np.array([0.9] * len(a["labels"]), np.float32), a["labels"]) for a in truth]
    sizes = [(128, 128)] * 2
    assert mean_average_precision(truth, perfect, ["a", "b", "c"], sizes) == pytest.approx({"map50": 1.0, "map": 1.0})
    shifted = [(a["boxes"] + np.array([8, 0, 8, 0], np.float32), s, c) for a, (_, s, c) in zip(truth, perfect)]
    partial = mean_average_precision(truth, shifted, ["a", "b", "c"], sizes)
    assert partial["map50"] == pytest.approx(1.0) and partial["map"] < 0.8
    wrong_class = [(b, s, (c + 1) % 3) for b, s, c in perfect]
    assert mean_average_precision(truth, wrong_class, ["a", "b", "c"], sizes)["map50"] == 0.0
    empty = [(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))] * 2
    assert mean_average_precision(truth, empty, ["a", "b", "c"], sizes) == {"map50": 0.0, "map": 0.0}


# --- target encoding --------------------------------------------------------------------------------------------

def test_target_encoding_marks_centre_regions_positive_and_the_rest_of_the_box_ignored():
    tf = pytest.importorskip("tensorflow")
    from edgecnn.train.detection_models import encode_targets, pad_annotations

    annotations = [{"boxes": np.array([[8, 8, 40, 24], [80, 64, 96, 112]], np.float32), "labels": np.array([3, 5])},
                   {"boxes": np.zeros((0, 4), np.float32), "labels": np.zeros(0, np.int64)}]
    boxes, labels = pad_annotations(annotations)
    targets = encode_targets(tf, tf.constant(boxes), tf.constant(labels), (16, 16), 8, 10)
    heat, box_target = targets["class_probabilities"].numpy(), targets["boxes"].numpy()
    objectness, weight = targets["objectness"].numpy()[..., 0], targets["objectness"].numpy()[..., 1]
    assert heat.shape == (2, 16, 16, 10) and box_target.shape == (2, 16, 16, 5)
    np.testing.assert_array_equal(objectness, heat.max(axis=-1) > 0)
    # Object 1: centre (24, 16), 32x16 -> cells whose centres are within 8 px in x and 4 px in y: rows 1-2, cols 2-3.
    # Each of its 4 positive cells carries the object weight 1/4, each of object 2's 8 cells 1/8: one per object.
    assert sorted(map(tuple, np.argwhere(heat[0, ..., 3] == 0.25).tolist())) == [(1, 2), (1, 3), (2, 2), (2, 3)]
    # Object 2: centre (88, 88), 16x48 -> within 4 px in x (cols 10-11) and 12 px in y (rows 9-12).
    assert sorted(map(tuple, np.argwhere(heat[0, ..., 5] == 0.125).tolist())) == [
        (r, c) for r in range(9, 13) for c in (10, 11)]
    assert np.count_nonzero(heat[0]) == 12 and heat[0].sum() == pytest.approx(2.0) and heat[1].sum() == 0
    # The rest of each box is ignored by the objectness loss: object 1's cols 1 and 4 of rows 1-2, and object 2's
    # rows 8 and 13 of cols 10-11 (cells whose centres lie inside the box but outside its central region).
    assert weight[0, 1, 1] == 0 and weight[0, 2, 4] == 0 and weight[0, 8, 10] == 0 and weight[0, 13, 11] == 0
    assert weight[0, 0, 0] == 1 and weight[0, 1, 2] == 1 and weight[0, 9, 10] == 1
    assert weight[0].sum() == 256 - 8 and weight[1].min() == 1
    np.testing.assert_allclose(box_target[0, 1, 2], [8, 8, 40, 24, 0.25])
    np.testing.assert_allclose(box_target[0, 12, 11], [80, 64, 96, 112, 0.125])
    assert box_target[0, ..., 4].sum() == pytest.approx(2.0) and box_target[1].max() == 0


def test_class_and_box_losses_count_every_object_once_whatever_its_size():
    """A big object (many positive cells) predicted perfectly and a small one (one cell) predicted badly: the loss
    is the mean over the two objects, not over the cells - the small digit's error is not drowned out."""
    tf = pytest.importorskip("tensorflow")
    from edgecnn.train.detection_models import CLASS_OUTPUT, encode_targets, make_losses, pad_annotations

    stride, grid = 8, (16, 16)
    annotations = [{"boxes": np.array([[8, 8, 72, 72], [98, 98, 106, 106]], np.float32),
                    "labels": np.array([1, 2])}]
    boxes, labels = pad_annotations(annotations)
    targets = encode_targets(tf, tf.constant(boxes), tf.constant(labels), grid, stride, 3)
    heat = targets[CLASS_OUTPUT].numpy()
    big, small = np.argwhere(heat[0, ..., 1] > 0), np.argwhere(heat[0, ..., 2] > 0)
    assert len(big) == 16 and len(small) == 1
    predicted = np.full((1, *grid, 3), 1 / 3, np.float32)
    predicted[0, big[:, 0], big[:, 1]] = [0.0, 1.0, 0.0]       # the big object: right, loss 0
    predicted[0, small[0, 0], small[0, 1]] = [0.5, 0.25, 0.25]  # the small one: wrong, -log(0.25)
    loss = make_losses(tf, grid, stride)[CLASS_OUTPUT](tf.constant(heat), tf.constant(predicted))
    assert float(loss) == pytest.approx(-np.log(0.25) / 2, rel=1e-5)  # per-cell averaging would give 1/17 of it

    # Boxes: exact distances everywhere for the big object, zero-size guesses for the small one -> GIoU loss of the
    # small object alone, halved.
    ys, xs = np.meshgrid((np.arange(16) + 0.5) * stride, (np.arange(16) + 0.5) * stride, indexing="ij")
    distances = np.stack([xs - 8, ys - 8, 72 - xs, 72 - ys], axis=-1) / stride
    raw = np.log(np.expm1(np.clip(distances, 1e-3, None)))[None].astype(np.float32)  # softplus^-1
    raw[0, small[0, 0], small[0, 1]] = -20.0  # softplus(-20) ~ 0: a point box, GIoU ~ -(hull - union)/hull
    box_loss = float(make_losses(tf, grid, stride)["boxes"](targets["boxes"], tf.constant(raw)))
    assert 0.4 < box_loss < 0.5 + 1e-3  # 1 - GIoU of a point inside the box is ~1: (0 + 1) / 2


# --- architecture and decoding choices made in training ---------------------------------------------------------

@pytest.mark.parametrize("layout, lateral_inputs", [("mobilenet-s", ("block3", "block5", "block6")),
                                                    ("fast", ("block2", "block4", "block6"))])
def test_laterals_take_the_last_block_at_each_stride(layout, lateral_inputs):
    """FPN practice: each lateral reads the deepest block of its stride (the first one sees fewer layers)."""
    pytest.importorskip("keras")
    from edgecnn.train.models import create_model

    model = create_model("detector", (64, 64, 3), 10, stride=4, layout=layout)
    fed_by = [model.get_layer(f"lat{s}_conv").input._keras_history.operation.name for s in (4, 8, 16)]
    assert fed_by == [f"{block}_pw_relu" for block in lateral_inputs]
    strides = [int(64 // model.get_layer(f"{block}_pw_relu").output.shape[1]) for block in lateral_inputs]
    assert strides == [4, 8, 16]


def test_lateral_blocks_refuses_a_backbone_without_a_stride():
    from edgecnn.train.detection_models import lateral_blocks

    assert lateral_blocks(((8, 2), (8, 1), (8, 2), (8, 2)), stem_stride=2) == (1, 2, 3)
    with pytest.raises(InputError, match="no block at stride 8"):
        lateral_blocks(((8, 2), (8, 2)), stem_stride=1)


def _nms_case(detections_per_image):
    """Raw outputs (4x4 grid, stride 8) with one scored cell per detection: (row, col, class, score, box)."""
    from .test_detection_runtime import head

    boxes, scores = zip(*(head([(r, c, k, s, (8 * c + 4 - b[0], 8 * r + 4 - b[1], b[2] - 8 * c - 4,
                                                 b[3] - 8 * r - 4)) for r, c, k, s, b in image])
                          for image in detections_per_image))
    return {"boxes": np.stack(boxes), "scores": np.stack(scores)}


def test_nms_iou_is_calibrated_on_validation_mAP():
    """A digit found twice (the copy overlaps it by IoU 0.45) needs NMS below 0.45; two real objects that overlap
    by 0.45 need it above. Ties go to the runtime's default."""
    pytest.importorskip("pycocotools")
    from edgecnn.runtime.detection import DEFAULTS
    from edgecnn.train.detection_models import calibrate_nms_iou

    section = {"stride": 8, "grid": [4, 4], "input_size": [32, 32], "score_threshold": 0.4}
    one, copy = np.array([4, 4, 20, 20], np.float32), np.array([10, 4, 26, 20], np.float32)  # IoU 160 / 352
    truth = [{"boxes": one[None], "labels": np.array([0])}, {"boxes": one[None], "labels": np.array([0])}]
    twice = _nms_case([[(1, 1, 0, 0.9, one), (1, 2, 0, 0.8, copy)], [(1, 1, 0, 0.7, one)]])
    iou, val = calibrate_nms_iou(twice, truth, ["a", "b", "c"], section)
    assert iou == 0.4 and val["map50"] == pytest.approx(1.0)  # 0.3 and 0.4 both remove the copy: the higher wins

    both = [{"boxes": np.stack([one, copy]), "labels": np.array([0, 0])}]
    crowded = _nms_case([[(1, 1, 0, 0.9, one), (1, 2, 0, 0.8, copy)]])
    iou, val = calibrate_nms_iou(crowded, both, ["a", "b", "c"], section)
    assert iou == DEFAULTS["nms_iou"] and val["map50"] == pytest.approx(1.0)


def test_iou_aware_objectness_learns_the_iou_of_the_predicted_box():
    """``-o objectness=iou``: at a positive cell the target is the IoU of the box the cell predicts (no gradient
    into the box through it); background cells aim at 0; cells ignored by the centre target stay ignored."""
    tf = pytest.importorskip("tensorflow")
    from edgecnn.runtime.detection import DecodeSpec, decode
    from edgecnn.train.detection_models import OBJECT_OUTPUT, encode_targets, make_losses, pad_annotations

    stride, grid = 8, (8, 8)
    truth = np.array([[8, 8, 40, 40]], np.float32)
    boxes, labels = pad_annotations([{"boxes": truth, "labels": np.array([0])}])
    target = encode_targets(tf, tf.constant(boxes), tf.constant(labels), grid, stride, 2)[OBJECT_OUTPUT]
    positive = target.numpy()[0, ..., 0] > 0
    assert positive.sum() == 4
    raw = np.full((1, *grid, 4), np.log(np.expm1(1.5)), np.float32)  # every cell predicts a 24x24 box around it
    loss = make_losses(tf, grid, stride, objectness="iou")[OBJECT_OUTPUT]
    spec = DecodeSpec(stride=stride, grid=grid, input_size=(64, 64), score_threshold=0.0, nms_iou=1.0,
                      max_detections=1000, pre_nms_top_k=1000)
    ious = []
    for row, col in np.argwhere(positive):
        scores = np.zeros((*grid, 1), np.float32)
        scores[row, col] = 1.0
        box = decode(raw[0], scores, spec)[0]
        ious.append(float(iou_matrix(box, truth)[0, 0]))
    iou = np.zeros(grid, np.float32)
    iou[positive] = ious
    assert 0.3 < min(ious) < 0.9

    def total(objectness):
        y_pred = tf.constant(np.concatenate([objectness[None, ..., None], raw], axis=-1))
        return float(loss(target, y_pred))

    at_target = np.where(positive, iou, 1e-6).astype(np.float32)
    assert total(at_target) == pytest.approx(0.0, abs=1e-4)
    assert total(np.where(positive, 1.0 - 1e-6, 1e-6).astype(np.float32)) > 0.05  # "centre" would want 1 here
    ignored = (target.numpy()[0, ..., 1] == 0)
    assert ignored.any()
    assert total(np.where(ignored, 0.9, at_target).astype(np.float32)) == pytest.approx(0.0, abs=1e-4)
    y_pred = tf.Variable(np.concatenate([np.full((1, *grid, 1), 0.5, np.float32), raw], axis=-1))
    with tf.GradientTape() as tape:
        value = loss(target, y_pred)
    gradient = tape.gradient(value, y_pred).numpy()
    assert np.abs(gradient[..., 0]).max() > 0 and np.abs(gradient[..., 1:]).max() == 0
