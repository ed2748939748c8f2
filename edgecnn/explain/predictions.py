"""Sections 4 and 7 (the seed's slides 6 and 11): the decision for each input, and predictions on held-out data.

The decision is the last dense layer's output (the logits, read from the ONNX graph) and the softmax of it. The
held-out split is rebuilt from the manifest as ``edgecnn eval`` does (:func:`edgecnn.evaluate.heldout`; it needs
the dataset's own packages, in the train extra); without them the export's ``samples/`` stand in, with a note that
they were chosen among examples the model gets right. Text models add the words each class counts most, read from
the weights of the wide path when the model has one; a detector's predictions are drawn on its sample scenes
against their ground truth.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .. import manifest as manifest_io
from ..errors import EdgecnnError
from ..runtime import image as image_io
from ..runtime.detection import iou_matrix
from . import figures
from .attribution import probabilities
from .graph import Graph
from .page import Section
from .subject import TRAIN_EXTRA, Subject

GRID = 24
GRID_COLUMNS = 8
TOP_WORDS = 12


# --- section 4: the decision ------------------------------------------------------------------------------------

def explain_decision(subject: Subject, graph: Graph | None, tensors: dict | None, out: Path) -> Section:
    section = Section("decision", "The decision: dense layer and softmax",
                      "Slide 6: the dense layer turns the features into one score per class (the logits); softmax "
                      "turns the scores into probabilities that add up to 1.")
    if subject.kind == "object-detection":
        section.absent("A detector makes no single decision per image: it scores every grid cell for every class "
                       "(section 5 shows those maps and the boxes they become).")
        return section
    labels = subject.labels
    probs = probabilities(subject, subject.batch)
    logits_name = graph.softmax_input() if graph is not None else None
    logits = tensors[logits_name] if logits_name else None
    parts = _logit_parts(graph, tensors, logits_name)
    for i, item in enumerate(subject.items):
        entry = {"input": item.name, "probabilities": {labels[c]: round(float(p), 6) for c, p in enumerate(probs[i])}}
        if logits is not None:
            entry["logits"] = {labels[c]: round(float(v), 4) for c, v in enumerate(logits[i])}
        for name, values in parts:
            entry[name] = {labels[c]: round(float(v), 4) for c, v in enumerate(values[i])}
        section.data.setdefault("inputs", []).append(entry)
    if logits is None:
        section.absent(f"The logits are read from the ONNX graph with the onnx package: {TRAIN_EXTRA}.")
    if not figures.available():
        section.absent(f"The bar charts need matplotlib: {TRAIN_EXTRA}.")
        section.table(["input"] + labels, [[item.title] + [f"{p:.1%}" for p in probs[i]]
                                           for i, item in enumerate(subject.items)])
        return section
    caption = "Left: the logits, one score per class"
    if parts:
        caption += f" (the sum of {' and '.join(name for name, _ in parts)})"
    section.figure(_decision_figure(subject.items, labels, logits, parts, probs, out),
                   caption + "; right: softmax of them, the probabilities the model reports.")
    return section


def _logit_parts(graph: Graph | None, tensors: dict | None, logits_name: str | None) -> list[tuple[str, np.ndarray]]:
    """When the logits are a sum of two paths (the wide text model's CNN + word scores), both parts, by layer."""
    if graph is None or logits_name is None:
        return []
    node = graph.producer.get(logits_name)
    if node is None or node.op_type != "Add" or any(name in graph.weights for name in node.input):
        return []
    return [(graph.row_of(graph.producer[name]), tensors[name]) for name in node.input if name in graph.producer]


def _decision_figure(items, labels, logits, parts, probs, out: Path) -> str:
    plt = figures.pyplot()
    columns = 2 if logits is not None else 1
    fig, axes = plt.subplots(len(items), columns, figsize=(4.2 * columns + 0.4, (0.3 * len(labels) + 1.0) * len(items)),
                             squeeze=False)
    positions = np.arange(len(labels))
    for i, item in enumerate(items):
        if logits is not None:
            ax = axes[i, 0]
            if parts:
                height = 0.8 / len(parts)
                for k, (name, values) in enumerate(parts):
                    ax.barh(positions - 0.4 + height * (k + 0.5), values[i], height=height, label=name)
                ax.scatter(logits[i], positions, color="black", s=12, zorder=3, label="logit (sum)")
                ax.legend(fontsize=7, loc="best")
            else:
                ax.barh(positions, logits[i], color="#4c72b0")
            ax.axvline(0, color="black", lw=0.5)
            _label_axis(ax, labels, f"logits - {item.title}")
        ax = axes[i, columns - 1]
        top = int(np.argmax(probs[i]))
        ax.barh(positions, probs[i], color=["#c44e52" if c == top else "#8c8c8c" for c in positions])
        ax.set_xlim(0, 1.12)
        ax.text(probs[i][top], top, f" {probs[i][top]:.1%}", va="center", fontsize=8)
        _label_axis(ax, labels, f"softmax - {item.title}")
    fig.tight_layout()
    return figures.save(fig, out, "decision.png")


def _label_axis(ax, labels, title: str) -> None:
    ax.set_yticks(np.arange(len(labels)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.tick_params(axis="x", labelsize=7)
    ax.set_title(title, fontsize=9)
    ax.spines[["top", "right"]].set_visible(False)


# --- section 7: predictions -------------------------------------------------------------------------------------

def explain_predictions(subject: Subject, graph: Graph | None, out: Path) -> Section:
    section = Section("predictions", "Predictions on held-out data",
                      "Slide 11: a model is judged on examples it never trained on; its mistakes say more than "
                      "its accuracy.")
    if subject.kind == "object-detection":
        _detector_samples(section, subject, out)
        return section
    inputs, targets, source = _heldout(section, subject)
    if inputs is None:
        return section
    probs = probabilities(subject, inputs)
    predicted = probs.argmax(axis=1)
    targets = np.asarray(targets, dtype=np.int64)
    labels = subject.labels
    accuracy = float(np.mean(predicted == targets))
    matrix = np.zeros((len(labels), len(labels)), np.int64)
    np.add.at(matrix, (targets, predicted), 1)
    section.data = {"source": source, "n": len(targets), "accuracy": round(accuracy, 4),
                    "mistakes": int(np.sum(predicted != targets)), "confusion": matrix.tolist()}
    section.text(f"{source}: {accuracy:.2%} right ({int(np.sum(predicted != targets))} mistakes in "
                 f"{len(targets)}).")
    if subject.kind == "text-classification":
        _text_mistakes(section, subject, inputs, targets, predicted, probs)
        _top_words(section, subject, graph)
    elif figures.available():
        section.figure(_image_grid(subject, inputs, targets, predicted, probs, out),
                       "Every mistake first (framed in red, with the true label), then the first correct "
                       "answers; the probability of the predicted class under each.")
    if not figures.available():
        section.absent(f"The grid and the confusion matrix need matplotlib: {TRAIN_EXTRA}.")
        return section
    if source.startswith("held-out"):
        try:
            from ..train.fit import save_confusion

            save_confusion(targets, predicted, labels, out / "confusion.png",
                           f"{subject.manifest.get('name', 'model')}: {accuracy:.2%} on {len(targets)}")
            section.figure("confusion.png", "Confusion matrix: rows are the true classes, columns the predicted "
                                            "ones; everything off the diagonal is a mistake.")
        except EdgecnnError as exc:
            section.absent(f"The confusion matrix is drawn by scikit-learn: {exc}")
    return section


def _heldout(section: Section, subject: Subject):
    """(model inputs, targets, a description) of the held-out split, else of the export's samples."""
    from ..evaluate import heldout

    try:
        inputs, targets = heldout(subject.manifest)
        dataset = subject.manifest.get("dataset") or {}
        return inputs, targets, f"held-out {dataset.get('split', 'test')} split of {dataset.get('name')}"
    except EdgecnnError as exc:
        reason = str(exc)
    except ImportError as exc:
        reason = f"{exc}; {TRAIN_EXTRA}"
    samples = subject.manifest.folder / (subject.manifest.get("samples") or {}).get("folder", "samples")
    suffix = ".txt" if subject.kind == "text-classification" else None
    files = sorted(p for p in samples.iterdir() if p.is_file() and (p.suffix == suffix if suffix else
                                                                    p.suffix.lower() in image_io.IMAGE_SUFFIXES)) \
        if samples.is_dir() else []
    labels = subject.labels
    known = [(p, p.stem.rsplit("-", 1)[0]) for p in files if p.stem.rsplit("-", 1)[0] in labels]
    if not known:
        section.absent(f"No held-out data: rebuilding the split failed ({reason}) and {samples} holds no samples "
                       "named <label>-<k>.")
        return None, None, ""
    section.absent(f"The held-out split could not be rebuilt here ({reason}); the export's samples stand in, and "
                   "export picked them among examples the model gets right, so no mistake can show.")
    if subject.kind == "text-classification":
        inputs = subject.task.preprocess([p.read_text(encoding="utf-8") for p, _ in known])
    else:
        prep = subject.preprocessing
        inputs = image_io.pixels_to_input(np.stack([image_io.load_pixels(str(p), prep)[0] for p, _ in known]), prep)
    return inputs, [labels.index(label) for _, label in known], f"the {len(known)} samples in {samples}"


def _image_grid(subject: Subject, inputs, targets, predicted, probs, out: Path) -> str:
    plt = figures.pyplot()
    wrong = np.flatnonzero(predicted != targets)
    right = np.flatnonzero(predicted == targets)
    shown = list(wrong[:GRID // 2]) + list(right[:GRID - min(len(wrong), GRID // 2)])
    rows = int(np.ceil(len(shown) / GRID_COLUMNS))
    fig, axes = plt.subplots(rows, GRID_COLUMNS, figsize=(1.25 * GRID_COLUMNS, 1.45 * rows), squeeze=False)
    prep = subject.preprocessing
    labels = subject.labels
    for ax, index in zip(axes.flat, shown):
        pixels = np.clip(np.rint((inputs[index] - prep.get("offset", 0.0)) / prep.get("scale", 1 / 255)), 0, 255)
        mistake = predicted[index] != targets[index]
        title = f"{labels[predicted[index]]} {probs[index, predicted[index]]:.0%}" + (
            f" (true {labels[targets[index]]})" if mistake else "")
        figures.show_pixels(ax, pixels.astype(np.uint8))
        ax.set_xlabel(title, fontsize=8, color="#c00000" if mistake else "black", labelpad=2)
        figures.frame(ax, "#e00000" if mistake else "#cccccc", 3.0 if mistake else 0.8)
    for ax in list(axes.flat)[len(shown):]:
        ax.axis("off")
    fig.tight_layout(pad=0.4)
    return figures.save(fig, out, "predictions.png")


def _text_mistakes(section: Section, subject: Subject, inputs, targets, predicted, probs) -> None:
    vocabulary = subject.task.tokenizer.vocabulary
    labels = subject.labels
    rows = []
    for index in np.flatnonzero(predicted != targets)[:12]:
        ids = inputs[index][inputs[index] > 0][:24]
        words = " ".join(vocabulary[i] for i in ids)
        rows.append([labels[targets[index]], labels[predicted[index]], f"{probs[index, predicted[index]]:.0%}",
                     words + " …"])
    if rows:
        section.table(["true", "predicted", "probability", "the text as the model reads it (first 24 words)"],
                      rows, caption="The mistakes")


def wide_word_scores(graph: Graph, vocabulary_size: int, classes: int) -> np.ndarray | None:
    """Per word and class, the wide path's score for the word relative to the other classes (softmax ignores a shift
    common to all classes); None without a wide path. With ``wide=tfidf`` these are the coefficients of a logistic
    regression on TF-IDF features, the usual way to read which words a class counts. The score table is the only
    vocabulary x classes weight of the graph."""
    tables = [w for w in graph.weights.values() if w.dtype.kind == "f" and w.shape == (vocabulary_size, classes)]
    if len(tables) != 1:
        return None
    return tables[0] - tables[0].mean(axis=1, keepdims=True)


def _top_words(section: Section, subject: Subject, graph: Graph | None) -> None:
    if graph is None:
        section.absent(f"The words each class counts are read from the ONNX weights with the onnx package: "
                       f"{TRAIN_EXTRA}.")
        return
    vocabulary = subject.task.tokenizer.vocabulary
    labels = subject.labels
    scores = wide_word_scores(graph, len(vocabulary), len(labels))
    if scores is None:
        section.absent("This model has no wide (bag-of-words) path whose weights rank words per class; section 5 "
                       "shows the words your text's answer depends on.")
        return
    scores[:2] = -np.inf  # padding and [UNK]
    top = {labels[c]: [vocabulary[w] for w in np.argsort(-scores[:, c], kind="stable")[:TOP_WORDS]]
           for c in range(len(labels))}
    section.data["top_words"] = top
    section.table(["rank"] + labels, [[r + 1] + [top[label][r] for label in labels] for r in range(TOP_WORDS)],
                  caption="The words the wide (bag-of-words) path counts most for each class: its per-word "
                          "score relative to the other classes, read from the ONNX weights")


# --- detector ---------------------------------------------------------------------------------------------------

def _detector_samples(section: Section, subject: Subject, out: Path) -> None:
    manifest = subject.manifest
    samples = manifest.get("samples") or {}
    truth_file = samples.get("ground_truth")
    if not truth_file:
        section.absent("This export ships no ground truth for its sample scenes (samples.ground_truth).")
        return
    truth_path = manifest_io.resolve_inside(manifest.folder, truth_file)
    truth = json.loads(truth_path.read_text())
    names = {c["id"]: c["name"] for c in truth["categories"]}
    labels = subject.labels
    scenes = []
    for image in truth["images"]:
        path = truth_path.parent / image["file_name"]
        objects = [a for a in truth["annotations"] if a["image_id"] == image["id"]]
        true_boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in objects)], np.float32)
        true_labels = [names[a["category_id"]] for a in objects]
        result = subject.task.detect(str(path))
        boxes = np.array([d.box for d in result.detections], np.float32).reshape(-1, 4)
        found = _matches(boxes, [d.label for d in result.detections], true_boxes.reshape(-1, 4), true_labels)
        scenes.append({"path": path, "result": result, "truth": (true_boxes, true_labels), "found": found})
    total = sum(len(s["truth"][1]) for s in scenes)
    hits = sum(len(s["found"]) for s in scenes)
    extra = sum(len(s["result"].detections) - len(s["found"]) for s in scenes)
    section.data = {"source": f"the {len(scenes)} sample scenes (the first test-split scenes)", "objects": total,
                    "found": hits, "extra_detections": extra,
                    "validation": {k: v for k, v in (manifest.get("validation") or {}).get("results", {})
                                   .get("onnx", {}).items() if k.startswith("map")}}
    maps = section.data["validation"]
    section.text(f"The export's {len(scenes)} sample scenes (the first scenes of the test split) with their ground "
                 f"truth: {hits} of {total} digits found with the right label (IoU ≥ 0.5), {extra} extra "
                 "detection(s)." + (f" On the whole test split, export measured mAP@0.5 {maps['map50']:.3f}."
                                    if "map50" in maps else ""))
    section.absent("A confusion matrix needs one label per image; a detector's mistakes are boxes: missed digits "
                   "(dashed red) and extra or wrong boxes (solid red) in the grid.")
    if figures.available():
        section.figure(_detector_grid(scenes, labels, out),
                       "Green: a detection that matches a true digit. Red solid: a detection that matches none. "
                       "Red dashed: a true digit nothing found. Scenes with a mistake are framed in red.")


def _matches(boxes, labels, true_boxes, true_labels) -> list[tuple[int, int]]:
    """(truth index, detection index) pairs: each true object matched to the best unused detection of its label
    overlapping it by IoU >= 0.5."""
    unused = np.ones(len(boxes), bool)
    pairs = []
    labels = np.asarray(labels)
    for t, (box, label) in enumerate(zip(true_boxes, true_labels)):
        if not len(boxes):
            break
        ious = iou_matrix(box[None], boxes)[0] * (labels == label) * unused
        if ious.max() >= 0.5:
            d = int(ious.argmax())
            unused[d] = False
            pairs.append((t, d))
    return pairs


def _detector_grid(scenes, labels, out: Path) -> str:
    plt = figures.pyplot()
    columns = 5
    rows = int(np.ceil(len(scenes) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(2.4 * columns, 2.8 * rows), squeeze=False)
    for ax, scene in zip(axes.flat, scenes):
        pixels = np.asarray(image_io.to_mode(image_io.open_image(str(scene["path"])), "RGB"))
        figures.show_pixels(ax, pixels)
        matched_truth = {t for t, _ in scene["found"]}
        matched_detections = {d for _, d in scene["found"]}
        for d, detection in enumerate(scene["result"].detections):
            colour = "#00d000" if d in matched_detections else "#ff2020"
            x0, y0, x1, y1 = detection.box
            ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color=colour, lw=1.3))
            ax.text(x0, y0 - 1, detection.label, color=colour, fontsize=7, va="bottom", fontweight="bold")
        true_boxes, true_labels = scene["truth"]
        for t, box in enumerate(true_boxes):
            if t not in matched_truth:
                x0, y0, x1, y1 = box
                ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color="#ff2020", lw=1.3, ls="--"))
        missed = len(true_labels) - len(matched_truth)
        extra = len(scene["result"].detections) - len(matched_detections)
        mistake = missed or extra
        ax.set_xlabel(f"{len(matched_truth)}/{len(true_labels)} found" + (f", {extra} extra" if extra else ""),
                      fontsize=8, color="#c00000" if mistake else "black", labelpad=2)
        ax.set_title(scene["path"].name, fontsize=7)
        figures.frame(ax, "#e00000" if mistake else "#cccccc", 3.0 if mistake else 0.8)
    for ax in list(axes.flat)[len(scenes):]:
        ax.axis("off")
    fig.tight_layout(pad=0.4)
    return figures.save(fig, out, "predictions.png")
