"""Writing a matplotlib figure the same way everywhere: parent folders made, a failed write as one line.

``edgecnn bench --plot`` and ``edgecnn quantize-report --plot`` draw after minutes of measuring; a plot path in a
folder that does not exist yet must not turn all that work into a traceback.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import InputError


def save_figure(fig, path: str | os.PathLike, dpi: int = 110) -> Path:
    """Save ``fig`` to ``path`` (its folders created), close it, and return the path; an unwritable path is an
    InputError naming it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=dpi)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot write the plot {path} ({exc}); choose a writable .png path") from None
    finally:
        plt.close(fig)
    return path
