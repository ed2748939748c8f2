"""Task front doors with typed results, in the spirit of MediaPipe Tasks.

Each task reads the manifest, opens one model file with one backend (once, then reuses it), turns user input into
the model's input as the manifest says, and turns the model's output into typed results. Validation at export time
and ``edgecnn eval``/``bench`` call the same :meth:`predict` that users call, so what was measured is what runs.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from .. import manifest as manifest_io
from ..errors import InputError, ModelError
from . import image as image_io
from . import text as text_io
from .backends import Backend, open_backend
from .platform_info import importable_runtimes

#: Formats tried, in order, when none is asked for: exact fp32 first, then whatever the installed runtime can run.
DEFAULT_FORMAT_ORDER = ("onnx", "tflite", "onnx-int8", "tflite-int8")


@dataclass(frozen=True)
class Category:
    """One class and its probability."""

    index: int
    score: float
    label: str

    def to_dict(self) -> dict:
        return {"label": self.label, "index": self.index, "score": round(float(self.score), 6)}


@dataclass
class Classification:
    """The top-k categories for one input, best first."""

    categories: list[Category]
    input: str | None = None
    notes: list[str] = field(default_factory=list)
    #: multi-label heads: ``categories`` are the labels whose own score reached ``threshold`` (maybe none)
    multi_label: bool = False
    threshold: float | None = None

    @property
    def top(self) -> Category:
        if not self.categories:
            raise IndexError(f"no label of {self.input or 'this input'} reached the threshold {self.threshold}")
        return self.categories[0]

    @property
    def label(self) -> str:
        return self.top.label

    @property
    def index(self) -> int:
        return self.top.index

    @property
    def score(self) -> float:
        return self.top.score

    def __str__(self) -> str:
        ranked = ", ".join(f"{c.label} {c.score:.3f}" for c in self.categories)
        notes = f"  ({'; '.join(self.notes)})" if self.notes else ""
        if self.multi_label:
            return f"{self.input or '<input>'}: multi-label (score >= {self.threshold:g}) [{ranked or 'none'}]{notes}"
        return f"{self.input or '<input>'}: {self.label}  [{ranked}]{notes}"

    def to_dict(self) -> dict:
        data = {"input": self.input, "predictions": [c.to_dict() for c in self.categories]}
        if self.multi_label:
            data.update(multi_label=True, threshold=self.threshold)
        if self.notes:
            data["notes"] = list(self.notes)
        return data


def _runtime_for(fmt: str) -> str:
    return "onnxruntime" if fmt.startswith("onnx") else "litert"


def runnable_formats(manifest: manifest_io.Manifest) -> list[str]:
    """Formats of this export whose runtime is installed here."""
    installed = importable_runtimes()
    has_ort = "onnxruntime" in installed
    has_litert = "ai-edge-litert" in installed or "tflite-runtime" in installed
    return [f for f in manifest.formats if (has_ort if _runtime_for(f) == "onnxruntime" else has_litert)]


def choose_format(manifest: manifest_io.Manifest, requested: str | None) -> str:
    """The format to run: the requested one, else the first of DEFAULT_FORMAT_ORDER this machine can run."""
    if requested:
        if requested not in manifest.get("files", {}):
            raise ModelError(f"{manifest.folder} has no '{requested}' export; it has {', '.join(manifest.formats)}")
        return requested
    runnable = runnable_formats(manifest)
    for fmt in DEFAULT_FORMAT_ORDER:
        if fmt in runnable:
            return fmt
    if runnable:
        return runnable[0]
    raise ModelError(
        f"no runtime installed here can run {manifest.folder} ({', '.join(manifest.formats)}); "
        "install onnxruntime (pip install onnxruntime) or LiteRT (pip install 'edgecnn[tflite]')"
    )


class Task:
    """Shared plumbing: manifest, format choice, one backend per instance.

    Opening checks the export before any input is seen: the manifest field by field (``manifest.read``), the model
    file against its sha256, and the manifest against the file itself, so that labels of another model (3, 0 or
    100 labels for 10 class scores) or a manifest of another input size are a one-line ModelError, not answers.

    Thread safety: a task object may be shared by any number of threads; each call gives exactly what a serial call
    would. Nothing a call touches is mutated after ``__init__`` except inside the backend, which is safe for
    concurrent calls (onnxruntime sessions are; LiteRT interpreters are pooled, one per call in flight).
    """

    task: str = ""
    #: The output whose last dimension holds one score per label: its manifest name, or None for the first output.
    class_scores_output: str | None = None

    def __init__(self, model: str | os.PathLike | manifest_io.Manifest, format: str | None = None,
                 threads: int | None = None):
        self.manifest = model if isinstance(model, manifest_io.Manifest) else manifest_io.read(model)
        if self.manifest.task != self.task:
            raise ModelError(f"{self.manifest.folder} is a {self.manifest.task} model, not {self.task}; "
                             f"use edgecnn.load() to get the right class")
        self.format = choose_format(self.manifest, format)
        self.threads = threads
        path = self.manifest.verify_file(self.format)
        outputs = [o["name"] for o in self.manifest["outputs"]]
        self.backend: Backend = open_backend(path, self.manifest["input"]["name"], outputs, threads)
        _check_model_file(self.manifest, self.backend, path, self.class_scores_output)

    @property
    def labels(self) -> list[str]:
        return self.manifest.labels

    def run(self, inputs: np.ndarray) -> list[np.ndarray]:
        """Raw model outputs (float32) for a preprocessed batch."""
        return self.backend.run(inputs)

    def outputs(self, inputs: np.ndarray) -> list[np.ndarray]:
        """The outputs that validation and eval compare: raw, except classifiers give probabilities."""
        return self.run(inputs)


def _check_model_file(manifest: manifest_io.Manifest, backend: Backend, path, scores_output: str | None) -> None:
    """The manifest must describe the model file it sits beside: label count and tensor shapes."""
    where = manifest.folder / manifest_io.MANIFEST_NAME
    names = [o["name"] for o in manifest["outputs"]]
    scores_shape = backend.output_shapes[names.index(scores_output) if scores_output else 0]
    width = scores_shape[-1] if scores_shape else None
    scores = manifest["outputs"][names.index(scores_output) if scores_output else 0]
    if width is not None and width != manifest_io.scores_width(scores, manifest.labels):
        raise ModelError(f"{where} lists {len(manifest.labels)} labels but {path} gives {width} class scores"
                         f"{' (one sigmoid unit takes 2 labels)' if scores.get('kind') == 'sigmoid' else ''}; "
                         "restore the labels that came with this model or re-run 'edgecnn export'")
    declared = [("input", manifest["input"]["shape"], backend.input_shape)]
    declared += [(f"output {o['name']!r}", o["shape"], actual)
                 for o, actual in zip(manifest["outputs"], backend.output_shapes) if "shape" in o]
    for what, expected, actual in declared:
        if actual and (len(expected) != len(actual) or any(a is not None and b is not None and a != b
                                                           for a, b in zip(expected, actual))):
            raise ModelError(f"{where} gives the {what} shape {_shape_text(expected)} but {path} has "
                             f"{_shape_text(actual)}; the manifest belongs to another model: restore it or re-export")


def _shape_text(shape) -> str:
    return "[" + ", ".join("N" if d is None else str(d) for d in shape) + "]"


def as_probabilities(output: np.ndarray, manifest: dict) -> np.ndarray:
    """A classifier's first output as one score per label, whatever its head (the manifest's ``outputs[0].kind``):

    - ``probabilities`` (softmax) and ``multi-label`` (one sigmoid per label) as they are;
    - ``logits``: softmax applied;
    - ``sigmoid`` (one unit, binary): ``[1 - p, p]``, the labels being [negative, positive].
    """
    kind = manifest["outputs"][0].get("kind")
    if kind == "sigmoid":
        p = output.reshape(len(output), -1)[:, :1].astype(np.float32)
        return np.concatenate([1.0 - p, p], axis=1)
    if kind != "logits":
        return output
    shifted = np.exp(output - output.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def is_multi_label(manifest: dict) -> bool:
    """True when every label has its own independent score (a sigmoid per label), not a share of one."""
    return manifest["outputs"][0].get("kind") == "multi-label"


class _Classifier(Task):
    """Probabilities -> ranked categories; shared by the image and text classifiers."""

    def predict(self, inputs: np.ndarray) -> np.ndarray:
        """Class probabilities (N x classes) for a preprocessed batch."""
        return as_probabilities(self.run(inputs)[0], self.manifest)

    def outputs(self, inputs: np.ndarray) -> list[np.ndarray]:
        return [self.predict(inputs)]

    #: multi-label heads: the score a label needs to be reported (None: the manifest's, else 0.5)
    threshold: float | None = None

    def rank(self, probabilities: np.ndarray, top_k: int, source: str | None) -> Classification:
        """One row of :meth:`predict` as the typed result: the ``top_k`` best labels (a multi-label head: every
        label at or above :attr:`label_threshold`), ``source`` naming the input. Public so that a caller that made
        the model call itself (a batch of decoded images, :mod:`edgecnn.runtime.batching`) gets the same result."""
        order = np.argsort(-probabilities, kind="stable")
        labels = self.labels
        multi = is_multi_label(self.manifest)
        if multi:  # every label that reached the threshold: top_k is no cut-off for independent labels
            order = [i for i in order if probabilities[i] >= self.label_threshold]
        else:
            order = order[:max(1, min(int(top_k), probabilities.shape[-1]))]
        categories = [
            Category(int(i), float(probabilities[i]), labels[i] if i < len(labels) else str(int(i))) for i in order
        ]
        return Classification(categories, source, multi_label=multi,
                              threshold=self.label_threshold if multi else None)

    @property
    def label_threshold(self) -> float:
        """The score a label of a multi-label head needs to be reported: ``threshold`` if set, else the
        manifest's ``outputs[0].threshold``, else 0.5."""
        if self.threshold is not None:
            return float(self.threshold)
        return float(self.manifest["outputs"][0].get("threshold", 0.5))


