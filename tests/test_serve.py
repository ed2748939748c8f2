"""edgecnn serve: the JSON API (Starlette's TestClient), a real uvicorn process answering the README's curl
examples, the page in headless Chromium, and the load generator.

Expected answers come from outside the code under test: labels from the samples' file names, results from the
Python API (``edgecnn.load(...).classify``) that ``edgecnn infer`` prints, error messages from the same calls.
"""

from __future__ import annotations

import base64
import http.client
import json
import math
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import edgecnn
from edgecnn.errors import InputError

from .conftest import ROOT, error_lines, reference_export, run_cli

starlette_testclient = pytest.importorskip("starlette.testclient",
                                           reason="pip install 'edgecnn[serve]' (in the dev extra)")
TestClient = starlette_testclient.TestClient

from edgecnn.serve import create_app

EXPORTS = {"digits-cnn": "export-digits", "bbc-news": "export-text", "digit-detector": "export-detector"}
ARTIFACTS = ROOT / "build" / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]
LISTENING = re.compile(r"edgecnn serve: (http://\S+?)/ \(")


def label_of(path: Path) -> str:
    """A sample's true label: its file name up to the last '-' (``7-1.png``: 7, ``sports-2.txt``: sports)."""
    return path.stem.rsplit("-", 1)[0]


@pytest.fixture(scope="module")
def exports() -> dict[str, Path]:
    return {name: reference_export(name, target) for name, target in EXPORTS.items()}


@pytest.fixture(scope="module")
def client(exports):
    app = create_app([str(p) for p in exports.values()], workers=2)
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def reference(exports):
    """The Python API on the same exports: what `edgecnn infer` prints is what the server must answer."""
    return {name: edgecnn.load(path) for name, path in exports.items()}


def digit_samples(exports) -> list[Path]:
    return sorted((exports["digits-cnn"] / "samples").glob("*.png"))


def scenes(exports) -> list[Path]:
    return sorted((exports["digit-detector"] / "samples").glob("*.png"))


def texts(exports) -> list[Path]:
    return sorted((exports["bbc-news"] / "samples").glob("*.txt"))


def assert_same_predictions(answer: list[dict], expected: edgecnn.Classification) -> None:
    assert [p["label"] for p in answer] == [c.label for c in expected.categories]
    assert [p["score"] for p in answer] == pytest.approx([c.score for c in expected.categories], abs=1e-6)


# --- what is served
# -----------------------------------------------------------------------------------------------

def test_healthz_says_ok_and_names_the_models(client):
    answer = client.get("/healthz")
    assert answer.status_code == 200
    data = answer.json()
    assert data["status"] == "ok"
    assert data["models"] == list(EXPORTS)
    assert data["workers"] == 2


def test_models_lists_every_export_with_its_formats_and_labels(client, exports):
    answer = client.get("/v1/models")
    assert answer.status_code == 200
    models = {m["name"]: m for m in answer.json()["models"]}
    assert list(models) == list(EXPORTS)
    for name, folder in exports.items():
        manifest = json.loads((folder / "edgecnn.json").read_text())
        assert models[name]["task"] == manifest["task"]
        assert models[name]["labels"] == manifest["labels"]
        assert models[name]["formats"] == list(manifest["files"])
        assert models[name]["format"] == "onnx"
        assert models[name]["input"] == manifest["input"]
        assert str(folder) not in json.dumps(models[name])  # no local paths handed out
    assert models["digit-detector"]["threshold"] == json.loads(
        (exports["digit-detector"] / "edgecnn.json").read_text())["detection"]["score_threshold"]
    assert client.get("/v1/models/bbc-news").json() == models["bbc-news"]


# --- image classification
# -----------------------------------------------------------------------------------------

def test_predict_raw_png_gives_the_label_and_the_scores_of_the_python_api(client, exports, reference):
    for path in digit_samples(exports):
        answer = client.post("/v1/models/digits-cnn:predict?top_k=3", content=path.read_bytes(),
                             headers={"Content-Type": "image/png"})
        assert answer.status_code == 200, answer.text
        data = answer.json()
        assert (data["model"], data["format"]) == ("digits-cnn", "onnx")
        assert data["predictions"][0]["label"] == label_of(path)
        assert_same_predictions(data["predictions"], reference["digits-cnn"].classify(path, top_k=3))


