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
