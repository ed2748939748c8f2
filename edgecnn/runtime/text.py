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

Reading the inputs of ``edgecnn infer`` (:class:`TextFile`, :func:`read_text`, :func:`iter_lines`) follows the same
idea: a file is read only until its first ``sequence_length`` tokens are complete, never past
:data:`MAX_TEXT_BYTES`; ``--lines`` is decoded line by line, so one bad byte costs one line; a file that is not
text (an image, UTF-16, NUL bytes) is called what it is.
"""

from __future__ import annotations

import contextlib
import os
import string
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path
from typing import BinaryIO, Optional, Union

import numpy as np

from ..errors import InputError, ModelError
from ..manifest import MANIFEST_NAME, MAX_SEQUENCE_LENGTH, Fields, describe_value

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
        if (not isinstance(sequence_length, int) or isinstance(sequence_length, bool)
                or not 1 <= sequence_length <= MAX_SEQUENCE_LENGTH):
            raise ModelError(f"text sequence length {describe_value(sequence_length)} must be a whole number from 1 "
                             f"to {MAX_SEQUENCE_LENGTH:,}; re-export the model")
        if (pad_id, oov_id) != (PAD_ID, OOV_ID):
            raise ModelError(f"pad id {pad_id} / OOV id {oov_id} differ from Keras' 0 / 1; re-export the model")
        if isinstance(vocabulary, (str, bytes)):
            raise ModelError("the text vocabulary must be a list of tokens, not one string; re-export the model")
        vocabulary = list(vocabulary)
        if len(vocabulary) < 2 or vocabulary[PAD_ID] != "" or vocabulary[OOV_ID] != OOV_TOKEN:
            raise ModelError("the text vocabulary must start with '' (padding) and '[UNK]' as "
                             "TextVectorization.get_vocabulary() returns it; re-export the model")
        wrong = next((i for i, token in enumerate(vocabulary) if not isinstance(token, str)), None)
        if wrong is not None:
            raise ModelError(f"the text vocabulary must hold only strings, but token {wrong} is a "
                             f"{type(vocabulary[wrong]).__name__}; re-export the model")
        self.vocabulary = vocabulary
        self.sequence_length = sequence_length
        self.standardize = standardize
        self.split = split
        # Later duplicates never win, as in Keras' lookup table (which refuses duplicates anyway).
        self._ids: dict[bytes, int] = {}
        for index, token in enumerate(vocabulary[2:], start=2):
            self._ids.setdefault(token.encode("utf-8", "surrogatepass"), index)

    @classmethod
    def from_manifest_section(cls, section: dict, vocabulary: Sequence[str] | None = None,
                              where: str | os.PathLike = MANIFEST_NAME) -> Tokenizer:
        """A tokenizer from the manifest's ``text`` section (``vocabulary`` given when it lives in its own file).

        Every field is checked (``where`` names the file in errors): a sequence length of 1e12 or "736", a
        vocabulary that is not a list of strings, an unknown standardization are one-line ModelErrors.
        """
        fields = Fields(section, where, "text")
        if vocabulary is None and not isinstance(section.get("vocabulary"), list):
            raise fields.error("vocabulary", "the list of tokens (or a vocabulary_file)")
        standardize = section.get("standardize", "lower_and_strip_punctuation")
        if standardize not in STANDARDIZE_MODES:  # checked here too, to name the file
            raise fields.error("standardize", f"one of {', '.join(map(str, STANDARDIZE_MODES))} or null")
        try:
            return cls(vocabulary if vocabulary is not None else section["vocabulary"],
                       fields.integer("sequence_length", 1, MAX_SEQUENCE_LENGTH), standardize,
                       fields.string("split", SPLIT_MODES, default="whitespace"),
                       fields.integer("pad_id", 0, default=PAD_ID), fields.integer("oov_id", 0, default=OOV_ID))
        except ModelError as exc:  # the constructor's own checks (vocabulary) do not know the file: name it
            if str(exc).startswith(str(where)):
                raise
            raise ModelError(f"{where}: {exc}") from None

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


#: The most bytes read from one text file or one line (``/dev/zero``, a 2 GiB log): far more than any model's
#: ``sequence_length`` tokens need, unless the text is mostly whitespace or punctuation.
MAX_TEXT_BYTES = 8 * 2**20
#: The first read from a file; each later read doubles, so decoding the growing prefix costs O(size) in all.
_FIRST_READ = 64 * 1024
#: How much of a file's start is sniffed for NUL bytes, as git does to tell binary from text.
_SNIFF_BYTES = 8000
_IMAGE_MAGIC = ((b"\x89PNG\r\n\x1a\n", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"GIF87a", "a GIF image"),
                (b"GIF89a", "a GIF image"), (b"II*\x00", "a TIFF image"), (b"MM\x00*", "a TIFF image"))


def binary_kind(head: bytes) -> str | None:
    """What a file starting with ``head`` is, when it is not UTF-8 text ("a PNG image", ...); None for text."""
    for magic, kind in _IMAGE_MAGIC:
        if head.startswith(magic):
            return kind
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "a WebP image"
    if head.startswith(b"BM") and b"\x00" in head[:14]:
        return "a BMP image"
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "UTF-16 text"
    if b"\x00" in head[:_SNIFF_BYTES]:
        return "binary data: it holds NUL bytes"
    return None


def not_text_error(name: str, kind: str) -> InputError:
    """The one-line error for a file that :func:`binary_kind` says is not UTF-8 text."""
    if kind == "UTF-16 text":
        return InputError(f"{name} is UTF-16 text, not UTF-8; convert it first: iconv -f utf-16 -t utf-8")
    if kind.endswith("image"):
        return InputError(f"{name} is not a text file (looks like {kind}); pass images as positional inputs to an "
                          "image model")
    return InputError(f"{name} is not a text file ({kind}); pass a UTF-8 text file")


def enough_for(tokenizer: Tokenizer) -> Callable[[str], bool]:
    """A test for :func:`read_text`: does a text already hold more tokens than ``tokenizer`` feeds the model?

    More than ``sequence_length`` tokens means the first ``sequence_length`` are complete (whitespace follows the
    last one), so whatever comes after cannot change the model's input.
    """
    return lambda text: tokenizer.encode_with_count(text)[1] > tokenizer.sequence_length


@dataclass(frozen=True)
class TextRead:
    """A text read by :func:`read_text`; ``cut_at`` is set when the byte cap, not the text's end, stopped it."""

    text: str
    cut_at: int | None = None

    @property
    def notes(self) -> list[str]:
        """What a result should say about the reading (nothing, unless the cap cut the text short)."""
        if self.cut_at is None:
            return []
        return [f"read limit: only the first {self.cut_at // 2**20} MiB were read; the rest was not looked at"]


