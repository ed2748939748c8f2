"""Video files, cameras and streams as frames: what ``edgecnn infer clip.mp4 | 0 | rtsp://...`` reads.

Whatever OpenCV's ``VideoCapture`` opens is a source: a video file, a camera index (``0``), a stream URL (RTSP,
HTTP MJPEG, ...). A frame is an RGB ``uint8`` array with its index in the source (counting every frame read, so
``--stride`` keeps the numbers of the original) and its timestamp in seconds: the position in a file, or seconds
since opening for a live source. OpenCV is the optional extra ``video`` and is imported only here, inside the
functions, so a plain image install never loads it. On a Raspberry Pi with ``picamera2`` installed, a camera index
that libcamera knows (a CSI camera) is read through picamera2; that path is deliberately thin, since it can only
be tested on a Pi.

Which frames get inferred, one rule for every source:

* ``stride``: every Nth frame read (frame indices 0, N, 2N, ...).
* ``max_fps``: at most F frames per second of the source's own timestamps, so a file gives the same frames
  however fast the machine is, and a camera is sampled at that rate.
* ``latest`` (live sources only): a reader thread keeps reading and holds only the newest frame; the consumer
  takes whatever is newest when it is ready, so results never lag behind the camera. Frames replaced before they
  were taken are dropped. A file is refused: it would be read as fast as the disk allows and mostly dropped.

Every frame read but not inferred counts as dropped (:class:`SourceCounts`), for the summary on exit.
"""

from __future__ import annotations

import glob
import math
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError, require

#: Suffixes read as video (anything else that exists is an image or a text).
VIDEO_SUFFIXES = {".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".ts", ".mjpeg",
                  ".mjpg", ".3gp"}
STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://", "srt://")
GLOB_CHARS = set("*?[")
#: Codec per written suffix; mp4v plays in every player OpenCV's bundled FFmpeg can write for.
WRITER_CODECS = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "mp4v"}
_LATEST_WAIT = 0.1  # seconds between checks of the stop event while waiting for a live frame


def _cv2(spec: str | os.PathLike = "a video"):
    """OpenCV, its own and FFmpeg's log lines off (stderr carries edgecnn's one-line errors; they say it)."""
    # Read by OpenCV when it loads and by its FFmpeg backend when first used: set before either. -8 = quiet.
    os.environ.setdefault("OPENCV_LOG_LEVEL", "SILENT")
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    return require("cv2", "video", f"{spec}: reading video files, cameras and streams")


@dataclass
class Frame:
    """One frame: RGB ``uint8`` pixels (HxWx3), its index in the source and its timestamp in seconds."""

    pixels: np.ndarray
    index: int
    timestamp: float
    source: str
    #: inferred frames per second of source time (its rate over the stride, at most max_fps), for a saved video
    rate: float | None = None


@dataclass
class SourceCounts:
    """What happened to a source's frames: ``read`` = ``delivered`` + dropped."""

    read: int = 0
    delivered: int = 0
    started: float = field(default_factory=time.monotonic)
    ended: float | None = None

    @property
    def dropped(self) -> int:
        return self.read - self.delivered


def is_camera(item: str) -> bool:
    """A camera index (``0``, ``1``...), unless a file of that name exists here."""
    return item.isdigit() and not os.path.exists(item)


def is_stream(item: str) -> bool:
    return item.lower().startswith(STREAM_SCHEMES)


def is_video(item: str) -> bool:
    """Whether ``item`` names a video source: a camera index, a stream URL or a file with a video suffix."""
    return is_camera(item) or is_stream(item) or Path(item).suffix.lower() in VIDEO_SUFFIXES


def is_glob(item: str) -> bool:
    """A quoted glob (``'frames/*.png'``): has wildcards and is not itself an existing path."""
    return bool(GLOB_CHARS & set(item)) and not os.path.exists(item)


def expand_glob(pattern: str) -> list[str]:
    """The files ``pattern`` matches (``**`` recurses), sorted; an InputError when it matches none."""
    found = sorted(p for p in glob.glob(os.path.expanduser(pattern), recursive=True) if os.path.isfile(p))
    if not found:
        raise InputError(f"{pattern} matches no file; check the pattern (quote it so the shell leaves it to edgecnn)")
    return found


