"""Batch inference on a Ray cluster: :class:`Predictor` for ``Dataset.map_batches``, :func:`read_inputs` for the data.

Ray Data does the distributing (reading, scheduling, back-pressure, writing); edgecnn does exactly what
``edgecnn infer`` does to each item, so a cluster run and a local run give the same answers. ``map_batches`` with a
callable class starts a pool of actors and builds one :class:`Predictor` in each: the model is opened once per actor
(its runtime session reused for every batch), not per batch or per row.

Example (the README's "Scale out" recipe)::

    import ray
    from edgecnn.integrations.ray import infer_dataset

    ray.init()                                 # or ray.init(address="auto") on a cluster
    infer_dataset("s3://bucket/photos/", "exported/digits-cnn", "predictions/")

or, step by step, to filter or join the rows on the way::

    from edgecnn.integrations.ray import Predictor, read_inputs

    images = read_inputs("photos/")            # a folder, a glob, Parquet files or an object-store URI (s3://...)
    predictions = images.map_batches(Predictor, fn_constructor_kwargs={"model": "exported/digits-cnn"},
                                     concurrency=2, num_cpus=ACTOR_CPUS, batch_size=256)
    predictions.write_parquet("predictions/", ray_remote_args={"num_cpus": IO_CPUS})

Resources: Ray schedules by logical CPUs, and Ray Data starts the actors first. Actors asking one CPU each, as
many as the CPUs, leave none for the tasks that list, read and write files, and the run waits forever (seen on
``ray.init(num_cpus=2)`` with two actors, at the read and again at ``read_parquet``'s file listing, which asks a
whole CPU). So each actor asks :data:`ACTOR_CPUS` (half: it still computes on a whole core) and reads and writes
:data:`IO_CPUS` (they move bytes): one actor per CPU leaves half the CPUs for Ray Data's own tasks.

Why bytes, not ``ray.data.read_images``: Ray's own decoder neither applies EXIF orientation nor flattens
transparency the way the manifest says, so its arrays would give other answers than ``edgecnn infer`` on the same
files. :func:`read_inputs` reads each file's bytes; the actor decodes them with the runtime's own loader.
"""

from __future__ import annotations

import json
import os

import numpy as np

from ..errors import InputError, require
from ..runtime.infer import DEFAULT_TOP_K, attempt, runner_for
from ..runtime.tasks import is_multi_label, load
from ..runtime.text import TextFile

#: Input columns a batch may carry, in the order they are looked for: encoded image bytes, image arrays (H x W or
#: H x W x C), file paths (read by the actor: the path must exist where it runs), texts (text models).
INPUT_COLUMNS = ("bytes", "image", "path", "text")
#: Columns a :class:`Predictor` adds to each batch.
OUTPUT_COLUMNS = ("input", "label", "score", "result", "error")
#: Logical CPUs a read or write task asks for, and an inference actor (see the module's notes on resources).
IO_CPUS = 0.25
ACTOR_CPUS = 0.5


class Predictor:
    """A callable for ``ray.data.Dataset.map_batches``: a batch (a dict of columns) in, the batch plus the
    prediction columns out.

    ``model`` is an export folder (it must be readable where the actors run: a shared file system, or the folder
    shipped with the job's ``runtime_env``); ``format``, ``threads``, ``top_k`` and ``threshold`` are those of
    ``edgecnn infer`` (one runtime thread by default: Ray gives each actor its CPU). ``column`` picks the input
    column; by default the first of :data:`INPUT_COLUMNS` the batch has. Added columns (:data:`OUTPUT_COLUMNS`):

    - ``input``: the row's ``path`` when the batch has one, else what ``edgecnn infer`` names the input;
    - ``label`` and ``score``: a classifier's top category (detectors: the best box's; empty and NaN for none);
    - ``result``: the result as ``edgecnn infer --json`` prints it, ``input`` included, as a JSON string;
    - ``error``: the one-line message of an input that failed (the other columns empty), else empty.

    The batch's other columns come along; its image bytes or arrays do not (``keep_images=True`` keeps them):
    carrying megabytes of pixels into the predictions costs the object store and the writer more than the
    inference. One bad row never fails the batch, as one bad file never stops ``edgecnn infer``.
    """

    def __init__(self, model: str | os.PathLike, *, format: str | None = None, threads: int | None = 1,
                 top_k: int = DEFAULT_TOP_K, threshold: float | None = None, column: str | None = None,
                 keep_images: bool = False):
        self.task = load(model, format=format, threads=threads)
        self.column, self.keep_images = column, keep_images
        if threshold is not None and self.task.task != "object-detection":
            if not is_multi_label(self.task.manifest):
                raise InputError(f"threshold applies to object-detection and multi-label models; {model} is an "
                                 f"{self.task.task} model")
            self.task.threshold, threshold = threshold, None  # which labels a multi-label result reports
        self._call = runner_for(self.task, top_k=top_k, threshold=threshold)

    def __call__(self, batch: dict) -> dict:
        column = self._input_column(batch)
        paths = batch.get("path")
        inputs, labels, scores, results, errors = [], [], [], [], []
        text_model = self.task.task == "text-classification"
        for row, item in enumerate(batch[column]):
            outcome = attempt(lambda value: self._call(_payload(column, value, text_model)), item)
            name = str(paths[row]) if paths is not None else None
            if outcome.result is None:
                message = outcome.error if outcome.error is not None else f"internal error: {outcome.crash}"
                if name and column == "bytes" and message.startswith("<bytes>"):
                    message = name + message[len("<bytes>"):]  # as edgecnn infer words it for the file
                elif name and not message.startswith(name):
                    message = f"{name}: {message}"
                inputs.append(name or "")
                labels.append("")
                scores.append(float("nan"))
                results.append("")
                errors.append(message)
                continue
            data = outcome.result.to_dict()
            if name:
                data["input"] = name
            label, score = _top(outcome.result)
            inputs.append(str(data.get("input", "")))
            labels.append(label)
            scores.append(score)
            results.append(json.dumps(data, ensure_ascii=False))
            errors.append("")
        kept = {name: values for name, values in batch.items()
                if self.keep_images or name not in ("bytes", "image")}
        return {**kept, "input": np.array(inputs, dtype=object), "label": np.array(labels, dtype=object),
                "score": np.array(scores, dtype=np.float64), "result": np.array(results, dtype=object),
                "error": np.array(errors, dtype=object)}

    def _input_column(self, batch: dict) -> str:
        if self.column is not None:
            if self.column not in batch:
                raise InputError(f"the batch has no column {self.column!r}; its columns are {sorted(batch)}")
            return self.column
        for name in INPUT_COLUMNS:
            if name in batch:
                return name
        raise InputError(f"the batch has none of the input columns {', '.join(INPUT_COLUMNS)} (its columns are "
                         f"{sorted(batch)}); pass column='...' to Predictor")


