"""Every core: ``edgecnn infer DIR --workers N`` runs the items in N processes, results in input order: N - 1
worker processes, and this one, which runs a chunk itself whenever the next result it must write is not ready.

Why processes: decoding a PNG in Pillow and the model call release the GIL only in part, and the per-item Python
around them (checks, preprocessing, ranking) not at all, so threads of one process do not scale on small images;
processes do. Each worker builds its chunk function once (``setup(*setup_args)``: the model opened once per process,
its session reused for every chunk), so a chunk costs only its own work, and a chunk of images is one model call
(:mod:`edgecnn.runtime.batching`), as in one process.

Why the parent works too: with N workers beside a parent that only waits, receives and writes, N + 1 processes
share N cores, and on 2 cores the parent's share (its start, 313 chunks received and 10,000 lines written) held
``--workers 2`` at 1.48x one process (BENCHMARKS.md). Running a chunk whenever the head of the line is not ready
keeps it busy without a schedule: its results wait in their place in the line, so the order stays the input's.

Why a pipe per worker and no threads: the parent's hands are its own. ``concurrent.futures``' process pool feeds
and drains its workers from two threads of the parent, which wake for every chunk and take the GIL from the
parent's own chunk (and a core from the worker): on 2 cores, once started, two processes did 1.63-1.71x the work of
one; with a pipe per worker, 1.83-1.91x (BENCHMARKS.md). Here the parent sends a chunk down a worker's pipe and
reads results between its own chunks (``poll``), so nothing runs in this process but its one thread. Items travel
in chunks (one pickled message per chunk, not per item), and at most a few chunks per worker are in flight, so a
long input is never queued all at once and a worker that ends the run last holds the parent up by those few at most.

No deadlock: the parent sends to a worker only while that worker's unanswered chunks fit well inside a pipe's
buffer (or when it has none: then the worker is waiting to read), so a send never blocks on a worker that is
itself blocked sending results.

On Linux the workers fork (they start in milliseconds, sharing the parent's imported modules); elsewhere they
spawn. Ctrl-C is the parent's alone: workers ignore SIGINT, and end when the parent says stop or its end of their
pipe is gone (a killed parent leaves no worker behind). A worker that dies ends the run with a one-line error.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import pickle
import signal
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator

from ..errors import EdgecnnError

CHUNK = 32  # items per message
IN_FLIGHT_PER_WORKER = 3  # unanswered chunks per worker: enough to keep it busy while the parent runs one
IN_FLIGHT_BYTES = 64 << 10  # and never more request bytes than this, far below a pipe's buffer (see above)


def physical_cores() -> int:
    """What ``--workers auto`` means: this machine's physical cores (logical CPUs where sysfs does not say), and
    never more than the CPUs this process may run on."""
    from .platform_info import physical_cores as sysfs_cores

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(sysfs_cores() or usable, usable))


def _serve(connection, setup: Callable, setup_args: tuple, inherited: tuple[int, ...] = ()) -> None:
    """A worker's life: build the chunk function once, then answer each chunk on the pipe until the parent says
    stop (an empty message) or its end of the pipe is gone (it died: then this worker must not live on)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    for fd in inherited:  # a forked worker's copies of the parent's pipe ends: held here, they would hide its end
        try:
            os.close(fd)
        except OSError:
            pass
    try:
        process_chunk = setup(*setup_args)
    except BaseException as exc:  # noqa: BLE001 - the parent raises it: it ends the run
        connection.send(("failed", _picklable(exc)))
        return
    while True:
        try:
            request = connection.recv_bytes()
        except (EOFError, OSError):  # the parent is gone
            return
        if not request:  # the run is over
            return
        try:
            connection.send(("done", process_chunk(pickle.loads(request))))
        except OSError:  # the parent stopped reading (Ctrl-C, or its reader went away): nothing to answer
            return


def _picklable(exc: BaseException) -> BaseException:
    try:
        pickle.dumps(exc)
        return exc
    except Exception:  # noqa: BLE001 - an exception that does not pickle still has a message
        return RuntimeError(f"{type(exc).__name__}: {exc}")


def _context():
    if sys.platform == "linux" and "fork" in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


class _Slot:
    """One chunk's place in the output line: its items, and their results once they are here."""

    __slots__ = ("batch", "results")

    def __init__(self, batch: list, results: list | None = None):
        self.batch, self.results = batch, results


