"""``edgecnn bench``: the JSON contract, numbers that agree with the manifest, a PNG plot, one-line errors."""

from __future__ import annotations

import importlib.util
import json

import pytest

from edgecnn import manifest as manifest_io
from edgecnn.bench import RESULT_KEYS

from .conftest import error_lines, run_cli


@pytest.fixture(scope="module")
def bench_json(digits_export, tmp_path_factory):
    plot = tmp_path_factory.mktemp("bench") / "bench.png"
    args = ["bench", str(digits_export), "--formats", "onnx,tflite-int8", "--runs", "20", "--batch", "8", "--json"]
    if importlib.util.find_spec("matplotlib"):
        args += ["--plot", str(plot)]
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1]), plot


def test_bench_json_has_every_key_for_every_format(bench_json):
    report, _ = bench_json
    assert list(report["results"]) == ["onnx", "tflite-int8"]
    for fmt, row in report["results"].items():
        assert row["status"] == "ok", (fmt, row)
        assert set(RESULT_KEYS) <= set(row)
        assert all(row[key] is not None and row[key] > 0 for key in RESULT_KEYS), (fmt, row)
        assert row["p50_ms"] <= row["p90_ms"] <= row["p99_ms"]


def test_bench_sizes_and_metric_agree_with_the_manifest(bench_json, digits_export):
    """Sizes are the files' sizes; the metric is the held-out accuracy that export validation recorded."""
    report, _ = bench_json
    manifest = manifest_io.read(digits_export)
    validation = manifest["validation"]
    assert report["metric"] == "accuracy" and report["n"] == validation["n"]
    for fmt, row in report["results"].items():
        assert row["size_mb"] == pytest.approx(manifest["files"][fmt]["size"] / 1e6, abs=1e-4)
        assert row["metric"] == pytest.approx(validation["results"][fmt]["accuracy"])


def test_bench_plot_is_a_png(bench_json):
    _, plot = bench_json
    if not importlib.util.find_spec("matplotlib"):
        pytest.skip("matplotlib is not installed (train extra)")
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_rejects_an_unknown_format_in_one_line(digits_export):
    result = run_cli("bench", str(digits_export), "--formats", "onnx,coreml", "--runs", "2")
    assert result.returncode == 2
    errors = error_lines(result)
    assert len(errors) == 1 and "coreml" in errors[0], result.stderr


# --- the keras row describes the export's own source model, or is left out ------------------------------------------

@pytest.fixture
def export_from_another_keras(export_copy, tmp_path):
    """The digits export whose manifest's source.model now names a different file than the one it was made from."""
    other = tmp_path / "model.keras"
    other.write_bytes(b"another model, trained later into the same run folder")
    data = json.loads((export_copy / "edgecnn.json").read_text())
    data["source"]["model"] = str(other)
    (export_copy / "edgecnn.json").write_text(json.dumps(data))
    return export_copy


@pytest.fixture
def fake_timing(monkeypatch):
    """Time nothing: the child processes are replaced by fixed numbers (the keras rule is decided before them)."""
    from edgecnn import bench

    timed = []

    def run_child(folder, fmt, *args):
        timed.append(fmt)
        return {"runs": 2, "load_ms": 1.0, "p50_ms": 1.0, "p90_ms": 1.0, "p99_ms": 1.0, "throughput": 1.0,
                "rss_mib": 1.0}

    monkeypatch.setattr(bench, "_run_child", run_child)
    return timed


@pytest.mark.parametrize("formats", [None, ["onnx", "keras"]])
def test_bench_leaves_out_a_keras_row_from_another_model_file(export_from_another_keras, fake_timing, formats):
    from edgecnn.bench import bench_table, benchmark

    if formats is None and not importlib.util.find_spec("tensorflow"):
        pytest.skip("the keras row is offered by default only where TensorFlow is installed")
    report = benchmark(export_from_another_keras, formats=formats, runs=2, batch=2)
    assert "keras" not in report["results"] and "keras" not in fake_timing
    notes = [note for note in report["notes"] if note.startswith("keras")]
    assert len(notes) == 1 and "sha256" in notes[0] and "\n" not in notes[0], report["notes"]
    text = bench_table(report)
    assert not any(line.startswith("keras ") for line in text.splitlines()) and notes[0] in text


