"""Keras ``TextVectorization`` reproduced with the standard library and numpy, from the exported vocabulary.

What TensorFlow does, measured against keras 3 / tensorflow 2.21 and proved token for token by
``tests/test_text_tokenizer.py``:

- ``"lower"`` is ``tf.strings.lower`` with its default empty encoding, i.e. ASCII-only: ``A``-``Z`` become
  ``a``-``z`` and every other character (``É``, ``Σ``, ``İ``) is left as it is. Python's ``str.lower`` would
  lowercase those too, so it must not be used; ``bytes.lower`` on the UTF-8 encoding is exactly right.
- ``"strip_punctuation"`` is ``regex_replace(r'[!"#$%&()\\*\\+,-\\./:;<=>?@\\[\\\\\\]^_`{|}~\\']', "")``: the 32
  ASCII punctuation characters of ``string.punctuation`` (``,-\\.`` is a range that covers ``,``, ``-`` and ``.``),
  nothing else: curly quotes, dashes, ellipses and emoji stay inside their tokens. Deleting those bytes from the
  UTF-8 encoding is safe because ASCII bytes never occur inside a multi-byte character.
- ``"whitespace"`` is ``tf.strings.split`` without a separator: runs of the six ASCII whitespace characters
  (space, ``\\t``, ``\\n``, ``\\v``, ``\\f``, ``\\r``) separate tokens, leading and trailing runs are dropped.
  Unicode spaces (``\\xa0``, ``\\u2003``, ``\\x85``, ``\\x1c``-``\\x1f``) do *not* split, unlike ``str.split()``;
  ``bytes.split()`` splits on exactly those six.
- Token ids: 0 pads, 1 is out of vocabulary (``[UNK]``), the rest is the vocabulary's order; the sequence is cut
  after ``sequence_length`` tokens (the head is kept) or padded with 0 at the end.

Working on UTF-8 bytes keeps every step in C (``bytes.lower``, ``bytes.translate``, ``bytes.split``, one dict
lookup per token). A long text is tokenized from a growing prefix until more than ``sequence_length`` tokens are
seen, so a 10 MB document costs about as much as a short one.
"""

from __future__ import annotations

import os
import string
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path

import numpy as np

from ..errors import InputError, ModelError

PAD_ID = 0
OOV_ID = 1
OOV_TOKEN = "[UNK]"
STANDARDIZE_MODES = (None, "lower", "strip_punctuation", "lower_and_strip_punctuation")
SPLIT_MODES = ("whitespace",)
#: The bytes Keras' punctuation regex removes: exactly ``string.punctuation``.
PUNCTUATION = string.punctuation.encode("ascii")
#: Characters per token the first prefix allows for; the prefix doubles until enough tokens are seen.
_CHARS_PER_TOKEN = 12
#: A text shown as a result's ``input`` is cut to this many characters.
INPUT_CHARS = 80


def standardize(text: str, mode: str | None = "lower_and_strip_punctuation") -> bytes:
    """The UTF-8 bytes TextVectorization's ``standardize`` step makes of ``text``."""
    data = text.encode("utf-8", "surrogatepass")
    if mode in ("lower", "lower_and_strip_punctuation"):
        data = data.lower()
    if mode in ("strip_punctuation", "lower_and_strip_punctuation"):
        data = data.translate(None, PUNCTUATION)
    return data


def split(text: str, mode: str | None = "lower_and_strip_punctuation", limit: int | None = None) -> list[str]:
    """The tokens TextVectorization produces for ``text`` (at most ``limit`` of them), as str."""
    return [t.decode("utf-8", "surrogatepass") for t in _tokens(text, mode, limit)]


