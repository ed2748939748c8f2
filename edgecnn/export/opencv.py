"""``--target opencv``: ONNX files that OpenCV DNN (``cv2.dnn.readNetFromONNX``, 4.10+ and 5.x) runs as
onnxruntime does.

tf2onnx writes what TensorFlow computed, and two of its idioms trip OpenCV 4.x's ONNX importer, which works out
every tensor's shape once, at load time, for a batch of one:

- shapes computed in the graph (``Shape -> Slice -> Concat -> Reshape``: Keras' Flatten and the ``ops.repeat``
  behind UpSampling2D). OpenCV evaluates them for the batch it saw at load time and then reshapes a batch of 3
  into ``(3, 1, 10)`` of wrong numbers (digits) or fails in the next Tile (detector: "Tile: repeats must be a 1D
  tensor of the same length as input's dimension number").
- a MatMul of two computed tensors with a batch axis (the text model's wide path, ``Dot(axes=1)`` of TF-IDF
  weights and per-token class scores): "MatMul ... parse error".

The rewrite, on the fp32 file before int8 quantization reads it (so the int8 file inherits it), is graph-level and
leaves the trained model alone: each computed Reshape shape becomes a constant (``-1`` for the batch, the other
dimensions as onnxruntime measured them at two batch sizes), a Reshape/Tile/Transpose chain that computes nearest
upsampling becomes a depthwise ``ConvTranspose`` of ones, and ``Unsqueeze -> MatMul -> Squeeze`` over a batch
becomes ``Mul`` + ``ReduceSum``, the same sum. Export validation then proves the rewritten files still match
Keras, and :func:`verify` runs them in the OpenCV installed here against onnxruntime.

OpenCV and int8: 5.0 does not load onnxruntime's QDQ int8 files ("bufidx >= 0 in function 'argTensor'"), and
4.x runs the int8 detector with scores 0.3 away from onnxruntime's. An int8 file OpenCV cannot run correctly here
is recorded as skipped for this target (``targets.opencv.skipped``), with the reason; it stays in the export for
edgecnn's runtime.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ExportRefusedError, require

#: fp32 files must give onnxruntime's outputs within this in OpenCV (the export's own fp32 threshold)
MAX_DIFF = 1e-4
#: batch sizes the rewrite measures shapes at and verify runs (1 and N)
BATCHES = (1, 3)


def check(ctx) -> str | None:
    if not {"onnx", "onnx-int8"} & set(ctx.formats):
        return "it makes ONNX files for OpenCV, but --formats asks for none; add onnx to --formats"
    return None


def after_onnx(ctx, path: Path) -> None:
    """Rewrite the fp32 ONNX file in place (see the module docstring)."""
    changed = rewrite_for_opencv(path)
    ctx.notes["rewrites"] = changed
    ctx.say(f"OpenCV target: {sum(changed.values())} node(s) rewritten "
            f"({', '.join(f'{k} {v}' for k, v in changed.items() if v) or 'none needed'})")


def rewrite_for_opencv(path: Path) -> dict[str, int]:
    """Rewrite ``path`` in place for OpenCV (see the module docstring); returns how many nodes of each kind changed
    (all zero for a file rewritten before: the rewrite is idempotent).

    Example::

        rewrite_for_opencv(Path("exported/bbc-news/model.onnx"))  # {"batched_matmuls": 1, ...}
    """
    onnx = require("onnx", "train", "the OpenCV target")
    model = onnx.load(str(path))
    counts = {"batched_matmuls": _matmuls_to_mul_sum(model)}
    counts["constant_reshapes"] = _constant_reshapes(model)
    _drop_dead_nodes(model)  # the shape computations the constants replaced, which would hide a chain's end
    counts["upsampling_to_conv_transpose"] = _upsampling_to_conv_transpose(model)
    _drop_dead_nodes(model)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return counts


def _measured_shapes(model, names: list[str]) -> dict[int, dict[str, tuple]]:
    """{batch: {tensor: shape}} of the named intermediate tensors, run by onnxruntime at each of BATCHES."""
    import onnx
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    typed = {v.name: v for v in onnx.shape_inference.infer_shapes(model).graph.value_info}
    existing = {o.name for o in probe.graph.output}
    for name in names:
        if name not in existing:
            elem = typed[name].type.tensor_type.elem_type if name in typed else onnx.TensorProto.FLOAT
            probe.graph.output.append(onnx.helper.make_tensor_value_info(name, elem, None))
    options = ort.SessionOptions()
    options.log_severity_level = 3  # not the unused-initializer warnings of a graph mid-rewrite
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    shapes = {}
    for batch in BATCHES:
        feeds = {}
        for item in session.get_inputs():
            shape = [batch] + [d if isinstance(d, int) else 1 for d in item.shape[1:]]
            dtype = np.int32 if "int32" in item.type else np.int64 if "int64" in item.type else np.float32
            feeds[item.name] = np.ones(shape, dtype)
        values = session.run(names, feeds)
        shapes[batch] = {name: value.shape for name, value in zip(names, values)}
    return shapes


def _constant_reshapes(model) -> int:
    """Every Reshape whose target shape the graph computes, and every Squeeze/Unsqueeze of a computed tensor,
    becomes a Reshape to a constant shape, batch first as -1, when onnxruntime shows its output differing between
    batch sizes in the first dimension only (else it is left as it is)."""
    import onnx

    constants = {i.name for i in model.graph.initializer}
    computed = [n for n in model.graph.node if n.input and n.input[0] not in constants and (
        n.op_type in ("Squeeze", "Unsqueeze") or (n.op_type == "Reshape" and n.input[1] not in constants))]
    if not computed:
        return 0
    shapes = _measured_shapes(model, [n.output[0] for n in computed])
    changed = 0
    for node in computed:
        one, many = (shapes[b][node.output[0]] for b in BATCHES)
        if len(one) != len(many) or not one or one[0] != 1 or many[0] != BATCHES[1] or one[1:] != many[1:]:
            continue
        name = f"{node.name}__opencv_shape"
        model.graph.initializer.append(onnx.numpy_helper.from_array(np.asarray((-1, *one[1:]), np.int64), name))
        if node.op_type != "Reshape":
            node.op_type = "Reshape"
            del node.attribute[:]  # Squeeze/Unsqueeze's axes (an attribute before opset 13)
        del node.input[1:]
        node.input.append(name)
        changed += 1
    return changed


_CHAIN_OPS = ("Reshape", "Tile", "Transpose")


def _upsampling_to_conv_transpose(model) -> int:
    """A chain of Reshape / Tile / Transpose (constant shapes) that computes nearest-neighbour upsampling of an
    NCHW tensor (Keras' UpSampling2D is ``ops.repeat`` twice, which tf2onnx writes as 5-D Tiles and Transposes)
    becomes one depthwise ``ConvTranspose`` with a kernel of ones and the factor as stride (each input pixel copied
    into its a x b block: exactly nearest upsampling). OpenCV 4.10 runs the 5-D chain with wrong numbers, every version
    runs ConvTranspose. Why not ``Resize``: onnxruntime's symbolic shape inference (which int8 quantization's
    pre-processing runs) gives its output batch as ``floor(1.0*batch)``, then fails to merge it with ``batch``.

    The chain is recognised by what it computes, not by node names: it is run in numpy on a random tensor of the
    input's shape and must equal ``np.repeat`` along H and W."""
    import onnx

    constants = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    consumers: dict[str, list] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    producer = {out: node for node in model.graph.node for out in node.output}
    starts = [n for n in model.graph.node if n.op_type in _CHAIN_OPS and _chain_step_ok(n, constants)
              and (producer.get(n.input[0]) is None or producer[n.input[0]].op_type not in _CHAIN_OPS)]
    if not starts:
        return 0
    shapes = _measured_shapes(model, [n.input[0] for n in starts])[1]
    changed = 0
    rng = np.random.default_rng(0)
    for start in starts:
        shape = shapes[start.input[0]]
        if len(shape) != 4:
            continue
        x = rng.standard_normal(shape).astype(np.float32)
        value, chain, best = x, [], None
        node = start
        while node is not None and node.op_type in _CHAIN_OPS and _chain_step_ok(node, constants):
            value = _numpy_step(node, value, constants)
            chain.append(node)
            if value.ndim == 4 and value.shape[:2] == x.shape[:2] and all(
                    v % d == 0 and v > d for v, d in zip(value.shape[2:], x.shape[2:])):
                a, b = value.shape[2] // x.shape[2], value.shape[3] // x.shape[3]
                if np.array_equal(value, np.repeat(np.repeat(x, a, axis=2), b, axis=3)):
                    best = (list(chain), a, b)
            following = consumers.get(node.output[0], [])
            node = following[0] if len(following) == 1 else None
        if best is None:
            continue
        nodes, a, b = best
        tag = nodes[0].name
        kernel = f"{tag}__opencv_ones"
        channels = int(x.shape[1])
        model.graph.initializer.append(
            onnx.numpy_helper.from_array(np.ones((channels, 1, a, b), np.float32), kernel))
        upsample = onnx.helper.make_node("ConvTranspose", [start.input[0], kernel], [nodes[-1].output[0]],
                                         name=f"{tag}__opencv_upsample", group=channels, kernel_shape=[a, b],
                                         strides=[a, b])
        index = list(model.graph.node).index(nodes[0])
        for old in nodes:
            model.graph.node.remove(old)
        model.graph.node.insert(index, upsample)
        changed += 1
    return changed