class VideoSource:
    """Frames of one video file, camera or stream, filtered by stride, max_fps and latest (see the module doc).

    Iterate over it for :class:`Frame` objects; it stops at the end of a file or stream, or when ``stop`` is set.
    Always :meth:`close` it: that releases the device and ends the reader thread.
    """

    def __init__(self, spec: str, *, stride: int = 1, max_fps: float | None = None, latest: bool = False,
                 stop: threading.Event | None = None):
        if not isinstance(stride, int) or stride < 1:
            raise InputError(f"--stride {stride!r}: give a whole number of frames, 1 or more (1 = every frame)")
        if max_fps is not None and not (math.isfinite(max_fps) and max_fps > 0):
            raise InputError(f"--max-fps {max_fps!r}: give a number of frames per second above 0")
        self.name = spec
        self.live = is_camera(spec) or is_stream(spec)
        if latest and not self.live:
            raise InputError(f"--latest applies to live sources (a camera or stream); {spec} is a file, read frame "
                             "by frame: use --stride or --max-fps to infer fewer of its frames")
        self.stride, self.max_fps, self.latest = stride, max_fps, latest
        self.stop = stop or threading.Event()  # the caller's: Ctrl-C, SIGTERM
        self._closed = threading.Event()
        self.counts = SourceCounts()
        self._reader = _open_reader(spec)
        self.fps = self._reader.fps
        self.size = self._reader.size
        rate = self.fps / stride if self.fps else None
        self.rate = min(rate, max_fps) if rate and max_fps else rate or max_fps
        self._next_time = -math.inf
        self._thread: threading.Thread | None = None
        self._newest: Frame | None = None
        self._newest_ready = threading.Condition()
        self._ended = False

    def __iter__(self) -> Iterator[Frame]:
        frames = self._latest_frames() if self.latest else self._every_frame()
        for frame in frames:
            if self._wanted(frame):
                self.counts.delivered += 1
                yield frame

    def _wanted(self, frame: Frame) -> bool:
        if frame.index % self.stride:
            return False
        if self.max_fps is not None:
            if frame.timestamp < self._next_time:
                return False
            # The next slot follows this frame's time, not the previous slot: a late frame never earns a burst.
            self._next_time = frame.timestamp + 1.0 / self.max_fps - 1e-6
        return True

    def _halted(self) -> bool:
        return self.stop.is_set() or self._closed.is_set()

    def _every_frame(self) -> Iterator[Frame]:
        while not self._halted():
            frame = self._read()
            if frame is None:
                return
            yield frame

    def _read(self) -> Frame | None:
        got = self._reader.read(self.counts.read)
        if got is None:
            return None
        pixels, timestamp = got
        if timestamp is None:
            timestamp = time.monotonic() - self.counts.started
        frame = Frame(pixels, self.counts.read, timestamp, self.name, self.rate)
        self.counts.read += 1
        return frame

    def _latest_frames(self) -> Iterator[Frame]:
        """The newest frame each time the consumer asks; a reader thread keeps reading meanwhile."""
        self._thread = threading.Thread(target=self._keep_reading, name=f"edgecnn-reader {self.name}", daemon=True)
        self._thread.start()
        while not self._halted():
            with self._newest_ready:
                while self._newest is None and not self._ended and not self._halted():
                    self._newest_ready.wait(_LATEST_WAIT)
                frame, self._newest = self._newest, None
            if frame is None:
                return
            yield frame

    def _keep_reading(self) -> None:
        try:
            while not self._halted():
                frame = self._read()
                with self._newest_ready:
                    if frame is None:
                        break
                    self._newest = frame  # an older frame not yet taken is dropped here
                    self._newest_ready.notify()
        finally:
            with self._newest_ready:
                self._ended = True
                self._newest_ready.notify()

    def summary(self) -> str:
        """The closing line: frames read, inferred, dropped and the mean rate."""
        elapsed = max((self.counts.ended or time.monotonic()) - self.counts.started, 1e-9)
        return (f"{self.name}: {self.counts.read} frames read, {self.counts.delivered} inferred, "
                f"{self.counts.dropped} dropped, {self.counts.delivered / elapsed:.1f} fps")

    def close(self) -> None:
        """Release the device or file and end the reader thread (again: nothing more)."""
        if self._closed.is_set():
            return
        self._closed.set()
        self.counts.ended = time.monotonic()
        if self._thread is not None:
            self._thread.join(timeout=5)
            if self._thread.is_alive():  # stuck in a read of a stalled stream: releasing under it may crash
                return
        self._reader.close()


