"""Keep third-party C++ chatter off the user's stderr, which should carry edgecnn's own words only.

TensorFlow prints its oneDNN and absl start-up lines while it is imported, the TFLite converter prints
``fully_quantize: 0, inference_type: 6, ...`` and LiteRT ``INFO: Created TensorFlow Lite XNNPACK delegate`` - all from
C++ straight to file descriptor 2, before or beyond any environment variable or Python logger. The only way to keep
them from the user is to point descriptor 2 elsewhere around the call. Standard library only: export (TensorFlow)
and the runtime (LiteRT, on a Raspberry Pi) both use it.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import threading
from collections.abc import Iterator

#: Descriptor 2 belongs to the whole process: one thread at a time may redirect it, and a block inside another
#: block (an export that imports TensorFlow) leaves the outer redirection alone.
_lock = threading.RLock()
_depth = 0
#: What a failed call printed is kept up to this many bytes (its end: where the reason usually is).
KEEP_BYTES = 16384


class Captured:
    """What the block printed (``text``, filled in when the block ends), for callers that want to quote it."""

    text: str = ""


@contextlib.contextmanager
def quiet_stderr() -> Iterator[Captured]:
    """Send whatever is written to file descriptor 2 while the block runs to a temporary file.

    On success it is dropped. If the block raises, what it printed travels with the exception as a note (shown
    in tracebacks, i.e. with ``--debug``) and in ``Captured.text``: a failing conversion's own explanation is never
    lost, and the CLI's one-line error stays one line. Python's ``sys.stderr`` writes to the same descriptor, so
    warnings printed inside the block are captured too, and so is what other threads print meanwhile: keep the
    block around the noisy call only.
    """
    global _depth
    captured = Captured()
    with _lock:
        if _depth:  # inside another quiet block of this thread: that one captures
            _depth += 1
            try:
                yield captured
            finally:
                _depth -= 1
            return
        _flush()
        try:
            saved = os.dup(2)
        except OSError:  # no descriptor 2 at all (a daemon): nothing to keep quiet
            yield captured
            return
        _depth = 1
        with tempfile.TemporaryFile() as sink:
            os.dup2(sink.fileno(), 2)
            try:
                yield captured
            except BaseException as exc:
                _restore(saved)
                captured.text = _tail(sink)
                if captured.text.strip() and hasattr(exc, "add_note"):  # Python 3.11+
                    exc.add_note(f"stderr of the failed call:\n{captured.text.rstrip()}")
                raise
            else:
                _restore(saved)
                captured.text = _tail(sink)
            finally:
                _depth = 0


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()


def _restore(saved: int) -> None:
    _flush()
    os.dup2(saved, 2)
    os.close(saved)


def _tail(sink) -> str:
    size = sink.seek(0, os.SEEK_END)
    sink.seek(max(0, size - KEEP_BYTES))
    return sink.read().decode("utf-8", "replace")
