"""``edgecnn infer DIR --workers N``: worker processes, output in input order, errors per item as with one."""

from __future__ import annotations

import json
import shutil

import pytest

from edgecnn.errors import EdgecnnError
from edgecnn.runtime.infer import run_inference

from .conftest import error_lines, run_cli


@pytest.fixture()
def folder_with_a_bad_file(digits_export, tmp_path):
    """80 samples (more than two chunks per worker) with a file that is no image in the middle."""
    folder = tmp_path / "images"
    folder.mkdir()
    samples = sorted((digits_export / "samples").glob("*.png"))
    for copy in range(4):
        for sample in samples:
            shutil.copy(sample, folder / f"{copy}-{sample.name}")
    (folder / "2-5-0-broken.png").write_bytes(b"not a png at all")
    return folder


def test_workers_give_the_same_lines_in_the_same_order_as_one_process(digits_export, folder_with_a_bad_file):
    one = run_cli("infer", str(folder_with_a_bad_file), "--model", str(digits_export), "--json")
    two = run_cli("infer", str(folder_with_a_bad_file), "--model", str(digits_export), "--json", "--workers", "2")
    assert one.returncode == two.returncode == 2, two.stderr
    assert two.stdout == one.stdout and len(one.stdout.splitlines()) == 80
    assert error_lines(two) == error_lines(one) and len(error_lines(one)) == 1
    assert "2-5-0-broken.png" in error_lines(one)[0]
    names = [json.loads(line)["input"] for line in two.stdout.splitlines()]
    assert names == sorted(names)


def test_workers_auto_and_in_process_summary(digits_export, folder_with_a_bad_file):
    emitted, reported = [], []
    summary = run_inference(digits_export, [str(folder_with_a_bad_file)], workers=3, emit=emitted.append,
                            report=reported.append, inform=lambda _: None)
    assert (summary.processed, summary.failed, summary.crashed) == (80, 1, 0)
    auto = run_cli("infer", str(folder_with_a_bad_file), "--model", str(digits_export), "--workers", "auto")
    assert auto.returncode == 2 and auto.stdout.splitlines() == emitted


def test_a_bug_in_a_worker_costs_only_its_item(digits_export, folder_with_a_bad_file, tmp_path):
    (tmp_path / "sitecustomize.py").write_text(
        "import edgecnn.runtime.image as m\n"
        "real = m.load_pixels\n"
        "def load_pixels(source, prep):\n"
        "    if '1-3-2' in str(source):\n"
        "        raise RuntimeError('decoder exploded')\n"
        "    return real(source, prep)\n"
        "m.load_pixels = load_pixels\n")
    result = run_cli("infer", str(folder_with_a_bad_file), "--model", str(digits_export), "--workers", "2",
                     env={"PYTHONPATH": str(tmp_path)})
    assert result.returncode == 1
    assert len(result.stdout.splitlines()) == 79
    assert any("1-3-2.png: internal error: RuntimeError: decoder exploded" in line for line in error_lines(result))


@pytest.mark.parametrize("options, words", [
    ({"workers": 0}, "--workers 0"),
    ({"workers": 2, "texts": ["hello"]}, "--workers applies to image files"),
])
def test_workers_that_cannot_apply_are_refused(digits_export, options, words):
    from .conftest import reference_export

    model = reference_export("bbc-news", "export-text") if "texts" in options else digits_export
    with pytest.raises(EdgecnnError, match=words):
        run_inference(model, [] if "texts" in options else [str(digits_export / "samples")], **options)


def test_a_run_over_many_images_opens_one_runtime_thread_and_gives_the_same_lines(digits_export, monkeypatch,
                                                                                    folder_with_a_bad_file):
    """Throughput runs (a folder, several files) get one runtime thread per process, as each --workers process
    has: onnxruntime's default pool spins a second core for a 28x28 model and costs more than it gives. One image
    (latency) keeps the runtime's default; --threads always wins. The lines must not change."""
    from edgecnn.runtime import infer

    opened = []
    real_load = infer.load
    monkeypatch.setattr(infer, "load", lambda *a, **k: opened.append(k.get("threads")) or real_load(*a, **k))
    lines = {}
    for name, inputs, threads in (("folder", [str(folder_with_a_bad_file)], None),
                                  ("one", [str(min(folder_with_a_bad_file.glob("0-*.png")))], None),
                                  ("asked", [str(folder_with_a_bad_file)], 2)):
        lines[name] = []
        run_inference(digits_export, inputs, threads=threads, emit=lines[name].append, report=lambda _: None,
                      inform=lambda _: None)
    assert opened == [1, None, 2]
    assert lines["folder"] == lines["asked"] and len(lines["folder"]) == 80


def _one_at_a_time(export, folder, fmt: str) -> tuple[list[str], list[str]]:
    """The reference: each image of ``folder`` classified alone through the public API (one model call each), as
    ``--json`` lines and ``error: ...`` lines."""
    import edgecnn

    classifier = edgecnn.load(export, format=fmt)
    lines, errors = [], []
    for path in sorted(folder.iterdir()):
        try:
            lines.append(json.dumps(classifier.classify(str(path), top_k=3).to_dict(), ensure_ascii=False))
        except EdgecnnError as exc:
            errors.append(f"error: {exc}")
    return lines, errors


