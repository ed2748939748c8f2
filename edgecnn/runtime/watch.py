"""Process each image that appears in a folder: the loop behind ``edgecnn infer --watch DIR``.

A camera (``rpicam-still --timelapse``, a motion detector, an FTP upload) drops frames into a folder; we want one
line per frame - its result, or why it has none - as soon as the frame is complete, for as long as the device runs.
The rule, which the README states too:

* **Ready = unchanged for a settle time.** A file is read once its size and modification time have stayed the same
  for ``settle`` seconds (``--settle``, default 1.0) on this machine's monotonic clock (a Raspberry Pi without a
  real-time clock may jump its wall clock at boot; file mtimes are only compared with each other).
* **Complete = its format's own end is there.** A writer can pause longer than any settle time. A PNG without its
  IEND chunk, a GIF without its trailer, a JPEG without its end-of-image marker, a WebP or BMP shorter than its
  header declares is still being written, and is not read: Pillow decodes a PNG cut anywhere in its last ~20 bytes,
  and a GIF missing its trailer, without complaint (measured), so "it decodes" is no proof of "it is complete".
  Such a file waits until it changes; if it stays unchanged for ``patience`` (5 settle times), it is tried anyway.
* **A failure is retried when the file changes.** A file that cannot be decoded (a TIFF or PPM cut short: those
  formats have no end mark) is not reported at once: it is tried again when it changes, and reported - one error
  line - only when it has stayed unchanged for ``patience`` and fails a last time. So a frame read half-written gets
  its result when complete, not an error line first.
* **Never twice.** A file is processed once per content: when it is ready, a blake2b hash of its bytes is compared
  with the version of that name processed before, so ``touch`` or a rewrite with the same bytes is skipped, and a
  camera overwriting ``latest.jpg`` with a new picture is a new frame. A deleted file is forgotten; a file of that
  name created later is new. Files already in the folder when watching starts are left alone (they are the last
  run's frames) unless ``include_existing`` is set; one of them rewritten later counts as new, since its earlier
  content was never hashed.
* **Polling, standard library only.** inotify is Linux-only, misses files on network and FUSE mounts, and the
  ``watchdog`` package is one more compiled dependency on a Raspberry Pi; listing one folder a few times a second
  costs nothing next to an inference. Only image suffixes count and hidden files never do, so a camera that writes
  ``frame.jpg~`` or ``.frame.jpg`` and renames it is handled for free.
* **Never fatal**: an unexpected exception while processing a file is reported with its type and the loop goes
  on; a file deleted under us is skipped.
* **Stops cleanly** on Ctrl-C, on SIGTERM (``systemctl stop``, ``docker stop``) or when ``stop`` is set, and
  returns counts, so the CLI can print a summary and exit 0. The frame being processed is finished first, so every
  result line printed is counted; a second Ctrl-C interrupts at once (KeyboardInterrupt, also caught).
"""

from __future__ import annotations

import hashlib
import math
import os
import signal
import threading
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

DEFAULT_INTERVAL = 0.25  # seconds between polls
DEFAULT_SETTLE = 1.0  # seconds a file's size and mtime must hold still before it is read
PATIENCE_SETTLES = 5  # settle times an unfinished-looking or failing file may stay unchanged before its last try
_HASH_BLOCK = 1 << 20
_TAIL = 16

Signature = tuple[int, int]  # (size, mtime_ns)


@dataclass
class WatchSummary:
    """What a watch did, for the closing line."""

    processed: int = 0
    failed: int = 0

    def __str__(self) -> str:
        return f"{self.processed} processed, {self.failed} failed"


def looks_complete(head: bytes, tail: bytes, size: int) -> bool:
    """False when the file's own format says bytes are missing at its end (see the module docstring).

    ``head`` is the file's start (at least 16 bytes when it has them), ``tail`` its last 16 bytes. Formats without
    such a mark (TIFF, PPM) always look complete: for them, a failed decode is the only sign. An empty file never
    does (a writer has created it and not yet written).
    """
    if size == 0:
        return False
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return tail.endswith(b"IEND\xaeB`\x82")
    if head.startswith(b"\xff\xd8"):
        return tail.endswith(b"\xff\xd9")
    if head.startswith((b"GIF87a", b"GIF89a")):
        return tail.endswith(b";")
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return size >= int.from_bytes(head[4:8], "little") + 8
    if head.startswith(b"BM") and len(head) >= 6:
        declared = int.from_bytes(head[2:6], "little")
        return declared == 0 or size >= declared  # some writers leave the size field 0
    return True


def _fingerprint(path: Path) -> tuple[bytes, bool, Signature]:
    """(blake2b of the bytes, whether they look complete, (size, mtime_ns) when reading began), read once."""
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as handle:
        stat = os.fstat(handle.fileno())
        head = tail = handle.read(_HASH_BLOCK)
        digest.update(head)
        size = len(head)
        for block in iter(lambda: handle.read(_HASH_BLOCK), b""):
            digest.update(block)
            tail = (tail + block)[-_TAIL:]
            size += len(block)
    return digest.digest(), looks_complete(head[:_TAIL], tail[-_TAIL:], size), (stat.st_size, stat.st_mtime_ns)


