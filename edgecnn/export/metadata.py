"""TFLite Model Metadata in every ``.tflite`` edgecnn writes: what an app's runtime needs to use the file alone.

MediaPipe Tasks (and Android Studio's ML model binding, and the TFLite Task Library before it) read a model's
name, input normalization, labels and output meaning from the model itself: a ``ModelMetadata`` flatbuffer stored
in the model's ``metadata`` list under ``TFLITE_METADATA``, with its associated files (``labels.txt``) zipped onto
the end of the file. Without it MediaPipe refuses an image model ("requires specifying NormalizationOptions
metadata"). LiteRT ignores both, so edgecnn's own runtime loads the file exactly as before (validation proves it).

How it is written, and why this way:

- MediaPipe's own metadata writers (``mediapipe.tasks.python.metadata.metadata_writers``) cannot be used at export
  time: ``mediapipe`` cannot go into the train extra (it pulls ``opencv-contrib-python``, which shadows the video
  extra's ``opencv-python-headless`` as the same ``cv2``), and even where it is installed the writers fail to import
  (their minimum-parser-version check is a compiled module missing from the 1.2 wheel: ``No module named
  'mediapipe.tasks.cc'``). ``tflite-support`` has no wheels for Python >= 3.12 and pins an old protobuf.
- What the writers do is small: build a ``ModelMetadataT`` with the schema's generated object API, pack it with
  ``flatbuffers``, append it to the model's buffers and ``metadata`` list, zip the label file on. So edgecnn does
  the same with the maintained schema's generated Python, copied unchanged from the mediapipe wheel into
  :mod:`edgecnn.export.tflite_metadata_schema` (generated code, Apache-2.0), the model schema's generated Python that
  TensorFlow ships, and ``flatbuffers`` (a TensorFlow dependency): nothing new to install, export time only.
- The minimum parser version, which MediaPipe's compiled check computes, is :func:`min_parser_version` here: the
  same rules (mediapipe/tasks/cc/metadata/metadata_version.cc) for the fields edgecnn writes and more.

MediaPipe's tests (tests/test_mediapipe.py, in a separate venv) load files written here and compare its answers
with edgecnn's; tests/test_tflite_metadata.py reads the metadata back with the same schema.
"""

from __future__ import annotations

import importlib
import io
import zipfile
from pathlib import Path

from .. import __version__

METADATA_NAME = "TFLITE_METADATA"  #: the model ``metadata`` entry MediaPipe and the Task Library look up
METADATA_IDENTIFIER = b"M001"  #: the metadata flatbuffer's file identifier
MODEL_IDENTIFIER = b"TFL3"
LABELS_FILE = "labels.txt"


def _schemas():
    """(metadata schema, model schema): the model's from TensorFlow, which every export imports anyway."""
    from . import tflite_metadata_schema as metadata_fb

    model_fb = importlib.import_module("tensorflow.lite.python.schema_py_generated")
    return metadata_fb, model_fb


def add_metadata(path: Path, sections: dict, name: str, description: str | None = None) -> None:
    """Write TFLite Model Metadata (and ``labels.txt``) into the ``.tflite`` file at ``path``, in place.

    Args:
        path: a ``.tflite`` file written by :func:`edgecnn.export.tflite.export_tflite`.
        sections: the manifest's ``task``, ``labels``, ``input``, ``outputs`` and ``preprocessing``.
        name: the model's name (the export folder's).
        description: one paragraph; default: the task, labels and preprocessing in words.
    """
    import flatbuffers

    from .tflite import pack_model

    metadata_fb, model_fb = _schemas()
    model = model_fb.ModelT.InitFromObj(model_fb.Model.GetRootAsModel(path.read_bytes(), 0))
    subgraph = model.subgraphs[0]
    signature = {t.tensorIndex: t.name.decode() for s in (model.signatureDefs or [])[:1]
                 for t in (s.inputs or []) + (s.outputs or [])}

    def tensor(index: int):
        t = subgraph.tensors[index]
        return signature.get(index) or t.name.decode(), t.type

    labels = list(sections.get("labels") or [])
    meta = metadata_fb.ModelMetadataT()
    meta.name = name
    meta.description = description or describe(sections)
    meta.author = f"edgecnn {__version__}"  # the exporter; the model's own version and licence are its author's
    graph = metadata_fb.SubGraphMetadataT()
    graph.inputTensorMetadata = [_input_metadata(metadata_fb, model_fb, sections, *tensor(i))
                                 for i in subgraph.inputs]
    graph.outputTensorMetadata = [_output_metadata(metadata_fb, model_fb, sections, labels, *tensor(i))
                                  for i in subgraph.outputs]
    meta.subgraphMetadata = [graph]
    meta.minParserVersion = min_parser_version(meta)

    builder = flatbuffers.Builder(0)
    builder.Finish(meta.Pack(builder), METADATA_IDENTIFIER)
    buffer = model_fb.BufferT()
    buffer.data = bytes(builder.Output())
    model.metadata = [m for m in (model.metadata or []) if m.name.decode() != METADATA_NAME]
    model.buffers.append(buffer)
    entry = model_fb.MetadataT()
    entry.name, entry.buffer = METADATA_NAME, len(model.buffers) - 1
    model.metadata.append(entry)
    out = io.BytesIO(pack_model(model))  # the object API's Pack, keeping the file's shared arrays and alignment
    if labels:  # the associated file, zipped onto the end (a reader finds the zip's directory from the end)
        with zipfile.ZipFile(out, "a") as archive:
            archive.writestr(LABELS_FILE, "\n".join(labels) + "\n")
    path.write_bytes(out.getvalue())


