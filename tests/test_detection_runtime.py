"""Box decoding, score threshold, class-wise NMS and box mapping, with hand-made head tensors (no training)."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from PIL import Image

from edgecnn.errors import ModelError
from edgecnn.runtime import detection
from edgecnn.runtime.detection import DecodeSpec, decode, iou_matrix, nms

STRIDE = 8
GRID = (4, 4)
SPEC = DecodeSpec(stride=STRIDE, grid=GRID, input_size=(32, 32), score_threshold=0.4, nms_iou=0.5,
                  max_detections=100, pre_nms_top_k=200)


def inverse_softplus(y):
    return np.log(np.expm1(np.asarray(y, np.float64))).astype(np.float32)


def head(objects, classes=3):
    """Raw outputs with one scored cell per object: (row, col, class, score, (l, t, r, b) in pixels)."""
    boxes = np.full(GRID + (4,), inverse_softplus(0.5), np.float32)  # 4-pixel boxes everywhere else
    scores = np.zeros(GRID + (classes,), np.float32)
    for row, col, cls, score, ltrb in objects:
        scores[row, col, cls] = score
        boxes[row, col] = inverse_softplus(np.maximum(np.asarray(ltrb, np.float64), 1e-3) / STRIDE)
    return boxes, scores


def test_decode_returns_the_box_around_the_cell_centre():
    boxes, scores = head([(1, 2, 1, 0.9, (4, 6, 8, 2))])
    out_boxes, out_scores, out_classes = decode(boxes, scores, SPEC)
    # cell (row 1, col 2) has its centre at x = 2.5 * 8 = 20, y = 1.5 * 8 = 12
    np.testing.assert_allclose(out_boxes, [[16, 6, 28, 14]], atol=1e-4)
    np.testing.assert_allclose(out_scores, [0.9], atol=1e-6)
    assert out_classes.tolist() == [1]


def test_decode_keeps_nothing_below_the_threshold_and_returns_empty_arrays():
    boxes, scores = head([(0, 0, 0, 0.39, (4, 4, 4, 4))])
    out_boxes, out_scores, out_classes = decode(boxes, scores, SPEC)
    assert out_boxes.shape == (0, 4) and out_scores.shape == (0,) and out_classes.shape == (0,)


def test_threshold_argument_overrides_the_spec():
    boxes, scores = head([(0, 0, 0, 0.3, (4, 4, 4, 4)), (3, 3, 2, 0.8, (4, 4, 4, 4))])
    assert len(decode(boxes, scores, SPEC)[0]) == 1
    assert len(decode(boxes, scores, SPEC, threshold=0.2)[0]) == 2


def test_nms_suppresses_overlapping_boxes_of_the_same_class_only():
    # Two neighbouring cells describe almost the same 16x16 box; a third cell of another class overlaps them.
    same = [(1, 1, 0, 0.9, (8, 8, 8, 8)), (1, 2, 0, 0.7, (16, 8, 0, 8))]
    other = [(2, 1, 2, 0.6, (8, 16, 8, 0))]
    boxes, scores = head(same + other)
    out_boxes, out_scores, out_classes = decode(boxes, scores, SPEC)
    assert out_classes.tolist() == [0, 2]
    np.testing.assert_allclose(out_scores, [0.9, 0.6], atol=1e-6)
    np.testing.assert_allclose(out_boxes[0], [4, 4, 20, 20], atol=1e-4)


def test_nms_keeps_boxes_that_overlap_less_than_the_iou_limit():
    boxes = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [0, 0, 10, 9]], np.float32)  # IoU 1/3 and 0.9 with the first
    scores = np.array([0.9, 0.8, 0.7], np.float32)
    classes = np.zeros(3, np.int64)
    assert nms(boxes, scores, classes, iou=0.5, limit=10).tolist() == [0, 1]
    assert nms(boxes, scores, classes, iou=0.95, limit=10).tolist() == [0, 1, 2]
    assert nms(boxes, scores, classes, iou=0.5, limit=1).tolist() == [0]


def test_iou_matrix_values():
    a = np.array([[0, 0, 2, 2]], np.float32)
    b = np.array([[1, 1, 3, 3], [0, 0, 2, 2], [5, 5, 6, 6]], np.float32)
    np.testing.assert_allclose(iou_matrix(a, b), [[1 / 7, 1.0, 0.0]], atol=1e-6)


def test_max_detections_caps_the_result_best_first():
    objects = [(r, c, 0, 0.5 + 0.03 * (4 * r + c), (3, 3, 3, 3)) for r in range(4) for c in range(4)]
    boxes, scores = head(objects)
    spec = DecodeSpec(stride=STRIDE, grid=GRID, input_size=(32, 32), max_detections=5)
    _, out_scores, _ = decode(boxes, scores, spec)
    assert len(out_scores) == 5
    assert np.all(np.diff(out_scores) <= 0) and out_scores[0] == pytest.approx(0.5 + 0.03 * 15)


def test_boxes_map_to_a_non_square_original_image():
    boxes, scores = head([(1, 2, 1, 0.9, (4, 6, 8, 2))])
    out_boxes, _, _ = decode(boxes, scores, SPEC, original_size=(640, 427))
    sx, sy = 640 / 32, 427 / 32
    np.testing.assert_allclose(out_boxes, [[16 * sx, 6 * sy, 28 * sx, 14 * sy]], rtol=1e-5)


def test_boxes_are_clipped_to_the_original_image():
    boxes, scores = head([(0, 0, 0, 0.9, (20, 20, 4, 4))])
    out_boxes, _, _ = decode(boxes, scores, SPEC, original_size=(100, 50))
    np.testing.assert_allclose(out_boxes, [[0, 0, (4 + 4) * 100 / 32, (4 + 4) * 50 / 32]], rtol=1e-5)


def test_decode_and_nms_are_fast_on_a_128_pixel_model():
    rng = np.random.default_rng(0)
    spec = DecodeSpec(stride=4, grid=(32, 32), input_size=(128, 128))
    boxes = rng.normal(1.0, 0.5, (32, 32, 4)).astype(np.float32)
    scores = (rng.random((32, 32, 10)) ** 8).astype(np.float32)  # a few dozen cells above 0.4, like a busy scene
    decode(boxes, scores, spec)
    best = min(_timed(lambda: decode(boxes, scores, spec)) for _ in range(20))
    assert best < 0.005, f"decode + NMS took {best * 1000:.2f} ms"


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# --- ObjectDetector with a fake backend: the task class's own mapping, results and drawing ------------------------

class FakeBackend:
    name = "fake"
    input_name = "image"

    def __init__(self, outputs):
        self.outputs = outputs
        self.seen = []
        self.input_shape = None  # unknown: the runtime's shape checks skip it
        self.output_shapes = [(None, *o.shape) for o in outputs]

    def run(self, inputs):
        self.seen.append(inputs)
        return [np.repeat(o[None], len(inputs), axis=0) for o in self.outputs]


def write_manifest(folder, section_overrides=None):
    (folder / "model.onnx").write_bytes(b"not really a model: the backend is faked")
    section = {"stride": STRIDE, "grid": list(GRID), "input_size": [32, 32], "box_encoding": detection.BOX_ENCODING,
               "score_threshold": 0.4, "nms_iou": 0.5, "max_detections": 100, "pre_nms_top_k": 200,
               **(section_overrides or {})}
    manifest = {"schema": 1, "task": "object-detection", "labels": ["a", "b", "c"],
                "input": {"name": "image", "shape": [None, 32, 32, 3], "dtype": "float32", "layout": "NHWC"},
                "outputs": [{"name": "boxes"}, {"name": "scores"}],
                "preprocessing": {"type": "image", "height": 32, "width": 32, "color_mode": "RGB", "channels": 3,
                                  "scale": 1 / 255, "offset": 0.0, "resize": "bilinear", "layout": "NHWC"},
                "files": {"onnx": {"path": "model.onnx"}}, "detection": section}
    (folder / "edgecnn.json").write_text(json.dumps(manifest))


@pytest.fixture
def detector(tmp_path, monkeypatch):
    from edgecnn.runtime import tasks

    backend = FakeBackend(head([(1, 2, 1, 0.9, (4, 6, 8, 2)), (3, 0, 2, 0.5, (2, 2, 2, 2))]))
    monkeypatch.setattr(tasks, "open_backend", lambda *args, **kwargs: backend)
    write_manifest(tmp_path)
    return tasks.ObjectDetector(tmp_path)


def test_object_detector_maps_boxes_to_the_users_image_size(detector, tmp_path):
    path = tmp_path / "wide.png"
    Image.new("RGB", (640, 427), (10, 20, 30)).save(path)
    result = detector.detect(path)
    assert [d.label for d in result.detections] == ["b", "c"]
    sx, sy = 640 / 32, 427 / 32
    np.testing.assert_allclose(result.detections[0].box, [16 * sx, 6 * sy, 28 * sx, 14 * sy], rtol=1e-5)
    data = result.to_dict()
    assert data["input"] == str(path)
    assert set(data["detections"][0]) == {"label", "score", "box"}
    assert data["detections"][0]["label"] == "b" and data["detections"][0]["score"] == pytest.approx(0.9)
    assert detector.backend.seen[0].shape == (1, 32, 32, 3)


def test_object_detector_threshold_and_empty_result(detector):
    image = np.zeros((50, 80, 3), np.uint8)
    assert len(detector.detect(image, threshold=0.6)) == 1
    empty = detector.detect(image, threshold=0.95)
    assert empty.detections == [] and empty.to_dict() == {"input": None, "detections": []}


def test_detect_batch_matches_detect(detector):
    images = [np.zeros((40, 40, 3), np.uint8), np.zeros((20, 90, 3), np.uint8)]
    batch = detector.detect_batch(images, batch_size=1)
    single = [detector.detect(image) for image in images]
    assert [r.to_dict() for r in batch] == [r.to_dict() for r in single]


def test_save_draws_boxes_on_the_original_image(detector, tmp_path):
    path = tmp_path / "scene.png"
    Image.new("RGB", (64, 64), (0, 0, 0)).save(path)
    result = detector.detect(path)
    out = result.save(path, tmp_path / "out" / "drawn.png")
    drawn = np.asarray(Image.open(out))
    assert drawn.shape == (64, 64, 3)
    assert drawn.any(), "nothing was drawn on the black image"


def test_object_detector_refuses_a_manifest_without_a_known_box_encoding(tmp_path, monkeypatch):
    from edgecnn.runtime import tasks

    monkeypatch.setattr(tasks, "open_backend", lambda *args, **kwargs: FakeBackend(head([])))
    write_manifest(tmp_path, {"box_encoding": "yolo-v99"})
    with pytest.raises(ModelError, match="box_encoding"):
        tasks.ObjectDetector(tmp_path)


# --- class-agnostic NMS: one label per object where classes are exclusive -----------------------------------------

def test_class_agnostic_nms_suppresses_overlapping_boxes_of_any_class():
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 9], [20, 20, 30, 30]], np.float32)
    scores = np.array([0.9, 0.8, 0.7], np.float32)
    classes = np.array([0, 1, 1])
    assert nms(boxes, scores, classes, iou=0.5, limit=10).tolist() == [0, 1, 2]
    assert nms(boxes, scores, classes, iou=0.5, limit=10, class_agnostic=True).tolist() == [0, 2]


TWO_CLASSES_ON_ONE_OBJECT = [(1, 1, 0, 0.9, (8, 8, 8, 8)), (1, 1, 2, 0.6, (8, 8, 8, 8))]


@pytest.mark.parametrize("nms_field, kept", [
    (None, ["a", "c"]),                   # a manifest written before the field existed: class-wise, as it was
    ("class-wise greedy", ["a", "c"]),    # what exports wrote as a description before
    ("class-wise", ["a", "c"]),
    ("class-agnostic", ["a"]),
])
def test_the_manifest_says_whether_nms_is_class_wise(tmp_path, monkeypatch, nms_field, kept):
    from edgecnn.runtime import tasks

    monkeypatch.setattr(tasks, "open_backend", lambda *args, **kwargs: FakeBackend(head(TWO_CLASSES_ON_ONE_OBJECT)))
    write_manifest(tmp_path, {} if nms_field is None else {"nms": nms_field})
    if nms_field is None:
        data = json.loads((tmp_path / "edgecnn.json").read_text())
        data["detection"].pop("nms", None)
        (tmp_path / "edgecnn.json").write_text(json.dumps(data))
    result = tasks.ObjectDetector(tmp_path).detect(np.zeros((32, 32, 3), np.uint8))
    assert [d.label for d in result.detections] == kept


def test_reference_detector_gives_one_label_per_digit_in_scene_01():
    """scene-01's 9 was also labelled 8 (class-wise NMS keeps both): the export now says class-agnostic."""
    import edgecnn

    from .conftest import reference_export, sample_truth

    export = reference_export("digit-detector", "export-detector")
    detector = edgecnn.load(export, format="onnx")
    assert detector.spec.class_agnostic
    name, truth_boxes, truth_labels = sample_truth(export)[0]
    assert name == "scene-01.png"
    detections = detector.detect(export / "samples" / name).detections
    boxes = np.array([d.box for d in detections], np.float32)
    overlaps = iou_matrix(boxes, boxes)[np.triu_indices(len(boxes), 1)]
    assert overlaps.max() <= detector.spec.nms_iou, overlaps
    nine = np.array([truth_boxes[truth_labels.index("9")]], np.float32)
    on_the_nine = [d.label for d, iou in zip(detections, iou_matrix(nine, boxes)[0]) if iou >= 0.5]
    assert on_the_nine == ["9"]


