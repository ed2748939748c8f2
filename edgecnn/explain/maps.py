"""Sections 2 and 3 (the seed's slides 3-5): the first convolution's filters, the feature maps of every
convolution block for each input, and what the activation and the pooling do to one feature map.

Everything here is read from the fp32 ONNX graph: the kernels are its weights (batch norm folded in, as the device
runs them), the maps are its intermediate tensors (:meth:`.graph.Graph.tensors`), so no Keras is needed.
For a text CNN a filter spans a few words by the embedding width, which is no picture: the section shows instead
the n-gram of the input each of the strongest filters fires on, and the activation and max-over-time pooling along
the text.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import figures
from .graph import ACTIVATIONS, POOLS, Graph
from .page import Section
from .subject import TRAIN_EXTRA, Subject

FILTER_COLUMNS = 8
#: How a padding position shows in an n-gram (a filter near the end of a short text also sees padding).
PADDING = "·"


def _needs(section: Section, graph: Graph | None) -> bool:
    if graph is None:
        section.absent(f"Filters and feature maps are read from the ONNX graph with the onnx package and drawn "
                       f"with matplotlib: {TRAIN_EXTRA}.")
        return False
    if not figures.available():
        section.absent(f"The pictures of this section need matplotlib: {TRAIN_EXTRA}.")
        return False
    return True


# --- section 2 ------------------------------------------------------------------------------------------------

def explain_feature_maps(subject: Subject, graph: Graph | None, tensors: dict | None, out: Path,
                         channels: int) -> Section:
    section = Section("feature-maps", "Filters and feature maps",
                      "Slide 3: a filter slides over its input and answers, at every position, how much the "
                      "pixels there look like it; each answer is one pixel of a feature map.")
    if not _needs(section, graph):
        return section
    blocks = graph.feature_blocks()
    if not blocks:
        section.absent("This graph has no convolution to show.")
        return section
    if subject.kind == "text-classification":
        _text_feature_maps(section, subject, graph, tensors, blocks)
        return section
    first = graph.convolutions()[0]
    kernels = tensors[first.input[1]]
    section.data["filters"] = {"layer": graph.row_of(first), "shape": list(kernels.shape),
                               "stride": list(graph.attribute(first, "strides", [1, 1]))}
    section.figure(_filters_figure(kernels, out),
                   f"The first convolution's {kernels.shape[0]} kernels ({kernels.shape[2]}×{kernels.shape[3]} "
                   f"over {kernels.shape[1]} input channel{'s' if kernels.shape[1] > 1 else ''}, "
                   f"{graph.row_of(first)}), as the exported file holds them. "
                   + ("Red is a positive weight, blue a negative one." if kernels.shape[1] != 3 else
                      "Each kernel's RGB weights are stretched to 0..255, so it shows the colour it responds to."))
    section.data["blocks"] = []
    for index, item in enumerate(subject.items):
        rows = []
        for layer, _conv, tensor in blocks:
            maps = tensors[tensor][index]
            # The channels whose answer varies most over the image: a map that is flat says nothing about where.
            contrast = maps.reshape(maps.shape[0], -1).std(axis=1)
            picked = [int(c) for c in np.argsort(-contrast, kind="stable")[:channels]]
            rows.append((layer, maps, picked))
            if index == 0:
                section.data["blocks"].append({"layer": layer, "shape": list(maps.shape)})
        section.figure(_maps_figure(item, rows, out, f"feature-maps-{index + 1}.png"),
                       f"{item.title}: {min(channels, rows[0][1].shape[0])} channels of each of the {len(rows)} "
                       "convolution blocks (after the activation; the channels whose answer varies most over the "
                       "image), each map scaled to its own range. Later blocks see coarser, more abstract "
                       "patterns.")
    return section


def _filters_figure(kernels: np.ndarray, out: Path) -> str:
    plt = figures.pyplot()
    count = kernels.shape[0]
    columns = min(FILTER_COLUMNS, count)
    rows = int(np.ceil(count / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 0.8, rows * 0.8), squeeze=False)
    limit = float(np.abs(kernels).max()) or 1.0
    for k, ax in enumerate(axes.flat):
        figures.bare(ax)
        if k >= count:
            ax.axis("off")
            continue
        kernel = kernels[k]
        if kernel.shape[0] == 3:
            rgb = np.transpose(kernel, (1, 2, 0))
            span = rgb.max() - rgb.min()
            ax.imshow((rgb - rgb.min()) / (span if span else 1.0), interpolation="nearest")
        else:
            ax.imshow(kernel.mean(axis=0), cmap=figures.SIGNED_CMAP, vmin=-limit, vmax=limit,
                      interpolation="nearest")
        ax.set_title(str(k), fontsize=7, pad=2)
    fig.tight_layout(pad=0.3)
    return figures.save(fig, out, "filters.png")


def _maps_figure(item, rows, out: Path, name: str) -> str:
    plt = figures.pyplot()
    channels = max(len(picked) for _, _, picked in rows)
    cell = 0.85
    image_width, label_width = 2.2, 1.15
    fig = plt.figure(figsize=(image_width + label_width + channels * cell, max(2.4, len(rows) * (cell + 0.2) + 0.2)))
    grid = fig.add_gridspec(len(rows), channels + 2, width_ratios=[image_width / cell, label_width / cell]
                            + [1] * channels, wspace=0.08, hspace=0.35)
    image_ax = fig.add_subplot(grid[:min(len(rows), 3), 0])
    figures.show_pixels(image_ax, item.raw, "input")
    for r, (layer, maps, picked) in enumerate(rows):
        label = fig.add_subplot(grid[r, 1])
        label.axis("off")
        label.text(0.95, 0.5, f"{layer}\n{maps.shape[1]}×{maps.shape[2]}×{maps.shape[0]}", ha="right", va="center",
                   fontsize=7, transform=label.transAxes)
        for c, channel in enumerate(picked):
            ax = fig.add_subplot(grid[r, c + 2])
            values = maps[channel]
            figures.show_map(ax, values, vmin=min(0.0, float(values.min())), vmax=float(values.max()) or 1.0)
            ax.set_title(f"#{channel}", fontsize=6, pad=1)
    return figures.save(fig, out, name)


def _text_feature_maps(section: Section, subject: Subject, graph: Graph, tensors: dict, blocks) -> None:
    tokens = _tokens(subject)
    section.text("A text filter spans a few words by the embedding width - numbers, not a picture. What it "
                 "does shows in the text instead: each filter answers at every position how much the words there "
                 "match it, and the table gives, for the strongest filters of each width, the words it fired on.")
    for index, item in enumerate(subject.items):
        rows, data = [], []
        for layer, conv, tensor in sorted(blocks, key=lambda b: tensors[b[1].input[1]].shape[-1]):
            width = int(tensors[conv.input[1]].shape[-1])
            maps = tensors[tensor][index].reshape(tensors[tensor].shape[1], -1)  # C x positions
            peaks = maps.max(axis=1)
            for channel in np.argsort(-peaks, kind="stable")[:4]:
                position = int(maps[channel].argmax())
                window = tokens[index][position:position + width]
                words = " ".join(window + [PADDING] * (width - len(window)))
                rows.append([layer, f"{width} words", int(channel), float(peaks[channel]), words])
                data.append({"layer": layer, "width": width, "filter": int(channel),
                             "activation": round(float(peaks[channel]), 4), "position": position, "words": words})
        section.table(["layer", "filter width", "filter", "strongest answer", "at the words"], rows,
                      caption=f"{item.title}: the 4 strongest filters of each convolution")
        section.data.setdefault("texts", []).append({"input": item.name, "filters": data})


def _tokens(subject: Subject) -> list[list[str]]:
    tokenizer = subject.task.tokenizer
    return [tokenizer.tokens(item.raw) for item in subject.items]


# --- section 3 ------------------------------------------------------------------------------------------------

def explain_activations(subject: Subject, graph: Graph | None, tensors: dict | None, out: Path) -> Section:
    section = Section("activations", "Activation and pooling",
                      "Slides 4-5: the activation keeps what a filter found and silences the rest (ReLU sets "
                      "negatives to 0); pooling keeps the strongest answer of each small window, so the map "
                      "shrinks but what was found stays.")
    if not _needs(section, graph):
        return section
    stage = _activation_stage(graph)
    if stage is None:
        section.absent("No convolution followed by an activation was found in this graph.")
        return section
    activation, pool = stage
    own = _activation_name(graph, activation)
    pre_all, post_all = tensors[activation.input[0]][0], tensors[activation.output[0]][0]
    if subject.kind == "text-classification":
        pre_all, post_all = pre_all.reshape(pre_all.shape[0], -1), post_all.reshape(post_all.shape[0], -1)
    channel = int(np.argmax(post_all.reshape(post_all.shape[0], -1).max(axis=1) if subject.kind ==
                            "text-classification" else pre_all.reshape(pre_all.shape[0], -1).std(axis=1)))
    pre, post = pre_all[channel], post_all[channel]
    layer = graph.row_of(activation)
    data = {"layer": layer, "channel": channel, "activation": own, "shape": list(pre.shape),
            "negative_share": round(float((pre < 0).mean()), 4)}
    pooled = None
    if pool is not None:
        pooled = tensors[pool.output[0]][0][channel]
        data["pooling"] = {"op": pool.op_type, "kernel": list(graph.attribute(pool, "kernel_shape", [])),
                           "strides": list(graph.attribute(pool, "strides", [])),
                           "shape_after": list(np.squeeze(pooled).shape) if np.ndim(pooled) else []}
    section.data = data
    section.text(f"Channel {channel} of {layer} for {subject.items[0].title}: {data['negative_share']:.0%} of its "
                 f"values are negative before the activation, and {own} sets them to "
                 f"{'0' if own != 'Sigmoid' else 'near 0'}.")
    if subject.kind == "text-classification":
        conv = graph.conv_before(activation)
        width = int(graph.attribute(conv, "kernel_shape", [1])[-1]) if conv is not None else 1
        section.figure(_text_activation_figure(pre, post, pooled, _tokens(subject)[0], width, out),
                       "Before and after ReLU along the text, and max-over-time pooling: the one number per "
                       "filter the dense layer gets is the peak, wherever in the text it was.")
    else:
        pool_title = None
        if pool is not None:
            kind = "max" if "Max" in pool.op_type else "average"
            kernel = "×".join(str(k) for k in graph.attribute(pool, "kernel_shape", []))
            pool_title = f"{kind} pool {kernel}".strip()
        section.figure(_image_activation_figure(subject.items[0].raw, pre, post, own, pool_title, pooled, out),
                       "One feature map of the first input before the activation, after it, and after pooling "
                       "(same colours for the same values in the last three).")
    if pool is None and subject.kind != "text-classification":
        strided = [graph.row_of(c) for c in graph.convolutions()
                   if max(graph.attribute(c, "strides", [1, 1])) > 1]
        section.absent("This model has no pooling layer: it halves the resolution with stride-2 convolutions "
                       f"instead ({', '.join(strided)}).")
    section.figure(_curves_figure(own, out), "The textbook activation functions"
                   + (f", and the model's own ({own})" if own not in ("ReLU", "Sigmoid", "Tanh") else "") + ".")
    return section


def _activation_stage(graph: Graph):
    """(activation node, pooling node or None): the model's first pooling and the activation feeding it; without
    pooling, the first convolution block's activation."""
    for node in graph.nodes:
        if node.op_type in POOLS + ("GlobalMaxPool", "GlobalAveragePool"):
            producer = graph.producer.get(node.input[0])
            if producer is not None and producer.op_type in ACTIVATIONS:
                return producer, node
    for _layer, conv, _tensor in graph.feature_blocks():
        activation = graph.activation_after(conv)
        if activation is not None:
            return activation, None
    return None