def _chain_step_ok(node, constants: dict) -> bool:
    return node.op_type == "Transpose" or all(name in constants for name in node.input[1:])


def _numpy_step(node, value: np.ndarray, constants: dict) -> np.ndarray:
    if node.op_type == "Transpose":
        perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), None)
        return np.transpose(value, perm)
    if node.op_type == "Tile":
        return np.tile(value, [int(r) for r in constants[node.input[1]]])
    target = [int(d) for d in constants[node.input[1]]]
    target = [value.shape[i] if d == 0 else d for i, d in enumerate(target)]
    return value.reshape(target)


def _matmuls_to_mul_sum(model) -> int:
    """``Unsqueeze(w, 1) [N,1,L] -> MatMul(., s [N,L,C]) -> Squeeze(1)`` becomes ``ReduceSum(Unsqueeze(w, 2) * s,
    axis 1)`` [N,C]: OpenCV 4.x cannot parse a MatMul whose both inputs are computed tensors."""
    import onnx

    constants = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    producer = {out: node for node in model.graph.node for out in node.output}
    consumers: dict[str, list] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    changed = 0
    for node in list(model.graph.node):
        if node.op_type != "MatMul" or any(name in constants for name in node.input):
            continue
        first, after = producer.get(node.input[0]), consumers.get(node.output[0], [])
        if (first is None or first.op_type != "Unsqueeze" or len(after) != 1 or after[0].op_type != "Squeeze"
                or _axes(first, constants) != [1] or _axes(after[0], constants) != [1]):
            continue
        squeeze, tag = after[0], node.name
        axis_2, axis_1 = f"{tag}__opencv_axis2", f"{tag}__opencv_axis1"
        model.graph.initializer.extend([onnx.numpy_helper.from_array(np.asarray([2], np.int64), axis_2),
                                        onnx.numpy_helper.from_array(np.asarray([1], np.int64), axis_1)])
        column, product = f"{tag}__opencv_column", f"{tag}__opencv_product"
        index = list(model.graph.node).index(node)
        replacement = [
            onnx.helper.make_node("Unsqueeze", [first.input[0], axis_2], [column], name=f"{tag}__opencv_unsqueeze"),
            onnx.helper.make_node("Mul", [column, node.input[1]], [product], name=f"{tag}__opencv_mul"),
            onnx.helper.make_node("ReduceSum", [product, axis_1], [squeeze.output[0]], keepdims=0,
                                  name=f"{tag}__opencv_sum"),
        ]
        model.graph.node.remove(squeeze)
        model.graph.node.remove(node)
        for offset, new in enumerate(replacement):
            model.graph.node.insert(index + offset, new)
        changed += 1
    return changed


