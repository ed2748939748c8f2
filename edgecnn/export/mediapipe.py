"""``edgecnn export --target mediapipe``: ``.tflite`` files MediaPipe Tasks' ImageClassifier loads as they are.

What MediaPipe 1.2 asks of an image classifier, measured on edgecnn's files, and what this target does about it:

- an input of ``1 x height x width x 3`` (or 4): a grayscale model gets a 3-channel input, and the graph turns the
  RGB pixels into the gray the model was trained on with the weights Pillow's ``convert("L")`` uses (ITU-R 601-2,
  summing to 1, so it commutes with the ``x * scale + offset`` normalization), as slices, products and adds. The whole
  export takes RGB then (every file and the manifest say so: ``gray_in_graph``), and validation proves the files
  still match Keras. edgecnn's own runtime makes the gray first and frames that (``polarity``/``fit``), then gives
  it on all three channels, so the model sees exactly what the gray export would
  (:func:`edgecnn.runtime.image.load_pixels`);
- uint8 or float32 input and output tensors: the int8 file keeps int8 weights and arithmetic but float I/O
  (``--int8-io uint8`` gives uint8 I/O instead);
- TFLite Model Metadata with the input normalization and the labels: every ``.tflite`` edgecnn writes has it
  (:mod:`edgecnn.export.metadata`);
- RGB channel order: a BGR (caffe-style) model is refused, as MediaPipe always feeds RGB.

Refused, each for a stated reason: the detector (MediaPipe's ObjectDetector decodes SSD-style anchor boxes or the
``TFLite_Detection_PostProcess`` op's output; edgecnn's detector is anchor-free) and text models (MediaPipe's regex
tokenizer only splits the text as given on a delimiter pattern, while edgecnn's tokenizer lowercases it and deletes
punctuation inside words, ``Don't`` -> ``dont``: on BBC News the closest delimiter regex gave other token ids on
2,216 of 2,225 documents even with the text lowercased first).

:func:`classify` is the one place that runs MediaPipe: the export's verification (where ``mediapipe`` is
importable) and tests/test_mediapipe.py (in the separate ``.venv-mediapipe``) both call it. It imports nothing
from edgecnn, so it runs in a venv that has only mediapipe.
"""

from __future__ import annotations

#: Pillow's ``convert("L")`` weights (ITU-R 601-2 luma), which edgecnn's runtime uses to make a gray input.
GRAY_WEIGHTS = (0.299, 0.587, 0.114)

DETECTOR_REASON = ("MediaPipe's ObjectDetector decodes only SSD-style outputs (anchor boxes with centre-size "
                   "offsets, or the TFLite_Detection_PostProcess op), and edgecnn's detector is anchor-free "
                   "(FCOS-style distances per grid cell), so it has no MediaPipe export; use the ONNX or .tflite "
                   "files with edgecnn's runtime or your own decoding (edgecnn.json describes it)")
TEXT_REASON = ("MediaPipe's TextClassifier tokenizes with a regex that only splits the text as given, while "
               "edgecnn's tokenizer lowercases it and deletes punctuation inside words (Don't -> dont), so MediaPipe "
               "would feed the model other token ids; tokenize with edgecnn's rules in your app and run the .tflite "
               "file directly instead")


def check(ctx) -> str | None:
    """The reason MediaPipe's ImageClassifier cannot run this model's files, or None."""
    task = ctx.sections.get("task")
    if task == "object-detection":
        return DETECTOR_REASON
    if task == "text-classification":
        return TEXT_REASON
    if task != "image-classification":
        return f"MediaPipe's tasks cover image classification here, not {task}"
    pre = ctx.sections.get("preprocessing") or {}
    if pre.get("channels_order") == "bgr":
        return ("the model takes BGR channels (caffe preprocessing) and MediaPipe always feeds RGB; export it "
                "without --target mediapipe")
    if int(pre.get("channels") or 3) not in (1, 3):
        return f"the model takes {pre.get('channels')} channels; MediaPipe feeds 3 (RGB)"
    if not any(fmt.startswith("tflite") for fmt in ctx.formats):
        return "MediaPipe runs .tflite files: add tflite or tflite-int8 to --formats"
    return None


def int8_io(ctx, asked: str) -> str:
    """MediaPipe takes uint8 or float32 tensors, not int8: float unless uint8 was asked for."""
    return asked if asked in ("uint8", "float") else "float"


def after_tflite(ctx, path, int8: bool) -> None:
    """A uint8 input must mean what the pixels mean: MediaPipe feeds a uint8 model the raw 0..255 pixels and
    applies no normalization, so the file's input scale and zero point must be the preprocessing's map."""
    if not int8:
        return
    from ..errors import ExportRefusedError
    from .tflite import tensor_quantization

    pre = ctx.sections["preprocessing"]
    scales = pre["scale"] if isinstance(pre["scale"], list) else [pre["scale"]]
    offsets = pre.get("offset", 0.0) if isinstance(pre.get("offset", 0.0), list) else [pre.get("offset", 0.0)]
    for name, detail in tensor_quantization(path)["inputs"].items():
        if detail["dtype"] != "uint8":
            continue
        scale, zero_point = detail["scale"], detail["zero_point"]
        if not all(abs(scale - s) <= 1e-3 * abs(s) and abs(zero_point + o / s) <= 0.5 for s, o in zip(scales, offsets)):
            raise ExportRefusedError(
                f"export refused, --target mediapipe: the int8 file's uint8 input {name!r} (scale {scale:.6g}, zero "
                f"point {zero_point}) is not the preprocessing's x * {scales[0]:.6g} + {offsets[0]:.6g}, and MediaPipe "
                "feeds uint8 models raw pixels; export with --int8-io float")


