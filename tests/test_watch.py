"""The --watch loop: new complete images once each, slow and pausing writers waited for, bad files retried then
reported once, clean stops.

The poll-level tests drive :class:`FolderWatcher` one poll at a time with a fake clock (no sleeps, no threads). The
loop-level tests write files from another thread in lockstep with the watcher's polls (``on_poll``), with a clock
that advances a fixed step per poll, and stop through an explicit event once every expected file is accounted for,
so they are quick and deterministic.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from edgecnn.errors import InputError
from edgecnn.runtime.watch import FolderWatcher, looks_complete, watch

from .conftest import ROOT

SUFFIXES = {".png", ".jpg", ".tif", ".gif"}


def _write(path: Path, data: bytes, mtime_ns: int | None = None) -> None:
    path.write_bytes(data)
    if mtime_ns is not None:  # pin mtimes so "rewritten" never depends on the file system's clock resolution
        os.utime(path, ns=(mtime_ns, mtime_ns))


def _image(fmt: str, seed: int = 0, size=(40, 30)) -> bytes:
    image = Image.effect_noise(size, 40 + seed).convert("RGB")
    buffer = io.BytesIO()
    (image.convert("P") if fmt == "GIF" else image).save(buffer, format=fmt)
    return buffer.getvalue()


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _watcher(folder, clock, **options) -> FolderWatcher:
    return FolderWatcher(folder, suffixes=SUFFIXES, settle=1.0, clock=clock, **options)


def _polls(watcher, clock, seconds: float, step: float = 0.25) -> list[Path]:
    """Poll every ``step`` seconds for ``seconds``; everything that became ready, in order."""
    ready = []
    for _ in range(round(seconds / step)):
        clock.now += step
        ready += watcher.poll()
    return ready


def test_new_file_is_ready_only_after_it_held_still_for_the_settle_time(tmp_path):
    clock = Clock()
    watcher = _watcher(tmp_path, clock)
    _write(tmp_path / "a.png", _image("PNG"))
    assert watcher.poll() == []  # first sight
    clock.now += 0.9
    assert watcher.poll() == []  # unchanged, but not for a whole second yet
    clock.now += 0.1
    assert watcher.poll() == [tmp_path / "a.png"]
    assert _polls(watcher, clock, 10) == []  # never twice


def test_growing_file_waits_until_it_stops_growing(tmp_path):
    clock = Clock()
    watcher = _watcher(tmp_path, clock)
    path = tmp_path / "slow.jpg"
    data = _image("JPEG")
    for end in range(100, len(data), 100):
        _write(path, data[:end])
        clock.now += 0.75  # a chunk every 0.75 s: never unchanged for the 1 s settle time
        assert watcher.poll() == [], f"returned while still being written ({end} bytes)"
    _write(path, data)
    assert _polls(watcher, clock, 1.0) == [] and _polls(watcher, clock, 0.25) == [path]


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF"])
def test_writer_pausing_longer_than_the_settle_time_is_not_read_half_written(tmp_path, fmt):
    clock = Clock()
    watcher = _watcher(tmp_path, clock)
    path = tmp_path / f"frame.{ {'PNG': 'png', 'JPEG': 'jpg', 'GIF': 'gif'}[fmt]}"
    data = _image(fmt)
    _write(path, data[:-5])  # Pillow decodes a PNG or GIF cut this short without complaint: only its end mark tells
    assert _polls(watcher, clock, 4.0) == [], "a half-written file was handed out"
    _write(path, data)
    assert _polls(watcher, clock, 2.0) == [path]
    assert _polls(watcher, clock, 10.0) == []


def test_unfinished_looking_file_is_tried_after_the_patience(tmp_path):
    clock = Clock()
    watcher = _watcher(tmp_path, clock)
    _write(tmp_path / "cut.png", _image("PNG")[:-30])  # the writer died: it never completes
    assert _polls(watcher, clock, 4.75) == []
    assert _polls(watcher, clock, 0.5) == [tmp_path / "cut.png"]  # 5 settle times unchanged: tried anyway
    assert watcher.failed(tmp_path / "cut.png") is False  # ...and that was its last try: report it
    assert _polls(watcher, clock, 20) == []


def test_failed_file_is_retried_when_it_changes_and_not_reported_yet(tmp_path):
    clock = Clock()
    watcher = _watcher(tmp_path, clock)
    path = tmp_path / "frame.tif"  # TIFF has no end mark: a half-written one looks complete
    data = _image("TIFF")
    _write(path, data[: len(data) // 2])
    assert _polls(watcher, clock, 1.25) == [path]
    assert watcher.failed(path) is True  # it failed to decode: tried again later, not reported
    assert _polls(watcher, clock, 2.0) == []
    _write(path, data)  # the writer comes back and finishes
    assert _polls(watcher, clock, 1.25) == [path]


def test_corrupt_file_is_tried_twice_then_reported_once(tmp_path):
    clock = Clock()
    watcher = _watcher(tmp_path, clock)
    path = tmp_path / "corrupt.png"
    data = _image("PNG")
    _write(path, data[:40] + b"\x00" * 100 + data[140:])  # complete-looking: IEND is there
    assert _polls(watcher, clock, 1.25) == [path]
    assert watcher.failed(path) is True
    assert _polls(watcher, clock, 3.75) == []
    assert _polls(watcher, clock, 0.25) == [path]  # unchanged for the patience (5 s): the last try
    assert watcher.failed(path) is False
    assert _polls(watcher, clock, 20) == []


def test_touch_or_same_bytes_rewritten_is_not_processed_again(tmp_path):
    clock = Clock()
    watcher = _watcher(tmp_path, clock)
    path = tmp_path / "frame.png"
    data = _image("PNG")
    _write(path, data, mtime_ns=1_000_000_000)
    assert _polls(watcher, clock, 1.25) == [path]
    os.utime(path, ns=(2_000_000_000, 2_000_000_000))  # touch
    assert _polls(watcher, clock, 3) == []
    _write(path, data, mtime_ns=3_000_000_000)  # the same bytes written again
    assert _polls(watcher, clock, 3) == []
    _write(path, _image("PNG", seed=1), mtime_ns=4_000_000_000)  # a new picture under the same name
    assert _polls(watcher, clock, 1.25) == [path]


def test_files_present_at_start_are_skipped_unless_asked(tmp_path):
    _write(tmp_path / "old.png", _image("PNG"))
    clock = Clock()
    skipping = _watcher(tmp_path, clock)
    including = _watcher(tmp_path, clock, include_existing=True)
    assert _polls(skipping, clock, 3) == []
    assert _polls(including, clock, 3) == [tmp_path / "old.png"]


def test_only_visible_image_files_count(tmp_path):
    clock = Clock()
    watcher = _watcher(tmp_path, clock)
    for name in ("notes.txt", ".hidden.png", "frame.jpg.part", "frame.JPG"):
        _write(tmp_path / name, _image("JPEG"))
    (tmp_path / "folder.png").mkdir()
    assert _polls(watcher, clock, 2) == [tmp_path / "frame.JPG"]


def test_rewritten_or_recreated_file_is_a_new_image(tmp_path):
    clock = Clock()
    watcher = _watcher(tmp_path, clock)
    path = tmp_path / "latest.jpg"
    first, second = _image("JPEG", seed=0), _image("JPEG", seed=1)
    _write(path, first, mtime_ns=1_000_000_000)
    assert _polls(watcher, clock, 1.25) == [path]
    _write(path, second, mtime_ns=2_000_000_000)  # a camera overwriting latest.jpg
    assert _polls(watcher, clock, 1.25) == [path]
    path.unlink()
    assert _polls(watcher, clock, 1.25) == []
    _write(path, second, mtime_ns=2_000_000_000)  # same bytes and mtime as before, but deleted in between
    assert _polls(watcher, clock, 1.25) == [path]


def test_empty_file_is_waited_for(tmp_path):
    clock = Clock()
    watcher = _watcher(tmp_path, clock)
    path = tmp_path / "frame.png"
    path.touch()  # created; the writer has not written yet (a starved thread, a slow card)
    assert _polls(watcher, clock, 3) == []
    _write(path, _image("PNG"))
    assert _polls(watcher, clock, 1.25) == [path]


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "WEBP", "BMP"])
def test_looks_complete_only_with_the_formats_own_end(fmt):
    data = _image(fmt)
    assert looks_complete(data[:16], data[-16:], len(data))
    for cut in (1, 2, 5, 12, 20, len(data) // 2):
        short = data[:-cut]
        assert not looks_complete(short[:16], short[-16:], len(short)), cut


def test_formats_without_an_end_mark_look_complete():
    data = _image("TIFF")
    assert looks_complete(data[:16], data[-16:], len(data)) and looks_complete(b"P6\n", b"", 3)
    assert not looks_complete(b"", b"", 0)


def test_missing_folder_and_bad_settle_are_one_clear_error(tmp_path):
    with pytest.raises(InputError, match="no such folder"):
        FolderWatcher(tmp_path / "nope")
    for settle in (-1, float("nan"), float("inf")):
        with pytest.raises(InputError, match="--settle"):
            FolderWatcher(tmp_path, settle=settle)


class Scenario:
    """Writes files into a folder from its own thread, one step per watcher poll, in lockstep.

    Each step is a callable run in the writer thread; the watcher's ``on_poll`` hands the writer one step and waits
    until it is done, so what the watcher sees at every poll is fixed by the step list, not by thread timing.
    """

    def __init__(self, steps, expected: int, timeout: float = 60):
        self.steps = list(steps)
        self.expected = expected
        self.stop = threading.Event()
        self.go = threading.Event()
        self.done = threading.Event()
        self.results: list[tuple[Path, int]] = []
        self.reports: list[str] = []
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._writer, daemon=True)
        self.deadline = threading.Timer(timeout, self.stop.set)  # a safety net: the test then fails, never hangs

    def _writer(self):
        try:
            while not self.stop.is_set():
                if not self.go.wait(0.1):
                    continue
                self.go.clear()
                if self.steps:
                    self.steps.pop(0)()
                self.done.set()
        except BaseException as exc:  # noqa: BLE001 - surface writer failures in the test
            self.errors.append(exc)
            self.done.set()

    def on_poll(self):
        self.go.set()
        assert self.done.wait(10), "writer thread did not answer"
        self.done.clear()

    def record(self, path: Path, outcome=None):
        self.results.append((path, path.stat().st_size if path.exists() else -1))
        self._maybe_stop()

    def report(self, message: str):
        self.reports.append(message)
        self._maybe_stop()

    def _maybe_stop(self):
        if len(self.results) + len(self.reports) >= self.expected and not self.steps:
            self.stop.set()

    def run(self, handle, **options):
        """Watch with a clock that moves 0.5 s per poll: the 1 s settle time is two unchanged polls."""
        ticks = itertools.count(0.0, 0.5)
        self.thread.start()
        self.deadline.start()
        try:
            return watch(self.folder, handle, report=self.report, stop=self.stop, interval=0.01,
                         on_poll=self.on_poll, settle=1.0, clock=lambda: next(ticks), **options)
        finally:
            self.stop.set()
            self.deadline.cancel()
            self.thread.join(5)


def _chunks(path: Path, data: bytes, pieces: int):
    """Steps that write ``data`` to ``path`` in ``pieces`` appends, one per poll (a slow camera)."""
    size = -(-len(data) // pieces)

    def append(chunk):
        def step():
            with open(path, "ab") as handle:
                handle.write(chunk)
        return step

    return [append(data[i:i + size]) for i in range(0, len(data), size)]


def _pause(polls: int):
    """Steps that write nothing for ``polls`` polls (a writer stalled longer than the settle time)."""
    return [lambda: None] * polls


def test_watch_classifies_new_frames_once_each_survives_a_corrupt_one(digits_export, tmp_path):
    import edgecnn

    classifier = edgecnn.load(digits_export, format="tflite-int8")
    samples = sorted((digits_export / "samples").glob("*.png"))[:4]
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    slow = samples[2].read_bytes()
    paused = samples[3].read_bytes()
    steps = [
        lambda: shutil.copy(samples[0], inbox / samples[0].name),
        lambda: (inbox / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20),
        lambda: shutil.copy(samples[1], inbox / samples[1].name),
        *_chunks(inbox / samples[2].name, slow, pieces=6),
        *_chunks(inbox / samples[3].name, paused, pieces=2)[:1], *_pause(6),  # 3 s: longer than the settle time
        *_chunks(inbox / samples[3].name, paused, pieces=2)[1:],
    ]
    scenario = Scenario(steps, expected=5)
    scenario.folder = inbox
    labels = {}

    def handle(path: Path):
        size = path.stat().st_size
        labels[path.name] = classifier.classify(path).label  # raises InputError for the corrupt file
        scenario.record(path)
        assert size == path.stat().st_size

    summary = scenario.run(handle)
    assert not scenario.errors
    assert (summary.processed, summary.failed) == (4, 1), scenario.reports
    assert labels == {p.name: p.name.split("-")[0] for p in samples}
    names = [p.name for p, _ in scenario.results]
    assert sorted(names) == sorted(p.name for p in samples), "a frame was processed twice or not at all"
    sizes = {p.name: s for p, s in scenario.results}
    assert sizes[samples[2].name] == len(slow), "the slowly written frame was read before it was complete"
    assert sizes[samples[3].name] == len(paused), "the frame whose writer paused was read half-written"
    assert len(scenario.reports) == 1 and "broken.png" in scenario.reports[0]


def test_unexpected_error_in_handler_is_reported_and_the_loop_goes_on(tmp_path):
    scenario = Scenario([lambda: (tmp_path / "a.png").write_bytes(b"1"),
                         lambda: (tmp_path / "b.png").write_bytes(b"2")], expected=2)
    scenario.folder = tmp_path

    def handle(path):
        if path.name == "a.png":
            raise RuntimeError("decoder exploded")
        scenario.record(path)

    summary = scenario.run(handle, suffixes=SUFFIXES)
    assert (summary.processed, summary.failed) == (1, 1)
    assert scenario.reports == [f"{tmp_path / 'a.png'}: RuntimeError: decoder exploded"]


def test_ctrl_c_ends_the_watch_with_a_summary(tmp_path):
    for name in ("a.png", "b.png", "c.png"):
        (tmp_path / name).write_bytes(b"x")
    seen = []

    def handle(path):
        if len(seen) == 2:
            raise KeyboardInterrupt  # what Ctrl-C raises in the main thread
        seen.append(path.name)

    summary = watch(tmp_path, handle, interval=0.01, settle=0, include_existing=True, suffixes=SUFFIXES)
    assert (summary.processed, summary.failed) == (2, 0)
    assert seen == ["a.png", "b.png"]


@pytest.fixture()
def interactive_ctrl_c():
    """Ctrl-C as a terminal delivers it. A background job of a non-interactive shell (``nohup cmd &``, how some CI
    scripts start us) inherits SIGINT *ignored*, which ``watch`` rightly leaves alone - and a test that stops the
    watch with a SIGINT to itself would then wait forever."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


