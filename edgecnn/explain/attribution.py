"""Section 5: where the model looks.

* Grad-CAM (Selvaraju et al. 2017) needs the gradients of the class score with respect to the last convolution's
  maps: the Keras model, so only when the ``.keras`` is here. TensorFlow is imported in :func:`grad_cam` and
  nowhere else in this module.
* Occlusion sensitivity (Zeiler & Fergus 2014) needs nothing but the exported file: paint one patch of the image
  with the background, run the model, and see how much the class probability drops; done for every patch, the
  drops are a map of what the answer depends on. It is model-agnostic and runs with onnxruntime alone, so it is
  shown always, labelled as what it is - not Grad-CAM. For text, the same with words: each word of the text in
  turn made unknown (``[UNK]``).
* A detector needs neither: its ``scores`` output *is* a map per class, drawn over the image with the final boxes.
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np

from ..runtime import image as image_io
from ..runtime.text import OOV_ID
from . import figures
from .page import Section
from .subject import TRAIN_EXTRA, Subject

#: Model calls per onnxruntime batch while occluding.
BATCH = 64


def explain_attention(subject: Subject, out: Path, extra_classes: list[int]) -> Section:
    section = Section("where-it-looks", "Where the model looks",
                      "Before trusting a model on a device, check that it answers from the object and not from "
                      "the background: these maps show which parts of the input the answer depends on.")
    if subject.kind == "object-detection":
        _detector_maps(section, subject, out)
    elif subject.kind == "text-classification":
        _token_highlights(section, subject, extra_classes)
    else:
        _image_maps(section, subject, out, extra_classes)
    return section


# --- image classifiers ------------------------------------------------------------------------------------------

def probabilities(subject: Subject, batch: np.ndarray) -> np.ndarray:
    """Class probabilities of a batch with the exported file, BATCH inputs per call."""
    return np.concatenate([subject.task.predict(batch[i:i + BATCH]) for i in range(0, len(batch), BATCH)])


def occlusion(subject: Subject, x: np.ndarray, class_index: int) -> tuple[np.ndarray, int]:
    """(H x W drop of ``class_index``'s log-probability when the pixel is covered, averaged over the patches that
    cover it; the patch size). Patches are about 1/6 of the image, moved by a third of a patch.

    Log-probabilities, because a confident model's probability sits at 1.00 whatever one patch does: its log still
    moves, and tells the patches apart.
    """
    height, width = x.shape[1:3]
    patch = max(2, round(min(height, width) / 6))
    step = max(1, patch // 3)
    prep = subject.preprocessing
    fill = np.float32(prep.get("background", 0) * prep.get("scale", 1 / 255) + prep.get("offset", 0.0))
    corners = [(top, left) for top in range(0, max(height - patch, 0) + 1, step)
               for left in range(0, max(width - patch, 0) + 1, step)]
    variants = np.repeat(x, len(corners), axis=0)
    for k, (top, left) in enumerate(corners):
        variants[k, top:top + patch, left:left + patch, :] = fill
    base = _log(probabilities(subject, x)[0, class_index])
    drops = base - _log(probabilities(subject, variants)[:, class_index])
    total = np.zeros((height, width), np.float32)
    count = np.zeros((height, width), np.float32)
    for drop, (top, left) in zip(drops, corners):
        total[top:top + patch, left:left + patch] += drop
        count[top:top + patch, left:left + patch] += 1
    return total / np.maximum(count, 1), patch


def _log(p):
    return np.log(np.maximum(p, 1e-12))


def grad_cam(model, x: np.ndarray, class_index: int) -> np.ndarray:
    """Grad-CAM of ``class_index`` at the last layer with a 4-D output, as an H x W map in 0..1 (input size).

    The class score is the logit when the last layer is a softmax Dense (gradients of a saturated probability
    vanish), else the model's output.
    """
    from ..keras_io import import_tensorflow

    tf = import_tensorflow()
    import keras

    conv = _last_map_layer(model, keras)
    head = model.layers[-1]
    logits = isinstance(head, keras.layers.Dense) and getattr(head.activation, "__name__", "") == "softmax"
    probe = keras.Model(model.inputs, [conv.output, head.input if logits else model.output])
    with tf.GradientTape() as tape:
        maps, last = probe(tf.convert_to_tensor(x), training=False)
        score = (tf.matmul(last, head.kernel) + head.bias)[:, class_index] if logits else last[:, class_index]
    gradients = tape.gradient(score, maps)
    weights = tf.reduce_mean(gradients, axis=(1, 2))
    cam = tf.nn.relu(tf.reduce_sum(maps * weights[:, None, None, :], axis=-1))[0].numpy()
    cam = image_io.resize_array(cam.astype(np.float32), x.shape[2], x.shape[1]) if cam.shape != x.shape[1:3] \
        else cam
    return cam / cam.max() if cam.max() > 0 else cam


def _last_map_layer(model, keras):
    """The last layer whose output is a stack of 2-D maps (N x H x W x C): where Grad-CAM looks."""
    for layer in reversed(model.layers):
        if isinstance(layer, keras.layers.InputLayer):
            continue
        try:
            if len(layer.output.shape) == 4:
                return layer
        except (AttributeError, ValueError):
            continue
    return model.layers[0]


def _image_maps(section: Section, subject: Subject, out: Path, extra_classes: list[int]) -> None:
    labels = subject.labels
    model = subject.keras_model()
    if model is None:
        section.absent(f"Grad-CAM needs the model's gradients, which the exported files do not carry: "
                       f"{subject.keras_note}. The occlusion maps below need only onnxruntime.")
    rows = []
    for item in subject.items:
        probs = probabilities(subject, item.x)[0]
        top = int(np.argmax(probs))
        classes = [top] + [c for c in extra_classes if c != top]
        panels = []
        record = {"input": item.name, "maps": []}
        for c in classes:
            if model is not None:
                cam = grad_cam(model, item.x, c)
                panels.append((f"Grad-CAM '{labels[c]}'", cam))
                record["maps"].append({"class": labels[c], "method": "grad-cam",
                                       "peak": [int(v) for v in np.unravel_index(cam.argmax(), cam.shape)]})
            drop, patch = occlusion(subject, item.x, c)
            peak = float(drop.max())
            panels.append((f"occlusion '{labels[c]}'",
                           np.clip(drop / peak, 0, 1) if peak > 0 else np.zeros_like(drop)))
            record["maps"].append({"class": labels[c], "method": "occlusion", "patch": patch,
                                   "largest_log_probability_drop": round(peak, 4), "probability": round(float(probs[c]), 4),
                                   "peak": [int(v) for v in np.unravel_index(drop.argmax(), drop.shape)]})
        rows.append((item, probs, top, panels))
        section.data.setdefault("inputs", []).append(record)
    if not figures.available():
        section.absent(f"The heat maps need matplotlib: {TRAIN_EXTRA}.")
        return
    section.figure(_image_maps_figure(rows, labels, out),
                   "Red is where the answer depends on the image. Occlusion: each patch in turn painted with the "
                   "background colour; red where the class's log-probability dropped most (scaled to the largest "
                   "drop, which explain.json gives)." + (" Grad-CAM: the last convolution's maps weighted by the gradient of the class "
                               "score." if model is not None else ""))


def _image_maps_figure(rows, labels, out: Path) -> str:
    plt = figures.pyplot()
    columns = 1 + max(len(panels) for *_, panels in rows)
    fig, axes = plt.subplots(len(rows), columns, figsize=(2.3 * columns, 2.8 * len(rows)), squeeze=False)
    for r, (item, probs, top, panels) in enumerate(rows):
        figures.show_pixels(axes[r, 0], item.raw, f"{item.title}\n'{labels[top]}' {probs[top]:.1%}")
        for c in range(1, columns):
            if c - 1 < len(panels):
                title, heat = panels[c - 1]
                figures.overlay(axes[r, c], item.raw, heat, title)
            else:
                axes[r, c].axis("off")
    fig.tight_layout()
    return figures.save(fig, out, "where-it-looks.png")


# --- detector ---------------------------------------------------------------------------------------------------

def _detector_maps(section: Section, subject: Subject, out: Path) -> None:
    task = subject.task
    labels = subject.labels
    names = [o["name"] for o in subject.manifest["outputs"]]
    for index, item in enumerate(subject.items):
        outputs = task.run(item.x)
        scores = outputs[names.index("scores")][0]  # H x W x C
        boxes, box_scores, classes = task.decode(outputs)[0]  # model-input pixels
        found = [{"label": labels[int(c)], "score": round(float(s), 4), "box": [round(float(v), 1) for v in b]}
                 for b, s, c in zip(boxes, box_scores, classes)]
        section.data.setdefault("inputs", []).append(
            {"input": item.name, "detections": found,
             "peak_score_per_class": {labels[c]: round(float(scores[..., c].max()), 4) for c in range(len(labels))}})
        if figures.available():
            section.figure(_detector_figure(item, scores, found, labels, out, f"score-maps-{index + 1}.png"),
                           f"{item.title}: the final boxes (score ≥ {task.threshold:g}, after NMS), the highest "
                           "class score of every grid cell, and the score map of each class over the image "
                           "(0 transparent .. 1 red): the cells that say 'a digit of this class is centred here'.")
    if not figures.available():
        section.absent(f"The score maps need matplotlib: {TRAIN_EXTRA}.")
    section.text("A detector's output is already a map: no gradients are needed to see where it looks.")


def _detector_figure(item, scores, found, labels, out: Path, name: str) -> str:
    plt = figures.pyplot()
    columns = 6
    panels = 2 + len(labels)
    rows = int(np.ceil(panels / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(2.0 * columns, 2.15 * rows), squeeze=False)
    flat = list(axes.flat)
    figures.show_pixels(flat[0], item.raw, f"{len(found)} detection{'s' if len(found) != 1 else ''}")
    for d in found:
        x0, y0, x1, y1 = d["box"]
        flat[0].add_patch(plt.Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, color="#00e000", lw=1.5))
        flat[0].text(x0, y0 - 1, f"{d['label']} {d['score']:.2f}", color="#00e000", fontsize=7, va="bottom",
                     bbox={"facecolor": "black", "alpha": 0.5, "pad": 0.5, "lw": 0})
    figures.overlay(flat[1], _dim(item.raw), scores.max(axis=-1), "best class per cell", alpha=0.6)
    for c, label in enumerate(labels):
        figures.overlay(flat[2 + c], _dim(item.raw), scores[..., c], f"'{label}' (peak {scores[..., c].max():.2f})",
                        alpha=0.6)
    for ax in flat[panels:]:
        ax.axis("off")
    fig.tight_layout()
    return figures.save(fig, out, name)


def _dim(pixels: np.ndarray) -> np.ndarray:
    """The image in grey at half brightness, so the heat over it reads."""
    grey = pixels.mean(axis=-1, keepdims=True) if pixels.shape[-1] == 3 else pixels
    return np.repeat((grey * 0.5).astype(np.uint8), 3, axis=-1)


# --- text -------------------------------------------------------------------------------------------------------

def word_occlusion(subject: Subject, x: np.ndarray, class_index: int) -> dict[int, float]:
    """Token id -> drop of ``class_index``'s probability when every occurrence of that word becomes [UNK]."""
    ids = x[0]
    words = [int(w) for w in dict.fromkeys(ids[ids > OOV_ID].tolist())]
    if not words:
        return {}
    variants = np.repeat(x, len(words), axis=0)
    for k, word in enumerate(words):
        variants[k][ids == word] = OOV_ID
    base = float(probabilities(subject, x)[0, class_index])
    drops = base - probabilities(subject, variants)[:, class_index]
    return dict(zip(words, (float(d) for d in drops)))


