"""The TFLite recipes besides fp32 and int8: tflite-fp16 (float16 weights), tflite-dynamic (int8 weights, float
activations), and the full-integer file's input/output dtype (--int8-io int8|uint8|float).

Each is exported from one short training run, validated by export's own gates, read back from the file itself
(tensor dtypes as LiteRT reports them, not as the manifest claims), run through the runtime from several threads
at once, and listed by `edgecnn eval` and `edgecnn bench`.
"""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

import edgecnn
from edgecnn import manifest as manifest_io
from edgecnn.errors import ExportRefusedError
from edgecnn.export.tasks import ImageClassificationAdapter
from edgecnn.runtime.backends import import_litert_interpreter

from .conftest import run_cli

WEIGHT_ONLY = ("tflite-fp16", "tflite-dynamic")


def _tensor_dtypes(path) -> dict:
    """{dtype name: how many tensors} of a .tflite file, and its signature's input/output dtypes."""
    interpreter = import_litert_interpreter()(model_path=str(path))
    counts: dict[str, int] = {}
    for detail in interpreter.get_tensor_details():
        name = np.dtype(detail["dtype"]).name
        counts[name] = counts.get(name, 0) + 1
    runner = interpreter.get_signature_runner()
    io = {key: np.dtype(d["dtype"]).name for key, d in {**runner.get_input_details(),
                                                          **runner.get_output_details()}.items()}
    return {"tensors": counts, "io": io}


def _op_versions(path) -> dict[str, set[int]]:
    """{builtin op name: the versions the .tflite file asks its interpreter for}."""
    schema = pytest.importorskip("ai_edge_litert.schema_py_generated")
    names = {code: name for name, code in vars(schema.BuiltinOperator).items() if not name.startswith("_")}
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(path.read_bytes(), 0))
    versions: dict[str, set[int]] = {}
    for code in model.operatorCodes:
        versions.setdefault(names[max(code.builtinCode, code.deprecatedBuiltinCode)], set()).add(code.version)
    return versions


# --- the gates (no export needed) -----------------------------------------------------------------------------------

LIMITS = {"max_diff": 1e-4, "min_agreement": 0.98, "max_map_drop": 0.02, "max_diff_fp16": 5e-2}


def _failures(fmt: str, **measured) -> list[str]:
    adapter = ImageClassificationAdapter.__new__(ImageClassificationAdapter)
    return adapter.failures(fmt, {"agreement": 1.0, "max_abs_diff": 0.0, "max_rel_diff": 0.0, **measured},
                            {"accuracy": 0.9}, LIMITS)


def test_tflite_dynamic_meets_the_int8_rule_not_the_fp32_bound():
    assert _failures("tflite-dynamic", max_abs_diff=0.05) == []  # int8-sized error is fine ...
    assert "agreement" in _failures("tflite-dynamic", agreement=0.95)[0]  # ... disagreeing is not


def test_tflite_fp16_needs_its_own_bound_and_the_int8_rule():
    # float16 rounding passes where fp32's 1e-4 would not; the bound is on the difference relative to the outputs
    assert _failures("tflite-fp16", max_abs_diff=0.08, max_rel_diff=0.011) == []
    assert "exceeds 5e-02" in _failures("tflite-fp16", max_abs_diff=0.08, max_rel_diff=0.08)[0]
    assert "agreement" in _failures("tflite-fp16", agreement=0.9)[0]
    assert "exceeds 1e-04" in _failures("tflite", max_abs_diff=2e-3)[0]  # fp32 unchanged


def test_cli_lists_the_new_formats_and_refuses_an_unknown_int8_io(tmp_path):
    help_text = run_cli("export", "--help").stdout
    assert "tflite-fp16" in help_text and "tflite-dynamic" in help_text and "--int8-io" in help_text
    result = run_cli("export", str(tmp_path / "m.keras"), "--out", str(tmp_path / "x"), "--int8-io", "int16")
    assert result.returncode == 2 and "int16" in result.stderr


def test_manifest_names_the_files():
    assert manifest_io.FORMAT_FILES["tflite-fp16"] == "model.fp16.tflite"
    assert manifest_io.FORMAT_FILES["tflite-dynamic"] == "model.dynamic.tflite"


# --- exported from a short training run -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from edgecnn.train.fit import train

    out = tmp_path_factory.mktemp("run")
    train("digits", "seed-cnn", out, epochs=2, seed=3, verbose=0)
    return out / "model.keras"


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    from edgecnn.export import export_model

    out = tmp_path_factory.mktemp("exports") / "digits"
    export_model(trained, out, formats=["tflite", "tflite-int8", *WEIGHT_ONLY], calibration_size=64)
    return out


