"""The ``edgecnn`` command: parse, call one function of a wing, print. No logic of its own.

Start-up matters on a Raspberry Pi, so this module imports only click and the standard library at the top; each
command imports what it uses. Expected failures (EdgecnnError) print one line and exit 2; anything else is a bug:
one line and exit 1, the traceback with ``--debug``.
"""

from __future__ import annotations

import json
import os
import sys

import click

from .errors import EdgecnnError
from .manifest import FORMATS, TARGET_FORMAT_FILES

#: The model infer, eval and bench use without --model: the repository's digits export, when run where it is.
DEFAULT_MODEL = os.path.join("exported", "digits-cnn")
REFERENCE_EXPORTS = ("exported/digits-cnn", "exported/bbc-news", "exported/digit-detector")
FORMAT_CHOICE = click.Choice([*FORMATS, *TARGET_FORMAT_FILES])


def _result_line(line: str) -> None:
    """One result line of `infer` on stdout, unflushed: a folder run into a pipe or file writes in blocks; live
    sources flush each line (runtime/infer.py), and a terminal gets :func:`_result_line_flushed`."""
    sys.stdout.write(line + "\n")


def _result_line_flushed(line: str) -> None:
    """One result line, flushed: what a terminal gets (Python's own rule for print)."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _end_infer(ctx: click.Context, code: int) -> None:
    """End `infer` with ``code``. Run from the console script (:func:`main`), it exits at once, once stdout and
    stderr are flushed: the interpreter's teardown (numpy's, Pillow's and onnxruntime's modules unloaded) is ~30 ms
    that nothing of the run needs (its files, sources and workers are closed when run_inference returns); a
    one-image `edgecnn infer` took 0.164 s with it, 0.132 s without. Called in-process (click's test runner, a
    Python caller), it ends as usual."""
    if (ctx.obj or {}).get("entry_point"):
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except OSError:  # a reader that went away (| head): Python's own exit path reports it
            pass
        else:
            os._exit(code)
    if code:
        sys.exit(code)


def _echo_json(data) -> None:
    click.echo(json.dumps(data, ensure_ascii=False))


def _progress(message: str) -> None:
    click.echo(f"  {message}", err=True)


def _model_dir(model_dir: str | None, how: str = "pass --model EXPORT_FOLDER", inputs: tuple[str, ...] = ()) -> str:
    """``model_dir``; else the export folder the input files lie in; else the digits export in ./exported; else say
    what to pass.

    Why not always ``exported/digits-cnn``: that path only exists in the repository's root, and elsewhere it used to
    fail as a missing folder the user never named; and a detector's sample scene given without ``--model`` was
    classified by the digits model, a silent wrong answer.
    """
    if model_dir is not None:
        return model_dir
    from .errors import InputError
    from .manifest import export_folder_of

    holders = {export_folder_of(p) for p in inputs if os.path.exists(p)} - {None}
    if len(holders) > 1:
        names = ", ".join(sorted(os.path.relpath(h) for h in holders))
        raise InputError(f"no model given, and the inputs lie in {len(holders)} export folders ({names}): "
                         "pass --model EXPORT_FOLDER")
    if holders:
        holder = os.path.relpath(holders.pop())
        if os.path.isdir(DEFAULT_MODEL) and os.path.samefile(holder, DEFAULT_MODEL):
            return DEFAULT_MODEL  # the default anyway: nothing to say
        click.echo(f"using {holder} (the export folder these inputs lie in; pass --model to choose another)",
                   err=True)
        return holder
    if os.path.isfile(os.path.join(DEFAULT_MODEL, "edgecnn.json")):
        return DEFAULT_MODEL
    raise InputError(f"no model given: {how} (an 'edgecnn export' output folder, such as the "
                     f"repository's {', '.join(REFERENCE_EXPORTS)}); without it, {DEFAULT_MODEL} is used when "
                     "run from the repository's root")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.version_option(package_name="edgecnn")
@click.pass_context
def cli(ctx, debug):
    """Train small CNNs, export them to validated ONNX and int8 TFLite, run them anywhere."""
    ctx.obj = {**(ctx.obj or {}), "debug": debug}  # main() marks a run from the console script: entry_point


@cli.command()
@click.option("--dataset", default="digits", show_default=True, help="A name from 'edgecnn datasets'.")
@click.option("--model", "model_name", default="seed-cnn", show_default=True, help="A name from 'edgecnn models'.")
@click.option("--data", help="Path for datasets that read your files (mnist, folder, text-csv, coco, ...).")
@click.option("--epochs", default=30, show_default=True)
@click.option("--batch-size", type=int, default=None,
              help="Default 32, smaller for a small image dataset so that an epoch has at least 10 steps.")
@click.option("--patience", default=8, show_default=True, help="Early stopping on validation loss.")
@click.option("--lr", "learning_rate", default=1e-3, show_default=True)
@click.option("--seed", default=0, show_default=True, help="Seeds the split and the training.")
@click.option("--no-augment", is_flag=True, help="Train without augmentation.")
@click.option("--option", "-o", "options", multiple=True, metavar="KEY=VALUE",
              help="Model option, e.g. -o alpha=0.5 (repeatable).")
@click.option("--data-option", "-d", "data_options", multiple=True, metavar="KEY=VALUE",
              help="Dataset option, e.g. -d size=64 (repeatable).")
@click.option("--weights", type=click.Path(), metavar="FILE|imagenet",
              help="Start from an earlier run's model.keras (layers that fit are kept, a new head for other "
                   "classes), a .weights.h5, or 'imagenet' for a backbone.")
@click.option("--strategy", type=click.Choice(["none", "mirrored", "multi-worker"]), default="none",
              show_default=True, help="tf.distribute: mirrored (every local device) or multi-worker (the cluster in "
                                      "TF_CONFIG; run the same command on every worker). --batch-size is global.")
@click.option("--out", required=True, help="Run folder to write.")
def train(dataset, model_name, data, epochs, batch_size, patience, learning_rate, seed, no_augment, options,
          data_options, weights, strategy, out):
    """Train a model on a dataset; writes model.keras, run.json, history and (classifiers) confusion plots,
    metrics.json."""
    import time

    from .train.fit import files_written
    from .train.fit import train as run_training

    started = time.time_ns()
    metrics = run_training(dataset, model_name, out, epochs=epochs, seed=seed, batch_size=batch_size,
                           patience=patience, learning_rate=learning_rate, augment=not no_augment, data=data,
                           model_options=_key_values(options), dataset_options=_key_values(data_options),
                           weights=weights, strategy=strategy)
    click.echo(json.dumps(metrics, indent=2))
    click.echo(f"wrote {out}: {', '.join(files_written(out, started))}")


def _numbers(option: str, text: str | None) -> list[float] | None:
    """``"0.5"`` or ``"123.7,116.3,103.5"`` -> a list of floats (one, or one per channel)."""
    if text is None:
        return None
    from .errors import InputError

    try:
        return [float(part) for part in text.split(",")]
    except ValueError:
        raise InputError(f"{option} {text!r}: give one number or one per channel, comma-separated "
                         "(e.g. 123.7,116.3,103.5)") from None


def _key_values(pairs) -> dict:
    from .errors import InputError

    parsed = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise InputError(f"option {pair!r} is not KEY=VALUE")
        try:
            parsed[key.replace("-", "_")] = json.loads(value)
        except json.JSONDecodeError:
            parsed[key.replace("-", "_")] = value
    return parsed


@cli.command()
@click.argument("model_file", type=click.Path())
@click.option("--out", required=True,
              help="Export folder to create, or an earlier export to replace (atomically).")
@click.option("--formats", default=",".join(FORMATS), show_default=True,
              help="Comma-separated subset: onnx, onnx-int8 (static QDQ), tflite, tflite-int8 (full integer), "
                   "tflite-fp16 (float16 weights), tflite-dynamic (int8 weights, float activations).")
@click.option("--labels", help="Labels file (one per line or JSON list), for models not trained by edgecnn.")
@click.option("--calibration", help="Dataset name or image folder for calibration and validation.")
@click.option("--calibration-size", default=200, show_default=True, help="Representative examples for int8.")
@click.option("--max-diff", default=1e-4, show_default=True, help="Largest fp32 output difference allowed.")
@click.option("--min-agreement", default=0.98, show_default=True, help="Lowest int8 top-1 agreement allowed.")
@click.option("--max-map-drop", default=0.02, show_default=True, help="Largest int8 mAP@0.5 drop allowed.")
@click.option("--max-diff-fp16", default=5e-2, show_default=True,
              help="Largest tflite-fp16 output difference allowed, relative to the largest output (at least 1); "
                   "it must also meet the int8 rule.")
@click.option("--int8-io", type=click.Choice(["int8", "uint8", "float"]), default="int8", show_default=True,
              help="Input and output dtype of the tflite-int8 file (Android and MediaPipe want uint8 or float).")
@click.option("--int8-fallback", type=click.Choice(["auto", "off"]), default="auto", show_default=True,
              help="An int8 file that fails its gate: auto retries with its worst layers kept in float (up to 5, "
                   "listed in the manifest); off refuses it at once.")
@click.option("--calibration-method", type=click.Choice(["minmax", "entropy", "percentile"]), default="minmax",
              show_default=True, help="How onnx-int8 picks activation ranges from the calibration examples.")
@click.option("--per-channel/--per-tensor", default=True, show_default=True,
              help="int8 weights (onnx-int8, tflite-int8): one scale per output channel, or one per tensor "
                   "(smaller files; depthwise layers may lose accuracy, the gates decide).")
@click.option("--samples-per-class", default=2, show_default=True)
@click.option("--preprocess", type=click.Choice(["unit", "raw", "tf", "torch", "caffe"]),
              help="Your model's input convention (keras.applications' modes): unit x/255, raw 0-255, tf [-1, 1], "
                   "torch ImageNet mean/std, caffe BGR minus ImageNet mean (default: recognised, else unit).")
@click.option("--mean", metavar="M[,M,M]", help="Per-channel mean on 0-255 pixels: input = (x - mean) / std.")
@click.option("--std", metavar="S[,S,S]", help="Per-channel std on 0-255 pixels (with --mean).")
@click.option("--scale", metavar="A[,A,A]", help="input = x * scale + offset, on 0-255 pixels.")
@click.option("--offset", metavar="B[,B,B]", help="See --scale.")
@click.option("--channels-order", type=click.Choice(["rgb", "bgr"]), help="Channel order the model expects.")
@click.option("--outputs", "outputs_kind", type=click.Choice(["logits"]),
              help="The model gives logits (no softmax): the runtime applies softmax.")
@click.option("--multi-label", is_flag=True, help="One sigmoid per label: every label gets its own score.")
@click.option("--vocabulary", type=click.Path(),
              help="Text models on token ids: the vocabulary, one token per line in get_vocabulary() order (first "
                   "line empty: padding; then [UNK]) or a JSON list.")
@click.option("--sequence-length", type=click.IntRange(1), help="Text models: tokens per text (the model's input).")
@click.option("--standardize", type=click.Choice(["lower_and_strip_punctuation", "lower", "strip_punctuation",
                                                  "none"]),
              help="Text models on token ids: the TextVectorization standardize they were trained with "
                   "(default lower_and_strip_punctuation; split is whitespace).")
@click.option("--target", "targets", multiple=True, metavar="NAME",
              help="Also make the files run in another runtime (repeatable): opencv (OpenCV DNN), mobile "
                   "(onnxruntime mobile, .ort), mediapipe (MediaPipe Tasks); see edgecnn.export.targets.")
@click.option("--no-metadata", is_flag=True,
              help="Leave TFLite Model Metadata (name, normalization, labels) out of the .tflite files.")
@click.option("--json", "as_json", is_flag=True, help="Print the validation results as JSON.")
def export(model_file, out, formats, labels, calibration, calibration_size, max_diff, min_agreement,
           max_map_drop, max_diff_fp16, int8_io, samples_per_class, preprocess, mean, std, scale, offset, channels_order, outputs_kind,
           multi_label, vocabulary, sequence_length, standardize, targets, no_metadata, as_json,
           int8_fallback, calibration_method, per_channel):
    """Export a Keras model (.keras, .h5 or a SavedModel folder) to ONNX and TFLite (fp32 + int8; TFLite also
    float16 weights and dynamic range), validated against Keras."""
    from .export import export_model
    from .report import metric_columns, metrics_table

    preprocessing = {"preset": preprocess, "mean": _numbers("--mean", mean), "std": _numbers("--std", std),
                     "scale": _numbers("--scale", scale), "offset": _numbers("--offset", offset),
                     "channels_order": channels_order}
    data = export_model(model_file, out, formats=[f.strip() for f in formats.split(",") if f.strip()],
                        labels=labels, calibration=calibration, calibration_size=calibration_size,
                        thresholds={"max_diff": max_diff, "min_agreement": min_agreement,
                                    "max_map_drop": max_map_drop, "max_diff_fp16": max_diff_fp16},
                        samples_per_class=samples_per_class, progress=_progress,
                        preprocessing={k: v for k, v in preprocessing.items() if v is not None},
                        head={"outputs": outputs_kind, "multi_label": multi_label},
                        text={"vocabulary": vocabulary, "sequence_length": sequence_length,
                              "standardize": standardize},
                        targets=list(targets), int8_io=int8_io, metadata=not no_metadata,
                        int8_fallback=int8_fallback, calibration_method=calibration_method, per_channel=per_channel)
    results = data["validation"]["results"]
    if as_json:
        _echo_json({"model": out, "task": data["task"], "results": results})
        return
    click.echo(metrics_table(results, metric_columns(results)))
    sizes = ", ".join(f"{k} {v['size'] / 1024:.0f} KiB" for k, v in data["files"].items())
    click.echo(f"wrote {out} ({sizes})")


def _workers(value: str) -> int:
    """--workers: a number of processes, or ``auto`` (this machine's physical cores)."""
    if value == "auto":
        from .runtime.parallel import physical_cores

        return physical_cores()
    try:
        return int(value)
    except ValueError:
        raise click.BadParameter(f"{value!r}: give a number of processes or auto") from None


@cli.command()
@click.argument("inputs", nargs=-1)
@click.option("--model", "model_dir", help=f"Export folder (default: {DEFAULT_MODEL}, if it is here).")
@click.option("--format", "fmt", type=FORMAT_CHOICE, help="Model file to run (default: fp32 ONNX if installed).")
@click.option("--top-k", default=3, show_default=True, help="Classifiers: how many classes each result lists.")
@click.option("--threads", type=int, help="Runtime threads per process (default: 1 for many inputs, which "
                                          "--workers spreads over cores; the runtime's choice for one input).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per input and line.")
@click.option("--text", "texts", multiple=True, help="Text to classify (text models; repeatable).")
@click.option("--text-file", "text_files", multiple=True, type=click.Path(),
              help="A file whose whole content is one document.")
@click.option("--lines", "lines_file", type=click.Path(allow_dash=True), help="One document per line; - is stdin.")
@click.option("--threshold", type=float, help="Detection score threshold (default: the manifest's).")
@click.option("--save", type=click.Path(),
              help="Detection: draw boxes into this PNG (or folder for several inputs); a video source: into this "
                   ".mp4 (boxes, or a classifier's top label, on every inferred frame).")
@click.option("--watch", "watch_dir", type=click.Path(), help="Process each image that appears in this folder.")
@click.option("--settle", type=float, metavar="SECONDS",
              help="--watch: how long a new file's size and time must stay unchanged before it is read "
                   "(default: 1.0).")
@click.option("--camera", "cameras", multiple=True, type=click.IntRange(min=0), metavar="INDEX",
              help="Read this camera (the same as the input INDEX; picamera2 on a Raspberry Pi when installed).")
@click.option("--stride", type=click.IntRange(min=1), metavar="N", help="Video sources: infer every Nth frame.")
@click.option("--max-fps", type=click.FloatRange(min=0, min_open=True), metavar="F",
              help="Video sources: infer at most F frames per second of the source's time.")
@click.option("--latest", is_flag=True,
              help="Cameras and streams: always infer the newest frame, dropping stale ones (no lag).")
@click.option("--workers", default="1", show_default=True, metavar="N|auto",
              help="Image files and folders: decode and infer in N processes (auto: one per physical core; at "
                   "most one per 32 images).")
@click.pass_context
def infer(ctx, inputs, model_dir, fmt, top_k, threads, as_json, texts, text_files, lines_file, threshold, save,
          watch_dir, settle, cameras, stride, max_fps, latest, workers):
    """Classify images or texts, or detect objects, with an exported model (no TensorFlow needed).

    INPUTS are image files, folders, quoted globs ('frames/*.png'), video files, camera indices (0) or stream URLs
    (rtsp://, http:// MJPEG), or text files for a text model. Every input (every inferred frame) gets one line: its
    result, or an error naming it. Exit code 0: all inputs ran; 2: some failed (each said why); 1: some hit an
    unexpected error (a bug) - the others still ran. Video sources end cleanly on Ctrl-C or SIGTERM, with a summary
    on stderr.
    """
    from click.core import ParameterSource

    from .runtime.infer import FrameOptions, run_inference

    given_top_k = None if ctx.get_parameter_source("top_k") is ParameterSource.DEFAULT else top_k
    model_dir = _model_dir(model_dir, inputs=(*inputs, *text_files))
    summary = run_inference(model_dir, [*inputs, *map(str, cameras)], fmt=fmt, top_k=given_top_k,
                            threads=threads, as_json=as_json, texts=texts, text_files=text_files,
                            lines_file=lines_file, threshold=threshold, save=save, watch_dir=watch_dir, settle=settle,
                            frames=FrameOptions(stride=stride, max_fps=max_fps, latest=latest),
                            workers=_workers(workers),
                            debug=(ctx.obj or {}).get("debug", False),
                            emit=_result_line_flushed if sys.stdout.isatty() else _result_line,
                            report=lambda message: click.echo(f"error: {message}", err=True),
                            inform=lambda message: click.echo(message, err=True))
    _end_infer(ctx, summary.exit_code)


@cli.command(name="eval")
@click.argument("model_dir", required=False)
@click.option("--formats", help="Comma-separated subset (default: every file in the export).")
@click.option("--threads", type=int)
@click.option("--json", "as_json", is_flag=True)
def evaluate_command(model_dir, formats, threads, as_json):
    """Accuracy (or mAP) and agreement with the reference, per format, on the held-out split."""
    from .evaluate import evaluate
    from .report import metric_columns, metrics_table

    report = evaluate(_model_dir(model_dir, "run edgecnn eval EXPORT_FOLDER"), formats=formats.split(",") if formats else None,
                      threads=threads,
                      progress=None if as_json else lambda fmt: _progress(f"evaluating {fmt}"))
    if as_json:
        _echo_json(report)
        return
    click.echo(f"{report['model']}: {report['task']} on {report['dataset']} {report['split']} split "
               f"(n={report['n']}), agreement vs {report['reference']}")
    click.echo(metrics_table(report["results"], metric_columns(report["results"])))
    for line in report.get("notes", []):
        click.echo(line)


@cli.command()
@click.argument("model_dir", required=False)
@click.option("--formats", help="Comma-separated subset, 'keras' included (default: every file, plus keras when "
                                "TensorFlow and the source .keras file are here).")
@click.option("--runs", default=100, show_default=True, help="Timed batch-1 calls per format (after warm-up).")
@click.option("--batch", default=32, show_default=True, help="Batch size of the throughput measurement.")
@click.option("--threads", type=int, help="Runtime threads (default: the runtime's choice).")
@click.option("--json", "as_json", is_flag=True, help='Print {"results": {FORMAT: {...}}} as JSON.')
@click.option("--plot", "plot_file", type=click.Path(dir_okay=False), help="Write a bar chart PNG of latency and size.")
def bench(model_dir, formats, runs, batch, threads, as_json, plot_file):
    """Size, metric, load time, latency p50/p90/p99, throughput and peak RSS per format (one process each)."""
    from .bench import bench_table, benchmark, plot

    report = benchmark(_model_dir(model_dir, "run edgecnn bench EXPORT_FOLDER"), formats=[f.strip() for f in formats.split(",") if f.strip()] if formats else None,
                       runs=runs, batch=batch, threads=threads, progress=_progress)
    if plot_file:
        plot(report, plot_file)
    if as_json:
        _echo_json(report)
        return
    click.echo(bench_table(report))
    if plot_file:
        click.echo(f"wrote {plot_file}")


@cli.command(name="quantize-report")
@click.argument("model_dir", default=DEFAULT_MODEL)
@click.option("--formats", help="Comma-separated: onnx-int8, tflite-int8, tflite-dynamic (default: every such file "
                                "in the export).")
@click.option("--examples", default=64, show_default=True, help="Held-out examples to run.")
@click.option("--top", default=10, show_default=True, help="Rows per file in the table (0: all; --json has all).")
@click.option("--json", "as_json", is_flag=True, help='Print {"files": {FORMAT: {"layers": [...]}}} as JSON.')
@click.option("--plot", "plot_file", type=click.Path(dir_okay=False), help="Write a bar chart PNG of the worst layers.")
def quantize_report(model_dir, formats, examples, top, as_json, plot_file):
    """Per-layer error of each int8 file (onnx-int8, tflite-int8, tflite-dynamic) against its fp32 sibling (SQNR,
    max |error|), worst layers first."""
    from .export.quantize import plot, quantization_report, report_text

    report = quantization_report(model_dir, formats=[f.strip() for f in formats.split(",") if f.strip()]
                                 if formats else None, examples=examples, progress=_progress)
    if plot_file:
        plot(report, plot_file)
    if as_json:
        _echo_json(report)
        return
    click.echo(report_text(report, top=top))
    if plot_file:
        click.echo(f"wrote {plot_file}")


@cli.command()
@click.argument("model_dir", required=False)
@click.option("--json", "as_json", is_flag=True)
def info(model_dir, as_json):
    """Summarize an export (manifest, files, runtimes), or this machine when no folder is given."""
    from .report import info_text
    from .runtime.describe import describe_export, describe_platform

    data = describe_export(model_dir) if model_dir else describe_platform()
    if as_json:
        _echo_json(data)
        return
    click.echo(info_text(data))


@cli.command()
@click.argument("model_dirs", nargs=-1, metavar="DIR [DIR ...]")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (0.0.0.0: every one).")
@click.option("--port", default=8000, show_default=True, help="TCP port (0: any free one, printed at start).")
@click.option("--format", "fmt", type=FORMAT_CHOICE,
              help="Model file to run (default: fp32 ONNX if installed).")
@click.option("--workers", type=click.IntRange(min=1),
              help="Inference threads, each with its own session of every model (default: one per CPU).")
@click.option("--threads", type=click.IntRange(min=1),
              help="Runtime threads per session (default: CPUs / workers).")
@click.option("--max-body-mb", default=10.0, show_default=True, type=click.FloatRange(min=0.001),
              help="Largest request body; larger ones get 413.")
@click.option("--max-batch", default=64, show_default=True, type=click.IntRange(min=1),
              help="Most inputs in one request; more get 413.")
@click.option("--max-queue", default=256, show_default=True, type=click.IntRange(min=0),
              help="Requests that may wait for a worker; more get 503.")
@click.option("--access-log", is_flag=True, help="Log every request (uvicorn's access log).")
def serve(model_dirs, host, port, fmt, workers, threads, max_body_mb, max_batch, max_queue, access_log):
    """Serve models over HTTP: POST /v1/models/NAME:predict, GET /v1/models, /healthz, /metrics, page at /."""
    from .serve import run

    run(model_dirs or [_model_dir(None, "run edgecnn serve EXPORT_FOLDER [...]")], host=host, port=port,
        fmt=fmt, workers=workers, threads=threads, max_body_bytes=int(max_body_mb * (1 << 20)),
        max_batch=max_batch, max_queue=max_queue, access_log=access_log,
        inform=lambda message: click.echo(message, err=True))


@cli.command()
@click.argument("model", type=click.Path())
@click.argument("inputs", nargs=-1, type=click.Path())
@click.option("--out", required=True, help="Folder for index.html, its figures and explain.json (replaced whole).")
@click.option("--text", "texts", multiple=True, help="Text to explain (text models; repeatable).")
@click.option("--channels", default=8, show_default=True, help="Feature-map channels shown per convolution block.")
@click.option("--class", "classes", multiple=True, metavar="LABEL",
              help="Also show where the model looks for this class, besides the top one (repeatable).")
def explain(model, inputs, out, texts, channels, classes):
    """See inside a model (an export folder or a run's model.keras): layers, filters, feature maps, activations,
    decision, where it looks, augmentation and predictions, as one HTML page."""
    from .explain import explain_model

    report = explain_model(model, out, images=inputs, texts=texts, channels=channels, classes=classes,
                           progress=_progress)
    figures = sum(len(s["figures"]) for s in report["sections"].values())
    click.echo(f"wrote {os.path.join(out, 'index.html')} ({len(report['sections'])} sections, {figures} figures, "
               f"{report['seconds']:.1f} s) and explain.json")
    for line in report["unavailable"]:
        click.echo(line, err=True)


@cli.command()
def datasets():
    """List the registered datasets and their -d options, with defaults."""
    from .train.datasets import dataset_options, list_datasets, reads_files
    from .train.options import describe_options

    click.echo(_listing([(d.name, d.task + (", reads --data" if reads_files(d.name) else ""), d.help,
                          _options_line("-d", describe_options(dataset_options(d.name)))) for d in list_datasets()]))


@cli.command()
def models():
    """List the registered model architectures and their -o options, with defaults."""
    from .train.models import list_models, model_options
    from .train.options import describe_options

    click.echo(_listing([(m.name, m.task, m.help, _options_line("-o", describe_options(model_options(m.name))))
                         for m in list_models()]))


def _options_line(flag: str, options: str) -> str:
    return f"{flag} {options}" if options else f"no {flag} options"


def _listing(entries) -> str:
    """``name  task`` then the description and the options (defaults shown) indented below: option lists are too
    long for a table column."""
    import textwrap

    width = max(len(name) for name, *_ in entries) + 2
    lines = []
    for name, task, description, options in entries:
        lines.append(f"{name.ljust(width)}{task}")
        for text in (description, options):
            lines.extend(textwrap.wrap(text, 110, initial_indent="    ", subsequent_indent="      "))
    return "\n".join(lines)


def _one_blas_thread() -> None:
    """Ask numpy's OpenBLAS for one thread in this process, unless the user chose a number.

    Why: importing numpy starts an OpenBLAS thread per core, and each busy-waits ~0.1 s of CPU before it sleeps. The
    CLI's numpy work is small arrays (the model call is onnxruntime's or LiteRT's, training is TensorFlow's), so
    those threads only spin: a one-image ``edgecnn infer`` took 0.23 s of CPU with them and 0.13 s without
    (BENCHMARKS.md), energy a Raspberry Pi spends on every call, and on a busy machine CPU taken from other work.
    It must be set before numpy is imported, which is why ``import edgecnn`` and ``import edgecnn.cli`` load no
    numpy; a process that imported numpy already (a Python caller of :func:`main`) keeps what it has. Worker
    processes (``--workers``, Ray) inherit it, and run one model session each anyway.
    """
    if "numpy" not in sys.modules:
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def main(argv=None) -> None:
    """Entry point: run the click group, turning EdgecnnError into one line and exit code 2."""
    _one_blas_thread()
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        cli.main(args=argv, standalone_mode=False, prog_name="edgecnn", obj={"entry_point": True})
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except EdgecnnError as exc:
        if debug:
            raise
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # a bug: say so on one line, traceback on request
        if debug:
            raise
        click.echo(f"internal error: {type(exc).__name__}: {exc} (run with --debug for the traceback)", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