class ImageClassifier(_Classifier):
    """Classify images: a path, bytes, PIL image or uint8 array in; a :class:`Classification` out.

    One object may be shared by any number of threads, in every format; each call returns exactly what it would
    alone (see :class:`Task`).

    Example::

        classifier = ImageClassifier("exported/digits-cnn", format="tflite-int8")
        result = classifier.classify("seven.png")
        print(result.label, result.score)
    """

    task = "image-classification"

    def preprocess(self, image: image_io.ImageSource) -> np.ndarray:
        """One image -> a 1xHxWxC float32 model input."""
        prep = self.manifest["preprocessing"]
        pixels, _ = image_io.load_pixels(image, prep)
        return image_io.pixels_to_input(pixels[None], prep)

    def classify(self, image: image_io.ImageSource, top_k: int = 5) -> Classification:
        """Classify one image."""
        probabilities = self.predict(self.preprocess(image))[0]
        return self.rank(probabilities, top_k, input_name(image))

    def classify_batch(self, images: Sequence[image_io.ImageSource], top_k: int = 5,
                       batch_size: int = 32) -> list[Classification]:
        """Classify many images, ``batch_size`` per model call; a bad image raises InputError naming it."""
        results: list[Classification] = []
        for start in range(0, len(images), batch_size):
            chunk = images[start:start + batch_size]
            batch = np.concatenate([self.preprocess(item) for item in chunk])
            for item, probabilities in zip(chunk, self.predict(batch)):
                results.append(self.rank(probabilities, top_k, input_name(item)))
        return results


