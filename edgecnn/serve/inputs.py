"""What a predict request holds, turned into the inputs of one model call (stdlib only, no web framework).

One request is one input (a "single" answer: the result itself) or a batch (an answer with ``results``, one
per input, in order). Image models read the image's bytes (raw body, a multipart file, or base64 in JSON);
text models read text/plain, JSON or multipart text fields. Everything here raises an EdgecnnError with one
sentence that says what to send instead, so the client reads the same kind of message the CLI prints.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field

from ..errors import InputError
from .errors import RequestTooLargeError, UnsupportedMediaTypeError

TEXT_TASK = "text-classification"
IMAGE_HOWTO = ("send the image's bytes (Content-Type image/png, image/jpeg, ... or "
               "application/octet-stream), a multipart form with an image file, or JSON "
               "{\"image\": BASE64} / {\"images\": [BASE64, ...]}")
TEXT_HOWTO = ("send text/plain, JSON {\"text\": \"...\"} / {\"texts\": [\"...\", ...]}, or a form "
              "(multipart or URL-encoded) with a 'text' field")


@dataclass
class Inputs:
    """The inputs of one request: bytes (images) or str (texts), a name for each (None: unnamed), and whether
    the client sent one input (answer: one result) or a batch (answer: a list)."""

    items: list
    names: list = field(default_factory=list)
    single: bool = True

    def __post_init__(self):
        if not self.names:
            self.names = [None] * len(self.items)


def media_type(content_type: str | None) -> tuple[str, dict[str, str]]:
    """``'text/plain; charset=latin-1'`` -> ``('text/plain', {'charset': 'latin-1'})``; None: ``('', {})``."""
    if not content_type:
        return "", {}
    kind, *params = content_type.split(";")
    options = {}
    for param in params:
        key, _, value = param.partition("=")
        options[key.strip().lower()] = value.strip().strip('"')
    return kind.strip().lower(), options


def is_form(task: str, content_type: str | None) -> bool:
    """Whether the body is a form to parse field by field: multipart always; URL-encoded for text models only
    (``curl -d text=...``, an HTML form), since for an image model it is what ``curl --data-binary @x.jpg``
    sends without a -H: the image's bytes."""
    kind, _ = media_type(content_type)
    url_encoded = kind == "application/x-www-form-urlencoded"
    return kind == "multipart/form-data" or (url_encoded and task == TEXT_TASK)


def from_body(model: str, task: str, content_type: str | None, body: bytes, max_batch: int) -> Inputs:
    """The inputs of a request whose body is not a multipart form: raw image bytes, text, or JSON."""
    kind, options = media_type(content_type)
    if not body:
        raise InputError(f"the request body is empty; {TEXT_HOWTO if task == TEXT_TASK else IMAGE_HOWTO}")
    if kind == "application/json" or kind.endswith("+json"):
        return _from_json(model, task, body, max_batch)
    if task == TEXT_TASK:
        if kind not in ("", "text/plain"):
            raise UnsupportedMediaTypeError(f"{model} is a text model and cannot read {kind}; {TEXT_HOWTO}")
        return Inputs([_decode(body, options.get("charset", "utf-8"), "the text/plain body")])
    if kind.startswith("text/"):
        raise UnsupportedMediaTypeError(f"{model} is an image model and cannot read {kind}; {IMAGE_HOWTO}")
    # image/*, application/octet-stream, none at all, or curl's default for --data-binary
    # (application/x-www-form-urlencoded, see is_form): the body is the image file; Pillow says whether it is
    # one.
    return Inputs([body])


def from_form(model: str, task: str, fields: list[tuple[str, str | bytes, str | None]],
              max_batch: int) -> Inputs:
    """The inputs of a form: ``fields`` are (field name, value, file name or None) in the form's order.

    Image models take every file, whatever its field's name; text models take every 'text' field and every
    file (read as UTF-8: one document each). One input is a single answer, several a batch.
    """
    items, names = [], []
    for key, value, filename in fields:
        if task == TEXT_TASK:
            if isinstance(value, bytes):
                items.append(_decode(value, "utf-8", f"the uploaded file {filename or key}"))
                names.append(filename)
            elif key in ("text", "texts"):
                items.append(value)
                names.append(None)
        elif isinstance(value, bytes):
            items.append(value)
            names.append(filename)
    if not items:
        raise InputError(f"the form holds no {'text field or file' if task == TEXT_TASK else 'file'}; "
                         f"{TEXT_HOWTO if task == TEXT_TASK else IMAGE_HOWTO}")
    _check_batch(len(items), max_batch)
    return Inputs(items, names, single=len(items) == 1)


