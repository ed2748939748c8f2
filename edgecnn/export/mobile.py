"""``--target mobile``: files for onnxruntime mobile (the Android/iOS packages, which load the ORT format).

Beside the usual files the export gets ``model.ort`` (and ``model.int8.ort``): the ONNX file with the batch fixed
at 1, converted by ``onnxruntime.tools.convert_onnx_models_to_ort``. Why batch 1: with the batch axis left dynamic,
``check_onnx_model_mobile_usability`` answers "as is: NO" for NNAPI and CoreML on every edgecnn model; with it fixed
the digits and detector models become usable. Its verdict on each fixed file is recorded in the manifest
(``targets.mobile.usability``). The ``.ort`` files are validated through edgecnn's runtime like every other file
(it opens ``.ort`` with onnxruntime too, one image at a time for a batch-1 file).

onnxruntime's tools print progress and a warning per model; they are kept off the console.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import shutil
import tempfile
from pathlib import Path

from ..errors import require
from ..manifest import TARGET_FORMAT_FILES

#: source format -> (file key, file name) of its mobile copy; the keys start with onnx (onnxruntime runs them) and
#: the int8 one ends with int8 (validated by the int8 rule)
MOBILE_FILES = {source: (key, TARGET_FORMAT_FILES[key]) for source, key in (("onnx", "onnx-mobile"),
                                                                            ("onnx-int8", "onnx-mobile-int8"))}


def check(ctx) -> str | None:
    if not set(MOBILE_FILES) & set(ctx.formats):
        return "it converts the ONNX files to the ORT format, but --formats asks for none; add onnx to --formats"
    return None


def extra_files(ctx) -> dict:
    """Write the batch-1 ``.ort`` file of each ONNX file and record the mobile usability verdicts."""
    from ..manifest import FORMAT_FILES

    added, usability = {}, {}
    for fmt, (key, name) in MOBILE_FILES.items():
        if fmt not in ctx.files:
            continue
        ctx.say(f"onnxruntime mobile: {name} (batch 1, ORT format)")
        with tempfile.TemporaryDirectory() as scratch:
            fixed = Path(scratch) / Path(name).with_suffix(".onnx").name
            fix_batch(ctx.staging / FORMAT_FILES[fmt], fixed)
            usability[key] = mobile_usability(fixed)
            shutil.move(str(to_ort(fixed)), ctx.staging / name)
        added[key] = {"path": name, "precision": ctx.files[fmt]["precision"], "runtime": "onnxruntime",
                      "batch": 1, "source": fmt}
    ctx.notes["usability"] = usability
    return added


def fix_batch(source: Path, target: Path, batch: int = 1) -> Path:
    """``source`` with its dynamic batch axis fixed (onnxruntime.tools.make_dynamic_shape_fixed), as ``target``."""
    onnx = require("onnx", "train", "the mobile target")
    from onnxruntime.tools.onnx_model_utils import fix_output_shapes, make_input_shape_fixed

    model = onnx.load(str(source))
    for value in model.graph.input:
        shape = [batch] + [d.dim_value for d in value.type.tensor_type.shape.dim[1:]]
        make_input_shape_fixed(model.graph, value.name, shape)
    fix_output_shapes(model)
    onnx.save(model, str(target))
    return target


def to_ort(path: Path) -> Path:
    """The ORT-format file converted from ``path`` (beside it), by onnxruntime's own converter."""
    from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort

    logging.disable(logging.INFO)  # its ort_format_model logger announces every config file it writes
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            convert_onnx_models_to_ort(path, output_dir=path.parent,
                                       optimization_styles=[OptimizationStyle.Fixed])
    finally:
        logging.disable(logging.NOTSET)
    return path.with_suffix(".ort")


_VERDICT = re.compile(r"Model should perform well with (.+) as is: (\w+)")


def mobile_usability(path: Path) -> dict[str, str]:
    """``check_onnx_model_mobile_usability``'s verdict per execution provider (NNAPI, CoreML ...): YES, MAYBE or NO,
    read from the messages it logs (it returns only one bool for all of them)."""
    from onnxruntime.tools.mobile_helpers import usability_checker

    verdicts: dict[str, str] = {}

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            match = _VERDICT.search(record.getMessage())
            if match:
                verdicts[match.group(1)] = match.group(2)

    logger = logging.getLogger("edgecnn.mobile_usability")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    handler = Collect()
    logger.addHandler(handler)
    try:
        with contextlib.redirect_stdout(io.StringIO()), _quiet_logging():
            usability_checker.analyze_model(path, skip_optimize=False, logger=logger)
    finally:
        logger.removeHandler(handler)
    return verdicts


@contextlib.contextmanager
def _quiet_logging():
    """onnxruntime's tools log through the root logger (basicConfig at import): silence it while they run."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def verify(ctx, manifest) -> dict:
    """Validation already ran each ``.ort`` file through edgecnn's runtime; record onnxruntime's version for it."""
    import onnxruntime

    return {key: {"onnxruntime": onnxruntime.__version__} for key, _ in MOBILE_FILES.values()
            if key in manifest.get("files", {})}