def read_text(handle: BinaryIO, name: str, enough: Callable[[str], bool] | None = None,
              max_bytes: int = MAX_TEXT_BYTES) -> TextRead:
    """Read UTF-8 text from ``handle`` until its end, until ``enough(text)`` holds, or ``max_bytes``.

    Reads only what the model can use: ``enough`` (see :func:`enough_for`) stops reading once the first
    ``sequence_length`` tokens are complete, and ``max_bytes`` bounds a file that never gets there (``/dev/zero``,
    megabytes of spaces). A binary file (an image, UTF-16, NUL bytes) or a byte that is not UTF-8 is an InputError
    naming ``name``. A multi-byte character cut by a read boundary is never mistaken for an encoding error.
    """
    data = bytearray()
    size = _FIRST_READ
    while True:
        block = handle.read(min(size, max_bytes - len(data)))
        if not data:
            kind = binary_kind(block[:_SNIFF_BYTES])
            if kind:
                raise not_text_error(name, kind)
        data += block
        if not block:
            return TextRead(_decode(data, name, final=True))
        text = _decode(data, name, final=False)
        if enough is not None and enough(text):
            return TextRead(text)
        if len(data) >= max_bytes:
            if handle.read(1):
                return TextRead(text, cut_at=len(data))
            return TextRead(_decode(data, name, final=True))
        size *= 2


def _utf8(data: bytes | bytearray, final: bool = True) -> str:
    """UTF-8, a leading BOM dropped; unless ``final``, a character cut at the end is left for the next read."""
    try:
        text = bytes(data).decode("utf-8")
    except UnicodeDecodeError as exc:
        if final or exc.end < len(data) or exc.reason != "unexpected end of data":
            raise
        text = bytes(data[:exc.start]).decode("utf-8")
    return text.removeprefix("\ufeff")


def _decode(data: bytes | bytearray, name: str, final: bool = True) -> str:
    try:
        return _utf8(data, final)
    except UnicodeDecodeError as exc:
        raise InputError(f"{name} is not UTF-8 text (invalid byte at offset {exc.start}); convert it first, "
                         "e.g. iconv -f latin1 -t utf-8") from None


@dataclass(frozen=True)
class TextFile:
    """A text file given by path, read as UTF-8 only when it is classified, and only as far as needed.

    Reading late lets ``edgecnn infer`` report a bad file on its own line while every other input still gets its
    result.
    """

    path: str

    def read(self, enough: Callable[[str], bool] | None = None, max_bytes: int = MAX_TEXT_BYTES) -> str:
        """The text (see :meth:`read_capped` for what was left unread)."""
        return self.read_capped(enough, max_bytes).text

    def read_capped(self, enough: Callable[[str], bool] | None = None,
                    max_bytes: int = MAX_TEXT_BYTES) -> TextRead:
        """The text up to its end, ``enough``, or ``max_bytes`` (see :func:`read_text`)."""
        with _open_text(self.path) as handle:
            return read_text(handle, self.path, enough, max_bytes)


