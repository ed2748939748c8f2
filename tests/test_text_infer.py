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


# --- Issue 14: every line and file is read on its own, only as far as the model can use, and a binary file is
# called what it is.

def test_one_invalid_byte_costs_only_its_own_line(bbc_export):
    lines = [f"Shares in bank number {i} fell after its profit forecast was cut".encode() for i in range(40)]
    lines[16] = b"Caf\xe9 prices rose again in Paris"
    result = subprocess.run([sys.executable, "-m", "edgecnn.cli", "infer", "--model", str(bbc_export), "--lines",
                             "-", "--json"], input=b"\n".join(lines) + b"\n", capture_output=True, timeout=300,
                            check=False)
    stdout, stderr = result.stdout.decode(), result.stderr.decode()
    assert result.returncode == 2, stderr
    outputs = [json.loads(line) for line in stdout.splitlines()]
    assert [o["input"] for o in outputs] == [line.decode() for i, line in enumerate(lines) if i != 16]
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "line 17" in errors[0] and "UTF-8" in errors[0], stderr


def test_text_file_from_dev_zero_is_refused_at_once(bbc_export):
    result = run_cli("infer", "--model", str(bbc_export), "--text-file", "/dev/zero", timeout=60)
    assert_one_line_exit_2(result, "/dev/zero", "not a text file")


def test_lines_from_dev_zero_are_refused_at_once(bbc_export):
    result = run_cli("infer", "--model", str(bbc_export), "--lines", "/dev/zero", timeout=60)
    assert_one_line_exit_2(result, "/dev/zero", "not a text file")


@pytest.mark.parametrize("option", ["--text-file", "--lines", None])
def test_png_given_as_text_says_it_is_an_image(bbc_export, digits_export, option):
    png = str(next((digits_export / "samples").glob("*.png")))
    args = [option, png] if option else [png]
    line = assert_one_line_exit_2(run_cli("infer", "--model", str(bbc_export), *args), png,
                                  "not a text file (looks like a PNG image)", "positional inputs to an image model")
    assert "iconv" not in line


def test_utf16_text_file_is_named_as_such(bbc_export, tmp_path):
    path = tmp_path / "notepad.txt"
    path.write_text("Shares fell sharply", encoding="utf-16")
    assert_one_line_exit_2(run_cli("infer", "--model", str(bbc_export), "--text-file", str(path)), "UTF-16",
                           "iconv -f utf-16")


class _Endless:
    """A file that never ends (a FIFO, a device): ``read`` always returns ``size`` bytes of ``unit``."""

    def __init__(self, unit: bytes):
        self.unit, self.given = unit, 0

    def read(self, size: int = -1) -> bytes:
        assert size > 0, "an unbounded read of an endless file"
        data = (self.unit * (size // len(self.unit) + 1))[:size]
        self.given += len(data)
        return data


def test_reading_stops_once_the_model_has_its_tokens(bbc_export):
    from edgecnn.runtime.text import enough_for, read_text

    tokenizer = edgecnn.load(bbc_export).tokenizer
    endless = _Endless(b"shares fell ")
    read = read_text(endless, "endless", enough=enough_for(tokenizer))
    assert endless.given < 1_000_000 and read.notes == []
    ids, count = tokenizer.encode_with_count(read.text)
    assert count > tokenizer.sequence_length and ids == tokenizer.encode_with_count("shares fell " * 10_000)[0]


def test_reading_stops_at_the_byte_cap_and_says_so(bbc_export):
    from edgecnn.runtime.text import MAX_TEXT_BYTES, enough_for, read_text

    tokenizer = edgecnn.load(bbc_export).tokenizer
    endless = _Endless(b" ")
    read = read_text(endless, "endless", enough=enough_for(tokenizer))
    assert MAX_TEXT_BYTES <= endless.given <= MAX_TEXT_BYTES + 1
    assert len(read.notes) == 1 and f"{MAX_TEXT_BYTES // 2**20} MiB" in read.notes[0]


def test_cap_note_reaches_the_cli_result(bbc_export, tmp_path):
    from edgecnn.runtime.text import MAX_TEXT_BYTES

    path = tmp_path / "spaces.txt"
    path.write_bytes(b"The striker scored twice." + b" " * MAX_TEXT_BYTES + b"election")
    result = run_cli("infer", "--model", str(bbc_export), "--text-file", str(path), "--json")
    assert result.returncode == 0, result.stderr
    (line,) = _json_lines(result)
    assert any("MiB" in note for note in line["notes"]), line


def test_a_file_cut_mid_character_by_the_reader_is_not_an_encoding_error(bbc_export, tmp_path):
    from edgecnn.runtime.text import enough_for, read_text

    tokenizer = edgecnn.load(bbc_export).tokenizer
    text = "café prix " * 200_000  # 2-byte characters everywhere: some chunk boundary cuts one in half
    with (tmp_path / "cafe.txt").open("w", encoding="utf-8") as handle:
        handle.write(text)
    with (tmp_path / "cafe.txt").open("rb") as handle:
        read = read_text(handle, "cafe.txt", enough=enough_for(tokenizer))
    assert tokenizer.encode_with_count(read.text)[0] == tokenizer.encode_with_count(text)[0]