def _token_highlights(section: Section, subject: Subject, extra_classes: list[int]) -> None:
    labels = subject.labels
    tokenizer = subject.task.tokenizer
    section.text("Each word of the text in turn replaced by the unknown-word token ([UNK]) - occlusion, with "
                 "onnxruntime alone: red words raised the class's probability (it drops without them), blue "
                 "words lowered it. Gradients would need the Keras model and say less about a model whose "
                 "wide path counts words.")
    for item in subject.items:
        probs = probabilities(subject, item.x)[0]
        top = int(np.argmax(probs))
        tokens = tokenizer.tokens(item.raw)
        ids = item.x[0][:len(tokens)]
        record = {"input": item.name, "classes": []}
        for c in [top] + [c for c in extra_classes if c != top]:
            drops = word_occlusion(subject, item.x, c)
            scale = max((abs(v) for v in drops.values()), default=0.0) or 1.0
            spans = []
            for token, word in zip(tokens, ids):
                value = drops.get(int(word), 0.0) / scale
                colour = f"rgba(214,39,40,{value:.2f})" if value > 0 else f"rgba(31,119,180,{-value:.2f})"
                spans.append(f'<span style="background:{colour}" title="{drops.get(int(word), 0.0):+.4f}">'
                             f"{html.escape(token)}</span>")
            ranked = sorted(drops.items(), key=lambda kv: -kv[1])
            top_words = [[tokenizer.vocabulary[w], round(d, 4)] for w, d in ranked[:10] if d > 0]
            record["classes"].append({"class": labels[c], "probability": round(float(probs[c]), 4),
                                      "words": {tokenizer.vocabulary[w]: round(d, 5) for w, d in ranked}})
            section.raw(f"<h3>{html.escape(item.title)}: '{html.escape(labels[c])}' ({probs[c]:.1%})</h3>"
                        f'<p class="tokens">{" ".join(spans)}</p>')
            section.table(["word", "probability drop without it"], top_words,
                          caption=f"The words '{labels[c]}' depends on most in this text")
        section.data.setdefault("inputs", []).append(record)
