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

DEFAULT_MODEL = os.path.join("exported", "digits-cnn")
FORMAT_CHOICE = click.Choice(["onnx", "onnx-int8", "tflite", "tflite-int8"])


def _echo_json(data) -> None:
    click.echo(json.dumps(data, ensure_ascii=False))


def _progress(message: str) -> None:
    click.echo(f"  {message}", err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.version_option(package_name="edgecnn")
@click.pass_context
def cli(ctx, debug):
    """Train small CNNs, export them to validated ONNX and int8 TFLite, run them anywhere."""
    ctx.obj = {"debug": debug}


@cli.command()
@click.option("--dataset", default="digits", show_default=True, help="A name from 'edgecnn datasets'.")
@click.option("--model", "model_name", default="seed-cnn", show_default=True, help="A name from 'edgecnn models'.")
@click.option("--data", help="Path for datasets that read your files (mnist, folder, text-csv, coco, ...).")
@click.option("--epochs", default=30, show_default=True)
@click.option("--batch-size", default=32, show_default=True)
@click.option("--patience", default=8, show_default=True, help="Early stopping on validation loss.")
@click.option("--lr", "learning_rate", default=1e-3, show_default=True)
@click.option("--seed", default=0, show_default=True, help="Seeds the split and the training.")
@click.option("--no-augment", is_flag=True, help="Train without augmentation.")
@click.option("--option", "-o", "options", multiple=True, metavar="KEY=VALUE",
              help="Model option, e.g. -o alpha=0.5 (repeatable).")
@click.option("--data-option", "-d", "data_options", multiple=True, metavar="KEY=VALUE",
              help="Dataset option, e.g. -d size=64 (repeatable).")
@click.option("--weights", type=click.Path(), metavar="MODEL.keras",
              help="Start from this run's weights (same --model and -o): fine-tune, or train on with a new schedule.")
@click.option("--out", required=True, help="Run folder to write.")
def train(dataset, model_name, data, epochs, batch_size, patience, learning_rate, seed, no_augment, options,
          data_options, weights, out):
    """Train a model on a dataset; writes model.keras, history and confusion plots, metrics.json."""
    from .train.fit import train as run_training

    metrics = run_training(dataset, model_name, out, epochs=epochs, seed=seed, batch_size=batch_size,
                           patience=patience, learning_rate=learning_rate, augment=not no_augment, data=data,
                           model_options=_key_values(options), dataset_options=_key_values(data_options),
                           weights=weights)
    click.echo(json.dumps(metrics, indent=2))
    click.echo(f"wrote {out}/model.keras, history.png, confusion.png, metrics.json")


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
@click.option("--out", required=True, help="Export folder to create or replace (atomically).")
@click.option("--formats", default="onnx,onnx-int8,tflite,tflite-int8", show_default=True,
              help="Comma-separated subset.")
@click.option("--labels", help="Labels file (one per line or JSON list), for models not trained by edgecnn.")
@click.option("--calibration", help="Dataset name or image folder for calibration and validation.")
@click.option("--calibration-size", default=200, show_default=True, help="Representative examples for int8.")
@click.option("--max-diff", default=1e-4, show_default=True, help="Largest fp32 output difference allowed.")
@click.option("--min-agreement", default=0.98, show_default=True, help="Lowest int8 top-1 agreement allowed.")
@click.option("--max-map-drop", default=0.02, show_default=True, help="Largest int8 mAP@0.5 drop allowed.")
@click.option("--samples-per-class", default=2, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the validation results as JSON.")
def export(model_file, out, formats, labels, calibration, calibration_size, max_diff, min_agreement,
           max_map_drop, samples_per_class, as_json):
    """Export a .keras model to ONNX and TFLite (fp32 + int8), validated against Keras."""
    from .export import export_model
    from .report import metrics_table

    data = export_model(model_file, out, formats=[f.strip() for f in formats.split(",") if f.strip()],
                        labels=labels, calibration=calibration, calibration_size=calibration_size,
                        thresholds={"max_diff": max_diff, "min_agreement": min_agreement,
                                    "max_map_drop": max_map_drop},
                        samples_per_class=samples_per_class, progress=_progress)
    results = data["validation"]["results"]
    if as_json:
        _echo_json({"model": out, "task": data["task"], "results": results})
        return
    columns = [c for c in ("accuracy", "map50", "map", "agreement", "max_abs_diff") if any(
        c in r for r in results.values())]
    click.echo(metrics_table(results, columns))
    sizes = ", ".join(f"{k} {v['size'] / 1024:.0f} KiB" for k, v in data["files"].items())
    click.echo(f"wrote {out} ({sizes})")


@cli.command()
@click.argument("inputs", nargs=-1)
@click.option("--model", "model_dir", default=DEFAULT_MODEL, show_default=True, help="Export folder.")
@click.option("--format", "fmt", type=FORMAT_CHOICE, help="Model file to run (default: fp32 ONNX if installed).")
@click.option("--top-k", default=3, show_default=True)
@click.option("--threads", type=int, help="Runtime threads (default: the runtime's choice).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per input and line.")
@click.option("--text", "texts", multiple=True, help="Text to classify (text models; repeatable).")
@click.option("--text-file", "text_files", multiple=True, type=click.Path(),
              help="A file whose whole content is one document.")
@click.option("--lines", "lines_file", type=click.Path(allow_dash=True), help="One document per line; - is stdin.")
@click.option("--threshold", type=float, help="Detection score threshold (default: the manifest's).")
@click.option("--save", type=click.Path(), help="Detection: draw boxes into this PNG (or folder for several inputs).")
@click.option("--watch", "watch_dir", type=click.Path(), help="Process each image that appears in this folder.")
def infer(inputs, model_dir, fmt, top_k, threads, as_json, texts, text_files, lines_file, threshold, save,
          watch_dir):
    """Classify images or texts, or detect objects, with an exported model (no TensorFlow needed)."""
    from .runtime.infer import run_inference

    failures = run_inference(model_dir, inputs, fmt=fmt, top_k=top_k, threads=threads, as_json=as_json,
                             texts=texts, text_files=text_files, lines_file=lines_file, threshold=threshold,
                             save=save, watch_dir=watch_dir, emit=click.echo,
                             report=lambda message: click.echo(f"error: {message}", err=True),
                             inform=lambda message: click.echo(message, err=True))
    if failures:
        sys.exit(2)


@cli.command(name="eval")
@click.argument("model_dir", default=DEFAULT_MODEL)
@click.option("--formats", help="Comma-separated subset (default: every file in the export).")
@click.option("--threads", type=int)
@click.option("--json", "as_json", is_flag=True)
def evaluate_command(model_dir, formats, threads, as_json):
    """Accuracy (or mAP) and agreement with the reference, per format, on the held-out split."""
    from .evaluate import evaluate
    from .report import metrics_table

    report = evaluate(model_dir, formats=formats.split(",") if formats else None, threads=threads,
                      progress=None if as_json else lambda fmt: _progress(f"evaluating {fmt}"))
    if as_json:
        _echo_json(report)
        return
    click.echo(f"{report['model']}: {report['task']} on {report['dataset']} {report['split']} split "
               f"(n={report['n']}), agreement vs {report['reference']}")
    columns = [c for c in ("accuracy", "map50", "map", "agreement", "max_abs_diff") if any(
        c in r for r in report["results"].values())]
    click.echo(metrics_table(report["results"], columns))
    for line in report.get("notes", []):
        click.echo(line)


@cli.command()
@click.argument("model_dir", default=DEFAULT_MODEL)
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

    report = benchmark(model_dir, formats=[f.strip() for f in formats.split(",") if f.strip()] if formats else None,
                       runs=runs, batch=batch, threads=threads, progress=_progress)
    if plot_file:
        plot(report, plot_file)
    if as_json:
        _echo_json(report)
        return
    click.echo(bench_table(report))
    if plot_file:
        click.echo(f"wrote {plot_file}")


@cli.command()
@click.argument("model_dir", required=False)
@click.option("--json", "as_json", is_flag=True)
def info(model_dir, as_json):
    """Summarize an export (manifest, files, runtimes), or this machine when no folder is given."""
    from .runtime.describe import describe_export, describe_platform

    data = describe_export(model_dir) if model_dir else describe_platform()
    if as_json:
        _echo_json(data)
        return
    from .runtime.describe import format_description

    click.echo(format_description(data))


@cli.command()
def datasets():
    """List the registered datasets."""
    from .report import table
    from .train.datasets import list_datasets

    click.echo(table(["dataset", "task", "description"], [[d.name, d.task, d.help] for d in list_datasets()]))


@cli.command()
def models():
    """List the registered model architectures."""
    from .report import table
    from .train.models import list_models

    click.echo(table(["model", "task", "description"], [[m.name, m.task, m.help] for m in list_models()]))


def main(argv=None) -> None:
    """Entry point: run the click group, turning EdgecnnError into one line and exit code 2."""
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        cli.main(args=argv, standalone_mode=False, prog_name="edgecnn")
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
