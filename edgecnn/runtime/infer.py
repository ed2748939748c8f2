"""What ``edgecnn infer`` does, without the command-line parsing: open the model once, run every input, report.

One bad input never stops the run. Every input gets exactly one line: its result on stdout, or ``error: ...`` on
stderr naming it - a file that is not an image, a text line that is not UTF-8, a folder with nothing in it. An
unexpected exception on one input (a bug in edgecnn or a library) is reported the same way, with its type, and the
other inputs still run; only the exit code tells the two apart (:attr:`InferSummary.exit_code`). Options that do
not apply to the model's task (``--threshold`` on a classifier, ``--top-k`` on a detector) are refused up front
rather than silently ignored.

The inputs are one stream of ``(name, payload)`` items whatever they come from: files, folders and quoted globs
(an image path each), texts and lines (a text each), and video files, cameras and streams (a
:class:`~edgecnn.runtime.sources.Frame` each, read as its turn comes; see :mod:`edgecnn.runtime.sources`). Each item
goes through the same attempt (:func:`attempt`; a classifier's image paths are decoded one by one and run 32 per
model call, :mod:`edgecnn.runtime.batching`): in this process, or with ``--workers N`` in N worker processes
(:mod:`edgecnn.runtime.parallel`), whose outcomes come back in input order. A frame's line also carries its index
and timestamp. A run with a video source ends cleanly on Ctrl-C or SIGTERM, as ``--watch`` does, and informs a
summary per source (frames read, inferred, dropped, mean fps).
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import EdgecnnError, InputError
from .batching import Outcome, attempt, batch_size, batched, classify_paths
from .image import quiet_pillow
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


@dataclass
class FrameOptions:
    """Which frames of a video source are inferred (see :mod:`edgecnn.runtime.sources`); None: not given."""

    stride: int | None = None
    max_fps: float | None = None
    latest: bool = False

    def given(self) -> list[str]:
        return [name for name, value in (("--stride", self.stride), ("--max-fps", self.max_fps),
                                         ("--latest", self.latest or None)) if value is not None]


def run_inference(model_dir: str | os.PathLike, inputs: Sequence[str], *, fmt: str | None = None,
                  top_k: int | None = None, threads: int | None = None, as_json: bool = False,
                  texts: Sequence[str] = (), text_files: Sequence[str] = (), lines_file: str | None = None,
                  threshold: float | None = None, save: str | None = None, watch_dir: str | None = None,
                  settle: float | None = None, frames: FrameOptions | None = None, workers: int = 1,
                  stop: threading.Event | None = None, debug: bool = False, emit: Callable[[str], None] = print,
                  report: Callable[[str], None] = print, inform: Callable[[str], None] = print) -> InferSummary:
    """Run the model in ``model_dir`` over the inputs; ``emit`` each result line, ``report`` each failure,
    ``inform`` status lines (the watch loop's start and summary, the video sources' summaries; with ``debug``,
    tracebacks of unexpected errors).

    ``top_k``, ``threshold``, ``save``, ``settle`` and the ``frames`` options are None when not given; given where
    they do not apply, they are an InputError before anything runs. ``workers`` > 1 runs the items in that many
    processes (image models, files and folders). ``stop`` (set by SIGINT/SIGTERM during a run with a video source)
    ends the run after the current item. The watch loop's summary is informed; it always returns an empty summary
    (exit 0: stopping a watch is its normal end).
    """
    frames = frames or FrameOptions()
    inputs = [str(item) for item in inputs]
    task = load(model_dir, format=fmt, threads=_runtime_threads(threads, inputs, texts, text_files, workers))
    videos = _video_inputs(task, inputs)
    _check_options(task, inputs=inputs, texts=texts, text_files=text_files, lines_file=lines_file, top_k=top_k,
                   threshold=threshold, save=save, watch_dir=watch_dir, settle=settle, videos=videos,
                   frames=frames, workers=workers)
    top_k = DEFAULT_TOP_K if top_k is None else top_k
    if watch_dir or videos:  # live: a reader downstream (a pipe) gets each line as it happens, not in blocks
        emit = _flushed(emit)
    if watch_dir:
        return _watch(task, watch_dir, top_k=top_k, threshold=threshold, save=save, settle=settle, as_json=as_json,
                      emit=emit, report=report, inform=inform)
    stop = stop or threading.Event()
    items = _collect_items(task, inputs, texts, text_files, lines_file, frames, stop)
    # Several inputs (or a folder): --save then names a folder too.
    many = not isinstance(items, _ImageInputs) or items.many
    process = _processor(task, top_k=top_k, threshold=threshold, save=save, many=many)
    if workers > 1 and isinstance(items, _ImageInputs):
        from .parallel import CHUNK

        # never more processes than chunks: a worker for a handful of images only adds its start to the wait
        workers = min(workers, -(-len(items.entries) // CHUNK))
    if workers > 1:
        from .parallel import map_ordered

        setup = (str(task.manifest.folder), fmt, threads or 1, getattr(task, "threshold", None), top_k, threshold,
                 save, many, as_json)
        outcomes = map_ordered(_worker_process, setup, items, workers=workers, local=process.outcomes)
    else:
        outcomes = ((item, outcome) for group in batched(_until(stop, items), process.batch)
                    for item, outcome in zip(group, process.outcomes([payload for _, payload in group])))
    summary = InferSummary()
    previous = _stop_signals(stop) if videos else {}
    try:
        # One Pillow-warnings filter for the whole run, not one set and removed per image (~5 % of a folder run).
        with quiet_pillow():
            for (name, payload), outcome in outcomes:
                _tell(summary, name, payload, outcome, as_json=as_json, debug=debug, emit=emit, report=report,
                      inform=inform)
    except KeyboardInterrupt:  # a second Ctrl-C while a frame was read: end now, the summary still follows
        if not videos:
            raise
    finally:
        _restore_signals(previous)
        getattr(outcomes, "close", lambda: None)()
        if isinstance(items, _ImageInputs):
            for line in items.close():
                inform(line)
        process.close()
    return summary


def _runtime_threads(threads: int | None, inputs: Sequence[str], texts, text_files, workers: int) -> int | None:
    """The runtime threads of a run: ``--threads`` when given; else one for a run over many inputs (a folder, a
    glob, several files or texts), as each ``--workers`` process has; else the runtime's default (None).

    Why one: a run over many inputs is about throughput, and cores are what ``--workers`` spreads the items over.
    onnxruntime's default pool (a thread per physical core) parallelises each call and spins between calls: on a
    small model its second thread burned more CPU than it saved (10,000 28x28 PNGs: 4.9 s CPU against 2.2 s for
    one thread) and, on a shared machine, waited for a core on every call (wall 2x). One input, a video source or a
    watched folder is about latency, where the runtime's default is the better guess. Results are the same either
    way (tests/test_workers.py compares the lines).
    """
    if threads is not None:
        return threads
    if workers > 1:
        return 1
    from .sources import is_glob, is_video

    if any(is_video(item) for item in inputs):
        return None
    many = len(inputs) + len(texts) + len(text_files) > 1 or any(os.path.isdir(item) or is_glob(item)
                                                                  for item in inputs)
    return 1 if many else None


def _tell(summary: InferSummary, name, payload, outcome: Outcome, *, as_json, debug, emit, report, inform) -> None:
    """Count one outcome and print its one line."""
    if outcome.error is not None:
        summary.failed += 1
        report(outcome.error)
    elif outcome.crash is not None:
        summary.crashed += 1
        if debug:
            inform(outcome.traceback)
        label = name if name is not None else input_label(str(payload))
        report(f"{label}: internal error: {outcome.crash} (a bug; the other inputs still ran; --debug shows the "
               "traceback)")
    else:
        summary.processed += 1
        _emit(outcome.result, as_json, emit)


def _until(stop: threading.Event, items: Iterable) -> Iterator:
    for item in items:
        if stop.is_set():
            return
        yield item


def _stop_signals(stop: threading.Event) -> dict:
    from .watch import _stop_on_signals

    return _stop_on_signals(stop)


def _restore_signals(previous: dict) -> None:
    import signal

    for signum, handler in previous.items():
        signal.signal(signum, handler)


def _video_inputs(task: Task, inputs: Sequence[str]) -> list[str]:
    """The inputs that are video sources (image models only; a text model reads every input as a text file)."""
    if task.task == "text-classification":
        return []
    from .sources import is_video

    return [item for item in inputs if is_video(item)]


def _check_options(task: Task, *, inputs, texts, text_files, lines_file, top_k, threshold, save, watch_dir,
                   settle, videos=(), frames: FrameOptions | None = None, workers: int = 1) -> None:
    """Refuse options that would be silently ignored for this model's task or these inputs."""
    model = f"{task.manifest.folder} is an {task.task} model"
    detection = task.task == "object-detection"
    from .tasks import is_multi_label

    multi_label = task.task != "object-detection" and is_multi_label(task.manifest)
    if threshold is not None and multi_label:  # which labels a multi-label result reports
        if not 0.0 <= threshold <= 1.0:
            raise InputError(f"--threshold {threshold}: give a score from 0 to 1")
        task.threshold = threshold
        threshold = None
    if threshold is not None and not detection:
        raise InputError(f"--threshold applies to object-detection models; {model}")
    # A classifier's frames are saved with their top label drawn; its image inputs have nothing to draw.
    if save is not None and not detection and not (videos and len(videos) == len(inputs)):
        raise InputError(f"--save applies to object-detection models, and to video sources of any image model; "
                         f"{model}")
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
    given = (frames or FrameOptions()).given()
    if given and not videos:
        raise InputError(f"{given[0]} applies to video sources (a video file, a camera index such as 0, or a stream "
                         "URL); none of the inputs is one")
    if not isinstance(workers, int) or workers < 1:
        raise InputError(f"--workers {workers!r}: give a number of processes, 1 or more, or auto")
    if workers > 1 and (task.task == "text-classification" or videos or watch_dir):
        raise InputError("--workers applies to image files, folders and globs; texts, video sources and --watch "
                         "run in order in one process")


