"""The served models and the bounded pool of worker threads that runs them (no web framework here).

Why every worker has task objects of its own instead of sharing one: a worker borrows a session that no other
thread touches, so inference needs no lock whatever the backend (onnxruntime's session is thread-safe, a
LiteRT interpreter is not, and tflite-runtime on a 32-bit Pi is older still); each session gets ``threads``
runtime threads so that ``workers x threads`` matches the cores instead of every session spinning one thread
per core; and the issue asks for exactly this - one runtime session per worker, opened once at start-up and
reused. The models are small (100 kB - 2 MB), so N copies cost little memory.

At most ``workers`` calls run at once (a ThreadPoolExecutor of that size) and each model holds ``workers``
task objects, so borrowing one never waits. Requests beyond the workers wait in line, up to ``max_queue``;
past that the server answers 503 at once rather than piling up work it cannot finish in time.
"""

from __future__ import annotations

import asyncio
import os
import queue
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..errors import EdgecnnError, InputError
from ..runtime.batching import Outcome, attempt, classify_paths
from ..runtime.describe import describe_export
from ..runtime.tasks import Task, load
from .errors import ServerBusyError, UnknownModelError
from .inputs import Inputs

#: Requests that may wait for a worker before the server answers 503.
DEFAULT_MAX_QUEUE = 256


def usable_cpus() -> int:
    """CPUs this process may run on (a container's or taskset's limit, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


class ServedModel:
    """One export folder, opened once per worker; ``predict`` runs a request's inputs on a free session."""

    def __init__(self, folder: str | os.PathLike, fmt: str | None, workers: int, threads: int | None):
        first = load(folder, format=fmt, threads=threads)
        self.name = Path(first.manifest.folder).name
        self.folder = str(first.manifest.folder)
        self.task = first.task
        self.format = first.format
        self.labels = first.labels
        self.summary = self._summary(first)
        self._sessions: queue.SimpleQueue[Task] = queue.SimpleQueue()
        self._sessions.put(first)
        for _ in range(workers - 1):
            self._sessions.put(type(first)(first.manifest, format=first.format, threads=threads))

    def _summary(self, task: Task) -> dict:
        """What ``GET /v1/models`` says about this model: ``edgecnn info DIR``'s data, minus local paths, plus
        the name it is served under and the format it runs."""
        info = describe_export(self.folder)
        info.pop("model", None)
        rest = {k: v for k, v in info.items() if k not in ("name", "task")}
        summary = {"name": self.name, "task": self.task, "format": self.format,
                   "formats": list(info["files"]), **rest}
        if self.task == "object-detection":
            summary["threshold"] = task.threshold
        return summary

    def predict(self, inputs: Inputs, top_k: int = 5, threshold: float | None = None) -> dict:
        """Run the inputs on one of this model's sessions (in a worker thread); the answer as a JSON-ready
        dict.

        A batch of images is decoded one image at a time and its good images run in one model call (32 per
        call), so a bad image is its own one-line error and costs the others nothing, as in ``edgecnn infer``
        (:func:`edgecnn.runtime.batching.classify_paths`). A batch of texts or for a detector is one call when
        every input is good; when one is not, each input runs alone.
        """
        task = self._sessions.get()
        try:
            one, many = self._runners(task, top_k, threshold)
            if inputs.single:
                return {"model": self.name, "format": self.format, **self._as_dict(one(inputs.items[0],
                                                                                         inputs.names[0]),
                                                                                     inputs.names[0])}
            results = _each_alone_if_one_fails(one, many, inputs)
        finally:
            self._sessions.put(task)
        return {"model": self.name, "format": self.format,
                "results": [self._as_dict(r, name) for r, name in zip(results, inputs.names)]}

    def _runners(self, task, top_k: int, threshold: float | None):
        """(one input -> result, all inputs -> results) for this task."""
        if self.task == "image-classification":  # each image decoded once; a bad one never raises for the batch
            def classify(item, name):
                return task.classify(item, top_k=top_k)

            return classify, lambda items, names: [_result_or_error(outcome) for outcome in classify_paths(
                task, list(items), top_k, lambda item: attempt(lambda x: classify(x, None), item))]
        if self.task == "text-classification":
            return (lambda item, name: task.classify(item, top_k=top_k, name=name),
                    lambda items, names: task.classify_batch(items, top_k=top_k, names=names))
        if self.task == "object-detection":
            return (lambda item, name: task.detect(item, threshold=threshold),
                    lambda items, names: task.detect_batch(items, threshold=threshold))
        raise InputError(f"edgecnn serve cannot run {self.task} models")

    @staticmethod
    def _as_dict(result, name: str | None) -> dict:
        if isinstance(result, EdgecnnError):
            return {"input": name, "error": str(result)}
        data = result.to_dict()
        if name is not None:
            data["input"] = name
        if getattr(result, "image_size", None):
            data["image_size"] = list(result.image_size)  # boxes are in these pixels: what a client draws on
        return data


