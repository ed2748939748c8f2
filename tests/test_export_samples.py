"""An export's samples/: the user's own image files as they were (folder, coco), generated datasets as PNGs.

The adapters' ``write_samples`` is called directly on a loaded split (no model, no TensorFlow): the source model's
predictions are given as the ``reference`` outputs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("sklearn")  # the folder split is scikit-learn's stratified split (train extra)

from edgecnn.export.detection import DetectionAdapter
from edgecnn.export.tasks import ImageClassificationAdapter
from edgecnn.train.datasets import Splits, image_preprocessing, load_dataset


def picture(size: tuple[int, int], seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


@pytest.fixture
def class_folders(tmp_path) -> Path:
    """Two classes of photographs of several sizes and formats."""
    root = tmp_path / "photos"
    for c, name in enumerate(("cat", "dog")):
        (root / name).mkdir(parents=True)
        for k in range(10):
            suffix = ".jpg" if k % 2 else ".png"
            picture((40 + 10 * k, 30 + 7 * k), seed=100 * c + k).save(root / name / f"{name}{k}{suffix}")
    return root


def test_folder_samples_are_the_original_files(class_folders, tmp_path):
    splits = load_dataset("folder", data=str(class_folders), size=16)
    reference = [np.eye(2, dtype=np.float32)[splits.y_test]]  # the source model gets every test image right
    info = ImageClassificationAdapter(None, splits, {}).write_samples(tmp_path / "samples", reference, 2)
    originals = {p.read_bytes(): p for p in class_folders.rglob("*") if p.is_file()}
    shipped = sorted((tmp_path / "samples").iterdir())
    assert info["count"] == len(shipped) == 4
    for sample in shipped:
        original = originals.get(sample.read_bytes())
        assert original is not None, f"{sample.name} is not one of the original files"
        assert sample.name.split("-")[0] == original.parent.name and sample.suffix == original.suffix


def test_generated_samples_stay_pngs_at_the_model_size(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (6, 28, 28, 1), dtype=np.uint8)
    y = np.array([0, 1, 0, 1, 0, 1])
    splits = Splits("digits", "image-classification", ["0", "1"], x, y, x, y, x, y, image_preprocessing(28, 28, 1))
    ImageClassificationAdapter(None, splits, {}).write_samples(tmp_path / "samples", [np.eye(2)[y]], 1)
    shipped = sorted((tmp_path / "samples").iterdir())
    assert [p.name for p in shipped] == ["0-1.png", "1-1.png"]
    np.testing.assert_array_equal(np.asarray(Image.open(shipped[0])), x[0, ..., 0])


@pytest.fixture
def coco_folder(tmp_path) -> Path:
    """Ten photographs of different sizes, one or two boxes each, in COCO format."""
    root = tmp_path / "coco"
    (root / "images").mkdir(parents=True)
    images, annotations = [], []
    for k in range(10):
        size = (60 + 13 * k, 90 - 4 * k)
        name = f"photo{k}.jpg" if k % 2 else f"photo{k}.png"
        picture(size, seed=k).save(root / "images" / name)
        images.append({"id": k + 7, "file_name": name, "width": size[0], "height": size[1]})
        for j in range(1 + k % 2):
            annotations.append({"id": len(annotations) + 1, "image_id": k + 7, "category_id": 3 + j,
                                "bbox": [5.0 + j * 20, 6.0 + k, 17.0 + k, 11.5], "area": 1.0, "iscrowd": 0})
    coco = {"images": images, "annotations": annotations,
            "categories": [{"id": 3, "name": "cup"}, {"id": 4, "name": "pen"}]}
    (root / "annotations.json").write_text(json.dumps(coco))
    return root


def test_coco_samples_are_the_original_files_with_their_own_boxes(coco_folder, tmp_path):
    splits = load_dataset("coco", data=str(coco_folder / "annotations.json"), size=32)
    adapter = DetectionAdapter(None, splits, {"detection": {}})
    info = adapter.write_samples(tmp_path / "samples", [], 2)
    source = json.loads((coco_folder / "annotations.json").read_text())
    by_bytes = {(coco_folder / "images" / i["file_name"]).read_bytes(): i for i in source["images"]}
    truth = json.loads((tmp_path / "samples" / "ground_truth.json").read_text())
    assert info["count"] == len(truth["images"]) == len(splits.y_test) >= 1
    for image in truth["images"]:
        original = by_bytes.get((tmp_path / "samples" / image["file_name"]).read_bytes())
        assert original is not None, f"{image['file_name']} is not one of the original files"
        assert (image["width"], image["height"]) == (original["width"], original["height"])
        boxes = sorted(a["bbox"] for a in truth["annotations"] if a["image_id"] == image["id"])
        expected = sorted(a["bbox"] for a in source["annotations"] if a["image_id"] == original["id"])
        np.testing.assert_allclose(boxes, expected, atol=0.01)
