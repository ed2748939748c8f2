"""What ``edgecnn infer`` does, without the command-line parsing: open the model once, run every input, report.

One bad input never stops the run. Every input gets exactly one line: its result on stdout, or ``error: ...`` on
stderr naming it - a file that is not an image, a text line that is not UTF-8, a folder with nothing in it. An
unexpected exception on one input (a bug in edgecnn or a library) is reported the same way, with its type, and the
other inputs still run; only the exit code tells the two apart (:attr:`InferSummary.exit_code`). Options that do
not apply to the model's task (``--threshold`` on a classifier, ``--top-k`` on a detector) are refused up front
rather than silently ignored.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import EdgecnnError, InputError
from .tasks import Task, load

JSON_INPUT_CHARS = 80
DEFAULT_TOP_K = 3


@dataclass
class InferSummary:
    """How a run went: ``processed`` inputs got a result, ``failed`` an EdgecnnError, ``crashed`` anything else."""

    processed: int = 0
    failed: int = 0
    crashed: int = 0

    @property
    def exit_code(self) -> int:
        """0 when every input got its result; 2 when some failed for a reason edgecnn named; 1 when some hit an
        unexpected exception (a bug, as anywhere in the CLI), which outranks the named failures."""
        return 1 if self.crashed else 2 if self.failed else 0


def run_inference(model_dir: str | os.PathLike, inputs: Sequence[str], *, fmt: str | None = None,
                  top_k: int | None = None, threads: int | None = None, as_json: bool = False,
                  texts: Sequence[str] = (), text_files: Sequence[str] = (), lines_file: str | None = None,
                  threshold: float | None = None, save: str | None = None, watch_dir: str | None = None,
                  settle: float | None = None, debug: bool = False, emit: Callable[[str], None] = print,
                  report: Callable[[str], None] = print, inform: Callable[[str], None] = print) -> InferSummary:
    """Run the model in ``model_dir`` over the inputs; ``emit`` each result line, ``report`` each failure,
    ``inform`` status lines (the watch loop's start and summary; with ``debug``, tracebacks of unexpected errors).

    ``top_k``, ``threshold``, ``save`` and ``settle`` are None when not given; given to a task they do not apply to,
    they are an InputError before anything runs. The watch loop's summary is informed; it always returns an empty
    summary (exit 0: stopping a watch is its normal end).
    """
    task = load(model_dir, format=fmt, threads=threads)
    _check_options(task, inputs=inputs, texts=texts, text_files=text_files, lines_file=lines_file, top_k=top_k,
                   threshold=threshold, save=save, watch_dir=watch_dir, settle=settle)
    top_k = DEFAULT_TOP_K if top_k is None else top_k
    if watch_dir:
        return _watch(task, watch_dir, top_k=top_k, threshold=threshold, save=save, settle=settle, as_json=as_json,
                      emit=emit, report=report, inform=inform)
    items = _collect_items(task, inputs, texts, text_files, lines_file)
    # Several image inputs (or a folder): --save then names a folder too.
    run_one = _runner_for(task, top_k=top_k, threshold=threshold, save=save,
                          many=not isinstance(items, list) or len(items) != 1)
    summary = InferSummary()
    for name, payload in items:
        try:
            if isinstance(payload, EdgecnnError):
                raise payload
            result = run_one(payload)
        except EdgecnnError as exc:
            summary.failed += 1
            report(str(exc))
            continue
        except Exception as exc:  # noqa: BLE001 - one input's bug must not cost every other input its result
            summary.crashed += 1
            if debug:
                inform(traceback.format_exc().rstrip())
            label = name if name is not None else input_label(str(payload))
            report(f"{label}: internal error: {type(exc).__name__}: {exc} (a bug; the other inputs still ran; "
                   "--debug shows the traceback)")
            continue
        summary.processed += 1
        _emit(result, as_json, emit)
    return summary


def _check_options(task: Task, *, inputs, texts, text_files, lines_file, top_k, threshold, save, watch_dir,
                   settle) -> None:
    """Refuse options that would be silently ignored for this model's task."""
    model = f"{task.manifest.folder} is an {task.task} model"
    detection = task.task == "object-detection"
    from .tasks import is_multi_label

    multi_label = task.task != "object-detection" and is_multi_label(task.manifest)
    if threshold is not None and multi_label:  # which labels a multi-label result reports
        if not 0.0 <= threshold <= 1.0:
            raise InputError(f"--threshold {threshold}: give a score from 0 to 1")
        task.threshold = threshold
        threshold = None
    for option, value in (("--threshold", threshold), ("--save", save)):
        if value is not None and not detection:
            raise InputError(f"{option} applies to object-detection models; {model}")
    if top_k is not None and detection:
        raise InputError(f"--top-k applies to classification models; {model} (use --threshold to keep fewer "
                         "detections)")
    if task.task != "text-classification" and (texts or text_files or lines_file):
        raise InputError(f"--text, --text-file and --lines are for text models; {model}")
    if settle is not None and not watch_dir:
        raise InputError("--settle applies to --watch (how long a new file must stay unchanged); add --watch DIR")
    if watch_dir and task.task == "text-classification":
        raise InputError(f"--watch is for image models; {model}: use --lines - to classify texts as they come")
    if watch_dir and (inputs or texts or text_files or lines_file):
        raise InputError("--watch takes no other inputs; run a second edgecnn infer for the files you have")


def _watch(task: Task, watch_dir: str, *, top_k, threshold, save, settle, as_json, emit, report,
           inform) -> InferSummary:
    from .watch import DEFAULT_SETTLE, watch

    run_one = _runner_for(task, top_k=top_k, threshold=threshold, save=save, many=True)
    inform(f"watching {watch_dir} for new images (Ctrl-C to stop)")
    summary = watch(watch_dir, lambda path: _emit(run_one(str(path)), as_json, emit), report=report,
                    settle=DEFAULT_SETTLE if settle is None else settle)
    inform(f"watched {watch_dir}: {summary}")
    return InferSummary()


def _emit(result, as_json: bool, emit) -> None:
    if as_json:
        import json

        emit(json.dumps(result.to_dict(), ensure_ascii=False))
    else:
        emit(str(result))


def _collect_items(task: Task, inputs, texts, text_files, lines_file) -> Iterable:
    """``(name, payload)`` per input: an image path or a text, or the InputError that input already is.

    Images are listed up front (a folder is its images); texts come one at a time, so ``--lines -`` classifies
    each line as it arrives and a file is read only when its turn comes.
    """
    if task.task == "text-classification":
        from .text import read_text_inputs

        return read_text_inputs(inputs, texts, text_files, lines_file)
    from .image import list_images

    if not inputs:
        raise InputError("no input given; pass image files or a folder")
    items: list = []
    for item in map(str, inputs):
        if os.path.isdir(item):
            try:
                items.extend((str(p), str(p)) for p in list_images(item))
            except InputError as exc:
                items.append((item, exc))
        else:
            items.append((item, item))
    return items


def _runner_for(task: Task, top_k: int, threshold: float | None, save: str | None, many: bool):
    if task.task == "image-classification":
        return lambda path: task.classify(path, top_k=top_k)
    if task.task == "text-classification":
        from .text import TextFile, enough_for

        enough = enough_for(task.tokenizer)

        def classify_text(text):
            if not isinstance(text, TextFile):
                return task.classify(text, top_k=top_k)
            read = text.read_capped(enough)  # only as much of the file as the model can use
            result = task.classify(read.text, top_k=top_k, name=text.path)
            result.notes.extend(read.notes)
            return result

        return classify_text
    if task.task == "object-detection":
        def detect(path):
            result = task.detect(path, threshold=threshold)
            if save:
                target = Path(save) / f"{Path(path).stem}.png" if many or Path(save).is_dir() else Path(save)
                result.save(path, target)
            return result

        return detect
    raise InputError(f"cannot run {task.task} models")


def input_label(text: str, name: str | None = None) -> str:
    """What ``"input"`` shows for a text: the file name, or the text cut to 80 characters."""
    return name if name else (text if len(text) <= JSON_INPUT_CHARS else text[:JSON_INPUT_CHARS])


__all__: Iterable[str] = ["InferSummary", "input_label", "run_inference"]