@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
@pytest.mark.parametrize("workers", ["1", "2"])
def test_batched_folder_runs_give_the_lines_of_one_image_at_a_time(digits_export, folder_with_a_bad_file, fmt,
                                                                    workers):
    """A folder runs its images in batches (one model call per batch); a broken file in the middle of a batch is
    its own error line and every other image still gets exactly the result it gets alone."""
    lines, errors = _one_at_a_time(digits_export, folder_with_a_bad_file, fmt)
    result = run_cli("infer", str(folder_with_a_bad_file), "--model", str(digits_export), "--format", fmt, "--json",
                     "--workers", workers)
    assert result.returncode == 2, result.stderr
    assert result.stdout.splitlines() == lines and len(lines) == 80
    assert error_lines(result) == errors and len(errors) == 1 and "2-5-0-broken.png" in errors[0]


def _counting_model_calls(monkeypatch) -> list[int]:
    """The batch size of every model call made in this process, whatever the format."""
    from edgecnn.runtime.backends import LiteRTBackend, OnnxRuntimeBackend

    sizes: list[int] = []
    for backend in (OnnxRuntimeBackend, LiteRTBackend):
        real = backend.run
        monkeypatch.setattr(backend, "run", lambda self, inputs, real=real: sizes.append(len(inputs)) or real(self,
                                                                                                           inputs))
    return sizes


@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
def test_a_folder_run_calls_the_model_once_per_batch_of_good_images(digits_export, folder_with_a_bad_file,
                                                                     monkeypatch, fmt):
    sizes = _counting_model_calls(monkeypatch)
    summary = run_inference(digits_export, [str(folder_with_a_bad_file)], fmt=fmt, emit=lambda _: None,
                            report=lambda _: None, inform=lambda _: None)
    assert (summary.processed, summary.failed) == (80, 1)
    assert sizes == [32, 31, 17]  # 81 files in batches of 32; the broken one is left out of its batch


def test_a_batch_one_model_file_runs_a_folder_one_image_per_call(digits_export, folder_with_a_bad_file, tmp_path,
                                                                  monkeypatch):
    """A file with its batch fixed at 1 (what --target mobile writes) must keep working: one image per call."""
    from edgecnn import manifest as manifest_io
    from edgecnn.export.mobile import fix_batch

    fixed = tmp_path / "fixed"
    shutil.copytree(digits_export, fixed)
    fix_batch(digits_export / "model.onnx", fixed / "model.onnx")
    data = dict(manifest_io.read(fixed))
    data["files"]["onnx"] = {**data["files"]["onnx"], **manifest_io.file_entry(fixed, "model.onnx")}
    manifest_io.write(fixed, data)
    expected: list[str] = []
    run_inference(digits_export, [str(folder_with_a_bad_file)], fmt="onnx", as_json=True, emit=expected.append,
                  report=lambda _: None, inform=lambda _: None)
    sizes = _counting_model_calls(monkeypatch)
    lines: list[str] = []
    summary = run_inference(fixed, [str(folder_with_a_bad_file)], fmt="onnx", as_json=True, emit=lines.append,
                            report=lambda _: None, inform=lambda _: None)
    assert (summary.processed, summary.failed) == (80, 1)
    assert lines == expected and sizes == [1] * 80


def test_a_model_call_that_fails_for_a_batch_is_retried_one_image_at_a_time(digits_export, folder_with_a_bad_file,
                                                                             monkeypatch):
    """A runtime that refuses a batch (a file whose batch axis cannot be resized) costs no image its result."""
    from edgecnn.runtime.backends import OnnxRuntimeBackend

    expected: list[str] = []
    run_inference(digits_export, [str(folder_with_a_bad_file)], fmt="onnx", emit=expected.append,
                  report=lambda _: None, inform=lambda _: None)
    real = OnnxRuntimeBackend.run

    def one_only(self, inputs):
        if len(inputs) > 1:
            raise RuntimeError("Got invalid dimensions for input: image")
        return real(self, inputs)

    monkeypatch.setattr(OnnxRuntimeBackend, "run", one_only)
    lines, reported = [], []
    summary = run_inference(digits_export, [str(folder_with_a_bad_file)], fmt="onnx", emit=lines.append,
                            report=reported.append, inform=lambda _: None)
    assert (summary.processed, summary.failed, summary.crashed) == (80, 1, 0)
    assert lines == expected and len(reported) == 1 and "2-5-0-broken.png" in reported[0]


def _pid_and_payload_chunks(delay: float):
    """A worker's chunk function (module level, so a spawned worker could import it): each payload with the id of
    the process that ran it."""
    import os
    import time

    def run(payloads: list) -> list:
        time.sleep(delay)
        return [(os.getpid(), payload) for payload in payloads]

    return run