class FolderWatcher:
    """The polling state machine, separate from the loop so tests can drive it one poll at a time with a fake
    ``clock``.

    ``poll()`` lists the folder once and returns the files that became ready since the last poll, in name order.
    When processing one of them fails, tell the watcher with :meth:`failed`: it says whether the file will be tried
    again (so the failure need not be reported yet).
    """

    def __init__(self, folder: str | os.PathLike, *, suffixes: Collection[str] | None = None,
                 settle: float = DEFAULT_SETTLE, patience: float | None = None, include_existing: bool = False,
                 clock: Callable[[], float] = time.monotonic):
        from ..errors import InputError

        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise InputError(f"--watch {self.folder}: no such folder; create it or point --watch at the camera's "
                             "output folder")
        if not isinstance(settle, (int, float)) or not math.isfinite(settle) or settle < 0:
            raise InputError(f"--settle {settle!r}: give a number of seconds, 0 or more (default {DEFAULT_SETTLE})")
        if suffixes is None:
            from .image import IMAGE_SUFFIXES as suffixes
        self.suffixes = {s.lower() for s in suffixes}
        self.settle = float(settle)
        self.patience = PATIENCE_SETTLES * self.settle if patience is None else float(patience)
        self.clock = clock
        now = clock()
        # name -> (signature, clock time it was first seen with that signature)
        self._seen: dict[str, tuple[Signature, float]] = {}
        # name -> (signature of the version dealt with, digest of the content processed; None: never hashed)
        self._done: dict[str, tuple[Signature | None, bytes | None]] = {}
        self._waiting: dict[str, Signature] = {}  # versions held back: unfinished-looking, or failed a first try
        self._last_try: set[str] = set()  # names whose current offer is their last try
        self._offered: dict[str, tuple[Signature | None, bytes | None] | None] = {}  # done-entry before the offer
        if not include_existing:
            for name, signature in self._scan().items():
                self._seen[name] = (signature, now)
                self._done[name] = (signature, None)

    def _scan(self) -> dict[str, Signature]:
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
        """One look at the folder: the files that are ready (see the module docstring), each version once."""
        now = self.clock()
        current = self._scan()
        self._offered.clear()
        for state in (self._seen, self._done, self._waiting):
            for name in [n for n in state if n not in current]:
                del state[name]  # deleted: a new file of that name is a new image
        self._last_try &= set(current)
        ready = []
        for name, signature in sorted(current.items()):
            seen = self._seen.get(name)
            if seen is None or seen[0] != signature:  # new, or changed since the last poll: the clock starts again
                self._seen[name] = (signature, now)
                self._waiting.pop(name, None)
                self._last_try.discard(name)
                continue
            if self._done.get(name, (None, None))[0] == signature:
                continue
            last_try = name in self._waiting
            if now - seen[1] < (self.patience if last_try else self.settle):
                continue
            if self._offer(name, signature, last_try):
                ready.append(self.folder / name)
        return ready

    def _offer(self, name: str, signature: Signature, last_try: bool) -> bool:
        try:
            digest, complete, read_signature = _fingerprint(self.folder / name)
        except OSError:  # deleted or unreadable meanwhile: the next poll sees what became of it
            return False
        if read_signature != signature:  # it changed after all
            return False
        previous = self._done.get(name)
        if previous is not None and previous[1] == digest:  # touched, or rewritten with the same bytes
            self._done[name] = (signature, digest)
            return False
        if not complete and not last_try:
            self._waiting[name] = signature
            return False
        self._offered[name] = previous
        self._done[name] = (signature, digest)
        if last_try:
            self._last_try.add(name)
        return True

    def failed(self, path: Path) -> bool:
        """Processing ``path`` (returned by the last poll) failed: True if it will be tried again - when it changes,
        or a last time once it has stayed unchanged for ``patience`` - False if that was its last try."""
        name = Path(path).name
        if name not in self._offered or name in self._last_try:
            self._last_try.discard(name)
            return False
        previous = self._offered.pop(name)
        signature = self._done[name][0]
        if previous is None:
            del self._done[name]
        else:
            self._done[name] = previous
        self._waiting[name] = signature
        return True


def watch(folder: str | os.PathLike, handle: Callable[[Path], object], *,
          report: Callable[[str], None] = print, stop: threading.Event | None = None,
          interval: float = DEFAULT_INTERVAL, settle: float = DEFAULT_SETTLE, include_existing: bool = False,
          suffixes: Collection[str] | None = None, on_poll: Callable[[], None] | None = None,
          clock: Callable[[], float] = time.monotonic) -> WatchSummary:
    """Call ``handle(path)`` for every new, complete image in ``folder`` until Ctrl-C or ``stop``; return counts.

    A file ``handle`` fails on with an EdgecnnError (a corrupt image) is tried again when it changes; once it has
    failed for good it is reported through ``report`` (one line naming it) and counted as failed. Anything else is
    reported at once with its type, since a bad frame must never end a camera loop. ``on_poll`` is called after
    every poll (tests use it to write the next chunk of a slow file in step with the watcher).

    Example::

        task = edgecnn.load("exported/digits-cnn")
        summary = watch("/home/pi/frames", lambda path: print(task.classify(path).label))
        print(summary)  # "12 processed, 1 failed"
    """
    from ..errors import EdgecnnError

    watcher = FolderWatcher(folder, suffixes=suffixes, settle=settle, include_existing=include_existing,
                            clock=clock)
    summary = WatchSummary()
    stop = stop or threading.Event()
    previous = _stop_on_signals(stop)
    try:
        while not stop.is_set():
            ready = watcher.poll()
            if on_poll:
                on_poll()
            for path in ready:
                if stop.is_set():
                    break
                try:
                    handle(path)
                except EdgecnnError as exc:
                    if watcher.failed(path):
                        continue  # perhaps read half-written: its next version, or a last try, decides
                    summary.failed += 1
                    report(str(exc))
                except Exception as exc:  # noqa: BLE001 - a bad frame must not end the loop
                    summary.failed += 1
                    report(f"{path}: {type(exc).__name__}: {exc}")
                else:
                    summary.processed += 1
            stop.wait(interval)
    except KeyboardInterrupt:
        pass
    finally:
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


__all__ = ["DEFAULT_SETTLE", "FolderWatcher", "WatchSummary", "looks_complete", "watch"]
