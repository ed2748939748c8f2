"""The fp32 ONNX file as something to look inside: layers, weights and every intermediate tensor.

Why ONNX and not Keras: the ``.keras`` a committed export was made from lives under ``runs/``, which a fresh clone
does not have, while the fp32 ONNX file is always there and is exactly what runs on the device. ``onnx`` (train
extra) reads the graph and its weights; onnxruntime then runs a copy of it whose graph outputs are *every* node
output, so one call gives the feature maps, the activations before and after, the logits and every shape.

Layers: tf2onnx names each node after the TensorFlow name scope it came from, ``model_1/conv2d_1/Relu``, where
the second part is the Keras layer (with a ``_1`` TensorFlow added). :func:`layer_name` recovers it, so the tables
speak of ``conv2d`` and ``block3_pw``, not of ``Conv__256``.
"""

from __future__ import annotations

import re
from collections import defaultdict
from functools import cached_property
from pathlib import Path

import numpy as np

from ..errors import require

#: Ops that do arithmetic worth counting as multiply-accumulates (everything else is elementwise or plumbing).
MAC_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")
#: Ops after which a convolution's output counts as "activated".
ACTIVATIONS = ("Relu", "Clip", "LeakyRelu", "Sigmoid", "Tanh", "Elu", "Selu", "HardSigmoid", "HardSwish", "Softplus")
POOLS = ("MaxPool", "AveragePool")
#: Ops that end a walk looking for where a convolution's output goes (the next stage of the network starts there).
STAGE_OPS = MAC_OPS + POOLS + ("GlobalMaxPool", "GlobalAveragePool", "Gather")
PLUMBING = "graph plumbing (shapes, layout)"


def layer_name(name: str) -> str | None:
    """The Keras layer a tf2onnx node or tensor name belongs to (``seed_cnn_1/conv2d_1_2/Relu`` -> ``conv2d_1``);
    None for names without a layer scope (``Conv__256``, ``Transpose__40``)."""
    name = name.removeprefix("fused ")
    parts = name.split("/")
    if len(parts) < 3:
        return None
    return re.sub(r"_\d+$", "", parts[1]) or None


def _suffix(name: str, base: str) -> str:
    """``block1_dw_bn`` beside ``block1_dw`` reads ``bn``; unrelated names stay whole."""
    for stem in (base, base.rsplit("_", 1)[0]):
        if name.startswith(stem + "_"):
            return name[len(stem) + 1:]
    return name


