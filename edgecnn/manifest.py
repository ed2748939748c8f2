"""The ``edgecnn.json`` contract between export and runtime: read, validate, write (stdlib only).

A manifest describes everything the runtime needs to turn user input into the model's input tensor and the model's
outputs into labels or boxes, plus what produced the export and how well it was measured to agree with the source
model. A reader of the manifest alone should be able to reimplement inference; see DESIGN.md for the field list.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from .errors import ModelError

MANIFEST_NAME = "edgecnn.json"
SCHEMA_VERSION = 1
TASKS = ("image-classification", "text-classification", "object-detection")
#: Format name -> default file name inside an export folder. The order is the order tables list them in.
FORMAT_FILES = {
    "onnx": "model.onnx",
    "onnx-int8": "model.int8.onnx",
    "tflite": "model.tflite",
    "tflite-int8": "model.int8.tflite",
}
FORMATS = tuple(FORMAT_FILES)


def sha256_of(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_entry(folder: Path, relative: str, **extra: Any) -> dict:
    """The manifest's record of one file: relative path, size and sha256 (plus anything in ``extra``)."""
    path = folder / relative
    return {"path": relative, "size": path.stat().st_size, "sha256": sha256_of(path), **extra}


class Manifest(dict):
    """A validated ``edgecnn.json`` and the folder it lives in.

    It is a plain dict (what json gave) with a few helpers; ``folder`` is the export folder that relative paths in
    it resolve against.
    """

    folder: Path

    @property
    def task(self) -> str:
        return self["task"]

    @property
    def labels(self) -> list[str]:
        return list(self.get("labels", []))

    @property
    def formats(self) -> list[str]:
        """Formats present in this export, in the canonical order."""
        files = self.get("files", {})
        return [f for f in FORMATS if f in files] + [f for f in files if f not in FORMATS]

    def file_path(self, key: str) -> Path:
        """Absolute path of the file recorded under ``files[key]``; refuses paths that leave the folder."""
        try:
            relative = self["files"][key]["path"]
        except KeyError:
            raise ModelError(
                f"{self.folder}: this export has no '{key}' file; it has {', '.join(self.formats) or 'none'}"
            ) from None
        return resolve_inside(self.folder, relative)

    def verify_file(self, key: str) -> Path:
        """Path of ``files[key]`` after checking that it exists and that its sha256 matches the manifest."""
        path = self.file_path(key)
        entry = self["files"][key]
        if not path.is_file():
            raise ModelError(f"{path} is listed in {MANIFEST_NAME} but missing; re-export or copy the whole folder")
        expected = entry.get("sha256")
        if expected and sha256_of(path) != expected:
            raise ModelError(
                f"{path} does not match the sha256 in {MANIFEST_NAME} (changed or truncated); "
                "copy it again or re-run 'edgecnn export'"
            )
        return path


def resolve_inside(folder: Path, relative: str) -> Path:
    """Resolve ``relative`` against ``folder``, refusing absolute paths and paths that climb out of it."""
    candidate = (folder / relative).resolve()
    root = folder.resolve()
    if Path(relative).is_absolute() or (candidate != root and root not in candidate.parents):
        raise ModelError(f"{folder / MANIFEST_NAME}: path '{relative}' leaves the export folder; refusing to use it")
    return candidate


def read(folder: str | os.PathLike) -> Manifest:
    """Read and validate ``folder/edgecnn.json``.

    Raises ModelError with advice when the folder or manifest is missing, unreadable, from a newer schema, or lacks
    a required field.
    """
    folder = Path(folder)
    if folder.is_file() and folder.name == MANIFEST_NAME:
        folder = folder.parent
    path = folder / MANIFEST_NAME
    if not folder.exists():
        raise ModelError(f"model folder {folder} does not exist; pass --model DIR with an export from 'edgecnn export'")
    if not path.is_file():
        raise ModelError(f"{folder} has no {MANIFEST_NAME}; is it an export folder written by 'edgecnn export'?")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path} is not valid JSON ({exc}); re-run 'edgecnn export'") from None
    validate(data, path)
    manifest = Manifest(data)
    manifest.folder = folder
    return manifest


def validate(data: Any, where: str | os.PathLike = MANIFEST_NAME) -> None:
    """Check the fields every reader relies on; raise ModelError naming the first problem."""
    if not isinstance(data, dict):
        raise ModelError(f"{where}: expected a JSON object")
    schema = data.get("schema")
    if not isinstance(schema, int):
        raise ModelError(f"{where}: no integer 'schema' field; re-run 'edgecnn export'")
    if schema > SCHEMA_VERSION:
        raise ModelError(
            f"{where} uses manifest schema {schema} but this edgecnn reads up to {SCHEMA_VERSION}; "
            "upgrade edgecnn (pip install -U edgecnn)"
        )
    if data.get("task") not in TASKS:
        raise ModelError(f"{where}: unknown task {data.get('task')!r}; expected one of {', '.join(TASKS)}")
    for key in ("input", "files", "preprocessing"):
        if not isinstance(data.get(key), dict):
            raise ModelError(f"{where}: missing or malformed '{key}' section; re-run 'edgecnn export'")
    if not data["files"]:
        raise ModelError(f"{where}: lists no model files; re-run 'edgecnn export'")
    for key, entry in data["files"].items():
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
            raise ModelError(f"{where}: files.{key} needs a 'path'")


def write(folder: str | os.PathLike, data: dict) -> Path:
    """Validate ``data`` and write it as ``folder/edgecnn.json`` (sorted keys, stable diffs)."""
    validate(data, Path(folder) / MANIFEST_NAME)
    path = Path(folder) / MANIFEST_NAME
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return path
