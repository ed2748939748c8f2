"""``edgecnn train --strategy``: training on tf.distribute, kept out of the trainers.

- ``none`` (the default): today's training, no strategy at all.
- ``mirrored``: ``tf.distribute.MirroredStrategy``, one replica per local device (every GPU, else the CPU).
- ``multi-worker``: ``tf.distribute.MultiWorkerMirroredStrategy``: the same program runs on every worker, each
  reading ``TF_CONFIG`` (the cluster's ``worker`` addresses and this process's ``task`` index); gradients are
  all-reduced every step, so all workers hold the same weights.

What changes in the trainer is one thing: it runs inside :func:`scope`, so the model and optimizer are built and
compiled as the strategy's mirrored variables, and Keras' ``fit`` splits each batch across the replicas - the
batch size stays the *global* one (a worker computes on its share of each batch), so the training run is the one
a single process would do with the same batch size. Every worker runs the whole trainer (each step is collective,
so all must take every one, evaluation and the test predictions included); only the chief (worker 0) writes the run
folder, the others write theirs into a temporary folder that is removed afterwards (TensorFlow's advice for saving
under a multi-worker strategy), so two workers on one machine or one shared file system never write one file.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ..errors import InputError

STRATEGIES = ("none", "mirrored", "multi-worker")


def check_strategy(name: str | None) -> str:
    """The strategy's name, checked before anything slow: ``multi-worker`` needs a usable ``TF_CONFIG``."""
    name = name or "none"
    if name not in STRATEGIES:
        raise InputError(f"--strategy {name!r}: choose one of {', '.join(STRATEGIES)}")
    if name == "multi-worker":
        _check_tf_config(os.environ.get("TF_CONFIG"))
    return name


def _check_tf_config(text: str | None) -> None:
    example = ('e.g. TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
               '"task": {"type": "worker", "index": 0}}\'')
    if not text:
        raise InputError(f"--strategy multi-worker reads the cluster from the TF_CONFIG environment variable, which "
                         f"is not set; set it on every worker ({example})")
    try:
        config = json.loads(text)
        workers = config["cluster"]["worker"]
        task = config["task"]
        index = int(task["index"])
    except (ValueError, KeyError, TypeError):
        raise InputError(f"TF_CONFIG is not a cluster description tf.distribute can read ({example})") from None
    if task.get("type") == "worker" and not 0 <= index < len(workers):
        raise InputError(f"TF_CONFIG names worker {index}, but its cluster lists {len(workers)} worker(s); give "
                         "each worker its own index from 0")


def make_strategy(tf, name: str):
    """The tf.distribute strategy for ``name`` (None for ``none``). Call it right after importing TensorFlow:
    MultiWorkerMirroredStrategy must be created before any other TensorFlow op runs."""
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi-worker":
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        _fix_keras_multi_worker(tf)
        return strategy
    return None


def _fix_keras_multi_worker(tf) -> None:
    """Two places where Keras 3's TensorFlow trainer (3.15.1) fails under MultiWorkerMirroredStrategy, mended.

    - ``fit`` first builds the model from one batch, reducing the distributed batch with ``strategy.reduce("MEAN",
      (x, y))``: a tuple, which the collective all-reduce cannot take ("Attempt to convert a value (PerReplica...)
      to a Tensor"). Only the batch's shapes matter there, so this replica's own part is used.
    - every step averages the logs across workers with ``strategy.reduce("MEAN", v, axis=0)``, and a loss or
      metric is a scalar ("Invalid reduction dimension 0 for input with 0 dimensions"): scalars are averaged with
      ``axis=None``.

    Both are wrapped, not copied: the originals still run everything else, and this runs only for ``multi-worker``.
    """
    from keras.src import tree
    from keras.src.backend.tensorflow import trainer

    if getattr(trainer, "_edgecnn_mended", False):
        return
    build, reduce_per_replica = trainer.TensorFlowTrainer._maybe_symbolic_build, trainer.reduce_per_replica

    def local_part(strategy, value):
        if isinstance(value, tf.distribute.DistributedValues):
            return strategy.experimental_local_results(value)[0]
        return value

    def maybe_symbolic_build(self, iterator=None, data_batch=None):
        if self._distribute_strategy is None or iterator is None:
            return build(self, iterator=iterator, data_batch=data_batch)
        for _, _, batches in iterator:
            batch = next(batches)
            break
        return build(self, data_batch=tree.map_structure(lambda v: local_part(self.distribute_strategy, v), batch))

    def reduce_logs(values, strategy, reduction):
        if reduction not in ("mean", "auto") or not trainer._collective_all_reduce_multi_worker(strategy):
            return reduce_per_replica(values, strategy, reduction)

        def mean(value):
            if not trainer._is_per_replica_instance(value):
                return value
            return strategy.reduce("MEAN", value, axis=0 if value.values[0].shape.rank else None)

        return tree.map_structure(mean, values)

    trainer.TensorFlowTrainer._maybe_symbolic_build = maybe_symbolic_build
    trainer.reduce_per_replica = reduce_logs
    trainer._edgecnn_mended = True


def scope(strategy):
    """The strategy's scope (nothing for no strategy): build, compile and fit the model inside it."""
    return strategy.scope() if strategy is not None else contextlib.nullcontext()


def is_chief(strategy) -> bool:
    """Whether this process writes the run folder: always without a strategy or with ``mirrored``; with
    ``multi-worker``, the ``chief`` task, else worker 0."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    return resolver.task_type == "worker" and resolver.task_id == 0 and "chief" not in resolver.cluster_spec().jobs


@contextlib.contextmanager
def run_folder(out: Path, strategy) -> Iterator[Path]:
    """``out`` for the chief; a temporary folder, removed afterwards, for every other worker."""
    if is_chief(strategy):
        yield out
        return
    folder = Path(tempfile.mkdtemp(prefix=f"edgecnn-worker-{strategy.cluster_resolver.task_id}-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def describe(strategy, name: str) -> dict:
    """What run.json records of the strategy: its name, replicas in sync and (multi-worker) the worker count."""
    info = {"strategy": name, "replicas": int(strategy.num_replicas_in_sync)}
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is not None and resolver.task_type:
        info["workers"] = len(resolver.cluster_spec().as_dict().get("worker", []))
    return info


__all__ = ["STRATEGIES", "check_strategy", "describe", "is_chief", "make_strategy", "run_folder", "scope"]
