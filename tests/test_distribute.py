"""edgecnn train --strategy: tf.distribute, two local workers as good as one process on the same data."""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import sys

import pytest

from edgecnn.errors import InputError
from edgecnn.train.distribute import check_strategy

from .conftest import ROOT, error_lines, run_cli

README = (ROOT / "README.md").read_text()
#: The README's two worker commands ("Training on several workers"): 12 epochs without augmentation at a brisk
#: rate, enough for seed-cnn on the digits to settle, so the comparison is of two trained models.
WORKER_COMMANDS = re.findall(r"^TF_CONFIG='(.*?)' edgecnn (train .*?)(?: &)?$", README, re.MULTILINE)


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


@pytest.mark.parametrize(("config", "words"), [
    (None, "TF_CONFIG environment variable, which is not set"),
    ("{not json", "not a cluster description"),
    ('{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 3}}', "names worker 3"),
])
def test_multi_worker_without_a_usable_tf_config_is_refused_up_front(monkeypatch, config, words):
    if config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", config)
    with pytest.raises(InputError, match=words):
        check_strategy("multi-worker")
    assert check_strategy(None) == "none" and check_strategy("mirrored") == "mirrored"


def test_the_cli_refuses_multi_worker_without_tf_config_in_one_line(tmp_path):
    result = run_cli("train", "--strategy", "multi-worker", "--out", str(tmp_path / "run"),
                     env={"TF_CONFIG": ""})
    assert result.returncode == 2, result.stderr
    assert error_lines(result) and "TF_CONFIG" in error_lines(result)[0]
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_the_readme_two_workers_train_a_model_as_good_as_one_process(tmp_path):
    """The README's two worker commands (MultiWorkerMirroredStrategy on 127.0.0.1, other free ports; batch size
    global) against the same training in one process without a strategy, on the same split: test accuracy within
    1 point; only worker 0 writes the run folder, and both hold the same weights."""
    assert len(WORKER_COMMANDS) == 2, "the README shows two worker commands"
    ports = dict(zip(("12345", "12346"), map(str, free_ports(2))))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    workers = []
    for config, command in WORKER_COMMANDS:
        for old, new in ports.items():
            config = config.replace(old, new)
        args = shlex.split(command.replace("runs/digits-2workers", str(tmp_path / "multi")))
        workers.append((json.loads(config)["task"]["index"], args, subprocess.Popen(
            [sys.executable, "-m", "edgecnn.cli", *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env={**env, "TF_CONFIG": config})))
    alone_args = [a for a in args if a not in ("--strategy", "multi-worker")]
    alone_args[alone_args.index("--out") + 1] = str(tmp_path / "single")
    single = run_cli(*alone_args, timeout=900)
    outputs = {index: proc.communicate(timeout=900) + (proc.returncode,) for index, _, proc in workers}
    for index, (_, stderr, code) in outputs.items():
        assert code == 0, (index, stderr[-2000:])
    assert single.returncode == 0, single.stderr[-2000:]
    multi = json.loads((tmp_path / "multi" / "metrics.json").read_text())
    alone = json.loads((tmp_path / "single" / "metrics.json").read_text())
    run = json.loads((tmp_path / "multi" / "run.json").read_text())
    assert run["distribute"] == {"strategy": "multi-worker", "replicas": 2, "workers": 2}
    assert run["batch_size"] == json.loads((tmp_path / "single" / "run.json").read_text())["batch_size"]
    assert "distribute" not in json.loads((tmp_path / "single" / "run.json").read_text())
    print(f"test accuracy: two workers {multi['test_accuracy']:.4f}, one process {alone['test_accuracy']:.4f}")
    assert alone["test_accuracy"] >= 0.95
    assert abs(multi["test_accuracy"] - alone["test_accuracy"]) <= 0.01
    # worker 1 measured the weights worker 0 wrote (its stdout: Keras' epoch lines, then the metrics)
    worker1 = re.findall(r"^\{$.*?^\}$", outputs[1][0], re.MULTILINE | re.DOTALL)[-1]
    assert json.loads(worker1)["test_accuracy"] == multi["test_accuracy"]


@pytest.mark.slow
def test_mirrored_trains_on_the_local_devices_and_records_it(tmp_path):
    result = run_cli("train", "--strategy", "mirrored", "--epochs", "1", "--out", str(tmp_path / "run"), timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["distribute"] == {"strategy": "mirrored", "replicas": 1}  # this machine: one CPU device
    assert (tmp_path / "run" / "model.keras").is_file()
