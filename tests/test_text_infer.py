"""Text inference on the committed bbc-news export: the samples, the CLI flags, and every bad input of issue 3."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import edgecnn
from edgecnn import manifest as manifest_io

from .conftest import error_lines, reference_export, run_cli
from .test_cli_errors import assert_one_line_exit_2


@pytest.fixture(scope="session")
def bbc_export() -> Path:
    return reference_export("bbc-news", "export-text")


@pytest.fixture()
def bbc_copy(bbc_export, tmp_path) -> Path:
    target = tmp_path / "bbc-news"
    shutil.copytree(bbc_export, target)
    return target


def _json_lines(result) -> list[dict]:
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def test_every_sample_gets_its_label_from_the_cli(bbc_export):
    samples = sorted((bbc_export / "samples").glob("*.txt"))
    labels = edgecnn.load(bbc_export).labels
    assert {p.name.rsplit("-", 1)[0] for p in samples} == set(labels)
    args = [a for p in samples for a in ("--text-file", str(p))]
    for fmt in ("onnx", "tflite-int8"):
        result = run_cli("infer", "--model", str(bbc_export), "--format", fmt, "--json", *args)
        assert result.returncode == 0, result.stderr
        lines = _json_lines(result)
        assert [line["input"] for line in lines] == [str(p) for p in samples]
        for line in lines:
            assert line["predictions"][0]["label"] == Path(line["input"]).name.rsplit("-", 1)[0], (fmt, line)


def test_every_format_agrees_on_the_samples(bbc_export):
    texts = [p.read_text(encoding="utf-8") for p in sorted((bbc_export / "samples").glob("*.txt"))]
    manifest = manifest_io.read(bbc_export)
    labels = {fmt: [r.label for r in edgecnn.TextClassifier(manifest, format=fmt).classify(texts)]
              for fmt in manifest.formats}
    assert len({tuple(v) for v in labels.values()}) == 1, labels


@pytest.mark.parametrize("text", ["", "   ", "\t\n\r\n  ", "?!... --"])
def test_empty_text_is_classified_and_flagged(bbc_export, text):
    result = edgecnn.load(bbc_export).classify(text)
    assert result.label in edgecnn.load(bbc_export).labels
    assert any("empty text" in note for note in result.notes), result.notes


def test_ordinary_text_has_no_notes(bbc_export):
    result = edgecnn.load(bbc_export).classify("The striker scored twice as the team won the league cup final.")
    assert result.notes == [] and result.label == "sports"


def test_classify_takes_a_list_and_returns_a_list(bbc_export):
    results = edgecnn.load(bbc_export).classify(["Shares fell as the bank cut its profit forecast.", ""])
    assert isinstance(results, list) and len(results) == 2
    assert results[0].notes == [] and results[1].notes


def test_text_json_input_is_cut_to_80_characters(bbc_export):
    text = "The government announced a new election campaign plan. " * 5
    result = run_cli("infer", "--model", str(bbc_export), "--text", text, "--text", "short one", "--json")
    assert result.returncode == 0, result.stderr
    lines = _json_lines(result)
    assert [line["input"] for line in lines] == [text[:80], "short one"]


def test_lines_from_stdin_one_document_per_line(bbc_export):
    stdin = "Shares fell sharply on Wall Street.\n\nThe band's new album tops the charts.\nThe minister resigned.\n"
    result = run_cli("infer", "--model", str(bbc_export), "--lines", "-", "--json", stdin=stdin)
    assert result.returncode == 0, result.stderr
    assert [line["input"] for line in _json_lines(result)] == [
        "Shares fell sharply on Wall Street.", "The band's new album tops the charts.", "The minister resigned."]


def test_non_utf8_text_file_is_one_line_error_and_the_others_still_run(bbc_export, tmp_path):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("Caf\xe9 prices rose by \xa35".encode("latin-1"))
    good = next((bbc_export / "samples").glob("*.txt"))
    result = run_cli("infer", "--model", str(bbc_export), "--text-file", str(bad), "--text-file", str(good), "--json")
    assert_one_line_exit_2(result, "latin1.txt", "not UTF-8")
    assert [line["input"] for line in _json_lines(result)] == [str(good)]


def test_missing_text_file_is_one_line_error(bbc_export, tmp_path):
    assert_one_line_exit_2(run_cli("infer", "--model", str(bbc_export), "--text-file", str(tmp_path / "nope.txt")),
                           "nope.txt")


def test_ten_megabyte_text_is_truncated_not_refused(bbc_export, tmp_path):
    path = tmp_path / "huge.txt"
    sample = next((bbc_export / "samples").glob("sports-*.txt")).read_text(encoding="utf-8")
    with path.open("w", encoding="utf-8") as handle:
        while handle.tell() < 10_000_000:
            handle.write(sample + "\n")
    result = run_cli("infer", "--model", str(bbc_export), "--text-file", str(path), "--json")
    assert result.returncode == 0, result.stderr
    (line,) = _json_lines(result)
    assert line["predictions"][0]["label"] == "sports"
    assert any("truncated" in note for note in line["notes"])


def _move_vocabulary_to_file(folder: Path) -> Path:
    """Rewrite an export to carry its vocabulary as a hashed vocabulary.json (the manifest's other option)."""
    data = json.loads((folder / "edgecnn.json").read_text(encoding="utf-8"))
    vocab_path = folder / "vocabulary.json"
    vocab_path.write_text(json.dumps(data["text"].pop("vocabulary"), ensure_ascii=False), encoding="utf-8")
    data["text"]["vocabulary_file"] = manifest_io.file_entry(folder, "vocabulary.json")
    (folder / "edgecnn.json").write_text(json.dumps(data), encoding="utf-8")
    return vocab_path


def test_vocabulary_file_variant_gives_the_same_ids(bbc_export, bbc_copy):
    _move_vocabulary_to_file(bbc_copy)
    text = next((bbc_export / "samples").glob("*.txt")).read_text(encoding="utf-8")
    inline = edgecnn.load(bbc_export).preprocess([text])
    assert (edgecnn.load(bbc_copy).preprocess([text]) == inline).all()


def test_missing_vocabulary_file_is_one_line_error(bbc_copy):
    _move_vocabulary_to_file(bbc_copy).unlink()
    assert_one_line_exit_2(run_cli("infer", "--model", str(bbc_copy), "--text", "hello"),
                           "vocabulary.json", "missing")


def test_changed_vocabulary_file_is_one_line_error(bbc_copy):
    path = _move_vocabulary_to_file(bbc_copy)
    vocabulary = json.loads(path.read_text(encoding="utf-8"))
    vocabulary[2], vocabulary[3] = vocabulary[3], vocabulary[2]
    path.write_text(json.dumps(vocabulary), encoding="utf-8")
    assert_one_line_exit_2(run_cli("infer", "--model", str(bbc_copy), "--text", "hello"), "vocabulary.json",
                           "sha256")


def test_manifest_without_text_section_is_one_line_error(bbc_copy):
    data = json.loads((bbc_copy / "edgecnn.json").read_text(encoding="utf-8"))
    del data["text"]
    (bbc_copy / "edgecnn.json").write_text(json.dumps(data), encoding="utf-8")
    assert_one_line_exit_2(run_cli("infer", "--model", str(bbc_copy), "--text", "hello"), "text")


def test_image_flags_on_text_model_and_text_flags_on_image_model(bbc_export, digits_export):
    result = run_cli("infer", "--model", str(digits_export), "--text", "hello")
    assert result.returncode == 2 and len(error_lines(result)) == 1


def test_text_inference_loads_no_training_module(bbc_export):
    code = (f"import edgecnn, sys, json\nedgecnn.load(r'{bbc_export}', format='tflite-int8').classify('hi there')\n"
            "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    modules = set(json.loads(out.stdout.splitlines()[-1]))
    assert not modules & {"tensorflow", "keras", "tf2onnx", "onnx", "sklearn", "matplotlib"}