class TextClassifier(_Classifier):
    """Classify texts: a str (or a list of them) in; a :class:`Classification` (or a list) out.

    The text is tokenized exactly as the training graph's ``TextVectorization`` did (``runtime/text.py``), from the
    vocabulary the manifest carries. A text with no tokens (empty, whitespace or punctuation only) is still
    classified - the model sees an all-padding input - and the result's ``notes`` say so; so do they for a text cut
    at the sequence length and for one with no known word.

    One object may be shared by any number of threads, in every format; each call returns exactly what it would
    alone (see :class:`Task`).

    Example::

        classifier = TextClassifier("exported/bbc-news")
        print(classifier.classify("Shares fell sharply after the bank's results").label)
    """

    task = "text-classification"

    def __init__(self, model, format: str | None = None, threads: int | None = None):
        super().__init__(model, format=format, threads=threads)
        self.tokenizer = load_tokenizer(self.manifest)

    def preprocess(self, texts: str | Sequence[str]) -> np.ndarray:
        """Texts -> an int32 ``[N, sequence_length]`` array of token ids."""
        return self.tokenizer.encode(texts)

    def classify(self, text: str | text_io.TextFile | Sequence[str], top_k: int = 5, name: str | None = None,
                 batch_size: int = 64):
        """Classify one text (-> Classification) or a list of texts (-> list, ``batch_size`` per model call).

        ``name`` is what the result's ``input`` shows (a file name); by default the text cut to 80 characters.
        """
        if isinstance(text, (str, text_io.TextFile)):
            return self.classify_batch([text], top_k, names=[name])[0]
        if isinstance(text, bytes):
            raise InputError("text input must be str, not bytes; decode it first (e.g. data.decode('utf-8'))")
        return self.classify_batch(list(text), top_k, batch_size=batch_size)

    def classify_batch(self, texts: Sequence, top_k: int = 5, batch_size: int = 64,
                       names: Sequence[str | None] | None = None) -> list[Classification]:
        """Classify many texts, ``batch_size`` per model call."""
        names = list(names) if names is not None else [None] * len(texts)
        results: list[Classification] = []
        length = self.tokenizer.sequence_length
        for start in range(0, len(texts), batch_size):
            rows, notes, labels = [], [], []
            for item, name in zip(texts[start:start + batch_size], names[start:start + batch_size]):
                if isinstance(item, text_io.TextFile):
                    name, item = name or item.path, item.read()
                ids, count = self.tokenizer.encode_with_count(item)
                rows.append(ids)
                labels.append(name if name else item[:text_io.INPUT_CHARS])
                notes.append(_text_notes(ids, count, length))
            batch = np.zeros((len(rows), length), dtype=np.int32)
            for i, ids in enumerate(rows):
                batch[i, :len(ids)] = ids
            for probabilities, label, note in zip(self.predict(batch), labels, notes):
                result = self.rank(probabilities, top_k, label)
                result.notes.extend(note)
                results.append(result)
        return results


