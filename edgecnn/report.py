"""Plain-text tables for the terminal (eval, export parity, bench, info); no dependencies.

Numbers in a column share one format, chosen for the column as a whole: the same number of decimals in every row,
enough for the column's smallest value to keep ``SIGNIFICANT_DIGITS`` digits, so that ``10.500`` stands above
``6.175`` and the digits line up. A column whose smallest non-zero value is below ``1e-3`` (output differences) is
written in scientific notation in every row instead.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

SIGNIFICANT_DIGITS = 4
MAX_DECIMALS = 6


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Columns of numbers right-aligned, everything else left-aligned, a rule under the header."""
    columns = list(zip(*rows)) if rows else [() for _ in headers]
    numeric = [bool(rows) and all(_is_number(v) or v is None for v in values) for values in columns]
    formats = [_column_format(values) if num else None for values, num in zip(columns, numeric)]
    cells = [[_cell(v, fmt) for v, fmt in zip(row, formats)] for row in rows]
    widths = [max([len(str(h))] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]

    def line(values):
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric))

    lines = [line([str(h) for h in headers]), "  ".join("-" * w for w in widths)] + [line(r) for r in cells]
    return "\n".join(text.rstrip() for text in lines)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _column_format(values: Sequence[Any]) -> str:
    """The format spec every number of one column is written with (``"d"`` for a column of integers)."""
    numbers = [v for v in values if _is_number(v)]
    if all(isinstance(v, int) for v in numbers):
        return "d"
    finite = [abs(v) for v in numbers if math.isfinite(v) and v != 0]
    if not finite:
        return ".1f"
    smallest = min(finite)
    if smallest < 1e-3:
        return f".{SIGNIFICANT_DIGITS - 2}e"
    decimals = SIGNIFICANT_DIGITS - 1 - math.floor(math.log10(smallest))
    return f".{min(max(decimals, 0), MAX_DECIMALS)}f"


def _cell(value: Any, fmt: str | None) -> str:
    if value is None:
        return "-"
    if fmt is None:
        return str(value)
    if fmt == "d" or (isinstance(value, float) and not math.isfinite(value)):
        return str(value)
    return format(value, fmt)


def metrics_table(results: dict[str, dict], columns: Sequence[str]) -> str:
    """One row per format from ``{format: {metric: value}}``; a format that failed shows its error."""
    errors = any("error" in values for values in results.values())
    rows = []
    for fmt, values in results.items():
        row = [fmt, *[values.get(c) for c in columns]]
        rows.append(row + [values.get("error", "")] if errors else row)
    return table(["format", *columns] + (["error"] if errors else []), rows)


METRIC_COLUMNS = ("accuracy", "f1", "map50", "map", "agreement", "max_abs_diff")


def metric_columns(results: dict[str, dict]) -> list[str]:
    """The metric columns any of ``results`` has, in the usual order (eval, export and info show the same)."""
    return [c for c in METRIC_COLUMNS if any(c in r for r in results.values())]


def info_text(data: dict) -> str:
    """``edgecnn info``'s lines for either description (:mod:`edgecnn.runtime.describe` gives the data)."""
    if "task" not in data:
        return _platform_text(data)
    labels = data["labels"]
    dataset = data.get("dataset") or {}
    lines = [(f"{data['model']}: {data['task']}, {len(labels)} labels "
              f"({', '.join(labels[:12])}{', ...' if len(labels) > 12 else ''})"),
             f"input: {data['input']}",
             *_preprocessing_lines(data.get("preprocessing") or {}, data.get("outputs") or []),
             f"dataset: {dataset.get('name')} (held-out split: {dataset.get('split')})", ""]
    lines.append(table(["format", "file", "KiB", "precision", "runnable here"],
                       [[f, e["path"], (e["size"] or 0) / 1024, e["precision"], "yes" if e["runnable_here"] else
                         "no"] for f, e in data["files"].items()]))
    lines += [f"{fmt}: {float_fallback_text(entry['float_fallback'])}" for fmt, entry in data["files"].items()
              if isinstance(entry.get("float_fallback"), dict)]
    lines += compatibility_lines(data["files"], data.get("targets") or {})
    if data["validation"]:
        lines += ["", "measured at export:", metrics_table(data["validation"], metric_columns(data["validation"]))]
    runtimes = ", ".join(f"{name} {version}" for name, version in (data["runtimes"] or {}).items())
    lines += ["", f"runtimes installed: {runtimes or 'none'}"]
    return "\n".join(lines)


def compatibility_lines(files: dict, targets: dict) -> list[str]:
    """Which runtimes ran each file at export time (``verified_in``, written since --target), and what a target
    left out and why: what a user needs before copying a file into an OpenCV or mobile app. Nothing for older
    exports, which do not record it."""
    verified = {fmt: entry["verified_in"] for fmt, entry in files.items() if isinstance(entry.get("verified_in"), dict)}
    if not verified and not targets:
        return []
    width = max(map(len, verified), default=0)
    lines = ["", "verified at export:"]
    lines += [f"  {fmt:{width}}  {', '.join(f'{runtime} {version}' for runtime, version in runtimes.items())}"
              for fmt, runtimes in verified.items()]
    for name, notes in targets.items():
        skipped = notes.get("skipped") if isinstance(notes, dict) else None
        lines += [f"  {name}: skipped {fmt} ({reason})" for fmt, reason in (skipped or {}).items()]
        if isinstance(notes, dict) and notes.get("not_verified"):
            lines.append(f"  {name}: not verified ({notes['not_verified']})")
    return lines


def float_fallback_text(record: dict) -> str:
    """One line on an int8 file's float fallback (export/fallback.py): how many layers stayed in float, which,
    and the gate's number before and after."""
    nodes = [node.get("name", "?").split(";")[0] for node in record.get("nodes", []) if isinstance(node, dict)]
    gate = record.get("gate") or {}
    before, after = gate.get("before") or {}, gate.get("after") or {}
    key = next((k for k in ("agreement", "map50", "accuracy")
                if _is_number(before.get(k)) and _is_number(after.get(k))), None)
    change = f" ({key} {before[key]:.4f} at first, {after[key]:.4f} after)" if key else ""
    return f"{len(nodes)} layer{'s' if len(nodes) != 1 else ''} kept in float{change}: {', '.join(nodes)}"


def _preprocessing_lines(prep: dict, outputs: list) -> list[str]:
    """What the pixels become (the preset, why, the map) and what the head gives: the contract users get wrong."""
    lines = []
    if prep.get("type", "image") == "image" and "scale" in prep:
        order = prep.get("channels_order", "rgb")
        how = f"x * {prep['scale']} + {prep.get('offset', 0.0)}" + (", channels RGB -> BGR" if order == "bgr" else "")
        preset = prep.get("preset")
        lines.append(f"preprocessing: {f'preset {preset}: ' if preset else ''}{how}"
                     + (f" ({prep['preset_reason']})" if prep.get("preset_reason") else ""))
    kind = outputs[0].get("kind") if outputs and isinstance(outputs[0], dict) else None
    if kind:
        lines.append(f"outputs: {kind}")
    return lines


def _platform_text(data: dict) -> str:
    lines = []
    for key, value in data.items():
        if key == "notes":
            lines += [f"note: {note}" for note in value]
            continue
        if isinstance(value, dict):
            value = ", ".join(f"{k} {v}" for k, v in value.items()) or "none"
        lines.append(f"{key.replace('_', ' '):16} {value if value is not None else '-'}")
    return "\n".join(lines)
