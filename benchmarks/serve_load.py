"""Load test of ``edgecnn serve``: N requests per model, C at a time, on 127.0.0.1 only; every answer right.

It starts ``edgecnn serve MODEL... --host 127.0.0.1 --port 0`` itself (or uses ``--url`` of a server already
running on this machine: loopback addresses only), then for each model sends ``--requests`` predict requests
from ``--concurrency`` client threads, each holding one keep-alive connection (the standard library's
http.client, so the client costs little of the CPU it shares with the server). Request i posts sample i mod n
of the export: the PNG bytes to an image model, ``{"text": ...}`` to a text model.

Every answer must be 200 and identical to the answer the same sample got alone before the timed run
(concurrency must not change a result), and a classifier's top label must be the one the sample's file name
gives; any other answer counts as an error. Latency is per request, from sending it to having read its whole
answer. The run is bounded in count (``--requests``) and in time (``--timeout`` seconds for everything; a
socket that waits 30 s is an error), stops by itself, and stops the server it started with SIGTERM (which must
exit 0).

Usage: python benchmarks/serve_load.py [--model DIR ...] [--requests 2000] [--concurrency 16] [--workers N]
Prints one JSON object; exit code 1 when any request failed.
"""

from __future__ import annotations

import argparse
import http.client
import ipaddress
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_MODELS = ("exported/digits-cnn", "exported/bbc-news", "exported/digit-detector")
SOCKET_TIMEOUT_S = 30
LISTENING = re.compile(r"edgecnn serve: (http://\S+?)/? \(")


def loopback_only(url: str) -> tuple[str, int]:
    """(host, port) of ``url``, refusing anything but this machine's loopback addresses."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        found = socket.getaddrinfo(host, parts.port or 80, type=socket.SOCK_STREAM)
        addresses = {info[4][0] for info in found}
    except OSError as exc:
        raise SystemExit(f"cannot resolve {host!r} ({exc})") from None
    if not addresses or not all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses):
        raise SystemExit(f"{url} is not a loopback address; this load test only targets 127.0.0.0/8 or ::1")
    return host, parts.port or 80


def start_server(models: list[str], workers: int | None, deadline: float) -> tuple[subprocess.Popen, str]:
    """``edgecnn serve`` on a free loopback port; (process, base URL) once it answers /healthz."""
    argv = [sys.executable, "-m", "edgecnn.cli", "serve", *models, "--host", "127.0.0.1", "--port", "0"]
    if workers:
        argv += ["--workers", str(workers)]
    server = subprocess.Popen(argv, cwd=ROOT, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                              env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    lines = []
    for line in server.stderr:
        lines.append(line)
        found = LISTENING.search(line)
        if found:
            threading.Thread(target=server.stderr.read, daemon=True).start()  # keep the pipe drained
            break
        if time.monotonic() > deadline:
            break
    else:
        raise SystemExit(f"edgecnn serve did not start:\n{''.join(lines)}")
    if not found:
        server.kill()
        raise SystemExit(f"edgecnn serve did not start in time:\n{''.join(lines)}")
    return server, found.group(1)


def samples(summary: dict, folder: Path) -> list[dict]:
    """The export's samples as requests: body, content type, expected label (classifiers) and a name."""
    found = []
    text = summary["task"] == "text-classification"
    for path in sorted((folder / "samples").glob("*.txt" if text else "*.png")):
        body = json.dumps({"text": path.read_text(encoding="utf-8")}).encode() if text else path.read_bytes()
        expected = path.stem.rsplit("-", 1)[0] if summary["task"] != "object-detection" else None
        found.append({"name": path.name, "body": body, "type": "application/json" if text else "image/png",
                      "label": expected})
    if not found:
        raise SystemExit(f"{folder}/samples holds no samples to send")
    return found


def post(connection: http.client.HTTPConnection, path: str, sample: dict) -> tuple[int, bytes]:
    connection.request("POST", path, body=sample["body"], headers={"Content-Type": sample["type"]})
    answer = connection.getresponse()
    return answer.status, answer.read()


def check(status: int, body: bytes, sample: dict, reference: dict | None) -> str | None:
    """Why this answer is wrong, or None when it is right."""
    if status != 200:
        return f"HTTP {status}: {body[:200]!r}"
    data = json.loads(body)
    if reference is not None and data != reference:
        return f"{sample['name']}: the answer differs from the one it got alone"
    if sample["label"] is not None and data["predictions"][0]["label"] != sample["label"]:
        top = data["predictions"][0]["label"]
        return f"{sample['name']}: top label {top!r}, expected {sample['label']!r}"
    return None