def _text_notes(ids: list[int], count: int, length: int) -> list[str]:
    if count == 0:
        return ["empty text: no tokens after standardization, classified as an all-padding input"]
    notes = []
    if count > length:
        notes.append(f"truncated: only the first {length} tokens were used")
    if all(i == text_io.OOV_ID for i in ids):
        notes.append("no known word: every token is out of the model's vocabulary")
    return notes


def load_tokenizer(manifest: manifest_io.Manifest) -> text_io.Tokenizer:
    """The tokenizer of a text export: its ``text`` section, with the vocabulary inline or in a hashed file.

    A vocabulary file (``text.vocabulary_file``: path, sha256) must exist inside the export folder and match its
    sha256, or the ids would silently mean other words. The sequence length must be the model input's.
    """
    where = manifest.folder / manifest_io.MANIFEST_NAME
    if not isinstance(manifest.get("text"), dict):
        raise ModelError(f"{where} has no 'text' section (vocabulary, sequence length); re-run 'edgecnn export'")
    section = manifest_io.Fields(manifest["text"], where, "text")
    vocabulary = None
    if "vocabulary" not in section.section and "vocabulary_file" in section.section:
        entry = section.section_of("vocabulary_file")
        path = manifest_io.resolve_inside(manifest.folder, entry.string("path"))
        expected = entry.string("sha256") if "sha256" in entry.section else None
        if not path.is_file():
            raise ModelError(f"vocabulary file {path} named in {manifest_io.MANIFEST_NAME} is missing; "
                             "copy the whole export folder or re-run 'edgecnn export'")
        if expected is not None and manifest_io.sha256_of(path) != expected:
            raise ModelError(f"vocabulary file {path} does not match the sha256 in {manifest_io.MANIFEST_NAME} "
                             "(changed or truncated); copy it again or re-run 'edgecnn export'")
        vocabulary = manifest_io.load_json(path, "re-run 'edgecnn export'")
        if not isinstance(vocabulary, list):
            raise ModelError(f"vocabulary file {path} is not a JSON list of tokens; re-run 'edgecnn export'")
    tokenizer = text_io.Tokenizer.from_manifest_section(section.section, vocabulary, where)
    if tokenizer.sequence_length != manifest["input"]["shape"][1]:
        raise ModelError(f"{where}: text.sequence_length {tokenizer.sequence_length} differs from the model input's "
                         f"{manifest['input']['shape'][1]} tokens (input.shape); fix it or re-run 'edgecnn export'")
    return tokenizer