def test_tflite_int8_is_served_too(exports):
    """LiteRT interpreters are not thread-safe; each worker's own session makes that moot."""
    app = create_app([str(exports["digits-cnn"])], fmt="tflite-int8", workers=2)
    from concurrent.futures import ThreadPoolExecutor

    paths = digit_samples(exports)
    with TestClient(app) as test_client, ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(
            lambda p: test_client.post("/v1/models/digits-cnn:predict", content=p.read_bytes()), paths * 3))
    assert all(a.status_code == 200 and a.json()["format"] == "tflite-int8" for a in answers)
    assert [a.json()["predictions"][0]["label"] for a in answers] == [label_of(p) for p in paths * 3]


def test_predict_reads_a_body_without_content_type_or_with_curls_form_default(client, exports):
    path = digit_samples(exports)[0]
    for headers in ({}, {"Content-Type": "application/x-www-form-urlencoded"},
                    {"Content-Type": "application/octet-stream"}):
        answer = client.post("/v1/models/digits-cnn:predict", content=path.read_bytes(), headers=headers)
        assert answer.status_code == 200, (headers, answer.text)
        assert answer.json()["predictions"][0]["label"] == label_of(path)


def test_predict_multipart_file_names_the_input(client, exports):
    path = digit_samples(exports)[5]
    answer = client.post("/v1/models/digits-cnn:predict",
                         files={"image": (path.name, path.read_bytes(), "image/png")})
    assert answer.status_code == 200, answer.text
    data = answer.json()
    assert data["input"] == path.name
    assert data["predictions"][0]["label"] == label_of(path)
    assert len(data["predictions"]) == 5  # the Python API's default top_k


def test_predict_several_multipart_files_is_a_batch(client, exports):
    paths = digit_samples(exports)[:4]
    answer = client.post("/v1/models/digits-cnn:predict",
                         files=[("image", (p.name, p.read_bytes(), "image/png")) for p in paths])
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert [r["input"] for r in results] == [p.name for p in paths]
    assert [r["predictions"][0]["label"] for r in results] == [label_of(p) for p in paths]


def test_predict_json_base64_and_data_url(client, exports):
    path = digit_samples(exports)[7]
    encoded = base64.b64encode(path.read_bytes()).decode()
    for value in (encoded, f"data:image/png;base64,{encoded}"):
        answer = client.post("/v1/models/digits-cnn:predict", json={"image": value})
        assert answer.status_code == 200, answer.text
        assert answer.json()["predictions"][0]["label"] == label_of(path)


def test_json_batch_answers_every_good_input_and_names_the_bad_one(client, exports, reference):
    paths = digit_samples(exports)
    images = [base64.b64encode(p.read_bytes()).decode() for p in paths]
    garbage = base64.b64encode(b"this is not a picture").decode()
    answer = client.post("/v1/models/digits-cnn:predict?top_k=2",
                         json={"images": images[:3] + [garbage] + images[3:]})
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert len(results) == len(paths) + 1
    bad = results.pop(3)
    assert bad["input"] == "images[3]"
    with pytest.raises(InputError) as expected:
        reference["digits-cnn"].classify(b"this is not a picture")
    assert bad["error"] == str(expected.value)
    for result, path in zip(results, paths):
        assert result["predictions"][0]["label"] == label_of(path)
        assert_same_predictions(result["predictions"], reference["digits-cnn"].classify(path, top_k=2))


# --- text classification
# ------------------------------------------------------------------------------------------

def test_text_plain_json_and_multipart_give_the_python_apis_answer(client, exports, reference):
    for path in texts(exports):
        text = path.read_text(encoding="utf-8")
        expected = reference["bbc-news"].classify(text)
        plain = client.post("/v1/models/bbc-news:predict", content=text.encode(),
                            headers={"Content-Type": "text/plain; charset=utf-8"})
        as_json = client.post("/v1/models/bbc-news:predict", json={"text": text})
        url_encoded = client.post("/v1/models/bbc-news:predict", data={"text": text})
        multipart = client.post("/v1/models/bbc-news:predict", files={"text": (None, text)})
        for answer in (plain, as_json, url_encoded, multipart):
            assert answer.status_code == 200, answer.text
            assert answer.json()["predictions"][0]["label"] == label_of(path)
            assert_same_predictions(answer.json()["predictions"], expected)


