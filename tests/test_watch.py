"""The --watch loop: new complete images once each, slow writers waited for, bad files survived, clean stops.

The poll-level tests drive :class:`FolderWatcher` one poll at a time (no clocks, no threads). The loop-level tests
write files from another thread in lockstep with the watcher's polls (``on_poll``), and stop through an explicit
event once every expected file is accounted for, so they are quick and deterministic.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from edgecnn.errors import InputError
from edgecnn.runtime.watch import FolderWatcher, watch

from .conftest import ROOT

SUFFIXES = {".png", ".jpg"}


def _write(path: Path, data: bytes, mtime_ns: int | None = None) -> None:
    path.write_bytes(data)
    if mtime_ns is not None:  # pin mtimes so "rewritten" never depends on the file system's clock resolution
        os.utime(path, ns=(mtime_ns, mtime_ns))


def test_new_file_is_ready_only_after_it_held_still(tmp_path):
    watcher = FolderWatcher(tmp_path, suffixes=SUFFIXES, settle_polls=2)
    _write(tmp_path / "a.png", b"x" * 10)
    assert watcher.poll() == []  # first sight
    assert watcher.poll() == []  # unchanged once
    assert watcher.poll() == [tmp_path / "a.png"]  # unchanged twice: ready
    assert [watcher.poll() for _ in range(5)] == [[]] * 5  # never twice


def test_growing_file_waits_until_it_stops_growing(tmp_path):
    watcher = FolderWatcher(tmp_path, suffixes=SUFFIXES, settle_polls=2)
    path = tmp_path / "slow.jpg"
    for size in range(1, 6):
        _write(path, b"x" * size)
        assert watcher.poll() == [], f"returned while still being written ({size} bytes)"
    assert watcher.poll() == []
    assert watcher.poll() == [path]


def test_files_present_at_start_are_skipped_unless_asked(tmp_path):
    _write(tmp_path / "old.png", b"old")
    skipping = FolderWatcher(tmp_path, suffixes=SUFFIXES, settle_polls=1)
    including = FolderWatcher(tmp_path, suffixes=SUFFIXES, settle_polls=1, include_existing=True)
    assert [skipping.poll(), skipping.poll()] == [[], []]
    assert including.poll() == [] and including.poll() == [tmp_path / "old.png"]


def test_only_visible_image_files_count(tmp_path):
    watcher = FolderWatcher(tmp_path, suffixes=SUFFIXES, settle_polls=1)
    for name in ("notes.txt", ".hidden.png", "frame.jpg.part", "frame.JPG"):
        _write(tmp_path / name, b"data")
    (tmp_path / "folder.png").mkdir()
    watcher.poll()
    assert watcher.poll() == [tmp_path / "frame.JPG"]


def test_rewritten_or_recreated_file_is_a_new_image(tmp_path):
    watcher = FolderWatcher(tmp_path, suffixes=SUFFIXES, settle_polls=1)
    path = tmp_path / "latest.jpg"
    _write(path, b"first", mtime_ns=1_000_000_000)
    watcher.poll()
    assert watcher.poll() == [path]
    _write(path, b"second!", mtime_ns=2_000_000_000)  # a camera overwriting latest.jpg
    watcher.poll()
    assert watcher.poll() == [path]
    path.unlink()
    assert watcher.poll() == []
    _write(path, b"second!", mtime_ns=2_000_000_000)  # same size and mtime as before, but deleted in between
    watcher.poll()
    assert watcher.poll() == [path]


def test_missing_folder_is_one_clear_error(tmp_path):
    with pytest.raises(InputError, match="no such folder"):
        FolderWatcher(tmp_path / "nope")


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
        self.thread.start()
        self.deadline.start()
        try:
            return watch(self.folder, handle, report=self.report, stop=self.stop, interval=0.01,
                         on_poll=self.on_poll, **options)
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


def test_watch_classifies_new_frames_once_each_survives_a_corrupt_one(digits_export, tmp_path):
    import edgecnn

    classifier = edgecnn.load(digits_export, format="tflite-int8")
    samples = sorted((digits_export / "samples").glob("*.png"))[:3]
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    slow = samples[2].read_bytes()
    steps = [
        lambda: shutil.copy(samples[0], inbox / samples[0].name),
        lambda: (inbox / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20),
        lambda: shutil.copy(samples[1], inbox / samples[1].name),
        *_chunks(inbox / samples[2].name, slow, pieces=6),
    ]
    scenario = Scenario(steps, expected=4)
    scenario.folder = inbox
    labels = {}

    def handle(path: Path):
        size = path.stat().st_size
        labels[path.name] = classifier.classify(path).label  # raises InputError for the corrupt file
        scenario.record(path)
        assert size == path.stat().st_size

    summary = scenario.run(handle)
    assert not scenario.errors
    assert (summary.processed, summary.failed) == (3, 1), scenario.reports
    assert labels == {p.name: p.name.split("-")[0] for p in samples}
    assert [p.name for p, _ in scenario.results].count(samples[2].name) == 1
    slow_size = {p.name: s for p, s in scenario.results}[samples[2].name]
    assert slow_size == len(slow), "the slowly written frame was read before it was complete"
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

    summary = watch(tmp_path, handle, interval=0.01, settle_polls=1, include_existing=True, suffixes=SUFFIXES)
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

    summary = watch(tmp_path, handle, interval=0.01, settle_polls=1, include_existing=True, suffixes=SUFFIXES)
    assert (seen, summary.processed, summary.failed) == (["a.png"], 1, 0)
    assert signal.getsignal(signal.SIGINT) is before


@pytest.mark.skipif(sys.platform == "win32", reason="signal delivery to a child differs on Windows")
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_cli_watch_prints_one_line_per_frame_and_exits_0_when_stopped(digits_export, tmp_path, signum):
    import json

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen([sys.executable, "-m", "edgecnn.cli", "infer", "--model", str(digits_export),
                                "--format", "tflite-int8", "--json", "--watch", str(inbox)], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               # a background job of a non-interactive shell inherits SIGINT ignored: undo that
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # noqa: PLW1509
    samples = sorted((digits_export / "samples").glob("*.png"))
    enough = threading.Event()

    def camera():  # frames keep coming: the ones dropped before the watcher's first look are (rightly) skipped
        for k in range(200):
            if enough.is_set():
                return
            sample = samples[k % len(samples)]
            shutil.copy(sample, inbox / f"{sample.stem}-frame{k:03d}.png")
            time.sleep(0.2)

    writer = threading.Thread(target=camera, daemon=True)
    writer.start()
    lines = []
    try:
        while len(lines) < 2:
            line = process.stdout.readline()
            assert line, f"the watcher ended early: {process.stderr.read()}"
            lines.append(line)
        enough.set()
        writer.join(5)
        process.send_signal(signum)
        out, err = process.communicate(timeout=30)
    finally:
        enough.set()
        if process.poll() is None:
            process.kill()
    results = [json.loads(line) for line in lines + out.splitlines()]
    names = [Path(r["input"]).name for r in results]
    assert len(set(names)) == len(names), "a frame was processed twice"
    assert [r["predictions"][0]["label"] for r in results] == [n.split("-")[0] for n in names]
    assert process.returncode == 0, err
    assert f"{len(results)} processed, 0 failed" in err