@pytest.mark.skipif(sys.platform == "win32", reason="no SIGINT to oneself on Windows")
def test_ctrl_c_finishes_the_current_frame_counts_it_and_stops(tmp_path, interactive_ctrl_c):
    for name in ("a.png", "b.png", "c.png"):
        (tmp_path / name).write_bytes(b"x")
    seen = []
    before = signal.getsignal(signal.SIGINT)

    def handle(path):
        seen.append(path.name)
        if len(seen) == 1:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while the first frame is being processed
            time.sleep(0.05)

    summary = watch(tmp_path, handle, interval=0.01, settle=0, include_existing=True, suffixes=SUFFIXES)
    assert (seen, summary.processed, summary.failed) == (["a.png"], 1, 0)
    assert signal.getsignal(signal.SIGINT) is before


@pytest.mark.skipif(sys.platform == "win32", reason="signal delivery to a child differs on Windows")
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_cli_watch_prints_one_line_per_frame_and_exits_0_when_stopped(digits_export, tmp_path, signum):
    """Robust under load: a slow start or a starved writer thread only makes it wait (up to generous deadlines,
    never forever); the watcher's own rule keeps a frame caught mid-copy from being read or counted as failed."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen([sys.executable, "-m", "edgecnn.cli", "infer", "--model", str(digits_export),
                                "--format", "tflite-int8", "--json", "--watch", str(inbox), "--settle", "0.5"],
                               cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               # a background job of a non-interactive shell inherits SIGINT ignored: undo that
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # noqa: PLW1509
    samples = sorted((digits_export / "samples").glob("*.png"))
    enough = threading.Event()
    stdout: queue.Queue = queue.Queue()

    def camera():  # frames keep coming: the ones dropped before the watcher's first look are (rightly) skipped
        for k in itertools.count():
            if enough.wait(0.2):
                return
            sample = samples[k % len(samples)]
            shutil.copy(sample, inbox / f"{sample.stem}-frame{k:04d}.png")

    def reader():
        for line in process.stdout:
            stdout.put(line)
        stdout.put(None)

    threads = [threading.Thread(target=camera, daemon=True), threading.Thread(target=reader, daemon=True)]
    for thread in threads:
        thread.start()
    lines = []
    try:
        while len(lines) < 2:
            line = stdout.get(timeout=180)
            assert line is not None, "the watcher ended early"
            lines.append(line)
        enough.set()
        threads[0].join(10)
        process.send_signal(signum)
        process.wait(timeout=60)
        threads[1].join(10)
        err = process.stderr.read()
    finally:
        enough.set()
        if process.poll() is None:
            process.kill()
    lines += iter(stdout.get_nowait, None)
    results = [json.loads(line) for line in lines]
    names = [Path(r["input"]).name for r in results]
    assert len(set(names)) == len(names), "a frame was processed twice"
    assert [r["predictions"][0]["label"] for r in results] == [n.split("-")[0] for n in names]
    assert process.returncode == 0, err
    assert f"{len(results)} processed, 0 failed" in err