def test_text_batch_keeps_the_order(client, exports, reference):
    paths = texts(exports)
    batch = [p.read_text(encoding="utf-8") for p in paths]
    answer = client.post("/v1/models/bbc-news:predict?top_k=1", json={"texts": batch})
    assert answer.status_code == 200, answer.text
    assert [r["predictions"][0]["label"] for r in answer.json()["results"]] == [label_of(p) for p in paths]


def test_text_file_upload_is_one_document(client, exports):
    path = texts(exports)[0]
    answer = client.post("/v1/models/bbc-news:predict",
                         files={"file": (path.name, path.read_bytes(), "text/plain")})
    assert answer.status_code == 200, answer.text
    assert answer.json()["input"] == path.name
    assert answer.json()["predictions"][0]["label"] == label_of(path)


# --- detection
# ----------------------------------------------------------------------------------------------------

def test_detector_boxes_match_the_python_api_and_threshold_is_honoured(client, exports, reference):
    for path in scenes(exports)[:4]:
        expected = reference["digit-detector"].detect(path)
        answer = client.post("/v1/models/digit-detector:predict", content=path.read_bytes(),
                             headers={"Content-Type": "image/png"})
        assert answer.status_code == 200, answer.text
        data = answer.json()
        assert data["image_size"] == list(expected.image_size)
        assert [d["label"] for d in data["detections"]] == [d.label for d in expected.detections]
        for got, want in zip(data["detections"], expected.detections):
            assert got["box"] == pytest.approx(list(want.box), abs=0.01)
        strict = client.post("/v1/models/digit-detector:predict?threshold=0.85",
                             content=path.read_bytes()).json()
        assert [d["label"] for d in strict["detections"]] == \
            [d.label for d in reference["digit-detector"].detect(path, threshold=0.85).detections]


# --- errors: one line, the right status
# -----------------------------------------------------------------------------

def test_not_an_image_is_400_with_the_clis_message(client, reference):
    answer = client.post("/v1/models/digits-cnn:predict", content=b"GIF89a but broken",
                         headers={"Content-Type": "image/gif"})
    assert answer.status_code == 400
    with pytest.raises(InputError) as expected:
        reference["digits-cnn"].classify(b"GIF89a but broken")
    assert answer.json() == {"error": str(expected.value)}
    assert "\n" not in answer.json()["error"]


@pytest.mark.parametrize("path, kwargs, status, words", [
    ("/v1/models/nope:predict", {"content": b"x"}, 404, "no model named 'nope'"),
    ("/v1/models/nope", {}, 404, "no model named 'nope'"),
    ("/nowhere", {}, 404, "no such page or endpoint"),
    ("/v1/models/digits-cnn:predict", {"content": b"hello", "headers": {"Content-Type": "text/plain"}}, 415,
     "is an image model"),
    ("/v1/models/bbc-news:predict", {"content": b"\x89PNG", "headers": {"Content-Type": "image/png"}}, 415,
     "is a text model"),
    ("/v1/models/digits-cnn:predict",
     {"content": b"{not json", "headers": {"Content-Type": "application/json"}}, 400, "not valid JSON"),
    ("/v1/models/digits-cnn:predict", {"json": {"text": "seven"}}, 400, "either 'image' or 'images'"),
    ("/v1/models/digits-cnn:predict", {"json": {"image": "###"}}, 400, "not valid base64"),
    ("/v1/models/bbc-news:predict", {"json": {"texts": ["ok", 7]}}, 400, "texts[1] is a int, not a string"),
    ("/v1/models/bbc-news:predict", {"json": {"texts": []}}, 400, "non-empty list"),
    ("/v1/models/digits-cnn:predict", {"content": b""}, 400, "the request body is empty"),
    ("/v1/models/digits-cnn:predict?top_k=many", {"content": b"x"}, 400, "top_k='many' is not a whole"),
    ("/v1/models/digits-cnn:predict?threshold=0.5", {"content": b"x"}, 400, "threshold applies to detection"),
    ("/v1/models/digit-detector:predict?threshold=2", {"content": b"x"}, 400, "outside 0..1"),
    ("/v1/models/bbc-news:predict", {"content": b"\xff\xfe", "headers": {"Content-Type": "text/plain"}}, 400,
     "not valid utf-8"),
])
def test_bad_requests_get_a_json_error_and_the_right_status(client, path, kwargs, status, words):
    answer = client.post(path, **kwargs) if kwargs or ":predict" in path else client.get(path)
    assert answer.status_code == status, answer.text
    message = answer.json()["error"]
    assert words in message
    assert "\n" not in message


