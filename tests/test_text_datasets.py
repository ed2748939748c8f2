"""Text datasets: the two packaged corpora load with fixed seeded splits; user CSVs and folders load or say why not."""

from __future__ import annotations

import numpy as np
import pytest

from edgecnn.errors import InputError
from edgecnn.train.datasets import load_dataset


@pytest.mark.parametrize("name, size, labels", [
    ("bbc-news", 2225, ["business", "entertainment", "politics", "sports", "tech"]),
    ("tweets", 38158, ["negative", "neutral", "positive"]),
])
def test_packaged_corpora_load_with_a_seeded_stratified_split(name, size, labels):
    splits = load_dataset(name, seed=0)
    assert splits.task == "text-classification" and splits.labels == labels
    sizes = [len(splits.x_train), len(splits.x_val), len(splits.x_test)]
    assert sum(sizes) == size and abs(sizes[2] / size - 0.2) < 0.01 and abs(sizes[1] / size - 0.1) < 0.01
    assert all(isinstance(t, str) for t in splits.x_test) and splits.y_test.dtype == np.int64
    full = np.bincount(np.concatenate([splits.y_train, splits.y_val, splits.y_test])) / size
    assert np.abs(np.bincount(splits.y_test) / len(splits.y_test) - full).max() < 0.01
    again = load_dataset(name, seed=0)
    assert again.x_test == splits.x_test and load_dataset(name, seed=1).x_test != splits.x_test
    assert splits.preprocessing["type"] == "text"


def test_bbc_news_reads_the_one_latin1_article():
    splits = load_dataset("bbc-news", seed=0)
    texts = splits.x_train + splits.x_val + splits.x_test
    assert sum("\ufffd" in t for t in texts) == 0 and sum("£" in t for t in texts) > 10


def test_dedupe_drops_repeated_articles():
    splits = load_dataset("bbc-news", seed=0, dedupe=True)
    texts = splits.x_train + splits.x_val + splits.x_test
    assert len(texts) == len(set(texts)) == 2225 - 98


def _write_csv(path, rows, encoding="utf-8"):
    path.write_bytes(("text,label\n" + "".join(f'"{t}",{lab}\n' for t, lab in rows)).encode(encoding))


def test_text_csv_loads_labels_sorted(tmp_path):
    rows = [(f"good thing number {i}", "pos") for i in range(20)] + [(f"bad, sad {i}", "neg") for i in range(20)]
    _write_csv(tmp_path / "data.csv", rows)
    splits = load_dataset("text-csv", seed=0, data=str(tmp_path / "data.csv"))
    assert splits.labels == ["neg", "pos"] and len(splits.x_test) == 8
    assert all(t.startswith("bad, sad") == (y == 0) for t, y in zip(splits.x_test, splits.y_test))


def test_text_csv_without_the_columns_is_one_clear_error(tmp_path):
    (tmp_path / "data.csv").write_text("body,category\nhello,a\n", encoding="utf-8")
    with pytest.raises(InputError, match="'text' and 'label'"):
        load_dataset("text-csv", seed=0, data=str(tmp_path / "data.csv"))


def test_text_csv_not_utf8_names_the_file(tmp_path):
    _write_csv(tmp_path / "latin.csv", [("café", "a")] * 10 + [("thé", "b")] * 10, encoding="latin-1")
    with pytest.raises(InputError, match="latin.csv.*UTF-8"):
        load_dataset("text-csv", seed=0, data=str(tmp_path / "latin.csv"))


def test_text_folder_loads_one_class_per_subfolder(tmp_path):
    for label in ("ham", "spam"):
        (tmp_path / label).mkdir()
        for i in range(10):
            (tmp_path / label / f"{i}.txt").write_text(f"{label} message {i}", encoding="utf-8")
    splits = load_dataset("text-folder", seed=0, data=str(tmp_path))
    assert splits.labels == ["ham", "spam"] and len(splits.x_train) + len(splits.x_val) + len(splits.x_test) == 20


def test_text_folder_with_too_few_examples_says_so(tmp_path):
    for label in ("a", "b"):
        (tmp_path / label).mkdir()
        (tmp_path / label / "1.txt").write_text("x", encoding="utf-8")
    with pytest.raises(InputError, match="at least 5"):
        load_dataset("text-folder", seed=0, data=str(tmp_path))