def _payload(column: str, item, text_model: bool):
    """One row's value as the runtime takes it: image bytes, a pixel array, a path (a text model's: a text file),
    or a text."""
    if column == "path" and text_model:
        return TextFile(str(item))
    if column == "bytes" and text_model:
        try:
            return bytes(item).decode("utf-8")
        except UnicodeDecodeError:
            raise InputError("<bytes> is not UTF-8 text; give a text model UTF-8 texts") from None
    if column == "bytes":
        return bytes(item)
    if column in ("path", "text"):
        return str(item)
    return np.asarray(item)


def _top(result) -> tuple[str, float]:
    """The best category (classifiers) or box (detectors) of a result, as (label, score)."""
    ranked = result.categories if hasattr(result, "categories") else result.detections
    if not ranked:
        return "", float("nan")
    best = max(ranked, key=lambda entry: entry.score)
    return str(best.label), float(best.score)


def read_inputs(source: str | list[str], *, column: str | None = None):
    """A ``ray.data.Dataset`` of a folder, glob, list of files, Parquet file(s) or object-store URI, for
    :class:`Predictor`.

    Image files (anything but ``.parquet``) become rows of ``bytes`` and ``path`` (``ray.data.read_binary_files``;
    any file system pyarrow knows: local, ``s3://``, ``gs://``, ...). Parquet is read as it is: it must hold a
    ``bytes``, ``image``, ``path`` or ``text`` column, or name its input column with ``column``.
    """
    ray_data = require("ray.data", "ray", "reading a dataset with Ray")
    sources = [source] if isinstance(source, (str, os.PathLike)) else list(source)
    sources = [str(item) for item in sources]
    if sources and all(item.rstrip("/").endswith(".parquet") for item in sources):
        dataset = ray_data.read_parquet(sources)
        names = dataset.schema().names
        wanted = [column] if column else list(INPUT_COLUMNS)
        if not any(name in names for name in wanted):
            raise InputError(f"{sources[0]} has none of the columns {', '.join(wanted)} (it has {', '.join(names)}); "
                             "name the input column with column='...'")
        return dataset
    from ..runtime.image import IMAGE_SUFFIXES

    return ray_data.read_binary_files(sources, include_paths=True, num_cpus=IO_CPUS,
                                      file_extensions=sorted(suffix.lstrip(".") for suffix in IMAGE_SUFFIXES))


def infer_dataset(source: str | list[str], model: str | os.PathLike, out: str, *, actors: int | None = None,
                  batch_size: int = 256, column: str | None = None, **options) -> None:
    """Read ``source`` (see :func:`read_inputs`), run ``model`` on every row in ``actors`` actors (default: one
    per CPU of the cluster) and write Parquet files into ``out`` (a folder or URI): the source's columns but the
    image bytes or arrays, plus :data:`OUTPUT_COLUMNS`. ``options`` are :class:`Predictor`'s (format, threads, top_k,
    threshold). Ray must be initialised (``ray.init()``).
    """
    ray = require("ray", "ray", "running a model with Ray")
    if actors is None:
        actors = max(1, int(ray.cluster_resources().get("CPU", 1)))
    dataset = read_inputs(source, column=column)
    predictions = dataset.map_batches(Predictor, fn_constructor_kwargs={"model": str(model), "column": column,
                                                                        **options},
                                      concurrency=actors, num_cpus=ACTOR_CPUS, batch_size=batch_size)
    predictions.write_parquet(out, ray_remote_args={"num_cpus": IO_CPUS})


__all__ = ["ACTOR_CPUS", "INPUT_COLUMNS", "IO_CPUS", "OUTPUT_COLUMNS", "Predictor", "infer_dataset",
           "read_inputs"]