def _tokens(text: str, mode: str | None, limit: int | None) -> list[bytes]:
    """Standardized, whitespace-split tokens (bytes) of ``text``; with ``limit``, only the first ``limit``.

    With a limit, a prefix of ``text`` is standardized and split; if it yields more than ``limit`` tokens, the
    first ``limit`` are complete (each is followed by whitespace inside the prefix) and the rest is never looked at.
    Otherwise the prefix doubles, up to the whole text.
    """
    if limit is None:
        return standardize(text, mode).split()
    size = max(256, limit * _CHARS_PER_TOKEN)
    while True:
        if size >= len(text):
            return standardize(text, mode).split()[:limit]
        tokens = standardize(text[:size], mode).split()
        if len(tokens) > limit:
            return tokens[:limit]
        size *= 2


class Tokenizer:
    """Text -> int32 token ids exactly as the training graph's ``TextVectorization`` produced them.

    Build it from the manifest's ``text`` section with :meth:`from_manifest_section`, or directly::

        tokenizer = Tokenizer(["", "[UNK]", "the", "said"], sequence_length=8)
        tokenizer.encode(["He SAID: the end."])  # -> [[1, 3, 2, 1, 0, 0, 0, 0]]
    """

    def __init__(self, vocabulary: Sequence[str], sequence_length: int,
                 standardize: str | None = "lower_and_strip_punctuation", split: str = "whitespace",
                 pad_id: int = PAD_ID, oov_id: int = OOV_ID):
        if standardize not in STANDARDIZE_MODES:
            raise ModelError(f"text standardization {standardize!r} is not supported; "
                             f"expected one of {', '.join(map(str, STANDARDIZE_MODES))}")
        if split not in SPLIT_MODES:
            raise ModelError(f"text split {split!r} is not supported; expected 'whitespace'")
        if not isinstance(sequence_length, int) or sequence_length < 1:
            raise ModelError(f"text sequence length {sequence_length!r} must be a positive integer; re-export")
        if (pad_id, oov_id) != (PAD_ID, OOV_ID):
            raise ModelError(f"pad id {pad_id} / OOV id {oov_id} differ from Keras' 0 / 1; re-export the model")
        vocabulary = list(vocabulary)
        if len(vocabulary) < 2 or vocabulary[PAD_ID] != "" or vocabulary[OOV_ID] != OOV_TOKEN:
            raise ModelError("the text vocabulary must start with '' (padding) and '[UNK]' as "
                             "TextVectorization.get_vocabulary() returns it; re-export the model")
        self.vocabulary = vocabulary
        self.sequence_length = sequence_length
        self.standardize = standardize
        self.split = split
        # Later duplicates never win, as in Keras' lookup table (which refuses duplicates anyway).
        self._ids: dict[bytes, int] = {}
        for index, token in enumerate(vocabulary[2:], start=2):
            self._ids.setdefault(token.encode("utf-8", "surrogatepass"), index)

    @classmethod
    def from_manifest_section(cls, section: dict, vocabulary: Sequence[str] | None = None) -> Tokenizer:
        """A tokenizer from the manifest's ``text`` section (``vocabulary`` given when it lives in its own file)."""
        try:
            return cls(vocabulary if vocabulary is not None else section["vocabulary"],
                       int(section["sequence_length"]), section.get("standardize", "lower_and_strip_punctuation"),
                       section.get("split", "whitespace"), int(section.get("pad_id", PAD_ID)),
                       int(section.get("oov_id", OOV_ID)))
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"the manifest's text section is incomplete or malformed ({exc!r}); re-export") from None

    def __len__(self) -> int:
        return len(self.vocabulary)

    def tokens(self, text: str) -> list[str]:
        """The first ``sequence_length`` tokens of ``text`` after standardization (for explanations and tests)."""
        return [t.decode("utf-8", "surrogatepass") for t in _tokens(self._check(text), self.standardize,
                                                                      self.sequence_length)]

    def encode_one(self, text: str) -> list[int]:
        """Token ids of one text, unpadded (at most ``sequence_length`` of them)."""
        return self.encode_with_count(text)[0]

    def encode_with_count(self, text: str) -> tuple[list[int], int]:
        """Token ids of one text (unpadded) and how many tokens it has, counted up to ``sequence_length + 1``.

        A count above ``sequence_length`` means the text was truncated; 0 means the model sees only padding.
        """
        tokens = _tokens(self._check(text), self.standardize, self.sequence_length + 1)
        kept = tokens[:self.sequence_length]
        return list(map(self._ids.get, kept, repeat(OOV_ID, len(kept)))), len(tokens)

    def encode(self, texts: str | Iterable[str]) -> np.ndarray:
        """An int32 array ``[N, sequence_length]`` of token ids, zero-padded at the end; a str counts as N=1."""
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        length, mode, get = self.sequence_length, self.standardize, self._ids.get
        out = np.zeros((len(texts), length), dtype=np.int32)
        for i, text in enumerate(texts):
            tokens = _tokens(self._check(text), mode, length)
            # map() with a repeated default runs the dict lookups in C: about twice a list comprehension's speed.
            out[i, :len(tokens)] = np.fromiter(map(get, tokens, repeat(OOV_ID, len(tokens))), np.int32,
                                               len(tokens))
        return out

    @staticmethod
    def _check(text) -> str:
        if isinstance(text, bytes):
            raise InputError("text input must be str, not bytes; decode it first (e.g. data.decode('utf-8'))")
        if not isinstance(text, str):
            raise InputError(f"text input must be a str, got {type(text).__name__}")
        return text


