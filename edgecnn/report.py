"""Plain-text tables for the terminal (eval, export parity, bench, info); no dependencies."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Columns of numbers right-aligned, everything else left-aligned, a rule under the header."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(str(h))] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    numeric = [bool(rows) and all(isinstance(r[i], (int, float)) or r[i] is None for r in rows)
               for i in range(len(headers))]

    def line(values):
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric))

    lines = [line([str(h) for h in headers]), "  ".join("-" * w for w in widths)] + [line(r) for r in cells]
    return "\n".join(text.rstrip() for text in lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value != 0 and abs(value) < 1e-3:
            return f"{value:.1e}"
        return f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def metrics_table(results: dict[str, dict], columns: Sequence[str]) -> str:
    """One row per format from ``{format: {metric: value}}``; a format that failed shows its error."""
    errors = any("error" in values for values in results.values())
    rows = []
    for fmt, values in results.items():
        row = [fmt, *[values.get(c) for c in columns]]
        rows.append(row + [values.get("error", "")] if errors else row)
    return table(["format", *columns] + (["error"] if errors else []), rows)
