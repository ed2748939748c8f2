"""The errors edgecnn raises on purpose.

Every one carries a single sentence that names the file or value at fault and says what to do next; the CLI prints
it on one line and exits 2. Anything that is not an ``EdgecnnError`` is a bug (exit 1).
"""

from __future__ import annotations


class EdgecnnError(Exception):
    """Base class: an expected failure the user can act on."""


class InputError(EdgecnnError):
    """The user's input (an image, a text, a path, an option) cannot be used."""


class ModelError(EdgecnnError):
    """A model folder, manifest or model file is missing, corrupt or of an unknown kind."""


class MissingDependencyError(EdgecnnError):
    """An optional package is needed for this call; the message names the pip package or extra."""


class ExportRefusedError(EdgecnnError):
    """Validation measured an exported file outside the tolerance: the export was not written."""


def require(module: str, extra: str, purpose: str):
    """Import ``module`` or raise a MissingDependencyError naming the pip extra that brings it.

    Heavy, optional packages (tensorflow, matplotlib, scikit-learn, pycocotools) are imported through this so that a
    runtime-only install fails with advice instead of a traceback.
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"{purpose} needs the Python package '{module.split('.')[0]}' ({exc}); "
            f"install it with: pip install 'edgecnn[{extra}]'"
        ) from None
