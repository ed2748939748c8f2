"""Every core: ``edgecnn infer DIR --workers N`` runs the items in N processes, results in input order: N - 1
worker processes, and this one, which runs a chunk itself whenever the next result it must write is not ready.

Why processes: decoding a PNG in Pillow and the model call release the GIL only in part, and the per-item Python
around them (checks, preprocessing, ranking) not at all, so threads of one process do not scale on small images;
processes do. Each worker builds its chunk function once, in the pool's initializer (``setup(*setup_args)``: the
model opened once per process, its session reused for every chunk), so a chunk costs only its own work, and a
chunk of images is one model call (:mod:`edgecnn.runtime.batching`), as in one process.

Items travel in chunks (one pickled message per chunk, not per item: at ~0.3 ms an image, a message per item
would cost the parent as much as the work), and at most a few chunks per worker are in flight, so a long input
list is never queued all at once and results stream out in order as they come. On Linux the pool forks (workers
start in milliseconds, sharing the parent's imported modules); elsewhere it spawns. Ctrl-C is the parent's alone:
workers ignore SIGINT, and the parent cancels what is queued.

Why the parent works too: with N workers beside a parent that only waits, receives and writes, N + 1 processes
share N cores, and on 2 cores the parent's share (its start, 313 chunks received and 10,000 lines written) held
``--workers 2`` at 1.48x one process where two independent processes on halves of the folder reach 1.75x
(BENCHMARKS.md). Running a chunk whenever the head of the line is not ready keeps it busy without a schedule: its
results wait in their place in the queue, so the order stays the input's.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import signal
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor

CHUNK = 32  # items per message
IN_FLIGHT_PER_WORKER = 8  # chunks queued per worker: a worker the OS pauses holds up the output only this much

_process_chunk: Callable | None = None


def physical_cores() -> int:
    """What ``--workers auto`` means: this machine's physical cores (logical CPUs where sysfs does not say), and
    never more than the CPUs this process may run on."""
    from .platform_info import physical_cores as sysfs_cores

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(sysfs_cores() or usable, usable))


def _initialize(setup: Callable, setup_args: tuple) -> None:
    global _process_chunk
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    _process_chunk = setup(*setup_args)


def _run_chunk(payloads: list) -> list:
    return _process_chunk(payloads)


def _context():
    if sys.platform == "linux" and "fork" in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


def map_ordered(setup: Callable, setup_args: tuple, items: Iterable[tuple], *, workers: int,
                chunk: int = CHUNK, local: Callable | None = None) -> Iterator[tuple[tuple, object]]:
    """``((name, payload), result)`` for every item, in input order: ``setup(*setup_args)``, in the worker that
    ran the item's chunk, returned a function from a list of payloads to their results, in order.

    That function must not raise for an item (wrap each, as :func:`edgecnn.runtime.batching.attempt` does); an
    exception in ``setup`` (the model cannot be opened in a worker) ends the run. ``setup`` must be a module-level
    function, so a spawned worker can import it. ``local`` is that function already made in this process (the
    parent's open model); without it, this process calls ``setup`` when it first runs a chunk.
    """
    items = iter(items)
    helpers = workers - 1
    executor = ProcessPoolExecutor(max_workers=helpers, mp_context=_context(), initializer=_initialize,
                                   initargs=(setup, setup_args)) if helpers else None
    # Each entry: a chunk and its results, which are a Future (a worker's) or a list (run here).
    pending: deque[tuple[list, Future | list]] = deque()
    in_flight = 0
    exhausted = False

    def next_chunk() -> list:
        nonlocal exhausted
        batch = [] if exhausted else list(itertools.islice(items, chunk))
        exhausted = exhausted or not batch
        return batch

    try:
        while True:
            while executor and in_flight < helpers * IN_FLIGHT_PER_WORKER and not exhausted:
                batch = next_chunk()
                if batch:
                    pending.append((batch, executor.submit(_run_chunk, [payload for _, payload in batch])))
                    in_flight += 1
            head_ready = pending and (isinstance(pending[0][1], list) or pending[0][1].done())
            if not head_ready and len(pending) < 2 * workers * IN_FLIGHT_PER_WORKER:
                batch = next_chunk()  # the head is not ready: run the next chunk here meanwhile
                if batch:
                    local = local or setup(*setup_args)
                    pending.append((batch, local([payload for _, payload in batch])))
                    continue
            if not pending:
                return
            batch, results = pending.popleft()
            if not isinstance(results, list):
                results, in_flight = results.result(), in_flight - 1
            yield from zip(batch, results)
    finally:
        if executor:
            executor.shutdown(wait=True, cancel_futures=True)


__all__ = ["map_ordered", "physical_cores"]