def test_get_on_predict_is_405_as_json(client):
    answer = client.get("/v1/models/digits-cnn:predict")
    assert answer.status_code == 405
    assert "GET is not allowed" in answer.json()["error"]


@pytest.fixture(scope="module")
def small_client(exports):
    app = create_app([str(exports["digits-cnn"])], workers=1, max_body_bytes=1000, max_batch=3)
    with TestClient(app) as test_client:
        yield test_client


def test_body_over_the_limit_is_413_before_and_while_reading(small_client):
    declared = small_client.post("/v1/models/digits-cnn:predict", content=b"x" * 1001)
    assert declared.status_code == 413
    assert declared.json()["error"].startswith("the request body of 1001 bytes is more than this server's "
                                               "limit of 1000 bytes")
    chunked = small_client.post("/v1/models/digits-cnn:predict", content=iter([b"x" * 600, b"x" * 600]))
    assert chunked.status_code == 413
    assert "--max-body-mb" in chunked.json()["error"]
    multipart = small_client.post("/v1/models/digits-cnn:predict", files={"image": ("a.png", b"x" * 2000)})
    assert multipart.status_code == 413


def test_batch_over_the_limit_is_413(small_client, exports):
    tiny = base64.b64encode(b"x").decode()
    answer = small_client.post("/v1/models/digits-cnn:predict", json={"images": [tiny] * 4})
    assert answer.status_code == 413
    assert answer.json()["error"] == ("a batch of 4 inputs is more than this server's limit of 3; split "
                                      "it into smaller batches, or start edgecnn serve with a larger "
                                      "--max-batch")


def test_a_bug_is_500_with_one_line(exports, monkeypatch):
    app = create_app([str(exports["digits-cnn"])], workers=1)
    model = app.state.models.get("digits-cnn")
    monkeypatch.setattr(model, "predict", lambda *args: 1 / 0)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        answer = test_client.post("/v1/models/digits-cnn:predict", content=b"x")
    assert answer.status_code == 500
    assert answer.json() == {"error": "internal error: ZeroDivisionError: division by zero"}



def hold_predictions(model, monkeypatch) -> tuple[threading.Event, threading.Event]:
    """Make ``model.predict`` wait inside (``entered`` set) until ``release`` is set: a request in flight."""
    entered, release = threading.Event(), threading.Event()
    real_predict = model.predict

    def slow_predict(*args):
        entered.set()
        release.wait(30)
        return real_predict(*args)

    monkeypatch.setattr(model, "predict", slow_predict)
    return entered, release

def test_full_line_is_503_and_the_waiting_request_still_gets_its_answer(exports, monkeypatch):
    app = create_app([str(exports["digits-cnn"])], workers=1, max_queue=0)
    model = app.state.models.get("digits-cnn")
    entered, release = hold_predictions(model, monkeypatch)
    sample = digit_samples(exports)[0].read_bytes()
    with TestClient(app) as test_client:
        first = {}
        worker = threading.Thread(target=lambda: first.update(
            answer=test_client.post("/v1/models/digits-cnn:predict", content=sample)))
        worker.start()
        assert entered.wait(30)
        busy = test_client.post("/v1/models/digits-cnn:predict", content=sample)
        release.set()
        worker.join(30)
    assert busy.status_code == 503
    assert "all 1 workers are busy" in busy.json()["error"]
    assert first["answer"].status_code == 200


# --- workers and sessions
# -----------------------------------------------------------------------------------------

