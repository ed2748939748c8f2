"""The ``-o`` and ``-d`` options: what a model, a trainer or a dataset accepts, read from the code that takes them.

The keyword parameters of a registered builder or loader (with their defaults) *are* its options, and each trainer
declares the few it reads itself (``register_trainer(..., options=...)``); ``edgecnn models``/``datasets`` list
them and unknown keys are refused with that same list. Nothing here is a hand-kept copy that could drift from the
code, and nothing imports TensorFlow, so listing and checking options is instant.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ..errors import InputError


def keyword_defaults(function: Callable, skip: Iterable[str] = ()) -> dict[str, Any]:
    """``{name: default}`` of ``function``'s parameters that have a default, in signature order, minus ``skip``."""
    skip = set(skip)
    return {name: parameter.default for name, parameter in inspect.signature(function).parameters.items()
            if parameter.default is not inspect.Parameter.empty and name not in skip
            and parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY)}


def format_value(value: Any) -> str:
    """A default as the command line spells it (``-o wide=false``, ``-o kernel_sizes=3,4,5``); None is ``auto``."""
    if value is None:
        return "auto"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (tuple, list)):
        return ",".join(format_value(v) for v in value)
    return str(value)


def describe_options(valid: Mapping[str, Any]) -> str:
    """``alpha=1.0, dropout=0.2``: the options and their defaults, as listings and errors show them."""
    return ", ".join(f"{name}={format_value(default)}" for name, default in valid.items())


def check_options(given: Mapping[str, Any], valid: Mapping[str, Any], owner: str) -> dict[str, Any]:
    """``given`` if every key is in ``valid`` and every number is a number; else a one-line InputError.

    ``owner`` names what takes the options ("model 'seed-cnn'"). The error lists every valid option with its
    default and, for a misspelt key, the nearest one.
    """
    for key, value in given.items():
        if key not in valid:
            near = difflib.get_close_matches(key, list(valid), n=1)
            hint = f" (did you mean {near[0]}?)" if near else ""
            takes = f"its options are {describe_options(valid)}" if valid else "it takes no options"
            raise InputError(f"{owner} has no option {key!r}{hint}; {takes}")
        default = valid[key]
        wants_number = isinstance(default, (int, float)) and not isinstance(default, bool)
        if wants_number and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise InputError(f"{owner}: option {key} takes a number (default {format_value(default)}), "
                             f"got {value!r}")
    return dict(given)
