"""edgecnn.integrations.ray: Ray Data's map_batches gives the answers edgecnn infer gives, row for row."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from edgecnn.errors import InputError
from edgecnn.runtime.infer import run_inference

IMAGES = 2000


def noisy_digits(digits_export, folder, count):
    """``count`` different PNGs (the samples with seeded noise), and one file that is no image."""
    from PIL import Image

    folder.mkdir()
    rng = np.random.default_rng(20)
    samples = [np.asarray(Image.open(p).convert("L"), dtype=np.int16)
               for p in sorted((digits_export / "samples").glob("*.png"))]
    for i in range(count):
        noisy = samples[i % len(samples)] + rng.integers(-12, 13, size=samples[0].shape)
        Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(folder / f"{i:05d}.png")
    (folder / "01000-broken.png").write_bytes(b"not a png at all")
    return folder


def infer_lines(model, folder):
    """What ``edgecnn infer FOLDER --json`` prints: {input: JSON line}, {input: error line}."""
    lines, errors = [], []
    run_inference(model, [str(folder)], as_json=True, emit=lines.append, report=errors.append,
                  inform=lambda _: None)
    return {json.loads(line)["input"]: json.loads(line) for line in lines}, errors


def test_predictor_alone_matches_infer_on_bytes_paths_and_arrays(digits_export, tmp_path):
    """No Ray needed to call it: a batch is a dict of columns, as Ray hands it over."""
    from PIL import Image

    from edgecnn.integrations.ray import Predictor

    folder = noisy_digits(digits_export, tmp_path / "images", 40)
    expected, errors = infer_lines(digits_export, folder)
    paths = sorted(str(p) for p in folder.iterdir())
    predictor = Predictor(digits_export)
    by_bytes = predictor({"bytes": np.array([Path(p).read_bytes() for p in paths], dtype=object),
                          "path": np.array(paths, dtype=object)})
    by_path = predictor({"path": np.array(paths, dtype=object)})
    assert "bytes" not in by_bytes and "bytes" in Predictor(digits_export, keep_images=True)(
        {"bytes": np.array([Path(paths[0]).read_bytes()], dtype=object)})
    for out in (by_bytes, by_path):
        assert list(out["input"]) == paths
        got = {name: json.loads(text) for name, text in zip(out["input"], out["result"]) if text}
        assert got == expected
        assert [e for e in out["error"] if e] == errors and len(errors) == 1
        top = [json.loads(text)["predictions"][0] for text in out["result"] if text]
        assert list(out["label"][out["error"] == ""]) == [c["label"] for c in top]
    arrays = [np.asarray(Image.open(p)) for p in paths if "broken" not in p]
    by_array = predictor({"image": np.array(arrays)})
    assert [json.loads(r)["predictions"] for r in by_array["result"]] == [
        expected[p]["predictions"] for p in paths if "broken" not in p]
    with pytest.raises(InputError, match="none of the input columns"):
        predictor({"pixels": np.zeros((1, 28, 28))})


@pytest.mark.slow
def test_ray_data_over_thousands_of_images_gives_what_infer_gives(digits_export, tmp_path):
    """A local Ray (2 CPUs, 2 actors): a folder and a Parquet file of image bytes, predictions written as Parquet."""
    ray = pytest.importorskip("ray")
    import pyarrow as pa
    import pyarrow.parquet as pq

    from edgecnn.integrations.ray import ACTOR_CPUS, IO_CPUS, Predictor, infer_dataset, read_inputs

    folder = noisy_digits(digits_export, tmp_path / "images", IMAGES)
    expected, errors = infer_lines(digits_export, folder)
    files = sorted(folder.iterdir())
    pq.write_table(pa.table({"path": [str(p) for p in files], "bytes": [p.read_bytes() for p in files]}),
                   tmp_path / "images.parquet")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        infer_dataset(str(folder), digits_export, str(tmp_path / "from-folder"))
        dataset = read_inputs(str(tmp_path / "images.parquet")).map_batches(
            Predictor, fn_constructor_kwargs={"model": str(digits_export)}, concurrency=2, num_cpus=ACTOR_CPUS,
            batch_size=256)
        dataset.write_parquet(str(tmp_path / "from-parquet"), ray_remote_args={"num_cpus": IO_CPUS})
        for out in (tmp_path / "from-folder", tmp_path / "from-parquet"):
            assert "bytes" not in pq.read_schema(next(out.glob("*.parquet"))).names  # not carried along
            table = pq.read_table(out).to_pylist()
            assert len(table) == IMAGES + 1
            got = {row["input"]: json.loads(row["result"]) for row in table if not row["error"]}
            assert got == expected
            assert [row["error"] for row in table if row["error"]] == errors
            assert all(row["label"] == json.loads(row["result"])["predictions"][0]["label"]
                       for row in table if not row["error"])
    finally:
        ray.shutdown()
    shutil.rmtree(folder)


@pytest.mark.slow
def test_the_readme_ray_block_runs_and_writes_what_infer_prints(digits_export, tmp_path):
    """The README's block ("On a Ray cluster"), as written, in a folder holding a copy of the export."""
    import re
    import subprocess
    import sys

    import pyarrow.parquet as pq

    pytest.importorskip("ray")
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = next(body for body in re.findall(r"^```python\n(.*?)^```", readme, re.DOTALL | re.MULTILINE)
                 if "edgecnn.integrations.ray" in body)
    shutil.copytree(digits_export, tmp_path / "exported" / "digits-cnn")
    result = subprocess.run([sys.executable, "-c", block], cwd=tmp_path, capture_output=True, text=True,
                            timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    expected, _ = infer_lines(tmp_path / "exported" / "digits-cnn", tmp_path / "exported" / "digits-cnn" / "samples")
    rows = pq.read_table(tmp_path / "predictions").to_pylist()
    assert len(rows) == len(expected) and all(not row["error"] for row in rows)
    assert {Path(row["input"]).name: json.loads(row["result"])["predictions"] for row in rows} == {
        Path(name).name: line["predictions"] for name, line in expected.items()}
    assert "'label'" in result.stdout


def test_predictor_on_texts_and_text_files_matches_infer(tmp_path):
    """A text model's batch: a ``text`` column, or ``path`` to text files (read as infer reads them); a file that is
    not UTF-8 is its row's error, not the batch's."""
    from edgecnn.integrations.ray import Predictor

    from .conftest import reference_export

    model = reference_export("bbc-news", "export-text")
    articles = sorted((model / "samples").glob("*.txt"))[:4]
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 prices rose".encode("latin-1"))
    files = [*map(str, articles), str(tmp_path / "latin1.txt")]
    lines, errors = [], []
    run_inference(model, files, as_json=True, emit=lines.append, report=errors.append, inform=lambda _: None)
    predictor = Predictor(model)
    by_path = predictor({"path": np.array(files, dtype=object)})
    assert [json.loads(r) for r in by_path["result"] if r] == [json.loads(line) for line in lines]
    assert [e for e in by_path["error"] if e] == errors and len(errors) == 1
    texts = [p.read_text() for p in articles]
    by_text = predictor({"text": np.array(texts, dtype=object)})
    alone = []
    run_inference(model, [], texts=texts, as_json=True, emit=alone.append, report=lambda _: None,
                  inform=lambda _: None)
    assert [json.loads(r) for r in by_text["result"]] == [json.loads(line) for line in alone]
    by_bytes = predictor({"bytes": np.array([b"\xff\xfe not utf-8", texts[0].encode()], dtype=object)})
    assert "not UTF-8" in by_bytes["error"][0] and not by_bytes["error"][1]