def test_each_worker_has_its_own_sessions_opened_once_and_never_shared(exports, monkeypatch):
    """3 workers: 3 task objects per model, opened at start; 60 overlapping requests reuse them, one at a time
    each."""
    app = create_app([str(exports["digits-cnn"])], workers=3)
    model = app.state.models.get("digits-cnn")
    tasks = []
    while len(tasks) < 3:
        tasks.append(model._sessions.get())
    assert len({id(t) for t in tasks}) == 3
    in_use, overlaps, used = {}, [], set()
    lock = threading.Lock()
    for task in tasks:
        real = task.classify

        def classify(*args, _real=real, _task=task, **kwargs):
            with lock:
                in_use[id(_task)] = in_use.get(id(_task), 0) + 1
                overlaps.append(in_use[id(_task)])
                used.add(id(_task))
            try:
                time.sleep(0.002)
                return _real(*args, **kwargs)
            finally:
                with lock:
                    in_use[id(_task)] -= 1

        monkeypatch.setattr(task, "classify", classify)
        model._sessions.put(task)
    opened = []
    monkeypatch.setattr("edgecnn.runtime.tasks.ImageClassifier.__init__",
                        lambda *a, **k: opened.append(a) or pytest.fail("a session was opened per request"))
    sample = digit_samples(exports)[3]
    with TestClient(app) as test_client:
        def hit(_):
            return test_client.post("/v1/models/digits-cnn:predict", content=sample.read_bytes()).json()

        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(hit, range(60)))
    assert all(a["predictions"][0]["label"] == label_of(sample) for a in answers)
    assert max(overlaps) == 1
    assert used <= {id(t) for t in tasks} and len(used) >= 2
    assert not opened


def test_two_folders_with_one_name_are_refused(exports, tmp_path):
    import shutil

    for parent in ("a", "b"):
        shutil.copytree(exports["digits-cnn"], tmp_path / parent / "digits-cnn")
    with pytest.raises(InputError, match="two models would be served as 'digits-cnn'"):
        create_app([str(tmp_path / "a" / "digits-cnn"), str(tmp_path / "b" / "digits-cnn")])


# --- metrics
# ------------------------------------------------------------------------------------------------------