# --- drawings: every label inside the image --------------------------------------------------------------------

class Drawn:
    def __init__(self, label, score, box):
        self.label, self.score, self.box = label, score, box


GREY = (128, 128, 128)


def text_extent(image: Image.Image) -> tuple[int, int]:
    """(width, height) of the dark pixels (the label's black text) in a drawing on a grey background."""
    pixels = np.asarray(image)
    dark = np.argwhere(pixels.max(axis=2) < 60)
    assert len(dark), "no label text drawn"
    (r0, c0), (r1, c1) = dark.min(axis=0), dark.max(axis=0)
    return int(c1 - c0 + 1), int(r1 - r0 + 1)


@pytest.mark.parametrize("size, box", [
    ((100, 60), (92, 30, 100, 40)),   # at the right edge
    ((100, 60), (85, 0, 100, 60)),    # right edge, full height: no room above or below
    ((100, 60), (0, 50, 30, 60)),     # bottom-left
    ((100, 60), (70, 0, 100, 12)),    # top-right corner
])
def test_labels_are_drawn_whole_inside_the_image(size, box):
    from edgecnn.runtime.detection import draw_detections

    detection = Drawn("8", 0.99, box)
    free = draw_detections(Image.new("RGB", (400, 300), GREY), [Drawn("8", 0.99, (180, 150, 200, 170))])
    drawn = draw_detections(Image.new("RGB", size, GREY), [detection])
    assert text_extent(drawn) == text_extent(free)


@pytest.mark.parametrize("dataset, mode", [("digit-scenes", "class-agnostic"), ("coco", "class-wise")])
def test_export_chooses_class_agnostic_nms_where_classes_exclude_each_other(dataset, mode):
    """A digit is one digit (class-agnostic); COCO objects of two classes may overlap (class-wise)."""
    from types import SimpleNamespace

    pytest.importorskip("sklearn")
    from edgecnn.export.detection import DetectionAdapter
    from edgecnn.train.datasets import Splits, image_preprocessing

    model = SimpleNamespace(inputs=[SimpleNamespace(shape=(None, 32, 32, 3))])
    splits = Splits(dataset, "object-detection", ["a", "b", "c"], *[None] * 6, image_preprocessing(32, 32, 3))
    run = {"detection": {"stride": STRIDE, "grid": list(GRID), "input_size": [32, 32], "nms": "class-wise greedy",
                         "box_encoding": detection.BOX_ENCODING, "outputs": {"boxes": "raw", "scores": "sigmoid"}}}
    section = DetectionAdapter(model, splits, run).manifest_sections()["detection"]
    assert section["nms"] == mode
    assert DecodeSpec.from_section(section).class_agnostic == (mode == "class-agnostic")
