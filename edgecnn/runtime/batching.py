"""Each input's outcome, never an exception; and a classifier's image paths run in batches, one model call each.

Why batches: a run over many images (a folder, a glob; each ``--workers`` process with its chunks) is about
throughput, and a small model's call costs more per image one at a time: the digits CNN's onnxruntime call takes
~69 us for one 28x28 image and ~55 us an image in a batch of 32, and the Python around each call (the backend, the
probabilities, the input array) is paid once per batch instead of once per image.

Why each image is decoded on its own first: a file that is not an image, or a truncated one, must be its own error
line exactly as it is when run alone, and must not cost the other images of its batch their results; so the good
ones are stacked and run, the bad ones keep their errors. Should the runtime refuse a batch (a model file whose
batch axis cannot be resized), each image of it runs alone, as it would without batching. A file whose batch is
fixed (``--target mobile``'s batch-1 ``.ort``) runs one image per call from the start.

The results are those of one image at a time: the runtimes compute each row of a batch as they compute it alone
(the same bits, in every format of the digits export), and ``tests/test_workers.py`` compares the lines.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from ..errors import EdgecnnError
from .tasks import input_name

#: Images per model call: past ~8 the per-image cost of the digits model no longer falls; 32 keeps a batch small
#: (for a 224x224x3 model, 19 MB of float32 input) and is also the chunk a ``--workers`` process gets.
BATCH = 32


@dataclass
class Outcome:
    """What one item's attempt gave: a result, an EdgecnnError's message, or an unexpected exception's."""

    result: object = None
    error: str | None = None
    crash: str | None = None
    traceback: str | None = None


def attempt(process: Callable, payload) -> Outcome:
    """Run ``process(payload)``; never raise (one input's failure must not cost the others their results)."""
    try:
        if isinstance(payload, EdgecnnError):
            raise payload
        return Outcome(result=process(payload))
    except EdgecnnError as exc:
        return Outcome(error=str(exc))
    except Exception as exc:  # noqa: BLE001 - one input's bug must not cost every other input its result
        return Outcome(crash=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc().rstrip())


def batch_size(task) -> int:
    """Images per model call for ``task``: :data:`BATCH` for an image classifier whose model file has a free batch
    axis; 1 for any other (a fixed batch; a detector or a text model, whose items run one at a time)."""
    if task.task != "image-classification":
        return 1
    return BATCH if task.backend.input_shape[:1] == (None,) else 1


def batched(items: Iterable[tuple], size: int) -> Iterator[list[tuple]]:
    """``(name, payload)`` items in lists: consecutive image paths up to ``size`` at a time; any other item (a
    video frame, an input that already is an error) in a list of its own, in order. A frame is never held back
    waiting for others: a live source's line must come as soon as its frame is inferred."""
    group: list[tuple] = []
    for item in items:
        if size > 1 and isinstance(item[1], str):
            group.append(item)
            if len(group) == size:
                yield group
                group = []
            continue
        if group:
            yield group
            group = []
        yield [item]
    if group:
        yield group


def classify_paths(task, paths: list, top_k: int, one: Callable[[object], Outcome]) -> list[Outcome]:
    """The outcome of classifying each image (a path, or any source ``task.preprocess`` takes: bytes, an array),
    each decoded once and the good ones run :data:`BATCH` per model call; ``one`` is the attempt of a single image
    (what runs when the runtime refuses a batch). A result names its input as ``task.classify`` names it: a path
    by its path, bytes or an array not at all."""
    outcomes: list[Outcome] = []
    for start in range(0, len(paths), BATCH):
        outcomes += _classify_batch(task, paths[start:start + BATCH], top_k, one)
    return outcomes


def _classify_batch(task, paths: list, top_k: int, one: Callable[[object], Outcome]) -> list[Outcome]:
    decoded = [attempt(task.preprocess, path) for path in paths]
    good = [i for i, outcome in enumerate(decoded) if outcome.error is None and outcome.crash is None]
    if not good:
        return decoded
    try:
        probabilities = task.predict(np.concatenate([decoded[i].result for i in good]))
    except Exception:  # noqa: BLE001 - each image alone then gets exactly the outcome it gets without batching
        return [one(path) if decoded[i].result is not None else decoded[i] for i, path in enumerate(paths)]
    for i, scores in zip(good, probabilities):
        decoded[i] = attempt(lambda row, source=paths[i]: task.rank(row, top_k, input_name(source)), scores)
    return decoded


__all__ = ["BATCH", "Outcome", "attempt", "batch_size", "batched", "classify_paths"]