def test_metrics_count_requests_errors_and_latency(exports):
    from prometheus_client.parser import text_string_to_metric_families

    app = create_app([str(exports["digits-cnn"])], workers=1)
    sample = digit_samples(exports)[0].read_bytes()
    with TestClient(app) as test_client:
        for _ in range(3):
            assert test_client.post("/v1/models/digits-cnn:predict", content=sample).status_code == 200
        assert test_client.post("/v1/models/digits-cnn:predict", content=b"junk").status_code == 400
        assert test_client.post("/v1/models/random-name-1:predict", content=b"x").status_code == 404
        answer = test_client.get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(answer.text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    predict = (("code", "200"), ("endpoint", "predict"), ("model", "digits-cnn"))
    assert samples[("edgecnn_requests_total", predict)] == 3
    assert samples[("edgecnn_request_errors_total", (("code", "400"), ("endpoint", "predict"),
                                                     ("model", "digits-cnn")))] == 1
    # an unknown name is not a label value: random URLs cannot grow the metric without bound
    unknown = (("code", "404"), ("endpoint", "predict"), ("model", ""))
    assert samples[("edgecnn_request_errors_total", unknown)] == 1
    assert not any("random-name" in str(key) for key in samples)
    timed = (("endpoint", "predict"), ("model", "digits-cnn"))
    assert samples[("edgecnn_request_duration_seconds_count", timed)] == 4
    assert samples[("edgecnn_inputs_total", (("model", "digits-cnn"),))] == 3


# --- a real server
# ------------------------------------------------------------------------------------------------

def readme_serve_block() -> tuple[list[str], list[str]]:
    """The README's serve example: (`edgecnn serve`'s arguments, the curl commands), lines continued."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## `edgecnn serve`", 1)[1]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    commands = [line.strip() for line in block.replace("\\\n", " ").splitlines()
                if line.strip() and not line.lstrip().startswith("#")]
    serve = next(c for c in commands if c.startswith("edgecnn serve "))
    return shlex.split(serve.split("#")[0])[2:], [c for c in commands if c.startswith("curl ")]


class Server:
    """``python -m edgecnn.cli serve ARGS --port 0`` in a subprocess; its URL once it listens."""

    def __init__(self, args: list[str]):
        args = [a for a in args]
        if "--port" in args:
            del args[args.index("--port"):args.index("--port") + 2]
        self.process = subprocess.Popen([sys.executable, "-m", "edgecnn.cli", "serve", *args, "--port", "0"],
                                        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        self.lines = []
        for line in self.process.stderr:
            self.lines.append(line)
            found = LISTENING.search(line)
            if found:
                self.url = found.group(1)
                self.port = int(self.url.rsplit(":", 1)[1])
                return
        raise AssertionError(f"edgecnn serve did not start: {''.join(self.lines)}")

    def stop(self, sig=signal.SIGTERM) -> tuple[int, str]:
        self.process.send_signal(sig)
        try:
            _, rest = self.process.communicate(timeout=30)
        finally:
            self.process.kill()
        return self.process.returncode, "".join(self.lines) + rest


def test_readme_curl_examples_against_a_real_server(exports):
    serve_args, curls = readme_serve_block()
    assert "exported/digits-cnn" in serve_args and len(curls) >= 3
    server = Server(serve_args)
    try:
        outputs = []
        for command in curls:
            command = command.replace("127.0.0.1:8000", f"127.0.0.1:{server.port}")
            done = subprocess.run(["bash", "-c", command], cwd=ROOT, capture_output=True, text=True,
                                  timeout=60, check=False)
            assert done.returncode == 0, (command, done.stderr)
            data = json.loads(done.stdout)
            assert "error" not in data, (command, data)
            outputs.append((command, data))
    finally:
        code, log = server.stop()
    digits = next(d for c, d in outputs if "digits-cnn:predict" in c)
    assert digits["predictions"][0]["label"] == "7"
    detected = next(d for c, d in outputs if "digit-detector:predict" in c)
    assert detected["input"] == "scene-01.png" and detected["detections"]
    news = next(d for c, d in outputs if "bbc-news:predict" in c)
    assert [r["predictions"][0]["label"] for r in news["results"]] == ["business", "sports"]
    assert all(len(r["predictions"]) == 2 for r in news["results"])
    assert code == 0, log
    assert "edgecnn serve stopped by SIGTERM" in log


def test_ctrl_c_stops_the_server_cleanly(exports):
    server = Server([str(exports["digits-cnn"])])
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    connection.request("GET", "/healthz")
    assert connection.getresponse().status == 200
    connection.close()
    code, log = server.stop(signal.SIGINT)
    assert code == 0, log
    assert "stopped by SIGINT" in log
    assert "Traceback" not in log


def test_shutdown_answers_the_request_in_flight(exports, monkeypatch):
    """uvicorn's graceful shutdown: a request being inferred when the stop comes still gets its answer."""
    import uvicorn

    app = create_app([str(exports["digits-cnn"])], workers=1)
    model = app.state.models.get("digits-cnn")
    entered, release = hold_predictions(model, monkeypatch)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    serving = threading.Thread(target=server.run, kwargs={"sockets": [sock]})
    serving.start()
    try:
        for _ in range(300):
            if server.started:
                break
            time.sleep(0.02)
        result = {}

        def ask():
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            connection.request("POST", "/v1/models/digits-cnn:predict",
                               body=digit_samples(exports)[0].read_bytes())
            answer = connection.getresponse()
            result.update(status=answer.status, body=json.loads(answer.read()))

        asking = threading.Thread(target=ask)
        asking.start()
        assert entered.wait(30)
        server.should_exit = True  # what uvicorn's SIGTERM handler does
        time.sleep(0.3)
        assert serving.is_alive()  # still waiting for the request in flight
        release.set()
        asking.join(30)
    finally:
        release.set()
        server.should_exit = True
        serving.join(30)
    assert result["status"] == 200
    assert result["body"]["predictions"][0]["label"] == label_of(digit_samples(exports)[0])
    assert not serving.is_alive()
    assert app.state.models._executor._shutdown  # the lifespan closed the worker pool


def test_port_in_use_is_one_line(exports):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("serve", str(exports["digits-cnn"]), "--port", str(port), timeout=120)
    assert result.returncode == 2, result.stderr
    assert error_lines(result) == [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert f"cannot listen on 127.0.0.1:{port}" in error_lines(result)[0]
    assert "choose another --port" in error_lines(result)[0]


def test_missing_serve_extra_is_one_line_naming_it():
    code = ("import sys; sys.modules['uvicorn'] = None; from edgecnn.cli import main; "
            "main(['serve', 'exported/digits-cnn'])")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 2, result.stderr
    assert error_lines(result) == [line for line in result.stderr.strip().splitlines()]
    assert "pip install 'edgecnn[serve]'" in result.stderr


def test_serve_is_imported_by_nothing_but_the_cli():
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "edgecnn").rglob("*.py")
                 if "serve" not in p.parts and p.name != "cli.py"
                 and re.search(r"^\s*(from\s+\S*serve\b|import\s+\S*serve\b)", p.read_text(), re.MULTILINE)]
    assert offenders == []


