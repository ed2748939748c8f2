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