def _each_alone_if_one_fails(one, many, inputs: Inputs) -> list:
    """``many`` over every input at once; if that raises an EdgecnnError (a bad input among them), each input
    alone, a bad one's EdgecnnError in its place."""
    try:
        return many(inputs.items, inputs.names)
    except EdgecnnError:
        results = []
        for item, name in zip(inputs.items, inputs.names):
            try:
                results.append(one(item, name))
            except EdgecnnError as exc:
                results.append(exc)
        return results


def _result_or_error(outcome: Outcome):
    """An image's result, or its EdgecnnError to answer in its place; an unexpected exception (a bug) fails the
    request as it would for a single image."""
    if outcome.crash is not None:
        raise RuntimeError(outcome.crash)
    return EdgecnnError(outcome.error) if outcome.error is not None else outcome.result


class Models:
    """Every served model by name, and the worker pool that runs them."""

    def __init__(self, folders, fmt: str | None = None, workers: int | None = None,
                 threads: int | None = None, max_queue: int = DEFAULT_MAX_QUEUE):
        if not folders:
            raise InputError("no model given; pass one or more export folders (edgecnn serve DIR [DIR ...])")
        cpus = usable_cpus()
        self.workers = max(1, int(workers or cpus))
        self.threads = threads or max(1, cpus // self.workers)
        self.max_queue = max(0, int(max_queue))
        self.models: dict[str, ServedModel] = {}
        for folder in folders:
            model = ServedModel(folder, fmt, self.workers, self.threads)
            if model.name in self.models:
                raise InputError(f"two models would be served as {model.name!r} "
                                 f"({self.models[model.name].folder} and {model.folder}); serve folders with "
                                 "different names")
            self.models[model.name] = model
        self._executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="edgecnn-worker")
        self._waiting = 0  # requests handed to the pool and not yet answered; touched on the event loop only

    def get(self, name: str) -> ServedModel:
        try:
            return self.models[name]
        except KeyError:
            raise UnknownModelError(f"no model named {name!r} is served here; GET /v1/models lists "
                                    f"{', '.join(self.models)}") from None

    async def run(self, function, *args):
        """Run ``function(*args)`` on a worker thread; ServerBusyError when the line is already full."""
        if self._waiting >= self.workers + self.max_queue:
            raise ServerBusyError(f"all {self.workers} workers are busy and {self.max_queue} requests are "
                                  "waiting; retry shortly, or start edgecnn serve with more --workers or a "
                                  "larger --max-queue")
        self._waiting += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)
        finally:
            self._waiting -= 1

    @property
    def waiting(self) -> int:
        return self._waiting

    def close(self) -> None:
        """Let running calls finish, then stop the worker threads (uvicorn has stopped taking requests)."""
        self._executor.shutdown(wait=True, cancel_futures=True)
