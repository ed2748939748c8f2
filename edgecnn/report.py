"""Plain-text tables for the terminal (eval, export parity, bench, info); no dependencies."""

from __future__ import annotations

from typing import Any, Sequence


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Left-aligned first column, right-aligned numbers, a rule under the header."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in cells)) if cells else len(str(h)) for i, h in enumerate(headers)]

    def line(values):
        return "  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(values, widths)))

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
