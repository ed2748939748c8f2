"""One task object shared by threads gives exactly the answers serial calls give, for every task and format.

Each of 8 threads calls the SAME task object with DIFFERENT inputs (its own walk through the samples, single calls
and small batches mixed so that the model's input shape changes under the other threads' feet) and compares every
result with the one a serial call gave. A call that raises, and a call that returns another input's answer, both
fail the test.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

import edgecnn
from edgecnn.manifest import FORMATS
from edgecnn.runtime.text import TextFile

from .conftest import reference_export

THREADS = 8
CALLS_PER_THREAD = 24
BATCH = 3  # every fourth call classifies/detects this many inputs at once

#: export -> (make target, how to call the task on one input, on a batch, the sample files)
TASKS = {
    "digits-cnn": ("export-digits", lambda task, x: task.classify(x, top_k=10),
                   lambda task, xs: task.classify_batch(xs, top_k=10), "*.png"),
    "bbc-news": ("export-text", lambda task, x: task.classify(x, top_k=5),
                 lambda task, xs: task.classify_batch(xs, top_k=5), "*.txt"),
    "digit-detector": ("export-detector", lambda task, x: task.detect(x, threshold=0.2),
                       lambda task, xs: task.detect_batch(xs, threshold=0.2), "*.png"),
}


def _inputs(export: Path, pattern: str) -> list:
    files = sorted((export / "samples").glob(pattern))
    if pattern == "*.txt":
        return [TextFile(str(f)).read() for f in files]
    return [f.read_bytes() for f in files]  # bytes: no file name in the result, so only the answer can match


def _window(items: list, start: int) -> list:
    return [items[(start + k) % len(items)] for k in range(BATCH)]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("name", list(TASKS))
def test_shared_task_object_gives_serial_results_under_threads(name, fmt):
    make_target, one, many, pattern = TASKS[name]
    export = reference_export(name, make_target)
    task = edgecnn.load(export, format=fmt)
    items = _inputs(export, pattern)
    assert len(items) >= 8, f"{export}/samples holds too few inputs for this test"
    single = [one(task, x) for x in items]
    batched = [many(task, _window(items, i)) for i in range(len(items))]
    # The answers must differ between inputs, or a swapped answer would go unnoticed (int8 scores are coarse:
    # two samples of one class may share an answer exactly, and swapping those two is harmless).
    assert len({repr(r) for r in single}) >= len(items) // 2

    start = threading.Barrier(THREADS)
    failures: list[str] = []

    def work(thread: int) -> None:
        start.wait()
        for call in range(CALLS_PER_THREAD):
            i = (thread * 5 + call * 3) % len(items)
            try:
                if call % 4 == 3:
                    got, expected = many(task, _window(items, i)), batched[i]
                else:
                    got, expected = one(task, items[i]), single[i]
            except Exception as exc:  # noqa: BLE001 - any exception is a failure to report, not to propagate
                failures.append(f"thread {thread} call {call}: {type(exc).__name__}: {str(exc).splitlines()[0]}")
                continue
            if got != expected:
                failures.append(f"thread {thread} call {call} on input {i}: got {got}, serial gave {expected}")

    threads = [threading.Thread(target=work, args=(t,)) for t in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    total = THREADS * CALLS_PER_THREAD
    assert not failures, f"{len(failures)} of {total} threaded calls differ from serial; first: {failures[:3]}"