@contextlib.contextmanager
def _open_text(path: str) -> Iterator[BinaryIO]:
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{path} is a folder; pass a text file, or the folder as a positional input") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"{path} cannot be read ({getattr(exc, 'strerror', None) or exc})") from None
    with handle:
        yield handle


def decode_utf8(data: bytes, name: str) -> str:
    """UTF-8 (a BOM is dropped) or an InputError naming ``name`` and the first bad byte."""
    return _decode(data, name)


TextItem = tuple[Optional[str], Union[str, TextFile, InputError]]


def read_text_inputs(inputs: Sequence[str] = (), texts: Sequence[str] = (), text_files: Sequence[str] = (),
                     lines_file: str | None = None) -> Iterator[TextItem]:
    """``(name, text)`` pairs for ``edgecnn infer`` on a text model, in the order given, one at a time.

    ``texts`` are documents themselves (name None: the output shows the text); ``text_files`` and positional
    ``inputs`` are files, each one whole document (a folder means its ``.txt`` files), read lazily as
    :class:`TextFile`; ``lines_file`` holds one document per line (``-`` reads standard input), read as the
    documents are classified. An input that cannot be used comes as ``(name, InputError)``, so the caller reports it
    on its own line and goes on with the others.
    """
    if not (inputs or texts or text_files or lines_file):
        raise InputError("no text given; use --text TEXT, --text-file FILE, --lines FILE (- for stdin) or "
                         "text files as arguments")
    return _text_items(inputs, texts, text_files, lines_file)


def _text_items(inputs, texts, text_files, lines_file) -> Iterator[TextItem]:
    yield from ((None, text) for text in texts)
    for path in list(text_files) + list(inputs):
        if os.path.isdir(path):
            found = sorted(p for p in Path(path).iterdir() if p.suffix.lower() == ".txt" and p.is_file())
            if not found:
                yield str(path), InputError(f"{path}: the folder holds no .txt files")
            yield from ((str(p), TextFile(str(p))) for p in found)
        else:
            yield str(path), TextFile(str(path))
    if lines_file:
        yield from iter_lines(lines_file)


def iter_lines(lines_file: str, max_bytes: int = MAX_TEXT_BYTES) -> Iterator[TextItem]:
    """One ``(None, line)`` per non-blank line of ``lines_file`` (``-``: standard input), read as they are used.

    Each line is decoded on its own: a line that is not UTF-8 comes as ``(name, InputError)`` naming its number,
    and every other line is still classified. A line longer than ``max_bytes`` is classified from its start (the
    model reads only its first tokens) and the rest of it skipped. A file that is not text at all (an image, NUL
    bytes in its first line) is one error.
    """
    if lines_file == "-":
        yield from _lines(sys.stdin.buffer, "standard input", max_bytes)
        return
    try:
        with _open_text(lines_file) as handle:
            yield from _lines(handle, lines_file, max_bytes)
    except InputError as exc:  # the file cannot be opened
        yield lines_file, exc


def _lines(handle: BinaryIO, name: str, max_bytes: int) -> Iterator[TextItem]:
    # Sniff the head without consuming it (a pipe cannot seek back): a PNG's first "line" is only 6 bytes long.
    head = handle.peek(_SNIFF_BYTES)[:_SNIFF_BYTES] if hasattr(handle, "peek") else b""
    kind = binary_kind(head)
    if kind:
        yield name, not_text_error(name, kind)
        return
    for number, raw in enumerate(iter(lambda: handle.readline(max_bytes), b""), start=1):
        complete = len(raw) < max_bytes or raw.endswith(b"\n")
        if not complete:
            _skip_line(handle, max_bytes)
        try:
            line = _utf8(raw.rstrip(b"\r\n"), final=complete)
        except UnicodeDecodeError as exc:
            yield (f"{name}, line {number}",
                   InputError(f"{name}, line {number} is not UTF-8 text (invalid byte at offset {exc.start} of the "
                              "line); convert the file first, e.g. iconv -f latin1 -t utf-8"))
            continue
        if line.strip():
            yield None, line


def _skip_line(handle: BinaryIO, max_bytes: int) -> None:
    """Read past the end of an overlong line, ``max_bytes`` at a time."""
    while True:
        rest = handle.readline(max_bytes)
        if not rest or rest.endswith(b"\n"):
            return


__all__ = ["MAX_TEXT_BYTES", "OOV_ID", "OOV_TOKEN", "PAD_ID", "PUNCTUATION", "TextFile", "TextRead", "Tokenizer",
           "binary_kind", "decode_utf8", "enough_for", "iter_lines", "read_text", "read_text_inputs", "split",
           "standardize"]