def test_bench_table_has_one_number_format_per_column():
    from edgecnn.bench import bench_table

    rows = {"onnx": {"p50_ms": 0.0612, "size_mb": 0.1047, "throughput": 10.5, "metric": 0.9861},
            "tflite-int8": {"p50_ms": 0.0477, "size_mb": 0.0312, "throughput": 6.175, "metric": 0.9833},
            "keras": {"p50_ms": 41.25, "size_mb": 0.3871, "throughput": 350.0, "metric": 0.9861}}
    report = {"model": "m", "task": "image-classification", "metric": "accuracy", "runs": 2, "batch": 2,
              "threads": None, "inputs": "digits held-out split", "n": 360, "notes": [],
              "results": {fmt: {"status": "ok", **dict.fromkeys(RESULT_KEYS), **row} for fmt, row in rows.items()}}
    lines = bench_table(report).splitlines()[3:6]
    for index in range(2, 9):
        cells = [line.split()[index] for line in lines]
        assert len({cell.partition(".")[2].__len__() for cell in cells}) == 1, cells


def _row(p50: float) -> dict:
    return {"status": "ok", **dict.fromkeys(RESULT_KEYS), "p50_ms": p50}


def test_bench_flags_an_int8_row_slower_than_its_fp32_sibling():
    """int8 is there to be faster: a row that is not says so, in the row and in a note that says what to prefer."""
    from edgecnn.bench import bench_table, flag_slow_int8

    report = {"model": "m", "task": "image-classification", "runs": 5, "batch": 1, "threads": None,
              "inputs": "samples", "notes": [],
              "results": {"onnx": _row(1.0), "onnx-int8": _row(1.5), "tflite": _row(2.0), "tflite-int8": _row(1.0)}}
    flag_slow_int8(report)
    assert report["results"]["onnx-int8"]["status"] == "int8 slower than fp32"
    assert report["results"]["tflite-int8"]["status"] == "ok"
    assert report["results"]["onnx"]["status"] == report["results"]["tflite"]["status"] == "ok"
    assert [n for n in report["notes"] if n.startswith("onnx-int8: int8 slower than fp32 (p50 1.50 ms vs 1.00 ms")]
    assert "prefer onnx" in report["notes"][0]
    assert "int8 slower than fp32" in bench_table(report)


@pytest.mark.parametrize("method, advised", [
    ("static QDQ, uint8 activations, per-channel int8 weights, MinMax calibration", False),
    ("static QDQ, int8 activations, per-channel int8 weights", True),
    (None, True),
])
def test_bench_advises_a_re_export_only_for_an_int8_onnx_file_made_before_uint8_activations(method, advised):
    """A tiny model's U8S8 file can still be slower than fp32 (digits-cnn, 0.17 vs 0.13 ms here): telling the user
    to re-export it, which changes nothing, was wrong advice."""
    from edgecnn.bench import flag_slow_int8

    report = {"notes": [], "results": {"onnx": _row(1.0), "onnx-int8": _row(1.5)}}
    flag_slow_int8(report, quantization={"onnx-int8": method} if method else {})
    assert report["results"]["onnx-int8"]["status"] == "int8 slower than fp32"
    assert ("re-export" in report["notes"][0]) is advised, report["notes"]


def test_bench_does_not_flag_int8_without_a_measured_fp32_sibling():
    from edgecnn.bench import flag_slow_int8

    report = {"notes": [], "results": {"onnx-int8": _row(1.5), "tflite": {**_row(None), "status": "error"},
                                       "tflite-int8": _row(9.0)}}
    flag_slow_int8(report)
    assert all(row["status"] != "int8 slower than fp32" for row in report["results"].values())
    assert report["notes"] == []


def test_bench_plot_into_a_folder_that_does_not_exist_yet(tmp_path):
    """The plot comes after minutes of measuring: a new folder is made, not a traceback."""
    pytest.importorskip("matplotlib")
    from edgecnn.bench import plot

    report = {"model": "m", "task": "image-classification",
              "results": {"onnx": {**_row(1.0), "size_mb": 0.4}, "onnx-int8": {**_row(0.7), "size_mb": 0.1}}}
    target = tmp_path / "new" / "folder" / "bench.png"
    assert plot(report, target) == target
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_unwritable_plot_path_is_one_line(tmp_path):
    pytest.importorskip("matplotlib")
    from edgecnn.errors import InputError
    from edgecnn.export.quantize import plot

    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    report = {"model": "m", "examples": 4, "files": {"onnx-int8": {"file": "model.int8.onnx", "layers": [
        {"layer": "conv", "kind": "activation", "sqnr_db": 30.0, "fp32_sqnr_db": 28.0}]}}}
    with pytest.raises(InputError, match="cannot write the plot"):
        plot(report, blocker / "plot.png")