@dataclass(frozen=True)
class TextFile:
    """A text file given by path, read (once, whole, as UTF-8) only when it is classified.

    Reading late lets ``edgecnn infer`` report a bad file on its own line while every other input still gets its
    result.
    """

    path: str

    def read(self) -> str:
        return decode_utf8(self.read_bytes(), self.path)

    def read_bytes(self) -> bytes:
        path = Path(self.path)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise InputError(f"{path}: no such file") from None
        except IsADirectoryError:
            raise InputError(f"{path} is a folder; pass a text file, or the folder as a positional input") from None
        except OSError as exc:
            raise InputError(f"{path} cannot be read ({exc.strerror})") from None


def decode_utf8(data: bytes, name: str) -> str:
    """UTF-8 (a BOM is dropped) or an InputError naming ``name`` and the first bad byte."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"{name} is not UTF-8 text (invalid byte at offset {exc.start}); convert it first, "
                         "e.g. iconv -f latin1 -t utf-8") from None


def read_text_inputs(inputs: Sequence[str] = (), texts: Sequence[str] = (), text_files: Sequence[str] = (),
                     lines_file: str | None = None) -> list[tuple[str | None, str | TextFile]]:
    """``(name, text)`` pairs for ``edgecnn infer`` on a text model, in the order given.

    ``texts`` are documents themselves (name None: the output shows the text); ``text_files`` and positional
    ``inputs`` are files, each one whole document (a folder means its ``.txt`` files), read lazily as
    :class:`TextFile`; ``lines_file`` holds one document per line (``-`` reads standard input) and must be UTF-8.
    """
    items: list[tuple[str | None, str | TextFile]] = [(None, text) for text in texts]
    for path in list(text_files) + list(inputs):
        if os.path.isdir(path):
            found = sorted(p for p in Path(path).iterdir() if p.suffix.lower() == ".txt" and p.is_file())
            if not found:
                raise InputError(f"{path}: the folder holds no .txt files")
            items.extend((str(p), TextFile(str(p))) for p in found)
        else:
            items.append((str(path), TextFile(str(path))))
    if lines_file:
        if lines_file == "-":
            data, name = sys.stdin.buffer.read(), "standard input"
        else:
            data, name = TextFile(lines_file).read_bytes(), lines_file
        items.extend((None, line.rstrip("\r")) for line in decode_utf8(data, name).split("\n") if line.strip())
    if not items:
        raise InputError("no text given; use --text TEXT, --text-file FILE, --lines FILE (- for stdin) or "
                         "text files as arguments")
    return items


__all__ = ["OOV_ID", "OOV_TOKEN", "PAD_ID", "PUNCTUATION", "TextFile", "Tokenizer", "decode_utf8", "read_text_inputs", "split", "standardize"]
