"""The runtime line: inference loads no tensorflow, keras, tf2onnx or onnx, and the CLI imports nothing it won't use."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

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


# --- the CLI's process: numpy's BLAS threads are not started for nothing --------------------------------------------

BLAS_PROBE = """
import json, os, sys
from threadpoolctl import threadpool_info
{before}
import numpy
print(json.dumps({{"env": os.environ.get("OPENBLAS_NUM_THREADS"),
                  "blas_threads": [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]}}))
"""


def blas_after(before: str, **env: str) -> dict:
    environment = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"} | env
    out = subprocess.run([sys.executable, "-c", BLAS_PROBE.format(before=before)], capture_output=True, text=True,
                         check=True, env=environment)
    return json.loads(out.stdout.splitlines()[-1])


def test_importing_the_package_or_the_cli_loads_no_numpy():
    """What lets the CLI's entry point choose numpy's BLAS threads: nothing before it has imported numpy."""
    for code in ("import edgecnn", "import edgecnn.cli", "from edgecnn import EdgecnnError, InputError"):
        modules = loaded_after(code)
        assert not modules & {"numpy", "PIL"}, (code, modules & {"numpy", "PIL"})


def test_the_package_names_still_resolve():
    import edgecnn
    from edgecnn.runtime import tasks

    for name in edgecnn.__all__:
        assert getattr(edgecnn, name) is not None
    assert dir(edgecnn) == sorted(edgecnn.__all__)
    assert edgecnn.load is tasks.load and edgecnn.ImageClassifier is tasks.ImageClassifier
    with pytest.raises(AttributeError, match="no_such_name"):
        edgecnn.no_such_name  # noqa: B018
    # a submodule after a bare `import edgecnn` (the package no longer imports them itself)
    probe = "import edgecnn\nprint(edgecnn.manifest.MANIFEST_NAME, edgecnn.runtime.__name__)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["edgecnn.json", "edgecnn.runtime"]


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="OpenBLAS starts one thread per CPU: one CPU shows nothing")
def test_the_cli_process_runs_numpy_with_one_blas_thread():
    """OpenBLAS starts a thread per core when numpy is imported and each spins ~0.1 s before it sleeps (a one-image
    ``edgecnn infer`` spent 0.23 s of CPU instead of 0.13); the CLI's numpy work is small arrays, so its process
    asks for one. A library user's process is left as it is, and a user's own setting wins."""
    run_cli = "from edgecnn.cli import main\ntry:\n    main(['datasets'])\nexcept SystemExit:\n    pass"
    assert blas_after("import edgecnn") == {"env": None, "blas_threads": [os.cpu_count()]}  # the control
    assert blas_after(run_cli) == {"env": "1", "blas_threads": [1]}
    assert blas_after(run_cli, OPENBLAS_NUM_THREADS="2") == {"env": "2", "blas_threads": [2]}
