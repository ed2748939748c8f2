"""One bad input never stops ``edgecnn infer``: every other input gets its result, each bad one its own line.

Exit codes: 0 when every input got a result, 2 when some input failed for a reason edgecnn names (an
EdgecnnError), 1 when some input hit an unexpected exception (a bug) - the other inputs still ran.
"""

from __future__ import annotations

import json
import zlib

import pytest
from PIL import Image

from edgecnn.errors import EdgecnnError
from edgecnn.runtime import image as image_io
from edgecnn.runtime.infer import run_inference

from .conftest import error_lines, run_cli
from .test_image_input import _chunk, _png


def _bomb(path):
    path.write_bytes(_png(_chunk(b"zTXt", b"comment\x00\x00" + zlib.compress(b"A" * 4_000_000, 9))))
    return path


def test_a_text_chunk_bomb_between_good_images_costs_only_its_own_result(digits_export, tmp_path):
    good, good2 = sorted((digits_export / "samples").glob("*.png"))[:2]
    bomb = _bomb(tmp_path / "bomb.png")
    result = run_cli("infer", str(good), str(bomb), str(good2), "--model", str(digits_export), "--json")
    assert result.returncode == 2, result.stderr
    assert [json.loads(line)["input"] for line in result.stdout.splitlines()] == [str(good), str(good2)]
    (line,) = error_lines(result)
    assert line.startswith("error: ") and "bomb.png" in line


def test_an_unexpected_exception_on_one_input_is_reported_and_the_others_run(digits_export, tmp_path,
                                                                              monkeypatch):
    good, good2 = sorted((digits_export / "samples").glob("*.png"))[:2]
    explode = tmp_path / "explode.png"
    Image.new("L", (28, 28)).save(explode)
    real = image_io.load_pixels

    def load_pixels(source, prep):
        if "explode" in str(source):
            raise RuntimeError("decoder exploded")
        return real(source, prep)

    monkeypatch.setattr(image_io, "load_pixels", load_pixels)
    emitted, reported = [], []
    summary = run_inference(digits_export, [str(good), str(explode), str(good2)], as_json=True,
                            emit=emitted.append, report=reported.append, inform=lambda _: None)
    assert [json.loads(line)["input"] for line in emitted] == [str(good), str(good2)]
    assert len(reported) == 1 and "explode.png" in reported[0] and "RuntimeError: decoder exploded" in reported[0]
    assert (summary.processed, summary.failed, summary.crashed) == (2, 0, 1)
    assert summary.exit_code == 1


def test_cli_exits_1_after_running_the_others_when_one_input_hits_a_bug(digits_export, tmp_path):
    good, good2 = sorted((digits_export / "samples").glob("*.png"))[:2]
    explode = tmp_path / "explode.png"
    Image.new("L", (28, 28)).save(explode)
    (tmp_path / "sitecustomize.py").write_text(
        "import edgecnn.runtime.image as m\n"
        "real = m.load_pixels\n"
        "def load_pixels(source, prep):\n"
        "    if 'explode' in str(source):\n"
        "        raise RuntimeError('decoder exploded')\n"
        "    return real(source, prep)\n"
        "m.load_pixels = load_pixels\n")
    result = run_cli("infer", str(good), str(explode), str(good2), "--model", str(digits_export), "--json",
                     env={"PYTHONPATH": str(tmp_path)})
    assert result.returncode == 1, result.stderr
    assert len(result.stdout.splitlines()) == 2
    (line,) = error_lines(result)
    assert "explode.png" in line and "RuntimeError" in line and "Traceback" not in result.stderr


def test_a_folder_without_images_among_other_inputs_is_one_error_line(digits_export, tmp_path):
    good = next((digits_export / "samples").glob("*.png"))
    (tmp_path / "empty").mkdir()
    result = run_cli("infer", str(tmp_path / "empty"), str(good), "--model", str(digits_export), "--json")
    assert result.returncode == 2
    assert [json.loads(line)["input"] for line in result.stdout.splitlines()] == [str(good)]
    assert len(error_lines(result)) == 1 and "empty" in error_lines(result)[0]


def test_summary_exit_codes():
    from edgecnn.runtime.infer import InferSummary

    assert InferSummary(processed=3).exit_code == 0
    assert InferSummary(processed=3, failed=1).exit_code == 2
    assert InferSummary(processed=3, failed=1, crashed=1).exit_code == 1


def test_run_inference_reports_input_errors_through_report(digits_export):
    reported = []
    summary = run_inference(digits_export, ["no-such.png"], emit=lambda _: None, report=reported.append,
                            inform=lambda _: None)
    assert (summary.processed, summary.failed) == (0, 1) and reported == ["no-such.png: no such file"]


@pytest.mark.parametrize("options, words", [
    ({"watch_dir": "."}, "--watch is for image models"),
    ({"texts": ["hello"], "settle": 2.0}, "--settle applies to --watch"),
    ({"texts": ["hello"], "threshold": 0.5}, "--threshold applies to object-detection"),
], ids=["watch-text-model", "settle-without-watch", "threshold-on-text"])
def test_options_that_do_not_apply_are_refused_before_anything_runs(options, words):
    from .conftest import reference_export

    emitted = []
    with pytest.raises(EdgecnnError, match=words):
        run_inference(reference_export("bbc-news", "export-text"), [], emit=emitted.append, **options)
    assert emitted == []


def test_watch_with_other_inputs_is_refused(digits_export, tmp_path):
    with pytest.raises(EdgecnnError, match="--watch takes no other inputs"):
        run_inference(digits_export, ["a.png"], watch_dir=str(tmp_path))