@dataclass(frozen=True)
class Detection:
    """One detected object: its class label, score and box (x0, y0, x1, y1) in the original image's pixels."""

    label: str
    score: float
    box: tuple[float, float, float, float]
    index: int = -1

    def to_dict(self) -> dict:
        return {"label": self.label, "score": round(float(self.score), 4),
                "box": [round(float(v), 2) for v in self.box]}


@dataclass
class DetectionResult:
    """The detections in one image, best first; an empty list is a valid answer ("nothing found")."""

    detections: list[Detection]
    input: str | None = None
    image_size: tuple[int, int] | None = None  # (width, height) of the original image

    def __len__(self) -> int:
        return len(self.detections)

    def __iter__(self):
        return iter(self.detections)

    def __str__(self) -> str:
        found = ", ".join(f"{d.label} {d.score:.2f} [{', '.join(f'{v:.0f}' for v in d.box)}]"
                          for d in self.detections)
        return f"{self.input or '<input>'}: {len(self.detections)} detection(s){'  ' + found if found else ''}"

    def to_dict(self) -> dict:
        return {"input": self.input, "detections": [d.to_dict() for d in self.detections]}

    def draw(self, image: image_io.ImageSource | None = None):
        """A PIL RGB copy of the image (``image``, else the input path) with boxes, labels and scores drawn."""
        from .detection import draw_detections

        source = image if image is not None else self.input
        if source is None:
            raise InputError("this result has no input path to draw on; pass the image to draw()")
        return draw_detections(image_io.to_mode(image_io.open_image(source), "RGB"), self.detections)

    def save(self, image: image_io.ImageSource | None, path: str | os.PathLike) -> str:
        """Draw the detections on ``image`` (None: the input path) and save the drawing to ``path`` (PNG, JPEG...)."""
        from pathlib import Path

        target = Path(path)
        if not target.suffix:
            target = target.with_suffix(".png")
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.draw(image).save(target)
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot write {target} ({exc}); choose a writable .png or .jpg path") from None
        return str(target)