# --- the load generator
# -------------------------------------------------------------------------------------------

def test_load_generator_runs_and_finds_no_errors(exports):
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "serve_load.py"), "--requests", "36",
                           "--concurrency", "4", "--timeout", "120"], cwd=ROOT, capture_output=True,
                          text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["errors"] == 0 and report["server_exit_code"] == 0
    assert set(report["results"]) == set(EXPORTS)
    for result in report["results"].values():
        assert result["answered"] == 36
        assert 0 < result["p50_ms"] <= result["p99_ms"]
        assert result["requests_per_s"] > 0


def test_load_generator_refuses_other_hosts():
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "serve_load.py"), "--url",
                           "http://192.0.2.1:8000", "--requests", "1"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode != 0
    assert "not a loopback address" in done.stderr


# --- the page in a real browser
# -----------------------------------------------------------------------------------

def _arc(cx, cy, rx, ry, start, end, steps=24):
    return [(cx + rx * math.cos(math.radians(start + (end - start) * i / steps)),
             cy + ry * math.sin(math.radians(start + (end - start) * i / steps))) for i in range(steps + 1)]


#: Digits as a person draws them, in a 200x200 box (y down): one list of points per stroke.
DRAWN = {
    "0": [_arc(100, 100, 45, 80, 0, 360)],
    "4": [[(120, 20), (50, 130), (160, 130)], [(125, 70), (125, 185)]],
    "7": [[(50, 25), (150, 25), (90, 180)]],
    "3": [_arc(100, 60, 40, 40, 210, 450) + _arc(100, 140, 45, 40, 270, 510)],
}


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing in CI: the serve page test needs Debian's chromium (apt)")
        pytest.skip(f"{CHROMIUM} is missing: apt install chromium to run the page test")
    if os.environ.get("CI"):
        from playwright import sync_api
    else:
        sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def live_url(exports):
    """The three exports served by uvicorn in a thread, on a free loopback port."""
    import uvicorn

    app = create_app([str(p) for p in exports.values()], workers=2)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    for _ in range(500):
        if server.started:
            break
        time.sleep(0.02)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/"
    server.should_exit = True
    thread.join(30)


@pytest.fixture()
def console() -> list[str]:
    """What the page logs as an error or warning, and uncaught exceptions: must stay empty."""
    return []


@pytest.fixture()
def page(browser, live_url, console, request):
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 1100, "height": 900})
    tab = context.new_page()
    tab.on("console", lambda message: console.append(f"console {message.type}: {message.text}")
           if message.type in ("error", "warning") else None)
    tab.on("pageerror", lambda error: console.append(f"page error: {error}"))
    tab.goto(live_url)
    expect(tab.locator("#model")).to_be_enabled()
    yield tab
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    tab.screenshot(path=str(ARTIFACTS / f"serve-{request.node.name}.png"), full_page=True)
    context.close()
    assert console == []


def _answered(page, action, status: str = "answered") -> None:
    """Do ``action`` and wait until the page has shown the server's answer to the request it makes."""
    from playwright.sync_api import expect

    with page.expect_response(lambda response: ":predict" in response.url):
        action()
    expect(page.locator("#status")).to_contain_text(status)


def _draw(page, strokes) -> None:
    pad = page.locator("#pad").bounding_box()
    for stroke in strokes:
        points = [(pad["x"] + 40 + x, pad["y"] + 40 + y) for x, y in stroke]

        def trace(points=points):
            page.mouse.move(*points[0])
            page.mouse.down()
            for point in points[1:]:
                page.mouse.move(*point, steps=3)
            page.mouse.up()

        _answered(page, trace)  # each lifted pen classifies the drawing so far


def test_page_reads_a_drawn_digit(page):
    from playwright.sync_api import expect

    expect(page.locator("#draw-input")).to_be_visible()
    for digit, strokes in DRAWN.items():
        page.click("#clear")
        _draw(page, strokes)
        expect(page.locator("#label")).to_have_text(digit)
        assert len(page.locator("#bars li").all()) == 10