def _axes(node, constants: dict) -> list[int] | None:
    """The axes of an Unsqueeze/Squeeze (input since opset 13, attribute before)."""
    if len(node.input) > 1:
        value = constants.get(node.input[1])
        return None if value is None else [int(v) for v in np.ravel(value)]
    for attribute in node.attribute:
        if attribute.name == "axes":
            return list(attribute.ints)
    return None


def _drop_dead_nodes(model) -> None:
    """Nodes and initializers no graph output depends on any more (the shape computations the constants replaced)."""
    needed = {o.name for o in model.graph.output}
    kept = []
    for node in reversed(list(model.graph.node)):
        if any(out in needed for out in node.output):
            kept.append(node)
            needed.update(name for name in node.input if name)
    del model.graph.node[:]
    model.graph.node.extend(reversed(kept))
    unused = [i for i in model.graph.initializer if i.name not in needed]
    for initializer in unused:
        model.graph.initializer.remove(initializer)


def opencv_version() -> str | None:
    """The cv2 version importable here, or None (OpenCV is the ``video`` extra, optional at export time)."""
    try:
        import cv2
    except ImportError:
        return None
    return cv2.__version__


def run_in_opencv(path: Path, input_name: str, output_names: list[str], inputs: np.ndarray) -> list[np.ndarray]:
    """``inputs`` through ``cv2.dnn.readNetFromONNX(path)``: the outputs in ``output_names`` order."""
    import cv2

    net = cv2.dnn.readNetFromONNX(str(path))
    net.setInput(inputs, input_name)
    return [np.asarray(out) for out in net.forward(output_names)]


