"""What ``edgecnn infer`` does, without the command-line parsing: open the model once, run every input, report.

Every good input gets its result even when others fail; bad inputs are reported one line each and counted, so the
CLI can exit 2 after doing all the work it could.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Callable

from ..errors import EdgecnnError, InputError
from .tasks import Task, iter_image_paths, load

JSON_INPUT_CHARS = 80


def run_inference(model_dir: str | os.PathLike, inputs: Sequence[str], *, fmt: str | None = None, top_k: int = 3,
                  threads: int | None = None, as_json: bool = False, texts: Sequence[str] = (),
                  text_files: Sequence[str] = (), lines_file: str | None = None, threshold: float | None = None,
                  save: str | None = None, watch_dir: str | None = None, emit: Callable[[str], None] = print,
                  report: Callable[[str], None] = print, inform: Callable[[str], None] = print) -> int:
    """Run the model in ``model_dir`` over the inputs; ``emit`` each result line, ``report`` each failure,
    ``inform`` status lines (the watch loop's start and summary).

    Returns the number of inputs that failed.
    """
    task = load(model_dir, format=fmt, threads=threads)
    if watch_dir:
        run_one = _runner_for(task, top_k=top_k, threshold=threshold, save=save, many=True)
        from .watch import watch

        def handle(path):
            _emit(run_one(str(path)), as_json, emit)

        inform(f"watching {watch_dir} for new images (Ctrl-C to stop)")
        summary = watch(watch_dir, handle, report=report)
        inform(f"watched {watch_dir}: {summary}")
        return 0
    items = _collect_items(task, inputs, texts, text_files, lines_file)
    # A folder argument is many images: --save then names a folder too.
    run_one = _runner_for(task, top_k=top_k, threshold=threshold, save=save, many=len(items) != 1)
    failures = 0
    for item in items:
        try:
            result = run_one(item)
        except EdgecnnError as exc:
            failures += 1
            report(str(exc))
            continue
        _emit(result, as_json, emit)
    return failures


def _emit(result, as_json: bool, emit) -> None:
    if as_json:
        import json

        emit(json.dumps(result.to_dict(), ensure_ascii=False))
    else:
        emit(str(result))


def _collect_items(task: Task, inputs, texts, text_files, lines_file) -> list:
    """The inputs to run: image paths (folders expanded) or (name, text) pairs for text models."""
    if task.task == "text-classification":
        from .text import read_text_inputs

        return read_text_inputs(inputs, texts, text_files, lines_file)
    if texts or text_files or lines_file:
        raise InputError(f"{task.manifest.folder} is an {task.task} model; --text, --text-file and --lines are "
                         "for text models")
    return iter_image_paths(inputs)


def _runner_for(task: Task, top_k: int, threshold: float | None, save: str | None, many: bool):
    if task.task == "image-classification":
        return lambda path: task.classify(path, top_k=top_k)
    if task.task == "text-classification":
        return lambda item: task.classify(item[1], top_k=top_k, name=item[0])
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


__all__: Iterable[str] = ["input_label", "run_inference"]