def load(host: str, port: int, path: str, items: list[dict], requests: int, concurrency: int,
         deadline: float) -> dict:
    """``requests`` POSTs from ``concurrency`` threads; latencies, errors, wall time."""
    references = {}
    warm = http.client.HTTPConnection(host, port, timeout=SOCKET_TIMEOUT_S)
    for sample in items:  # each sample alone first: the reference answer, and a warm server
        status, body = post(warm, path, sample)
        problem = check(status, body, sample, None)
        if problem:
            raise SystemExit(f"before the load: {problem}")
        references[sample["name"]] = json.loads(body)
    warm.close()
    latencies: list[float] = []
    errors: list[str] = []
    counter = iter(range(requests))
    lock = threading.Lock()

    def client():
        connection = http.client.HTTPConnection(host, port, timeout=SOCKET_TIMEOUT_S)
        mine, problems = [], []
        while time.monotonic() < deadline:
            with lock:
                index = next(counter, None)
            if index is None:
                break
            sample = items[index % len(items)]
            started = time.perf_counter()
            try:
                status, body = post(connection, path, sample)
            except (OSError, http.client.HTTPException) as exc:
                problems.append(f"{sample['name']}: {type(exc).__name__}: {exc}")
                connection.close()
                connection = http.client.HTTPConnection(host, port, timeout=SOCKET_TIMEOUT_S)
                continue
            mine.append(time.perf_counter() - started)
            problem = check(status, body, sample, references[sample["name"]])
            if problem:
                problems.append(problem)
        connection.close()
        with lock:
            latencies.extend(mine)
            errors.extend(problems)

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    unsent = next(counter, None)
    if unsent is not None:
        errors.append(f"{requests - unsent} requests not sent: the --timeout ran out")
    ordered = sorted(latencies)

    def quantile(q: float) -> float | None:
        return round(1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3) if ordered else None

    return {"requests": requests, "answered": len(latencies), "errors": len(errors),
            "first_errors": errors[:5], "samples": len(items),
            "p50_ms": quantile(0.50), "p90_ms": quantile(0.90), "p99_ms": quantile(0.99),
            "max_ms": round(1000 * ordered[-1], 3) if ordered else None,
            "mean_ms": round(1000 * statistics.fmean(ordered), 3) if ordered else None,
            "requests_per_s": round(len(latencies) / wall, 1) if wall else None, "wall_s": round(wall, 3)}


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU of a process so far (Linux), to report the server's CPU per request."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append",
                        help="export folder (repeatable; default: the three in exported/)")
    parser.add_argument("--requests", type=int, default=2000, help="requests per model")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--workers", type=int, help="edgecnn serve --workers (default: its own, one per CPU)")
    parser.add_argument("--url", help="an edgecnn serve already running on this machine (loopback only)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds for the whole run")
    args = parser.parse_args()
    if args.requests < 1 or args.concurrency < 1:
        parser.error("--requests and --concurrency must be 1 or more")
    deadline = time.monotonic() + args.timeout
    folders = args.model or [m for m in DEFAULT_MODELS if (ROOT / m / "edgecnn.json").is_file()]
    server = None
    if args.url:
        base = args.url.rstrip("/")
    else:
        server, base = start_server(folders, args.workers, deadline)
    host, port = loopback_only(base)
    report = {"concurrency": args.concurrency, "client": "http.client, one keep-alive connection per thread",
              "results": {}}
    try:
        connection = http.client.HTTPConnection(host, port, timeout=SOCKET_TIMEOUT_S)
        connection.request("GET", "/healthz")
        health = json.loads(connection.getresponse().read())
        connection.request("GET", "/v1/models")
        summaries = {m["name"]: m for m in json.loads(connection.getresponse().read())["models"]}
        connection.close()
        report.update(workers=health["workers"], threads_per_worker=health["threads_per_worker"],
                      cpus=os.cpu_count())
        for folder in folders:
            name = Path(folder).name
            summary = summaries[name]
            cpu_before = cpu_seconds(server.pid) if server else None
            result = load(host, port, f"/v1/models/{name}:predict", samples(summary, ROOT / folder),
                          args.requests, args.concurrency, deadline)
            cpu_after = cpu_seconds(server.pid) if server else None
            if cpu_before is not None and cpu_after is not None and result["answered"]:
                per_request = (cpu_after - cpu_before) / result["answered"]
                result["server_cpu_ms_per_request"] = round(1000 * per_request, 3)
            result.update(task=summary["task"], format=summary["format"])
            report["results"][name] = result
    finally:
        if server:
            server.send_signal(signal.SIGTERM)
            try:
                report["server_exit_code"] = server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                report["server_exit_code"] = "killed: no exit within 30 s of SIGTERM"
    report["errors"] = sum(r["errors"] for r in report["results"].values())
    print(json.dumps(report))
    if report["errors"] or report.get("server_exit_code", 0) != 0:
        sys.exit(1)


if __name__ == "__main__":
    main()