class ObjectDetector(Task):
    """Find objects in images: a path, bytes, PIL image or uint8 array in; a :class:`DetectionResult` out.

    The model gives raw head tensors; :mod:`edgecnn.runtime.detection` decodes them (threshold, class-wise NMS)
    the same way for every format, and maps boxes back to the original image's pixels whatever its size.

    One object may be shared by any number of threads, in every format; each call returns exactly what it would
    alone (see :class:`Task`).

    Example::

        detector = ObjectDetector("exported/digit-detector", format="tflite-int8")
        result = detector.detect("scene.png", threshold=0.4)
        for d in result.detections:
            print(d.label, d.score, d.box)
        result.save("scene.png", "scene-boxes.png")
    """

    task = "object-detection"
    class_scores_output = "scores"

    def __init__(self, model, format: str | None = None, threads: int | None = None):
        super().__init__(model, format=format, threads=threads)
        from . import detection

        section = self.manifest.get("detection")
        if not isinstance(section, dict) or section.get("box_encoding") != detection.BOX_ENCODING:
            raise ModelError(f"{self.manifest.folder}/{manifest_io.MANIFEST_NAME} has no 'detection' section with "
                             f"box_encoding {detection.BOX_ENCODING!r}; re-export it with this edgecnn")
        where = self.manifest.folder / manifest_io.MANIFEST_NAME
        self.spec = detection.DecodeSpec.from_section(section, where)
        prep = self.manifest["preprocessing"]
        if self.spec.input_size != (prep["width"], prep["height"]):  # boxes are scaled back by it
            raise ModelError(f"{where}: detection.input_size {list(self.spec.input_size)} differs from the model "
                             f"input's [{prep['width']}, {prep['height']}] (preprocessing width, height); "
                             "fix it or re-run 'edgecnn export'")
        names = [o["name"] for o in self.manifest["outputs"]]
        self._boxes, self._scores = names.index("boxes"), names.index("scores")
        grid = tuple(self.backend.output_shapes[self._scores][1:3])
        if None not in grid and grid != self.spec.grid:
            raise ModelError(f"{where}: detection.grid {list(self.spec.grid)} differs from the {list(grid)} grid of "
                             "the model file's scores; fix it or re-run 'edgecnn export'")

    @property
    def threshold(self) -> float:
        """The default score threshold (the manifest's)."""
        return self.spec.score_threshold

    def preprocess(self, image: image_io.ImageSource) -> tuple[np.ndarray, tuple[int, int]]:
        """One image -> (1xHxWxC float32 model input, original (width, height))."""
        prep = self.manifest["preprocessing"]
        pixels, size = image_io.load_pixels(image, prep)
        return image_io.pixels_to_input(pixels[None], prep), size

    def decode(self, outputs: list[np.ndarray], sizes: Sequence[tuple[int, int]] | None = None,
               threshold: float | None = None) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Raw outputs of a batch -> per image (boxes, scores, class indices), boxes in original pixels."""
        from .detection import decode_batch

        return decode_batch(outputs[self._boxes], outputs[self._scores], self.spec, sizes, threshold)

    def _result(self, decoded, source, size) -> DetectionResult:
        labels = self.labels
        boxes, scores, classes = decoded
        detections = [Detection(labels[c] if c < len(labels) else str(int(c)), float(s),
                                tuple(float(v) for v in b), int(c)) for b, s, c in zip(boxes, scores, classes)]
        return DetectionResult(detections, input_name(source), tuple(size))

    def detect(self, image: image_io.ImageSource, threshold: float | None = None) -> DetectionResult:
        """Detect objects in one image; ``threshold`` overrides the manifest's default score threshold."""
        inputs, size = self.preprocess(image)
        return self._result(self.decode(self.run(inputs), [size], threshold)[0], image, size)

    def detect_batch(self, images: Sequence[image_io.ImageSource], threshold: float | None = None,
                     batch_size: int = 32) -> list[DetectionResult]:
        """Detect in many images, ``batch_size`` per model call; a bad image raises InputError naming it."""
        results: list[DetectionResult] = []
        for start in range(0, len(images), batch_size):
            chunk = images[start:start + batch_size]
            prepared = [self.preprocess(item) for item in chunk]
            sizes = [size for _, size in prepared]
            decoded = self.decode(self.run(np.concatenate([x for x, _ in prepared])), sizes, threshold)
            results.extend(self._result(d, item, size) for d, item, size in zip(decoded, chunk, sizes))
        return results


def input_name(source) -> str | None:
    """What a result's ``input`` shows for an image source: a path by its path; bytes, an array or a PIL image
    nothing (the caller names it, as ``edgecnn serve`` does)."""
    return str(source) if isinstance(source, (str, os.PathLike)) else None


TASK_CLASSES: dict[str, type[Task]] = {
    ImageClassifier.task: ImageClassifier,
    TextClassifier.task: TextClassifier,
    ObjectDetector.task: ObjectDetector,
}


def load(model: str | os.PathLike, format: str | None = None, threads: int | None = None) -> Task:
    """Open an export folder as the task class its manifest names (ImageClassifier, TextClassifier, ...)."""
    manifest = manifest_io.read(model)
    try:
        cls = TASK_CLASSES[manifest.task]
    except KeyError:
        raise ModelError(f"{manifest.folder}: this edgecnn cannot run {manifest.task} models yet") from None
    return cls(manifest, format=format, threads=threads)


__all__ = ["Category", "Classification", "Detection", "DetectionResult", "ImageClassifier", "ObjectDetector", "Task",
           "TextClassifier", "asdict", "input_name", "load"]
