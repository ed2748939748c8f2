"""``edgecnn serve``: exported models over HTTP (a JSON API, Prometheus metrics and one web page).

Starlette and uvicorn (pure Python without uvicorn's [standard] extras, so they install on a Raspberry Pi)
come with ``pip install 'edgecnn[serve]'``; nothing in this package is imported by the rest of edgecnn except
the CLI, and importing it alone needs none of them: they are imported when an app is made.

Example::

    from edgecnn.serve import create_app
    app = create_app(["exported/digits-cnn"], workers=2)   # any ASGI server runs it
"""

from __future__ import annotations

import signal
import socket
from typing import Callable

from ..errors import InputError, require

#: Seconds uvicorn waits for requests in flight after Ctrl-C / SIGTERM before it cancels them.
GRACEFUL_SHUTDOWN_S = 10


def _require_stack() -> None:
    for module in ("starlette", "uvicorn", "prometheus_client", "python_multipart"):
        require(module, "serve", "edgecnn serve")


def create_app(model_dirs, fmt: str | None = None, workers: int | None = None, threads: int | None = None,
               max_body_bytes: int | None = None, max_batch: int | None = None, max_queue: int | None = None):
    """Open the models (``workers`` sessions each) and return the Starlette app that serves them; the models
    are ``app.state.models`` (an :class:`edgecnn.serve.pool.Models`)."""
    _require_stack()
    from .app import DEFAULT_MAX_BATCH, DEFAULT_MAX_BODY_BYTES
    from .app import create_app as make_app
    from .pool import DEFAULT_MAX_QUEUE, Models

    models = Models(list(model_dirs), fmt=fmt, workers=workers, threads=threads,
                    max_queue=DEFAULT_MAX_QUEUE if max_queue is None else max_queue)
    return make_app(models, max_body_bytes=max_body_bytes or DEFAULT_MAX_BODY_BYTES,
                    max_batch=max_batch or DEFAULT_MAX_BATCH)


def run(model_dirs, host: str = "127.0.0.1", port: int = 8000, fmt: str | None = None,
        workers: int | None = None, threads: int | None = None, max_body_bytes: int | None = None,
        max_batch: int | None = None, max_queue: int | None = None, access_log: bool = False,
        inform: Callable[[str], None] = print) -> None:
    """Serve the models until Ctrl-C or SIGTERM; both end cleanly (requests in flight are answered first).

    The models are opened and the port is bound before uvicorn starts, so a bad export folder or a port in use
    is one line (an EdgecnnError), not a traceback; with ``port=0`` the system picks a free port, and the line
    ``inform`` gets says which.
    """
    app = create_app(model_dirs, fmt=fmt, workers=workers, threads=threads, max_body_bytes=max_body_bytes,
                             max_batch=max_batch, max_queue=max_queue)
    import uvicorn

    models = app.state.models
    sock = _listen(host, port)
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    for model in models.models.values():
        inform(f"serving {model.name} ({model.task}, {model.format}) from {model.folder}")
    inform(f"edgecnn serve: http://{shown}:{bound}/ ({models.workers} workers, {models.threads} runtime "
           f"thread{'s' if models.threads > 1 else ''} each; Ctrl-C to stop)")
    config = uvicorn.Config(app, host=host, port=bound, log_level="warning", access_log=access_log,
                            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S, lifespan="on")
    server = uvicorn.Server(config)
    stopped_by: list[str] = []
    # uvicorn turns Ctrl-C and SIGTERM into a graceful shutdown, then re-raises the signal once it has
    # restored the handlers it found: these note it instead, so a stopped server exits 0 as `edgecnn infer
    # --watch` does.
    previous = {sig: signal.signal(sig, lambda number, frame: stopped_by.append(signal.Signals(number).name))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.run(sockets=[sock])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sock.close()
    inform(f"edgecnn serve stopped{' by ' + stopped_by[0] if stopped_by else ''}")


def _listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (0: any free port); a port in use is a one-line error."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
    except (OSError, IndexError) as exc:
        raise InputError(f"cannot listen on {host}:{port} ({exc}); pass --host 127.0.0.1 or an address of "
                         "this machine") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise InputError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); choose another --port or "
                         "stop what uses it") from None
    return sock


__all__ = ["create_app", "run"]