def _watch(task: Task, watch_dir: str, *, top_k, threshold, save, settle, as_json, emit, report,
           inform) -> InferSummary:
    from .watch import DEFAULT_SETTLE, watch

    process = _processor(task, top_k=top_k, threshold=threshold, save=save, many=True)
    inform(f"watching {watch_dir} for new images (Ctrl-C to stop)")
    summary = watch(watch_dir, lambda path: _emit(process(str(path)), as_json, emit), report=report,
                    settle=DEFAULT_SETTLE if settle is None else settle)
    inform(f"watched {watch_dir}: {summary}")
    return InferSummary()


def _flushed(emit: Callable[[str], None]) -> Callable[[str], None]:
    """``emit``, then stdout flushed: the CLI writes result lines unflushed (a folder run to a pipe would spend ~3 %
    of its time on one write per line), so a live source flushes each one itself."""
    def emit_and_flush(line: str) -> None:
        emit(line)
        sys.stdout.flush()
    return emit_and_flush


class RenderedLine(str):
    """A result already turned into its output line, by the ``--workers`` process that ran it: the line is what the
    parent needs, and a short string crosses the pipe for less than the typed result (and frees the parent, which
    writes every line, from rendering the worker's half)."""


def _line(result, as_json: bool) -> str:
    if isinstance(result, RenderedLine):
        return result
    if as_json:
        import json

        return json.dumps(result.to_dict(), ensure_ascii=False)
    return str(result)