@pytest.mark.slow
def test_weight_only_files_are_what_their_names_say(exported):
    manifest = manifest_io.read(exported)
    assert manifest.formats == ["tflite", "tflite-int8", *WEIGHT_ONLY]
    files = manifest["files"]
    for fmt in WEIGHT_ONLY:
        path = manifest.verify_file(fmt)
        assert path.name == manifest_io.FORMAT_FILES[fmt] and files[fmt]["runtime"] == "litert"
        assert "no calibration" in files[fmt]["quantization"]["method"]
    fp16, dynamic = (_tensor_dtypes(manifest.verify_file(fmt)) for fmt in WEIGHT_ONLY)
    # float32 in and out of both (no scale or zero point to apply), weights in float16 / int8
    assert set(fp16["io"].values()) == set(dynamic["io"].values()) == {"float32"}
    assert fp16["tensors"].get("float16", 0) >= 4 and "int8" not in fp16["tensors"]
    # the converter leaves weights under 1,024 values in float32: the big ones are int8 (the size below says so)
    assert dynamic["tensors"].get("int8", 0) >= 2 and "float16" not in dynamic["tensors"]
    # dense layers' int8 weights per tensor: per-channel ones are FULLY_CONNECTED v12, which tflite-runtime 2.14
    # (32-bit Raspberry Pi OS) cannot load
    assert max(_op_versions(manifest.verify_file("tflite-dynamic"))["FULLY_CONNECTED"]) <= 11
    size = {fmt: files[fmt]["size"] for fmt in files}
    assert 0.45 < size["tflite-fp16"] / size["tflite"] < 0.6
    assert size["tflite-dynamic"] < 0.32 * size["tflite"]


@pytest.mark.slow
def test_weight_only_files_pass_their_gates_with_the_numbers_recorded(exported):
    validation = manifest_io.read(exported)["validation"]
    results, limits = validation["results"], validation["thresholds"]
    assert limits["max_diff_fp16"] == 5e-2
    assert results["tflite-fp16"]["max_rel_diff"] <= limits["max_diff_fp16"]
    # probabilities: the largest output is at most 1, so the relative difference is the absolute one
    assert results["tflite-fp16"]["max_rel_diff"] == results["tflite-fp16"]["max_abs_diff"]
    assert results["tflite-fp16"]["max_abs_diff"] > results["tflite"]["max_abs_diff"]  # really float16 weights
    for fmt in WEIGHT_ONLY:
        assert results[fmt]["agreement"] >= limits["min_agreement"]


@pytest.mark.slow
def test_weight_only_exports_are_refused_by_their_gates(trained, tmp_path):
    from edgecnn.export import export_model

    with pytest.raises(ExportRefusedError, match="tflite-fp16: max .* exceeds 1e-09"):
        export_model(trained, tmp_path / "a", formats=["tflite-fp16"], thresholds={"max_diff_fp16": 1e-9})
    with pytest.raises(ExportRefusedError, match="tflite-dynamic: top-1 agreement"):
        export_model(trained, tmp_path / "b", formats=["tflite-dynamic"], thresholds={"min_agreement": 1.01})


@pytest.mark.slow
@pytest.mark.parametrize("fmt", WEIGHT_ONLY)
def test_weight_only_files_share_one_task_object_across_threads(exported, fmt):
    """LiteRTBackend's interpreter pool with hybrid and float16-weight kernels: answers under 6 threads equal the
    serial ones (and the pool really grew: calls overlapped)."""
    task = edgecnn.load(exported, format=fmt)
    images = [p.read_bytes() for p in sorted((exported / "samples").glob("*.png"))]
    serial = [task.classify(x, top_k=10) for x in images]
    assert len({repr(r) for r in serial}) >= len(images) // 2
    wrong, errors = [], []

    def worker(offset: int) -> None:
        try:
            for k in range(3 * len(images)):
                i = (offset + k) % len(images)
                if task.classify(images[i], top_k=10) != serial[i]:
                    wrong.append(i)
        except Exception as exc:  # noqa: BLE001 - any failure in a thread fails the test below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and not wrong
    assert task.backend._opened >= 2