def _activation_name(graph: Graph, node) -> str:
    if node.op_type == "Clip":
        low = graph.weights.get(node.input[1]) if len(node.input) > 1 else None
        high = graph.weights.get(node.input[2]) if len(node.input) > 2 else None
        if low is not None and high is not None and float(low) == 0.0:
            return f"ReLU{float(high):g}"
        return "Clip"
    return {"Relu": "ReLU", "LeakyRelu": "LeakyReLU"}.get(node.op_type, node.op_type)


def _image_activation_figure(pixels, pre, post, own, pool_title, pooled, out: Path) -> str:
    plt = figures.pyplot()
    panels = [("input", None), ("before the activation", pre), ("after ReLU", np.maximum(pre, 0))]
    if own != "ReLU":
        panels.append((f"after {own} (the model's)", post))
    if pooled is not None:
        panels.append((pool_title, np.asarray(pooled)))
    fig, axes = plt.subplots(1, len(panels), figsize=(2.3 * len(panels), 2.6))
    limit = float(np.abs(pre).max()) or 1.0
    top = float(max(np.maximum(pre, 0).max(), post.max())) or 1.0
    for ax, (title, values) in zip(axes, panels):
        if values is None:
            figures.show_pixels(ax, pixels, title)
        elif title.startswith("before"):
            image = figures.show_map(ax, values, title, cmap=figures.SIGNED_CMAP, vmin=-limit, vmax=limit)
            fig.colorbar(image, ax=ax, fraction=0.046, pad=0.03).ax.tick_params(labelsize=6)
        else:
            figures.show_map(ax, values, title, vmin=0.0, vmax=top)
        if values is not None:
            ax.set_xlabel(f"{values.shape[-2]}×{values.shape[-1]}", fontsize=7)
    fig.tight_layout()
    return figures.save(fig, out, "activation-pooling.png")