def _emit(result, as_json: bool, emit) -> None:
    emit(_line(result, as_json))


def _collect_items(task: Task, inputs, texts, text_files, lines_file, frames: FrameOptions | None = None,
                   stop: threading.Event | None = None) -> Iterable:
    """``(name, payload)`` per input: an image path, a text, a video frame, or the InputError that input already is.

    Texts come one at a time, so ``--lines -`` classifies each line as it arrives and a file is read only when its
    turn comes; so do a video source's frames. Image files, folders and globs are listed up front.
    """
    if task.task == "text-classification":
        from .text import read_text_inputs

        return read_text_inputs(_expand_text_globs(inputs), texts, text_files, lines_file)
    if not inputs:
        raise InputError("no input given; pass image files, a folder, a quoted glob or a video source")
    return _ImageInputs(inputs, frames or FrameOptions(), stop or threading.Event())


def _expand_text_globs(inputs: Sequence[str]) -> list[str]:
    """Globs matching files become those files; one matching none stays as given (and fails as a missing file)."""
    from .sources import expand_glob, is_glob

    expanded: list[str] = []
    for item in inputs:
        try:
            expanded.extend(expand_glob(item) if is_glob(item) else [item])
        except InputError:
            expanded.append(item)
    return expanded


class _ImageInputs:
    """An image model's inputs, in order: each file, each image of a folder or glob, each frame of a video source.

    Video sources are opened when their turn comes (one that cannot be opened is one error item) and closed when
    their frames end; :meth:`close` closes any still open and returns the summary line of each source read.
    """

    def __init__(self, inputs: Sequence[str], frames: FrameOptions, stop: threading.Event):
        from .image import list_images
        from .sources import expand_glob, is_glob, is_video

        self.frames, self.stop = frames, stop
        self.entries: list = []  # (name, path or InputError) items, or a video source's name as a str
        for item in inputs:
            try:
                paths = expand_glob(item) if is_glob(item) else [item]
            except InputError as exc:
                self.entries.append((item, exc))
                continue
            for path in paths:
                if is_video(path):
                    self.entries.append(path)
                elif os.path.isdir(path):
                    try:
                        self.entries.extend((p, p) for p in list_images(path))
                    except InputError as exc:
                        self.entries.append((path, exc))
                else:
                    self.entries.append((path, path))
        self.many = len(self.entries) != 1
        self.sources: list = []

    def __iter__(self) -> Iterator:
        from .sources import VideoSource

        for entry in self.entries:
            if not isinstance(entry, str):
                yield entry
                continue
            try:
                source = VideoSource(entry, stride=self.frames.stride or 1, max_fps=self.frames.max_fps,
                                     latest=self.frames.latest, stop=self.stop)
            except EdgecnnError as exc:
                yield entry, exc
                continue
            self.sources.append(source)
            yield from ((entry, frame) for frame in source)
            source.close()
            if self.stop.is_set():  # Ctrl-C or SIGTERM: the sources after this one are not opened
                return

    def close(self) -> list[str]:
        lines = []
        for source in self.sources:
            source.close()
            lines.append(source.summary())
        return lines


