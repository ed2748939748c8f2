"""The runtime line: inference loads no tensorflow, keras, tf2onnx or onnx, and the CLI imports nothing it won't use."""

from __future__ import annotations

import json
import subprocess
import sys

FORBIDDEN = ("tensorflow", "keras", "tf2onnx", "onnx", "sklearn", "matplotlib")


def loaded_after(code: str) -> set[str]:
    probe = code + "\nimport sys, json\nprint(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout.splitlines()[-1]))


def test_inference_loads_no_training_module(digits_export):
    sample = next((digits_export / "samples").glob("*.png"))
    for fmt in ("onnx", "tflite-int8"):
        modules = loaded_after(f"import edgecnn\nprint(edgecnn.load(r'{digits_export}', format='{fmt}')"
                               f".classify(r'{sample}').label)")
        assert not modules & set(FORBIDDEN), (fmt, modules & set(FORBIDDEN))
        assert ("onnxruntime" in modules) == fmt.startswith("onnx")


def test_importing_the_cli_loads_no_runtime_or_training_module():
    modules = loaded_after("import edgecnn.cli")
    assert not modules & {*FORBIDDEN, "onnxruntime", "ai_edge_litert"}


def test_runtime_sources_never_import_the_training_stack():
    import ast
    from pathlib import Path

    import edgecnn

    root = Path(edgecnn.__file__).parent
    sources = [*(root / "runtime").glob("*.py"), root / "manifest.py", root / "errors.py", root / "__init__.py"]
    for source in sources:
        for node in ast.walk(ast.parse(source.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            for name in names:
                assert name.split(".")[0] not in FORBIDDEN, f"{source.name} imports {name}"
