"""Terminal tables: one number format per column, and `edgecnn info`'s text made outside the runtime."""

from __future__ import annotations

import ast
import math
import re
from pathlib import Path

import pytest

import edgecnn
from edgecnn.report import info_text, table

from .conftest import run_cli


def column(text: str, index: int) -> list[str]:
    """The cells of column ``index`` below the header rule (columns are split on two or more spaces)."""
    return [re.split(r"\s{2,}", line.strip())[index] for line in text.splitlines()[2:]]


def decimals(cell: str) -> int:
    return len(cell.partition(".")[2])


def significant_digits(cell: str) -> int:
    return len(cell.replace(".", "").replace("-", "").lstrip("0"))


@pytest.mark.parametrize("values", [
    [10.5, 6.175],                       # the bench column of the issue
    [0.9420238595272928, 0.9418755064804007, 0.93],
    [1234.5, 0.0523, 51.2],              # latency: a fast int8 file beside Keras
    [3, 2.5, 0.25],                      # an int among floats
])
def test_a_column_has_one_format_and_its_smallest_value_keeps_its_digits(values):
    cells = column(table(["format", "value"], [[f"f{i}", v] for i, v in enumerate(values)]), 1)
    assert len({decimals(c) for c in cells}) == 1, cells
    smallest = cells[min(range(len(values)), key=lambda i: abs(values[i]))]
    assert significant_digits(smallest) >= 3, cells
    for cell, value in zip(cells, values):
        assert float(cell) == pytest.approx(value, rel=5e-3), (cell, value)


def test_a_column_with_tiny_values_is_scientific_in_every_row():
    values = [2.4557113647460938e-05, 1.665842056274414, 0.0]
    cells = column(table(["format", "max_abs_diff"], [[f"f{i}", v] for i, v in enumerate(values)]), 1)
    assert all(re.fullmatch(r"\d\.\d+e[+-]\d\d", c) for c in cells), cells
    assert [float(c) for c in cells] == pytest.approx(values, rel=1e-2)


def test_missing_values_and_text_columns_keep_their_cells():
    text = table(["format", "status", "ms"], [["onnx", "ok", 1.5], ["keras", "error", None], ["x", "ok", math.nan]])
    assert column(text, 1) == ["ok", "error", "ok"]
    assert column(text, 2) == ["1.500", "-", "nan"]


def test_integer_columns_stay_integers():
    assert column(table(["format", "n"], [["a", 300], ["b", 12]]), 1) == ["300", "12"]


def test_info_text_describes_an_export_and_the_machine(digits_export):
    from edgecnn.runtime.describe import describe_export, describe_platform

    text = info_text(describe_export(str(digits_export)))
    assert str(digits_export) in text and "image-classification" in text and "measured at export" in text
    assert "runtimes installed" in text and "cpu count" in info_text(describe_platform())


def test_cli_info_prints_the_export(digits_export):
    result = run_cli("info", str(digits_export))
    assert result.returncode == 0, result.stderr
    assert "model.int8.tflite" in result.stdout and "accuracy" in result.stdout


def edgecnn_imports(source: Path) -> set[str]:
    """The edgecnn modules a module in ``edgecnn/`` or ``edgecnn/runtime/`` imports from above its own folder."""
    depth = 2 if source.parent.name == "runtime" else 1
    names = set()
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level >= depth:
            names.update([node.module] if node.module else [a.name for a in node.names])
    return names


#: What the runtime may import from the rest of edgecnn: the manifest contract, the errors, and the stdlib-only
#: helpers that the runtime and the wings share (folders: the export-swap recovery; quiet: C++ stderr chatter).
BELOW_RUNTIME = {"manifest", "errors", "folders", "quiet"}


def test_runtime_imports_nothing_outside_runtime_manifest_and_errors():
    """The runtime is the bottom of the house: report, bench, evaluate and the wings sit above it."""
    package = Path(edgecnn.__file__).parent
    for name in BELOW_RUNTIME - {"manifest", "errors"}:
        assert not edgecnn_imports(package / f"{name}.py") - {"errors"}, f"{name}.py must stay stdlib-only"
    for source in (package / "runtime").glob("*.py"):
        for name in edgecnn_imports(source):
            assert name.split(".")[0] in BELOW_RUNTIME, f"runtime/{source.name} imports edgecnn.{name}"
