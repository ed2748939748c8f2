"""Automatic float fallback (``edgecnn export --int8-fallback auto``): an int8 file that fails its gate is made
again with its worst layers kept in float, one more layer at a time, and the first file that passes is kept.

Why: one layer with an extreme-range input or output can take a whole int8 model to chance level (a quantized YOLO
gave zero confidence until its last nodes stayed in float, onnxruntime#14233), while every other layer quantizes
well. Which layers: the per-layer report of :mod:`edgecnn.export.quantize` (their own SQNR, worst first), measured
on the calibration examples rather than the held-out split the gate then judges. Each layer is kept in float
together with the layers that feed it (:func:`~edgecnn.export.quantize.feeding_layers`): a float layer still reads
its input from the producer's int8 grid, so a ruined grid survives until the producer is float too.

The export hands in what is format-specific as an :class:`Int8Job` (how to make the file again, how to gate it);
this module decides what to try and writes what happened into the manifest's ``float_fallback`` record:

``{"reason": the gate's failure, "nodes": [{"name", "op", "sqnr_db", "why"}], "ranked_on": ...,
"attempts": n, "gate": {"before": numbers, "after": numbers}}``
"""

from __future__ import annotations

import math
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: ``--int8-fallback`` choices
MODES = ("auto", "off")
#: at most this many ranked layers (each with the layers feeding it) are tried in float before refusing
MAX_LAYERS = 5
#: calibration examples the layers are ranked on (the report's own default)
RANK_EXAMPLES = 64
#: layers named in a refusal
NAMED_IN_REFUSAL = 3


@dataclass
class Int8Job:
    """One int8 file of a staged export, as the fallback needs it.

    ``remake(nodes)`` writes the file again with ``nodes`` kept in float; ``check()`` records the file in the
    staged manifest, measures it and returns ``(measured, failures)`` by the export's own gate; ``reference(dir)``
    returns its fp32 sibling, made in ``dir`` when the export does not ship one.
    """

    fmt: str
    path: Path
    remake: Callable[[tuple[str, ...]], None]
    check: Callable[[], tuple[dict, list[str]]]
    reference: Callable[[Path], Path]


def rescue(job: Int8Job, measured: dict, failures: list[str], calibration: np.ndarray, mode: str = "auto",
           limit: int = MAX_LAYERS, say: Callable[[str], None] = lambda message: None,
           ) -> tuple[dict, list[str], dict | None]:
    """``(measured, failures, float_fallback record or None)`` for an int8 file that failed its gate.

    ``off``: the failures come back, each naming the worst layers and the report command. ``auto``: up to
    ``limit`` ranked layers are kept in float, one more each attempt; the first passing file stays in place and
    its record comes back with no failures. When none passes, the failures name what was tried.
    """
    from .quantize import feeding_layers, layer_errors

    scratch = Path(tempfile.mkdtemp(prefix="edgecnn-fallback-"))
    try:
        rows = layer_errors(job.path, job.reference(scratch), calibration[:RANK_EXAMPLES])
        feeders = feeding_layers(job.path)
    except Exception as exc:  # noqa: BLE001 - a ranking that fails must not hide the gate's own refusal
        note = f"the per-layer ranking failed ({type(exc).__name__}: {' '.join(str(exc).split())[:120]})"
        return measured, [f"{failure}; {note}" for failure in failures], None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    layers = _ranked(rows)
    worst = ", ".join(f"{_short(name)} ({layer['sqnr_db']:.1f} dB)"
                      for name, layer in list(layers.items())[:NAMED_IN_REFUSAL])
    report = (f"worst layers by their own SQNR: {worst}; to see every layer, export with a lower gate "
              "(--min-agreement / --max-map-drop) and run 'edgecnn quantize-report OUT'")
    if mode == "off" or not layers:
        hint = "; --int8-fallback auto would retry with them kept in float" if mode == "off" else ""
        return measured, [f"{failure}; {report}{hint}" for failure in failures], None
    kept: dict[str, dict] = {}
    after, still = measured, failures
    attempts = 0
    for rank, name in enumerate(list(layers)[:limit], start=1):
        for node, why in [(name, f"rank {rank} by own SQNR")] + [(f, f"feeds {_short(name)}")
                                                                   for f in feeders.get(name, ())]:
            if node not in kept:
                kept[node] = {"name": node, "op": layers.get(node, {}).get("op"),
                              "sqnr_db": layers.get(node, {}).get("sqnr_db"), "why": why}
        attempts += 1
        say(f"{job.fmt}: int8 gate failed, retrying with {len(kept)} layer(s) in float")
        job.remake(tuple(kept))
        after, still = job.check()
        if not still:
            return after, [], {"reason": failures[0], "nodes": list(kept.values()),
                               "ranked_on": f"{min(len(calibration), RANK_EXAMPLES)} calibration examples",
                               "attempts": attempts, "gate": {"before": _numbers(measured), "after": _numbers(after)}}
    tried = (f"float fallback kept the {attempts} worst layer(s) and what feeds them ({len(kept)} in all) in float "
             f"and still failed ({'; '.join(still)})")
    return after, [f"{failure}; {report}; {tried}" for failure in failures], None


def kept_in_float(count: int) -> str:
    """How a file the fallback re-made is described (the manifest's ``quantization.method``, the TFLite file's
    metadata): some of its layers run float kernels, so it is not "full integer" any more."""
    return f"int8 with {count} layer{'s' if count != 1 else ''} kept in float"


def _ranked(rows: list[dict]) -> dict[str, dict]:
    """Layer -> its worst row (rows come worst first), inputs left out: the order the fallback tries them in."""
    layers: dict[str, dict] = {}
    for row in rows:
        if row["kind"] != "input" and row["layer"] not in layers and math.isfinite(row["sqnr_db"]):
            layers[row["layer"]] = {"op": row["op"], "sqnr_db": float(row["sqnr_db"])}
    return layers


def _numbers(measured: dict) -> dict:
    """The gate's headline numbers (per-label ``f1:LABEL`` values stay in the validation results)."""
    return {key: value for key, value in measured.items() if ":" not in key}


def _short(name: str) -> str:
    from .quantize import _short as short

    return short(name, 48)