def _text_activation_figure(pre, post, pooled, tokens, width: int, out: Path) -> str:
    plt = figures.pyplot()
    shown = max(min(len(pre), len(tokens) + 2), 8)
    positions = np.arange(shown)
    fig, ax = plt.subplots(figsize=(9, 3.0))
    ax.plot(positions, pre[:shown], color="#999999", lw=1, label="before ReLU")
    ax.plot(positions, post[:shown], color="#c44e52", lw=1.5, label="after ReLU")
    ax.axhline(0, color="black", lw=0.5)
    peak = int(np.argmax(post))
    if pooled is not None:
        ax.axhline(float(np.ravel(pooled)[0]), color="#4c72b0", ls="--", lw=1, label="max over time")
    if peak < shown:
        window = tokens[peak:peak + width]
        words = " ".join(window + [PADDING] * (width - len(window)))
        ax.annotate(f'"{words}"', (peak, post[peak]), textcoords="offset points", xytext=(8, -4), fontsize=8,
                    va="top")
    ax.set_xlabel("position in the text (word)")
    ax.set_ylabel("filter answer")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    return figures.save(fig, out, "activation-pooling.png")


def _curves_figure(own: str, out: Path) -> str:
    plt = figures.pyplot()
    x = np.linspace(-4, 8, 400)
    curves = {"ReLU": np.maximum(x, 0), "sigmoid": 1 / (1 + np.exp(-x)), "tanh": np.tanh(x)}
    if own.startswith("ReLU") and own != "ReLU":
        curves[own] = np.clip(x, 0, float(own[4:]))
    fig, axes = plt.subplots(1, len(curves), figsize=(2.3 * len(curves), 2.2), sharex=True)
    for ax, (name, y) in zip(axes, curves.items()):
        ax.plot(x, y, color="#c44e52" if name == own or (name == "ReLU" and own == "ReLU") else "#4c72b0")
        ax.axhline(0, color="black", lw=0.5)
        ax.axvline(0, color="black", lw=0.5)
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    return figures.save(fig, out, "activation-curves.png")