def test_page_upload_shows_the_samples_label(page, exports):
    from playwright.sync_api import expect

    for path in digit_samples(exports)[::7]:
        _answered(page, lambda path=path: page.set_input_files("#file", str(path)))
        expect(page.locator("#label")).to_have_text(label_of(path))
        expect(page.locator("#picture")).to_be_visible()


def test_page_draws_detections_and_classifies_text(page, exports, reference):
    from playwright.sync_api import expect

    page.select_option("#model", "digit-detector")
    expect(page.locator("#draw-input")).to_be_hidden()
    scene = scenes(exports)[0]
    _answered(page, lambda: page.set_input_files("#file", str(scene)))
    expected = reference["digit-detector"].detect(scene).detections
    expect(page.locator("#detections li")).to_have_count(len(expected))
    expect(page.locator("#label")).to_have_text(expected[0].label)
    page.select_option("#model", "bbc-news")
    expect(page.locator("#image-input")).to_be_hidden()
    path = texts(exports)[0]
    page.fill("#text", path.read_text(encoding="utf-8"))
    _answered(page, lambda: page.click("#classify-text"))
    expect(page.locator("#label")).to_have_text(label_of(path))


def test_page_webcam_snapshot_is_classified(page):
    from playwright.sync_api import expect

    page.click("#camera-start")
    expect(page.locator("#snapshot")).to_be_visible()
    page.wait_for_timeout(300)  # a few frames of Chromium's fake camera
    _answered(page, lambda: page.click("#snapshot"))
    expect(page.locator("#error")).to_be_hidden()
    expect(page.locator("#bars li")).to_have_count(10)
    page.click("#camera-stop")
    expect(page.locator("#video")).to_be_hidden()


def test_page_shows_the_servers_error(page, console, tmp_path):
    from playwright.sync_api import expect

    bad = tmp_path / "not-an-image.png"
    bad.write_bytes(b"this is not a PNG")
    _answered(page, lambda: page.set_input_files("#file", str(bad)), status="The request failed")
    expect(page.locator("#error")).to_be_visible()
    expect(page.locator("#error")).to_contain_text("error: <bytes>")
    # Chromium itself logs every 4xx answer to fetch(); that one is expected here, and only that one
    console[:] = [line for line in console if "status of 400" not in line]


def test_the_page_files_are_package_data():
    """A wheel holds only .py files unless pyproject names the rest: every page file must be listed there."""
    import tomllib

    listed = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assets = sorted(p.name for p in (ROOT / "edgecnn" / "serve").iterdir()
                    if p.suffix in (".html", ".css", ".js"))
    assert assets == ["page.css", "page.html", "page.js"]
    assert sorted(listed["edgecnn.serve"]) == assets


def test_a_bad_image_in_a_batch_costs_the_good_ones_no_second_decode(exports, monkeypatch):
    """A JSON batch of images is decoded once per image: the bad one is its own error, the good ones run in one
    model call (they were decoded again, one by one, whenever the batch held a bad image)."""
    from edgecnn.runtime.tasks import ImageClassifier
    from edgecnn.serve.inputs import Inputs
    from edgecnn.serve.pool import ServedModel

    paths = digit_samples(exports)[:4]
    decoded, calls = [], []
    real_preprocess, real_predict = ImageClassifier.preprocess, ImageClassifier.predict
    monkeypatch.setattr(ImageClassifier, "preprocess", lambda self, image: decoded.append(1)
                        or real_preprocess(self, image))
    monkeypatch.setattr(ImageClassifier, "predict", lambda self, x: calls.append(len(x)) or real_predict(self, x))
    model = ServedModel(exports["digits-cnn"], None, workers=1, threads=1)
    items = [p.read_bytes() for p in paths[:2]] + [b"not an image"] + [p.read_bytes() for p in paths[2:]]
    answer = model.predict(Inputs(items=items, names=[f"images[{i}]" for i in range(5)], single=False), top_k=1)
    assert len(decoded) == 5 and calls == [4]
    results = answer["results"]
    assert "error" in results[2] and results[2]["input"] == "images[2]"
    assert [r["predictions"][0]["label"] for r in results[:2] + results[3:]] == [label_of(p) for p in paths]
