"""Every core: ``edgecnn infer DIR --workers N`` runs the items in N worker processes, results in input order.

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
                chunk: int = CHUNK) -> Iterator[tuple[tuple, object]]:
    """``((name, payload), result)`` for every item, in input order: ``setup(*setup_args)``, in the worker that
    ran the item's chunk, returned a function from a list of payloads to their results, in order.

    That function must not raise for an item (wrap each, as :func:`edgecnn.runtime.batching.attempt` does); an
    exception in ``setup`` (the model cannot be opened in a worker) ends the run. ``setup`` must be a module-level
    function, so a spawned worker can import it.
    """
    items = iter(items)
    executor = ProcessPoolExecutor(max_workers=workers, mp_context=_context(), initializer=_initialize,
                                   initargs=(setup, setup_args))
    pending: deque[tuple[list, Future]] = deque()
    try:
        while True:
            while len(pending) < workers * IN_FLIGHT_PER_WORKER:
                batch = list(itertools.islice(items, chunk))
                if not batch:
                    break
                pending.append((batch, executor.submit(_run_chunk, [payload for _, payload in batch])))
            if not pending:
                return
            batch, future = pending.popleft()
            yield from zip(batch, future.result())
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


__all__ = ["map_ordered", "physical_cores"]