@dataclass
class FrameResult:
    """A video frame's result: the task's own result, plus where in the source the frame was."""

    result: object
    frame: int
    timestamp: float

    def __str__(self) -> str:
        return str(self.result).replace(f"{self.result.input}: ", f"{self.where}: ", 1)

    @property
    def where(self) -> str:
        return f"{self.result.input} frame {self.frame} ({self.timestamp:.3f} s)"

    def to_dict(self) -> dict:
        data = self.result.to_dict()
        return {"input": data.pop("input"), "frame": self.frame, "timestamp": round(self.timestamp, 6), **data}


def _processor(task: Task, top_k: int, threshold: float | None, save: str | None, many: bool):
    """payload -> result: the task's call for an image path, a text or a frame, then --save's drawing."""
    infer = runner_for(task, top_k=top_k, threshold=threshold)
    saver = _Saver(task, save, many) if save else None
    # Only classifiers batch (batching.batch_size), and --save has nothing to draw on their image inputs.
    batch = batch_size(task) if saver is None else 1
    run_paths = (lambda paths, one: classify_paths(task, paths, top_k, one)) if batch > 1 else None
    return _Processor(infer, saver, batch, run_paths)


class _Processor:
    """Calls the task on one payload (a frame's pixels for a frame) and saves the drawing --save asks for;
    :meth:`outcomes` runs a list of payloads, image paths ``batch`` per model call (:mod:`.batching`)."""

    def __init__(self, infer: Callable, saver: _Saver | None, batch: int = 1,
                 run_paths: Callable[[list, Callable], list[Outcome]] | None = None):
        self.infer, self.saver, self.batch, self.run_paths = infer, saver, batch, run_paths

    def attempt(self, payload) -> Outcome:
        return attempt(self, payload)

    def outcomes(self, payloads: list) -> list[Outcome]:
        """Each payload's outcome, in order: the image paths among them through one model call per ``batch``
        when this task batches, anything else (a frame, an input that already is an error) one at a time."""
        paths = [i for i, payload in enumerate(payloads) if isinstance(payload, str)]
        if self.run_paths is None or len(paths) < 2:
            return [attempt(self, payload) for payload in payloads]
        outcomes = [None if isinstance(payload, str) else attempt(self, payload) for payload in payloads]
        for start in range(0, len(paths), self.batch):
            chunk = paths[start:start + self.batch]
            for i, outcome in zip(chunk, self.run_paths([payloads[i] for i in chunk], self.attempt)):
                outcomes[i] = outcome
        return outcomes

    def __call__(self, payload):
        from .sources import Frame

        if not isinstance(payload, Frame):
            result = self.infer(payload)
            if self.saver:
                self.saver.save_image(payload, result)
            return result
        result = self.infer(payload.pixels)
        result.input = payload.source
        if self.saver:
            self.saver.save_frame(payload, result)
        return FrameResult(result, payload.index, payload.timestamp)

    def close(self) -> None:
        if self.saver:
            self.saver.close()