class _Worker:
    """A worker process and the parent's end of its pipe, with the chunks it has not answered yet (oldest first:
    a worker answers in the order it was sent)."""

    def __init__(self, context, setup: Callable, setup_args: tuple, others: list[_Worker]):
        self.connection, theirs = context.Pipe(duplex=True)
        # forked, the worker holds a copy of every pipe end the parent has open: it closes the parent's own ones
        inherited = (tuple(end.connection.fileno() for end in [*others, self])
                     if context.get_start_method() == "fork" else ())
        self.process = context.Process(target=_serve, args=(theirs, setup, setup_args, inherited), daemon=True,
                                       name="edgecnn-worker")
        self.process.start()
        theirs.close()
        self.unanswered: deque[tuple[_Slot, int]] = deque()  # each with the size of its request

    def can_take(self, size: int) -> bool:
        if not self.unanswered:
            return True
        return (len(self.unanswered) < IN_FLIGHT_PER_WORKER
                and sum(sent for _, sent in self.unanswered) + size <= IN_FLIGHT_BYTES)

    def send(self, slot: _Slot, request: bytes) -> None:
        self.connection.send_bytes(request)
        self.unanswered.append((slot, len(request)))

    def receive(self) -> None:
        """Wait for the oldest unanswered chunk's results and put them in its slot."""
        try:
            status, value = self.connection.recv()
        except (EOFError, OSError):
            self.process.join(timeout=1)
            raise EdgecnnError(f"a --workers process ended unexpectedly (exit code {self.process.exitcode}); run "
                               "again with --workers 1 to see which input stops it") from None
        if status == "failed":
            raise value
        self.unanswered.popleft()[0].results = value

    def receive_ready(self) -> None:
        while self.unanswered and self.connection.poll():
            self.receive()

    def close(self) -> None:
        try:
            self.connection.send_bytes(b"")  # stop, once the chunks already sent are answered
        except OSError:
            pass  # the worker is gone already
        self.connection.close()
        self.process.join(timeout=10)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join()


def map_ordered(setup: Callable, setup_args: tuple, items: Iterable[tuple], *, workers: int,
                chunk: int = CHUNK, local: Callable | None = None) -> Iterator[tuple[tuple, object]]:
    """``((name, payload), result)`` for every item, in input order: ``setup(*setup_args)``, in the process that
    ran the item's chunk, returned a function from a list of payloads to their results, in order.

    That function must not raise for an item (wrap each, as :func:`edgecnn.runtime.batching.attempt` does); an
    exception in ``setup`` (the model cannot be opened in a worker) ends the run. ``setup`` must be a module-level
    function, so a spawned worker can import it. ``local`` is that function already made in this process (the
    parent's open model); without it, this process calls ``setup`` when it first runs a chunk.
    """
    items = iter(items)
    context = _context()
    helpers: list[_Worker] = []
    line: deque[_Slot] = deque()  # every chunk not yet written, in input order
    window = 2 * workers * IN_FLIGHT_PER_WORKER  # chunks held at most: a slow worker cannot make the line grow
    exhausted = False

    def next_chunk() -> list:
        nonlocal exhausted
        batch = [] if exhausted else list(itertools.islice(items, chunk))
        exhausted = exhausted or not batch
        return batch

    try:
        for _ in range(workers - 1):
            helpers.append(_Worker(context, setup, setup_args, helpers))
        pending_request: tuple[list, bytes] | None = None  # a chunk cut but not yet sent: no worker could take it
        while True:
            for helper in helpers:
                helper.receive_ready()
            for helper in helpers:
                while len(line) < window:
                    if pending_request is None:
                        batch = next_chunk()
                        if not batch:
                            break
                        pending_request = batch, pickle.dumps([payload for _, payload in batch],
                                                              protocol=pickle.HIGHEST_PROTOCOL)
                    if not helper.can_take(len(pending_request[1])):
                        break
                    slot = _Slot(pending_request[0])
                    helper.send(slot, pending_request[1])
                    line.append(slot)
                    pending_request = None
            if line and line[0].results is not None:
                slot = line.popleft()
                yield from zip(slot.batch, slot.results)
                continue
            if len(line) < window and (pending_request is not None or not exhausted):
                # the head is not ready: run the next chunk here meanwhile
                batch = pending_request[0] if pending_request else next_chunk()
                pending_request = None
                if batch:
                    local = local or setup(*setup_args)
                    line.append(_Slot(batch, local([payload for _, payload in batch])))
                    continue
            if not line:
                return
            owner = next(helper for helper in helpers if helper.unanswered and helper.unanswered[0][0] is line[0])
            owner.receive()  # nothing to do here: wait for the head's worker
    finally:
        for helper in helpers:
            helper.close()


__all__ = ["map_ordered", "physical_cores"]
