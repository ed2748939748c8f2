"""The Starlette app of ``edgecnn serve``: the JSON API, the metrics, and the one web page.

Routes::

    GET  /                          the page (page.html, .css, .js: served from this package, no build step)
    GET  /v1/models                 every served model: task, labels, input, formats (``edgecnn info``'s data)
    GET  /v1/models/{name}          one of them
    POST /v1/models/{name}:predict  an image (raw bytes, multipart or base64 JSON), a text, or a JSON batch
    GET  /healthz                   {"status": "ok", ...} once the models are open
    GET  /metrics                   Prometheus text: requests, errors, latency histogram

Every failure is ``{"error": MESSAGE}`` where MESSAGE is the one line ``edgecnn infer`` would print, with a
4xx for an EdgecnnError (its status in :mod:`.errors`, else 400) and 500 for anything else (a bug).
"""

from __future__ import annotations

import contextlib
from importlib import resources

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .. import __version__
from ..errors import EdgecnnError
from . import inputs as inputs_io
from .errors import RequestTooLargeError, status_of
from .metrics import Metrics
from .pool import DEFAULT_MAX_QUEUE, Models

#: Request bodies above this are refused with 413 before they are read in full.
DEFAULT_MAX_BODY_BYTES = 10 << 20
DEFAULT_MAX_BATCH = 64
ASSETS = {"page.css": "text/css; charset=utf-8", "page.js": "text/javascript; charset=utf-8"}
#: The page loads nothing from elsewhere: scripts and styles from this server only, images from blob:/data:.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; "
                               "media-src 'self' blob: mediastream:; object-src 'none'; base-uri 'none'; "
                               "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}
ROUTES_HELP = ("the API is GET /v1/models, POST /v1/models/NAME:predict, GET /healthz and GET /metrics; the "
               "page is at /")


def create_app(models: Models, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
               max_batch: int = DEFAULT_MAX_BATCH) -> Starlette:
    """The ASGI app serving ``models`` (opened already, so a bad folder fails before a port is taken)."""
    metrics = Metrics(models.models)

    async def predict(request: Request) -> JSONResponse:
        model = models.get(request.path_params["name"])
        top_k, threshold = _options(model.task, request)
        request = Request(request.scope, _limited(request.receive, request.headers, max_body_bytes))
        content_type = request.headers.get("content-type")
        if inputs_io.is_form(model.task, content_type):
            parsed = await _from_form(request, model, max_batch, max_body_bytes)
        else:
            body = await request.body()
            parsed = None

        def work() -> dict:  # on a worker thread: JSON and base64 decoding stay off the event loop too
            if parsed is not None:
                return model.predict(parsed, top_k, threshold)
            return model.predict(inputs_io.from_body(model.name, model.task, content_type, body, max_batch),
                                 top_k, threshold)

        answer = await models.run(work)
        metrics.count_inputs(model.name, len(answer.get("results", ())) or 1)
        return JSONResponse(answer)

    async def list_models(request: Request) -> JSONResponse:
        return JSONResponse({"models": [m.summary for m in models.models.values()]})

    async def show_model(request: Request) -> JSONResponse:
        name = request.path_params["name"]
        if name.endswith(":predict"):  # this route's {name} also matches "NAME:predict", which is POST only
            raise HTTPException(405, headers={"Allow": "POST"})
        return JSONResponse(models.get(name).summary)

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "version": __version__, "models": list(models.models),
                             "workers": models.workers, "threads_per_worker": models.threads,
                             "waiting": models.waiting})

    async def exposition(request: Request) -> Response:
        body, content_type = metrics.exposition()
        return Response(body, media_type=content_type)

    async def page(request: Request) -> Response:
        return Response(_asset("page.html"), media_type="text/html; charset=utf-8", headers=PAGE_HEADERS)

    async def asset(request: Request) -> Response:
        name = request.url.path.lstrip("/")
        return Response(_asset(name), media_type=ASSETS[name], headers=PAGE_HEADERS)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        models.close()  # uvicorn has stopped accepting requests and answered the ones in flight

    app = Starlette(
        routes=[
            Route("/", page),
            *[Route(f"/{name}", asset) for name in ASSETS],
            Route("/v1/models", list_models),
            Route("/v1/models/{name}:predict", predict, methods=["POST"]),
            Route("/v1/models/{name}", show_model),
            Route("/healthz", healthz),
            Route("/metrics", exposition),
        ],
        middleware=[Middleware(metrics.middleware)],
        exception_handlers={EdgecnnError: _edgecnn_error, HTTPException: _http_error,
                            Exception: _internal_error},
        lifespan=lifespan,
    )
    app.state.models = models
    return app


def _options(task: str, request: Request) -> tuple[int, float | None]:
    """(top_k, threshold) from the query string; the Python API's defaults when absent."""
    chosen = inputs_io.options(task, request.query_params)
    return chosen.get("top_k", 5), chosen.get("threshold")


async def _from_form(request: Request, model, max_batch: int, max_body_bytes: int) -> inputs_io.Inputs:
    """A form's fields, files read into bytes, in the form's order. A text field may be as long as the body
    (Starlette's default stops at 1 MB); the body limit bounds the rest, and too many inputs are a 413 from
    ``from_form`` like a JSON batch's."""
    fields = []
    async with request.form(max_part_size=max_body_bytes) as form:
        for key, value in form.multi_items():
            if isinstance(value, str):
                fields.append((key, value, None))
            else:
                fields.append((key, await value.read(), value.filename))
    return inputs_io.from_form(model.name, model.task, fields, max_batch)


def _limited(receive, headers, limit: int):
    """``receive`` that raises RequestTooLargeError once the body passes ``limit`` bytes (checked up front
    from Content-Length when the client sends one, so a huge upload is refused before it is read)."""
    declared = headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise RequestTooLargeError(f"the request body of {int(declared)} bytes is more than this server's "
                                   f"limit of {limit} bytes; send a smaller image or text, or start edgecnn "
                                   "serve with a larger --max-body-mb")
    seen = 0

    async def receive_limited():
        nonlocal seen
        message = await receive()
        seen += len(message.get("body", b""))
        if seen > limit:
            raise RequestTooLargeError(f"the request body is more than this server's limit of {limit} bytes; "
                                       "send a smaller image or text, or start edgecnn serve with a larger "
                                       "--max-body-mb")
        return message

    return receive_limited


def _asset(name: str) -> bytes:
    return resources.files(__package__).joinpath(name).read_bytes()


async def _edgecnn_error(request: Request, exc: EdgecnnError) -> JSONResponse:
    return JSONResponse({"error": str(exc)}, status_code=status_of(exc))


async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    """Starlette's own 404/405 as JSON errors that say what does exist."""
    if exc.status_code == 404:
        message = f"no such page or endpoint: {request.url.path}; {ROUTES_HELP}"
    elif exc.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}; {ROUTES_HELP}"
    else:
        message = str(exc.detail)
    return JSONResponse({"error": message}, status_code=exc.status_code, headers=exc.headers)


async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    """A bug: one line, as the CLI says it (uvicorn logs the traceback)."""
    return JSONResponse({"error": f"internal error: {type(exc).__name__}: {exc}"}, status_code=500)


__all__ = ["DEFAULT_MAX_BATCH", "DEFAULT_MAX_BODY_BYTES", "DEFAULT_MAX_QUEUE", "create_app"]