class _Saver:
    """--save: detections drawn into a PNG per image input (the path, or one per input in a folder), and every
    inferred frame of a video source, boxes or top label drawn, into a video (the path, or ``STEM.mp4`` in it)."""

    def __init__(self, task: Task, save: str, many: bool):
        self.task, self.save, self.many = task, Path(save), many
        self.writers: dict = {}

    def _target(self, name: str, suffix: str) -> Path:
        return self.save / f"{Path(name).stem}{suffix}" if self.many or self.save.is_dir() else self.save

    def save_image(self, path, result) -> None:
        result.save(path, self._target(str(path), ".png"))

    def save_frame(self, frame, result) -> None:
        from PIL import Image

        from .sources import VideoWriter, draw_label

        image = Image.fromarray(frame.pixels)
        if self.task.task == "object-detection":
            from .detection import draw_detections

            drawn = draw_detections(image, result.detections)
        else:
            drawn = draw_label(image, f"{result.label} {result.score:.2f}" if result.categories else "-")
        writer = self.writers.get(frame.source)
        if writer is None:
            stem = "camera-" + frame.source if frame.source.isdigit() else frame.source.rstrip("/")
            writer = self.writers[frame.source] = VideoWriter(self._target(stem, ".mp4"), frame.rate)
        writer.write(drawn)

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()


def runner_for(task: Task, top_k: int, threshold: float | None):
    """The task's call for one payload: an image (path, bytes or pixels), a text, or a text file
    (:class:`~edgecnn.runtime.text.TextFile`, read only as far as the model can use); also what
    :mod:`edgecnn.integrations.ray` calls per row, so both give the same answers."""
    if task.task == "image-classification":
        return lambda image: task.classify(image, top_k=top_k)
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
        return lambda image: task.detect(image, threshold=threshold)
    raise InputError(f"cannot run {task.task} models")


_WORKER: dict = {}


def _worker_process(model_dir: str, fmt, threads: int, label_threshold, top_k: int, threshold, save, many: bool,
                    as_json: bool):
    """In a worker process (:mod:`.parallel`), once: the model opened as the parent opened it; returns what
    runs a chunk of payloads (their outcomes, in order, image paths batched as in one process, each result
    rendered as its line)."""
    task = load(model_dir, format=fmt, threads=threads)
    if label_threshold is not None and task.task != "object-detection":
        task.threshold = label_threshold  # a multi-label --threshold, as _check_options set it in the parent
    process = _processor(task, top_k=top_k, threshold=threshold, save=save, many=many)

    def rendered_outcomes(payloads: list) -> list[Outcome]:
        outcomes = process.outcomes(payloads)
        return [attempt(render, outcome.result) if outcome.result is not None else outcome for outcome in outcomes]

    def render(result) -> RenderedLine:
        return RenderedLine(_line(result, as_json))

    return rendered_outcomes


def input_label(text: str, name: str | None = None) -> str:
    """What ``"input"`` shows for a text: the file name, or the text cut to 80 characters."""
    return name if name else (text if len(text) <= JSON_INPUT_CHARS else text[:JSON_INPUT_CHARS])


__all__: Iterable[str] = ["FrameOptions", "FrameResult", "InferSummary", "Outcome", "attempt", "input_label",
                          "run_inference", "runner_for"]