class _OpenCVReader:
    """OpenCV's VideoCapture for files, camera indices and stream URLs; BGR frames converted to RGB."""

    def __init__(self, spec: str):
        cv2 = _cv2(spec)
        self.cv2 = cv2
        target = int(spec) if is_camera(spec) else spec
        if not is_camera(spec) and not is_stream(spec) and not os.path.isfile(spec):
            raise InputError(f"{spec}: no such video file; check the path")
        self.capture = cv2.VideoCapture(target)
        if not self.capture.isOpened():
            if is_camera(spec):
                advice = "this camera; check that it is connected and no other program uses it (ls /dev/video*)"
            elif is_stream(spec):
                advice = "this stream; check the URL and that the camera or server is up and reachable"
            else:
                advice = "this video file; it is damaged or in a format OpenCV's FFmpeg does not read"
            raise InputError(f"{spec}: OpenCV cannot open {advice}")
        self.live = is_camera(spec) or is_stream(spec)
        fps = self.capture.get(cv2.CAP_PROP_FPS)
        self.fps = fps if fps and math.isfinite(fps) and 0 < fps < 1000 else None
        self.size = (int(self.capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(self.capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))

    def read(self, index: int) -> tuple[np.ndarray, float | None] | None:
        ok, bgr = self.capture.read()
        if not ok or bgr is None:
            return None
        rgb = self.cv2.cvtColor(bgr, self.cv2.COLOR_BGR2RGB) if bgr.ndim == 3 else np.stack([bgr] * 3, axis=-1)
        if self.live:
            return rgb, None  # seconds since opening, on this machine's clock
        # A file's own clock: the frame's index over its frame rate (container timestamps of FFmpeg's
        # CAP_PROP_POS_MSEC are those of the next frame for some formats).
        return rgb, index / self.fps if self.fps else None

    def close(self) -> None:
        self.capture.release()


class _PiCameraReader:
    """A Raspberry Pi CSI camera through picamera2 (libcamera); only used when picamera2 imports and knows the
    camera. Untested off a Pi: kept to the few calls picamera2's own examples make."""

    def __init__(self, picamera2, index: int):
        self.camera = picamera2.Picamera2(index)
        self.camera.configure(self.camera.create_video_configuration(main={"format": "RGB888"}))
        self.camera.start()
        self.fps = None
        self.size = tuple(self.camera.camera_configuration()["main"]["size"])

    def read(self, index: int) -> tuple[np.ndarray, float | None] | None:
        # picamera2's "RGB888" is B, G, R in memory (libcamera's naming): reverse to RGB.
        return np.ascontiguousarray(self.camera.capture_array()[:, :, 2::-1]), None

    def close(self) -> None:
        self.camera.stop()
        self.camera.close()


def _open_reader(spec: str):
    if is_camera(spec):
        try:
            import picamera2  # Raspberry Pi OS has it; elsewhere OpenCV reads the camera
        except ImportError:
            picamera2 = None
        if picamera2 is not None and int(spec) < len(picamera2.Picamera2.global_camera_info()):
            return _PiCameraReader(picamera2, int(spec))
    return _OpenCVReader(spec)


class VideoWriter:
    """Annotated frames into a video file (``--save out.mp4``), opened on the first frame (its size and rate)."""

    def __init__(self, path: str | os.PathLike, fps: float | None):
        self.path = Path(path)
        if self.path.suffix.lower() not in WRITER_CODECS:
            raise InputError(f"--save {self.path}: a video source is saved as a video; give a path ending in "
                             f"{', '.join(sorted(WRITER_CODECS))}")
        self.fps = fps or 25.0
        self._writer = None

    def write(self, image) -> None:
        """Append a PIL RGB image (every frame the same size as the first)."""
        cv2 = _cv2(f"--save {self.path}")
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            codec = cv2.VideoWriter_fourcc(*WRITER_CODECS[self.path.suffix.lower()])
            self._writer = cv2.VideoWriter(str(self.path), codec, self.fps, image.size)
            if not self._writer.isOpened():
                raise InputError(f"--save {self.path}: OpenCV cannot write this file; choose a writable .mp4 or "
                                 ".avi path")
        self._writer.write(cv2.cvtColor(np.asarray(image.convert("RGB")), cv2.COLOR_RGB2BGR))

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()


def draw_label(image, text: str):
    """A copy of PIL ``image`` with ``text`` (a classifier's top label) in a box at its top-left corner."""
    from PIL import ImageDraw, ImageFont

    canvas = image.convert("RGB").copy()
    draw = ImageDraw.Draw(canvas)
    size = max(12, round(max(canvas.size) / 20))
    try:
        font = ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one bitmap font size
        font = ImageFont.load_default()
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    pad = max(2, size // 6)
    draw.rectangle([0, 0, right - left + 2 * pad, bottom - top + 2 * pad], fill=(0, 0, 0))
    draw.text((pad - left, pad - top), text, fill=(255, 255, 255), font=font)
    return canvas


__all__ = ["Frame", "SourceCounts", "VideoSource", "VideoWriter", "draw_label", "expand_glob", "is_glob",
           "is_video"]
