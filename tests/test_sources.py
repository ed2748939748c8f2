"""Video files, streams and globs as ``edgecnn infer`` sources (edgecnn/runtime/sources.py).

The videos are made here with OpenCV's own writer from the committed samples: a lossless FFV1 AVI where results
must equal the images' exactly, an MP4 (lossy mp4v) where only the path through the code matters. The stream is
an MJPEG server on 127.0.0.1 in a thread of this process.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgecnn.errors import EdgecnnError
from edgecnn.runtime.infer import FrameOptions, run_inference

from .conftest import ROOT, error_lines, reference_export, run_cli

cv2 = pytest.importorskip("cv2", reason="the video extra (opencv-python-headless) is not installed")


@pytest.fixture(scope="module")
def detector_export() -> Path:
    return reference_export("digit-detector", "export-detector")


def write_video(path: Path, images: list[Path], fourcc: str, fps: float = 10.0) -> Path:
    frames = [np.asarray(Image.open(p).convert("RGB")) for p in images]
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (width, height))
    assert writer.isOpened()
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def read_video(path: Path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    capture.release()
    return frames


def infer_json(model: Path, inputs: list, **options) -> list[dict]:
    emitted: list[str] = []
    summary = run_inference(model, [str(i) for i in inputs], as_json=True, emit=emitted.append,
                            report=lambda line: pytest.fail(line), inform=lambda _: None, **options)
    assert summary.exit_code == 0
    return [json.loads(line) for line in emitted]


def without_input(result: dict) -> dict:
    return {k: v for k, v in result.items() if k not in ("input", "frame", "timestamp")}


def test_every_frame_of_a_lossless_video_gets_what_its_image_gets(digits_export, tmp_path):
    images = sorted((digits_export / "samples").glob("*.png"))
    video = write_video(tmp_path / "digits.avi", images, "FFV1")
    assert all(np.array_equal(a, np.asarray(Image.open(p).convert("RGB"))) for a, p in zip(read_video(video), images))
    frames = infer_json(digits_export, [video])
    assert [f["frame"] for f in frames] == list(range(len(images)))
    assert [f["timestamp"] for f in frames] == pytest.approx([i / 10 for i in range(len(images))])
    assert {f["input"] for f in frames} == {str(video)}
    assert [without_input(f) for f in frames] == [without_input(r) for r in infer_json(digits_export, images)]


def test_detector_frames_equal_its_image_results(detector_export, tmp_path):
    images = sorted((detector_export / "samples").glob("*.png"))
    video = write_video(tmp_path / "scenes.avi", images, "FFV1")
    frames = infer_json(detector_export, [video])
    assert [without_input(f) for f in frames] == [without_input(r) for r in infer_json(detector_export, images)]
    assert all(f["detections"] for f in frames)


def test_stride_and_max_fps_pick_frames_by_index_and_source_time(digits_export, tmp_path):
    images = sorted((digits_export / "samples").glob("*.png"))[:10]
    video = write_video(tmp_path / "digits.avi", images, "FFV1", fps=10)
    strided = infer_json(digits_export, [video], frames=FrameOptions(stride=3))
    assert [f["frame"] for f in strided] == [0, 3, 6, 9]
    assert [without_input(f) for f in strided] == [without_input(r) for r in
                                                   infer_json(digits_export, images[::3])]
    # 4 frames per second of a 10 fps video: each frame at least 0.25 s after the last one taken.
    capped = infer_json(digits_export, [video], frames=FrameOptions(max_fps=4))
    assert [f["frame"] for f in capped] == [0, 3, 6, 9]


def test_save_writes_a_playable_video_with_the_boxes_drawn(detector_export, tmp_path):
    images = sorted((detector_export / "samples").glob("*.png"))
    video = write_video(tmp_path / "sample.mp4", images, "mp4v")
    out = tmp_path / "out.mp4"
    result = run_cli("infer", str(video), "--model", str(detector_export), "--save", str(out), "--stride", "2")
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 5
    assert f"{video}: 10 frames read, 5 inferred, 5 dropped" in result.stderr
    drawn, source = read_video(out), read_video(video)
    assert len(drawn) == 5 and drawn[0].shape == source[0].shape
    capture = cv2.VideoCapture(str(out))
    assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(5.0)  # 10 fps over a stride of 2
    capture.release()
    # The boxes: many pixels changed by far more than the codec's own error.
    for shown, original in zip(drawn, source[::2]):
        changed = np.abs(shown.astype(int) - original.astype(int)).max(axis=2) > 100
        assert changed.sum() > 100


def test_a_classifier_video_is_saved_with_its_top_label(digits_export, tmp_path):
    images = sorted((digits_export / "samples").glob("*.png"))[:4]
    video = write_video(tmp_path / "digits.avi", images, "FFV1")
    out = tmp_path / "labelled.avi"
    infer_json(digits_export, [video], save=str(out))
    drawn = read_video(out)
    assert len(drawn) == 4 and drawn[0].shape == (28, 28, 3)
    assert all(not np.array_equal(d, np.asarray(Image.open(p).convert("RGB"))) for d, p in zip(drawn, images))


def test_a_quoted_glob_is_its_files_in_order_and_an_empty_one_is_one_error(digits_export, tmp_path):
    samples = digits_export / "samples"
    result = run_cli("infer", str(samples / "*-1.png"), str(tmp_path / "none-*.png"), "--model",
                     str(digits_export), "--json")
    assert result.returncode == 2
    expected = sorted(str(p) for p in samples.glob("*-1.png"))
    assert [json.loads(line)["input"] for line in result.stdout.splitlines()] == expected
    (line,) = error_lines(result)
    assert "none-*.png matches no file" in line


# --- a live MJPEG stream ------------------------------------------------------------------------------------------

class MJPEGServer:
    """multipart/x-mixed-replace JPEG frames on 127.0.0.1: ``count`` frames (None: until stopped)."""

    def __init__(self, image: Path, count: int | None, interval: float, scale: int = 1):
        picture = Image.open(image).convert("RGB")
        picture = picture.resize((picture.width * scale, picture.height * scale), Image.Resampling.NEAREST)
        buffer = io.BytesIO()
        picture.save(buffer, "JPEG", quality=100)
        jpeg, stopped = buffer.getvalue(), threading.Event()
        self.stopped = stopped

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                sent = 0
                try:
                    while (count is None or sent < count) and not stopped.is_set():
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                                         + str(len(jpeg)).encode() + b"\r\n\r\n" + jpeg + b"\r\n")
                        self.wfile.flush()
                        sent += 1
                        time.sleep(interval)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/stream.mjpg"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stopped.set()
        self.server.shutdown()
        self.server.server_close()


def test_an_mjpeg_stream_is_read_with_latest_and_every_frame_is_right(digits_export):
    with MJPEGServer(digits_export / "samples" / "7-1.png", count=40, interval=0.005, scale=4) as server:
        emitted, informed = [], []
        summary = run_inference(digits_export, [server.url], as_json=True, frames=FrameOptions(latest=True),
                                emit=emitted.append, report=lambda line: pytest.fail(line), inform=informed.append)
    results = [json.loads(line) for line in emitted]
    assert summary.exit_code == 0 and results
    assert all(r["predictions"][0]["label"] == "7" for r in results)
    indices = [r["frame"] for r in results]
    assert indices == sorted(set(indices))
    (line,) = informed
    read, inferred, dropped = (int(line.split(word)[0].split()[-1]) for word in (" frames read", " inferred",
                                                                                   " dropped"))
    assert inferred == len(results) and read == inferred + dropped and read >= indices[-1] + 1


def test_sigterm_ends_a_live_stream_with_a_summary_and_exit_0(digits_export):
    with MJPEGServer(digits_export / "samples" / "3-1.png", count=None, interval=0.02, scale=4) as server:
        process = subprocess.Popen([sys.executable, "-m", "edgecnn.cli", "infer", server.url, "--model",
                                    str(digits_export), "--latest", "--json"], cwd=ROOT, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        try:
            first = process.stdout.readline()
            assert json.loads(first)["predictions"][0]["label"] == "3"
            process.send_signal(signal.SIGTERM)
            _, err = process.communicate(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
    assert process.returncode == 0, err
    assert "frames read" in err and "inferred" in err and "fps" in err and "Traceback" not in err


def test_latest_on_a_file_and_frame_options_without_a_video_are_refused(digits_export, tmp_path):
    video = write_video(tmp_path / "digits.avi", sorted((digits_export / "samples").glob("*.png"))[:2], "FFV1")
    reported = []
    run_inference(digits_export, [str(video)], frames=FrameOptions(latest=True), emit=lambda _: None,
                  report=reported.append, inform=lambda _: None)
    assert len(reported) == 1 and "--latest applies to live sources" in reported[0]
    with pytest.raises(EdgecnnError, match="--stride applies to video sources"):
        run_inference(digits_export, [str(digits_export / "samples")], frames=FrameOptions(stride=2))


def test_without_opencv_a_video_is_one_error_line_naming_the_extra(digits_export, tmp_path):
    video = write_video(tmp_path / "digits.avi", sorted((digits_export / "samples").glob("*.png"))[:2], "FFV1")
    good = next((digits_export / "samples").glob("*.png"))
    (tmp_path / "sitecustomize.py").write_text("import sys\nsys.modules['cv2'] = None  # import cv2 fails\n")
    result = run_cli("infer", str(video), str(good), "--model", str(digits_export),
                     env={"PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])})
    assert result.returncode == 2, result.stderr
    assert len(result.stdout.splitlines()) == 1  # the image still ran
    (line,) = error_lines(result)
    assert "pip install 'edgecnn[video]'" in line and "Traceback" not in result.stderr


def test_sources_that_cannot_be_opened_are_one_quiet_error_line_each(digits_export, tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    good = next((digits_export / "samples").glob("*.png"))
    result = run_cli("infer", str(broken), "rtsp://127.0.0.1:9/none", str(good), "--camera", "7", "--model",
                     str(digits_export))
    assert result.returncode == 2 and len(result.stdout.splitlines()) == 1
    lines = result.stderr.splitlines()
    assert lines == error_lines(result) and len(lines) == 3  # FFmpeg's and OpenCV's own log lines kept off
    assert lines[0].startswith(f"error: {broken}: OpenCV cannot open this video file")
    assert "rtsp://127.0.0.1:9/none" in lines[1] and lines[2].startswith("error: 7: OpenCV cannot open this camera")