class Graph:
    """An ONNX model opened for explanation: nodes grouped by layer, weights as arrays, all tensors on demand."""

    def __init__(self, path: str | Path, input_name: str):
        onnx = require("onnx", "train", "Looking inside the ONNX graph (layers, weights, feature maps)")
        from onnx import numpy_helper

        self.path = Path(path)
        self.input_name = input_name
        self.proto = onnx.load(str(self.path))
        graph = self.proto.graph
        self.nodes = list(graph.node)
        self.weights = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
        for node in self.nodes:  # Constant nodes are weights too
            if node.op_type == "Constant" and node.attribute and node.attribute[0].t.ByteSize():
                self.weights[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
        self.outputs = [o.name for o in graph.output]
        self.producer = {out: node for node in self.nodes for out in node.output}
        self.consumers: dict[str, list] = defaultdict(list)
        for node in self.nodes:
            for name in node.input:
                self.consumers[name].append(node)

    # --- layers ----------------------------------------------------------------------------------------------
    @cached_property
    def layer_of(self) -> dict[str, str]:
        """Node name -> layer: its own scope, else its weights' scope, else the layer of what consumes it."""
        found: dict[str, str] = {}

        def resolve(node, seen=()) -> str:
            if node.name in found:
                return found[node.name]
            scope = layer_name(node.name) or next(
                (layer_name(i) for i in node.input if i in self.weights and layer_name(i)), None)
            if scope is None and node.name not in seen:
                for out in node.output:
                    for consumer in self.consumers.get(out, []):
                        scope = resolve(consumer, (*seen, node.name))
                        if scope != PLUMBING:
                            break
                    if scope and scope != PLUMBING:
                        break
            found[node.name] = scope or PLUMBING
            return found[node.name]

        for node in self.nodes:
            resolve(node)
        return found

    @cached_property
    def layers(self) -> dict[str, list]:
        """Row -> its nodes, rows in the order they first appear (ONNX nodes are topologically sorted).

        A convolution, the batch norm and the activation that follow it are three Keras layers but one kernel to
        onnxruntime (it fuses them and times them as one), so they make one row, named ``conv + bn + relu``.
        """
        grouped: dict[str, list] = {}
        for node in self.nodes:
            grouped.setdefault(self.row_of(node), []).append(node)
        return grouped

    def row_of(self, node) -> str:
        return self.row_for_layer(self.layer_of[node.name])

    def row_for_layer(self, layer: str) -> str:
        return self._row_names.get(layer, layer)

    @cached_property
    def by_name(self) -> dict:
        return {node.name: node for node in self.nodes}

    @cached_property
    def _row_names(self) -> dict[str, str]:
        """Layer -> the row it is shown in (itself, or the convolution block it was fused into)."""
        rows: dict[str, str] = {}
        for conv in self.convolutions():
            chain, current = [], conv
            activation = self.activation_after(conv)
            while activation is not None and current is not activation:
                current = self.consumers[current.output[0]][0]
                chain.append(current)
            layer = self.layer_of[conv.name]
            merged = [layer] + list(dict.fromkeys(self.layer_of[n.name] for n in chain
                                                  if self.layer_of[n.name] != layer))
            name = merged[0] + "".join(" + " + _suffix(m, layer) for m in merged[1:])
            for member in merged:
                rows[member] = name
        return rows

    def parameters(self, nodes) -> int:
        """Weights the nodes read (each initializer counted once, by the first layer that reads it)."""
        return sum(int(self.weights[name].size) for name in self._first_reader_weights(nodes))

    def _first_reader_weights(self, nodes) -> list[str]:
        names = {n.name for n in nodes}
        owned = []
        for weight, first in self._weight_owner.items():
            if first in names and self.weights[weight].dtype.kind == "f" and self.weights[weight].size > 1:
                owned.append(weight)
        return owned

    @cached_property
    def _weight_owner(self) -> dict[str, str]:
        owner: dict[str, str] = {}
        for node in self.nodes:
            for name in node.input:
                if name in self.weights and name not in owner:
                    owner[name] = node.name
        return owner

    # --- tensors ---------------------------------------------------------------------------------------------
    @cached_property
    def _session(self):
        """onnxruntime on a copy of the graph whose outputs are every node output (shape-free output entries are
        enough: onnxruntime fills in type and shape itself)."""
        onnx = require("onnx", "train", "Looking inside the ONNX graph")
        import onnxruntime as ort

        proto = onnx.ModelProto()
        proto.CopyFrom(self.proto)
        present = set(self.outputs)
        extra = [o for node in self.nodes for o in node.output if o and o not in present]
        proto.graph.output.extend([onnx.ValueInfoProto(name=name) for name in extra])
        options = ort.SessionOptions()
        options.log_severity_level = 3
        return ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])

    def tensors(self, inputs: np.ndarray) -> dict[str, np.ndarray]:
        """Every tensor of the graph for ``inputs`` (a batch), by name, weights and the input included."""
        names = [o.name for o in self._session.get_outputs()]
        values = self._session.run(names, {self.input_name: inputs})
        return {**self.weights, **dict(zip(names, values)), self.input_name: inputs}

    # --- structure the explanations need ---------------------------------------------------------------------
    def convolutions(self) -> list:
        """Conv nodes in graph order."""
        return [n for n in self.nodes if n.op_type == "Conv"]

    def attribute(self, node, name: str, default=None):
        onnx = require("onnx", "train", "Looking inside the ONNX graph")
        for attr in node.attribute:
            if attr.name == name:
                return onnx.helper.get_attribute_value(attr)
        return default

    def is_depthwise(self, node) -> bool:
        return int(self.attribute(node, "group", 1)) > 1

    def activation_after(self, node):
        """The activation node a convolution's output reaches through bias adds and folded batch norms, or None."""
        current = node
        for _ in range(4):
            following = self.consumers.get(current.output[0], [])
            if len(following) != 1:
                return None
            current = following[0]
            if current.op_type in ACTIVATIONS:
                return current
            if current.op_type not in ("Add", "Mul", "BatchNormalization", "Squeeze"):
                return None
        return None

    def conv_before(self, node):
        """The convolution whose output reaches ``node`` through bias adds, folded batch norms and squeezes."""
        current = node
        for _ in range(5):
            current = self.producer.get(current.input[0])
            if current is None or current.op_type == "Conv":
                return current
            if current.op_type not in ("Add", "Mul", "BatchNormalization", "Squeeze"):
                return None
        return None

    def is_head(self, node) -> bool:
        """Whether a convolution produces the model's answer (a 1x1 head before a softmax/sigmoid or an output)
        rather than features for a later stage."""
        stack, seen = [node.output[0]], set()
        while stack:
            name = stack.pop()
            if name in self.outputs:
                return True
            for consumer in self.consumers.get(name, []):
                if consumer.name in seen:
                    continue
                seen.add(consumer.name)
                if consumer.op_type in ("Softmax",) or (consumer.op_type == "Sigmoid" and consumer is not node):
                    return True
                if consumer.op_type not in STAGE_OPS:
                    stack.extend(consumer.output)
        return False

    def feature_blocks(self) -> list[tuple[str, object, str]]:
        """(layer, conv node, tensor) of every convolution block a reader would call one: convolutions that are not
        depthwise (a depthwise output is its input's channels, filtered one by one) and not the answer-producing
        heads; the tensor is the activated output."""
        blocks = []
        for conv in self.convolutions():
            if self.is_depthwise(conv) or self.is_head(conv):
                continue
            activation = self.activation_after(conv)
            tensor = activation.output[0] if activation is not None else conv.output[0]
            blocks.append((self.layer_of[conv.name], conv, tensor))
        return blocks

    def softmax_input(self) -> str | None:
        """The logits: the input of the Softmax that makes the first output, when there is one."""
        first = self.producer.get(self.outputs[0])
        if first is not None and first.op_type == "Softmax":
            return first.input[0]
        return None