def serving(ctx, serve):
    """A 3-channel input for a grayscale model (RGB -> gray in the graph); the manifest says RGB from then on."""
    pre = ctx.sections["preprocessing"]
    if int(pre.get("channels") or 3) != 1:
        return serve
    from ..keras_io import import_tensorflow

    tf = import_tensorflow()
    spec = serve.input_signature[0]
    shape = list(spec.shape)
    shape[-1] = 3
    # each channel times its scalar weight, summed: not a weighted reduce_sum, whose opset-13 ReduceSum OpenCV 4.6
    # (Debian's C++ library) cannot parse, nor a 1x1 convolution, whose 3 weights edgecnn explain would count as
    # the model's parameters; slices, scalar products and adds run everywhere
    weights = [float(w) for w in GRAY_WEIGHTS]

    # the wrapped function's Python body, not a call of it: a call nests the model's ops under a
    # StatefulPartitionedCall scope, and edgecnn explain and quantize-report read layer names from the op names
    body = getattr(serve, "python_function", serve)

    @tf.function(input_signature=[tf.TensorSpec(shape, spec.dtype, name=spec.name)])
    def serve_rgb(image):
        with tf.name_scope("rgb_to_gray"):
            gray = image[..., 0:1] * weights[0] + image[..., 1:2] * weights[1] + image[..., 2:3] * weights[2]
        return body(gray)

    ctx.sections["input"]["shape"] = shape
    pre.update({"color_mode": "RGB", "channels": 3, "gray_in_graph": list(GRAY_WEIGHTS)})
    ctx.gray_to_rgb = True
    ctx.notes["input"] = "RGB for a gray model: the graph makes its gray with Pillow's weights (ITU-R 601-2)"
    return serve_rgb


def model_inputs(ctx, x):
    """edgecnn's gray model inputs as the 3-channel input the served graph takes (the same gray in each)."""
    from ..train.datasets import rgb_of_gray  # evaluate's builder may have repeated it already: then as it is

    return rgb_of_gray(x) if getattr(ctx, "gray_to_rgb", False) else x


def verify(ctx, manifest) -> dict:
    """Where mediapipe is importable: its ImageClassifier's top-1 on every sample must be edgecnn's."""
    try:
        import mediapipe
    except ImportError:
        ctx.notes["verified"] = ("not at export time: mediapipe is not importable here (tests/test_mediapipe.py "
                                 "runs the files in the venv 'make mediapipe-venv' makes)")
        return {}
    from ..runtime.tasks import ImageClassifier as EdgecnnClassifier

    samples = sorted(p for p in (manifest.folder / "samples").iterdir()
                     if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp"))
    verified = {}
    for fmt in [f for f in manifest.formats if f.startswith("tflite")]:
        ours = [r.label for r in EdgecnnClassifier(manifest, format=fmt).classify_batch(samples, top_k=1)]
        theirs = [r[0]["label"] for r in classify(manifest.file_path(fmt), samples)]
        if ours != theirs:
            from ..errors import ExportRefusedError

            wrong = sum(a != b for a, b in zip(ours, theirs))
            raise ExportRefusedError(f"export refused, --target mediapipe: MediaPipe's ImageClassifier disagrees with "
                                     f"edgecnn on {wrong} of {len(samples)} samples with {fmt}")
        verified[fmt] = {"mediapipe": mediapipe.__version__}
    return verified


def classify(model_file, image_files, top_k: int = 1) -> list[list[dict]]:
    """MediaPipe Tasks' ImageClassifier on each image: ``[[{"label", "score"}, ...], ...]``, best first."""
    import mediapipe as mp
    import numpy as np
    from mediapipe.tasks import python as mp_tasks
    from mediapipe.tasks.python import vision
    from PIL import Image

    options = vision.ImageClassifierOptions(base_options=mp_tasks.BaseOptions(model_asset_path=str(model_file)),
                                            max_results=top_k)
    results = []
    with vision.ImageClassifier.create_from_options(options) as classifier:
        for path in image_files:
            # RGB always: mp.Image.create_from_file keeps a gray PNG 1-channel, which MediaPipe cannot feed a
            # 3-channel model ("TfLiteTensor and Tensor sizes do not match")
            with Image.open(path) as image:
                pixels = np.ascontiguousarray(np.asarray(image.convert("RGB")))
            result = classifier.classify(mp.Image(image_format=mp.ImageFormat.SRGB, data=pixels))
            results.append([{"label": c.category_name, "score": float(c.score)}
                            for c in result.classifications[0].categories])
    return results
