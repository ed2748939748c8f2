"""Process each image that appears in a folder: the loop behind ``edgecnn infer --watch DIR``.

A camera (``rpicam-still --timelapse``, a motion detector, an FTP upload) drops frames into a folder; we want one
result per frame, as soon as the frame is complete, for as long as the device runs. Hence:

* **Polling, standard library only.** inotify is Linux-only, misses files on network and FUSE mounts, and the
  ``watchdog`` package is one more compiled dependency on a Raspberry Pi; listing one folder a few times a second
  costs nothing next to an inference.
* **A file is ready when it stops changing**: its size and modification time are the same over ``settle_polls``
  consecutive polls. A frame written slowly in chunks is never read half-written (a camera that writes
  ``frame.jpg~`` and renames it is handled for free: only image suffixes count, and hidden files never do).
* **Never twice**: a file is processed once per version. The same name rewritten later with new content (a camera
  overwriting ``latest.jpg``) is a new image and is processed again; a file that is deleted is forgotten.
* **Never fatal**: a file that cannot be processed (corrupt, truncated, deleted under us) is reported and counted,
  and the loop goes on.
* **Stops cleanly** on Ctrl-C, on SIGTERM (``systemctl stop``, ``docker stop``) or when ``stop`` is set, and
  returns counts, so the CLI can print a summary and exit 0. The frame being processed is finished first, so every
  result line printed is counted; a second Ctrl-C interrupts at once (KeyboardInterrupt, also caught).

Files already in the folder when watching starts are skipped unless ``include_existing`` is set: they are the last
run's frames, not new ones.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

DEFAULT_INTERVAL = 0.25  # seconds between polls
DEFAULT_SETTLE_POLLS = 2  # unchanged polls before a file counts as complete (~0.5 s by default)


@dataclass
class WatchSummary:
    """What a watch did, for the closing line."""

    processed: int = 0
    failed: int = 0

    def __str__(self) -> str:
        return f"{self.processed} processed, {self.failed} failed"


class FolderWatcher:
    """The polling state machine, separate from the loop so tests can drive it one poll at a time.

    ``poll()`` lists the folder once and returns the files that became ready since the last poll, in name order.
    """

    def __init__(self, folder: str | os.PathLike, *, suffixes: Collection[str] | None = None,
                 settle_polls: int = DEFAULT_SETTLE_POLLS, include_existing: bool = False):
        from ..errors import InputError

        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise InputError(f"--watch {self.folder}: no such folder; create it or point --watch at the camera's "
                             "output folder")
        if suffixes is None:
            from .image import IMAGE_SUFFIXES as suffixes
        self.suffixes = {s.lower() for s in suffixes}
        self.settle_polls = max(1, int(settle_polls))
        self._pending: dict[str, tuple[tuple[int, int], int]] = {}  # name -> (signature, polls unchanged)
        self._done: dict[str, tuple[int, int]] = {}  # name -> signature of the version processed (or skipped)
        if not include_existing:
            self._done = self._scan()

    def _scan(self) -> dict[str, tuple[int, int]]:
        """Candidate files now in the folder -> (size, mtime_ns)."""
        found = {}
        try:
            entries = list(os.scandir(self.folder))
        except FileNotFoundError:
            return found  # the folder went away (an unmounted card); keep polling, it may come back
        for entry in entries:
            if entry.name.startswith(".") or os.path.splitext(entry.name)[1].lower() not in self.suffixes:
                continue
            try:
                if not entry.is_file():
                    continue
                stat = entry.stat()
            except FileNotFoundError:  # deleted between listing and stat
                continue
            found[entry.name] = (stat.st_size, stat.st_mtime_ns)
        return found

    def poll(self) -> list[Path]:
        """One look at the folder: the files whose size and mtime have held still for ``settle_polls`` polls."""
        current = self._scan()
        for name in list(self._done):
            if name not in current:
                del self._done[name]  # deleted: a new file of that name is a new image
        for name in list(self._pending):
            if name not in current:
                del self._pending[name]
        ready = []
        for name, signature in sorted(current.items()):
            if self._done.get(name) == signature:
                continue
            previous = self._pending.get(name)
            unchanged = previous[1] + 1 if previous and previous[0] == signature else 0
            if unchanged >= self.settle_polls:
                del self._pending[name]
                self._done[name] = signature
                ready.append(self.folder / name)
            else:
                self._pending[name] = (signature, unchanged)
        return ready


def iter_new_files(folder: str | os.PathLike, *, stop: threading.Event | None = None,
                   interval: float = DEFAULT_INTERVAL, settle_polls: int = DEFAULT_SETTLE_POLLS,
                   include_existing: bool = False, suffixes: Collection[str] | None = None,
                   on_poll: Callable[[], None] | None = None) -> Iterator[Path]:
    """Yield each image file that appears in ``folder`` once it is complete, until ``stop`` is set.

    ``on_poll`` is called after every poll (tests use it to write the next chunk of a slow file in step with the
    watcher). KeyboardInterrupt propagates to the caller; :func:`watch` stops cleanly on it and on signals.
    """
    watcher = FolderWatcher(folder, suffixes=suffixes, settle_polls=settle_polls, include_existing=include_existing)
    stop = stop or threading.Event()
    while not stop.is_set():
        ready = watcher.poll()
        if on_poll:
            on_poll()
        for path in ready:
            if stop.is_set():
                return
            yield path
        stop.wait(interval)


def watch(folder: str | os.PathLike, handle: Callable[[Path], object], *,
          report: Callable[[str], None] = print, stop: threading.Event | None = None,
          interval: float = DEFAULT_INTERVAL, settle_polls: int = DEFAULT_SETTLE_POLLS,
          include_existing: bool = False, suffixes: Collection[str] | None = None,
          on_poll: Callable[[], None] | None = None) -> WatchSummary:
    """Call ``handle(path)`` for every new, complete image in ``folder`` until Ctrl-C or ``stop``; return counts.

    A file ``handle`` fails on is reported through ``report`` (one line naming it) and counted as failed; the loop
    goes on. Expected failures (an EdgecnnError such as a corrupt image) are reported with their own message;
    anything else with its type, since a bad frame must never end a camera loop.

    Example::

        task = edgecnn.load("exported/digits-cnn")
        summary = watch("/home/pi/frames", lambda path: print(task.classify(path).label))
        print(summary)  # "12 processed, 1 failed"
    """
    from ..errors import EdgecnnError

    summary = WatchSummary()
    stop = stop or threading.Event()
    files = iter_new_files(folder, stop=stop, interval=interval, settle_polls=settle_polls,
                           include_existing=include_existing, suffixes=suffixes, on_poll=on_poll)
    previous = _stop_on_signals(stop)
    try:
        for path in files:
            try:
                handle(path)
            except EdgecnnError as exc:
                summary.failed += 1
                report(str(exc))
            except Exception as exc:  # noqa: BLE001 - a bad frame must not end the loop
                summary.failed += 1
                report(f"{path}: {type(exc).__name__}: {exc}")
            else:
                summary.processed += 1
    except KeyboardInterrupt:
        pass
    finally:
        files.close()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return summary


def _stop_on_signals(stop: threading.Event) -> dict:
    """Make SIGINT and SIGTERM set ``stop`` (the current file is finished, then the loop ends); returns the
    handlers to restore.

    A KeyboardInterrupt raised between a file's result and its count would lose the count of a result already
    printed; an event cannot. After the first Ctrl-C, the default handler is back, so a second one interrupts at
    once. Only the main thread may set signal handlers; elsewhere both signals keep their default meaning.
    """
    if threading.current_thread() is not threading.main_thread():
        return {}
    previous = {}

    def request_stop(signum, frame):
        stop.set()
        if signum == signal.SIGINT:
            signal.signal(signal.SIGINT, previous.get(signal.SIGINT, signal.default_int_handler))

    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            if signum == signal.SIGINT and signal.getsignal(signum) is signal.SIG_IGN:
                continue  # started with Ctrl-C ignored (nohup, a background job): leave it so
            previous[signum] = signal.signal(signum, request_stop)
        except (ValueError, OSError):
            continue
    return previous


__all__ = ["FolderWatcher", "WatchSummary", "iter_new_files", "watch"]