def _from_json(model: str, task: str, body: bytes, max_batch: int) -> Inputs:
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"the request body is not valid JSON ({exc}); "
                         f"{TEXT_HOWTO if task == TEXT_TASK else IMAGE_HOWTO}") from None
    one, many = ("text", "texts") if task == TEXT_TASK else ("image", "images")
    if not isinstance(data, dict) or (one in data) == (many in data):
        raise InputError(f"{model} takes a JSON object with either {one!r} or {many!r}; "
                         f"{TEXT_HOWTO if task == TEXT_TASK else IMAGE_HOWTO}")
    values = [data[one]] if one in data else data[many]
    if not isinstance(values, list) or not values:
        raise InputError(f"JSON {many!r} must be a non-empty list; send at least one item")
    _check_batch(len(values), max_batch)
    where = [one] if one in data else [f"{many}[{i}]" for i in range(len(values))]
    if task == TEXT_TASK:
        for name, value in zip(where, values):
            if not isinstance(value, str):
                raise InputError(f"JSON {name} is a {type(value).__name__}, not a string; send the text "
                                 "itself")
        items = values
    else:
        items = [_base64(value, name) for name, value in zip(where, values)]
    return Inputs(items, names=None if one in data else where, single=one in data)


def _base64(value, where: str) -> bytes:
    """An image's bytes from base64 text, with or without a ``data:image/...;base64,`` prefix (what a
    browser's FileReader.readAsDataURL gives)."""
    if not isinstance(value, str):
        raise InputError(f"JSON {where} is a {type(value).__name__}, not a base64 string; send the image "
                         "file's bytes base64-encoded")
    if value.startswith("data:"):
        value = value.partition(",")[2]
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InputError(f"JSON {where} is not valid base64 ({exc}); send the image file's bytes "
                         "base64-encoded") from None
    if not data:
        raise InputError(f"JSON {where} is empty; send the image file's bytes base64-encoded")
    return data


def _decode(data: bytes, charset: str, where: str) -> str:
    try:
        return data.decode(charset)
    except LookupError:
        raise InputError(f"{where} names an unknown charset {charset!r}; send UTF-8") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{where} is not valid {charset} ({exc.reason} at byte {exc.start}); send UTF-8 "
                         "text") from None


def _check_batch(count: int, max_batch: int) -> None:
    if count > max_batch:
        raise RequestTooLargeError(f"a batch of {count} inputs is more than this server's limit of "
                                   f"{max_batch}; split it into smaller batches, or start edgecnn serve "
                                   "with a larger --max-batch")


def options(task: str, query) -> dict:
    """``top_k`` (classifiers) and ``threshold`` (detectors) from the query string, checked."""
    chosen = {}
    if "top_k" in query:
        if task == "object-detection":
            raise InputError("top_k applies to classification models; detection models take ?threshold=0..1")
        try:
            chosen["top_k"] = int(query["top_k"])
        except ValueError:
            raise InputError(f"top_k={query['top_k']!r} is not a whole number; pass e.g. ?top_k=3") from None
        if chosen["top_k"] < 1:
            raise InputError(f"top_k={chosen['top_k']} must be 1 or more")
    if "threshold" in query:
        if task != "object-detection":
            raise InputError("threshold applies to detection models only; classifiers take ?top_k=N")
        try:
            chosen["threshold"] = float(query["threshold"])
        except ValueError:
            raise InputError(f"threshold={query['threshold']!r} is not a number; pass e.g. "
                             "?threshold=0.4") from None
        if not 0.0 <= chosen["threshold"] <= 1.0:
            raise InputError(f"threshold={chosen['threshold']} is outside 0..1; pass e.g. ?threshold=0.4")
    return chosen
