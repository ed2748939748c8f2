"""`edgecnn explain`: the seed's lessons as one HTML page, for each committed export, opened in headless Chromium.

The exports are explained as a fresh clone has them: a copy whose manifest's source .keras points nowhere (runs/ is
not committed), so everything comes from the fp32 ONNX file and Grad-CAM is marked unavailable. The pages are
opened in Debian's chromium through playwright (never a browser download); the screenshots are kept as test
artefacts in $EDGECNN_ARTEFACTS (default: edgecnn-test-artefacts in the system's temporary folder); the test
prints where.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from .conftest import ROOT, error_lines, objects_found, reference_export, run_cli, sample_truth

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
SECTIONS = ["architecture", "feature-maps", "activations", "decision", "where-it-looks", "augmentation",
            "predictions"]
TEXT = ("Shares in the bank fell sharply after it cut its profit forecast, and the chief executive said the market "
        "was weak.")


def fresh_clone_copy(name: str, tmp_path: Path) -> Path:
    """A copy of a committed export whose source .keras is absent, as in a fresh clone."""
    target = tmp_path / name
    shutil.copytree(reference_export(name, f"export-{name}"), target)
    manifest = json.loads((target / "edgecnn.json").read_text())
    manifest["source"]["model"] = "runs/not-in-a-fresh-clone/model.keras"
    (target / "edgecnn.json").write_text(json.dumps(manifest))
    return target


def explain(export: Path, out: Path, *args: str) -> dict:
    result = run_cli("explain", str(export), *args, "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert not error_lines(result), result.stderr
    assert f"wrote {out / 'index.html'}" in result.stdout
    return json.loads((out / "explain.json").read_text())


def open_in_chromium(page: Path, screenshot_name: str, tmp_path: Path) -> dict:
    """Load the page in headless Chromium; return what rendered and keep a full-page screenshot."""
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: CI installs Debian's chromium for the browser tests")
        pytest.skip(f"{CHROMIUM} is not installed (apt install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if os.environ.get("CI"):
            raise
        pytest.skip("playwright is not installed (the dev extra)")
    errors: list[str] = []
    shot = tmp_path / screenshot_name
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            view = browser.new_page(viewport={"width": 1200, "height": 900})
            view.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
            view.on("pageerror", lambda error: errors.append(str(error)))
            view.on("requestfailed", lambda request: errors.append(f"request failed: {request.url}"))
            view.goto(page.resolve().as_uri())
            view.wait_for_load_state("load")
            rendered = view.evaluate("""() => ({
                sections: Array.from(document.querySelectorAll('section')).map(s => ({
                    id: s.id, heading: (s.querySelector('h2') || {}).textContent || '',
                    height: s.getBoundingClientRect().height,
                    content: s.querySelectorAll('img, table, p.note, p.tokens').length})),
                images: Array.from(document.images).map(i => [i.getAttribute('src'), i.naturalWidth]),
                scripts: document.scripts.length,
                external: Array.from(document.querySelectorAll('[src], link[href]')).map(
                    e => e.getAttribute('src') || e.getAttribute('href')).filter(u => /^[a-z]+:/i.test(u)),
                tokens: document.querySelectorAll('p.tokens span').length,
                text: document.body.innerText})""")
            view.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    # pytest keeps only its last three temporary folders, and other runs on the machine rotate them: a copy stays.
    artefacts = Path(os.environ.get("EDGECNN_ARTEFACTS") or Path(tempfile.gettempdir()) / "edgecnn-test-artefacts")
    artefacts.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, artefacts / screenshot_name)
    print(f"screenshot: {artefacts / screenshot_name}")
    rendered["errors"] = errors
    return rendered


def assert_page_whole(rendered: dict, out: Path) -> None:
    """Every section rendered with content, every image decoded, no console error, nothing from the network."""
    assert [s["id"] for s in rendered["sections"]] == SECTIONS
    for section in rendered["sections"]:
        assert section["heading"] and section["height"] > 50 and section["content"] > 0, section
    assert rendered["images"], "no figure at all"
    broken = [src for src, width in rendered["images"] if not width]
    assert not broken, broken
    assert rendered["errors"] == []
    assert rendered["scripts"] == 0 and rendered["external"] == []
    shown = {src for src, _ in rendered["images"]}
    assert shown == {p.name for p in out.glob("*.png")}, "every PNG written is on the page, and only those"


@pytest.mark.slow
def test_explain_digits_from_a_fresh_clone_renders_every_lesson(tmp_path):
    export = fresh_clone_copy("digits-cnn", tmp_path)
    out = tmp_path / "explain"
    report = explain(export, out, str(export / "samples" / "3-1.png"))
    rendered = open_in_chromium(out / "index.html", "explain-digits-cnn.png", tmp_path)
    assert_page_whole(rendered, out)
    sections = report["sections"]

    manifest = json.loads((export / "edgecnn.json").read_text())
    layers = sections["architecture"]["data"]["layers"]
    assert sum(r["parameters"] for r in layers) == manifest["source"]["parameters"]  # Keras' own count: 93,322
    assert sum(r["latency_us"] for r in layers) > 0
    # seed-cnn on 28x28: 3x3 valid convolutions and 2x2 pooling -> 26, (13) 11, (5) 3
    assert [b["shape"] for b in sections["feature-maps"]["data"]["blocks"]] == [[32, 26, 26], [64, 11, 11],
                                                                                [64, 3, 3]]
    assert sections["feature-maps"]["data"]["filters"]["shape"] == [32, 1, 3, 3]
    activation = sections["activations"]["data"]
    assert activation["activation"] == "ReLU" and activation["pooling"]["op"] == "MaxPool"
    assert activation["pooling"]["shape_after"] == [13, 13]

    decision = sections["decision"]["data"]["inputs"][0]
    logits = np.array(list(decision["logits"].values()))
    softmax = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    np.testing.assert_allclose(softmax, list(decision["probabilities"].values()), atol=1e-5)
    assert max(decision["probabilities"], key=decision["probabilities"].get) == "3"

    looks = sections["where-it-looks"]
    assert [m["method"] for m in looks["data"]["inputs"][0]["maps"]] == ["occlusion"]
    assert any("Grad-CAM" in line and "runs/not-in-a-fresh-clone/model.keras" in line for line in looks["missing"])
    assert "Grad-CAM needs the model's gradients" in rendered["text"]

    predictions = sections["predictions"]["data"]
    assert predictions["accuracy"] == pytest.approx(manifest["validation"]["results"]["onnx"]["accuracy"], abs=1e-4)
    assert predictions["n"] == manifest["validation"]["n"]
    assert sum(map(sum, predictions["confusion"])) == predictions["n"]
    assert sections["augmentation"]["data"]["variants"] == 8


@pytest.mark.slow
def test_explain_bbc_news_highlights_the_words_of_a_text(tmp_path):
    export = fresh_clone_copy("bbc-news", tmp_path)
    out = tmp_path / "explain"
    report = explain(export, out, "--text", TEXT)
    rendered = open_in_chromium(out / "index.html", "explain-bbc-news.png", tmp_path)
    assert_page_whole(rendered, out)
    sections = report["sections"]

    decision = sections["decision"]["data"]["inputs"][0]
    parts = [name for name in decision if name not in ("input", "probabilities", "logits")]
    assert sorted(parts) == ["cnn_logits", "wide_logits"]  # the wide model's two paths, summed into the logits
    np.testing.assert_allclose(np.add(*(list(decision[p].values()) for p in parts)), list(decision["logits"].values()),
                               atol=1e-3)
    assert max(decision["probabilities"], key=decision["probabilities"].get) == "business"

    words = len(TEXT.split())
    assert rendered["tokens"] == words  # every word of the text highlighted once, for the top class
    highlight = sections["where-it-looks"]["data"]["inputs"][0]["classes"][0]
    assert highlight["class"] == "business"
    assert max(highlight["words"], key=highlight["words"].get) in {"shares", "market", "bank", "profit", "forecast"}

    filters = sections["feature-maps"]["data"]["texts"][0]["filters"]
    assert {f["width"] for f in filters} == {3, 4, 5}
    assert all(len(f["words"].split()) == f["width"] for f in filters)
    assert sections["activations"]["data"]["pooling"]["op"] == "GlobalMaxPool"

    manifest = json.loads((export / "edgecnn.json").read_text())
    predictions = sections["predictions"]["data"]
    assert predictions["accuracy"] == pytest.approx(manifest["validation"]["results"]["onnx"]["accuracy"], abs=1e-4)
    top = predictions["top_words"]
    assert set(top) == set(manifest["labels"]) and all(len(w) == 12 for w in top.values())
    assert {"film", "music"} & set(top["entertainment"]) and {"election", "labour"} & set(top["politics"])
    assert sections["augmentation"]["missing"] and not sections["augmentation"]["figures"]


@pytest.mark.slow
def test_explain_digit_detector_maps_the_scores_of_a_scene(tmp_path):
    export = fresh_clone_copy("digit-detector", tmp_path)
    out = tmp_path / "explain"
    scene = export / "samples" / "scene-01.png"
    report = explain(export, out, str(scene))
    rendered = open_in_chromium(out / "index.html", "explain-digit-detector.png", tmp_path)
    assert_page_whole(rendered, out)
    sections = report["sections"]

    inferred = run_cli("infer", str(scene), "--model", str(export), "--format", "onnx", "--json")
    assert inferred.returncode == 0, inferred.stderr
    expected = json.loads(inferred.stdout)["detections"]
    found = sections["where-it-looks"]["data"]["inputs"][0]
    assert [d["label"] for d in found["detections"]] == [d["label"] for d in expected]
    np.testing.assert_allclose([d["box"] for d in found["detections"]], [d["box"] for d in expected], atol=0.1)
    threshold = json.loads((export / "edgecnn.json").read_text())["detection"]["score_threshold"]
    assert all(found["peak_score_per_class"][d["label"]] >= threshold for d in expected)

    assert len(sections["feature-maps"]["data"]["blocks"]) >= 10
    assert sections["activations"]["data"]["activation"] == "ReLU6"
    assert any("no pooling layer" in line for line in sections["activations"]["missing"])
    assert sections["decision"]["missing"] and not sections["decision"]["figures"]

    truth = sample_truth(export)
    from edgecnn.runtime.tasks import ObjectDetector

    detector = ObjectDetector(export, format="onnx")
    hits = 0
    for name, boxes, labels in truth:
        result = detector.detect(str(export / "samples" / name))
        hits += objects_found([d.box for d in result.detections], [d.label for d in result.detections], boxes,
                              labels)
    predictions = sections["predictions"]["data"]
    assert (predictions["found"], predictions["objects"]) == (hits, sum(len(labels) for _, _, labels in truth))


@pytest.mark.slow
def test_explain_a_run_model_keras_shows_grad_cam(tmp_path):
    run = tmp_path / "run"
    trained = run_cli("train", "--dataset", "digits", "--model", "seed-cnn", "--epochs", "2", "--out", str(run))
    assert trained.returncode == 0, trained.stderr
    out = tmp_path / "explain"
    sample = ROOT / "exported" / "digits-cnn" / "samples" / "7-1.png"
    report = explain(run / "model.keras", out, str(sample), "--class", "1")
    maps = report["sections"]["where-it-looks"]["data"]["inputs"][0]["maps"]
    second = "1"
    if maps[0]["class"] == "1":  # a 2-epoch model may take the 7 for a 1: ask for a class that is not its top
        second = "0"
        report = explain(run / "model.keras", tmp_path / "explain-2", str(sample), "--class", second)
        maps = report["sections"]["where-it-looks"]["data"]["inputs"][0]["maps"]
    assert report["keras"] == str(run / "model.keras") and report["keras_note"] is None
    assert [m["method"] for m in maps] == ["grad-cam", "occlusion", "grad-cam", "occlusion"]
    assert maps[0]["class"] != second and maps[2]["class"] == second
    assert not report["sections"]["where-it-looks"]["missing"]
    types = {r["layer"]: r["type"] for r in report["sections"]["architecture"]["data"]["layers"]}
    assert types["conv2d"] == "Conv2D" and types["dense"] == "Dense"


def test_explain_on_a_runtime_only_install_says_what_the_train_extra_adds(tmp_path):
    """onnx, matplotlib, TensorFlow and scikit-learn made unimportable: the page still comes, with notes."""
    export = fresh_clone_copy("digits-cnn", tmp_path)
    out = tmp_path / "explain"
    script = ("import sys, json\n"
              "BLOCKED = ('tensorflow', 'keras', 'tf2onnx', 'onnx', 'matplotlib', 'sklearn', 'pycocotools')\n"
              "for name in BLOCKED: sys.modules[name] = None\n"
              "from edgecnn.explain import explain_model\n"
              f"report = explain_model({str(export)!r}, {str(out)!r})\n"
              "loaded = [m for m in sys.modules if m.split('.')[0] in BLOCKED and sys.modules[m] is not None]\n"
              "print(json.dumps({'notes': report['notes'], 'loaded': loaded}))\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300,
                            check=False)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout.splitlines()[-1])
    assert answer["loaded"] == []
    assert len(answer["notes"]) == 1 and "pip install 'edgecnn[train]' adds" in answer["notes"][0]
    page = (out / "index.html").read_text()
    assert all(f'id="{key}"' in page for key in SECTIONS)
    report = json.loads((out / "explain.json").read_text())
    layers = report["sections"]["architecture"]["data"]["layers"]
    assert {"conv2d", "dense"} <= {r["layer"] for r in layers}  # latency per layer from the profiler alone
    assert sum(r["latency_us"] for r in layers) > 0
    assert report["sections"]["predictions"]["data"]["n"] == 20  # the export's samples stand in
    assert not list(out.glob("*.png"))


def test_explain_refuses_a_folder_of_other_things_and_an_unknown_class(tmp_path, digits_export):
    other = tmp_path / "photos"
    other.mkdir()
    (other / "holiday.jpg").write_bytes(b"not mine to delete")
    refused = run_cli("explain", str(digits_export), "--out", str(other))
    assert refused.returncode == 2 and len(error_lines(refused)) == 1
    assert "photos" in error_lines(refused)[0]
    assert (other / "holiday.jpg").read_bytes() == b"not mine to delete"

    unknown = run_cli("explain", str(digits_export), "--class", "eleven", "--out", str(tmp_path / "x"))
    assert unknown.returncode == 2 and "eleven" in error_lines(unknown)[0]
    assert not (tmp_path / "x").exists() and not list(tmp_path.glob(".x*"))

    not_a_model = run_cli("explain", str(other / "holiday.jpg"), "--out", str(tmp_path / "y"))
    assert not_a_model.returncode == 2 and "holiday.jpg" in error_lines(not_a_model)[0]

    text_for_images = run_cli("explain", str(digits_export), "--text", "seven", "--out", str(tmp_path / "z"))
    assert text_for_images.returncode == 2 and "--text is for text models" in error_lines(text_for_images)[0]