def compare(task: str, opencv: list[np.ndarray], reference: list[np.ndarray], int8: bool,
            decode=None) -> str | None:
    """Why OpenCV's outputs are not onnxruntime's, or None: fp32 within MAX_DIFF; int8 the same top-1 (classifiers)
    or the same detections (``decode``: the runtime's decoding, the manifest's threshold and NMS), see
    :func:`same_detections`."""
    if any(a.shape != b.shape for a, b in zip(opencv, reference)):
        return f"output shapes {[a.shape for a in opencv]} instead of {[b.shape for b in reference]}"
    if not int8:
        worst = max(float(np.max(np.abs(a - b))) for a, b in zip(opencv, reference))
        return None if worst <= MAX_DIFF else f"max |Δ| vs onnxruntime {worst:.2e} exceeds {MAX_DIFF:.0e}"
    if task == "object-detection":
        return same_detections(decode(opencv), decode(reference))
    ours, theirs = opencv[0], reference[0]
    agree = float((ours.argmax(-1) == theirs.argmax(-1)).mean())
    return None if agree == 1.0 else f"top-1 agrees with onnxruntime on {agree:.1%} of the inputs, not all"


def same_detections(ours: list, theirs: list, min_iou: float = 0.5) -> str | None:
    """None when every image has the same detections (per image (boxes, scores, classes)): as many, each matched
    one to one by class and box overlap (IoU >= ``min_iou``); else how many differ."""
    found, expected, unmatched = 0, 0, 0
    for (boxes, _, classes), (ref_boxes, _, ref_classes) in zip(ours, theirs):
        found, expected = found + len(boxes), expected + len(ref_boxes)
        free = list(range(len(ref_boxes)))
        for box, cls in zip(boxes, classes):
            match = next((j for j in free if ref_classes[j] == cls and _iou(box, ref_boxes[j]) >= min_iou), None)
            if match is None:
                unmatched += 1
            else:
                free.remove(match)
    if found == expected and not unmatched:
        return None
    return f"{found} detections where onnxruntime finds {expected} ({unmatched} without a match)"


def _iou(a, b) -> float:
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def verify(ctx, manifest) -> dict:
    """Run every ONNX file of the export in the OpenCV installed here at batch 1 and N against onnxruntime.

    fp32 that OpenCV runs wrongly is a refusal (the rewrite should have made it run); an int8 file is recorded as
    skipped with the reason. Without cv2 nothing is verified and the notes say so."""
    version = opencv_version()
    ctx.notes.setdefault("skipped", {})
    if version is None:
        ctx.notes["not_verified"] = "OpenCV (cv2) is not installed where this export ran: pip install " \
                                    "'edgecnn[video]' and export again to verify"
        for fmt in manifest.formats:
            if fmt.startswith("onnx") and fmt.endswith("int8"):
                ctx.notes["skipped"][fmt] = "int8 ONNX is not verified in OpenCV (5.0 does not load QDQ files)"
        return {}
    import onnxruntime as ort

    from ..runtime.tasks import ObjectDetector

    ctx.notes["opencv_version"] = version
    onnx_files = [fmt for fmt in manifest.formats if manifest.file_path(fmt).suffix == ".onnx"]
    decode = (ObjectDetector(manifest, format=onnx_files[0]).decode
              if manifest.task == "object-detection" and onnx_files else None)
    input_name = manifest["input"]["name"]
    output_names = [o["name"] for o in manifest["outputs"]]
    verified = {}
    for fmt in manifest.formats:
        path = manifest.file_path(fmt)
        if path.suffix != ".onnx":
            continue
        int8 = fmt.endswith("int8")
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        problem = None
        for batch in BATCHES:
            inputs = np.ascontiguousarray(ctx.inputs[:batch])
            reference = session.run(output_names, {input_name: inputs})
            try:
                ours = run_in_opencv(path, input_name, output_names, inputs)
            except Exception as exc:  # noqa: BLE001 - cv2.error and friends: a file OpenCV cannot run
                problem = f"OpenCV {version} cannot run it ({_first_line(exc)})"
            else:
                problem = compare(manifest.task, ours, reference, int8, decode)
                problem = problem and f"in OpenCV {version} at batch {batch}: {problem}"
            if problem:
                break
        if problem is None:
            verified[fmt] = {"opencv": version}
        elif int8:
            ctx.notes["skipped"][fmt] = problem
            ctx.say(f"OpenCV target: {fmt} skipped ({problem})")
        else:
            raise ExportRefusedError(f"export refused, --target opencv: {fmt} {problem}; export without "
                                     "--target opencv, or report the model's layers to edgecnn")
    return verified


def _first_line(exc: BaseException) -> str:
    """OpenCV's error text is several lines ending with the assertion: keep that line, short."""
    lines = [line.strip(" >") for line in str(exc).splitlines() if line.strip(" >")]
    text = (lines[-1] if lines else type(exc).__name__)
    for line in lines:
        if "error:" in line:
            text = line.split("error:", 1)[1].strip()
            break
    return text[:160]