def normalization(preprocessing: dict) -> tuple[list[float], list[float]] | None:
    """(mean, std) per channel, on 0..255 pixels, for ``x * scale + offset`` = ``(x - mean) / std``; None when the
    preprocessing is not an affine map of the pixels (text)."""
    if "scale" not in preprocessing:
        return None
    scale, offset = preprocessing["scale"], preprocessing.get("offset", 0.0)
    scales = list(scale) if isinstance(scale, (list, tuple)) else [scale]
    offsets = list(offset) if isinstance(offset, (list, tuple)) else [offset]
    if len(scales) != len(offsets):  # one value beside per-channel values: the one applies to every channel
        channels = max(len(scales), len(offsets))
        scales, offsets = scales * (channels // len(scales)), offsets * (channels // len(offsets))
    return [-o / s + 0.0 for s, o in zip(scales, offsets)], [1.0 / s for s in scales]


def describe(sections: dict) -> str:
    """The metadata's model description: what the model does, and the preprocessing steps metadata cannot say."""
    task = sections.get("task", "model")
    labels = sections.get("labels") or []
    text = f"edgecnn {task} model"
    if labels:
        shown = ", ".join(labels[:10]) + (", ..." if len(labels) > 10 else "")
        text += f" over {len(labels)} labels ({shown})"
    pre = sections.get("preprocessing") or {}
    if pre.get("type") == "image":
        text += (f". Input: {pre.get('height')}x{pre.get('width')} { {'L': 'gray'}.get(pre.get('color_mode'), pre.get('color_mode', ''))} pixels "
                 f"({pre.get('resize', 'bilinear')} resize), x * scale + offset as the normalization says")
        if pre.get("channels_order") == "bgr":
            text += ", channels in BGR order"
        extras = [f"{key}={pre[key]}" for key in ("polarity", "fit") if pre.get(key) not in (None, "none")]
        if extras:
            text += (f"; edgecnn's runtime also applies {', '.join(extras)} (see the export's edgecnn.json), "
                     "which other runtimes do not")
    elif pre.get("type") == "text":
        text += (f". Input: token ids from edgecnn's tokenizer ({pre.get('standardize')}, {pre.get('split')} split, "
                 "vocabulary in the export's edgecnn.json)")
    return text + "."


def _input_metadata(metadata_fb, model_fb, sections: dict, name: str, dtype: int):
    tm = metadata_fb.TensorMetadataT()
    tm.name = name
    content = metadata_fb.ContentT()
    pre = sections.get("preprocessing") or {}
    norm = normalization(pre) if pre.get("type") == "image" else None
    if norm:
        tm.description = "Input image to be processed."
        props = metadata_fb.ImagePropertiesT()
        props.colorSpace = (metadata_fb.ColorSpaceType.GRAYSCALE if int(pre.get("channels") or 3) == 1
                            else metadata_fb.ColorSpaceType.RGB)
        content.contentPropertiesType = metadata_fb.ContentProperties.ImageProperties
        content.contentProperties = props
        unit = metadata_fb.ProcessUnitT()
        unit.optionsType = metadata_fb.ProcessUnitOptions.NormalizationOptions
        unit.options = metadata_fb.NormalizationOptionsT()
        unit.options.mean, unit.options.std = norm
        tm.processUnits = [unit]
        stats = metadata_fb.StatsT()
        if dtype == model_fb.TensorType.FLOAT32:
            stats.min = [(0.0 - m) / s for m, s in zip(*norm)]
            stats.max = [(255.0 - m) / s for m, s in zip(*norm)]
        elif dtype == model_fb.TensorType.UINT8:
            stats.min, stats.max = [0.0], [255.0]
        tm.stats = stats
    else:
        tm.description = (sections.get("input") or {}).get("layout") or "Input features."
        content.contentPropertiesType = metadata_fb.ContentProperties.FeatureProperties
        content.contentProperties = metadata_fb.FeaturePropertiesT()
    tm.content = content
    return tm


def _output_metadata(metadata_fb, model_fb, sections: dict, labels: list[str], name: str, dtype: int):
    described = {o.get("name"): o for o in sections.get("outputs") or []}.get(name, {})
    tm = metadata_fb.TensorMetadataT()
    tm.name = name
    kind = described.get("kind", "")
    tm.description = described.get("meaning") or {
        "probabilities": "Probabilities of the labels respectively.",
        "logits": "Logits of the labels respectively (softmax gives their probabilities).",
    }.get(kind, f"{kind or 'model'} output.")
    content = metadata_fb.ContentT()
    content.contentPropertiesType = metadata_fb.ContentProperties.FeatureProperties
    content.contentProperties = metadata_fb.FeaturePropertiesT()
    tm.content = content
    shape = described.get("shape") or []
    per_label = labels and shape and shape[-1] == len(labels)
    if per_label:  # scores along the last axis, one per label: the label file names them
        labels_file = metadata_fb.AssociatedFileT()
        labels_file.name = LABELS_FILE
        labels_file.description = "Labels for categories that the model can recognize."
        labels_file.type = metadata_fb.AssociatedFileType.TENSOR_AXIS_LABELS
        tm.associatedFiles = [labels_file]
    if kind == "probabilities" and dtype == model_fb.TensorType.FLOAT32:
        tm.stats = metadata_fb.StatsT()
        tm.stats.min, tm.stats.max = [0.0], [1.0]
    return tm


#: metadata_schema.fbs fields added after 1.0.0 -> the parser version that reads them (metadata_version.cc)
_FIELD_VERSIONS = {"vocabulary_file": (1, 0, 1), "input_process_units": (1, 1, 0),
                   "output_process_units": (1, 1, 0), "bert_tokenizer": (1, 1, 0), "sentencepiece": (1, 1, 0),
                   "tensor_groups": (1, 2, 0), "regex_tokenizer": (1, 2, 1), "audio": (1, 3, 0),
                   "scann_index": (1, 4, 0), "file_version": (1, 4, 1), "custom_metadata": (1, 5, 0)}


def min_parser_version(meta) -> str:
    """The oldest metadata parser that understands every field of ``meta`` (a ``ModelMetadataT``): what MediaPipe's
    compiled ``GetMinimumMetadataParserVersion`` computes, by the same rules."""
    from . import tflite_metadata_schema as fb

    found = [(1, 0, 0)]

    def files(items):
        for f in items or []:
            if f.type == fb.AssociatedFileType.VOCABULARY:
                found.append(_FIELD_VERSIONS["vocabulary_file"])
            if f.type == fb.AssociatedFileType.SCANN_INDEX_FILE:
                found.append(_FIELD_VERSIONS["scann_index"])
            if f.version is not None:
                found.append(_FIELD_VERSIONS["file_version"])

    def units(items):
        options = {fb.ProcessUnitOptions.BertTokenizerOptions: "bert_tokenizer",
                   fb.ProcessUnitOptions.SentencePieceTokenizerOptions: "sentencepiece",
                   fb.ProcessUnitOptions.RegexTokenizerOptions: "regex_tokenizer"}
        for unit in items or []:
            if unit.optionsType in options:
                found.append(_FIELD_VERSIONS[options[unit.optionsType]])

    def tensors(items):
        for t in items or []:
            files(t.associatedFiles)
            units(t.processUnits)
            if t.content is not None and t.content.contentPropertiesType == fb.ContentProperties.AudioProperties:
                found.append(_FIELD_VERSIONS["audio"])

    for graph in meta.subgraphMetadata or []:
        tensors(graph.inputTensorMetadata)
        tensors(graph.outputTensorMetadata)
        files(graph.associatedFiles)
        for field, key in (("inputProcessUnits", "input_process_units"),
                           ("outputProcessUnits", "output_process_units")):
            if getattr(graph, field) is not None:
                found.append(_FIELD_VERSIONS[key])
                units(getattr(graph, field))
        if graph.inputTensorGroups is not None or graph.outputTensorGroups is not None:
            found.append(_FIELD_VERSIONS["tensor_groups"])
        if graph.customMetadata is not None:
            found.append(_FIELD_VERSIONS["custom_metadata"])
    files(meta.associatedFiles)
    return ".".join(map(str, max(found)))


def read_metadata(path: Path):
    """``(ModelMetadataT, {associated file name: bytes})`` of a ``.tflite`` file, or ``(None, {})`` without
    metadata: for tests and for anyone checking a file."""
    metadata_fb, model_fb = _schemas()
    data = Path(path).read_bytes()
    model = model_fb.Model.GetRootAsModel(data, 0)
    meta = None
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if entry.Name().decode() == METADATA_NAME:
            raw = model.Buffers(entry.Buffer()).DataAsNumpy().tobytes()
            meta = metadata_fb.ModelMetadataT.InitFromObj(metadata_fb.ModelMetadata.GetRootAsModelMetadata(raw, 0))
    files = {}
    if zipfile.is_zipfile(io.BytesIO(data)):
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            files = {n: archive.read(n) for n in archive.namelist()}
    return meta, files