@pytest.mark.slow
def test_eval_and_bench_report_a_row_for_each_new_format(exported):
    result = run_cli("eval", str(exported), "--json", "--formats", ",".join(WEIGHT_ONLY))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert set(report["results"]) == set(WEIGHT_ONLY)
    for fmt in WEIGHT_ONLY:
        assert report["results"][fmt]["accuracy"] > 0.5
    result = run_cli("bench", str(exported), "--formats", ",".join(["tflite", *WEIGHT_ONLY]), "--runs", "5",
                     "--batch", "4", "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)["results"]
    assert list(rows) == ["tflite", *WEIGHT_ONLY]
    assert all(rows[fmt]["status"] in ("ok", "int8 slower than fp32") and rows[fmt]["p50_ms"] > 0
               for fmt in WEIGHT_ONLY)


@pytest.mark.slow
@pytest.mark.parametrize("io", ["uint8", "float"])
def test_int8_io_choices_make_files_the_runtime_runs_like_int8_io(trained, exported, tmp_path, io):
    """uint8 (Android, MediaPipe) or float32 input and output tensors around the same int8 internals: the file
    says so, the manifest records it, and the runtime's answers on the samples are the int8-I/O file's."""
    from edgecnn.export import export_model

    out = tmp_path / io
    data = export_model(trained, out, formats=["tflite-int8"], calibration_size=64, int8_io=io)
    quantization = data["files"]["tflite-int8"]["quantization"]
    dtype = {"uint8": "uint8", "float": "float32"}[io]
    assert quantization["io"] == io
    assert quantization["inputs"]["image"]["dtype"] == quantization["outputs"]["probabilities"]["dtype"] == dtype
    file_types = _tensor_dtypes(out / "model.int8.tflite")
    assert set(file_types["io"].values()) == {dtype} and file_types["tensors"].get("int8", 0) >= 4
    assert data["validation"]["results"]["tflite-int8"]["agreement"] >= 0.98
    assert manifest_io.read(exported)["files"]["tflite-int8"]["quantization"]["io"] == "int8"
    images = sorted((exported / "samples").glob("*.png"))
    ours = edgecnn.load(out, format="tflite-int8").classify_batch([p.read_bytes() for p in images])
    int8_io = edgecnn.load(exported, format="tflite-int8").classify_batch([p.read_bytes() for p in images])
    assert [r.top.label for r in ours] == [r.top.label for r in int8_io]
    for a, b in zip(ours, int8_io):  # one int8 output step (1/256) apart at most, as the quantized outputs are
        assert abs(a.top.score - b.top.score) <= 1 / 128 + 1e-6


def test_bench_flags_a_dynamic_range_row_slower_than_fp32_but_not_fp16():
    from edgecnn.bench import flag_slow_int8

    def row(p50):
        return {"status": "ok", "p50_ms": p50}

    report = {"notes": [], "results": {"tflite": row(1.0), "tflite-fp16": row(1.2), "tflite-dynamic": row(1.5)}}
    flag_slow_int8(report)
    assert report["results"]["tflite-dynamic"]["status"] == "int8 slower than fp32"
    assert report["results"]["tflite-fp16"]["status"] == "ok"  # float16 weights compute in float32: not a promise
    note = report["notes"][0]
    assert note.startswith("tflite-dynamic: int8 slower than fp32") and note.endswith("prefer tflite on this machine")


def test_a_file_with_ops_newer_than_the_installed_litert_is_named_as_such(digits_export, tmp_path):
    """tflite-runtime 2.14 (32-bit Pi OS) meeting an op version it lacks: not 'truncated', but what to do."""
    import flatbuffers

    from edgecnn.errors import ModelError
    from edgecnn.runtime.backends import LiteRTBackend

    schema = pytest.importorskip("ai_edge_litert.schema_py_generated")
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(
        (digits_export / "model.tflite").read_bytes(), 0))
    for code in model.operatorCodes:
        code.version = 99  # no LiteRT has it
    builder = flatbuffers.Builder(1 << 20)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    path = tmp_path / "model.tflite"
    path.write_bytes(bytes(builder.Output()))
    with pytest.raises(ModelError) as caught:
        LiteRTBackend(path, "image", ["probabilities"])
    message = str(caught.value)
    assert "newer" in message and "tflite-int8" in message and "truncated" not in message


@pytest.mark.slow
def test_per_tensor_weights_make_a_smaller_int8_tflite_file(trained, exported, tmp_path):
    """--per-tensor applies to tflite-int8 too: one scale and zero point per weight tensor instead of one per
    output channel (what makes the int8 file >= 3.5x smaller than fp32; BENCHMARKS.md, "Sizes")."""
    from edgecnn.export import export_model

    data = export_model(trained, tmp_path / "pt", formats=["tflite-int8"], calibration_size=64, per_channel=False)
    entry, per_channel = data["files"]["tflite-int8"], manifest_io.read(exported)["files"]["tflite-int8"]
    assert entry["quantization"]["weights"] == "per-tensor" and per_channel["quantization"]["weights"] == "per-channel"
    assert entry["size"] < per_channel["size"]
    interpreter = import_litert_interpreter()(model_path=str(tmp_path / "pt" / "model.int8.tflite"))
    scales = [len(d["quantization_parameters"]["scales"]) for d in interpreter.get_tensor_details()
              if np.dtype(d["dtype"]) == np.int8]
    assert scales and max(scales) == 1


@pytest.mark.parametrize("name", ["digits-cnn", "bbc-news", "digit-detector"])
def test_committed_int8_tflite_is_at_least_3_5_times_smaller_than_onnx(name):
    """Issue 17 item 5's target, per committed export. The detector meets it with --per-tensor (3.56x; per-channel
    weights give it 3.2x: its many thin layers carry one scale per channel, BENCHMARKS.md section 5, 'Sizes')."""
    from .conftest import EXPORTED

    files = manifest_io.read(EXPORTED / name)["files"]
    assert files["onnx"]["size"] >= 3.5 * files["tflite-int8"]["size"]