@pytest.mark.parametrize("workers", [2, 3])
def test_the_parent_runs_chunks_too_and_the_order_stays_the_inputs(workers):
    """--workers N is N processes at work: N - 1 workers and the parent, which runs a chunk whenever the next result
    to write is not ready (on 2 cores a parent that only waited made a third process: 1.48x instead of 1.57x)."""
    import os

    from edgecnn.runtime.parallel import map_ordered

    items = [(f"item-{i}", i) for i in range(400)]
    out = list(map_ordered(_pid_and_payload_chunks, (0.002,), iter(items), workers=workers, chunk=4))
    assert [item for item, _ in out] == items
    assert [payload for _, (_, payload) in out] == list(range(400))
    pids = {pid for _, (pid, _) in out}
    assert os.getpid() in pids and len(pids) == workers, pids


def _dies_on_item_13(_unused: float):
    """A worker's chunk function that ends its process (as the OOM killer would) at payload 13."""
    import os

    def run(payloads: list) -> list:
        if 13 in payloads and os.getpid() != PARENT_PID:
            os._exit(9)
        return list(payloads)

    return run


def _cannot_open(_unused: float):
    raise ValueError("model.onnx is not an ONNX file")


PARENT_PID = __import__("os").getpid()


def test_a_worker_that_dies_ends_the_run_with_a_one_line_error():
    from edgecnn.errors import EdgecnnError
    from edgecnn.runtime.parallel import map_ordered

    items = [(f"item-{i}", i) for i in range(200)]
    with pytest.raises(EdgecnnError, match=r"a --workers process ended unexpectedly \(exit code 9\); run again with "
                                           r"--workers 1"):
        # chunk 1 holds item 13 and is the first sent to the worker
        list(map_ordered(_dies_on_item_13, (0.0,), iter(items), workers=2, chunk=16))


def test_a_worker_that_cannot_set_up_ends_the_run_with_its_error():
    from edgecnn.runtime.parallel import map_ordered

    with pytest.raises(ValueError, match="not an ONNX file"):
        list(map_ordered(_cannot_open, (0.0,), iter([("a", 1)] * 500), workers=2, chunk=4, local=list))


def test_a_run_left_early_ends_its_workers():
    import multiprocessing

    from edgecnn.runtime.parallel import map_ordered

    out = map_ordered(_pid_and_payload_chunks, (0.001,), iter([(f"item-{i}", i) for i in range(10_000)]),
                      workers=3, chunk=4)
    assert [next(out) for _ in range(50)][-1][0] == ("item-49", 49)
    assert len(multiprocessing.active_children()) == 2
    out.close()
    assert multiprocessing.active_children() == []


PARENT_THAT_IS_KILLED = r"""
import sys, time
sys.path.insert(0, sys.argv[1])
from tests.test_workers import _pid_and_payload_chunks
from edgecnn.runtime.parallel import map_ordered
for i, ((name, _), (pid, _)) in enumerate(map_ordered(_pid_and_payload_chunks, (0.01,),
                                                      iter([(str(i), i) for i in range(10**6)]), workers=3, chunk=2)):
    print(pid, flush=True)
"""


def test_workers_do_not_outlive_a_parent_that_is_killed(tmp_path):
    """Forked workers close their copies of the parent's pipe ends, so a killed parent's workers read the end of
    their pipe and exit instead of waiting for ever (each holding a model in memory)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    parent = subprocess.Popen([sys.executable, "-c", PARENT_THAT_IS_KILLED,
                               os.path.dirname(os.path.dirname(os.path.abspath(__file__)))],
                              stdout=subprocess.PIPE, text=True)
    pids = set()
    while len(pids) < 3:
        pids.add(int(parent.stdout.readline()))
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    workers = pids - {parent.pid}
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(_alive(pid) for pid in workers):
        time.sleep(0.05)
    assert not [pid for pid in workers if _alive(pid)]


def _alive(pid: int) -> bool:
    """Still running (a zombie, its parent dead and not yet reaped by init, counts as ended)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize(("images", "processes"), [(10, 1), (32, 1), (33, 2), (81, 2)])
def test_workers_never_outnumber_the_chunks_of_the_input(digits_export, tmp_path, monkeypatch, images, processes):
    """--workers N on a handful of images runs in this process: a worker would only add its start (fork, opening
    the model, a first slow call) to the wait for one chunk of 32."""
    from edgecnn.runtime import parallel
    from edgecnn.runtime.infer import run_inference

    folder = tmp_path / "few"
    folder.mkdir()
    samples = sorted((digits_export / "samples").glob("*.png"))
    for i in range(images):
        shutil.copy(samples[i % len(samples)], folder / f"{i:03d}.png")
    started = []
    real = parallel.map_ordered

    def spy(*args, workers, **kwargs):
        started.append(workers)
        return real(*args, workers=workers, **kwargs)

    monkeypatch.setattr(parallel, "map_ordered", spy)
    lines = []
    summary = run_inference(digits_export, [str(folder)], workers=2, emit=lines.append)
    assert summary.processed == images == len(lines)
    assert started == ([processes] if processes > 1 else [])
