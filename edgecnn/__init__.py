"""edgecnn: small Keras CNNs, exported to validated ONNX and int8 TFLite, run on a CPU without TensorFlow.

The names here are the public Python API. Importing this package loads nothing heavy: the task names (``load``,
``ImageClassifier``, the typed results) come from :mod:`edgecnn.runtime.tasks`, which loads numpy and Pillow, when
one is first used; the runtime backend is imported when a model is opened, and the training and export wings only
when their functions are called. Why lazily: the ``edgecnn`` command must choose numpy's BLAS threads before numpy
is imported (:func:`edgecnn.cli.main`), and ``import edgecnn.cli`` imports this package first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import EdgecnnError, InputError, MissingDependencyError, ModelError

if TYPE_CHECKING:  # what the lazy names are, for type checkers and editors
    from .runtime.tasks import (
                                Category,
                                Classification,
                                Detection,
                                DetectionResult,
                                ImageClassifier,
                                ObjectDetector,
                                TextClassifier,
                                load,
    )

__version__ = "0.1.0"

def __getattr__(name: str):
    """A task name, imported from :mod:`edgecnn.runtime.tasks` on first use (PEP 562) and kept here after; or a
    submodule of this package (``edgecnn.manifest`` after a bare ``import edgecnn``, which this package no longer
    imports itself)."""
    if name in _FROM_TASKS:
        from .runtime import tasks

        value = getattr(tasks, name)
        globals()[name] = value
        return value
    if not name.startswith("_"):
        import importlib

        try:
            return importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":  # the submodule exists; something it imports is missing
                raise
    raise AttributeError(f"module 'edgecnn' has no attribute {name!r}")


def __dir__() -> list[str]:
    """The public names (the lazy ones included), as ``dir(edgecnn)`` and editors show them."""
    return sorted(__all__)


__all__ = [
                            "Category",
                            "Classification",
                            "Detection",
                            "DetectionResult",
                            "EdgecnnError",
                            "ImageClassifier",
                            "InputError",
                            "MissingDependencyError",
                            "ModelError",
                            "ObjectDetector",
                            "TextClassifier",
                            "__version__",
                            "load",
]

#: The public names not defined above: edgecnn.runtime.tasks', imported by __getattr__ on first use.
_FROM_TASKS = frozenset(__all__) - set(globals())
